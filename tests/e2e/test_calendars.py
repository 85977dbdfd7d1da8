"""Every calendar the user owns, through the running stack: the account's calendars are listed, the
default one read from the start; a second calendar selected shows its meetings (with its own agent
name) and deselected recalls their agents, except where another selected calendar holds the meeting;
the last calendar cannot be deselected; a secondary calendar, which Graph v1.0 neither deltas nor
notifies, is read after any notification for the account; a calendar deleted in Outlook falls out."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest

from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
UPN = "erin@northwind.com"


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


@pytest.fixture
def erin(client):
    token = client.token(f"calendars-{uuid.uuid4().hex[:8]}", "pro")
    connection = client.connect(token, UPN)["connection"]
    yield token, connection
    client.call("DELETE", f"outlook/connections/{connection['id']}", token)


def new_calendar(client: Client, name: str) -> str:
    resp = client.sim("POST", f"/_sim/users/{UPN}/calendars", json={"name": name})
    assert resp.status_code == 201, resp.text
    calendar_id: str = resp.json()["id"]
    return calendar_id


def calendars(client: Client, token: str, connection_id: str) -> dict[str, dict[str, Any]]:
    resp = client.call("GET", f"outlook/connections/{connection_id}/calendars", token)
    assert resp.status_code == 200, resp.text
    return {c["id"]: c for c in resp.json()["calendars"]}


def choose(client: Client, token: str, connection_id: str, calendar_id: str, selected: bool,
           agent_name: str | None = None) -> Any:
    return client.call("PUT", f"outlook/connections/{connection_id}/calendars/{calendar_id}", token,
                       json={"selected": selected, "agent_name": agent_name})


def listed(client: Client, token: str, subject: str) -> list[dict[str, Any]]:
    return [m for m in client.upcoming(token) if m["title"] == subject]


def recorded(client: Client, subject: str, token: str) -> list[dict[str, Any]]:
    """This test user's deployments for the meeting: other tests' users still connected to Erin's
    mailbox (page tests among them) get their own agents for the same event, one each, as they should."""
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    return [d for d in client.deployments() if d["body"]["title"] == subject and d["body"]["user_id"] == user_id]


def test_a_second_calendar_selected_shows_its_meetings_and_deselected_recalls_their_agents(client, erin):
    token, connection = erin
    cid = connection["id"]
    team = new_calendar(client, f"Team {uuid.uuid4().hex[:4]}")
    listing = calendars(client, token, cid)
    [default] = [c for c in listing.values() if c["is_default"]]
    assert default["selected"] and not listing[team]["selected"]  # a new connection reads its default

    only_team, both = f"Team only {uuid.uuid4().hex[:6]}", f"Both {uuid.uuid4().hex[:6]}"
    soon = now_utc() + timedelta(minutes=5)  # within the lead: deployed at once
    n = int(uuid.uuid4().int % 900_000)
    client.add_event(UPN, only_team, soon, calendar_id=team, onlineMeeting={"joinUrl": teams_link(n)})
    client.add_event(UPN, both, soon, calendar_id=team, onlineMeeting={"joinUrl": teams_link(n + 1)})
    client.add_event(UPN, both, soon, onlineMeeting={"joinUrl": teams_link(n + 1)})
    client.run_function("scan_calendars")
    eventually(lambda: listed(client, token, both))
    assert listed(client, token, only_team) == []  # not selected: not read

    chosen = choose(client, token, cid, team, True, "Team notes")
    assert chosen.status_code == 200, chosen.text
    assert chosen.json() == {"id": team, "name": listing[team]["name"], "is_default": False, "selected": True,
                             "agent_name": "Team notes"}
    [meeting] = eventually(lambda: listed(client, token, only_team))
    assert meeting["accounts"] == [UPN]
    [deployment] = eventually(lambda: recorded(client, only_team, token))
    assert deployment["body"]["agent_name"] == "Team notes"  # the calendar's own name for the agent
    # One meeting in two selected calendars is one meeting with one agent.
    eventually(lambda: [m for m in listed(client, token, both) if m["agent"] == "deployed"])
    assert len(listed(client, token, both)) == 1 and len(recorded(client, both, token)) == 1

    assert choose(client, token, cid, team, False).status_code == 200
    assert listed(client, token, only_team) == []
    eventually(lambda: recorded(client, only_team, token)[0]["recalled_at"])  # its agent leaves
    [still] = listed(client, token, both)  # held by the default calendar too: its agent stays
    assert still["agent"] == "deployed" and recorded(client, both, token)[0]["recalled_at"] is None


def test_the_last_calendar_cannot_be_deselected_and_unknown_ones_are_not_found(client, erin):
    token, connection = erin
    cid = connection["id"]
    [default] = [c for c in calendars(client, token, cid).values() if c["is_default"]]
    refused = choose(client, token, cid, default["id"], False)
    assert refused.status_code == 409 and refused.json()["error"] == "last_calendar"
    assert calendars(client, token, cid)[default["id"]]["selected"]
    assert choose(client, token, cid, "AAMkADnope", True).status_code == 404
    bad = client.call("PUT", f"outlook/connections/{cid}/calendars/{default['id']}", token, json={"selected": "yes"})
    assert bad.status_code == 400
    other = client.token(f"other-{uuid.uuid4().hex[:8]}", "pro")
    assert client.call("GET", f"outlook/connections/{cid}/calendars", other).status_code == 404


def test_a_secondary_calendar_is_read_after_any_notification_for_the_account(client, erin):
    """Graph v1.0 does not notify changes of a secondary calendar (the simulator's default): the next
    notification for the account (a change in the default calendar) reads it too."""
    token, connection = erin
    cid = connection["id"]
    team = new_calendar(client, f"Projects {uuid.uuid4().hex[:4]}")
    assert choose(client, token, cid, team, True).status_code == 200
    quiet, loud = f"Quiet {uuid.uuid4().hex[:6]}", f"Loud {uuid.uuid4().hex[:6]}"
    later = now_utc() + timedelta(hours=4)
    n = int(uuid.uuid4().int % 900_000)
    eventually(lambda: any(s["notificationUrl"].endswith(f"connection={cid}")
                           for s in client.sim("GET", "/_sim/subscriptions").json()))
    client.add_event(UPN, quiet, later, calendar_id=team, onlineMeeting={"joinUrl": teams_link(n)})
    client.add_event(UPN, loud, later + timedelta(hours=1), onlineMeeting={"joinUrl": teams_link(n + 1)})
    eventually(lambda: listed(client, token, loud), timeout=60)
    eventually(lambda: listed(client, token, quiet), timeout=60)
    reads = [r for r in client.sim("GET", "/_sim/requests").json()
             if f"/me/calendars/{team}/calendarView".lower() in r["path"].lower()]
    assert reads and all(r["status"] == 200 for r in reads)
    assert not any("/calendarview/delta" in r["path"].lower() and "/calendars/" in r["path"].lower() for r in reads)


def test_a_secondary_calendar_is_read_by_its_own_timer_when_nothing_else_changes(client, erin):
    """No notification for the account and no scan: the read_secondary_calendars timer (every 30
    minutes) syncs connections that read a calendar besides the default one."""
    token, connection = erin
    cid = connection["id"]
    team = new_calendar(client, f"Standups {uuid.uuid4().hex[:4]}")
    assert choose(client, token, cid, team, True).status_code == 200

    def team_calendar_reads() -> int:
        return len([r for r in client.sim("GET", "/_sim/requests").json()
                    if f"/me/calendars/{team}/calendarView".lower() in r["path"].lower()])

    eventually(team_calendar_reads)  # the sync the choice queued has read it (before the event exists)
    read_before = team_calendar_reads()
    subject = f"Only in the team calendar {uuid.uuid4().hex[:6]}"
    client.add_event(UPN, subject, now_utc() + timedelta(hours=3), calendar_id=team,
                     onlineMeeting={"joinUrl": teams_link(int(uuid.uuid4().int % 900_000))})
    client.run_function("read_secondary_calendars")
    eventually(lambda: listed(client, token, subject), timeout=60)
    assert team_calendar_reads() > read_before


def test_a_selected_calendar_deleted_in_outlook_falls_out_of_the_selection(client, erin):
    token, connection = erin
    cid = connection["id"]
    team = new_calendar(client, f"Gone {uuid.uuid4().hex[:4]}")
    [default] = [c for c in calendars(client, token, cid).values() if c["is_default"]]
    assert choose(client, token, cid, team, True).status_code == 200
    assert choose(client, token, cid, default["id"], False).status_code == 200  # only the team calendar now
    subject = f"Vanishing {uuid.uuid4().hex[:6]}"
    client.add_event(UPN, subject, now_utc() + timedelta(hours=5), calendar_id=team,
                     onlineMeeting={"joinUrl": teams_link(int(uuid.uuid4().int % 900_000))})
    client.run_function("scan_calendars")
    eventually(lambda: listed(client, token, subject))

    assert client.sim("DELETE", f"/_sim/users/{UPN}/calendars/{team}").status_code == 204
    client.run_function("scan_calendars")
    eventually(lambda: listed(client, token, subject) == [])
    after = calendars(client, token, cid)
    assert team not in after and after[default["id"]]["selected"]  # none left: the default again


def test_while_graph_cannot_list_the_calendars_the_page_is_told_to_try_again_and_nothing_changes(client, erin):
    token, connection = erin
    cid = connection["id"]
    before = calendars(client, token, cid)
    team = new_calendar(client, f"Team {uuid.uuid4().hex[:4]}")
    fault = client.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendars", "status": 503,
                                                     "count": 50})
    assert fault.status_code in (200, 201, 204), fault.text
    try:
        listing = client.call("GET", f"outlook/connections/{cid}/calendars", token)
        assert listing.status_code == 503, listing.text
        assert listing.json()["error"] == "microsoft_unavailable" and int(listing.headers["Retry-After"]) >= 1
        chosen = choose(client, token, cid, team, True, "Team notes")
        assert chosen.status_code == 503, chosen.text
    finally:
        client.sim("DELETE", "/_sim/faults")
    after = eventually(lambda: (r := client.call("GET", f"outlook/connections/{cid}/calendars", token))
                       .status_code == 200 and {c["id"]: c for c in r.json()["calendars"]})
    assert {k: v["selected"] for k, v in after.items() if k in before} == {k: v["selected"] for k, v in before.items()}
    assert after[team]["selected"] is False  # the choice made while Graph failed was not half-stored
