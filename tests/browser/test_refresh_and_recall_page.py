"""Refresh on the Integrations page reads the calendars again ("sync now"), and a meeting whose agent
was sent and then skipped says the agent was recalled. Chromium against the whole local stack with
the periodic scan off, so nothing else reads the calendar."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import eventually, now_utc, teams_link

pytestmark = pytest.mark.browser
UPN = "erin@northwind.com"


def test_refresh_asks_for_a_sync_of_every_active_calendar_and_shows_what_it_found(person: Person, client):
    person.open("pro")
    person.connect(UPN)
    expect(person.card(UPN).locator(".badge")).to_have_text("Active")
    [connection] = client.connections(person.token)["connections"]
    subject = f"Found on asking {uuid.uuid4().hex[:6]}"
    # Not notified (as if Graph dropped it) and no scan: only a sync asked for finds it.
    event = client.sim("POST", f"/_sim/users/{UPN}/events", params={"notify": "false"}, json={
        "subject": subject, "onlineMeeting": {"joinUrl": teams_link(960)},
        # A colleague is invited: the rules skip the user's own events with nobody else (solo_events).
        "attendees": [{"type": "required", "emailAddress": {"address": "pat@contoso.com"}}],
        "start": {"dateTime": (now_utc() + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (now_utc() + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}).json()
    try:
        with person.page.expect_request(lambda r: r.method == "POST" and r.url.endswith(
                f"/api/outlook/connections/{connection['id']}/sync")) as asked:
            person.page.get_by_role("button", name="Refresh").click()
        assert asked.value.response().status == 202
        meeting = person.page.locator("li.meeting").filter(has_text=subject)
        person.refresh_until(lambda: meeting.count() == 1)
        expect(meeting.locator(".status")).to_have_text("Agent scheduled")
    finally:
        client.sim("DELETE", f"/_sim/users/{UPN}/events/{event['id']}")


def test_a_meeting_skipped_after_its_agent_went_shows_the_agent_recalled(person: Person, client):
    person.open("pro")
    person.connect(UPN)
    subject = f"Recalled on the page {uuid.uuid4().hex[:6]}"
    event = client.add_event(UPN, subject, now_utc() + timedelta(minutes=5), onlineMeeting={"joinUrl": teams_link(961)})
    try:
        eventually(lambda: [d for d in client.deployments() if (d.get("body") or {}).get("title") == subject
                            and d["body"].get("user_id") == person.user_id])
        meeting = person.page.locator("li.meeting").filter(has_text=subject)
        person.refresh_until(lambda: meeting.filter(has_text="Agent deployed").count() == 1)
        [shown] = [m for m in client.upcoming(person.token) if m["title"] == subject]
        assert client.call("PUT", f"meetings/{shown['id']}/autojoin", person.token,
                           json={"join": False}).status_code == 200
        person.refresh_until(lambda: meeting.filter(has_text="Agent recalled").count() == 1)
        expect(meeting).not_to_contain_text("Joins ")
        person.shoot("20-agent-recalled")
    finally:
        client.sim("DELETE", f"/_sim/users/{UPN}/events/{event['id']}")
