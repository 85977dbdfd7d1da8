"""A Microsoft Graph calendar event, turned into a meeting (or the reason it is none). Pure domain.

The sync (`services.sync`), "why isn't my meeting here?" (`services.unlisted`) and the support tool
(`tools.explain_event`) all read events through this module, so they can never disagree about what
an event is:

- `with_series(occurrence, master)`: an occurrence as calendarView delta lists it (sparse: id, type,
  seriesMasterId, start, end) completed from its series master.
- `copy_of(event, ...)`: one calendar's copy of a meeting — `MeetingCopy` with its join link, its
  identity (`shared.meeting_identity`) and what that calendar says of it (RSVP, external organiser,
  series, private, solo, all-day, free) — or `NotAMeeting` with the reason (`Unlisted`).

Graph shapes relied on (learn.microsoft.com/graph/api/resources/event): `start`/`end`
dateTimeTimeZone (asked for in UTC with `Prefer: outlook.timezone="UTC"`), `isCancelled`, `isAllDay`,
`type` (singleInstance, occurrence, exception, seriesMaster), `seriesMasterId`, `originalStart`,
`iCalUId`, `sensitivity` (normal, personal, private, confidential), `showAs` (free, tentative, busy,
oof, workingElsewhere, unknown), `attendees[]` (`type` required, optional, resource),
`isOrganizer`, `onlineMeetingProvider`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from shared.autojoin import EventFacts, event_facts
from shared.meeting_identity import MeetingIdentity, ical_identity, printed_aliases
from shared.meeting_links import MeetingLink, Verdict, explain, find_meeting_link
from shared.platforms import UnsupportedPlatform, is_supported_host, own_unsupported_platform

MAX_TITLE_CHARS = 255  # Outlook's subject limit: a stored title never exceeds it
# Dates outside these years are not meetings (Graph can hold year 0001 / 9999 placeholders).
_YEARS = range(1971, 9000)
_FRACTION = re.compile(r"(\.\d{1,6})\d*")
# Fields that tell where the event's own online meeting is: a link here beats a location's platform.
_OWN_MEETING_FIELDS = ("onlineMeeting", "onlineMeetingUrl")


class Unlisted(StrEnum):
    """Why an event is not in Upcoming Meetings (`GET /api/meetings/unlisted` `reason`)."""

    NO_MEETING_LINK = "no_meeting_link"
    UNSUPPORTED_PLATFORM = "unsupported_platform"
    LINK_NOT_JOINABLE = "link_not_joinable"
    CANCELLED = "cancelled"


_NO_LINK = "It has no Teams, Zoom or Google Meet link."


class UnusableEvent(ValueError):
    """An event with a meeting link whose data cannot make a meeting (no usable start or end)."""


@dataclass(frozen=True)
class CopyFacts:
    """What one calendar's copy says of the user's part in the meeting (the join rules read these)."""

    response_facts: EventFacts
    private: bool = False  # `sensitivity` private or confidential
    solo: bool = False  # the user's own event with no other attendee
    all_day: bool = False
    free: bool = False  # `showAs: free`


@dataclass(frozen=True)
class MeetingCopy:
    link: MeetingLink
    identity: MeetingIdentity
    title: str
    start: datetime
    end: datetime
    facts: CopyFacts


@dataclass(frozen=True)
class NotAMeeting:
    reason: Unlisted
    text: str
    platform: str | None = None  # the unsupported platform's name, when that is the reason


def with_series(event: Mapping[str, Any], master: Mapping[str, Any]) -> dict[str, Any]:
    """An occurrence completed from its series master: the occurrence's own non-null fields win;
    `recurrence` is dropped and `type` kept. The master's `iCalUId` is kept apart in
    `seriesICalUId` (the occurrence's identity is its series' `iCalUId` and original start)."""
    merged = {k: v for k, v in master.items() if k not in ("recurrence", "@odata.etag")}
    merged.update({k: v for k, v in event.items() if v is not None})
    merged["type"] = event.get("type") or "occurrence"
    if isinstance(master.get("iCalUId"), str):
        merged["seriesICalUId"] = master["iCalUId"]
    return merged


def is_series_master_or_removed(event: Mapping[str, Any]) -> bool:
    return "@removed" in event or event.get("type") == "seriesMaster"


def copy_of(event: Mapping[str, Any], *, account_email: str, tenant_id: str,
            why_not: bool = False) -> MeetingCopy | NotAMeeting:
    """One calendar copy of a meeting, or why the event is none. Raises UnusableEvent when it has a
    meeting link but no usable times (counted and logged by the sync, never guessed at).

    Reasons, first that applies: cancelled; the event's own meeting is on an unsupported platform
    (`platforms.own_unsupported_platform`) and no Teams/Zoom/Meet link sits in its own online-meeting
    fields; no supported link (a link that looks like a meeting but cannot be joined — a registration
    page, a recording, a host-only link, meeting options — is `link_not_joinable`: telling it from
    `no_meeting_link` parses every link of the event, so only with `why_not`; the sync, which only
    needs to know that it is none, gets `no_meeting_link` for both)."""
    if event.get("isCancelled") is True:
        return NotAMeeting(Unlisted.CANCELLED, "The meeting is cancelled.")
    own = own_unsupported_platform(event)
    if own is not None:
        link = find_meeting_link({k: event.get(k) for k in _OWN_MEETING_FIELDS})
        if link is None:
            return _unsupported(own)
    else:
        link = find_meeting_link(event)
    if link is None:
        return not_a_meeting(event) if why_not else NotAMeeting(Unlisted.NO_MEETING_LINK, _NO_LINK)
    start = parse_graph_time(event.get("start"))
    end = parse_graph_time(event.get("end"))
    if start is None or end is None or end < start:
        raise UnusableEvent("no usable start/end")
    platform = str(getattr(link.platform, "value", link.platform))
    ical = ical_identity(event, _str(event.get("seriesICalUId")) or None, start)
    identity = MeetingIdentity(ical=ical, link=link.key, start=start, end=end,
                               aliases=printed_aliases(platform, _texts(event)) - {link.key})
    title = str(event.get("subject") or "Untitled meeting")[:MAX_TITLE_CHARS]
    return MeetingCopy(link=link, identity=identity, title=title, start=start, end=end,
                       facts=copy_facts(event, account_email, tenant_id))


def copy_facts(event: Mapping[str, Any], account_email: str, tenant_id: str) -> CopyFacts:
    return CopyFacts(
        response_facts=event_facts(event, account_email, tenant_id),
        private=str(event.get("sensitivity") or "").lower() in ("private", "confidential"),
        solo=_solo(event, account_email),
        all_day=event.get("isAllDay") is True,
        free=str(event.get("showAs") or "").lower() == "free",
    )


def _solo(event: Mapping[str, Any], account_email: str) -> bool:
    """The user's own event (not an invitation) with nobody else invited. Rooms and equipment
    (`type: resource`) are nobody. An event whose `attendees` Graph did not return is not taken for
    solo: only a list that shows nobody else counts."""
    if event.get("isOrganizer") is False:
        return False
    attendees = event.get("attendees")
    if not isinstance(attendees, list):
        return False
    me = account_email.strip().lower()
    for attendee in attendees:
        if not isinstance(attendee, Mapping) or attendee.get("type") == "resource":
            continue
        email = attendee.get("emailAddress")
        address = email.get("address") if isinstance(email, Mapping) else None
        if not isinstance(address, str) or address.strip().lower() != me:
            return False
    return True


def not_a_meeting(event: Mapping[str, Any]) -> NotAMeeting:
    """Why an event with no usable supported link is none: `link_not_joinable` when a Teams, Zoom or
    Meet link in it was turned down (with the recogniser's reason), else `no_meeting_link`."""
    own = own_unsupported_platform(event)
    if own is not None:
        return _unsupported(own)
    story = explain(event)
    for candidate in story.candidates:
        if candidate.verdict is Verdict.REJECTED and _supported_platform_link(candidate.url, candidate.reason):
            return NotAMeeting(Unlisted.LINK_NOT_JOINABLE,
                               f"Its link cannot be joined by an agent: {candidate.reason}.")
    for candidate in story.candidates:
        if candidate.verdict is Verdict.REJECTED and candidate.reason.endswith(": not supported"):
            name = candidate.reason.split(":", 1)[0]
            return NotAMeeting(Unlisted.UNSUPPORTED_PLATFORM,
                               f"It is a {name}: CoAgentor agents join Teams, Zoom and Google Meet meetings.",
                               platform=name)
    return NotAMeeting(Unlisted.NO_MEETING_LINK, _NO_LINK)


def _supported_platform_link(url: str, reason: str) -> bool:
    """A turned-down link on a Teams, Zoom or Meet host that is not a download or help page."""
    try:
        host = (urlsplit(url if "://" in url else "https://" + url).hostname or "").lower()
    except ValueError:
        return False
    teams_page = host.endswith(".teams.microsoft.com")  # a town hall's or webinar's event page
    lowered = reason.lower()
    return (is_supported_host(host) or teams_page) and "download" not in lowered and "dial-in" not in lowered


def _unsupported(platform: UnsupportedPlatform) -> NotAMeeting:
    return NotAMeeting(Unlisted.UNSUPPORTED_PLATFORM,
                       f"It is a {platform.name} meeting: CoAgentor agents join Teams, Zoom and Google Meet meetings.",
                       platform=platform.name)


def _texts(event: Mapping[str, Any]) -> list[str]:
    body = event.get("body")
    content = body.get("content") if isinstance(body, Mapping) else None
    return [content] if isinstance(content, str) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_graph_time(value: object) -> datetime | None:
    """Graph `dateTimeTimeZone` (requested in UTC via Prefer: outlook.timezone="UTC"); None when
    missing, not UTC, unparsable or outside 1971-8999."""
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
    if parsed.year not in _YEARS:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
