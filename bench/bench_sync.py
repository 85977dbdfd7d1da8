"""What does calendar sync cost in Graph requests, and how many connections per second does it sync?
`make bench` runs this.

    python -m bench.bench_sync [--connections 200] [--latency-ms 50] [--workers 24] [--time-limit 60]

Runs the Microsoft simulator in a child process (HTTPS on loopback with the devstack test CA, plus
generated mailboxes; its tokens signed with its own key) and the real `SyncService` + `GraphCalendar`
against it. Meetings, the event index and sync state are the in-memory stores of the domain tests,
so the figures are Graph's share: Table Storage latency is not included.

1. Requests per connection per sync cycle, for one busy calendar: the first (full) sync, a cycle when
   nothing changed, a cycle after one event changed, against a naive reader that re-reads the whole
   calendarView window every cycle (implemented here only, for comparison).
2. Throughput: `--connections` mailboxes, one connection each, synced by `--workers` threads (a
   Functions instance runs batchSize 16 + newBatchThreshold 8 = 24 queue messages at once) with
   `--latency-ms` added to every Graph request, first cold (full sync) then warm (delta, nothing
   changed). The bound is requests x latency / allowed concurrency (min(workers, 4 per mailbox x
   mailboxes)): the best any client could do; the ratio says how close sync comes to it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from devstack.msim import MicrosoftSimulator
from devstack.msim.directory import ACCOUNTS, CONTOSO_TENANT_ID, Account, AppRegistration, Directory
from devstack.msim.tokens import GRAPH_RESOURCE
from devstack.tls import ensure_ca
from shared.adapters.graph import GraphCalendar
from shared.clock import SystemClock
from shared.connections import Connection, ConnectionStatus
from shared.ports import AccessToken, Meeting, Page, SyncJob
from shared.scheduling import sync_window
from shared.services.health import ConnectionHealth
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.sync import SyncReport, SyncService
from tests import fakes

CLIENT_ID = "6f1f5c7e-4a3b-4f7e-9c1d-0c0a9e5b7d21"
WINDOW_DAYS = 14
PAGE_SIZE = 50  # what GraphCalendar asks for (Prefer: odata.maxpagesize); Graph's default is 10


@dataclass
class Mailbox:
    upn: str
    token: str
    connection: Connection


class Partitioned:
    """The domain tests' in-memory stores, one per partition as Table Storage keeps them (meetings by
    user, index entries by connection), so a lookup costs what it would there, not a scan of all rows."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._parts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def part(self, key: str) -> Any:
        with self._lock:
            if key not in self._parts:
                self._parts[key] = self._make()
            return self._parts[key]


class Meetings(Partitioned):
    def __init__(self) -> None:
        super().__init__(fakes.Meetings)

    def get(self, user_id: str, key: str) -> Meeting | None:
        return self.part(user_id).get(user_id, key)  # type: ignore[no-any-return]

    def list_for_user(self, user_id: str, ending_after: datetime) -> list[Meeting]:
        return self.part(user_id).list_for_user(user_id, ending_after)  # type: ignore[no-any-return]

    def create(self, meeting: Meeting) -> Meeting:
        return self.part(meeting.user_id).create(meeting)  # type: ignore[no-any-return]

    def replace(self, meeting: Meeting) -> Meeting:
        return self.part(meeting.user_id).replace(meeting)  # type: ignore[no-any-return]

    def delete(self, meeting: Meeting) -> None:
        self.part(meeting.user_id).delete(meeting)

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        ended = [m for part in list(self._parts.values()) for m in part.rows.values() if m.end < cutoff]
        return fakes.paged(ended, continuation, size, key=lambda m: f"{m.user_id}\x00{m.key}")

    def awaiting_verdict(self, due_before: datetime, ending_after: datetime) -> Iterator[Meeting]:
        for part in list(self._parts.values()):
            yield from part.awaiting_verdict(due_before, ending_after)

    def count(self) -> int:
        return sum(len(p.rows) for p in self._parts.values())

    def titles(self) -> set[str]:
        return {m.title for p in self._parts.values() for m in p.rows.values()}


class Index(Partitioned):
    def __init__(self) -> None:
        super().__init__(fakes.Index)

    def get(self, connection_id: str, event_id: str) -> str | None:
        return self.part(connection_id).get(connection_id, event_id)  # type: ignore[no-any-return]

    def put(self, connection_id: str, event_id: str, user_id: str, meeting_key: str, generation: str) -> None:
        self.part(connection_id).put(connection_id, event_id, user_id, meeting_key, generation)

    def remove(self, connection_id: str, event_id: str) -> None:
        self.part(connection_id).remove(connection_id, event_id)

    def all_for(self, connection_id: str, not_generation: str | None = None) -> dict[str, str]:
        return self.part(connection_id).all_for(connection_id, not_generation)  # type: ignore[no-any-return]


