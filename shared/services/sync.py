"""Calendar sync: the timer fans out one job per connection; a job reads that calendar's changes
with Graph `calendarView/delta` and turns events with a supported join link into meetings.

One sync of a connection at a time: a run first takes a lease on the connection's sync-state row
(written with the row's ETag) and every later write of the cursor is conditional on it, so a scan and
a claim-triggered sync never interleave their delta rounds or reconcile away each other's entries."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.connections import Connection
from shared.meeting_links import find_meeting_link
from shared.ports import (
    CalendarReader,
    Conflict,
    ConnectionStore,
    DeltaPage,
    EventIndex,
    GraphUnauthorized,
    JobQueue,
    Meeting,
    MeetingStore,
    Source,
    SyncJob,
    SyncState,
    SyncStateGone,
    SyncStateStore,
    Throttled,
)
from shared.scheduling import SyncWindow, deploy_at, meeting_key, sync_window
from shared.services.accounts import ConnectionUnusable, TokenKeeper
from shared.services.meetings import attach_source, detach_source, forget_events, schedule_if_due

log = logging.getLogger(__name__)

_MAX_PAGES = 500  # a runaway nextLink chain stops here (5,000+ events in the window)
MAILBOX_CONCURRENCY = 4  # Outlook allows 4 concurrent requests per app per mailbox
SYNC_LEASE = timedelta(minutes=5)  # a crashed sync blocks its connection at most this long
BUSY_RETRY = timedelta(seconds=5)
# Occurrences in a delta round carry only these; everything else comes from their series master.
_SPARSE_KEYS = frozenset({"@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end"})


class LeaseLost(Exception):
    """Another run took this connection over (our lease lapsed): stop without writing."""


@dataclass
class SyncReport:
    outcome: str = "synced"
    full: bool = False
    pages: int = 0
    requests: int = 0  # Graph requests this run made
    upserted: int = 0
    removed: int = 0


class MailboxSlots:
    """At most `limit` Graph requests in flight per mailbox from this process (Outlook's per-mailbox
    concurrency limit); across instances Graph's own 429 + Retry-After is the backstop."""

    def __init__(self, limit: int = MAILBOX_CONCURRENCY) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    @contextmanager
    def slot(self, mailbox: str) -> Iterator[None]:
        with self._lock:
            semaphore = self._slots.setdefault(mailbox, threading.BoundedSemaphore(self._limit))
        with semaphore:
            yield


_PROCESS_SLOTS = MailboxSlots()


