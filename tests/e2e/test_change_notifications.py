"""Real-time calendar changes through the running stack, with the periodic scan off (SCAN_SCHEDULE
yearly in tests/conftest.py): every change here reaches the service only by a Graph change
notification from the simulator, or by a lifecycle event, or not at all."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
import requests
from azure.data.tables import TableServiceClient

from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e

UPN = "dave@contoso.com"


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


@pytest.fixture
def dave(client, stack):
    """A fresh user with dave's calendar connected, its Graph subscription, and the syncs that
    connecting and subscribing queue done (so what happens next is the test's doing)."""
    token = client.token(f"notified-{uuid.uuid4().hex[:8]}", "pro")
    connection = client.connect(token, UPN)["connection"]
    subscription = eventually(lambda: subscription_of(client, connection["id"]))
    settled(stack, connection["id"])
    yield token, connection, subscription
    client.call("DELETE", f"outlook/connections/{connection['id']}", token)


def tables(stack):
    return TableServiceClient.from_connection_string(stack.storage_connection_string())


def sync_rows(stack, connection_id: str) -> dict[str, Any]:
    rows = tables(stack).get_table_client("syncstate").query_entities(f"PartitionKey eq '{connection_id}'")
    return {e["RowKey"]: e for e in rows}


def settled(stack, connection_id: str) -> None:
    """The service stored the subscription (and asked for the resync that follows it), and no sync of
    the connection is queued or running, seen three polls in a row."""
    app_rows = tables(stack).get_table_client("subscriptions")
    eventually(lambda: list(app_rows.query_entities(f"PartitionKey eq '{connection_id}'")))
    quiet = [0]

    def idle() -> bool:
        rows = sync_rows(stack, connection_id)
        calm = "queued" not in rows and "state" in rows and not rows["state"].get("LeaseOwner")
        quiet[0] = quiet[0] + 1 if calm else 0
        return quiet[0] >= 3

    eventually(idle)


def subscription_of(client: Client, connection_id: str) -> dict[str, Any] | None:
    subs = client.sim("GET", "/_sim/subscriptions").json()
    return next((s for s in subs if s["notificationUrl"].endswith(f"connection={connection_id}")), None)


def event_at(client: Client, subject: str, start, n: int, notify: bool = True) -> dict[str, Any]:
    # With a colleague invited: the join rules skip events of the user's own with nobody else (solo_events).
    body = {"subject": subject, "onlineMeeting": {"joinUrl": teams_link(n)},
            "attendees": [{"type": "required", "emailAddress": {"address": "colleague@contoso.com",
                                                                "name": "Colleague"}}],
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}
    resp = client.sim("POST", f"/_sim/users/{UPN}/events", params={} if notify else {"notify": "false"}, json=body)
    assert resp.status_code == 201, resp.text
    stored: dict[str, Any] = resp.json()
    return stored


def listed(client: Client, token: str, subject: str) -> list[dict[str, Any]]:
    return [m for m in client.upcoming(token) if m["title"] == subject]


def test_connecting_subscribes_to_the_calendar_with_urls_graph_validated(client, dave):
    _, connection, subscription = dave
    assert subscription["resource"].strip("/") == "me/events"
    assert set(subscription["changeType"].split(",")) == {"created", "updated", "deleted"}
    assert subscription["notificationUrl"] == (
        f"{client.stack.functions_url}/api/outlook/notifications?connection={connection['id']}")
    assert subscription["lifecycleNotificationUrl"].startswith(
        f"{client.stack.functions_url}/api/outlook/notifications/lifecycle?")
    assert len(subscription["clientState"]) >= 32  # a secret of its own, not a constant


def test_a_meeting_created_moved_and_cancelled_shows_each_change_without_a_scan(client, dave):
    token, _, _ = dave
    subject = f"Notified {uuid.uuid4().hex[:6]}"
    start = now_utc() + timedelta(hours=3)
    event = event_at(client, subject, start, 7101)

    [created] = eventually(lambda: listed(client, token, subject))
    assert created["agent"] == "scheduled"

    later = start + timedelta(hours=1)
    moved = client.sim("PATCH", f"/_sim/users/{UPN}/events/{event['id']}", json={
        "start": {"dateTime": later.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (later + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}})
    assert moved.status_code == 200
    [at_new_time] = eventually(lambda: [m for m in listed(client, token, subject)
                                        if m["start"].startswith(later.strftime("%Y-%m-%dT%H:%M"))] or None)
    assert at_new_time["agent"] == "scheduled" and len(listed(client, token, subject)) == 1

    assert client.sim("PATCH", f"/_sim/users/{UPN}/events/{event['id']}", json={"isCancelled": True}).ok
    eventually(lambda: listed(client, token, subject) == [])


def test_a_forged_notification_changes_nothing_and_a_genuine_one_syncs(client, dave, stack):
    token, connection, subscription = dave
    subject = f"Unnotified {uuid.uuid4().hex[:6]}"
    event_at(client, subject, now_utc() + timedelta(hours=4), 7102, notify=False)
    notification = {"subscriptionId": subscription["id"], "changeType": "created",
                    "resource": f"Users/x/Events/{uuid.uuid4().hex}", "tenantId": "t"}
    url = f"{stack.functions_url}/api/outlook/notifications?connection={connection['id']}"

    forged = requests.post(url, json={"value": [{**notification, "clientState": "x" * 64}]}, timeout=30)
    missing = requests.post(url, json={"value": [notification]}, timeout=30)
    assert (forged.status_code, missing.status_code) == (202, 202)  # a forger learns nothing
    # A genuine notification marks its sync queued before it answers; these left no mark.
    assert "queued" not in sync_rows(stack, connection["id"])
    assert listed(client, token, subject) == []

    genuine = requests.post(url, json={"value": [{**notification, "clientState": subscription["clientState"]}]},
                            timeout=30)
    assert genuine.status_code == 202
    eventually(lambda: listed(client, token, subject))


def test_a_missed_lifecycle_event_resyncs_the_calendar(client, dave):
    token, _, subscription = dave
    subject = f"Missed {uuid.uuid4().hex[:6]}"
    event_at(client, subject, now_utc() + timedelta(hours=5), 7103, notify=False)
    assert listed(client, token, subject) == []  # not notified, nothing queued: not seen yet
    resp = client.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"lifecycleEvent": "missed"})
    assert resp.status_code == 202
    eventually(lambda: listed(client, token, subject))


