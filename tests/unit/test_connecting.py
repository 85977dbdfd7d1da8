"""Connecting Outlook accounts, as the help article describes it (domain level, in memory)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.connections import REASONS, ConnectionStatus, Plan, PlanLimitExceeded
from shared.platform_auth import User
from shared.ports import TokenError
from shared.services.connect import (
    AccountMismatch,
    ClaimExpired,
    ClaimMismatch,
    ConnectionNotFound,
    Outcome,
    redirect_url,
)

ALICE = User("user-alice", Plan.FREE)
MALLORY = User("user-mallory", Plan.PRO)
WORK = ("uid-a.tid-contoso", "tid-contoso", "alice@contoso.com")
PERSONAL = ("uid-b.9188040d", "9188040d", "bob@outlook.com")


def _state(url: str) -> str:
    return url.split("state=")[1]


def test_connecting_shows_the_account_as_active_with_its_email(world):
    claimed = world.connect_account(ALICE, WORK)
    assert claimed.outcome == "connected"
    [conn] = world.accounts.list(ALICE.id)
    assert (conn.email, conn.status) == ("alice@contoso.com", ConnectionStatus.ACTIVE)
    assert world.secrets.get(conn.secret_name) == "cache-for-uid-a.tid-contoso"
    assert world.jobs.syncs[-1][0].connection_id == conn.id  # the calendar is read right away


def test_state_is_single_use_and_expires_after_ten_minutes(world):
    url = world.connect.start(ALICE)
    assert world.connect.complete({"code": "c", "state": _state(url)}).outcome is Outcome.CONFIRM
    assert world.connect.complete({"code": "c", "state": _state(url)}).outcome is Outcome.EXPIRED
    pending = len(world.claims.rows)
    url = world.connect.start(ALICE)
    world.clock.advance(601)
    result = world.connect.complete({"code": "c", "state": _state(url)})
    assert (result.outcome, result.reason) == (Outcome.EXPIRED, "stale_state")
    assert len(world.claims.rows) == pending == len(world.secrets.values) == 1


@pytest.mark.parametrize("response, outcome, reason", [
    ({}, Outcome.EXPIRED, "missing_state"),
    ({"state": "forged", "code": "c"}, Outcome.EXPIRED, "unknown_state"),
])
def test_forged_or_missing_state_stores_nothing(world, response, outcome, reason):
    result = world.connect.complete(response)
    assert (result.outcome, result.reason) == (outcome, reason)
    assert world.claims.rows == {} and world.secrets.values == {}


@pytest.mark.parametrize("error, description, outcome, reason", [
    ("access_denied", "AADSTS65004: User declined to consent", Outcome.CANCELLED, "user_cancelled"),
    ("access_denied", "AADSTS53003: Access has been blocked by Conditional Access policies.", Outcome.BLOCKED,
     "blocked_by_policy"),
    ("access_denied", "AADSTS90094: The grant requires admin permission.", Outcome.BLOCKED,
     "admin_approval_required"),
    ("server_error", "AADSTS90033: A transient error has occurred.", Outcome.FAILED, "aadsts_90033"),
])
def test_sign_in_errors_land_on_the_page_with_a_clear_outcome(world, error, description, outcome, reason):
    url = world.connect.start(ALICE)
    result = world.connect.complete({"state": _state(url), "error": error, "error_description": description})
    assert (result.outcome, result.reason) == (outcome, reason)
    assert world.claims.rows == {} and world.secrets.values == {}


def test_a_code_the_token_endpoint_rejects_fails_cleanly(world):
    world.identity.redeem_error = TokenError("invalid_grant", "AADSTS54005: OAuth2 Authorization code was "
                                             "already redeemed", (54005,))
    url = world.connect.start(ALICE)
    result = world.connect.complete({"code": "c", "state": _state(url)})
    assert (result.outcome, result.reason) == (Outcome.FAILED, "code_rejected")
    assert world.claims.rows == {} and world.secrets.values == {}


def test_the_redirect_never_carries_a_code_or_token_and_goes_only_to_the_configured_page(world):
    url = world.connect.start(ALICE)
    result = world.connect.complete({"code": "SECRET-CODE", "state": _state(url)})
    location = redirect_url("https://app.coagentor.test/integrations", result)
    assert location.startswith("https://app.coagentor.test/integrations?outlook=confirm&claim=")
    assert "SECRET-CODE" not in location and "cache-for" not in location and result.claim != "at"


def test_account_linking_csrf_is_refused_and_destroys_the_pending_sign_in(world):
    """Mallory starts a flow and lures Alice's browser through it: the sign-in is Mallory's, so
    Alice's claim is refused; and if Mallory's claim code reaches Alice, Alice cannot claim it."""
    url = world.connect.start(MALLORY)
    result = world.connect.complete({"code": "c", "state": _state(url)})
    with pytest.raises(ClaimMismatch):
        world.connect.claim(ALICE, result.claim)
    assert world.secrets.values == {}  # the redeemed tokens are gone
    with pytest.raises(ClaimExpired):
        world.connect.claim(MALLORY, result.claim)  # destroyed, not just refused
    assert world.connections.rows == {}


def test_claims_are_single_use_and_expire(world):
    url = world.connect.start(ALICE)
    claim = world.connect.complete({"code": "c", "state": _state(url)}).claim
    world.clock.advance(601)
    with pytest.raises(ClaimExpired):
        world.connect.claim(ALICE, claim)
    assert world.secrets.values == {}
    with pytest.raises(ClaimExpired):
        world.connect.claim(ALICE, "never-issued")


def test_free_plan_allows_one_account_and_says_so(world):
    world.connect_account(ALICE, WORK)
    with pytest.raises(PlanLimitExceeded) as exc:
        world.connect.start(ALICE)
    assert (exc.value.plan, exc.value.limit, exc.value.used) == (Plan.FREE, 1, 1)


def test_plan_limit_is_enforced_again_when_claiming(world):
    """Two sign-ins started while under the limit cannot both land."""
    first = world.connect.start(ALICE)
    second = world.connect.start(ALICE)
    c1 = world.connect.complete({"code": "c", "state": _state(first)}).claim
    world.identity.next_account = PERSONAL
    c2 = world.connect.complete({"code": "c", "state": _state(second)}).claim
    world.connect.claim(ALICE, c1)
    with pytest.raises(PlanLimitExceeded):
        world.connect.claim(ALICE, c2)
    assert len(world.accounts.list(ALICE.id)) == 1
    assert len(world.secrets.values) == 1  # the refused sign-in's tokens were deleted


def test_solo_plan_connects_a_work_and_a_personal_account(world):
    solo = User("user-solo", Plan.SOLO)
    world.connect_account(solo, WORK)
    world.connect_account(solo, PERSONAL)
    assert sorted(c.email for c in world.accounts.list(solo.id)) == ["alice@contoso.com", "bob@outlook.com"]


def test_connecting_the_same_account_again_updates_it_instead_of_duplicating(world):
    first = world.connect_account(ALICE, WORK)
    again = world.connect_account(User(ALICE.id, Plan.FREE), WORK, reconnect=first.connection.id)
    assert again.outcome == "reconnected" and again.connection.id == first.connection.id
    assert len(world.accounts.list(ALICE.id)) == 1
    assert first.connection.secret_name in world.secrets.deleted  # the old cache is not left behind


def test_reconnecting_restores_an_error_connection(world):
    conn = world.connect_account(ALICE, WORK).connection
    world.connections.update(conn.failed(REASONS["access_revoked"]))
    again = world.connect_account(ALICE, WORK, reconnect=conn.id)
    assert again.outcome == "reconnected"
    [now] = world.accounts.list(ALICE.id)
    assert (now.status, now.reason_code) == (ConnectionStatus.ACTIVE, None)


def test_reconnecting_with_a_different_microsoft_account_changes_nothing(world):
    conn = world.connect_account(ALICE, WORK).connection
    broken = world.connections.update(conn.failed(REASONS["access_revoked"]))
    with pytest.raises(AccountMismatch):
        world.connect_account(ALICE, PERSONAL, reconnect=conn.id)
    world.calendar.email = WORK[2]
    assert world.accounts.list(ALICE.id) == [broken]
    assert set(world.secrets.values) == {conn.secret_name}


def test_reconnect_of_someone_elses_connection_is_not_found(world):
    conn = world.connect_account(ALICE, WORK).connection
    with pytest.raises(ConnectionNotFound):
        world.connect.start(MALLORY, reconnect_id=conn.id)


def test_reconnecting_is_never_refused_for_the_plan_limit(world):
    conn = world.connect_account(ALICE, WORK).connection
    assert world.connect.start(ALICE, reconnect_id=conn.id).startswith("https://")


def test_unclaimed_and_abandoned_sign_ins_are_purged_with_their_tokens(world):
    url = world.connect.start(ALICE)
    world.connect.complete({"code": "c", "state": _state(url)})
    world.connect.start(ALICE)  # abandoned on the Microsoft page
    assert len(world.secrets.values) == 1 and len(world.flows.rows) == 1
    world.clock.advance(601)
    assert world.connect.purge_expired() == 2
    assert world.secrets.values == {} and world.claims.rows == {} and world.flows.rows == {}


def test_connection_ids_are_not_reused_for_a_new_account(world):
    a = world.connect_account(User("u", Plan.PRO), WORK).connection
    b = world.connect_account(User("u", Plan.PRO), PERSONAL).connection
    assert a.id != b.id and a.secret_name != b.secret_name
    assert replace(a, id=b.id) != b


def _consent_state(world, user: User) -> str:
    return world.connect.admin_consent_state(user)


def test_an_admin_returning_through_a_users_link_is_recorded_for_that_user_only(world):
    state = _consent_state(world, ALICE)
    assert _consent_state(world, ALICE) == state  # the same link all day: it may be forwarded to IT
    assert world.consents.rows == {}  # showing the link stores nothing
    assert world.connect.admin_consented_at(ALICE) is None
    result = world.connect.complete({"admin_consent": "True", "tenant": "tid-contoso", "state": state})
    assert result.outcome is Outcome.ADMIN_CONSENTED
    assert world.connect.admin_consented_at(ALICE) == world.clock.now()
    assert world.connect.admin_consented_at(MALLORY) is None
    world.clock.advance(31 * 60)
    assert world.connect.admin_consented_at(ALICE) is None  # news, not a permanent banner


@pytest.mark.parametrize("state", [None, "", "forged", "0" * 32 + ".forged", "0" * 32 + ".9999999999.forged"])
def test_an_admin_consent_return_without_a_state_this_service_issued_is_not_called_approval(world, state):
    """A crafted `callback?admin_consent=True` (no state, or one never issued) is not "approved":
    anyone could send such a link."""
    real = _consent_state(world, ALICE)
    response = {"admin_consent": "True", "tenant": "tid-contoso"}
    if state is not None:
        response["state"] = state
    result = world.connect.complete(response)
    assert result.outcome is Outcome.EXPIRED
    assert world.connect.admin_consented_at(ALICE) is None
    owner, expiry, signature = real.split(".")
    for tampered in (f"{owner}.{int(expiry) + 86400}.{signature}", f"{owner}.{expiry}.{signature[:-2]}AA",
                     f"{'1' * 32}.{expiry}.{signature}"):
        answer = world.connect.complete({"admin_consent": "True", "state": tampered})
        assert answer.outcome is Outcome.EXPIRED and world.consents.rows == {}


def test_an_admin_consent_link_is_accepted_for_a_week_then_a_fresh_one_is_needed(world):
    state = _consent_state(world, ALICE)
    world.clock.advance(7 * 86400)
    fresh = _consent_state(world, ALICE)
    assert fresh != state
    assert world.connect.complete({"admin_consent": "True", "tenant": "t", "state": state}).outcome \
        is Outcome.ADMIN_CONSENTED  # still within its week
    world.clock.advance(2 * 86400)
    assert world.connect.complete({"admin_consent": "True", "tenant": "t", "state": state}).outcome \
        is Outcome.EXPIRED
    assert world.connect.complete({"admin_consent": "True", "tenant": "t", "state": fresh}).outcome \
        is Outcome.ADMIN_CONSENTED


def test_an_admin_who_declines_is_not_thanked(world):
    state = _consent_state(world, ALICE)
    result = world.connect.complete({"admin_consent": "True", "state": state, "error": "access_denied",
                                     "error_description": "AADSTS65004: User declined to consent"})
    assert result.outcome is Outcome.CANCELLED and world.connect.admin_consented_at(ALICE) is None


def test_the_admin_consent_link_asks_for_every_scope_sign_in_asks_for_and_carries_the_state():
    from urllib.parse import parse_qs, urlsplit

    from shared.adapters.identity import admin_consent_url

    url = admin_consent_url("https://login.microsoftonline.com/common", "app-id",
                            "https://svc.example/api/outlook/callback", "owner.nonce")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/organizations/v2.0/adminconsent"
    assert query["state"] == ["owner.nonce"]
    assert set(query["scope"][0].split()) == {
        "https://graph.microsoft.com/Calendars.Read", "https://graph.microsoft.com/User.Read",
        "email", "openid", "profile", "offline_access"}


def test_a_started_sign_in_keeps_its_pkce_verifier_sealed_so_the_table_alone_never_yields_it(world):
    """The flow row lives up to ten minutes; what it holds opens only with the state that comes back
    to the callback (the row is named by the state's hash, never the state)."""
    import json

    url = world.connect.start(ALICE)
    state = _state(url)
    [stored] = world.flows.rows.values()
    kept = json.dumps(stored.flow)
    assert "code_verifier" not in kept and state not in kept and set(stored.flow) == {"sealed"}
    assert world.connect.complete({"code": "c", "state": state}).outcome is Outcome.CONFIRM


def test_a_sign_in_started_before_sealing_still_completes(world):
    """Rows written by the previous version hold MSAL's flow as it is (migration-safe)."""
    from shared.services.connect import open_flow

    url = world.connect.start(ALICE)
    state = _state(url)
    [(key, stored)] = world.flows.rows.items()
    plain = open_flow(state, stored.flow)
    assert plain is not None and plain["code_verifier"] == "v"
    world.flows.rows[key] = replace(stored, flow=plain)
    assert world.connect.complete({"code": "c", "state": state}).outcome is Outcome.CONFIRM


def test_a_user_can_have_five_sign_ins_open_and_the_sixth_waits_for_the_oldest(world):
    from datetime import timedelta

    from shared.services.connect import MAX_PENDING_SIGN_INS, TooManySignIns

    urls = []
    for _n in range(MAX_PENDING_SIGN_INS):
        urls.append(world.connect.start(ALICE))
        world.clock.advance(60)
    with pytest.raises(TooManySignIns) as refused:
        world.connect.start(ALICE)
    assert refused.value.retry_after == timedelta(minutes=10) - timedelta(minutes=MAX_PENDING_SIGN_INS)
    assert len(world.flows.rows) == MAX_PENDING_SIGN_INS  # nothing written for the refused one
    world.connect.start(MALLORY)  # someone else is not held up
    world.connect.complete({"code": "c", "state": _state(urls[-1])})  # one comes back: a place frees
    world.connect.start(ALICE)
    with pytest.raises(TooManySignIns):
        world.connect.start(ALICE)
    world.clock.advance(refused.value.retry_after.total_seconds() + 1)  # the oldest expired
    world.connect.start(ALICE)


def test_sign_in_states_and_claim_codes_name_the_users_partition_never_the_user_id(world):
    from shared.connections import owner_tag

    url = world.connect.start(ALICE)
    state = _state(url)
    owner, _, secret = state.partition(".")
    assert owner == owner_tag(ALICE.id) and ALICE.id not in state and len(secret) >= 43
    [key] = world.flows.rows
    assert key.startswith(f"{owner}.") and secret not in key  # the row is named by a hash
    claim = world.connect.complete({"code": "c", "state": state}).claim
    assert claim is not None and claim.startswith(f"{owner}.") and ALICE.id not in claim
    [code_key] = world.claims.rows
    assert code_key.startswith(f"{owner}.") and claim.partition(".")[2] not in code_key


def test_a_sign_in_and_a_claim_from_before_owner_tags_still_complete(world):
    """Rows written by the previous version are named by the bare hash of a state or code that holds
    no owner tag; they are read as they were (migration-safe)."""
    import hashlib

    url = world.connect.start(ALICE)
    state = _state(url)
    [(_key, flow)] = world.flows.rows.items()
    old_state = "legacyStateWithoutOwnerTag0123456789abcdefghijk"
    from shared.services.connect import open_flow
    world.flows.rows = {hashlib.sha256(old_state.encode()).hexdigest(): replace(
        flow, state_hash=hashlib.sha256(old_state.encode()).hexdigest(), flow=open_flow(state, flow.flow) or {})}
    result = world.connect.complete({"code": "c", "state": old_state})
    assert result.outcome is Outcome.CONFIRM
    [(_code_key, pending)] = world.claims.rows.items()
    old_code = "legacyCodeWithoutOwnerTag0123456789abcdefghijklm"
    old_key = hashlib.sha256(old_code.encode()).hexdigest()
    world.claims.rows = {old_key: replace(pending, code_hash=old_key)}
    assert world.connect.claim(ALICE, old_code).outcome == "connected"


def test_an_admin_consent_link_signed_after_the_secret_rotated_is_accepted_by_an_instance_still_holding_the_old(
        world):
    """Another instance issued the link with the new signing secret; this one checks it, finds a
    mismatch, reads the secret again (rotated) and accepts it."""
    from tests import fakes

    secret = world.connect._consent_secret
    assert isinstance(secret, fakes.RotatingSecret)
    secret.value = "whsec_rotated"
    state = _consent_state(world, ALICE)  # signed with the new secret
    secret.value = "whsec_old"  # this instance's cached copy

    def reload() -> None:
        secret.reloads += 1
        secret.value = "whsec_rotated"

    secret.reload = reload  # type: ignore[method-assign]
    result = world.connect.complete({"admin_consent": "True", "tenant": "t", "state": state})
    assert result.outcome is Outcome.ADMIN_CONSENTED and secret.reloads == 1