@dataclass
class _Run:
    """One sync run of one connection, holding its lease."""

    conn: Connection
    token: str
    owner: str
    state: SyncState
    report: SyncReport
    masters: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class SyncService:
    def __init__(
        self,
        *,
        connections: ConnectionStore,
        tokens: TokenKeeper,
        calendar: CalendarReader,
        meetings: MeetingStore,
        index: EventIndex,
        sync_state: SyncStateStore,
        jobs: JobQueue,
        clock: Clock,
        window_days: int,
        full_resync_seconds: int,
        lead_seconds: int,
        mailbox_slots: MailboxSlots | None = None,
    ) -> None:
        self._connections = connections
        self._tokens = tokens
        self._calendar = calendar
        self._meetings = meetings
        self._index = index
        self._state = sync_state
        self._jobs = jobs
        self._clock = clock
        self._window_days = window_days
        self._full_resync = timedelta(seconds=full_resync_seconds)
        self._lead = lead_seconds
        self._slots = mailbox_slots or _PROCESS_SLOTS

    def fan_out(self) -> int:
        """One sync job per active connection (spreads over instances; the timer stays short)."""
        n = 0
        for conn in self._connections.all():
            if conn.is_active:
                self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id))
                n += 1
        return n

    def sync(self, job: SyncJob) -> SyncReport:
        conn = self._connections.get(job.user_id, job.connection_id)
        if conn is None or not conn.is_active:
            return SyncReport(outcome="skipped")
        owner = uuid.uuid4().hex
        state = self._claim(conn, owner)
        if state is None:
            # Another run holds this connection and reads the same calendar. A sync asked for a reason
            # other than the periodic scan looks once more after a short while, in case it came late.
            if job.reason not in ("scheduled", "busy", "deploy"):
                self._jobs.enqueue_sync(replace(job, reason="busy"), BUSY_RETRY)
            log.info("sync skipped: another run holds the connection", extra={"connection_id": conn.id})
            return SyncReport(outcome="busy")
        try:
            conn, token = self._tokens.access_token(conn)
        except ConnectionUnusable as exc:
            self._release(state)
            return SyncReport(outcome=f"no_token:{exc}")
        run = _Run(conn=conn, token=token.token, owner=owner, state=state, report=SyncReport())
        try:
            self._run(run, allow_restart=True)
        except Throttled as exc:
            run.report.outcome = "throttled"
            self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id, reason="throttled"), exc.retry_after)
            log.warning("sync throttled, resuming later", extra={"connection_id": conn.id})
        except LeaseLost:
            run.report.outcome = "lease_lost"
            log.warning("sync lost its lease to another run", extra={"connection_id": conn.id})
        except GraphUnauthorized:
            # A fresh token refused (consent withdrawn, mailbox gone): retrying the message would
            # only repeat it. The next refresh classifies the grant; the next scan tries again.
            self._release(run.state)
            run.report.outcome = "graph_unauthorized"
            log.warning("Graph refused the connection's token", extra={"connection_id": conn.id})
            return run.report
        except BaseException:
            self._release(run.state)
            raise
        if self._connections.get(conn.user_id, conn.id) is None:
            self._forget(conn)
            run.report.outcome = "disconnected"
            return run.report
        self._schedule_due(conn.user_id)
        report = run.report
        log.info("sync %s", report.outcome, extra={"connection_id": conn.id, "pages": report.pages,
                                                    "requests": report.requests, "upserted": report.upserted,
                                                    "removed": report.removed})
        return report

    def freshen(self, meeting: Meeting) -> None:
        """Right before an agent is deployed: read the latest changes of each calendar holding the
        meeting (a delta round: usually one Graph request), so one cancelled, declined, moved or
        deleted since the last scan gets no agent. A failure here never stops the deployment: the
        stored state is then what the deployer goes by."""
        for source in meeting.sources:
            try:
                self.sync(SyncJob(meeting.user_id, source.connection_id, reason="deploy"))
            except Exception:
                log.warning("pre-deployment sync failed", exc_info=True,
                            extra={"connection_id": source.connection_id, "meeting_id": meeting.key})

    def _forget(self, conn: Connection) -> None:
        """The connection was disconnected while this run read its calendar: undo what the run
        attached after the disconnect had cleaned up, so no meeting shows a removed account."""
        forget_events(self._meetings, self._index, conn.user_id, conn.id, self._index.all_for(conn.id))
        self._state.remove(conn.id)
        log.info("sync raced a disconnect: cleaned up", extra={"connection_id": conn.id})

    # ------------------------------------------------------------------ lease
    def _claim(self, conn: Connection, owner: str) -> SyncState | None:
        now = self._clock.now()
        current = self._state.get(conn.id)
        if current is not None and current.lease_owner and current.lease_until and current.lease_until > now:
            return None
        if current is None:
            window = sync_window(now, self._window_days)
            current = SyncState(conn.id, window.start, window.end, delta_link=None, full_sync_at=None)
        try:
            return self._state.put(replace(current, lease_owner=owner, lease_until=now + SYNC_LEASE))
        except Conflict:
            return None

    def _save(self, run: _Run, state: SyncState) -> None:
        try:
            run.state = self._state.put(state)
        except Conflict:
            raise LeaseLost(run.conn.id) from None

    def _renew(self, run: _Run) -> None:
        now = self._clock.now()
        if run.state.lease_until is None or run.state.lease_until - now < SYNC_LEASE / 2:
            self._save(run, replace(run.state, lease_until=now + SYNC_LEASE))

    def _release(self, state: SyncState) -> None:
        try:
            self._state.put(replace(state, lease_owner="", lease_until=None))
        except Conflict:
            pass

    # ------------------------------------------------------------------ delta rounds
    def _run(self, run: _Run, *, allow_restart: bool) -> None:
        now = self._clock.now()
        window = sync_window(now, self._window_days)
        state = run.state
        if state.resume_link is not None and state.window_start == window.start:
            full = state.delta_link is None
            generation = state.generation
            link: str | None = state.resume_link
        else:
            full = (
                state.delta_link is None
                or state.window_start != window.start
                or state.full_sync_at is None
                or now - state.full_sync_at >= self._full_resync
            )
            generation = uuid.uuid4().hex if full else state.generation
            link = None if full else state.delta_link
        run.report.full = full
        try:
            delta_link = self._pages(run, window, link, generation, full)
        except SyncStateGone:
            if not allow_restart:
                raise
            log.info("delta state gone, full resync", extra={"connection_id": run.conn.id})
            self._save(run, replace(run.state, delta_link=None, resume_link=None, full_sync_at=None))
            self._run(run, allow_restart=False)
            return
        if full:
            unseen = self._index.all_for(run.conn.id, not_generation=generation)
            run.report.removed += forget_events(self._meetings, self._index, run.conn.user_id, run.conn.id, unseen)
        self._save(run, replace(
            run.state, window_start=window.start, window_end=window.end, delta_link=delta_link,
            full_sync_at=now if full else state.full_sync_at, resume_link=None, generation=generation,
            lease_owner="", lease_until=None,
        ))

    def _pages(self, run: _Run, window: SyncWindow, link: str | None, generation: str, full: bool) -> str:
        for _ in range(_MAX_PAGES):
            try:
                with self._slots.slot(run.conn.home_account_id):
                    run.report.requests += 1
                    page: DeltaPage = (
                        self._calendar.delta_first(run.token, window) if link is None
                        else self._calendar.delta_next(run.token, link)
                    )
                for event in page.events:  # may read a series master: can be throttled too
                    self._apply(run, event, generation)
            except Throttled:
                # Keep our place: the next run continues from this page (applying it again is harmless),
                # not from the start of the round.
                self._save(run, replace(
                    run.state, window_start=window.start, window_end=window.end,
                    delta_link=None if full else run.state.delta_link, resume_link=link, generation=generation,
                    lease_owner="", lease_until=None,
                ))
                raise
            run.report.pages += 1
            if page.next_link:
                link = page.next_link
                self._renew(run)
                continue
            if page.delta_link:
                return page.delta_link
            raise SyncStateGone("delta round ended without a deltaLink")
        raise SyncStateGone("too many pages")

    # ------------------------------------------------------------------ events -> meetings
    def _apply(self, run: _Run, event: dict[str, Any], generation: str) -> None:
        conn = run.conn
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            return
        if event.get("type") == "seriesMaster" and "@removed" not in event:
            run.masters[event_id] = event  # its occurrences (same page: Graph never splits a series) need it
            return
        full_event = self._with_series(run, event)
        candidate = None if full_event is None or _skipped(full_event) else self._candidate(conn, full_event)
        previous = self._index.get(conn.id, event_id)
        if candidate is None:
            if previous is not None:
                detach_source(self._meetings, conn.user_id, previous, conn.id)
                self._index.remove(conn.id, event_id)
                run.report.removed += 1
            return
        if previous is not None and previous != candidate.key:
            # Rescheduled or link changed: the old meeting (and its pending deployment) lets go.
            detach_source(self._meetings, conn.user_id, previous, conn.id)
        attach_source(self._meetings, self._jobs, self._clock.now(), candidate)
        self._index.put(conn.id, event_id, conn.user_id, candidate.key, generation)
        run.report.upserted += 1

    def _with_series(self, run: _Run, event: dict[str, Any]) -> dict[str, Any] | None:
        """An occurrence as a whole event: delta lists plain occurrences with only id, type,
        seriesMasterId, start and end, so subject, join link, response and the rest come from the
        series master (in the same round, or read once by id). None when the series is gone."""
        master_id = event.get("seriesMasterId")
        if "@removed" in event or not isinstance(master_id, str) or not master_id:
            return event
        sparse = set(event) <= _SPARSE_KEYS
        master = run.masters.get(master_id)
        if master is None and sparse and master_id not in run.masters:
            with self._slots.slot(run.conn.home_account_id):
                run.report.requests += 1
                master = self._calendar.event(run.token, master_id)
            run.masters[master_id] = master
        if master is None:
            return None if sparse else event
        merged = {k: v for k, v in master.items() if k not in ("recurrence", "@odata.etag")}
        merged.update(event)
        merged["type"] = event.get("type") or "occurrence"
        return merged

    def _candidate(self, conn: Connection, event: dict[str, Any]) -> Meeting | None:
        link = find_meeting_link(event)
        if link is None:
            return None
        start = parse_graph_time(event.get("start"))
        end = parse_graph_time(event.get("end"))
        if start is None or end is None or end <= self._clock.now():
            return None
        key = meeting_key(link.key, start)
        return Meeting(
            user_id=conn.user_id,
            key=key,
            link_key=link.key,
            title=str(event.get("subject") or "Untitled meeting"),
            start=start,
            end=end,
            platform=str(getattr(link.platform, "value", link.platform)),
            join_url=link.url,
            sources=(Source(conn.id, str(event["id"]), conn.email),),
            deploy_at=deploy_at(start, self._lead),
        )

    def _schedule_due(self, user_id: str) -> None:
        now = self._clock.now()
        for meeting in self._meetings.list_for_user(user_id, ending_after=now):
            if meeting.enqueued_for is None:
                schedule_if_due(self._meetings, self._jobs, now, meeting)


def _skipped(event: dict[str, Any]) -> bool:
    """Removed, cancelled, declined, all-day events and series masters get no agent."""
    if "@removed" in event or event.get("isCancelled") or event.get("isAllDay"):
        return True
    if event.get("type") == "seriesMaster":
        return True
    status = event.get("responseStatus")
    return isinstance(status, dict) and status.get("response") == "declined"


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_graph_time(value: object) -> datetime | None:
    """Graph `dateTimeTimeZone` (requested in UTC via Prefer: outlook.timezone="UTC")."""
    if not isinstance(value, dict):
        return None
    raw = value.get("dateTime")
    tz = str(value.get("timeZone") or "UTC")
    if not isinstance(raw, str) or tz.upper() not in ("UTC", "ETC/UTC", "COORDINATED UNIVERSAL TIME"):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", raw.rstrip("Z")))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
