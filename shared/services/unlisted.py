""""Why isn't my meeting here?" (`GET /api/meetings/unlisted`, ../shared/API.md "Meetings"): the events
of the next 7 days in the user's calendars that are not in Upcoming Meetings, each with its reason.

Read from Graph on demand (one `calendarView` read per selected calendar of each Active connection,
as the user asks), never stored: there is nothing of it to erase with the user's data. Each event is read by the same
translation the sync uses (`shared.calendar_events.copy_of`), so the reason given is the reason the
sync had. One meeting in several calendars is one entry naming every account (same `iCalUId`, or
the same title at the same start). A connection that cannot be read now (in error, Graph throttling
or failing) is named in `unread`, never silently left out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.calendar_events import MeetingCopy, NotAMeeting, UnusableEvent, copy_of, parse_graph_time
from shared.clock import Clock
from shared.connections import Connection
from shared.ports import (
    CalendarGone,
    CalendarReader,
    CalendarSelectionStore,
    CalendarUnavailable,
    Conflict,
    ConnectionStore,
    GraphError,
    GraphUnauthorized,
    Throttled,
)
from shared.scheduling import SyncWindow
from shared.services.accounts import ConnectionUnusable, TokenKeeper

log = logging.getLogger(__name__)

DAYS = 7
MAX_QUERY_CHARS = 200
_TITLE_CHARS = 255


@dataclass(frozen=True)
class UnlistedEvent:
    title: str
    start: datetime
    accounts: tuple[str, ...]
    reason: str  # shared.calendar_events.Unlisted
    reason_text: str


@dataclass(frozen=True)
class UnlistedReport:
    events: list[UnlistedEvent]
    unread: list[str]  # accounts whose calendars could not be read now


class UnlistedService:
    def __init__(self, *, connections: ConnectionStore, tokens: TokenKeeper, calendar: CalendarReader,
                 clock: Clock, selections: CalendarSelectionStore) -> None:
        self._connections = connections
        self._tokens = tokens
        self._calendar = calendar
        self._clock = clock
        self._selections = selections

    def unlisted(self, user_id: str, query: str | None = None) -> UnlistedReport:
        """The user's unlisted events of the next 7 days, sorted by start; with `query`, only those
        whose title contains every one of its words (case-insensitive)."""
        now = self._clock.now()
        window = SyncWindow(now, now + timedelta(days=DAYS))
        words = [w for w in (query or "").lower().split() if w]
        found: dict[tuple[str, ...], UnlistedEvent] = {}
        unread: list[str] = []
        for conn in self._connections.list_for_user(user_id):
            if not conn.is_active:
                unread.append(conn.email)
                continue
            try:
                events = self._events(conn, window)
            except (ConnectionUnusable, Conflict, Throttled, GraphError, GraphUnauthorized, CalendarUnavailable,
                    CalendarGone) as exc:
                log.warning("unlisted: calendar not read: %s", type(exc).__name__, extra={"connection_id": conn.id})
                unread.append(conn.email)
                continue
            for event in events:
                entry = _entry(event, conn.email, conn.tenant_id, now)
                if entry is None or not all(w in entry[1].title.lower() for w in words):
                    continue
                key, item = entry
                known = found.get(key)
                if known is not None:
                    item = UnlistedEvent(known.title, known.start, tuple(sorted({*known.accounts, *item.accounts})),
                                         known.reason, known.reason_text)
                found[key] = item
        return UnlistedReport(sorted(found.values(), key=lambda e: (e.start, e.title)), sorted(set(unread)))

    def _events(self, conn: Connection, window: SyncWindow) -> list[dict[str, object]]:
        """The events of the connection's selected calendars (its default one when it never chose:
        its id read from `GET /me/calendars`)."""
        conn, token = self._tokens.access_token(conn)
        selection = self._selections.get(conn.id)
        ids = [c.id for c in selection.calendars if c.selected] if selection is not None else []
        if not ids:
            ids = [c.id for c in self._calendar.calendars(token.token) if c.is_default][:1]
        events: list[dict[str, object]] = []
        for calendar_id in ids:
            found, _ = self._calendar.calendar_view(token.token, calendar_id, window)
            events.extend(found)
        return events


def _entry(event: dict[str, object], email: str, tenant_id: str, now: datetime
           ) -> tuple[tuple[str, ...], UnlistedEvent] | None:
    if event.get("type") == "seriesMaster":
        return None
    try:
        copy = copy_of(event, account_email=email, tenant_id=tenant_id, why_not=True)
    except UnusableEvent:
        return None
    if isinstance(copy, MeetingCopy):
        return None  # in Upcoming Meetings
    assert isinstance(copy, NotAMeeting)
    start = parse_graph_time(event.get("start"))
    end = parse_graph_time(event.get("end"))
    if start is None or (end is not None and end <= now):
        return None
    title = str(event.get("subject") or "Untitled event")[:_TITLE_CHARS]
    uid = event.get("iCalUId")
    key = ("ical", uid) if isinstance(uid, str) and uid else ("title", title, start.isoformat())
    return key, UnlistedEvent(title, start, (email,), copy.reason.value, copy.text)
