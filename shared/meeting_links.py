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

1. Found by a single left-to-right scan for ``http(s)://`` and for scheme-less meeting hosts
   (``meet.google.com/...``). A candidate runs to the next whitespace, ``<``, ``>``, quote or
   backslash; a raw Teams ``context={"Tid":...}`` in a text body is followed past its quotes.
   ``<wbr>`` and zero-width characters, which Outlook puts inside long link texts, are removed first.
2. HTML entities are decoded (only ``;``-terminated ones: ``&para=`` in a query stays a parameter),
   trailing punctuation is dropped, and wrappers are peeled: Outlook Safe Links, Teams (ATP) Safe
   Links, Proofpoint URL Defense v1/v2/v3, Google and Barracuda redirects, nested up to
   ``MAX_UNWRAP_DEPTH`` deep.
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
  ``zoom.com``), path (``/j/``, ``/w/``, ``/wc/join/``) or parameters; ZoomGov is a separate cloud
  with its own numbers, so ``zoom:gov:<number>``; personal rooms ``zoom:my:<name>``.
- Google Meet: ``google_meet:<code>`` with the code lower-cased and dashed (``abc-defg-hij``).

The join URL (``MeetingLink.url``) keeps what joining needs: Teams ``context`` (Tid, Oid and any
other flags such as ``IsBroadcastMeeting``), the short-link passcode ``p``, Zoom ``pwd`` and ``tk``
(registrant token). It drops everything else (``from=addon``, ``authuser``, ``hs``, ``#success``,
``zak``...). Teams percent-escapes are written lower-case, as Teams itself writes them.

Not meetings (each with its reason in ``explain``): Teams help, download, channel, chat and
meeting-options links, dial-in pages, ``zoom.us/download``, Zoom recordings, registration and
host-start links, ``meet.google.com/new``, bare domains, Skype for Business and other platforms.

Cost: the scan is one regex pass over the lower-cased text plus work proportional to the
candidates' lengths; every regex is free of nested quantifiers, a candidate is at most
``MAX_URL_CHARS`` long, unwrapping stops at ``MAX_UNWRAP_DEPTH`` and a field yields at most
``MAX_CANDIDATES_PER_FIELD`` candidates (a link after that many others in one field is not seen;
``explain`` notes it). A megabyte of hostile body text takes milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

__all__ = [
    "MAX_CANDIDATES_PER_FIELD",
    "MAX_UNWRAP_DEPTH",
    "MAX_URL_CHARS",
    "Candidate",
    "Explanation",
    "MeetingLink",
    "Platform",
    "Verdict",
    "explain",
    "find_meeting_link",
    "parse_join_url",
]

MAX_URL_CHARS = 8192
MAX_UNWRAP_DEPTH = 5
MAX_CANDIDATES_PER_FIELD = 1000
MAX_LOCATIONS = 50
_SHOWN_CHARS = 300
_MAX_SHOWN_CANDIDATES = 200


class Platform(StrEnum):
    TEAMS = "teams"
    ZOOM = "zoom"
    GOOGLE_MEET = "google_meet"


