"""What the service keeps, and for how long: erasing a user's data, deleting token caches no row
names (the reconciler), pruning meetings long past and connections long dead.

Every step deletes what a row names before the row itself, so a run that fails part-way is finished
by the next one, and nothing it leaves is unreachable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.clock import Clock
from shared.connections import Connection
from shared.ports import (
    ClaimStore,
    Conflict,
    ConnectionStore,
    ErasureJobs,
    EventIndex,
    MeetingStore,
    SecretStore,
    SyncStateStore,
    UserRows,
    WorkspaceMeetingStore,
)
from shared.services.accounts import AccountsService
from shared.services.connect import TOKEN_CACHE_PREFIX
from shared.services.meetings import forget_events

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
        self._jobs.enqueue(user_id, SECOND_PASS, self._clock.now() if self._clock is not None else None)
        try:
            return self.erase(user_id)
        except Exception:
            log.warning("erasure failed part-way; the queued erasure job finishes it", exc_info=True,
                        extra={"user_id": user_id})
            return None

    def erase(self, user_id: str, before: datetime | None = None) -> Erased:
        """Token caches first (deleted, and purged where the vault allows), then every row, the
        connection rows last: a failure part-way leaves the connections listed, so the retry (the
        queued erasure job) finds what is left. Safe to repeat; the second run finds nothing.

        `before` (the queued pass): when the erasure was asked for. A connection made after it is the
        user starting over, not something that raced the erasure: it stays, with everything of the
        user's that is not another connection's own, and only the connections from before go."""
        connection_ids = self._rows.connection_ids(user_id)
        newer = set(self._rows.connection_ids(user_id, made_after=before)) if before is not None else set()
        only_connections = bool(newer)
        if newer:
            connection_ids = [c for c in connection_ids if c not in newer]
            log.info("erasure pass keeps connections made after the request", extra={"user_id": user_id,
                                                                                     "kept": len(newer)})
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
    """Deletes token caches that no connection and no pending claim names, once older than a grace
    period (a cache is written a moment before the row that names it). The safety net for every
    path that could leave one behind: a crash between steps, a refresh that rewrote a cache as its
    connection was being removed."""

    def __init__(self, *, secrets_store: SecretStore, connections: ConnectionStore, claims: ClaimStore,
                 clock: Clock, grace: timedelta) -> None:
        self._secrets = secrets_store
        self._connections = connections
        self._claims = claims
        self._clock = clock
        self._grace = grace

    def run(self) -> int:
        # List the vault before reading the rows: a cache written after the listing is not judged.
        listed = list(self._secrets.list(TOKEN_CACHE_PREFIX))
        named = {c.secret_name for c in self._connections.all()} | {c.secret_name for c in self._claims.all()}
        cutoff = self._clock.now() - self._grace
        orphans = [s.name for s in listed
                   if s.name not in named and s.created_at is not None and s.created_at < cutoff]
        for name in orphans:
            self._secrets.delete(name)
            log.warning("orphaned token cache deleted", extra={"secret_name": name})
        return len(orphans)


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
                 workspace_meetings: WorkspaceMeetingStore | None = None) -> None:
        self._workspace_meetings = workspace_meetings
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
        """Everything in one run (tests, small deployments): `prune_connections` over every
        connection, then `run_tables`. The `prune_data` timer walks the connections a page per queue
        message instead (shared/services/fanout.py)."""
        dead = self.prune_connections(list(self._connections.all()))
        return replace(self.run_tables(), dead_connections=dead)

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
        """Meetings (and shared workspace meeting rows) that ended long ago, and sync rows of connections
        that no longer exist."""
        now = self._clock.now()
        meetings = 0
        for meeting in list(self._meetings.ended_before(now - self._meeting_retention)):
            try:
                self._meetings.delete(meeting)
                meetings += 1
            except Conflict:
                pass  # changed meanwhile: the next run looks again
        shared = 0
        if self._workspace_meetings is not None:
            for row in list(self._workspace_meetings.ended_before(now - self._meeting_retention)):
                try:
                    self._workspace_meetings.delete(row)
                    shared += 1
                except Conflict:
                    pass  # changed meanwhile: the next run looks again
        # Read the partitions before the connections: a connection created after this read has no
        # rows in it, so it can never be taken for an orphan.
        partitions = self._rows.connection_partitions()
        live: set[str] | None = None  # read only for rows that do not say whose they are
        orphaned = 0
        for connection_id, user_id in partitions.items():
            if user_id:
                if self._connections.get(user_id, connection_id) is not None:
                    continue
            else:
                live = live if live is not None else {c.id for c in self._connections.all()}
                if connection_id in live:
                    continue
            if user_id:
                forget_events(self._meetings, self._index, user_id, connection_id,
                              self._index.all_for(connection_id))
            self._sync_state.remove(connection_id)
            orphaned += 1
        log.info("pruned", extra={"meetings": meetings, "orphaned_connections": orphaned,
                                  "workspace_meetings": shared})
        return Pruned(meetings, 0, orphaned, shared)
