"""From "scheduled" to "in the call", through the running stack: the recorder plays the agent platform
(signed statuses, scripted lobbies), the host takes them at `POST /api/agents/status`, the meeting
shows the agent's state, and the user is told in time (status events at the recorder's `/events`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from standardwebhooks import Webhook

from devstack.stack import Stack, free_ports
from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
LEAD = 600
NUDGE = 3
READINESS = 60
WAITING = "com.coagentor.outlook.agent.waiting_for_admission"
NOT_ADMITTED = "com.coagentor.outlook.agent.not_admitted"
AT_RISK = "com.coagentor.outlook.meeting.at_risk"


@pytest.fixture(scope="module")
def progress_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: short lobby, retry and readiness timings that the other tests must not see."""
    overrides = {
        "AGENT_JOIN_LEAD_SECONDS": str(LEAD), "TOKEN_REFRESH_MAX_AGE_SECONDS": "0",
        "REFRESH_SCHEDULE": "0 0 0 1 1 *", "SCAN_SCHEDULE": "0 0 0 1 1 *",
        "RECONCILE_SCHEDULE": "0 0 0 1 1 *", "PRUNE_SCHEDULE": "0 0 0 1 1 *",
        "WATCHDOG_SCHEDULE": "0 0 0 1 1 *",
        "PAGE_TOKEN_FROM_URL": "false", "PLATFORM_EVENTS_RETRY_SECONDS": "1",
        "LOBBY_NUDGE_SECONDS": str(NUDGE), "AGENT_RETRY_DELAY_SECONDS": "2", "AGENT_MAX_ATTEMPTS": "3",
        "READINESS_CHECK_SECONDS": str(READINESS),
    }
    stack = Stack(devstack_dir=Path(tmp_path_factory.mktemp("progress")), ports=free_ports(), overrides=overrides)
    stack.start(timeout=120)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def client(progress_stack: Stack) -> Client:
    return Client(progress_stack)


@pytest.fixture(autouse=True)
def no_lobby_script(client: Client) -> Iterator[None]:
    yield
    client.api.post(f"{client.stack.agents_url}/_behaviour", json={}, timeout=5)


def user() -> str:
    return f"prog-{uuid.uuid4().hex[:8]}"


def meeting_of(client: Client, upn: str, subject: str, start: datetime, n: int) -> str:
    """A Teams meeting in the account's calendar; its subject (the meeting's id is the service's)."""
    client.add_event(upn, subject, start, onlineMeeting={"joinUrl": teams_link(n)}, isOnlineMeeting=True)
    return subject


def key_of(client: Client, token: str, subject: str) -> str:
    """The id Upcoming Meetings gives the meeting with this subject, once it is listed."""
    listed: dict[str, Any] = eventually(
        lambda: next((m for m in client.upcoming(token) if m["title"] == subject), None))
    return str(listed["id"])


def shown(client: Client, token: str, key: str) -> dict[str, Any] | None:
    return next((m for m in client.upcoming(token) if m["id"] == key), None)


def events_about(client: Client, key: str, type_: str | None = None) -> list[dict[str, Any]]:
    received = client.api.get(f"{client.stack.agents_url}/_events", timeout=30).json()
    return [e["body"] for e in received if isinstance(e["body"], dict)
            and e["body"].get("data", {}).get("meeting_id") == key and (type_ is None or e["body"]["type"] == type_)]


def deployments_of(client: Client, key: str) -> list[dict[str, Any]]:
    return [d for d in client.deployments() if d["body"].get("meeting_id") == key]


def report(client: Client, agent_id: str, status: str, **extra: Any) -> requests.Response:
    return client.api.post(f"{client.stack.agents_url}/_agents/{agent_id}/report", json={"status": status, **extra},
                           timeout=30)


def deployed_agent(client: Client, upn: str, n: int) -> tuple[str, str, str]:
    """A meeting of `upn` within the lead, so its agent is deployed at once: (token, meeting id, agent id)."""
    me = user()
    token = client.token(me, "pro")
    subject = meeting_of(client, upn, f"Call {me}", now_utc() + timedelta(minutes=5), n)
    client.connect(token, upn)
    key = key_of(client, token, subject)
    [deployment] = eventually(lambda: deployments_of(client, key) or None)
    eventually(lambda: (m := shown(client, token, key)) is not None and m["agent"] == "deployed")
    return token, key, deployment["id"]


