"""How fast does the agent platform's status reach the user? `make bench` runs this.

    python -m bench.bench_agent_progress [--agents 20]

Starts the whole local stack (LOBBY_NUDGE_SECONDS=2), connects one calendar holding `--agents`
meetings that start within the join lead, so each gets its agent at once from the agent API recorder.
Then, one agent after another, through the recorder's signed reports (`POST /_agents/{id}/report`,
which POSTs to the service's `/api/agents/status`):

1. Status -> shown on the page: `in_call` is reported; measured from just before the report until
   `GET /api/meetings/upcoming` (what the page shows) says `agent: "in_call"` (polled every 50 ms).
2. Status -> user event: `removed` is reported; measured from just before the report until the
   recorder's `/events` (the platform's status-event endpoint) has received `agent.not_admitted` for
   that meeting: outbox queue, `deliver_status_event`, signed POST.
3. Lobby nudge lateness: `waiting_for_admission` is reported for `--agents` further agents; measured
   from when the nudge was due (report + LOBBY_NUDGE_SECONDS) until `agent.waiting_for_admission`
   arrives at the recorder (the delayed `agent-progress` message, `follow_agent`, then as in 2).

Reported p50 / p95 / max in seconds. Goals: page p95 <= 2 s; user event p95 <= 5 s; nudge p95 <= 5 s late.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench_punctuality import percentile
from devstack import polling
from devstack.stack import Stack, free_ports
from tests.e2e.client import Client, now_utc, teams_link

UPN = "alice@contoso.com"
NUDGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_agent_progress", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="agents measured per figure")
    args = parser.parse_args(argv)
    overrides = {"AGENT_JOIN_LEAD_SECONDS": "600", "SCAN_SCHEDULE": "0 0 0 1 1 *", "REFRESH_SCHEDULE": "0 0 0 1 1 *",
                 "LOBBY_NUDGE_SECONDS": str(NUDGE), "READINESS_CHECK_SECONDS": "0"}
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp:
        stack = Stack(devstack_dir=Path(tmp), ports=free_ports(), overrides=overrides)
        stack.start(timeout=120)
        try:
            return run(Client(stack), args.agents)
        finally:
            stack.stop()


def run(client: Client, n: int) -> int:
    user = f"bench-progress-{uuid.uuid4().hex[:8]}"
    token = client.token(user, "pro")
    start = now_utc() + timedelta(minutes=5)
    titles = [f"Progress bench {user} {i}" for i in range(2 * n)]
    for i, title in enumerate(titles):
        client.add_event(UPN, title, start + timedelta(seconds=i), onlineMeeting={"joinUrl": teams_link(8000 + i)})
    client.connect(token, UPN)
    ids: dict[str, str] = {}

    def all_listed() -> bool:
        ids.update({m["title"]: m["id"] for m in client.upcoming(token) if m["title"] in titles})
        return len(ids) == len(titles)

    wait(all_listed, 60, "every meeting listed")
    keys = [ids[t] for t in titles]
    agents: dict[str, str] = {}

    def all_deployed() -> bool:
        agents.update({d["body"]["meeting_id"]: d["id"] for d in client.deployments()
                       if d["body"].get("user_id") == user})
        return len(agents) == len(keys)

    wait(all_deployed, 120, "every agent deployed")

    def report(key: str, status: str) -> None:
        answer = client.api.post(f"{client.stack.agents_url}/_agents/{agents[key]}/report", json={"status": status},
                                 timeout=30)
        assert answer.status_code == 204, answer.text

    def shown(key: str, state: str) -> bool:
        return any(m["id"] == key and m["agent"] == state for m in client.upcoming(token))

    def told(key: str, kind: str) -> bool:
        received = client.api.get(f"{client.stack.agents_url}/_events", timeout=30).json()
        return any(isinstance(e["body"], dict) and e["body"].get("type", "").endswith(kind)
                   and e["body"].get("data", {}).get("meeting_id") == key for e in received)

    page: list[float] = []
    event: list[float] = []
    for key in keys[:n]:
        began = time.monotonic()
        report(key, "in_call")
        wait(partial(shown, key, "in_call"), 30, "in_call shown", interval=0.05)
        page.append(time.monotonic() - began)
        began = time.monotonic()
        report(key, "removed")
        wait(partial(told, key, "agent.not_admitted"), 60, "agent.not_admitted received", interval=0.05)
        event.append(time.monotonic() - began)
    nudge: list[float] = []
    for key in keys[n:]:
        due = time.monotonic() + NUDGE
        report(key, "waiting_for_admission")
        wait(partial(told, key, "agent.waiting_for_admission"), 60, "the lobby nudge", interval=0.05)
        nudge.append(time.monotonic() - due)
    line("Status -> shown on the page", page, "goal p95 <= 2 s")
    line("Status -> user event (agent.not_admitted)", event, "goal p95 <= 5 s")
    line(f"Lobby nudge, after its due time (LOBBY_NUDGE_SECONDS={NUDGE})", nudge, "goal p95 <= 5 s late")
    ok = percentile(page, 0.95) <= 2 and percentile(event, 0.95) <= 5 and percentile(nudge, 0.95) <= 5
    return 0 if ok else 1


def line(what: str, values: list[float], goal: str) -> None:
    print(f"{what} ({len(values)} agents): p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
          f"max {max(values):.2f} s ({goal})", flush=True)


def wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> None:
    polling.until(f"bench: {what}", probe, timeout, interval, error=SystemExit)


if __name__ == "__main__":
    sys.exit(main())
