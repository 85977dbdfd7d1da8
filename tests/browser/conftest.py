"""Browser tests: Debian's Chromium, driven by Playwright, against the session's local stack.

Every JSON exchange the page makes passes through `Contract`: its request and response are checked
against `shared/openapi.json`. Screenshots of each state land in test-artifacts/screenshots/ (desktop
and phone width) for a reviewer to look at."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, ViewportSize, expect, sync_playwright

from devstack.stack import Stack
from tests.browser.openapi_contract import REPO, Contract
from tests.e2e.client import Client

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# The CoAgentor web app (PLATFORM_WEB_ORIGINS of the test stack, tests/conftest.py), stood in by a page
# Playwright serves: it opens the Integrations page with window.open and answers its hello with the token.
WEB_APP = "https://app.coagentor.test"
_WEB_APP_PAGE = """<!doctype html><html><head><title>CoAgentor</title></head><body>
<button id="open">Integrations</button>
<script>
  const PAGE = %(page)s, PAGE_ORIGIN = new URL(PAGE).origin;
  let token = %(token)s, hello = null;
  document.getElementById("open").addEventListener("click", () => window.open(PAGE, "_blank"));
  window.addEventListener("message", (e) => {
    if (e.origin !== PAGE_ORIGIN || !e.data || e.data.type !== "coagentor-outlook:hello") { return; }
    hello = { source: e.source, nonce: e.data.nonce };
    e.source.postMessage({ type: "coagentor-outlook:token", token, nonce: hello.nonce }, PAGE_ORIGIN);
  });
  // The web app renewing the session of an open page.
  window.sendToken = (fresh) => { token = fresh;
    hello.source.postMessage({ type: "coagentor-outlook:token", token, nonce: hello.nonce }, PAGE_ORIGIN); };
</script></body></html>"""
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
        # With the back/forward cache on, as people's browsers have it: Playwright turns it off by default
        # (--disable-back-forward-cache), which hid a page that came back from Microsoft's sign-in frozen.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                    ignore_default_args=["--disable-back-forward-cache"])
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
    console_errors: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    web: Page | None = None  # the CoAgentor web app's tab, which opened the Integrations page
    workspace: str | None = None  # the token's `workspace` claim (API.md "Teams")
    workspace_dedupe: bool = False

    def __post_init__(self) -> None:
        self.watch(self.page)

    def watch(self, page: Page) -> None:
        # Script errors and CSP violations (inline script or style, foreign hosts) show up here.
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))
        # No third-party assets: the page and the sign-in only ever talk to the local stack.
        page.on("request", lambda r: self.hosts.add(urlsplit(r.url).netloc))

    @property
    def token(self) -> str:
        return self.client.token(self.user_id, self.plan, workspace=self.workspace,
                                 workspace_dedupe=self.workspace_dedupe)

    @property
    def page_url(self) -> str:
        return f"{self.stack.functions_url}/api/integrations"

    def open(self, plan: str | None = None) -> None:
        """Arrives from CoAgentor signed in, as in production: the web app opens the Integrations page
        and hands it the token by postMessage (the URL never carries it)."""
        self.plan = plan or self.plan
        if self.web is None:
            self.web = self.page
        self.web.route(f"{WEB_APP}/**", lambda route: route.fulfill(
            status=200, content_type="text/html",
            body=_WEB_APP_PAGE % {"page": json.dumps(self.page_url), "token": json.dumps(self.token)}))
        self.web.goto(f"{WEB_APP}/home")
        with self.web.context.expect_page() as opened:
            self.web.get_by_role("button", name="Integrations").click()
        self.page = opened.value
        self.watch(self.page)
        self.ready()

    def hand_over(self, token: str) -> None:
        """The web app gives the open page a new session token."""
        assert self.web is not None
        self.web.evaluate("t => window.sendToken(t)", token)

    def ready(self) -> None:
        expect(self.page.get_by_role("heading", name="Outlook Calendar", exact=True)).to_be_visible()
        expect(self.page.locator("#loading")).to_be_hidden()

    # ---- Microsoft's sign-in page (the simulator)
    def sign_in(self, login: str, action: str = "accept", confirm: bool = True) -> None:
        """Signs in at Microsoft; back on the page, answers "connect <account> to <CoAgentor account>?"
        when it is asked (confirm=False: "Don't connect")."""
        page = self.page
        page.wait_for_url(re.compile(re.escape(self.stack.sim_url) + r"/.*/oauth2/v2\.0/authorize"))
        page.get_by_label("Email, phone, or Skype").fill(login)
        page.get_by_role("button", name="Accept" if action == "accept" else "Cancel").click()
        page.wait_for_url(re.compile(re.escape(self.page_url) + r"($|[?#])"))
        self.answer_confirmation(confirm)
        self.ready()

    def answer_confirmation(self, confirm: bool = True) -> None:
        page = self.page
        # Either the question comes up, or the outcome is shown without one (cancelled, blocked, another
        # account's sign-in...). No wait_for_function: the page's CSP forbids the eval it needs.
        page.locator("#claim-dialog[open], #notice .notice").first.wait_for(state="attached")
        dialog = page.locator("#claim-dialog")
        if dialog.get_attribute("open") is not None:
            dialog.get_by_role("button", name="Connect" if confirm else "Don't connect", exact=True).click()

    def connect(self, login: str, action: str = "accept", confirm: bool = True) -> None:
        self.page.get_by_role("button", name="Connect Outlook Calendar").click()
        self.sign_in(login, action, confirm)

    # ---- what the page shows
    def card(self, email: str) -> Locator:
        return self.page.locator("li.card").filter(has=self.page.get_by_role("heading", name=email, exact=True))

    def notice(self) -> Locator:
        return self.page.locator("#notice .notice")

    def refresh_until(self, shown: Callable[[], bool], timeout: float = 30.0) -> None:
        """Clicks Refresh, as a person would, until `shown()` holds (background work is asynchronous)."""
        deadline = time.monotonic() + timeout
        button = self.page.get_by_role("button", name="Refresh")
        while True:
            button.click()
            expect(button).to_be_enabled(timeout=40_000)  # Refresh waits for the reads it asked for
            if shown():
                return
            if time.monotonic() > deadline:
                raise AssertionError("the page did not show the expected state in time")
            self.page.wait_for_timeout(300)

    def no_horizontal_scroll(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))

    def shoot(self, name: str, full_page: bool = True) -> None:
        """Screenshots at desktop and phone width; each state shot is also checked for text contrast
        (WCAG AA) and, at phone width, for content wider than the screen."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
        assert self.contrast_failures() == []
        self.page.set_viewport_size(PHONE)
        try:
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=full_page)
            assert self.no_horizontal_scroll(), f"{name}: wider than a phone screen"
            assert self.contrast_failures() == []
        finally:
            self.page.set_viewport_size(DESKTOP)

    def contrast_failures(self) -> list[str]:
        """Visible text below WCAG AA contrast (4.5:1, or 3:1 for large text) against what is behind it."""
        failures: list[str] = self.page.evaluate(_CONTRAST_JS)
        return failures


