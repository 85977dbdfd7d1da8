"""What the agent is doing, on the Integrations page: every state the agent platform reports (driven
through the recorder's signed reports against the whole local stack), with its detail in the viewer's
words, at desktop and phone width."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import eventually, now_utc, teams_link

pytestmark = pytest.mark.browser
UPN = "dave@contoso.com"
# The state each meeting's agent is driven to, the badge the page shows, and words of its detail.
STATES = [
    ([], "Agent deployed", "on its way"),
    (["joining"], "Agent joining", "Joining the meeting"),
    (["joining", "waiting_for_admission"], "Agent in the lobby", "ask the organiser to admit it"),
    (["joining", "waiting_for_admission", "in_call"], "Agent in the call", "In the call since"),
    (["joining", "waiting_for_admission", "admission_timeout"], "Agent not admitted", "try 2 of 3 goes at"),
    (["joining", "in_call", "ended"], "Agent left", "Left when the call ended"),
    (["joining", "failed"], "Agent failed", "could not join"),
]


def test_every_agent_state_is_shown_with_what_to_do(person: Person, client):
    person.open("pro")
    tag = uuid.uuid4().hex[:6]
    start = now_utc() + timedelta(minutes=4)  # every one inside the 10-minute lead: each agent is sent at once
    events = [client.add_event(UPN, f"Progress {tag} {i}", start + timedelta(seconds=30 * i),
                               onlineMeeting={"joinUrl": teams_link(970 + i)}) for i in range(len(STATES))]
    try:
        person.connect(UPN)

        def deployed() -> dict[str, str] | None:
            ids = {d["body"]["title"]: d["id"] for d in client.deployments()
                   if d["body"].get("user_id") == person.user_id and tag in d["body"].get("title", "")}
            return ids if len(ids) == len(STATES) else None

        agents = eventually(deployed, timeout=60)
        for i, (statuses, _, _) in enumerate(STATES):
            for status in statuses:
                answer = client.api.post(f"{client.stack.agents_url}/_agents/{agents[f'Progress {tag} {i}']}/report",
                                         json={"status": status}, timeout=30)
                assert answer.status_code == 204, answer.text
        for i, (_, badge, words) in enumerate(STATES):
            meeting = person.page.locator("li.meeting").filter(has_text=f"Progress {tag} {i}")
            person.refresh_until(lambda m=meeting, b=badge: m.locator(".status").filter(has_text=b).count() == 1)
            expect(meeting.locator(".agent-detail")).to_contain_text(words)
            expect(meeting.get_by_role("button", name="Skip")).to_have_count(0)  # sent: nothing to choose
        person.shoot("30-agent-progress")
    finally:
        for e in events:
            client.sim("DELETE", f"/_sim/users/{UPN}/events/{e['id']}")


def test_the_agent_is_named_and_sent_early_as_the_person_sets_it_and_a_bad_value_says_why(person: Person, client):
    person.open("solo")
    person.connect("erin@northwind.com")
    rules = person.page.get_by_role("region", name="Auto-join rules")
    lead = rules.get_by_label("Send it this many minutes before the start (0-15)")
    name = rules.get_by_label("The name it shows in the meeting")
    expect(lead).to_have_value("10")  # the service's default (AGENT_JOIN_LEAD_SECONDS=600 in the test stack)
    expect(name).to_have_value("")

    lead.fill("20")
    rules.get_by_role("button", name="Save rules").click()
    expect(rules.get_by_role("status")).to_have_text(
        "Not saved: send the agent a whole number of minutes, from 0 to 15, before the start.")
    assert client.call("GET", "autojoin/rules", person.token).json()["join_lead_seconds"] == 600  # unchanged

    lead.fill("5")
    name.fill("Ada's notes")
    rules.get_by_role("button", name="Save rules").click()
    expect(rules.get_by_role("status")).to_have_text("Rules saved. Upcoming Meetings follow them now.")
    saved = client.call("GET", "autojoin/rules", person.token).json()
    assert (saved["join_lead_seconds"], saved["agent_name"]) == (300, "Ada's notes")
    person.shoot("31-agent-settings")


def test_a_meeting_the_readiness_check_finds_at_risk_says_what_to_do_before_it_starts(person: Person, client):
    """The readiness check (READINESS_CHECK_SECONDS before the agent's join time) finds what would stop
    the agent while the person can still act: here the connection fell into Error."""
    import json

    person.open("pro")
    subject = f"Readiness {uuid.uuid4().hex[:6]}"
    # The stack joins 600 s ahead and checks 600 s before that: this meeting is checked in about 30 s.
    start = now_utc() + timedelta(seconds=600 + 600 + 30)
    event = client.add_event("alice@contoso.com", subject, start, onlineMeeting={"joinUrl": teams_link(7015)},
                             attendees=[{"type": "required", "emailAddress": {"address": "bo@contoso.com",
                                                                              "name": "Bo"}}])
    try:
        person.connect("alice@contoso.com")
        meeting = person.page.locator("li.meeting").filter(has_text=subject)
        person.refresh_until(lambda: meeting.count() == 1)
        [conn] = client.connections(person.token)["connections"]
        client.sim("POST", "/_sim/faults", json={"path_prefix": "/oauth2/v2.0/token", "count": 1, "status": 400,
                                                 "error": "invalid_grant", "aadsts": "AADSTS700082"})
        client.run_function("refresh_connection", json.dumps({"user_id": person.user_id,
                                                              "connection_id": conn["id"]}))
        person.refresh_until(lambda: meeting.locator(".at-risk").count() == 1, timeout=120)
        expect(meeting.locator(".at-risk")).to_contain_text("At risk:")
        expect(meeting.locator(".at-risk")).to_contain_text("reconnect")
        person.shoot("31-meeting-at-risk")
    finally:
        client.sim("DELETE", f"/_sim/users/alice@contoso.com/events/{event['id']}")