@dataclass(frozen=True, slots=True)
class MeetingLink:
    """A joinable meeting: ``url`` to join it, ``key`` to recognise it wherever it turns up."""

    platform: Platform
    url: str
    key: str


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

    The guard below keeps one odd event from stopping a calendar sync; ``explain`` runs unguarded,
    so the property tests that call it would surface any such failure.
    """
    try:
        for seen in _candidates(event, notes=None):
            if seen.link is not None:
                return seen.link
    except Exception:
        return None
    return None


def explain(event: Mapping[str, object]) -> Explanation:
    """Every candidate link, where it was found, and the verdict on it."""
    notes: list[str] = []
    fields: list[str] = []
    shown: list[Candidate] = []
    chosen: MeetingLink | None = None
    chosen_source: str | None = None
    seen_keys: set[tuple[str, str]] = set()
    omitted = 0
    for seen in _candidates(event, notes=notes, fields=fields):
        if seen.link is not None and chosen is None:
            chosen, chosen_source = seen.link, seen.source
            verdict, reason = Verdict.CHOSEN, seen.reason
        elif seen.link is not None and chosen is not None and seen.link.key == chosen.key:
            verdict, reason = Verdict.SAME_MEETING, f"same meeting as the link chosen from {chosen_source}"
        elif seen.link is not None:
            verdict = Verdict.NOT_CHOSEN
            reason = f"{seen.reason}, but the link from {chosen_source} comes first"
        else:
            verdict, reason = Verdict.REJECTED, seen.reason
        dedupe = (seen.source, seen.url)
        if dedupe in seen_keys and verdict is not Verdict.CHOSEN:
            continue
        seen_keys.add(dedupe)
        if len(shown) >= _MAX_SHOWN_CANDIDATES and verdict is not Verdict.CHOSEN:
            omitted += 1
            continue
        shown.append(
            Candidate(
                source=seen.source,
                found=_clip(seen.found),
                url=_clip(seen.url),
                wrappers=seen.wrappers,
                verdict=verdict,
                reason=reason,
                link=seen.link,
            )
        )
    if omitted:
        notes.append(f"{omitted} further candidates not listed")
    return Explanation(
        link=chosen,
        source=chosen_source,
        candidates=tuple(shown),
        fields=tuple(fields),
        notes=tuple(notes),
    )


def parse_join_url(url: str) -> MeetingLink | None:
    """Recognise one URL (wrapped or not) as a meeting link."""
    if not isinstance(url, str):
        return None
    try:
        return _evaluate(url).link
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Fields of a Graph event


@dataclass(frozen=True, slots=True)
class _Seen:
    source: str
    found: str
    url: str
    wrappers: tuple[str, ...]
    link: MeetingLink | None
    reason: str


def _fields(event: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    if not isinstance(event, Mapping):
        return
    online = event.get("onlineMeeting")
    if isinstance(online, Mapping):
        yield "onlineMeeting.joinUrl", _text(online.get("joinUrl"))
    else:
        yield "onlineMeeting.joinUrl", ""
    yield "onlineMeetingUrl", _text(event.get("onlineMeetingUrl"))
    location = event.get("location")
    if isinstance(location, Mapping):
        yield "location.displayName", _text(location.get("displayName"))
        if location.get("locationUri"):
            yield "location.locationUri", _text(location.get("locationUri"))
    locations = event.get("locations")
    if isinstance(locations, list):
        for i, item in enumerate(locations[:MAX_LOCATIONS]):
            if isinstance(item, Mapping):
                yield f"locations[{i}].displayName", _text(item.get("displayName"))
                yield f"locations[{i}].locationUri", _text(item.get("locationUri"))
    yield "subject", _text(event.get("subject"))
    body = event.get("body")
    if isinstance(body, Mapping):
        kind = body.get("contentType")
        label = f"body.content ({kind.lower()})" if isinstance(kind, str) and kind else "body.content"
        yield label, _text(body.get("content"))
    else:
        yield "body.content", ""


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
        scan = _Scan(*_clean(text))
        for raw, too_long in scan:
            if too_long:
                yield _Seen(source, raw, raw, (), None, f"longer than {MAX_URL_CHARS} characters")
                continue
            outcome = _evaluate(raw)
            yield _Seen(source, raw, outcome.url, outcome.wrappers, outcome.link, outcome.reason)
        if scan.capped and notes is not None:
            notes.append(f"{source}: stopped after {MAX_CANDIDATES_PER_FIELD} candidates")


# --------------------------------------------------------------------------------------------
# Scanning a field for candidates

# Outlook breaks long link texts with <wbr> and zero-width characters; they are never part of a URL.
_INVISIBLE = re.compile(
    r"<wbr\s{0,8}/?>|&#8203;|&#x200b;|&ZeroWidthSpace;|&shy;|&#173;|[\u00ad\u200b\u200c\u200d\u2060\ufeff]",
    re.IGNORECASE,
)
_INVISIBLE_HINTS = ("<wbr", "&#8203;", "&#x200b;", "&zerowidthspace;", "&shy;", "&#173;")
_INVISIBLE_CHARS = ("\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
# Matched against the lower-cased text; factored by first letters so the engine skips ahead fast.
_START = re.compile(
    r"https?://|meet\.google\.com/|zoom(?:gov\.com|\.us|\.com)/"
    r"|teams\.(?:microsoft\.com|live\.com|cloud\.microsoft|microsoft\.us)/"
)
_START_ANY_CASE = re.compile(_START.pattern, re.IGNORECASE)
_RUN = re.compile(rf"[^\s\\\"'<>]{{0,{MAX_URL_CHARS + 1}}}")
_RUN_REST = re.compile(r"[^\s\\\"'<>]*")
_HOST_RUN = re.compile(r"[A-Za-z0-9.-]{0,253}")
_NOT_BEFORE_BARE_HOST = frozenset("/@%=&?#+_~")
_RAW_CONTEXT_END = re.compile(r"[^\s<>}]{0,600}\}")


def _clean(text: str) -> tuple[str, str]:
    """The text without invisible characters, and its lower-cased form."""
    lowered = text.lower()
    if text.isascii() and "<" not in text and "&" not in text:
        return text, lowered
    if any(hint in lowered for hint in _INVISIBLE_HINTS) or any(c in text for c in _INVISIBLE_CHARS):
        text = _INVISIBLE.sub("", text)
        lowered = text.lower()
    return text, lowered


class _Scan:
    """Yields (candidate, too_long) left to right; the position only moves forward."""

    def __init__(self, text: str, lowered: str) -> None:
        self.text = text
        self.lowered = lowered
        self.capped = False

    def __iter__(self) -> Iterator[tuple[str, bool]]:
        text = self.text
        lowered = self.lowered
        # Lower-casing keeps positions unless a character expands (U+0130): then search case-blind.
        finder, haystack = (_START, lowered) if len(lowered) == len(text) else (_START_ANY_CASE, text)
        pos = 0
        count = 0
        while True:
            match = finder.search(haystack, pos)
            if match is None:
                return
            if count >= MAX_CANDIDATES_PER_FIELD:
                self.capped = True
                return
            start = match.start()
            if not match.group().endswith("//"):
                start = self._bare_host_start(pos, start)
                if start < 0:
                    pos = match.end()
                    continue
            run = _RUN.match(text, start)
            end = run.end() if run else start
            count += 1
            if end - start > MAX_URL_CHARS:
                rest = _RUN_REST.match(text, end)
                pos = rest.end() if rest else end
                yield text[start : start + _SHOWN_CHARS], True
                continue
            end = self._follow_raw_context(start, end)
            pos = max(end, match.end())
            yield text[start:end], False

    def _bare_host_start(self, floor: int, start: int) -> int:
        """Start of a scheme-less host such as ``us02web.zoom.us``; -1 if inside another token."""
        text = self.text
        limit = max(floor, start - 253)
        run = _HOST_RUN.match(text[limit:start][::-1])
        s = start - (run.end() if run else 0)
        if s > 0 and text[s - 1] in _NOT_BEFORE_BARE_HOST:
            return -1
        return s

    def _follow_raw_context(self, start: int, end: int) -> int:
        """A text body may carry Teams' context unencoded: ``context={"Tid":"...","Oid":"..."}``."""
        text = self.text
        if end >= len(text) or text[end] != '"':
            return end
        opening = text.rfind("context={", max(start, end - 600), end)
        if opening < 0 or text.find("}", opening, end) >= 0:
            return end
        closing = _RAW_CONTEXT_END.match(text, end)
        return closing.end() if closing else end


