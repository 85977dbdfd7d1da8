"""The deployment watchdog (issue 19): a meeting whose deploy message went missing (lost, expired,
or taken by an instance that crashed, which keeps it invisible for 10 minutes) is queued again from
the meetings themselves, without a sync of that user, once, however many instances watch."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from shared.adapters.queues import decode_deploy, encode_deploy
from shared.agent_states import AgentState
from shared.services.deploy import WATCHDOG_AFTER
from shared.triggers.views import meeting_view
from tests.unit.test_sync_and_deploy import connected, event, sync, upcoming


def scheduled(world, minutes: int = 60):
    """A meeting that will be joined, its deploy message queued and then lost (never delivered)."""
    conn = connected(world)
    world.calendar.add(event(world, "e1", minutes_from_now=minutes))
    sync(world, conn)
    [(job, _)] = world.jobs.deploys
    world.jobs.deploys.clear()  # the message is gone: the instance holding it died
    return job


def test_a_lost_deploy_message_is_queued_again_by_the_watchdog_without_any_sync(world):
    job = scheduled(world)
    world.clock.set(job.deploy_at + WATCHDOG_AFTER - timedelta(seconds=1))
    assert world.deploy.watch().requeued == 0  # not overdue yet: the message may be on its way
    assert world.jobs.deploys == []

    world.clock.advance(2)
    report = world.deploy.watch()

    assert (report.looked, report.requeued) == (1, 1)
    [(again, delay)] = world.jobs.deploys
    assert (again.meeting_key, delay) == (job.meeting_key, timedelta(0))
    assert world.deploy.deploy(again) == "deployed"
    assert upcoming(world)[0].agent is AgentState.DEPLOYED
    assert world.deploy.watch().looked == 0  # a verdict: nothing more to watch


def test_a_meeting_queued_again_after_its_planned_time_is_shown_and_told_as_late_once(world):
    job = scheduled(world)
    world.clock.set(job.deploy_at + WATCHDOG_AFTER + timedelta(seconds=1))
    world.deploy.watch()
    world.jobs.deploys.clear()
    world.clock.advance(WATCHDOG_AFTER.total_seconds() + 1)
    world.deploy.watch()  # queued again a second time: told once

    [meeting] = upcoming(world)
    view = meeting_view(meeting, world.meeting_lifecycle.decide(meeting))
    assert view["agent"] == "scheduled" and view["at_risk"]["reason"] == "late"
    assert "late" in view["at_risk"]["text"].lower()
    told = [e for e in world.events.published if e.type.value == "com.coagentor.outlook.meeting.at_risk"]
    assert [e.data["reason"] for e in told] == ["late"]


def test_two_instances_watching_at_once_queue_it_once(world):
    job = scheduled(world)
    world.clock.set(job.deploy_at + WATCHDOG_AFTER + timedelta(seconds=1))
    stale = list(world.meetings.awaiting_verdict(world.clock.now(), world.clock.now()))
    assert world.deploy.watch().requeued == 1
    # The other instance read the rows before this one claimed the meeting: its claim loses.
    world.meetings.awaiting_verdict = lambda due_before, ending_after: iter(stale)  # type: ignore[method-assign]
    assert world.deploy.watch().requeued == 0
    assert len(world.jobs.deploys) == 1


def test_watching_again_later_queues_again_only_after_another_period(world):
    job = scheduled(world)
    world.clock.set(job.deploy_at + WATCHDOG_AFTER + timedelta(seconds=1))
    assert world.deploy.watch().requeued == 1
    world.jobs.deploys.clear()  # lost again
    world.clock.advance(WATCHDOG_AFTER.total_seconds() - 5)
    assert world.deploy.watch().requeued == 0
    world.clock.advance(10)
    assert world.deploy.watch().requeued == 1


def test_a_meeting_the_watchdog_finds_too_late_is_recorded_missed_and_the_user_told(world):
    scheduled(world, minutes=60)
    [meeting] = list(world.meetings.rows.values())
    world.clock.set(meeting.start + timedelta(minutes=10))  # past the grace, before it ends

    assert world.deploy.watch().requeued == 1

    [shown] = upcoming(world)
    assert shown.agent is AgentState.FAILED
    assert [e.type.value for e in world.events.published] == ["com.coagentor.outlook.agent.failed"]


def test_a_deploy_message_and_its_backup_copy_travel_through_the_queue_and_the_copy_never_waits(world):
    job = scheduled(world)
    backup = decode_deploy(encode_deploy(replace(job, backup=True)))
    assert backup.backup is True and decode_deploy(encode_deploy(job)).backup is False
    # Both name the row's `enqueued_at` they were queued with: a later message's row makes them do nothing.
    assert job.enqueued_at is not None and decode_deploy(encode_deploy(job)) == job
    assert backup.enqueued_at == job.enqueued_at
    world.clock.set(job.deploy_at - timedelta(minutes=5))  # surfaced early (a later join lead, say)
    assert world.deploy.deploy(backup) == "waiting"
    assert world.jobs.deploys == []  # the copy does not re-queue itself: the message waits
    assert world.deploy.deploy(job) == "waiting"
    assert len(world.jobs.deploys) == 1
