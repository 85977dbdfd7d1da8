"""What operators see in Application Insights: the triggers' logs, spans and metrics carry connection
and meeting ids, a trace continues from whoever enqueued a job, outcomes are counted under the names
the alerts query, and no token, code or secret reaches anything exported.

The pipeline is OpenTelemetry's SDK with in-memory exporters behind the same redacting processors and
the same logging handler that `configure_azure_monitor_export` installs in Azure."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.adapters import telemetry as t
from shared.adapters.queues import encode_deploy, encode_sync, traced
from shared.connections import Plan
from shared.platform_auth import User
from shared.ports import AccessToken, SignedIn, SyncJob, TokenError
from shared.triggers import background
from tests.unit.test_sync_and_deploy import event

ALICE = User("user-telemetry", Plan.PRO)
ACCOUNT = ("uid-t.tid-contoso", "tid-contoso", "alice@contoso.com")
# Distinctive stand-ins for what must never be exported.
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkFDQ0VTUy1UT0tFTi1zZWNyZXQtOTE3In0"
REFRESHED_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IlJFRlJFU0hFRC1zZWNyZXQtNDQyIn0"
TOKEN_CACHE = '{"RefreshToken": {"secret": "0.ARwA-REFRESH-TOKEN-secret-555"}}'
AUTH_CODE = "0.AUTH-CODE-secret-7731"
SECRETS = (ACCESS_TOKEN, REFRESHED_TOKEN, "REFRESH-TOKEN-secret-555", AUTH_CODE)


@dataclass
class Exported:
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter
    metrics: InMemoryMetricReader
    telemetry: t.Telemetry
    tracer: Any

    def span(self, name: str) -> Any:
        found = [s for s in self.spans.get_finished_spans() if s.name == name]
        assert found, f"no span {name!r}: {[s.name for s in self.spans.get_finished_spans()]}"
        return found[-1]

    def log_attributes(self) -> list[dict[str, Any]]:
        return [dict(r.log_record.attributes or {}) | {"body": r.log_record.body}
                for r in self.logs.get_finished_logs()]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out += [(dict(p.attributes or {}), getattr(p, "value", None) or getattr(p, "count", None))
                                for p in metric.data.data_points]
        return out

    def everything(self) -> str:
        """Every exported attribute, body and name, as text."""
        parts = [json.dumps({"name": s.name, "attributes": dict(s.attributes or {})}, default=str)
                 for s in self.spans.get_finished_spans()]
        parts += [json.dumps(a, default=str) for a in self.log_attributes()]
        data = self.metrics.get_metrics_data()
        parts.append(data.to_json() if data else "")
        return "\n".join(parts)


@pytest.fixture
def exported() -> Iterator[Exported]:
    spans, logs, reader = InMemorySpanExporter(), InMemoryLogRecordExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(t.RedactingSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(t.RedactingLogProcessor())
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    telemetry = t.Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider)
    try:
        yield Exported(spans, logs, reader, telemetry, tracer_provider.get_tracer("test"))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _with_secrets(world: Any) -> None:
    """The fake identity platform hands out distinctive tokens and caches."""
    home, tid, email = ACCOUNT

    def redeem(flow: Any, response: Any) -> SignedIn:
        assert response["code"] == AUTH_CODE
        return SignedIn(cache=TOKEN_CACHE, access_token=ACCESS_TOKEN,
                        access_expires_at=world.clock.now() + timedelta(hours=1), home_account_id=home,
                        tenant_id=tid, username=email)

    def acquire(cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken:
        return AccessToken(REFRESHED_TOKEN if force_refresh else ACCESS_TOKEN,
                           world.clock.now() + timedelta(hours=1), TOKEN_CACHE + "+" if force_refresh else None)

    world.identity.redeem = redeem
    world.identity.acquire = acquire


def _message(body: str) -> func.QueueMessage:
    return func.QueueMessage(id="m1", body=body.encode())


def test_sync_and_deploy_export_their_ids_continue_the_trace_and_leak_no_secret(world, exported, monkeypatch):
    _with_secrets(world)
    monkeypatch.setattr(background, "container", lambda: SimpleNamespace(
        telemetry=exported.telemetry, sync=world.sync, deploy=world.deploy, clock=world.clock, tokens=world.tokens))
    url = world.connect.start(ALICE, None)
    result = world.connect.complete({"code": AUTH_CODE, "state": url.split("state=")[1]})
    conn = world.connect.claim(ALICE, result.claim).connection
    world.calendar.add(event(world, "ev-1", minutes_from_now=30))

    # The claim (an HTTP call) enqueues the sync: the queue function continues its trace.
    with exported.tracer.start_as_current_span("claim") as claim_span:
        body = traced(encode_sync(SyncJob(ALICE.id, conn.id, reason="claimed")))
    assert "traceparent" in json.loads(body)
    background.sync_calendar(_message(body))

    sync_span = exported.span("sync_calendar")
    assert sync_span.attributes["connection_id"] == conn.id
    assert sync_span.context.trace_id == claim_span.get_span_context().trace_id
    assert sync_span.parent is not None and sync_span.parent.span_id == claim_span.get_span_context().span_id
    logged = [a for a in exported.log_attributes() if a.get("connection_id") == conn.id]
    assert any("sync" in str(a["body"]) for a in logged), exported.log_attributes()
    assert ({t.OUTCOME: "synced", t.RESULT: "ok"}, 1) in exported.points(t.SYNCS)

    # The deploy message surfaces on time: deployed, counted on time, ids on span and logs.
    job, _ = next((j, d) for j, d in world.jobs.deploys)
    world.clock.set(job.deploy_at + timedelta(seconds=2))
    background.deploy_agent(_message(encode_deploy(job)))
    deploy_span = exported.span("deploy_agent")
    assert deploy_span.attributes["meeting_id"] == job.meeting_key
    assert any(a.get("meeting_id") == job.meeting_key for a in exported.log_attributes())
    assert ({t.OUTCOME: "deployed", t.PUNCTUALITY: t.ON_TIME}, 1) in exported.points(t.DEPLOYMENTS)

    leaked = [s for s in SECRETS if s in exported.everything()]
    assert not leaked, f"exported telemetry holds secrets: {leaked}"


def test_a_late_deployment_and_a_too_late_one_are_counted_late_and_missed(exported):
    exported.telemetry.deployment("deployed", lateness=timedelta(seconds=95))
    exported.telemetry.deployment("too_late", lateness=timedelta(minutes=9))
    exported.telemetry.deployment("waiting", lateness=timedelta(seconds=-30))
    points = exported.points(t.DEPLOYMENTS)
    assert ({t.OUTCOME: "deployed", t.PUNCTUALITY: t.LATE}, 1) in points
    assert ({t.OUTCOME: "too_late", t.PUNCTUALITY: t.MISSED}, 1) in points
    assert ({t.OUTCOME: "waiting"}, 1) in points  # decides nothing yet: no punctuality


def test_sync_failures_are_counted_failed_and_unknown_outcomes_are_never_hidden(world, exported, monkeypatch):
    monkeypatch.setattr(background, "container", lambda: SimpleNamespace(telemetry=exported.telemetry,
                                                                         sync=world.sync))

    def boom(job: SyncJob) -> None:
        raise RuntimeError("Graph request failed: HTTP 500")

    monkeypatch.setattr(world.sync, "sync", boom)
    with pytest.raises(RuntimeError):
        background.sync_calendar(_message(encode_sync(SyncJob(ALICE.id, "conn-x"))))
    assert ({t.OUTCOME: "error", t.RESULT: t.SYNC_FAILED}, 1) in exported.points(t.SYNCS)
    assert exported.span("sync_calendar").status.is_ok is False
    assert t.sync_result("something_new") == t.SYNC_FAILED
    assert t.sync_result("throttled") == "deferred" and t.sync_result("no_token:token_expired") == "user"


def test_token_acquisitions_are_counted_by_who_can_fix_them_and_an_app_failure_is_logged(world, exported):
    observed = t.ObservedIdentity(world.identity, exported.telemetry)
    home = world.identity.next_account[0]
    assert not isinstance(observed.acquire("cache", home, force_refresh=True), TokenError)
    observed.acquire("cache", home, force_refresh=False)
    world.identity.refresh_errors[home] = TokenError(
        "invalid_client", "AADSTS7000222: The provided client secret keys for app are expired.",
        error_codes=(7000222,))
    assert isinstance(observed.acquire("cache", home, force_refresh=True), TokenError)
    world.identity.refresh_errors[home] = TokenError("invalid_grant", "AADSTS700082: expired", error_codes=(700082,))
    observed.acquire("cache", home, force_refresh=True)

    points = exported.points(t.TOKEN_REFRESHES)
    assert ({t.KIND: "refresh", t.FIXED_BY: "ok", t.CACHE_WRITTEN: True}, 1) in points
    assert ({t.KIND: "silent", t.FIXED_BY: "ok", t.CACHE_WRITTEN: False}, 1) in points
    assert ({t.KIND: "refresh", t.FIXED_BY: t.SERVICE, t.CACHE_WRITTEN: False}, 1) in points
    assert ({t.KIND: "refresh", t.FIXED_BY: "user", t.CACHE_WRITTEN: False}, 1) in points
    assert exported.points(t.TOKEN_CACHE_WRITES) == [({t.KIND: "refresh"}, 1)]  # Key Vault writes: changes only
    failures = [a for a in exported.log_attributes() if a["body"] == t.APP_IDENTITY_FAILURE]
    assert len(failures) == 1 and failures[0]["failure_code"] == "AADSTS7000222"


def test_the_app_refused_in_a_tenant_is_left_to_the_token_keeper_to_page_operators(world, exported):
    """AADSTS7000112 / 700016 may be one customer tenant's doing: only the token keeper, which knows the
    tenant, decides whether it is the service's (and then logs app_identity_failure itself)."""
    observed = t.ObservedIdentity(world.identity, exported.telemetry)
    home = world.identity.next_account[0]
    world.identity.refresh_errors[home] = TokenError("unauthorized_client", "AADSTS7000112: disabled",
                                                     error_codes=(7000112,))
    observed.acquire("cache", home, force_refresh=True)
    assert [a for a in exported.log_attributes() if a["body"] == t.APP_IDENTITY_FAILURE] == []


