"""The meeting platforms the service knows, as rows. Pure domain.

Supported platforms (Teams, Zoom, Google Meet) are rows of `shared.meeting_links.PLATFORMS` (hosts,
link shapes, identity, what is not joinable, display name); their names are read from there for the
decision texts and the support tool. Unsupported platforms are listed so that an event
whose *own* meeting is on one of them is not mistaken for a Teams, Zoom or Meet meeting because such
a link turns up further down its text (an organiser's signature, "other ways to join"): see
`own_unsupported_platform`.

To add an unsupported platform: one `UnsupportedPlatform` row (its name and the hosts of its join
links). To add a supported one: its `Platform` member, and its row and recogniser in
`shared.meeting_links` (docs/meetings.md, "Adding a platform").

Graph shapes relied on: `onlineMeetingProvider` is one of unknown, teamsForBusiness,
skypeForBusiness, skypeForConsumer; `location` / `locations[]` carry `displayName` and `locationUri`
(learn.microsoft.com/graph/api/resources/event, .../location)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from shared.meeting_links import PLATFORMS
from shared.meeting_links import platform_of_host as supported_platform_of

PLATFORM_NAMES: Mapping[str, str] = {row.platform: row.name for row in PLATFORMS}
"""Every supported platform's display name, in the API's order (from `meeting_links.PLATFORMS`)."""


@dataclass(frozen=True)
class UnsupportedPlatform:
    """A meeting platform agents cannot join: its name, the domains of its join links (each with all
    its subdomains) and the Graph `onlineMeetingProvider` values that name it."""

    name: str
    domains: tuple[str, ...]
    providers: tuple[str, ...] = ()


UNSUPPORTED_PLATFORMS: tuple[UnsupportedPlatform, ...] = (
    UnsupportedPlatform("Webex", ("webex.com", "webex.us")),
    UnsupportedPlatform("GoTo Meeting", ("gotomeeting.com", "gotomeet.me", "goto.com", "gotomeet.at")),
    UnsupportedPlatform("Amazon Chime", ("chime.aws",)),
    UnsupportedPlatform("BlueJeans", ("bluejeans.com",)),
    UnsupportedPlatform("Skype", ("skype.com", "lync.com"), ("skypeForBusiness", "skypeForConsumer")),
)

# A URL's host, written with or without a scheme ("https://acme.webex.com/...", "acme.webex.com/meet/x").
_HOST = re.compile(r"(?:https?://)?((?:[a-z0-9-]{1,63}\.){1,10}[a-z]{2,24})(?=[/:?#]|$|\s)", re.IGNORECASE)
_MAX_LOCATION_CHARS = 4096
_MAX_LOCATIONS = 50


def is_supported_host(host: str) -> bool:
    """A host of a supported platform's join links (Teams, Zoom in any of its clouds, Google Meet)."""
    return supported_platform_of(host) is not None


def unsupported_platform_of(host: str) -> UnsupportedPlatform | None:
    host = host.lower().rstrip(".")
    for platform in UNSUPPORTED_PLATFORMS:
        if any(host == d or host.endswith("." + d) for d in platform.domains):
            return platform
    return None


def own_unsupported_platform(event: Mapping[str, object]) -> UnsupportedPlatform | None:
    """The unsupported platform the event's own meeting is on, if any: its `onlineMeetingProvider`
    names one, or its `location` / `locations[]` carry a join URL of one (`locationUri`, or a URL in
    `displayName`). A location merely named after a device ("Webex Room Kit - 4B", "Zoom Room 3")
    names a room, not a meeting: only a URL on the platform's own domain counts."""
    provider = event.get("onlineMeetingProvider")
    if isinstance(provider, str):
        for platform in UNSUPPORTED_PLATFORMS:
            if provider in platform.providers:
                return platform
    for text in _location_texts(event):
        if "." not in text:
            continue
        for match in _HOST.finditer(text[:_MAX_LOCATION_CHARS]):
            start = match.start()
            if start and text[start - 1] not in " \t\r\n;,(<[\"'":
                continue  # inside a word or an e-mail address (room@webex.com is no URL)
            found = unsupported_platform_of(match.group(1))
            if found is not None and ("/" in text[match.end(): match.end() + 1] or match.group(0).lower()
                                      .startswith("http")):
                return found
    return None


def _location_texts(event: Mapping[str, object]) -> Iterator[str]:
    places: list[object] = [event.get("location")]
    more = event.get("locations")
    if isinstance(more, list):
        places.extend(more[:_MAX_LOCATIONS])
    for place in places:
        if not isinstance(place, Mapping):
            continue
        for name in ("locationUri", "displayName"):
            value = place.get(name)
            if isinstance(value, str) and value:
                yield value
