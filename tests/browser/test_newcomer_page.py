"""The Integrations page as a newcomer meets it (issue 24), in Chromium with the back/forward cache on
(tests/browser/conftest.py), at desktop and phone width: coming back from Microsoft's sign-in with
Back, a mailbox Graph cannot read, titles that would push the page sideways, Refresh that says what it
did, a stale tab at the plan limit, a reload at the confirmation, a reconnect with another account, a
skipped meeting and an agent called back. Each test fails on the page as it was before that issue."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, Person
from tests.e2e.client import eventually, now_utc, teams_link

pytestmark = pytest.mark.browser
UPGRADE = "https://app.coagentor.test/settings/plan"  # UPGRADE_URL of the test stack (tests/conftest.py)
BERLIN = ZoneInfo("Europe/Berlin")  # the browser context's time zone (tests/browser/conftest.py)


def day_heading(start: datetime) -> str | re.Pattern[str]:
    """The page's heading of a meeting's day: Today, Tomorrow, else the weekday and the date
    ("Wednesday, December 9" in the browser's en-US locale)."""
    today = datetime.now(BERLIN).date()
    day = start.astimezone(BERLIN).date()
    if day == today:
        return "Today"
    if day == today + timedelta(days=1):
        return "Tomorrow"
    return re.compile(rf"^{day:%A}, {day:%B} {day.day}$")


def fits_on_screen(person: Person) -> None:
    """Nothing wider than the window, and every meeting's status and buttons inside it."""
    page = person.page
    assert person.no_horizontal_scroll(), page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    width = page.evaluate("innerWidth")
    for part in page.locator("li.meeting .status, li.meeting .meeting-actions button, #refresh").all():
        box = part.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (part.text_content(), box)


# ---------------------------------------------------------------- back/forward cache
def test_back_from_microsofts_sign_in_leaves_connect_usable_and_the_page_up_to_date(person: Person, client):
    person.open("solo")
    page = person.page
    # Chromium keeps no page in the cache while the tab that opened it is still open (reason
    # RelatedActiveContentsExist): as a page opened from `make dev`'s link, or once the CoAgentor tab is closed.
    assert person.web is not None
    person.web.close()
    page.evaluate("() => { window.__sameDocument = true; }")  # survives only a back/forward-cache restore
    page.get_by_role("button", name="Connect Outlook Calendar").click()
    page.wait_for_url(re.compile(re.escape(person.stack.sim_url)))
    client.connect(person.token, "bob@outlook.com")  # meanwhile, in another tab

    page.go_back(wait_until="commit")  # a restored page fires no load event
    expect(page.get_by_role("heading", name="Outlook Calendar", exact=True)).to_be_visible()
    assert page.evaluate("() => window.__sameDocument === true"), "the page was loaded again, not restored"
    connect = page.get_by_role("button", name="Connect Outlook Calendar")
    expect(connect).to_be_enabled()
    # Restored, it reads its state again rather than trusting what it showed before.
    expect(person.card("bob@outlook.com").locator(".badge")).to_have_text("Active")
    expect(page.locator("#plan-usage")).to_have_text("1 of 2 accounts on Solo")
    person.shoot("30-back-from-sign-in")
    connect.click()
    person.sign_in("alice@contoso.com")
    expect(person.notice()).to_contain_text("Connected alice@contoso.com")


# ---------------------------------------------------------------- a mailbox Graph cannot read
def test_a_mailbox_graph_cannot_read_is_not_announced_as_connected_and_gets_advice_that_fits(person: Person):
    person.open("pro")
    page = person.page
    person.connect("frank@contoso.com")  # signs in; his mailbox is on-premises
    card = person.card("frank@contoso.com")
    expect(card.locator(".badge")).to_have_text("Error")
    notice = person.notice()
    expect(notice).to_contain_text("its calendar can't be read")
    expect(notice).not_to_contain_text("will join")
    assert "success" not in (notice.get_attribute("class") or "")
    # What to do is about the mailbox, not about approving the app.
    expect(card.locator(".todo")).to_contain_text("Exchange Online")
    expect(card).not_to_contain_text("allow CoAgentor's Outlook Calendar app")
    expect(card.get_by_role("link", name=re.compile("Admin consent"))).to_have_count(0)
    expect(card.get_by_role("button", name="Reconnect")).to_be_visible()
    expect(page.locator("#plan-usage")).to_have_text("Unlimited on Pro")
    person.shoot("31-mailbox-graph-cannot-read")


# ---------------------------------------------------------------- the first read after connecting
def test_after_connecting_the_calendars_meetings_appear_without_pressing_refresh(person: Person, client):
    upn = "bob@outlook.com"
    tag = uuid.uuid4().hex[:6]
    event = client.add_event(upn, f"Already booked {tag}", now_utc() + timedelta(hours=4),
                             onlineMeeting={"joinUrl": teams_link(990)})
    try:
        person.open("solo")
        page = person.page
        person.connect(upn)
        expect(person.notice()).to_contain_text(f"Connected {upn}")
        # The page follows the calendar's first read (queued by the claim) and then lists what it found.
        expect(page.locator("li.meeting").filter(has_text=f"Already booked {tag}")).to_have_count(1, timeout=30_000)
        expect(page.locator("#sync-status")).to_have_text(re.compile(r"^Up to date"))
        expect(person.card(upn).locator(".synced")).to_have_text(re.compile(r"Calendar last read"))
        person.shoot("38-first-read-after-connecting")
    finally:
        client.sim("DELETE", f"/_sim/users/{upn}/events/{event['id']}")


# ---------------------------------------------------------------- hostile titles, days, Refresh
def test_long_titles_never_push_the_page_sideways_and_meetings_are_grouped_by_day(person: Person, client):
    upn = "bob@outlook.com"
    person.open("solo")
    page = person.page
    person.connect(upn)
    tag = uuid.uuid4().hex[:6]
    soon = now_utc() + timedelta(hours=2)
    later = soon + timedelta(days=1)  # always the next calendar day, whatever the time the test runs
    hostile = [f"{tag}-" + "Quarterly" * 40, f"https://{tag}.example.com/" + "x" * 300,
               f"{tag} " + "\u0645\u0631\u062d\u0628\u0627" * 60]
    events = [client.add_event(upn, title, when, onlineMeeting={"joinUrl": teams_link(970 + i)})
              for i, (title, when) in enumerate(zip(hostile, [soon, soon, later], strict=True))]
    try:
        client.run_function("scan_calendars")
        meetings = page.locator("li.meeting").filter(has_text=tag)
        person.refresh_until(lambda: meetings.count() == 3)
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            fits_on_screen(person)
        page.set_viewport_size(DESKTOP)
        headings = page.locator(".meeting-day").filter(has_text=tag).locator(".day-title")
        expect(headings).to_have_text([day_heading(soon), day_heading(later)])
        person.shoot("32-hostile-titles")
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/{upn}/events/{event['id']}")


def test_refresh_says_whether_it_read_the_calendar_and_when_microsoft_is_failing(person: Person, client):
    upn = "erin@northwind.com"
    person.open("pro")
    page = person.page
    person.connect(upn)
    card = person.card(upn)
    expect(card.locator(".synced")).to_have_text(re.compile(r"Calendar (last read|not read yet)"))
    status, spoken = page.locator("#sync-status"), page.locator("#meetings-status")
    refresh = page.get_by_role("button", name="Refresh")

    refresh.click()
    expect(status).to_have_text(re.compile(r"^Up to date: calendar read at \d\d:\d\d"), timeout=40_000)
    expect(card.locator(".synced")).to_have_text(re.compile(r"Calendar last read (just now|\d+ minutes? ago)"))
    expect(spoken).to_have_text(status.text_content() or "")  # screen readers hear the outcome
    person.shoot("33-refresh-up-to-date")

    # Microsoft failing: Refresh says so while it lasts, instead of pretending it looked.
    client.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendarView", "status": 503,
                                              "retry_after": 0, "count": 100_000})  # until removed below
    try:
        # A read already under way when Graph started failing may still complete (and is reported as
        # such); the person presses Refresh again, and from then on it says Microsoft is failing.
        for _ in range(3):
            refresh.click()
            expect(refresh).to_be_enabled(timeout=40_000)
            if "Couldn't read" in (status.text_content() or ""):
                break
        expect(status).to_contain_text(f"Couldn't read {upn} just now")
        expect(spoken).to_contain_text(f"Couldn't read {upn}")
        expect(card.locator(".synced")).to_contain_text("reading it has failed since")
        expect(refresh).to_be_enabled()
        person.shoot("34-refresh-while-graph-fails")
    finally:
        client.sim("DELETE", "/_sim/faults")  # later reads go through
    refresh.click()
    expect(status).to_have_text(re.compile(r"^Up to date"), timeout=40_000)
    expect(card.locator(".synced")).not_to_contain_text("failed")


