"""The recorder stands in for the platform's status-event endpoint: it checks the Standard Webhooks
signature as the platform would, records every attempt, and fails deliveries on demand."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from standardwebhooks import Webhook

from devstack.agents import AgentRecorder

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def recorder() -> Iterator[AgentRecorder]:
    server = AgentRecorder(api_key="k", events_secret=SECRET).start()
    yield server
    server.stop()


def send(recorder: AgentRecorder, event_id: str, *, secret: str = SECRET) -> requests.Response:
    body = json.dumps({"specversion": "1.0", "id": event_id, "source": "/test", "type": "t", "data": {"n": 1}})
    now = datetime.now(UTC)
    headers = {"Content-Type": "application/cloudevents+json", "webhook-id": event_id,
               "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign(event_id, now, body)}
    return requests.post(f"{recorder.url}/events", data=body, headers=headers, timeout=5)


def events(recorder: AgentRecorder, everything: bool = False) -> list[dict]:
    return requests.get(f"{recorder.url}/_events" + ("?all=1" if everything else ""), timeout=5).json()


def test_a_signed_event_is_accepted_and_listed_with_its_exact_body(recorder: AgentRecorder) -> None:
    assert send(recorder, "evt-1").status_code == 200

    [received] = events(recorder)
    assert received["body"]["id"] == "evt-1"
    assert received["headers"]["webhook-id"] == "evt-1"
    assert received["received_at"].endswith("Z")
    assert Webhook(SECRET).verify(received["raw_body"], received["headers"])["id"] == "evt-1"


def test_a_signature_made_with_another_secret_is_refused(recorder: AgentRecorder) -> None:
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    assert send(recorder, "evt-2", secret=other).status_code == 401
    assert requests.post(f"{recorder.url}/events", json={"id": "evt-3"}, timeout=5).status_code == 401

    assert events(recorder) == []
    assert [(a["status"], a["body"]["id"]) for a in events(recorder, everything=True)] == [(401, "evt-2"),
                                                                                           (401, "evt-3")]


def test_event_faults_fail_events_only_and_deployment_faults_deployments_only(recorder: AgentRecorder) -> None:
    armed = requests.post(f"{recorder.url}/_faults", json={"status": 503, "count": 1, "path": "/events",
                                                           "retry_after": 3}, timeout=5)
    assert armed.json()["path"] == "/events"
    deploy = requests.post(f"{recorder.url}/agents", json={"n": 1}, timeout=5,
                           headers={"Authorization": "Bearer k", "Idempotency-Key": "a"})
    assert deploy.status_code == 201

    refused = send(recorder, "evt-4")
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "3")
    assert send(recorder, "evt-4").status_code == 200
    assert [a["status"] for a in events(recorder, everything=True)] == [503, 200]
    bad = requests.post(f"{recorder.url}/_faults", json={"status": 503, "path": "/elsewhere"}, timeout=5)
    assert bad.status_code == 400


def test_reset_forgets_events(recorder: AgentRecorder) -> None:
    send(recorder, "evt-5")
    requests.post(f"{recorder.url}/_reset", timeout=5)
    assert events(recorder, everything=True) == []
