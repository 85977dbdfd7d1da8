"""The Integrations page as a person uses it, in Chromium, against the whole local stack: the help
article's steps (Integrations → Calendars → Connect Outlook Calendar → sign in → Active card;
Error badge and Reconnect; Disconnect; Upcoming Meetings) and every way a sign-in can come back."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from devstack.stack import OUTLOOK_CLIENT_ID, platform_token
from shared.adapters.identity import admin_consent_url as shared_admin_consent_url
from shared.connections import REASONS
from tests.browser.conftest import Person
from tests.e2e.client import now_utc, teams_link

# What a stubbed connections answer carries (a shape the OpenAPI document allows).
UPGRADE = "https://app.coagentor.test/settings/plan"  # UPGRADE_URL of the test stack (tests/conftest.py)
ADMIN_CONSENT = ("https://login.microsoftonline.com/organizations/v2.0/adminconsent?client_id="
                 f"{OUTLOOK_CLIENT_ID}&scope=https%3A%2F%2Fgraph.microsoft.com%2FCalendars.Read")


def admin_consent_url(stack) -> re.Pattern[str]:
    """What the running service hands the page for IT admins: the v2 admin-consent endpoint of the
    configured authority's cloud, with our callback as the redirect URI and a `state` of this user's."""
    url = shared_admin_consent_url(f"{stack.sim_url}/common", OUTLOOK_CLIENT_ID,
                                   f"{stack.functions_url}/api/outlook/callback", "STATE")
    return re.compile("^" + re.escape(url).replace("STATE", "[0-9a-f]{32}\\.[0-9]+\\.[A-Za-z0-9_-]{43}") + "$")

pytestmark = pytest.mark.browser


def test_connecting_shows_the_account_as_active_and_its_meetings_after_a_scan(person: Person, client):
    person.open("solo")
    page = person.page
    assert "#token" not in page.url  # the token left the address bar; it lives in sessionStorage
    expect(page.get_by_role("tab")).to_have_count(0)  # no placeholder tabs: the page is about calendars
    # What CoAgentor will see, before connecting, with the help article one click away.
    permissions = page.get_by_role("region", name="What CoAgentor can see")
    expect(permissions).to_contain_text("Calendars.Read")
    expect(permissions).to_contain_text("never creates, changes or deletes events")
    expect(permissions.get_by_role("link", name=re.compile("help article"))).to_have_attribute(
        "href", "https://app.coagentor.test/help/outlook-calendar")
    expect(page.get_by_text("No Outlook calendar connected yet.")).to_be_visible()
    expect(page.locator("#plan-usage")).to_have_text("0 of 2 accounts on Solo")
    expect(page.get_by_text("Connect an Outlook calendar to see its upcoming meetings here.")).to_be_visible()
    person.shoot("01-before-connecting")

    person.connect("bob@outlook.com")
    assert "claim" not in page.url and "outlook=" not in page.url
    expect(person.notice()).to_contain_text("Connected bob@outlook.com")
    card = person.card("bob@outlook.com")
    expect(card.locator(".badge")).to_have_text("Active")
    expect(page.locator("#plan-usage")).to_have_text("1 of 2 accounts on Solo")
    # Nothing listed yet: why a meeting can be missing (in words for users, no support command).
    expect(page.get_by_text("No upcoming meetings with a Teams, Zoom or Google Meet link")).to_be_visible()
    expect(page.get_by_text("python -m")).to_have_count(0)
    person.shoot("02-connected-active")

    tag = uuid.uuid4().hex[:6]
    soon = now_utc() + timedelta(minutes=5)  # within the stack's 10-minute lead: the agent is sent now
    events = [
        client.add_event("bob@outlook.com", f"Design review {tag}", soon, onlineMeeting={"joinUrl": teams_link(901)},
                         isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness"),
        client.add_event("bob@outlook.com", f"Customer call {tag}", now_utc() + timedelta(hours=3),
                         location={"displayName": "https://contoso.zoom.us/j/81234567890?pwd=abcDEF123"}),
        client.add_event("bob@outlook.com", f"Weekly sync {tag}", now_utc() + timedelta(days=1),
                         body={"contentType": "text", "content": "Join: https://meet.google.com/abc-defg-hij"}),
        client.add_event("bob@outlook.com", f"Lunch {tag}", soon + timedelta(hours=1)),  # no meeting link
        # Event text is shown as text, never as markup.
        client.add_event("bob@outlook.com", f"<img src=x onerror=alert(1)> Retro {tag}", now_utc() + timedelta(days=2),
                         onlineMeeting={"joinUrl": teams_link(902)}),
    ]
    try:
        client.run_function("scan_calendars")
        meetings = page.locator("li.meeting").filter(has_text=tag)
        person.refresh_until(lambda: meetings.count() == 4
                             and meetings.filter(has_text="Agent deployed").count() == 1)
        expect(meetings.locator(".meeting-title")).to_have_text(
            [f"Design review {tag}", f"Customer call {tag}", f"Weekly sync {tag}",
             f"<img src=x onerror=alert(1)> Retro {tag}"])
        expect(page.locator("li.meeting img")).to_have_count(0)
        expect(page.get_by_text(f"Lunch {tag}")).to_have_count(0)
        review, call, sync = meetings.nth(0), meetings.nth(1), meetings.nth(2)
        expect(review).to_contain_text("Microsoft Teams")
        expect(review).to_contain_text("From bob@outlook.com")
        expect(review.locator(".status")).to_have_text("Agent deployed")
        expect(call).to_contain_text("Zoom")
        expect(call.locator(".status")).to_have_text("Agent scheduled")
        expect(call).to_contain_text(re.compile(r"Joins \d\d:\d\d"))
        expect(sync).to_contain_text("Google Meet")
        expect(page.locator("#meetings-empty")).to_be_hidden()
        expect(page.get_by_text("python -m")).to_have_count(0)
        person.shoot("03-upcoming-meetings")
        page.set_viewport_size({"width": 390, "height": 844})
        assert person.no_horizontal_scroll()
    finally:
        for event in events:
            client.sim("DELETE", f"/_sim/users/bob@outlook.com/events/{event['id']}")


def test_revoked_access_shows_an_error_badge_and_reconnecting_restores_it(person: Person, client):
    person.open("pro")
    page = person.page
    expect(page.locator("#plan-usage")).to_have_text("Unlimited on Pro")
    person.connect("erin@northwind.com")
    card = person.card("erin@northwind.com")
    expect(card.locator(".badge")).to_have_text("Active")

    client.sim("POST", "/_sim/users/erin@northwind.com/revoke")
    client.run_function("refresh_tokens")
    person.refresh_until(lambda: card.locator(".badge.error").count() == 1)
    expect(card.locator(".badge")).to_have_text("Error")
    expect(card.locator(".reason")).to_contain_text("Access to this calendar was revoked")
    expect(card).to_contain_text("Auto-join paused")
    person.shoot("04-error-reconnect")

    # Reconnecting with another Microsoft account changes nothing and says so.
    card.get_by_role("button", name="Reconnect").click()
    person.sign_in("dave@contoso.com")
    expect(person.notice()).to_contain_text("That's a different Microsoft account")
    expect(person.card("erin@northwind.com").locator(".badge")).to_have_text("Error")
    expect(person.card("dave@contoso.com")).to_have_count(0)
    person.shoot("05-reconnect-account-mismatch")

    person.card("erin@northwind.com").get_by_role("button", name="Reconnect").click()
    person.sign_in("erin@northwind.com")
    expect(person.notice()).to_contain_text("Reconnected erin@northwind.com")
    expect(person.card("erin@northwind.com").locator(".badge")).to_have_text("Active")
    expect(page.locator("li.card")).to_have_count(1)
    person.shoot("06-reconnected")


def test_the_plan_limit_is_explained_with_an_upgrade_link(person: Person, client):
    person.open("free")
    page = person.page
    expect(page.locator("#plan-usage")).to_have_text("0 of 1 account on Free")

    # The Connect button was pressed while there was room; meanwhile another account got connected.
    page.get_by_role("button", name="Connect Outlook Calendar").click()
    page.wait_for_url(re.compile(re.escape(person.stack.sim_url)))
    client.connect(person.token, "bob@outlook.com")
    person.sign_in("alice@contoso.com")
    expect(person.notice()).to_contain_text("Your plan's Outlook account limit is reached")
    expect(person.notice()).to_contain_text("was not connected")
    expect(person.notice().get_by_role("link", name="Upgrade your plan")).to_have_attribute("href", UPGRADE)
    expect(person.card("alice@contoso.com")).to_have_count(0)
    person.shoot("07-plan-limit-at-claim")

    page.get_by_role("button", name="Dismiss").click()
    expect(person.card("bob@outlook.com")).to_be_visible()
    expect(page.get_by_role("button", name="Connect Outlook Calendar")).to_be_hidden()
    expect(page.locator("#plan-limit")).to_contain_text(
        "Your Free plan includes 1 Outlook account, and it is connected. To connect another, upgrade your plan "
        "or disconnect one.")
    expect(page.locator("#plan-limit").get_by_role("link", name="Upgrade your plan")).to_have_attribute(
        "href", UPGRADE)
    person.shoot("08-plan-limit")


def test_disconnecting_asks_first_then_removes_the_account(person: Person):
    person.open("solo")
    page = person.page
    person.connect("alice@contoso.com")
    card = person.card("alice@contoso.com")
    expect(card.locator(".badge")).to_have_text("Active")

    disconnect = card.get_by_role("button", name="Disconnect")
    disconnect.click()
    dialog = page.get_by_role("dialog", name="Disconnect alice@contoso.com?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    person.shoot("09-disconnect-dialog", full_page=False)
    page.keyboard.press("Escape")  # changes nothing
    expect(dialog).to_be_hidden()
    expect(disconnect).to_be_focused()
    expect(card).to_be_visible()

    disconnect.click()
    dialog.get_by_role("button", name="Disconnect").click()
    expect(person.notice()).to_contain_text("Disconnected alice@contoso.com")
    expect(person.card("alice@contoso.com")).to_have_count(0)
    expect(page.get_by_text("No Outlook calendar connected yet.")).to_be_visible()
    expect(page.locator("#plan-usage")).to_have_text("0 of 2 accounts on Solo")
    person.shoot("10-disconnected")


def test_a_sign_in_started_from_another_coagentor_account_is_discarded(person: Person, client):
    """Account-linking CSRF: someone lures a signed-in user to the callback with their own sign-in."""
    attacker = client.token(f"attacker-{uuid.uuid4().hex[:8]}", "pro")
    start = client.start(attacker).json()
    lure = client.sign_in(start["authorize_url"], "erin@northwind.com")  # the callback URL, not followed

    person.open("solo")
    page = person.page
    page.goto(lure)
    person.ready()
    assert "claim" not in page.url
    expect(person.notice()).to_contain_text("This sign-in was started from another CoAgentor account")
    expect(person.notice()).to_contain_text("nothing was connected")
    expect(page.locator("li.card")).to_have_count(0)
    assert client.connections(person.token)["connections"] == []
    assert client.connections(attacker)["connections"] == []
    person.shoot("11-claim-by-another-account")


def test_cancelling_the_microsoft_sign_in_is_reported(person: Person):
    person.open("free")
    page = person.page
    person.connect("alice@contoso.com", action="cancel")
    expect(person.notice()).to_contain_text("Sign-in cancelled")
    expect(person.notice()).to_contain_text("nothing was connected")
    expect(person.notice()).to_be_focused()
    expect(page.locator("li.card")).to_have_count(0)
    assert "outlook=" not in page.url
    person.shoot("12-sign-in-cancelled")


def test_a_tenant_that_blocks_the_app_is_reported_with_what_to_ask_it(person: Person):
    person.open("solo")
    page = person.page
    person.connect("carol@fabrikam.com")
    notice = person.notice()
    expect(notice).to_contain_text("Blocked by your organisation")
    expect(notice).to_contain_text("Ask your IT admin to allow CoAgentor's Outlook Calendar app.")
    expect(notice.get_by_role("link", name=re.compile("Admin consent link"))).to_have_attribute(
        "href", admin_consent_url(person.stack))
    expect(page.locator("li.card")).to_have_count(0)
    person.shoot("13-blocked-by-organisation")


def test_an_expired_or_reused_sign_in_asks_to_try_again(person: Person):
    person.open("solo")
    page = person.page
    page.goto(f"{person.page_url}?outlook=confirm&claim=never-issued")
    person.ready()
    expect(person.notice()).to_contain_text("That sign-in expired")
    expect(person.notice().get_by_role("button", name="Try again")).to_be_visible()
    assert "never-issued" not in page.url
    person.shoot("14-sign-in-expired")

    page.goto(f"{person.page_url}?outlook=expired&reason=stale_state")
    person.ready()
    expect(person.notice()).to_contain_text("That sign-in expired")
    person.notice().get_by_role("button", name="Try again").click()
    person.sign_in("alice@contoso.com")
    expect(person.notice()).to_contain_text("Connected alice@contoso.com")

    page.goto(f"{person.page_url}?outlook=failed&reason=profile_unavailable")
    person.ready()
    expect(person.notice()).to_contain_text("Microsoft sign-in did not complete")
    expect(person.notice()).to_contain_text("profile_unavailable")  # what to tell support
    assert "outlook=" not in page.url


def test_a_crafted_link_cannot_make_the_page_claim_approval_or_show_its_own_words(person: Person):
    """Anyone can send a link to the page: `?outlook=admin_consented` is "approved" only when the
    service recorded an admin's return through this user's link, and a `reason` that is not a reason
    code is not shown."""
    person.open("solo")
    page = person.page
    page.goto(f"{person.page_url}?outlook=admin_consented")
    person.ready()
    expect(person.notice()).to_contain_text("No approval recorded")
    expect(person.notice()).not_to_contain_text("approved for your organisation")

    page.goto(f"{person.page_url}?outlook=failed&reason=" + quote("Call 0800 123 456 to restore access"))
    person.ready()
    expect(person.notice()).to_contain_text("Microsoft sign-in did not complete")
    expect(person.notice()).not_to_contain_text("0800")
    expect(person.notice()).to_contain_text("sign_in_error")


def test_the_page_works_from_the_keyboard_and_says_when_you_are_signed_out(person: Person, stack):
    person.open("business")
    page = person.page
    expect(page.locator("#plan-usage")).to_have_text("Unlimited on Business+")

    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # The Teams back-channel is its own integration: the page says so where it lists what it can see.
    expect(page.get_by_role("region", name="What CoAgentor can see")).to_contain_text("Teams back-channel")

    connect = page.get_by_role("button", name="Connect Outlook Calendar")
    for _ in range(6):  # from the skip link: the Connect button is the first control after it
        page.keyboard.press("Tab")
        if connect.evaluate("b => b === document.activeElement"):
            break
    expect(connect).to_be_focused()
    outline = connect.evaluate("b => [getComputedStyle(b).outlineStyle, parseFloat(getComputedStyle(b).outlineWidth)]")
    assert outline[0] != "none" and outline[1] >= 2, outline  # a visible focus ring
    page.keyboard.press("Enter")
    person.sign_in("alice@contoso.com")
    expect(person.notice()).to_contain_text("Connected alice@contoso.com")

    # An expired CoAgentor session (the web app hands the page a stale token): the API answers 401 and
    # the page says what to do.
    expired = platform_token(stack.devstack_dir, person.user_id, "business", lifetime=timedelta(hours=-1))
    person.hand_over(expired)
    expect(person.notice()).to_contain_text("You're not signed in to CoAgentor")
    expect(page.get_by_role("button", name="Connect Outlook Calendar")).to_be_hidden()
    person.shoot("15-signed-out")


def test_errors_that_need_it_or_a_plan_change_say_what_to_do(person: Person, contract):
    """States the shared stack cannot produce for one user alone (a tenant policy appearing after
    connecting, a downgrade): the page gets a connections answer that the OpenAPI document allows."""
    stamp = "2026-01-05T09:30:00Z"
    answer = {
        "connections": [
            {"id": "c-policy", "email": "carol@fabrikam.com", "status": "error", "reason_code": "blocked_by_policy",
             "reason": REASONS["blocked_by_policy"].message, "action": "contact_admin", "connected_at": stamp,
             "last_refreshed_at": stamp, "last_synced_at": stamp},
            {"id": "c-warn", "email": "dave@contoso.com", "status": "active", "reason_code": None, "reason": None,
             "action": None, "connected_at": stamp, "last_refreshed_at": stamp, "last_synced_at": stamp,
             "warning": "Microsoft has not renewed access to this calendar since 2026-01-05 09:30 UTC. We keep "
                        "retrying; if this persists, auto-join may stop. Reconnecting can help."},
            # A downgraded user keeps every connection Active (README, plans); connecting more is refused.
            {"id": "c-plan", "email": "bob@outlook.com", "status": "active", "reason_code": None, "reason": None,
             "action": None, "connected_at": stamp, "last_refreshed_at": stamp, "last_synced_at": None},
        ],
        "plan": {"name": "free", "limit": 1, "used": 3},
        "app": {"client_id": OUTLOOK_CLIENT_ID, "admin_consent_url": ADMIN_CONSENT},
    }
    body = json.dumps(answer).encode()
    assert contract.check_response("GET", "/api/outlook/connections", 200, "application/json", body) == []
    # On the browser context: the page opens in a window of its own (the web app's popup).
    person.page.context.route("**/api/outlook/connections", lambda route: route.fulfill(
        status=200, body=body, headers={"Content-Type": "application/json", "Cache-Control": "no-store"}))
    person.open("free")
    page = person.page

    carol = person.card("carol@fabrikam.com")
    expect(carol.locator(".badge")).to_have_text("Error")
    expect(carol.locator(".reason")).to_have_text(REASONS["blocked_by_policy"].message)
    expect(carol).to_contain_text("Ask your IT admin to allow CoAgentor's Outlook Calendar app.")
    expect(carol.get_by_role("link", name=re.compile("Admin consent link"))).to_have_attribute(
        "href", ADMIN_CONSENT)
    expect(carol.get_by_role("button", name="Reconnect")).to_be_visible()

    dave = person.card("dave@contoso.com")
    expect(dave.locator(".badge")).to_have_text("Active")
    expect(dave.locator(".warning")).to_contain_text("Reconnecting can help")
    expect(dave.get_by_role("button", name="Reconnect")).to_be_visible()

    bob = person.card("bob@outlook.com")
    expect(bob.locator(".badge")).to_have_text("Active")
    expect(bob.get_by_role("button", name="Reconnect")).to_have_count(0)
    expect(page.locator("#plan-limit")).to_contain_text("Your Free plan includes 1 Outlook account, and you have 3")
    person.shoot("16-errors-that-need-it-or-a-plan-change")


# ---------------------------------------------------------------- planted sessions (issue 15)
def test_a_link_carrying_someone_elses_token_never_links_the_visitors_calendar_to_them(
        person: Person, client, chromium, stack, contract):
    """Someone sends a genuine-domain link carrying their own CoAgentor token. The page does not take a
    token from its URL, so the visitor is not signed in as them; signed in as themselves (through the web
    app), the page names the visitor's own account and what they connect stays theirs."""
    from tests.browser.conftest import new_person

    mallory = client.token(f"mallory-{uuid.uuid4().hex[:8]}", "pro")
    planted = f"{person.page_url}#token={mallory}"

    # A visitor who follows the link: not signed in, nothing to connect with.
    stranger, context = new_person(chromium, stack, client, contract)
    try:
        stranger.page.goto(planted)
        expect(stranger.notice()).to_contain_text("You're not signed in to CoAgentor")
        expect(stranger.page.get_by_role("button", name="Connect Outlook Calendar")).to_be_hidden()
        expect(stranger.page.locator("#account")).to_be_hidden()
        assert "token" not in stranger.page.url
        stranger.shoot("16-planted-token-link")
    finally:
        context.unroute_all(behavior="ignoreErrors")  # fetches still in flight as the test ends
        context.close()

    # The visitor, signed in through the web app, follows the same link in that tab.
    person.user_id = f"victim-{uuid.uuid4().hex[:8]}"
    person.open("solo")
    page = person.page
    page.goto(planted)
    person.ready()
    expect(page.locator("#account-name")).to_have_text(person.user_id)
    person.connect("alice@contoso.com")
    expect(person.notice()).to_contain_text("Connected alice@contoso.com")
    assert [c["email"] for c in client.connections(person.token)["connections"]] == ["alice@contoso.com"]
    assert client.connections(mallory)["connections"] == []
    assert client.call("DELETE", "outlook/data", person.token).status_code == 202  # alice's calendar for others


