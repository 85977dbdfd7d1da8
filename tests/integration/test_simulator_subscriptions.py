# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""The simulator's Graph change notifications, driven through the app's own Graph subscription adapter
and a stand-in notification endpoint: the validation handshake, lifetimes, notifications of admin
event changes in Graph's documented shape, retries, lifecycle events; and the agent recorder's
recalls through the app's agent API adapter."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.agents import AgentRecorder
from shared.adapters.agents import AgentApiClient
from shared.adapters.graph_subscriptions import GraphSubscriptions
from shared.adapters.http import TimeoutSession
from shared.ports import DeployRequest, SubscriptionGone, SubscriptionRefused
from tests.e2e.client import eventually
from tests.integration.test_identity_faults import Vault, identity, signed_in
from tests.integration.test_simulator import CLIENT_SECRET, ca, seeded, session, sim  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


class Endpoint:
    """A notification endpoint on loopback: echoes validation tokens (unless told otherwise), records
    every POST, and answers notifications with `status`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.validations: list[str] = []
        self.status = 202
        self.echo = True
        self.delay = 0.0  # seconds before answering a notification (a slow endpoint)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    endpoint.validations.append(token)
                    answer = (token if endpoint.echo else "nope").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                endpoint.received.append({"path": urlsplit(self.path).path, "query": query,
                                          "content_type": self.headers.get("Content-Type"),
                                          "body": json.loads(raw)})
                if endpoint.delay:
                    time.sleep(endpoint.delay)  # the stand-in endpoint is slow on purpose
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/outlook/notifications"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def items(self, path_suffix: str = "/notifications") -> list[dict[str, Any]]:
        return [i for r in list(self.received) if r["path"].endswith(path_suffix) for i in r["body"]["value"]]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.shutdown()


def subscriptions(sim, ca) -> GraphSubscriptions:
    http = TimeoutSession(15)
    http.trust_env = False
    http.verify = str(ca.bundle_pem)
    return GraphSubscriptions(base_url=f"{sim.base_url}/v1.0", session=http, timeout=15, sleep=lambda s: None)


@pytest.fixture
def dave(sim, session, ca) -> str:
    return signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), "dave@contoso.com").access_token


def subscribe(sim, ca, token: str, endpoint: Endpoint, *, hours: float = 24, client_state: str = "s" * 64):
    return subscriptions(sim, ca).create(token, notification_url=f"{endpoint.url}?connection=c1",
                                         lifecycle_url=f"{endpoint.url}/lifecycle?connection=c1",
                                         client_state=client_state,
                                         expires_at=datetime.now(UTC) + timedelta(hours=hours))


def event(session, sim, subject: str, notify: bool = True) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    resp = session.post(f"{sim.base_url}/_sim/users/dave@contoso.com/events",
                        params={} if notify else {"notify": "false"},
                        json={"subject": subject, "start": {"dateTime": start.isoformat()[:19], "timeZone": "UTC"},
                              "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()[:19],
                                      "timeZone": "UTC"}})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def test_creating_a_subscription_validates_both_urls_before_answering(sim, session, ca, dave, endpoint):
    created = subscribe(sim, ca, dave, endpoint)
    assert len(endpoint.validations) == 2 and endpoint.received == []
    [listed] = session.get(f"{sim.base_url}/_sim/subscriptions").json()
    assert listed["id"] == created.id and listed["upn"] == "dave@contoso.com"
    assert (listed["resource"], listed["changeType"]) == ("/me/events", "created,updated,deleted")
    assert listed["notificationUrl"] == f"{endpoint.url}?connection=c1" and listed["clientState"] == "s" * 64
    assert abs(created.expires_at - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)


def test_an_endpoint_that_does_not_echo_the_token_gets_no_subscription(sim, session, ca, dave, endpoint):
    endpoint.echo = False
    with pytest.raises(SubscriptionRefused) as refused:
        subscribe(sim, ca, dave, endpoint)
    assert (refused.value.status, refused.value.code) == (400, "ValidationError")
    assert session.get(f"{sim.base_url}/_sim/subscriptions").json() == []


def test_lifetimes_follow_graphs_limits_for_outlook_events(sim, ca, dave, endpoint):
    with pytest.raises(SubscriptionRefused) as refused:
        subscribe(sim, ca, dave, endpoint, hours=7 * 24 + 1)  # beyond 10,080 minutes
    assert refused.value.code == "ExtensionError"
    short = subscribe(sim, ca, dave, endpoint, hours=0.1)  # under 45 minutes: set to 45
    assert short.expires_at - datetime.now(UTC) > timedelta(minutes=44)
    assert subscribe(sim, ca, dave, endpoint, hours=6 * 24).expires_at > datetime.now(UTC) + timedelta(days=5)


def test_event_changes_are_notified_in_graphs_shape(sim, session, ca, dave, endpoint):
    created = subscribe(sim, ca, dave, endpoint)
    stored = event(session, sim, "Notify me")
    session.patch(f"{sim.base_url}/_sim/users/dave@contoso.com/events/{stored['id']}",
                  json={"subject": "Renamed"}).raise_for_status()
    session.delete(f"{sim.base_url}/_sim/users/dave@contoso.com/events/{stored['id']}").raise_for_status()
    items = eventually(lambda: (found := endpoint.items()) and len(found) >= 3 and found, timeout=10)
    # Each waits its own random latency (as at Graph): they may arrive in any order.
    assert sorted(i["changeType"] for i in items) == ["created", "deleted", "updated"]
    for item in items:
        assert item["subscriptionId"] == created.id and item["clientState"] == "s" * 64
        assert item["resourceData"]["id"] == stored["id"] and item["resource"].endswith(f"/Events/{stored['id']}")
        assert item["tenantId"] and item["subscriptionExpirationDateTime"]
    assert all(r["query"]["connection"] == ["c1"] for r in endpoint.received)  # the URL's query comes back
    assert all(r["content_type"].startswith("application/json") for r in endpoint.received)


def test_a_change_made_with_notify_false_is_not_notified(sim, session, ca, dave, endpoint):
    subscribe(sim, ca, dave, endpoint)
    quiet = event(session, sim, "Dropped", notify=False)
    loud = event(session, sim, "Delivered")
    eventually(lambda: endpoint.items(), timeout=10)
    assert [i["resourceData"]["id"] for i in endpoint.items()] == [loud["id"]]
    assert quiet["id"] not in json.dumps(endpoint.received)


def test_a_notification_not_acknowledged_is_delivered_again(sim, session, ca, dave, endpoint):
    subscribe(sim, ca, dave, endpoint)
    endpoint.status = 500
    stored = event(session, sim, "Retry me")
    eventually(lambda: len(endpoint.items()) >= 2, timeout=15)
    endpoint.status = 202
    attempts = [d for d in session.get(f"{sim.base_url}/_sim/notifications").json() if d["kind"] == "change"]
    assert [d["attempt"] for d in attempts][:2] == [1, 2] and attempts[0]["status"] == 500
    assert {i["resourceData"]["id"] for i in endpoint.items()} == {stored["id"]}


def test_lifecycle_events_reach_the_lifecycle_url(sim, session, ca, dave, endpoint):
    created = subscribe(sim, ca, dave, endpoint)
    hook = f"{sim.base_url}/_sim/subscriptions/{created.id}/lifecycle"
    for kind in ("missed", "reauthorizationRequired"):
        assert session.post(hook, json={"lifecycleEvent": kind}).status_code == 202
    [flagged] = session.get(f"{sim.base_url}/_sim/subscriptions").json()
    assert flagged["reauthorizationRequired"] is True
    fresh = signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), "dave@contoso.com").access_token
    subscriptions(sim, ca).renew(fresh, created.id, datetime.now(UTC) + timedelta(days=2))  # reauthorizes too
    assert session.get(f"{sim.base_url}/_sim/subscriptions").json()[0]["reauthorizationRequired"] is False
    assert session.post(hook, json={"lifecycleEvent": "subscriptionRemoved"}).status_code == 202
    assert session.get(f"{sim.base_url}/_sim/subscriptions").json() == []
    items = eventually(lambda: (found := endpoint.items("/lifecycle")) and len(found) >= 3 and found, timeout=10)
    assert [i["lifecycleEvent"] for i in items] == ["missed", "reauthorizationRequired", "subscriptionRemoved"]
    assert all(i["subscriptionId"] == created.id and i["clientState"] == "s" * 64 for i in items)
    assert session.post(hook, json={"lifecycleEvent": "bogus"}).status_code in (400, 404)


def test_renew_and_delete_through_the_adapter_and_gone_afterwards(sim, session, ca, dave, endpoint):
    graph = subscriptions(sim, ca)
    created = subscribe(sim, ca, dave, endpoint)
    later = datetime.now(UTC) + timedelta(days=5)
    renewed = graph.renew(dave, created.id, later)
    assert renewed.id == created.id and abs(renewed.expires_at - later) < timedelta(seconds=1)
    graph.delete(dave, created.id)
    graph.delete(dave, created.id)  # already gone: fine
    with pytest.raises(SubscriptionGone):
        graph.renew(dave, created.id, later)


def test_another_users_token_cannot_see_or_change_a_subscription(sim, session, ca, dave, endpoint):
    created = subscribe(sim, ca, dave, endpoint)
    alice = signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), "alice@contoso.com").access_token
    with pytest.raises(SubscriptionGone):
        subscriptions(sim, ca).renew(alice, created.id, datetime.now(UTC) + timedelta(days=1))
    assert len(session.get(f"{sim.base_url}/_sim/subscriptions").json()) == 1


# ---------------------------------------------------------------- the agent recorder's recalls
@pytest.fixture
def recorder() -> Iterator[AgentRecorder]:
    server = AgentRecorder(api_key="k").start()
    yield server
    server.stop()


def test_a_deployed_agent_is_recalled_once_through_the_agent_api_adapter(recorder):
    client = AgentApiClient(base_url=recorder.url, api_key=lambda: "k", session=requests.Session(), timeout=5)
    request = DeployRequest(meeting_url="https://teams.microsoft.com/l/meetup-join/x", platform="teams", title="T",
                            start=datetime.now(UTC), end=datetime.now(UTC) + timedelta(hours=1), user_id="u",
                            meeting_id="m", idempotency_key="key-1")
    first = client.deploy(request)
    again = client.deploy(request)  # 409: already deployed, with the same agent's id
    assert first.ok and again.ok and first.agent_id and again.agent_id == first.agent_id
    assert client.recall(first.agent_id).gone
    assert client.recall(first.agent_id).gone  # 404: already gone counts as gone
    [recorded] = requests.get(f"{recorder.url}/_recorded", timeout=5).json()
    assert recorded["id"] == first.agent_id and recorded["recalled_at"]
    recalls = requests.get(f"{recorder.url}/_recalls", timeout=5).json()
    assert [(r["id"], r["status"]) for r in recalls] == [(first.agent_id, 204), (first.agent_id, 404)]


def test_a_recall_the_agent_api_fails_is_retryable_and_a_refused_key_is_not_the_meetings_fault(recorder):
    client = AgentApiClient(base_url=recorder.url, api_key=lambda: "wrong", session=requests.Session(), timeout=5)
    refused = client.recall("agt_x")
    assert (refused.gone, refused.permanent) == (False, False)
    requests.post(f"{recorder.url}/_faults", json={"status": 503, "count": 1}, timeout=5)
    good = AgentApiClient(base_url=recorder.url, api_key=lambda: "k", session=requests.Session(), timeout=5)
    failed = good.recall("agt_x")
    assert (failed.gone, failed.permanent, failed.detail) == (False, False, "HTTP 503")
