"""The scan and refresh timers walk the connections a page per queue message: a timer run enqueues one
message whatever the number of connections, no page run reads more than a page, every connection is
reached once per walk, and refreshes are paced across pages under the Key Vault write budget."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.clock import FixedClock
from shared.connections import Connection, ConnectionStatus
from shared.ports import ConnectionPage, FanOutPage, SyncJob
from shared.services.fanout import PRUNE, REFRESH, REFRESH_HORIZON, RENEW, SYNC, FanOut
from tests import fakes

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


class PagedConnections(fakes.Connections):
    """The fake store, read a page at a time in key order (as Table Storage returns rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_page = 0
        self.queries = 0

    def page(self, continuation: str | None, size: int) -> ConnectionPage:
        self.queries += 1
        rows = sorted(self.rows.values(), key=lambda c: (c.user_id, c.id))
        start = int(continuation or 0)
        chunk = rows[start:start + size]
        self.largest_page = max(self.largest_page, len(chunk))
        following = start + size
        return ConnectionPage(chunk, str(following) if following < len(rows) else None)


class Pages:
    def __init__(self) -> None:
        self.queued: list[FanOutPage] = []

    def enqueue_page(self, page: FanOutPage) -> None:
        self.queued.append(page)


def _conn(n: int, *, active: bool = True, refreshed_hours_ago: float = 1.0) -> Connection:
    return Connection(
        id=f"c{n:05d}", user_id=f"u{n // 3:05d}", email=f"user{n}@contoso.com", home_account_id=f"h{n}",
        tenant_id="t", status=ConnectionStatus.ACTIVE if active else ConnectionStatus.ERROR,
        reason_code=None if active else "token_expired", secret_name=f"tc-{n}", connected_at=NOW - timedelta(days=9),
        last_refreshed_at=NOW - timedelta(hours=refreshed_hours_ago), access_expires_at=NOW + timedelta(hours=1))


def _world(connections: list[Connection], *, page_size: int = 100, rate: int = 20):
    store = PagedConnections()
    for c in connections:
        store.rows[(c.user_id, c.id)] = c
    clock = FixedClock(NOW)
    pages, jobs = Pages(), fakes.Jobs()
    fanout = FanOut(connections=store, pages=pages, jobs=jobs, clock=clock, refresh_ahead_seconds=1800,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=rate, page_size=page_size)
    return store, clock, pages, jobs, fanout


def _walk(pages: Pages, fanout: FanOut) -> int:
    """Run the queued pages as the queue function would, until the walk ends; returns page runs."""
    runs = 0
    while pages.queued:
        fanout.page(pages.queued.pop(0))
        runs += 1
    return runs


def test_a_scan_enqueues_one_message_and_its_pages_sync_every_active_connection_once() -> None:
    connections = [_conn(n, active=n % 10 != 0) for n in range(1234)]
    store, _, pages, jobs, fanout = _world(connections, page_size=100)
    fanout.start(SYNC)
    assert len(pages.queued) == 1 and store.queries == 0  # the timer run does not touch the connections
    runs = _walk(pages, fanout)
    assert runs == 13 and store.largest_page <= 100
    synced = [j.connection_id for j, _ in jobs.syncs]
    assert sorted(synced) == sorted(c.id for c in connections if c.is_active)
    assert len(set(synced)) == len(synced)
    assert all(j == SyncJob(j.user_id, j.connection_id) for j, _ in jobs.syncs)


def test_a_page_that_fails_part_way_and_is_delivered_again_starts_no_second_walk() -> None:
    """At-least-once delivery: the queue retries a page whose run failed; the rest of the walk must
    still run once (every later page, and every job in it, would otherwise run twice)."""
    _, _, pages, jobs, fanout = _world([_conn(n) for n in range(250)], page_size=100)
    real_enqueue = jobs.enqueue_sync
    sent = {"n": 0}

    def flaky(job, delay=timedelta(0)):
        sent["n"] += 1
        if sent["n"] == 50:
            raise ConnectionError("queue send failed")
        real_enqueue(job, delay)

    jobs.enqueue_sync = flaky  # type: ignore[method-assign]
    fanout.start(SYNC)
    first = pages.queued.pop(0)
    try:
        fanout.page(first)
    except ConnectionError:
        pass
    assert pages.queued == []  # nothing of the rest of the walk was started by the failed run
    fanout.page(first)  # the queue delivers it again
    _walk(pages, fanout)
    assert len({(j.user_id, j.connection_id) for j, _ in jobs.syncs}) == 250
    assert len(jobs.syncs) == 250 + 49  # only the failed page's own jobs are sent twice


def test_refreshes_are_paced_across_pages_from_when_the_timer_fired() -> None:
    # Refreshed 13 h ago: past the 12 h max age, so every one is due.
    connections = [_conn(n, refreshed_hours_ago=13) for n in range(300)]
    _, clock, pages, jobs, fanout = _world(connections, page_size=100, rate=20)
    fanout.start(REFRESH)
    clock.advance(2)  # the first page runs two seconds after the timer
    _walk(pages, fanout)
    delays = [d for _, d in jobs.refreshes]
    assert len(delays) == 300
    # The n-th refresh of the walk starts n/20 s after the timer fired: at most 20 start per second.
    assert delays[0] == timedelta(0) and delays[100] == timedelta(seconds=100 / 20 - 2)
    assert delays[-1] == timedelta(seconds=299 / 20 - 2)
    assert delays == sorted(delays)


def test_refreshes_beyond_the_horizon_wait_for_the_next_run_and_are_never_queued_twice() -> None:
    rate = 1  # 600 refreshes fit in the ten-minute horizon
    connections = [_conn(n, refreshed_hours_ago=13) for n in range(750)]
    store, clock, pages, jobs, fanout = _world(connections, page_size=100, rate=rate)
    fanout.start(REFRESH)
    _walk(pages, fanout)
    first_run = {j.connection_id for j, _ in jobs.refreshes}
    assert len(first_run) == int(REFRESH_HORIZON.total_seconds()) * rate == len(jobs.refreshes)
    assert max(d for _, d in jobs.refreshes) < REFRESH_HORIZON

    # The refreshes ran (the connections were refreshed); the next run takes the rest.
    for (user, cid), c in list(store.rows.items()):
        if cid in first_run:
            store.rows[(user, cid)] = replace(c, last_refreshed_at=NOW + timedelta(minutes=10))
    jobs.refreshes.clear()
    clock.advance(15 * 60)
    fanout.start(REFRESH)
    _walk(pages, fanout)
    second_run = {j.connection_id for j, _ in jobs.refreshes}
    assert second_run == {c.id for c in connections} - first_run


def test_connections_not_due_get_no_refresh() -> None:
    connections = [_conn(n, refreshed_hours_ago=1) for n in range(50)] + [_conn(99, active=False)]
    _, _, pages, jobs, fanout = _world(connections)
    fanout.start(REFRESH)
    _walk(pages, fanout)
    assert jobs.refreshes == []


def test_at_the_default_no_access_token_is_renewed_ahead_only_old_or_failing_connections_are() -> None:
    """TOKEN_REFRESH_AHEAD_SECONDS=0 (the default): a lapsed access token is the next sync's business;
    the refresh walk redeems only refresh tokens unused for the max age (revocation surfaces, the
    90-day window never nears) and connections whose last refresh failed transiently."""
    lapsed = [replace(_conn(n), access_expires_at=NOW - timedelta(minutes=5)) for n in range(10)]
    old = replace(_conn(20, refreshed_hours_ago=13), access_expires_at=NOW + timedelta(minutes=50))
    failing = replace(_conn(21), transient_failure_since=NOW - timedelta(minutes=30))
    store = PagedConnections()
    for c in [*lapsed, old, failing]:
        store.rows[(c.user_id, c.id)] = c
    pages, jobs = Pages(), fakes.Jobs()
    fanout = FanOut(connections=store, pages=pages, jobs=jobs, clock=FixedClock(NOW), refresh_ahead_seconds=0,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=20)
    fanout.start(REFRESH)
    _walk(pages, fanout)
    assert sorted(job.connection_id for job, _ in jobs.refreshes) == [old.id, failing.id]


def test_a_scan_also_has_every_active_connections_graph_subscription_checked_once() -> None:
    """A subscription Graph removed without a word is noticed within one scan period (VERIFY)."""
    from shared.services.subscriptions import VERIFY
    from tests.fakes_notifications import SubscriptionJobsFake

    connections = [_conn(n, active=n % 4 != 0) for n in range(300)]
    store = PagedConnections()
    for c in connections:
        store.rows[(c.user_id, c.id)] = c
    pages, jobs, checks = Pages(), fakes.Jobs(), SubscriptionJobsFake()
    fanout = FanOut(connections=store, pages=pages, jobs=jobs, clock=FixedClock(NOW), refresh_ahead_seconds=1800,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=20, page_size=100, subscriptions=checks)
    fanout.start(SYNC)
    _walk(pages, fanout)
    assert sorted(j.connection_id for j, _ in checks.jobs) == sorted(c.id for c in connections if c.is_active)
    assert {j.action for j, _ in checks.jobs} == {VERIFY}
    fanout.start(REFRESH)
    _walk(pages, fanout)
    assert len(checks.jobs) == len([c for c in connections if c.is_active])  # the refresh walk checks nothing


def test_renewal_and_pruning_walks_take_a_page_per_message_and_carry_the_pace_across_pages() -> None:
    """renew_subscriptions and prune_data start walks like the scan: one message, then a page of
    connections per fan_out_page run, each page handed to its service with the jobs before it."""
    connections = [_conn(n) for n in range(23)]
    store = PagedConnections()
    for c in connections:
        store.rows[(c.user_id, c.id)] = c
    seen: list[tuple[int, int]] = []  # (connections in the page, jobs enqueued before it)

    def renew(conns: list[Connection], page: FanOutPage) -> int:
        seen.append((len(conns), page.enqueued_before))
        return len(conns)  # one job per connection

    pages, jobs = Pages(), fakes.Jobs()
    fanout = FanOut(connections=store, pages=pages, jobs=jobs, clock=FixedClock(NOW), refresh_ahead_seconds=0,
                    refresh_max_age_seconds=43200, refresh_rate_per_second=20, page_size=10,
                    handlers={RENEW: renew, PRUNE: lambda conns, page: 0})
    fanout.start(RENEW)
    assert len(pages.queued) == 1 and store.queries == 0  # the timer's run: one message, no query
    assert _walk(pages, fanout) == 3 and store.largest_page == 10
    assert seen == [(10, 0), (10, 10), (3, 20)]
    fanout.start(PRUNE)
    assert _walk(pages, fanout) == 3


def test_a_walk_started_without_its_handler_is_refused() -> None:
    _, _, _, _, fanout = _world([])
    for kind in (RENEW, PRUNE, "nonsense"):
        try:
            fanout.start(kind)
        except ValueError:
            continue
        raise AssertionError(f"{kind} started without a handler")
