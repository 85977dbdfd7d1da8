"""The agent API recorder records deployments, refuses duplicates and injects faults on demand."""

from __future__ import annotations

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
