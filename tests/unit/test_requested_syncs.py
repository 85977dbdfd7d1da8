"""Requested syncs are level-triggered, bounded and owned (issue 19): a notification that meets a
running sync is read, duplicates collapse, no stale marker mutes notifications, and a sync that meets
a passing failure retries as one chain with capped back-off, then gives up and says so."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from shared.adapters import telemetry as t
from shared.ports import SyncJob, SyncOutcome, TokenError
from shared.services.notifications import SyncRequests
from shared.services.sync import NOTIFIED, SYNC_RETRY
from tests.unit.test_sync_and_deploy import ALICE, WORK, connected, event, sync, upcoming


def notify(world, conn) -> bool:
    """What a genuine change notification does for the connection (NotificationService)."""
    return SyncRequests(sync_state=world.states, jobs=world.jobs, clock=world.clock).request(ALICE.id, conn.id)


def run_queued_syncs(world) -> list[SyncOutcome]:
    """Deliver every queued sync job (whatever its delay), as the queue would, until none is left."""
    outcomes = []
    for _ in range(20):
        if not world.jobs.syncs:
            return outcomes
        job, _delay = world.jobs.syncs.pop(0)
        outcomes.append(world.sync.sync(job).outcome)
    raise AssertionError("sync jobs keep queuing each other")


def test_a_notification_that_meets_a_running_sync_is_read_not_dropped(world):
    conn = connected(world)
    sync(world, conn)
    world.calendar.add(event(world, "before"))
    world.clock.advance(60)
    assert notify(world, conn)
    original = world.calendar.delta_next

    def a_change_lands_while_the_round_reads(token, link):
        page = original(token, link)
        if not world.calendar.events.get("during"):
            world.clock.advance(5)
            world.calendar.add(event(world, "during"))  # after this round read the calendar
            assert notify(world, conn) is False  # a sync is queued/running: only announced
        return page

    world.calendar.delta_next = a_change_lands_while_the_round_reads
    outcomes = run_queued_syncs(world)

    assert outcomes[0] is SyncOutcome.SYNCED
    assert [m.title for m in upcoming(world)] == ["Meeting before", "Meeting during"]
    assert world.states.queued.get(conn.id) is None  # nothing left muting the next notification
    world.clock.advance(5)
    assert notify(world, conn) is True


def test_repeated_notifications_collapse_into_one_sync_and_a_duplicate_reads_nothing(world):
    conn = connected(world)
    sync(world, conn)
    world.clock.advance(60)
    asked = [notify(world, conn) for _ in range(5)]
    assert asked == [True, False, False, False, False]
    [(job, _)] = world.jobs.syncs
    assert world.sync.sync(job).outcome is SyncOutcome.SYNCED

    # Graph delivers a notification twice: the late copy's job finds its change read already.
    calls = len(world.calendar.calls)
    duplicate = world.sync.sync(SyncJob(ALICE.id, conn.id, reason=NOTIFIED))
    assert duplicate.outcome is SyncOutcome.UP_TO_DATE
    assert len(world.calendar.calls) == calls  # no Graph request for it


def _token_endpoint_down(world) -> None:
    world.identity.refresh_errors[WORK[0]] = TokenError("server_error", "", (90033,))
    world.identity.acquire = lambda cache, home_account_id, *, force_refresh: world.identity.refresh_errors[WORK[0]]


def test_a_requested_sync_meeting_a_token_outage_is_one_chain_with_capped_back_off_then_gives_up(world, caplog):
    conn = connected(world)
    _token_endpoint_down(world)
    assert notify(world, conn)
    delays, outcomes = [], []
    with caplog.at_level(logging.INFO):
        for _ in range(SYNC_RETRY.attempts or 0):
            [(job, delay)] = world.jobs.syncs  # one chain: never two jobs for the connection
            world.jobs.syncs.clear()
            delays.append(delay.total_seconds())
            for _ in range(3):
                assert notify(world, conn) is False  # notifications meanwhile start no chain of their own
            world.clock.advance(max(delay.total_seconds(), 1))
            outcomes.append(world.sync.sync(job).outcome)

    assert delays == [0, 30, 60, 120, 240, 300]
    assert outcomes[:-1] == [SyncOutcome.NO_TOKEN_TRANSIENT] * 5 and outcomes[-1] is SyncOutcome.GAVE_UP
    assert world.jobs.syncs == []  # bounded: given up
    [gave_up] = [r for r in caplog.records if r.getMessage().startswith("sync_gave_up")]
    assert gave_up.levelno == logging.ERROR and getattr(gave_up, "connection_id", None) == conn.id
    assert t.sync_result(SyncOutcome.GAVE_UP) == t.SYNC_FAILED  # and the failure-rate alert counts it
    assert notify(world, conn) is True  # the next notification starts afresh


def test_a_sync_that_cannot_claim_the_connection_leaves_the_change_to_the_holder_and_one_look(world):
    conn = connected(world)
    sync(world, conn)
    world.clock.advance(60)
    original = world.calendar.delta_next
    busy = []

    def another_request_meets_this_run(token, link):
        if not busy:
            world.clock.advance(1)
            world.calendar.add(event(world, "late"))
            assert notify(world, conn)  # a scan holds the connection: no requested sync yet, so one queues
            [(job, _)] = world.jobs.syncs
            world.jobs.syncs.clear()
            busy.append(world.sync.sync(job).outcome)  # delivered while the scan still runs
        return original(token, link)

    world.calendar.delta_next = another_request_meets_this_run
    assert sync(world, conn).outcome is SyncOutcome.SYNCED
    assert busy == [SyncOutcome.BUSY]
    reasons = sorted(j.reason for j, _ in world.jobs.syncs)
    assert reasons == ["busy", NOTIFIED]  # the holder's follow-up, and the busy job's one late look
    outcomes = run_queued_syncs(world)
    assert [m.title for m in upcoming(world)] == ["Meeting late"]
    assert sorted(outcomes) == sorted([SyncOutcome.SYNCED, SyncOutcome.UP_TO_DATE])  # the late look reads nothing
    assert world.jobs.syncs == []


@pytest.mark.parametrize("outcome", list(SyncOutcome))
def test_every_sync_outcome_has_an_operator_reading_and_a_raced_sync_is_no_failure(outcome):
    assert t.sync_result(outcome) in (t.OK, t.DEFERRED, t.USER, t.SYNC_FAILED)
    assert t.sync_result(SyncOutcome.RACED) == t.DEFERRED
    assert t.sync_result(SyncOutcome.UP_TO_DATE) == t.OK


def test_the_sync_job_carries_its_attempt_through_the_queue():
    from shared.adapters.queues import decode_sync, encode_sync

    job = SyncJob(ALICE.id, "conn-1", reason=NOTIFIED, attempt=4)
    assert decode_sync(encode_sync(job)) == job
    assert decode_sync('{"user_id": "u", "connection_id": "c"}').attempt == 1  # messages from before
    assert timedelta(0) < SYNC_RETRY.delay(1)
