"""Agents recalled from meetings the user no longer wants them in, and meetings booked or moved
inside the lead time (domain level, in memory, controllable clock)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from shared.autojoin import Why
from shared.connections import Plan
from shared.platform_auth import User
from shared.ports import Conflict, DeployJob, RecallResult, SyncJob
from shared.retry import CONFLICT_ATTEMPTS
from shared.scheduling import AgentState
from shared.services.autojoin import AutojoinService, Choice
from shared.services.deploy import DeployService
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.meetings import upcoming
from shared.services.recall import REMOVED, RecallService
from shared.services.sync import SyncService
from tests.fakes_notifications import RecallingAgents, RecallJobsFake
from tests.unit.conftest import build_world, unit_settings
from tests.unit.test_sync_and_deploy import WORK, event

ALICE = User("user-alice", Plan.PRO)
LEAD = 60
GRACE = 300


@dataclass
class Wired:
    world: object
    agents: RecallingAgents
    recall_jobs: RecallJobsFake
    recalls: RecallService
    lifecycle: MeetingLifecycle
    sync: SyncService
    deploy: DeployService
    autojoin: AutojoinService


@pytest.fixture
def w() -> Wired:
    """The production graph (shared/composition.py) over fakes, with an agent API that gives ids;
    lead 60 s, grace 300 s."""
    agents = RecallingAgents()
    world = build_world(unit_settings(agent_join_lead_seconds=LEAD, agent_join_grace_seconds=GRACE), agents=agents)
    s = world.services
    return Wired(world, agents, world.recall_jobs, s.recalls, s.meeting_lifecycle, s.sync, s.deploy, s.autojoin)


def connect(w: Wired):
    conn = w.world.connect_account(ALICE, WORK).connection
    w.world.jobs.syncs.clear()
    return conn


def sync(w: Wired, conn) -> None:
    w.sync.sync(SyncJob(ALICE.id, conn.id))


def deliver_due(w: Wired) -> list[str]:
    now = w.world.clock.now()
    due = [(j, d) for j, d in w.world.jobs.deploys if j.deploy_at <= now or d <= timedelta(0)]
    w.world.jobs.deploys = [x for x in w.world.jobs.deploys if x not in due]
    return [w.deploy.deploy(j) for j, _ in due]


def run_recalls(w: Wired) -> list[str]:
    """Run the queued recall jobs, as the queue would once their delay passed."""
    outcomes = []
    for _ in range(5):
        jobs = w.recall_jobs.take()
        if not jobs:
            break
        outcomes += [w.recalls.recall(j, decide=w.lifecycle.decide) for j in jobs]
    return outcomes


def meetings(w: Wired):
    return upcoming(w.world.meetings, ALICE.id, w.world.clock.now())


def deployed(w: Wired, eid: str, minutes: int = 1):
    """A meeting starting in `minutes` (inside the lead: its agent goes at once), deployed."""
    conn = connect(w)
    w.world.calendar.add(event(w.world, eid, minutes_from_now=minutes))
    sync(w, conn)
    assert deliver_due(w) == ["deployed"]
    [meeting] = meetings(w)
    assert meeting.agent is AgentState.DEPLOYED and meeting.agent_id == w.agents.ids[meeting.key]
    return conn, meeting


# ------------------------------------------------------------------ recall
def test_a_cancelled_meetings_deployed_agent_is_recalled(w):
    conn, meeting = deployed(w, "e1")
    w.world.calendar.add({**w.world.calendar.events["e1"], "isCancelled": True})
    sync(w, conn)
    assert meetings(w) == []  # cancelled meetings leave Upcoming Meetings
    [job] = w.recall_jobs.jobs
    assert (job[0].agent_id, job[0].reason, job[1]) == (meeting.agent_id, REMOVED, timedelta(seconds=3))
    assert run_recalls(w) == ["recalled"]
    assert w.agents.recalls == [meeting.agent_id]


def test_a_meeting_cancelled_while_its_agent_was_being_sent_gets_the_agent_recalled(w):
    conn = connect(w)
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=1))
    sync(w, conn)
    send = w.agents.deploy

    def cancelled_during_the_call(request):
        w.world.calendar.add({**w.world.calendar.events["e1"], "isCancelled": True})
        sync(w, conn)  # a notification-driven sync lands while the agent API answers
        return send(request)

    w.agents.deploy = cancelled_during_the_call
    assert deliver_due(w) == ["deployed"]
    assert meetings(w) == []
    assert run_recalls(w) == ["recalled"] and w.agents.recalls == list(w.agents.ids.values())


def test_a_deleted_meetings_deployed_agent_is_recalled(w):
    conn, meeting = deployed(w, "e1")
    w.world.calendar.remove("e1")
    sync(w, conn)
    assert run_recalls(w) == ["recalled"] and w.agents.recalls == [meeting.agent_id]


def test_a_moved_meeting_recalls_the_agent_at_the_old_time_and_schedules_one_at_the_new(w):
    conn, meeting = deployed(w, "e1")
    moved = event(w.world, "e1", minutes_from_now=90)
    w.world.calendar.add(moved)
    sync(w, conn)
    [now_listed] = meetings(w)
    assert now_listed.start != meeting.start and now_listed.agent is AgentState.SCHEDULED
    assert run_recalls(w) == ["recalled"] and w.agents.recalls == [meeting.agent_id]


def test_a_declined_meeting_recalls_its_agent_and_shows_recalled(w):
    conn, _meeting = deployed(w, "e1")
    w.world.calendar.add({**w.world.calendar.events["e1"], "isOrganizer": False,
                          "organizer": {"emailAddress": {"address": "bob@contoso.com"}},
                          "responseStatus": {"response": "declined"}})
    sync(w, conn)
    assert run_recalls(w) == ["recalled"]
    [shown] = meetings(w)
    assert shown.agent is AgentState.RECALLED and shown.agent.public == "recalled"
    assert w.lifecycle.decide(shown).why is Why.RESPONSE_EXCLUDED


def test_skipping_a_meeting_after_its_agent_went_recalls_it_once(w):
    conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))  # asked twice: queued twice at most
    assert run_recalls(w).count("recalled") == 1
    assert w.agents.recalls == [meeting.agent_id]
    sync(w, conn)  # later syncs and replans ask for nothing more
    assert w.recall_jobs.jobs == [] and meetings(w)[0].agent is AgentState.RECALLED


def test_a_meeting_wanted_again_before_the_recall_runs_keeps_its_agent(w):
    _conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    w.autojoin.choose(ALICE.id, meeting.key, Choice(None, False))  # changed their mind
    assert run_recalls(w) == ["kept"]
    assert w.agents.recalls == [] and meetings(w)[0].agent is AgentState.DEPLOYED


def test_a_recall_the_agent_api_refuses_for_now_is_retried_until_the_meeting_ends(w, caplog):
    _conn, meeting = deployed(w, "e1", minutes=1)
    w.agents.recall_script = [RecallResult(gone=False, detail="HTTP 503")] * 2
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    assert run_recalls(w) == ["retrying", "retrying", "recalled"]
    assert w.agents.recalls == [meeting.agent_id] * 3


def test_replans_while_the_agent_api_refuses_the_delete_keep_one_recall_chain(w):
    conn, meeting = deployed(w, "e1", minutes=1)
    w.agents.recall_script = [RecallResult(gone=False, detail="HTTP 503")] * 4
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    chains = []
    for _ in range(4):  # a sync (and its replan) between every step of the chain
        jobs = w.recall_jobs.take()
        chains.append(len(jobs))
        for job in jobs:
            w.recalls.recall(job, decide=w.lifecycle.decide)
        for _ in range(3):
            sync(w, conn)
        w.world.clock.advance(20)
    assert chains == [1, 1, 1, 1]  # never a second chain for the same agent
    assert run_recalls(w) == ["recalled"]
    assert w.agents.recalls == [meeting.agent_id] * 5
    assert meetings(w)[0].agent is AgentState.RECALLED and meetings(w)[0].recall_queued_at is None


def test_a_recall_refused_for_good_is_logged_as_an_error_not_dropped_silently(w, caplog):
    _conn, meeting = deployed(w, "e1")
    w.agents.recall_script = [RecallResult(gone=False, permanent=True, detail="HTTP 400")]
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    with caplog.at_level(logging.ERROR):
        assert run_recalls(w) == ["failed"]
    assert "agent recall failed: HTTP 400" in caplog.text
    assert meetings(w)[0].agent is AgentState.DEPLOYED  # still there, and the record says so


def test_no_recall_once_the_meeting_has_ended(w):
    _conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    w.world.clock.set(meeting.end + timedelta(seconds=1))
    assert run_recalls(w) == ["ended"] and w.agents.recalls == []


def test_a_recalled_meeting_is_not_deployed_again_by_a_late_message(w):
    _conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    run_recalls(w)
    assert w.deploy.deploy(DeployJob(ALICE.id, meeting.key, meeting.deploy_at)) == "recalled"
    assert len(w.agents.calls) == 1


def test_an_agent_deployed_without_an_id_cannot_be_recalled_and_says_so(w, caplog):
    _conn, meeting = deployed(w, "e1")
    stored = w.world.meetings.get(ALICE.id, meeting.key)
    w.world.meetings.replace(replace(stored, agent_id=None))
    with caplog.at_level(logging.ERROR):
        w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    assert w.recall_jobs.jobs == [] and "cannot be recalled" in caplog.text


# ------------------------------------------------------------------ last-minute meetings
@pytest.mark.parametrize("seconds_before_start, agent_in", [(90, 30), (60, 0), (30, 0), (-120, 0), (-290, 0)])
def test_a_meeting_booked_inside_the_lead_time_gets_its_agent_as_soon_as_possible(w, seconds_before_start,
                                                                                      agent_in):
    conn = connect(w)
    w.world.calendar.add(event(w.world, "late", minutes_from_now=seconds_before_start / 60))
    sync(w, conn)
    [(_, delay)] = w.world.jobs.deploys
    assert delay == timedelta(seconds=agent_in)
    w.world.clock.advance(agent_in)
    assert deliver_due(w) == ["deployed"]


def test_a_meeting_booked_after_its_grace_is_listed_as_too_late_never_skipped_silently(w):
    conn = connect(w)
    w.world.calendar.add(event(w.world, "over", minutes_from_now=-(GRACE + 60) / 60))
    sync(w, conn)
    [shown] = meetings(w)
    decision = w.lifecycle.decide(shown)
    assert (decision.will_join, decision.why) == (False, Why.TOO_LATE)


def test_a_meeting_moved_into_the_lead_time_is_deployed_at_once(w):
    conn = connect(w)
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=120))
    sync(w, conn)
    w.world.calendar.add(event(w.world, "e1", minutes_from_now=0.5))  # moved to start in 30 s
    sync(w, conn)
    due = [d for j, d in w.world.jobs.deploys if j.deploy_at < w.world.clock.now() + timedelta(minutes=1)]
    assert due == [timedelta(0)]
    assert "deployed" in deliver_due(w)


def test_a_meeting_skipped_and_recalled_then_joined_again_gets_a_new_agent(w):
    """The user skips (the agent is recalled), then changes their mind: the page says the agent
    joins, so one must — a new deployment, under a key of its own (the old one would be a 409)."""
    _conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))
    assert run_recalls(w) == ["recalled"]
    w.autojoin.choose(ALICE.id, meeting.key, Choice(True, False))
    assert deliver_due(w) == ["deployed"]
    first, second = w.agents.calls
    assert first.idempotency_key != second.idempotency_key
    [again] = meetings(w)
    assert again.agent is AgentState.DEPLOYED and again.agent_id == w.agents.ids[meeting.key]


def test_a_meeting_row_that_keeps_changing_under_a_recall_gives_up_after_the_shared_budget_naming_it(w):
    """Every read-decide-write loop tries CONFLICT_ATTEMPTS times (shared/retry.py), then raises
    Conflict naming the row: the queue job retries, and the log says which meeting."""
    _conn, meeting = deployed(w, "e1")
    w.autojoin.choose(ALICE.id, meeting.key, Choice(False, False))  # skipped: the agent is called back
    [job] = w.recall_jobs.take()
    w.world.meetings.contended = 100  # another writer wins every write of the row from now on
    with pytest.raises(Conflict, match=f"meeting {meeting.key} kept changing"):
        w.recalls.recall(job, decide=w.lifecycle.decide)
    assert w.world.meetings.lost_writes == CONFLICT_ATTEMPTS
