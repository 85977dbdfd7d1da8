"""How the Integrations page is served and built: strict CSP, nothing from the internet, API data
never parsed as HTML, no path escapes from the assets route."""

from __future__ import annotations

import re

import pytest
import requests

from tests.browser.openapi_contract import REPO

pytestmark = pytest.mark.e2e
WEB = REPO / "shared" / "web"


def get(stack, path: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(f"{stack.functions_url}/api/{path}", timeout=30, allow_redirects=False)


def test_the_page_and_its_assets_are_served_with_a_strict_content_security_policy(stack):
    for path, media in [("integrations", "text/html"), ("integrations/assets/integrations.js", "text/javascript"),
                        ("integrations/assets/integrations.css", "text/css"),
                        ("integrations/assets/calendar.svg", "image/svg+xml"),
                        ("integrations/assets/outlook.svg", "image/svg+xml")]:
        resp = get(stack, path)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(media), path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"  # the claim code never leaks onwards
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["..%2Fopenapi.json", "..%2F..%2Ffunction_app.py", "integrations",
                                  "missing.js", "%2Fetc%2Fpasswd"])
def test_the_assets_route_serves_only_the_pages_own_files(stack, name):
    assert get(stack, f"integrations/assets/{name}").status_code == 404


def test_no_inline_script_or_style_and_nothing_from_another_host():
    html = (WEB / "integrations.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for name in ("integrations.html", "integrations.css", "calendar.svg", "outlook.svg"):
        text = (WEB / name).read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
        assert [u for u in urls if "www.w3.org/2000/svg" not in u] == [], name
    script = (WEB / "integrations.js").read_text()
    # No absolute URL at all: the admin-consent link comes from the API.
    assert re.findall(r"https?://[^\s\"'`]+", script) == []


def test_api_data_reaches_the_page_as_text_only():
    lines = (WEB / "integrations.js").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_the_page_is_told_to_take_its_token_only_from_the_web_app(stack):
    """As in Azure (the test stack leaves PAGE_TOKEN_FROM_URL off): the page learns the web app's
    origins from settings, and that a token in its URL is not to be taken."""
    html = get(stack, "integrations").text
    assert '<meta name="coagentor-web-origins" content="https://app.coagentor.test">' in html
    assert '<meta name="coagentor-token-from-url" content="false">' in html
    resp = get(stack, "integrations")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    assert resp.headers["X-Frame-Options"] == "DENY"
