"""Graph change notifications: `/v1.0/subscriptions`, the validation handshake, change and lifecycle
notifications, as Microsoft documents them.

- `POST /v1.0/subscriptions` (delegated, a calendar scope): `changeType` (any of created, updated,
  deleted), `notificationUrl`, optional `lifecycleNotificationUrl`, `resource` (`/me/events` or
  `/users/{id}/events` of the signed-in user), `expirationDateTime`, optional `clientState` (at most
  128 characters). Before answering, it POSTs `<url>?validationToken=<token>` (Content-Type
  text/plain, empty body) to each URL and expects 200, text/plain, the token as the body, within 10 s;
  otherwise 400 `ValidationError` and nothing is created. 201 with the subscription.
  (learn.microsoft.com/graph/api/subscription-post-subscriptions,
  learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation)
- Lifetime: at most 10,080 minutes for Outlook events (learn.microsoft.com/graph/change-notifications-
  overview#subscription-lifetime); a later `expirationDateTime` answers 400 `ExtensionError`; one less
  than 45 minutes away is set to 45 minutes (as the subscription resource page says). Expired
  subscriptions are gone (404) and notify nothing.
- `GET /v1.0/subscriptions[/{id}]`, `PATCH /v1.0/subscriptions/{id}` (`expirationDateTime`; also
  reauthorizes), `POST /v1.0/subscriptions/{id}/reauthorize` (204), `DELETE /v1.0/subscriptions/{id}`
  (204). Another app's or user's subscription, or an unknown one: 404 `ResourceNotFound`.
- Every event change made through the admin API (`POST|PATCH|DELETE /_sim/users/{upn}/events`) is
  notified to that mailbox's subscriptions whose `changeType` includes it, within a second: a POST of
  `{"value": [{"id", "subscriptionId", "subscriptionExpirationDateTime", "changeType", "resource",
  "resourceData": {"@odata.type", "@odata.id", "@odata.etag", "id"}, "clientState", "tenantId"}]}`
  (learn.microsoft.com/graph/api/resources/changenotification). Notifications pending for the same
  URL go in one POST. A delivery that is not answered 2xx within 3 s is retried (1, 2, 4, 8 s...)
  for `notification_retry_seconds` (Graph keeps trying for 4 hours).
- Lifecycle notifications (learn.microsoft.com/graph/change-notifications-lifecycle-events) go to the
  `lifecycleNotificationUrl` as `{"value": [{"subscriptionId", "subscriptionExpirationDateTime",
  "tenantId", "clientState", "lifecycleEvent"}]}`: `missed` as is; `subscriptionRemoved` also removes
  the subscription; `reauthorizationRequired` pauses its change notifications until a PATCH or
  reauthorize with an access token issued after the challenge ("change notification delivery
  pauses"; changes in the gap "are lost"). Personal accounts get no lifecycle notifications at all
  (microsoft-graph-docs #13872, #10449): they pause at the same moment without a word.
- In the field (the knobs of `Config`, DEVSTACK.md): each change notification waits a random latency
  and may be POSTed several times; one not taken (2xx within 3 s) is retried with back-off for
  `notification_retry_seconds`, then dropped with `missed`; an endpoint whose last 20 answers were
  10 % slow (over 2.9 s) is delayed, at 15 % dropped with `missed` (change-notifications-delivery-
  webhooks, "Throttling"); `reauthorization_lead_seconds` before the access token that last
  authorized a subscription expires, Graph challenges it, and repeats the challenge every quarter of
  that lead while unanswered.

Admin (`/_sim/...`): `GET /_sim/subscriptions` (every live subscription, clientState included: the
admin API is loopback-only test tooling), `POST /_sim/subscriptions/{id}/lifecycle` with
`{"lifecycleEvent": ...}` (202), and `GET /_sim/notifications`: every delivery attempt
`{"time", "url", "kind", "subscription_ids", "status", "attempt", "elapsed_ms"}` (status null on a
timeout or refused connection)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from devstack.msim.web import Request, Response, json_response

if TYPE_CHECKING:
    from devstack.msim.directory import Account
    from devstack.msim.graph import Principal
    from devstack.msim.state import Config, SimState

log = logging.getLogger("devstack.msim.subscriptions")

MAX_LIFETIME = dt.timedelta(minutes=10_080)
MIN_LIFETIME = dt.timedelta(minutes=45)
VALIDATION_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 3.0
SLOW_ANSWER = 2.9  # seconds: an answer slower than this is "slow" to Graph
SLOW_WINDOW = 20  # the last answers Graph judges an endpoint by
SLOW_DELAY_SHARE = 0.10  # this share of slow answers: deliveries delayed
SLOW_DROP_SHARE = 0.15  # this share: deliveries dropped
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = ("missed", "reauthorizationRequired", "subscriptionRemoved")
CALENDAR_SCOPES = frozenset({"Calendars.Read", "Calendars.ReadBasic", "Calendars.ReadWrite",
                             "Calendars.Read.Shared", "Calendars.ReadWrite.Shared"})
_LOG_LIMIT = 5000


@dataclass
class Subscription:
    id: str
    client_id: str
    upn: str
    tenant_id: str
    creator_id: str
    resource: str
    change_types: frozenset[str]
    change_type: str  # as sent
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: dt.datetime
    reauthorization_required: bool = False
    personal: bool = False  # a personal Microsoft account: no lifecycle notifications reach it
    # Epoch seconds when the access token that last authorized it (create, PATCH, reauthorize) expires.
    authorized_until: float = float("inf")
    paused_since: float | None = None  # epoch seconds: change notifications paused since (challenge)
    last_challenge: float | None = None  # epoch seconds of the last reauthorizationRequired sent

    def graph_view(self, base_url: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{base_url}/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _graph_time(self.expires_at),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationQueryOptions": None,
            "notificationContentType": None,
        }

    def admin_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "upn": self.upn,
            "resource": self.resource,
            "changeType": self.change_type,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "clientState": self.client_state,
            "expirationDateTime": _graph_time(self.expires_at),
            "reauthorizationRequired": self.reauthorization_required,
            "paused": self.paused_since is not None,
            "authorizedUntil": (dt.datetime.fromtimestamp(self.authorized_until, dt.UTC).isoformat()
                                if self.authorized_until != float("inf") else None),
        }

    def authorize(self, token_issued_at: float, token_expires_at: float) -> bool:
        """A PATCH or reauthorize with an access token issued at `token_issued_at` (epoch seconds, as
        the token's `iat`). A paused subscription resumes only with a token issued after its challenge
        (`iat` has whole seconds: the challenge's second counts); any other call leaves it paused.
        True when it is (now) authorized."""
        if self.paused_since is not None and token_issued_at < int(self.paused_since):
            return False
        self.authorized_until = token_expires_at
        self.paused_since = None
        self.last_challenge = None
        self.reauthorization_required = False
        return True


@dataclass
class _Delivery:
    url: str
    kind: str  # "change" | "lifecycle"
    item: dict[str, Any]
    subscription_id: str
    due: float  # time.monotonic()
    attempt: int = 1
    queued_at: float = field(default_factory=time.monotonic)
    delayed: bool = False  # held back once for a slow endpoint


@dataclass
class Notifier:
    """Subscriptions and the deliveries owed to them, with a thread that POSTs them and challenges
    subscriptions whose authorization runs out. Has its own lock (never held while sending); `reset`
    forgets everything. `settings` gives the simulator's current `Config` (the field knobs)."""

    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_LOG_LIMIT))
    settings: Callable[[], Config] | None = None
    _pending: list[_Delivery] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _session: requests.Session | None = None
    # Per endpoint (URL without its query): whether each of the last answers was slow, and until when
    # its deliveries are dropped (the endpoint was throttled for being slow).
    _answers: dict[str, deque[bool]] = field(default_factory=dict)
    _dropping_until: dict[str, float] = field(default_factory=dict)
    # Cumulative, unlike the bounded log: delivery POSTs made (each one execution of the receiving app).
    posted: int = 0

    def reset(self) -> None:
        with self._lock:
            self.posted = 0
            self.subscriptions.clear()
            self._pending.clear()
            self.log.clear()
            self._answers.clear()
            self._dropping_until.clear()

    def _config(self) -> Config:
        from devstack.msim.state import Config

        return self.settings() if self.settings is not None else Config()

    # -- bookkeeping ----------------------------------------------------------------------------
    def live(self, now: dt.datetime) -> list[Subscription]:
        with self._lock:
            for sid in [s.id for s in self.subscriptions.values() if s.expires_at <= now]:
                del self.subscriptions[sid]
            return list(self.subscriptions.values())

    def find(self, sid: str, now: dt.datetime) -> Subscription | None:
        return next((s for s in self.live(now) if s.id == sid), None)

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self.subscriptions[sub.id] = sub
            self._wake()

    def remove(self, sid: str) -> Subscription | None:
        with self._lock:
            self._pending = [d for d in self._pending if d.subscription_id != sid or d.kind == "lifecycle"]
            return self.subscriptions.pop(sid, None)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self.log]

    # -- notifying ------------------------------------------------------------------------------
    def changed(self, account: Account, event_id: str, change_type: str, etag: str = "", *,
                calendar_id: str | None = None, default: bool = True, secondary: bool = False) -> int:
        """An event of this mailbox changed: one notification per subscription that wants it, each
        POSTed `notification_duplicates` times after a random `notification_latency_seconds` delay.
        `/me/events` covers the default calendar only; a subscription on `/me/calendars/{id}/events`
        hears its own calendar's events (a secondary calendar's only when `secondary`). A paused
        subscription (awaiting reauthorization) is never told of this change."""
        now = dt.datetime.now(dt.UTC)
        config = self._config()
        low, high = config.notification_latency_seconds
        queued = 0
        for sub in self.live(now):
            if sub.upn.lower() != account.upn.lower() or change_type not in sub.change_types:
                continue
            watched = subscribed_calendar(sub.resource)
            if watched is None and not default:
                continue
            if watched is not None and (watched != (calendar_id or "").lower() or not (default or secondary)):
                continue
            if sub.paused_since is not None:
                continue  # "changes made during the pause are lost" (lifecycle events page)
            resource = f"Users/{account.graph_id}/Events/{event_id}"
            item = {
                "id": uuid.uuid4().hex[:13],
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _graph_time(sub.expires_at),
                "changeType": change_type,
                "resource": resource,
                "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": resource,
                                 "@odata.etag": f'W/"{etag}"', "id": event_id},
                "clientState": sub.client_state,
                "tenantId": sub.tenant_id,
            }
            for _ in range(max(1, config.notification_duplicates)):
                delay = random.uniform(low, high)  # not a secret
                self._queue(_Delivery(sub.notification_url, "change", dict(item), sub.id, time.monotonic() + delay))
            queued += 1
        return queued

    def lifecycle(self, sub: Subscription, event: str) -> bool:
        """Send one lifecycle notification; False when the subscription has no lifecycle URL or belongs
        to a personal account (none reach those, as reported: microsoft-graph-docs #13872, #10449)."""
        if sub.lifecycle_url is None or sub.personal:
            return False
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _graph_time(sub.expires_at),
            "tenantId": sub.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        self._queue(_Delivery(sub.lifecycle_url, "lifecycle", item, sub.id, time.monotonic()))
        return True

    def challenge(self, sub: Subscription) -> None:
        """Graph wants the subscription reauthorized: change notifications pause from now on, and a
        work account's app is sent `reauthorizationRequired` (a personal account's is sent nothing)."""
        now = time.time()
        with self._lock:
            if sub.paused_since is None:
                sub.paused_since = now
            sub.reauthorization_required = True
            sub.last_challenge = now
        self.lifecycle(sub, "reauthorizationRequired")

    def _queue(self, delivery: _Delivery) -> None:
        with self._lock:
            self._pending.append(delivery)
            self._wake()

    def _wake(self) -> None:
        """Caller holds the lock."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="msim-notifier", daemon=True)
            self._thread.start()
        self._lock.notify_all()

    def _run(self) -> None:
        while True:
            self._check_authorizations()
            with self._lock:
                now = time.monotonic()
                due = [d for d in self._pending if d.due <= now]
                if not due:
                    # At least once a second while subscriptions exist: their authorizations run out.
                    idle = 1.0 if self.subscriptions else 5.0
                    wait = min((d.due for d in self._pending), default=now + idle) - now
                    self._lock.wait(timeout=max(0.01, min(wait, idle)))
                    continue
                self._pending = [d for d in self._pending if d.due > now]
            batches: dict[tuple[str, str], list[_Delivery]] = {}
            for delivery in due:
                batches.setdefault((delivery.url, delivery.kind), []).append(delivery)
            for (url, kind), batch in batches.items():
                if kind == "change":
                    batch = self._throttle(url, batch)
                if batch:
                    self._send(url, kind, batch)

    def _check_authorizations(self) -> None:
        """Challenge every subscription within `reauthorization_lead_seconds` of the expiry of the
        access token that last authorized it, and repeat the challenge every quarter of that lead while
        it stays unanswered (Graph: every 15 minutes in the last hour)."""
        config = self._config()
        lead = float(config.reauthorization_lead_seconds)
        now = time.time()
        with self._lock:
            subs = list(self.subscriptions.values())
        for sub in subs:
            if sub.paused_since is None:
                if now >= sub.authorized_until - lead:
                    self.challenge(sub)
            elif not sub.personal and sub.last_challenge is not None and now - sub.last_challenge >= max(lead / 4, 1.0):
                self.challenge(sub)

    def _throttle(self, url: str, batch: list[_Delivery]) -> list[_Delivery]:
        """Graph's rule for slow endpoints ("Throttling", change-notifications-delivery-webhooks): when
        10 % of the last 20 answers took over 2.9 s, deliveries are delayed by
        `slow_endpoint_delay_seconds`; at 15 % they are dropped (and `missed` sent) for that long."""
        key = _without_query(url)
        config = self._config()
        now = time.monotonic()
        with self._lock:
            answers = self._answers.get(key)
            share = sum(answers) / SLOW_WINDOW if answers else 0.0
            until = self._dropping_until.get(key)
            if until is not None and now >= until:
                self._dropping_until.pop(key, None)
                self._answers.pop(key, None)
                until, share = None, 0.0
            if until is None and share >= SLOW_DROP_SHARE:
                until = self._dropping_until[key] = now + config.slow_endpoint_delay_seconds
            if until is not None:
                self._dropped(batch, "dropped: endpoint throttled for slow answers")
                return []
            if share >= SLOW_DELAY_SHARE:
                held = [d for d in batch if not d.delayed]
                for d in held:
                    d.delayed = True
                    d.due = now + config.slow_endpoint_delay_seconds
                    self._pending.append(d)
                return [d for d in batch if d.delayed and d not in held]
        return batch

    def _dropped(self, batch: list[_Delivery], why: str) -> None:
        """Deliveries given up: logged, and one `missed` per subscription (work accounts)."""
        with self._lock:
            self.log.append({
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "url": _without_query(batch[0].url), "kind": batch[0].kind,
                "subscription_ids": sorted({d.subscription_id for d in batch}),
                "status": None, "attempt": max(d.attempt for d in batch), "elapsed_ms": 0, "dropped": why,
            })
            subs = [self.subscriptions.get(sid) for sid in {d.subscription_id for d in batch}]
        if batch[0].kind == "change":
            for sub in subs:
                if sub is not None:
                    self.lifecycle(sub, "missed")

    def _send(self, url: str, kind: str, batch: list[_Delivery]) -> None:
        body = json.dumps({"value": [d.item for d in batch]})
        started = time.monotonic()
        status: int | None
        try:
            resp = self._http().post(url, data=body.encode(), timeout=DELIVERY_TIMEOUT,
                                     headers={"Content-Type": "application/json; charset=utf-8"})
            status = resp.status_code
        except requests.RequestException:
            status = None
        elapsed = time.monotonic() - started
        ok = status is not None and 200 <= status < 300 and elapsed <= DELIVERY_TIMEOUT
        retry_for = self._config().notification_retry_seconds
        given_up: list[_Delivery] = []
        with self._lock:
            self.posted += 1
            self.log.append({
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "url": _without_query(url),
                "kind": kind,
                "subscription_ids": sorted({d.subscription_id for d in batch}),
                "status": status,
                "attempt": max(d.attempt for d in batch),
                "elapsed_ms": round(elapsed * 1000),
            })
            if kind == "change":
                answers = self._answers.setdefault(_without_query(url), deque(maxlen=SLOW_WINDOW))
                answers.append(elapsed > SLOW_ANSWER)
            if not ok:
                now = time.monotonic()
                for d in batch:
                    if now - d.queued_at >= retry_for:
                        given_up.append(d)
                        continue
                    d.attempt += 1
                    d.due = now + min(2.0 ** (d.attempt - 2), max(retry_for - (now - d.queued_at), 0.0))
                    self._pending.append(d)
                self._lock.notify_all()
        if given_up:
            self._dropped(given_up, "dropped: not taken within notification_retry_seconds")

    def _http(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies from the environment for loopback calls
            self._session = session
        return self._session

# ---------------------------------------------------------------------------------------------
# Graph routes


def handle(state: SimState, req: Request, principal: Principal) -> Response:
    from devstack.msim.graph import graph_error

    segments = [s for s in req.path.split("/")[2:] if s]  # ["subscriptions", id?, action?]
    notifier = state.notifier
    now = dt.datetime.now(dt.UTC)
    if principal.account is None:
        return graph_error(req, 403, "ExtensionError", "Subscriptions on /me/events need a delegated token.")
    if not principal.scopes & CALENDAR_SCOPES:
        return graph_error(req, 403, "ExtensionError",
                           "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied.]")
    owned = [s for s in notifier.live(now) if s.client_id == principal.client_id
             and s.upn.lower() == principal.account.upn.lower()]
    if segments == ["subscriptions"]:
        if req.method == "GET":
            return json_response(200, {"@odata.context": f"{state.base_url}/v1.0/$metadata#subscriptions",
                                       "value": [_list_view(s, state.base_url) for s in owned]})
        if req.method == "POST":
            return _create(state, req, principal, now)
        return graph_error(req, 405, "BadRequest", f"The HTTP method '{req.method}' is not supported.")
    if len(segments) not in (2, 3):
        return graph_error(req, 400, "BadRequest", "Invalid request.")
    sub = next((s for s in owned if s.id == segments[1]), None)
    if sub is None:
        return graph_error(req, 404, "ResourceNotFound", "The object was not found.")
    if len(segments) == 3:
        if segments[2].lower() == "reauthorize" and req.method == "POST":
            sub.authorize(principal.issued_at, principal.expires_at)
            return Response(204)
        return graph_error(req, 400, "BadRequest", "Invalid request.")
    if req.method == "GET":
        return json_response(200, sub.graph_view(state.base_url))
    if req.method == "DELETE":
        notifier.remove(sub.id)
        return Response(204)
    if req.method == "PATCH":
        try:
            body = req.json()
        except ValueError:
            return graph_error(req, 400, "BadRequest", "Invalid JSON body.")
        if not isinstance(body, dict) or set(body) - {"expirationDateTime", "notificationUrl"}:
            return graph_error(req, 400, "BadRequest", "Only expirationDateTime can be updated here.")
        expires = _expiration(req, body.get("expirationDateTime"), now, "Update")
        if isinstance(expires, Response):
            return expires
        sub.expires_at = expires
        sub.authorize(principal.issued_at, principal.expires_at)
        return json_response(200, sub.graph_view(state.base_url))
    return graph_error(req, 405, "BadRequest", f"The HTTP method '{req.method}' is not supported.")


def _create(state: SimState, req: Request, principal: Principal, now: dt.datetime) -> Response:
    from devstack.msim.graph import graph_error

    account = principal.account
    assert account is not None
    try:
        body = req.json()
    except ValueError:
        return graph_error(req, 400, "BadRequest", "Invalid JSON body.")
    if not isinstance(body, dict):
        return graph_error(req, 400, "BadRequest", "Send a subscription object.")
    change_type = body.get("changeType")
    types = {t.strip() for t in change_type.split(",")} if isinstance(change_type, str) else set()
    if not types or types - CHANGE_TYPES:
        return graph_error(req, 400, "BadRequest", "changeType must list created, updated and/or deleted.")
    resource = body.get("resource")
    with state.lock:
        mailbox = state.mailbox(account)
        calendar_ids = {mailbox.default_calendar_id, *mailbox.calendars}
    if not isinstance(resource, str) or not _own_events(resource, account, calendar_ids):
        return graph_error(req, 400, "ExtensionError",
                           "Operation: Create; Exception: [Status Code: BadRequest; Reason: The resource is not "
                           "supported by the simulator: use /me/events.]")
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        return graph_error(req, 400, "InvalidRequest", "clientState must be a string of at most 128 characters.")
    urls: list[str] = []
    for name in ("notificationUrl", "lifecycleNotificationUrl"):
        url = body.get(name)
        if url is None and name == "lifecycleNotificationUrl":
            continue
        if not isinstance(url, str) or not _acceptable_url(url):
            return graph_error(req, 400, "InvalidRequest", f"{name} must be an https URL.")
        urls.append(url)
    expires = _expiration(req, body.get("expirationDateTime"), now, "Create")
    if isinstance(expires, Response):
        return expires
    for url in urls:
        problem = validate_endpoint(state.notifier, url)
        if problem:
            return graph_error(req, 400, "ValidationError",
                               "Subscription validation request failed. Notification endpoint must respond with "
                               f"200 OK to validation request. ({problem})")
    sub = Subscription(
        id=str(uuid.uuid4()),
        client_id=principal.client_id,
        upn=account.upn,
        tenant_id=account.tenant_id,
        creator_id=account.graph_id,
        resource=resource,
        change_types=frozenset(types),
        change_type=",".join(t for t in ("created", "updated", "deleted") if t in types),
        notification_url=str(body["notificationUrl"]),
        lifecycle_url=body.get("lifecycleNotificationUrl"),
        client_state=client_state,
        expires_at=expires,
        personal=account.kind == "personal",
        authorized_until=principal.expires_at,
    )
    state.notifier.add(sub)
    return json_response(201, sub.graph_view(state.base_url))


def validate_endpoint(notifier: Notifier, url: str) -> str | None:
    """The validation handshake; None when the endpoint echoed the token correctly."""
    token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
    joined = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
    started = time.monotonic()
    try:
        resp = notifier._http().post(joined, data=b"", timeout=VALIDATION_TIMEOUT,
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
    except requests.RequestException as exc:
        return f"the endpoint could not be reached: {type(exc).__name__}"
    if time.monotonic() - started > VALIDATION_TIMEOUT:
        return "the endpoint took longer than 10 seconds"
    if resp.status_code != 200:
        return f"the endpoint answered HTTP {resp.status_code}"
    if not (resp.headers.get("Content-Type") or "").lower().startswith("text/plain"):
        return "the answer was not text/plain"
    if resp.content.decode("utf-8", "replace") != token:
        return "the answer was not the validation token"
    return None


def _expiration(req: Request, raw: object, now: dt.datetime, operation: str) -> dt.datetime | Response:
    from devstack.msim.graph import graph_error

    if not isinstance(raw, str):
        return graph_error(req, 400, "InvalidRequest", "expirationDateTime is required.")
    try:
        parsed = dt.datetime.fromisoformat(_trim_fraction(raw.strip().replace("Z", "+00:00")))
    except ValueError:
        return graph_error(req, 400, "InvalidRequest", f"Invalid expirationDateTime '{raw}'.")
    when = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    if when > now + MAX_LIFETIME + dt.timedelta(seconds=5):
        minutes = int(MAX_LIFETIME.total_seconds() // 60)
        return graph_error(req, 400, "ExtensionError",
                           f"Operation: {operation}; Exception: [Status Code: BadRequest; Reason: Subscription "
                           f"expiration can only be {minutes} minutes in the future.]")
    return max(when, now + MIN_LIFETIME)


def lifecycle_admin(state: SimState, sid: str, body: Any) -> Response:
    """`POST /_sim/subscriptions/{id}/lifecycle` with `{"lifecycleEvent": ...}`."""
    event = body.get("lifecycleEvent") if isinstance(body, dict) else None
    if event not in LIFECYCLE_EVENTS:
        message = f"lifecycleEvent must be one of {', '.join(LIFECYCLE_EVENTS)}."
        return json_response(400, {"error": {"code": "BadRequest", "message": message}})
    notifier = state.notifier
    sub = notifier.find(sid, dt.datetime.now(dt.UTC))
    if sub is None:
        return json_response(404, {"error": {"code": "NotFound", "message": f"No live subscription '{sid}'."}})
    if sub.lifecycle_url is None:
        return json_response(409, {"error": {"code": "NoLifecycleUrl",
                                             "message": "This subscription has no lifecycleNotificationUrl."}})
    if event == "subscriptionRemoved":
        notifier.remove(sid)
        notifier.lifecycle(sub, str(event))
    elif event == "reauthorizationRequired":
        notifier.challenge(sub)  # pauses its change notifications until reauthorized
    else:
        notifier.lifecycle(sub, str(event))
    return json_response(202, {"queued": not sub.personal, "lifecycleEvent": event, "subscriptionId": sid})


def remove_admin(state: SimState, sid: str, body: Any) -> Response:
    """`POST /_sim/subscriptions/{id}/remove` with `{"notify": bool}`: the subscription is gone (GET and
    PATCH answer 404); with `notify`, a work account's app is also sent `subscriptionRemoved`."""
    notify = body.get("notify", False) if isinstance(body, dict) else None
    if not isinstance(notify, bool) or (isinstance(body, dict) and set(body) - {"notify"}):
        return json_response(400, {"error": {"code": "BadRequest", "message": 'Send {"notify": true|false}.'}})
    sub = state.notifier.remove(sid)
    if sub is None:
        return json_response(404, {"error": {"code": "NotFound", "message": f"No live subscription '{sid}'."}})
    announced = notify and state.notifier.lifecycle(sub, "subscriptionRemoved")
    return json_response(200, {"removed": sid, "announced": announced})


