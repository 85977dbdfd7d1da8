"""The timers' walks, one page per queue message, so that no function run grows with the number of
connections, meetings or secrets.

A timer (`scan_calendars`, `refresh_tokens`) only enqueues the first page of its walk. The
`fan_out_page` queue function then handles one page: one Table query for at most PAGE_SIZE
connections, this page's jobs (a sync job per active connection, or a refresh job per connection
whose refresh is due, `shared.connections.refresh_due`), then the next page's message — last, so a
page delivered again (at least once) never starts a second copy of the rest of the walk.
Pages are independent messages, so a page that fails is retried by the queue on its own.

Refreshes are paced across the whole walk: each one writes a new Key Vault secret version, and Key
Vault allows 300 creates per 10 s per vault (learn.microsoft.com/azure/key-vault/general/service-limits).
The walk's n-th refresh starts n / rate seconds after the timer fired (pages carry the count of jobs
enqueued before them); one that would start later than REFRESH_HORIZON is left for the next run, when
it is still due, so two runs never queue the same refresh twice and the rate is never exceeded.

Walks over other tables (ended meetings, orphaned sync rows, sealed secrets, subscription rows, agent
tries) go the same way: a `WalkPage` handles one page of its table (at most TABLE_PAGE_SIZE rows, one
storage query, the continuation token carried in the next message). A walk may name the walk that
follows it (`then`): its last page starts that one, with the same `started_at` and the count of rows
the walk could not read (`skipped`), so the second walk knows what the first one saw. Every page's
work is safe to repeat (deletes of what is gone, conditional writes), so a page delivered twice, or
a chained walk started twice, does no harm; a page that fails is retried by the queue on its own; a
row that cannot be read or handled is logged (`walk_row_failed`) and skipped, never stops a walk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from shared.clock import Clock
from shared.connections import Connection, refresh_due
from shared.ports import (
    ConnectionPages,
    FanOutPage,
    FanOutQueue,
    JobQueue,
    RefreshJob,
    SubscriptionJob,
    SubscriptionJobs,
    SyncJob,
    WalkStep,
)
from shared.services.subscriptions import VERIFY

log = logging.getLogger(__name__)

SYNC, REFRESH = "sync", "refresh"
# Walks whose page work is another service's (subscription renewals, pruning dead connections):
# handed the page's connections and the page, they return the jobs or changes they made.
RENEW, PRUNE = "renew", "prune"
# Daily walks over other tables (shared/services/lifecycle.py, shared/services/subscriptions.py).
PRUNE_MEETINGS = "prune-meetings"  # meetings ended MEETING_RETENTION_DAYS ago
PRUNE_WORKSPACE_MEETINGS = "prune-workspace-meetings"  # shared workspace meeting rows, as long past
PRUNE_ORPHANS = "prune-orphans"  # connection-keyed rows whose connection is gone
PRUNE_TRIES = "prune-agent-tries"  # agent tries and status webhook ids
PURGE_FLOWS = "purge-sign-ins"  # sign-in flows past their ten minutes (refresh_tokens, hourly)
PURGE_CLAIMS = "purge-claims"  # unclaimed sign-ins past theirs, with their token caches
INDEX_AWAITING = "index-awaiting"  # the watchdog's index row of every meeting awaiting a verdict, written again
ADOPT = "adopt-secrets"  # a connection walk: each connection's sealed secrets told their owner
RECONCILE_CACHES = "reconcile-caches"  # token caches no row names (after ADOPT)
RECONCILE_CLIENT_STATES = "reconcile-client-states"  # clientState secrets no row names (after the caches)
SWEEP = "sweep-subscriptions"  # subscription rows of connections that are gone
SECONDARY = "secondary-calendars"  # a sync of every Active connection that reads calendars beyond its default
KINDS = (SYNC, REFRESH, RENEW, PRUNE, SECONDARY, PRUNE_MEETINGS, PRUNE_WORKSPACE_MEETINGS, PRUNE_ORPHANS, PRUNE_TRIES,
         INDEX_AWAITING, ADOPT, RECONCILE_CACHES, RECONCILE_CLIENT_STATES, SWEEP, PURGE_FLOWS, PURGE_CLAIMS)
PageHandler = Callable[[list[Connection], FanOutPage], int]
PAGE_SIZE = 500  # connections per page: one Table query (max 1,000), ~500 queue sends per run
# Rows per page of a table walk: each row may cost a delete or a point read or two (~10 ms each in
# Azure), so a page stays within seconds and a retried page repeats little.
TABLE_PAGE_SIZE = 200


# One page of a table walk: handed the page message (its continuation, when the walk started, what
# was skipped before it) and the page size.
WalkPage = Callable[[FanOutPage, int], WalkStep]
# Shorter than the refresh timer's period (REFRESH_SCHEDULE, 15 minutes): every job of a run has
# started before the next run looks at the connections again.
REFRESH_HORIZON = timedelta(minutes=10)


@dataclass(frozen=True)
class PageOutcome:
    connections: int  # rows this page read
    enqueued: int  # jobs it enqueued
    deferred: int = 0  # due refreshes left for the next run (over the pace's horizon)
    last: bool = False  # no page follows
    skipped: int = 0  # rows this page could not read or handle (logged `walk_row_failed`)


class FanOut:
    def __init__(self, *, connections: ConnectionPages, pages: FanOutQueue, jobs: JobQueue, clock: Clock,
                 refresh_ahead_seconds: float, refresh_max_age_seconds: int, refresh_rate_per_second: int,
                 page_size: int = PAGE_SIZE, subscriptions: SubscriptionJobs | None = None,
                 handlers: Mapping[str, PageHandler] | None = None, walks: Mapping[str, WalkPage] | None = None,
                 then: Mapping[str, str] | None = None, table_page_size: int = TABLE_PAGE_SIZE) -> None:
        self._subscriptions = subscriptions  # the scan also checks each connection's Graph subscription
        self._connections = connections
        self._handlers = dict(handlers or {})
        self._walks = dict(walks or {})
        self._then = dict(then or {})  # walk kind -> the walk its last page starts
        self._table_page_size = table_page_size
        self._pages = pages
        self._jobs = jobs
        self._clock = clock
        self._ahead = refresh_ahead_seconds
        self._max_age = refresh_max_age_seconds
        self._rate = refresh_rate_per_second
        self._page_size = page_size

    def add_walks(self, walks: Mapping[str, WalkPage]) -> None:
        """More table walks, for walks over an adapter's own tables (once, when the app is wired)."""
        self._walks.update(walks)

    def _known(self, kind: str) -> bool:
        return kind in (SYNC, REFRESH) or kind in self._handlers or kind in self._walks

    def start(self, kind: str) -> None:
        """Begin a walk (the timer's whole run): one message, whatever the number of rows."""
        if not self._known(kind):
            raise ValueError(f"unknown fan-out kind {kind!r}")
        self._pages.enqueue_page(FanOutPage(kind=kind, continuation=None, started_at=self._clock.now()))

    def begin(self, kind: str) -> PageOutcome:
        """Begin a table walk by handling its first page in the caller's run (one page, as bounded as
        any page run): a further page, if any, goes on as a message. For small walks a timer runs often
        (sign-ins to purge, usually one page): no message at all in the common case."""
        if kind not in self._walks:
            raise ValueError(f"unknown table walk {kind!r}")
        return self.page(FanOutPage(kind=kind, continuation=None, started_at=self._clock.now()))

    def page(self, page: FanOutPage) -> PageOutcome:
        """Handle one page of a walk: this page's work, then the next page's message."""
        if not self._known(page.kind):
            raise ValueError(f"unknown fan-out kind {page.kind!r}")
        if page.kind in self._walks:
            step = self._walks[page.kind](page, self._table_page_size)
            self._follow(page, step.continuation, step.done, step.skipped)
            return PageOutcome(connections=step.read, enqueued=step.done, last=step.continuation is None,
                               skipped=step.skipped)
        found = self._connections.page(page.continuation, self._page_size)
        now = self._clock.now()
        if page.kind in self._handlers:
            done = self._handlers[page.kind](found.connections, page)
            self._follow(page, found.continuation, done, found.skipped)
            return PageOutcome(connections=len(found.connections), enqueued=done, last=found.continuation is None,
                               skipped=found.skipped)
        if page.kind == SYNC:
            due = [c for c in found.connections if c.is_active]
        else:
            due = [c for c in found.connections if refresh_due(c, now, self._ahead, self._max_age)]
        paced = self._paced(page, len(due)) if page.kind == REFRESH else len(due)
        for n, conn in enumerate(due[:paced]):
            if page.kind == SYNC:
                self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id))
                if self._subscriptions is not None:
                    # Still at Graph, one of a kind, authorized for a while yet (SubscriptionService VERIFY).
                    self._subscriptions.enqueue(SubscriptionJob(conn.user_id, conn.id, VERIFY))
            else:
                starts = page.started_at + timedelta(seconds=(page.enqueued_before + n) / self._rate)
                self._jobs.enqueue_refresh(RefreshJob(conn.user_id, conn.id), max(starts - now, timedelta(0)))
        # The next page goes last: a page that fails part-way is delivered again and repeats only its
        # own jobs (a sync takes a lease, a repeated refresh is one more write); queued first, every
        # redelivery would start another copy of the rest of the walk.
        if found.continuation is not None:
            self._pages.enqueue_page(replace(page, continuation=found.continuation, number=page.number + 1,
                                             enqueued_before=page.enqueued_before + paced,
                                             skipped=page.skipped + found.skipped))
        deferred = len(due) - paced
        if deferred:
            log.warning("refresh pace reached: %d due refreshes left for the next run", deferred,
                        extra={"fanout_page": page.number, "deferred": deferred})
        return PageOutcome(connections=len(found.connections), enqueued=paced, deferred=deferred,
                           last=found.continuation is None)

    def _follow(self, page: FanOutPage, continuation: str | None, done: int, skipped: int) -> None:
        """The next page of this walk, or, after its last page, the first page of the walk it hands on to
        (same `started_at`, the skipped rows carried over)."""
        if continuation is not None:
            self._pages.enqueue_page(replace(page, continuation=continuation, number=page.number + 1,
                                             enqueued_before=page.enqueued_before + done,
                                             skipped=page.skipped + skipped))
        elif page.kind in self._then:
            self._pages.enqueue_page(FanOutPage(kind=self._then[page.kind], continuation=None,
                                                started_at=page.started_at, skipped=page.skipped + skipped,
                                                chain_from=page.chain_from or page.kind))

    def _paced(self, page: FanOutPage, due: int) -> int:
        """How many of this page's due refreshes still start within the horizon at the set rate."""
        room = int(REFRESH_HORIZON.total_seconds() * self._rate) - page.enqueued_before
        return max(0, min(due, room))
