"""Drives the running stack over HTTP the way a browser and the Integrations page would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import requests

from devstack import polling
from devstack.stack import Stack, platform_token

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll for an outcome with a deadline (never asserts on elapsed time)."""
    return polling.until("the expected outcome", probe, timeout, interval)


# Every platform user a test minted a token for: (functions URL, user id) -> a token of theirs. The
# stack is shared by the whole session and every user connected to a simulated mailbox reacts to its
# changes, so tests/conftest.py erases the users a test module made when the module ends.
MINTED: dict[tuple[str, str], str] = {}


def erase_minted(since: set[tuple[str, str]]) -> int:
    """Ask the service to erase every user minted after `since` was taken (DELETE /api/outlook/data,
    202, idempotent); returns how many were asked. A stack that is gone is not an error."""
    asked = 0
    with requests.Session() as session:
        session.trust_env = False
        for (url, _user), token in list(MINTED.items()):
            if (url, _user) in since:
                continue
            try:
                session.delete(f"{url}/api/outlook/data", headers={"Authorization": f"Bearer {token}"}, timeout=10)
                asked += 1
            except requests.RequestException:
                pass
    return asked


class Client:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.api = requests.Session()
        self.api.trust_env = False
        self.ms = requests.Session()
        self.ms.trust_env = False
        assert stack.ca is not None
        self.ms.verify = str(stack.ca.bundle_pem)

    # ---- CoAgentor side
    def token(self, user: str, plan: str = "free", *, email: str | None = None, workspace: str | None = None,
              workspace_dedupe: bool = False) -> str:
        token = platform_token(self.stack.devstack_dir, user, plan, email=email, workspace=workspace,
                               workspace_dedupe=workspace_dedupe)
        MINTED[(self.stack.functions_url, user)] = token
        return token

    def call(self, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.api.request(method, f"{self.stack.functions_url}/api/{path}", headers=headers,
                                allow_redirects=False, timeout=30, **kw)

    def start(self, token: str, reconnect: str | None = None) -> requests.Response:
        return self.call("POST", "outlook/connect", token, json={"reconnect": reconnect} if reconnect else {})

    # ---- Microsoft side (a browser on the sign-in page)
    def sign_in(self, authorize_url: str, login: str, action: str = "accept") -> str:
        page = self.ms.get(authorize_url, timeout=30)
        assert page.status_code == 200 and "<form" in page.text
        resp = self.ms.post(authorize_url, data={"login": login, "action": action}, allow_redirects=False,
                            timeout=30)
        assert resp.status_code == 302, resp.text[:300]
        return resp.headers["Location"]

    def follow_callback(self, location: str) -> dict[str, str]:
        """The browser arrives at the callback; returns the integrations page's query."""
        assert location.startswith(f"{self.stack.functions_url}/api/outlook/callback")
        resp = self.api.get(location, allow_redirects=False, timeout=30)
        assert resp.status_code == 302
        page = resp.headers["Location"]
        assert page.startswith(f"{self.stack.functions_url}/api/integrations?")
        return {k: v[0] for k, v in parse_qs(urlsplit(page).query).items()}

    def connect(self, token: str, login: str, reconnect: str | None = None) -> dict[str, Any]:
        start = self.start(token, reconnect)
        assert start.status_code == 200, start.text
        page = self.follow_callback(self.sign_in(start.json()["authorize_url"], login))
        assert page["outlook"] == "confirm", page
        claimed = self.call("POST", "outlook/claim", token, json={"claim": page["claim"]})
        assert claimed.status_code == 200, claimed.text
        body: dict[str, Any] = claimed.json()
        return body

    def connections(self, token: str) -> dict[str, Any]:
        resp = self.call("GET", "outlook/connections", token)
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        return body

    def upcoming(self, token: str) -> list[dict[str, Any]]:
        resp = self.call("GET", "meetings/upcoming", token)
        assert resp.status_code == 200
        meetings: list[dict[str, Any]] = resp.json()["meetings"]
        return meetings

    def run_function(self, name: str, body: str = "") -> None:
        resp = self.api.post(f"{self.stack.functions_url}/admin/functions/{name}", json={"input": body},
                             timeout=30)
        assert resp.status_code == 202, resp.text

    # ---- simulator admin and agent recorder
    def add_event(self, upn: str, subject: str, start: datetime, minutes: int = 30, **fields: Any) -> dict[str, Any]:
        event = {
            "subject": subject,
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S"),
                    "timeZone": "UTC"},
            # A meeting has someone else in it: an event of the user's own with nobody else invited is a
            # "solo" event, which the join rules skip by default (API.md, "Join rules").
            "attendees": [{"type": "required", "emailAddress": {"name": "Pat Kim", "address": "pat@contoso.com"},
                           "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}}],
            **fields,
        }
        resp = self.ms.post(f"{self.stack.sim_url}/_sim/users/{upn}/events", json=event, timeout=30)
        assert resp.status_code == 201, resp.text
        stored: dict[str, Any] = resp.json()
        return stored

    def sim(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.ms.request(method, f"{self.stack.sim_url}{path}", timeout=30, **kw)

    def deployments(self) -> list[dict[str, Any]]:
        resp = self.api.get(f"{self.stack.agents_url}/_recorded", timeout=30)
        assert resp.status_code == 200
        recorded: list[dict[str, Any]] = resp.json()
        return recorded


def teams_link(n: int) -> str:
    return (f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_E2E{n:06d}ZTk2LWI4ZjMtNGQ%40thread.v2/0"
            "?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a%22"
            "188ff867-19f1-4a4e-8bba-83a377fe7da5%22%7d")


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def sealed_secrets(stack: Stack) -> Any:
    """The stack's sealed per-connection secrets (token caches, clientStates), opened the way the app
    opens them: Table Storage rows, data keys unwrapped by the stack's Key Vault key."""
    from azure.data.tables import TableServiceClient
    from azure.identity import ClientSecretCredential
    from azure.keyvault.keys import KeyClient

    from shared.adapters.envelope import DataKeys, SealedSecrets
    from shared.adapters.tables import TableDataKeys, TableSealedSecrets
    from shared.adapters.vault import KeyVaultKeyWrapper

    assert stack.ca is not None
    s = stack.app_settings()
    verify = str(stack.ca.bundle_pem)
    cred = ClientSecretCredential(s["AZURE_TENANT_ID"], s["AZURE_CLIENT_ID"], s["AZURE_CLIENT_SECRET"],
                                  authority=s["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
                                  connection_verify=verify)
    options: dict[str, Any] = {"verify_challenge_resource": False, "connection_verify": verify}
    wrapper = KeyVaultKeyWrapper(KeyClient(stack.key_vault_url, cred, **options),
                                 s.get("TOKEN_CACHE_KEY_NAME", "token-cache-key"), cred, **options)
    tables = TableServiceClient.from_connection_string(stack.storage_connection_string())
    now = lambda: datetime.now(UTC)  # noqa: E731
    keys = DataKeys(TableDataKeys(tables.get_table_client("datakeys")), wrapper, now)
    return SealedSecrets(TableSealedSecrets(tables.get_table_client("sealedsecrets")), keys, now)
