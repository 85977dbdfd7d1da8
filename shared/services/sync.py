"""Calendar sync: the timer fans out one job per connection; a job reads that calendar's changes
with Graph `calendarView/delta` and turns events with a supported join link into meetings."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.connections import Connection
from shared.meeting_links import find_meeting_link
from shared.ports import (
    CalendarReader,
    ConnectionStore,
    DeltaPage,
    EventIndex,
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
from shared.scheduling import deploy_at, meeting_key, sync_window
from shared.services.accounts import ConnectionUnusable, TokenKeeper
from shared.services.meetings import attach_source, detach_source, schedule_if_due

log = logging.getLogger(__name__)

_MAX_PAGES = 500  # a runaway nextLink chain stops here (5,000+ events in the window)


@dataclass
class SyncReport:
    outcome: str = "synced"
    full: bool = False
    pages: int = 0
    upserted: int = 0
    removed: int = 0
    counters: dict[str, int] = field(default_factory=dict)


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
        try:
            conn, token = self._tokens.access_token(conn)
        except ConnectionUnusable as exc:
            return SyncReport(outcome=f"no_token:{exc}")
        report = SyncReport()
        try:
            self._run(conn, token.token, report, allow_restart=True)
        except Throttled as exc:
            report.outcome = "throttled"
            self._jobs.enqueue_sync(SyncJob(conn.user_id, conn.id, reason="throttled"), exc.retry_after)
            log.warning("sync throttled, resuming later", extra={"connection_id": conn.id})
        self._schedule_due(conn.user_id)
        log.info("sync %s", report.outcome, extra={"connection_id": conn.id, "pages": report.pages,
                                                    "upserted": report.upserted, "removed": report.removed})
        return report

    def _run(self, conn: Connection, token: str, report: SyncReport, *, allow_restart: bool) -> None:
        now = self._clock.now()
        window = sync_window(now, self._window_days)
        state = self._state.get(conn.id)
        resuming = state is not None and state.resume_link is not None and state.window_start == window.start
        if resuming and state is not None:
            full = state.delta_link is None
            generation = state.generation
            link: str | None = state.resume_link
        else:
            full = (
                state is None
                or state.delta_link is None
                or state.window_start != window.start
                or state.full_sync_at is None
                or now - state.full_sync_at >= self._full_resync
            )
            generation = uuid.uuid4().hex if full else (state.generation if state else uuid.uuid4().hex)
            link = None if full or state is None else state.delta_link
        report.full = full
        try:
            delta_link = self._pages(conn, token, window, link, generation, full, state, report)
        except SyncStateGone:
            if not allow_restart:
                raise
            log.info("delta state gone, full resync", extra={"connection_id": conn.id})
            self._state.remove(conn.id)
            self._run(conn, token, report, allow_restart=False)
            return
        if full:
            for event_id, key in self._index.all_for(conn.id, not_generation=generation).items():
                detach_source(self._meetings, conn.user_id, key, conn.id)
                self._index.remove(conn.id, event_id)
                report.removed += 1
        self._state.put(
            SyncState(
                connection_id=conn.id,
                window_start=window.start,
                window_end=window.end,
                delta_link=delta_link,
                full_sync_at=now if full else (state.full_sync_at if state else now),
                generation=generation,
            )
        )

    def _pages(
        self,
        conn: Connection,
        token: str,
        window: Any,
        link: str | None,
        generation: str,
        full: bool,
        state: SyncState | None,
        report: SyncReport,
    ) -> str:
        for _ in range(_MAX_PAGES):
            try:
                page: DeltaPage = (
                    self._calendar.delta_first(token, window) if link is None
                    else self._calendar.delta_next(token, link)
                )
            except Throttled:
                # Keep our place: the next run continues from this page, not from the start.
                self._state.put(
                    SyncState(
                        connection_id=conn.id,
                        window_start=window.start,
                        window_end=window.end,
                        delta_link=None if full else (state.delta_link if state else None),
                        full_sync_at=state.full_sync_at if state else None,
                        resume_link=link,
                        generation=generation,
                    )
                )
                raise
            report.pages += 1
            for event in page.events:
                self._apply(conn, event, generation, report)
            if page.next_link:
                link = page.next_link
                continue
            if page.delta_link:
                return page.delta_link
            raise SyncStateGone("delta round ended without a deltaLink")
        raise SyncStateGone("too many pages")

    def _apply(self, conn: Connection, event: dict[str, Any], generation: str, report: SyncReport) -> None:
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            return
        candidate = None if _skipped(event) else self._candidate(conn, event)
        previous = self._index.get(conn.id, event_id)
        if candidate is None:
            if previous is not None:
                detach_source(self._meetings, conn.user_id, previous, conn.id)
                self._index.remove(conn.id, event_id)
                report.removed += 1
            return
        if previous is not None and previous != candidate.key:
            # Rescheduled or link changed: the old meeting (and its pending deployment) lets go.
            detach_source(self._meetings, conn.user_id, previous, conn.id)
        attach_source(self._meetings, self._jobs, self._clock.now(), candidate)
        self._index.put(conn.id, event_id, conn.user_id, candidate.key, generation)
        report.upserted += 1

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
