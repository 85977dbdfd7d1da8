# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""The identity adapter (MSAL) against the Microsoft simulator's faults: outages, timeouts and the
service's own credentials failing never escape as exceptions, and are classified by who can fix them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from shared.adapters.http import TimeoutSession
from shared.adapters.identity import MsalIdentity
from shared.connections import FixedBy, classify_token_error
from shared.ports import AccessToken, IdentityUnavailable, SignedIn, TokenError
from tests.integration.test_simulator import (  # noqa: F401  (fixtures)
    CLIENT_SECRET,
    REDIRECT_URI,
    ca,
    seeded,
    session,
    sim,
)

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")
TOKEN_PATH = "/common/oauth2/v2.0/token"


class Vault:
    """The client secret as Key Vault holds it; `reads` counts how often the adapter asked."""

    def __init__(self, value: str) -> None:
        self.value, self.cached, self.reads = value, None, 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self.cached is None:
                self.reads += 1
                self.cached = self.value
            return self.cached

    def reload(self) -> None:
        self.cached = None


def identity(sim, ca, secret: Vault, timeout: float = 5.0) -> MsalIdentity:
    http = TimeoutSession(timeout)
    http.trust_env = False
    http.verify = str(ca.bundle_pem)
    from tests.integration.test_simulator import CLIENT_ID

    return MsalIdentity(client_id=CLIENT_ID, client_secret=secret, authority=f"{sim.base_url}/common",
                        redirect_uri=REDIRECT_URI, session=http, now=lambda: datetime.now(UTC))


def signed_in(sim, session, ident: MsalIdentity, login: str = "dave@contoso.com") -> SignedIn:
    flow = ident.begin("state-" + login)
    session.get(flow["auth_uri"]).raise_for_status()
    answer = session.post(flow["auth_uri"], data={"login": login, "action": "accept"}, allow_redirects=False)
    from urllib.parse import parse_qs, urlsplit

    response = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}
    result = ident.redeem(flow, response)
    assert isinstance(result, SignedIn), result
    return result


def fault(sim, session, **body) -> None:
    session.post(f"{sim.base_url}/_sim/faults", json={"path_prefix": TOKEN_PATH, **body}).raise_for_status()


def who(error: TokenError) -> FixedBy:
    return classify_token_error(error.error, error.description, error.error_codes, error.suberror).fixed_by


def test_a_token_endpoint_outage_comes_back_as_data_and_is_transient(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    me = signed_in(sim, session, ident)
    fault(sim, session, status=503, count=1)
    result = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, TokenError) and result.error == "unreachable"
    assert who(result) is FixedBy.TRANSIENT
    # The stored sign-in is untouched: a later run (MSAL holds back retries of a 5xx for a while) works.
    later = identity(sim, ca, Vault(CLIENT_SECRET))
    assert isinstance(later.acquire(me.cache, me.home_account_id, force_refresh=True), AccessToken)


def test_a_token_endpoint_that_hangs_times_out(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET), timeout=0.5)
    me = signed_in(sim, session, ident)
    fault(sim, session, latency_ms=3000, count=1)
    result = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, TokenError) and result.error == "unreachable" and who(result) is FixedBy.TRANSIENT


def test_microsofts_codes_reach_the_classification(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    me = signed_in(sim, session, ident)
    fault(sim, session, status=400, error="invalid_grant", aadsts="AADSTS50173", count=1)
    result = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, TokenError) and result.error_codes == (50173,)
    failure = classify_token_error(result.error, result.description, result.error_codes, result.suberror)
    assert failure.reason is not None and failure.reason.code == "access_revoked"


def test_a_replaced_client_secret_is_read_again_from_key_vault_and_used_at_once(sim, session, ca):
    vault = Vault(CLIENT_SECRET)
    ident = identity(sim, ca, vault)
    me = signed_in(sim, session, ident)
    vault.cached = "an-old-secret-someone-rotated-away"  # what the process still holds
    result = ident.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, AccessToken)  # refused once (AADSTS7000215), re-read, retried
    assert vault.reads == 2  # once at sign-in, once after the refusal


def test_an_invalid_app_secret_is_the_services_failure(sim, session, ca):
    good = identity(sim, ca, Vault(CLIENT_SECRET))
    me = signed_in(sim, session, good)
    broken = identity(sim, ca, Vault("not-the-secret"))  # Key Vault itself holds a wrong one
    result = broken.acquire(me.cache, me.home_account_id, force_refresh=True)
    assert isinstance(result, TokenError) and result.error == "invalid_client"
    assert 7000215 in result.error_codes and who(result) is FixedBy.SERVICE


def test_starting_a_sign_in_while_discovery_is_down_is_reported_not_raised(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    session.post(f"{sim.base_url}/_sim/faults", json={
        "path_prefix": "/common/v2.0/.well-known/openid-configuration", "status": 503, "count": 5,
    }).raise_for_status()
    with pytest.raises(IdentityUnavailable):
        ident.begin("state-x")


def test_a_scope_echo_without_email_does_not_redeem_the_refresh_token_on_every_call(sim, session, ca):
    """Some accounts' token responses leave `email` out of `scope` (FACTS, "Scope echo"): silent calls
    ask for the calendar only, so MSAL's cached access token still serves them."""
    session.post(f"{sim.base_url}/_sim/users/bob@outlook.com/settings",
                 json={"scope_echo_omits": ["email", "openid"]}).raise_for_status()
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    me = signed_in(sim, session, ident, "bob@outlook.com")

    def token_requests() -> int:
        requests = session.get(f"{sim.base_url}/_sim/requests").json()
        return sum(r["path"].endswith("/oauth2/v2.0/token") for r in requests)

    before = token_requests()
    for _ in range(3):
        result = ident.acquire(me.cache, me.home_account_id, force_refresh=False)
        assert isinstance(result, AccessToken) and result.cache is None  # nothing to write back to Key Vault
    assert token_requests() == before
