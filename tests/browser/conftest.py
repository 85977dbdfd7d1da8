"""Browser tests: Debian's Chromium, driven by Playwright, against the session's local stack.

Every JSON exchange the page makes passes through `Contract`: its request and response are checked
against `shared/openapi.json`. Screenshots of each state land in test-artifacts/screenshots/ (desktop
and phone width) for a reviewer to look at."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, ViewportSize, expect, sync_playwright

from devstack.stack import Stack
from tests.browser.openapi_contract import REPO, Contract
from tests.e2e.client import Client

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium` (.ci/run does "
                    "this on CI), or set CHROMIUM_PATH. The browser tests are part of `make test` and never skip.",
                    pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract.load()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return Client(stack)


@dataclass
class Person:
    """One person at one browser: signs in to CoAgentor, uses the Integrations page, signs in to Microsoft."""

    page: Page
    stack: Stack
    client: Client
    user_id: str = field(default_factory=lambda: f"web-{uuid.uuid4().hex[:8]}")
    plan: str = "solo"
    problems: list[str] = field(default_factory=list)
    exchanges: int = 0

    @property
    def token(self) -> str:
        return self.client.token(self.user_id, self.plan)

    @property
    def page_url(self) -> str:
        return f"{self.stack.functions_url}/api/integrations"

    def open(self, plan: str | None = None) -> None:
        """Arrives from CoAgentor signed in: the token travels in the fragment."""
        self.plan = plan or self.plan
        self.page.goto(f"{self.page_url}#token={self.token}")
        self.ready()

    def ready(self) -> None:
        expect(self.page.get_by_role("heading", name="Outlook Calendar", exact=True)).to_be_visible()
        expect(self.page.locator("#loading")).to_be_hidden()

    # ---- Microsoft's sign-in page (the simulator)
    def sign_in(self, login: str, action: str = "accept") -> None:
        page = self.page
        page.wait_for_url(re.compile(re.escape(self.stack.sim_url) + r"/.*/oauth2/v2\.0/authorize"))
        page.get_by_label("Email, phone, or Skype").fill(login)
        page.get_by_role("button", name="Accept" if action == "accept" else "Cancel").click()
        page.wait_for_url(re.compile(re.escape(self.page_url) + r"($|[?#])"))
        self.ready()

    def connect(self, login: str, action: str = "accept") -> None:
        self.page.get_by_role("button", name="Connect Outlook Calendar").click()
        self.sign_in(login, action)

    # ---- what the page shows
    def card(self, email: str) -> Locator:
        return self.page.locator("li.card").filter(has=self.page.get_by_role("heading", name=email, exact=True))

    def notice(self) -> Locator:
        return self.page.locator("#notice .notice")

    def refresh_until(self, locator: Locator, timeout: float = 30.0) -> None:
        """Clicks Refresh (as a person would) until `locator` shows up."""
        import time

        deadline = time.monotonic() + timeout
        button = self.page.get_by_role("button", name="Refresh")
        while True:
            button.click()
            expect(button).to_be_enabled()
            if locator.count() > 0:
                return
            if time.monotonic() > deadline:
                expect(locator.first).to_be_visible(timeout=1)
            self.page.wait_for_timeout(250)

    def shoot(self, name: str, phone: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        if phone:
            self.page.set_viewport_size(PHONE)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
            self.page.set_viewport_size(DESKTOP)


def _check_through_contract(context: BrowserContext, person_holder: list[Person], contract: Contract) -> None:
    def handle(route: Route) -> None:
        request = route.request
        if request.resource_type not in ("fetch", "xhr"):
            route.continue_()
            return
        person = person_holder[0]
        person.problems += contract.check_request(request.method, request.url, request.post_data_buffer)
        response = route.fetch(max_redirects=0)
        person.problems += contract.check_response(request.method, request.url, response.status,
                                                   response.headers.get("content-type"), response.body())
        person.exchanges += 1
        route.fulfill(response=response)

    context.route(re.compile(r"^http://127\.0\.0\.1:\d+/api/"), handle)


def new_person(browser: Browser, stack: Stack, client: Client, contract: Contract,
               **kw: Any) -> tuple[Person, BrowserContext]:
    context = browser.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="Europe/Berlin",
                                  ignore_https_errors=True)  # the simulator's test CA
    context.set_default_timeout(15_000)
    holder: list[Person] = []
    _check_through_contract(context, holder, contract)
    person = Person(page=context.new_page(), stack=stack, client=client, **kw)
    holder.append(person)
    return person, context


@pytest.fixture
def person(chromium: Browser, stack: Stack, client: Client, contract: Contract) -> Iterator[Person]:
    p, context = new_person(chromium, stack, client, contract)
    try:
        yield p
    finally:
        context.close()
    assert p.problems == [], "responses that break the OpenAPI document:\n" + "\n".join(p.problems)
    assert p.exchanges > 0