# --------------------------------------------------------------------------------------------
# One candidate: decode, unwrap, recognise


@dataclass(frozen=True, slots=True)
class _Outcome:
    url: str
    wrappers: tuple[str, ...]
    link: MeetingLink | None
    reason: str


_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_CUT = re.compile(r"[\s<>]")
_SCHEME = re.compile(r"https?://", re.IGNORECASE)
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_TRAILING = frozenset(".,;:!?'\")]}")


def _decode_entities(text: str) -> str:
    for _ in range(2):  # "&amp;amp;" happens when an escaped body is escaped again
        if "&" not in text:
            break
        decoded = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
        if decoded == text:
            break
        text = decoded
    return text


def _tidy(raw: str) -> str:
    text = _decode_entities(raw)
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
        if c in ".,;:!?'\"":
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
    if not _SCHEME.match(url):
        url = "https://" + url
    wrappers: list[str] = []
    for _ in range(MAX_UNWRAP_DEPTH + 1):
        split = _split(url)
        if split is None:
            return _Outcome(url, tuple(wrappers), None, "not a valid web address")
        parts, host = split
        unwrapped = _unwrap_once(parts, host, url)
        if unwrapped is None:
            link, reason = _recognise(parts, host, url)
            return _Outcome(url, tuple(wrappers), link, reason)
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


