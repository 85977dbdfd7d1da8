"""One entry and one agent per real meeting, and the privacy and intent rules, against the real parts:
two mailboxes of the Microsoft simulator holding the same meeting (one iCalUId, as Exchange keeps it
in every attendee's mailbox), meetings and rules in Azurite, deployments to the agent API recorder
(the harness of tests/integration/test_sync_rules.py, clock and queue messages held by the test)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from azure.data.tables import TableServiceClient

from shared.autojoin import DEFAULT_RULES
from shared.meeting_links import find_meeting_link
from shared.ports import Meeting, Source
from shared.scheduling import AgentState, idempotency_key, meeting_key
from tests.e2e.client import teams_link
from tests.integration import test_sync_rules as harness
from tests.integration.test_sync_rules import ALICE, DAVE, LEAD, iso

env, world = harness.env, harness.world  # the harness's fixtures, used here as they are

SHORT = "https://teams.microsoft.com/meet/25481533847{:03d}?p=OEPK9DBvXvWSgYhbBq"
NOBODY_ELSE: dict[str, Any] = {"attendees": []}


def shown(world) -> dict[str, tuple[Any, ...]]:
    return {m["title"]: (m["will_join"], m["why"], m["agent"]) for m in world.upcoming()}


def test_one_meeting_in_two_mailboxes_with_the_long_and_short_teams_links_gets_one_entry_and_one_agent(world):
    world.connect(ALICE)
    world.connect(DAVE)
    start = world.clock.now() + timedelta(hours=1)
    organised = world.teams_event(ALICE, "Roadmap review", start, 301)
    # Dave's copy, as an invitation carrying the short link only; Exchange keeps the iCalUId.
    world.add_event(DAVE, "Roadmap review", start, iCalUId=organised["iCalUId"],
                    organizer={"emailAddress": {"address": ALICE}},
                    body={"contentType": "html", "content": f'<a href="{SHORT.format(301)}">Join the meeting</a>'})
    world.sync(ALICE)
    world.sync(DAVE)
    [meeting] = world.upcoming()
    assert meeting["accounts"] == [ALICE, DAVE]
    assert meeting["join_url"] == teams_link(301)  # the copy that holds the deployment says the link
    world.at(start - timedelta(seconds=LEAD))
    assert world.deliver_due() == ["deployed"]
    assert [a["body"]["title"] for a in world.attempts()] == ["Roadmap review"]


def test_every_occurrence_of_a_series_in_two_mailboxes_is_one_meeting(world):
    world.connect(ALICE)
    world.connect(DAVE)
    first = (world.clock.now() + timedelta(hours=2)).replace(second=0)
    recurrence = {"pattern": {"type": "daily", "interval": 1},
                  "range": {"type": "numbered", "startDate": first.date().isoformat(), "numberOfOccurrences": 3}}
    series = world.teams_event(ALICE, "Daily standup", first, 302, recurrence=recurrence)
    world.add_event(DAVE, "Daily standup", first, iCalUId=series["iCalUId"], recurrence=recurrence,
                    organizer={"emailAddress": {"address": ALICE}},
                    body={"contentType": "html", "content": f'<a href="{SHORT.format(302)}">Join</a>'})
    world.sync(DAVE)
    world.sync(ALICE)
    listed = world.upcoming()
    assert [m["start"] for m in listed] == [iso(first + timedelta(days=n)) for n in range(3)]
    assert {tuple(m["accounts"]) for m in listed} == {(ALICE, DAVE)}
    stored = world.c.meetings.list_for_user(world.user.id, world.clock.now())
    assert all(len({s.ical for s in m.sources}) == 1 for m in stored)


def test_an_agent_deployed_before_the_upgrade_keeps_its_row_and_key_and_is_not_sent_again(world):
    """A meeting row as the previous version wrote it (keyed by join link and start, its source row
    without identities) with its agent deployed: the upgraded sync reads the same event, now with its
    iCalUId, and a second mailbox's copy with the short link; one meeting, the same agent, no call."""
    world.connect(ALICE)
    world.connect(DAVE)
    start = world.clock.now() + timedelta(minutes=60)
    organised = world.teams_event(ALICE, "Board prep", start, 303)
    link = find_meeting_link(organised)
    assert link is not None
    old_key = meeting_key(link.key, start)
    alice = world.connections[ALICE]
    world.c.meetings.create(Meeting(
        user_id=world.user.id, key=old_key, link_key=link.key, title="Board prep", start=start,
        end=start + timedelta(minutes=30), platform="teams", join_url=link.url,
        sources=(Source(alice.id, organised["id"], ALICE),), agent=AgentState.DEPLOYED, agent_id="agent-before",
        deploy_at=start - timedelta(seconds=LEAD), enqueued_for=start - timedelta(seconds=LEAD)))
    table = TableServiceClient.from_connection_string(world.env.stack.storage_connection_string())
    rows = table.get_table_client("meetings")
    row = rows.get_entity(world.user.id, old_key)
    row["Sources"] = json.dumps([[alice.id, organised["id"], ALICE, "accepted", False, None]])  # the old shape
    rows.update_entity(row)
    world.c.sync._index.put(alice.id, organised["id"], world.user.id, old_key, "before")
    world.add_event(DAVE, "Board prep", start, iCalUId=organised["iCalUId"],
                    organizer={"emailAddress": {"address": ALICE}},
                    body={"contentType": "text", "content": f"Join: {SHORT.format(303)}"})
    world.sync(ALICE)
    world.sync(DAVE)
    [meeting] = world.upcoming()
    assert (meeting["id"], meeting["agent"], meeting["accounts"]) == (old_key, "deployed", [ALICE, DAVE])
    stored = world.c.meetings.get(world.user.id, old_key)
    assert stored is not None and stored.link_key == link.key and stored.agent_id == "agent-before"
    assert idempotency_key(world.user.id, stored.link_key, stored.start) == idempotency_key(world.user.id, link.key,
                                                                                            start)
    world.at(start - timedelta(seconds=LEAD))
    world.deliver_due()
    assert world.attempts() == []


