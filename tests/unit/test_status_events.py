"""Users are told: status events reach the platform as signed CloudEvents, at least once, with one id.

In memory: a fake platform endpoint (which checks the Standard Webhooks signature as the platform
would), the fake Key Vault, and an outbox that keeps what the deliverer queues again or poisons."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.adapters.platform_events import (
    Delivery,
    PlatformEventsDeliverer,
    Verdict,
    decode_delivery,
    encode_delivery,
    envelope,
    signature_headers,
)
from shared.clock import FixedClock
from shared.ports import StatusEvent, StatusEventType
from tests import fakes

SECRET_NAME = "platform-events-secret"
URL = "https://platform.example/hooks/outlook"
BASE = timedelta(seconds=30)
DAY = timedelta(hours=24)


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def error_event(now: datetime) -> StatusEvent:
    return StatusEvent(
        type=StatusEventType.CONNECTION_ERROR, subject="user-alice", id="evt-7f3c2a",
        time=now - timedelta(seconds=5),
        data={"connection_id": "c-1", "email": "alice@contoso.com", "reason_code": "access_revoked",
              "action": "reconnect", "meetings_at_risk": 2},
    )


@dataclass
class Platform:
    """The platform's endpoint: answers from a script, 401 to a signature its secret cannot verify."""

    secret: str
    script: list[int | type[Exception] | tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    check_signatures: bool = True  # off when a test moves its clock far from real time

    def post(self, url: str, *, data: bytes, headers: dict[str, str], timeout: float,
             allow_redirects: bool) -> requests.Response:
        assert timeout > 0 and not allow_redirects
        self.urls.append(url)
        self.received.append((data, dict(headers)))
        step = self.script.pop(0) if self.script else 204
        if isinstance(step, type):
            raise step("injected")
        status, extra = step if isinstance(step, tuple) else (step, {})
        try:
            if self.check_signatures:
                Webhook(self.secret).verify(data, headers)
        except WebhookVerificationError:
            status, extra = 401, {}
        resp = requests.Response()
        resp.status_code = status
        resp.headers.update(extra)
        resp._content = b""
        return resp

    def ids(self) -> set[str]:
        return {json.loads(body)["id"] for body, _ in self.received} | {h["webhook-id"] for _, h in self.received}


@dataclass
class Outbox:
    """What the queue would hold: the next attempts (with their visibility delays) and the poison queue."""

    again: list[tuple[str, timedelta]] = field(default_factory=list)
    poisoned: list[tuple[Delivery, str]] = field(default_factory=list)

    def retry(self, delivery: Delivery, delay: timedelta) -> None:
        self.again.append((encode_delivery(Delivery(delivery.event, delivery.published_at, delivery.attempt + 1)),
                           delay))

    def poison(self, delivery: Delivery, reason: str) -> None:
        self.poisoned.append((delivery, reason))

    def next(self) -> Delivery:
        body, _ = self.again.pop(0)
        return decode_delivery(body)


@dataclass
class Setup:
    clock: FixedClock
    vault: fakes.Secrets
    platform: Platform
    outbox: Outbox
    deliverer: PlatformEventsDeliverer
    secret: str

    def first(self) -> Delivery:
        event = error_event(self.clock.now())
        return decode_delivery(encode_delivery(Delivery(event=event, published_at=self.clock.now())))


@pytest.fixture
def setup() -> Setup:
    # Signatures carry the attempt's time and the platform rejects those 5 minutes off real time.
    clock = FixedClock(datetime.now(UTC))
    secret = whsec()
    vault = fakes.Secrets()
    vault.set(SECRET_NAME, secret)
    platform = Platform(secret=secret)
    outbox = Outbox()
    deliverer = PlatformEventsDeliverer(url=URL, secrets=vault, secret_name=SECRET_NAME, session=platform,  # type: ignore[arg-type]
                                        timeout=20, outbox=outbox, clock=clock, retry_base=BASE, retry_for=DAY)
    return Setup(clock, vault, platform, outbox, deliverer, secret)


def never_logged(caplog: pytest.LogCaptureFixture, secret: str) -> None:
    key = secret.removeprefix("whsec_")
    for record in caplog.records:
        text = record.getMessage() + " " + json.dumps(record.__dict__, default=str)
        assert key not in text


# ---------------------------------------------------------------------------------------------------
# What the platform receives
# ---------------------------------------------------------------------------------------------------


def test_the_platform_receives_a_cloudevent_about_the_user(setup: Setup) -> None:
    delivery = setup.first()
    outcome = setup.deliverer.deliver(delivery)

    assert outcome.verdict is Verdict.DELIVERED and outcome.status == 204
    [(body, headers)] = setup.platform.received
    assert setup.platform.urls == [URL]
    assert headers["Content-Type"] == "application/cloudevents+json"
    sent = json.loads(body)
    assert sent == {
        "specversion": "1.0",
        "id": "evt-7f3c2a",
        "source": "/coagentor/outlook-calendar",
        "type": "com.coagentor.outlook.connection.error",
        "time": sent["time"],
        "subject": "user-alice",
        "datacontenttype": "application/json",
        "data": {"connection_id": "c-1", "email": "alice@contoso.com", "reason_code": "access_revoked",
                 "action": "reconnect", "meetings_at_risk": 2},
    }
    assert sent["time"].endswith("Z")
    assert datetime.fromisoformat(sent["time"]) == delivery.event.time
    # A CloudEvents SDK on the platform's side reads it back as the same event.
    parsed = from_http_event(HTTPMessage({k.lower(): v for k, v in headers.items()}, body))
    assert (parsed.get_id(), parsed.get_type(), parsed.get_subject()) == (
        "evt-7f3c2a", "com.coagentor.outlook.connection.error", "user-alice")


def test_the_signature_verifies_with_the_shared_secret_and_no_other(setup: Setup) -> None:
    setup.deliverer.deliver(setup.first())
    [(body, headers)] = setup.platform.received

    assert headers["webhook-id"] == "evt-7f3c2a"
    assert int(headers["webhook-timestamp"]) == int(setup.clock.now().timestamp())
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(setup.secret).verify(body, headers)["id"] == "evt-7f3c2a"
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec()).verify(body, headers)
    tampered = body.replace(b"access_revoked", b"token_expired")
    with pytest.raises(WebhookVerificationError):
        Webhook(setup.secret).verify(tampered, headers)


