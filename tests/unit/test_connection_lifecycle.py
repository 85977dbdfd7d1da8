"""Tokens refresh in the background; failures show Error with a reason, or a warning when they
keep failing transiently; the stored token cache is never lost (domain level, controllable clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.connections import REASONS, ConnectionStatus, Plan, PlanLimitExceeded, transient_backoff
from shared.platform_auth import User
from shared.ports import SyncJob, TokenError
from tests.unit.test_sync_and_deploy import WORK, connected, event, run_due_deploys

ALICE = User("user-alice", Plan.PRO)
REVOKED = TokenError("invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked.",
                     transient=False)
OUTAGE = TokenError("server_error", "AADSTS90033: A transient error has occurred.", transient=True)


def refresh_run(world, max_age=0, ahead=900, rate=20):
    """What the refresh_tokens timer does, then the queue delivering every refresh job."""
    outcome = world.tokens.fan_out(world.jobs, next_run_in_seconds=ahead, max_age_seconds=max_age,
                                   rate_per_second=rate)
    jobs, world.jobs.refreshes = world.jobs.refreshes, []
    return outcome, [world.tokens.refresh_one(j) for j, _ in jobs]


def test_revoked_access_shows_error_with_a_reason_and_auto_join_stops(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    world.sync.sync(SyncJob(ALICE.id, conn.id))
    world.identity.refresh_errors[WORK[0]] = REVOKED
    assert refresh_run(world)[1] == ["failed"]
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.reason_code, c.reason.action.value) == (ConnectionStatus.ERROR, "access_revoked", "reconnect")
    assert world.secrets.get(c.secret_name) is not None  # a failure never loses the stored cache
    assert run_due_deploys(world) == ["no_active_connection"]
    assert refresh_run(world)[0].enqueued == 0  # an Error connection waits for the user to reconnect


def test_conditional_access_during_refresh_asks_for_the_it_admin(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = TokenError(
        "invalid_grant", "AADSTS53003: Access has been blocked by Conditional Access policies.", transient=False)
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.reason == REASONS["blocked_by_policy"] and c.reason.action.value == "contact_admin"


def test_transient_failures_keep_the_connection_active_and_back_off(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = OUTAGE
    assert refresh_run(world)[1] == ["transient"]
    [c] = world.accounts.list(ALICE.id)
    assert c.status is ConnectionStatus.ACTIVE and c.transient_failure_since == world.clock.now()
    assert c.retry_at == world.clock.now() + timedelta(minutes=1)
    assert refresh_run(world)[0].enqueued == 0  # backing off
    world.clock.advance(60)
    assert refresh_run(world)[1] == ["transient"]
    [c] = world.accounts.list(ALICE.id)
    assert c.transient_failures == 2 and c.retry_at == world.clock.now() + timedelta(minutes=2)


def test_a_sustained_outage_surfaces_a_warning_then_clears_on_success(world):
    connected(world)
    world.identity.refresh_errors[WORK[0]] = OUTAGE
    refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.warning(world.clock.now(), after_seconds=6 * 3600) is None
    for _ in range(12):
        world.clock.advance(3600)
        refresh_run(world)
    [c] = world.accounts.list(ALICE.id)
    assert c.status is ConnectionStatus.ACTIVE
    assert "has not renewed access" in c.warning(world.clock.now(), after_seconds=6 * 3600)
    del world.identity.refresh_errors[WORK[0]]
    world.clock.advance(3600)
    assert refresh_run(world)[1] == ["refreshed"]
    [c] = world.accounts.list(ALICE.id)
    assert c.warning(world.clock.now(), after_seconds=6 * 3600) is None and c.transient_failures == 0


def test_backoff_doubles_up_to_an_hour():
    assert [transient_backoff(n).total_seconds() for n in (1, 2, 3, 7, 8, 20)] == [60, 120, 240, 3600, 3600, 3600]


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


def test_refreshes_are_spread_to_respect_key_vault_create_limits(world):
    user = User("big", Plan.BUSINESS)
    for i in range(100):
        world.connect_account(user, (f"uid-{i}.tid", "tid", f"u{i}@contoso.com"))
    world.tokens.fan_out(world.jobs, next_run_in_seconds=900, max_age_seconds=0, rate_per_second=20)
    delays = sorted(d.total_seconds() for _, d in world.jobs.refreshes)
    assert len(delays) == 100 and delays[-1] == 99 / 20
    # No 10-second window holds more refreshes (= secret sets) than Key Vault's 300 creates.
    assert max(sum(1 for d in delays if t <= d < t + 10) for t in delays) <= 300


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