def test_private_solo_all_day_and_free_events_follow_their_rules_and_a_put_from_an_older_client_keeps_them(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    world.teams_event(ALICE, "Doctor", start, 311, sensitivity="private")
    world.teams_event(ALICE, "Focus time", start, 312, **NOBODY_ELSE)
    world.teams_event(ALICE, "Offsite", start.replace(hour=0, minute=0, second=0) + timedelta(days=1), 313,
                      minutes=24 * 60, isAllDay=True)
    world.teams_event(ALICE, "Optional office hours", start, 314, showAs="free")
    world.add_event(ALICE, "Webex vendor call", start,  # not listed: its own meeting is on Webex
                    location={"displayName": "https://acme.webex.com/acme/j.php?MTID=m2f7c1d"},
                    body={"contentType": "html", "content": f"<p>My Teams: {teams_link(315)}</p>"})
    world.sync(ALICE)
    assert shown(world) == {"Doctor": (False, "private_skipped", None),
                            "Focus time": (False, "no_other_attendees", None),
                            "Offsite": (False, "all_day", None),
                            "Optional office hours": (True, "rules", "scheduled")}

    everything = {**DEFAULT_RULES.as_json(), "private_events": "join", "solo_events": "join",
                  "all_day_events": "join", "free_events": "skip"}
    world.c.autojoin.set_rules(world.user.id, everything)
    assert shown(world) == {"Doctor": (True, "rules", "scheduled"), "Focus time": (True, "rules", "scheduled"),
                            "Offsite": (True, "rules", "scheduled"),
                            "Optional office hours": (False, "free_skipped", None)}
    older_client = {k: everything[k] for k in ("responses", "external_invites", "platforms")}
    kept = world.c.autojoin.set_rules(world.user.id, older_client)
    shown_rules = {**everything, "join_lead_seconds": LEAD}  # the API fills in the service's lead
    assert world.c.autojoin.rules(world.user.id).as_json() == kept.as_json() == shown_rules  # read from the table
