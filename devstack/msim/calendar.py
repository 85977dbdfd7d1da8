"""Mailbox calendars: stored events, recurrence expansion, and calendarView delta rounds.

Events are kept in the Graph `event` shape. A series master expands into occurrences whose ids are
derived from the master id and the occurrence date; an occurrence can be changed (it becomes an
`exception`) or cancelled (it disappears from the view) through the admin API.

Delta rounds follow Graph ("event: delta", learn.microsoft.com/graph/api/event-delta, and "Get
incremental changes to events in a calendar view", learn.microsoft.com/graph/delta-query-events):
the first call fixes the window, pages carry a `$skiptoken`, the last page a `$deltatoken`; a later
call with that token answers what changed since, with deleted events and events changed outside the
window as `@removed` entries (`{"reason": "deleted"}`).

Where public reports and the docs part ways the simulator does what the reports say:
- Deleting one occurrence of a series gives no `@removed` for it: only its series master comes
  back changed (microsoftgraph/microsoft-graph-docs PR #4501, issue #5520; the same for occurrences
  that a changed or deleted series no longer has). A deleted series master comes back `@removed`;
  its occurrences do not (no report says they do: the worse case).
- Every link a delta sync hands out is a new "sync state generation" and Exchange keeps only the
  last few (`Config.delta_generations`, 3 by default): an older link answers 410
  `SyncStateNotFound` "The sync state generation is not found; generation=149;[highest=157][157]
  [155][156]." (microsoftgraph/microsoft-graph-docs#2350, #2162, #2877).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import itertools
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devstack.msim.directory import Account
from devstack.msim.tokens import b64url

UTC = dt.UTC
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEK_INDEX = ("first", "second", "third", "fourth", "last")
PATTERN_TYPES = ("daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly")
RANGE_TYPES = ("endDate", "noEnd", "numbered")
MAX_SYNC_STATES_PER_MAILBOX = 200
_EXPIRED_LINKS_KEPT = 1000
_MAX_OCCURRENCES_SCANNED = 20_000

# The Windows zone names Outlook uses most, for events and `Prefer: outlook.timezone`.
WINDOWS_ZONES = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "Atlantic/Reykjavik",
    "w. europe standard time": "Europe/Berlin",
    "central europe standard time": "Europe/Budapest",
    "romance standard time": "Europe/Paris",
    "central european standard time": "Europe/Warsaw",
    "e. europe standard time": "Europe/Chisinau",
    "fle standard time": "Europe/Kiev",
    "russian standard time": "Europe/Moscow",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "mountain standard time": "America/Denver",
    "pacific standard time": "America/Los_Angeles",
    "india standard time": "Asia/Kolkata",
    "china standard time": "Asia/Shanghai",
    "tokyo standard time": "Asia/Tokyo",
    "aus eastern standard time": "Australia/Sydney",
    "new zealand standard time": "Pacific/Auckland",
}


class EventError(ValueError):
    """An event the admin API cannot store (bad times, unknown zone, unsupported recurrence)."""


# ---------------------------------------------------------------------------------------------
# Time


def resolve_zone(name: str | None) -> dt.tzinfo | None:
    if not name:
        return None
    key = name.strip()
    mapped = WINDOWS_ZONES.get(key.lower())
    if mapped is not None:
        key = mapped
    if key.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _parse_naive(value: str) -> dt.datetime:
    text = value.strip()
    match = re.fullmatch(r"(.*T\d\d:\d\d(?::\d\d)?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", text)
    if match is None:
        parsed = dt.datetime.fromisoformat(text)  # a bare date, or let it raise
    else:
        base, fraction, offset = match.groups()
        micro = (fraction or "0")[:6].ljust(6, "0")
        parsed = dt.datetime.fromisoformat(f"{base}.{micro}{'+00:00' if offset == 'Z' else offset or ''}")
    return parsed


def parse_graph_datetime(value: str, zone_name: str | None) -> dt.datetime:
    """A Graph dateTimeTimeZone to an aware UTC datetime."""
    parsed = _parse_naive(value)
    if parsed.tzinfo is None:
        zone = resolve_zone(zone_name or "UTC")
        if zone is None:
            raise EventError(f"Unknown time zone '{zone_name}'.")
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_window_bound(value: str) -> dt.datetime:
    """startDateTime/endDateTime: ISO 8601, its own offset, UTC when it has none."""
    parsed = _parse_naive(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_local(moment: dt.datetime, zone: dt.tzinfo) -> str:
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond * 10:07d}"


def graph_timestamp(moment: dt.datetime) -> str:
    """createdDateTime-style: `2026-11-20T10:00:00.1234567Z`."""
    return format_local(moment, UTC) + "Z"


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Stored events


def _new_event_id() -> str:
    return "AAMkAD" + b64url(secrets.token_bytes(42)) + "AAA="


def _new_change_key() -> str:
    return b64url(secrets.token_bytes(18)).replace("-", "+").replace("_", "/") + "=="


def occurrence_id(master_id: str, day: dt.date) -> str:
    return "AAMkAD" + b64url(f"{master_id}|{day:%Y%m%d}".encode()) + "="


def parse_occurrence_id(event_id: str) -> tuple[str, dt.date] | None:
    if not (event_id.startswith("AAMkAD") and event_id.endswith("=")):
        return None
    body = event_id[6:-1]
    try:
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        master_id, day = decoded.rsplit("|", 1)
        return master_id, dt.datetime.strptime(day, "%Y%m%d").date()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class StoredEvent:
    data: dict[str, Any]
    version: int  # seq of the last change to the event itself
    touched: int  # seq of the last change to it or any of its occurrences
    overrides: dict[dt.date, dict[str, Any]] = field(default_factory=dict)
    override_versions: dict[dt.date, int] = field(default_factory=dict)
    cancelled: set[dt.date] = field(default_factory=set)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def is_series(self) -> bool:
        return bool(self.data.get("recurrence"))

    def start_utc(self) -> dt.datetime:
        start = self.data["start"]
        return parse_graph_datetime(start["dateTime"], start.get("timeZone"))

    def end_utc(self) -> dt.datetime:
        end = self.data["end"]
        return parse_graph_datetime(end["dateTime"], end.get("timeZone"))


def _normalize_times(event: dict[str, Any]) -> None:
    for key in ("start", "end"):
        value = event.get(key)
        if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
            raise EventError(f'\'{key}\' must be a dateTimeTimeZone: {{"dateTime": ..., "timeZone": ...}}.')
        zone_name = value.get("timeZone") or "UTC"
        if resolve_zone(zone_name) is None:
            raise EventError(f"Unknown time zone '{zone_name}'.")
        try:
            moment = parse_graph_datetime(value["dateTime"], zone_name)
        except ValueError as exc:
            raise EventError(f"'{key}.dateTime' is not an ISO 8601 date-time: {value['dateTime']!r}.") from exc
        zone = resolve_zone(zone_name)
        assert zone is not None
        event[key] = {"dateTime": format_local(moment, zone), "timeZone": zone_name}
    if parse_graph_datetime(event["end"]["dateTime"], event["end"]["timeZone"]) < parse_graph_datetime(
        event["start"]["dateTime"], event["start"]["timeZone"]
    ):
        raise EventError("The event's end is before its start.")


def _normalize_recurrence(event: dict[str, Any]) -> None:
    recurrence = event.get("recurrence")
    if not recurrence:
        event["recurrence"] = None
        return
    if not isinstance(recurrence, dict):
        raise EventError("'recurrence' must be a patternedRecurrence object.")
    pattern = dict(recurrence.get("pattern") or {})
    range_ = dict(recurrence.get("range") or {})
    if pattern.get("type") not in PATTERN_TYPES:
        raise EventError(f"recurrence.pattern.type must be one of {', '.join(PATTERN_TYPES)}.")
    if range_.get("type") not in RANGE_TYPES:
        raise EventError(f"recurrence.range.type must be one of {', '.join(RANGE_TYPES)}.")
    interval = pattern.get("interval", 1)
    if not isinstance(interval, int) or interval < 1:
        raise EventError("recurrence.pattern.interval must be a positive integer.")
    days = [str(d).lower() for d in pattern.get("daysOfWeek") or []]
    if any(d not in DAYS for d in days):
        raise EventError("recurrence.pattern.daysOfWeek holds an unknown day.")
    if pattern["type"] in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise EventError(f"A {pattern['type']} pattern needs daysOfWeek.")
    if pattern["type"] in ("absoluteMonthly", "absoluteYearly") and not 1 <= int(pattern.get("dayOfMonth") or 0) <= 31:
        raise EventError(f"A {pattern['type']} pattern needs dayOfMonth (1-31).")
    if pattern["type"] in ("absoluteYearly", "relativeYearly") and not 1 <= int(pattern.get("month") or 0) <= 12:
        raise EventError(f"A {pattern['type']} pattern needs month (1-12).")
    start_zone = resolve_zone(event["start"]["timeZone"])
    assert start_zone is not None
    start_local = parse_graph_datetime(event["start"]["dateTime"], event["start"]["timeZone"]).astimezone(start_zone)
    try:
        start_date = dt.date.fromisoformat(range_.get("startDate") or start_local.date().isoformat())
        end_date = dt.date.fromisoformat(range_.get("endDate") or "0001-01-01")
    except ValueError as exc:
        raise EventError("recurrence.range dates must be YYYY-MM-DD.") from exc
    if range_["type"] == "endDate" and end_date < start_date:
        raise EventError("recurrence.range.endDate must be on or after startDate.")
    count = int(range_.get("numberOfOccurrences") or 0)
    if range_["type"] == "numbered" and count < 1:
        raise EventError("A numbered range needs numberOfOccurrences >= 1.")
    zone_name = range_.get("recurrenceTimeZone") or event["start"]["timeZone"]
    if resolve_zone(zone_name) is None:
        raise EventError(f"Unknown time zone '{zone_name}'.")
    event["recurrence"] = {
        "pattern": {
            "type": pattern["type"],
            "interval": interval,
            "month": int(pattern.get("month") or 0),
            "dayOfMonth": int(pattern.get("dayOfMonth") or 0),
            "daysOfWeek": days,
            "firstDayOfWeek": str(pattern.get("firstDayOfWeek") or "sunday").lower(),
            "index": str(pattern.get("index") or "first"),
        },
        "range": {
            "type": range_["type"],
            "startDate": start_date.isoformat(),
            "endDate": end_date.isoformat(),
            "recurrenceTimeZone": zone_name,
            "numberOfOccurrences": count,
        },
    }


def _defaults(account: Account, now: dt.datetime) -> dict[str, Any]:
    stamp = graph_timestamp(now)
    return {
        "createdDateTime": stamp,
        "lastModifiedDateTime": stamp,
        "categories": [],
        "transactionId": None,
        "originalStartTimeZone": None,
        "originalEndTimeZone": None,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": True,
        "hasAttachments": False,
        "subject": "",
        "bodyPreview": "",
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": False,
        "isCancelled": False,
        "isOrganizer": True,
        "responseRequested": True,
        "seriesMasterId": None,
        "showAs": "busy",
        "type": "singleInstance",
        "webLink": "",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": True,
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": "html", "content": ""},
        "start": None,
        "end": None,
        "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown"},
        "locations": [],
        "recurrence": None,
        "attendees": [],
        "organizer": {"emailAddress": {"name": account.display_name, "address": account.mail or account.upn}},
        "onlineMeeting": None,
    }


def _finish(event: dict[str, Any], now: dt.datetime) -> None:
    """Server-maintained fields, recomputed on every change."""
    _normalize_times(event)
    _normalize_recurrence(event)
    event["type"] = "seriesMaster" if event["recurrence"] else "singleInstance"
    event["originalStartTimeZone"] = event["start"]["timeZone"]
    event["originalEndTimeZone"] = event["end"]["timeZone"]
    event["lastModifiedDateTime"] = graph_timestamp(now)
    event["changeKey"] = _new_change_key()
    body = event.get("body")
    if not isinstance(body, dict):
        body = {"contentType": "html", "content": str(body or "")}
        event["body"] = body
    event["bodyPreview"] = html_to_text(str(body.get("content") or ""))[:255]
    if not event.get("webLink"):
        event["webLink"] = f"https://outlook.office365.com/owa/?itemid={event['id']}&exvsurl=1&path=/calendar/item"


def _as_invitation(event: dict[str, Any], payload: dict[str, Any], account: Account) -> None:
    """An event organised by someone else is an invitation in this mailbox, as Graph shows an
    attendee's copy: `isOrganizer` false, `responseStatus` notResponded until answered, the mailbox
    owner among the attendees. What the payload gives itself is kept."""
    organizer = payload.get("organizer")
    email = organizer.get("emailAddress") if isinstance(organizer, dict) else None
    address = email.get("address") if isinstance(email, dict) else None
    if not isinstance(address, str) or address.lower() in {a.lower() for a in (account.upn, account.mail) if a}:
        return
    if "isOrganizer" not in payload:
        event["isOrganizer"] = False
    if "responseStatus" not in payload:
        event["responseStatus"] = {"response": "notResponded", "time": "0001-01-01T00:00:00Z"}
    if "attendees" not in payload:
        event["attendees"] = [{"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                               "emailAddress": {"name": account.display_name, "address": account.mail or account.upn}}]


def new_event(payload: dict[str, Any], account: Account, seq: int, now: dt.datetime) -> StoredEvent:
    event = _defaults(account, now)
    event.update(copy.deepcopy(payload))
    _as_invitation(event, payload, account)
    event["id"] = str(payload.get("id") or _new_event_id())
    event["iCalUId"] = payload.get("iCalUId") or (
        "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper()
    )
    _finish(event, now)
    event["createdDateTime"] = payload.get("createdDateTime") or event["lastModifiedDateTime"]
    return StoredEvent(data=event, version=seq, touched=seq)


def patch_event(stored: StoredEvent, patch: dict[str, Any], seq: int, now: dt.datetime) -> None:
    """Graph PATCH semantics: the given properties replace the stored ones."""
    event = copy.deepcopy(stored.data)
    for key, value in patch.items():
        if key in ("id", "createdDateTime", "changeKey", "type", "seriesMasterId"):
            continue
        event[key] = copy.deepcopy(value)
    _finish(event, now)
    stored.data = event
    stored.version = seq
    stored.touched = seq


# ---------------------------------------------------------------------------------------------
# Recurrence


def _nth_weekday(year: int, month: int, weekdays: set[int], index: str) -> dt.date | None:
    days_in_month = [
        dt.date(year, month, d)
        for d in range(1, 32)
        if _valid(year, month, d) and dt.date(year, month, d).weekday() in weekdays
    ]
    if not days_in_month:
        return None
    if index == "last":
        return days_in_month[-1]
    position = WEEK_INDEX.index(index) if index in WEEK_INDEX else 0
    return days_in_month[position] if position < len(days_in_month) else None


def _valid(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _candidate_dates(pattern: dict[str, Any], first: dt.date, until: dt.date) -> Iterator[dt.date]:
    kind = pattern["type"]
    interval = int(pattern["interval"])
    weekdays = {DAYS.index(d) for d in pattern["daysOfWeek"]}
    if kind == "daily":
        day = first
        while day <= until:
            yield day
            day += dt.timedelta(days=interval)
    elif kind == "weekly":
        first_day = DAYS.index(pattern["firstDayOfWeek"]) if pattern["firstDayOfWeek"] in DAYS else 6
        week = first - dt.timedelta(days=(first.weekday() - first_day) % 7)
        while week <= until:
            for offset in range(7):
                day = week + dt.timedelta(days=offset)
                if day.weekday() in weekdays and first <= day <= until:
                    yield day
            week += dt.timedelta(days=7 * interval)
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        year, month = first.year, first.month
        while dt.date(year, month, 1) <= until:
            if kind == "absoluteMonthly":
                day_of_month = int(pattern["dayOfMonth"])
                candidate = dt.date(year, month, day_of_month) if _valid(year, month, day_of_month) else None
            else:
                candidate = _nth_weekday(year, month, weekdays, pattern["index"])
            if candidate is not None and first <= candidate <= until:
                yield candidate
            month += interval
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    else:  # yearly
        year = first.year
        month = int(pattern["month"])
        while dt.date(year, 1, 1) <= until:
            if kind == "absoluteYearly":
                day_of_month = int(pattern["dayOfMonth"])
                candidate = dt.date(year, month, day_of_month) if _valid(year, month, day_of_month) else None
            else:
                candidate = _nth_weekday(year, month, weekdays, pattern["index"])
            if candidate is not None and first <= candidate <= until:
                yield candidate
            year += interval


@dataclass(frozen=True)
class Occurrence:
    day: dt.date
    original_start: dt.datetime  # UTC
    start: dt.datetime  # UTC, after any exception's change
    end: dt.datetime


def _series_days(stored: StoredEvent, until: dt.date) -> Iterator[tuple[dt.date, dt.datetime]]:
    """(date, original UTC start) of every occurrence the pattern and range give, up to `until`."""
    recurrence = stored.data["recurrence"]
    zone = resolve_zone(recurrence["range"]["recurrenceTimeZone"]) or UTC
    wall_time = stored.start_utc().astimezone(zone).time().replace(tzinfo=None)
    range_ = recurrence["range"]
    if range_["type"] == "endDate":
        until = min(until, dt.date.fromisoformat(range_["endDate"]))
    limit = range_["numberOfOccurrences"] if range_["type"] == "numbered" else _MAX_OCCURRENCES_SCANNED
    first = dt.date.fromisoformat(range_["startDate"])
    for count, day in enumerate(_candidate_dates(recurrence["pattern"], first, until), start=1):
        if count > min(limit, _MAX_OCCURRENCES_SCANNED):
            return
        yield day, dt.datetime.combine(day, wall_time).replace(tzinfo=zone).astimezone(UTC)


def _occurrence(stored: StoredEvent, day: dt.date, original: dt.datetime) -> Occurrence:
    duration = stored.end_utc() - stored.start_utc()
    start, end = original, original + duration
    override = stored.overrides.get(day)
    if override:
        if "start" in override:
            start = parse_graph_datetime(override["start"]["dateTime"], override["start"].get("timeZone"))
        if "end" in override:
            end = parse_graph_datetime(override["end"]["dateTime"], override["end"].get("timeZone"))
        elif "start" in override:
            end = start + duration
    return Occurrence(day, original, start, end)


def expand(stored: StoredEvent, window_start: dt.datetime, window_end: dt.datetime) -> list[Occurrence]:
    """Occurrences of a series that overlap [window_start, window_end), cancelled ones left out."""
    # Exceptions can be moved anywhere: look at every occurrence until the window's end, plus the
    # ones whose exception moved them into the window from later.
    zone = resolve_zone(stored.data["recurrence"]["range"]["recurrenceTimeZone"]) or UTC
    until = window_end.astimezone(zone).date() + dt.timedelta(days=2)
    if stored.overrides:
        until = max(until, max(stored.overrides))
    found: list[Occurrence] = []
    for day, original in _series_days(stored, until):
        if day in stored.cancelled:
            continue
        occurrence = _occurrence(stored, day, original)
        if occurrence.start < window_end and occurrence.end > window_start:
            found.append(occurrence)
    return found


def occurrence_on(stored: StoredEvent, day: dt.date) -> Occurrence | None:
    """The occurrence of a series on a given (series-local) date, if the pattern has one."""
    if day in stored.cancelled:
        return None
    for candidate, original in _series_days(stored, day):
        if candidate == day:
            return _occurrence(stored, day, original)
    return None


# ---------------------------------------------------------------------------------------------
# Instances (what calendarView lists)


@dataclass(frozen=True)
class Instance:
    id: str
    start: dt.datetime
    end: dt.datetime
    version: int
    event: dict[str, Any]  # the Graph event, start/end in the event's own zone


def _occurrence_instance(stored: StoredEvent, occurrence: Occurrence) -> Instance:
    master = stored.data
    event = copy.deepcopy(master)
    override = stored.overrides.get(occurrence.day) or {}
    for key, value in override.items():
        event[key] = copy.deepcopy(value)
    zone_name = master["start"]["timeZone"]
    zone = resolve_zone(zone_name) or UTC
    event_id = occurrence_id(stored.id, occurrence.day)
    event.update(
        {
            "id": event_id,
            "type": "exception" if override else "occurrence",
            "seriesMasterId": stored.id,
            "recurrence": None,
            "iCalUId": occurrence_ical_uid(master["iCalUId"], occurrence.day),
            "originalStart": iso_utc(occurrence.original_start),
            "start": {"dateTime": format_local(occurrence.start, zone), "timeZone": zone_name},
            "end": {"dateTime": format_local(occurrence.end, zone), "timeZone": zone_name},
        }
    )
    if override:
        event["changeKey"] = override.get("changeKey", master["changeKey"])
        event["lastModifiedDateTime"] = override.get("lastModifiedDateTime", master["lastModifiedDateTime"])
        body = event.get("body") or {}
        event["bodyPreview"] = html_to_text(str(body.get("content") or ""))[:255]
    version = max(stored.version, stored.override_versions.get(occurrence.day, 0))
    return Instance(event_id, occurrence.start, occurrence.end, version, event)


_GLOBAL_OBJECT_ID = re.compile(r"(040000008200E00074C5B7101A82E008)([0-9A-F]{8})([0-9A-F]*)", re.IGNORECASE)


def occurrence_ical_uid(series_uid: str, day: dt.date) -> str:
    """An occurrence's `iCalUId`, the same in every attendee's mailbox: Exchange's GlobalObjectId of
    the series with the occurrence's original date in its instance-date bytes (year: 2 bytes, month,
    day; all zero for the series itself: [MS-OXOCAL] 2.2.1.27, PidLidGlobalObjectId). A UID not in
    that form (an invitation from another calendar system) gets the date appended."""
    match = _GLOBAL_OBJECT_ID.fullmatch(series_uid)
    if match is None:
        return f"{series_uid}-{day:%Y%m%d}"
    return f"{match.group(1)}{day.year:04X}{day.month:02X}{day.day:02X}{match.group(3)}".upper()


def _single_instance(stored: StoredEvent) -> Instance:
    return Instance(stored.id, stored.start_utc(), stored.end_utc(), stored.version, copy.deepcopy(stored.data))


def _sort_key(instance: Instance) -> tuple[dt.datetime, dt.datetime, str]:
    return (instance.start, instance.end, instance.id)


def _overlaps(start: dt.datetime, end: dt.datetime, window_start: dt.datetime, window_end: dt.datetime) -> bool:
    if start == end:  # zero-length events at a moment in the window
        return window_start <= start < window_end
    return start < window_end and end > window_start


def _versions(units: list[list[DeltaItem]]) -> dict[str, int]:
    return {i.id: i.instance.version for unit in units for i in unit if i.instance is not None}


# ---------------------------------------------------------------------------------------------
# Delta state


@dataclass
class DeltaState:
    """What a `$deltatoken` stands for: the window and what the client was told so far."""

    window: tuple[dt.datetime, dt.datetime]
    known: dict[str, int]  # event id (single, master, occurrence) -> version the client has
    seq: int  # mailbox seq the round was computed at
    sync_state: int  # the SyncState this round belongs to


@dataclass(frozen=True)
class DeltaItem:
    """One entry of a delta page: an event (in full, or sparse for plain occurrences) or a removal."""

    id: str
    instance: Instance | None = None  # None: "@removed"
    sparse: bool = False


DeltaUnit = list[DeltaItem]  # a single event, or a series master with its occurrences: never split


@dataclass
class DeltaPages:
    """What a `$skiptoken` stands for: the rest of a round being paged through."""

    units: list[DeltaUnit]
    offset: int  # in units
    final: DeltaState


@dataclass
class SyncState:
    """One delta sync as Exchange keeps it, from its initial request on: each link it hands out
    (nextLink or deltaLink) is a new generation, and only the last few generations still answer."""

    id: int
    window: tuple[dt.datetime, dt.datetime]
    highest: int = 0
    live: OrderedDict[int, str] = field(default_factory=OrderedDict)  # generation -> token, oldest first

    def generations(self) -> str:
        """As Exchange lists them: `[highest=157][157][155][156]`."""
        others = "".join(f"[{g}]" for g in sorted(self.live) if g != self.highest)
        return f"[highest={self.highest}][{self.highest}]{others}"


@dataclass(frozen=True)
class DeltaLink:
    """A live `$skiptoken` (its round is a DeltaPages) or `$deltatoken` (a DeltaState)."""

    sync_state: int
    generation: int
    round: DeltaState | DeltaPages


@dataclass(frozen=True)
class ExpiredLink:
    window: tuple[dt.datetime, dt.datetime]
    sync_state: int
    generation: int


class SyncStateNotFound(Exception):
    """A link whose generation (or whole sync state) is gone. `window` lets the answer point at a
    fresh initial request; `detail` is the generation list when the sync state still exists."""

    def __init__(self, window: tuple[dt.datetime, dt.datetime] | None = None, detail: str | None = None) -> None:
        super().__init__(detail or "sync state not found")
        self.window = window
        self.detail = detail


def default_calendar_id(account: Account) -> str:
    """The id of the account's default calendar (`isDefaultCalendar`), stable for the account."""
    return f"AAMkAD{account.graph_id.replace('-', '')}Calendar"


