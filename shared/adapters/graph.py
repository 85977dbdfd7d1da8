"""Microsoft Graph: the signed-in profile, calendarView delta pages and single events.

Throttling follows Graph's guidance: a 429 or 503 carries `Retry-After` (seconds), which is honoured;
other 5xx, timeouts and dropped connections back off exponentially with jitter. Short waits happen
inline; a longer one (or too many) raises `Throttled`, so the caller can keep its place and resume later
instead of holding a worker."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import requests

from shared.ports import DeltaPage, GraphUnauthorized, SyncStateGone, Throttled
from shared.scheduling import SyncWindow

log = logging.getLogger(__name__)

_MAX_INLINE_WAIT = 10.0  # seconds of Retry-After worth waiting inside one function run
_INLINE_BUDGET = 15.0  # total seconds one request may spend waiting before giving up for now
_ATTEMPTS = 4
_BACKOFF_BASE = 1.0  # seconds; doubles per attempt when Graph gives no Retry-After
_BACKOFF_CAP = 30.0


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
            except (requests.ConnectionError, requests.Timeout) as exc:
                wait, why = backoff(attempt), type(exc).__name__
            else:
                if resp.status_code == 200:
                    body: dict[str, Any] = resp.json()
                    return body
                if resp.status_code == 404 and missing_ok:
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
    """Graph's Retry-After (seconds) when given; exponential back-off otherwise."""
    try:
        return max(float(header or ""), 0.0)
    except ValueError:
        return backoff(attempt)


def backoff(attempt: int) -> float:
    """1 s, 2 s, 4 s ... with up to 50 % jitter, capped, so retries of many workers spread out."""
    base: float = min(_BACKOFF_BASE * 2.0 ** (attempt - 1), _BACKOFF_CAP)
    jitter: float = random.uniform(1.0, 1.5)  # not a secret
    return base * jitter


def _failure(resp: requests.Response) -> Exception:
    code = _error_code(resp)
    if resp.status_code == 410 or code in ("syncStateNotFound", "SyncStateNotFound", "resyncRequired"):
        return SyncStateGone(code or "gone")
    if resp.status_code in (401, 403):
        return GraphUnauthorized(f"Graph refused access ({resp.status_code} {code})")
    return RuntimeError(f"Graph request failed: HTTP {resp.status_code} {code}")


def _error_code(resp: requests.Response) -> str:
    try:
        err = resp.json().get("error", {})
    except ValueError:
        return ""
    return str(err.get("code", "")) if isinstance(err, dict) else ""
