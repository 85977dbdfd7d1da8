"""Why is (or isn't) this Outlook event in Upcoming Meetings, and will an agent join it? A support command.

    python -m tools.explain_event EVENT.json        # an event as Graph returns it
    python -m tools.explain_event - < page.json     # or stdin; a calendarView page ({"value": [...]}) works too
    python -m tools.explain_event --json EVENT.json # machine-readable
    python -m tools.explain_event --account alice@contoso.com --rules rules.json --choice skip EVENT.json

It prints the meeting link found, which field it came from and which wrappers (Safe Links,
Proofpoint...) were removed, then every other link in the event with the reason it was turned down,
and whether the user's agent joins and why: the same decision (`shared.autojoin.decide`) the service
takes, on the user's join rules (`--rules`, as GET /api/autojoin/rules returns them; the defaults
otherwise), the connected account (`--account`, `--personal`: who counts as external) and a choice
made in Upcoming Meetings (`--choice`). The tool assumes the connection is Active.

Exit status: 0 every event has a meeting link, 1 at least one has none (or is another platform's
meeting: Webex, GoTo...), 2 the input is unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from shared.autojoin import (
    CONSUMER_TENANT_ID,
    DEFAULT_RULES,
    Decision,
    InvalidRules,
    JoinRules,
    MeetingFacts,
    Override,
    decide,
    parse_rules,
)
from shared.calendar_events import NotAMeeting, Unlisted, UnusableEvent, copy_of
from shared.config import SETTINGS
from shared.meeting_links import Candidate, Explanation, Verdict, explain
from shared.platforms import PLATFORM_NAMES

FOUND, NOT_FOUND, BAD_INPUT = 0, 1, 2

# The platforms and their names are the product's (shared.meeting_links.Platform, shared.autojoin).
SUPPORTED = ", ".join(list(PLATFORM_NAMES.values())[:-1]) + " or " + list(PLATFORM_NAMES.values())[-1]


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
    parser.add_argument("--account", help="the connected account whose calendar holds the event (tells who is "
                        "external); without it the organiser counts as internal")
    parser.add_argument("--personal", action="store_true", help="the account is a personal Microsoft account")
    parser.add_argument("--rules", help="the user's join rules as JSON (GET /api/autojoin/rules); "
                        "default: the defaults")
    parser.add_argument("--choice", choices=sorted(CHOICES), help="the user's choice for this meeting or its series")
    args = parser.parse_args(argv)

    try:
        events = load_events(read_input(args.event, stdin))
        rules = load_rules(read_input(args.rules, stdin)) if args.rules else DEFAULT_RULES
    except BadInput as problem:
        print(f"explain_event: {problem}", file=stderr)
        return BAD_INPUT

    context = JoinInputs(rules=rules, account=args.account, personal=args.personal,
                         choice=CHOICES[args.choice] if args.choice else None)
    stories = [(event, explain(event), context) for event in events]
    if args.json:
        json.dump({"events": [as_json(event, story, ctx) for event, story, ctx in stories]}, stdout, indent=2)
        stdout.write("\n")
    else:
        stdout.write("\n\n".join(describe(event, story, ctx) for event, story, ctx in stories) + "\n")
    return FOUND if all(listed(event, story) for event, story, _ in stories) else NOT_FOUND


# --choice: what the per-meeting toggle in Upcoming Meetings stored (join, series)
CHOICES = {"join": (True, False), "skip": (False, False), "series-join": (True, True), "series-skip": (False, True)}


@dataclass(frozen=True)
class JoinInputs:
    """What the decision needs besides the event."""

    rules: JoinRules = DEFAULT_RULES
    account: str | None = None
    personal: bool = False
    choice: tuple[bool, bool] | None = None


def load_rules(text: str) -> JoinRules:
    try:
        return parse_rules(json.loads(text))
    except json.JSONDecodeError as error:
        raise BadInput(f"the rules are not valid JSON ({error.msg})") from None
    except InvalidRules as problem:
        raise BadInput(f"the rules are not usable: {problem}") from None


def join_decision(event: Mapping[str, Any], story: Explanation, inputs: JoinInputs) -> Decision | None:
    """The service's decision for this event; None when it is no meeting at all (no link, cancelled,
    an unsupported platform's own meeting, a series master). The event is read as the sync reads it
    (`shared.calendar_events.copy_of`)."""
    if event.get("type") == "seriesMaster":
        return None
    tenant = CONSUMER_TENANT_ID if inputs.personal else ""
    now = datetime.now(UTC)
    try:
        copy = copy_of(event, account_email=inputs.account or "", tenant_id=tenant)
    except UnusableEvent:  # no usable start given: judge it as starting now
        timed = {**event, "start": {"dateTime": now.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                 "end": {"dateTime": now.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}
        copy = copy_of(timed, account_email=inputs.account or "", tenant_id=tenant)
    if isinstance(copy, NotAMeeting):
        return None
    facts = copy.facts
    external = facts.response_facts.external if inputs.account else False
    choice = Override(join=inputs.choice[0], series=inputs.choice[1], set_at=now) if inputs.choice else None
    meeting = MeetingFacts(platform=str(getattr(copy.link.platform, "value", copy.link.platform)), start=copy.start,
                           response=facts.response_facts.response, external=external,
                           series=facts.response_facts.series_id is not None, private=facts.private,
                           all_day=facts.all_day, solo=facts.solo, free=facts.free)
    return decide(meeting, inputs.rules, choice, any_active_connection=True, agent_sent=False, now=now,
                  grace=GRACE)


def link_platform(story: Explanation) -> str:
    assert story.link is not None
    return str(getattr(story.link.platform, "value", story.link.platform))


# The service's default grace after the start (the tool reads no app settings).
GRACE = timedelta(seconds=int(SETTINGS["AGENT_JOIN_GRACE_SECONDS"] or 0))


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


def describe(event: Mapping[str, Any], story: Explanation, inputs: JoinInputs | None = None) -> str:
    subject = event.get("subject")
    title = f'Event "{subject}"' if isinstance(subject, str) and subject else "Event (no subject)"
    if isinstance(event.get("id"), str):
        title += f" [{event['id']}]"
    lines = [title]
    own = not_listed(event)
    if story.link is not None and own is not None and own.reason is Unlisted.UNSUPPORTED_PLATFORM:
        lines.append(f"  NOT LISTED: {own.text} The {PLATFORM_NAMES.get(str(story.link.platform))} link below is "
                     "not its meeting (the event's own location or online-meeting provider says so).")
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
        lines.append(f"  NOT FOUND: no {SUPPORTED} link, so this event stays out of Upcoming Meetings.")
    others = [c for c in story.candidates if c.verdict is not Verdict.CHOSEN]
    if others:
        lines.append("  Other links in this event:")
        lines.extend(describe_candidate(c) for c in others)
    elif story.link is None:
        lines.append("  No links at all in the fields looked at.")
    lines.append("  Fields looked at, in order: " + "; ".join(story.fields))
    lines.extend(f"  Note: {note}" for note in story.notes)
    lines.extend(f"  Also: {hint}" for hint in scheduling_hints(event))
    decision = join_decision(event, story, inputs or JoinInputs())
    if decision is not None:
        verdict = "JOINS" if decision.will_join else "NO AGENT"
        lines.append(f"  Agent: {verdict} [{decision.why.value}] {decision.text}")
        if inputs is None or not inputs.account:
            lines.append("  (Pass --account to tell whether the organiser is outside the account's domain.)")
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
        hints.append("the event is all-day: listed, and joined only if the user's rules or choice say so")
    unlisted = not_listed(event)
    if unlisted is not None and unlisted.reason is Unlisted.UNSUPPORTED_PLATFORM:
        hints.append(unlisted.text)
    if event.get("type") == "seriesMaster":
        hints.append("this is a recurring series itself; agents follow its occurrences (calendarView)")
    return hints


def listed(event: Mapping[str, Any], story: Explanation) -> bool:
    """A meeting link, and not an event whose own meeting is on another platform."""
    own = not_listed(event)
    return story.link is not None and not (own is not None and own.reason is Unlisted.UNSUPPORTED_PLATFORM)


def not_listed(event: Mapping[str, Any]) -> NotAMeeting | None:
    """Why the event stays out of Upcoming Meetings, as GET /api/meetings/unlisted says it."""
    try:
        copy = copy_of(event, account_email="", tenant_id="", why_not=True)
    except UnusableEvent:
        return None
    return copy if isinstance(copy, NotAMeeting) else None


def as_json(event: Mapping[str, Any], story: Explanation, inputs: JoinInputs | None = None) -> dict[str, Any]:
    link = story.link
    decision = join_decision(event, story, inputs or JoinInputs())
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
        "agent": None if decision is None else {
            "will_join": decision.will_join, "why": decision.why.value, "why_text": decision.text,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