def remove_for_account(state: SimState, account: Account) -> list[str]:
    """The account was revoked (password reset, account disabled): its subscriptions go, announced with
    `subscriptionRemoved` for a work account and silently for a personal one. The removed ids."""
    removed: list[str] = []
    for sub in state.notifier.live(dt.datetime.now(dt.UTC)):
        if sub.upn.lower() == account.upn.lower() and state.notifier.remove(sub.id) is not None:
            state.notifier.lifecycle(sub, "subscriptionRemoved")
            removed.append(sub.id)
    return removed


def _list_view(sub: Subscription, base_url: str) -> dict[str, Any]:
    view = sub.graph_view(base_url)
    view.pop("@odata.context")
    return view


def _own_events(resource: str, account: Account, calendar_ids: set[str] | None = None) -> bool:
    path = resource.strip().strip("/").lower()
    own = {"me/events", f"users/{account.graph_id}/events".lower(), f"users/{account.upn}/events".lower()}
    if path in own:
        return True
    watched = subscribed_calendar(resource)
    return watched is not None and watched in {c.lower() for c in calendar_ids or set()}


def subscribed_calendar(resource: str) -> str | None:
    """The calendar id (lower case) of a `/me/calendars/{id}/events` resource; None for `/me/events`."""
    parts = resource.strip().strip("/").split("/")
    if len(parts) == 4 and parts[0].lower() in ("me",) and parts[1].lower() == "calendars" \
            and parts[3].lower() == "events":
        return parts[2].lower()
    return None


def _acceptable_url(url: str) -> bool:
    """https, or http to a loopback host (the local Functions host has no TLS)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


def _trim_fraction(text: str) -> str:
    head, dot, tail = text.partition(".")
    if not dot:
        return text
    digits = "".join(ch for ch in tail if ch.isdigit())
    return f"{head}.{digits[:6]:0<6}{tail[len(digits):]}"


def _graph_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