# ---------------------------------------------------------------- the lobby, nudges, retries
def test_a_lobby_that_never_admits_nudges_once_per_try_retries_then_tells_the_user_not_admitted(client):
    script = {"lobby": {"after_seconds": 0.5, "outcome": "admission_timeout", "wait_seconds": NUDGE + 3}}
    assert client.api.post(f"{client.stack.agents_url}/_behaviour", json=script, timeout=5).status_code == 200
    me = user()
    token = client.token(me, "pro")
    subject = meeting_of(client, "alice@contoso.com", f"Standup {me}", now_utc() + timedelta(minutes=5), 7001)
    client.connect(token, "alice@contoso.com")
    key = key_of(client, token, subject)

    waiting = eventually(lambda: (m := shown(client, token, key)) and m["agent"] == "waiting_for_admission" and m,
                         timeout=60)
    assert waiting["agent_attempt"] == 1 and "Waiting in the lobby since" in waiting["agent_detail"]
    assert "ask the organiser to admit it" in waiting["agent_detail"]
    pending = eventually(lambda: (m := shown(client, token, key)) and m["agent_retry_at"] and m, timeout=60)
    assert pending["agent"] == "not_admitted" and "try 2 of 3" in pending["agent_detail"]

    [told] = eventually(lambda: events_about(client, key, NOT_ADMITTED) or None, timeout=120)
    assert told["data"]["attempts"] == 3 and told["subject"] == me
    assert told["data"]["title"] == f"Standup {me}" and "lobby" in told["data"]["reason"]
    final = shown(client, token, key)
    assert final is not None and final["agent"] == "not_admitted" and final["agent_attempt"] == 3
    assert final["agent_retry_at"] is None

    tries = deployments_of(client, key)
    assert [d["body"]["attempt"] for d in tries] == [1, 2, 3]
    assert len({d["idempotency_key"] for d in tries}) == 3  # each try a deployment of its own
    for d in tries:
        assert d["body"]["user_ids"] == [me] and d["body"]["agent_name"] is None
        assert datetime.fromisoformat(d["body"]["join_at"]) == datetime.fromisoformat(d["body"]["start"]) - \
            timedelta(seconds=LEAD)
    nudges = events_about(client, key, WAITING)
    assert len({e["id"] for e in nudges}) == 3  # exactly one per try
    for e in nudges:
        assert {"meeting_id", "title", "start", "platform", "join_url", "waiting_since"} <= set(e["data"])
        assert e["data"]["platform"] == "teams" and e["data"]["join_url"].startswith("https://teams.microsoft.com/")
    assert len({e["id"] for e in events_about(client, key, NOT_ADMITTED)}) == 1


def test_an_agent_admitted_after_a_short_wait_is_in_the_call_and_nobody_is_nudged(client):
    script = {"lobby": {"after_seconds": 0, "outcome": "in_call", "wait_seconds": 0.5}}
    client.api.post(f"{client.stack.agents_url}/_behaviour", json=script, timeout=5)
    me = user()
    token = client.token(me, "pro")
    subject = meeting_of(client, "dave@contoso.com", f"Review {me}", now_utc() + timedelta(minutes=5), 7002)
    client.connect(token, "dave@contoso.com")
    key = key_of(client, token, subject)

    in_call = eventually(lambda: (m := shown(client, token, key)) and m["agent"] == "in_call" and m, timeout=60)
    assert in_call["agent_detail"].startswith("In the call") and in_call["agent_attempt"] == 1
    time.sleep(NUDGE + 1)  # past the nudge time: the nudge job looks and finds it admitted
    assert events_about(client, key) == []
    assert len(deployments_of(client, key)) == 1


# ---------------------------------------------------------------- signatures, replays, order
def test_statuses_with_a_bad_missing_or_stale_signature_are_refused_and_change_nothing(client):
    token, key, agent = deployed_agent(client, "erin@northwind.com", 7003)

    assert report(client, agent, "in_call", bad_signature=True).status_code == 401
    assert report(client, agent, "in_call", sign=False).status_code == 401
    stale = int(time.time()) - 6 * 60
    assert report(client, agent, "in_call", webhook_timestamp=stale).status_code == 401
    future = int(time.time()) + 6 * 60
    assert report(client, agent, "in_call", webhook_timestamp=future).status_code == 401
    assert shown(client, token, key)["agent"] == "deployed"  # type: ignore[index]

    webhook_id = f"msg_{uuid.uuid4().hex}"
    assert report(client, agent, "in_call", webhook_id=webhook_id).status_code == 204
    assert shown(client, token, key)["agent"] == "in_call"  # type: ignore[index]
    # The same webhook-id again, whatever it carries: 204, and nothing happens.
    assert report(client, agent, "ended", webhook_id=webhook_id).status_code == 204
    assert shown(client, token, key)["agent"] == "in_call"  # type: ignore[index]


