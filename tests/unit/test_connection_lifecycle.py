"""Tokens refresh in the background; failures show Error with a reason, or a warning when they
keep failing transiently; the stored token cache is never lost (domain level, controllable clock)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.connections import REASONS, ConnectionStatus, FixedBy, Plan, PlanLimitExceeded, classify_token_error
from shared.platform_auth import User
from shared.ports import FanOutPage, SyncJob, TokenError
from shared.services.fanout import REFRESH, FanOut
from tests.unit.test_sync_and_deploy import WORK, connected, event, run_due_deploys

ALICE = User("user-alice", Plan.PRO)
REVOKED = TokenError("invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked.",
                     (50173,), "bad_token")
OUTAGE = TokenError("server_error", "AADSTS90033: A transient error has occurred.", (90033,))
SECRET_EXPIRED = TokenError("invalid_client", "AADSTS7000222: The provided client secret keys are expired.",
                            (7000222,))


class _Pages:
    def __init__(self) -> None:
        self.queued: list[FanOutPage] = []

    def enqueue_page(self, page: FanOutPage) -> None:
        self.queued.append(page)


def refresh_run(world, max_age=0, ahead=900, rate=20):
    """What the refresh_tokens timer starts (a walk over the connections, a page per message), then
    the queue delivering every refresh job."""
    pages = _Pages()
    fanout = FanOut(connections=world.connections, pages=pages, jobs=world.jobs, clock=world.clock,
                    refresh_ahead_seconds=ahead, refresh_max_age_seconds=max_age, refresh_rate_per_second=rate)
    fanout.start(REFRESH)
    enqueued = 0
    while pages.queued:
        enqueued += fanout.page(pages.queued.pop(0)).enqueued
    jobs, world.jobs.refreshes = world.jobs.refreshes, []
    return SimpleNamespace(enqueued=enqueued), [world.tokens.refresh_one(j) for j, _ in jobs]


def test_revoked_access_shows_error_with_a_reason_and_auto_join_stops(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    world.sync.sync(SyncJob(ALICE.id, conn.id))
    world.identity.refresh_errors[WORK[0]] = REVOKED
    assert refresh_run(world)[1] == ["failed"]
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.reason_code, c.reason.action.value) == (ConnectionStatus.ERROR, "access_revoked", "reconnect")
    assert world.secrets.get(c.secret_name) is not None  # a failure never loses the stored cache
    assert run_due_deploys(world) == ["connection_error"]
    assert refresh_run(world)[0].enqueued == 0  # an Error connection waits for the user to reconnect


def test_conditional_access_during_refresh_asks_for_the_it_admin(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = TokenError(
        "invalid_grant", "AADSTS53003: Access has been blocked by Conditional Access policies.", (53003,))
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.reason == REASONS["blocked_by_policy"] and c.reason.action.value == "contact_admin"


def test_a_microsoft_outage_keeps_the_connection_active_and_is_retried_at_the_next_run(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = OUTAGE
    assert refresh_run(world)[1] == ["transient"]
    [c] = world.accounts.list(ALICE.id)
    assert c.status is ConnectionStatus.ACTIVE and c.transient_failure_since == world.clock.now()
    world.clock.advance(60)
    # No per-connection back-off: the next run tries again, so recovery shows at once.
    assert refresh_run(world)[1] == ["transient"]
    del world.identity.refresh_errors[WORK[0]]
    world.clock.advance(60)
    assert refresh_run(world)[1] == ["refreshed"]


def test_a_microsoft_outage_shows_a_warning_at_once_that_clears_by_itself(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = OUTAGE
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.status is ConnectionStatus.ACTIVE and c.reason is None
    assert "auto-join may be delayed" in c.warning(world.clock.now(), after_seconds=6 * 3600)
    assert world.events.published == []  # Microsoft's failure is not the user's: no event
    del world.identity.refresh_errors[WORK[0]]
    world.clock.advance(900)
    assert refresh_run(world)[1] == ["refreshed"]
    [c] = world.accounts.list(ALICE.id)
    assert c.warning(world.clock.now(), after_seconds=6 * 3600) is None and c.transient_failures == 0


def test_an_unrecognised_refresh_failure_warns_only_when_it_lasts(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = TokenError("weird_error", "Something new")
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.is_active and c.warning(world.clock.now(), after_seconds=6 * 3600) is None
    world.clock.advance(6 * 3600)
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.is_active and "has not renewed access" in c.warning(world.clock.now(), after_seconds=6 * 3600)


def test_an_expired_app_secret_is_the_services_failure_not_the_users(world, caplog):
    """Every connection stays Active with a warning, nobody is asked to reconnect or sent an event,
    operators see an app_identity_failure; once the operator fixes the secret, the next run recovers."""
    connected(world)
    bob = ("uid-b.9188040d", "9188040d", "bob@outlook.com")
    world.identity.next_account = bob
    world.connect_account(ALICE, bob)
    world.identity.refresh_errors[WORK[0]] = world.identity.refresh_errors[bob[0]] = SECRET_EXPIRED
    with caplog.at_level("ERROR"):
        assert refresh_run(world)[1] == ["service_failure", "service_failure"]
    assert any("app_identity_failure" in r.getMessage() for r in caplog.records)
    for c in world.accounts.list(ALICE.id):
        assert c.status is ConnectionStatus.ACTIVE and c.reason is None
        assert "problem on CoAgentor's side" in c.warning(world.clock.now(), after_seconds=6 * 3600)
    assert world.events.published == []
    world.identity.refresh_errors.clear()  # the operator put a valid secret in Key Vault
    world.clock.advance(900)
    assert refresh_run(world)[1] == ["refreshed", "refreshed"]
    assert all(c.warning(world.clock.now(), 6 * 3600) is None for c in world.accounts.list(ALICE.id))


@pytest.mark.parametrize("token_error, fixed_by, reason_code", [
    (TokenError("invalid_grant", "", (700082,)), FixedBy.USER, "token_expired"),
    (TokenError("invalid_grant", "", (50173,), "bad_token"), FixedBy.USER, "access_revoked"),
    (TokenError("interaction_required", "", (50076,), "basic_action"), FixedBy.USER, "sign_in_required"),
    (TokenError("invalid_grant", "", (65001,), "consent_required"), FixedBy.USER, "consent_required"),
    (TokenError("invalid_grant", "", (90094,)), FixedBy.ADMIN, "admin_approval_required"),
    (TokenError("invalid_grant", "", (53003,)), FixedBy.ADMIN, "blocked_by_policy"),
    (TokenError("invalid_grant", "", (9999999,), "user_password_expired"), FixedBy.USER, "sign_in_required"),
    (TokenError("invalid_grant", "", (9999999,)), FixedBy.USER, "refresh_failed"),
    (TokenError("invalid_client", "", (7000222,)), FixedBy.SERVICE, None),
    (TokenError("invalid_client", "", (7000215,)), FixedBy.SERVICE, None),
    (TokenError("unauthorized_client", "", (700016,)), FixedBy.SERVICE, None),
    (TokenError("unauthorized_client", "", (7000112,)), FixedBy.SERVICE, None),
    (TokenError("temporarily_unavailable", "", (90006,)), FixedBy.TRANSIENT, None),
    (TokenError("invalid_grant", "", (50053,)), FixedBy.TRANSIENT, None),  # locked for a while: lifts by itself
    (TokenError("invalid_grant", "", (90055,)), FixedBy.TRANSIENT, None),  # tenant throttled
    (TokenError("invalid_grant", "", (50105,)), FixedBy.ADMIN, "admin_approval_required"),
    (TokenError("invalid_grant", "", (500021,)), FixedBy.ADMIN, "blocked_by_policy"),
    (TokenError("unreachable", "HTTPError"), FixedBy.TRANSIENT, None),
    (TokenError("no_token", "No refresh token"), FixedBy.USER, "refresh_failed"),
    (TokenError("no_account", "No account"), FixedBy.USER, "refresh_failed"),
    # Codes decide, not the text: a description naming another code changes nothing.
    (TokenError("invalid_grant", "AADSTS53003: (text says blocked)", (50173,)), FixedBy.USER, "access_revoked"),
    # Text only as a fallback when Microsoft sent no codes.
    (TokenError("invalid_grant", "AADSTS53003: Access has been blocked."), FixedBy.ADMIN, "blocked_by_policy"),
])
def test_failures_are_classified_by_who_can_fix_them(token_error, fixed_by, reason_code):
    failure = classify_token_error(token_error.error, token_error.description, token_error.error_codes,
                                   token_error.suberror)
    assert failure.fixed_by is fixed_by
    assert (failure.reason.code if failure.reason else None) == reason_code


def test_a_lost_token_cache_asks_the_user_to_reconnect_once_and_tells_them(world):
    conn = connected(world)
    world.identity.refresh_errors[WORK[0]] = TokenError("no_token", "No refresh token in the stored sign-in")
    assert refresh_run(world)[1] == ["failed"]
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.reason_code) == (ConnectionStatus.ERROR, "refresh_failed")
    [event] = world.events.published
    assert event.type.value == "com.coagentor.outlook.connection.error"
    assert event.subject == ALICE.id and event.data["connection_id"] == conn.id
    assert event.data["action"] == "reconnect"
    assert refresh_run(world)[0].enqueued == 0  # no retry storm, no second event


def test_refresh_runs_only_when_due(world):
    connected(world)
    assert refresh_run(world, max_age=43200)[0].enqueued == 0
    world.clock.advance(3600 - 900)  # the access token now lapses before the next run
    assert refresh_run(world, max_age=43200)[1] == ["refreshed"]
    assert world.identity.refreshes == 1
    world.clock.advance(10)
    assert refresh_run(world, max_age=43200)[0].enqueued == 0


def test_max_age_keeps_refresh_tokens_from_idling_out(world):
    connected(world)
    world.identity.next_account = ("uid-b.9188040d", "9188040d", "bob@outlook.com")
    world.connect_account(ALICE, world.identity.next_account)
    world.clock.advance(43200)
    outcome, results = refresh_run(world, max_age=43200, ahead=0)
    assert outcome.enqueued == 2 and results == ["refreshed", "refreshed"]


def test_a_refresh_writes_the_cache_back_only_when_msal_changed_it(world):
    conn = connected(world)
    sets = world.secrets.sets
    world.tokens.access_token(conn)  # silent, cached access token: nothing changed
    assert world.secrets.sets == sets
    world.tokens.access_token(conn, force_refresh=True)
    assert world.secrets.sets == sets + 1


def test_a_downgraded_user_keeps_their_connections_but_cannot_add_more(world):
    solo = User("downgraded", Plan.SOLO)
    a = world.connect_account(solo, WORK).connection
    world.connect_account(solo, ("uid-b.9188040d", "9188040d", "bob@outlook.com"))
    free = User("downgraded", Plan.FREE)
    assert len(world.accounts.list(free.id)) == 2
    with pytest.raises(PlanLimitExceeded):
        world.connect.start(free)
    assert world.connect.start(free, reconnect_id=a.id)  # reconnecting is never refused
