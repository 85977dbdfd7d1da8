"""The agent's progress from "scheduled" to "in the call" (domain level, in memory, controllable clock):
the one transition table, statuses late / repeated / out of order, the lobby nudge, retries and the
readiness check."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.agent_states import TRANSITIONS, AgentState, IllegalTransition, ReportedStatus, check, report_applies
from shared.connections import Plan
from shared.platform_auth import User
from shared.ports import ProgressJob, StatusEventType, SyncJob
from shared.scheduling import idempotency_key
from shared.services.agent_progress import (
    AgentProgress,
    MalformedStatus,
    StatusReport,
    Taken,
    parse_status,
)
from shared.services.autojoin import AutojoinService, Choice
from shared.services.deploy import WATCHDOG_AFTER, DeployService
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.sync import SyncService
from tests import fakes
from tests.fakes_notifications import RecallingAgents
from tests.unit.conftest import build_world, unit_settings
from tests.unit.test_sync_and_deploy import WORK, event

ALICE = User("user-alice", Plan.PRO)
LEAD = 60
NUDGE = 60
RETRY = 120


# ---------------------------------------------------------------- the one table
def test_every_state_has_a_row_and_final_states_lead_nowhere():
    assert set(TRANSITIONS) == {None, *AgentState}
    for final in (AgentState.ENDED, AgentState.FAILED):
        assert TRANSITIONS[final] == frozenset()
    assert TRANSITIONS[AgentState.NOT_ADMITTED] == {AgentState.DEPLOYING}  # only a new try
    with pytest.raises(IllegalTransition):
        check(AgentState.IN_CALL, AgentState.JOINING)
    with pytest.raises(IllegalTransition):
        check(AgentState.ENDED, AgentState.SCHEDULED)


@pytest.mark.parametrize("current, reported, moves", [
    (AgentState.DEPLOYED, "joining", True),
    (AgentState.DEPLOYING, "in_call", True),  # before the agent API's answer is stored
    (AgentState.JOINING, "waiting_for_admission", True),
    (AgentState.IN_CALL, "waiting_for_admission", False),  # late
    (AgentState.IN_CALL, "in_call", False),  # repeated
    (AgentState.IN_CALL, "removed", True),
    (AgentState.ENDED, "in_call", False),
    (AgentState.NOT_ADMITTED, "in_call", False),  # final for the try
    (AgentState.FAILED, "ended", False),
    (AgentState.SCHEDULED, "joining", False),  # nothing was sent
])
def test_within_a_try_a_status_only_moves_the_agent_forward(current, reported, moves):
    assert report_applies(current, 1, ReportedStatus(reported), 1) is moves


def test_an_older_trys_status_never_moves_a_newer_try():
    assert not report_applies(AgentState.DEPLOYED, 2, ReportedStatus.IN_CALL, 1)
    assert report_applies(AgentState.DEPLOYED, 2, ReportedStatus.IN_CALL, 2)


# ---------------------------------------------------------------- the status body
def test_a_status_body_is_checked_field_by_field():
    report = parse_status({"agent_id": "agt_1", "idempotency_key": None, "status": "removed",
                           "at": "2026-03-01T10:02:00Z", "reason": "kicked\u0007 by host"})
    assert (report.status, report.at, report.reason) == (ReportedStatus.REMOVED,
                                                         datetime(2026, 3, 1, 10, 2, tzinfo=UTC), "kicked by host")
    for bad in ([], {"status": "joining", "at": "2026-03-01T10:00:00Z"},
                {"agent_id": "a", "status": "joining", "at": "2026-03-01T10:00:00"},  # no offset
                {"agent_id": "a", "status": "teleported", "at": "2026-03-01T10:00:00Z"},
                {"agent_id": "a", "status": "joining", "at": "2026-03-01T10:00:00Z", "extra": 1},
                {"agent_id": "", "idempotency_key": "k", "status": "joining", "at": "2026-03-01T10:00:00Z"}):
        with pytest.raises(MalformedStatus):
            parse_status(bad)


# ---------------------------------------------------------------- through the services
@dataclass
class Wired:
    world: object
    agents: RecallingAgents
    tries: fakes.AgentTries
    lifecycle: MeetingLifecycle
    sync: SyncService
    deploy: DeployService
    progress: AgentProgress


@pytest.fixture
def w() -> Wired:
    """The production graph (shared/composition.py) over fakes, with an agent API that gives ids."""
    agents = RecallingAgents()
    world = build_world(unit_settings(agent_join_lead_seconds=LEAD, lobby_nudge_seconds=NUDGE,
                                      agent_retry_delay_seconds=RETRY, agent_max_attempts=3,
                                      readiness_check_seconds=600), agents=agents)
    s = world.services
    return Wired(world, agents, world.tries, s.meeting_lifecycle, s.sync, s.deploy, s.agent_progress)


def sent(w: Wired, minutes: int = 1, **extra):
    """A meeting starting in `minutes` (inside the lead: its agent goes at once), deployed."""
    conn = w.world.connect_account(ALICE, WORK).connection
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=minutes, **extra))
    w.sync.sync(SyncJob(ALICE.id, conn.id))
    assert deliver(w) == ["deployed"]
    return conn, only(w)


def deliver(w: Wired) -> list[str]:
    now = w.world.clock.now()
    due = [(j, d) for j, d in w.world.jobs.deploys if d <= timedelta(0) or j.deploy_at <= now]
    w.world.jobs.deploys = [x for x in w.world.jobs.deploys if x not in due]
    return [w.deploy.deploy(j) for j, _ in due]


def only(w: Wired):
    [meeting] = w.world.meetings.list_for_user(ALICE.id, ending_after=w.world.clock.now())
    return meeting


def status(w: Wired, name: str, *, agent_id: str | None = None, key: str | None = None,
           at: datetime | None = None, reason: str | None = None) -> Taken:
    meeting = only(w)
    return w.progress.take(StatusReport(agent_id or (None if key else meeting.agent_id), key, ReportedStatus(name),
                                        at or w.world.clock.now(), reason))


def nudges(w: Wired) -> list[ProgressJob]:
    return [j for j, _ in w.world.jobs.progress if j.kind == "nudge"]


def test_a_status_matched_by_idempotency_key_before_the_answer_is_stored_is_not_lost(w):
    conn = w.world.connect_account(ALICE, WORK).connection
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=1))
    w.sync.sync(SyncJob(ALICE.id, conn.id))
    send = w.agents.deploy

    def reports_while_answering(request):
        # The platform reports joining before the agent API's answer reaches the service.
        assert w.progress.take(StatusReport(None, request.idempotency_key, ReportedStatus.JOINING,
                                            w.world.clock.now(), None)) is Taken.APPLIED
        return send(request)

    w.agents.deploy = reports_while_answering
    assert deliver(w) == ["deployed"]
    meeting = only(w)
    assert meeting.agent is AgentState.JOINING and meeting.agent_id  # not moved back to "deployed"
    assert w.tries.by_agent(meeting.agent_id).attempt == 1


def test_an_unknown_agent_is_not_matched(w):
    sent(w)
    assert status(w, "joining", agent_id="agt_stranger") is Taken.UNKNOWN_AGENT


def test_one_nudge_per_try_however_often_its_job_runs(w):
    sent(w)
    start_wait = w.world.clock.now()
    assert status(w, "waiting_for_admission") is Taken.APPLIED
    assert status(w, "waiting_for_admission") is Taken.IGNORED  # repeated: no second job
    [job] = nudges(w)
    assert w.progress.nudge(job) == "early"  # a job surfacing early looks again later
    w.world.clock.advance(NUDGE)
    assert [w.progress.nudge(job) for _ in range(3)] == ["told", "already", "already"]
    [told] = w.world.events.of_type(StatusEventType.AGENT_WAITING_FOR_ADMISSION)
    assert told.data["waiting_since"] == start_wait.isoformat().replace("+00:00", "Z")
    assert told.data["platform"] == "teams" and told.data["join_url"].startswith("https://teams.microsoft.com/")


def test_an_agent_admitted_before_the_nudge_time_is_never_nudged(w):
    sent(w)
    status(w, "waiting_for_admission")
    w.world.clock.advance(30)
    status(w, "in_call")
    w.world.clock.advance(NUDGE)
    assert [w.progress.nudge(j) for j in nudges(w)] == ["moved_on"]
    assert w.world.events.published == []


def test_a_lobby_timeout_while_the_meeting_is_on_sends_a_new_try_with_its_own_key(w):
    _, first = sent(w, minutes=1)
    status(w, "admission_timeout")
    pending = only(w)
    assert pending.agent is AgentState.NOT_ADMITTED and pending.retry_at == w.world.clock.now() + timedelta(
        seconds=RETRY)
    assert w.world.events.published == []  # a try is left: nobody told yet
    w.agents.ids.clear()  # the next deployment is a new agent, with an id of its own
    w.world.clock.advance(RETRY)
    assert deliver(w) == ["deployed"]
    second = only(w)
    assert second.agent_attempt == 2 and second.agent is AgentState.DEPLOYED
    keys = [c.idempotency_key for c in w.agents.calls]
    assert keys == [idempotency_key(ALICE.id, first.link_key, first.start),
                    idempotency_key(ALICE.id, first.link_key, first.start, attempt=2)]
    assert [c.attempt for c in w.agents.calls] == [1, 2]
    # The first try's late statuses change nothing now.
    assert w.progress.take(StatusReport(first.agent_id, None, ReportedStatus.IN_CALL, w.world.clock.now(),
                                        None)) is Taken.IGNORED


def test_no_try_is_left_after_the_last_one_and_the_user_is_told_once(w):
    sent(w, minutes=1)
    for _ in range(2):
        status(w, "not_admitted")
        w.world.clock.advance(RETRY)
        assert deliver(w) == ["deployed"]
    status(w, "not_admitted", reason="Declined by the organiser")
    final = only(w)
    assert final.agent is AgentState.NOT_ADMITTED and final.retry_at is None and final.agent_attempt == 3
    [told] = w.world.events.of_type(StatusEventType.AGENT_NOT_ADMITTED)
    assert told.data["attempts"] == 3 and "Declined by the organiser" in told.data["reason"]
    assert len(w.agents.calls) == 3


def test_no_new_try_when_the_meeting_ends_before_it_would_go(w):
    ends = w.world.clock.now() + timedelta(minutes=1)
    sent(w, minutes=-4, end={"dateTime": ends.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"})
    status(w, "admission_timeout")
    assert only(w).retry_at is None and len(w.agents.calls) == 1
    assert len(w.world.events.of_type(StatusEventType.AGENT_NOT_ADMITTED)) == 1


def test_no_new_try_once_the_user_skips_the_meeting(w):
    sent(w)
    status(w, "admission_timeout")
    assert only(w).retry_at is not None
    AutojoinService(store=w.world.rules, meetings=w.world.meetings, lifecycle=w.lifecycle,
                    clock=w.world.clock).choose(ALICE.id, only(w).key, Choice(join=False, series=False))
    assert only(w).retry_at is None and only(w).agent is AgentState.NOT_ADMITTED
    w.world.clock.advance(RETRY)
    assert deliver(w) == ["no_try_left"]
    assert len(w.agents.calls) == 1


def test_a_new_try_whose_message_was_lost_is_queued_again_by_the_watchdog(w):
    sent(w, minutes=-3)  # started: its first try went within the grace
    status(w, "admission_timeout")
    w.world.jobs.deploys.clear()  # the retry's message is lost
    w.world.clock.advance(RETRY + 60)
    assert w.deploy.recover_overdue(ALICE.id) == 0  # not overdue yet
    w.world.clock.advance(60)
    assert w.deploy.recover_overdue(ALICE.id) == 1
    assert deliver(w) == ["deployed"] and only(w).agent_attempt == 2  # after the grace, while the meeting is on


def test_a_removed_agent_is_not_sent_again_and_the_user_is_told(w):
    sent(w)
    status(w, "in_call")
    status(w, "removed")
    assert only(w).retry_at is None
    assert len(w.world.events.of_type(StatusEventType.AGENT_NOT_ADMITTED)) == 1


def test_a_failed_agent_tells_the_user(w):
    sent(w)
    status(w, "failed", reason="Meeting link expired")
    assert only(w).agent is AgentState.FAILED
    [told] = w.world.events.of_type(StatusEventType.AGENT_FAILED)
    assert told.data["reason"] == "Meeting link expired"


def test_a_failure_found_twice_is_one_notification_whichever_part_finds_it(w):
    """The agent platform's `failed` and the deployer's own finding (e.g. the meeting ended without a
    verdict) carry one event id: the platform deduplicates, the user is told once."""
    sent(w)
    status(w, "failed", reason="Meeting link expired")
    w.world.health.agent_failed(only(w), "agent_not_started")
    assert len({e.id for e in w.world.events.of_type(StatusEventType.AGENT_FAILED)}) == 1


# ---------------------------------------------------------------- the readiness check
def scheduled(w: Wired, **extra):
    conn = w.world.connect_account(ALICE, WORK).connection
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=120, **extra))
    w.sync.sync(SyncJob(ALICE.id, conn.id))
    [job] = [j for j, _ in w.world.jobs.progress if j.kind == "readiness"]
    return conn, job


def test_a_fine_meeting_is_checked_and_nothing_is_sent(w):
    _, job = scheduled(w)
    assert w.progress.check_readiness(job) == "fine"
    assert w.world.events.published == [] and only(w).at_risk is None


@pytest.mark.parametrize("change, reason", [
    (lambda ev: {**ev, "isCancelled": True}, "event_gone"),
    (lambda ev: {**ev, "start": {**ev["start"], "dateTime": "2030-01-01T10:00:00.0000000"}}, "event_moved"),
    (lambda ev: {**ev, "onlineMeeting": {"joinUrl": "https://zoom.us/j/123456789"}}, "link_changed"),
])
def test_a_meeting_changed_in_outlook_but_not_yet_read_is_at_risk(w, change, reason):
    _, job = scheduled(w)
    w.world.calendar.events["e1"] = change(w.world.calendar.events["e1"])  # no sync has read it yet
    assert w.progress.check_readiness(job) == "at_risk"
    [told] = w.world.events.of_type(StatusEventType.MEETING_AT_RISK)
    assert told.data["reason"] == reason and told.data["title"] == "Meeting e1"
    assert only(w).at_risk == reason


def test_a_meeting_whose_connection_went_to_error_is_at_risk(w):
    conn, job = scheduled(w)
    w.world.connections.update(replace(w.world.connections.get(ALICE.id, conn.id),
                                       status=type(conn.status)("error")))
    assert w.progress.check_readiness(job) == "at_risk"
    assert w.world.events.of_type(StatusEventType.MEETING_AT_RISK)[0].data["reason"] == "connection_error"


def test_microsoft_unreachable_during_the_check_tells_operators_not_the_user(w, caplog):
    _, job = scheduled(w)

    def unreachable(token, event_id):
        raise OSError("connection reset")

    w.world.calendar.event = unreachable
    assert w.progress.check_readiness(job) == "service_trouble"
    assert w.world.events.published == []
    assert any(r.levelname == "ERROR" and "readiness_check_failed" in r.getMessage() for r in caplog.records)


def test_a_check_planned_for_an_earlier_join_time_does_nothing(w):
    _, job = scheduled(w)
    assert w.progress.check_readiness(replace(job, join_at=job.join_at - timedelta(minutes=5))) == "stale"


def test_a_lost_retry_after_the_lobby_is_queued_again_by_the_watchdog_once_without_any_sync(w):
    sent(w, minutes=-3)
    status(w, "not_admitted")
    retry_at = only(w).retry_at
    assert retry_at is not None
    w.world.jobs.deploys.clear()  # the retry's message is lost
    w.world.clock.set(retry_at + WATCHDOG_AFTER - timedelta(seconds=1))
    assert w.deploy.watch().requeued == 0  # not overdue yet: the message may be on its way

    w.world.clock.advance(2)
    assert w.deploy.watch().requeued == 1
    assert w.deploy.watch().requeued == 0  # queued once, however often (or by how many) it is watched
    assert len(w.world.jobs.deploys) == 1
    assert deliver(w) == ["deployed"] and only(w).agent_attempt == 2
    assert w.deploy.watch().looked == 0


def test_the_watchdog_leaves_a_not_admitted_agent_without_a_try_left_or_after_the_meeting(w):
    sent(w, minutes=-3)
    status(w, "not_admitted")
    w.world.jobs.deploys.clear()
    w.world.clock.advance(3600)  # the meeting ended (30 minutes long)
    assert w.deploy.watch().looked == 0
    assert w.world.jobs.deploys == []
