"""The CoAgentor agent API: deploy one agent for one meeting, idempotently."""

from __future__ import annotations

import logging
from collections.abc import Callable

import requests

from shared.ports import DeployRequest, DeployResult

log = logging.getLogger(__name__)


class AgentApiClient:
    def __init__(self, *, base_url: str, api_key: Callable[[], str], session: requests.Session, timeout: float):
        self._url = base_url.rstrip("/") + "/agents"
        self._api_key = api_key
        self._session = session
        self._timeout = timeout

    def _reload_key(self) -> bool:
        """The agent API refused our key: read it from Key Vault again (it may have been rotated).
        True when a different key is now in use."""
        reload = getattr(self._api_key, "reload", None)
        if reload is None:
            return False
        before = self._api_key()
        reload()
        return self._api_key() != before

    def deploy(self, request: DeployRequest) -> DeployResult:
        body = {
            "meeting_url": request.meeting_url,
            "platform": request.platform,
            "title": request.title,
            "start": request.start.isoformat(),
            "end": request.end.isoformat(),
            "user_id": request.user_id,
            "meeting_id": request.meeting_id,
            "source": "outlook",
        }
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._api_key()}", "Idempotency-Key": request.idempotency_key}
            try:
                resp = self._session.post(self._url, json=body, headers=headers, timeout=self._timeout)
            except requests.RequestException as exc:
                # Only the class: some requests errors quote the request's header values (the key).
                return DeployResult(ok=False, permanent=False, detail=type(exc).__name__)
            if resp.status_code in (401, 403) and attempt == 1 and self._reload_key():
                continue  # the key was rotated in Key Vault: use the new one at once
            break
        if 200 <= resp.status_code < 300 or resp.status_code == 409:
            return DeployResult(ok=True, detail=str(resp.status_code))
        if resp.status_code in (401, 403):
            # Our own key refused even after re-reading it: the service's failure, not this meeting's.
            # Retried until the meeting's grace ends; operators are alerted.
            log.error("app_identity_failure: the agent API refused the service's key (HTTP %d)", resp.status_code,
                      extra={"event": "app_identity_failure", "meeting_id": request.meeting_id})
            return DeployResult(ok=False, permanent=False, detail=f"HTTP {resp.status_code}")
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        return DeployResult(ok=False, permanent=permanent, detail=f"HTTP {resp.status_code}")
