"""Status events to the CoAgentor platform: an outbox on a Storage queue, and the deliverer that
POSTs each event, signed, until the platform takes it (../shared/API.md, "Status events to the
CoAgentor platform").

What the platform receives, `POST PLATFORM_EVENTS_URL`:
- body: one CloudEvents 1.0 event in structured mode, JSON format, `Content-Type:
  application/cloudevents+json` (CloudEvents 1.0.2 spec, core and JSON format):
  `{"specversion": "1.0", "id": <StatusEvent.id>, "source": "/coagentor/outlook-calendar",
  "type": "com.coagentor.outlook....", "time": <RFC 3339, UTC, "Z">, "subject": <CoAgentor user id>,
  "datacontenttype": "application/json", "data": {...}}`;
- headers, as the Standard Webhooks spec defines them: `webhook-id` = the CloudEvent `id`,
  `webhook-timestamp` = Unix seconds of this attempt, `webhook-signature` = `v1,<base64 of
  HMAC-SHA256("{webhook-id}.{webhook-timestamp}.{body}")>` keyed with the `whsec_<base64>` secret
  kept in Key Vault under `PLATFORM_EVENTS_SECRET_NAME` (shared with the platform by the operator).
  `standardwebhooks.Webhook(secret).verify(body, headers)` accepts it.

Delivery is at least once, and every attempt carries the same `id` (the platform dedupes on it):
`publish` only queues the event (`status-events`); `deliver_status_event` takes it from there.
The platform's answer decides what happens next:
- 2xx: delivered;
- 408, 429, 5xx, a timeout or no connection: tried again after an exponential back-off
  (`PLATFORM_EVENTS_RETRY_SECONDS`, doubling, at most an hour a step, a longer `Retry-After` honoured),
  by queueing the same event again with a visibility delay; for `PLATFORM_EVENTS_RETRY_FOR_SECONDS`
  after it was published, then given up;
- 401 / 403: the secret is read again from Key Vault (it may have been rotated) and, when it changed,
  the attempt is repeated at once with it; refused again, it is retried like a 5xx, each time logged
  at error level: an operator must make the two sides' secrets agree, and events published in the
  meantime must not be lost;
- anything else (3xx, other 4xx): permanent.
An event given up on or refused for good is logged at error level and copied, with the reason, to
`status-events-poison`. The secret is never logged, stored outside Key Vault, or put in an exception.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Protocol

import requests
from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient
from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from shared.adapters.queues import QueueSigner
from shared.clock import Clock
from shared.ports import SecretStore, StatusEvent, StatusEventType
from shared.retry import Backoff
from shared.retry import retry_after as parse_retry_after

log = logging.getLogger(__name__)

EVENT_SOURCE = "/coagentor/outlook-calendar"  # CloudEvents `source`: this service, as the platform knows it
DATA_CONTENT_TYPE = "application/json"
MAX_BACKOFF = timedelta(hours=1)  # the longest single wait between two attempts


# ---------------------------------------------------------------------------------------------------
# The outbox: queue messages
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One status event on its way: the event, when it entered the outbox (the retry budget counts
    from there) and which attempt this queue message is for (1 = the first)."""

    event: StatusEvent
    published_at: datetime
    attempt: int = 1


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("status event times must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_delivery(delivery: Delivery) -> str:
    """The queue message: `{"id", "type", "subject", "time", "data", "published_at", "attempt"}`, JSON.
    Datetimes in `data` become RFC 3339 UTC strings. Raises TypeError/ValueError for data that is
    not JSON (the publisher finds out at once, not at delivery)."""
    event = delivery.event
    return json.dumps({
        "id": event.id,
        "type": event.type.value,
        "subject": event.subject,
        "time": _rfc3339(event.time),
        "data": event.data,
        "published_at": _rfc3339(delivery.published_at),
        "attempt": delivery.attempt,
    }, default=_json_default, separators=(",", ":"))


def decode_delivery(body: str) -> Delivery:
    """The inverse of encode_delivery. Raises ValueError (or KeyError) for anything else; the host
    then retries the message and finally moves it to `status-events-poison`."""
    raw = json.loads(body)
    data = raw["data"]
    if not isinstance(data, dict):
        raise ValueError("status event data must be a JSON object")
    event = StatusEvent(
        type=StatusEventType(raw["type"]), subject=str(raw["subject"]), data=data, id=str(raw["id"]),
        time=datetime.fromisoformat(raw["time"]),
    )
    if not event.id or not event.subject:
        raise ValueError("status event without an id or a subject")
    return Delivery(event=event, published_at=datetime.fromisoformat(raw["published_at"]),
                    attempt=max(1, int(raw.get("attempt", 1))))


class Redelivery(Protocol):
    """Where the deliverer puts an event back: later (same id), or aside for good."""

    def retry(self, delivery: Delivery, delay: timedelta) -> None: ...
    def poison(self, delivery: Delivery, reason: str) -> None: ...


class QueuedStatusEvents:
    """`StatusEvents` on Azure Queue Storage: the outbox `status-events`, and `status-events-poison`
    for what could not be delivered. Queue clients encode messages as base64 text, as the Functions
    queue trigger expects."""

    def __init__(self, *, queue: QueueClient, poison: QueueClient, clock: Clock, signer: QueueSigner) -> None:
        self._queue = queue
        self._poison = poison
        self._clock = clock
        self._signer = signer  # a status event goes out signed: its queue message is signed too

    def publish(self, event: StatusEvent) -> None:
        """Queue the event for delivery now; returns once Storage holds it. Raises TypeError/ValueError
        when `data` is not JSON, azure.core.exceptions.AzureError when Storage refuses it."""
        self._queue.send_message(self._signer.sign(encode_delivery(Delivery(event=event,
                                                                            published_at=self._clock.now()))))
        log.info("status event queued", extra=_dimensions(event))

    def retry(self, delivery: Delivery, delay: timedelta) -> None:
        """Queue the next attempt, the same event (same id), invisible for `delay` (whole seconds)."""
        body = self._signer.sign(encode_delivery(replace(delivery, attempt=delivery.attempt + 1)))
        self._queue.send_message(body, visibility_timeout=_visibility_seconds(delay))

    def poison(self, delivery: Delivery, reason: str) -> None:
        """Keep the event for operators in `status-events-poison`: the message plus `reason`."""
        body = json.loads(encode_delivery(delivery)) | {"reason": reason}
        self._poison.send_message(json.dumps(body, separators=(",", ":")))


def _visibility_seconds(delay: timedelta) -> int:
    # Queue Storage takes whole seconds, at most 7 days.
    return max(0, min(int(delay.total_seconds() + 0.999), 7 * 24 * 3600))


# ---------------------------------------------------------------------------------------------------
# The envelope and its signature
# ---------------------------------------------------------------------------------------------------


# Text in `data` that people outside CoAgentor choose (an invite's title, set by whoever sent the
# invitation): the platform turns events into branded e-mails and notifications, so it is passed as a
# JSON string value (data, never markup), at most MAX_OUTSIDER_TEXT characters, without control or
# bidirectional-override characters (which could fake line breaks or reorder what the reader sees).
# API.md, "Status events": "passed as data, never as markup, and capped at 255 characters".
OUTSIDER_TEXT_FIELDS = ("title",)
MAX_OUTSIDER_TEXT = 255
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")


def outsider_text(value: object) -> str:
    """`value` as plain text safe to show in a notification: control and bidi characters become one
    space, at most MAX_OUTSIDER_TEXT characters."""
    return _INVISIBLE.sub(" ", str(value)).strip()[:MAX_OUTSIDER_TEXT]


def envelope(event: StatusEvent) -> tuple[bytes, dict[str, str]]:
    """The CloudEvents 1.0 structured-mode JSON body of `event` and its `Content-Type` header. Fields
    in OUTSIDER_TEXT_FIELDS are cut to plain text of at most MAX_OUTSIDER_TEXT characters."""
    data = {k: outsider_text(v) if k in OUTSIDER_TEXT_FIELDS and v is not None else v
            for k, v in event.data.items()}
    cloud_event = CloudEvent(
        {
            "specversion": "1.0",
            "id": event.id,
            "source": EVENT_SOURCE,
            "type": event.type.value,
            "time": event.time.astimezone(UTC),
            "subject": event.subject,
            "datacontenttype": DATA_CONTENT_TYPE,
        },
        json.loads(json.dumps(data, default=_json_default)),
    )
    message = to_structured_event(cloud_event)
    return message.body, {"Content-Type": message.headers["content-type"]}


def signature_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for one attempt: `webhook-id`, `webhook-timestamp` (Unix seconds of
    `at`), `webhook-signature` (`v1,<base64 HMAC-SHA256>`). `secret` is `whsec_<base64>`; a malformed
    one raises InvalidSecret (without the value)."""
    try:
        webhook = Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError, ValueError):
        raise InvalidSecret("the signing secret is not whsec_ followed by base64") from None
    at = at.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": webhook.sign(msg_id, at, body.decode("utf-8")),
    }


class InvalidSecret(Exception):
    """The signing secret is missing from Key Vault or malformed; the message never holds its value."""


# ---------------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------------


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    POISONED = "poisoned"


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt came to. `status` is the platform's HTTP status (None without an answer);
    `retry_in` the wait before the next attempt when the verdict is RETRY."""

    verdict: Verdict
    status: int | None
    detail: str
    retry_in: timedelta | None = None

    def __str__(self) -> str:
        after = f" in {self.retry_in.total_seconds():.0f}s" if self.retry_in is not None else ""
        return f"{self.verdict.value}{after} ({self.detail})"


def classify(status: int) -> Verdict | None:
    """A platform answer as a verdict: DELIVERED for 2xx, RETRY for 408, 429 and 5xx, None
    (permanent) otherwise. 401/403 are handled before this (the secret may have been rotated)."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    return None


def retry_after(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """`Retry-After` as a wait (shared.retry.retry_after), capped at MAX_BACKOFF so a bogus value
    cannot park an event; None when absent or unreadable."""
    return parse_retry_after(headers.get("Retry-After"), now, MAX_BACKOFF)


@dataclass(frozen=True)
class _Answer:
    status: int | None
    detail: str
    retry_after: timedelta | None = None


class PlatformEventsDeliverer:
    """Sends one queued status event to the platform and decides what happens next (see the module
    docstring): delivered, queued again later with the same id, or poisoned with an error log."""

    def __init__(self, *, url: str, secrets: SecretStore, secret_name: str, session: requests.Session,
                 timeout: float, outbox: Redelivery, clock: Clock, retry_base: timedelta,
                 retry_for: timedelta) -> None:
        self._url = url
        self._secrets = secrets
        self._secret_name = secret_name
        self._session = session
        self._timeout = timeout
        self._outbox = outbox
        self._clock = clock
        self._retry_base = retry_base
        self._retry_for = retry_for
        self._secret: str | None = None  # read from Key Vault once, again after a 401/403

    def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        """Make one attempt. Raises only when Storage refuses the retry or poison message (the queue
        trigger then fails, and the host delivers the same message again)."""
        event = delivery.event
        body, headers = envelope(event)
        try:
            secret = self._signing_secret(fresh=False)
            answer = self._post(event.id, body, headers, secret)
            if answer.status in (401, 403):
                rotated = self._signing_secret(fresh=True)
                if rotated != secret:
                    answer = self._post(event.id, body, headers, rotated)
        except (InvalidSecret, AzureError) as exc:
            # No usable secret: Key Vault failed, or the operator has not stored a valid one (yet).
            self._secret = None  # read it again next attempt
            detail = f"signing secret {self._secret_name!r} unavailable: {_describe(exc)}"
            return self._again(delivery, _Answer(None, detail), operator_must_act=True)
        if answer.status is not None and answer.status in (401, 403):
            return self._again(delivery, answer, operator_must_act=True)
        verdict = Verdict.RETRY if answer.status is None else classify(answer.status)
        if verdict is Verdict.DELIVERED:
            log.info("status event delivered", extra=_dimensions(event, delivery.attempt, answer.status))
            return DeliveryOutcome(Verdict.DELIVERED, answer.status, answer.detail)
        if verdict is Verdict.RETRY:
            return self._again(delivery, answer, operator_must_act=False)
        return self._give_up(delivery, answer, f"the platform refused it for good ({answer.detail})")

    def backoff(self, attempt: int) -> timedelta:
        """The wait after failed attempt `attempt` (1-based): base, 2x base, 4x base..., at most an hour."""
        return Backoff(base=self._retry_base, cap=MAX_BACKOFF).delay(attempt)

    # ---------------------------------------------------------------------------------------------

    def _signing_secret(self, *, fresh: bool) -> str:
        if fresh or self._secret is None:
            value = self._secrets.get(self._secret_name)
            if not value:
                raise InvalidSecret(f"Key Vault has no secret {self._secret_name!r}")
            self._secret = value
        return self._secret

    def _post(self, msg_id: str, body: bytes, headers: dict[str, str], secret: str) -> _Answer:
        signed = {**headers, **signature_headers(secret, msg_id, self._clock.now(), body)}
        try:
            resp = self._session.post(self._url, data=body, headers=signed, timeout=self._timeout,
                                      allow_redirects=False)
        except requests.Timeout:
            return _Answer(None, "timed out")
        except requests.RequestException as exc:
            return _Answer(None, type(exc).__name__)
        return _Answer(resp.status_code, f"HTTP {resp.status_code}", retry_after(resp.headers, self._clock.now()))

    def _again(self, delivery: Delivery, answer: _Answer, *, operator_must_act: bool) -> DeliveryOutcome:
        now = self._clock.now()
        left = delivery.published_at + self._retry_for - now
        if left <= timedelta(0):
            return self._give_up(delivery, answer, f"still undelivered after {delivery.attempt} attempts over "
                                                   f"{self._retry_for.total_seconds():.0f}s ({answer.detail})")
        wait = self.backoff(delivery.attempt)
        if answer.retry_after is not None:
            wait = max(wait, answer.retry_after)
        wait = min(wait, left)
        self._outbox.retry(delivery, wait)
        level = logging.ERROR if operator_must_act else logging.WARNING
        log.log(level, "status event not delivered (%s), retrying in %.0fs", answer.detail, wait.total_seconds(),
                extra=_dimensions(delivery.event, delivery.attempt, answer.status))
        return DeliveryOutcome(Verdict.RETRY, answer.status, answer.detail, retry_in=wait)

    def _give_up(self, delivery: Delivery, answer: _Answer, reason: str) -> DeliveryOutcome:
        self._outbox.poison(delivery, reason)
        log.error("status event undeliverable, moved to the poison queue: %s", reason,
                  extra=_dimensions(delivery.event, delivery.attempt, answer.status))
        return DeliveryOutcome(Verdict.POISONED, answer.status, reason)


def _describe(exc: Exception) -> str:
    # InvalidSecret messages are ours and hold no value; SDK errors are named by type only.
    return str(exc) if isinstance(exc, InvalidSecret) else type(exc).__name__


def _dimensions(event: StatusEvent, attempt: int | None = None, status: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event_id": event.id, "event_type": event.type.value, "user_id": event.subject}
    if attempt is not None:
        out["attempt"] = attempt
    if status is not None:
        out["http_status"] = status
    return out