def test_event_data_with_times_is_sent_as_rfc3339_utc() -> None:
    now = datetime.now(UTC)
    event = StatusEvent(type=StatusEventType.AGENT_FAILED, subject="user-bob", id="evt-1", time=now,
                        data={"meeting_id": "m-1", "title": "Weekly", "start": datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
                              "reason": "agent_api_refused"})
    body, _ = envelope(event)
    assert json.loads(body)["data"]["start"] == "2026-03-02T09:30:00Z"
    queued = decode_delivery(encode_delivery(Delivery(event, published_at=now)))
    assert (queued.event.id, queued.event.type, queued.event.subject, queued.event.time) == (
        "evt-1", StatusEventType.AGENT_FAILED, "user-bob", now)
    assert queued.event.data["start"] == "2026-03-02T09:30:00Z"


def test_an_event_whose_data_is_not_json_is_refused_when_published() -> None:
    event = StatusEvent(type=StatusEventType.CONNECTION_RESTORED, subject="u", id="e", time=datetime.now(UTC),
                        data={"connection": object()})
    with pytest.raises(TypeError):
        encode_delivery(Delivery(event, published_at=datetime.now(UTC)))


# ---------------------------------------------------------------------------------------------------
# Retries keep the id; what is permanent and what is not
# ---------------------------------------------------------------------------------------------------


