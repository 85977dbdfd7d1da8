"""`make load`: thousands of connections on the local stack at the shipped defaults, with churn.

    python -m bench.load [--connections 300] [--events 12] [--instances 2] [--churn-seconds 120]
                         [--churn-rate 2] [--reconnects 30] [--reauthorizations 150] [--limit 1800]

Starts the whole local stack (Azurite, the Microsoft simulator, the local Key Vault, the agent API
recorder, `--instances` Functions host processes as instances of one Function App) with every app
setting at its shipped default (shared/config.py) except that the timers are run by this script, one
walk at a time, instead of by the clock (their default schedules then set how often a day each walk
counts, as in bench_cost). Storage traffic goes through a counting proxy (one HTTP request to Azurite
= one billed transaction) that runs in a process of its own so its CPU is not the hosts' or this
script's. Then, in phases, each bounded in time and waiting on conditions (never fixed sleeps):

1. seed: `--connections` work mailboxes (`load-00000@contoso.com`, ...) with `--events` events each
   (two weeks ahead, three in four with a Teams link and a guest), in bulk through the simulator's
   `POST /_sim/users` (DEVSTACK.md);
2. connect: one CoAgentor user per mailbox, through the real OAuth flow a browser takes
   (`POST /api/outlook/connect`, the simulator's sign-in page GET and POST, the callback, the claim:
   tests/e2e/client.Client.connect), `--workers` at a time; it waits until every connection has its
   Graph subscription and the queues are empty again (first syncs done);
3. idle: `--idle-seconds` with nothing happening: the hosts' baseline (queue polling, timers' leases);
4. churn, `--churn-seconds` at `--churn-rate` changes a second: meetings created, moved and deleted in
   random mailboxes through the simulator (Graph notifies the subscriptions), plus `--reconnects`
   connections disconnected (`DELETE /api/outlook/connections/{id}`) and connected again through
   OAuth. Each change is followed until `GET /api/meetings/upcoming` of its user shows it (created:
   listed; moved: listed at the new start; deleted: gone): change -> listed;
5. reauthorization: Graph's `reauthorizationRequired` challenge on `--reauthorizations` subscriptions;
6. walks: the safety scan (`scan_calendars`: every connection synced), the refresh walk and the
   subscription renewal walk, each drained before the next.

Queue depth (the sum of every queue's approximate message count, read from Azurite directly, not
counted) is sampled every `--sample-seconds` throughout. Counted per phase: the Functions hosts' CPU
seconds (/proc/<pid>/stat utime + stime), Graph and token-endpoint requests (the simulator's
cumulative counters, `GET /_sim/stats`), notification POSTs, Key Vault operations (the local vault's
counters), queue and table transactions (the proxy). A connection-day is composed from them at the
default schedules: the idle baseline (per instance, a fixed cost) apart; the work = 4 scans (the
measured scan per connection), 24 refresh and 24 renewal walks, 10 changes (the churn's cost per
change, net of the idle baseline, of the reconnects at the connect's unit cost and of the probe
reads at their own measured cost), 19.2 reauthorizations, one full resync (counted as a connect, an
upper bound) and 4 deployments (bench_cost's measured unit, not re-measured here: no meeting starts
during the run). From those: USD per 1,000 connections a month (bench_cost's Flex Consumption model
and prices), and the first limit hit at 10k / 100k / 1M connections. The hosts' peak RSS (VmHWM) is
printed per instance. The last line printed is one JSON object of the figures.

Not part of `make test` at this size (tests/bench runs it with a handful of connections); results in
docs/scale.md ("Load test").
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.bench_cost import (
    DAY,
    KV_OPS,
    VCPU,
    Counting,
    _Forward,
    defaults,
    instance_gb,
    monthly_cost_per_1000,
)
from devstack import polling
from devstack.stack import AZURITE_ACCOUNT, AZURITE_KEY, REPO, Stack, free_port, free_ports
from tests.e2e.client import Client, teams_link

DOMAIN = "contoso.com"
GUEST = [{"type": "required", "emailAddress": {"name": "Pat Kim", "address": "pat@fabrikam.com"},
          "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}}]
# One agent deployment, per meeting: bench_cost's measured unit (docs/scale.md), not re-measured here.
DEPLOYMENT_UNIT = {"graph": 2.0, "token": 0.0, "kv": 0.0, "queue": 1.0, "table": 51.0, "executions": 1.0,
                   "cpu": 0.13}
KEYS = ("graph", "token", "kv", "queue", "table", "executions", "cpu")
# Documented limits (docs/scale.md cites them): per storage account, per app in Graph, Flex Consumption.
STORAGE_TX_PER_S = 20_000
GRAPH_PER_S = 13_000  # 130,000 requests per 10 s per app, all tenants
MAX_INSTANCES = 100  # maximumInstanceCount, infra default
SCAN_INTERVAL_S = 6 * 3600
SCAN_DRAIN_S = 15 * 60  # a safety scan's syncs done within 15 minutes (the scale controller adds instances)


# ---- the counting proxy, in a process of its own ------------------------------------------------

class _CountsForward(_Forward):
    """bench_cost's forwarding handler, plus `GET /_counts` answered by the proxy itself."""

    def _any(self) -> None:
        if self.path == "/_counts":
            with self.server.lock:
                data = json.dumps(dict(self.server.counts)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        super()._any()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _any


class _Backlogged(Counting):
    request_queue_size = 512  # thousands of clients' connections: socketserver's 5 overflows the SYN queue


def _serve_proxies(pairs: list[tuple[int, int, str]]) -> None:
    servers = []
    for port, target, service in pairs:
        server = _Backlogged(port, target, service, Counter())
        server.RequestHandlerClass = _CountsForward
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


def _counts(ports: list[int]) -> Counter[str]:
    total: Counter[str] = Counter()
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/_counts")
        total.update(json.loads(conn.getresponse().read()))
        conn.close()
    return total


# ---- measuring -----------------------------------------------------------------------------------

def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Meter:
    stack: Stack
    client: Client
    proxy_ports: list[int]
    proxy_pid: int

    def host_pids(self) -> list[int]:
        return [p.pid for p in getattr(self.stack, "_hosts", [])]

    def snapshot(self) -> dict[str, float]:
        stats = self.client.sim("GET", "/_sim/stats").json()
        kv = self.client.api.get(f"{self.stack.key_vault_url}/_kv/stats", verify=str(self.stack.ca.bundle_pem),  # type: ignore[union-attr]
                                 timeout=30).json()
        counts = _counts(self.proxy_ports)
        azurite = [p.pid for n, p in getattr(self.stack, "_procs", []) if n == "azurite"]
        return {
            "graph": stats["graph_requests"], "token": stats["token_requests"], "http": stats["notification_posts"],
            "kv": sum(kv.get(k, 0) for k in KV_OPS),
            "queue": counts["queue:send"] + counts["queue:delete"] + counts["queue:other"],
            "queue_receive": counts["queue:receive"],
            "table": sum(v for k, v in counts.items() if k.startswith("table:")),
            "executions": counts["queue:delete"] + stats["notification_posts"],
            "cpu": sum(_proc_cpu(p) for p in self.host_pids()),
            "cpu_rest": _proc_cpu(os.getpid()) + _proc_cpu(self.proxy_pid) + sum(_proc_cpu(p) for p in azurite),
            "t": time.monotonic(),
        }


def meeting_rows(stack: Stack) -> int:
    """Rows in the meetings table (read from Azurite directly, not counted)."""
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    return sum(1 for _ in service.get_table_client("meetings").list_entities(select=["PartitionKey"]))


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after}


