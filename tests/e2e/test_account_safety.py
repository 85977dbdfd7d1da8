"""Account safety and the data lifecycle through the running stack: erasing a user's data leaves no row
and no token cache; the reconciler deletes token caches no row names; "sync now"; CORS only for the web
app; security headers on the page, the API and the callback."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.tables import TABLES, user_key
from shared.connections import owner_tag
from tests.e2e.client import Client, eventually, now_utc, sealed_secrets, teams_link

pytestmark = pytest.mark.e2e
WEB_APP = "https://app.coagentor.test"  # PLATFORM_WEB_ORIGINS of the test stack (tests/conftest.py)


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


def new_user() -> str:
    return f"safety-{uuid.uuid4().hex[:8]}"


def rows_of(stack, user_id: str, connection_ids: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every app table that belongs to the user, by any of the key conventions."""
    tables = TableServiceClient.from_connection_string(stack.storage_connection_string())
    found = []
    partitions = {user_id, user_key(user_id), owner_tag(user_id)} | connection_ids
    for name in TABLES:
        for e in tables.get_table_client(name).list_entities():
            if e["PartitionKey"] in partitions or e.get("UserId") == user_id:
                found.append((name, dict(e)))
    return found


def erased(stack, user_id: str, connection_ids: set[str], timeout: float = 60) -> None:
    """Waits until no row of the user is left; names the rows left if some stay (table, keys)."""
    left: list[tuple[str, dict[str, Any]]] = []

    def gone() -> bool:
        left[:] = rows_of(stack, user_id, connection_ids)
        return not left

    try:
        eventually(gone, timeout=timeout)
    except AssertionError:
        raise AssertionError("rows left after the erasure: "
                             f"{[(t, e['PartitionKey'], e['RowKey']) for t, e in left]}") from None


def test_erasing_my_data_leaves_no_connection_meeting_pending_sign_in_or_token_cache(client, stack):
    user = new_user()
    token = client.token(user, "pro")
    alice = client.connect(token, "alice@contoso.com")["connection"]
    bob = client.connect(token, "bob@outlook.com")["connection"]
    event = client.add_event("alice@contoso.com", f"Erase me {user}", now_utc() + timedelta(hours=5),
                             onlineMeeting={"joinUrl": teams_link(951)})
    try:
        client.run_function("sync_calendar", json.dumps({"user_id": user, "connection_id": alice["id"]}))
        eventually(lambda: any(m["title"] == f"Erase me {user}" for m in client.upcoming(token)))
        client.call("PUT", "autojoin/rules", token, json={**client.call("GET", "autojoin/rules", token).json(),
                                                          "external_invites": "join"})
        assert client.call("POST", f"outlook/connections/{bob['id']}/sync", token).status_code == 202
        assert client.start(token).status_code == 200  # a sign-in left pending
        connection_ids = {alice["id"], bob["id"]}
        before = rows_of(stack, user, connection_ids)
        # Token caches, and the clientState secrets of the calendars' Graph subscriptions once made.
        named = {e["SecretName"] for _, e in before if e.get("SecretName")}
        caches = {n for n in named if n.startswith("outlook-cache-")}
        assert {t for t, _ in before} >= {"connections", "meetings", "eventindex", "syncstate", "authflows"}
        assert len(caches) == 2 and named <= sealed_names(stack)

        resp = client.call("DELETE", "outlook/data", token)
        assert resp.status_code == 202 and resp.json()["status"] == "erased"
        assert client.connections(token)["connections"] == []
        assert client.upcoming(token) == []
        assert rows_of(stack, user, connection_ids) == []
        # The sealed token caches and clientStates are deleted (rows: nothing left to recover).
        assert not named & sealed_names(stack)
        # The queued second pass runs and finds nothing; asking again is harmless.
        assert client.call("DELETE", "outlook/data", token).status_code == 202
        erased(stack, user, connection_ids)
    finally:
        client.sim("DELETE", f"/_sim/users/alice@contoso.com/events/{event['id']}")


def test_any_user_id_the_platform_issues_connects_lists_and_is_erased(client, stack):
    """Platform ids are opaque: one holding the characters Table Storage refuses in keys (`/ \\ # ?`,
    control characters) connects, counts against its plan, lists, and is erased, and never meets the
    account of an id that differs only by how those characters would be escaped."""
    tag = uuid.uuid4().hex[:8]
    odd = f"team/{tag}\\x#y?z\x01%41"
    twin = f"team%2F{tag}\\x#y?z\x01%41"  # what `odd` would look like with '/' escaped
    token, twin_token = client.token(odd, "free"), client.token(twin, "free")
    conn = client.connect(token, "alice@contoso.com")
    assert conn["outcome"] == "connected"
    listed = client.connections(token)
    assert [c["email"] for c in listed["connections"]] == ["alice@contoso.com"]
    assert listed["plan"] == {"name": "free", "limit": 1, "used": 1}
    refused = client.start(token)
    assert refused.status_code == 403 and (refused.json()["limit"], refused.json()["used"]) == (1, 1)
    assert client.connections(twin_token)["connections"] == []
    assert client.connect(twin_token, "bob@outlook.com")["outcome"] == "connected"
    assert [c["email"] for c in client.connections(token)["connections"]] == ["alice@contoso.com"]

    resp = client.call("DELETE", "outlook/data", token)
    assert resp.status_code == 202
    assert client.connections(token)["connections"] == []
    # A sync the claim queued may write after the first pass: the queued second pass catches it.
    erased(stack, odd, {conn["connection"]["id"]})
    assert [c["email"] for c in client.connections(twin_token)["connections"]] == ["bob@outlook.com"]
    assert client.call("DELETE", "outlook/data", twin_token).status_code == 202