def test_a_busy_platform_gets_the_same_event_again_later_with_the_same_id(setup: Setup,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    setup.platform.script = [503, 503, 200]
    caplog.set_level(logging.INFO)

    first = setup.deliverer.deliver(setup.first())
    assert first.verdict is Verdict.RETRY and first.retry_in == BASE
    setup.clock.advance(first.retry_in.total_seconds())
    second = setup.deliverer.deliver(setup.outbox.next())
    assert second.verdict is Verdict.RETRY and second.retry_in == 2 * BASE
    setup.clock.advance(second.retry_in.total_seconds())
    third_try = setup.outbox.next()
    assert third_try.attempt == 3
    third = setup.deliverer.deliver(third_try)

    assert third.verdict is Verdict.DELIVERED
    assert len(setup.platform.received) == 3 and setup.platform.ids() == {"evt-7f3c2a"}
    assert not setup.outbox.again and not setup.outbox.poisoned
    # Each attempt is signed afresh (its own timestamp), and each signature verifies.
    stamps = [h["webhook-timestamp"] for _, h in setup.platform.received]
    assert len(set(stamps)) == 3
    last_body, last_headers = setup.platform.received[-1]
    assert Webhook(setup.secret).verify(last_body, last_headers)
    never_logged(caplog, setup.secret)


@pytest.mark.parametrize("answer", [500, 502, 503, 504, 408, 429, requests.Timeout, requests.ConnectionError])
def test_outages_timeouts_and_throttling_are_retried(setup: Setup, answer: int | type[Exception]) -> None:
    setup.platform.script = [answer]
    outcome = setup.deliverer.deliver(setup.first())
    assert outcome.verdict is Verdict.RETRY
    [(queued, delay)] = setup.outbox.again
    assert delay == BASE and decode_delivery(queued).event.id == "evt-7f3c2a"
    assert not setup.outbox.poisoned


def test_a_longer_retry_after_is_honoured_and_a_bogus_one_ignored(setup: Setup) -> None:
    setup.platform.script = [(429, {"Retry-After": "120"}), (503, {"Retry-After": "soon"}),
                             (503, {"Retry-After": "999999999"})]
    waits = [setup.deliverer.deliver(setup.first()).retry_in for _ in range(3)]
    assert waits == [timedelta(seconds=120), BASE, timedelta(hours=1)]


@pytest.mark.parametrize("status", [400, 404, 410, 413, 422, 301])
def test_a_refusal_for_good_is_logged_for_operators_and_kept_in_the_poison_queue(
        setup: Setup, caplog: pytest.LogCaptureFixture, status: int) -> None:
    setup.platform.script = [status]
    outcome = setup.deliverer.deliver(setup.first())

    assert outcome.verdict is Verdict.POISONED and outcome.status == status
    assert not setup.outbox.again
    [(delivery, reason)] = setup.outbox.poisoned
    assert delivery.event.id == "evt-7f3c2a" and f"HTTP {status}" in reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and getattr(errors[0], "event_id", None) == "evt-7f3c2a"
    assert len(setup.platform.received) == 1
    never_logged(caplog, setup.secret)


def test_backoff_doubles_from_the_setting_up_to_an_hour(setup: Setup) -> None:
    waits = [setup.deliverer.backoff(n).total_seconds() for n in range(1, 10)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_after_the_retry_budget_the_event_is_poisoned_with_an_error_log(setup: Setup,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    setup.platform.script = [503] * 100
    setup.platform.check_signatures = False  # a simulated day passes; Standard Webhooks allows 5 minutes of skew
    delivery = setup.first()
    attempts = 0
    while True:
        attempts += 1
        outcome = setup.deliverer.deliver(delivery)
        if outcome.verdict is not Verdict.RETRY:
            break
        assert outcome.retry_in is not None
        setup.clock.advance(outcome.retry_in.total_seconds())
        delivery = setup.outbox.next()

    assert outcome.verdict is Verdict.POISONED
    # The last wait is cut to the deadline, so the final attempt happens exactly a day after publishing.
    assert setup.clock.now() == delivery.published_at + DAY
    assert 20 < attempts < 40
    assert setup.platform.ids() == {"evt-7f3c2a"}
    [(poisoned, reason)] = setup.outbox.poisoned
    assert poisoned.attempt == attempts and "HTTP 503" in reason
    assert any(r.levelno == logging.ERROR and "poison" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------------
# The signing secret
# ---------------------------------------------------------------------------------------------------


def test_a_secret_rotated_in_key_vault_is_used_after_the_platform_refuses_the_old_one(setup: Setup) -> None:
    assert setup.deliverer.deliver(setup.first()).verdict is Verdict.DELIVERED  # the old secret is cached now
    rotated = whsec()
    setup.vault.set(SECRET_NAME, rotated)
    setup.platform.secret = rotated

    outcome = setup.deliverer.deliver(setup.first())

    assert outcome.verdict is Verdict.DELIVERED
    (_, refused), (body, accepted) = setup.platform.received[1:]
    assert refused["webhook-id"] == accepted["webhook-id"] == "evt-7f3c2a"
    assert Webhook(rotated).verify(body, accepted)


def test_a_secret_the_platform_does_not_share_keeps_the_event_and_alerts_operators(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    setup.platform.secret = whsec()  # the operator updated one side only

    outcome = setup.deliverer.deliver(setup.first())

    assert outcome.verdict is Verdict.RETRY and outcome.status == 401
    assert len(setup.outbox.again) == 1 and not setup.outbox.poisoned
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    never_logged(caplog, setup.secret)


@pytest.mark.parametrize("stored", [None, "", "whsec_***not base64***", "whsec_"])
def test_without_a_usable_secret_nothing_is_sent_and_operators_are_alerted(
        setup: Setup, caplog: pytest.LogCaptureFixture, stored: str | None) -> None:
    setup.vault.values.pop(SECRET_NAME)
    if stored is not None:
        setup.vault.values[SECRET_NAME] = stored

    outcome = setup.deliverer.deliver(setup.first())

    assert outcome.verdict is Verdict.RETRY and not setup.platform.received
    assert SECRET_NAME in outcome.detail
    assert any(r.levelno == logging.ERROR and SECRET_NAME in r.getMessage() for r in caplog.records)
    if stored and stored.removeprefix("whsec_"):
        assert stored.removeprefix("whsec_") not in caplog.text
    # Once the operator stores it, the next attempt goes through.
    setup.vault.values[SECRET_NAME] = setup.secret
    assert setup.deliverer.deliver(setup.outbox.next()).verdict is Verdict.DELIVERED


def test_signature_headers_name_no_secret_when_it_is_malformed() -> None:
    with pytest.raises(Exception) as raised:
        signature_headers("whsec_%%%%", "evt", datetime.now(UTC), b"{}")
    assert "%%%%" not in str(raised.value)


def test_the_recording_fake_keeps_what_services_publish() -> None:
    recorder = fakes.RecordingStatusEvents()
    event = error_event(datetime.now(UTC))
    recorder.publish(event)
    assert recorder.published == [event]
    assert recorder.of_type(StatusEventType.CONNECTION_ERROR) == [event]
    assert recorder.of_type(StatusEventType.CONNECTION_RESTORED) == []


def test_an_invite_title_chosen_by_an_outsider_reaches_the_platform_as_capped_plain_data() -> None:
    """Whoever sends the invitation picks its title; the platform turns the event into a branded
    notification. It arrives as a JSON string of at most 255 characters, markup kept as literal text
    (never interpreted here), with no line breaks or bidi overrides to fake a second message."""
    forged = ('<a href="https://evil.example/reset">Reset your password</a>\r\n\r\nCoAgentor Security: '
              "\u202egnp.exe " + "x" * 5000)
    event = StatusEvent(type=StatusEventType.AGENT_FAILED, subject="user-bob", id="evt-2", time=datetime.now(UTC),
                        data={"meeting_id": "m-1", "title": forged, "start": "2026-03-02T09:30:00Z",
                              "reason": "agent_api_refused"})
    body, _ = envelope(event)
    sent = json.loads(body)
    title = sent["data"]["title"]
    assert sent["datacontenttype"] == "application/json"
    assert isinstance(title, str) and len(title) <= 255
    assert title.startswith('<a href="https://evil.example/reset">Reset your password</a> ')
    assert not any(ch in title for ch in "\r\n\u202e")
    assert sent["data"]["meeting_id"] == "m-1" and sent["data"]["reason"] == "agent_api_refused"
