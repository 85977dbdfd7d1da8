"""Join rules and per-meeting choices against the real parts: invitations as the Microsoft simulator
shows them (organiser, RSVP, series), rules and choices in Azurite's `autojoin` table, deployments to
the agent API recorder, with the clock and the queue messages held by the test (the harness of
tests/integration/test_sync_rules.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from azure.data.tables import TableServiceClient

from shared.autojoin import DEFAULT_RULES
from shared.services.autojoin import Choice
from tests.e2e.client import teams_link
from tests.integration import test_sync_rules as harness
from tests.integration.test_sync_rules import ALICE, DAVE, LEAD, iso

env, world = harness.env, harness.world  # the harness's fixtures, used here as they are

STRANGER = {"emailAddress": {"name": "Mallory", "address": "mallory@fabrikam.com"}}


def rules(**changes: Any) -> dict[str, Any]:
    return {**DEFAULT_RULES.as_json(), **changes}


def shown(world) -> dict[str, tuple[Any, ...]]:
    return {m["title"]: (m["will_join"], m["why"], m["agent"]) for m in world.upcoming()}


def test_a_strangers_invitation_gets_no_agent_until_accepted(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    pitch = world.teams_event(ALICE, "Pitch from a stranger", start, 201, organizer=STRANGER)
    assert pitch["isOrganizer"] is False and pitch["responseStatus"]["response"] == "notResponded"
    world.teams_event(ALICE, "Team meeting", start, 202, organizer={"emailAddress": {"address": DAVE}})
    world.sync(ALICE)
    listed = {m["title"]: m for m in world.upcoming()}
    assert (listed["Pitch from a stranger"]["external"], listed["Pitch from a stranger"]["response"]) == (
        True, "not_responded")
    assert shown(world) == {"Pitch from a stranger": (False, "external_unanswered", None),
                            "Team meeting": (True, "rules", "scheduled")}
    assert "Accept it" in listed["Pitch from a stranger"]["why_text"]
    assert [j.meeting_key for j, _ in world.env.jobs.deploys] == [listed["Team meeting"]["id"]]

    world.patch(ALICE, pitch["id"], responseStatus={"response": "accepted", "time": iso(world.clock.now())})
    world.sync(ALICE)
    assert shown(world)["Pitch from a stranger"] == (True, "rules", "scheduled")
    world.at(start - timedelta(seconds=LEAD))
    assert sorted(world.deliver_due()) == ["deployed", "deployed"]
    assert sorted(a["body"]["title"] for a in world.attempts()) == ["Pitch from a stranger", "Team meeting"]


def test_rule_changes_reschedule_and_withdraw_pending_deployments_without_waiting_for_a_scan(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    world.teams_event(ALICE, "Stranger's demo", start, 211, organizer=STRANGER)
    world.add_event(ALICE, "Zoom call", start, location={"displayName": "https://contoso.zoom.us/j/81234567211"})
    declined = world.teams_event(ALICE, "Declined review", start, 212, organizer={"emailAddress": {"address": DAVE}},
                                 responseStatus={"response": "declined", "time": iso(start)})
    world.sync(ALICE)
    assert shown(world) == {"Stranger's demo": (False, "external_unanswered", None),
                            "Zoom call": (True, "rules", "scheduled"),
                            "Declined review": (False, "response_excluded", None)}
    assert len(world.env.jobs.deploys) == 1
    requests_before = len(world.graph_requests())

    stored = world.c.autojoin.set_rules(world.user.id, rules(
        responses=["organizer", "accepted", "tentative", "not_responded", "declined"],
        external_invites="join", platforms=["teams"]))
    assert world.c.autojoin.rules(world.user.id) == stored  # read back from the table
    assert shown(world) == {"Stranger's demo": (True, "rules", "scheduled"),
                            "Zoom call": (False, "platform_excluded", None),
                            "Declined review": (True, "rules", "scheduled")}
    assert len(world.env.jobs.deploys) == 3 and len(world.graph_requests()) == requests_before  # no sync needed
    world.at(start - timedelta(seconds=LEAD))
    assert sorted(world.deliver_due()) == ["deployed", "deployed", "platform_excluded"]
    assert sorted(a["body"]["title"] for a in world.attempts()) == ["Declined review", "Stranger's demo"]
    assert declined["id"] in {s for m in world.c.meetings.list_for_user(world.user.id, world.clock.now())
                              for s in (src.event_id for src in m.sources)}


def test_a_series_skip_covers_every_occurrence_through_moves_and_full_resyncs_with_one_exception(world):
    world.connect(ALICE)
    first = (world.clock.now() + timedelta(hours=3)).replace(second=0)
    world.teams_event(ALICE, "Daily standup", first, 221, organizer={"emailAddress": {"address": DAVE}},
                      responseStatus={"response": "accepted", "time": iso(first)},
                      recurrence={"pattern": {"type": "daily", "interval": 1},
                                  "range": {"type": "numbered", "startDate": first.date().isoformat(),
                                            "numberOfOccurrences": 4}})
    world.sync(ALICE)
    meetings = world.upcoming()
    assert len(meetings) == 4 and {m["series"] for m in meetings} == {True}
    assert {(m["will_join"], m["why"]) for m in meetings} == {(True, "rules")}

    meeting, decision = world.c.autojoin.choose(world.user.id, meetings[1]["id"], Choice(join=False, series=True))
    assert decision.why.value == "series_skipped_by_you" and meeting.agent is None
    assert {(m["will_join"], m["why"], m["agent"]) for m in world.upcoming()} == {
        (False, "series_skipped_by_you", None)}
    world.c.autojoin.choose(world.user.id, meetings[2]["id"], Choice(join=True, series=False))

    # The organiser moves the first occurrence an hour later; then Graph forgets the delta token.
    occurrences = {m.start: m for m in world.c.meetings.list_for_user(world.user.id, world.clock.now())}
    first_id = occurrences[first].sources[0].event_id
    moved = first + timedelta(hours=1)
    world.patch(ALICE, first_id, start={"dateTime": moved.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                end={"dateTime": (moved + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"})
    world.sync(ALICE)
    assert world.env.http.sim("POST", f"/_sim/users/{ALICE}/expire-delta").status_code in (200, 204)
    assert world.sync(ALICE).full is True
    after = world.upcoming()
    assert after[0]["start"] == iso(moved)
    assert [(m["will_join"], m["why"]) for m in after] == [
        (False, "series_skipped_by_you"), (False, "series_skipped_by_you"), (True, "joined_by_you"),
        (False, "series_skipped_by_you")]

    world.at(first + timedelta(days=2) - timedelta(seconds=LEAD))
    outcomes = world.deliver_due()
    assert outcomes.count("deployed") == 1 and len(world.attempts()) == 1
    assert set(outcomes) - {"deployed"} <= {"series_skipped_by_you", "meeting_gone"}
    assert world.attempts()[0]["body"]["start"] == (first + timedelta(days=2)).isoformat()


def test_a_skipped_meeting_stays_skipped_after_a_reconnect(world):
    conn = world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=2)
    world.teams_event(ALICE, "Skip me", start, 231)
    world.sync(ALICE)
    [meeting] = world.upcoming()
    world.c.autojoin.choose(world.user.id, meeting["id"], Choice(join=False, series=False))

    url = world.c.connect.start(world.user, conn.id)
    location = world.env.http.sign_in(url, ALICE)
    result = world.c.connect.complete(dict(parse_qsl(urlsplit(location).query)))
    assert result.claim
    assert world.c.connect.claim(world.user, result.claim).connection.id == conn.id
    world.sync(ALICE)
    assert shown(world) == {"Skip me": (False, "skipped_by_you", None)}
    world.at(start - timedelta(seconds=LEAD))
    assert "deployed" not in world.deliver_due() and world.attempts() == []


def test_meeting_rows_stored_before_join_facts_were_kept_still_read_and_join(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    world.teams_event(ALICE, "Old row", start, 241)
    world.sync(ALICE)
    [meeting] = world.upcoming()
    service = TableServiceClient.from_connection_string(world.env.stack.storage_connection_string())
    table = service.get_table_client("meetings")
    row = table.get_entity(world.user.id, meeting["id"])
    sources = json.loads(row["Sources"])
    row["Sources"] = json.dumps([s[:3] for s in sources])  # as the first version wrote them
    table.update_entity(row)
    [old] = world.upcoming()
    assert (old["response"], old["external"], old["series"], old["will_join"], old["why"]) == (
        "accepted", False, False, True, "rules")
    assert old["join_url"] == teams_link(241)