@dataclass
class Calendar:
    """A calendar of the mailbox beyond the default one (learn.microsoft.com/graph/api/resources/calendar)."""

    id: str
    name: str


@dataclass
class Mailbox:
    account: Account
    events: dict[str, StoredEvent] = field(default_factory=dict)
    # Calendars beyond the default one, and which of them holds an event (absent: the default). As v1.0
    # documents, `/me/events`, its delta and its subscriptions cover the default calendar only.
    calendars: dict[str, Calendar] = field(default_factory=dict)
    event_calendar: dict[str, str] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)  # deleted event id -> seq
    links: dict[str, DeltaLink] = field(default_factory=dict)
    sync_states: OrderedDict[int, SyncState] = field(default_factory=OrderedDict)  # least recently used first
    # Links that no longer answer, so a 410 can name the generation and point at a fresh initial request.
    expired_links: OrderedDict[str, ExpiredLink] = field(default_factory=OrderedDict)
    _sync_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- calendars --------------------------------------------------------------------------

    @property
    def default_calendar_id(self) -> str:
        return default_calendar_id(self.account)

    def add_calendar(self, name: str) -> Calendar:
        calendar = Calendar("AAMkAD" + b64url(secrets.token_bytes(30)) + "Cal=", name)
        self.calendars[calendar.id] = calendar
        return calendar

    def remove_calendar(self, calendar_id: str, seq: int) -> bool:
        """The calendar and its events go (a secondary calendar only: the default cannot be deleted)."""
        if self.calendars.pop(calendar_id, None) is None:
            return False
        for event_id in [e for e, c in self.event_calendar.items() if c == calendar_id]:
            if self.events.pop(event_id, None) is not None:
                self.tombstones[event_id] = seq
        return True

    def has_calendar(self, calendar_id: str) -> bool:
        return calendar_id == self.default_calendar_id or calendar_id in self.calendars

    def calendar_of(self, event_id: str) -> str:
        return self.event_calendar.get(event_id) or self.default_calendar_id

    def _in(self, event_id: str, calendar_id: str | None) -> bool:
        """Whether the event is in that calendar (None: the default one)."""
        return self.event_calendar.get(event_id) == (None if calendar_id == self.default_calendar_id else calendar_id)

    # -- queries ----------------------------------------------------------------------------

    def instances(self, window_start: dt.datetime, window_end: dt.datetime,
                  calendar_id: str | None = None) -> list[Instance]:
        """What calendarView lists for the window, of one calendar (None: the default one)."""
        found: list[Instance] = []
        for stored in self.events.values():
            if not self._in(stored.id, calendar_id):
                continue
            if stored.is_series:
                found.extend(_occurrence_instance(stored, o) for o in expand(stored, window_start, window_end))
            elif _overlaps(stored.start_utc(), stored.end_utc(), window_start, window_end):
                found.append(_single_instance(stored))
        return sorted(found, key=_sort_key)

    def masters_and_singles(self, calendar_id: str | None = None) -> list[Instance]:
        return sorted((_single_instance(s) for s in self.events.values() if self._in(s.id, calendar_id)),
                      key=_sort_key)

    def find_instance(self, event_id: str) -> Instance | None:
        stored = self.events.get(event_id)
        if stored is not None:
            return _single_instance(stored)
        parsed = parse_occurrence_id(event_id)
        if parsed is None or parsed[0] not in self.events:
            return None
        master = self.events[parsed[0]]
        if not master.is_series or parsed[1] in master.cancelled:
            return None
        occurrence = occurrence_on(master, parsed[1])
        return _occurrence_instance(master, occurrence) if occurrence else None

    # -- admin changes ----------------------------------------------------------------------

    def add(self, payload: dict[str, Any], seq: int, now: dt.datetime,
            calendar_id: str | None = None) -> dict[str, Any]:
        if payload.get("id") and (payload["id"] in self.events or parse_occurrence_id(str(payload["id"]))):
            raise EventError(f"An event with id '{payload['id']}' already exists or is reserved.")
        if calendar_id is not None and not self.has_calendar(calendar_id):
            raise EventError(f"No calendar '{calendar_id}' in {self.account.upn}'s mailbox.")
        stored = new_event(payload, self.account, seq, now)
        self.events[stored.id] = stored
        if calendar_id is not None and calendar_id != self.default_calendar_id:
            self.event_calendar[stored.id] = calendar_id
        self.tombstones.pop(stored.id, None)
        return copy.deepcopy(stored.data)

    def update(self, event_id: str, patch: dict[str, Any], seq: int, now: dt.datetime) -> dict[str, Any] | None:
        stored = self.events.get(event_id)
        if stored is not None:
            patch_event(stored, patch, seq, now)
            return copy.deepcopy(stored.data)
        parsed = parse_occurrence_id(event_id)
        if parsed is None or parsed[0] not in self.events:
            return None
        master = self.events[parsed[0]]
        if not master.is_series or parsed[1] in master.cancelled or occurrence_on(master, parsed[1]) is None:
            return None
        override = master.overrides.setdefault(parsed[1], {})
        for key, value in patch.items():
            if key in ("id", "type", "seriesMasterId", "recurrence", "createdDateTime", "iCalUId"):
                continue
            if key in ("start", "end"):
                try:
                    moment = parse_graph_datetime(value["dateTime"], value.get("timeZone"))
                except (KeyError, TypeError, ValueError) as exc:
                    raise EventError(f"'{key}' must be a dateTimeTimeZone.") from exc
                zone_name = value.get("timeZone") or "UTC"
                value = {"dateTime": format_local(moment, resolve_zone(zone_name) or UTC), "timeZone": zone_name}
            override[key] = copy.deepcopy(value)
        override["changeKey"] = _new_change_key()
        override["lastModifiedDateTime"] = graph_timestamp(now)
        master.override_versions[parsed[1]] = seq
        master.touched = seq
        instance = self.find_instance(event_id)
        return instance.event if instance else None

    def deleted_occurrence(self, event_id: str) -> bool:
        """Whether the id names an occurrence deleted from its (still live) series."""
        parsed = parse_occurrence_id(event_id)
        master = self.events.get(parsed[0]) if parsed else None
        return parsed is not None and master is not None and master.is_series and parsed[1] in master.cancelled

    def delete(self, event_id: str, seq: int, *, touch_master: bool = True) -> bool:
        """Delete an event, a series (its master's id) or one occurrence. `touch_master`: whether
        deleting one occurrence changes its master, so calendarView delta re-emits it (reported, not
        documented: `Config.occurrence_delete`)."""
        stored = self.events.pop(event_id, None)
        if stored is not None:
            self.tombstones[event_id] = seq
            return True
        parsed = parse_occurrence_id(event_id)
        if parsed is None or parsed[0] not in self.events:
            return False
        master = self.events[parsed[0]]
        if not master.is_series or parsed[1] in master.cancelled or occurrence_on(master, parsed[1]) is None:
            return False
        master.cancelled.add(parsed[1])
        master.overrides.pop(parsed[1], None)
        if touch_master:
            master.touched = seq
        return True

    # -- delta ------------------------------------------------------------------------------

    def _delta_units(self, window: tuple[dt.datetime, dt.datetime]) -> list[DeltaUnit]:
        """What calendarView delta lists for a window, grouped by series.

        As Graph does: a series with occurrences in the window comes as its master (in full) followed
        by its occurrences, which carry only id, type, seriesMasterId, start and end; exceptions come
        in full.
        """
        units: list[tuple[tuple[dt.datetime, dt.datetime, str], DeltaUnit]] = []
        for stored in self.events.values():
            if not self._in(stored.id, None):
                continue  # delta covers the default calendar only (v1.0)
            if not stored.is_series:
                if _overlaps(stored.start_utc(), stored.end_utc(), *window):
                    single = _single_instance(stored)
                    units.append((_sort_key(single), [DeltaItem(single.id, single)]))
                continue
            occurrences = [_occurrence_instance(stored, o) for o in expand(stored, *window)]
            if not occurrences:
                continue
            master = _single_instance(stored)
            master = Instance(master.id, master.start, master.end, stored.touched, master.event)
            unit = [DeltaItem(master.id, master)]
            unit.extend(DeltaItem(o.id, o, sparse=o.event["type"] == "occurrence") for o in occurrences)
            units.append((_sort_key(occurrences[0]), unit))
        return [unit for _, unit in sorted(units, key=lambda pair: pair[0])]

    def start_delta_round(
        self, window: tuple[dt.datetime, dt.datetime] | None, token: str | None, seq: int
    ) -> tuple[list[DeltaUnit], DeltaState]:
        """A new round: a full sync of a window, or the changes since a delta token.

        Returns the round's units and the state its closing `$deltatoken` will stand for.
        """
        if token is None:
            assert window is not None
            units = self._delta_units(window)
            return units, DeltaState(window, _versions(units), seq, self._new_sync_state(window))
        state = self._link(token).round
        if not isinstance(state, DeltaState):
            raise SyncStateNotFound
        current = self._delta_units(state.window)
        changed: list[DeltaUnit] = []
        emitted: set[str] = set()
        for unit in current:
            fresh = [i for i in unit if i.instance and state.known.get(i.id, -1) < i.instance.version]
            if not fresh:
                continue
            master = unit[0]
            is_series = master.instance is not None and master.instance.event.get("type") == "seriesMaster"
            if is_series and fresh[0].id != master.id:
                fresh.insert(0, master)  # occurrences always come with their master
            changed.append(fresh)
            emitted.update(i.id for i in fresh)
        current_ids = set(_versions(current))
        # As reported, an occurrence that no longer exists (deleted on its own, or its series deleted
        # or re-patterned) is never listed as removed: only singles, masters, and occurrences that
        # still exist but moved out of the window are.
        removed = [i for i in state.known if i not in current_ids and (self._occurs(i) or not _is_occurrence(i))]
        # Graph also reports events added, changed or deleted outside the window, as removed.
        removed += [e.id for e in self.events.values()
                    if e.touched > state.seq and e.id not in current_ids | emitted and self._in(e.id, None)]
        removed += [i for i, deleted in self.tombstones.items()
                    if deleted > state.seq and i not in emitted and self._in(i, None)]
        for removed_id in dict.fromkeys(removed):
            changed.append([DeltaItem(removed_id)])
        return changed, DeltaState(state.window, _versions(current), seq, state.sync_state)

    def page(
        self, units: list[DeltaUnit], offset: int, page_size: int, final: DeltaState, generations: int
    ) -> tuple[list[DeltaItem], str | None, str | None]:
        """One page of a round: (items, next `$skiptoken` or None, `$deltatoken` once the round ends).

        A page holds at most `page_size` items unless a single series is bigger: series are never split.
        Either token is a new generation of the round's sync state, which keeps `generations` of them.
        """
        chunk: list[DeltaItem] = []
        position = offset
        while position < len(units) and (not chunk or len(chunk) + len(units[position]) <= page_size):
            chunk.extend(units[position])
            position += 1
        if position < len(units):
            return chunk, self._issue(final.sync_state, DeltaPages(units, position, final), generations), None
        return chunk, None, self._issue(final.sync_state, final, generations)

    def continue_round(self, skip_token: str) -> DeltaPages:
        pages = self._link(skip_token).round
        if not isinstance(pages, DeltaPages):
            raise SyncStateNotFound
        return pages

    def expire_delta_tokens(self) -> None:
        """Every sync state of the mailbox is gone (as after a mailbox move): all links answer 410."""
        for sync in list(self.sync_states.values()):
            self._drop_sync_state(sync)

    # -- sync states ------------------------------------------------------------------------

    def _occurs(self, event_id: str) -> bool:
        """Whether an occurrence id still names an occurrence of a live series."""
        parsed = parse_occurrence_id(event_id)
        master = self.events.get(parsed[0]) if parsed else None
        if parsed is None or master is None or not master.is_series or parsed[1] in master.cancelled:
            return False
        return occurrence_on(master, parsed[1]) is not None

    def _new_sync_state(self, window: tuple[dt.datetime, dt.datetime]) -> int:
        sync = SyncState(next(self._sync_ids), window)
        self.sync_states[sync.id] = sync
        while len(self.sync_states) > MAX_SYNC_STATES_PER_MAILBOX:
            self._drop_sync_state(next(iter(self.sync_states.values())))
        return sync.id

    def _drop_sync_state(self, sync: SyncState) -> None:
        for token in sync.live.values():
            self._expire(token)
        sync.live.clear()
        self.sync_states.pop(sync.id, None)

    def _issue(self, sync_id: int, round_: DeltaState | DeltaPages, generations: int) -> str:
        sync = self.sync_states[sync_id]
        self.sync_states.move_to_end(sync_id)
        sync.highest += 1
        token = secrets.token_urlsafe(24)
        sync.live[sync.highest] = token
        self.links[token] = DeltaLink(sync_id, sync.highest, round_)
        while len(sync.live) > max(1, generations):
            _, old = sync.live.popitem(last=False)
            self._expire(old)
        return token

    def _expire(self, token: str) -> None:
        link = self.links.pop(token, None)
        if link is None:
            return
        sync = self.sync_states.get(link.sync_state)
        round_state = link.round.final if isinstance(link.round, DeltaPages) else link.round
        window = sync.window if sync else round_state.window
        self.expired_links[token] = ExpiredLink(window, link.sync_state, link.generation)
        while len(self.expired_links) > _EXPIRED_LINKS_KEPT:
            self.expired_links.popitem(last=False)

    def _link(self, token: str) -> DeltaLink:
        link = self.links.get(token)
        if link is not None:
            self.sync_states.move_to_end(link.sync_state)
            return link
        expired = self.expired_links.get(token)
        if expired is None:
            raise SyncStateNotFound
        sync = self.sync_states.get(expired.sync_state)
        detail = f"generation={expired.generation};{sync.generations()}" if sync else None
        raise SyncStateNotFound(expired.window, detail)


def _is_occurrence(event_id: str) -> bool:
    return parse_occurrence_id(event_id) is not None


# ---------------------------------------------------------------------------------------------
# Bodies

_LINK = re.compile(r"<a\b[^>]*\bhref\s*=\s*([\"'])(.*?)\1[^>]*>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_END = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)
_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def html_to_text(content: str) -> str:
    """Outlook-ish HTML-to-text: links become `text<url>`, block ends become line breaks."""

    def link(match: re.Match[str]) -> str:
        url = html.unescape(match.group(2))
        text = _TAG.sub("", match.group(3)).strip()
        # Angle brackets are kept out of the tag stripping below, then restored.
        return url if not text or html.unescape(text) == url else f"{text}\x00{url}\x01"

    text = _DROP.sub("", content)
    text = _LINK.sub(link, text)
    text = _BLOCK_END.sub("\r\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text).replace("\x00", "<").replace("\x01", ">")
    text = re.sub(r"[ \t\xa0]+", " ", text)
    text = re.sub(r"(\r\n\s*){3,}", "\r\n\r\n", text)
    return text.strip()