def test_an_unknown_agent_is_404_and_a_malformed_status_400(client):
    stack = client.stack
    assert stack.dev is not None
    url = f"{stack.functions_url}/api/agents/status"

    def signed(body: str) -> requests.Response:
        msg_id, when = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
                   "webhook-signature": Webhook(stack.dev.agent_status_secret).sign(msg_id, when, body),
                   "Content-Type": "application/json"}
        return client.api.post(url, data=body.encode(), headers=headers, timeout=30)

    unknown = signed(json.dumps({"agent_id": "agt_nobody", "idempotency_key": None, "status": "joining",
                                 "at": "2026-03-01T10:00:00Z", "reason": None}))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_agent"
    for body in ("not json", json.dumps({"agent_id": "agt_x", "status": "dancing", "at": "2026-03-01T10:00:00Z"}),
                 json.dumps({"status": "joining", "at": "2026-03-01T10:00:00Z"}),
                 json.dumps({"agent_id": "agt_x", "status": "joining", "at": "yesterday"})):
        answer = signed(body)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_status", body
    # A bearer token is no signature.
    bearer = client.api.post(url, json={"agent_id": "agt_x", "status": "joining", "at": "2026-03-01T10:00:00Z"},
                             headers={"Authorization": f"Bearer {client.token(user())}"}, timeout=30)
    assert bearer.status_code == 401


def test_late_and_repeated_statuses_never_move_a_try_backwards(client):
    token, key, agent = deployed_agent(client, "bob@outlook.com", 7004)

    # Matched by its idempotency key alone (as when the platform reports before the id is stored).
    assert report(client, agent, "waiting_for_admission", omit_agent_id=True).status_code == 204
    assert shown(client, token, key)["agent"] == "waiting_for_admission"  # type: ignore[index]
    assert report(client, agent, "in_call").status_code == 204
    for late in ("joining", "waiting_for_admission", "in_call"):
        assert report(client, agent, late).status_code == 204  # taken, and ignored
    assert shown(client, token, key)["agent"] == "in_call"  # type: ignore[index]
    assert report(client, agent, "ended").status_code == 204
    assert report(client, agent, "in_call").status_code == 204
    final = shown(client, token, key)
    assert final is not None and final["agent"] == "ended" and final["agent_detail"] == "Left when the call ended"
    assert events_about(client, key) == []  # nothing the user needs to hear


# ---------------------------------------------------------------- the readiness check
def test_the_readiness_check_warns_of_a_connection_in_error_and_stays_quiet_for_a_fine_meeting(client):
    fine_user, risky_user = user(), user()
    fine_token, risky_token = client.token(fine_user, "pro"), client.token(risky_user, "pro")
    # Checked READINESS s before join_at = start - LEAD: about 30 s from now.
    start = now_utc() + timedelta(seconds=LEAD + READINESS + 30)
    fine_event = client.add_event("dave@contoso.com", f"Fine {fine_user}", start, isOnlineMeeting=True,
                                  onlineMeeting={"joinUrl": teams_link(7005)})
    risky_subject = meeting_of(client, "alice@contoso.com", f"Risky {risky_user}", start, 7006)
    client.connect(fine_token, "dave@contoso.com")
    conn = client.connect(risky_token, "alice@contoso.com")["connection"]
    fine, risky = key_of(client, fine_token, f"Fine {fine_user}"), key_of(client, risky_token, risky_subject)
    assert shown(client, fine_token, fine)["agent"] == "scheduled"  # type: ignore[index]

    # Alice's connection goes to Error before the check (her refresh token is refused).
    client.sim("POST", "/_sim/faults", json={"path_prefix": "/oauth2/v2.0/token", "count": 1, "status": 400,
                                             "error": "invalid_grant", "aadsts": "AADSTS700082"})
    client.run_function("refresh_connection", json.dumps({"user_id": risky_user, "connection_id": conn["id"]}))
    eventually(lambda: client.connections(risky_token)["connections"][0]["status"] == "error")

    [told] = eventually(lambda: events_about(client, risky, AT_RISK) or None, timeout=90)
    assert told["data"]["reason"] == "connection_error" and told["data"]["title"] == f"Risky {risky_user}"
    at_risk = shown(client, risky_token, risky)
    assert at_risk is not None and at_risk["at_risk"]["reason"] == "connection_error"
    assert "reconnect" in at_risk["at_risk"]["text"]

    # The fine meeting was checked too (its event read by id in the same run) and nothing was sent.
    def read_by_id() -> bool:
        seen = client.sim("GET", "/_sim/requests").json()
        return any(r["method"] == "GET" and r["path"].startswith("/v1.0/me/events/")
                   and unquote(r["path"]).endswith(fine_event["id"]) for r in seen)

    eventually(read_by_id, timeout=60)
    assert events_about(client, fine) == []
    assert shown(client, fine_token, fine)["at_risk"] is None  # type: ignore[index]


