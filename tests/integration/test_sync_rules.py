"""Calendar sync and agent scheduling rules, proved against the real parts: the services as
`shared.wiring.build` assembles them, on Azurite (tables), the Microsoft simulator (sign-in, Graph
calendarView/delta), the Key Vault endpoint and the agent API recorder — with a clock the test moves.

Deploy and sync messages are kept by the test (the running host must not take them) together with
the moment their visibility delay ends on the test's clock, and delivered when that moment comes, as
the queue would; poison records go to the real `agent-deployments-poison` queue. Where the queue and
host semantics themselves matter, tests/e2e/test_scheduling.py drives the running host instead.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from devstack.stack import Stack
from shared.clock import FixedClock
from shared.config import load_settings
from shared.connections import Connection, Plan
from shared.platform_auth import User
from shared.ports import DeployJob, ProgressJob, RefreshJob, SyncJob
from shared.scheduling import sync_window
from shared.services.accounts import ConnectionUnusable
from shared.services.meetings import upcoming
from shared.services.sync import SyncReport
from shared.triggers.views import meeting_view
from shared.wiring import Container, build
from tests.e2e.client import Client, teams_link

LEAD = 120
GRACE = 300
RETRY = 15
ALICE, DAVE = "alice@contoso.com", "dave@contoso.com"


# ---------------------------------------------------------------- the harness
class RecordingJobs:
    """The JobQueue the services see here: messages wait with the time they become visible."""

    def __init__(self, clock: FixedClock, poison: Any) -> None:
        self.clock = clock
        self.poison = poison
        self.deploys: list[tuple[DeployJob, datetime]] = []
        self.syncs: list[tuple[SyncJob, datetime]] = []
        self.poisoned: list[tuple[DeployJob, str]] = []
        self.progress: list[tuple[ProgressJob, datetime]] = []
        self._lock = threading.Lock()

    def schedule_deploy(self, job: DeployJob, delay: timedelta) -> None:
        assert timedelta(0) <= delay <= timedelta(days=7), delay  # what Queue Storage accepts
        with self._lock:
            self.deploys.append((job, self.clock.now() + delay))

    def schedule_progress(self, job: ProgressJob, delay: timedelta) -> None:
        with self._lock:
            self.progress.append((job, self.clock.now() + delay))

    def poison_deploy(self, job: DeployJob, reason: str) -> None:
        self.poisoned.append((job, reason))
        self.poison.poison_deploy(job, reason)

    def enqueue_sync(self, job: SyncJob, delay: timedelta = timedelta(0)) -> None:
        with self._lock:
            self.syncs.append((job, self.clock.now() + delay))

    def enqueue_refresh(self, job: RefreshJob, delay: timedelta = timedelta(0)) -> None:
        pass

    def due_deploys(self) -> list[DeployJob]:
        now = self.clock.now()
        with self._lock:
            due = [j for j, at in self.deploys if at <= now]
            self.deploys = [(j, at) for j, at in self.deploys if at > now]
        return due

    def clear(self) -> None:
        self.deploys.clear()
        self.syncs.clear()
        self.poisoned.clear()


@dataclass
class Env:
    c: Container
    clock: FixedClock
    jobs: RecordingJobs
    http: Client
    stack: Stack


@pytest.fixture(scope="module")
def env(stack: Stack) -> Iterator[Env]:
    settings_env = {**stack.app_settings(), "AGENT_JOIN_LEAD_SECONDS": str(LEAD),
                    "AGENT_JOIN_GRACE_SECONDS": str(GRACE), "DEPLOY_RETRY_SECONDS": str(RETRY)}
    with pytest.MonkeyPatch.context() as mp:
        # What the Functions host's environment holds: the test CA bundle and the local identity.
        for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                     "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"):
            mp.setenv(name, settings_env[name])
        clock = FixedClock(_now())
        c = build(load_settings(settings_env), clock=clock)
        jobs = RecordingJobs(clock, poison=c.jobs)
        # The services keep their queue adapter; these tests hold the messages themselves.
        for service in (c.sync, c.deploy, c.connect, c.meeting_lifecycle):
            mp.setattr(service, "_jobs", jobs)
        yield Env(c=c, clock=clock, jobs=jobs, http=Client(stack), stack=stack)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class World:
    """One test's user, connections and calendar, over the shared stack."""

    env: Env
    user: User
    connections: dict[str, Connection] = field(default_factory=dict)

    @property
    def c(self) -> Container:
        return self.env.c

    @property
    def clock(self) -> FixedClock:
        return self.env.clock

    def connect(self, upn: str) -> Connection:
        """The three legs, in process: authorize URL, sign-in on the simulator, callback, claim."""
        url = self.c.connect.start(self.user)
        location = self.env.http.sign_in(url, upn)
        result = self.c.connect.complete(dict(parse_qsl(urlsplit(location).query)))
        assert result.claim, result
        conn = self.c.connect.claim(self.user, result.claim).connection
        self.connections[upn] = conn
        self.env.jobs.syncs.clear()
        return conn

    def add_event(self, upn: str, subject: str, start: datetime, minutes: int = 30, **fields: Any) -> dict[str, Any]:
        return self.env.http.add_event(upn, subject, start, minutes, **fields)

    def teams_event(self, upn: str, subject: str, start: datetime, n: int, **fields: Any) -> dict[str, Any]:
        return self.add_event(upn, subject, start, onlineMeeting={"joinUrl": teams_link(n)}, isOnlineMeeting=True,
                              onlineMeetingProvider="teamsForBusiness", **fields)

    def patch(self, upn: str, event_id: str, **fields: Any) -> None:
        resp = self.env.http.sim("PATCH", f"/_sim/users/{upn}/events/{event_id}", json=fields)
        assert resp.status_code == 200, resp.text

    def delete(self, upn: str, event_id: str) -> None:
        assert self.env.http.sim("DELETE", f"/_sim/users/{upn}/events/{event_id}").status_code == 204

    def sync(self, upn: str, reason: str = "scheduled") -> SyncReport:
        conn = self.connections[upn]
        return self.c.sync.sync(SyncJob(self.user.id, conn.id, reason=reason))

    def upcoming(self) -> list[dict[str, Any]]:
        return [meeting_view(m, d) for m, d in self.c.meeting_lifecycle.upcoming(self.user.id)]

    def at(self, moment: datetime) -> None:
        assert moment >= self.clock.now(), "the clock only moves forward"
        self.clock.set(moment)

    def deliver_due(self) -> list[str]:
        """Every deploy message whose visibility delay has ended, once each, as the queue hands them out
        to the deploy_agent function (which lets the deployer read the calendars first)."""
        outcomes = []
        while due := self.env.jobs.due_deploys():
            outcomes += [self.c.deploy.deploy(job, freshen=self.c.sync.freshen) for job in due]
        return outcomes

    def attempts(self) -> list[dict[str, Any]]:
        """Every call the agent API received for this user (successes, duplicates and failures)."""
        resp = self.env.http.api.get(f"{self.env.stack.agents_url}/_recorded?all=1", timeout=30)
        return [a for a in resp.json() if isinstance(a.get("body"), dict) and a["body"].get("user_id") == self.user.id]

    def graph_requests(self, path_suffix: str = "/calendarView/delta") -> list[dict[str, Any]]:
        log = self.env.http.sim("GET", "/_sim/requests").json()
        return [r for r in log if r["path"].startswith("/v1.0/") and r["path"].endswith(path_suffix)]


