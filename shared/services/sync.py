"""Calendar sync: the timer fans out one job per connection; a job reads that calendar's changes
with Graph `calendarView/delta` and turns events with a supported join link into meetings.

One sync of a connection at a time: a run first takes a lease on the connection's sync-state row
(written with the row's ETag) and every later write of the cursor is conditional on it, so a scan and
a claim-triggered sync never interleave their delta rounds or reconcile away each other's entries.

Requested syncs (a notification, "sync now") are level-triggered, bounded and owned:
- asking records *that* a change was announced (`SyncStateStore.announce`, with its time) and queues
  a job only when none is queued or running (the "queued" marker): duplicates collapse;
- every run, whatever asked for it, ends by comparing the latest announcement with the start of the
  delta round it completed: one announced after that start (a notification that met the running
  sync) queues one follow-up sync, so the change is read, never dropped; otherwise the marker goes;
- a job that finds another run holding the connection leaves the change to it (and looks once more
  when that run's lease would lapse, in case it crashed); a job whose announcement a later round
  already read does nothing (`up_to_date`);
- a requested job that meets a passing failure (token endpoint down, a raced row) retries with capped
  back-off (`SYNC_RETRY`: 30 s doubling to 5 min, 6 attempts) as one chain per connection, and when
  the budget is used up gives up and says so (ERROR `sync_gave_up`; the card already shows the
  token warning)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.calendar_events import (
    MAX_TITLE_CHARS,
    NotAMeeting,
    UnusableEvent,
    copy_of,
    is_series_master_or_removed,
    parse_graph_time,
    with_series,
)
from shared.calendars import without
from shared.clock import Clock
from shared.connections import REASONS, Connection
from shared.ports import (
    CalendarGone,
    CalendarReader,
    CalendarSelection,
    CalendarSelectionStore,
    CalendarUnavailable,
    Conflict,
    ConnectionStore,
    DeltaPage,
    EventIndex,
    GraphError,
    GraphUnauthorized,
    JobQueue,
    Meeting,
    MeetingStore,
    RowTooLarge,
    Source,
    SyncJob,
    SyncOutcome,
    SyncState,
    SyncStateGone,
    SyncStateStore,
    Throttled,
)
from shared.retry import Backoff
from shared.scheduling import SyncWindow, deploy_at, meeting_key, sync_window
from shared.services.accounts import ConnectionUnusable, TokenKeeper
from shared.services.health import ConnectionHealth
from shared.services.meeting_lifecycle import JoinContext, MeetingLifecycle
from shared.services.meetings import (
    ANY_CALENDAR,
    attach_source,
    detach_calendar,
    detach_one,
    detach_source,
    forget_events,
)

log = logging.getLogger(__name__)

_MAX_PAGES = 500  # a runaway nextLink chain stops here (5,000+ events in the window)
MAILBOX_CONCURRENCY = 4  # Outlook allows 4 concurrent requests per app per mailbox
SYNC_LEASE = timedelta(minutes=5)  # a crashed sync blocks its connection at most this long (the floor)
# A requested sync that met a passing failure tries again after 30 s, 60 s, 120 s, 240 s, 300 s, then
# gives up (about 12.5 minutes in all; the periodic scan goes on reading the calendar afterwards).
SYNC_RETRY = Backoff(base=timedelta(seconds=30), cap=timedelta(minutes=5), attempts=6)


def sync_lease(longest_request: timedelta) -> timedelta:
    """How long a sync's lease lasts, from the longest one Graph request may take (the adapter's
    attempts, timeouts and inline waits). The lease is renewed before every Graph request and after
    every event once less than half of it is left, so half a lease must outlast any one request (and
    the work of one event): a slow page never lets the lease lapse while the run still works."""
    return max(SYNC_LEASE, 2 * longest_request + timedelta(seconds=30))


MANUAL = "manual"  # a sync job asked for with "sync now"
NOTIFIED = "notified"  # asked for by a Graph change or lifecycle notification (shared/services/notifications.py)
BUSY = "busy"  # a requested job looking again once a run that held the connection should be done
# Asked for by the `read_secondary_calendars` walk: Graph notifies changes in the default calendar only
# (FACTS.md), so a connection reading other calendars has them read at least this often.
SECONDARY_CALENDARS = "secondary_calendars"
REQUESTED = frozenset({MANUAL, NOTIFIED, BUSY, SECONDARY_CALENDARS})  # jobs that own the connection's "queued" marker
# A "queued" marker older than this (its job lost) no longer holds; a retry chain refreshes it at every
# step, and its longest step (SYNC_RETRY's cap, or a busy look after SYNC_LEASE) is shorter.
SYNC_NOW_MARK = timedelta(minutes=10)
# Outcomes after which a requested sync tries again (with back-off, within SYNC_RETRY's budget).
_PASSING = frozenset({SyncOutcome.NO_TOKEN_TRANSIENT, SyncOutcome.NO_TOKEN_SERVICE, SyncOutcome.RACED})
# Occurrences in a delta round carry only these; everything else comes from their series master.
_SPARSE_KEYS = frozenset({"@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end"})


# What one event's odd data can raise (shapes, values, a row the store refuses as too large).
_EVENT_DATA_ERRORS = (UnusableEvent, RowTooLarge, KeyError, TypeError, AttributeError, OverflowError,
                      UnicodeError, RecursionError)


class LeaseLost(Exception):
    """Another run took this connection over (our lease lapsed): stop without writing."""


@dataclass
class SyncReport:
    outcome: SyncOutcome = SyncOutcome.SYNCED
    full: bool = False
    pages: int = 0
    requests: int = 0  # Graph requests this run made
    upserted: int = 0
    removed: int = 0
    skipped: int = 0  # events that could not be turned into meetings (logged with ids)
    calendar_view_requests: int = 0  # of `requests`: reading selected calendars other than the default one


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
    changed_masters: set[str] = field(default_factory=set)  # series masters an incremental round saw change
    joins: JoinContext | None = None  # the user's rules, choices and Active calendars, read once per run
    selection: CalendarSelection | None = None  # which calendars are read (None stored: the default one)
    known: dict[str, Meeting] = field(default_factory=dict)  # the user's meetings by key (see _known)
    known_loaded: bool = False


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
        lifecycle: MeetingLifecycle,
        mailbox_slots: MailboxSlots | None = None,
        health: ConnectionHealth,
        calendars: CalendarSelectionStore | None = None,
        lease: timedelta = SYNC_LEASE,
    ) -> None:
        self._lease = lease
        self._health = health
        self._calendars = calendars
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
        self._lifecycle = lifecycle

    def sync_now(self, user_id: str, connection_id: str) -> str:
        """"Sync now" from the page: "queued" (a sync job is queued, by this call or an earlier one
        still waiting: repeated calls queue nothing more), "not_found", or "connection_error"."""
        conn = self._connections.get(user_id, connection_id)
        if conn is None:
            return "not_found"
        if not conn.is_active:
            return "connection_error"
        request_sync(self._state, self._jobs, self._clock.now(), user_id, conn.id, MANUAL)
        return "queued"

    def sync(self, job: SyncJob) -> SyncReport:
        conn = self._connections.get(job.user_id, job.connection_id)
        if conn is None or not conn.is_active:
            if job.reason in REQUESTED:
                self._state.clear_queued(job.connection_id)  # nothing will read it: the next request queues
            return SyncReport(outcome=SyncOutcome.SKIPPED)
        if job.reason in REQUESTED and self._up_to_date(conn.id):
            # A duplicate: what was announced, a round that started later has read.
            self._settle(conn, self._read_from(conn.id))
            return SyncReport(outcome=SyncOutcome.UP_TO_DATE)
        owner = uuid.uuid4().hex
        state = self._claim(conn, owner)
        if state is None:
            # Another run holds this connection: it compares the announcements with its round before
            # it lets go, so the change is read. Look once more when its lease would lapse (it died).
            if job.reason not in ("scheduled", "deploy", "throttled"):
                held = self._state.get(conn.id)
                until = held.lease_until if held is not None and held.lease_until else self._clock.now()
                wait = min(max(until - self._clock.now(), timedelta(0)) + timedelta(seconds=1), self._lease)
                if job.reason in REQUESTED:
                    self._state.touch_queued(conn.id, self._clock.now())
                self._jobs.enqueue_sync(replace(job, reason=BUSY), wait)
            log.info("sync skipped: another run holds the connection", extra={"connection_id": conn.id})
            return SyncReport(outcome=SyncOutcome.BUSY)
        try:
            conn, token = self._tokens.access_token(conn)
        except ConnectionUnusable as exc:
            self._release(state)
            return SyncReport(outcome=self._after_failure(conn, job, _no_token(str(exc))))
        except Conflict:
            # The row changed while the token was taken (a refresh, a reconnect): read it again soon.
            self._release(state)
            return SyncReport(outcome=self._after_failure(conn, job, SyncOutcome.RACED))
        except BaseException:
            self._release(state)  # Key Vault or storage down: never keep the lease for minutes
            raise
        run = _Run(conn=conn, token=token.token, owner=owner, state=state, report=SyncReport())
        try:
            self._run(run, allow_restart=True)
        except Throttled as exc:
            self._release(run.state)  # (released already when the page loop kept its place)
            run.report.outcome = SyncOutcome.THROTTLED
            if job.reason in REQUESTED:
                self._state.touch_queued(conn.id, self._clock.now())  # the throttled job carries the request
            self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id, reason="throttled"), exc.retry_after)
            log.warning("sync throttled, resuming later", extra={"connection_id": conn.id})
            # Throttled or 5xx past the inline retries: not synced. If it lasts, the card says so.
            self._sync_health(conn, ok=False)
        except LeaseLost:
            run.report.outcome = SyncOutcome.LEASE_LOST
            log.warning("sync lost its lease to another run", extra={"connection_id": conn.id})
        except GraphUnauthorized:
            # A token Graph refused: redeem the refresh token now, so a withdrawn grant shows as Error
            # (and the user is told) at once rather than at the next due refresh. Retrying the
            # message would only repeat the refusal.
            self._release(run.state)
            run.report.outcome = SyncOutcome.GRAPH_UNAUTHORIZED
            log.warning("Graph refused the connection's token", extra={"connection_id": conn.id})
            self._sync_health(conn, ok=False)
            self._reclassify(conn)
            self._state.clear_queued(conn.id)
            return run.report
        except CalendarUnavailable as exc:
            # Permanent for this account until its admin acts: Error with the reason, user told.
            self._release(run.state)
            run.report.outcome = SyncOutcome.CALENDAR_UNAVAILABLE
            self._fail_calendar(conn, exc.code)
            self._state.clear_queued(conn.id)
            return run.report
        except BaseException:
            self._release(run.state)
            self._sync_health(conn, ok=False)
            raise
        if self._connections.get(conn.user_id, conn.id) is None:
            self._forget(conn)
            run.report.outcome = SyncOutcome.DISCONNECTED
            return run.report
        self._schedule_due(conn.user_id)
        if run.report.outcome is SyncOutcome.SYNCED:
            self._sync_health(conn, ok=True)
            self._settle(conn, run.state.synced_at)
        report = run.report
        log.info("sync %s", report.outcome, extra={"connection_id": conn.id, "pages": report.pages,
                                                    "requests": report.requests, "upserted": report.upserted,
                                                    "removed": report.removed,
                                                    "calendar_view_requests": report.calendar_view_requests})
        return report

    # ------------------------------------------------------------------ requested syncs
    def _read_from(self, connection_id: str) -> datetime | None:
        """When the last completed delta round of the connection started (what it read is up to date)."""
        state = self._state.get(connection_id)
        return state.synced_at if state is not None else None

    def _up_to_date(self, connection_id: str) -> bool:
        announced = self._state.announced(connection_id)
        read_from = self._read_from(connection_id)
        return announced is not None and read_from is not None and announced <= read_from

    def _settle(self, conn: Connection, read_from: datetime | None) -> None:
        """A round that started at `read_from` is complete: if a change was announced after that (a
        notification that met this run), one follow-up sync reads it (the "queued" marker stays);
        otherwise the marker goes, so the next notification queues again. A notification landing
        between the check and the clear saw the marker and queued nothing: checked once more."""
        now = self._clock.now()

        def pending() -> bool:
            announced = self._state.announced(conn.id)
            return announced is not None and (read_from is None or announced > read_from)

        if pending():
            self._state.touch_queued(conn.id, now)
            self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id, reason=NOTIFIED))
            log.info("a change announced during the sync: one more round queued", extra={"connection_id": conn.id})
            return
        self._state.clear_queued(conn.id)
        if pending() and self._state.mark_queued(conn.id, now, SYNC_NOW_MARK):
            self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id, reason=NOTIFIED))

    def _after_failure(self, conn: Connection, job: SyncJob, outcome: SyncOutcome) -> SyncOutcome:
        """A run that could not read the calendar. A requested one meeting a passing failure retries
        with back-off as the one chain of this connection (the marker stays, so notifications only
        announce); past the budget it gives up and tells the operator. The periodic scan (and a
        deploy-time read) never retry here: the next scan is their retry. A connection removed
        meanwhile (its token cache went first: a disconnect or an erasure raced this run) is forgotten,
        with the sync state this run's claim may have written after the removal had cleaned up."""
        if self._connections.get(conn.user_id, conn.id) is None:
            self._forget(conn)
            return SyncOutcome.DISCONNECTED
        if job.reason not in REQUESTED:
            return outcome
        ctx = {"connection_id": conn.id, "attempt": job.attempt, "sync_outcome": str(outcome)}
        if outcome not in _PASSING:
            self._state.clear_queued(conn.id)  # the user or their admin must act; the card says so
            return outcome
        if SYNC_RETRY.gives_up(job.attempt):
            self._state.clear_queued(conn.id)
            log.error("sync_gave_up: a requested sync kept failing (%s) after %d attempts; the periodic "
                      "scan reads the calendar next", outcome, job.attempt, extra={**ctx, "event": "sync_gave_up"})
            return SyncOutcome.GAVE_UP
        self._state.touch_queued(conn.id, self._clock.now())
        self._jobs.enqueue_sync(replace(job, attempt=job.attempt + 1), SYNC_RETRY.delay(job.attempt))
        log.info("requested sync retries later", extra=ctx)
        return outcome

    def freshen(self, meeting: Meeting) -> None:
        """Right before an agent is deployed: read the latest changes of each calendar holding the
        meeting (a delta round: usually one Graph request), then the event itself by id, so one
        cancelled, declined, moved or deleted since the last scan gets no agent.

        Fails closed on an answer that the event is gone: 404 `ErrorItemNotFound`, 400
        `ErrorCalendarOccurrenceIsDeletedFromRecurrence`, any other refusal of that id, or anything
        but the event itself (FACTS, "Deleted occurrences, again": neither answer is documented) — the
        meeting lets go of that calendar's copy, and when none is left the user is told why (status
        event agent.failed, reason `event_deleted`). Fails open when Graph cannot be reached
        (throttled, 5xx, timeout, a token that cannot be had now): the agent goes, and operators are
        told (`deploy_unverified`), so an outage never strands every recurring meeting."""
        let_go = False
        for source in meeting.sources:
            try:
                self.sync(SyncJob(meeting.user_id, source.connection_id, reason="deploy"))
            except Exception as exc:
                log.warning("pre-deployment sync failed: %s", type(exc).__name__,
                            extra={"connection_id": source.connection_id, "meeting_id": meeting.key})
            try:
                let_go |= self._confirm(meeting.user_id, source.connection_id, source.event_id,
                                        source.calendar_id, meeting.key)
            except Exception as exc:
                log.error("deploy_unverified: the event behind the meeting could not be read (%s); the agent "
                          "goes on what was stored", type(exc).__name__,
                          extra={"connection_id": source.connection_id, "meeting_id": meeting.key,
                                 "event": "deploy_unverified"})
        if let_go and self._meetings.get(meeting.user_id, meeting.key) is None:
            # Graph did not give the event back and no other calendar holds the meeting: no agent, and
            # the user hears why (a delta round's own removal is an ordinary cancellation: not told).
            self._health.agent_failed(meeting, "event_deleted")

    def _confirm(self, user_id: str, connection_id: str, event_id: str, calendar_id: str | None = None,
                 meeting_key: str = "") -> bool:
        """Read the one event behind the meeting by id: a delta round can miss a deleted occurrence
        (no `@removed`), and `GET /me/events/{id}` of one answers 404 ErrorItemNotFound or 400
        ErrorCalendarOccurrenceIsDeletedFromRecurrence (FACTS, "Deleted occurrences"). Gone (or an
        answer that is not this event) → the meeting lets go of it; present → applied as delta would
        (cancelled, declined, moved). One Graph request per calendar holding the meeting. Raises
        when Graph cannot be reached (Throttled, GraphError 5xx, GraphUnauthorized...). True when the
        meeting let go of the event."""
        conn = self._connections.get(user_id, connection_id)
        if conn is None or not conn.is_active:
            return False
        conn, token = self._tokens.access_token(conn)
        with self._slots.slot(conn.home_account_id):
            try:
                event = self._calendar.event(token.token, event_id)
            except GraphError as exc:
                if not _refuses_the_id(exc):
                    raise
                log.info("Graph refused the event's id: %s", exc.code or exc.status, extra={"connection_id": conn.id})
                event = None
        if event is not None and (event.get("id") != event_id or "@removed" in event):
            log.warning("Graph answered something else for the event's id: taken as gone",
                        extra={"connection_id": conn.id})
            event = None
        if event is None:
            # Gone: the meeting lets go of it whoever holds the calendar (removing is always safe).
            log.info("event behind a meeting is gone", extra={"connection_id": conn.id})
            held = self._holds(conn.user_id, meeting_key, conn.id, event_id)
            if calendar_id is not None:
                # A selected calendar other than the default one (not indexed: read whole each sync).
                detach_one(self._meetings, conn.user_id, meeting_key, Source(conn.id, event_id, conn.email))
                return held
            indexed = self._index.get(conn.id, event_id)
            if indexed is not None:
                forget_events(self._meetings, self._index, conn.user_id, conn.id, {event_id: indexed}, None)
            elif meeting_key:
                detach_one(self._meetings, conn.user_id, meeting_key, Source(conn.id, event_id, conn.email))
            return held
        if calendar_id is not None:
            return False  # present: the sync just above read that calendar whole
        # Still there: apply it as delta would, but only while holding the connection's lease, so the
        # index entry carries the generation a concurrent full round would otherwise sweep away.
        owner = uuid.uuid4().hex
        state = self._claim(conn, owner)
        if state is None:
            return False  # a sync is reading this calendar right now: it applies the latest itself
        run = _Run(conn=conn, token=token.token, owner=owner, state=state, report=SyncReport())
        try:
            self._apply(run, event, state.generation)
        finally:
            self._release(run.state)
        return False

    def _holds(self, user_id: str, meeting_key: str, connection_id: str, event_id: str) -> bool:
        """Whether the meeting still takes this calendar event as one of its copies."""
        meeting = self._meetings.get(user_id, meeting_key) if meeting_key else None
        return meeting is not None and any(s.connection_id == connection_id and s.event_id == event_id
                                           for s in meeting.sources)

    def _reclassify(self, conn: Connection) -> None:
        current = self._connections.get(conn.user_id, conn.id)
        if current is None or not current.is_active:
            return
        try:
            self._tokens.access_token(current, force_refresh=True)
        except (ConnectionUnusable, Conflict):
            pass  # classified and recorded (or raced with another write: the next run looks again)

    def _sync_health(self, conn: Connection, *, ok: bool) -> None:
        """Remember since when this connection's syncs keep failing, so the card shows a warning if it
        lasts (Connection.warning); cleared by the next sync that succeeds. Best effort: a conflict
        with a concurrent write is left to the next run."""
        if ok == (conn.sync_failing_since is None):
            return
        try:
            current = self._connections.get(conn.user_id, conn.id)
            if current is not None and current.is_active:
                self._connections.update(current.synced(self._clock.now(), ok))
        except Exception as exc:
            log.info("sync health not recorded: %s", type(exc).__name__, extra={"connection_id": conn.id})

    def _fail_calendar(self, conn: Connection, code: str) -> None:
        """Error `calendar_unavailable`; the user is told (ConnectionHealth)."""
        for _ in range(3):
            current = self._connections.get(conn.user_id, conn.id)
            if current is None or not current.is_active:
                return
            try:
                self._health.fail(current, REASONS["calendar_unavailable"], code=code)
                return
            except Conflict:
                continue

    def _forget(self, conn: Connection) -> None:
        """The connection was disconnected while this run read its calendar: undo what the run
        attached after the disconnect had cleaned up, so no meeting shows a removed account."""
        forget_events(self._meetings, self._index, conn.user_id, conn.id, self._index.all_for(conn.id))
        detach_calendar(self._meetings, conn.user_id, conn.id, ANY_CALENDAR, self._clock.now())
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
            return self._state.put(replace(current, lease_owner=owner, lease_until=now + self._lease,
                                           user_id=conn.user_id))
        except Conflict:
            return None

    def _save(self, run: _Run, state: SyncState) -> None:
        try:
            run.state = self._state.put(state)
        except Conflict:
            raise LeaseLost(run.conn.id) from None

    def _renew(self, run: _Run) -> None:
        now = self._clock.now()
        if run.state.lease_until is None or run.state.lease_until - now < self._lease / 2:
            self._save(run, replace(run.state, lease_until=now + self._lease))

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
        run.selection = self._calendars.get(run.conn.id) if self._calendars is not None else None
        if run.selection is not None and not run.selection.default_selected:
            # The default calendar is not read: its meetings let go, and its delta cursor goes, so
            # selecting it again starts with a full round.
            unseen = self._index.all_for(run.conn.id)
            run.report.removed += forget_events(self._meetings, self._index, run.conn.user_id, run.conn.id, unseen,
                                                None)
            run.report.removed += detach_calendar(self._meetings, run.conn.user_id, run.conn.id, None, now)
            self._read_other_calendars(run, window)
            self._save(run, replace(run.state, window_start=window.start, window_end=window.end, delta_link=None,
                                    resume_link=None, full_sync_at=None, lease_owner="", lease_until=None,
                                    synced_at=now))
            return
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
            self._reconcile_series(run, window)
        except SyncStateGone:
            if not allow_restart:
                raise
            log.info("delta state gone, full resync", extra={"connection_id": run.conn.id})
            self._save(run, replace(run.state, delta_link=None, resume_link=None, full_sync_at=None))
            self._run(run, allow_restart=False)
            return
        if full:
            unseen = self._index.all_for(run.conn.id, not_generation=generation)
            run.report.removed += forget_events(self._meetings, self._index, run.conn.user_id, run.conn.id, unseen,
                                                None)
        self._read_other_calendars(run, window)
        self._save(run, replace(
            run.state, window_start=window.start, window_end=window.end, delta_link=delta_link,
            full_sync_at=now if full else state.full_sync_at, resume_link=None, generation=generation,
            lease_owner="", lease_until=None, synced_at=now,
        ))

    def _pages(self, run: _Run, window: SyncWindow, link: str | None, generation: str, full: bool) -> str:
        for _ in range(_MAX_PAGES):
            self._renew(run)  # half a lease outlasts the slowest request (sync_lease)
            try:
                with self._slots.slot(run.conn.home_account_id):
                    run.report.requests += 1
                    page: DeltaPage = (
                        self._calendar.delta_first(run.token, window) if link is None
                        else self._calendar.delta_next(run.token, link)
                    )
                for event in page.events:  # may read a series master: can be throttled too
                    self._renew(run)  # a long page of slow events never outlives the lease
                    self._apply_isolated(run, event, generation, full)
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
                continue
            if page.delta_link:
                return page.delta_link
            raise SyncStateGone("delta round ended without a deltaLink")
        raise SyncStateGone("too many pages")

    # ------------------------------------------------------------------ events -> meetings
    def _apply_isolated(self, run: _Run, event: dict[str, Any], generation: str, full: bool) -> None:
        """One event never stops a calendar: an event that cannot be turned into a meeting (odd
        shape, absurd values, a store that refuses it) is skipped, counted and logged with its ids
        only; the round goes on. What concerns the whole calendar (throttling, a lost lease, a
        refused token, a mailbox Graph cannot read, a delta state gone) still ends the round."""
        try:
            self._apply(run, event, generation)
            # A changed master may hide deleted occurrences; a removed one (Graph sends no @removed
            # for its occurrences) takes them all. Either way its live instances are read once.
            if not full and (event.get("type") == "seriesMaster" or "@removed" in event):
                run.changed_masters.add(str(event.get("id")))
        except _EVENT_DATA_ERRORS as exc:
            # Only errors of the event's own data; a store or Graph failure ends the round unsaved,
            # so the delta link never moves past a change that was not stored.
            run.report.skipped += 1
            event_id = event.get("id")
            log.warning("event skipped: %s", type(exc).__name__,
                        extra={"connection_id": run.conn.id,
                               "event_id": event_id[:200] if isinstance(event_id, str) else None})

    def _reconcile_series(self, run: _Run, window: SyncWindow) -> None:
        """Graph is reported to send no `@removed` for one deleted occurrence, only its series master
        changed (FACTS, "Deleted occurrences"): for each master an incremental round saw change,
        read its live occurrences in the window once, and let go of indexed occurrences that are no
        longer among them. A series gone altogether lets go of all of them."""
        if not run.changed_masters:
            return
        owned: dict[str, list[tuple[str, str]]] = {}
        for meeting in self._meetings.list_for_user(run.conn.user_id, ending_after=self._clock.now()):
            for source in meeting.sources:
                if (source.connection_id == run.conn.id and source.calendar_id is None
                        and source.series_id in run.changed_masters):
                    owned.setdefault(source.series_id, []).append((source.event_id, meeting.key))
        for master_id, entries in owned.items():
            try:
                with self._slots.slot(run.conn.home_account_id):
                    run.report.requests += 1
                    live = self._calendar.instances(run.token, master_id, window)
            except GraphError as exc:
                # One series Graph will not list must not block the calendar: skipped, counted, logged;
                # the deployer's by-id check and the daily full resync still catch a deleted occurrence.
                run.report.skipped += 1
                log.warning("series instances not read: %s", exc.code or exc.status,
                            extra={"connection_id": run.conn.id})
                continue
            alive = {str(e.get("id")) for e in live or [] if not e.get("isCancelled")}
            gone = {event_id: key for event_id, key in entries if event_id not in alive}
            run.report.removed += forget_events(self._meetings, self._index, run.conn.user_id, run.conn.id, gone,
                                                None)
            if gone:
                log.info("occurrences deleted without @removed: %d", len(gone),
                         extra={"connection_id": run.conn.id})

    # ------------------------------------------------------------------ other selected calendars
    def _read_other_calendars(self, run: _Run, window: SyncWindow) -> None:
        """Selected calendars other than the default one, read whole with calendarView (v1.0 has no
        delta and documents no change notifications for them: FACTS, "Non-default calendars"): on every
        sync of the connection, i.e. the periodic scan, "sync now", and any change notification for the
        account. Each costs one Graph request per page (`calendar_view_requests`). Meetings are attached
        as the delta round attaches them; the calendar's events not read this time let go. A calendar
        Graph no longer has (deleted in Outlook) leaves the selection."""
        if run.selection is None:
            return
        now = self._clock.now()
        for calendar in run.selection.secondary:
            try:
                with self._slots.slot(run.conn.home_account_id):
                    events, made = self._calendar.calendar_view(run.token, calendar.id, window)
            except CalendarGone:
                run.report.requests += 1
                run.report.calendar_view_requests += 1
                self._calendar_gone(run, calendar.id)
                continue
            run.report.requests += made
            run.report.calendar_view_requests += made
            keep: dict[str, str] = {}
            for event in events:
                try:
                    key = self._apply_other(run, event, calendar.id)
                except _EVENT_DATA_ERRORS as exc:
                    run.report.skipped += 1
                    log.warning("event skipped: %s", type(exc).__name__, extra={"connection_id": run.conn.id})
                    continue
                if key is not None:
                    keep[str(event["id"])] = key
            run.report.removed += detach_calendar(self._meetings, run.conn.user_id, run.conn.id, calendar.id,
                                                  now, keep)
            self._renew(run)

    def _apply_other(self, run: _Run, event: dict[str, Any], calendar_id: str) -> str | None:
        """One event of a selected calendar other than the default one: the key of the meeting it feeds."""
        if not isinstance(event.get("id"), str) or not event["id"] or is_series_master_or_removed(event):
            return None
        candidate = self._candidate(run.conn, event, calendar_id)
        if candidate is None:
            return None
        now = self._clock.now()
        if run.joins is None:
            run.joins = self._lifecycle.context(run.conn.user_id)
        joins = run.joins
        candidate = replace(candidate, deploy_at=joins.join_at(candidate.start))  # the user's join_lead_seconds
        meeting = attach_source(self._meetings, self._jobs, now, candidate, lambda m: joins.decide(m, now).will_join,
                                self._lifecycle.readiness_seconds, known=lambda: self._known(run))
        run.known[meeting.key] = meeting
        run.report.upserted += 1
        return meeting.key

    def _calendar_gone(self, run: _Run, calendar_id: str) -> None:
        """A selected calendar deleted in Outlook falls out of the selection (the default one is selected
        again when none is left) and its meetings let go (agents recalled unless another calendar holds
        the meeting)."""
        assert self._calendars is not None
        log.info("selected calendar gone from the account", extra={"connection_id": run.conn.id})
        for _ in range(3):
            current = self._calendars.get(run.conn.id)
            if current is None:
                break
            try:
                self._calendars.put(without(current, calendar_id))
                break
            except Conflict:
                continue
        run.report.removed += detach_calendar(self._meetings, run.conn.user_id, run.conn.id, calendar_id,
                                              self._clock.now())

    def _apply(self, run: _Run, event: dict[str, Any], generation: str) -> None:
        conn = run.conn
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            return
        if event.get("type") == "seriesMaster" and "@removed" not in event:
            run.masters[event_id] = event  # its occurrences (same page: Graph never splits a series) need it
            return
        full_event = self._with_series(run, event)
        candidate = None if full_event is None or is_series_master_or_removed(full_event) \
            else self._candidate(conn, full_event)
        previous = self._index.get(conn.id, event_id)
        if candidate is None:
            if previous is not None:
                detach_source(self._meetings, conn.user_id, previous, conn.id, None)
                self._index.remove(conn.id, event_id)
                run.report.removed += 1
            return
        now = self._clock.now()
        if run.joins is None:
            run.joins = self._lifecycle.context(conn.user_id)
        joins = run.joins
        candidate = replace(candidate, deploy_at=joins.join_at(candidate.start))  # the user's join_lead_seconds
        meeting = attach_source(self._meetings, self._jobs, now, candidate, lambda m: joins.decide(m, now).will_join,
                                self._lifecycle.readiness_seconds, previous=previous, known=lambda: self._known(run))
        run.known[meeting.key] = meeting
        if previous is not None and previous != meeting.key:
            # Moved or its link changed: the old meeting (and its pending deployment) lets go.
            detach_source(self._meetings, conn.user_id, previous, conn.id, None)
            run.known.pop(previous, None)
        self._index.put(conn.id, event_id, conn.user_id, meeting.key, generation)
        run.report.upserted += 1

    def _known(self, run: _Run) -> list[Meeting]:
        """The user's upcoming meetings, read once per run (and kept current by the run's own
        attaches): where a copy with another key looks for its meeting."""
        if not run.known_loaded:
            for m in self._meetings.list_for_user(run.conn.user_id, ending_after=self._clock.now()):
                run.known.setdefault(m.key, m)
            run.known_loaded = True
        return list(run.known.values())

    def _with_series(self, run: _Run, event: dict[str, Any]) -> dict[str, Any] | None:
        """An occurrence as a whole event: delta lists plain occurrences with only id, type,
        seriesMasterId, start and end, so subject, join link, response and the rest come from the
        series master (in the same round, or read once by id). None when the series is gone."""
        master_id = event.get("seriesMasterId")
        if "@removed" in event or not isinstance(master_id, str) or not master_id:
            return event
        # Some occurrences carry extra keys set to null (reported): still sparse.
        sparse = {k for k, v in event.items() if v is not None} <= _SPARSE_KEYS
        master = run.masters.get(master_id)
        if master is None and sparse and master_id not in run.masters:
            with self._slots.slot(run.conn.home_account_id):
                run.report.requests += 1
                master = self._calendar.event(run.token, master_id)
            run.masters[master_id] = master
        if master is None:
            return None if sparse else event
        return with_series(event, master)

    def _candidate(self, conn: Connection, event: dict[str, Any], calendar_id: str | None = None) -> Meeting | None:
        """The meeting one calendar's event makes (shared.calendar_events), or None; raises
        UnusableEvent for a meeting link without usable times (counted and logged by the caller)."""
        copy = copy_of(event, account_email=conn.email, tenant_id=conn.tenant_id)
        if isinstance(copy, NotAMeeting):
            return None
        if copy.end <= self._clock.now():
            return None
        facts = copy.facts
        rf = facts.response_facts
        identity = copy.identity
        return Meeting(
            user_id=conn.user_id,
            key=meeting_key(identity.primary, copy.start),
            link_key=identity.primary,  # the join link's identity: keys as before iCalUId was used
            title=copy.title,
            start=copy.start,
            end=copy.end,
            platform=str(getattr(copy.link.platform, "value", copy.link.platform)),
            join_url=copy.link.url,
            sources=(Source(conn.id, str(event["id"]), conn.email, rf.response, rf.external, rf.series_id,
                            calendar_id=calendar_id, ical=identity.ical,
                            links=(identity.link, *sorted(identity.aliases)), private=facts.private,
                            solo=facts.solo, all_day=facts.all_day, free=facts.free),),
            deploy_at=deploy_at(copy.start, self._lead),
        )

    def _schedule_due(self, user_id: str) -> None:
        """Meetings that were beyond the queue's horizon, and any whose decision changed."""
        self._lifecycle.replan(user_id)


