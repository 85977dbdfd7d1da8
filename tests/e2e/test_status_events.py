"""Users are told, through the running stack: an event published to the outbox (the app's own wiring,
the Azurite queue `status-events`) is delivered by the host's `deliver_status_event` to the recorder's
`POST /events`, as a CloudEvent whose Standard Webhooks signature verifies with the dev secret."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from standardwebhooks import Webhook

from devstack.stack import Stack
from shared.config import load_settings
from shared.ports import StatusEvent, StatusEvents, StatusEventType
from shared.wiring import build
from tests.e2e.client import Client, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return Client(stack)


@pytest.fixture(scope="module")
def outbox(stack: Stack) -> Iterator[StatusEvents]:
    """`Container.status_events`, as the services get it, built the way the host builds it."""
    settings = stack.app_settings()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                     "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"):
            mp.setenv(name, settings[name])
        yield build(load_settings(settings)).status_events


def connection_error(user: str) -> StatusEvent:
    return StatusEvent(
        type=StatusEventType.CONNECTION_ERROR, subject=user, id=f"evt-{uuid.uuid4().hex}", time=datetime.now(UTC),
        data={"connection_id": f"c-{uuid.uuid4().hex[:8]}", "email": "alice@contoso.com",
              "reason_code": "access_revoked", "action": "reconnect", "meetings_at_risk": 1},
    )


def attempts(client: Client, connection_id: str) -> list[dict[str, Any]]:
    """Every POST /events the recorder saw about this connection, in arrival order."""
    everything = client.api.get(f"{client.stack.agents_url}/_events?all=1", timeout=30).json()
    return [a for a in everything
            if isinstance(a["body"], dict) and a["body"].get("data", {}).get("connection_id") == connection_id]


def accepted(client: Client, event_id: str) -> list[dict[str, Any]]:
    received = client.api.get(f"{client.stack.agents_url}/_events", timeout=30).json()
    return [e for e in received if isinstance(e["body"], dict) and e["body"].get("id") == event_id]


def test_a_published_event_reaches_the_platform_signed_with_the_shared_secret(client, outbox, stack):
    event = connection_error(f"user-{uuid.uuid4().hex[:8]}")

    outbox.publish(event)

    [received] = eventually(lambda: accepted(client, event.id))
    body = received["body"]
    assert {k: body[k] for k in ("specversion", "id", "source", "type", "subject", "datacontenttype")} == {
        "specversion": "1.0", "id": event.id, "source": "/coagentor/outlook-calendar",
        "type": "com.coagentor.outlook.connection.error", "subject": event.subject,
        "datacontenttype": "application/json",
    }
    assert body["data"] == event.data
    assert datetime.fromisoformat(body["time"]) == event.time
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["webhook-id"] == event.id
    assert stack.dev is not None
    assert Webhook(stack.dev.platform_events_secret).verify(received["raw_body"], headers)["id"] == event.id


def test_an_outage_at_the_platform_delays_the_event_but_it_arrives_once_under_one_id(client, outbox, stack):
    event = connection_error(f"user-{uuid.uuid4().hex[:8]}")
    fault = client.api.post(f"{stack.agents_url}/_faults", json={"status": 503, "count": 2, "path": "/events"},
                            timeout=5)
    assert fault.status_code == 200, fault.text

    outbox.publish(event)

    eventually(lambda: accepted(client, event.id), timeout=60)
    tries = attempts(client, event.data["connection_id"])
    statuses = [t["status"] for t in tries]
    # Retried after the refusals (2 here, unless a concurrent event took one), accepted exactly once.
    assert statuses[-1] == 200 and 1 <= statuses.count(503) <= 2 and statuses.count(200) == 1, statuses
    assert {t["body"]["id"] for t in tries} == {event.id}
    assert {t["headers"].get("webhook-id") for t in tries} == {event.id}
    assert stack.dev is not None
    for t in tries:  # each attempt is signed afresh, and each signature holds
        Webhook(stack.dev.platform_events_secret).verify(t["raw_body"], t["headers"])


def test_an_event_the_platform_refuses_for_good_is_kept_in_the_poison_queue(client, outbox, stack):
    event = connection_error(f"user-{uuid.uuid4().hex[:8]}")
    client.api.post(f"{stack.agents_url}/_faults", json={"status": 422, "count": 1, "path": "/events"}, timeout=5)

    outbox.publish(event)

    poison = QueueClient.from_connection_string(stack.storage_connection_string(), "status-events-poison",
                                                message_decode_policy=TextBase64DecodePolicy())

    def poisoned() -> list[dict[str, Any]]:
        bodies = [json.loads(m.content) for m in poison.peek_messages(max_messages=32)]
        return [b for b in bodies if b.get("id") == event.id]

    [kept] = eventually(poisoned)
    assert "HTTP 422" in kept["reason"] and kept["subject"] == event.subject and kept["data"] == event.data
    assert [t["status"] for t in attempts(client, event.data["connection_id"])] == [422]