class MintedTokens:
    """Stands in for TokenKeeper: the simulator's key signs a delegated Graph token per mailbox."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = tokens

    def access_token(self, conn: Connection, *, force_refresh: bool = False) -> tuple[Connection, AccessToken]:
        return conn, AccessToken(self._tokens[conn.id], None, None)


def serve_simulator(mailboxes: int, directory: Path) -> None:
    """The child process: the simulator with `mailboxes` generated work accounts. Prints its URL and a
    delegated Graph token per mailbox (signed with its own key) as one JSON line, then serves until
    stdin closes. A separate process, like Graph: the client's threads do not share its GIL."""
    ca = ensure_ca(directory)
    rng = random.Random(5)
    accounts = []
    for i in range(mailboxes):
        oid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        upn = f"bench{i:04d}@contoso.com"
        accounts.append(Account(upn=upn, display_name=f"Bench {i}", given_name="Bench", surname=str(i),
                                tenant_id=CONTOSO_TENANT_ID, object_id=oid, graph_id=oid, mail=upn, kind="work"))
    sim = MicrosoftSimulator(ssl_context=ca.server_context(), apps=[AppRegistration(CLIENT_ID, "bench-secret", [])])
    sim.state.directory = Directory(accounts=(*ACCOUNTS, *accounts))
    sim.state.reset()
    sim.start()
    now = datetime.now(UTC)
    tokens = {}
    for a in accounts:
        claims = {"aud": GRAPH_RESOURCE, "iss": f"https://sts.windows.net/{a.tenant_id}/", "tid": a.tenant_id,
                  "oid": a.object_id, "appid": CLIENT_ID, "scp": "Calendars.Read User.Read",
                  "iat": int(now.timestamp()), "exp": int((now + timedelta(hours=2)).timestamp())}
        tokens[a.upn] = {"token": sim.state.key.sign(claims), "oid": a.object_id}
    print(json.dumps({"base": sim.base_url, "tokens": tokens}), flush=True)
    sys.stdin.read()
    sim.stop()


class Bench:
    def __init__(self, mailboxes: int, directory: Path) -> None:
        self.ca = ensure_ca(directory)
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_sync", "--serve-simulator", str(mailboxes), "--dir", str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.child.stdout is not None
        hello = json.loads(self.child.stdout.readline())
        self.base: str = hello["base"]
        self.admin = self.session(pool=4)
        now = datetime.now(UTC)
        self.mailboxes = [self._mailbox(upn, t["oid"], t["token"], now) for upn, t in sorted(hello["tokens"].items())]

    def session(self, pool: int, counter: list[int] | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify (FACTS.md)
        s.verify = str(self.ca.bundle_pem)
        s.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=pool))
        if counter is not None:
            s.hooks["response"].append(lambda r, *a, **k: counter.append(len(r.content)))
        return s

    @staticmethod
    def _mailbox(upn: str, oid: str, token: str, now: datetime) -> Mailbox:
        conn = Connection(
            id=uuid.uuid4().hex, user_id=f"u-{oid[:8]}", email=upn, home_account_id=f"{oid}.{CONTOSO_TENANT_ID}",
            tenant_id=CONTOSO_TENANT_ID, status=ConnectionStatus.ACTIVE, reason_code=None, secret_name="unused",
            connected_at=now, last_refreshed_at=now, access_expires_at=None,
        )
        return Mailbox(upn, token, conn)

    def fill(self, mailbox: Mailbox, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = self.admin.post(f"{self.base}/_sim/users/{mailbox.upn}/events", json=events, timeout=60)
        resp.raise_for_status()
        created: list[dict[str, Any]] = resp.json()
        return created

    def service(self, pool: int, counter: list[int] | None = None) -> tuple[SyncService, Meetings]:
        connections = fakes.Connections()
        for m in self.mailboxes:
            connections.rows[(m.connection.user_id, m.connection.id)] = m.connection
        meetings = Meetings()
        graph = GraphCalendar(base_url=f"{self.base}/v1.0", session=self.session(pool, counter), timeout=30)
        tokens: Any = MintedTokens({m.connection.id: m.token for m in self.mailboxes})
        jobs = fakes.Jobs()
        lifecycle = MeetingLifecycle(meetings=meetings, connections=connections, rules=fakes.JoinRulesStore(),
                                     jobs=jobs, clock=SystemClock(), grace_seconds=300)
        service = SyncService(
            connections=connections, tokens=tokens, calendar=graph, meetings=meetings, index=Index(),
            sync_state=fakes.SyncStates(), jobs=jobs, clock=SystemClock(), window_days=WINDOW_DAYS,
            full_resync_seconds=86400, lead_seconds=120, lifecycle=lifecycle,
            health=ConnectionHealth(connections=connections, meetings=meetings, events=None, clock=SystemClock()),
        )
        return service, meetings

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.admin.get(f"{self.base}/_sim/stats", timeout=30).json()
        return stats

    def fault(self, spec: dict[str, Any]) -> None:
        self.admin.post(f"{self.base}/_sim/faults", json=spec, timeout=30).raise_for_status()

    def reset(self) -> None:
        self.admin.post(f"{self.base}/_sim/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()


# ---------------------------------------------------------------- calendars
def calendar(rng: random.Random, now: datetime, per_day: int, days: int = WINDOW_DAYS) -> list[dict[str, Any]]:
    """A working calendar: `per_day` meetings on each weekday (most with a Teams or Zoom link, some
    without), plus a weekly recurring Teams meeting."""
    events: list[dict[str, Any]] = []
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(days):
        date = today + timedelta(days=day)
        if date.weekday() >= 5:
            continue
        for slot in rng.sample(range(16, 36), per_day):  # half-hour slots from 08:00 to 18:00
            start = date + timedelta(minutes=30 * slot)
            events.append(_event(rng, start, f"Meeting {len(events)}"))
    weekly = today + timedelta(days=1, hours=9)
    series = _event(rng, weekly, "Weekly team sync", link="teams")
    series["recurrence"] = {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekly.strftime("%A").lower()]},
                            "range": {"type": "noEnd", "startDate": weekly.date().isoformat()}}
    return [*events, series]