# ---------------------------------------------------------------- plan limit in a stale tab
def test_a_stale_tab_at_the_plan_limit_shows_the_plan_as_it_is_with_a_working_upgrade_link(person: Person, client):
    person.open("solo")
    page = person.page
    expect(page.locator("#plan-usage")).to_have_text("0 of 2 accounts on Solo")
    # Another tab connects two accounts; this one still shows what it read before.
    client.connect(person.token, "bob@outlook.com")
    client.connect(person.token, "alice@contoso.com")
    page.get_by_role("button", name="Connect Outlook Calendar").click()
    expect(person.notice()).to_contain_text("Your plan's Outlook account limit is reached")
    # The rest of the page agrees with the notice: no "0 of 2", no Connect button.
    expect(page.get_by_role("button", name="Connect Outlook Calendar")).to_be_hidden()
    expect(page.locator("#plan-limit")).to_contain_text("Your Solo plan includes 2 Outlook accounts, and all 2 "
                                                        "are connected")
    expect(page.locator("li.card")).to_have_count(2)
    for link in page.get_by_role("link", name="Upgrade your plan").all():
        expect(link).to_have_attribute("href", UPGRADE)
    person.shoot("35-stale-tab-at-plan-limit")


def test_a_tab_looked_at_again_reads_what_changed_elsewhere(person: Person, client):
    person.open("solo")
    page = person.page
    expect(page.locator("#plan-usage")).to_have_text("0 of 2 accounts on Solo")
    expect(page.get_by_role("region", name="Auto-join rules")).to_be_visible()  # loaded to the end
    client.connect(person.token, "bob@outlook.com")  # in another tab, while this one sits in the background
    # The person comes back to this tab (the browser says so with visibilitychange).
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    expect(person.card("bob@outlook.com").locator(".badge")).to_have_text("Active")
    expect(page.locator("#plan-usage")).to_have_text("1 of 2 accounts on Solo")


