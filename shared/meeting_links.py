"""Recognise the meeting join link in a Microsoft Graph calendar event.

``find_meeting_link(event)`` answers the question behind the help article's "My Outlook events
aren't appearing": does this event carry a Teams, Zoom or Google Meet link we can join, and which
meeting is it? ``explain(event)`` answers the follow-up: what did we look at, and why was each
other link turned down? Pure standard-library Python; nothing here knows about Azure or Graph
clients.

Where we look, in order (the meeting's own join button beats "backup" links in the notes):
``onlineMeeting.joinUrl``, ``onlineMeetingUrl``, ``location.displayName``/``locationUri``,
``locations[].displayName``/``locationUri``, ``subject``, then ``body.content`` (HTML or text).
Within one field the first recognised link in document order wins.

What a candidate goes through:

1. Found by a left-to-right scan for ``http(s)://`` and for scheme-less meeting hosts
   (``meet.google.com/...``, ``us02web.zoom.us/...``). A candidate ends where mail clients end a
   link in text: at whitespace, ``<``, ``>``, a quote, a backtick, ``|`` or a backslash (none of
   which RFC 3986 allows unescaped in a URL), and at a ``)``, ``]`` or ``}`` that closes nothing
   opened inside the link. So ``[Join](https://zoom.us/j/1?pwd=x)and``, ``(https://...)`` and
   ``[https://...](https://...)`` end before the bracket, while
   ``https://en.wikipedia.org/wiki/Foo_(bar)`` keeps its pair. ``<wbr>`` tags and zero-width
   characters, which Outlook puts inside long link texts, are cut out of the candidate (not out of
   the ``https://`` that starts it). A raw Teams ``context={"Tid":...}`` in a text body is followed
   past its quotes.
2. HTML entities are decoded (only ``;``-terminated ones: ``&para=`` in a query stays a parameter),
   trailing punctuation (``.,;:!?*``, quotes, unbalanced brackets) is dropped, and wrappers are
   peeled: Outlook Safe Links, Teams (ATP) Safe Links, Proofpoint URL Defense v1/v2/v3, Google and
   Barracuda redirects, nested up to ``MAX_UNWRAP_DEPTH`` deep.
3. The unwrapped URL is parsed for its platform and rebuilt from the parts needed to join: the join
   URL never carries tracking parameters, host tokens or userinfo from the original.

Meeting identity (``MeetingLink.key``), equal for every form of one meeting's link:

- Teams ``meetup-join`` (plain, launcher, ``/v2/#`` fragment, ``light-meetings`` coords):
  ``teams:<thread id>``, e.g. ``teams:19:meeting_NjQ1...@thread.v2``. The thread id is globally
  unique, so the tenant and organiser (``Tid``/``Oid``) are kept in the URL but not in the key.
  Channel meetings share their channel's thread, so their message id is appended:
  ``teams:19:abc...@thread.tacv2/1712345678901``.
  A meetup-join link without ``context`` is still accepted (the thread names the meeting), but
  ``explain`` says so: guests may not get in without the tenant.
- Teams short links ``/meet/<digits>?p=<passcode>``: ``teams:meet:<digits>``. A short link and a
  meetup-join link of the same meeting get different keys: nothing in the links ties them together.
- Zoom: ``zoom:<meeting number>`` whatever the host (``us02web.zoom.us``, ``acme.zoom.us``,
  ``zoom.com``), path (``/j/``, ``/w/``, ``/wc/join/``) or parameters; personal rooms
  ``zoom:my:<name>``. Zoom's other clouds (``ZOOM_CLOUDS``) number their meetings apart, so their
  keys carry the cloud: ``zoom:gov:<number>``, ``zoom:x:<number>``, ``zoom:cn:<number>``.
- Google Meet: ``google_meet:<code>`` with the code lower-cased and dashed (``abc-defg-hij``).

Zoom's official domains (``ZOOM_CLOUDS``; any subdomain of them, nothing else):

- ``zoom.us``, ``zoom.com``: the commercial cloud, with company vanity (``acme.zoom.us``) and
  regional web (``us02web.zoom.us``) subdomains. Zoom's firewall article lists ``*.zoom.us`` and
  ``*.zoom.com`` for browsers (support.zoom.com, KB0060561).
- ``zoomgov.com``: Zoom for Government, a separate (FedRAMP) cloud with its own meeting numbers.
- ``zoom-x.de``: Zoom X, Zoom operated by Deutsche Telekom for German organisations
  (blog.zoom.us/zoom-and-deutsche-telekom; German universities use it under the DFN framework
  contract). Links read ``https://acme.zoom-x.de/j/<number>``; calendar tools added the domain after
  users' reports (leits/MeetingBar pull request 658).
- ``zoom.com.cn``: Zoom's China service (matched by the same calendar tools, MeetingBar's Zoom
  pattern among them).

  Look-alikes (``zoom.us.example.com``, ``notzoom.us``, ``zoomx.de``, ``zoom-x.de.example.com``)
  are not Zoom. A cloud other than the commercial one keeps its own key prefix because we found
  nothing saying its numbers are shared with zoom.us: a key that splits one meeting in two costs at
  worst a second agent, one that merges two meetings costs a missed meeting.

The join URL (``MeetingLink.url``) keeps what joining needs: Teams ``context`` (Tid, Oid and any
other flags such as ``IsBroadcastMeeting``), the short-link passcode ``p``, Zoom ``pwd`` and ``tk``
(registrant token). It drops everything else (``from=addon``, ``authuser``, ``hs``, ``#success``,
``zak``...). Teams percent-escapes are written lower-case, as Teams itself writes them.

Several copies of one meeting (same key) are common: an invitation holds the link in a wrapped
``href`` and again as its text, or in ``onlineMeeting`` and the body. The first copy in priority
order is chosen, and each credential it lacks is taken from the first later copy that has it:
Zoom ``pwd`` and ``tk``, the short-link ``p``, Teams context ``Tid`` and ``Oid``. The chosen copy's
own values always win; ``explain`` names the copy each added credential came from.

Size: the join URL is ASCII and at most ``MAX_JOIN_URL_CHARS`` (2,048) characters, so the sync code
can store it without checks. A candidate whose join URL would be longer is turned down (a passcode of
a few thousand non-ASCII characters grows nine-fold when percent-encoded; a genuine Zoom ``pwd`` is
about 30 characters, a Teams context about 110), and a credential that would push a completed URL
past the bound is not added. Why 2,048: it is the length browsers, proxies and meeting agents have
long handled (Internet Explorer's limit was 2,083; the sitemaps protocol caps URLs at 2,048), and it
sits far inside Table Storage's 64 KiB (32K UTF-16 characters) string property.

Not meetings (each with its reason in ``explain``): Teams help, download, channel, chat and
meeting-options links, dial-in pages, ``zoom.us/download``, Zoom recordings, registration and
host-start links, ``meet.google.com/new``, bare domains, Skype for Business and other platforms.

Cost: per field, one lower-casing and four literal-led regex searches (``https?://`` and the three
families of scheme-less hosts), which the regex engine runs like ``str.find``; then work
proportional to the candidates' lengths. ``find_meeting_link`` steps over, unparsed, every link its
first characters show cannot be a meeting: a plain host that is neither a meeting host nor a wrapper
(hosts are classified once per distinct name), a Zoom or Teams path no meeting starts with, a Safe
Links, Google or Proofpoint wrapper whose target, as written in place, has such a host. It stops as
soon as the chosen link carries every credential its platform can have, and after that parses only
copies that could add one. Links in the exact shapes Teams, Zoom and Google write are read with one
regex each. ``explain`` parses everything, and property tests hold every shortcut to the general
path. Every regex is free of nested quantifiers, a candidate is at most ``MAX_URL_CHARS`` long,
unwrapping stops at ``MAX_UNWRAP_DEPTH`` and a field yields at most ``MAX_CANDIDATES_PER_FIELD``
candidates (a link after that many others in one field is not seen; ``explain`` notes it). A
megabyte of hostile body text takes milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import SplitResult, quote, unquote, urlsplit

__all__ = [
    "GOOGLE_MEET_HOST",
    "MAX_CANDIDATES_PER_FIELD",
    "MAX_JOIN_URL_CHARS",
    "MAX_UNWRAP_DEPTH",
    "MAX_URL_CHARS",
    "PLATFORMS",
    "TEAMS_HOSTS",
    "ZOOM_CLOUDS",
    "Candidate",
    "Explanation",
    "MeetingLink",
    "Platform",
    "PlatformRow",
    "Verdict",
    "explain",
    "find_meeting_link",
    "parse_join_url",
    "platform_of_host",
]

MAX_URL_CHARS = 8192
"""Longest candidate (as written, wrappers included) that is parsed at all, in characters."""
MAX_JOIN_URL_CHARS = 2048
"""Longest join URL ever returned, in characters (ASCII, so also bytes and UTF-16 units)."""
MAX_UNWRAP_DEPTH = 5
"""Most wrappers (Safe Links, Proofpoint...) peeled off one candidate; one more and it is turned down."""
MAX_CANDIDATES_PER_FIELD = 1000
"""Most candidate links looked at in one field; any after them are not seen."""
MAX_LOCATIONS = 50
_SHOWN_CHARS = 300
_MAX_SHOWN_CANDIDATES = 200


class Platform(StrEnum):
    TEAMS = "teams"
    ZOOM = "zoom"
    GOOGLE_MEET = "google_meet"



# Where meetings live: the hosts of PLATFORMS' rows (at the end of the module, with the recognisers).
TEAMS_HOSTS = frozenset(
    {
        "teams.microsoft.com",
        "teams.live.com",
        "teams.cloud.microsoft",
        "gov.teams.microsoft.us",
        "dod.teams.microsoft.us",
        "teams.microsoft.us",
    }
)
"""Hosts of Teams join links (commercial, consumer, the new ``cloud.microsoft`` and US government)."""
ZOOM_CLOUDS: Mapping[str, str] = MappingProxyType(
    {"zoom.us": "", "zoom.com": "", "zoomgov.com": "gov", "zoom-x.de": "x", "zoom.com.cn": "cn"}
)
"""Zoom's official domains (each with all its subdomains) -> the cloud's part of the key ("" = commercial)."""
GOOGLE_MEET_HOST = "meet.google.com"
_ZOOM_CLOUD_NAMES = {"": "Zoom", "gov": "ZoomGov", "x": "Zoom X", "cn": "Zoom China"}


@dataclass(frozen=True, slots=True)
class MeetingLink:
    """A joinable meeting: ``url`` to join it, ``key`` to recognise it wherever it turns up.

    ``url`` is an ASCII ``https://`` URL of at most ``MAX_JOIN_URL_CHARS`` characters.
    """

    platform: Platform
    url: str
    key: str


@dataclass(frozen=True)
class PlatformRow:
    """Everything the recogniser knows of one supported platform; `PLATFORMS` holds one per platform.

    - ``hosts``: the exact hosts of its join links; ``domains``: domains whose every subdomain is the
      platform's, each with its variant (Zoom's clouds number their meetings apart: the variant is
      part of the key). The scan looks for these hosts written without a scheme too.
    - ``meeting_paths``: the paths a meeting link starts with, so a link to anything else on the
      host is stepped over unparsed (None: any path may be one); ``meeting_in_fragment``: a bare
      host or "/" may carry the meeting in its #fragment (Teams' web app).
    - ``recognise(parts, url, host, variant)``: the join link (its URL, and its key, the same for
      every form of one meeting's link) or the reason it is none (a registration page, a recording,
      meeting options...: each not-joinable path with its reason).
    - ``as_written(url)``: the link in the exact shape the platform writes it, read in one regex
      (a shortcut the property tests hold to ``recognise``), or None to take the general path."""

    platform: Platform
    name: str
    short_name: str
    recognise: Callable[[SplitResult, str, str, str], tuple[_Join | None, str]]
    hosts: frozenset[str] = frozenset()
    domains: Mapping[str, str] = field(default_factory=dict)
    meeting_paths: tuple[str, ...] | None = None
    meeting_in_fragment: bool = False
    as_written: Callable[[str], tuple[_Join, str] | None] | None = None


class Verdict(StrEnum):
    CHOSEN = "chosen"
    SAME_MEETING = "same_meeting"
    NOT_CHOSEN = "not_chosen"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One link seen in one field, what it unwrapped to, and what we made of it."""

    source: str
    found: str
    url: str
    wrappers: tuple[str, ...]
    verdict: Verdict
    reason: str
    link: MeetingLink | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """What ``find_meeting_link`` would answer, from which field, and every link considered."""

    link: MeetingLink | None
    source: str | None
    candidates: tuple[Candidate, ...]
    fields: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# Public entry points