def _event(rng: random.Random, start: datetime, subject: str, link: str | None = None) -> dict[str, Any]:
    kind = link or rng.choice(["teams", "teams", "zoom", "none"])
    event: dict[str, Any] = {
        "subject": subject,
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "body": {"contentType": "html", "content": "<p>Agenda: roadmap, budget, owners.</p>" * 20},
        # Someone else is invited: the rules skip the user's own events with nobody else in them.
        "attendees": [{"type": "required", "emailAddress": {"address": "pat@contoso.com"}}],
    }
    if kind == "teams":
        thread = uuid.UUID(int=rng.getrandbits(128)).hex
        event["onlineMeeting"] = {"joinUrl": f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{thread}"
                                             "%40thread.v2/0?context=%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%7d"}
        event["isOnlineMeeting"] = True
    elif kind == "zoom":
        event["location"] = {"displayName": f"https://zoom.us/j/{rng.randrange(10**9, 10**10)}"}
    return event


def naive_read(session: requests.Session, base: str, token: str, now: datetime, page_size: int) -> tuple[int, int]:
    """What sync would cost without delta: the whole calendarView window, every cycle.
    Returns (requests, events read)."""
    window = sync_window(now, WINDOW_DAYS)
    url: str | None = f"{base}/v1.0/me/calendarView"
    params: dict[str, str] | None = {"startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    headers = {"Authorization": f"Bearer {token}",
               "Prefer": f'outlook.timezone="UTC", odata.maxpagesize={page_size}'}
    n = events = 0
    while url:
        resp = session.get(url, headers=headers, params=params, timeout=30)
        resp.raise_for_status()
        n += 1
        body = resp.json()
        events += len(body.get("value", []))
        url, params = body.get("@odata.nextLink"), None
    return n, events


# ---------------------------------------------------------------- the two measurements
@dataclass
class Cycle:
    requests: int
    kib: float


def requests_per_cycle(bench: Bench, per_day: int) -> dict[str, Any]:
    rng = random.Random(7)
    mailbox = bench.mailboxes[0]
    now = datetime.now(UTC)
    created = bench.fill(mailbox, calendar(rng, now, per_day))
    sizes: list[int] = []
    service, meetings = bench.service(pool=4, counter=sizes)
    job = SyncJob(mailbox.connection.user_id, mailbox.connection.id)

    def cycle() -> tuple[SyncReport, Cycle]:
        sizes.clear()
        report = service.sync(job)
        return report, Cycle(report.requests, sum(sizes) / 1024)

    first, full = cycle()
    unchanged, quiet = cycle()
    later = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    target = next(e for e in created if e.get("onlineMeeting") and not e.get("recurrence")
                  and e["start"]["dateTime"] > later)
    resp = bench.admin.patch(f"{bench.base}/_sim/users/{mailbox.upn}/events/{target['id']}",
                             json={"subject": "Renamed"}, timeout=30)
    resp.raise_for_status()
    changed, one = cycle()
    assert first.full and not unchanged.full and not changed.full and changed.upserted == 1, (unchanged, changed)
    assert "Renamed" in meetings.titles()
    naive: dict[int, Cycle] = {}
    in_window = 0
    for page_size in (PAGE_SIZE, 10):
        naive_sizes: list[int] = []
        n, in_window = naive_read(bench.session(1, naive_sizes), bench.base, mailbox.token, now, page_size)
        naive[page_size] = Cycle(n, sum(naive_sizes) / 1024)
    return {"events_in_window": in_window, "meetings": meetings.count(), "full": full, "unchanged": quiet,
            "one_changed": one, "naive": naive}


