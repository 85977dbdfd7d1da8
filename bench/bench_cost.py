"""What one connection costs per day at the shipped defaults, measured on the real local stack.
`make bench` runs this.

    python -m bench.bench_cost [--connections 6] [--events 30]

Starts the whole local stack with its storage traffic going through a counting proxy in front of
Azurite and every cadence, refresh and cache setting at its shipped default (shared/config.py); only
the timers are driven by this script instead of the clock, and the join lead is 5 s so a deployment
is measured without waiting two minutes. It connects `--connections` CoAgentor users to one calendar
holding `--events` realistic events (two weeks, most with a Teams link), then runs each periodic
operation once, exactly as the timers and Graph would trigger it, and counts what it cost per
connection:

- a safety scan walk (scan_calendars -> fan_out_page -> sync_calendar per connection);
- a notified change (one event changed: Graph notifies every subscription, each queues a sync);
- a reauthorization (Graph's `reauthorizationRequired` lifecycle notification for every subscription:
  the subscription job PATCHes it with a fresh access token);
- the refresh walk and the subscription renewal walk as they run at the defaults;
- one agent deployment per connection (deploy_agent, with its pre-deployment delta round).

Counted: Graph requests and token-endpoint requests (the simulator's request log), Key Vault
operations of every kind (the local vault's counters: secret reads and writes, key gets, wraps,
unwraps), queue and table transactions (the proxy: one HTTP request = one billed transaction; the
host's idle queue polling is counted apart), function executions (queue messages completed, plus the
HTTP notification deliveries the simulator made) and the Functions host's CPU seconds.

The day is composed from those unit costs and the default schedules read from shared/config.py
(SCAN_SCHEDULE and the other NCRONTAB settings counted over a day, FULL_RESYNC_SECONDS), plus
assumptions stated in DAY: 10 calendar changes and 4 meetings with an agent a day, and Graph's
reauthorization challenge once per access-token lifetime (Entra access tokens live 60-90 minutes:
~19 a day, each with the token redemption it needs). Monthly cost per 1,000 connections at a
10,000-connection deployment uses PRICES (estimates; docs/scale.md) and the Flex Consumption billing
model in `monthly_cost_per_1000`. The last line printed is one JSON object:
{"usd_per_1000_connections_month", "graph_requests_per_connection_day",
"key_vault_ops_per_connection_day", "defaults": true, ...}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack import polling
from devstack.ncrontab import next_occurrence
from devstack.stack import AZURITE_ACCOUNT, AZURITE_KEY, Stack, free_port, free_ports
from shared.config import SETTINGS
from tests.e2e.client import Client, teams_link

ALICE = "alice@contoso.com"
# USD, pay-as-you-go, one region; estimates: see docs/scale.md for the sources and their dates.
PRICES = {
    "graph": 0.0,  # Microsoft Graph calendar reads are not metered
    "key_vault_per_10k": 0.03,  # Key Vault Standard, secret operations
    "queue_per_10k": 0.004,  # Queue Storage (GPv2, LRS) operations
    "table_per_10k": 0.00036,  # Table Storage (LRS) transactions
    "executions_per_million": 0.40,  # Flex Consumption on demand executions
    "gb_second": 0.000026,  # Flex Consumption on demand execution time
    "always_ready_gb_second": 0.000004,  # Flex Consumption always-ready baseline (docs/reliability.md: ~$20 a
    # month for one 2,048 MB instance at the East US baseline rate)
}
# Flex Consumption: CPU cores per instance memory size, MB (learn.microsoft.com/azure/azure-functions/
# flex-consumption-plan, "Instance memory"; each instance also gets 272 MB for the platform's host
# processes, not billed). An execution's CPU time takes 1/cores as long on a smaller instance.
VCPU = {512: 0.25, 2048: 1.0, 4096: 2.0}


def _bicep_default(name: str) -> int:
    bicep = (Path(__file__).resolve().parents[1] / "infra" / "main.bicep").read_text()
    found = re.search(rf"^param {name} int = (\d+)$", bicep, re.M)
    assert found, f"infra/main.bicep declares {name}"
    return int(found.group(1))


def instance_gb() -> float:
    """Flex Consumption instance memory, GB: infra/main.bicep's `instanceMemoryMB` default."""
    return _bicep_default("instanceMemoryMB") / 1000