def find_meeting_link(event: Mapping[str, object]) -> MeetingLink | None:
    """The event's meeting link, or None when it has no supported one. Never raises.

    ``event`` is one Graph event as JSON-decoded data (``calendarView``/``delta`` item); anything
    else gives None. The answer is the first recognised link in priority order, completed with the
    credentials later copies of the same meeting carry (see the module docstring); its ``url`` is
    an ASCII ``https://`` URL of at most ``MAX_JOIN_URL_CHARS`` characters. The guard below keeps
    one odd event from stopping a calendar sync; ``explain`` runs unguarded, so the property tests
    that call it would surface any such failure.
    """
    try:
        choice = _Choice()
        for source, text in _fields(event):
            if "/" not in text:  # no link in it (the scan would say so, a little later)
                continue
            for raw, too_long in _scan(text, all_links=False):
                if too_long or (choice.join is not None and not _may_carry_credentials(raw)):
                    continue
                join = _evaluate(raw).join
                if join is not None:
                    choice.offer(join, source)
                    if choice.complete:
                        return choice.link
        return choice.link
    except Exception:
        return None


def explain(event: Mapping[str, object]) -> Explanation:
    """Every candidate link, where it was found, and the verdict on it.

    Same input as ``find_meeting_link``, whose answer is ``Explanation.link`` (``source`` names the
    field it came from). Lists at most 200 candidates (``notes`` counts the rest), each ``found``
    and ``url`` clipped to 300 characters. Raises nothing for JSON-shaped input (property-tested).
    """
    notes: list[str] = []
    fields: list[str] = []
    shown: list[Candidate] = []
    choice = _Choice()
    chosen_at: int | None = None
    seen_keys: set[tuple[str, str]] = set()
    omitted = 0
    for seen in _candidates(event, notes=notes, fields=fields):
        join = seen.join
        if join is not None and choice.join is None:
            choice.offer(join, seen.source)
            verdict, reason = Verdict.CHOSEN, seen.reason
        elif join is not None and choice.join is not None and join.link.key == choice.join.link.key:
            added = choice.offer(join, seen.source)
            verdict, reason = Verdict.SAME_MEETING, f"same meeting as the link chosen from {choice.source}"
            if added:
                reason += f"; its {_credential_names(added)} completes the join URL"
                notes.append(f"join URL completed with the {_credential_names(added)} from {seen.source}")
        elif join is not None:
            verdict = Verdict.NOT_CHOSEN
            reason = f"{seen.reason}, but the link from {choice.source} comes first"
        else:
            verdict, reason = Verdict.REJECTED, seen.reason
        dedupe = (seen.source, seen.url)
        if dedupe in seen_keys and verdict is not Verdict.CHOSEN:
            continue
        seen_keys.add(dedupe)
        if len(shown) >= _MAX_SHOWN_CANDIDATES and verdict is not Verdict.CHOSEN:
            omitted += 1
            continue
        if verdict is Verdict.CHOSEN:
            chosen_at = len(shown)
        shown.append(
            Candidate(
                source=seen.source,
                found=_clip(_masked(seen.found)),
                url=_clip(_masked(seen.url)),
                wrappers=seen.wrappers,
                verdict=verdict,
                reason=reason,
                link=join.link if join is not None else None,
            )
        )
    if chosen_at is not None:
        shown[chosen_at] = replace(shown[chosen_at], link=choice.link)
    if omitted:
        notes.append(f"{omitted} further candidates not listed")
    return Explanation(
        link=choice.link,
        source=choice.source,
        candidates=tuple(shown),
        fields=tuple(fields),
        notes=tuple(notes),
    )


def parse_join_url(url: str) -> MeetingLink | None:
    """Recognise one URL (wrapped or not, with or without scheme) as a meeting link; None if it is
    not one or is not a string. Never raises."""
    if not isinstance(url, str):
        return None
    try:
        return _evaluate(url).link
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Choosing among the links of one event


class _Join(NamedTuple):
    """A recognised meeting: its link, and the credentials behind it so that copies can be merged.

    ``slots`` names the credentials this kind of link can carry; ``values`` are what this copy
    carries, in the order written (for Teams meetup-join, its whole ``context``).
    """

    link: MeetingLink
    address: str
    slots: tuple[str, ...]
    values: tuple[tuple[str, object], ...]
    in_context: bool

    def missing(self) -> tuple[str, ...]:
        have = {name for name, value in self.values if value != ""}
        return tuple(name for name in self.slots if name not in have)

    def completed_by(self, other: _Join) -> tuple[_Join, tuple[str, ...]]:
        """This copy with the credentials it lacks taken from ``other``, and their names."""
        theirs = dict(other.values)
        added = tuple(name for name in self.missing() if theirs.get(name, "") != "")
        if not added:
            return self, ()
        values = {**dict(self.values), **{name: theirs[name] for name in added}}
        ordered = values.items() if self.in_context else ((n, values[n]) for n in self.slots if n in values)
        merged = _join(self.link.platform, self.link.key, self.address, self.slots, tuple(ordered), self.in_context)
        if len(merged.link.url) > MAX_JOIN_URL_CHARS:
            return self, ()
        return merged, added


