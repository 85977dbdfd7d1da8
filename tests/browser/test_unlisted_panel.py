""""Why isn't my meeting here?" on the Integrations page, in Chromium against the whole local stack: the
panel lists the next 7 days' events that are not in Upcoming Meetings, each with its reason in words,
and a search by title narrows it down. Desktop and phone width."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Person
from tests.e2e.client import now_utc, teams_link

pytestmark = pytest.mark.browser

ACCOUNT = "bob@outlook.com"


def test_the_panel_says_why_each_event_is_missing_and_searches_by_title(person: Person, client):
    person.open("solo")
    page = person.page
    person.connect(ACCOUNT)
    tag = uuid.uuid4().hex[:6]
    soon = now_utc() + timedelta(hours=2)
    events = [
        client.add_event(ACCOUNT, f"Team lunch {tag}", soon),
        client.add_event(ACCOUNT, f"Vendor call {tag}", soon + timedelta(hours=1),
                         location={"displayName": "https://acme.webex.com/acme/j.php?MTID=m2f7c1d"},
                         body={"contentType": "html",
                               "content": "<p>Jane | My Zoom room: https://acme.zoom.us/my/jane.doe</p>"}),
        client.add_event(ACCOUNT, f"Webinar {tag}", soon + timedelta(hours=2),
                         body={"contentType": "text",
                               "content": "Register: https://us02web.zoom.us/webinar/register/WN_abcDEF"}),
        client.add_event(ACCOUNT, f"Planning {tag}", soon + timedelta(hours=3), isCancelled=True,
                         onlineMeeting={"joinUrl": teams_link(931)}),
        client.add_event(ACCOUNT, f"Standup {tag}", soon + timedelta(hours=4),
                         onlineMeeting={"joinUrl": teams_link(932)}, isOnlineMeeting=True),
    ]
    try:
        panel = page.locator("#why-missing")
        expect(panel.locator("summary")).to_have_text("Why isn't my meeting here?")
        # With nothing listed the page opens the panel itself once it has shown Upcoming Meetings
        # (its last step writes the time-zone line): wait for that, then open it if it is not.
        expect(page.locator("#timezone")).not_to_be_empty()
        if panel.get_attribute("open") is None:
            panel.locator("summary").click()
        expect(panel).to_have_attribute("open", "")
        page.get_by_label("Find an event of the next 7 days").fill(tag)
        page.get_by_role("button", name="Look it up").click()
        items = page.locator("#unlisted li")
        expect(items).to_have_count(4)
        expect(items.locator(".meeting-title")).to_have_text(
            [f"Team lunch {tag}", f"Vendor call {tag}", f"Webinar {tag}", f"Planning {tag}"])
        expect(items.nth(0)).to_contain_text("no Teams, Zoom or Google Meet link")
        expect(items.nth(1)).to_contain_text("Webex")
        expect(items.nth(2)).to_contain_text("cannot be joined")
        expect(items.nth(3)).to_contain_text("cancelled")
        expect(items.nth(0)).to_contain_text(ACCOUNT)
        expect(page.locator("#unlisted-status")).to_contain_text("4 events of the next 7 days are not in Upcoming")
        expect(page.locator("#unlisted")).not_to_contain_text(f"Standup {tag}")
        person.shoot("unlisted-panel")

        page.get_by_label("Find an event of the next 7 days").fill(f"webinar {tag.upper()}")
        page.get_by_role("button", name="Look it up").click()
        expect(items.locator(".meeting-title")).to_have_text([f"Webinar {tag}"])
        page.get_by_label("Find an event of the next 7 days").fill(f"nothing-called-{tag}")
        page.get_by_role("button", name="Look it up").click()
        expect(items).to_have_count(0)
        expect(page.locator("#unlisted-status")).to_contain_text("No event of the next 7 days matching")
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/{ACCOUNT}/events/{event['id']}")