_CONTRAST_JS = r"""() => {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c || "");
    if (!m) { return null; }
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, bottom) => ({ r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a), b: top.b * top.a + bottom.b * (1 - top.a), a: 1 });
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const behind = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) { break; } }
    }
    return layers.reverse().reduce((acc, layer) => over(layer, acc), { r: 255, g: 255, b: 255, a: 1 });
  };
  const root = document.querySelector("dialog[open]") || document.body;  // a modal makes the rest inert
  const out = [];
  for (const el of root.querySelectorAll("*")) {
    if (!Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim())) { continue; }
    if (!el.checkVisibility({ visibilityProperty: true, opacityProperty: true })) { continue; }
    if (el.closest("[disabled], .visually-hidden, dialog:not([open])")) { continue; }
    const style = getComputedStyle(el);
    const bg = behind(el);
    const fg = over(parse(style.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (parseInt(style.fontWeight, 10) >= 700 && size >= 18.66);
    const need = large ? 3 : 4.5;
    if (ratio < need) {
      out.push(el.tagName.toLowerCase() + "." + el.className + " '" + el.textContent.trim().slice(0, 40) +
        "': " + ratio.toFixed(2) + " < " + need);
    }
  }
  return out;
}"""


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
        context.unroute_all(behavior="ignoreErrors")  # fetches still in flight as the test ends
        context.close()
    assert p.problems == [], "exchanges that break the OpenAPI document:\n" + "\n".join(p.problems)
    assert p.exchanges > 0
    # An API answering 4xx is logged as "Failed to load resource" and is expected; anything else is not.
    ours = [e for e in p.console_errors if not e.startswith("Failed to load resource")]
    assert ours == [], "errors in the browser console:\n" + "\n".join(ours)
    assert p.hosts <= {urlsplit(stack.functions_url).netloc, urlsplit(stack.sim_url).netloc,
                       urlsplit(WEB_APP).netloc}, p.hosts