def _join(
    platform: Platform,
    key: str,
    address: str,
    slots: tuple[str, ...] = (),
    values: tuple[tuple[str, object], ...] = (),
    in_context: bool = False,
) -> _Join:
    url = address
    if values and in_context:
        url += "?context=" + _context_query(values)
    elif values:
        url += "?" + "&".join(f"{name}={_quote_value(str(value))}" for name, value in values)
    return _Join(MeetingLink(platform, url, key), address, slots, values, in_context)


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


class _Choice:
    """The first meeting in priority order, completed by later copies of the same meeting."""

    __slots__ = ("complete", "join", "source")

    def __init__(self) -> None:
        self.join: _Join | None = None
        self.source: str | None = None
        self.complete = False

    def offer(self, join: _Join | None, source: str) -> tuple[str, ...]:
        """Consider one recognised link; the names of the credentials it added to the choice."""
        if join is None or self.complete:
            return ()
        if self.join is None:
            self.join, self.source, self.complete = join, source, not join.missing()
            return ()
        if not join.values or join.link.key != self.join.link.key:
            return ()  # a copy without credentials, or another meeting: nothing to take
        self.join, added = self.join.completed_by(join)
        if added:
            self.complete = not self.join.missing()
        return added

    @property
    def link(self) -> MeetingLink | None:
        return self.join.link if self.join is not None else None


def _may_carry_credentials(raw: str) -> bool:
    """False when ``raw`` cannot hold a credential, so a link already chosen cannot gain one from it.

    Every credential is read from a query (``?pwd=``, ``?p=``, ``?context=``, ``?coords=``, or
    ``&name=``), and a ``?`` or ``&`` can only come from the text itself, a percent-escape, an HTML
    entity or a character Proofpoint v3 replaced with ``*``.
    """
    return "?" in raw or "&" in raw or "%" in raw or "*" in raw


_CREDENTIAL_NAMES = {
    "pwd": "passcode (pwd)",
    "tk": "registrant token (tk)",
    "p": "passcode (p)",
    "Tid": "tenant (Tid)",
    "Oid": "organiser (Oid)",
}


def _credential_names(names: tuple[str, ...]) -> str:
    return " and ".join(_CREDENTIAL_NAMES.get(name, name) for name in names)


# --------------------------------------------------------------------------------------------
# Fields of a Graph event


@dataclass(frozen=True, slots=True)
class _Seen:
    source: str
    found: str
    url: str
    wrappers: tuple[str, ...]
    join: _Join | None
    reason: str


