"""No client secret: the identity adapter signs users in and refreshes their tokens with a client
assertion, the managed identity's token for `api://AzureADTokenExchange`, against the simulator's
Entra ID (a federated identity credential on the app registration trusts that identity) and its App
Service managed identity endpoint, through the real azure-identity `ManagedIdentityCredential` and
MSAL. Refusals (a federated credential naming another subject, an expired assertion, no managed
identity) come back as data that the domain classifies as the service's own failure."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from azure.identity import ManagedIdentityCredential
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.msim import APP_HOME_TENANT_ID, AppRegistration, MicrosoftSimulator
from devstack.msim.directory import FederatedCredential, ManagedIdentity
from devstack.tls import ensure_ca
from shared.adapters.http import TimeoutSession
from shared.adapters.identity import ManagedIdentityAssertion, MsalIdentity
from shared.connections import FixedBy, classify_token_error
from shared.ports import AccessToken, SignedIn, TokenError

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")

CLIENT_ID = "7d4c2b1a-3e5f-4a6b-8c9d-0e1f2a3b4c5d"
REDIRECT_URI = "http://localhost:7071/api/outlook/callback"
MI_CLIENT_ID = "1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6"
MI_PRINCIPAL_ID = "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"
HEADER = "identity-header-" + "y" * 24
FIC_NAME = "outlookcal-function-identity"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return ensure_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def sim(ca) -> Iterator[MicrosoftSimulator]:
    simulator = MicrosoftSimulator(
        ssl_context=ca.server_context(),
        apps=[AppRegistration(CLIENT_ID, "a-secret-this-test-never-sends", [REDIRECT_URI])],
        managed_identities=[ManagedIdentity(MI_CLIENT_ID, MI_PRINCIPAL_ID, APP_HOME_TENANT_ID)],
        identity_header=HEADER,
    )
    # The federated credential names the simulator's own authority as issuer, so it is added once the
    # port is known (as infra adds it once the identity exists).
    simulator.register_app(AppRegistration(CLIENT_ID, "a-secret-this-test-never-sends", [REDIRECT_URI],
                                           federated_credentials=[trust(simulator)]))
    simulator.start()
    yield simulator
    simulator.stop()


def trust(sim: MicrosoftSimulator, subject: str = MI_PRINCIPAL_ID) -> FederatedCredential:
    return FederatedCredential(FIC_NAME, f"{sim.base_url}/{APP_HOME_TENANT_ID}/v2.0", subject)


@pytest.fixture
def session(ca) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        s.verify = str(ca.bundle_pem)
        yield s


@pytest.fixture(autouse=True)
def on_app_service(sim, ca, session, monkeypatch) -> None:
    """The environment App Service (and Flex Consumption) gives the app, pointing at the simulator."""
    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{sim.base_url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.bundle_pem))
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)


def identity(sim, ca, mi_client_id: str = MI_CLIENT_ID) -> MsalIdentity:
    """A fresh adapter with a fresh ManagedIdentityCredential (its own token cache), as a new process."""
    http = TimeoutSession(10)
    http.trust_env = False
    http.verify = str(ca.bundle_pem)
    assertion = ManagedIdentityAssertion(ManagedIdentityCredential(client_id=mi_client_id))
    return MsalIdentity(client_id=CLIENT_ID, client_assertion=assertion, authority=f"{sim.base_url}/common",
                        redirect_uri=REDIRECT_URI, session=http, now=lambda: datetime.now(UTC))


def signed_in(sim, session, ident: MsalIdentity, login: str = "dave@contoso.com") -> SignedIn | TokenError:
    flow = ident.begin("state-" + secrets.token_urlsafe(8))
    session.get(flow["auth_uri"]).raise_for_status()
    answer = session.post(flow["auth_uri"], data={"login": login, "action": "accept"}, allow_redirects=False)
    response = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}
    return ident.redeem(flow, response)


def token_requests(sim, session) -> list[dict[str, Any]]:
    logged = session.get(f"{sim.base_url}/_sim/requests").json()
    return [r for r in logged if r["path"].endswith("/oauth2/v2.0/token")]


def who(error: TokenError) -> FixedBy:
    return classify_token_error(error.error, error.description, error.error_codes, error.suberror).fixed_by


def test_a_sign_in_and_a_refresh_authenticate_with_the_managed_identity_and_send_no_secret(sim, ca, session):
    ident = identity(sim, ca)
    me = signed_in(sim, session, ident)
    assert isinstance(me, SignedIn), me
    refreshed = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(refreshed, AccessToken) and refreshed.cache is not None
    forms = [r["form"] for r in token_requests(sim, session)]
    assert [f["grant_type"] for f in forms] == ["authorization_code", "refresh_token"]
    for form in forms:
        assert form["client_assertion_type"] == JWT_BEARER and form["client_assertion"] == "[redacted]"
        assert "client_secret" not in form
    asked = [r for r in session.get(f"{sim.base_url}/_sim/requests").json() if r["path"] == "/msi/token"]
    queries = [{k: v[0] for k, v in parse_qs(r["query"]).items()} for r in asked]
    assert queries and all(q["resource"] == "api://AzureADTokenExchange" and q["client_id"] == MI_CLIENT_ID
                           for q in queries)
    # azure-identity keeps the managed identity's token: one fetch served both token requests.
    assert len(asked) == 1


def test_a_federated_credential_naming_another_identity_is_the_services_failure_and_recovers(sim, ca, session):
    ident = identity(sim, ca)
    me = signed_in(sim, session, ident)
    assert isinstance(me, SignedIn)
    fic = f"{sim.base_url}/_sim/apps/{CLIENT_ID}/federatedIdentityCredentials/{FIC_NAME}"
    assert session.patch(fic, json={"subject": "00000000-1111-2222-3333-444444444444"}).status_code == 204
    refused = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(refused, TokenError) and refused.error == "invalid_client"
    assert refused.error_codes == (700213,) and MI_PRINCIPAL_ID in refused.description
    assert who(refused) is FixedBy.SERVICE
    # The operator points the credential back at the identity: the same stored sign-in works again.
    assert session.patch(fic, json={"subject": MI_PRINCIPAL_ID}).status_code == 204
    assert isinstance(identity(sim, ca).acquire(me.cache, me.home_account_id, force_refresh=True), AccessToken)


def test_an_expired_assertion_is_the_services_failure_at_sign_in_and_at_refresh(sim, ca, session):
    me = signed_in(sim, session, identity(sim, ca))
    assert isinstance(me, SignedIn)
    # The identity endpoint's tokens arrive a day and a half old, past their 24 h.
    session.post(f"{sim.base_url}/_sim/config", json={"managed_identity_token_age_seconds": 36 * 3600})
    stale = identity(sim, ca)
    refused = stale.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(refused, TokenError) and refused.error_codes == (700024,)
    assert "not within its valid time range" in refused.description and who(refused) is FixedBy.SERVICE
    at_sign_in = signed_in(sim, session, identity(sim, ca), "alice@contoso.com")
    assert isinstance(at_sign_in, TokenError) and at_sign_in.error_codes == (700024,)
    assert who(at_sign_in) is FixedBy.SERVICE
    session.post(f"{sim.base_url}/_sim/config", json={"managed_identity_token_age_seconds": 0})
    # An expired token is not kept: the same process fetches a fresh one and recovers by itself.
    assert isinstance(stale.acquire(me.cache, me.home_account_id, force_refresh=True), AccessToken)


def test_no_managed_identity_is_the_services_failure(sim, ca, session):
    me = signed_in(sim, session, identity(sim, ca))
    assert isinstance(me, SignedIn)
    unknown = identity(sim, ca, mi_client_id="0f0f0f0f-0000-4000-8000-000000000000")  # not assigned to the app
    refused = unknown.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(refused, TokenError) and refused.error == "invalid_client"
    assert who(refused) is FixedBy.SERVICE


# --------------------------------------------------------------------------------- the simulator itself


def mi_token(sim, session, **params: str) -> requests.Response:
    query = {"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange", "client_id": MI_CLIENT_ID,
             **params}
    return session.get(f"{sim.base_url}/msi/token", params=query, headers={"X-IDENTITY-HEADER": HEADER})


def assert_with(sim, session, assertion: str, assertion_type: str = JWT_BEARER) -> requests.Response:
    return session.post(f"{sim.base_url}/{APP_HOME_TENANT_ID}/oauth2/v2.0/token", data={
        "client_id": CLIENT_ID, "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
        "client_assertion_type": assertion_type, "client_assertion": assertion})


def test_the_identity_endpoint_issues_app_service_shaped_tokens_only_with_its_header(sim, session):
    answer = mi_token(sim, session)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == f"{sim.base_url}/{APP_HOME_TENANT_ID}/v2.0"
    assert (claims["sub"], claims["oid"], claims["aud"]) == (MI_PRINCIPAL_ID, MI_PRINCIPAL_ID,
                                                              "api://AzureADTokenExchange")
    assert int(body["expires_on"]) == claims["exp"] and claims["exp"] - time.time() > 23 * 3600
    no_header = session.get(f"{sim.base_url}/msi/token", params={"api-version": "2019-08-01", "resource": "x",
                                                                  "client_id": MI_CLIENT_ID})
    assert no_header.status_code == 401 and "access_token" not in no_header.json()
    assert mi_token(sim, session, client_id="0f0f0f0f-0000-4000-8000-000000000000").status_code == 400
    # With a good assertion the token endpoint issues the app's token: no secret in the request.
    issued = assert_with(sim, session, body["access_token"])
    assert issued.status_code == 200, issued.text


def refusal(answer: requests.Response) -> tuple[int, str, int]:
    body = answer.json()
    return answer.status_code, body["error"], body["error_codes"][0]


def test_assertions_entra_id_would_refuse_are_refused_with_its_codes(sim, session):
    good = mi_token(sim, session).json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def signed(**changes: Any) -> str:
        return sim.state.key.sign({**claims, **changes})

    assert refusal(assert_with(sim, session, "not-a-jwt")) == (401, "invalid_client", 50027)
    assert refusal(assert_with(sim, session, signed(iss="https://token.actions.githubusercontent.com"))) == (
        401, "invalid_client", 700211)
    assert refusal(assert_with(sim, session, signed(aud="api://SomethingElse"))) == (401, "invalid_client", 700212)
    assert refusal(assert_with(sim, session, signed(sub=MI_PRINCIPAL_ID.replace("9e8d7c6b", "00000000")))) == (
        401, "invalid_client", 700213)
    assert refusal(assert_with(sim, session, signed(sub=MI_PRINCIPAL_ID.upper()))) == (401, "invalid_client",
                                                                                     7002138)
    assert refusal(assert_with(sim, session, signed(scp="User.Read"))) == (401, "invalid_client", 700229)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "forged"})
    assert refusal(assert_with(sim, session, forged)) == (401, "invalid_client", 700027)
    old = int(time.time()) - 7200
    assert refusal(assert_with(sim, session, signed(iat=old, nbf=old, exp=old + 600))) == (401, "invalid_client",
                                                                                         700024)
    assert refusal(assert_with(sim, session, signed(iss=CLIENT_ID, sub=CLIENT_ID))) == (401, "invalid_client",
                                                                                      700027)
    assert assert_with(sim, session, good, assertion_type="urn:other").status_code == 400
    for answer in (assert_with(sim, session, "not-a-jwt"), assert_with(sim, session, forged)):
        assert good not in answer.text and forged not in answer.text


def test_federated_credentials_are_managed_as_graph_shapes_them(sim, session):
    base = f"{sim.base_url}/_sim/apps/{CLIENT_ID}/federatedIdentityCredentials"
    listed = session.get(base).json()["value"]
    assert [c["name"] for c in listed] == [FIC_NAME]
    assert listed[0]["audiences"] == ["api://AzureADTokenExchange"] and listed[0]["subject"] == MI_PRINCIPAL_ID
    duplicate = {**listed[0], "name": "another-name"}
    assert session.post(base, json=duplicate).status_code == 400  # issuer + subject must be unique
    assert session.post(base, json={**duplicate, "subject": "x", "audiences": ["a", "b"]}).status_code == 400
    assert session.post(base, json={**duplicate, "name": "-bad", "subject": "x"}).status_code == 400
    assert session.post(base, json={**duplicate, "subject": "x"}).status_code == 201
    assert session.delete(f"{base}/another-name").status_code == 204
    assert session.delete(f"{base}/{FIC_NAME}").status_code == 204
    refused = assert_with(sim, session, mi_token(sim, session).json()["access_token"])
    assert refusal(refused) == (401, "invalid_client", 700211)
    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()
    assert [c["name"] for c in session.get(base).json()["value"]] == [FIC_NAME]


def test_an_identity_endpoint_that_does_not_answer_is_transient(sim, ca, session, monkeypatch):
    me = signed_in(sim, session, identity(sim, ca))
    assert isinstance(me, SignedIn)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"https://127.0.0.1:{port}/msi/token")  # nothing listens
    result = identity(sim, ca).acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, TokenError) and result.error == "unreachable"
    assert who(result) is FixedBy.TRANSIENT