def test_a_user_id_too_long_to_store_is_refused_at_once_with_a_reason(client):
    resp = client.call("GET", "outlook/connections", client.token("\x85" * 100))
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_user_id"
    assert resp.json()["message"]


def test_starting_sign_in_after_sign_in_is_limited_per_user_with_a_retry_after(client):
    token, other = client.token(new_user(), "pro"), client.token(new_user(), "pro")
    for _ in range(5):
        assert client.start(token).status_code == 200
    refused = client.start(token)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "too_many_sign_ins" and body["message"]
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 600 and body["retry_after"] == wait
    assert client.start(other).status_code == 200  # someone else is not held up


def test_an_oversized_callback_form_is_not_parsed_and_still_lands_on_the_page(client):
    resp = client.api.post(f"{client.stack.functions_url}/api/outlook/callback",
                           data={"code": "c", "state": "s", "padding": "x" * 20_000}, allow_redirects=False,
                           timeout=30)
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("?outlook=failed&reason=request_too_large")
    assert "Strict-Transport-Security" in resp.headers


def test_the_reconciler_deletes_old_token_caches_no_row_names(client, stack):
    token = client.token(new_user(), "solo")
    conn = client.connect(token, "erin@northwind.com")["connection"]
    user = jwt.decode(token, options={"verify_signature": False})["sub"]
    kept = {e["SecretName"] for _, e in rows_of(stack, user, {conn["id"]}) if e.get("SecretName")}
    orphan = f"outlook-cache-{uuid.uuid4().hex}"
    young = f"outlook-cache-{uuid.uuid4().hex}"
    sealed = sealed_secrets(stack)
    sealed.set(orphan, "{}", owner=user)  # a crash between the cache and the row that would have named it
    sealed.set(young, "{}", owner=user)
    table = TableServiceClient.from_connection_string(stack.storage_connection_string()).get_table_client(
        "sealedsecrets")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    for name in (orphan, *kept):  # written two hours ago (longer than ORPHAN_CACHE_GRACE_SECONDS)
        table.update_entity({"PartitionKey": name, "RowKey": "sealed", "UpdatedAt": two_hours_ago})
    client.run_function("reconcile_secrets")
    eventually(lambda: orphan not in sealed_names(stack))
    names = sealed_names(stack)
    assert young in names and kept <= names  # too young to judge; named by a connection
    assert client.connections(token)["connections"][0]["status"] == "active"
    assert client.call("DELETE", "outlook/data", token).status_code == 202  # leave erin's calendar to others


def sealed_names(stack) -> set[str]:
    table = TableServiceClient.from_connection_string(stack.storage_connection_string()).get_table_client(
        "sealedsecrets")
    return {str(e["PartitionKey"]) for e in table.list_entities(select=["PartitionKey"])}


def test_sync_now_reads_a_new_event_without_waiting_for_the_scan(client):
    user = new_user()
    token = client.token(user, "solo")
    conn = client.connect(token, "dave@contoso.com")["connection"]
    eventually(lambda: client.connections(token)["connections"][0]["status"] == "active")
    title = f"Sync now {user}"
    event = client.add_event("dave@contoso.com", title, now_utc() + timedelta(hours=4),
                             onlineMeeting={"joinUrl": teams_link(952)})
    try:
        assert client.call("POST", f"outlook/connections/{conn['id']}/sync", token).json() == {"queued": True}
        eventually(lambda: any(m["title"] == title for m in client.upcoming(token)))
    finally:
        client.sim("DELETE", f"/_sim/users/dave@contoso.com/events/{event['id']}")
        # Other tests watch dave's calendar: a second CoAgentor user on it would get agents of their own.
        assert client.call("DELETE", "outlook/data", token).status_code == 202


def test_only_the_web_app_origin_may_call_the_api_across_origins(client):
    token = client.token(new_user())
    allowed = client.call("GET", "outlook/connections", token, headers={"Origin": WEB_APP})
    assert allowed.headers["Access-Control-Allow-Origin"] == WEB_APP and "Origin" in allowed.headers["Vary"]
    other = client.call("GET", "outlook/connections", token, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.call("OPTIONS", "outlook/data", None,
                            headers={"Origin": WEB_APP, "Access-Control-Request-Method": "DELETE"})
    assert preflight.status_code == 204 and "DELETE" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = client.call("OPTIONS", "outlook/data", None,
                          headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize("method, path, authed", [
    ("GET", "outlook/connections", True), ("GET", "health", False), ("GET", "integrations", False),
    ("GET", "outlook/callback?state=nope", False), ("DELETE", "outlook/connections/none", True)])
def test_every_answer_carries_hsts_and_refuses_framing(client, method, path, authed):
    resp = client.call(method, path, client.token(new_user()) if authed else None)
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert resp.headers["X-Frame-Options"] == "DENY" or "frame-ancestors 'none'" in resp.headers.get(
        "Content-Security-Policy", "")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_a_forged_erasure_message_erases_nothing(client, stack):
    """Storage Queue Data Message Sender is enough to put a message on `user-erasures`; without the
    app's HMAC key (a Key Vault secret) the message is refused and the user's data stays."""
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    user = new_user()
    token = client.token(user, "solo")
    conn = client.connect(token, "erin@northwind.com")["connection"]
    queue = QueueClient.from_connection_string(stack.storage_connection_string(), "user-erasures",
                                               message_encode_policy=TextBase64EncodePolicy())
    queue.send_message(json.dumps({"user_id": user}))
    log = stack.devstack_dir / "functions.log"
    eventually(lambda: "erasure message refused" in log.read_text(errors="replace"), timeout=60)
    assert [c["id"] for c in client.connections(token)["connections"]] == [conn["id"]]
    assert client.call("DELETE", "outlook/data", token).status_code == 202  # a real erasure still works
    assert client.connections(token)["connections"] == []
