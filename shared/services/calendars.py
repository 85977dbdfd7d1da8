"""The account's calendars on the page: list them (Graph `/me/calendars`, within Calendars.Read) with
which are read and the agent name per calendar, and apply the user's choice.

The rules are `shared.calendars` (pure); this module reads Graph, writes the selection row with its
ETag (two concurrent choices cannot both leave the connection without a calendar), and makes the
choice visible at once: a calendar deselected lets go of its meetings (their agents are recalled
through the meeting store the sync also writes through, unless another selected calendar holds the
meeting); a calendar selected is read by a sync queued right away."""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.calendars import LastCalendar, choose, merged
from shared.clock import Clock
from shared.connections import Connection
from shared.ports import (
    CalendarChoice,
    CalendarReader,
    CalendarSelection,
    CalendarSelectionStore,
    CalendarUnavailable,
    Conflict,
    ConnectionStore,
    GraphError,
    GraphUnauthorized,
    JobQueue,
    Meeting,
    MeetingStore,
    SyncJob,
    SyncStateStore,
    Throttled,
)
from shared.services.accounts import ConnectionUnusable, TokenKeeper
from shared.services.meetings import detach_calendar
from shared.services.sync import SECONDARY_CALENDARS, request_sync

log = logging.getLogger(__name__)

_ATTEMPTS = 4
CALENDARS_CHANGED = "calendars"  # the reason of the sync a calendar choice queues


class ConnectionNotReadable(Exception):
    """The connection is in error (or its token cannot be had now): its calendars cannot be listed."""


