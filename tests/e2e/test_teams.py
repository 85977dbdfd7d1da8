"""One agent per meeting for a workspace (API.md "Teams"), through a stack of two Functions host
instances on one storage: teammates invited to one meeting get one agent serving them both, even when
their calendars are synced at the same moment on different instances; the others see whose agent it
is; when the owner skips, the agent passes to the teammate (the first is recalled before the second
is sent: never two at once); erasing the owner hands it over too; without the claim each user gets
their own agent, as before."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.stack import Stack, free_port, free_ports
from tests.e2e.client import Client, eventually, now_utc, teams_link

pytestmark = pytest.mark.e2e
LEAD = 600
ALICE, DAVE = "alice@contoso.com", "dave@contoso.com"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = {
        "AGENT_JOIN_LEAD_SECONDS": str(LEAD),
        "REFRESH_SCHEDULE": "0 0 0 1 1 *",
        "SCAN_SCHEDULE": "0 0 0 1 1 *",
        "RECONCILE_SCHEDULE": "0 0 0 1 1 *",
        "PRUNE_SCHEDULE": "0 0 0 1 1 *",
        "DEPLOY_RETRY_SECONDS": "1",
    }
    s = Stack(devstack_dir=Path(tmp_path_factory.mktemp("teams")), ports=free_ports(), overrides=overrides,
              extra_host_ports=[free_port()])
    s.start(timeout=180)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(two_hosts) -> Client:
    return Client(two_hosts)


_CONNECTED: list[dict[str, str]] = []


@pytest.fixture(autouse=True)
def disconnect_afterwards(client) -> Iterator[None]:
    """Each test's users let go of alice's and dave's calendars, which the next test's users share."""
    yield
    while _CONNECTED:
        who = _CONNECTED.pop()
        client.call("DELETE", f"outlook/connections/{who['connection']}", who["token"])


def teammates(client: Client, *, dedupe: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """Two users of one workspace, alice's and dave's calendars connected."""
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    found = []
    for upn in (ALICE, DAVE):
        user = f"team-{uuid.uuid4().hex[:8]}"
        token = client.token(user, "pro", email=f"{user}@coagentor.test", workspace=workspace,
                             workspace_dedupe=dedupe)
        connection = client.connect(token, upn)["connection"]
        found.append({"user": user, "token": token, "connection": connection["id"], "upn": upn,
                      "email": f"{user}@coagentor.test"})
        _CONNECTED.append(found[-1])
    return found[0], found[1]


def invite_both(client: Client, subject: str, start, n: int) -> None:
    """The same meeting in both mailboxes (one join link, one start, one iCalUId as Exchange gives every
    attendee's copy), not notified: the test syncs."""
    ical = f"040000008200E00074C5B7101A82E008000000000000000000000000000000{uuid.uuid4().hex}"
    for upn in (ALICE, DAVE):
        event = {"subject": subject, "onlineMeeting": {"joinUrl": teams_link(n)}, "iCalUId": ical,
                 "attendees": [{"type": "required", "emailAddress": {"address": a}} for a in (ALICE, DAVE)],
                 "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                 "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                         "timeZone": "UTC"}}
        resp = client.sim("POST", f"/_sim/users/{upn}/events", params={"notify": "false"}, json=event)
        assert resp.status_code == 201, resp.text