# ---------------------------------------------------------------- the confirmation
def test_reloading_at_the_confirmation_asks_again_and_keeps_the_sign_in(person: Person, client):
    person.open("solo")
    page = person.page
    page.get_by_role("button", name="Connect Outlook Calendar").click()
    page.wait_for_url(re.compile(re.escape(person.stack.sim_url)))
    page.get_by_label("Email, phone, or Skype").fill("alice@contoso.com")
    page.get_by_role("button", name="Accept").click()
    dialog = page.locator("#claim-dialog")
    expect(dialog).to_contain_text("Connect the Microsoft account alice@contoso.com")
    assert "claim" not in page.url

    page.reload()
    expect(dialog).to_contain_text("Connect the Microsoft account alice@contoso.com")
    assert "claim" not in page.url
    dialog.get_by_role("button", name="Connect", exact=True).click()
    expect(person.notice()).to_contain_text("Connected alice@contoso.com")
    # Answered: a reload now asks nothing and connects nothing twice.
    page.reload()
    person.ready()
    expect(dialog).not_to_be_visible()
    expect(page.locator("li.card")).to_have_count(1)
    assert [c["email"] for c in client.connections(person.token)["connections"]] == ["alice@contoso.com"]


def test_reconnecting_with_another_microsoft_account_is_refused_before_asking(person: Person, client):
    upn = "erin@northwind.com"
    person.open("pro")
    page = person.page
    person.connect(upn)
    card = person.card(upn)
    client.sim("POST", f"/_sim/users/{upn}/revoke")
    client.run_function("refresh_tokens")
    person.refresh_until(lambda: card.locator(".badge.error").count() == 1)
    claims: list[str] = []
    page.on("request", lambda r: claims.append(r.url) if r.method == "POST" and "/outlook/claim" in r.url else None)

    card.get_by_role("button", name="Reconnect").click()
    page.wait_for_url(re.compile(re.escape(person.stack.sim_url)))
    page.get_by_label("Email, phone, or Skype").fill("dave@contoso.com")
    page.get_by_role("button", name="Accept").click()
    expect(person.notice()).to_contain_text("That's a different Microsoft account")
    expect(page.locator("#claim-dialog")).not_to_be_visible()  # never asked "Reconnect…?" to refuse after
    assert claims == []
    expect(card.locator(".badge")).to_have_text("Error")
    expect(person.card("dave@contoso.com")).to_have_count(0)
    person.shoot("36-reconnect-another-account")
    card.get_by_role("button", name="Reconnect").click()
    person.sign_in(upn)
    expect(person.notice()).to_contain_text(f"Reconnected {upn}")