class Depth:
    """Samples the queues from Azurite directly (not counted): every queue's approximate message count
    (Azure's ApproximateMessagesCount: visible, in flight and scheduled for later, such as agent
    deployments waiting for their meeting) and whether any message is visible (due now, not taken)."""

    def __init__(self, connection_string: str, every: float, proxy_ports: list[int]) -> None:
        from azure.storage.queue import QueueServiceClient

        self.service = QueueServiceClient.from_connection_string(connection_string)
        self.every = every
        self.proxy_ports = proxy_ports
        self.samples: list[tuple[float, str, int, int]] = []  # (seconds, phase, messages, visible up to 32 a queue)
        self.phase = "start"
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-depth", daemon=True)

    def now(self) -> tuple[int, int]:
        total = visible = 0
        for q in self.service.list_queues():
            queue = self.service.get_queue_client(q.name)
            total += int(queue.get_queue_properties().approximate_message_count or 0)
            visible += len(queue.peek_messages(max_messages=32))
        return total, visible

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                total, visible = self.now()
            except Exception:  # a sample missed is a gap in the series, not a failure
                continue
            self.samples.append((time.monotonic() - self.began, self.phase, total, visible))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def drained(self, quiet: float, limit: float, what: str) -> float:
        """Wait until no message is visible and none is sent or completed for `quiet` seconds (the work
        due now is done; messages scheduled for later stay); the seconds it took until then."""
        began = time.monotonic()
        still_since: float | None = None
        last: tuple[int, int] | None = None
        while time.monotonic() - began < limit:
            counts = _counts(self.proxy_ports)
            moved = (counts["queue:send"], counts["queue:delete"])
            if self.now()[1] == 0 and moved == last:
                still_since = still_since or time.monotonic()
                if time.monotonic() - still_since >= quiet:
                    return still_since - began
            else:
                still_since = None
            last = moved
            time.sleep(0.5)
        raise SystemExit(f"load: {what}: the queues did not drain within {limit:.0f} s")


# ---- the run -------------------------------------------------------------------------------------

def upn(i: int) -> str:
    return f"load-{i:05d}@{DOMAIN}"


