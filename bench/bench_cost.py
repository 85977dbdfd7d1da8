"""What one connection costs per day, measured on the real local stack. `make bench` runs this.

    python -m bench.bench_cost [--connections 6] [--events 30]

Starts the whole local stack with its storage traffic going through a counting proxy in front of
Azurite, connects `--connections` CoAgentor users to calendars holding `--events` realistic events
(two weeks, most with a Teams link), then runs each periodic operation once through the Functions
host, exactly as the timers do, and counts what it cost per connection:

- a scan walk (scan_calendars -> fan_out_page -> sync_calendar per connection), nothing changed;
- a scan walk after one event changed in every calendar;
- a refresh walk (refresh_tokens -> fan_out_page -> refresh_connection per connection);
- one agent deployment per connection (deploy_agent, with its pre-deployment delta round).

Counted: Graph requests and token-endpoint requests (the simulator's request log), Key Vault secret
reads and writes (the local vault's counters), queue and table transactions (the proxy: one HTTP
request = one billed transaction; the host's idle queue polling is counted apart) and function
executions (queue messages completed = queue deletes, plus the timer runs).

The day is then composed from those measured unit costs and the schedule (SCAN_SCHEDULE every 5
minutes = 288 walks; refreshes: the timer's ahead rule renews every access token ~40 minutes (Entra
access tokens live 60-90 minutes), ~36 a day; 10 calendar changes and 4 meetings a day), with and
without Graph change notifications. The "with" case is modelled (bench_notifications measures the
Graph requests of the real thing: one per notified change) by the scan schedule they allow (a safety
scan every 6 hours, one sync per change, a subscription renewal every ~2.9 days, one notification
request per change) and says so.
Monthly cost per 1,000 connections uses the prices in PRICES (estimates; see docs/scale.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
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

from devstack.stack import AZURITE_ACCOUNT, AZURITE_KEY, Stack, free_port, free_ports
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
}
SECONDS_PER_EXECUTION = 0.25  # assumed average billed time of one execution (mostly I/O waits)
INSTANCE_GB = 2.048  # instanceMemoryMB in infra


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


def _snapshot(client: Client, counts: Counter[str]) -> dict[str, int]:
    requests_ = client.sim("GET", "/_sim/requests").json()
    kv = client.api.get(f"{client.stack.key_vault_url}/_kv/stats", verify=str(client.stack.ca.bundle_pem),  # type: ignore[union-attr]
                        timeout=30).json()
    graph = sum(1 for r in requests_ if r["path"].startswith("/v1.0/"))
    token = sum(1 for r in requests_ if r["path"].endswith("/oauth2/v2.0/token"))
    return {"graph": graph, "token": token, "kv_get": kv.get("gets", 0), "kv_set": kv.get("sets", 0),
            **dict(counts)}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


def _settle(client: Client, counts: Counter[str], quiet: float = 2.5, limit: float = 60) -> None:
    """Wait until no queue message is sent or completed for `quiet` seconds (the work has drained)."""
    deadline = time.monotonic() + limit
    last = (-1, -1)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = (counts["queue:send"], counts["queue:delete"])
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
    overrides = {"AzureWebJobsStorage": storage, "SCAN_SCHEDULE": "0 0 0 1 1 *", "REFRESH_SCHEDULE": "0 0 0 1 1 *",
                 "TOKEN_REFRESH_MAX_AGE_SECONDS": "0", "AGENT_JOIN_LEAD_SECONDS": "5"}
    stack = Stack(devstack_dir=directory, ports=ports, overrides=overrides)
    stack.start(timeout=120)
    try:
        return _measure(Client(stack), counts, args)
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

    results: dict[str, dict[str, int]] = {}
    before = _snapshot(client, counts)
    tokens = [client.token(f"cost-{uuid.uuid4().hex[:8]}", "pro") for _ in range(n)]
    for token in tokens:
        client.connect(token, ALICE)
    _settle(client, counts)
    results["connect (sign-in, claim, first full sync)"] = _delta(_snapshot(client, counts), before)

    def walk(name: str, function: str) -> None:
        before = _snapshot(client, counts)
        client.run_function(function)
        _settle(client, counts)
        results[name] = _delta(_snapshot(client, counts), before)

    walk("scan walk, nothing changed", "scan_calendars")
    client.sim("PATCH", f"/_sim/users/{ALICE}/events/{events[1]['id']}", json={"subject": "Moved agenda"})
    walk("scan walk, one event changed", "scan_calendars")
    walk("refresh walk (every token renewed)", "refresh_tokens")

    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    client.add_event(ALICE, "Deploy me", soon, onlineMeeting={"joinUrl": teams_link(8999)}, isOnlineMeeting=True)
    client.run_function("scan_calendars")
    _settle(client, counts)
    before = _snapshot(client, counts)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([d for d in client.deployments() if "Deploy me" in json.dumps(d)]) < n:
        time.sleep(0.5)
    _settle(client, counts)
    results["deployment (one meeting each)"] = _delta(_snapshot(client, counts), before)
    return {"connections": n, "events": args.events, "idle_polls_per_second": idle_polls_per_s, "runs": results}


def per_connection(run: dict[str, int], n: int, idle_polls: float, seconds: float) -> dict[str, float]:
    """Unit cost of one operation for one connection; the host's idle polling during it is removed."""
    receive = max(run.get("queue:receive", 0) - idle_polls * seconds, 0)
    queue = run.get("queue:send", 0) + run.get("queue:delete", 0) + run.get("queue:other", 0) + receive
    table = sum(v for k, v in run.items() if k.startswith("table:"))
    return {"graph": run.get("graph", 0) / n, "token": run.get("token", 0) / n, "kv_get": run.get("kv_get", 0) / n,
            "kv_set": run.get("kv_set", 0) / n, "queue": queue / n, "table": table / n,
            "executions": run.get("queue:delete", 0) / n}