class CalendarsUnreadable(Exception):
    """Microsoft Graph did not answer the calendar list now (throttled, 5xx, a refused token) or the
    selection kept changing under us: nothing was changed; try again after `retry_after`."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"calendars not readable now; retry after {retry_after.total_seconds():.0f}s")
        self.retry_after = retry_after


_RETRY_AFTER = timedelta(seconds=30)


class CalendarService:
    def __init__(self, *, connections: ConnectionStore, tokens: TokenKeeper, calendar: CalendarReader,
                 selections: CalendarSelectionStore, meetings: MeetingStore, jobs: JobQueue, clock: Clock,
                 sync_state: SyncStateStore | None = None) -> None:
        self._sync_state = sync_state
        self._connections = connections
        self._tokens = tokens
        self._calendar = calendar
        self._selections = selections
        self._meetings = meetings  # written through OnRemoval (composition): a meeting that goes recalls its agent
        self._jobs = jobs
        self._clock = clock

    def read_secondary_page(self, connections: list[Connection]) -> int:
        """One page of the `read_secondary_calendars` walk (SECONDARY_CALENDARS_SCHEDULE): a sync of
        every Active connection with a selected calendar besides its default one. Graph v1.0 notifies
        and offers delta for the default calendar only (FACTS.md, "Non-default calendars"), so without
        this a change there waited for the next notification of the account or the 6-hourly scan.
        Asked through the connection's queued-sync marker (`request_sync`): one queued sync at most,
        notifications never muted. One point read per connection (its selection row); a row that
        cannot be read is logged (`walk_row_failed`) and skipped. Returns the syncs queued."""
        assert self._sync_state is not None, "the walk needs the sync state (composition)"
        queued = 0
        now = self._clock.now()
        for conn in connections:
            if not conn.is_active:
                continue
            try:
                selection = self._selections.get(conn.id)
                if selection is None or not selection.secondary:
                    continue
                if request_sync(self._sync_state, self._jobs, now, conn.user_id, conn.id, SECONDARY_CALENDARS):
                    queued += 1
            except Exception as exc:  # one unreadable row never stops the walk
                log.error("secondary calendars walk skipped a connection: %s", type(exc).__name__,
                          extra={"connection_id": conn.id, "event": "walk_row_failed"})
        return queued

    def list(self, user_id: str, connection_id: str) -> list[CalendarChoice] | None:
        """The account's calendars with their choices; None when the connection is not this user's.
        Raises ConnectionNotReadable when the connection is in error or its mailbox is out of Graph's
        reach, CalendarsUnreadable when Graph cannot answer now."""
        selection = self._current(user_id, connection_id)
        return None if selection is None else list(selection.calendars)

    def choose(self, user_id: str, connection_id: str, calendar_id: str, selected: bool,
               agent_name: str | None, *, keep_name: bool = False) -> CalendarChoice | None:
        """Apply one calendar's choice (`keep_name`: leave its stored agent name as it is); None when
        the connection is not this user's. Raises
        UnknownCalendar (no such calendar in the account), LastCalendar (none would be left selected),
        ConnectionNotReadable, CalendarsUnreadable (nothing changed)."""
        for _ in range(_ATTEMPTS):
            current = self._current(user_id, connection_id)
            if current is None:
                return None
            before = next((c for c in current.calendars if c.id == calendar_id), None)
            chosen = choose(current, calendar_id, selected, agent_name, keep_name=keep_name)
            try:
                stored = self._selections.put(chosen)
            except Conflict:
                continue  # another choice (or a sync) wrote meanwhile: decide again on what it wrote
            after = next(c for c in stored.calendars if c.id == calendar_id)
            if before is not None and before.selected and not after.selected:
                self._let_go(user_id, connection_id, after)
            if before is None or before.selected != after.selected:
                self._jobs.enqueue_sync(SyncJob(user_id, connection_id, reason=CALENDARS_CHANGED))
            log.info("calendar choice stored", extra={"connection_id": connection_id, "selected": after.selected})
            return after
        log.warning("calendar choice not stored: the selection kept changing", extra={"connection_id": connection_id})
        raise CalendarsUnreadable(_RETRY_AFTER)

    def _current(self, user_id: str, connection_id: str) -> CalendarSelection | None:
        """The stored selection over what Graph lists now (written back when the account's calendars
        changed: a deleted calendar falls out, and its meetings let go)."""
        conn = self._connections.get(user_id, connection_id)
        if conn is None:
            return None
        if not conn.is_active:
            raise ConnectionNotReadable(connection_id)
        try:
            conn, token = self._tokens.access_token(conn)
        except (ConnectionUnusable, Conflict):
            raise ConnectionNotReadable(connection_id) from None
        try:
            live = self._calendar.calendars(token.token)
        except CalendarUnavailable:
            raise ConnectionNotReadable(connection_id) from None
        except Throttled as exc:
            raise CalendarsUnreadable(exc.retry_after) from None
        except (GraphError, GraphUnauthorized) as exc:
            log.warning("calendars not listed: %s", exc, extra={"connection_id": connection_id})
            raise CalendarsUnreadable(_RETRY_AFTER) from None
        for _ in range(_ATTEMPTS):
            stored = self._selections.get(conn.id)
            fresh = merged(stored, live, user_id=user_id, connection_id=conn.id)
            if stored is not None and fresh.calendars == stored.calendars:
                return stored
            try:
                written = self._selections.put(fresh)
            except Conflict:
                continue
            gone = {c.id for c in (stored.calendars if stored else ()) if c.selected} - {c.id for c in live}
            for calendar_id in gone:
                self._let_go(user_id, conn.id, CalendarChoice(calendar_id, "", False, False))
            return written
        log.warning("calendars not listed: the selection kept changing", extra={"connection_id": connection_id})
        raise CalendarsUnreadable(_RETRY_AFTER)

    def _let_go(self, user_id: str, connection_id: str, calendar: CalendarChoice) -> None:
        """A calendar no longer read: its meetings let go of it now (the sync does the same for the
        default calendar's cursor)."""
        gone = detach_calendar(self._meetings, user_id, connection_id, None if calendar.is_default else calendar.id,
                               self._clock.now())
        log.info("calendar deselected: %d meetings let go", gone, extra={"connection_id": connection_id})


def calendar_agent_name(selections: CalendarSelectionStore, meeting: Meeting) -> str | None:
    """The agent name the meeting's calendars chose (API.md: a calendar's own `agent_name` wins over
    the rules' one for that calendar's meetings); where its calendars disagree, the first that names
    one. None when none does."""
    for source in meeting.sources:
        selection = selections.get(source.connection_id)
        name = selection.agent_name(source.calendar_id) if selection is not None else None
        if name:
            return name
    return None


__all__ = ["CalendarService", "ConnectionNotReadable", "LastCalendar", "calendar_agent_name"]
