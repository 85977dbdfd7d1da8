"""Scheduling through the running host, where queue semantics matter: deploy messages hidden until
start - lead by their visibility delay, delivered by the host's queue polling, possibly more than once.
(The rules themselves are proved with a controllable clock in tests/integration/test_sync_rules.py.)"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.meeting_links import find_meeting_link
from shared.scheduling import idempotency_key, meeting_key
from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
LEAD = 600  # the stack fixture's AGENT_JOIN_LEAD_SECONDS


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


def user() -> str:
    return f"sched-{uuid.uuid4().hex[:8]}"


def teams_event(client: Client, upn: str, subject: str, start: datetime, n: int) -> dict[str, Any]:
    return client.add_event(upn, subject, start, onlineMeeting={"joinUrl": teams_link(n)}, isOnlineMeeting=True)


def attempts_for(client: Client, key: str) -> list[dict[str, Any]]:
    everything = client.api.get(f"{client.stack.agents_url}/_recorded?all=1", timeout=30).json()
    return [a for a in everything if a["idempotency_key"] == key]


def test_concurrent_deliveries_through_the_host_make_one_agent_api_call(client):
    me = user()
    start = now_utc() + timedelta(minutes=5)  # within the lead: due at once
    event = teams_event(client, "dave@contoso.com", f"Race {me}", start, 9001)
    link = find_meeting_link(event)
    assert link is not None
    key = meeting_key(link.key, start)
    token = client.token(me, "pro")
    # The agent API answers slowly once, so the other deliveries arrive while the first is in flight.
    client.api.post(f"{client.stack.agents_url}/_faults", json={"latency_ms": 1500, "count": 1}, timeout=5)
    client.connect(token, "dave@contoso.com")  # the claim starts a sync: the meeting and its message
    eventually(lambda: [m for m in client.upcoming(token) if m["id"] == key])
    body = json.dumps({"user_id": me, "meeting_key": key, "deploy_at": start.isoformat(), "attempt": 1})
    duplicates = [threading.Thread(target=client.run_function, args=("deploy_agent", body)) for _ in range(5)]
    for t in duplicates:
        t.start()
    for t in duplicates:
        t.join(30)
    eventually(lambda: [m for m in client.upcoming(token) if m["id"] == key and m["agent"] == "deployed"])
    [call] = attempts_for(client, idempotency_key(me, link.key, start))
    assert call["status"] == 201 and call["body"]["meeting_id"] == key


def test_a_meeting_moved_before_its_message_surfaces_is_deployed_only_at_the_new_time(client, stack):
    me = user()
    old = now_utc() + timedelta(seconds=LEAD + 6)  # its deploy message surfaces in about 6 s
    new = old + timedelta(hours=2)
    event = teams_event(client, "bob@outlook.com", f"Moved {me}", old, 9002)
    token = client.token(me, "pro")
    client.connect(token, "bob@outlook.com")
    [before] = eventually(lambda: [m for m in client.upcoming(token) if m["title"] == f"Moved {me}"])
    assert before["agent"] == "scheduled"
    client.sim("PATCH", f"/_sim/users/bob@outlook.com/events/{event['id']}",
               json={"start": {"dateTime": new.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                     "end": {"dateTime": (new + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                             "timeZone": "UTC"}})
    conn = client.connections(token)["connections"][0]["id"]
    body = json.dumps({"user_id": me, "connection_id": conn, "reason": "test"})

    def moved() -> list[dict[str, Any]]:
        client.run_function("sync_calendar", body)
        # Its own title: the user is connected to a shared mailbox other tests' meetings are in too.
        return eventually(lambda: [m for m in client.upcoming(token)
                                   if m["title"] == f"Moved {me}" and m["start"] != before["start"]], timeout=2)

    [after] = eventually(lambda: _try(moved), timeout=20, interval=0)
    assert after["agent"] == "scheduled"
    assert after["agent_at"] == (new - timedelta(seconds=LEAD)).isoformat().replace("+00:00", "Z")
    # The old message surfaces, is delivered by the host, and finds nothing to deploy.
    log = stack.devstack_dir / "functions.log"
    eventually(lambda: f"deploy_agent meeting_gone meeting_id={before['id']}" in log.read_text(errors="replace"),
               timeout=40)
    assert [a for a in client.deployments() if a["body"]["user_id"] == me] == []


def _try(probe: Any) -> Any:
    try:
        return probe()
    except AssertionError:
        return None
