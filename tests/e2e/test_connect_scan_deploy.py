"""The whole path through HTTP, as a browser, the page and Azure's timers would drive it:
connect → Microsoft sign-in → callback → claim → Active → event with a Teams link → scan →
deploy message scheduled at start - lead → exactly one agent deployment."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
LEAD = 600  # the stack fixture's AGENT_JOIN_LEAD_SECONDS


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_connect_scan_deploy_end_to_end(client, stack):
    me = user()
    token = client.token(me, "solo")
    claimed = client.connect(token, "alice@contoso.com")
    assert claimed["outcome"] == "connected"
    conn = claimed["connection"]
    assert (conn["email"], conn["status"], conn["reason"]) == ("alice@contoso.com", "active", None)
    listed = client.connections(token)
    assert [c["id"] for c in listed["connections"]] == [conn["id"]]
    assert listed["plan"] == {"name": "solo", "limit": 2, "used": 1}

    # Alice's calendar holds just this test's events (tests before it, page tests among them, leave theirs).
    for leftover in client.sim("GET", "/_sim/users/alice@contoso.com/events").json()["value"]:
        client.sim("DELETE", f"/_sim/users/alice@contoso.com/events/{leftover['id']}")
    soon = now_utc() + timedelta(minutes=5)  # within the lead time: deploy right away
    later = now_utc() + timedelta(hours=3)  # scheduled for start - lead
    client.add_event("alice@contoso.com", "Design review", soon, onlineMeeting={"joinUrl": teams_link(1)},
                     isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness")
    client.add_event("alice@contoso.com", "Quarterly planning", later,
                     body={"contentType": "html", "content": f'<a href="{teams_link(2)}">Join</a>'})
    client.add_event("alice@contoso.com", "Lunch", soon + timedelta(hours=1))  # no link
    client.run_function("scan_calendars")

    meetings = eventually(lambda: (m := client.upcoming(token)) and len(m) == 2 and m)
    assert [m["title"] for m in meetings] == ["Design review", "Quarterly planning"]
    assert all(m["platform"] == "teams" and m["accounts"] == ["alice@contoso.com"] for m in meetings)
    planning = meetings[1]
    assert planning["agent_at"] == (later - timedelta(seconds=LEAD)).isoformat().replace("+00:00", "Z")

    mine = lambda: [d for d in client.deployments() if d["body"]["user_id"] == me]  # noqa: E731
    [deployment] = eventually(lambda: mine())
    body = deployment["body"]
    assert body["title"] == "Design review" and body["platform"] == "teams" and body["source"] == "outlook"
    assert body["meeting_url"] == teams_link(1)
    assert deployment["idempotency_key"]
    eventually(lambda: client.upcoming(token)[0]["agent"] == "deployed")

    # The later meeting's message waits, hidden, in the queue until start - lead.
    queue = QueueClient.from_connection_string(stack.storage_connection_string(), "agent-deployments")
    assert queue.get_queue_properties().approximate_message_count >= 1
    assert list(queue.peek_messages(max_messages=32)) == []
    assert client.upcoming(token)[1]["agent"] == "scheduled"

    # Scanning again changes nothing: still one agent for the first meeting.
    client.run_function("scan_calendars")
    eventually(lambda: any(r["path"].endswith("/delta") and "deltatoken" in (r.get("query") or "").lower()
                           for r in client.sim("GET", "/_sim/requests").json()))
    assert len(mine()) == 1


def test_callback_bad_input_lands_on_the_page_with_a_clear_outcome(client):
    for query, outcome, reason in [
        ("", "expired", "missing_state"),
        ("?code=abc&state=forged", "expired", "unknown_state"),
    ]:
        resp = client.api.get(f"{client.stack.functions_url}/api/outlook/callback{query}", allow_redirects=False)
        assert resp.status_code == 302
        page = resp.headers["Location"]
        assert page.startswith(f"{client.stack.functions_url}/api/integrations?")
        assert f"outlook={outcome}" in page and f"reason={reason}" in page and "abc" not in page


def test_cancelling_sign_in_is_reported_and_stores_nothing(client):
    token = client.token(user())
    start = client.start(token).json()
    page = client.follow_callback(client.sign_in(start["authorize_url"], "alice@contoso.com", action="cancel"))
    assert page == {"outlook": "cancelled", "reason": "user_cancelled"}
    assert client.connections(token)["connections"] == []


def test_a_tenant_that_blocks_the_app_is_reported_as_blocked(client):
    token = client.token(user())
    start = client.start(token).json()
    page = client.follow_callback(client.sign_in(start["authorize_url"], "carol@fabrikam.com"))
    assert page == {"outlook": "blocked", "reason": "blocked_by_policy"}
    assert client.connections(token)["connections"] == []


def test_replayed_state_is_expired(client):
    token = client.token(user())
    start = client.start(token).json()
    location = client.sign_in(start["authorize_url"], "alice@contoso.com")
    assert client.follow_callback(location)["outlook"] == "confirm"
    assert client.follow_callback(location) == {"outlook": "expired", "reason": "unknown_state"}


def test_a_code_the_token_endpoint_rejects_fails_cleanly(client):
    token = client.token(user())
    start = client.start(token).json()
    location = client.sign_in(start["authorize_url"], "alice@contoso.com")
    client.sim("POST", "/_sim/faults", json={"path_prefix": "/common/oauth2/v2.0/token", "status": 400,
                                             "error": "invalid_grant", "aadsts": "AADSTS54005", "count": 1})
    assert client.follow_callback(location) == {"outlook": "failed", "reason": "code_rejected"}
    assert client.connections(token)["connections"] == []


def test_account_linking_csrf_is_refused(client):
    """Mallory starts a connect, signs in with her Microsoft account and sends the callback link to
    Alice. Alice's browser lands on the page with a claim code; the page claims with Alice's token:
    refused, and the pending sign-in is destroyed so Mallory cannot use it either."""
    mallory, alice = client.token(user(), "pro"), client.token(user(), "pro")
    start = client.start(mallory).json()
    page = client.follow_callback(client.sign_in(start["authorize_url"], "erin@northwind.com"))
    resp = client.call("POST", "outlook/claim", alice, json={"claim": page["claim"]})
    assert resp.status_code == 403 and resp.json()["error"] == "claim_mismatch"
    assert client.connections(alice)["connections"] == []
    again = client.call("POST", "outlook/claim", mallory, json={"claim": page["claim"]})
    assert again.status_code == 410 and again.json()["error"] == "claim_expired"
    assert client.connections(mallory)["connections"] == []


def test_claims_that_are_unknown_or_used_are_refused(client):
    token = client.token(user())
    assert client.call("POST", "outlook/claim", token, json={"claim": "nope"}).status_code == 410
    assert client.call("POST", "outlook/claim", token, json={}).status_code == 400


@pytest.mark.parametrize("header", [None, "Bearer not-a-jwt", "Basic abc"])
def test_api_requires_a_valid_platform_token(client, header):
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "outlook/connections"), ("POST", "outlook/connect"),
                         ("GET", "meetings/upcoming"), ("DELETE", "outlook/connections/x")]:
        resp = client.call(method, path, None, headers=dict(headers))
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"


def test_a_user_never_sees_or_deletes_another_users_connection(client):
    owner, other = client.token(user()), client.token(user())
    conn = client.connect(owner, "dave@contoso.com")["connection"]
    assert client.connections(other)["connections"] == []
    assert client.call("DELETE", f"outlook/connections/{conn['id']}", other).status_code == 404
    assert client.call("POST", "outlook/connect", other, json={"reconnect": conn["id"]}).status_code == 404
    assert [c["id"] for c in client.connections(owner)["connections"]] == [conn["id"]]


def test_free_plan_limit_is_explained(client):
    token = client.token(user(), "free")
    client.connect(token, "bob@outlook.com")
    resp = client.start(token)
    assert resp.status_code == 403
    assert resp.json() | {"message": ""} == {"error": "plan_limit", "message": "", "plan": "free", "limit": 1,
                                             "used": 1}


def test_personal_account_shows_its_user_principal_name(client):
    token = client.token(user())
    assert client.connect(token, "bob@outlook.com")["connection"]["email"] == "bob@outlook.com"


def test_revoked_access_shows_error_and_reconnecting_restores_it(client):
    token = client.token(user(), "pro")
    conn = client.connect(token, "erin@northwind.com")["connection"]
    client.sim("POST", "/_sim/users/erin@northwind.com/revoke")
    client.run_function("refresh_tokens")
    errored = eventually(lambda: (c := client.connections(token)["connections"][0])["status"] == "error" and c)
    assert errored["reason_code"] == "access_revoked" and errored["action"] == "reconnect"
    assert "Reconnect" in errored["reason"]
    again = client.connect(token, "erin@northwind.com", reconnect=conn["id"])
    assert again["outcome"] == "reconnected" and again["connection"]["id"] == conn["id"]
    assert client.connections(token)["connections"][0]["status"] == "active"


def test_disconnect_removes_the_connection_and_its_meetings(client):
    token = client.token(user(), "pro")
    conn = client.connect(token, "dave@contoso.com")["connection"]
    client.add_event("dave@contoso.com", "Standup", now_utc() + timedelta(hours=5),
                     onlineMeeting={"joinUrl": "https://zoom.us/j/81234567890?pwd=abc"})
    client.run_function("sync_calendar", f'{{"user_id": "{client_user(token)}", "connection_id": "{conn["id"]}"}}')
    eventually(lambda: client.upcoming(token))
    assert client.call("DELETE", f"outlook/connections/{conn['id']}", token).status_code == 204
    assert client.connections(token)["connections"] == [] and client.upcoming(token) == []
    assert client.call("DELETE", f"outlook/connections/{conn['id']}", token).status_code == 404


def test_no_code_or_token_reaches_tables_or_logs(client, stack):
    token = client.token(user())
    start = client.start(token).json()
    location = client.sign_in(start["authorize_url"], "alice@contoso.com")
    code = parse_qs(urlsplit(location).query)["code"][0]
    page = client.follow_callback(location)
    client.call("POST", "outlook/claim", token, json={"claim": page["claim"]})
    tables = TableServiceClient.from_connection_string(stack.storage_connection_string())
    # Every table but the local host's timer leases (rows named after functions such as refresh_tokens).
    dump = "".join(str(dict(e)) for t in tables.list_tables() if t.name != "AzureWebJobsHostLocks"
                   for e in tables.get_table_client(t.name).list_entities())
    assert code not in dump and "refresh_token" not in dump and "access_token" not in dump
    assert "secret" not in dump.lower().replace("secretname", "")
    log = (stack.devstack_dir / "functions.log").read_text(errors="replace")
    assert code not in log and page["claim"] not in log


def client_user(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def test_an_it_admin_returning_from_admin_consent_is_thanked_not_told_it_expired(client):
    token = client.token(user())
    app = client.connections(token)["app"]
    assert app["admin_consented_at"] is None
    consent = urlsplit(app["admin_consent_url"])
    assert consent.path == "/organizations/v2.0/adminconsent"
    query = parse_qs(consent.query)
    assert query["client_id"] == [app["client_id"]]
    assert query["redirect_uri"] == [f"{client.stack.functions_url}/api/outlook/callback"]
    # Everything sign-in asks for, so nobody meets a consent screen after the admin approved.
    assert set(query["scope"][0].split()) == {"https://graph.microsoft.com/Calendars.Read",
                                              "https://graph.microsoft.com/User.Read",
                                              "email", "openid", "profile", "offline_access"}
    callback = f"{client.stack.functions_url}/api/outlook/callback"
    forged = client.api.get(f"{callback}?admin_consent=True&tenant=t1", allow_redirects=False)
    assert forged.status_code == 302 and "outlook=admin_consented" not in forged.headers["Location"]
    assert client.connections(token)["app"]["admin_consented_at"] is None
    back = client.api.get(f"{callback}?admin_consent=True&tenant=t1&state={query['state'][0]}",
                          allow_redirects=False)
    assert back.status_code == 302 and back.headers["Location"].endswith("?outlook=admin_consented")
    assert client.connections(token)["app"]["admin_consented_at"] is not None
    assert client.connections(client.token(user()))["app"]["admin_consented_at"] is None  # someone else


def test_reconnect_preselects_the_connections_account(client):
    token = client.token(user(), "solo")
    conn = client.connect(token, "dave@contoso.com")["connection"]
    url = client.start(token, reconnect=conn["id"]).json()["authorize_url"]
    # The id_token's opaque `login_hint` claim, not Graph `mail` (which can differ from the sign-in
    # name): Microsoft's sign-in page pre-selects the account it names.
    [hint] = parse_qs(urlsplit(url).query)["login_hint"]
    assert hint != "dave@contoso.com" and "@" not in hint
    page = client.ms.get(url, timeout=30)
    assert page.status_code == 200 and 'value="dave@contoso.com"' in page.text
