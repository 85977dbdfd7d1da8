"""Telemetry for operators: OpenTelemetry logs, traces and metrics, exported to Application Insights
by the Azure Monitor distro (`azure-monitor-opentelemetry`, `configure_azure_monitor`).

Why the distro: in the Functions Python worker, `logging` `extra=` fields are reported not to reach
Application Insights as custom dimensions through the host's default forwarding; the distro's logging
handler exports every `extra` field as an attribute, which Application Insights stores in
`customDimensions` (traces table), as it does span attributes (requests/dependencies) and metric
attributes (customMetrics). Microsoft's how-to: learn.microsoft.com/azure/azure-functions/opentelemetry-howto
(Python: `configure_azure_monitor()` in the app, `"telemetryMode": "OpenTelemetry"` in host.json).

Every name an operator queries is defined here and only here: the metric names, their dimensions
and the log event names. `infra/modules/alerts.bicep` queries them, and tests/unit/test_alerts.py
checks each alert against these constants.

Nothing here may carry a token, code or secret: attributes are ids, outcomes and counts. As a second
line of defence, spans lose URL query strings (Graph delta links, OAuth redirects) and log records lose
any attribute whose name says it holds a credential, before anything is exported.

Without `APPLICATIONINSIGHTS_CONNECTION_STRING` nothing is configured: the OpenTelemetry API is then a
no-op, so the local stack and the unit tests pay nothing (tests install in-memory exporters)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, assert_never

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.connections import TENANT_SCOPED_APP_CODES, classify_token_error
from shared.ports import AccessToken, IdentityProvider, SignedIn, SyncOutcome, TokenError
from shared.redaction import scrub

log = logging.getLogger(__name__)

METER_NAME = "coagentor.outlook"
TRACER_NAME = "coagentor.outlook"

# ------------------------------------------------------------------ names operators query
# Metrics (Application Insights: customMetrics, `name`; dimensions in `customDimensions`).
SYNCS = "outlook_syncs"  # counter, one per sync run: outcome (the service's word), result (see SYNC_RESULTS)
DEPLOYMENTS = "outlook_deployments"  # counter, one per deploy delivery: outcome, punctuality
DEPLOYMENT_LATENESS = "outlook_deployment_lateness_seconds"  # histogram: agent API call - intended time
TOKEN_REFRESHES = "outlook_token_refreshes"  # counter, one per token acquisition: kind, fixed_by, cache_written
TOKEN_CACHE_WRITES = "outlook_token_cache_writes"  # counter: Key Vault secret versions created
NOTIFICATIONS_RECEIVED = "outlook_notifications_received"  # counter: Graph change notifications accepted
QUEUE_MESSAGES = "outlook_queue_messages"  # gauge per queue (poison queues included): approximate count
FANOUT_JOBS = "outlook_fanout_jobs"  # counter: jobs a fan-out page enqueued, by kind (sync, refresh)
METRICS = frozenset({SYNCS, DEPLOYMENTS, DEPLOYMENT_LATENESS, TOKEN_REFRESHES, TOKEN_CACHE_WRITES,
                     NOTIFICATIONS_RECEIVED, QUEUE_MESSAGES, FANOUT_JOBS})

# Dimensions (metric attributes).
OUTCOME = "outcome"
RESULT = "result"
PUNCTUALITY = "punctuality"
KIND = "kind"
FIXED_BY = "fixed_by"
CACHE_WRITTEN = "cache_written"
QUEUE = "queue"
EVENT = "event"  # not a metric's: the `extra` field naming an ERROR log's event (customDimensions)
DIMENSIONS = frozenset({OUTCOME, RESULT, PUNCTUALITY, KIND, FIXED_BY, CACHE_WRITTEN, QUEUE, EVENT})

# Log events (Application Insights: traces, `message` or its start), each logged at ERROR with ids only.
APP_IDENTITY_FAILURE = "app_identity_failure"  # the service's own credentials/registration were refused
DEPLOYMENT_MISSED = "deployment_missed"  # DeployService.recover_overdue: a meeting started without a verdict
SYNC_GAVE_UP = "sync_gave_up"  # SyncService: a requested sync's retry budget ran out (also outcome gave_up)
# A background walk skipped a row it could not read or act on (`extra` EVENT, the message varies by walk).
WALK_ROW_FAILED = "walk_row_failed"
LOG_EVENTS = frozenset({APP_IDENTITY_FAILURE, DEPLOYMENT_MISSED, SYNC_GAVE_UP, WALK_ROW_FAILED})

# Values of those dimensions that alerts select on.
SYNC_FAILED = "failed"
ON_TIME, LATE, MISSED = "on_time", "late", "missed"
FIXED_BY_VALUES = ("ok", "user", "admin", "service", "transient")
SERVICE = "service"

# What a sync run's outcome means for the operator: "ok"; "deferred" (comes back by itself: throttled,
# another run holds the connection, a passing failure retried); "user" (the user or their admin must
# act, the connection shows it); "failed" (the service could not sync: an exception, a retry budget
# used up, or an unclassified outcome). Exhaustive over SyncOutcome: mypy checks `_reading`.
OK, DEFERRED, USER = "ok", "deferred", "user"


def _reading(outcome: SyncOutcome) -> str:
    match outcome:
        case SyncOutcome.SYNCED | SyncOutcome.UP_TO_DATE | SyncOutcome.SKIPPED | SyncOutcome.DISCONNECTED:
            return OK
        case (SyncOutcome.BUSY | SyncOutcome.THROTTLED | SyncOutcome.LEASE_LOST | SyncOutcome.RACED
              | SyncOutcome.NO_TOKEN_TRANSIENT | SyncOutcome.NO_TOKEN_SERVICE):
            return DEFERRED
        case SyncOutcome.NO_TOKEN_USER | SyncOutcome.GRAPH_UNAUTHORIZED | SyncOutcome.CALENDAR_UNAVAILABLE:
            return USER
        case SyncOutcome.GAVE_UP | SyncOutcome.ERROR:
            return SYNC_FAILED
        case _:
            assert_never(outcome)


SYNC_RESULTS: dict[str, str] = {str(o): _reading(o) for o in SyncOutcome}


# An agent API call later than this after the intended time (start - lead) counts as late.
LATE_AFTER = timedelta(seconds=60)
# Deploy verdicts that mean the meeting got no agent.
MISSED_VERDICTS = frozenset({"too_late", "failed", "lost"})


def sync_result(outcome: SyncOutcome | str) -> str:
    """The operator's reading of a sync outcome (SYNC_RESULTS); a legacy `no_token:<reason code>`
    is "user"; anything unknown is "failed", so a new failure mode is never hidden from the
    failure-rate alert."""
    try:
        return _reading(SyncOutcome(outcome))
    except ValueError:
        return USER if str(outcome).startswith("no_token:") else SYNC_FAILED


def punctuality(verdict: str, lateness: timedelta | None) -> str | None:
    """on_time / late (deployed; late when more than LATE_AFTER after the intended time) / missed
    (the meeting gets no agent); None for deliveries that decide nothing yet (waiting, retrying...)."""
    if verdict in MISSED_VERDICTS:
        return MISSED
    if verdict == "deployed":
        return LATE if lateness is not None and lateness > LATE_AFTER else ON_TIME
    return None


# ------------------------------------------------------------------ redaction before export
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target", "url.query")
_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|cookie|api_?key|credential|"
                         r"client_assertion|code_verifier|^code$", re.I)


def _without_query(value: object) -> object:
    if not isinstance(value, str):
        return value
    return value.split("?", 1)[0].split("#", 1)[0]


class RedactingSpanProcessor(SpanProcessor):
    """Drops URL query strings (delta tokens, OAuth codes in redirects) and credential-named attributes
    from spans as they start, before any exporter sees them."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        attributes = dict(span.attributes or {})
        for key in _URL_ATTRIBUTES:
            if key in attributes:
                span.set_attribute(key, "" if key == "url.query" else str(_without_query(attributes[key])))
        for key in attributes:
            if _SECRET_KEY.search(key):
                span.set_attribute(key, "[redacted]")

    def on_end(self, span: ReadableSpan) -> None:
        pass