def test_credentials_and_query_strings_are_stripped_before_export(exported):
    with exported.tracer.start_as_current_span("GET", attributes={
            "url.full": "https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=SECRETDELTA",
            "http.url": "https://app/api/outlook/callback?code=SECRETCODE&state=s", "access_token": "SECRETAT"}):
        pass
    logging.getLogger("shared.test").warning("redirect", extra={
        "refresh_token": "SECRETRT", "url.full": "https://x/cb?code=SECRETCODE2", "connection_id": "c-1"})
    text = exported.everything()
    assert "c-1" in text and "graph.microsoft.com/v1.0/me/calendarView/delta" in text
    assert not [s for s in ("SECRETDELTA", "SECRETCODE", "SECRETAT", "SECRETRT", "SECRETCODE2") if s in text]


def test_queue_depths_and_notifications_are_exported_under_the_alerted_names(exported):
    exported.telemetry.queue_depth("agent-deployments-poison", 3)
    exported.telemetry.notification_received()
    assert ({t.QUEUE: "agent-deployments-poison"}, 3) in exported.points(t.QUEUE_MESSAGES)
    assert ({t.KIND: "change"}, 1) in exported.points(t.NOTIFICATIONS_RECEIVED)


def test_an_exception_exported_to_application_insights_is_scrubbed():
    """The OpenTelemetry log handler copies exception text from exc_info itself (past the logging
    filter): a registered secret in an exception message never reaches the exported record."""
    from shared.adapters.telemetry import RedactingLogProcessor
    from shared.redaction import register_secret

    secret = "agent-key-" + "s3cr3t" * 4
    register_secret(secret)

    class Record:
        def __init__(self) -> None:
            self.log_record = type("LR", (), {})()
            self.log_record.attributes = {"exception.message": f"header value {secret} is invalid",
                                          "exception.stacktrace": f"Traceback...\\nValueError: {secret}",
                                          "connection_id": "c1"}

    record = Record()
    RedactingLogProcessor().on_emit(record)  # type: ignore[arg-type]
    exported = record.log_record.attributes
    assert secret not in exported["exception.message"] and secret not in exported["exception.stacktrace"]
    assert exported["connection_id"] == "c1"


def test_the_shipped_host_json_routes_invocation_telemetry_through_opentelemetry():
    """With the default mode the Functions host sends a failed invocation's exception to Application
    Insights through its own SDK, past the worker's scrubbing processors above. `"telemetryMode":
    "OpenTelemetry"` at host.json's root hands that telemetry to the OpenTelemetry pipeline the app
    configures (learn.microsoft.com/azure/azure-functions/opentelemetry-howto, "Enable OpenTelemetry
    in the Functions host")."""
    from pathlib import Path

    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    assert host.get("telemetryMode") == "OpenTelemetry"
    assert host["version"] == "2.0"
