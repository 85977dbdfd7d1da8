"""Which calendar events are one meeting. Pure domain: no storage, no Graph client.

One real meeting turns up as several events: in two connected accounts, in two calendars of one
account, forwarded, or with the Teams join link in two forms (the long `meetup-join` link Graph keeps
in `onlineMeeting.joinUrl`, the short `/meet/<id>?p=` link newer invitations print). Those forms share
no identifier in the link, so the link alone cannot tie them. What does:

- Graph's `iCalUId` ("A unique identifier for an event across calendars. This ID is different for
  each occurrence in a recurring series", learn.microsoft.com/graph/api/resources/event): every
  attendee's copy of a meeting carries the same one. An occurrence (or exception) of a series is
  identified by its series' `iCalUId` and its `originalStart` (a plain occurrence listed sparse by
  calendarView delta carries neither its own `iCalUId` nor `originalStart`: its start is its
  original start). Identity string: `ical:<iCalUId>` or `ical:<series iCalUId>@<original start, UTC>`.
- The meeting's identity read from its link (`shared.meeting_links.MeetingLink.key`: a Teams thread
  or short-link id, a Zoom meeting number, a Meet code), plus the Teams meeting id printed in the
  invitation ("Meeting ID: 123 456 789 012"), which is the short link's id: a long-form copy that
  prints it is tied to a short-form copy.

Two copies are one meeting (`same_meeting`) when they share an identity — the `iCalUId`, or one of
the link identities — and their times overlap. The overlap is what keeps a standing Zoom room or a
Meet link reused for different meetings (Monday's stand-up, Tuesday's review) apart: the link is the
same, the meetings are not. Back-to-back meetings in one room (10:00-10:30, 10:30-11:00) do not
overlap. A copy moved to a time that no longer overlaps is a moved meeting (a new entry; the old one
lets go of it), as before.

`primary` is the identity a new meeting is named and deployed under: its join link's key, as before
(stable across the upgrade, equal across teammates holding the same link); a stored meeting keeps the
identity it was created with, so a change of these rules never renames a meeting that already has an
agent (see `services.meetings`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ICAL = "ical:"

# "Meeting ID: 254 123 456 789 01" in Teams invitations (HTML or text), the digits of the short link
# `https://teams.microsoft.com/meet/25412345678901?p=...`. Bounded, no nested quantifiers.
_PRINTED_TEAMS_ID = re.compile(r"Meeting ID:\s{0,4}(?:<[^<>]{0,200}>\s{0,4}){0,4}([0-9][0-9 \u00a0]{5,30}[0-9])",
                               re.IGNORECASE)
_ID_MARKERS = ("Meeting ID", "MEETING ID", "meeting ID", "Meeting Id", "meeting id")
_TEAMS_SHORT_LINK = re.compile(
    r"teams\.(?:microsoft\.com|live\.com|cloud\.microsoft|microsoft\.us)/meet/([0-9]{6,20})(?![0-9])",
    re.IGNORECASE,
)
_GLOBAL_OBJECT_ID = re.compile(r"(040000008200E00074C5B7101A82E008)([0-9A-F]{8})([0-9A-F]*)", re.IGNORECASE)
_MAX_SCANNED = 200_000  # characters of a body looked at for a printed meeting id


@dataclass(frozen=True)
class MeetingIdentity:
    """What ties one calendar copy of a meeting to the others.

    `ical`: `ical:<iCalUId>` (or `ical:<series iCalUId>@<original start>`), None when Graph gave none.
    `link`: the chosen join link's key (`MeetingLink.key`). `aliases`: further link identities the
    event itself shows for the same meeting (a printed Teams meeting id, a short link beside the long
    one). `start`/`end`: the copy's times, UTC."""

    ical: str | None
    link: str
    start: datetime
    end: datetime
    aliases: frozenset[str] = frozenset()

    @property
    def primary(self) -> str:
        """The identity a new meeting is named (`scheduling.meeting_key`) and its agent deployed under:
        the join link's, as before iCalUId was used, so keys stay stable across the upgrade and equal
        across teammates holding the same link. Copies with another link but the same iCalUId find
        the meeting by `same_meeting` (and rows two syncs made at once are merged at the next replan)."""
        return self.link

    @property
    def links(self) -> frozenset[str]:
        return self.aliases | {self.link}


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    """Half-open intervals overlap; two zero-length (or equal-start) meetings at one moment do too."""
    return a_start == b_start or (a_start < b_end and b_start < a_end)


def same_meeting(a: MeetingIdentity, b: MeetingIdentity) -> bool:
    """One meeting: a shared `iCalUId` or link identity, at overlapping times."""
    if not overlaps(a.start, a.end, b.start, b.end):
        return False
    if a.ical is not None and a.ical == b.ical:
        return True
    return not a.links.isdisjoint(b.links)


def ical_identity(event: Mapping[str, object], series_ical_uid: str | None, start: datetime) -> str | None:
    """`ical:<iCalUId>` of a single event; `ical:<series iCalUId>@<original start>` of an occurrence or
    exception (`seriesMasterId` set), its original start being `originalStart` or, for a plain
    occurrence, `start`. Falls back to the occurrence's own `iCalUId` when the series' is unknown."""
    own = _text(event.get("iCalUId"))
    if not _text(event.get("seriesMasterId")):
        return f"{ICAL}{own}" if own else None
    series = _text(series_ical_uid) or series_of(own)
    if not series:
        return f"{ICAL}{own}" if own else None
    original = _utc(event.get("originalStart")) or start
    return f"{ICAL}{series}@{original:%Y-%m-%dT%H:%M:%SZ}"


def series_of(occurrence_uid: str) -> str:
    """The series' `iCalUId` read from an occurrence's own, when it is an Exchange GlobalObjectId:
    an occurrence's is its series' with the instance date (year: 2 bytes, month, day) in bytes
    16-19, which are zero for the series ([MS-OXOCAL] 2.2.1.27, PidLidGlobalObjectId). An occurrence
    listed in full (calendarView, no series master at hand) then has the same identity as one
    completed from its master. "" for any other form."""
    match = _GLOBAL_OBJECT_ID.fullmatch(occurrence_uid)
    if match is None:
        return ""
    return f"{match.group(1)}00000000{match.group(3)}"


def printed_aliases(platform: str, texts: Iterable[str]) -> frozenset[str]:
    """Link identities a Teams invitation shows besides its chosen link: the meeting id it prints and
    any short `/meet/<id>` link (both `teams:meet:<id>`, as `meeting_links` keys a short link)."""
    if platform != "teams":
        return frozenset()
    found: set[str] = set()
    for text in texts:
        text = text[:_MAX_SCANNED]
        # Literal checks first (str.find speed): most bodies hold neither, and the regexes run only
        # where they can match.
        for marker in _ID_MARKERS:  # str.find, then the regex only where a marker stands
            at = text.find(marker)
            while at >= 0:
                match = _PRINTED_TEAMS_ID.match(text, at)
                if match is not None:
                    digits = re.sub(r"[^0-9]", "", match.group(1))
                    if 6 <= len(digits) <= 20:
                        found.add(f"teams:meet:{digits}")
                at = text.find(marker, at + len(marker))
        if "/meet/" in text or "/Meet/" in text or "/MEET/" in text:
            found.update(f"teams:meet:{m.group(1)}" for m in _TEAMS_SHORT_LINK.finditer(text))
    return frozenset(found)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _utc(value: object) -> datetime | None:
    """Graph's `originalStart` (Edm.DateTimeOffset, e.g. "2026-12-08T09:00:00Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(re.sub(r"(\.\d{1,6})\d*", r"\1", value.strip()).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