def _split(url: str) -> tuple[SplitResult, str] | None:
    """The URL's parts and its lower-case host (without port, userinfo or final dot)."""
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
_GOOGLE_HOSTS = frozenset({"www.google.com", "google.com"})
_TEAMS_SAFELINKS_HOSTS = frozenset({"statics.teams.cdn.office.net", "staticsint.teams.cdn.office.net"})
_OWA_HOSTS = frozenset({"outlook.office.com", "outlook.office365.com", "outlook.live.com"})


def _unwrap_once(parts: SplitResult, host: str, url: str) -> tuple[str, str | None] | None:
    """(wrapper name, target) if ``url`` is a known link wrapper, else None."""
    path = parts.path
    if ".safelinks.protection." in "." + host:
        return "Outlook Safe Links", _decoded_param(parts.query, "url")
    if host in _TEAMS_SAFELINKS_HOSTS and path.lower().startswith("/evergreen-assets/safelinks/"):
        return "Teams Safe Links", _decoded_param(parts.query, "url")
    if host in _OWA_HOSTS and path.lower() == "/mail/safelink.html":
        return "Outlook Safe Links", _decoded_param(parts.query, "url")
    if host == "urldefense.proofpoint.com" and path.startswith("/v1/url"):
        return "Proofpoint v1", _decoded_param(parts.query, "u")
    if host == "urldefense.proofpoint.com" and path.startswith("/v2/url"):
        value = _query_param(parts.query, "u")
        return "Proofpoint v2", unquote(value.translate(_PP_V2)) if value is not None else None
    if host in ("urldefense.com", "urldefense.proofpoint.com") and path.startswith("/v3/__"):
        return "Proofpoint v3", _proofpoint_v3(url)
    if host in _GOOGLE_HOSTS and path == "/url":
        target = _decoded_param(parts.query, "q") or _decoded_param(parts.query, "url")
        return "Google redirect", target
    if host == "linkprotect.cudasvc.com" and path == "/url":
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

_TEAMS_HOSTS = frozenset(
    {
        "teams.microsoft.com",
        "teams.live.com",
        "teams.cloud.microsoft",
        "gov.teams.microsoft.us",
        "dod.teams.microsoft.us",
        "teams.microsoft.us",
    }
)
_ZOOM_DOMAINS = ("zoom.us", "zoom.com")
_ZOOMGOV_DOMAIN = "zoomgov.com"
_MEET_HOST = "meet.google.com"