@pytest.fixture
def world(env: Env) -> Iterator[World]:
    http = env.http
    assert http.sim("POST", "/_sim/reset").status_code == 200  # clean mailboxes, faults and request log
    env.clock.set(_now())
    env.jobs.clear()
    yield World(env, User(f"rules-{uuid.uuid4().hex[:8]}", Plan.PRO))
    http.sim("DELETE", "/_sim/faults")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- which meetings
def test_events_with_a_link_that_are_not_cancelled_are_listed_and_declined_and_all_day_ones_get_no_agent(world):
    world.connect(ALICE)
    soon = world.clock.now() + timedelta(hours=2)
    world.teams_event(ALICE, "Kept", soon, 1)
    world.teams_event(ALICE, "Cancelled", soon, 2, isCancelled=True)
    world.teams_event(ALICE, "Declined", soon, 3, organizer={"emailAddress": {"address": DAVE}},
                      responseStatus={"response": "declined", "time": iso(soon)})
    world.teams_event(ALICE, "All day", soon.replace(hour=0, minute=0, second=0), 4, minutes=24 * 60, isAllDay=True)
    world.add_event(ALICE, "Lunch, no link", soon)
    world.sync(ALICE)
    listed = {m["title"]: m for m in world.upcoming()}
    assert sorted(listed) == ["All day", "Declined", "Kept"]
    all_day = listed["All day"]
    assert (all_day["will_join"], all_day["why"], all_day["agent"]) == (False, "all_day", None)  # the user may opt in
    meeting = listed["Kept"]
    assert (meeting["title"], meeting["platform"], meeting["accounts"]) == ("Kept", "teams", [ALICE])
    assert meeting["start"] == iso(soon) and meeting["agent"] == "scheduled"
    assert meeting["agent_at"] == iso(soon - timedelta(seconds=LEAD))
    assert (meeting["response"], meeting["will_join"], meeting["why"]) == ("organizer", True, "rules")
    declined = listed["Declined"]
    assert (declined["response"], declined["will_join"], declined["why"], declined["agent"], declined["agent_at"]) == (
        "declined", False, "response_excluded", None, None)
    assert [j.meeting_key for j, _ in world.env.jobs.deploys] == [meeting["id"]]


