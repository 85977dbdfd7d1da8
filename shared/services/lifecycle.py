"""What the service keeps, and for how long: erasing a user's data, deleting token caches no row
names (the reconciler), pruning meetings long past and connections long dead.

Every step deletes what a row names before the row itself, so a run that fails part-way is finished
by the next one, and nothing it leaves is unreachable. The daily jobs are walks a page at a time
(shared/services/fanout.py): no run grows with the number of connections, meetings or secrets."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.connections import Connection
from shared.ports import (
    ClaimStore,
    Conflict,
    ConnectionPages,
    ConnectionStore,
    ErasureJobs,
    EventIndex,
    FanOutPage,
    MeetingStore,
    OwnedSecrets,
    Page,
    SecretStore,
    SubscriptionStore,
    SyncStateStore,
    TriesPruning,
    UserRows,
    WalkStep,
    WorkspaceMeetingStore,
)
from shared.services.accounts import AccountsService
from shared.services.connect import TOKEN_CACHE_PREFIX
from shared.services.fanout import (
    ADOPT,
    PRUNE_MEETINGS,
    PRUNE_ORPHANS,
    PRUNE_TRIES,
    PRUNE_WORKSPACE_MEETINGS,
    RECONCILE_CACHES,
    RECONCILE_CLIENT_STATES,
    TABLE_PAGE_SIZE,
)
from shared.services.meetings import forget_events
from shared.services.subscriptions import CLIENT_STATE_PREFIX, ORPHAN_SECRET_GRACE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erased:
    connections: int
    secrets: int
    rows: int


# The queued pass runs this long after the request's own: work that raced the erasure (a sync or a
# claim in flight) has finished by then, and what it wrote goes too. The contract says "within a minute".
SECOND_PASS = timedelta(seconds=20)


class Erasure:
    """`DELETE /api/outlook/data`: everything this service holds for one user (../shared/API.md)."""

    def __init__(self, *, rows: UserRows, secrets_store: SecretStore, jobs: ErasureJobs,
                 before_erase: Callable[[str, list[str]], None] | None = None, clock: Clock | None = None) -> None:
        self._rows = rows
        self._secrets = secrets_store
        self._jobs = jobs
        self._before_erase = before_erase  # (user id, connection ids): let go of what lives outside
        self._clock = clock

    def request(self, user_id: str) -> Erased | None:
        """The erasure job is queued first (durable: the queue retries it until it succeeds), then
        the erasure runs at once, so the user's next request already finds nothing. None when that
        first run failed part-way: the queued job finishes it (and says so in the log)."""
        self._jobs.enqueue(user_id, SECOND_PASS, self._clock.now() if self._clock is not None else None,
                           self._rows.connection_ids(user_id))
        try:
            return self.erase(user_id)
        except Exception:
            log.warning("erasure failed part-way; the queued erasure job finishes it", exc_info=True,
                        extra={"user_id": user_id})
            return None

    def erase(self, user_id: str, before: datetime | None = None, carried: Sequence[str] = ()) -> Erased:
        """Token caches first (deleted, and purged where the vault allows), then every row, the
        connection rows last: a failure part-way leaves the connections listed, so the retry (the
        queued erasure job) finds what is left. Safe to repeat; the second run finds nothing.

        `before` (the queued pass): when the erasure was asked for. A connection made after it is the
        user starting over, not something that raced the erasure: it stays, with everything of the
        user's that is not another connection's own, and only the connections from before go.

        `carried` (the queued pass): the user's connection ids when the erasure was asked for.
        Their rows are gone after the first pass; their partitions (sync state, event index) are
        searched all the same, for what a sync that raced the first pass wrote there."""
        connection_ids = self._rows.connection_ids(user_id)
        newer = set(self._rows.connection_ids(user_id, made_after=before)) if before is not None else set()
        only_connections = bool(newer)
        if newer:
            connection_ids = [c for c in connection_ids if c not in newer]
            log.info("erasure pass keeps connections made after the request", extra={"user_id": user_id,
                                                                                     "kept": len(newer)})
        connection_ids += [c for c in carried if c not in connection_ids and c not in newer]
        if self._before_erase is not None:
            self._before_erase(user_id, connection_ids)  # Graph subscriptions, while the tokens still work
        names = sorted(self._rows.secret_names(user_id, connection_ids, only_connections=only_connections))
        for name in names:
            self._secrets.delete(name)
        rows = self._rows.erase(user_id, connection_ids, only_connections=only_connections)
        log.info("user data erased", extra={"user_id": user_id, "connections": len(connection_ids),
                                            "secrets": len(names), "rows": rows})
        return Erased(len(connection_ids), len(names), rows)


class SecretReconciler:
    # The adoption walk's last page starts the token caches' walk, whose last page starts the clientStates'.
    THEN = {ADOPT: RECONCILE_CACHES, RECONCILE_CACHES: RECONCILE_CLIENT_STATES}

    """Deletes per-connection secrets (token caches, subscriptions' clientStates) that no row names,
    once older than a grace period (a secret is written a moment before the row that names it). The
    safety net for every path that could leave one behind: a crash between steps, a refresh that
    rewrote a cache as its connection was being removed.

    Walked a page at a time (`caches_page`, `client_states_page`): no run reads every connection. Each
    secret carries its **owner**, the user whose rows name it (written with it, see
    `SecretStore.set`), so one secret is judged by reading that user's rows only: their connections
    and pending claims (one partition read each) for a token cache, their connections' subscription
    rows for a clientState. A secret written before owners were kept has none: the `adopt_page` walk
    over the connections (which `reconcile_secrets` runs first, its last page starting the secret
    walks) records each connection's secrets' owner; a secret still without one afterwards, written
    `grace` before that walk began, is named by no connection, and goes. Only when that walk read every
    connection row (`FanOutPage.skipped` 0): otherwise ownerless secrets wait for the next day.

    At least once: a page judged twice deletes what is gone already (nothing); a secret named again
    meanwhile was written again (its time is fresh, so it is not judged)."""

    def __init__(self, *, secrets_store: OwnedSecrets, connections: ConnectionStore, claims: ClaimStore,
                 clock: Clock, grace: timedelta, connection_pages: ConnectionPages,
                 subscriptions: SubscriptionStore | None = None) -> None:
        self._secrets = secrets_store
        self._connections = connections
        self._pages = connection_pages
        self._claims = claims
        self._subscriptions = subscriptions
        self._clock = clock
        self._grace = grace

    def run(self) -> int:
        """Everything in one run (tests, small deployments): the adoption walk, then both secret
        walks, page after page; returns how many secrets went."""
        start = FanOutPage(kind=ADOPT, continuation=None, started_at=self._clock.now())
        page, skipped = start, 0
        while True:
            step = self.adopt_page(page, TABLE_PAGE_SIZE)
            skipped += step.skipped
            if step.continuation is None:
                break
            page = replace(page, continuation=step.continuation)
        deleted = 0
        for walk in (self.caches_page, self.client_states_page):
            page = replace(start, kind="", skipped=skipped, chain_from=ADOPT)
            while True:
                step = walk(page, TABLE_PAGE_SIZE)
                deleted += step.done
                if step.continuation is None:
                    break
                page = replace(page, continuation=step.continuation)
        return deleted

    def walks(self) -> dict[str, Callable[[FanOutPage, int], WalkStep]]:
        """The walks `reconcile_secrets` runs (fan-out kinds → one page of each), chained as THEN says."""
        return {ADOPT: self.adopt_page, RECONCILE_CACHES: self.caches_page,
                RECONCILE_CLIENT_STATES: self.client_states_page}

    def adopt_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of the adoption walk: each connection's token cache, and its subscription's
        clientState, told its owner (a blind merge; nothing when the secret is gone)."""
        found = self._pages.page(page.continuation, size)
        failed = 0
        for conn in found.connections:
            try:
                self._secrets.adopt(conn.secret_name, conn.user_id)
                if self._subscriptions is not None:
                    record = self._subscriptions.get(conn.id)
                    if record is not None:
                        self._secrets.adopt(record.secret_name, conn.user_id)
            except Exception as exc:  # one row never stops the walk; ownerless secrets then wait a day
                failed += 1
                log.error("secret owner not recorded: %s", type(exc).__name__,
                          extra={"connection_id": conn.id, "event": "walk_row_failed"})
        return WalkStep(len(found.connections), len(found.connections) - failed, found.continuation,
                        found.skipped + failed)

    def caches_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of the token caches' walk."""
        return self._judge(TOKEN_CACHE_PREFIX, page, size, self._grace, self._caches_named_by)

    def client_states_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of the clientState secrets' walk (a subscription being made is given an hour)."""
        return self._judge(CLIENT_STATE_PREFIX, page, size, max(self._grace, ORPHAN_SECRET_GRACE),
                           self._client_states_named_by)

    def _caches_named_by(self, user_id: str) -> set[str]:
        return ({c.secret_name for c in self._connections.list_for_user(user_id)}
                | {c.secret_name for c in self._claims.for_user(user_id)})

    def _client_states_named_by(self, user_id: str) -> set[str]:
        if self._subscriptions is None:
            return set()
        records = (self._subscriptions.get(c.id) for c in self._connections.list_for_user(user_id))
        return {r.secret_name for r in records if r is not None}

    def _judge(self, prefix: str, page: FanOutPage, size: int, grace: timedelta,
               named_by: Callable[[str], set[str]]) -> WalkStep:
        # The page is listed before the rows are read: a secret written after the listing is not judged.
        listed = self._secrets.page(prefix, page.continuation, size)
        cutoff = self._clock.now() - grace
        # Ownerless secrets: judged only after an adoption walk that read every connection.
        adopted = page.chain_from == ADOPT and page.skipped == 0
        ownerless_cutoff = page.started_at - grace
        names: dict[str, set[str]] = {}  # per owner, read once per page
        deleted, unjudged, failed = 0, 0, 0
        for stored in listed.items:
            if stored.created_at is None or stored.created_at >= cutoff:
                continue
            try:
                if stored.owner:
                    if stored.owner not in names:
                        names[stored.owner] = named_by(stored.owner)
                    if stored.name in names[stored.owner]:
                        continue
                elif not adopted or stored.created_at >= ownerless_cutoff:
                    unjudged += 1
                    continue
                self._secrets.delete(stored.name)
                deleted += 1
                log.warning("orphaned secret deleted", extra={"secret_name": stored.name})
            except Exception as exc:  # one row never stops the walk: the next day looks again
                failed += 1
                log.error("reconciler skipped a secret: %s", type(exc).__name__,
                          extra={"secret_name": stored.name, "event": "walk_row_failed"})
        if unjudged:
            log.info("%d secrets without an owner left for a walk after a complete adoption", unjudged,
                     extra={"unjudged": unjudged, "adopted": adopted})
        return WalkStep(len(listed.items) + listed.unreadable, deleted, listed.continuation,
                        listed.unreadable + failed)


@dataclass(frozen=True)
class Pruned:
    meetings: int
    dead_connections: int
    orphaned_connections: int
    workspace_meetings: int = 0


class Pruner:
    """Meetings that ended long ago (and their workspace meeting rows, which name teammates' emails),
    connections in Error for longer than a refresh token can live, and sync rows of connections that
    no longer exist."""

    def __init__(self, *, meetings: MeetingStore, connections: ConnectionStore, accounts: AccountsService,
                 rows: UserRows, index: EventIndex, sync_state: SyncStateStore, clock: Clock,
                 meeting_retention: timedelta, error_retention: timedelta,
                 workspace_meetings: WorkspaceMeetingStore | None = None, tries: TriesPruning | None = None) -> None:
        self._workspace_meetings = workspace_meetings
        self._tries = tries
        self._meetings = meetings
        self._connections = connections
        self._accounts = accounts
        self._rows = rows
        self._index = index
        self._sync_state = sync_state
        self._clock = clock
        self._meeting_retention = meeting_retention
        self._error_retention = error_retention

    def run(self) -> Pruned:
        """Everything in one run (tests, small deployments): every walk, page after page. The
        `prune_data` timer starts each walk as its own chain of queue messages instead
        (shared/services/fanout.py)."""
        dead = self.prune_connections(list(self._connections.all()))
        return replace(self.run_tables(), dead_connections=dead)

    def walks(self) -> dict[str, Callable[[FanOutPage, int], WalkStep]]:
        """The table walks `prune_data` starts (fan-out kinds → one page of each)."""
        return {PRUNE_MEETINGS: self.meetings_page, PRUNE_WORKSPACE_MEETINGS: self.workspace_meetings_page,
                PRUNE_ORPHANS: self.orphans_page, PRUNE_TRIES: self.tries_page}

    def prune_connections(self, connections: list[Connection]) -> int:
        """One page of the pruning walk: connections in Error for longer than the retention are
        released (their rows, meetings' sources, token cache and subscription go). A connection that
        fails is logged and skipped; the walk goes on. Returns how many were released."""
        now = self._clock.now()
        dead = 0
        for conn in connections:
            last_good = conn.last_refreshed_at or conn.connected_at
            if conn.is_active or last_good >= now - self._error_retention:
                continue
            try:
                self._accounts.release(conn)
                dead += 1
                log.info("connection in error since long pruned", extra={"connection_id": conn.id})
            except Exception as exc:  # one unreadable or stuck row never stops the walk
                log.error("pruning skipped a connection: %s", type(exc).__name__,
                          extra={"connection_id": conn.id, "event": "walk_row_failed"})
        return dead

    def run_tables(self) -> Pruned:
        """Every table walk to its end in this run: meetings (and shared workspace meeting rows) that
        ended long ago, sync rows of connections that no longer exist, old agent tries."""
        done = {kind: 0 for kind in self.walks()}
        for kind, walk in self.walks().items():
            page = FanOutPage(kind=kind, continuation=None, started_at=self._clock.now())
            while True:
                step = walk(page, TABLE_PAGE_SIZE)
                done[kind] += step.done
                if step.continuation is None:
                    break
                page = replace(page, continuation=step.continuation)
        log.info("pruned", extra={"meetings": done[PRUNE_MEETINGS], "orphaned_connections": done[PRUNE_ORPHANS],
                                  "workspace_meetings": done[PRUNE_WORKSPACE_MEETINGS]})
        return Pruned(done[PRUNE_MEETINGS], 0, done[PRUNE_ORPHANS], done[PRUNE_WORKSPACE_MEETINGS])

    def meetings_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of meetings that ended MEETING_RETENTION_DAYS ago, deleted (conditional on the row
        read: one changed meanwhile is left for the next day)."""
        found = self._meetings.ended_page(self._clock.now() - self._meeting_retention, page.continuation, size)
        return self._delete_each(found, self._meetings.delete, lambda m: m.key)

    def workspace_meetings_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of shared workspace meeting rows (they name teammates' emails) as long past."""
        if self._workspace_meetings is None:
            return WalkStep(0, 0, None)
        found = self._workspace_meetings.ended_page(self._clock.now() - self._meeting_retention,
                                                    page.continuation, size)
        return self._delete_each(found, self._workspace_meetings.delete, lambda m: m.key)

    def tries_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of agent tries older than the meetings' retention and status webhook ids older than
        a day (a replay that old fails its timestamp check anyway)."""
        if self._tries is None:
            return WalkStep(0, 0, None)
        now = self._clock.now()
        read, gone, following = self._tries.prune_page(now - self._meeting_retention, now - timedelta(days=1),
                                                       page.continuation, size)
        return WalkStep(read, gone, following)

    def orphans_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of connection-keyed rows (event index, sync state, subscriptions, calendars): each
        connection they name is looked up by a point read (its user from the row, else from its other
        rows); the sync rows of one that no longer exists go. A connection whose rows name no user
        (sync rows written before they did) is left, counted. The page is read before the connections:
        a connection created after this read has no rows in it, so it is never taken for an orphan."""
        found = self._rows.partitions_page(page.continuation, size)
        seen: dict[str, str] = {}
        for connection_id, user_id in found.items:
            seen[connection_id] = seen.get(connection_id) or user_id
        orphaned, unknown, failed = 0, 0, 0
        for connection_id, user_id in seen.items():
            try:
                user_id = user_id or self._rows.owner_of(connection_id)
                if not user_id:
                    unknown += 1
                    continue
                if self._connections.get(user_id, connection_id) is not None:
                    continue
                forget_events(self._meetings, self._index, user_id, connection_id,
                              self._index.all_for(connection_id))
                self._sync_state.remove(connection_id)
                orphaned += 1
            except Exception as exc:  # one row never stops the walk: the next day looks again
                failed += 1
                log.error("pruning skipped a connection's rows: %s", type(exc).__name__,
                          extra={"connection_id": connection_id, "event": "walk_row_failed"})
        if unknown:
            log.info("%d connections' rows name no user: left", unknown, extra={"unjudged": unknown})
        return WalkStep(len(found.items) + found.unreadable, orphaned, found.continuation, found.unreadable + failed)

    @staticmethod
    def _delete_each(found: Page[Any], delete: Callable[[Any], None], key: Callable[[Any], str]) -> WalkStep:
        deleted, failed = 0, 0
        for row in found.items:
            try:
                delete(row)
                deleted += 1
            except Conflict:
                pass  # changed meanwhile: the next run looks again
            except Exception as exc:  # one row never stops the walk
                failed += 1
                log.error("pruning skipped a row: %s", type(exc).__name__,
                          extra={"row_key": key(row), "event": "walk_row_failed"})
        return WalkStep(len(found.items) + found.unreadable, deleted, found.continuation, found.unreadable + failed)