@dataclass
class Round:
    name: str
    seconds: float
    synced: int
    requests: int
    cpu_seconds: float  # this process (the sync side), all threads


def throughput(bench: Bench, workers: int, latency_ms: int, time_limit: float, pool: int) -> tuple[list[Round], int]:
    bench.reset()
    rng = random.Random(11)
    now = datetime.now(UTC)
    targets = bench.mailboxes[1:]
    for mailbox in targets:
        bench.fill(mailbox, calendar(rng, now, per_day=2))
    service, _ = bench.service(pool=pool)
    bench.fault({"path_prefix": "/v1.0", "latency_ms": latency_ms})
    rounds = [_round(service, targets, name, workers, time_limit)
              for name in ("cold (full sync)", "warm (delta, nothing changed)")]
    top = max(bench.stats()["max_concurrency"].values(), default=0)
    bench.reset()
    return rounds, int(top)


def _round(service: SyncService, targets: Iterable[Mailbox], name: str, workers: int, time_limit: float) -> Round:
    deadline = time.monotonic() + time_limit
    reports: list[SyncReport] = []
    lock = threading.Lock()

    def one(m: Mailbox) -> None:
        if time.monotonic() > deadline:
            return
        report = service.sync(SyncJob(m.connection.user_id, m.connection.id))
        with lock:
            reports.append(report)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, targets))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    bad = [r.outcome for r in reports if r.outcome != "synced"]
    assert not bad, bad
    return Round(name, seconds, len(reports), sum(r.requests for r in reports), cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sync", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--workers", type=int, default=24)
    parser.add_argument("--per-day", type=int, default=8, help="meetings per weekday in the busy calendar")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per throughput round at most")
    parser.add_argument("--serve-simulator", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_simulator:
        serve_simulator(args.serve_simulator, args.dir)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        bench = Bench(args.connections + 1, Path(tmp))
        try:
            _report(bench, args)
        finally:
            bench.stop()
    return 0


def _report(bench: Bench, args: argparse.Namespace) -> None:
    c = requests_per_cycle(bench, args.per_day)
    print(f"Graph requests per connection per sync cycle: busy calendar, {c['events_in_window']} events in the "
          f"{WINDOW_DAYS}-day window ({c['meetings']} with a meeting link)")
    rows = [("first sync (full delta round)", c["full"]), ("nothing changed (delta)", c["unchanged"]),
            ("one event changed (delta)", c["one_changed"]),
            (f"naive calendarView re-read, page {PAGE_SIZE}", c["naive"][PAGE_SIZE]),
            ("naive re-read, Graph's default page 10", c["naive"][10])]
    for label, cyc in rows:
        print(f"  {label:<42} {cyc.requests:>3} requests {cyc.kib:8.1f} KiB")
    for label, key in (("nothing changed", "unchanged"), ("one changed", "one_changed")):
        delta = c[key]
        ratios = ", ".join(f"page {size}: {c['naive'][size].requests / delta.requests:.0f}x requests, "
                           f"{c['naive'][size].kib / delta.kib:.0f}x bytes" for size in (PAGE_SIZE, 10))
        print(f"  naive / delta when {label}: {ratios}")
    print()
    n = args.connections
    allowed = min(args.workers, 4 * n)
    print(f"Throughput: {n} connections (one mailbox each), {args.workers} workers, +{args.latency_ms} ms per "
          f"Graph request; bound = requests x latency / {allowed} concurrent requests; {os.cpu_count()} CPUs "
          "shared with the simulator")
    for pool, label in ((args.workers, f"HTTP pool of {args.workers} (one per worker)"),
                        (10, "requests' default HTTP pool (10)")):
        rounds, top = throughput(bench, args.workers, args.latency_ms, args.time_limit, pool)
        print(f"  {label}; max {top} concurrent requests per mailbox")
        for r in rounds:
            bound = r.requests * args.latency_ms / 1000 / allowed
            print(f"    {r.name:<30} {r.synced:>4} in {r.seconds:5.2f} s = {r.synced / r.seconds:6.1f} conn/s "
                  f"({r.requests / max(r.synced, 1):.2f} req/conn); bound {r.synced / bound:6.1f} conn/s; "
                  f"{bound / r.seconds:4.0%} of bound; sync CPU {1000 * r.cpu_seconds / max(r.synced, 1):.1f} ms/conn")


if __name__ == "__main__":
    sys.exit(main())