_OTHER_HOSTS: dict[str, str] = {
    "dialin.teams.microsoft.com": "Teams dial-in numbers page, not a join link",
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


def _recognise(parts: SplitResult, host: str, url: str) -> tuple[MeetingLink | None, str]:
    if host in _TEAMS_HOSTS:
        return _teams(parts, url, host)
    if _in_domain(host, _ZOOMGOV_DOMAIN):
        return _zoom(parts, host, gov=True)
    if any(_in_domain(host, d) for d in _ZOOM_DOMAINS):
        return _zoom(parts, host, gov=False)
    if host == _MEET_HOST:
        return _google_meet(parts)
    # The host and each parent domain, most specific first: www.microsoft.com, microsoft.com, com.
    labels = host.split(".")
    for i in range(len(labels)):
        reason = _OTHER_HOSTS.get(".".join(labels[i:]))
        if reason is not None:
            return None, reason
    return None, "not a Teams, Zoom or Google Meet address"


def _in_domain(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


# Teams ----------------------------------------------------------------------------------------

_MEETUP_JOIN = re.compile(r"/l/meetup-join/", re.IGNORECASE)
_THREAD_ID = re.compile(r"19:[A-Za-z0-9_-]{1,400}@thread\.(v2|tacv2|skype)", re.IGNORECASE)
_SEGMENT_END = re.compile(r"[/?#&]")
_MESSAGE_ID = re.compile(r"/([0-9]{1,20})(?![0-9])")
_CONTEXT = re.compile(r"[?&]context=([^&#\s]{1,4096})", re.IGNORECASE)
_SHORT_LINK = re.compile(r"/meet/([0-9]{6,20})(?![0-9A-Za-z])", re.IGNORECASE)
_PASSCODE = re.compile(r"[?&]p=([^&#\s]{1,256})")
_COORDS = re.compile(r"[?&]coords=([A-Za-z0-9+/=_%-]{1,4096})", re.IGNORECASE)
_ESCAPE = re.compile(r"%[0-9A-F]{2}")

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


def _teams(parts: SplitResult, url: str, host: str) -> tuple[MeetingLink | None, str]:
    path = unquote(parts.path).lower()
    if path.startswith("/l/meetup-join/"):
        return _teams_meetup_join(url, host)
    if path.startswith("/meet/"):
        return _teams_short_link(url, host)
    if path.startswith("/light-meetings/"):
        return _teams_light_meeting(url, host)
    if path in ("", "/") or path.startswith(("/dl/launcher/", "/_", "/v2")):
        # Launcher and web-app forms carry the meeting path in ?url= or in the #fragment,
        # sometimes percent-encoded.
        inner = unquote(url) if "%2f" in url.lower() else url
        if _MEETUP_JOIN.search(inner):
            return _teams_meetup_join(inner, host)
        if _SHORT_LINK.search(inner):
            return _teams_short_link(inner, host)
        return None, "Teams web app link without a meeting in it"
    for prefix, reason in _TEAMS_NOT_MEETINGS:
        if path.startswith(prefix):
            return None, reason
    return None, "Teams link that is not a meeting join link"


def _teams_meetup_join(url: str, host: str) -> tuple[MeetingLink | None, str]:
    marker = _MEETUP_JOIN.search(url)
    if marker is None:
        return None, "Teams meetup-join link without a meeting"
    tail = url[marker.end() :]
    cut = _SEGMENT_END.search(tail)
    segment = tail[: cut.start()] if cut else tail
    rest = tail[cut.start() :] if cut else ""
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


def _meetup_link(host: str, thread: str, message_id: str, context: dict[str, object] | None) -> tuple[MeetingLink, str]:
    join = f"https://{host}/l/meetup-join/{_teams_quote(thread)}/{message_id}"
    if context:
        join += "?context=" + _teams_quote(json.dumps(context, separators=(",", ":"), ensure_ascii=True))
    key = f"teams:{thread}" if message_id == "0" else f"teams:{thread}/{message_id}"
    reason = "Teams meeting" if context else "Teams meeting (link has no tenant context)"
    return MeetingLink(Platform.TEAMS, join, key), reason


def _teams_context(rest: str) -> dict[str, object] | None:
    match = _CONTEXT.search(rest)
    if match is None:
        return None
    value = match.group(1)
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
    return {k: v for k, v in parsed.items() if isinstance(v, str | bool | int | float)}


def _teams_quote(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group().lower(), quote(text, safe=""))


def _teams_short_link(url: str, host: str) -> tuple[MeetingLink | None, str]:
    match = _SHORT_LINK.search(url)
    if match is None:
        return None, "Teams /meet/ link without a numeric meeting id"
    passcode_match = _PASSCODE.search(url, match.end())
    passcode = unquote(passcode_match.group(1)) if passcode_match else None
    return _short_link(host, match.group(1), passcode)


def _short_link(host: str, meeting_id: str, passcode: str | None) -> tuple[MeetingLink, str]:
    join = f"https://{host}/meet/{meeting_id}"
    if passcode:
        join += "?p=" + _quote_value(passcode)
    reason = "Teams meeting (meeting id link)" if passcode else "Teams meeting (meeting id link, no passcode)"
    return MeetingLink(Platform.TEAMS, join, f"teams:meet:{meeting_id}"), reason


def _teams_light_meeting(url: str, host: str) -> tuple[MeetingLink | None, str]:
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
_ZOOM_PERSONAL = re.compile(r"/my/([A-Za-z0-9._-]{0,63}[A-Za-z0-9_-])/?", re.IGNORECASE)
_ZOOM_NOT_MEETINGS: tuple[tuple[str, str], ...] = (
    ("/rec/", "Zoom recording, not a meeting"),
    ("/recording/", "Zoom recording, not a meeting"),
    ("/download", "Zoom download page, not a meeting"),
    ("/client/", "Zoom download page, not a meeting"),
    ("/support/download", "Zoom download page, not a meeting"),
    ("/u/", "Zoom dial-in numbers page, not a join link"),
    ("/zoomconference", "Zoom dial-in numbers page, not a join link"),
    ("/s/", "Zoom host start link (needs the host's sign-in), not a join link"),
    ("/wc/", "Zoom web client link that is not a join link"),
    ("/meeting/register", "Zoom registration page: registering gives each attendee their own join link"),
    ("/webinar/register", "Zoom webinar registration page: registering gives each attendee their own join link"),
    ("/j/", "Zoom link without a valid meeting number"),
    ("/w/", "Zoom webinar link without a valid webinar number"),
)


def _zoom(parts: SplitResult, host: str, gov: bool) -> tuple[MeetingLink | None, str]:
    path = unquote(parts.path)
    key_prefix = "zoom:gov:" if gov else "zoom:"
    params = {k: v for k, v in reversed(parse_qsl(parts.query))}
    query = "&".join(f"{name}={_quote_value(params[name])}" for name in ("pwd", "tk") if params.get(name))
    suffix = "?" + query if query else ""
    join = _ZOOM_JOIN.match(path)
    if join is not None:
        kind, number = join.group(1).lower(), join.group(2)
        label = "Zoom webinar" if kind == "w" else "Zoom meeting"
        return MeetingLink(Platform.ZOOM, f"https://{host}/{kind}/{number}{suffix}", key_prefix + number), label
    web = _ZOOM_WEB_CLIENT.match(path)
    if web is not None:
        number = web.group(1) or web.group(2)
        return (
            MeetingLink(Platform.ZOOM, f"https://{host}/j/{number}{suffix}", key_prefix + number),
            "Zoom meeting (web client link)",
        )
    personal = _ZOOM_PERSONAL.fullmatch(path)
    if personal is not None:
        name = personal.group(1).lower()
        return (
            MeetingLink(Platform.ZOOM, f"https://{host}/my/{name}{suffix}", f"{key_prefix}my:{name}"),
            "Zoom personal meeting room",
        )
    lowered = path.lower()
    for prefix, reason in _ZOOM_NOT_MEETINGS:
        if lowered.startswith(prefix):
            return None, reason
    if lowered in ("", "/"):
        return None, "bare Zoom address without a meeting"
    return None, "Zoom link that is not a meeting join link"


# Google Meet ----------------------------------------------------------------------------------

_MEET_CODE = re.compile(r"/([a-z]{3})-?([a-z]{4})-?([a-z]{3})/?", re.IGNORECASE)


def _google_meet(parts: SplitResult) -> tuple[MeetingLink | None, str]:
    path = unquote(parts.path)
    match = _MEET_CODE.fullmatch(path)
    if match is not None:
        code = "-".join(match.groups()).lower()
        return MeetingLink(Platform.GOOGLE_MEET, f"https://{_MEET_HOST}/{code}", f"google_meet:{code}"), "Google Meet"
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
    quoted = quote(value, safe="")
    return quoted[:-1] + "%2E" if quoted.endswith(".") else quoted


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
