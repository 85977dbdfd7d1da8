"""Microsoft Graph: the signed-in profile and calendarView delta pages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests

from shared.ports import DeltaPage, GraphUnauthorized, SyncStateGone, Throttled
from shared.scheduling import SyncWindow

log = logging.getLogger(__name__)

_MAX_INLINE_WAIT = 10.0  # seconds of Retry-After worth waiting inside one function run
_ATTEMPTS = 4


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

    @staticmethod
    def _page(body: dict[str, Any]) -> DeltaPage:
        events = body.get("value")
        return DeltaPage(
            events=[e for e in events if isinstance(e, dict)] if isinstance(events, list) else [],
            next_link=body.get("@odata.nextLink"),
            delta_link=body.get("@odata.deltaLink"),
        )

    def _get(self, url: str, access_token: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Prefer": f'outlook.timezone="UTC", odata.maxpagesize={self._page_size}',
            "Accept": "application/json",
        }
        for attempt in range(1, _ATTEMPTS + 1):
            resp = self._session.get(url, headers=headers, params=params, timeout=self._timeout)
            if resp.status_code == 200:
                body: dict[str, Any] = resp.json()
                return body
            if resp.status_code in (429, 503, 504) or resp.status_code >= 500:
                wait = _retry_after(resp, attempt)
                if wait > _MAX_INLINE_WAIT or attempt == _ATTEMPTS:
                    raise Throttled(timedelta(seconds=wait))
                log.info("graph asked to wait %.1fs (HTTP %s)", wait, resp.status_code)
                self._sleep(wait)
                continue
            code = _error_code(resp)
            if resp.status_code == 410 or code in ("syncStateNotFound", "SyncStateNotFound", "resyncRequired"):
                raise SyncStateGone(code or "gone")
            if resp.status_code in (401, 403):
                raise GraphUnauthorized(f"Graph refused access ({resp.status_code} {code})")
            raise RuntimeError(f"Graph request failed: HTTP {resp.status_code} {code}")
        raise AssertionError("unreachable")


def _retry_after(resp: requests.Response, attempt: int) -> float:
    raw = resp.headers.get("Retry-After", "")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return float(min(2**attempt, 30))


def _error_code(resp: requests.Response) -> str:
    try:
        err = resp.json().get("error", {})
    except ValueError:
        return ""
    return str(err.get("code", "")) if isinstance(err, dict) else ""
