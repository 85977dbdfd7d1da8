"""Are agents deployed on time, once, and only for the right meetings? `make bench` runs this.

    python -m bench.bench_punctuality [--meetings 48] [--span 40] [--lead 5]

Starts the whole local stack (Azurite, Microsoft simulator, Key Vault endpoint, agent API recorder,
the local Functions host running `function_app.app` with this repo's host.json), connects two
calendars for one user, and plays a working day compressed into `--span` seconds of real time:
`--meetings` half-hour slots become meetings starting a fraction of a second apart. Some are in both
calendars; after the first sync some are rescheduled (later or earlier), cancelled, declined,
deleted or moved out of the day, and the calendars are synced again. Then it waits for the day to
pass and reads every call the agent API recorder received.

Reported: lateness = (agent API call received) - (intended time = final start - lead) as p50/p95/max,
duplicates (calls beyond the first for one meeting, 409s included), misses (meetings that should
have had an agent and got none) and wrong deployments (cancelled, declined, deleted, moved-away or
old-time meetings that got one). Duplicates, misses and wrong deployments must all be zero.

The path measured is the real one: deploy messages hidden by their visibility delay in Azurite,
picked up by the host's queue polling (host.json `maxPollingInterval`), the deployer's last look at
the calendars (one delta round), its claim in Table Storage and the agent API call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack import polling
from devstack.stack import Stack, free_ports
from shared.meeting_links import find_meeting_link
from shared.scheduling import idempotency_key
from tests.e2e.client import Client, teams_link

ALICE, DAVE = "alice@contoso.com", "dave@contoso.com"


@dataclass
class Planned:
    n: int
    start: datetime  # as first created
    final: datetime | None  # None: should get no agent (cancelled, declined, deleted, moved out of the day)
    change: str  # "", "later", "earlier", "cancel", "decline", "delete", "away"
    shared: bool  # also in Dave's calendar
    ids: dict[str, str]  # upn -> event id


def plan(meetings: int, first: datetime, span: float) -> list[Planned]:
    """Half-hour slots of a day, `span` seconds for the whole day."""
    step = span / meetings
    day: list[Planned] = []
    changes = ["", "", "later", "", "cancel", "", "earlier", "decline", "", "delete", "", "away"]
    for n in range(meetings):
        start = first + timedelta(seconds=int(n * step))
        change = changes[n % len(changes)] if n >= 6 else ""  # the first few are due before any change
        final: datetime | None = start
        if change == "later":
            final = start + timedelta(seconds=int(3 * step) + 1)
        elif change == "earlier":
            final = start - timedelta(seconds=int(2 * step) + 1)
        elif change in ("cancel", "decline", "delete", "away"):
            final = None
        day.append(Planned(n, start, final, change, shared=n % 5 == 1, ids={}))
    return day


def _times(start: datetime) -> dict[str, Any]:
    return {"start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}


def _event(p: Planned) -> dict[str, Any]:
    # A colleague is invited: the join rules skip the user's own events with nobody else in them
    # (API.md "Join rules", solo_events).
    return {"subject": f"Slot {p.n}", "onlineMeeting": {"joinUrl": teams_link(7000 + p.n)}, "isOnlineMeeting": True,
            "attendees": [{"type": "required", "emailAddress": {"address": "pat@contoso.com"}}], **_times(p.start)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def run(args: argparse.Namespace, directory: Path) -> int:
    lead = args.lead
    overrides = {"AGENT_JOIN_LEAD_SECONDS": str(lead), "REFRESH_SCHEDULE": "0 0 0 1 1 *",
                 "SCAN_SCHEDULE": "0 0 0 1 1 *"}
    stack = Stack(devstack_dir=directory, ports=free_ports(), overrides=overrides)
    started = time.monotonic()
    stack.start(timeout=120)
    try:
        return _day(stack, Client(stack), args, lead, time.monotonic() - started)
    finally:
        stack.stop()


def _day(stack: Stack, client: Client, args: argparse.Namespace, lead: int, startup: float) -> int:
    user = f"punctual-{uuid.uuid4().hex[:8]}"
    token = client.token(user, "pro")
    # 1. Connect both calendars while empty: how long one sync round takes on this machine, now.
    began = time.monotonic()
    for upn in (ALICE, DAVE):
        client.connect(token, upn)  # each claim starts a sync of that calendar
    connections = [c["id"] for c in client.connections(token)["connections"]]
    _wait(lambda: all(c["last_synced_at"] for c in client.connections(token)["connections"]), "the first syncs",
          limit=SYNC_LIMIT)
    round_trip = time.monotonic() - began
    # The day starts once two more sync rounds (the day's events, then the changes) fit before the first
    # changed meeting is due, whatever the machine's load: the warmup is derived from the round just timed.
    warmup = max(args.warmup, 4 * round_trip)
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=warmup + lead)
    day = plan(args.meetings, first, args.span)
    for upn in (ALICE, DAVE):
        mine = [p for p in day if upn == ALICE or p.shared]
        created = client.sim("POST", f"/_sim/users/{upn}/events", json=[_event(p) for p in mine]).json()
        for p, ev in zip(mine, created, strict=True):
            p.ids[upn] = ev["id"]
    _sync_until(client, token, user, connections, sorted(iso(p.start) for p in day), "the day's first sync")

    changed_at = datetime.now(UTC)
    for p in day:
        for upn, event_id in p.ids.items():
            path = f"/_sim/users/{upn}/events/{event_id}"
            if p.change in ("later", "earlier") and p.final is not None:
                client.sim("PATCH", path, json=_times(p.final))
            elif p.change == "away":
                client.sim("PATCH", path, json=_times(p.start + timedelta(hours=3)))
            elif p.change == "cancel":
                client.sim("PATCH", path, json={"isCancelled": True})
            elif p.change == "decline":
                declined = {"response": "declined", "time": p.start.isoformat()}
                client.sim("PATCH", path, json={"responseStatus": declined})
            elif p.change == "delete":
                client.sim("DELETE", path)
    # Upcoming Meetings keeps a declined meeting (listed with `response_excluded`, no agent); cancelled,
    # deleted and moved-away meetings leave the day.
    expected_now = sorted(iso(p.final) for p in day if p.final is not None) + sorted(
        [iso(p.start) for p in day if p.change == "decline"]
        + [iso(p.start + timedelta(hours=3)) for p in day if p.change == "away"])
    _sync_until(client, token, user, connections, sorted(expected_now), "the second sync")
    synced_at = datetime.now(UTC)
    earliest_changed = min((p.start for p in day if p.change), default=first) - timedelta(seconds=lead)
    if synced_at >= earliest_changed:
        print(f"warning: changes synced {(synced_at - earliest_changed).total_seconds():.1f} s after the first "
              "changed meeting was due; raise --warmup", file=sys.stderr)

    link_keys = {p.n: _link_key(p) for p in day}
    expected = {idempotency_key(user, link_keys[p.n], p.final): p.final - timedelta(seconds=lead)
                for p in day if p.final is not None}

    def recorded() -> list[dict[str, Any]]:
        return [a for a in client.api.get(f"{stack.agents_url}/_recorded?all=1", timeout=30).json()
                if isinstance(a.get("body"), dict) and a["body"].get("user_id") == user]

    # Wait until every expected deployment arrived (or the last one is overdue by the safety limit),
    # then --drain more seconds, so late duplicates and wrong deployments are seen too.
    last = max(expected.values())
    overdue = (last - datetime.now(UTC)).total_seconds() + SYNC_LIMIT
    try:
        _wait(lambda: expected.keys() <= {c["idempotency_key"] for c in recorded() if c["status"] == 201},
              "every expected deployment", limit=max(overdue, 1.0))
    except SystemExit as missing:
        print(missing, file=sys.stderr)  # counted as misses below
    time.sleep(args.drain)
    calls = recorded()
    by_key: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_key.setdefault(call["idempotency_key"], []).append(call)
    lateness = []
    for key, intended in expected.items():
        ok = [c for c in by_key.get(key, []) if c["status"] == 201]
        if ok:
            received = datetime.fromisoformat(ok[0]["received_at"].replace("Z", "+00:00"))
            lateness.append((received - intended).total_seconds())
    duplicates = sum(len(v) - 1 for v in by_key.values() if len(v) > 1)
    misses = len(expected) - len(lateness)
    wrong = len([k for k in by_key if k not in expected])
    counts = {c: sum(1 for p in day if p.change == c) for c in ("later", "earlier", "cancel", "decline", "delete",
                                                                   "away")}
    print(f"Punctuality: a day of {len(day)} meetings in {args.span:.0f} s of real time, lead {lead} s, "
          f"{sum(p.shared for p in day)} in both calendars, changes after the first sync: "
          + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"  stack start {startup:.1f} s; one sync round of both calendars {round_trip:.1f} s (warmup "
          f"{warmup:.0f} s derived from it); changes synced {(synced_at - changed_at).total_seconds():.1f} s after "
          "they were made")
    if lateness:
        print(f"  lateness (agent API call - intended): p50 {percentile(lateness, 0.5):.2f} s, "
              f"p95 {percentile(lateness, 0.95):.2f} s, max {max(lateness):.2f} s, min {min(lateness):.2f} s "
              f"over {len(lateness)} deployments; p95 = {percentile(lateness, 0.95) / lead:.2f} x the lead")
    print(f"  duplicates {duplicates}, misses {misses}, wrong deployments {wrong} (all must be 0)")
    return 0 if duplicates == misses == wrong == 0 else 1


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _link_key(p: Planned) -> str:
    link = find_meeting_link(_event(p))
    assert link is not None
    return link.key


# A safety limit only: every wait ends on what it waits for (a sync recorded, the meetings listed);
# this bounds a wait on a machine so loaded that nothing moves.
SYNC_LIMIT = 300.0


def _wait(probe: Any, what: str, *, limit: float) -> None:
    polling.until(f"bench: {what}", probe, limit, 0.1, error=SystemExit)


def _sync_until(client: Client, token: str, user: str, connections: list[str], starts: list[str], what: str) -> None:
    """Run one sync of each connection, then wait until both recorded a sync that began after it was
    asked for and Upcoming Meetings lists exactly `starts`; a sync that finished with another list is
    reported with the difference (a wrong result, not slowness)."""
    def synced_after(moment: datetime) -> bool:
        return all(c["last_synced_at"] and _instant(c["last_synced_at"]) >= moment
                   for c in client.connections(token)["connections"])

    asked = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    for conn in connections:
        client.run_function("sync_calendar", json.dumps({"user_id": user, "connection_id": conn, "reason": "bench"}))
    _wait(lambda: synced_after(asked), what, limit=SYNC_LIMIT)
    listed: list[str] = []

    def matches() -> bool:
        listed[:] = sorted(m["start"] for m in client.upcoming(token))
        return listed == starts

    # A notification or an earlier job may have synced in between: give the host a moment to settle on
    # the same answer (bounded by the last sync's own duration, one more round at most).
    try:
        _wait(matches, what, limit=SYNC_LIMIT / 10)
    except SystemExit:
        missing, extra = sorted(set(starts) - set(listed)), sorted(set(listed) - set(starts))
        raise SystemExit(f"bench: after {what}, Upcoming Meetings differs: missing {missing}, extra {extra}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_punctuality", description=__doc__.split("\n")[0])
    parser.add_argument("--meetings", type=int, default=48, help="half-hour slots of the day")
    parser.add_argument("--span", type=float, default=40.0, help="seconds of real time the day takes (<= 60)")
    parser.add_argument("--lead", type=int, default=5, help="AGENT_JOIN_LEAD_SECONDS for this run")
    parser.add_argument("--warmup", type=float, default=12.0,
                        help="seconds before the first deployment is due, at least (4 sync rounds as measured)")
    parser.add_argument("--drain", type=float, default=6.0, help="seconds waited after the last deployment arrived")
    args = parser.parse_args(argv)
    if not 0 < args.span <= 60:
        parser.error("--span must be between 0 and 60 seconds")
    with tempfile.TemporaryDirectory(prefix="bench-punctuality-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
