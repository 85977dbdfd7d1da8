"""Graph change and lifecycle notifications, as they reach `POST /api/outlook/notifications[/lifecycle]`.

What Graph sends and expects (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks,
https://learn.microsoft.com/graph/change-notifications-lifecycle-events):
- a body `{"value": [{"subscriptionId", "clientState", "changeType", "resource", "tenantId", ...}]}`,
  lifecycle ones with `lifecycleEvent` (`reauthorizationRequired`, `subscriptionRemoved`, `missed`)
  instead of `changeType`; several can come in one POST;
- a 2xx within 3 seconds, else it retries for up to 4 hours and throttles a slow endpoint; "persist,
  then 202" is the pattern for work that takes longer. A 5xx asks it to retry.

So nothing here reads the calendar. A genuine notification (its subscription known, its clientState
equal, compared in constant time, to the secret kept for that subscription) queues one sync of the
connection, and bursts collapse: while one requested sync is queued or running, further
notifications only announce their change, and the running sync reads it before it lets go
(shared/services/sync.py, "Requested syncs"). Anything else (unknown
subscription, wrong or missing clientState) is answered 202 like a genuine one, so a forger learns
nothing, changes nothing, and is logged without the secret. A body that is not a notification
collection is a 400 with the reason."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.clock import Clock
from shared.ports import (
    JobQueue,
    SecretStore,
    SubscriptionJob,
    SubscriptionJobs,
    SubscriptionStore,
    SyncStateStore,
)
from shared.services.subscriptions import REAUTHORIZE, RECREATE
from shared.services.sync import NOTIFIED, request_sync

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_NOTIFICATIONS = 1000  # per POST
MAX_VALIDATION_TOKEN_CHARS = 1024
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


class MalformedNotification(ValueError):
    """Not a change-notification collection: answered 400 with this message."""


@dataclass
class Received:
    """What one POST held: genuine notifications accepted, others refused (with why), syncs queued
    (0 or 1: one connection per subscription URL) and lifecycle jobs queued."""

    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    syncs_queued: int = 0
    lifecycle: dict[str, int] = field(default_factory=dict)

    def refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1


class SyncRequests:
    """One queued sync per connection at a time: a notification (or a lifecycle event, or a new
    subscription) asks for a sync, and while one asked this way (or by "sync now") is queued or
    running, asking again only announces the change (the running sync reads it before it lets go).
    The marker is the one `SyncService.sync_now` uses (`SyncStateStore.mark_queued`, atomic)."""

    def __init__(self, *, sync_state: SyncStateStore, jobs: JobQueue, clock: Clock) -> None:
        self._state = sync_state
        self._jobs = jobs
        self._clock = clock

    def request(self, user_id: str, connection_id: str) -> bool:
        """True when this call queued the sync; False when one was already queued or running (it
        reads this change: see shared.services.sync, "Requested syncs")."""
        return request_sync(self._state, self._jobs, self._clock.now(), user_id, connection_id, NOTIFIED)


class ClientStates:
    """clientState secrets by Key Vault name, read once per process: names are never reused, so a
    value read never changes. At most `size` kept (least recently used go first)."""

    def __init__(self, secrets_store: SecretStore, size: int = 10_000) -> None:
        self._secrets = secrets_store
        self._size = size
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> str | None:
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
        value = self._secrets.get(name)
        if value:
            with self._lock:
                self._cache[name] = value
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return value


class NotificationService:
    def __init__(
        self,
        *,
        subscriptions: SubscriptionStore,
        client_states: ClientStates,
        syncs: SyncRequests,
        jobs: SubscriptionJobs,
        on_accepted: Callable[[str], None] | None = None,
    ) -> None:
        self._store = subscriptions
        self._client_states = client_states
        self._syncs = syncs
        self._jobs = jobs
        self._on_accepted = on_accepted

    def receive(self, connection_id: str | None, body: bytes) -> Received:
        """Handle one POST from Graph to either notification URL. Raises MalformedNotification (400)
        for a body that is not a notification collection; lets storage errors through (the route
        answers 5xx and Graph retries). Lifecycle notifications are recognised by `lifecycleEvent`
        whichever URL they reach."""
        items = parse_collection(body)
        received = Received()
        record = self._store.get(connection_id) if connection_id else None
        expected = self._client_states.get(record.secret_name) if record is not None else None
        wants_sync = False
        # Ids from the request are logged printable and short: anyone can POST here, and a field
        # must not forge log lines. Refusals are logged once per request, not once per item.
        ctx = {"connection_id": _printable(connection_id)}
        for item in items:
            subscription_id = item.get("subscriptionId")
            if record is None or subscription_id != record.subscription_id:
                received.refuse("unknown_subscription")
                continue
            if not _same_secret(item.get("clientState"), expected):
                received.refuse("client_state_mismatch")
                continue
            received.accepted += 1
            event = item.get("lifecycleEvent")
            if event is None:
                wants_sync = True
                self._accepted("change")
                continue
            if event not in LIFECYCLE_EVENTS:
                log.warning("lifecycle notification of an unknown kind ignored: %s", _printable(str(event)[:40]),
                            extra=ctx)
                continue
            received.lifecycle[str(event)] = received.lifecycle.get(str(event), 0) + 1
            self._accepted(str(event))
            log.info("lifecycle notification: %s", event, extra=ctx)
            if event == "missed":
                wants_sync = True  # the delta round reads every change since the last one
            elif event == "reauthorizationRequired":
                # Delivery is paused until reauthorized with a fresh token; the job then resyncs.
                self._jobs.enqueue(SubscriptionJob(record.user_id, record.connection_id, REAUTHORIZE))
            else:  # subscriptionRemoved: a new subscription, then a resync (the job asks for it)
                self._jobs.enqueue(SubscriptionJob(record.user_id, record.connection_id, RECREATE))
        if received.refused:
            counts = ", ".join(f"{kind} x{n}" for kind, n in sorted(received.refused.items()))
            log.warning("notifications refused: %s", counts, extra=ctx)
        if wants_sync and record is not None and self._syncs.request(record.user_id, record.connection_id):
            received.syncs_queued += 1
        return received


    def _accepted(self, kind: str) -> None:
        if self._on_accepted is not None:
            self._on_accepted(kind)


def parse_collection(body: bytes) -> list[dict[str, Any]]:
    """The `value` list of a changeNotificationCollection
    (https://learn.microsoft.com/graph/api/resources/changenotificationcollection)."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedNotification(f"The body is larger than {MAX_BODY_BYTES} bytes")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedNotification("The body is not JSON") from None
    value = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(value, list) or not value:
        raise MalformedNotification('Expected {"value": [notification, ...]} with at least one notification')
    if len(value) > MAX_NOTIFICATIONS:
        raise MalformedNotification(f"At most {MAX_NOTIFICATIONS} notifications per request")
    if not all(isinstance(item, dict) for item in value):
        raise MalformedNotification("Every notification must be a JSON object")
    return value


def validation_echo(token: str) -> str:
    """The validation handshake's answer: the (already URL-decoded) token as plain text. Raises
    MalformedNotification for an empty or oversized one (Graph's are a few hundred characters)."""
    if not token or len(token) > MAX_VALIDATION_TOKEN_CHARS:
        raise MalformedNotification("validationToken must be 1 to 1024 characters")
    return token


def _same_secret(given: object, expected: str | None) -> bool:
    """Constant-time comparison (hmac.compare_digest), false for anything missing."""
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _printable(value: object) -> str | None:
    """At most 64 printable characters of an id from a request, for logs."""
    if not isinstance(value, str):
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:64])
