"""The agent API recorder records deployments, refuses duplicates and injects faults on demand."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from devstack.agents import AgentRecorder

KEY = "dev-agent-key"


@pytest.fixture
def recorder() -> Iterator[AgentRecorder]:
    server = AgentRecorder(api_key=KEY).start()
    yield server
    server.stop()


def deploy(recorder: AgentRecorder, body: object, *, key: str | None = "k-1", auth: str = KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {auth}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(f"{recorder.url}/agents", json=body, headers=headers, timeout=5)


def test_a_deployment_is_echoed_with_an_id_and_recorded(recorder: AgentRecorder) -> None:
    body = {"meeting_url": "https://teams.microsoft.com/l/meetup-join/x", "join_at": "2026-03-01T10:00:00Z"}

    answer = deploy(recorder, body, key="meeting-1")

    assert answer.status_code == 201
    assert answer.json()["meeting_url"] == body["meeting_url"]
    assert answer.json()["id"].startswith("agt_")
    recorded = requests.get(f"{recorder.url}/_recorded", timeout=5).json()
    assert len(recorded) == 1
    assert recorded[0]["idempotency_key"] == "meeting-1"
    assert recorded[0]["body"] == body
    assert recorded[0]["received_at"].endswith("Z")
    assert recorded[0]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_a_repeated_idempotency_key_is_refused_and_kept_apart(recorder: AgentRecorder) -> None:
    first = deploy(recorder, {"n": 1}, key="same")
    assert first.status_code == 201

    second = deploy(recorder, {"n": 2}, key="same")

    assert second.status_code == 409
    assert second.json() == {"error": "already_deployed", "id": first.json()["id"]}  # the agent already there
    assert [r["body"] for r in requests.get(f"{recorder.url}/_recorded", timeout=5).json()] == [{"n": 1}]
    everything = requests.get(f"{recorder.url}/_recorded?all=1", timeout=5).json()
    assert [(a["status"], a["body"]) for a in everything] == [(201, {"n": 1}), (409, {"n": 2})]


def test_the_wrong_key_is_unauthorized(recorder: AgentRecorder) -> None:
    assert deploy(recorder, {"n": 1}, auth="wrong").status_code == 401
    assert requests.post(f"{recorder.url}/agents", json={"n": 1}, timeout=5).status_code == 401
    assert requests.get(f"{recorder.url}/_recorded", timeout=5).json() == []
    assert [a["status"] for a in requests.get(f"{recorder.url}/_recorded?all=1", timeout=5).json()] == [401, 401]


def test_no_key_configured_accepts_any_caller() -> None:
    server = AgentRecorder(api_key=None).start()
    try:
        answer = requests.post(f"{server.url}/agents", json={"n": 1}, timeout=5)
        assert answer.status_code == 201
    finally:
        server.stop()


def test_injected_faults_fail_the_next_calls_then_clear(recorder: AgentRecorder) -> None:
    fault = requests.post(f"{recorder.url}/_faults", json={"status": 503, "count": 2, "retry_after": 1}, timeout=5)
    assert fault.status_code == 200

    first, second = deploy(recorder, {"n": 1}), deploy(recorder, {"n": 1})
    third = deploy(recorder, {"n": 1})

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 201)
    assert first.headers["Retry-After"] == "1"
    assert len(requests.get(f"{recorder.url}/_recorded", timeout=5).json()) == 1


def test_latency_without_a_status_still_deploys(recorder: AgentRecorder) -> None:
    requests.post(f"{recorder.url}/_faults", json={"latency_ms": 20, "count": 1}, timeout=5)

    assert deploy(recorder, {"n": 1}).status_code == 201


def test_invalid_bodies_are_rejected(recorder: AgentRecorder) -> None:
    assert deploy(recorder, [1, 2]).status_code == 400
    answer = requests.post(
        f"{recorder.url}/agents",
        data=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert requests.post(f"{recorder.url}/_faults", json={"status": "x"}, timeout=5).status_code == 400


def test_reset_forgets_deployments_and_faults(recorder: AgentRecorder) -> None:
    deploy(recorder, {"n": 1}, key="k")
    requests.post(f"{recorder.url}/_faults", json={"status": 500, "count": 5}, timeout=5)

    requests.post(f"{recorder.url}/_reset", timeout=5)

    assert requests.get(f"{recorder.url}/_recorded?all=1", timeout=5).json() == []
    assert deploy(recorder, {"n": 1}, key="k").status_code == 201


# ---------------------------------------------------------------- the recorder as the agent platform
class _Service:
    """Stands in for the service's POST /api/agents/status: keeps what arrives, answers 204."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers.items()), raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/agents/status"


STATUS_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def platform() -> Iterator[tuple[AgentRecorder, _Service]]:
    service = _Service()
    server = AgentRecorder(api_key=KEY, status_url=service.url, status_secret=STATUS_SECRET).start()
    yield server, service
    server.stop()
    service.server.shutdown()


def test_a_report_posts_a_status_signed_as_standard_webhooks_for_that_agent(platform) -> None:
    from standardwebhooks import Webhook

    recorder, service = platform
    agent = deploy(recorder, {"meeting_id": "m-1"}, key="try-1").json()["id"]

    answer = requests.post(f"{recorder.url}/_agents/{agent}/report", json={"status": "in_call", "reason": None},
                           timeout=10)

    assert answer.status_code == 204  # the service's answer, passed on
    [(headers, raw)] = service.received
    body = Webhook(STATUS_SECRET).verify(raw, headers)
    assert (body["agent_id"], body["idempotency_key"], body["status"]) == (agent, "try-1", "in_call")
    assert requests.post(f"{recorder.url}/_agents/agt_unknown/report", json={"status": "joining"},
                         timeout=10).status_code == 404
    unsigned = requests.post(f"{recorder.url}/_agents/{agent}/report", json={"status": "ended", "sign": False},
                             timeout=10)
    assert unsigned.status_code == 204 and "webhook-signature" not in {k.lower() for k in service.received[-1][0]}


def test_a_lobby_script_reports_joining_waiting_then_the_outcome_for_every_later_deployment(platform) -> None:
    recorder, service = platform
    assert requests.post(f"{recorder.url}/_behaviour", json={"lobby": {"outcome": "sideways"}},
                         timeout=5).status_code == 400
    script = {"lobby": {"after_seconds": 0.1, "outcome": "admission_timeout", "wait_seconds": 0.1}}
    assert requests.post(f"{recorder.url}/_behaviour", json=script, timeout=5).status_code == 200

    agent = deploy(recorder, {"meeting_id": "m-2"}, key="try-2").json()["id"]

    deadline = time.monotonic() + 10
    while len(service.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    statuses = [json.loads(raw)["status"] for _, raw in service.received]
    assert statuses == ["joining", "waiting_for_admission", "admission_timeout"]
    assert {json.loads(raw)["agent_id"] for _, raw in service.received} == {agent}
    assert [r["status"] for r in requests.get(f"{recorder.url}/_reports", timeout=5).json()] == [204, 204, 204]