def always_ready() -> int:
    """Always-ready instances of the HTTP group: infra/main.bicep's `httpAlwaysReady` default."""
    return _bicep_default("httpAlwaysReady")


class Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, target: int, service: str, counts: Counter[str]) -> None:
        super().__init__(("127.0.0.1", port), _Forward)
        self.target, self.service, self.counts, self.lock = target, service, counts, threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Counting

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = _kind(self.server.service, self.command, self.path)
        with self.server.lock:
            self.server.counts[kind] += 1
        conn = http.client.HTTPConnection("127.0.0.1", self.server.target, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _any


def _kind(service: str, method: str, path: str) -> str:
    if service == "queue":
        if path.split("?")[0].endswith("/messages") and method == "GET":
            return "queue:receive"  # polling (the host) or a receive
        if "/messages" in path:
            return f"queue:{'send' if method == 'POST' else 'delete' if method == 'DELETE' else method.lower()}"
        return "queue:other"
    return "table:batch" if "$batch" in path else f"table:{method.lower()}"


KV_OPS = ("sets", "gets", "deletes", "key_creates", "key_gets", "wraps", "unwraps")


def _host_cpu_seconds(stack: Stack) -> float:
    """User + system CPU seconds of the Functions host processes so far (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in getattr(stack, "_hosts", []):
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _host_peak_rss_mb(stack: Stack) -> float:
    peak = 0.0
    for proc in getattr(stack, "_hosts", []):
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def _snapshot(client: Client, counts: Counter[str]) -> dict[str, float]:
    requests_ = client.sim("GET", "/_sim/requests").json()
    kv = client.api.get(f"{client.stack.key_vault_url}/_kv/stats", verify=str(client.stack.ca.bundle_pem),  # type: ignore[union-attr]
                        timeout=30).json()
    graph = sum(1 for r in requests_ if r["path"].startswith("/v1.0/"))
    token = sum(1 for r in requests_ if r["path"].endswith("/oauth2/v2.0/token"))
    deliveries = len(client.sim("GET", "/_sim/notifications").json())
    return {"graph": graph, "token": token, "kv": sum(kv.get(k, 0) for k in KV_OPS), "http": deliveries,
            "cpu": _host_cpu_seconds(client.stack), **dict(counts)}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


def _settle(client: Client, counts: Counter[str], quiet: float = 2.5, limit: float = 120) -> None:
    """Wait until no queue message is sent or completed and no notification is delivered for `quiet`
    seconds (the work has drained)."""
    deadline = time.monotonic() + limit
    last: tuple[int, ...] = ()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = (counts["queue:send"], counts["queue:delete"], counts["table:put"] + counts["table:post"])
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return
        time.sleep(0.2)


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    ports = free_ports()
    counts: Counter[str] = Counter()
    proxy_queue, proxy_table = free_port(), free_port()
    proxies = [Counting(proxy_queue, ports["AZURITE_QUEUE_PORT"], "queue", counts),
               Counting(proxy_table, ports["AZURITE_TABLE_PORT"], "table", counts)]
    for p in proxies:
        threading.Thread(target=p.serve_forever, daemon=True).start()
    storage = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{ports['AZURITE_BLOB_PORT']}/{AZURITE_ACCOUNT};"
               f"QueueEndpoint=http://127.0.0.1:{proxy_queue}/{AZURITE_ACCOUNT};"
               f"TableEndpoint=http://127.0.0.1:{proxy_table}/{AZURITE_ACCOUNT};")
    never = "0 0 0 1 1 *"  # the script runs the timers itself; their defaults set the day's counts below
    overrides = {"AzureWebJobsStorage": storage, "SCAN_SCHEDULE": never, "REFRESH_SCHEDULE": never,
                 "RENEW_SCHEDULE": never, "RECONCILE_SCHEDULE": never, "PRUNE_SCHEDULE": never,
                 "AGENT_JOIN_LEAD_SECONDS": "5"}
    stack = Stack(devstack_dir=directory, ports=ports, overrides=overrides)
    stack.start(timeout=120)
    try:
        measured = _measure(Client(stack), counts, args)
        measured["peak_rss_mb"] = _host_peak_rss_mb(stack)
        return measured
    finally:
        stack.stop()
        for p in proxies:
            p.shutdown()


def _measure(client: Client, counts: Counter[str], args: argparse.Namespace) -> dict[str, Any]:
    n = args.connections
    now = datetime.now(UTC).replace(microsecond=0)
    events = []
    for i in range(args.events):  # two weeks, ~3 a working day, most online
        start = now + timedelta(hours=3 + i * 8)
        fields: dict[str, Any] = {"body": {"contentType": "html", "content": "<p>Agenda</p>" * 20}}
        if i % 4:
            fields |= {"onlineMeeting": {"joinUrl": teams_link(9000 + i)}, "isOnlineMeeting": True}
        events.append(client.add_event(ALICE, f"Meeting {i}", start, **fields))
    time.sleep(1)  # idle polling baseline
    idle_start, t0 = dict(counts), time.monotonic()
    time.sleep(5)
    idle_polls_per_s = (counts["queue:receive"] - idle_start.get("queue:receive", 0)) / (time.monotonic() - t0)

    results: dict[str, dict[str, float]] = {}
    before = _snapshot(client, counts)
    tokens = [client.token(f"cost-{uuid.uuid4().hex[:8]}", "pro") for _ in range(n)]
    connections = [client.connect(token, ALICE)["connection"]["id"] for token in tokens]
    wait_for(lambda: len(_subscriptions(client, connections)) == n, "every connection's subscription")
    _settle(client, counts)
    results["connect"] = _delta(_snapshot(client, counts), before)

    def measured(name: str, act: Any) -> None:
        before = _snapshot(client, counts)
        act()
        _settle(client, counts)
        results[name] = _delta(_snapshot(client, counts), before)

    measured("scan", lambda: client.run_function("scan_calendars"))
    measured("change", lambda: client.sim("PATCH", f"/_sim/users/{ALICE}/events/{events[1]['id']}",
                                          json={"subject": "Moved agenda"}))

    def challenge() -> None:
        for sub in _subscriptions(client, connections):
            client.sim("POST", f"/_sim/subscriptions/{sub['id']}/lifecycle",
                       json={"lifecycleEvent": "reauthorizationRequired"}).raise_for_status()
    measured("reauthorization", challenge)
    measured("refresh walk", lambda: client.run_function("refresh_tokens"))
    measured("renew walk", lambda: client.run_function("renew_subscriptions"))

    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    client.add_event(ALICE, "Deploy me", soon, onlineMeeting={"joinUrl": teams_link(8999)}, isOnlineMeeting=True)
    _settle(client, counts)  # the notified change that lists it (counted above as a change)

    def deployed() -> None:
        wait_for(lambda: len([d for d in client.deployments() if "Deploy me" in json.dumps(d)]) >= n,
                 "every deployment", limit=120)
    measured("deployment", deployed)
    # The first deployment in a process reads the agent API key from Key Vault once (AppSecret keeps it
    # for the process): a per-process cost, like the data key's unwrap at the first cache read.
    hosts = len(getattr(client.stack, "_hosts", [])) or 1
    per_process = min(results["deployment"]["kv"], hosts) + results["connect"]["kv"]
    results["deployment"]["kv"] = max(0.0, results["deployment"]["kv"] - hosts)
    return {"connections": n, "events": args.events, "idle_polls_per_second": idle_polls_per_s, "runs": results,
            "kv_per_process_start": per_process / hosts}


def _subscriptions(client: Client, connections: list[str]) -> list[dict[str, Any]]:
    return [s for s in client.sim("GET", "/_sim/subscriptions").json()
            if any(str(s.get("notificationUrl", "")).endswith(c) for c in connections)]


def wait_for(probe: Any, what: str, limit: float = 60) -> None:
    polling.until(f"bench: {what}", probe, limit, error=SystemExit)


KEYS = ("graph", "token", "kv", "queue", "table", "executions", "cpu")


def per_connection(run: dict[str, float], n: int) -> dict[str, float]:
    """Unit cost of one operation for one connection."""
    queue = run.get("queue:send", 0) + run.get("queue:delete", 0) + run.get("queue:other", 0)
    table = sum(v for k, v in run.items() if k.startswith("table:"))
    executions = run.get("queue:delete", 0) + run.get("http", 0)
    return {"graph": run.get("graph", 0) / n, "token": run.get("token", 0) / n, "kv": run.get("kv", 0) / n,
            "queue": queue / n, "table": table / n, "executions": executions / n, "cpu": run.get("cpu", 0) / n}


# What a connection-day holds besides the schedules (assumptions, stated in docs/scale.md).
DAY = {
    "changes": 10.0,  # calendar changes a day (3 meetings created, moved, answered...)
    "meetings": 4.0,  # meetings with an agent a day
    # Graph challenges a subscription once per access-token lifetime (60-90 minutes, 75 on average).
    "reauthorizations": 86_400 / (75 * 60),
}


def runs_per_day(expression: str) -> float:
    """How often an NCRONTAB schedule fires in a day (counted over a week, averaged)."""
    start = datetime(2026, 1, 5, tzinfo=UTC)
    count, moment = 0, start
    while True:
        moment = next_occurrence(expression, moment)
        if moment >= start + timedelta(days=7):
            return count / 7
        count += 1


def defaults() -> dict[str, float]:
    settings = {k: v for k, v in SETTINGS.items() if v is not None}
    return {"scans": runs_per_day(settings["SCAN_SCHEDULE"]),
            "refresh_walks": runs_per_day(settings["REFRESH_SCHEDULE"]),
            "renew_walks": runs_per_day(settings["RENEW_SCHEDULE"]),
            "full_resyncs": 86_400 / int(settings["FULL_RESYNC_SECONDS"])}


def day(units: dict[str, dict[str, float]], schedule: dict[str, float]) -> dict[str, float]:
    """One connection-day at the defaults, from unit costs. A full resync (FULL_RESYNC_SECONDS) is
    counted as one more first sync (the connect's Graph reads, an upper bound)."""
    total: dict[str, float] = {}
    for key in KEYS:
        total[key] = (schedule["scans"] * units["scan"][key] + DAY["changes"] * units["change"][key]
                      + DAY["reauthorizations"] * units["reauthorization"][key]
                      + schedule["refresh_walks"] * units["refresh walk"][key]
                      + schedule["renew_walks"] * units["renew walk"][key]
                      + DAY["meetings"] * units["deployment"][key])
    total["graph"] += schedule["full_resyncs"] * units["connect"]["graph"]
    return total


# Typical in-region latencies (seconds) that make an execution's billed wall time in Azure; the local
# stack answers on loopback in a millisecond. Graph calendar reads 100-300 ms; Table and Queue storage
# ~10 ms; the token endpoint ~150 ms; Key Vault ~20 ms.
LATENCY = {"graph": 0.15, "token": 0.15, "kv": 0.02, "queue": 0.01, "table": 0.01}
FIXED_MONTHLY_USD = {
    # The Functions host's own queue polling: per queue and instance ~1.3 M receives a month when idle
    # (maxPollingInterval 2 s); 12 queues, one instance.
    "idle queue polling": 12 * 1.3e6 / 10_000 * PRICES["queue_per_10k"],
}
DEPLOYMENT = 10_000  # connections the per-1,000 figure is quoted at
# Instances started a day across the deployment (Flex scales in and out; each start reads the app's
# secrets and unwraps the data key once): Key Vault operations spread over the DEPLOYMENT.
PROCESS_STARTS_PER_DAY = 24


def monthly_cost_per_1000(d: dict[str, float], cpu_per_execution: float, memory_gb: float) -> dict[str, float]:
    """USD a month per 1,000 connections at a DEPLOYMENT-connection deployment.

    Flex Consumption bills on-demand execution time as instance memory x the time the instance is
    executing at least one function (concurrent executions share it; learn.microsoft.com/azure/
    azure-functions/functions-consumption-costs, "Flex Consumption plan"). Executions arrive at
    rate r (per second, all connections) and last d seconds (latencies of what they call, plus CPU):
    one instance is busy a fraction 1 - exp(-r d) of the time (M/G/infinity), and the deployment
    needs more than one only when r d exceeds the per-instance concurrency (16). Fixed costs (idle
    polling, the always-ready HTTP instances' baseline) are spread over the DEPLOYMENT's connections.
    `cpu_per_execution` is CPU seconds on one core: an instance of memory_gb has VCPU of them."""
    cpu_per_execution /= VCPU.get(round(memory_gb * 1000), 1.0)
    month = 30.4
    executions = d["executions"]
    wall = sum(d[k] * LATENCY[k] for k in LATENCY) + executions * cpu_per_execution
    mean_duration = wall / max(executions, 1e-9)
    rate = DEPLOYMENT * executions / 86_400
    busy = max(1 - math.exp(-rate * mean_duration), rate * mean_duration / 16)
    gb_seconds = 86_400 * busy * memory_gb * month  # the whole deployment's month
    per_1000 = 1000 / DEPLOYMENT
    return {
        "key_vault": d["kv"] * month * 1000 / 10_000 * PRICES["key_vault_per_10k"],
        "queues": d["queue"] * month * 1000 / 10_000 * PRICES["queue_per_10k"],
        "tables": d["table"] * month * 1000 / 10_000 * PRICES["table_per_10k"],
        "function_executions": executions * month * 1000 / 1e6 * PRICES["executions_per_million"],
        "function_time": gb_seconds * PRICES["gb_second"] * per_1000,
        "fixed": sum(FIXED_MONTHLY_USD.values()) * per_1000,
        "always_ready": always_ready() * memory_gb * 86_400 * month * PRICES["always_ready_gb_second"] * per_1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        started = time.monotonic()
        measured = run(args, Path(tmp))
    n = measured["connections"]
    print(f"cost per connection at the shipped defaults, {n} connections, {measured['events']} events, "
          f"{time.monotonic() - started:.0f} s on the local stack; host peak RSS {measured['peak_rss_mb']:.0f} MB")
    print(f"host idle queue polling: {measured['idle_polls_per_second']:.1f} receives/s (local host; not Azure's)")
    units = {}
    print(f"{'operation, per connection':28}" + "".join(f"{k:>11}" for k in KEYS))
    for name, raw in measured["runs"].items():
        unit = per_connection(raw, n)
        units[name] = unit
        print(f"{name:28}" + "".join(f"{unit[k]:11.2f}" for k in KEYS))
    schedule = defaults()
    d = day(units, schedule)
    print("defaults: " + ", ".join(f"{k} {v:g}/day" for k, v in schedule.items())
          + ", " + ", ".join(f"{k} {v:.1f}/day" for k, v in DAY.items()) + " (assumed)")
    print(f"{'connection-day':28}" + "".join(f"{d[k]:11.1f}" for k in KEYS))
    cpu_per_execution = d["cpu"] / max(d["executions"], 1e-9)
    process_kv = measured["kv_per_process_start"] * PROCESS_STARTS_PER_DAY / DEPLOYMENT
    print(f"Key Vault: {d['kv']:.3f} operations per connection-day in steady state, plus "
          f"{measured['kv_per_process_start']:.0f} per process start ({PROCESS_STARTS_PER_DAY} starts a day over "
          f"{DEPLOYMENT:,} connections: {process_kv:.4f} per connection-day)")
    d["kv"] += process_kv
    memory = instance_gb()
    cost = monthly_cost_per_1000(d, cpu_per_execution, memory)
    total = sum(cost.values())
    print(f"monthly USD per 1,000 connections at {DEPLOYMENT:,} connections, {memory * 1000:.0f} MB instances "
          "(infra default): " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()) + f"; total {total:.2f}")
    for other in (0.512, 2.048):
        if other != memory:
            alt = sum(monthly_cost_per_1000(d, cpu_per_execution, other).values())
            print(f"  with {other * 1000:.0f} MB instances: total {alt:.2f}")
    print(f"  host CPU {cpu_per_execution * 1000:.0f} ms per execution; Key Vault {d['kv']:.3f} operations per "
          f"connection-day (goal <= 2), Graph {d['graph']:.0f} requests (goal <= 100), ${total:.2f} (goal <= $10)")
    print(json.dumps({"usd_per_1000_connections_month": round(total, 2),
                      "graph_requests_per_connection_day": round(d["graph"], 1),
                      "key_vault_ops_per_connection_day": round(d["kv"], 3),
                      "token_requests_per_connection_day": round(d["token"], 1),
                      "executions_per_connection_day": round(d["executions"], 1),
                      "connections_measured": n, "defaults": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
