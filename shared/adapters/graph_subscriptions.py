"""Microsoft Graph change-notification subscriptions on the signed-in user's events: create, renew,
delete (https://learn.microsoft.com/graph/api/resources/subscription).

- Create: `POST /subscriptions` with `changeType`, `notificationUrl`, `lifecycleNotificationUrl`,
  `resource` (`/me/events`), `expirationDateTime` and `clientState` (at most 128 characters); Graph
  first validates both URLs (it POSTs `?validationToken=...` and expects the token echoed as
  text/plain within 10 s) and answers 201 with the subscription, or 400 when validation failed
  (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation).
- Renew: `PATCH /subscriptions/{id}` with a new `expirationDateTime` -> 200; it also reauthorizes a
  subscription that asked for it (`reauthorizationRequired`,
  https://learn.microsoft.com/graph/change-notifications-lifecycle-events).
- Delete: `DELETE /subscriptions/{id}` -> 204.
- List: `GET /subscriptions` -> the app's subscriptions for the signed-in user (delegated token).

A subscription Graph no longer knows answers 404: `SubscriptionGone`. 401/403 raise
`GraphUnauthorized`; 429 and 5xx are retried inline with Graph's `Retry-After` (or a back-off), then
raise `Throttled`; any other answer raises `SubscriptionRefused` with the status and Graph's code
(never the body: it can echo the request, clientState included)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from shared.adapters.graph import backoff, graph_error_code, retry_after
from shared.ports import GraphSubscription, GraphUnauthorized, SubscriptionGone, SubscriptionRefused, Throttled

log = logging.getLogger(__name__)

RESOURCE = "/me/events"
CHANGE_TYPES = "created,updated,deleted"
_ATTEMPTS = 3
_MAX_INLINE_WAIT = 5.0  # seconds: a subscription call runs inside a queue function, keep it short


class GraphSubscriptions:
    def __init__(self, *, base_url: str, session: requests.Session, timeout: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._sleep = sleep

    def create(self, access_token: str, *, notification_url: str, lifecycle_url: str, client_state: str,
               expires_at: datetime, resource: str = RESOURCE) -> GraphSubscription:
        """201 -> the subscription. The validation handshake to both URLs happens inside this call,
        so it takes as long as the app's own notification route needs to answer (Graph allows 10 s).
        `resource`: `/me/events` (the default calendar, as documented), or a calendar's
        `/me/calendars/{id}/events` (reported to work for other calendars, not documented)."""
        if len(client_state) > 128:
            raise ValueError("clientState is at most 128 characters")
        body = {
            "changeType": CHANGE_TYPES,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": resource,
            "expirationDateTime": graph_time(expires_at),
            "clientState": client_state,
        }
        answer = self._call("POST", f"{self._base}/subscriptions", access_token, body)
        return _subscription(answer)

    def renew(self, access_token: str, subscription_id: str, expires_at: datetime) -> GraphSubscription:
        answer = self._call("PATCH", self._url(subscription_id), access_token,
                            {"expirationDateTime": graph_time(expires_at)})
        return _subscription(answer)

    def list(self, access_token: str) -> list[GraphSubscription]:
        """`GET /subscriptions`: with a delegated token, the subscriptions this app holds for the
        signed-in user (https://learn.microsoft.com/graph/api/subscription-list). At most 10 pages."""
        found: list[GraphSubscription] = []
        url: str | None = f"{self._base}/subscriptions"
        for _ in range(10):
            if url is None:
                break
            answer = self._call("GET", url, access_token, None)
            for item in answer.get("value") or []:
                if isinstance(item, dict):
                    try:
                        found.append(_subscription(item))
                    except SubscriptionRefused:
                        continue
            link = answer.get("@odata.nextLink")
            url = link if isinstance(link, str) and link.startswith(self._base + "/") else None
        return found

    def delete(self, access_token: str, subscription_id: str) -> None:
        """Deleted, or already gone (404): either way Graph sends no more notifications for it."""
        try:
            self._call("DELETE", self._url(subscription_id), access_token, None)
        except SubscriptionGone:
            pass

    def _url(self, subscription_id: str) -> str:
        return f"{self._base}/subscriptions/{quote(subscription_id, safe='')}"

    def _call(self, method: str, url: str, access_token: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                resp = self._session.request(method, url, json=body, headers=headers, timeout=self._timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                wait, why = backoff(attempt), type(exc).__name__
            else:
                if 200 <= resp.status_code < 300:
                    if resp.status_code == 204 or not resp.content:
                        return {}
                    try:
                        answer = resp.json()
                    except ValueError:
                        answer = None
                    if not isinstance(answer, dict):
                        raise SubscriptionRefused(resp.status_code, "not_json")
                    return answer
                code = graph_error_code(resp)
                if resp.status_code == 404:
                    raise SubscriptionGone(code or "NotFound")
                if resp.status_code in (401, 403):
                    raise GraphUnauthorized(f"Graph refused the subscription call ({resp.status_code} {code})")
                if resp.status_code != 429 and resp.status_code < 500:
                    raise SubscriptionRefused(resp.status_code, code)
                wait, why = retry_after(resp.headers.get("Retry-After"), attempt), f"HTTP {resp.status_code}"
            if wait > _MAX_INLINE_WAIT or attempt == _ATTEMPTS:
                raise Throttled(timedelta(seconds=max(wait, 1.0)))
            log.info("graph subscriptions asked to wait %.1fs (%s)", wait, why)
            self._sleep(wait)
        raise AssertionError("unreachable")


def graph_time(moment: datetime) -> str:
    """ISO 8601 in UTC with 7 fractional digits, as Graph writes `expirationDateTime`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _subscription(answer: dict[str, Any]) -> GraphSubscription:
    sid = answer.get("id")
    raw = answer.get("expirationDateTime")
    if not isinstance(sid, str) or not sid or not isinstance(raw, str):
        raise SubscriptionRefused(200, "no_subscription_in_answer")
    url = answer.get("notificationUrl")
    return GraphSubscription(id=sid, expires_at=parse_graph_datetime(raw),
                             notification_url=url if isinstance(url, str) else "")


def parse_graph_datetime(raw: str) -> datetime:
    """`2026-11-30T10:00:00.0000000Z` (7 fractional digits, or none, or an offset) -> aware UTC."""
    text = raw.strip().replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]:0<6}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