def day(units: dict[str, dict[str, float]], *, notifications: bool) -> dict[str, float]:
    """One connection-day from unit costs (see the module docstring for the schedule)."""
    scan, changed = units["scan walk, nothing changed"], units["scan walk, one event changed"]
    refresh, deploy = units["refresh walk (every token renewed)"], units["deployment (one meeting each)"]
    changes, meetings, refreshes = 10, 4, 36
    scans = 4 if notifications else 288
    total: dict[str, float] = {}
    for key in scan:
        extra_per_change = max(changed[key] - scan[key], 0)
        value = scans * scan[key] + refreshes * refresh[key] + meetings * deploy[key]
        if notifications:
            value += changes * changed[key]  # one sync per notification
            value += {"graph": 1 / 2.9, "executions": changes + 1 / 2.9}.get(key, 0)  # renewals, notification calls
        else:
            value += changes * extra_per_change
        total[key] = value
    return total


def monthly_cost_per_1000(d: dict[str, float]) -> dict[str, float]:
    month = 30.4 * 1000
    executions = d["executions"] * month
    return {
        "key_vault": (d["kv_get"] + d["kv_set"]) * month / 10_000 * PRICES["key_vault_per_10k"],
        "queues": d["queue"] * month / 10_000 * PRICES["queue_per_10k"],
        "tables": d["table"] * month / 10_000 * PRICES["table_per_10k"],
        "function_executions": executions / 1e6 * PRICES["executions_per_million"],
        "function_time": executions * SECONDS_PER_EXECUTION * INSTANCE_GB * PRICES["gb_second"],
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
    print(f"cost per connection, {n} connections, {measured['events']} events, "
          f"{time.monotonic() - started:.0f} s on the local stack")
    print(f"host idle queue polling: {measured['idle_polls_per_second']:.1f} receives/s (local host; not Azure's)")
    units = {}
    keys = ("graph", "token", "kv_get", "kv_set", "queue", "table", "executions")
    print(f"{'operation, per connection':44}" + "".join(f"{k:>11}" for k in keys))
    for name, raw in measured["runs"].items():
        unit = per_connection(raw, n, 0.0, 0.0)
        units[name] = unit
        print(f"{name:44}" + "".join(f"{unit[k]:11.2f}" for k in keys))
    for notifications in (False, True):
        d = day(units, notifications=notifications)
        label = "with change notifications (modelled)" if notifications else "without notifications"
        print(f"{'connection-day, ' + label:44}" + "".join(f"{d[k]:11.1f}" for k in keys))
        cost = monthly_cost_per_1000(d)
        print("  monthly USD per 1,000 connections: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
              + f"; total {sum(cost.values()):.2f}")
        print(f"  Key Vault secret writes: {d['kv_set']:.1f} per connection-day = "
              f"{d['kv_set'] / 86400:.5f}/s per connection -> the 300-per-10-s create limit (30/s) at "
              f"{30 / (d['kv_set'] / 86400):,.0f} connections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
