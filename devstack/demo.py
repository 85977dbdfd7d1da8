"""`python -m devstack demo`: puts a handful of meetings into the simulator's mailboxes of a running
local stack (`make dev`), so a newcomer sees Upcoming Meetings fill in, and prints where to look.

It talks only to the simulator's admin API (DEVSTACK.md: `POST /_sim/users/{upn}/events`, `GET` and
`DELETE` of the same), found through `$DEVSTACK_DIR/endpoints.json`. Safe to run again: the events
of an earlier demo run (subjects starting with `Demo · `) are removed first, so nothing doubles up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

PREFIX = "Demo · "
TEAMS = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_DEMO{n:04d}ZTk2LWI4ZjMtNGQ%40thread.v2/0"
         "?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%7d")


class DemoError(RuntimeError):
    """The stack is not running, or the simulator refused a request; the message says which."""


@dataclass(frozen=True)
class DemoEvent:
    upn: str
    subject: str
    starts_in: timedelta
    fields: dict[str, Any]
    listed: bool  # shown under Upcoming Meetings (False: no supported meeting link)
    note: str  # what the newcomer should notice about it


def _with(*emails: str) -> dict[str, Any]:
    """Other people invited (the join rules skip a meeting with nobody else in it by default)."""
    return {"attendees": [{"type": "required", "emailAddress": {"address": e, "name": e.split("@")[0].title()},
                           "status": {"response": "accepted"}} for e in emails]}


def demo_events() -> list[DemoEvent]:
    """What the demo puts in alice@contoso.com's and bob@outlook.com's calendars."""
    return [
        DemoEvent("alice@contoso.com", "Design review", timedelta(minutes=20),
                  {"onlineMeeting": {"joinUrl": TEAMS.format(n=1)}, "isOnlineMeeting": True,
                   "onlineMeetingProvider": "teamsForBusiness", **_with("dave@contoso.com")},
                  True, "Teams, organised by Alice: the agent is sent shortly before it starts"),
        DemoEvent("alice@contoso.com", "Customer call", timedelta(hours=3),
                  {"location": {"displayName": "https://contoso.zoom.us/j/81234567890?pwd=abcDEF123"},
                   **_with("kim@fabrikam.com")},
                  True, "Zoom link in the location"),
        DemoEvent("alice@contoso.com", "Weekly sync", timedelta(days=1, hours=1),
                  {"body": {"contentType": "text", "content": "Join: https://meet.google.com/abc-defg-hij"},
                   **_with("dave@contoso.com", "erin@northwind.com")},
                  True, "Google Meet link in the invitation text (listed under Tomorrow)"),
        DemoEvent("alice@contoso.com", "Vendor pitch", timedelta(days=1, hours=3),
                  {"onlineMeeting": {"joinUrl": TEAMS.format(n=2)}, "isOrganizer": False,
                   "organizer": {"emailAddress": {"name": "Sam Seller", "address": "sam@fabrikam.com"}},
                   "responseStatus": {"response": "notResponded"}},
                  True, "from outside the organisation, not answered yet: listed with No agent (Join opts in)"),
        DemoEvent("alice@contoso.com", "Lunch", timedelta(hours=2), {}, False,
                  "no meeting link: not listed (see 'Why isn't a meeting listed?')"),
        DemoEvent("bob@outlook.com", "Book club", timedelta(hours=5),
                  {"location": {"displayName": "https://us02web.zoom.us/j/89876543210"}, **_with("ann@example.org")},
                  True, "a personal account's meeting, once bob@outlook.com is connected too"),
    ]


def load_endpoints(devstack_dir: Path) -> dict[str, Any]:
    path = devstack_dir / "endpoints.json"
    try:
        endpoints: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise DemoError(f"No running local stack ({path} is missing): start it with `make dev` in another "
                        "terminal, wait for it to print its URLs, then run the demo again.") from None
    return endpoints


def seed(endpoints: dict[str, Any], now: datetime | None = None) -> list[DemoEvent]:
    """Removes the previous demo's events, then adds `demo_events()` starting from `now` (UTC, whole
    minutes). Returns what was added. Raises DemoError when the simulator does not answer as expected."""
    start_from = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    sim = requests.Session()
    sim.trust_env = False
    sim.verify = endpoints["ca_bundle"]
    base = endpoints["simulator"]
    events = demo_events()
    try:
        for upn in sorted({e.upn for e in events}):
            listed = sim.get(f"{base}/_sim/users/{upn}/events", timeout=30)
            _expect(listed, 200, f"list {upn}'s events")
            for old in listed.json().get("value", []):
                if str(old.get("subject", "")).startswith(PREFIX):
                    _expect(sim.delete(f"{base}/_sim/users/{upn}/events/{old['id']}", timeout=30), 204,
                            f"remove an earlier demo event of {upn}")
        for e in events:
            start = start_from + e.starts_in
            body = {"subject": PREFIX + e.subject,
                    "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC"},
                    **e.fields}
            _expect(sim.post(f"{base}/_sim/users/{e.upn}/events", json=body, timeout=30), 201,
                    f"add '{e.subject}' to {e.upn}")
    except requests.ConnectionError:
        raise DemoError(f"The simulator at {base} does not answer: is `make dev` still running?") from None
    return events


def _expect(resp: requests.Response, status: int, what: str) -> None:
    if resp.status_code != status and not (status == 204 and resp.status_code == 200):
        raise DemoError(f"The simulator refused to {what}: HTTP {resp.status_code} {resp.text[:200]}")


def summary(endpoints: dict[str, Any], events: list[DemoEvent]) -> str:
    """What to do next and where to look, for the terminal."""
    lines = ["Added these meetings to the simulator's mailboxes:", ""]
    for e in events:
        lines.append(f"  {e.upn:<20} {PREFIX}{e.subject:<15} {e.note}")
    lines += [
        "",
        "Now:",
        f"  1. Open the Integrations page (signed in as dev-user on Solo):\n     {endpoints['integrations_page']}",
        "  2. Connect Outlook Calendar, sign in as alice@contoso.com on the simulator's page, press Connect.",
        "  3. The meetings appear under Upcoming Meetings, grouped by day (Refresh reads the calendar now).",
        f"  Agents sent so far: {endpoints['agents']}/_recorded (the agent API recorder).",
        "  Run the demo again any time: it replaces its own meetings, times counted from now.",
    ]
    return "\n".join(lines)
