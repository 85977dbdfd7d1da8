"""The daily walks (secret reconciler, pruning, subscription sweep) go a page per queue message: a timer
run enqueues one message whatever the number of rows, no page reads more than its cap, every row is
reached, one row that cannot be read or handled is logged (`walk_row_failed`) and skipped without
stopping the walk, and a page delivered twice does no harm."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import FixedClock
from shared.connections import Connection, ConnectionStatus
from shared.ports import ConnectionPage, FanOutPage, Meeting, Page, Source, Subscription, SyncState
from shared.services.fanout import (
    ADOPT,
    PRUNE_MEETINGS,
    PRUNE_ORPHANS,
    PRUNE_WORKSPACE_MEETINGS,
    RECONCILE_CACHES,
    RECONCILE_CLIENT_STATES,
    SWEEP,
    FanOut,
)
from shared.services.lifecycle import Pruner, SecretReconciler
from shared.services.subscriptions import CLIENT_STATE_PREFIX
from tests import fakes
from tests.fakes_notifications import SubscriptionsTable
from tests.unit.test_sync_and_deploy import WORK as WORK_ACCOUNT

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CAP = 50  # rows per page of a table walk in these tests


class Pages:
    def __init__(self) -> None:
        self.queued: list[FanOutPage] = []

    def enqueue_page(self, page: FanOutPage) -> None:
        self.queued.append(page)


class CountingConnections(fakes.Connections):
    """The fake store, counting whole-table reads (a paged walk never makes one) and, when asked,
    reporting a row of one page as unreadable (as the table adapter does with a row it cannot parse)."""

    def __init__(self) -> None:
        super().__init__()
        self.whole_reads = 0
        self.unreadable_on_page: int | None = None
        self.largest_page = 0

    def all(self):  # type: ignore[no-untyped-def]
        self.whole_reads += 1
        return super().all()

    def page(self, continuation: str | None, size: int) -> ConnectionPage:
        found = super().page(continuation, size)
        self.largest_page = max(self.largest_page, len(found.connections))
        if self.unreadable_on_page is not None and int(continuation or 0) // size == self.unreadable_on_page:
            return replace(found, connections=found.connections[1:], skipped=1)
        return found


def fakes_user():  # type: ignore[no-untyped-def]
    from shared.connections import Plan
    from shared.platform_auth import User
    return User("user-walker", Plan.PRO)


def _conn(n: int) -> Connection:
    return Connection(id=f"c{n:05d}", user_id=f"u{n // 2:05d}", email=f"user{n}@contoso.com", home_account_id=f"h{n}",
                      tenant_id="t", status=ConnectionStatus.ACTIVE, reason_code=None,
                      secret_name=f"outlook-cache-c{n}", connected_at=NOW - timedelta(days=9), last_refreshed_at=NOW,
                      access_expires_at=None)


def _run(pages: Pages, fanout: FanOut, *, twice: bool = False) -> list[FanOutPage]:
    """Handle the queued pages as fan_out_page would, until the walks end; `twice`: every page is
    delivered a second time (at least once), its follow-up messages dropped as duplicates."""
    handled = []
    while pages.queued:
        page = pages.queued.pop(0)
        fanout.page(page)
        handled.append(page)
        if twice:
            queued = list(pages.queued)
            fanout.page(page)
            pages.queued = queued
    return handled


def _world(n_connections: int):
    clock = FixedClock(NOW)
    secrets = fakes.Secrets(now=clock.now)
    connections = CountingConnections()
    claims = fakes.Claims()
    subscriptions = SubscriptionsTable()
    for n in range(n_connections):
        conn = _conn(n)
        connections.rows[(conn.user_id, conn.id)] = conn
        secrets.set(conn.secret_name, "{}", owner=conn.user_id if n % 3 else "")  # a third from before owners
        subscriptions.rows[conn.id] = Subscription(conn.id, conn.user_id, f"sub-{n}", NOW + timedelta(days=3),
                                                   f"{CLIENT_STATE_PREFIX}c{n}", NOW)
        secrets.set(f"{CLIENT_STATE_PREFIX}c{n}", "state")  # written before owners were kept
    reconciler = SecretReconciler(secrets_store=secrets, connections=connections, claims=claims, clock=clock,
                                  grace=timedelta(hours=1), connection_pages=connections, subscriptions=subscriptions)
    pages = Pages()
    fanout = FanOut(connections=connections, pages=pages, jobs=fakes.Jobs(), clock=clock, refresh_ahead_seconds=0,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=20, page_size=CAP,
                    walks=reconciler.walks(), then=SecretReconciler.THEN, table_page_size=CAP)
    return clock, secrets, connections, claims, subscriptions, pages, fanout


def _orphans(secrets: fakes.Secrets, count: int, *, owner: str, tag: str = "orphan") -> set[str]:
    names = {f"outlook-cache-{tag}-{owner or 'none'}-{n}" for n in range(count)}
    for name in names:
        secrets.set(name, "{}", owner=owner)
    return names


@pytest.mark.parametrize("twice", [False, True])
def test_the_reconciler_walks_every_secret_in_capped_pages_and_deletes_only_orphans(twice: bool) -> None:
    clock, secrets, connections, _, _, pages, fanout = _world(300)
    owned = _orphans(secrets, 40, owner="u00007")  # a user with live connections names none of these
    ownerless = _orphans(secrets, 40, owner="")  # a crash left these before owners were kept
    clock.advance(2 * 3600)
    young = _orphans(secrets, 5, owner="", tag="young")  # too young to judge
    fanout.start(ADOPT)
    assert len(pages.queued) == 1 and connections.largest_page == 0  # the timer run reads nothing
    handled = _run(pages, fanout, twice=twice)
    assert [p.kind for p in handled].count(ADOPT) == 6  # 300 connections, 50 a page
    assert [p.kind for p in handled].count(RECONCILE_CACHES) == 8  # 385 token caches
    assert [p.kind for p in handled].count(RECONCILE_CLIENT_STATES) == 6  # 300 clientStates
    assert connections.largest_page <= CAP and secrets.largest_page <= CAP and connections.whole_reads == 0
    assert not (owned | ownerless) & set(secrets.values)
    assert young <= set(secrets.values)
    assert all(_conn(n).secret_name in secrets.values and f"{CLIENT_STATE_PREFIX}c{n}" in secrets.values
               for n in range(300))  # every named secret kept, those written before owners too
    assert all(secrets.owners[_conn(n).secret_name] == _conn(n).user_id for n in range(300))


def test_ownerless_secrets_wait_when_the_adoption_walk_could_not_read_a_connection() -> None:
    clock, secrets, connections, _, _, pages, fanout = _world(120)
    connections.unreadable_on_page = 1  # one row of the second page is unreadable
    owned = _orphans(secrets, 3, owner="u00001")
    ownerless = _orphans(secrets, 3, owner="")
    clock.advance(2 * 3600)
    fanout.start(ADOPT)
    handled = _run(pages, fanout)
    assert handled[-1].kind == RECONCILE_CLIENT_STATES  # the walk went on to its end
    assert handled[-1].skipped == 1
    assert not owned & set(secrets.values)  # judged by their owner's rows
    assert ownerless <= set(secrets.values)  # that connection's cache might be one of these: kept
    assert all(_conn(n).secret_name in secrets.values for n in range(120))


def test_one_secret_that_cannot_be_judged_is_logged_and_the_walk_goes_on(caplog) -> None:
    clock, secrets, connections, _, _, pages, fanout = _world(60)
    doomed = _orphans(secrets, 30, owner="u00003") | _orphans(secrets, 1, owner="u-broken")
    clock.advance(2 * 3600)
    real = connections.list_for_user

    def broken(user_id: str) -> list[Connection]:
        if user_id == "u-broken":
            raise OSError("storage timed out")
        return real(user_id)

    connections.list_for_user = broken  # type: ignore[method-assign]
    fanout.start(ADOPT)
    with caplog.at_level(logging.ERROR):
        _run(pages, fanout)
    assert set(secrets.values) & doomed == {"outlook-cache-orphan-u-broken-0"}  # left for tomorrow
    assert [r for r in caplog.records if getattr(r, "event", "") == "walk_row_failed"]


# ---------------------------------------------------------------- pruning
def _meeting(n: int, end: datetime) -> Meeting:
    return Meeting(user_id=f"u{n % 17}", key=f"m{n:05d}", link_key=f"l{n}", title="t", start=end - timedelta(hours=1),
                   end=end, platform="teams", join_url="https://teams.microsoft.com/l/x",
                   sources=(Source("c", f"e{n}", "a@x"),))


class FailingMeetings(fakes.Meetings):
    def __init__(self) -> None:
        super().__init__()
        self.fail_keys: set[str] = set()
        self.largest_page = 0

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        found = super().ended_page(cutoff, continuation, size)
        self.largest_page = max(self.largest_page, len(found.items))
        return found

    def delete(self, meeting: Meeting) -> None:
        if meeting.key in self.fail_keys:
            raise OSError("storage timed out")
        super().delete(meeting)


def _pruner(clock: FixedClock, meetings: fakes.Meetings, connections: fakes.Connections, states: fakes.SyncStates,
            index: fakes.Index, workspace: fakes.WorkspaceMeetings | None = None) -> Pruner:
    rows = fakes.UserRows(fakes.Flows(), fakes.Claims(), connections, meetings, index, states)
    return Pruner(meetings=meetings, connections=connections, accounts=None, rows=rows,  # type: ignore[arg-type]
                  index=index, sync_state=states, clock=clock, meeting_retention=timedelta(days=30),
                  error_retention=timedelta(days=90), workspace_meetings=workspace)


def _prune_fanout(clock: FixedClock, pruner: Pruner, pages: Pages) -> FanOut:
    return FanOut(connections=fakes.Connections(), pages=pages, jobs=fakes.Jobs(), clock=clock,
                  refresh_ahead_seconds=0, refresh_max_age_seconds=43200, refresh_rate_per_second=20,
                  walks=pruner.walks(), table_page_size=CAP)


@pytest.mark.parametrize("twice", [False, True])
def test_pruning_meetings_walks_them_in_capped_pages_and_survives_a_row_it_cannot_delete(twice: bool, caplog) -> None:
    clock, meetings = FixedClock(NOW), FailingMeetings()
    for n in range(430):
        meetings.create(_meeting(n, NOW - timedelta(days=40 if n % 2 else 10)))  # 215 long past
    meetings.fail_keys = {"m00001"}
    pages = Pages()
    fanout = _prune_fanout(clock, _pruner(clock, meetings, fakes.Connections(), fakes.SyncStates(), fakes.Index()),
                           pages)
    fanout.start(PRUNE_MEETINGS)
    with caplog.at_level(logging.ERROR):
        handled = _run(pages, fanout, twice=twice)
    assert meetings.largest_page <= CAP and len(handled) >= (1 if twice else 5)  # 215 long past, 50 a page
    assert {k for _, k in meetings.rows} == {f"m{n:05d}" for n in range(0, 430, 2)} | {"m00001"}
    assert [r for r in caplog.records if getattr(r, "event", "") == "walk_row_failed"]


class FailingWorkspaceMeetings(fakes.WorkspaceMeetings):
    def delete(self, meeting):  # type: ignore[no-untyped-def]
        if meeting.key == "k0003":
            raise OSError("storage timed out")
        super().delete(meeting)


@pytest.mark.parametrize("twice", [False, True])
def test_pruning_workspace_meetings_walks_them_in_capped_pages_and_survives_a_row_it_cannot_delete(twice) -> None:
    from shared.ports import WorkspaceMeeting
    clock, shared = FixedClock(NOW), FailingWorkspaceMeetings()
    for n in range(130):
        shared.put(WorkspaceMeeting("w", f"k{n:04d}", owner="ann", end=NOW - timedelta(days=31 if n < 120 else 1)))
    pages = Pages()
    fanout = _prune_fanout(clock, _pruner(clock, fakes.Meetings(), fakes.Connections(), fakes.SyncStates(),
                                          fakes.Index(), shared), pages)
    fanout.start(PRUNE_WORKSPACE_MEETINGS)
    handled = _run(pages, fanout, twice=twice)
    assert len(handled) >= (1 if twice else 3)  # 120 long past, 50 a page
    assert handled[-1].skipped >= 1  # the walk went on past the row it could not delete, and says so
    assert sorted(k for _, k in shared.rows) == ["k0003"] + [f"k{n:04d}" for n in range(120, 130)]


@pytest.mark.parametrize("twice", [False, True])
def test_orphaned_sync_rows_are_found_a_page_at_a_time_by_point_reads(twice: bool) -> None:
    clock, connections, states, index = FixedClock(NOW), CountingConnections(), fakes.SyncStates(), fakes.Index()
    for n in range(200):
        conn = _conn(n)
        if n % 4:  # a quarter of them are gone
            connections.rows[(conn.user_id, conn.id)] = conn
        states.rows[conn.id] = SyncState(conn.id, NOW, NOW + timedelta(days=14), None, None, user_id=conn.user_id)
        index.put(conn.id, f"e{n}", conn.user_id, f"m{n}", "g")
    states.rows["legacy"] = SyncState("legacy", NOW, NOW, None, None)  # written before sync rows named their user
    real_get = connections.get

    def get(user_id: str, connection_id: str) -> Connection | None:
        if connection_id == _conn(8).id:
            raise OSError("storage timed out")  # this one connection cannot be looked up today
        return real_get(user_id, connection_id)

    connections.get = get  # type: ignore[method-assign]
    pages = Pages()
    fanout = _prune_fanout(clock, _pruner(clock, fakes.Meetings(), connections, states, index), pages)
    fanout.start(PRUNE_ORPHANS)
    handled = _run(pages, fanout, twice=twice)
    assert handled[-1].skipped >= 1  # the walk went on past the connection it could not look up, and says so
    # 401 rows, 50 a page (fewer pages: the orphans' index rows go before the walk reaches them)
    assert 5 <= len(handled) <= 9 and connections.whole_reads == 0
    kept = {_conn(n).id for n in range(200) if n % 4} | {_conn(8).id}  # gone, but could not be looked up
    assert set(states.rows) == kept | {"legacy"}
    assert {c for c, _ in index.rows} == kept


@pytest.mark.parametrize("twice", [False, True])
def test_the_subscription_sweep_drops_rows_of_gone_connections_a_page_at_a_time(twice: bool) -> None:
    clock, secrets, connections, _, subscriptions, _, _ = _world(150)
    for n in range(0, 150, 5):
        connections.rows.pop((_conn(n).user_id, _conn(n).id))
    real_get = connections.get

    def get(user_id: str, connection_id: str) -> Connection | None:
        if connection_id == _conn(10).id:
            raise OSError("storage timed out")
        return real_get(user_id, connection_id)

    connections.get = get  # type: ignore[method-assign]
    from shared.services.subscriptions import SubscriptionService
    service = SubscriptionService(connections=connections, subscriptions=subscriptions, graph=None,  # type: ignore[arg-type]
                                  tokens=None, secrets_store=secrets, jobs=None, clock=clock,  # type: ignore[arg-type]
                                  notification_url="https://x", request_sync=lambda *a: None)  # type: ignore[arg-type]
    pages = Pages()
    fanout = FanOut(connections=connections, pages=pages, jobs=fakes.Jobs(), clock=clock, refresh_ahead_seconds=0,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=20, walks={SWEEP: service.sweep_page},
                    table_page_size=CAP)
    fanout.start(SWEEP)
    assert len(_run(pages, fanout, twice=twice)) == 3
    assert len(subscriptions.rows) == 121 and connections.whole_reads == 0  # c10's row waits for tomorrow
    assert _conn(10).id in subscriptions.rows
    assert f"{CLIENT_STATE_PREFIX}c5" not in secrets.values and f"{CLIENT_STATE_PREFIX}c6" in secrets.values


# ---------------------------------------------------------------- abandoned sign-ins (refresh_tokens, hourly)
@pytest.mark.parametrize("twice", [False, True])
def test_expired_claims_are_purged_a_page_at_a_time_with_their_caches_and_one_failure_is_skipped(twice, world,
                                                                                                  caplog) -> None:
    from shared.ports import PendingClaim
    from shared.services.fanout import PURGE_CLAIMS, PURGE_FLOWS
    live = world.connect_account(fakes_user(), WORK_ACCOUNT).connection
    for n in range(120):
        name = live.secret_name if n == 7 else f"outlook-cache-claim-{n}"  # n 7: a claim that made its connection
        if n != 7:
            world.secrets.set(name, "{}", owner=live.user_id)
        world.claims.put(PendingClaim(code_hash=f"tag.{n:04d}", user_id=live.user_id, reconnect_id=None,
                                      secret_name=name, home_account_id="h", tenant_id="t", email="a@b.c",
                                      access_expires_at=None, expires_at=world.clock.now() - timedelta(minutes=1)))
    world.secrets.fail_deletes = 1  # the first cache delete fails: that claim is left for the next hour
    pages = Pages()
    fanout = FanOut(connections=world.connections, pages=pages, jobs=fakes.Jobs(), clock=world.clock,
                    refresh_ahead_seconds=0, refresh_max_age_seconds=43200, refresh_rate_per_second=20,
                    walks={PURGE_FLOWS: world.connect.purge_flows_page, PURGE_CLAIMS: world.connect.purge_claims_page},
                    table_page_size=CAP)
    fanout.start(PURGE_CLAIMS)
    with caplog.at_level(logging.ERROR):
        handled = _run(pages, fanout, twice=twice)
    assert len(handled) >= (1 if twice else 3)
    # The one whose cache delete failed is left for the next run (or the page delivered again finishes it).
    left = [] if twice else ["tag.0000"]
    assert [c.code_hash for c in world.claims.rows.values()] == left
    assert [r for r in caplog.records if getattr(r, "event", "") == "walk_row_failed"]
    assert world.secrets.get(live.secret_name) is not None  # a connection names it: only the row went
    assert [n for n in world.secrets.values if n.startswith("outlook-cache-claim-")] == [
        f"outlook-cache-claim-{c[4:].lstrip('0') or '0'}" for c in left]


def test_the_hourly_purge_handles_its_first_page_in_the_timer_run_and_queues_only_what_is_left(world) -> None:
    """refresh_tokens purges sign-ins in its own run: one page, no message when that is all there is."""
    from shared.ports import PendingFlow
    from shared.services.fanout import PURGE_FLOWS
    pages = Pages()
    fanout = FanOut(connections=world.connections, pages=pages, jobs=fakes.Jobs(), clock=world.clock,
                    refresh_ahead_seconds=0, refresh_max_age_seconds=43200, refresh_rate_per_second=20,
                    walks={PURGE_FLOWS: world.connect.purge_flows_page}, table_page_size=CAP)

    def abandon(count: int) -> None:
        for n in range(count):
            world.flows.put(PendingFlow(state_hash=f"tag.{n:04d}-{count}", user_id="u", reconnect_id=None, flow={},
                                        expires_at=world.clock.now() - timedelta(minutes=1)))

    abandon(10)
    assert fanout.begin(PURGE_FLOWS).enqueued == 10 and pages.queued == [] and world.flows.rows == {}
    abandon(CAP * 2 + 3)
    first = fanout.begin(PURGE_FLOWS)
    assert first.enqueued == CAP and len(pages.queued) == 1  # the rest goes on as messages
    _run(pages, fanout)
    assert world.flows.rows == {}


def test_a_page_message_carries_where_its_walk_is_and_what_the_chain_skipped() -> None:
    from shared.adapters.queues import decode_fanout, encode_fanout
    page = FanOutPage(kind=RECONCILE_CACHES, continuation='{"PartitionKey": "p", "RowKey": "r"}', started_at=NOW,
                      number=3, enqueued_before=7, skipped=1, chain_from=ADOPT)
    assert decode_fanout(encode_fanout(page)) == page
    older = '{"kind": "prune", "continuation": null, "started_at": "2026-11-24T09:00:00+00:00"}'  # before chains
    assert decode_fanout(older) == FanOutPage(kind="prune", continuation=None, started_at=NOW)


@pytest.mark.parametrize("twice", [False, True])
def test_old_agent_tries_and_webhook_ids_are_pruned_a_page_at_a_time(twice: bool) -> None:
    from shared.ports import AgentTry
    from shared.services.fanout import PRUNE_TRIES
    clock, tries = FixedClock(datetime.now(UTC)), fakes.AgentTries()
    for n in range(130):
        tries.put(AgentTry("u", f"m{n}", 1, f"key-{n:04d}", agent_id=f"agent-{n}" if n % 2 else None))
        tries.remember_webhook(f"hook-{n:04d}", clock.now() - timedelta(hours=30 if n < 100 else 1))
    rows = fakes.UserRows(fakes.Flows(), fakes.Claims(), fakes.Connections(), fakes.Meetings(), fakes.Index(),
                          fakes.SyncStates())
    pruner = Pruner(meetings=fakes.Meetings(), connections=fakes.Connections(), accounts=None,  # type: ignore[arg-type]
                    rows=rows, index=fakes.Index(), sync_state=fakes.SyncStates(), clock=clock,
                    meeting_retention=timedelta(days=30), error_retention=timedelta(days=90), tries=tries)
    pages = Pages()
    fanout = _prune_fanout(clock, pruner, pages)
    fanout.start(PRUNE_TRIES)
    _run(pages, fanout, twice=twice)
    assert len(tries.webhooks) == 30 and len(tries.by_keys) == 130  # tries are younger than the retention
    clock.advance(31 * 86400)
    fanout.start(PRUNE_TRIES)
    handled = _run(pages, fanout, twice=twice)
    assert len(handled) >= (1 if twice else 5)  # 195 tries and 30 webhook ids, 50 a page
    assert tries.by_keys == {} and tries.by_agents == {} and tries.webhooks == set()