def request_sync(state: SyncStateStore, jobs: JobQueue, now: datetime, user_id: str, connection_id: str,
                 reason: str) -> bool:
    """Ask for a sync of a connection (a notification, "sync now"): the change is announced, and a
    job queued unless a requested one is already queued or running. True when this call queued it."""
    state.announce(connection_id, now)
    if not state.mark_queued(connection_id, now, SYNC_NOW_MARK):
        return False
    try:
        jobs.enqueue_sync(SyncJob(user_id, connection_id, reason=reason))
    except BaseException:
        state.clear_queued(connection_id)  # nothing queued: the next request must queue
        raise
    return True


def _no_token(reason: str) -> SyncOutcome:
    """ConnectionUnusable's reason as an outcome: a failure class ("transient", "service"), a
    disconnect, or the reason code of an Error the user or their admin must act on."""
    if reason == "transient":
        return SyncOutcome.NO_TOKEN_TRANSIENT
    if reason == "service":
        return SyncOutcome.NO_TOKEN_SERVICE
    if reason == "disconnected":
        return SyncOutcome.DISCONNECTED
    return SyncOutcome.NO_TOKEN_USER


def _refuses_the_id(exc: GraphError) -> bool:
    """A 4xx about the event's id (not the token, not throttling): Graph says it is not there."""
    return 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 429)


__all__ = ["MAX_TITLE_CHARS", "SyncReport", "SyncService", "UnusableEvent", "parse_graph_time", "request_sync"]