class RedactingLogProcessor(LogRecordProcessor):
    """Removes credential-named attributes and URL query strings from log records before export."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        attributes = log_record.log_record.attributes
        if not attributes:
            return
        for key in list(attributes):
            if _SECRET_KEY.search(key):
                del attributes[key]  # type: ignore[attr-defined]
            elif key in _URL_ATTRIBUTES:
                attributes[key] = _without_query(attributes[key])  # type: ignore[index]
            elif key.startswith("exception.") and isinstance(value := attributes[key], str):
                # The OpenTelemetry handler builds these from exc_info itself, past the logging filter
                # that scrubs exc_text: scrub them here too (a secret in an exception's text).
                attributes[key] = scrub(value)  # type: ignore[index]

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# ------------------------------------------------------------------ setup
def configure_azure_monitor_export(
    connection_string: str,
    *,
    credential: Any = None,
    span_processors: list[SpanProcessor] | None = None,
    log_record_processors: list[LogRecordProcessor] | None = None,
    metric_readers: list[Any] | None = None,
    enable_live_metrics: bool = True,
) -> None:
    """Installs the Azure Monitor distro once per process: logs from the root logger (with every
    `extra` field as a custom dimension), traces (requests/dependencies of `requests` and the Azure
    SDK, plus the spans below) and the metrics above. `credential` authenticates ingestion with Entra
    ID (the app's managed identity; infra disables local auth). Extra processors and readers are for
    tests, which add in-memory exporters to the very pipeline production uses."""
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(
        connection_string=connection_string,
        credential=credential,
        span_processors=[RedactingSpanProcessor(), *(span_processors or [])],
        log_record_processors=[RedactingLogProcessor(), *(log_record_processors or [])],
        metric_readers=list(metric_readers or []),
        enable_live_metrics=enable_live_metrics,
        # Flask, Django, FastAPI and psycopg2 are not used; HTTP requests come from the Functions host.
        instrumentation_options={name: {"enabled": False} for name in ("django", "fastapi", "flask", "psycopg2")},
    )


# ------------------------------------------------------------------ what the app records
class Telemetry:
    """Metrics and spans of the use cases, recorded by the thin triggers and the adapters around them.

    Built on the global OpenTelemetry providers unless given others (tests give in-memory ones)."""

    def __init__(self, *, meter_provider: metrics.MeterProvider | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)
        self._syncs = meter.create_counter(SYNCS, unit="{sync}", description="Sync runs by outcome")
        self._deployments = meter.create_counter(DEPLOYMENTS, unit="{delivery}",
                                                 description="Deploy deliveries by outcome and punctuality")
        self._lateness = meter.create_histogram(DEPLOYMENT_LATENESS, unit="s",
                                                description="Agent API call time minus intended time")
        self._tokens = meter.create_counter(TOKEN_REFRESHES, unit="{acquisition}",
                                            description="Token acquisitions by who can fix a failure")
        self._cache_writes = meter.create_counter(TOKEN_CACHE_WRITES, unit="{write}",
                                                  description="Token caches written to Key Vault")
        self._notifications = meter.create_counter(NOTIFICATIONS_RECEIVED, unit="{notification}",
                                                   description="Graph change notifications accepted")
        self._queue = meter.create_gauge(QUEUE_MESSAGES, unit="{message}",
                                         description="Approximate messages waiting per queue")
        self._fanout = meter.create_counter(FANOUT_JOBS, unit="{job}", description="Jobs enqueued by fan-out pages")

    # metrics ----------------------------------------------------------
    def sync(self, outcome: SyncOutcome | str) -> None:
        self._syncs.add(1, {OUTCOME: str(outcome), RESULT: sync_result(outcome)})

    def deployment(self, verdict: str, lateness: timedelta | None = None) -> None:
        attributes = {OUTCOME: verdict}
        when = punctuality(verdict, lateness)
        if when is not None:
            attributes[PUNCTUALITY] = when
        self._deployments.add(1, attributes)
        if verdict == "deployed" and lateness is not None:
            self._lateness.record(max(lateness.total_seconds(), 0.0))

    def token(self, kind: str, fixed_by: str, *, cache_written: bool) -> None:
        """kind: refresh (forced, the refresh timer), silent (before a sync) or redeem (sign-in);
        fixed_by: "ok" or who can fix the failure (user, admin, service, transient)."""
        self._tokens.add(1, {KIND: kind, FIXED_BY: fixed_by, CACHE_WRITTEN: cache_written})
        if cache_written:
            self._cache_writes.add(1, {KIND: kind})

    def notification_received(self, kind: str = "change") -> None:
        """One Graph change (or lifecycle) notification accepted; the notifications endpoint calls it."""
        self._notifications.add(1, {KIND: kind})

    def queue_depth(self, queue: str, messages: int) -> None:
        self._queue.set(messages, {QUEUE: queue})

    def fanned_out(self, kind: str, jobs: int) -> None:
        if jobs:
            self._fanout.add(jobs, {KIND: kind})

    # traces -----------------------------------------------------------
    @contextmanager
    def job(self, name: str, message: str | bytes | None = None, **ids: str) -> Iterator[trace.Span]:
        """A span for one function run, continuing the trace of whoever enqueued `message` (its
        `traceparent`, W3C Trace Context, written by the queue adapter), with ids as attributes."""
        parent = propagate.extract(_carrier(message)) if message is not None else None
        kind = SpanKind.CONSUMER if message is not None else SpanKind.INTERNAL
        with self._tracer.start_as_current_span(name, context=parent, kind=kind, record_exception=False,
                                                attributes={k: v for k, v in ids.items() if v}) as span:
            try:
                yield span
            except Exception as exc:
                # Recorded by hand, scrubbed: the SDK's own record_exception copies the raw text.
                span.add_event("exception", {"exception.type": type(exc).__name__,
                                             "exception.message": scrub(str(exc))[:1000]})
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise


def trace_carrier() -> dict[str, str]:
    """The current trace context (`traceparent`, `tracestate`) to put into a queue message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _carrier(message: str | bytes) -> Mapping[str, str]:
    try:
        body = json.loads(message)
    except (ValueError, TypeError):
        return {}
    if not isinstance(body, dict):
        return {}
    return {k: v for k, v in body.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}


# ------------------------------------------------------------------ token acquisitions, observed
class ObservedIdentity:
    """The identity adapter, counted: every redemption and silent or forced acquisition is recorded
    with who could fix a failure (the domain's classification, shared/connections.py), whether a new
    token cache was produced (one Key Vault secret version when stored), and an `app_identity_failure`
    error log when Microsoft refused the service's own credentials (the alert's signal)."""

    def __init__(self, inner: IdentityProvider, telemetry: Telemetry) -> None:
        self._inner = inner
        self._telemetry = telemetry

    def begin(self, state: str, login_hint: str | None = None) -> dict[str, Any]:
        return self._inner.begin(state, login_hint)

    def redeem(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn | TokenError:
        result = self._inner.redeem(flow, response)
        if isinstance(result, TokenError):
            self._failed("redeem", result)
        else:
            self._telemetry.token("redeem", "ok", cache_written=True)
        return result

    def acquire(self, cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken | TokenError:
        result = self._inner.acquire(cache, home_account_id, force_refresh=force_refresh)
        kind = "refresh" if force_refresh else "silent"
        if isinstance(result, TokenError):
            self._failed(kind, result)
        else:
            self._telemetry.token(kind, "ok", cache_written=result.cache is not None)
        return result

    def _failed(self, kind: str, error: TokenError) -> None:
        failure = classify_token_error(error.error, error.description, error.error_codes, error.suberror)
        fixed_by = str(failure.fixed_by)
        self._telemetry.token(kind, fixed_by, cache_written=False)
        # The app disabled or missing in a tenant is the service's only when it is not one customer
        # tenant's doing: the token keeper decides (with the tenant) and alerts operators itself.
        tenant_scoped = any(c in TENANT_SCOPED_APP_CODES for c in error.error_codes)
        if fixed_by == SERVICE and not tenant_scoped:
            log.error(APP_IDENTITY_FAILURE, extra={"failure_code": failure.code, "call": kind})
