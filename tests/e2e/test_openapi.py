"""GET /api/openapi.json describes the whole JSON API: every HTTP function and every route in API.md,
and every status the running service really answers, with bodies that match its schemas."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook

import shared.triggers
from tests.browser.openapi_contract import REPO, Contract
from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
API_MD = REPO.parent / "shared" / "API.md"
# Described but not reachable on a healthy stack.
UNREACHABLE = {("get", "/health", "503"),
               # Microsoft's discovery document unreachable while a sign-in starts
               # (tests/integration/test_identity_faults.py).
               ("post", "/outlook/connect", "503"),
               # The notification could not be queued (storage down): Graph delivers it again.
               ("post", "/outlook/notifications", "503"), ("post", "/outlook/notifications/lifecycle", "503"),
               # An agent status that could not be stored (storage down): the agent platform sends it again.
               ("post", "/agents/status", "503"),
               # Graph cannot list the account's calendars (tests/e2e/test_calendars.py, with a simulator fault).
               ("get", "/outlook/connections/{id}/calendars", "503"),
               ("put", "/outlook/connections/{id}/calendars/{calendar_id}", "503")}
WEB_APP = "https://app.coagentor.test"  # PLATFORM_WEB_ORIGINS of the test stack (tests/conftest.py)


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def http_functions() -> dict[str, tuple[str, set[str]]]:
    """name → (route, methods) for every HTTP function of every blueprint in shared/triggers."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    for info in pkgutil.iter_modules(shared.triggers.__path__):
        module = importlib.import_module(f"shared.triggers.{info.name}")
        for value in vars(module).values():
            if isinstance(value, func.Blueprint):
                app.register_functions(value)
    found: dict[str, tuple[str, set[str]]] = {}
    for function in app.get_functions():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            methods = {str(getattr(m, "value", m)).lower() for m in trigger.methods or []}
            found[function.get_function_name()] = ("/" + trigger.route, methods)
    return found


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if isinstance(node.get("$ref"), str) else []) + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_served_without_a_token(client, contract):
    resp = client.call("GET", "openapi.json", None)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    assert doc == contract.document
    assert doc["openapi"].startswith("3.1.")
    assert doc["components"]["securitySchemes"]["platformToken"] == {
        **doc["components"]["securitySchemes"]["platformToken"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"platformToken": []}]