def test_the_readiness_check_finds_a_move_graph_never_notified_and_the_meeting_follows_it(client):
    """A change notification lost (Graph drops some): the event moved but the service was not told. The
    readiness check reads the event by id, tells the user the meeting is at risk (moved), and asks for
    a sync, after which Upcoming Meetings shows the new time."""
    from tests.e2e.test_change_notifications import settled

    me = user()
    token = client.token(me, "pro")
    subject = f"Moved quietly {me}"
    conn = client.connect(token, "erin@northwind.com")["connection"]
    settled(client.stack, conn["id"])  # subscribed, and the reads connecting queued are done
    start = now_utc() + timedelta(seconds=LEAD + READINESS + 45)  # checked in about 45 s
    event = client.add_event("erin@northwind.com", subject, start, isOnlineMeeting=True,
                             onlineMeeting={"joinUrl": teams_link(7016)})
    try:
        key = key_of(client, token, subject)  # by its notification
        settled(client.stack, conn["id"])  # no read left that would see the move before the check does
        later = start + timedelta(hours=2)
        moved = client.ms.patch(f"{client.stack.sim_url}/_sim/users/erin@northwind.com/events/{event['id']}",
                                params={"notify": "false"}, timeout=30, json={
                                    "start": {"dateTime": later.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                                    "end": {"dateTime": (later + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                                            "timeZone": "UTC"}})
        assert moved.status_code == 200, moved.text
        # Status events are delivered at least once: the platform deduplicates by id, so count ids.
        told_ids = eventually(lambda: {e["id"]: e for e in events_about(client, key, AT_RISK)
                                       if e["subject"] == me} or None, timeout=120)
        [told] = told_ids.values()
        assert told["data"]["reason"] == "event_moved" and told["data"]["title"] == subject
        # The sync it asked for moved the meeting: listed at the new time, and nothing sent to the old.
        eventually(lambda: [m for m in client.upcoming(token) if m["title"] == subject
                            and m["start"][:16] == later.strftime("%Y-%m-%dT%H:%M")], timeout=60)
        assert shown(client, token, key) is None and deployments_of(client, key) == []
    finally:
        client.sim("DELETE", f"/_sim/users/erin@northwind.com/events/{event['id']}")


# ---------------------------------------------------------------- the user's own settings
def test_the_users_join_lead_and_agent_name_reach_the_agent_api_and_bad_values_are_refused(client):
    me = user()
    token = client.token(me, "pro")
    rules = client.call("GET", "autojoin/rules", token).json()
    assert rules["join_lead_seconds"] == LEAD and rules["agent_name"] is None  # the service's defaults

    refused = client.call("PUT", "autojoin/rules", token, json={**rules, "join_lead_seconds": 901,
                                                                 "agent_name": "\u0000"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_rules"
    assert len(refused.json()["reasons"]) == 2
    mine = {**rules, "join_lead_seconds": 900, "agent_name": "Ada's notes"}
    assert client.call("PUT", "autojoin/rules", token, json=mine).json() == mine
    # A client written before these fields existed leaves them out: they keep their value.
    older = {k: rules[k] for k in ("responses", "external_invites", "platforms")}
    assert client.call("PUT", "autojoin/rules", token, json=older).json() == mine

    start = now_utc() + timedelta(minutes=14)  # inside a 900 s lead (not inside the service's 600 s)
    subject = meeting_of(client, "bob@outlook.com", f"Named {me}", start, 7010)
    client.connect(token, "bob@outlook.com")
    key = key_of(client, token, subject)
    [deployment] = eventually(lambda: deployments_of(client, key) or None)
    body = deployment["body"]
    assert body["agent_name"] == "Ada's notes" and body["user_ids"] == [me] and body["attempt"] == 1
    assert datetime.fromisoformat(body["join_at"]) == start - timedelta(seconds=900)
