"""Calendar sync and agent deployment (domain level, in memory, controllable clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise

import pytest

from shared.autojoin import Why
from shared.connections import Plan
from shared.platform_auth import User
from shared.ports import DeployJob, DeployResult, SyncJob
from shared.scheduling import AgentState
from shared.services.sync import SYNC_LEASE
from tests.unit.conftest import LEAD

ALICE = User("user-alice", Plan.PRO)
WORK = ("uid-a.tid-contoso", "tid-contoso", "alice@contoso.com")
PERSONAL = ("uid-b.9188040d", "9188040d", "bob@outlook.com")
TEAMS = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_{}%40thread.v2/0?context="
         "%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%7d")


def event(world, eid, minutes_from_now=60, link=True, **extra):
    start = world.clock.now() + timedelta(minutes=minutes_from_now)
    ev = {
        "id": eid, "subject": f"Meeting {eid}", "type": "singleInstance",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                "timeZone": "UTC"},
        "body": {"contentType": "html", "content": "<p>Agenda</p>"},
    }
    if link:
        ev["onlineMeeting"] = {"joinUrl": TEAMS.format(eid.replace("-", ""))}
        ev["isOnlineMeeting"] = True
    ev.update(extra)
    return ev


def connected(world, account=WORK):
    conn = world.connect_account(ALICE, account).connection
    world.jobs.syncs.clear()
    return conn


def sync(world, conn):
    return world.sync.sync(SyncJob(ALICE.id, conn.id))


def upcoming(world):
    from shared.services.meetings import upcoming as up

    return up(world.meetings, ALICE.id, world.clock.now())


def run_due_deploys(world):
    """Deliver every deploy message whose visibility delay has passed, as the queue would."""
    now = world.clock.now()
    due = [(j, d) for j, d in world.jobs.deploys if d <= timedelta(0) or j.deploy_at <= now]
    world.jobs.deploys = [x for x in world.jobs.deploys if x not in due]
    return [world.deploy.deploy(j) for j, _ in due]


def test_events_with_a_meeting_link_appear_and_others_do_not(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    world.calendar.add(event(world, "e2", link=False))
    sync(world, conn)
    assert [m.title for m in upcoming(world)] == ["Meeting e1"]


def test_deployment_is_scheduled_at_start_minus_lead(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=60))
    sync(world, conn)
    [(job, delay)] = world.jobs.deploys
    [meeting] = upcoming(world)
    assert job.deploy_at == meeting.start - timedelta(seconds=LEAD)
    assert delay == job.deploy_at - world.clock.now()
    world.clock.set(job.deploy_at)
    assert run_due_deploys(world) == ["deployed"]
    assert [c.meeting_url for c in world.agents.calls] == [meeting.join_url]
    assert upcoming(world)[0].agent.value == "deployed"


def test_duplicate_delivery_deploys_one_agent(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    assert world.deploy.deploy(job) == "deployed"
    assert world.deploy.deploy(job) == "already_deployed"
    assert len(world.agents.calls) == 1


def test_one_meeting_in_two_calendars_gets_one_agent(world):
    a = connected(world, WORK)
    b = connected(world, PERSONAL)
    ev = event(world, "shared", minutes_from_now=1)
    world.calendar.add(ev)
    sync(world, a)
    world.calendar.events = {"other-id": {**ev, "id": "other-id"}}
    world.calendar.email = PERSONAL[2]
    sync(world, b)
    [meeting] = upcoming(world)
    assert {s.connection_id for s in meeting.sources} == {a.id, b.id}
    run_due_deploys(world)
    assert len(world.agents.calls) == 1


def test_rescheduling_moves_the_agent_to_the_new_time(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=60))
    sync(world, conn)
    world.calendar.add(event(world, "e1", minutes_from_now=180))
    sync(world, conn)
    [meeting] = upcoming(world)
    assert meeting.start == world.clock.now() + timedelta(minutes=180)
    old, new = world.jobs.deploys
    assert world.deploy.deploy(old[0]) == "meeting_gone"
    world.clock.set(new[0].deploy_at)
    assert world.deploy.deploy(new[0]) == "deployed"


def test_cancelled_events_are_not_listed_and_declined_and_all_day_ones_are_listed_without_an_agent(world):
    conn = connected(world)
    world.calendar.add(event(world, "c", isCancelled=True))
    world.calendar.add(event(world, "d", isOrganizer=False, responseStatus={"response": "declined"}))
    world.calendar.add(event(world, "a", isAllDay=True))
    world.calendar.add(event(world, "keep"))
    sync(world, conn)
    shown = {m.title: (m.agent, world.meeting_lifecycle.decide(m).why) for m in upcoming(world)}
    assert shown == {"Meeting d": (None, Why.RESPONSE_EXCLUDED), "Meeting a": (None, Why.ALL_DAY),
                     "Meeting keep": (AgentState.SCHEDULED, Why.RULES)}
    [keep] = [m.key for m in upcoming(world) if m.title == "Meeting keep"]
    assert [j.meeting_key for j, _ in world.jobs.deploys] == [keep]
    world.calendar.add(event(world, "keep", isCancelled=True))
    sync(world, conn)
    assert [m.title for m in upcoming(world)] == ["Meeting d", "Meeting a"]
    assert all(world.deploy.deploy(j) == "meeting_gone" for j, _ in world.jobs.deploys)


def test_deleted_events_leave_upcoming_meetings(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    sync(world, conn)
    world.calendar.remove("e1")
    sync(world, conn)
    assert upcoming(world) == []


def test_a_throttled_sync_resumes_where_it_stopped(world):
    conn = connected(world)
    for i in range(5):
        world.calendar.add(event(world, f"e{i}", minutes_from_now=60 + i))
    world.calendar.throttle_next = 1  # the second page answers 429
    report = sync(world, conn)
    assert report.outcome == "throttled"
    [(_job, delay)] = world.jobs.syncs
    assert delay == timedelta(seconds=30)
    first_calls = len(world.calendar.calls)
    sync(world, conn)
    assert world.calendar.calls[first_calls].startswith("page:")  # continued, not restarted
    assert len(upcoming(world)) == 5


def test_an_expired_delta_token_triggers_a_full_resync(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    sync(world, conn)
    world.calendar.events.pop("e1")  # deleted while the delta state was lost
    world.calendar.gone_next = True
    report = sync(world, conn)
    assert report.full and upcoming(world) == []


def test_a_meeting_that_already_started_is_not_joined(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=3))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    world.clock.advance(3 * 60 + 301)
    assert world.deploy.deploy(job) == "too_late"
    assert world.agents.calls == []


def test_agent_api_outages_are_retried_and_permanent_failures_recorded(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=2))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    world.jobs.deploys.clear()
    world.agents.script = [DeployResult(ok=False, detail="HTTP 503"), DeployResult(ok=False, permanent=True,
                                                                                  detail="HTTP 400")]
    assert world.deploy.deploy(job) == "retrying"
    [(retry, delay)] = world.jobs.deploys
    assert retry.attempt == 2 and delay == timedelta(seconds=15)
    assert world.deploy.deploy(retry) == "failed"
    assert world.jobs.poisoned[0][1] == "agent_api: HTTP 400"
    assert upcoming(world)[0].agent.value == "failed"


def test_disconnect_stops_everything_for_that_account(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    sync(world, conn)
    assert world.accounts.disconnect(ALICE.id, conn.id)
    assert upcoming(world) == [] and world.accounts.list(ALICE.id) == []
    assert conn.secret_name in world.secrets.deleted
    assert all(world.deploy.deploy(j) == "meeting_gone" for j, _ in world.jobs.deploys)
    assert world.agents.calls == []


def test_disconnecting_one_calendar_keeps_a_meeting_the_other_still_holds(world):
    a = connected(world, WORK)
    b = connected(world, PERSONAL)
    ev = event(world, "shared", minutes_from_now=1)
    world.calendar.add(ev)
    sync(world, a)
    world.calendar.email = PERSONAL[2]
    sync(world, b)
    world.accounts.disconnect(ALICE.id, a.id)
    [meeting] = upcoming(world)
    assert [s.email for s in meeting.sources] == [PERSONAL[2]]
    run_due_deploys(world)
    assert len(world.agents.calls) == 1


# ---------------------------------------------------------------- claims, leases, recurring series
def test_concurrent_deliveries_call_the_agent_api_once(world):
    import threading

    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    world.jobs.deploys.clear()
    gate = threading.Barrier(8)
    outcomes: list[str] = []

    def deliver():
        gate.wait()
        outcomes.append(world.deploy.deploy(job))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(world.agents.calls) == 1
    assert outcomes.count("deployed") == 1
    assert set(outcomes) <= {"deployed", "in_progress", "already_deployed"}
    # Those that saw the claim look again after it lapses, and then find nothing to do.
    world.clock.advance(61)
    assert {world.deploy.deploy(j) for j, _ in world.jobs.deploys} <= {"already_deployed"}
    assert len(world.agents.calls) == 1 and upcoming(world)[0].agent.public == "deployed"


def test_a_crashed_deployer_is_taken_over_after_its_claim_lapses(world):
    from dataclasses import replace

    from shared.scheduling import AgentState

    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    [meeting] = upcoming(world)
    world.meetings.replace(replace(meeting, agent=AgentState.DEPLOYING,
                                   lease_until=world.clock.now() + timedelta(seconds=60)))
    assert world.deploy.deploy(job) == "in_progress" and world.agents.calls == []
    world.clock.advance(61)
    assert world.deploy.deploy(job) == "deployed" and len(world.agents.calls) == 1


def test_a_failed_meeting_is_not_deployed_by_a_duplicate_message(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    world.agents.script = [DeployResult(ok=False, permanent=True, detail="HTTP 400")]
    assert world.deploy.deploy(job) == "failed"
    assert world.deploy.deploy(job) == "already_failed"
    assert len(world.agents.calls) == 1


def test_a_second_sync_of_the_same_connection_waits_for_the_first(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    held = []
    original = world.calendar.delta_first

    def first_page_while_another_sync_starts(token, window):
        if not held:
            held.append(world.sync.sync(SyncJob(ALICE.id, conn.id, reason="connected")))
        return original(token, window)

    world.calendar.delta_first = first_page_while_another_sync_starts
    assert sync(world, conn).outcome == "synced"
    assert held[0].outcome == "busy"
    assert world.calendar.calls.count("first") == 1
    # The one asked for a reason other than the periodic scan looks once more when the holder's lease
    # would have lapsed (in case it died): the holder itself reads whatever was announced meanwhile.
    [(again, delay)] = world.jobs.syncs
    assert again.reason == "busy" and delay == SYNC_LEASE
    assert world.states.get(conn.id).lease_owner == ""
    assert [m.title for m in upcoming(world)] == ["Meeting e1"]


def test_a_lapsed_sync_lease_is_taken_over(world):
    from dataclasses import replace

    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    sync(world, conn)
    state = world.states.get(conn.id)
    world.states.put(replace(state, lease_owner="crashed", lease_until=world.clock.now() + timedelta(minutes=5)))
    assert sync(world, conn).outcome == "busy"
    world.clock.advance(5 * 60 + 1)
    assert sync(world, conn).outcome == "synced"


def test_a_page_read_as_slowly_as_graph_requests_may_take_keeps_the_connection_to_one_sync(world, monkeypatch):
    """With HTTP_TIMEOUT_SECONDS=75 one Graph request may take 4 x 75 s + 15 s of waits: longer than
    a 5-minute lease. The lease is sized from that (sync_lease), so a second sync starting as the slow
    page arrives still finds the connection held, and the first run finishes its round."""
    from shared.adapters.graph import longest_request
    from shared.services.sync import sync_lease

    slowest = longest_request(75.0)
    assert slowest > timedelta(minutes=5)
    monkeypatch.setattr(world.sync, "_lease", sync_lease(slowest))
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    competitor = []
    original = world.calendar.delta_first

    def slow_first_page(token, window):
        world.clock.advance(slowest.total_seconds())  # simulated latency: the slowest a request may be
        competitor.append(world.sync.sync(SyncJob(ALICE.id, conn.id, reason="scheduled")))
        return original(token, window)

    world.calendar.delta_first = slow_first_page
    assert sync(world, conn).outcome == "synced"
    assert [r.outcome for r in competitor] == ["busy"]
    assert world.states.get(conn.id).lease_owner == ""


def test_a_long_page_of_slow_events_renews_the_lease_while_it_is_worked_through(world, monkeypatch):
    """The lease was renewed only between pages: one page whose events take longer than the lease to
    store (storage slow, a series master read each) let another run take the connection mid-page."""
    conn = connected(world)
    world.calendar.page_size = 10
    for n in range(6):
        world.calendar.add(event(world, f"e{n}", minutes_from_now=60 + n))
    competitors = []
    original = world.meetings.create

    def slow_create(meeting):
        world.clock.advance(90)  # 6 events x 90 s: 9 minutes on one page, against a 5-minute lease
        competitors.append(world.sync.sync(SyncJob(ALICE.id, conn.id, reason="scheduled")).outcome)
        return original(meeting)

    monkeypatch.setattr(world.meetings, "create", slow_create)
    assert sync(world, conn).outcome == "synced"
    assert competitors and set(competitors) == {"busy"}
    assert len(upcoming(world)) == 6


def _series(world, eid, *, minutes_from_now=60, days=3, **master_fields):
    start = world.clock.now() + timedelta(minutes=minutes_from_now)
    master = event(world, eid, minutes_from_now=minutes_from_now, type="seriesMaster",
                   recurrence={"pattern": {"type": "daily"}}, **master_fields)
    occurrences = []
    for day in range(days):
        s = start + timedelta(days=day)
        occurrences.append({
            "id": f"{eid}-occ{day}", "type": "occurrence", "seriesMasterId": eid,
            "start": {"dateTime": s.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
            "end": {"dateTime": (s + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        })
    return master, occurrences


def test_each_occurrence_of_a_series_is_its_own_meeting_with_the_masters_link(world):
    conn = connected(world)
    master, occurrences = _series(world, "s1")
    world.calendar.page_size = 10
    world.calendar.add(master)
    for o in occurrences:
        world.calendar.add(o)
    sync(world, conn)
    meetings = upcoming(world)
    assert [m.start for m in meetings] == [world.clock.now() + timedelta(days=d, minutes=60) for d in range(3)]
    assert {m.join_url for m in meetings} == {master["onlineMeeting"]["joinUrl"]}
    assert {m.title for m in meetings} == {"Meeting s1"}
    assert not any(c.startswith("event:") for c in world.calendar.calls)  # the master came in the round


def test_a_sparse_occurrence_without_its_master_in_the_round_reads_the_master(world):
    conn = connected(world)
    sync(world, conn)  # empty calendar: the delta link is kept
    master, occurrences = _series(world, "s2", days=1)
    world.calendar.events[master["id"]] = master  # in the mailbox, unchanged: not in the next round
    world.calendar.add(occurrences[0])
    assert sync(world, conn).full is False
    assert world.calendar.calls.count("event:s2") == 1
    [meeting] = upcoming(world)
    assert meeting.join_url == master["onlineMeeting"]["joinUrl"]


def test_occurrences_of_a_declined_or_cancelled_series_get_no_agent(world):
    conn = connected(world)
    world.calendar.page_size = 10
    declined, d_occ = _series(world, "sd", isOrganizer=False, responseStatus={"response": "declined"})
    cancelled, c_occ = _series(world, "sc", isCancelled=True)
    for e in [declined, *d_occ, cancelled, *c_occ]:
        world.calendar.add(e)
    sync(world, conn)
    listed = upcoming(world)
    assert {m.title for m in listed} == {"Meeting sd"} and len(listed) == 3
    assert {(m.agent, world.meeting_lifecycle.decide(m).why) for m in listed} == {(None, Why.RESPONSE_EXCLUDED)}
    assert world.jobs.deploys == []


def test_the_deployer_reads_the_calendar_first(world):
    conn = connected(world)
    world.calendar.add(event(world, "gone", minutes_from_now=1))
    world.calendar.add(event(world, "kept", minutes_from_now=1, subject="Kept"))
    sync(world, conn)
    world.calendar.add(event(world, "gone", minutes_from_now=1, isCancelled=True))  # since the last sync
    outcomes = sorted(world.deploy.deploy(j, freshen=world.sync.freshen) for j, _ in world.jobs.deploys)
    assert outcomes == ["deployed", "meeting_gone"]
    assert [c.title for c in world.agents.calls] == ["Kept"]


def test_a_failed_pre_deployment_read_does_not_stop_the_deployment(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=1))
    sync(world, conn)

    def graph_down(token, link):
        raise RuntimeError("Graph is down")

    world.calendar.delta_next = graph_down
    [(job, _)] = world.jobs.deploys
    assert world.deploy.deploy(job, freshen=world.sync.freshen) == "deployed"
    assert world.states.get(conn.id).lease_owner == ""  # the failed sync let go of the connection


def test_a_disconnect_during_a_sync_leaves_no_meeting_behind(world):
    conn = connected(world)
    world.calendar.page_size = 1
    world.calendar.add(event(world, "e1"))
    world.calendar.add(event(world, "e2"))
    original = world.calendar.delta_next

    def disconnect_mid_round(token, link):
        world.accounts.disconnect(ALICE.id, conn.id)
        return original(token, link)

    world.calendar.delta_next = disconnect_mid_round
    assert sync(world, conn).outcome in ("disconnected", "lease_lost")
    assert upcoming(world) == [] and world.index.all_for(conn.id) == {}
    assert world.states.get(conn.id) is None


def test_graph_refusing_the_token_neither_retries_the_message_nor_keeps_the_connection_locked(world):
    conn = connected(world)
    world.calendar.add(event(world, "e1"))
    sync(world, conn)
    world.calendar.refuse_token = True
    assert sync(world, conn).outcome == "graph_unauthorized"  # returns: the queue does not retry it
    world.calendar.refuse_token = False
    world.calendar.add(event(world, "e2"))
    assert sync(world, conn).outcome == "synced"  # the lease was released
    assert [m.title for m in upcoming(world)] == ["Meeting e1", "Meeting e2"]


def deliver_with_backups(world, failures: int) -> tuple[list[str], list[datetime]]:
    """Deliver every deploy message, and the backup copy 15 s behind each (as StorageQueues sends
    them), in the order they surface, with the agent API failing `failures` times: the results and
    when the agent API was called."""
    from shared.adapters.queues import DEPLOY_BACKUP_AFTER

    queue: list[tuple[datetime, int, DeployJob]] = []

    def schedule_deploy(job: DeployJob, delay: timedelta) -> None:
        queue.append((world.clock.now() + delay, len(queue), job))
        if not job.backup:
            queue.append((world.clock.now() + delay + DEPLOY_BACKUP_AFTER, len(queue), replace(job, backup=True)))

    world.jobs.schedule_deploy = schedule_deploy  # type: ignore[method-assign]
    called_at: list[datetime] = []
    calls = world.agents.deploy

    def deploy(request):
        called_at.append(world.clock.now())
        return calls(request)

    world.agents.deploy = deploy  # type: ignore[method-assign]
    world.agents.script = [DeployResult(ok=False, detail="HTTP 503")] * failures
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=2))
    sync(world, conn)
    results = []
    while queue:
        queue.sort(key=lambda x: (x[0], x[1]))
        at, _, job = queue.pop(0)
        world.clock.set(max(at, world.clock.now()))
        results.append(world.deploy.deploy(job))
    return results, called_at


def gaps(called_at: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in pairwise(called_at)]


@pytest.mark.parametrize("failures", [1, 3])
def test_during_an_agent_api_outage_each_planned_retry_calls_once_and_one_agent_goes_after(world, failures):
    """A failed call's older messages (its backup copy) do not deploy at once beside the planned
    retry: one call per planned retry, spaced by the back-off, and one agent once the API recovers."""
    results, called_at = deliver_with_backups(world, failures)

    assert len(called_at) == failures + 1
    assert gaps(called_at) == [15 * 2 ** i for i in range(failures)]  # retry_base_seconds=15, doubling
    assert results.count("deployed") == 1 and results.count("retrying") == failures
    assert upcoming(world)[0].agent is AgentState.DEPLOYED


def test_an_agent_api_outage_that_lasts_gets_only_the_planned_retries_then_fails_once(world):
    results, called_at = deliver_with_backups(world, failures=100)

    # Starts in 2 minutes, joinable until 5 minutes after: calls at 0, 15, 45, 105, 225 s.
    assert gaps(called_at) == [15, 30, 60, 120]
    assert results.count("failed") == 1 and "deployed" not in results
    assert upcoming(world)[0].agent is AgentState.FAILED