def test_a_removed_subscription_is_replaced_by_a_new_one(client, dave):
    token, connection, subscription = dave
    resp = client.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle",
                      json={"lifecycleEvent": "subscriptionRemoved"})
    assert resp.status_code == 202
    replaced = eventually(lambda: (s := subscription_of(client, connection["id"])) and s["id"] != subscription["id"]
                          and s)
    assert replaced["clientState"] != subscription["clientState"]
    # The new one delivers: a change after the replacement reaches Upcoming Meetings.
    subject = f"After removal {uuid.uuid4().hex[:6]}"
    event_at(client, subject, now_utc() + timedelta(hours=6), 7104)
    eventually(lambda: listed(client, token, subject))


def test_reauthorization_required_renews_the_subscription_and_reads_what_the_pause_lost(client, dave):
    token, connection, subscription = dave
    # The token the service asks for to answer the challenge takes a while (Microsoft answers slowly),
    # so the change below is made while Graph holds notifications back: it is never notified.
    client.sim("POST", "/_sim/faults", json={"path_prefix": "/oauth2/v2.0/token", "latency_ms": 3000, "count": 1})
    client.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle",
               json={"lifecycleEvent": "reauthorizationRequired"})
    subject = f"During the pause {uuid.uuid4().hex[:6]}"
    lost = event_at(client, subject, now_utc() + timedelta(hours=5), 7105)
    renewed = eventually(lambda: (s := subscription_of(client, connection["id"])) and not s["reauthorizationRequired"]
                         and not s["paused"] and s["expirationDateTime"] != subscription["expirationDateTime"] and s)
    assert renewed["id"] == subscription["id"]
    # Reauthorized with a token issued after the challenge, then the calendar was read again.
    eventually(lambda: listed(client, token, subject))
    delivered = [d for d in client.sim("GET", "/_sim/notifications").json() if d["kind"] == "change"
                 and subscription["id"] in d["subscription_ids"] and d["time"] >= lost["lastModifiedDateTime"][:19]]
    assert delivered == []  # it came by reading the calendar, not by a notification


