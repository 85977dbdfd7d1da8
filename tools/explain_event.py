"""Why is (or isn't) this Outlook event in Upcoming Meetings? A support command.

    python -m tools.explain_event EVENT.json        # an event as Graph returns it
    python -m tools.explain_event - < page.json     # or stdin; a calendarView page ({"value": [...]}) works too
    python -m tools.explain_event --json EVENT.json # machine-readable

It prints the meeting link found, which field it came from and which wrappers (Safe Links,
Proofpoint...) were removed, then every other link in the event with the reason it was turned down.

Exit status: 0 every event has a meeting link, 1 at least one has none, 2 the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from shared.meeting_links import Candidate, Explanation, Verdict, explain

FOUND, NOT_FOUND, BAD_INPUT = 0, 1, 2

PLATFORM_NAMES = {"teams": "Teams", "zoom": "Zoom", "google_meet": "Google Meet"}


class BadInput(Exception):
    """The input cannot be read as one or more Graph events."""


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m tools.explain_event",
        description="Explain which meeting link CoAgentor finds in an Outlook (Microsoft Graph) event, and why.",
    )
    parser.add_argument("event", help="event JSON file as Graph returns it, or - for stdin")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    args = parser.parse_args(argv)

    try:
        events = load_events(read_input(args.event, stdin))
    except BadInput as problem:
        print(f"explain_event: {problem}", file=stderr)
        return BAD_INPUT

    stories = [(event, explain(event)) for event in events]
    if args.json:
        json.dump({"events": [as_json(event, story) for event, story in stories]}, stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write("\n\n".join(describe(event, story) for event, story in stories) + "\n")
    return FOUND if all(story.link is not None for _, story in stories) else NOT_FOUND


def read_input(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return raw.decode("utf-8-sig")  # Graph Explorer and PowerShell exports may start with a BOM
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text") from None


def load_events(text: str) -> list[Mapping[str, Any]]:
    if not text.strip():
        raise BadInput("the input is empty: expected an event as JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise BadInput("not usable JSON (nested too deeply)") from None
    if isinstance(data, Mapping) and isinstance(data.get("value"), list):
        data = data["value"]  # a calendarView / delta page
    items = data if isinstance(data, list) else [data]
    events = [item for item in items if isinstance(item, Mapping)]
    if not events or len(events) != len(items):
        raise BadInput("expected a Graph event (a JSON object), a list of events or a page with a 'value' list")
    return events


def describe(event: Mapping[str, Any], story: Explanation) -> str:
    subject = event.get("subject")
    title = f'Event "{subject}"' if isinstance(subject, str) and subject else "Event (no subject)"
    if isinstance(event.get("id"), str):
        title += f" [{event['id']}]"
    lines = [title]
    if story.link is not None:
        link = story.link
        lines.append(f"  FOUND a {PLATFORM_NAMES.get(str(link.platform), link.platform)} meeting in {story.source}")
        lines.append(f"    join URL:  {link.url}")
        lines.append(f"    meeting:   {link.key}")
        chosen = next(c for c in story.candidates if c.verdict is Verdict.CHOSEN)
        if chosen.wrappers:
            lines.append(f"    unwrapped: {' > '.join(chosen.wrappers)}")
        if chosen.found != chosen.url:
            lines.append(f"    as written: {chosen.found}")
    else:
        lines.append("  NOT FOUND: no Teams, Zoom or Google Meet link, so this event stays out of Upcoming Meetings.")
    others = [c for c in story.candidates if c.verdict is not Verdict.CHOSEN]
    if others:
        lines.append("  Other links in this event:")
        lines.extend(describe_candidate(c) for c in others)
    elif story.link is None:
        lines.append("  No links at all in the fields looked at.")
    lines.append("  Fields looked at, in order: " + "; ".join(story.fields))
    lines.extend(f"  Note: {note}" for note in story.notes)
    lines.extend(f"  Also: {hint}" for hint in scheduling_hints(event))
    return "\n".join(lines)


def describe_candidate(candidate: Candidate) -> str:
    label = {
        Verdict.SAME_MEETING: "same meeting",
        Verdict.NOT_CHOSEN: "not chosen",
        Verdict.REJECTED: "rejected",
    }.get(candidate.verdict, candidate.verdict.value)
    via = f" (unwrapped from {' > '.join(candidate.wrappers)})" if candidate.wrappers else ""
    return f"    - [{label}] {candidate.source}: {candidate.url}{via}\n        {candidate.reason}"


def scheduling_hints(event: Mapping[str, Any]) -> list[str]:
    """Other reasons an event with a good link still stays out of Upcoming Meetings."""
    hints = []
    if event.get("isCancelled") is True:
        hints.append("the event is cancelled; cancelled events get no agent")
    if event.get("isAllDay") is True:
        hints.append("the event is all-day; all-day events get no agent")
    status = event.get("responseStatus")
    if isinstance(status, Mapping) and status.get("response") == "declined":
        hints.append("you declined this event; declined events get no agent")
    if event.get("type") == "seriesMaster":
        hints.append("this is a recurring series itself; agents follow its occurrences (calendarView)")
    return hints


def as_json(event: Mapping[str, Any], story: Explanation) -> dict[str, Any]:
    link = story.link
    return {
        "id": event.get("id"),
        "subject": event.get("subject"),
        "found": link is not None,
        "link": None if link is None else {"platform": str(link.platform), "url": link.url, "key": link.key},
        "source": story.source,
        "candidates": [
            {
                "source": c.source,
                "found": c.found,
                "url": c.url,
                "wrappers": list(c.wrappers),
                "verdict": c.verdict.value,
                "reason": c.reason,
            }
            for c in story.candidates
        ],
        "fields": list(story.fields),
        "notes": list(story.notes),
        "hints": scheduling_hints(event),
    }


if __name__ == "__main__":
    sys.exit(main())
