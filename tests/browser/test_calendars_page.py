"""The Integrations page's calendar chooser (which of an account's calendars are read, with the agent's
name for each) and a teammate's shared agent shown as theirs. Chromium against the whole local stack."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import eventually, now_utc, teams_link

pytestmark = pytest.mark.browser


def test_the_calendar_chooser_reads_a_second_calendar_with_its_agent_name(person: Person, client):
    upn = "bob@outlook.com"
    team_name = f"Book club {uuid.uuid4().hex[:4]}"
    team = client.sim("POST", f"/_sim/users/{upn}/calendars", json={"name": team_name}).json()["id"]
    subject = f"From the second calendar {uuid.uuid4().hex[:6]}"
    client.add_event(upn, subject, now_utc() + timedelta(hours=6), calendar_id=team,
                     onlineMeeting={"joinUrl": teams_link(int(uuid.uuid4().int % 900_000))})
    person.open("pro")
    person.connect(upn)
    card = person.card(upn)
    card.get_by_text("Calendars", exact=True).click()
    default = card.locator("li.calendar").filter(has_text="Calendar (default)")
    second = card.locator("li.calendar").filter(has_text=team_name)
    expect(default.locator("input[type=checkbox]")).to_be_checked()
    expect(second.locator("input[type=checkbox]")).not_to_be_checked()

    # The only calendar read cannot be unticked: the page says why and keeps it ticked.
    default.locator("input[type=checkbox]").uncheck()
    expect(card.locator(".calendar-status")).to_contain_text("Keep at least one calendar ticked")
    expect(default.locator("input[type=checkbox]")).to_be_checked()

    second.get_by_label(f"Agent name for {team_name}", exact=True).fill("Book notes")
    second.locator("input[type=checkbox]").check()
    expect(card.locator(".calendar-status")).to_contain_text(f"Reading {team_name}")
    [connection] = client.connections(person.token)["connections"]
    chosen = client.call("GET", f"outlook/connections/{connection['id']}/calendars", person.token).json()
    assert {(c["name"], c["selected"], c["agent_name"]) for c in chosen["calendars"]} == {
        ("Calendar", True, None), (team_name, True, "Book notes")}
    meeting = person.page.locator("li.meeting").filter(has_text=subject)
    person.refresh_until(lambda: meeting.count() == 1)
    # Refresh drew the cards again: the chooser the person had open is open still, read afresh.
    expect(second.locator("input[type=checkbox]")).to_be_checked()
    expect(second.get_by_label(f"Agent name for {team_name}", exact=True)).to_have_value("Book notes")
    person.shoot("30-calendar-chooser")

    second.locator("input[type=checkbox]").uncheck()
    expect(card.locator(".calendar-status")).to_contain_text(f"Not reading {team_name}")
    expect(meeting).to_have_count(0)


def test_a_teammates_agent_is_shown_as_theirs(person: Person, client):
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    mate = f"mate-{uuid.uuid4().hex[:6]}"
    mate_token = client.token(mate, "pro", email=f"{mate}@coagentor.test", workspace=workspace, workspace_dedupe=True)
    mate_connection = client.connect(mate_token, "dave@contoso.com")["connection"]
    subject = f"Shared agent {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    start = now_utc() + timedelta(minutes=5)  # within the lead: the teammate's agent goes at once
    ical = f"040000008200E00074C5B7101A82E008{uuid.uuid4().hex}"  # one meeting: one iCalUId in every mailbox
    try:
        client.add_event("dave@contoso.com", subject, start, onlineMeeting={"joinUrl": teams_link(n)}, iCalUId=ical)
        eventually(lambda: [d for d in client.deployments() if d["body"]["user_id"] == mate
                            and d["body"]["meeting_url"] == teams_link(n)], timeout=60)

        person.workspace, person.workspace_dedupe = workspace, True
        person.open("pro")
        person.connect("alice@contoso.com")
        client.add_event("alice@contoso.com", subject, start, onlineMeeting={"joinUrl": teams_link(n)}, iCalUId=ical)
        meeting = person.page.locator("li.meeting").filter(has_text=subject)
        person.refresh_until(lambda: meeting.filter(has_text="Teammate's agent").count() == 1, timeout=60)
        expect(meeting.locator(".status")).to_have_text("Teammate's agent · deployed")
        expect(meeting.locator(".agent-owner")).to_have_text(f"Sent by {mate}@coagentor.test")
        expect(meeting).not_to_contain_text("Calling the agent back")
        person.shoot("31-teammate-agent")
        assert [d for d in client.deployments() if d["body"]["meeting_url"] == teams_link(n)
                and d["body"]["user_id"] == person.user_id] == []  # one agent: the teammate's
    finally:
        client.call("DELETE", f"outlook/connections/{mate_connection['id']}", mate_token)