def test_a_personal_accounts_notifications_never_pause_although_graph_never_challenges_it(client):
    """Personal accounts get no reauthorizationRequired: Graph pauses their notifications, silently,
    near the end of every authorizing token. With the scan off, only the reauthorization that every
    authorization plans ahead of its token's end keeps them flowing."""
    client.sim("POST", "/_sim/config", json={"access_token_lifetime_seconds": 90, "reauthorization_lead_seconds": 30})
    try:
        token = client.token(f"personal-{uuid.uuid4().hex[:8]}", "pro")
        connection = client.connect(token, "bob@outlook.com")["connection"]
        first = eventually(lambda: subscription_of(client, connection["id"]))
        seen = {first["authorizedUntil"]}

        def reauthorized_twice() -> bool:
            sub = subscription_of(client, connection["id"])
            assert sub is not None and sub["id"] == first["id"]
            seen.add(sub["authorizedUntil"])
            return len(seen) >= 3

        # Two authorizing tokens' lives: each would have paused delivery 60 s after it was issued.
        eventually(reauthorized_twice, timeout=240, interval=1.0)
        assert not subscription_of(client, connection["id"])["paused"]
        subject = f"Personal, after two tokens {uuid.uuid4().hex[:6]}"
        start = now_utc() + timedelta(hours=5)
        resp = client.sim("POST", "/_sim/users/bob@outlook.com/events", json={
            "subject": subject, "onlineMeeting": {"joinUrl": teams_link(7107)},
            "attendees": [{"type": "required", "emailAddress": {"address": "friend@outlook.com", "name": "Friend"}}],
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}})
        assert resp.status_code == 201, resp.text
        eventually(lambda: listed(client, token, subject), timeout=60)  # by its notification: no scan runs
    finally:
        client.sim("POST", "/_sim/config", json={"access_token_lifetime_seconds": 3600,
                                                 "reauthorization_lead_seconds": 600})


def test_a_subscription_graph_removes_without_a_word_is_replaced_at_the_next_scan(client, dave):
    token, connection, subscription = dave
    resp = client.sim("POST", f"/_sim/subscriptions/{subscription['id']}/remove", json={"notify": False})
    assert resp.status_code == 200 and resp.json()["announced"] is False
    client.run_function("scan_calendars")  # the scan checks each connection's subscription at Graph
    replaced = eventually(lambda: (s := subscription_of(client, connection["id"])) and s["id"] != subscription["id"]
                          and s)
    assert len([s for s in client.sim("GET", "/_sim/subscriptions").json()
                if s["notificationUrl"].endswith(f"connection={connection['id']}")]) == 1
    # Notifications flow again: a change now reaches Upcoming Meetings without another scan.
    subject = f"After silent removal {uuid.uuid4().hex[:6]}"
    event_at(client, subject, now_utc() + timedelta(hours=7), 7106)
    eventually(lambda: listed(client, token, subject))
    assert replaced["clientState"] != subscription["clientState"]


def test_disconnecting_deletes_the_subscription(client):
    token = client.token(f"notified-{uuid.uuid4().hex[:8]}", "pro")
    connection = client.connect(token, UPN)["connection"]
    eventually(lambda: subscription_of(client, connection["id"]))
    assert client.call("DELETE", f"outlook/connections/{connection['id']}", token).status_code == 204
    assert subscription_of(client, connection["id"]) is None


def recorded_for(client: Client, subject: str, token: str) -> list[dict[str, Any]]:
    """This user's deployments for the meeting (another user with the same calendar gets their own)."""
    user = jwt.decode(token, options={"verify_signature": False})["sub"]
    return [d for d in client.deployments()
            if (d.get("body") or {}).get("title") == subject and d["body"].get("user_id") == user]


def test_a_cancelled_meetings_deployed_agent_is_recalled_once(client, dave, stack):
    token, _, _ = dave
    subject = f"Recall me {uuid.uuid4().hex[:6]}"
    event = event_at(client, subject, now_utc() + timedelta(minutes=5), 7105)  # inside the lead: deploys now
    [deployed] = eventually(lambda: recorded_for(client, subject, token))
    eventually(lambda: [m for m in listed(client, token, subject) if m["agent"] == "deployed"])

    assert client.sim("PATCH", f"/_sim/users/{UPN}/events/{event['id']}", json={"isCancelled": True}).ok
    eventually(lambda: recorded_for(client, subject, token)[0]["recalled_at"])
    assert listed(client, token, subject) == []
    recalls = [r for r in client.api.get(f"{stack.agents_url}/_recalls", timeout=30).json()
               if r["id"] == deployed["id"]]
    assert [r["status"] for r in recalls] == [204]


def test_skipping_a_meeting_whose_agent_was_sent_recalls_it_and_says_so(client, dave):
    token, _, _ = dave
    subject = f"Skip after deploy {uuid.uuid4().hex[:6]}"
    event_at(client, subject, now_utc() + timedelta(minutes=6), 7106)
    eventually(lambda: recorded_for(client, subject, token))
    [meeting] = eventually(lambda: [m for m in listed(client, token, subject) if m["agent"] == "deployed"])

    skipped = client.call("PUT", f"meetings/{meeting['id']}/autojoin", token, json={"join": False})
    assert skipped.status_code == 200
    [recalled] = eventually(lambda: [m for m in listed(client, token, subject) if m["agent"] == "recalled"])
    assert (recalled["will_join"], recalled["why"]) == (False, "skipped_by_you")
    assert recorded_for(client, subject, token)[0]["recalled_at"]
