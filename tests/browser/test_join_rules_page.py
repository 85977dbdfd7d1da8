"""Join rules and the per-meeting toggle on the Integrations page, in Chromium against the whole local
stack: every meeting says whether the agent joins and why; one click joins or skips a meeting or its
series, "Use my rules" goes back; the rules panel shows the defaults, saves a change that Upcoming
Meetings follows at once, and keeps it across visits. Desktop and phone width."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import now_utc, teams_link

pytestmark = pytest.mark.browser

ACCOUNT = "dave@contoso.com"
STRANGER = {"emailAddress": {"name": "Mallory", "address": "mallory@fabrikam.com"}}


def test_each_meeting_says_why_and_one_click_joins_or_skips_it_or_its_series(person: Person, client):
    person.open("pro")
    page = person.page  # the Integrations page, however it was opened
    person.connect(ACCOUNT)
    tag = uuid.uuid4().hex[:6]
    start = now_utc().replace(minute=0) + timedelta(hours=5)
    events = [
        client.add_event(ACCOUNT, f"Planning {tag}", start, onlineMeeting={"joinUrl": teams_link(971)}),
        client.add_event(ACCOUNT, f"Vendor pitch {tag}", start + timedelta(hours=1), organizer=STRANGER,
                         onlineMeeting={"joinUrl": teams_link(972)}),
        client.add_event(ACCOUNT, f"Standup {tag}", start + timedelta(hours=2),
                         onlineMeeting={"joinUrl": teams_link(973)},
                         recurrence={"pattern": {"type": "daily", "interval": 1},
                                     # The series' own first day: near midnight UTC it is tomorrow.
                                     "range": {"type": "numbered",
                                               "startDate": (start + timedelta(hours=2)).date().isoformat(),
                                               "numberOfOccurrences": 3}}),
    ]
    try:
        client.run_function("scan_calendars")
        meetings = page.locator("li.meeting").filter(has_text=tag)
        person.refresh_until(lambda: meetings.count() == 5)
        planning = meetings.filter(has_text=f"Planning {tag}")
        pitch = meetings.filter(has_text=f"Vendor pitch {tag}")
        standups = meetings.filter(has_text=f"Standup {tag}")
        expect(planning.locator(".status")).to_have_text("Agent scheduled")
        expect(planning.locator(".why")).to_have_text("Your agent joins by your rules: you organise this meeting.")
        expect(pitch.locator(".status")).to_have_text("No agent")
        expect(pitch.locator(".why")).to_contain_text("comes from outside your organisation and you haven't answered")
        person.shoot("50-meetings-with-reasons")

        # A stranger's invitation: send the agent anyway, then let the rules decide again.
        pitch.get_by_role("button", name=f"Send the agent to Vendor pitch {tag}").click()
        expect(pitch.locator(".status")).to_have_text("Agent scheduled")
        expect(pitch.locator(".why")).to_have_text("Your agent joins because you chose to send it to this meeting.")
        expect(page.locator("#meetings-status")).to_contain_text(f"Vendor pitch {tag}: Your agent joins")
        pitch.get_by_role("button", name=f"Let your rules decide for Vendor pitch {tag}").click()
        expect(pitch.locator(".status")).to_have_text("No agent")
        expect(pitch.get_by_role("button", name=re.compile("Let your rules decide"))).to_have_count(0)

        # Skip one meeting, by keyboard: focus stays on that meeting.
        skip = planning.get_by_role("button", name=f"Skip Planning {tag}")
        skip.focus()
        page.keyboard.press("Enter")
        expect(planning.locator(".why")).to_have_text("No agent: you chose to skip this meeting.")
        expect(planning.get_by_role("button", name=f"Send the agent to Planning {tag}")).to_be_focused()

        # A series: one click skips every occurrence; going back to the rules restores them all.
        expect(standups.get_by_role("button", name=re.compile("^Skip every meeting of the series"))).to_have_count(3)
        standups.nth(1).get_by_role("button", name=f"Skip every meeting of the series Standup {tag}").click()
        expect(standups.locator(".why")).to_have_text(["No agent: you chose to skip every meeting of this series."] * 3)
        expect(standups.locator(".status")).to_have_text(["No agent"] * 3)
        person.shoot("51-series-skipped")
        standups.nth(2).get_by_role("button", name=f"Let your rules decide for the series Standup {tag}").click()
        expect(standups.locator(".status")).to_have_text(["Agent scheduled"] * 3)

        # What the page shows is what the service will do.
        shown = {m["title"]: (m["will_join"], m["why"]) for m in client.upcoming(person.token)}
        assert shown[f"Planning {tag}"] == (False, "skipped_by_you")
        assert shown[f"Vendor pitch {tag}"] == (False, "external_unanswered")
        assert shown[f"Standup {tag}"] == (True, "rules")
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/{ACCOUNT}/events/{event['id']}")


def test_the_rules_panel_shows_the_defaults_and_saves_a_change_that_meetings_follow_at_once(person: Person, client):
    person.open("solo")
    page = person.page
    person.connect(ACCOUNT)
    rules = page.get_by_role("region", name="Auto-join rules")
    expect(rules).to_be_visible()
    for label in ("organise", "accepted", "tentatively accepted", "haven't answered yet"):
        expect(rules.get_by_label(label, exact=True)).to_be_checked()
    expect(rules.get_by_label("declined (my agent goes in my place)")).not_to_be_checked()
    expect(rules.get_by_label("Join only once I've accepted")).to_be_checked()
    for label in ("Microsoft Teams", "Zoom", "Google Meet"):
        expect(rules.get_by_label(label)).to_be_checked()
    person.shoot("52-rules-defaults")

    tag = uuid.uuid4().hex[:6]
    start = now_utc().replace(minute=0) + timedelta(hours=6)
    events = [
        client.add_event(ACCOUNT, f"Teams review {tag}", start, onlineMeeting={"joinUrl": teams_link(981)}),
        client.add_event(ACCOUNT, f"Zoom intro {tag}", start, organizer=STRANGER,
                         location={"displayName": "https://fabrikam.zoom.us/j/81234567981"}),
    ]
    try:
        client.run_function("scan_calendars")
        meetings = page.locator("li.meeting").filter(has_text=tag)
        person.refresh_until(lambda: meetings.count() == 2)
        review = meetings.filter(has_text=f"Teams review {tag}")
        intro = meetings.filter(has_text=f"Zoom intro {tag}")
        expect(review.locator(".status")).to_have_text("Agent scheduled")
        expect(intro.locator(".status")).to_have_text("No agent")

        rules.get_by_label("Microsoft Teams").uncheck()
        rules.get_by_label("Join them like any other").check()
        rules.get_by_role("button", name="Save rules").click()
        expect(rules.get_by_role("status")).to_have_text("Rules saved. Upcoming Meetings follow them now.")
        expect(review.locator(".status")).to_have_text("No agent")
        expect(review.locator(".why")).to_have_text("No agent: your join rules skip Microsoft Teams meetings.")
        expect(intro.locator(".status")).to_have_text("Agent scheduled")
        person.shoot("53-rules-saved")

        # A later visit shows what was saved.
        person.open()
        rules = person.page.get_by_role("region", name="Auto-join rules")
        expect(rules.get_by_label("Microsoft Teams")).not_to_be_checked()
        expect(rules.get_by_label("Zoom")).to_be_checked()
        expect(rules.get_by_label("Join them like any other")).to_be_checked()
        saved = client.call("GET", "autojoin/rules", person.token).json()
        assert {k: saved[k] for k in ("responses", "external_invites", "platforms")} == {
            "responses": ["organizer", "accepted", "tentative", "not_responded"],
            "external_invites": "join", "platforms": ["zoom", "google_meet"]}  # other fields: their defaults
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/{ACCOUNT}/events/{event['id']}")