# ---------------------------------------------------------------- skip and call back
def test_a_skipped_meeting_is_neutral_and_a_deployed_agent_can_be_called_back(person: Person, client):
    upn = "erin@northwind.com"
    person.open("pro")
    page = person.page
    person.connect(upn)
    tag = uuid.uuid4().hex[:6]
    soon = client.add_event(upn, f"Going now {tag}", now_utc() + timedelta(minutes=5),
                            onlineMeeting={"joinUrl": teams_link(980)})
    later = client.add_event(upn, f"Later on {tag}", now_utc() + timedelta(hours=3),
                             onlineMeeting={"joinUrl": teams_link(981)})
    try:
        client.run_function("scan_calendars")
        going = page.locator("li.meeting").filter(has_text=f"Going now {tag}")
        skipped = page.locator("li.meeting").filter(has_text=f"Later on {tag}")
        person.refresh_until(lambda: going.filter(has_text="Agent deployed").count() == 1 and skipped.count() == 1)

        skipped.get_by_role("button", name=re.compile("^Skip ")).click()
        expect(skipped.locator(".status")).to_have_text("No agent")
        looks = skipped.locator(".status").evaluate(
            "s => [getComputedStyle(s).backgroundColor, getComputedStyle(s).color]")
        failure_looks = [page.evaluate(
            "k => { const s = document.createElement('span'); s.className = 'status ' + k; document.body.append(s);"
            " const c = [getComputedStyle(s).backgroundColor, getComputedStyle(s).color]; s.remove(); return c; }",
            kind) for kind in ("failed",)]
        assert looks not in failure_looks
        warn_bg = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--warn-bg').trim()")
        assert looks[0] != _rgb(warn_bg), "a skipped meeting shown in warning colours"

        going.get_by_role("button", name=re.compile("Call the agent back")).click()
        expect(going.locator(".status")).to_have_text("Agent recalled", timeout=30_000)
        expect(going.locator(".status")).not_to_have_class(re.compile("failed"))
        person.shoot("37-skipped-and-called-back")
        deployed = [d for d in client.deployments() if (d.get("body") or {}).get("title") == f"Going now {tag}"]
        eventually(lambda: any(d.get("recalled_at") for d in client.deployments()
                               if (d.get("body") or {}).get("title") == f"Going now {tag}"))
        assert deployed
    finally:
        for event in (soon, later):
            client.sim("DELETE", f"/_sim/users/{upn}/events/{event['id']}")


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return f"rgb({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)})"
