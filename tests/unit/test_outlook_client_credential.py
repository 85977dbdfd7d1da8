"""No client secret where Azure allows it: with OUTLOOK_CLIENT_CREDENTIAL=managed_identity the identity
adapter hands MSAL the managed identity's token for `api://AzureADTokenExchange` as its client
assertion and never reads a client secret; a managed identity that gives no token is the service's own
failure (the operator is told), an identity endpoint that does not answer is transient. MSAL itself is
faked here; tests/integration/test_client_assertion.py runs the real one against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msal
import pytest
from azure.core.credentials import AccessToken as AzureAccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CredentialUnavailableError

from shared.adapters import identity as identity_module
from shared.adapters.identity import ManagedIdentityAssertion, MsalIdentity
from shared.config import SettingsError, load_settings
from shared.connections import FixedBy, classify_token_error
from shared.ports import AccessToken, TokenError
from shared.wiring import outlook_client_credential

ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "KEY_VAULT_URI": "https://kv-test.vault.azure.net",
    "OUTLOOK_CLIENT_ID": "6f1f5c7e-4a3b-4f7e-9c1d-0c0a9e5b7d21",
    "OUTLOOK_REDIRECT_URI": "https://func.example.net/api/outlook/callback",
    "INTEGRATIONS_PAGE_URL": "https://func.example.net/api/integrations",
    "AGENT_API_URL": "https://agents.example.net",
    "PLATFORM_EVENTS_URL": "https://coagentor.example.net/events",
    "PLATFORM_JWT_ISSUER": "https://coagentor.example.net",
    "PLATFORM_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\\nMIIB\\n-----END PUBLIC KEY-----",
}


class ManagedIdentity:
    """A TokenCredential standing in for ManagedIdentityCredential: records the scopes asked for."""

    def __init__(self, fails_with: Exception | None = None) -> None:
        self.asked: list[tuple[str, ...]] = []
        self.fails_with = fails_with

    def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
        self.asked.append(scopes)
        if self.fails_with is not None:
            raise self.fails_with
        return AzureAccessToken("mi-token-for-exchange", 2_000_000_000)


class Vault:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def require(self, name: str) -> str:
        self.reads.append(name)
        return "the-client-secret"


class FakeMsal:
    """Just enough of msal.ConfidentialClientApplication: the credential it was built with, and a
    refresh that, like MSAL, calls the assertion callable when it sends a token request."""

    built: list[Any] = []

    def __init__(self, client_id: str, *, client_credential: Any, **kwargs: Any) -> None:
        FakeMsal.built.append(client_credential)
        self.credential = client_credential

    def get_accounts(self) -> list[dict[str, str]]:
        return [{"home_account_id": "uid.utid"}]

    def initiate_auth_code_flow(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]:
        return {"auth_uri": "https://login.example/authorize", "state": kwargs.get("state")}

    def acquire_token_silent_with_error(self, scopes: list[str], account: Any, force_refresh: bool = False
                                        ) -> dict[str, Any]:
        sent = self.credential["client_assertion"]() if isinstance(self.credential, dict) else self.credential
        return {"access_token": f"graph-token-via-{sent}", "expires_in": 3600}


@pytest.fixture
def fake_msal(monkeypatch: pytest.MonkeyPatch) -> type[FakeMsal]:
    FakeMsal.built = []
    monkeypatch.setattr(identity_module.msal, "ConfidentialClientApplication", FakeMsal)
    return FakeMsal


def adapter(assertion: Any = None, secret: Any = None) -> MsalIdentity:
    return MsalIdentity(client_id=ENV["OUTLOOK_CLIENT_ID"], authority="https://login.microsoftonline.com/common",
                        redirect_uri=ENV["OUTLOOK_REDIRECT_URI"], session=None,  # type: ignore[arg-type]
                        now=lambda: datetime(2026, 12, 7, tzinfo=UTC), client_assertion=assertion,
                        client_secret=secret)


def cache() -> str:
    return msal.SerializableTokenCache().serialize()


def test_settings_choose_the_client_credential_and_refuse_anything_else() -> None:
    assert load_settings(ENV).outlook_client_credential == "client_secret"
    chosen = load_settings({**ENV, "OUTLOOK_CLIENT_CREDENTIAL": "Managed_Identity"})
    assert chosen.outlook_client_credential == "managed_identity"
    with pytest.raises(SettingsError, match="OUTLOOK_CLIENT_CREDENTIAL"):
        load_settings({**ENV, "OUTLOOK_CLIENT_CREDENTIAL": "certificate"})


def test_with_managed_identity_settings_msal_gets_an_assertion_and_no_secret_is_ever_read(monkeypatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "5a0f3c2d-7b1e-4c9a-8e6f-2d4b6a8c0e13")
    vault = Vault()
    chosen = outlook_client_credential(load_settings({**ENV, "OUTLOOK_CLIENT_CREDENTIAL": "managed_identity"}),
                                       vault)  # type: ignore[arg-type]
    assert set(chosen) == {"client_assertion"} and isinstance(chosen["client_assertion"], ManagedIdentityAssertion)
    secret_mode = outlook_client_credential(load_settings(ENV), vault)  # type: ignore[arg-type]
    assert set(secret_mode) == {"client_secret"}
    assert vault.reads == []  # neither mode reads Key Vault before a token is needed


def test_the_assertion_is_the_managed_identitys_token_for_the_token_exchange_audience(fake_msal) -> None:
    mi = ManagedIdentity()
    ident = adapter(assertion=ManagedIdentityAssertion(mi))  # type: ignore[arg-type]
    flow = ident.begin("state-1")
    assert flow["auth_uri"] and mi.asked == []  # starting a sign-in sends no token request
    got = ident.acquire(cache(), "uid.utid", force_refresh=True)
    assert isinstance(got, AccessToken) and got.token == "graph-token-via-mi-token-for-exchange"
    assert mi.asked == [("api://AzureADTokenExchange/.default",)]
    assert all(isinstance(c, dict) and set(c) == {"client_assertion"} for c in fake_msal.built)


def test_an_adapter_needs_exactly_one_credential() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        adapter()
    with pytest.raises(ValueError, match="exactly one"):
        adapter(assertion=lambda: "x", secret=lambda: "y")


@pytest.mark.parametrize(("raised", "error", "fixed_by"), [
    (CredentialUnavailableError("no managed identity endpoint"), "invalid_client", FixedBy.SERVICE),
    (ClientAuthenticationError("identity not assigned to this app"), "invalid_client", FixedBy.SERVICE),
    (ServiceRequestError("connection refused"), "unreachable", FixedBy.TRANSIENT),
])
def test_a_managed_identity_without_a_token_is_the_services_failure_or_transient(fake_msal, raised, error,
                                                                                   fixed_by) -> None:
    ident = adapter(assertion=ManagedIdentityAssertion(ManagedIdentity(fails_with=raised)))  # type: ignore[arg-type]
    got = ident.acquire(cache(), "uid.utid", force_refresh=True)
    assert isinstance(got, TokenError) and got.error == error
    assert classify_token_error(got.error, got.description, got.error_codes, got.suberror).fixed_by is fixed_by
    assert str(raised) not in got.description  # the exception's class only, never its text


@pytest.mark.parametrize("code", [700211, 700212, 700213, 7002138, 700024, 50027, 700027, 700229])
def test_entra_refusing_the_assertion_is_the_services_failure_even_without_invalid_client(code: int) -> None:
    failure = classify_token_error("invalid_request", f"AADSTS{code}: refused", (code,))
    assert failure.fixed_by is FixedBy.SERVICE and failure.reason is None
