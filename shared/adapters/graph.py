"""Microsoft Graph: the signed-in profile, calendarView delta pages and single events.

Throttling follows Graph's guidance: a 429 or 503 carries `Retry-After` (seconds), which is honoured;
other 5xx, timeouts and dropped connections back off exponentially with jitter. Short waits happen
inline; a longer one (or too many) raises `Throttled`, so the caller can keep its place and resume later
instead of holding a worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import requests

from shared.connections import MAILBOX_UNAVAILABLE_CODES
from shared.ports import (
    CalendarGone,
    CalendarInfo,
    CalendarUnavailable,
    DeltaPage,
    GraphError,
    GraphUnauthorized,
    SyncStateGone,
    Throttled,
)
from shared.retry import Backoff
from shared.retry import retry_after as parse_retry_after
from shared.scheduling import SyncWindow

log = logging.getLogger(__name__)

_MAX_INLINE_WAIT = 10.0  # seconds of Retry-After worth waiting inside one function run
_INLINE_BUDGET = 15.0  # total seconds one request may spend waiting before giving up for now
_ATTEMPTS = 4
# Doubles per attempt from 1 s when Graph gives no Retry-After, at most 30 s, with jitter.
GRAPH_BACKOFF = Backoff(base=timedelta(seconds=1), cap=timedelta(seconds=30), jitter=0.5)
MAX_RETRY_AFTER = 3600.0  # seconds: a larger (or absurd) Retry-After is honoured as an hour
_MAX_INSTANCE_PAGES = 20


def longest_request(timeout: float) -> timedelta:
    """The longest one Graph request made here may take: every attempt at its timeout (connect and
    each read; Graph answers a page in one read) plus the inline waits between them. What a sync's
    lease is sized from (services.sync.sync_lease)."""
    return timedelta(seconds=_ATTEMPTS * timeout + _INLINE_BUDGET)


class GraphCalendar:
    def __init__(
        self,
        *,
        base_url: str,
        session: requests.Session,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
        page_size: int = 50,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._sleep = sleep
        self._page_size = page_size

    def me_email(self, access_token: str) -> str:
        me = self._get(f"{self._base}/me", access_token, params={"$select": "mail,userPrincipalName"})
        assert me is not None
        email = me.get("mail") or me.get("userPrincipalName")
        if not isinstance(email, str) or not email:
            raise ValueError("Graph /me returned neither mail nor userPrincipalName")
        return email

    def probe(self, access_token: str) -> None:
        """GET /me/calendar?$select=id: the cheapest read that touches the mailbox. Raises
        CalendarUnavailable for mailboxes Graph cannot reach (a 404 here otherwise means the same)."""
        try:
            self._get(f"{self._base}/me/calendar", access_token, params={"$select": "id"})
        except GraphError as exc:
            if exc.status == 404:
                raise CalendarUnavailable(exc.code or "NotFound") from None
            raise

    def instances(self, access_token: str, series_master_id: str, window: SyncWindow) -> list[dict[str, Any]] | None:
        """GET /me/events/{id}/instances (https://learn.microsoft.com/graph/api/event-list-instances):
        the series' live occurrences in the window; a deleted occurrence is simply absent. None when
        the series master is gone (404 ErrorItemNotFound). At most 20 pages are followed."""
        params = {
            "startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "$select": "id,type,seriesMasterId,start,end,isCancelled,responseStatus",
        }
        url = f"{self._base}/me/events/{quote(series_master_id, safe='')}/instances"
        body = self._get(url, access_token, params=params, missing_ok=True)
        found: list[dict[str, Any]] = []
        for _ in range(_MAX_INSTANCE_PAGES):
            if body is None:
                return None
            values = body.get("value")
            if isinstance(values, list):
                found.extend(e for e in values if isinstance(e, dict))
            link = body.get("@odata.nextLink")
            if not isinstance(link, str) or not link.startswith(self._base + "/"):
                return found
            body = self._get(link, access_token, missing_ok=True)
        return found

    def delta_first(self, access_token: str, window: SyncWindow) -> DeltaPage:
        params = {
            "startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return self._page(self._get(f"{self._base}/me/calendarView/delta", access_token, params=params))

    def delta_next(self, access_token: str, link: str) -> DeltaPage:
        if not link.startswith(self._base + "/"):
            raise ValueError("refusing to follow a Graph link to another host")
        return self._page(self._get(link, access_token))

    def event(self, access_token: str, event_id: str) -> dict[str, Any] | None:
        return self._get(f"{self._base}/me/events/{quote(event_id, safe='')}", access_token, missing_ok=True)

    def calendars(self, access_token: str) -> list[CalendarInfo]:
        """GET /me/calendars (https://learn.microsoft.com/graph/api/user-list-calendars, within
        Calendars.Read): the account's own calendars, `isDefaultCalendar` marking the default one.
        At most 20 pages are followed."""
        body = self._get(f"{self._base}/me/calendars", access_token,
                         params={"$select": "id,name,isDefaultCalendar,canEdit,owner"})
        found: list[CalendarInfo] = []
        for _ in range(_MAX_INSTANCE_PAGES):
            for item in (body or {}).get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                    found.append(CalendarInfo(id=item["id"], name=str(item.get("name") or "Calendar")[:255],
                                              is_default=bool(item.get("isDefaultCalendar"))))
            link = (body or {}).get("@odata.nextLink")
            if not isinstance(link, str) or not link.startswith(self._base + "/"):
                break
            body = self._get(link, access_token)
        return found

    def calendar_view(self, access_token: str, calendar_id: str,
                      window: SyncWindow) -> tuple[list[dict[str, Any]], int]:
        """GET /me/calendars/{id}/calendarView (https://learn.microsoft.com/graph/api/calendar-list-calendarview):
        the calendar's events and expanded occurrences in the window, in full (no delta: v1.0 documents
        delta for the default calendar only). Returns (events, Graph requests made). Raises
        CalendarGone on 404 ErrorItemNotFound (the calendar was deleted). At most 500 pages."""
        params = {
            "startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        url = f"{self._base}/me/calendars/{quote(calendar_id, safe='')}/calendarView"
        body = self._get(url, access_token, params=params, missing_ok=True)
        requests_made = 1
        events: list[dict[str, Any]] = []
        for _ in range(500):
            if body is None:
                raise CalendarGone(calendar_id)
            events.extend(e for e in body.get("value") or [] if isinstance(e, dict))
            link = body.get("@odata.nextLink")
            if not isinstance(link, str) or not link.startswith(self._base + "/"):
                break
            body = self._get(link, access_token, missing_ok=True)
            requests_made += 1
        return events, requests_made

    @staticmethod
    def _page(body: dict[str, Any] | None) -> DeltaPage:
        events = (body or {}).get("value")
        return DeltaPage(
            events=[e for e in events if isinstance(e, dict)] if isinstance(events, list) else [],
            next_link=(body or {}).get("@odata.nextLink"),
            delta_link=(body or {}).get("@odata.deltaLink"),
        )

    def _get(
        self, url: str, access_token: str, params: dict[str, str] | None = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Prefer": f'outlook.timezone="UTC", odata.maxpagesize={self._page_size}',
            "Accept": "application/json",
        }
        waited = 0.0
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                resp = self._session.get(url, headers=headers, params=params, timeout=self._timeout)
            except requests.RequestException as exc:  # dropped, timed out, cut short mid-body
                wait, why = backoff(attempt), type(exc).__name__
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    if isinstance(body, dict):
                        return body
                    # A 200 without a JSON object: a broken proxy or a partial answer; try again.
                    wait, why = backoff(attempt), "HTTP 200 without a JSON body"
                    if wait > _MAX_INLINE_WAIT or waited + wait > _INLINE_BUDGET or attempt == _ATTEMPTS:
                        raise Throttled(timedelta(seconds=max(wait, 1.0)))
                    self._sleep(wait)
                    waited += wait
                    continue
                if resp.status_code == 404 and missing_ok and graph_error_code(resp) not in MAILBOX_UNAVAILABLE_CODES:
                    return None
                if resp.status_code != 429 and resp.status_code < 500:
                    raise _failure(resp)
                wait, why = retry_after(resp.headers.get("Retry-After"), attempt), f"HTTP {resp.status_code}"
            if wait > _MAX_INLINE_WAIT or waited + wait > _INLINE_BUDGET or attempt == _ATTEMPTS:
                raise Throttled(timedelta(seconds=max(wait, 1.0)))
            log.info("graph asked to wait %.1fs (%s)", wait, why)
            self._sleep(wait)
            waited += wait
        raise AssertionError("unreachable")


def retry_after(header: str | None, attempt: int) -> float:
    """Graph's Retry-After when given, in seconds (shared.retry.retry_after: delay-seconds or an
    HTTP-date, clamped to [0, MAX_RETRY_AFTER]); the back-off when missing or unusable."""
    wait = parse_retry_after(header, cap=timedelta(seconds=MAX_RETRY_AFTER))
    return wait.total_seconds() if wait is not None else backoff(attempt)


def backoff(attempt: int) -> float:
    """1 s, 2 s, 4 s ... with up to 50 % jitter, capped, so retries of many workers spread out."""
    return GRAPH_BACKOFF.delay(attempt).total_seconds()


def _failure(resp: requests.Response) -> Exception:
    code = graph_error_code(resp)
    if code in MAILBOX_UNAVAILABLE_CODES:
        return CalendarUnavailable(code)
    if resp.status_code == 410 or code in ("syncStateNotFound", "SyncStateNotFound", "resyncRequired",
                                           "InvalidDeltaToken", "ErrorInvalidSyncStateData"):
        return SyncStateGone(code or "gone")
    if resp.status_code in (401, 403):
        return GraphUnauthorized(f"Graph refused access ({resp.status_code} {code})")
    return GraphError(resp.status_code, code)


def graph_error_code(resp: requests.Response) -> str:
    """Graph's `error.code` from an error answer (at most 100 characters), "" when there is none."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    return str(err.get("code", ""))[:100] if isinstance(err, dict) else ""