def sync_at_once(client: Client, *users: dict[str, str]) -> None:
    """Each user's calendar synced at the same moment, each on its own host instance."""
    hosts = client.stack.function_host_urls
    assert len(hosts) == 2
    barrier = threading.Barrier(len(users))
    answers: list[int] = []

    def run(host: str, who: dict[str, str]) -> None:
        body = json.dumps({"user_id": who["user"], "connection_id": who["connection"], "reason": "manual"})
        barrier.wait()
        answers.append(requests.post(f"{host}/admin/functions/sync_calendar", json={"input": body},
                                     timeout=30).status_code)

    threads = [threading.Thread(target=run, args=(hosts[i % 2], who)) for i, who in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [202] * len(users)


def meeting(client: Client, who: dict[str, str], subject: str) -> dict[str, Any] | None:
    return next((m for m in client.upcoming(who["token"]) if m["title"] == subject), None)


def recorded(client: Client, n: int, *users: dict[str, str]) -> list[dict[str, Any]]:
    """Deployments to meeting n for these users (other tests' users share alice's and dave's mailboxes)."""
    ids = {u["user"] for u in users}
    return [d for d in client.deployments()
            if d["body"]["meeting_url"] == teams_link(n) and d["body"]["user_id"] in ids]


def shared_meeting(client: Client, a: dict[str, str], b: dict[str, str], subject: str, n: int):
    """Both users synced at once; returns (owner, teammate, the one deployment) once it is out."""
    start = now_utc() + timedelta(seconds=LEAD + 25)  # deployed 25 s from now: both syncs are done by then
    invite_both(client, subject, start, n)
    sync_at_once(client, a, b)
    # Listed for both, and one of them told a teammate's agent joins (once either's calendar was planned).
    seen = eventually(lambda: (x := meeting(client, a, subject)) and (y := meeting(client, b, subject))
                      and "teammate_agent" in (x["why"], y["why"]) and (x, y))
    assert [m["why"] for m in seen].count("teammate_agent") == 1
    owner, teammate = (a, b) if seen[1]["why"] == "teammate_agent" else (b, a)
    [deployment] = eventually(lambda: recorded(client, n, a, b), timeout=90)
    return owner, teammate, deployment


def test_two_teammates_syncing_at_once_on_two_instances_get_one_agent_serving_both(client):
    a, b = teammates(client)
    subject = f"Team sync {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    owner, teammate, deployment = shared_meeting(client, a, b, subject, n)

    assert sorted(deployment["body"]["user_ids"]) == sorted([a["user"], b["user"]])
    assert deployment["body"]["user_id"] == owner["user"]
    seen_by_owner = eventually(lambda: (m := meeting(client, owner, subject)) and m["agent"] == "deployed" and m)
    assert (seen_by_owner["will_join"], seen_by_owner["why"], seen_by_owner["agent_owner"]) == (True, "rules", None)
    seen_by_teammate = eventually(lambda: (m := meeting(client, teammate, subject)) and m["agent"] == "deployed"
                                  and m)
    assert (seen_by_teammate["will_join"], seen_by_teammate["why"]) == (False, "teammate_agent")
    assert seen_by_teammate["agent_owner"] == owner["email"]
    # Syncing both again (at once) changes nothing: still one agent.
    sync_at_once(client, a, b)
    client.run_function("scan_calendars")
    eventually(lambda: meeting(client, teammate, subject)["why"] == "teammate_agent")
    assert len(recorded(client, n, a, b)) == 1


def test_when_the_owner_skips_the_agent_passes_to_the_teammate_never_two_at_once(client):
    a, b = teammates(client)
    subject = f"Hand-over {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    owner, teammate, first = shared_meeting(client, a, b, subject, n)
    mine = meeting(client, owner, subject)
    assert mine is not None
    skipped = client.call("PUT", f"meetings/{mine['id']}/autojoin", owner["token"], json={"join": False,
                                                                                          "series": False})
    assert skipped.status_code == 200, skipped.text

    second = eventually(lambda: (d := [x for x in recorded(client, n, a, b) if x["id"] != first["id"]]) and d[0],
                        timeout=90)
    recalled = next(x for x in recorded(client, n, a, b) if x["id"] == first["id"])["recalled_at"]
    assert recalled and recalled <= second["received_at"]  # the first left before the second was sent
    assert second["body"]["user_id"] == teammate["user"] and second["body"]["user_ids"] == [teammate["user"]]
    assert second["idempotency_key"] != first["idempotency_key"]
    now_theirs = eventually(lambda: (m := meeting(client, teammate, subject)) and m["agent"] == "deployed" and m)
    assert (now_theirs["will_join"], now_theirs["agent_owner"]) == (True, None)
    assert meeting(client, owner, subject)["why"] == "skipped_by_you"
    assert len([x for x in recorded(client, n, a, b) if not x["recalled_at"]]) == 1


def test_erasing_the_owner_hands_the_agent_over_first(client):
    a, b = teammates(client)
    subject = f"Erased owner {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    owner, teammate, first = shared_meeting(client, a, b, subject, n)
    assert client.call("DELETE", "outlook/data", owner["token"]).status_code == 202
    second = eventually(lambda: (d := [x for x in recorded(client, n, a, b) if x["id"] != first["id"]]) and d[0],
                        timeout=90)
    recalled = next(x for x in recorded(client, n, a, b) if x["id"] == first["id"])["recalled_at"]
    assert recalled and recalled <= second["received_at"]
    assert second["body"]["user_ids"] == [teammate["user"]]
    assert client.connections(owner["token"])["connections"] == []


def test_when_the_owner_disconnects_the_agent_passes_to_the_teammate(client):
    a, b = teammates(client)
    subject = f"Disconnected owner {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    owner, teammate, first = shared_meeting(client, a, b, subject, n)
    assert client.call("DELETE", f"outlook/connections/{owner['connection']}", owner["token"]).status_code == 204
    second = eventually(lambda: (d := [x for x in recorded(client, n, a, b) if x["id"] != first["id"]]) and d[0],
                        timeout=90)
    recalled = next(x for x in recorded(client, n, a, b) if x["id"] == first["id"])["recalled_at"]
    assert recalled and recalled <= second["received_at"]
    assert second["body"]["user_ids"] == [teammate["user"]]
    eventually(lambda: (m := meeting(client, teammate, subject)) and m["agent"] == "deployed"
               and m["agent_owner"] is None)


def test_without_the_claim_each_user_gets_their_own_agent(client):
    a, b = teammates(client, dedupe=False)
    subject = f"Two agents {uuid.uuid4().hex[:6]}"
    n = int(uuid.uuid4().int % 900_000)
    invite_both(client, subject, now_utc() + timedelta(minutes=5), n)
    sync_at_once(client, a, b)
    both = eventually(lambda: (d := recorded(client, n, a, b)) and len(d) == 2 and d, timeout=60)
    assert sorted(d["body"]["user_id"] for d in both) == sorted([a["user"], b["user"]])
    assert all(d["body"]["user_ids"] == [d["body"]["user_id"]] for d in both)
    assert all(meeting(client, who, subject)["why"] == "rules" for who in (a, b))