def _start_of(start: datetime) -> dict[str, str]:
    return {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def meeting(title: str, start: datetime, link: int | None) -> dict[str, Any]:
    event: dict[str, Any] = {"subject": title, "start": _start_of(start),
                             "end": _start_of(start + timedelta(minutes=30)), "attendees": GUEST,
                             "body": {"contentType": "html", "content": "<p>Agenda</p>" * 10}}
    if link is not None:
        event |= {"onlineMeeting": {"joinUrl": teams_link(link)}, "isOnlineMeeting": True}
    return event


@dataclass
class Mailbox:
    index: int
    token: str = ""
    connection: str = ""
    listed: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # sim event id -> (title, start)
    busy: bool = False


@dataclass
class Run:
    args: argparse.Namespace
    stack: Stack
    meter: Meter
    depth: Depth
    mailboxes: list[Mailbox]
    local: threading.local = field(default_factory=threading.local)
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    unlisted: int = 0
    reconnect_seconds: list[float] = field(default_factory=list)
    connect_seconds: list[float] = field(default_factory=list)
    connect_retries: int = 0
    timeouts: int = 0  # the load test's own API calls that took over 30 s (each tried again)
    probes: int = 0
    notes: list[str] = field(default_factory=list)

    def client(self) -> Client:
        if not hasattr(self.local, "client"):
            self.local.client = Client(self.stack)
        c: Client = self.local.client
        return c


def seed(run: Run, now: datetime) -> int:
    n, per = run.args.connections, run.args.events
    span = timedelta(days=13)
    total = 0
    batch = max(1, min(500, 15_000 // max(per, 1)))
    for first in range(0, n, batch):
        accounts = []
        for i in range(first, min(n, first + batch)):
            box = run.mailboxes[i]
            events = []
            for j in range(per):
                start = (now + timedelta(hours=3) + span * (j + random.random() * 0.5) / per).replace(second=0)
                linked = j % 4 != 3
                eid = f"LOAD{i:05d}E{j:04d}"
                title = f"L{i} M{j}"
                events.append({"id": eid, **meeting(title, start, i * 1000 + j if linked else None)})
                if linked:
                    box.listed[eid] = (title, start)
            accounts.append({"upn": upn(i), "events": events})
        resp = run.client().sim("POST", "/_sim/users", json={"accounts": accounts})
        if resp.status_code != 201:
            raise SystemExit(f"load: seeding failed: {resp.status_code} {resp.text[:300]}")
        total += resp.json()["events"]
    return total


CONNECT_TRIES = 3


def oauth(run: Run, box: Mailbox) -> None:
    """The whole OAuth flow, again from the start (as a person would) when a call of it times out
    (30 s); at most CONNECT_TRIES times."""
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            box.connection = run.client().connect(box.token, upn(box.index))["connection"]["id"]
            return
        except requests.Timeout:
            with run.lock:
                run.connect_retries += 1
            if attempt == CONNECT_TRIES:
                raise


def connect_one(run: Run, box: Mailbox, user: str) -> float:
    """Connect one mailbox; the seconds it took, retries included."""
    began = time.monotonic()
    box.token = run.client().token(user, "pro")
    oauth(run, box)
    return time.monotonic() - began


def subscribed(run: Run) -> int:
    return len(run.client().sim("GET", "/_sim/subscriptions").json())


def until(what: str, probe: Any, limit: float, every: float = 1.0) -> Any:
    return polling.until(f"load: {what}", probe, limit, every, error=SystemExit)


def listed(run: Run, box: Mailbox) -> dict[str, datetime] | None:
    """The user's Upcoming Meetings, title -> start; None when the read timed out (30 s: counted)."""
    with run.lock:
        run.probes += 1
    try:
        got = run.client().upcoming(box.token)
    except requests.Timeout:
        with run.lock:
            run.timeouts += 1
        return None
    return {m["title"]: datetime.fromisoformat(m["start"].replace("Z", "+00:00")) for m in got}


def wait_listed(run: Run, box: Mailbox, seen: Callable[[dict[str, datetime]], bool], since: float,
                into: list[float]) -> None:
    """Poll the user's list until `seen` holds: the seconds since `since` go to `into`; past the run's
    `--listed-limit`, the change counts as unlisted."""
    deadline = since + run.args.listed_limit
    while time.monotonic() < deadline:
        got = listed(run, box)
        if got is not None and seen(got):
            with run.lock:
                into.append(time.monotonic() - since)
            return
        time.sleep(run.args.probe_seconds)
    with run.lock:
        run.unlisted += 1


def take_idle(run: Run, rng: random.Random) -> Mailbox | None:
    """A random connected mailbox no other worker is using, marked busy (the caller frees it)."""
    with run.lock:
        idle = [b for b in run.mailboxes if not b.busy and b.token]
        if not idle:
            return None
        box = rng.choice(idle)
        box.busy = True
        return box


def change(run: Run, rng: random.Random, serial: int) -> None:
    """One calendar change in a random idle mailbox, followed until its user's list shows it."""
    box = take_idle(run, rng)
    if box is None:
        return
    try:
        client, who = run.client(), upn(box.index)
        roll = rng.random()
        now = datetime.now(UTC).replace(microsecond=0)
        new_start = (now + timedelta(hours=3, minutes=rng.randrange(0, 10 * 24 * 60))).replace(second=0)
        if roll < 0.4 or not box.listed:
            title = f"L{box.index} new {serial}"
            made = client.sim("POST", f"/_sim/users/{who}/events", json=meeting(title, new_start, 5_000_000 + serial))
            made.raise_for_status()
            changed = time.monotonic()
            box.listed[made.json()["id"]] = (title, new_start)
            seen: Callable[[dict[str, datetime]], bool] = lambda got: got.get(title) == new_start  # noqa: E731
        elif roll < 0.8:
            eid = rng.choice(list(box.listed))
            title = box.listed[eid][0]
            client.sim("PATCH", f"/_sim/users/{who}/events/{eid}", json={
                "start": _start_of(new_start), "end": _start_of(new_start + timedelta(minutes=30))}).raise_for_status()
            changed = time.monotonic()
            box.listed[eid] = (title, new_start)
            seen = lambda got: got.get(title) == new_start  # noqa: E731
        else:
            eid = rng.choice(list(box.listed))
            title = box.listed.pop(eid)[0]
            client.sim("DELETE", f"/_sim/users/{who}/events/{eid}").raise_for_status()
            changed = time.monotonic()
            seen = lambda got: title not in got  # noqa: E731
        wait_listed(run, box, seen, changed, run.latencies)
    finally:
        box.busy = False


def reconnect(run: Run, rng: random.Random) -> None:
    """Disconnect one idle connection and connect it again through OAuth; timed until its meetings
    are listed again."""
    box = take_idle(run, rng)
    if box is None:
        return
    try:
        began = time.monotonic()
        client = run.client()
        for attempt in range(1, CONNECT_TRIES + 1):  # pressed again after a timeout; a repeat finds it gone
            try:
                gone = client.call("DELETE", f"outlook/connections/{box.connection}", box.token)
            except requests.Timeout:
                with run.lock:
                    run.timeouts += 1
                if attempt == CONNECT_TRIES:
                    raise
                continue
            if gone.status_code == 204 or (gone.status_code == 404 and attempt > 1):
                break
            raise SystemExit(f"load: disconnect answered {gone.status_code} {gone.text[:200]}")
        oauth(run, box)
        want = {title for title, _ in box.listed.values()}
        wait_listed(run, box, lambda got: want <= set(got), began, run.reconnect_seconds)
    finally:
        box.busy = False


def churn(run: Run) -> dict[str, int]:
    """Changes at `--churn-rate` a second and the reconnects spread over `--churn-seconds`."""
    args = run.args
    rng = random.Random(7)
    total = max(1, round(args.churn_seconds * args.churn_rate))
    reconnects = min(args.reconnects, len(run.mailboxes) // 2)
    plan = ["change"] * total + ["reconnect"] * reconnects
    rng.shuffle(plan)
    began = time.monotonic()
    spacing = args.churn_seconds / len(plan)
    workers = max(4, math.ceil(args.churn_rate * 8))
    pool = ThreadPoolExecutor(workers)
    try:
        futures = []
        for serial, kind in enumerate(plan):
            due = began + serial * spacing
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the load generator, not waiting for an outcome
            futures.append(pool.submit(change, run, random.Random(serial), serial) if kind == "change"
                           else pool.submit(reconnect, run, random.Random(serial)))
        for f in futures:
            f.result(timeout=args.listed_limit * 3)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return {"changes": total, "reconnects": reconnects}


def reauthorize(run: Run, count: int) -> set[str]:
    """Graph's challenge on `count` subscriptions (their notifications pause until reauthorized)."""
    subs = run.client().sim("GET", "/_sim/subscriptions").json()
    chosen = random.Random(11).sample(subs, min(count, len(subs)))
    for sub in chosen:
        run.client().sim("POST", f"/_sim/subscriptions/{sub['id']}/lifecycle",
                         json={"lifecycleEvent": "reauthorizationRequired"}).raise_for_status()
    return {s["id"] for s in chosen}


def still_paused(run: Run, ids: set[str]) -> int:
    return sum(1 for s in run.client().sim("GET", "/_sim/subscriptions").json() if s["id"] in ids and s.get("paused"))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    ports = free_ports()
    proxy_queue, proxy_table = free_port(), free_port()
    pairs = [(proxy_queue, ports["AZURITE_QUEUE_PORT"], "queue"), (proxy_table, ports["AZURITE_TABLE_PORT"], "table")]
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "proxy.log", "ab") as log:
        code = f"from bench.load import _serve_proxies; _serve_proxies({pairs!r})"
        proxy = subprocess.Popen([sys.executable, "-c", code], cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
    storage = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{ports['AZURITE_BLOB_PORT']}/{AZURITE_ACCOUNT};"
               f"QueueEndpoint=http://127.0.0.1:{proxy_queue}/{AZURITE_ACCOUNT};"
               f"TableEndpoint=http://127.0.0.1:{proxy_table}/{AZURITE_ACCOUNT};")
    never = "0 0 0 1 1 *"  # the script runs each walk itself, once; the defaults say how often a day
    overrides = {"AzureWebJobsStorage": storage, "SCAN_SCHEDULE": never, "REFRESH_SCHEDULE": never,
                 "RENEW_SCHEDULE": never, "RECONCILE_SCHEDULE": never, "PRUNE_SCHEDULE": never}
    stack = Stack(devstack_dir=directory, ports=ports, overrides=overrides,
                  extra_host_ports=[free_port() for _ in range(args.instances - 1)])
    started = time.monotonic()
    stack.start(timeout=180)
    depth = None
    try:
        direct = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"QueueEndpoint=http://127.0.0.1:{ports['AZURITE_QUEUE_PORT']}/{AZURITE_ACCOUNT};")
        depth = Depth(direct, args.sample_seconds, [proxy_queue, proxy_table])
        meter = Meter(stack, Client(stack), [proxy_queue, proxy_table], proxy.pid)
        run = Run(args, stack, meter, depth, [Mailbox(i) for i in range(args.connections)])
        depth.start()
        return _phases(run, started)
    finally:
        if depth is not None:
            depth.stop()
        stack.stop()
        proxy.terminate()
        proxy.wait(10)


def _phases(run: Run, started: float) -> dict[str, Any]:
    args, meter, depth = run.args, run.meter, run.depth
    n = args.connections
    phases: dict[str, dict[str, float]] = {}
    hard = started + args.limit

    def left() -> float:
        remaining: float = hard - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"load: the run passed its bound of {args.limit:.0f} s")
        return remaining

    depth.phase = "seed"
    events = seed(run, datetime.now(UTC).replace(microsecond=0))
    print(f"load: {n} mailboxes seeded with {events} events", flush=True)

    depth.phase = "connect"
    before = meter.snapshot()
    tag = uuid.uuid4().hex[:6]
    pool = ThreadPoolExecutor(args.workers)
    try:
        futures = [pool.submit(connect_one, run, box, f"load-{tag}-{box.index}") for box in run.mailboxes]
        for i, f in enumerate(futures, 1):
            run.connect_seconds.append(f.result(timeout=left()))
            if i % max(1, n // 10) == 0:
                print(f"load: {i} of {n} connected ({time.monotonic() - before['t']:.0f} s)", flush=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # interrupted or failed: the rest are not started
    until("every connection's Graph subscription", lambda: subscribed(run) >= n, left(), 2.0)
    depth.drained(args.quiet, left(), "the first syncs")
    phases["connect"] = _delta(meter.snapshot(), before)
    rss_connected = {p: _peak_rss_mb(p) for p in meter.host_pids()}
    print(f"load: {n} connected and subscribed in {phases['connect']['t']:.0f} s", flush=True)

    depth.phase = "idle"
    before = meter.snapshot()
    time.sleep(args.idle_seconds)  # the window measured is a span of time: nothing to wait for
    phases["idle"] = _delta(meter.snapshot(), before)

    depth.phase = "probe"  # the load test's own reads, so the churn can be counted net of them
    before = meter.snapshot()
    sample = run.mailboxes[: min(n, args.probe_calibration)]
    for box in sample:
        run.client().upcoming(box.token)
    phases["probe"] = _delta(meter.snapshot(), before)
    phases["probe"]["count"] = len(sample)

    depth.phase = "churn"
    before = meter.snapshot()
    probes_before = run.probes
    done = churn(run)
    depth.drained(args.quiet, left(), "the churn")
    phases["churn"] = _delta(meter.snapshot(), before)
    phases["churn"] |= {"changes": done["changes"], "reconnects": done["reconnects"],
                        "probes": run.probes - probes_before}
    print(f"load: churn done: {done['changes']} changes, {done['reconnects']} reconnects, "
          f"p95 change -> listed {pct(run.latencies, 0.95):.1f} s", flush=True)

    depth.phase = "reconnect"  # the reconnect's own cost, so the churn's changes can be counted net of them
    before = meter.snapshot()
    probes_before = run.probes
    alone = min(args.reconnects, 10, n // 2)
    with ThreadPoolExecutor(max(1, min(alone, 5))) as pool:
        for done_one in [pool.submit(reconnect, run, random.Random(1000 + i)) for i in range(alone)]:
            done_one.result(timeout=left())
    depth.drained(args.quiet, left(), "the reconnects")
    phases["reconnect"] = _delta(meter.snapshot(), before) | {"count": alone, "probes": run.probes - probes_before}

    depth.phase = "reauthorization"
    before = meter.snapshot()
    challenged = reauthorize(run, args.reauthorizations)
    until("every challenged subscription reauthorized", lambda: still_paused(run, challenged) == 0, left(), 1.0)
    depth.drained(args.quiet, left(), "the reauthorizations")
    phases["reauthorization"] = _delta(meter.snapshot(), before) | {"count": len(challenged)}

    drain: dict[str, float] = {}
    for walk, name in (("scan_calendars", "scan"), ("refresh_tokens", "refresh walk"),
                       ("renew_subscriptions", "renew walk")):
        depth.phase = name
        before = meter.snapshot()
        run.client().run_function(walk)
        drain[name] = depth.drained(args.quiet, left(), name)
        phases[name] = _delta(meter.snapshot(), before)
        print(f"load: {name} drained in {drain[name]:.0f} s", flush=True)

    peak = {p: _peak_rss_mb(p) for p in meter.host_pids()}
    return {"meeting_rows": meeting_rows(run.stack), "connections": n, "events": events, "phases": phases,
            "drain_seconds": drain,
            "latencies": run.latencies, "unlisted": run.unlisted, "reconnect_seconds": run.reconnect_seconds,
            "connect_seconds": run.connect_seconds, "connect_retries": run.connect_retries,
            "timeouts": run.timeouts, "depth": depth.samples,
            "peak_rss_mb": list(peak.values()), "rss_after_connect_mb": list(rss_connected.values()),
            "restarts": run.stack.restarts, "seconds": time.monotonic() - started}


# ---- composing a connection-day ------------------------------------------------------------------

def units(m: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-connection (or per-operation) unit costs from the phases, net of the idle baseline."""
    p, n = m["phases"], m["connections"]
    idle = p["idle"]
    rate = {k: idle[k] / idle["t"] for k in KEYS}  # the baseline per second (polling, leases)

    def net(phase: dict[str, float], per: float) -> dict[str, float]:
        return {k: max(0.0, phase[k] - rate[k] * phase["t"]) / max(per, 1) for k in KEYS}

    connect = net(p["connect"], n)
    probe = net(p["probe"], p["probe"]["count"])
    # A reconnect's own cost (its phase had no churn), net of the reads that waited for its listing.
    again = p["reconnect"]
    reconnect = {k: max(0.0, again[k] - rate[k] * again["t"] - again.get("probes", 0) * probe[k])
                 / max(again["count"], 1) for k in KEYS} if again["count"] else connect
    churn = p["churn"]
    # The churn's reconnects are taken off at the connect's unit (measured on its own, with nothing else
    # running): a reconnect also removes the old connection's rows, so what is left for a change is
    # an upper bound (the reconnect phase, right after the churn, is not clean enough to subtract).
    change = {k: max(0.0, churn[k] - rate[k] * churn["t"] - churn["reconnects"] * connect[k]
                     - churn["probes"] * probe[k]) / max(churn["changes"], 1) for k in KEYS}
    return {"baseline_per_s": rate, "connect": connect, "probe": probe, "change": change, "reconnect": reconnect,
            "reauthorization": net(p["reauthorization"], p["reauthorization"]["count"]),
            "scan": net(p["scan"], n), "refresh walk": net(p["refresh walk"], n),
            "renew walk": net(p["renew walk"], n)}


def connection_day(u: dict[str, dict[str, float]]) -> dict[str, float]:
    schedule = defaults()
    return {k: (schedule["scans"] * u["scan"][k] + schedule["refresh_walks"] * u["refresh walk"][k]
                + schedule["renew_walks"] * u["renew walk"][k] + DAY["changes"] * u["change"][k]
                + DAY["reauthorizations"] * u["reauthorization"][k] + schedule["full_resyncs"] * u["connect"][k]
                + DAY["meetings"] * DEPLOYMENT_UNIT[k]) for k in KEYS}


def limits(d: dict[str, float], u: dict[str, dict[str, float]], instance_cpu: float) -> list[dict[str, Any]]:
    """At 10k / 100k / 1M connections: each resource's use against its limit, and the first one reached.
    Steady rates are the connection-day's spread over the day. The safety scan is a burst (every
    connection's sync queued at once, every 6 hours): assumed drained in SCAN_DRAIN_S by as many
    instances of `instance_cpu` cores as that takes at the scan's measured CPU per connection (at most
    MAX_INSTANCES; CPU-bound, Azure's latencies overlapping on 16 concurrent executions per instance),
    each instance making the scan's storage transactions at that pace. (The deployment watchdog reads
    a due-time index, `meetingsdue`, not every meeting: it does not grow with connections.)"""
    out: list[dict[str, Any]] = []
    for size in (10_000, 100_000, 1_000_000):
        storage = (d["table"] + d["queue"]) * size / 86_400
        cpu = size * u["scan"]["cpu"]
        instances = min(MAX_INSTANCES, max(1, math.ceil(cpu / (SCAN_DRAIN_S * instance_cpu))))
        scan_seconds = cpu / (instances * instance_cpu)
        scan_burst = (u["scan"]["table"] + u["scan"]["queue"]) * size / max(scan_seconds, 1.0)
        use = {
            "storage account transactions/s (steady)": (storage, STORAGE_TX_PER_S),
            "storage account transactions/s (safety scan burst)": (scan_burst, STORAGE_TX_PER_S),
            "Graph requests/s per app": (d["graph"] * size / 86_400, GRAPH_PER_S),
            "vCPU busy (instances x vCPU)": (d["cpu"] * size / 86_400, MAX_INSTANCES * instance_cpu),
            "safety scan drained within its 6 h": (scan_seconds, SCAN_INTERVAL_S),
        }
        worst = max(use, key=lambda k: use[k][0] / use[k][1])
        out.append({"connections": size, "use": {k: round(v / lim, 4) for k, (v, lim) in use.items()},
                    "first": worst, "share": round(use[worst][0] / use[worst][1], 4),
                    "storage_tx_per_s": round(storage), "scan_seconds": round(scan_seconds),
                    "scan_instances": instances, "scan_burst_tx_per_s": round(scan_burst)})
    return out


FIXES = {
    "storage account transactions/s (steady)": "shard by connection id over storage accounts (sealed secrets and "
                                               "per-connection tables keyed by connection)",
    "storage account transactions/s (safety scan burst)": "spread the safety scan over its 6 hours (enqueue with "
                                                          "visibility delays, as the refresh walk paces itself)",
    "Graph requests/s per app": "pace the safety scan over its 6 h; honour 429 Retry-After per mailbox",
    "vCPU busy (instances x vCPU)": "raise maximumInstanceCount or instance memory (more vCPU per instance)",
    "safety scan drained within its 6 h": "more instances, or a scan spread over its interval",
}


def rows_note(m: dict[str, Any]) -> str:
    return f"{m.get('meeting_rows', 0) / max(m['connections'], 1):.1f} per connection"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--events", type=int, default=12, help="events per mailbox")
    parser.add_argument("--instances", type=int, default=2, help="Functions host processes")
    parser.add_argument("--workers", type=int, default=8, help="connections made at a time")
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--churn-seconds", type=float, default=120)
    parser.add_argument("--churn-rate", type=float, default=2.0, help="calendar changes a second")
    parser.add_argument("--reconnects", type=int, default=30)
    parser.add_argument("--reauthorizations", type=int, default=150)
    parser.add_argument("--probe-calibration", type=int, default=100, help="reads timed to count the probes' cost")
    parser.add_argument("--probe-seconds", type=float, default=0.5, help="how often a change's user list is read")
    parser.add_argument("--listed-limit", type=float, default=300, help="seconds: not listed by then = unlisted")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="queue depth sampling period")
    parser.add_argument("--quiet", type=float, default=4.0, help="seconds of empty queues that mean drained")
    parser.add_argument("--limit", type=float, default=1800, help="the whole run's bound, seconds")
    parser.add_argument("--save", type=Path, help="also write the raw measurements to this JSON file")
    parser.add_argument("--from", dest="source", type=Path, help="report on raw measurements saved by --save")
    args = parser.parse_args(argv)
    if args.connections < 2 or args.instances < 1:
        parser.error("--connections must be at least 2 and --instances at least 1")
    if args.source:
        m = json.loads(args.source.read_text())
        vars(args).update(m.get("args", {}))
        return report(m, args)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        m = measure(args, Path(tmp))
    if args.save:
        args.save.write_text(json.dumps(m | {"args": {k: v for k, v in vars(args).items()
                                                      if isinstance(v, int | float | str)}}))
    return report(m, args)


def report(m: dict[str, Any], args: argparse.Namespace) -> int:
    n = m["connections"]
    u = units(m)
    d = connection_day(u)
    memory = instance_gb()
    instance_cpu = VCPU.get(round(memory * 1000), 1.0)
    cpu_per_execution = d["cpu"] / max(d["executions"], 1e-9)  # on one core; the model scales it by VCPU
    cost = monthly_cost_per_1000(d, cpu_per_execution, memory)
    cost512 = sum(monthly_cost_per_1000(d, cpu_per_execution, 0.512).values())
    cost2048 = sum(monthly_cost_per_1000(d, cpu_per_execution, 2.048).values())
    total = sum(cost.values())
    baseline_cpu_day = u["baseline_per_s"]["cpu"] * 86_400 / max(len(m["peak_rss_mb"]), 1)
    p95, p50 = pct(m["latencies"], 0.95), pct(m["latencies"], 0.5)
    series = m["depth"]
    by_phase: dict[str, dict[str, int]] = {}
    for _, phase, messages, visible in series:
        row = by_phase.setdefault(phase, {"start": messages, "max": messages, "above_start": 0, "visible": 0})
        row["max"] = max(row["max"], messages)
        row["above_start"] = max(row["above_start"], messages - row["start"])
        row["visible"] = max(row["visible"], visible)
    final = series[-1][2] if series else 0
    print(f"\nload test: {n} connections, {m['events']} events in their mailboxes, {len(m['peak_rss_mb'])} host "
          f"instances, {m['seconds']:.0f} s ({m['restarts']} host restarts)")
    print(f"connect (real OAuth flow, {args.workers} at a time): p50 {pct(m['connect_seconds'], 0.5):.2f} s, "
          f"p95 {pct(m['connect_seconds'], 0.95):.2f} s each; all {n} in {m['phases']['connect']['t']:.0f} s "
          f"(first syncs and subscriptions included); flows started again after a 30 s timeout: "
          f"{m.get('connect_retries', 0)}")
    print(f"change -> listed under load ({len(m['latencies'])} changes at {args.churn_rate:g}/s): p50 {p50:.1f} s, "
          f"p95 {p95:.1f} s, max {max(m['latencies'], default=float('nan')):.1f} s; not listed within "
          f"{args.listed_limit:.0f} s: {m['unlisted']}")
    print(f"API calls of the load test that took over 30 s (tried again): {m.get('timeouts', 0)}")
    print(f"reconnect -> listed again ({len(m['reconnect_seconds'])}): p95 {pct(m['reconnect_seconds'], 0.95):.1f} s")
    print("queue depth (messages in all queues, scheduled ones included) by phase: max / most above the phase's "
          "start / most visible (due, not taken; counted up to 32 a queue): "
          + ", ".join(f"{k} {v['max']}/{v['above_start']}/{v['visible']}" for k, v in by_phase.items())
          + f"; at the end {final} (agent deployments and follow-ups scheduled for later)")
    step = max(1, len(series) // 40)
    print("queue depth over time (s: messages/visible): "
          + " ".join(f"{t:.0f}:{v}/{w}" for t, _, v, w in series[::step]))
    print("walks drained in: " + ", ".join(f"{k} {v:.0f} s" for k, v in m["drain_seconds"].items())
          + f" (scan: {n / max(m['drain_seconds']['scan'], 1e-9):.1f} syncs/s)")
    print(f"{'unit, per connection or operation':36}" + "".join(f"{k:>11}" for k in KEYS))
    for name in ("connect", "reconnect", "change", "reauthorization", "scan", "refresh walk", "renew walk", "probe"):
        print(f"{name:36}" + "".join(f"{u[name][k]:11.3f}" for k in KEYS))
    print(f"{'connection-day at the defaults':36}" + "".join(f"{d[k]:11.2f}" for k in KEYS))
    print(f"baseline (idle, per instance): {baseline_cpu_day:.0f} CPU s a day, "
          f"{u['baseline_per_s']['queue'] + m['phases']['idle']['queue_receive'] / m['phases']['idle']['t']:.1f} "
          "queue requests/s (polling)")
    print(f"meetings table: {m.get('meeting_rows', 0)} rows ({rows_note(m)})")
    print(f"host peak RSS per instance: {', '.join(f'{r:.0f} MB' for r in m['peak_rss_mb'])} "
          f"(after connecting: {', '.join(f'{r:.0f} MB' for r in m['rss_after_connect_mb'])})")
    print(f"USD per 1,000 connections a month at 10,000 connections, {memory * 1000:.0f} MB instances: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cost.items())
          + f"; total {total:.2f} (512 MB: {cost512:.2f}, 2,048 MB: {cost2048:.2f})")
    rows = m.get("meeting_rows", 0) / max(n, 1)
    found = limits(d, u, instance_cpu)
    for at in found:
        print(f"at {at['connections']:>9,} connections: nearest limit {at['first']} at {at['share'] * 100:.1f} % "
              f"of it ({', '.join(f'{k} {v * 100:.1f} %' for k, v in at['use'].items())}); safety scan on "
              f"{at['scan_instances']} instances for {at['scan_seconds']} s at {at['scan_burst_tx_per_s']:,} storage "
              f"transactions/s; fix: {FIXES[at['first']]}")
    print(json.dumps({
        "connections": n, "events": m["events"], "instances": len(m["peak_rss_mb"]),
        "cpu_seconds_per_connection_day": round(d["cpu"], 3),
        "baseline_cpu_seconds_per_instance_day": round(baseline_cpu_day, 1),
        "p95_change_to_listed_seconds": round(p95, 2), "p50_change_to_listed_seconds": round(p50, 2),
        "changes": len(m["latencies"]), "unlisted": m["unlisted"],
        "connect_retries": m.get("connect_retries", 0), "api_timeouts": m.get("timeouts", 0),
        "queue_depth_max": max((v for _, _, v, _ in series), default=0), "queue_depth_end": final,
        "queue_visible_max": max((w for _, _, _, w in series), default=0),
        "queue_depth_max_by_phase": by_phase,
        "graph_requests_per_connection_day": round(d["graph"], 1),
        "token_requests_per_connection_day": round(d["token"], 1),
        "key_vault_ops_per_connection_day": round(d["kv"], 4),
        "storage_transactions_per_connection_day": round(d["table"] + d["queue"], 1),
        "table_transactions_per_connection_day": round(d["table"], 1),
        "queue_transactions_per_connection_day": round(d["queue"], 1),
        "executions_per_connection_day": round(d["executions"], 1),
        "peak_rss_mb": round(max(m["peak_rss_mb"], default=0.0), 1),
        "usd_per_1000_connections_month": round(total, 2), "usd_per_1000_connections_month_512mb": round(cost512, 2),
        "usd_per_1000_connections_month_2048mb": round(cost2048, 2),
        "instance_memory_mb": round(memory * 1000),
        "meeting_rows_per_connection": round(rows, 2),
        "scan_syncs_per_second": round(n / max(m["drain_seconds"]["scan"], 1e-9), 2),
        "first_limit": {str(r["connections"]): {"limit": r["first"], "share": r["share"],
                                                "scan_burst_tx_per_s": r["scan_burst_tx_per_s"]} for r in found},
        "seconds": round(m["seconds"]), "defaults": True,
    }))
    return 0 if m["unlisted"] == 0 and m["latencies"] else 1


if __name__ == "__main__":
    sys.exit(main())