def test_cancelled_and_deleted_meetings_leave_a_declined_one_stays_and_their_deployments_do_nothing(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    cancel = world.teams_event(ALICE, "To cancel", start, 11)
    decline = world.teams_event(ALICE, "To decline", start, 12)
    delete = world.teams_event(ALICE, "To delete", start, 13)
    world.sync(ALICE)
    assert len(world.upcoming()) == 3 and len(world.env.jobs.deploys) == 3
    world.patch(ALICE, cancel["id"], isCancelled=True)
    world.patch(ALICE, decline["id"], responseStatus={"response": "declined", "time": iso(start)})
    world.delete(ALICE, delete["id"])
    report = world.sync(ALICE)
    assert (report.full, report.removed) == (False, 2)
    assert [(m["title"], m["will_join"], m["why"], m["agent"]) for m in world.upcoming()] == [
        ("To decline", False, "response_excluded", None)]
    world.at(start - timedelta(seconds=LEAD))
    assert sorted(world.deliver_due()) == ["meeting_gone", "meeting_gone", "response_excluded"]
    assert world.attempts() == []


def test_a_meeting_cancelled_since_the_last_scan_gets_no_agent(world):
    """The deployer reads the calendar's latest changes (one delta request) before calling the agent API."""
    world.connect(ALICE)
    start = world.clock.now() + timedelta(minutes=30)
    ev = world.teams_event(ALICE, "Called off late", start, 14)
    world.sync(ALICE)
    world.at(start - timedelta(seconds=LEAD))
    world.patch(ALICE, ev["id"], isCancelled=True)  # no scan ran since
    before = len(world.graph_requests())
    assert world.deliver_due() == ["meeting_gone"]
    assert world.attempts() == [] and world.upcoming() == []
    assert len(world.graph_requests()) == before + 1


def test_a_rescheduled_meeting_is_deployed_at_its_new_time_and_the_old_message_does_nothing(world):
    world.connect(ALICE)
    old = world.clock.now() + timedelta(hours=1)
    new = old + timedelta(hours=2)
    ev = world.teams_event(ALICE, "Moved", old, 21)
    world.sync(ALICE)
    world.patch(ALICE, ev["id"], start={"dateTime": new.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                end={"dateTime": (new + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"})
    world.sync(ALICE)
    [meeting] = world.upcoming()
    assert meeting["start"] == iso(new) and meeting["agent_at"] == iso(new - timedelta(seconds=LEAD))
    [(_, old_at), (_, new_at)] = sorted(world.env.jobs.deploys, key=lambda d: d[1])
    assert (old_at, new_at) == (old - timedelta(seconds=LEAD), new - timedelta(seconds=LEAD))
    world.at(old_at)
    assert world.deliver_due() == ["meeting_gone"]
    world.at(new_at)
    assert world.deliver_due() == ["deployed"]
    [call] = world.attempts()
    assert call["status"] == 201 and call["body"]["start"] == new.isoformat()
    assert world.upcoming()[0]["agent"] == "deployed"


def test_a_meeting_beyond_the_queue_horizon_is_scheduled_by_a_later_sync(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(days=9)
    world.teams_event(ALICE, "Offsite", start, 31)
    world.sync(ALICE)
    assert world.upcoming()[0]["agent"] is None and world.env.jobs.deploys == []
    world.at(world.clock.now() + timedelta(days=3))
    world.sync(ALICE)
    [(_, at)] = world.env.jobs.deploys
    assert at == start - timedelta(seconds=LEAD) and world.upcoming()[0]["agent"] == "scheduled"


def test_a_weekly_teams_series_gives_one_meeting_per_occurrence(world):
    """Graph's delta lists a series master in full and its occurrences with only id, type,
    seriesMasterId, start and end: each occurrence still becomes its own meeting with the series'
    link and title, an exception keeps its own time, and a cancelled occurrence leaves."""
    world.connect(ALICE)
    first = (world.clock.now() + timedelta(hours=3)).replace(second=0)
    world.teams_event(ALICE, "Weekly sync", first, 41, recurrence={
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [first.strftime("%A").lower()]},
        "range": {"type": "noEnd", "startDate": first.date().isoformat()},
    })
    report = world.sync(ALICE)
    meetings = world.upcoming()
    window = sync_window(world.clock.now(), world.c.settings.sync_window_days)
    starts = [s for w in range(3) if (s := first + timedelta(weeks=w)) < window.end]
    assert len(starts) >= 2
    assert [m["start"] for m in meetings] == [iso(s) for s in starts]
    assert {m["title"] for m in meetings} == {"Weekly sync"}
    assert {m["join_url"] for m in meetings} == {teams_link(41)}
    assert len({m["id"] for m in meetings}) == len(starts)
    assert report.requests == 1  # the master came with its occurrences: nothing read by id
    sparse = [r for r in world.graph_requests("") if "/events/" in r["path"]]
    assert sparse == []

    # Cancel the second occurrence.
    by_start = {m.start: m for m in upcoming(world.c.meetings, world.user.id, world.clock.now())}
    second_id = by_start[starts[1]].sources[0].event_id
    world.delete(ALICE, second_id)
    # The first occurrence moves an hour later: it becomes an exception with its own time.
    first_id = by_start[starts[0]].sources[0].event_id
    moved = starts[0] + timedelta(hours=1)
    world.patch(ALICE, first_id, start={"dateTime": moved.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                end={"dateTime": (moved + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"})
    assert world.sync(ALICE).full is False
    assert [m["start"] for m in world.upcoming()] == [iso(moved), *map(iso, starts[2:])]
    world.at(moved - timedelta(seconds=LEAD))
    assert world.deliver_due() == ["meeting_gone", "deployed"]  # the message for the old time, the new one
    assert [a["body"]["start"] for a in world.attempts()] == [moved.isoformat()]


# ---------------------------------------------------------------- one agent per meeting
def test_one_meeting_in_two_calendars_is_one_entry_with_both_accounts_and_one_agent(world):
    world.connect(ALICE)
    world.connect(DAVE)
    start = world.clock.now() + timedelta(minutes=90)
    world.teams_event(ALICE, "Joint review", start, 51)
    world.teams_event(DAVE, "Joint review", start, 51)
    world.sync(ALICE)
    world.sync(DAVE)
    [meeting] = world.upcoming()
    assert meeting["accounts"] == [ALICE, DAVE]
    world.at(start - timedelta(seconds=LEAD))
    outcomes = world.deliver_due()
    assert outcomes.count("deployed") == 1 and len(world.attempts()) == 1
    # Alice leaves it; Dave still has it, and the agent stays deployed.
    world.delete(ALICE, world.c.meetings.list_for_user(world.user.id, world.clock.now())[0].sources[0].event_id)
    world.sync(ALICE)
    [meeting] = world.upcoming()
    assert meeting["accounts"] == [DAVE] and meeting["agent"] == "deployed"


def test_a_message_delivered_twice_deploys_one_agent(world):
    world.connect(ALICE)
    world.teams_event(ALICE, "Standup", world.clock.now() + timedelta(minutes=1), 61)
    world.sync(ALICE)
    [(job, _)] = world.env.jobs.deploys
    assert world.c.deploy.deploy(job) == "deployed"
    assert world.c.deploy.deploy(job) == "already_deployed"
    assert [a["status"] for a in world.attempts()] == [201]


def test_concurrent_deliveries_call_the_agent_api_once(world):
    world.connect(ALICE)
    world.teams_event(ALICE, "Board", world.clock.now() + timedelta(minutes=1), 62)
    world.sync(ALICE)
    [(job, _)] = world.env.jobs.deploys
    world.env.jobs.deploys.clear()
    # The first call is slow, so the others arrive while it is in flight.
    world.env.http.api.post(f"{world.env.stack.agents_url}/_faults", json={"latency_ms": 400, "count": 1}, timeout=5)
    gate = threading.Barrier(6)
    outcomes: list[str] = []

    def deliver() -> None:
        gate.wait()
        outcomes.append(world.c.deploy.deploy(job))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("deployed") == 1, outcomes
    assert set(outcomes) <= {"deployed", "in_progress", "already_deployed"}
    assert [a["status"] for a in world.attempts()] == [201]
    assert world.upcoming()[0]["agent"] == "deployed"
    # Those that found it in flight look again once the claim lapses, and do nothing.
    world.at(world.clock.now() + timedelta(seconds=61))
    assert set(world.deliver_due()) <= {"already_deployed"}
    assert len(world.attempts()) == 1


def test_two_syncs_of_one_connection_never_interleave(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=2)
    for n in range(5):
        world.teams_event(ALICE, f"Meeting {n}", start + timedelta(minutes=n), 70 + n)
    # Graph is slow, so the second sync starts while the first is reading.
    world.env.http.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendarView", "latency_ms": 400,
                                                     "count": 1})
    gate = threading.Barrier(2)
    reports: list[SyncReport] = []

    def run(reason: str) -> None:
        gate.wait()
        reports.append(world.sync(ALICE, reason))

    threads = [threading.Thread(target=run, args=(r,)) for r in ("scheduled", "connected")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.outcome for r in reports) == ["busy", "synced"]
    assert len([r for r in world.graph_requests() if "startDateTime" in r["params"]]) == 1
    assert len(world.upcoming()) == 5
    # A sync that lost the race because it was asked for another reason looks once more, shortly.
    retries = [(j, at) for j, at in world.env.jobs.syncs if j.reason == "busy"]
    assert len(retries) <= 1
    state = world.c.sync._state.get(world.connections[ALICE].id)  # the lease is released
    assert state is not None and state.lease_owner == "" and state.delta_link


# ---------------------------------------------------------------- Graph limits
def test_a_sync_throttled_mid_round_resumes_from_the_page_it_stopped_at(world, monkeypatch):
    conn = world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=2)
    for n in range(8):
        world.teams_event(ALICE, f"Review {n}", start + timedelta(minutes=n), 80 + n)
    graph = world.c.sync._calendar
    monkeypatch.setattr(graph, "_page_size", 3)
    original = graph.delta_first

    def first_page_then_throttle(token, window):
        page = original(token, window)
        world.env.http.sim("POST", "/_sim/faults", json={
            "path_prefix": "/v1.0/me/calendarView/delta", "status": 429, "retry_after": 30, "count": 1})
        return page

    monkeypatch.setattr(graph, "delta_first", first_page_then_throttle)
    report = world.sync(ALICE)
    assert report.outcome == "throttled" and report.pages == 1
    [(resume, at)] = world.env.jobs.syncs
    assert (resume.reason, at) == ("throttled", world.clock.now() + timedelta(seconds=30))
    world.at(at)
    assert world.c.sync.sync(resume).outcome == "synced"
    requests = world.graph_requests()
    assert [r["status"] for r in requests] == [200, 429, 200, 200]
    assert "startDateTime" in requests[0]["params"]  # read from the start once only
    assert requests[1]["query"] == requests[2]["query"]  # the throttled page, asked again
    assert len(world.upcoming()) == 8
    assert world.c.sync._state.get(conn.id).resume_link is None


def test_retry_after_is_honoured_and_server_errors_back_off(world, monkeypatch):
    world.connect(ALICE)
    world.teams_event(ALICE, "Planning", world.clock.now() + timedelta(hours=2), 91)
    graph = world.c.sync._calendar
    waits: list[float] = []
    monkeypatch.setattr(graph, "_sleep", waits.append)
    http = world.env.http
    http.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendarView/delta", "status": 429,
                                           "retry_after": 2, "count": 1})
    assert world.sync(ALICE).outcome == "synced"
    assert waits == [2.0]
    waits.clear()
    world.teams_event(ALICE, "Retro", world.clock.now() + timedelta(hours=3), 92)
    http.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendarView/delta", "status": 503, "count": 2})
    assert world.sync(ALICE).outcome == "synced"
    assert len(waits) == 2 and 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 3.0
    assert [r["status"] for r in world.graph_requests()][-3:] == [503, 503, 200]
    assert len(world.upcoming()) == 2


def test_a_lost_delta_token_means_a_full_resync_that_catches_up(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=2)
    keep = world.teams_event(ALICE, "Keep", start, 101)
    gone = world.teams_event(ALICE, "Gone", start, 102)
    world.sync(ALICE)
    world.delete(ALICE, gone["id"])
    world.patch(ALICE, keep["id"], subject="Keep (renamed)")
    world.env.http.sim("POST", f"/_sim/users/{ALICE}/expire-delta")
    report = world.sync(ALICE)
    assert report.full and report.outcome == "synced"
    assert [r["status"] for r in world.graph_requests()][-2:] == [410, 200]
    assert [m["title"] for m in world.upcoming()] == ["Keep (renamed)"]


def test_the_window_slides_daily_and_a_full_resync_runs_as_a_safety_net(world):
    world.connect(ALICE)
    world.sync(ALICE)
    assert world.sync(ALICE).full is False
    world.at(world.clock.now() + timedelta(days=1))
    report = world.sync(ALICE)
    assert report.full
    firsts = [r for r in world.graph_requests() if "startDateTime" in r["params"]]
    assert len(firsts) == 2 and firsts[0]["params"]["startDateTime"] != firsts[1]["params"]["startDateTime"]


def test_requests_per_mailbox_stay_within_outlooks_concurrency_limit(world):
    """Six CoAgentor users connected the same mailbox; their syncs run at once with Graph slowed down."""
    worlds = [World(world.env, User(f"{world.user.id}-{i}", Plan.PRO)) for i in range(6)]
    for w in worlds:
        w.connect(ALICE)
    for n in range(3):
        world.teams_event(ALICE, f"Shared {n}", world.clock.now() + timedelta(hours=2, minutes=n), 110 + n)
    world.env.http.sim("POST", "/_sim/faults", json={"path_prefix": "/v1.0/me/calendarView", "latency_ms": 150})
    gate = threading.Barrier(len(worlds))
    reports: list[SyncReport] = []

    def run(w: World) -> None:
        gate.wait()
        reports.append(w.sync(ALICE))

    threads = [threading.Thread(target=run, args=(w,)) for w in worlds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.outcome for r in reports] == ["synced"] * 6
    stats = world.env.http.sim("GET", "/_sim/stats").json()
    assert 1 <= stats["max_concurrency"][ALICE] <= 4
    assert 429 not in [r["status"] for r in world.graph_requests()]
    assert all(len(w.upcoming()) == 3 for w in worlds)


# ---------------------------------------------------------------- deploy time
def test_a_meeting_that_already_started_is_not_joined(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(minutes=3)
    world.teams_event(ALICE, "Missed", start, 121)
    world.sync(ALICE)
    world.at(start + timedelta(seconds=GRACE + 1))
    assert world.deliver_due() == ["too_late"]
    assert world.attempts() == [] and world.upcoming()[0]["agent"] == "failed"


def test_agent_api_outages_are_retried_within_the_lead_time(world):
    world.connect(ALICE)
    start = world.clock.now() + timedelta(minutes=2)
    world.teams_event(ALICE, "Customer call", start, 131)
    world.sync(ALICE)
    world.env.http.api.post(f"{world.env.stack.agents_url}/_faults", json={"status": 503, "count": 1}, timeout=5)
    assert world.deliver_due() == ["retrying"]
    assert world.upcoming()[0]["agent"] == "scheduled"
    [(retry, at)] = world.env.jobs.deploys
    assert retry.attempt == 2 and at == world.clock.now() + timedelta(seconds=RETRY)
    world.at(at)
    assert world.deliver_due() == ["deployed"]
    assert [a["status"] for a in world.attempts()] == [503, 201]


def test_a_permanent_agent_api_failure_lands_in_the_poison_queue_with_its_reason(world):
    world.connect(ALICE)
    world.teams_event(ALICE, "Refused", world.clock.now() + timedelta(minutes=1), 141)
    world.sync(ALICE)
    world.env.http.api.post(f"{world.env.stack.agents_url}/_faults", json={"status": 400, "count": 1}, timeout=5)
    assert world.deliver_due() == ["failed"]
    [(meeting, decision)] = world.c.meeting_lifecycle.upcoming(world.user.id)
    assert meeting_view(meeting, decision)["agent"] == "failed" and meeting.failure_reason == "agent_api: HTTP 400"
    poison = QueueClient.from_connection_string(world.env.stack.storage_connection_string(),
                                                "agent-deployments-poison",
                                                message_decode_policy=TextBase64DecodePolicy())
    bodies = [json.loads(m.content) for m in poison.peek_messages(max_messages=32)]
    [mine] = [b for b in bodies if b.get("meeting_key") == meeting.key]
    assert mine["reason"] == "agent_api: HTTP 400" and mine["user_id"] == world.user.id
    assert world.deliver_due() == [] and len(world.attempts()) == 1


def test_disconnecting_makes_a_pending_deployment_do_nothing(world):
    conn = world.connect(ALICE)
    start = world.clock.now() + timedelta(hours=1)
    world.teams_event(ALICE, "After disconnect", start, 151)
    world.sync(ALICE)
    assert world.c.accounts.disconnect(world.user.id, conn.id)
    world.at(start - timedelta(seconds=LEAD))
    assert world.deliver_due() == ["meeting_gone"] and world.attempts() == []


def test_a_connection_in_error_gets_no_agent(world):
    conn = world.connect(DAVE)
    start = world.clock.now() + timedelta(hours=1)
    world.teams_event(DAVE, "Revoked", start, 161)
    world.sync(DAVE)
    world.env.http.sim("POST", f"/_sim/users/{DAVE}/revoke")
    with pytest.raises(ConnectionUnusable):
        world.c.tokens.access_token(conn, force_refresh=True)
    world.at(start - timedelta(seconds=LEAD))
    assert world.deliver_due() == ["connection_error"] and world.attempts() == []


def test_a_delta_page_as_slow_as_graph_requests_may_be_keeps_the_connection_to_one_sync(world, stack, monkeypatch):
    """The simulator holds the delta request (latency); meanwhile the service's clock moves on by the
    longest one request may take with HTTP_TIMEOUT_SECONDS=90 (4 attempts and the inline waits: over
    six minutes, more than the old five-minute lease). A second sync starting then still finds the
    connection held, and the first finishes its round: the lease is sized from that request time."""
    from shared.adapters.graph import longest_request
    from tests.e2e.client import eventually

    slow = build(load_settings({**stack.app_settings(), "AGENT_JOIN_LEAD_SECONDS": str(LEAD),
                                "HTTP_TIMEOUT_SECONDS": "90"}), clock=world.clock)
    monkeypatch.setattr(slow.sync, "_jobs", world.env.jobs)
    conn = world.connect(ALICE)
    world.teams_event(ALICE, "Read slowly", world.clock.now() + timedelta(hours=3), 77)
    assert world.env.http.sim("POST", "/_sim/faults", json={
        "path_prefix": "/v1.0/me/calendarView", "latency_ms": 3000, "count": 1}).status_code in (200, 201)
    reports: dict[str, SyncReport] = {}
    first = threading.Thread(target=lambda: reports.setdefault(
        "first", slow.sync.sync(SyncJob(world.user.id, conn.id, reason="scheduled"))))
    first.start()
    try:
        eventually(lambda: world.env.http.sim("GET", "/_sim/faults").json() == [])  # the page is in flight
        world.clock.advance(longest_request(90).total_seconds())
        competitor = slow.sync.sync(SyncJob(world.user.id, conn.id, reason="scheduled"))
    finally:
        first.join(60)
    assert competitor.outcome == "busy"
    assert reports["first"].outcome == "synced"
    assert [m["title"] for m in world.upcoming()] == ["Read slowly"]