def test_every_schema_is_valid_and_every_reference_resolves(contract):
    doc = contract.document
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("operationId") and op.get("summary") and op.get("responses"), (method, path)
            for status, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), (method, path, status)
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(media["schema"])
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    # Every route but the callback, health, this document, the page and Graph's notification routes
    # needs the bearer token. Graph calls the notification routes with no token: a notification proves
    # itself by its subscription's clientState instead (tests/unit/test_notifications.py).
    public = {(p, m) for p, item in doc["paths"].items() for m, op in item.items() if op.get("security") == []}
    assert {p for p, _ in public} == {"/outlook/callback", "/health", "/openapi.json", "/integrations",
                                      "/integrations/assets/{name}", "/{*path}",  # the last: CORS preflight
                                      "/outlook/notifications", "/outlook/notifications/lifecycle",
                                      # the agent platform: a status proves itself by its signature
                                      "/agents/status"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if (path, method) not in public:
                assert "401" in op["responses"], (method, path)


def test_every_http_function_and_every_route_in_api_md_is_described(client, contract):
    functions = http_functions()
    running = client.api.get(f"{client.stack.functions_url}/admin/functions", timeout=30).json()
    assert {f["name"] for f in running if f["trigger"] == "httpTrigger"} == set(functions)

    described = {(path, method): op["operationId"] for path, item in contract.document["paths"].items()
                 for method, op in item.items()}
    served = {(route, method): name for name, (route, methods) in functions.items() for method in methods}
    assert set(served) == set(described)
    for key, name in served.items():
        assert described[key].startswith(name), (key, described[key], name)

    assert API_MD.exists(), f"{API_MD} (the API contract, handed beside the repository) is missing"
    listed = set(re.findall(r"`(GET|POST|DELETE|PUT|PATCH) /api(/[^\s`?]+)", API_MD.read_text()))
    assert listed, "no routes found in API.md"
    for method, path in listed:
        assert contract.template_for("/api" + path) == path and method.lower() in contract.document["paths"][path], (
            method, path)


class Recorder:
    """Calls the running service and checks each exchange against the document."""

    def __init__(self, client: Client, contract: Contract) -> None:
        self.client, self.contract = client, contract
        self.problems: list[str] = []

    def check(self, resp: requests.Response) -> requests.Response:
        body = resp.request.body
        raw = body.encode() if isinstance(body, str) else body
        content_type = resp.request.headers.get("Content-Type", "")
        # Requests the service accepted must be described ones (the rest are deliberate bad input).
        if resp.status_code < 400 and (content_type.startswith("application/json") or not raw):
            self.problems += self.contract.check_request(resp.request.method or "", resp.url, raw)
        self.problems += self.contract.check_response(resp.request.method or "", resp.url, resp.status_code,
                                                      resp.headers.get("Content-Type"), resp.content)
        return resp

    def call(self, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
        return self.check(self.client.call(method, path, token, **kw))

    def callback(self, location: str) -> dict[str, str]:
        resp = self.check(self.client.api.get(location, allow_redirects=False, timeout=30))
        assert resp.status_code == 302
        return dict(re.findall(r"[?&](\w+)=([^&]+)", resp.headers["Location"]))

    def signed_in(self, token: str, login: str, reconnect: str | None = None) -> str:
        start = self.call("POST", "outlook/connect", token, json={"reconnect": reconnect} if reconnect else {})
        assert start.status_code == 200, start.text
        page = self.callback(self.client.sign_in(start.json()["authorize_url"], login))
        assert page["outlook"] == "confirm", page
        return page["claim"]

    def claim(self, token: str, code: str) -> requests.Response:
        return self.call("POST", "outlook/claim", token, json={"claim": code})


def test_real_responses_match_the_document(client, contract, stack):
    r = Recorder(client, contract)
    user = f"openapi-{uuid.uuid4().hex[:8]}"
    me = client.token(user, "solo")
    json_header = {"Content-Type": "application/json"}

    # Public routes.
    assert r.call("GET", "health", None).status_code == 200
    assert r.call("GET", "openapi.json", None).status_code == 200
    assert r.call("GET", "integrations", None).status_code == 200
    assert r.call("GET", "integrations/assets/integrations.js", None).status_code == 200
    assert r.call("GET", "integrations/assets/nothing-here.txt", None).status_code == 404

    # Graph's notification routes (public): the validation handshake, a forged notification (accepted
    # and ignored), and bodies that are not notifications.
    forged = {"value": [{"subscriptionId": str(uuid.uuid4()), "clientState": "guess", "changeType": "created",
                         "resource": "Users/x/Events/y"}]}
    for route in ("outlook/notifications", "outlook/notifications/lifecycle"):
        echoed = r.call("POST", route, None, params={"validationToken": "Validation: token 1"},
                        headers={"Content-Type": "text/plain"})
        assert (echoed.status_code, echoed.text) == (200, "Validation: token 1")
        assert r.call("POST", route, None, params={"connection": "nope"}, json=forged).status_code == 202
        assert r.call("POST", route, None, data="not json", headers=json_header).status_code == 400
        assert r.call("POST", route, None, params={"validationToken": ""}).status_code == 400

    # Agent statuses (public): the agent platform signs them (Standard Webhooks); a bearer is no signature.
    def signed_status(body: str) -> requests.Response:
        assert stack.dev is not None
        msg_id, when = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
                   "webhook-signature": Webhook(stack.dev.agent_status_secret).sign(msg_id, when, body), **json_header}
        return r.check(client.api.post(f"{stack.functions_url}/api/agents/status", data=body.encode(),
                                       headers=headers, timeout=30))

    status = {"agent_id": "agt_nobody", "idempotency_key": None, "status": "joining", "at": "2026-03-01T10:00:00Z",
              "reason": None}
    assert r.call("POST", "agents/status", me, json=status).status_code == 401
    assert r.call("POST", "agents/status", None, data='{"pad": "' + "x" * 20_000 + '"}',
                  headers=json_header).status_code == 413
    assert signed_status(json.dumps(status)).status_code == 404
    assert signed_status(json.dumps({**status, "status": "dancing"})).status_code == 400

    # No or bad token: 401 on every authed route.
    for method, path in [("POST", "outlook/connect"), ("POST", "outlook/claim"), ("GET", "outlook/connections"),
                         ("DELETE", "outlook/connections/x"), ("GET", "meetings/upcoming"),
                         ("GET", "autojoin/rules"), ("PUT", "autojoin/rules"), ("PUT", "meetings/x/autojoin"),
                         ("GET", "outlook/claim?claim=x"), ("POST", "outlook/connections/x/sync"),
                         ("DELETE", "outlook/data"), ("GET", "outlook/connections/x/calendars"),
                         ("PUT", "outlook/connections/x/calendars/y"), ("GET", "meetings/unlisted")]:
        assert r.call(method, path, None).status_code == 401
    assert r.call("GET", "outlook/connections", "not-a-jwt").status_code == 401
    # "Why isn't my meeting here?": a search, and one too long to be a title's words.
    assert r.call("GET", "meetings/unlisted", me, params={"q": "standup"}).status_code == 200
    assert r.call("GET", "meetings/unlisted", me, params={"q": "x" * 201}).json()["error"] == "invalid_query"
    # A user id too long for a storage key even once escaped: 400 on every authed route, nothing run.
    too_long = client.token("\x85" * 100)
    for method, path in [("POST", "outlook/connect"), ("POST", "outlook/claim"), ("GET", "outlook/connections"),
                         ("DELETE", "outlook/connections/x"), ("GET", "meetings/upcoming"),
                         ("GET", "autojoin/rules"), ("PUT", "autojoin/rules"), ("PUT", "meetings/x/autojoin"),
                         ("GET", "outlook/claim?claim=x"), ("POST", "outlook/connections/x/sync"),
                         ("DELETE", "outlook/data")]:
        assert r.call(method, path, too_long).json()["error"] == "unsupported_user_id"
    for method, path in [("GET", "outlook/connections/x/calendars"), ("PUT", "outlook/connections/x/calendars/y"),
                         ("GET", "meetings/unlisted")]:
        assert r.call(method, path, too_long).json()["error"] == "unsupported_user_id"
    # Too many sign-ins open at once: 429 with Retry-After.
    busy = client.token(f"openapi-busy-{uuid.uuid4().hex[:8]}", "pro")
    for _ in range(5):
        assert r.call("POST", "outlook/connect", busy, json={}).status_code == 200
    assert r.call("POST", "outlook/connect", busy, json={}).status_code == 429

    # CORS preflight: the web app's origin only (PLATFORM_WEB_ORIGINS in tests/conftest.py).
    ask = {"Access-Control-Request-Method": "GET"}
    assert r.call("OPTIONS", "outlook/connections", None, headers={"Origin": WEB_APP, **ask}).status_code == 204
    assert r.call("OPTIONS", "outlook/connections", None,
                  headers={"Origin": "https://evil.example", **ask}).status_code == 403
    # Any path, a control character in it too, gets the documented preflight answers (never a 404).
    assert r.call("OPTIONS", "a%0Ab", None, headers={"Origin": WEB_APP, **ask}).status_code == 204
    assert r.call("OPTIONS", "a%0Ab", None, headers={"Origin": "https://evil.example", **ask}).status_code == 403

    # Bodies too large or nested too deeply are refused before anything runs.
    huge = '{"pad": "' + "x" * 20_000 + '"}'
    for method, path in [("POST", "outlook/connect"), ("POST", "outlook/claim"), ("PUT", "autojoin/rules"),
                         ("PUT", "meetings/x/autojoin")]:
        assert r.call(method, path, me, data=huge, headers=json_header).status_code == 413
    deep = "[" * 40 + "]" * 40
    assert r.call("PUT", "autojoin/rules", me, data=deep, headers=json_header).json()["error"] == "invalid_body"

    # The claim preview says what a claim would connect, under the claim's own rules.
    assert r.call("GET", "outlook/claim", me).status_code == 400
    code = r.signed_in(me, "alice@contoso.com")
    preview = r.call("GET", "outlook/claim", me, params={"claim": code})
    assert preview.status_code == 200
    assert (preview.json()["email"], preview.json()["reconnect"], preview.json()["account"]["id"]) == (
        "alice@contoso.com", None, user)
    assert r.call("GET", "outlook/claim", client.token(f"other-{uuid.uuid4().hex[:8]}"),
                  params={"claim": code}).status_code == 403  # and destroyed:
    assert r.call("GET", "outlook/claim", me, params={"claim": code}).status_code == 410

    # Connect: bad bodies, unknown reconnect, success, then the claim's answers.
    assert r.call("POST", "outlook/connect", me, data="[1]", headers=json_header).status_code == 400
    assert r.call("POST", "outlook/connect", me, json={"reconnect": "nope"}).status_code == 404
    code = r.signed_in(me, "alice@contoso.com")
    assert r.call("POST", "outlook/claim", me, json={}).status_code == 400
    assert r.claim(client.token(f"other-{uuid.uuid4().hex[:8]}"), code).status_code == 403  # claim_mismatch
    code = r.signed_in(me, "alice@contoso.com")
    claimed = r.claim(me, code)
    assert claimed.status_code == 200 and claimed.json()["outcome"] == "connected"
    alice = claimed.json()["connection"]
    assert r.claim(me, code).status_code == 410
    mismatch = r.claim(me, r.signed_in(me, "dave@contoso.com", reconnect=alice["id"]))
    assert mismatch.status_code == 409 and mismatch.json()["error"] == "account_mismatch"
    # Refused at the preview already (before the page asks), and destroyed.
    other = r.signed_in(me, "dave@contoso.com", reconnect=alice["id"])
    previewed = r.call("GET", "outlook/claim", me, params={"claim": other})
    assert previewed.status_code == 409 and previewed.json()["error"] == "account_mismatch"
    assert r.claim(me, other).status_code == 410
    resp = client.api.post(f"{stack.functions_url}/api/outlook/callback", data={"code": "c", "state": "forged"},
                           allow_redirects=False, timeout=30)
    assert r.check(resp).status_code == 302

    # Plan limit, when connecting starts and when the claim stores it.
    free = client.token(f"openapi-free-{uuid.uuid4().hex[:8]}", "free")
    first, second = r.signed_in(free, "bob@outlook.com"), r.signed_in(free, "erin@northwind.com")
    assert r.claim(free, first).status_code == 200
    assert r.claim(free, second).json()["error"] == "plan_limit"
    assert r.call("POST", "outlook/connect", free, json={}).json()["error"] == "plan_limit"

    # A connection in error, with its reason and action.
    pro = client.token(f"openapi-pro-{uuid.uuid4().hex[:8]}", "pro")
    assert r.claim(pro, r.signed_in(pro, "erin@northwind.com")).status_code == 200
    client.sim("POST", "/_sim/users/erin@northwind.com/revoke")
    client.run_function("refresh_tokens")
    eventually(lambda: client.connections(pro)["connections"][0]["status"] == "error")
    listed = r.call("GET", "outlook/connections", pro).json()
    assert listed["connections"][0]["action"] == "reconnect"
    assert listed["app"]["client_id"]
    erin = listed["connections"][0]["id"]
    assert r.call("POST", f"outlook/connections/{erin}/sync", pro).json()["error"] == "connection_error"

    # Sync now: queued, and asking again while it waits queues nothing more (same answer).
    for _ in range(2):
        queued = r.call("POST", f"outlook/connections/{alice['id']}/sync", me)
        assert queued.status_code == 202 and queued.json() == {"queued": True}
    assert r.call("POST", "outlook/connections/nope/sync", me).status_code == 404

    # Calendars: listed, one chosen with an agent name, the last one kept, unknown ones, bad bodies.
    calendars = r.call("GET", f"outlook/connections/{alice['id']}/calendars", me)
    assert calendars.status_code == 200
    [default] = [c for c in calendars.json()["calendars"] if c["is_default"]]
    chosen = f"outlook/connections/{alice['id']}/calendars/{default['id']}"
    assert r.call("PUT", chosen, me, json={"selected": True, "agent_name": "Notes"}).json()["agent_name"] == "Notes"
    assert r.call("PUT", chosen, me, json={"selected": False}).json()["error"] == "last_calendar"
    assert r.call("PUT", chosen, me, json={"selected": "no"}).status_code == 400
    assert r.call("PUT", chosen, me, data=huge, headers=json_header).status_code == 413
    assert r.call("PUT", f"outlook/connections/{alice['id']}/calendars/nope", me,
                  json={"selected": True}).status_code == 404
    assert r.call("GET", "outlook/connections/nope/calendars", me).status_code == 404
    assert r.call("GET", f"outlook/connections/{erin}/calendars", pro).json()["error"] == "connection_error"
    assert r.call("PUT", chosen, me, json={"selected": True, "agent_name": None}).status_code == 200

    # Upcoming meetings with an entry in them.
    event = client.add_event("alice@contoso.com", "OpenAPI check", now_utc() + timedelta(hours=6),
                             onlineMeeting={"joinUrl": teams_link(950)})
    try:
        client.run_function("sync_calendar", json.dumps({"user_id": user, "connection_id": alice["id"]}))
        # Other tests share alice's calendar: look for this event only.
        eventually(lambda: any(m["title"] == "OpenAPI check" for m in client.upcoming(me)))
        meetings = r.call("GET", "meetings/upcoming", me).json()["meetings"]
        assert "OpenAPI check" in [m["title"] for m in meetings]
        [check] = [m for m in meetings if m["title"] == "OpenAPI check"]
        assert (check["will_join"], check["why"], check["response"]) == (True, "rules", "organizer")
        path = f"meetings/{check['id']}/autojoin"
        skipped = r.call("PUT", path, me, json={"join": False, "series": False})
        assert skipped.status_code == 200 and (skipped.json()["will_join"], skipped.json()["why"]) == (
            False, "skipped_by_you")
        assert r.call("PUT", path, me, json={"join": "yes"}).json()["error"] == "invalid_body"
        assert r.call("PUT", path, me, json={"join": True, "series": True}).json()["error"] == "not_a_series"
        assert r.call("PUT", "meetings/no-such-meeting/autojoin", me, json={"join": None}).status_code == 404
        assert r.call("PUT", path, me, json={"join": None}).json()["why"] == "rules"
    finally:
        client.sim("DELETE", f"/_sim/users/alice@contoso.com/events/{event['id']}")

    # An agent deployed for a meeting about to start: its platform's status is taken.
    soon = client.add_event("alice@contoso.com", "OpenAPI agent", now_utc() + timedelta(minutes=5),
                            onlineMeeting={"joinUrl": teams_link(951)})
    try:
        client.run_function("sync_calendar", json.dumps({"user_id": user, "connection_id": alice["id"]}))
        [deployed] = eventually(lambda: [d for d in client.deployments() if d["body"]["title"] == "OpenAPI agent"
                                         and d["body"]["user_id"] == user] or None)
        assert signed_status(json.dumps({**status, "agent_id": deployed["id"], "status": "in_call"})).status_code == 204
    finally:
        client.sim("DELETE", f"/_sim/users/alice@contoso.com/events/{soon['id']}")

    # Join rules: the defaults, a refused value, a stored change.
    rules = r.call("GET", "autojoin/rules", me).json()
    assert rules["external_invites"] == "skip_unanswered" and "declined" not in rules["responses"]
    bad = r.call("PUT", "autojoin/rules", me, json={**rules, "platforms": ["webex"]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_rules"
    both = r.call("PUT", "autojoin/rules", me, json={**rules, "join_lead_seconds": 901, "agent_name": ""})
    assert both.status_code == 400 and len(both.json()["reasons"]) == 2
    changed = {**rules, "responses": [*rules["responses"], "declined"]}
    assert r.call("PUT", "autojoin/rules", me, json=changed).json() == changed

    # Disconnect, twice.
    assert r.call("GET", "outlook/connections", me).status_code == 200
    assert r.call("DELETE", f"outlook/connections/{alice['id']}", me).status_code == 204
    assert r.call("DELETE", f"outlook/connections/{alice['id']}", me).status_code == 404

    # Erase everything: the connection list is empty right after.
    erased = r.call("DELETE", "outlook/data", pro)
    assert erased.status_code == 202 and erased.json()["status"] in ("erased", "erasing")
    eventually(lambda: client.connections(pro)["connections"] == [])

    assert r.problems == [], "\n".join(r.problems)
    seen = {(e.method, e.path, str(e.status)) for e in contract.seen}
    assert contract.described_responses() - seen - UNREACHABLE == set(), "described but never seen"


def test_the_checker_itself_catches_what_the_document_does_not_say(contract):
    """A body with an undescribed field, a wrong type or an undescribed status is reported."""
    ok = json.dumps({"meetings": []}).encode()
    assert contract.check_response("GET", "/api/meetings/upcoming", 200, "application/json", ok) == []
    extra = json.dumps({"meetings": [], "surprise": 1}).encode()
    assert contract.check_response("GET", "/api/meetings/upcoming", 200, "application/json", extra)
    wrong = json.dumps({"connections": [], "plan": {"name": "gold", "limit": 2, "used": 0}}).encode()
    assert contract.check_response("GET", "/api/outlook/connections", 200, "application/json", wrong)
    assert contract.check_response("GET", "/api/meetings/upcoming", 418, "application/json", ok)
    assert contract.check_response("GET", "/api/nowhere", 200, "application/json", ok)
    error = json.dumps({"error": "plan_limit", "message": "m", "plan": "free", "limit": 1, "used": 1}).encode()
    assert contract.check_response("POST", "/api/outlook/connect", 403, "application/json", error) == []
    assert contract.check_response("POST", "/api/outlook/connect", 403, "application/json",
                                   json.dumps({"error": "plan_limit", "message": "m"}).encode())
    assert Path(contract.document["servers"][0]["url"]).as_posix() == "/api"