def _fields(event: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """(where, text) for each field looked at, in priority order; "" for a field that is absent."""
    if not isinstance(event, (dict, Mapping)):  # dict first: the Mapping ABC check is slow
        return
    online = event.get("onlineMeeting")
    join_url = online.get("joinUrl") if isinstance(online, (dict, Mapping)) else ""
    yield "onlineMeeting.joinUrl", join_url if isinstance(join_url, str) else ""
    legacy = event.get("onlineMeetingUrl")
    yield "onlineMeetingUrl", legacy if isinstance(legacy, str) else ""
    location = event.get("location")
    if isinstance(location, (dict, Mapping)):
        yield "location.displayName", _text(location.get("displayName"))
        if location.get("locationUri"):
            yield "location.locationUri", _text(location.get("locationUri"))
    locations = event.get("locations")
    if isinstance(locations, list) and locations:
        for i, item in enumerate(locations[:MAX_LOCATIONS]):
            if isinstance(item, (dict, Mapping)):
                yield f"locations[{i}].displayName", _text(item.get("displayName"))
                yield f"locations[{i}].locationUri", _text(item.get("locationUri"))
    subject = event.get("subject")
    yield "subject", subject if isinstance(subject, str) else ""
    body = event.get("body")
    if isinstance(body, (dict, Mapping)):
        kind = body.get("contentType")
        label = _BODY_LABELS.get(kind) if isinstance(kind, str) else None
        if label is None:
            label = f"body.content ({kind.lower()})" if isinstance(kind, str) and kind else "body.content"
        content = body.get("content")
        yield label, content if isinstance(content, str) else ""
    else:
        yield "body.content", ""


_BODY_LABELS = {"html": "body.content (html)", "text": "body.content (text)"}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _candidates(
    event: Mapping[str, object], notes: list[str] | None, fields: list[str] | None = None
) -> Iterator[_Seen]:
    for source, text in _fields(event):
        if fields is not None:
            fields.append(f"{source}: {len(text)} chars" if text else f"{source}: empty")
        if not text:
            continue
        capped: list[bool] = []
        for raw, too_long in _scan(text, capped=capped):
            if too_long:
                yield _Seen(source, raw, raw, (), None, f"longer than {MAX_URL_CHARS} characters")
                continue
            outcome = _evaluate(raw)
            yield _Seen(source, raw, outcome.url, outcome.wrappers, outcome.join, outcome.reason)
        if capped and notes is not None:
            notes.append(f"{source}: stopped after {MAX_CANDIDATES_PER_FIELD} candidates")


# --------------------------------------------------------------------------------------------
# Scanning a field for candidates

# Outlook breaks long link texts with <wbr> and zero-width characters; they are never part of a URL.
_INVISIBLE = re.compile(
    r"<wbr\s{0,8}/?>|&#8203;|&#x200b;|&ZeroWidthSpace;|&shy;|&#173;|[\u00ad\u200b\u200c\u200d\u2060\ufeff]",
    re.IGNORECASE,
)
_WBR = re.compile(r"<wbr\s{0,8}/?>", re.IGNORECASE)
_INVISIBLE_ENTITY = re.compile(r"&(?:#|shy;|zerowidthspace;)", re.IGNORECASE)  # the entities _INVISIBLE removes


def _literal_led(hosts: frozenset[str] | tuple[str, ...]) -> str:
    """``<common prefix>(?:<rest>|...)/`` for scheme-less hosts: a literal lead lets the engine skip fast.

    Hosts under another listed host (``gov.teams.microsoft.us``) are left out: the scan finds the
    parent and walks back to the start of the host.
    """
    roots = sorted(h for h in hosts if not any(h.endswith("." + other) for other in hosts))
    lead = min(roots)
    while not all(h.startswith(lead) for h in roots):
        lead = lead[:-1]
    if len(roots) == 1:
        return re.escape(roots[0]) + "/"
    rest = "|".join(re.escape(h[len(lead) :]) for h in sorted(roots, key=len, reverse=True))
    return f"{re.escape(lead)}(?:{rest})/"


# What \s matches, spelled out: a class of ranges is a plain bitmap to the engine, a category is not.
_WHITESPACE = "\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_URL_CHARS = f"""[^{_WHITESPACE}\\\\"'<>`|()\\[\\]{{}}]"""
"""Not whitespace, not a character RFC 3986 forbids that text puts around links, not a bracket."""
# Matched against the lower-cased text: a link with a scheme (its host as far as it is plain name
# characters, then the rest of its run), and the three families of scheme-less hosts.
_SCHEME_LINK = re.compile(r"https?://([a-z0-9.-]*)" + _URL_CHARS + "*")
# The same, on the original text, where lower-casing moves positions.
_SCHEME_LINK_ANY_CASE = re.compile(_SCHEME_LINK.pattern, re.IGNORECASE)
# (_BARE_HOSTS and _BARE_HOSTS_ANY_CASE, one per platform, are made from PLATFORMS at the end.)
_URL_RUN = re.compile(_URL_CHARS + "*")
_RUN_REST = re.compile(f"""[^{_WHITESPACE}\\\\"'<>`|]*""")
_OPENERS = {"(": 0, "[": 1, "{": 2}
_CLOSERS_AT = {")": 0, "]": 1, "}": 2}
_BRACKETS = frozenset("([{)]}")
_HOST_ENDS = frozenset("/?#\\\"'>`|")
# Where Safe Links and Google redirects keep their target when it is the first query parameter.

_HOST_RUN = re.compile(r"[A-Za-z0-9.-]{0,253}")
_NOT_BEFORE_BARE_HOST = frozenset("/@%=&?#+_~")
_RAW_CONTEXT_END = re.compile(r"[^\s<>}]{0,600}\}")


def _earliest(matches: list[re.Match[str] | None]) -> re.Match[str] | None:
    found = None
    for match in matches:
        if match is not None and (found is None or match.start() < found.start()):
            found = match
    return found


def _plain_other_host(text: str, haystack: str, link: re.Match[str]) -> bool:
    """True when ``_evaluate`` could only turn the link down, as far as its first characters tell.

    That is a plain host (all name characters, then its path, query, fragment or the end) that is
    neither a meeting host nor a wrapper; a Zoom or Teams host whose path cannot start a meeting; or a
    wrapper whose target begins, as written in place, with such a plain other host.
    """
    host_end = link.end(1)
    if host_end < len(text) and text[host_end] not in _HOST_ENDS and not text[host_end].isspace():
        return False  # a port, userinfo, an entity, a bracket, <wbr>...: let _evaluate decide
    known = _host_that_may_matter(link.group(1))
    if known is None:
        return True  # the usual case: some other site
    host, platform = known
    if platform is not None:
        return not _may_be_meeting_path(platform[0], haystack, host_end)
    for applies, written, enders in _TARGETS_IN_PLACE:
        if applies(host) and (target := written.match(text, host_end)) is not None:
            # The target's host is complete only where an (encoded) "/", "?" or "#" follows it.
            inner = target.group(1).lower().rstrip(".")
            return text.startswith(enders, target.end(1)) and not _may_matter(inner)
    return False


def _may_be_meeting_path(row: PlatformRow, haystack: str, start: int) -> bool:
    """Whether the path written at ``start`` could, once decoded, be one the platform's recogniser reads."""
    if row.meeting_paths is None:
        return True
    window = haystack[start : start + 16].lower()
    if not window.isascii() or "%" in window or "&" in window or "<" in window:
        return True  # escapes, entities and <wbr> can change the path: let _evaluate decide
    if row.meeting_in_fragment:  # a bare host or "/" may carry the meeting in its #fragment
        return not window.startswith("/") or not window[1:2].isalnum() or window.startswith(row.meeting_paths)
    return window.startswith(row.meeting_paths)


@lru_cache(maxsize=4096)  # hosts repeat all through a calendar (aka.ms, the tenant's SharePoint...)
def _host_that_may_matter(name: str) -> tuple[str, tuple[PlatformRow, str] | None] | None:
    """The host as ``_split`` gives it and its platform, if it is a meeting host or a wrapper; else None."""
    host = name.lower().rstrip(".")
    return (host, _platform_of(host)) if _may_matter(host) else None


def _may_matter(host: str) -> bool:
    """The host is a meeting host or a wrapper (what ``_unwrap_once`` and ``_platform_of`` accept)."""
    return host in _HOSTS_THAT_MATTER or host.endswith(_DOMAIN_SUFFIXES) or _SAFELINKS in "." + host


def _scan(text: str, all_links: bool = True, capped: list[bool] | None = None) -> Iterator[tuple[str, bool]]:
    """Yields (candidate, too_long) left to right; the position only moves forward.

    With ``all_links=False`` a link ``_evaluate`` could only turn down (see ``_plain_other_host``)
    is counted and stepped over but not yielded. ``capped`` gets True appended when the field has
    more than ``MAX_CANDIDATES_PER_FIELD`` candidates.
    """
    if "/" not in text:  # every candidate has one: "https://", "zoom.us/", "meet.google.com/"...
        return
    lowered = text.lower()
    # Lower-casing keeps positions unless a character expands (U+0130): then search case-blind.
    if len(lowered) == len(text):
        links, bare_hosts, haystack = _SCHEME_LINK, _BARE_HOSTS, lowered
    else:
        links, bare_hosts, haystack = _SCHEME_LINK_ANY_CASE, _BARE_HOSTS_ANY_CASE, text
    size = len(text)
    link = links.search(haystack)
    link_start = link.start() if link is not None else size
    if link is not None and link_start == 0 and link.end() == size:
        bare: list[re.Match[str] | None] = [None] * len(bare_hosts)  # one link: hosts are inside it
    else:
        bare = [pattern.search(haystack) for pattern in bare_hosts]
    hit = _earliest(bare)
    hit_start = hit.start() if hit is not None else size
    pos = 0
    count = 0
    while pos < size:
        # Search again from the position only for what was passed: covered text is never walked.
        if link_start < pos:
            link = links.search(haystack, pos)
            link_start = link.start() if link is not None else size
        if hit_start < pos:
            for i, passed in enumerate(bare):
                if passed is not None and passed.start() < pos:
                    bare[i] = bare_hosts[i].search(haystack, pos)
            hit = _earliest(bare)
            hit_start = hit.start() if hit is not None else size
        if link_start < hit_start and link is not None:
            end = link.end()
            start = link_start
            other = not all_links and _plain_other_host(text, haystack, link)
        elif hit is not None:
            start = _bare_host_start(text, pos, hit_start)
            if start < 0:
                pos = hit.end()
                continue
            run = _URL_RUN.match(text, start)
            end = run.end() if run else start
            other = False
        else:
            return
        if count >= MAX_CANDIDATES_PER_FIELD:
            if capped is not None:
                capped.append(True)
            return
        count += 1
        piece: int = start
        pieces: Sequence[str] = ()
        if end < size:
            after = text[end]
            if after in _BRACKETS or (after == "<" and text[end : end + 4].lower() == "<wbr"):
                end, piece, pieces = _extend(text, start, end)
            if end - start > MAX_URL_CHARS:
                rest = _RUN_REST.match(text, end)
                pos = rest.end() if rest else end
                if not other:
                    yield text[start : start + _SHOWN_CHARS], True
                continue
            if end < size and text[end] == '"' and text.rfind("context={", max(start, end - 600), end) >= 0:
                end = _follow_raw_context(text, start, end)
        elif end - start > MAX_URL_CHARS:
            if not other:
                yield text[start : start + _SHOWN_CHARS], True
            return
        pos = end
        if other:
            continue  # the usual case: a link to some other site, stepped over
        raw = "".join(pieces) + text[piece:end] if pieces else text[start:end]
        if not raw.isascii() or ("&" in raw and _INVISIBLE_ENTITY.search(raw)):
            raw = _INVISIBLE.sub("", raw)
        yield raw, False


def _extend(text: str, start: int, end: int) -> tuple[int, int, Sequence[str]]:
    """Carry on past brackets and ``<wbr>`` from ``end``: the URL's end, its last piece's start, the pieces before.

    A bracket belongs to the URL if it opens, or closes one opened inside the URL; any other
    closing bracket ends it, as mail clients end links. ``<wbr>`` tags split the link text into
    pieces, which are joined without them.
    """
    stop = min(len(text), start + MAX_URL_CHARS + 1)
    depth = [0, 0, 0]
    pieces: list[str] = []
    piece = start
    while end < stop:
        char = text[end]
        if char in _OPENERS:
            depth[_OPENERS[char]] += 1
        elif char in _CLOSERS_AT and depth[_CLOSERS_AT[char]]:
            depth[_CLOSERS_AT[char]] -= 1
        elif char == "<" and (tag := _WBR.match(text, end)):
            pieces.append(text[piece:end])
            piece = end = tag.end()
            run = _URL_RUN.match(text, end, stop)
            end = run.end() if run else end
            continue
        else:
            break
        run = _URL_RUN.match(text, end + 1, stop)
        end = run.end() if run else end + 1
    return end, piece, pieces


def _bare_host_start(text: str, floor: int, start: int) -> int:
    """Start of a scheme-less host such as ``us02web.zoom.us``; -1 if inside another token."""
    limit = max(floor, start - 253)
    run = _HOST_RUN.match(text[limit:start][::-1])
    s = start - (run.end() if run else 0)
    if s > 0 and text[s - 1] in _NOT_BEFORE_BARE_HOST and not text[max(0, s - 10) : s].lower().endswith(_APP_SCHEMES):
        return -1
    return s


def _follow_raw_context(text: str, start: int, end: int) -> int:
    """A text body may carry Teams' context unencoded: ``context={"Tid":"...","Oid":"..."}``."""
    if end >= len(text) or text[end] != '"':
        return end
    opening = text.rfind("context={", max(start, end - 600), end)
    if opening < 0 or text.find("}", opening, end) >= 0:
        return end
    closing = _RAW_CONTEXT_END.match(text, end)
    return closing.end() if closing else end


# --------------------------------------------------------------------------------------------
# One candidate: decode, unwrap, recognise


class _Outcome(NamedTuple):
    url: str
    wrappers: tuple[str, ...]
    join: _Join | None
    reason: str

    @property
    def link(self) -> MeetingLink | None:
        return self.join.link if self.join is not None else None


_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_CUT = re.compile(r"[\s<>]")
_SCHEME = re.compile(r"https?://", re.IGNORECASE)
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_TRAILING = frozenset(".,;:!?*'\")]}")


def _decode_entities(text: str) -> str:
    for _ in range(2):  # "&amp;amp;" happens when an escaped body is escaped again
        if "&" not in text or ";" not in text:  # every entity _ENTITY decodes ends with ";"
            break
        if text.count("&") == text.count("&amp;"):  # only &amp;: what one pass of _ENTITY would do
            decoded = text.replace("&amp;", "&")
        else:
            decoded = _ENTITY.sub(_decode_entity, text)
        if decoded == text:
            break
        text = decoded
    return text


_COMMON_ENTITIES = {"&amp;": "&", "&quot;": '"', "&lt;": "<", "&gt;": ">", "&#39;": "'"}


def _decode_entity(match: re.Match[str]) -> str:
    entity = match.group()
    return _COMMON_ENTITIES.get(entity) or html.unescape(entity)


def _tidy(raw: str) -> str:
    text = _decode_entities(raw)
    # str.isprintable() is False for every whitespace character but " ": only then search for the cut.
    if " " in text or "<" in text or ">" in text or not text.isprintable():
        cut = _CUT.search(text)
        if cut:
            text = text[: cut.start()]
    return _strip_trailing(text)


def _strip_trailing(text: str) -> str:
    end = len(text)
    if not end or text[-1] not in _TRAILING:
        return text
    counts = {c: text.count(c) for c in "()[]{}"}
    while end:
        c = text[end - 1]
        if c in ".,;:!?*'\"":
            end -= 1
            continue
        opener = _CLOSERS.get(c)
        if opener is not None and counts[opener] < counts[c]:
            counts[c] -= 1
            end -= 1
            continue
        break
    return text[:end]


def _evaluate(raw: str) -> _Outcome:
    url = _tidy(raw)
    if url[:10].lower().startswith(_APP_SCHEMES):  # the Zoom app's own link: its host and path are Zoom's
        url = "https://" + url.split("://", 1)[1]
    if not _SCHEME.match(url):
        url = "https://" + url
    wrappers: list[str] = []
    for _ in range(MAX_UNWRAP_DEPTH + 1):
        for as_written in _AS_WRITTEN:  # the exact shapes the platforms write, one regex each
            if (read := as_written(url)) is not None:
                return _Outcome(url, tuple(wrappers), *read)
        split = _split(url)
        if split is None:
            return _Outcome(url, tuple(wrappers), None, "not a valid web address")
        parts, host = split
        unwrapped = _unwrap_once(parts, host, url)
        if unwrapped is None:
            join, reason = _recognise(parts, host, url)
            if join is not None and len(join.link.url) > MAX_JOIN_URL_CHARS:
                reason = f"{reason}, but its join URL would be longer than {MAX_JOIN_URL_CHARS} characters"
                return _Outcome(url, tuple(wrappers), None, reason)
            return _Outcome(url, tuple(wrappers), join, reason)
        name, inner = unwrapped
        wrappers.append(name)
        if len(wrappers) > MAX_UNWRAP_DEPTH:
            break
        if inner is None:
            return _Outcome(url, tuple(wrappers), None, f"{name} link whose target cannot be read")
        inner = _tidy(inner)
        if not _SCHEME.match(inner):
            return _Outcome(inner, tuple(wrappers), None, f"{name} link to something that is not a web address")
        url = inner
    return _Outcome(url, tuple(wrappers), None, f"wrapped more than {MAX_UNWRAP_DEPTH} times")


# What urlsplit() gives for a URL whose authority is a plain host name with an optional port (every
# platform and wrapper link); any other authority (userinfo, IPv6, non-ASCII...) goes to urlsplit.
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9.-]+)(:[0-9]*)?((?:/[^?#]*)?)(?:\?([^#]*))?(?:#(.*))?", re.IGNORECASE | re.ASCII | re.DOTALL
)


def _split(url: str) -> tuple[SplitResult, str] | None:
    """The URL's parts and its lower-case host (without port, userinfo or final dot)."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None:
        scheme, host, port, path, query, fragment = plain.groups()
        parts = SplitResult(scheme.lower(), host + (port or ""), path, query or "", fragment or "")
        host = host.lower().rstrip(".")
        return (parts, host) if host else None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return None
    return (parts, host) if host else None


def _query_param(query: str, name: str) -> str | None:
    """The first raw (still percent-encoded) value of ``name`` in a query string."""
    prefix = name + "="
    for pair in query.split("&"):
        if pair[: len(prefix)].lower() == prefix:
            return pair[len(prefix) :]
    return None


def _decoded_param(query: str, name: str) -> str | None:
    value = _query_param(query, name)
    return unquote(value) if value is not None else None


# --------------------------------------------------------------------------------------------
# Wrappers

# Proofpoint's run-length alphabet: "**A" stands for 2 replaced characters, "**_" for 65.
_PP_RUN_LENGTHS = {
    c: i + 2 for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_")
}
_PP_SINGLE_SLASH = re.compile(r"([a-z0-9+.-]{1,20}:/)(?=[^/])", re.IGNORECASE)
_SAFELINKS = ".safelinks.protection."  # nam12.safelinks.protection.outlook.com, gcc02...office365.us
_GOOGLE_HOSTS = frozenset({"www.google.com", "google.com"})
_TEAMS_SAFELINKS_HOSTS = frozenset({"statics.teams.cdn.office.net", "staticsint.teams.cdn.office.net"})
_OWA_HOSTS = frozenset({"outlook.office.com", "outlook.office365.com", "outlook.live.com"})
_PROOFPOINT_HOSTS = frozenset({"urldefense.proofpoint.com", "urldefense.com"})
_BARRACUDA_HOST = "linkprotect.cudasvc.com"
_WRAPPER_HOSTS = _GOOGLE_HOSTS | _TEAMS_SAFELINKS_HOSTS | _OWA_HOSTS | _PROOFPOINT_HOSTS | {_BARRACUDA_HOST}
# (_HOSTS_THAT_MATTER: the wrappers' and every platform's hosts, made from PLATFORMS at the end.)
# Wrappers whose target's host can be read where it is written: Safe Links and Google redirects
# when the target is the first query parameter (percent-encoded), Proofpoint v2 (-XX for %XX, _ for
# /) and v3 (the target as is). With what may follow that host: only an unambiguous "/", "?", "#".
_TARGETS_IN_PLACE: tuple[tuple[Callable[[str], bool], re.Pattern[str], tuple[str, ...]], ...] = (
    (
        lambda host: _SAFELINKS in "." + host,
        re.compile(r"/?\?url=https?%3a%2f%2f([a-z0-9.-]+)", re.IGNORECASE | re.ASCII),
        ("%2f", "%2F", "%3f", "%3F", "%23"),
    ),
    (
        _GOOGLE_HOSTS.__contains__,
        re.compile(r"/url\?q=https?%3a%2f%2f([a-z0-9.-]+)", re.IGNORECASE | re.ASCII),
        ("%2f", "%2F", "%3f", "%3F", "%23"),
    ),
    (
        "urldefense.proofpoint.com".__eq__,
        re.compile(r"/v2/url\?u=https?-3a__([a-z0-9.]+)", re.IGNORECASE | re.ASCII),
        ("_", "-3f", "-3F", "-23"),
    ),
    (
        _PROOFPOINT_HOSTS.__contains__,
        re.compile(r"/v3/__https?://([a-z0-9.-]+)", re.IGNORECASE | re.ASCII),
        ("/",),
    ),
)


def _unwrap_once(parts: SplitResult, host: str, url: str) -> tuple[str, str | None] | None:
    """(wrapper name, target) if ``url`` is a known link wrapper, else None."""
    path = parts.path
    if _SAFELINKS in "." + host:
        return "Outlook Safe Links", _decoded_param(parts.query, "url")
    if host not in _WRAPPER_HOSTS:
        return None
    if host in _TEAMS_SAFELINKS_HOSTS and path.lower().startswith("/evergreen-assets/safelinks/"):
        return "Teams Safe Links", _decoded_param(parts.query, "url")
    if host in _OWA_HOSTS and path.lower() == "/mail/safelink.html":
        return "Outlook Safe Links", _decoded_param(parts.query, "url")
    if host == "urldefense.proofpoint.com" and path.startswith("/v1/url"):
        return "Proofpoint v1", _decoded_param(parts.query, "u")
    if host == "urldefense.proofpoint.com" and path.startswith("/v2/url"):
        value = _query_param(parts.query, "u")
        return "Proofpoint v2", unquote(value.translate(_PP_V2)) if value is not None else None
    if host in _PROOFPOINT_HOSTS and path.startswith("/v3/__"):
        return "Proofpoint v3", _proofpoint_v3(url)
    if host in _GOOGLE_HOSTS and path == "/url":
        target = _decoded_param(parts.query, "q") or _decoded_param(parts.query, "url")
        return "Google redirect", target
    if host == _BARRACUDA_HOST and path == "/url":
        return "Barracuda Link Protection", _decoded_param(parts.query, "a")
    return None


_PP_V2 = str.maketrans("-_", "%/")


def _proofpoint_v3(url: str) -> str | None:
    """``https://urldefense.com/v3/__<url>__;<base64 of replaced chars>!!<ids>$``.

    Characters Proofpoint considered unsafe were replaced by ``*`` (one) or ``**<c>`` (a run whose
    length ``<c>`` encodes: A=2 ... _=65); the originals are base64url-encoded after ``__;``.
    """
    begin = url.find("/v3/__")
    if begin < 0:
        return None
    begin += len("/v3/__")
    middle = url.rfind("__;", begin)  # the last one: a v3 link may itself be wrapped in v3
    if middle < 0:
        return None
    encoded = url[begin:middle]
    bang = url.find("!", middle + 3)
    replaced_b64 = url[middle + 3 : bang if bang >= 0 else len(url)]
    try:
        replaced = base64.urlsafe_b64decode(replaced_b64 + "==").decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    single = _PP_SINGLE_SLASH.match(encoded)
    if single:
        encoded = single.group(1) + "/" + encoded[single.end() :]
    text = unquote(encoded)
    out: list[str] = []
    pos = 0
    marker = 0
    while True:
        star = text.find("*", pos)
        if star < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:star])
        if text.startswith("**", star) and star + 2 < len(text):
            length = _PP_RUN_LENGTHS.get(text[star + 2])
            if length is None or marker + length > len(replaced):
                return None
            out.append(replaced[marker : marker + length])
            marker += length
            pos = star + 3
        else:
            if marker >= len(replaced):
                return None
            out.append(replaced[marker])
            marker += 1
            pos = star + 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Platforms


_OTHER_HOSTS: dict[str, str] = {
    "dialin.teams.microsoft.com": "Teams dial-in numbers page, not a join link",
    "events.teams.microsoft.com": "Teams town hall or webinar event page (registration and details), not a join "
                                  "link: the join link is the meeting's own Teams link",
    "aka.ms": "Microsoft help link, not a meeting",
    "microsoft.com": "Microsoft web page (help or download), not a meeting",
    "microsoft.us": "Microsoft web page, not a meeting",
    "office.com": "Microsoft 365 web page, not a meeting",
    "lync.com": "Skype for Business meeting: not supported",
    "skype.com": "Skype meeting: not supported",
    "webex.com": "Webex meeting: not supported",
    "gotomeeting.com": "GoTo Meeting: not supported",
    "gotomeet.me": "GoTo Meeting: not supported",
    "goto.com": "GoTo Meeting: not supported",
    "bluejeans.com": "BlueJeans meeting: not supported",
    "chime.aws": "Amazon Chime meeting: not supported",
    "whereby.com": "Whereby meeting: not supported",
    "meet.jit.si": "Jitsi meeting: not supported",
    "mimecast.com": "Mimecast-protected link: its target cannot be read without opening it",
    "tel.meet": "Google Meet dial-in numbers page, not a join link",
    "google.com": "Google web page, not a meeting",
}


@lru_cache(maxsize=4096)
def _platform_of(host: str) -> tuple[PlatformRow, str] | None:
    """The platform a host belongs to and its variant (Zoom's cloud: part of the key); None for any
    other host. Exact hosts first, then domains with all their subdomains, longest domain first."""
    row = _BY_HOST.get(host)
    if row is not None:
        return row, ""
    if not host.endswith(_DOMAIN_SUFFIXES) and host not in _BY_DOMAIN:
        return None
    for domain, (row, variant) in _BY_DOMAIN.items():  # longest first: zoom.com.cn before zoom.com
        if host == domain or host.endswith("." + domain):
            return row, variant
    return None


def platform_of_host(host: str) -> Platform | None:
    """The supported platform whose join links use this host (any case, a final dot ignored)."""
    found = _platform_of(host.lower().rstrip("."))
    return found[0].platform if found is not None else None


def _recognise(parts: SplitResult, host: str, url: str) -> tuple[_Join | None, str]:
    found = _platform_of(host)
    if found is None:
        # The host and each parent domain, most specific first: www.microsoft.com, microsoft.com, com.
        labels = host.split(".")
        for i in range(len(labels)):
            reason = _OTHER_HOSTS.get(".".join(labels[i:]))
            if reason is not None:
                return None, reason
        return None, f"not a {_SUPPORTED} address"
    row, variant = found
    return row.recognise(parts, url, host, variant)


# Teams ----------------------------------------------------------------------------------------

_MEETUP_JOIN = re.compile(r"/l/meetup-join/", re.IGNORECASE)
_THREAD_ID = re.compile(r"19:[A-Za-z0-9_-]{1,400}@thread\.(v2|tacv2|skype)", re.IGNORECASE | re.ASCII)
_SEGMENT_END = re.compile(r"[/?#&]")
_MESSAGE_ID = re.compile(r"/([0-9]{1,20})(?![0-9])")
_CONTEXT = re.compile(r"[?&]context=([^&#\s]{1,4096})", re.IGNORECASE)
_SHORT_LINK = re.compile(r"/meet/([0-9]{6,20})(?![0-9A-Za-z])", re.IGNORECASE)
_PASSCODE = re.compile(r"[?&]p=([^&#\s]{1,256})")
_COORDS = re.compile(r"[?&]coords=([A-Za-z0-9+/=_%-]{1,4096})", re.IGNORECASE)
# Teams writes percent-escapes lower-case (%3a, %7b); everything but RFC 3986's unreserved set is escaped.
_TEAMS_ESCAPES = {
    byte: f"%{byte:02x}" for byte in range(256) if chr(byte) not in string.ascii_letters + string.digits + "-._~"
}
_TEAMS_CONTEXT_CREDENTIALS = ("Tid", "Oid")
_CONTEXT_VALUES = (str, bool, int, float)
# The shapes Teams itself writes (Graph's joinUrl, invitations), read without unquote and json.loads:
# a thread id escaped once, and a context of tenant and organiser ids made of unreserved characters.
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
_THREAD_ESCAPED = re.compile(r"19%3[aA]([A-Za-z0-9_-]{1,400})%40thread\.(v2|tacv2|skype)", re.ASCII)
_CONTEXT_ESCAPED = re.compile(
    r"%7[bB]%22Tid%22%3[aA]%22([A-Za-z0-9._~-]*)%22%2[cC]%22Oid%22%3[aA]%22([A-Za-z0-9._~-]*)%22%7[dD]"
)

# Paths a Teams meeting link starts with; "" and "/" too (the meeting then sits in the #fragment).
_TEAMS_MEETING_PATHS = ("/l/meetup-join/", "/meet/", "/light-meetings/", "/dl/launcher/", "/_", "/v2")
_TEAMS_NOT_MEETINGS: tuple[tuple[str, str], ...] = (
    ("/l/channel/", "link to a Teams channel, not a meeting"),
    ("/l/chat/", "link to a Teams chat, not a meeting"),
    ("/l/team/", "link to a team, not a meeting"),
    ("/l/message/", "link to a Teams message, not a meeting"),
    ("/l/entity/", "link to a Teams app, not a meeting"),
    ("/l/app/", "link to a Teams app, not a meeting"),
    ("/l/file/", "link to a file in Teams, not a meeting"),
    ("/l/meeting/new", "link that schedules a new Teams meeting"),
    ("/meetingoptions", "meeting options page (organiser settings), not a join link"),
    ("/download", "Teams download page, not a meeting"),
)


def _teams(parts: SplitResult, url: str, host: str, variant: str = "") -> tuple[_Join | None, str]:
    path = parts.path.lower()
    if "%" in path and not path.startswith("/l/meetup-join/"):
        path = unquote(path)
    if path not in ("", "/") and not path.startswith(_TEAMS_MEETING_PATHS):
        for prefix, reason in _TEAMS_NOT_MEETINGS:
            if path.startswith(prefix):
                return None, reason
        return None, "Teams link that is not a meeting join link"
    if path.startswith("/l/meetup-join/"):
        return _teams_meetup_join(url, host)
    if path.startswith("/meet/"):
        return _teams_short_link(url, host)
    if path.startswith("/light-meetings/"):
        return _teams_light_meeting(url, host)
    # Launcher and web-app forms carry the meeting path in ?url= or in the #fragment, sometimes
    # percent-encoded.
    inner = unquote(url) if "%2f" in url.lower() else url
    if _MEETUP_JOIN.search(inner):
        return _teams_meetup_join(inner, host)
    if _SHORT_LINK.search(inner):
        return _teams_short_link(inner, host)
    return None, "Teams web app link without a meeting in it"


def _teams_meetup_join(url: str, host: str) -> tuple[_Join | None, str]:
    marker = _MEETUP_JOIN.search(url)
    if marker is None:
        return None, "Teams meetup-join link without a meeting"
    tail = url[marker.end() :]
    cut = _SEGMENT_END.search(tail)
    segment = tail[: cut.start()] if cut else tail
    rest = tail[cut.start() :] if cut else ""
    as_teams_writes_it = _THREAD_ESCAPED.fullmatch(segment)
    if as_teams_writes_it is not None:
        thread = "19:{}@thread.{}".format(*as_teams_writes_it.groups())
    else:
        thread = unquote(segment)
        if "%" in thread:
            thread = unquote(thread)
    match = _THREAD_ID.fullmatch(thread)
    if match is None:
        return None, "Teams meetup-join link without a valid meeting thread id"
    thread = thread[: match.start(1)] + match.group(1).lower()
    message = _MESSAGE_ID.match(rest)
    message_id = message.group(1) if message else "0"
    context = _teams_context(rest)
    return _meetup_link(host, thread, message_id, context)


def _meetup_link(host: str, thread: str, message_id: str, context: dict[str, object] | None) -> tuple[_Join, str]:
    """A Teams town hall (or live event) is a meetup-join link whose context says
    `IsBroadcastMeeting: true`: joined like any meeting in every form it comes in (plain, launcher,
    web-app fragment, light-meetings coordinates), the flag kept in the join URL so the agent joins
    as an attendee of the broadcast. Its event page (events.teams.microsoft.com) is no join link."""
    # The thread id passed _THREAD_ID, so ":" and "@" are its only characters to escape.
    address = f"https://{host}/l/meetup-join/{thread.replace(':', '%3a').replace('@', '%40')}/{message_id}"
    key = f"teams:{thread}" if message_id == "0" else f"teams:{thread}/{message_id}"
    reason = "Teams meeting" if context else "Teams meeting (link has no tenant context)"
    values = tuple(context.items()) if context else ()
    return _join(Platform.TEAMS, key, address, _TEAMS_CONTEXT_CREDENTIALS, values, in_context=True), reason


# The join URL as Teams writes it (Graph's onlineMeeting.joinUrl, every invitation) is already the
# join URL _meetup_link would write: recognised in one step, with a property test that it agrees.
_TEAMS_HOST_ALTERNATIVES = "|".join(re.escape(host) for host in sorted(TEAMS_HOSTS))
_TEAMS_JOIN_URL = re.compile(
    rf"(https://(?:{_TEAMS_HOST_ALTERNATIVES})/l/meetup-join/"
    r"19%3a([A-Za-z0-9_-]{1,400})%40thread\.(v2|tacv2|skype)/([0-9]{1,20}))"
    r"\?context=%7b%22Tid%22%3a%22([A-Za-z0-9._~-]{0,64})%22%2c%22Oid%22%3a%22([A-Za-z0-9._~-]{0,64})%22%7d",
    re.ASCII,
)


def _teams_join_url(written: re.Match[str]) -> _Join:
    address, thread_id, kind, message_id, tid, oid = written.groups()
    thread = f"19:{thread_id}@thread.{kind}"
    key = f"teams:{thread}" if message_id == "0" else f"teams:{thread}/{message_id}"
    values: tuple[tuple[str, object], ...] = (("Tid", tid), ("Oid", oid))
    return _Join(MeetingLink(Platform.TEAMS, written.string, key), address, _TEAMS_CONTEXT_CREDENTIALS, values, True)


def _teams_context(rest: str) -> dict[str, object] | None:
    match = _CONTEXT.search(rest)
    if match is None:
        return None
    value = match.group(1)
    as_teams_writes_it = _CONTEXT_ESCAPED.fullmatch(value)
    if as_teams_writes_it is not None:  # what unquote and json.loads would make of it, read in one step
        return {"Tid": as_teams_writes_it.group(1), "Oid": as_teams_writes_it.group(2)}
    for _ in range(3):
        if value.startswith("{"):
            break
        value = unquote(value)
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    return {k: v for k, v in parsed.items() if isinstance(v, _CONTEXT_VALUES)}


def _context_query(context: tuple[tuple[str, object], ...]) -> str:
    """``_teams_quote(json.dumps(dict(context), separators=(",", ":")))``, written piece by piece.

    Names and string values made only of unreserved characters (the GUIDs Teams puts there) are
    copied as they are instead of being escaped character by character. ``context`` has unique names.
    """
    return "%7b" + "%2c".join(f"{_json_quoted(name)}%3a{_json_quoted(value)}" for name, value in context) + "%7d"


def _json_quoted(value: object) -> str:
    if isinstance(value, str) and _UNRESERVED.fullmatch(value):
        return f"%22{value}%22"
    return _teams_quote(_COMPACT_JSON.encode(value))


def _teams_quote(text: str) -> str:
    """``quote(text, safe="")`` with lower-case escapes (one C-level pass over the UTF-8 bytes)."""
    return text.encode().decode("latin-1").translate(_TEAMS_ESCAPES)


def _teams_short_link(url: str, host: str) -> tuple[_Join | None, str]:
    match = _SHORT_LINK.search(url)
    if match is None:
        return None, "Teams /meet/ link without a numeric meeting id"
    passcode_match = _PASSCODE.search(url, match.end())
    passcode = unquote(passcode_match.group(1)) if passcode_match else None
    return _short_link(host, match.group(1), passcode)


def _short_link(host: str, meeting_id: str, passcode: str | None) -> tuple[_Join, str]:
    reason = "Teams meeting (meeting id link)" if passcode else "Teams meeting (meeting id link, no passcode)"
    values: tuple[tuple[str, object], ...] = (("p", passcode),) if passcode else ()
    join = _join(Platform.TEAMS, f"teams:meet:{meeting_id}", f"https://{host}/meet/{meeting_id}", ("p",), values)
    return join, reason


def _teams_light_meeting(url: str, host: str) -> tuple[_Join | None, str]:
    match = _COORDS.search(url)
    if match is None:
        return None, "Teams light-meetings link without meeting coordinates"
    coords = unquote(match.group(1))
    padded = coords + "=" * (-len(coords) % 4)
    try:
        urlsafe = "-" in padded or "_" in padded
        decoded = base64.b64decode(padded, altchars=b"-_") if urlsafe else base64.b64decode(padded)
        data = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        return None, "Teams light-meetings coordinates cannot be read"
    if not isinstance(data, dict):
        return None, "Teams light-meetings coordinates cannot be read"
    thread = data.get("conversationId")
    if isinstance(thread, str):
        found = _THREAD_ID.fullmatch(thread)
        if found is None:
            return None, "Teams light-meetings link without a valid meeting thread id"
        thread = thread[: found.start(1)] + found.group(1).lower()
        context: dict[str, object] = {}
        if isinstance(data.get("tenantId"), str):
            context["Tid"] = data["tenantId"]
        if isinstance(data.get("organizerId"), str):
            context["Oid"] = data["organizerId"]
        if data.get("isBroadcastMeeting") is True or data.get("IsBroadcastMeeting") is True:
            context["IsBroadcastMeeting"] = True  # a town hall stays one in this form too
        message = data.get("messageId")
        message_id = message if isinstance(message, str) and message.isdigit() and len(message) <= 20 else "0"
        return _meetup_link(host, thread, message_id, context or None)
    code = data.get("meetingCode")
    if isinstance(code, str) and code.isdigit() and 6 <= len(code) <= 20:
        passcode = data.get("passcode")
        return _short_link(host, code, passcode if isinstance(passcode, str) else None)
    return None, "Teams light-meetings coordinates without a meeting"


# Zoom -----------------------------------------------------------------------------------------

_ZOOM_JOIN = re.compile(r"/(j|w)/([0-9]{9,11})(?=[/;,]|$)", re.IGNORECASE)
_ZOOM_WEB_CLIENT = re.compile(r"/wc/(?:join/([0-9]{9,11})|([0-9]{9,11})/join)(?=[/;,]|$)", re.IGNORECASE)
_ZOOM_PERSONAL = re.compile(r"/my/([A-Za-z0-9._-]{0,63}[A-Za-z0-9_-])/?", re.IGNORECASE | re.ASCII)
_ZOOM_HOST = re.compile(r"[a-z0-9.-]{1,253}")
# What _ZOOM_JOIN, _ZOOM_WEB_CLIENT, _ZOOM_PERSONAL, _ZOOM_START and the app link's /join start with.
_ZOOM_MEETING_PATHS = ("/j/", "/w/", "/wc/", "/my/", "/s/", "/join")
# The host's start link `/s/<number>?zak=<host token>`: the meeting number makes its join link; the
# token (the host's own sign-in) is dropped and never shown (`explain` masks it).
_ZOOM_START = re.compile(r"/s/([0-9]{9,11})(?=[/;,]|$)", re.IGNORECASE)
# The app's protocol link `zoommtg://zoom.us/join?action=join&confno=<number>&pwd=...`.
_ZOOM_CONFNO = re.compile(r"(?:^|&)confno=([0-9]{9,11})(?=&|$)", re.IGNORECASE)
_APP_SCHEMES = ("zoommtg://", "zoomus://")
_ZOOM_CREDENTIALS = ("pwd", "tk")
_ZOOM_NOT_MEETINGS: tuple[tuple[str, str], ...] = (
    ("/rec/", "Zoom recording, not a meeting"),
    ("/recording/", "Zoom recording, not a meeting"),
    ("/download", "Zoom download page, not a meeting"),
    ("/client/", "Zoom download page, not a meeting"),
    ("/support/download", "Zoom download page, not a meeting"),
    ("/u/", "Zoom dial-in numbers page, not a join link"),
    ("/zoomconference", "Zoom dial-in numbers page, not a join link"),
    ("/s/", "Zoom host start link without a meeting number: no join link can be made from it"),
    ("/wc/", "Zoom web client link that is not a join link"),
    ("/meeting/register", "Zoom registration page: registering gives each attendee their own join link"),
    ("/webinar/register", "Zoom webinar registration page: registering gives each attendee their own join link"),
    ("/j/", "Zoom link without a valid meeting number"),
    ("/w/", "Zoom webinar link without a valid webinar number"),
)


# The join URL as Zoom writes it, passcode and all, is already the join URL _zoom would write, less
# any parameters after the passcode that are not credentials (from=addon, omn=...): read in one
# step, with a property test that it agrees.
_ZOOM_JOIN_URL = re.compile(
    r"https://([a-z0-9.-]+[a-z0-9-])/(j|w)/([0-9]{9,11})(?:\?pwd=([A-Za-z0-9._~-]{0,200}[A-Za-z0-9_~-])(&[^#]*)?)?"
)


def _zoom_join_url(written: re.Match[str]) -> tuple[_Join, str] | None:
    host, kind, number, pwd, rest = written.groups()
    if rest is not None and ("tk=" in rest or "%" in rest or "+" in rest):
        return None  # a registrant token, or a name that decodes to one: the general path reads it
    known = _host_that_may_matter(host)
    platform = known[1] if known is not None else None
    if platform is None or platform[0].platform is not Platform.ZOOM:
        return None
    cloud = platform[1]
    key = f"zoom:{cloud}:{number}" if cloud else f"zoom:{number}"
    address = written.string[: written.end(3)]
    url = written.string[: written.end(4)] if pwd else address
    values: tuple[tuple[str, object], ...] = (("pwd", pwd),) if pwd else ()
    join = _Join(MeetingLink(Platform.ZOOM, url, key), address, _ZOOM_CREDENTIALS, values, False)
    label = "Zoom webinar" if kind == "w" else "Zoom meeting"
    return join, label + (f" on {_ZOOM_CLOUD_NAMES[cloud]}" if cloud else "")


def _query_values(query: str, names: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """The first non-empty value of each of ``names`` in ``query``, decoded as ``parse_qsl`` decodes."""
    found: dict[str, str] = {}
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if not equals or not value:
            continue
        if "%" in name or "+" in name:
            name = unquote(name.replace("+", " "))
        if name in names and name not in found:
            found[name] = unquote(value.replace("+", " ")) if "%" in value or "+" in value else value
    return tuple((name, found[name]) for name in names if name in found)


def _zoom(parts: SplitResult, url: str, host: str, cloud: str) -> tuple[_Join | None, str]:
    if not _ZOOM_HOST.fullmatch(host):
        return None, "Zoom address with an invalid host name"
    path = unquote(parts.path)
    key_prefix = f"zoom:{cloud}:" if cloud else "zoom:"
    on = f" on {_ZOOM_CLOUD_NAMES[cloud]}" if cloud else ""
    values = _query_values(parts.query, _ZOOM_CREDENTIALS)

    def join(address: str, key: str) -> _Join:
        return _join(Platform.ZOOM, key_prefix + key, f"https://{host}{address}", _ZOOM_CREDENTIALS, values)

    lowered = path.lower()
    if not lowered.startswith(_ZOOM_MEETING_PATHS):
        return None, _zoom_not_a_meeting(lowered)
    number = _ZOOM_JOIN.match(path)
    if number is not None:
        kind, digits = number.group(1).lower(), number.group(2)
        label = "Zoom webinar" if kind == "w" else "Zoom meeting"
        return join(f"/{kind}/{digits}", digits), label + on
    web = _ZOOM_WEB_CLIENT.match(path)
    if web is not None:
        digits = web.group(1) or web.group(2)
        return join(f"/j/{digits}", digits), f"Zoom meeting{on} (web client link)"
    start = _ZOOM_START.match(path)
    if start is not None:
        digits = start.group(1)
        return join(f"/j/{digits}", digits), f"Zoom meeting{on} (from the host's start link; its token dropped)"
    if lowered.rstrip("/") == "/join":
        confno = _ZOOM_CONFNO.search(parts.query)
        if confno is None:
            return None, "Zoom app link without a meeting number"
        digits = confno.group(1)
        return join(f"/j/{digits}", digits), f"Zoom meeting{on} (Zoom app link)"
    personal = _ZOOM_PERSONAL.fullmatch(path)
    if personal is not None:
        name = personal.group(1).lower()
        return join(f"/my/{name}", f"my:{name}"), f"Zoom personal meeting room{on}"
    return None, _zoom_not_a_meeting(lowered)


def _zoom_not_a_meeting(lowered_path: str) -> str:
    for prefix, reason in _ZOOM_NOT_MEETINGS:
        if lowered_path.startswith(prefix):
            return reason
    if lowered_path in ("", "/"):
        return "bare Zoom address without a meeting"
    return "Zoom link that is not a meeting join link"


# Google Meet ----------------------------------------------------------------------------------

# The join URL Google writes is already the join URL _google_meet would write (property-tested).
_MEET_JOIN_URL = re.compile(r"https://meet\.google\.com/([a-z]{3}-[a-z]{4}-[a-z]{3})")
_MEET_CODE = re.compile(r"/([a-z]{3})-?([a-z]{4})-?([a-z]{3})/?", re.IGNORECASE | re.ASCII)


def _google_meet(parts: SplitResult, url: str = "", host: str = "", variant: str = "") -> tuple[_Join | None, str]:
    path = unquote(parts.path)
    match = _MEET_CODE.fullmatch(path)
    if match is not None:
        code = "-".join(match.groups()).lower()
        return _join(Platform.GOOGLE_MEET, f"google_meet:{code}", f"https://{GOOGLE_MEET_HOST}/{code}"), "Google Meet"
    lowered = path.lower().rstrip("/")
    if lowered == "/new":
        return None, "meet.google.com/new starts a new meeting, it is not one"
    if lowered.startswith("/lookup/"):
        return None, "Google Meet nickname link: not a fixed meeting"
    if lowered == "":
        return None, "bare Google Meet address without a meeting code"
    return None, "Google Meet link without a meeting code"


def _quote_value(value: str) -> str:
    """Percent-encode a query value; a final "." is escaped so that no reader trims it as punctuation."""
    quoted = value if _UNRESERVED.fullmatch(value) else quote(value, safe="")
    return quoted[:-1] + "%2E" if quoted.endswith(".") else quoted


_HOST_TOKEN = re.compile(r"((?:[?&#]|%3f|%26)zak(?:=|%3d))[^&#\s\"'<>%]*", re.IGNORECASE)


def _masked(text: str) -> str:
    """A Zoom host token (`zak`, the host's own sign-in) is never shown, plain or percent-encoded."""
    return _HOST_TOKEN.sub(r"\1[removed]", text) if "zak" in text.lower() else text


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


# --------------------------------------------------------------------------------------------
# The platforms, one row each (see PlatformRow); everything above that knows a host reads these.


def _teams_as_written(url: str) -> tuple[_Join, str] | None:
    written = _TEAMS_JOIN_URL.fullmatch(url)
    return (_teams_join_url(written), "Teams meeting") if written is not None else None


def _zoom_as_written(url: str) -> tuple[_Join, str] | None:
    written = _ZOOM_JOIN_URL.fullmatch(url)
    return _zoom_join_url(written) if written is not None else None


def _meet_as_written(url: str) -> tuple[_Join, str] | None:
    written = _MEET_JOIN_URL.fullmatch(url)
    if written is None:
        return None
    return _join(Platform.GOOGLE_MEET, f"google_meet:{written.group(1)}", url), "Google Meet"


PLATFORMS: tuple[PlatformRow, ...] = (
    PlatformRow(Platform.TEAMS, "Microsoft Teams", "Teams", _teams, hosts=TEAMS_HOSTS,
                meeting_paths=_TEAMS_MEETING_PATHS, meeting_in_fragment=True, as_written=_teams_as_written),
    PlatformRow(Platform.ZOOM, "Zoom", "Zoom", _zoom, domains=ZOOM_CLOUDS, meeting_paths=_ZOOM_MEETING_PATHS,
                as_written=_zoom_as_written),
    PlatformRow(Platform.GOOGLE_MEET, "Google Meet", "Google Meet", _google_meet,
                hosts=frozenset({GOOGLE_MEET_HOST}), as_written=_meet_as_written),
)
"""The supported platforms, in the API's order. A new platform is one row here, its `Platform`
member and its recogniser (docs/meetings.md, "Adding a platform")."""

_BY_HOST: Mapping[str, PlatformRow] = MappingProxyType({h: row for row in PLATFORMS for h in row.hosts})
_BY_DOMAIN: Mapping[str, tuple[PlatformRow, str]] = MappingProxyType(dict(sorted(
    ((d, (row, variant)) for row in PLATFORMS for d, variant in row.domains.items()), key=lambda i: -len(i[0]))))
_DOMAIN_SUFFIXES = tuple("." + domain for domain in _BY_DOMAIN)
_HOSTS_THAT_MATTER = _WRAPPER_HOSTS | set(_BY_HOST) | set(_BY_DOMAIN)
# The scheme-less hosts the scan looks for, one literal-led pattern per platform.
_BARE_HOSTS = tuple(re.compile(_literal_led(tuple(row.hosts | set(row.domains)))) for row in PLATFORMS)
_BARE_HOSTS_ANY_CASE = tuple(re.compile(p.pattern, re.IGNORECASE) for p in _BARE_HOSTS)
_AS_WRITTEN = tuple(row.as_written for row in PLATFORMS if row.as_written is not None)
_SUPPORTED = ", ".join(row.short_name for row in PLATFORMS[:-1]) + " or " + PLATFORMS[-1].short_name
