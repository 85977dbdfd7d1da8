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
  URL go in one POST. A delivery that is not answered 2xx within 3 s is retried (1, 2, 4, 8 s...) up
  to `MAX_ATTEMPTS` times (Graph keeps trying for 4 hours).
- Lifecycle notifications (learn.microsoft.com/graph/change-notifications-lifecycle-events) go to the
  `lifecycleNotificationUrl` as `{"value": [{"subscriptionId", "subscriptionExpirationDateTime",
  "tenantId", "clientState", "lifecycleEvent"}]}`: `missed` as is; `subscriptionRemoved` also removes
  the subscription; `reauthorizationRequired` marks it until a PATCH or reauthorize.

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
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from devstack.msim.web import Request, Response, json_response

if TYPE_CHECKING:
    from devstack.msim.directory import Account
    from devstack.msim.graph import Principal
    from devstack.msim.state import SimState

log = logging.getLogger("devstack.msim.subscriptions")

MAX_LIFETIME = dt.timedelta(minutes=10_080)
MIN_LIFETIME = dt.timedelta(minutes=45)
VALIDATION_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 3.0
MAX_ATTEMPTS = 6
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
        }


@dataclass
class _Delivery:
    url: str
    kind: str  # "change" | "lifecycle"
    item: dict[str, Any]
    subscription_id: str
    due: float  # time.monotonic()
    attempt: int = 1


@dataclass
class Notifier:
    """Subscriptions and the deliveries owed to them, with a thread that POSTs them. Has its own lock
    (never held while sending); `reset` forgets everything."""

    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_LOG_LIMIT))
    _pending: list[_Delivery] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _session: requests.Session | None = None

    def reset(self) -> None:
        with self._lock:
            self.subscriptions.clear()
            self._pending.clear()
            self.log.clear()

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
        """An event of this mailbox changed: one notification per subscription that wants it. `/me/events`
        covers the default calendar only; a subscription on `/me/calendars/{id}/events` hears its own
        calendar's events (a secondary calendar's only when `secondary`)."""
        now = dt.datetime.now(dt.UTC)
        queued = 0
        for sub in self.live(now):
            if sub.upn.lower() != account.upn.lower() or change_type not in sub.change_types:
                continue
            watched = subscribed_calendar(sub.resource)
            if watched is None and not default:
                continue
            if watched is not None and (watched != (calendar_id or "").lower() or not (default or secondary)):
                continue
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
            self._queue(_Delivery(sub.notification_url, "change", item, sub.id, time.monotonic()))
            queued += 1
        return queued

    def lifecycle(self, sub: Subscription, event: str) -> bool:
        """Send one lifecycle notification; False when the subscription has no lifecycle URL."""
        if sub.lifecycle_url is None:
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

    def _queue(self, delivery: _Delivery) -> None:
        with self._lock:
            self._pending.append(delivery)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="msim-notifier", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [d for d in self._pending if d.due <= now]
                if not due:
                    wait = min((d.due for d in self._pending), default=now + 5.0) - now
                    self._lock.wait(timeout=max(0.01, min(wait, 5.0)))
                    continue
                self._pending = [d for d in self._pending if d.due > now]
            batches: dict[tuple[str, str], list[_Delivery]] = {}
            for delivery in due:
                batches.setdefault((delivery.url, delivery.kind), []).append(delivery)
            for (url, kind), batch in batches.items():
                self._send(url, kind, batch)

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
        with self._lock:
            self.log.append({
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "url": _without_query(url),
                "kind": kind,
                "subscription_ids": sorted({d.subscription_id for d in batch}),
                "status": status,
                "attempt": max(d.attempt for d in batch),
                "elapsed_ms": round(elapsed * 1000),
            })
            if not ok:
                for d in batch:
                    if d.attempt < MAX_ATTEMPTS:
                        d.attempt += 1
                        d.due = time.monotonic() + 2.0 ** (d.attempt - 2)
                        self._pending.append(d)
                self._lock.notify_all()

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
            sub.reauthorization_required = False
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
        sub.reauthorization_required = False
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
    elif event == "reauthorizationRequired":
        sub.reauthorization_required = True
    notifier.lifecycle(sub, str(event))
    return json_response(202, {"queued": True, "lifecycleEvent": event, "subscriptionId": sid})


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
