"""Private, solo, all-day and free events on the Integrations page, in Chromium against the whole local
stack: a private appointment and the user's own focus block with a Teams link are listed without an
agent and say why; ticking "Join events marked private" in the rules sends the agent to the private one
at once, and a later visit shows the rule as saved."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import now_utc, teams_link

pytestmark = pytest.mark.browser

ACCOUNT = "dave@contoso.com"


def test_private_and_solo_events_are_listed_without_an_agent_and_a_rule_opts_in(person: Person, client):
    person.open("solo")
    page = person.page
    person.connect(ACCOUNT)
    rules = page.get_by_role("region", name="Auto-join rules")
    expect(rules.get_by_label("Join events marked private")).not_to_be_checked()
    expect(rules.get_by_label("Skip events that show me as free")).not_to_be_checked()
    tag = uuid.uuid4().hex[:6]
    start = now_utc().replace(minute=0) + timedelta(hours=5)
    events = [
        client.add_event(ACCOUNT, f"Doctor {tag}", start, sensitivity="private",
                         onlineMeeting={"joinUrl": teams_link(991)}),
        client.add_event(ACCOUNT, f"Focus time {tag}", start + timedelta(hours=1), attendees=[],
                         onlineMeeting={"joinUrl": teams_link(992)}),
    ]
    try:
        client.run_function("scan_calendars")
        meetings = page.locator("li.meeting").filter(has_text=tag)
        person.refresh_until(lambda: meetings.count() == 2)
        doctor = meetings.filter(has_text=f"Doctor {tag}")
        focus = meetings.filter(has_text=f"Focus time {tag}")
        expect(doctor.locator(".status")).to_have_text("No agent")
        expect(doctor.locator(".why")).to_contain_text("marked private")
        expect(focus.locator(".status")).to_have_text("No agent")
        expect(focus.locator(".why")).to_contain_text("nobody else is invited")
        person.shoot("kinds-of-events-skipped")

        rules.get_by_label("Join events marked private").check()
        rules.get_by_role("button", name="Save rules").click()
        expect(rules.get_by_role("status")).to_have_text("Rules saved. Upcoming Meetings follow them now.")
        expect(doctor.locator(".status")).to_have_text("Agent scheduled")
        expect(focus.locator(".status")).to_have_text("No agent")

        person.open()
        rules = person.page.get_by_role("region", name="Auto-join rules")
        expect(rules.get_by_label("Join events marked private")).to_be_checked()
        stored = client.call("GET", "autojoin/rules", person.token).json()
        assert (stored["private_events"], stored["solo_events"], stored["all_day_events"], stored["free_events"]) == (
            "join", "skip", "skip", "join")
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/{ACCOUNT}/events/{event['id']}")