def test_a_token_posted_by_a_page_that_is_not_the_web_app_is_ignored(person: Person, client, chromium, stack,
                                                                    contract):
    """Another site opens the Integrations page and posts its own token (guessing the nonce, or
    echoing one): the page takes tokens only from the CoAgentor web app's origin."""
    from tests.browser.conftest import new_person

    mallory = client.token(f"mallory-{uuid.uuid4().hex[:8]}", "pro")
    evil = "https://evil.example"
    visitor, context = new_person(chromium, stack, client, contract)
    try:
        web = visitor.page
        web.route(f"{evil}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=(
            "<!doctype html><button id=o>open</button><script>"
            f"const PAGE = {json.dumps(person.page_url)}; let heard = false;"
            "document.getElementById('o').onclick = () => { const w = window.open(PAGE, '_blank');"
            f" setInterval(() => w.postMessage({{type: 'coagentor-outlook:token', token: {json.dumps(mallory)},"
            " nonce: 'guessed'}, '*'), 100); };"
            "window.addEventListener('message', (e) => { if (e.data && e.data.nonce) { heard = true;"
            f" e.source.postMessage({{type: 'coagentor-outlook:token', token: {json.dumps(mallory)},"
            " nonce: e.data.nonce}, '*'); } });</script>")))
        web.goto(f"{evil}/lure")
        with web.context.expect_page() as opened:
            web.get_by_role("button", name="open").click()
        page = opened.value
        expect(page.locator("#notice .notice")).to_contain_text("You're not signed in to CoAgentor", timeout=10_000)
        expect(page.get_by_role("button", name="Connect Outlook Calendar")).to_be_hidden()
        # Its hello went to the web app's origin only: the other site never even learnt the nonce.
        assert web.evaluate("() => heard") is False
    finally:
        context.unroute_all(behavior="ignoreErrors")  # fetches still in flight as the test ends
        context.close()
    assert client.connections(mallory)["connections"] == []
    person.open("solo")
    expect(person.page.locator("#account-name")).to_have_text(person.user_id)


def test_connecting_asks_which_microsoft_account_goes_to_which_coagentor_account(person: Person, client):
    person.user_id = f"web-{uuid.uuid4().hex[:8]}"
    person.open("solo")
    page = person.page
    page.get_by_role("button", name="Connect Outlook Calendar").click()
    page.wait_for_url(re.compile(re.escape(person.stack.sim_url)))
    page.get_by_label("Email, phone, or Skype").fill("bob@outlook.com")
    page.get_by_role("button", name="Accept").click()
    dialog = page.locator("#claim-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Connect the Microsoft account bob@outlook.com to the CoAgentor account "
                                   f"{person.user_id}?")
    expect(dialog.get_by_role("button", name="Don't connect")).to_be_focused()  # the safe choice first
    person.shoot("17-confirm-connect")
    dialog.get_by_role("button", name="Don't connect").click()
    person.ready()
    expect(person.notice()).to_contain_text("Nothing was connected")
    assert client.connections(person.token)["connections"] == []
    person.connect("bob@outlook.com")
    expect(person.notice()).to_contain_text("Connected bob@outlook.com")
    assert client.call("DELETE", "outlook/data", person.token).status_code == 202  # bob's calendar for others
