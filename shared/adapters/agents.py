"""The CoAgentor agent API: deploy one agent for one meeting, idempotently; recall a deployed one.

`POST {AGENT_API_URL}/agents` answers 2xx with `{"id": "<agent id>"}` (409: already deployed for
that Idempotency-Key, also success; its body may carry the `id` too); `DELETE {AGENT_API_URL}/agents/{id}`
answers 204, or 404 when the agent is already gone (../shared/API.md, "The agent API"). The body also
carries `join_at` (start - the user's join lead), `agent_name` (null: the platform's default),
`user_ids` and `attempt` (which try, 1-based; each try has its own Idempotency-Key)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote

import requests

from shared.ports import DeployRequest, DeployResult, RecallResult

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
            "join_at": request.join_at.isoformat() if request.join_at else None,
            "agent_name": request.agent_name,
            "user_ids": list(request.user_ids or (request.user_id,)),
            "attempt": request.attempt,
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
            return DeployResult(ok=True, detail=str(resp.status_code), agent_id=_agent_id(resp))
        if resp.status_code in (401, 403):
            # Our own key refused even after re-reading it: the service's failure, not this meeting's.
            # Retried until the meeting's grace ends; operators are alerted.
            log.error("app_identity_failure: the agent API refused the service's key (HTTP %d)", resp.status_code,
                      extra={"event": "app_identity_failure", "meeting_id": request.meeting_id})
            return DeployResult(ok=False, permanent=False, detail=f"HTTP {resp.status_code}")
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        return DeployResult(ok=False, permanent=permanent, detail=f"HTTP {resp.status_code}")

    def recall(self, agent_id: str) -> RecallResult:
        """Take a deployed agent out of its meeting. 204 or 404 -> gone; 401/403 -> the key is read
        again from Key Vault and the call repeated once, then a service failure (retried); other 4xx
        -> permanent; 5xx, 429, timeouts -> retry."""
        url = f"{self._url}/{quote(agent_id, safe='')}"
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._api_key()}"}
            try:
                resp = self._session.delete(url, headers=headers, timeout=self._timeout)
            except requests.RequestException as exc:
                return RecallResult(gone=False, detail=type(exc).__name__)
            if resp.status_code in (401, 403) and attempt == 1 and self._reload_key():
                continue
            break
        if resp.status_code in (200, 202, 204, 404):
            return RecallResult(gone=True, detail=str(resp.status_code))
        if resp.status_code in (401, 403):
            log.error("app_identity_failure: the agent API refused the service's key (HTTP %d)", resp.status_code,
                      extra={"event": "app_identity_failure"})
            return RecallResult(gone=False, detail=f"HTTP {resp.status_code}")
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 429)
        return RecallResult(gone=False, permanent=permanent, detail=f"HTTP {resp.status_code}")


def _agent_id(resp: requests.Response) -> str | None:
    """The `id` of the deployed agent from the answer's JSON body, if it has one (at most 200 chars)."""
    try:
        body = resp.json()
    except ValueError:
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value[:200] if isinstance(value, str) and value else None
