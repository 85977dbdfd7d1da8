"""No client secret, through the running stack: with OUTLOOK_CLIENT_CREDENTIAL=managed_identity the
Functions host asks its managed identity endpoint (the simulator's, as App Service's) for a token and
MSAL presents it as a client assertion, which the simulated Entra ID accepts because the app
registration's federated identity credential trusts that identity. Users connect and their tokens are
refreshed; Key Vault holds no client secret and none is ever sent. When Entra refuses the assertion
(the credential names another identity, the assertion expired), it is the service's own failure:
connections stay Active with the "CoAgentor's side" warning, the operator gets `app_identity_failure`
in the logs, the user gets no status event and no Error reason, and it recovers without a reconnect."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from azure.core.exceptions import ResourceNotFoundError

from devstack.stack import OUTLOOK_CLIENT_ID, Stack, free_ports
from tests.e2e.client import Client, eventually
from tests.e2e.test_connection_lifecycle import _vault, refresh

pytestmark = pytest.mark.e2e

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NEVER = "0 0 0 1 1 *"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the app authenticates with its managed identity only."""
    overrides = {
        "OUTLOOK_CLIENT_CREDENTIAL": "managed_identity",
        "TOKEN_REFRESH_MAX_AGE_SECONDS": "0",
        **{name: NEVER for name in ("REFRESH_SCHEDULE", "SCAN_SCHEDULE", "RECONCILE_SCHEDULE", "PRUNE_SCHEDULE",
                                    "WATCHDOG_SCHEDULE", "RENEW_SCHEDULE")},
        "PLATFORM_EVENTS_RETRY_SECONDS": "1",
    }
    # Managed identity tokens live 24 h and the host reuses one until 5 minutes before it expires (its
    # health probe fetches the first while it starts); shorter than that, every client assertion is a
    # fresh token, so the simulator's knobs apply at once.
    s = Stack(devstack_dir=Path(tmp_path_factory.mktemp("devstack-fic")), ports=free_ports(), overrides=overrides,
              sim_config={"managed_identity_token_lifetime_seconds": 240})
    s.start(timeout=120)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return Client(stack)


def user() -> str:
    return f"fic-{uuid.uuid4().hex[:8]}"


def token_forms(client: Client) -> list[dict[str, Any]]:
    logged = client.sim("GET", "/_sim/requests").json()
    return [r["form"] for r in logged
            if r["path"].endswith("/oauth2/v2.0/token") and r["form"].get("client_id") == OUTLOOK_CLIENT_ID]


def events_for(client: Client, user_id: str) -> list[dict[str, Any]]:
    received = client.api.get(f"{client.stack.agents_url}/_events", timeout=30).json()
    return [e for e in received if json.loads(e["raw_body"]).get("subject") == user_id]


def host_log(stack: Stack) -> str:
    return (stack.devstack_dir / "functions.log").read_text(errors="replace")


def warned(client: Client, token: str) -> list[dict[str, Any]] | None:
    shown: list[dict[str, Any]] = client.connections(token)["connections"]
    return shown if shown and all(c["warning"] for c in shown) else None


def cleared(client: Client, token: str) -> list[dict[str, Any]] | None:
    shown: list[dict[str, Any]] = client.connections(token)["connections"]
    return shown if shown and all(c["warning"] is None for c in shown) else None


def test_users_connect_and_refresh_with_no_client_secret_anywhere(client, stack):
    token = client.token(user(), "solo")
    conn = client.connect(token, "dave@contoso.com")["connection"]
    assert conn["status"] == "active"
    before = client.connections(token)["connections"][0]["last_refreshed_at"]
    refresh(client, token, conn["id"])
    eventually(lambda: client.connections(token)["connections"][0]["last_refreshed_at"] != before)
    forms = token_forms(client)
    grants = {f["grant_type"] for f in forms}
    assert {"authorization_code", "refresh_token"} <= grants
    assert all(f.get("client_assertion_type") == JWT_BEARER and "client_secret" not in f for f in forms)
    asked = [parse_qs(r["query"]) for r in client.sim("GET", "/_sim/requests").json() if r["path"] == "/msi/token"]
    assert asked and all(q["resource"] == ["api://AzureADTokenExchange"] for q in asked)
    settings = stack.app_settings()
    with pytest.raises(ResourceNotFoundError):
        _vault(stack).get_secret(settings.get("OUTLOOK_CLIENT_SECRET_NAME", "outlook-client-secret"))
    health = client.api.get(f"{stack.functions_url}/api/health", timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["dependencies"] == {"storage": "ok", "queues": "ok", "key_vault": "ok",
                                             "managed_identity": "ok"}


def test_a_federated_credential_trusting_another_identity_is_the_operators_to_fix_not_the_users(client, stack):
    owner = user()
    token = client.token(owner, "solo")
    conn = client.connect(token, "erin@northwind.com")["connection"]
    fic = f"/_sim/apps/{OUTLOOK_CLIENT_ID}/federatedIdentityCredentials/outlookcal-function-identity"
    subject = client.sim("GET", fic).json()["subject"]
    client.sim("PATCH", fic, json={"subject": str(uuid.uuid4())}).raise_for_status()
    try:
        refresh(client, token, conn["id"])
        [shown] = eventually(lambda: warned(client, token))
        assert (shown["status"], shown["reason_code"]) == ("active", None)
        assert "CoAgentor's side" in shown["warning"]
        assert "app_identity_failure" in host_log(stack) and "AADSTS700213" in host_log(stack)
    finally:
        client.sim("PATCH", fic, json={"subject": subject}).raise_for_status()
    refresh(client, token, conn["id"])
    [shown] = eventually(lambda: cleared(client, token))
    assert (shown["status"], shown["reason_code"]) == ("active", None)
    assert events_for(client, owner) == []  # the service's failure is never the user's news


def test_an_expired_assertion_fails_sign_in_and_refresh_as_the_services_failure_then_recovers(client, stack):
    owner = user()
    token = client.token(owner, "solo")
    conn = client.connect(token, "alice@contoso.com")["connection"]
    # The identity endpoint hands out tokens already a day and a half old (past their lifetime).
    client.sim("POST", "/_sim/config", json={"managed_identity_token_age_seconds": 36 * 3600}).raise_for_status()
    try:
        refresh(client, token, conn["id"])
        [shown] = eventually(lambda: warned(client, token))
        assert (shown["status"], shown["reason_code"]) == ("active", None)
        assert "AADSTS700024" in host_log(stack)
        newcomer = client.token(user(), "solo")
        start = client.start(newcomer)
        assert start.status_code == 200
        page = client.follow_callback(client.sign_in(start.json()["authorize_url"], "dave@contoso.com"))
        assert (page["outlook"], page.get("reason")) == ("failed", "service_unavailable")
        assert client.connections(newcomer)["connections"] == []
    finally:
        client.sim("POST", "/_sim/config", json={"managed_identity_token_age_seconds": 0}).raise_for_status()
    refresh(client, token, conn["id"])
    eventually(lambda: cleared(client, token))
    assert events_for(client, owner) == []
