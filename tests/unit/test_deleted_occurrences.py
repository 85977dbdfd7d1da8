"""Right before an agent is sent, the meeting's own event is read by id, and the deployer fails
closed when Graph says it is gone (404 ErrorItemNotFound, 400
ErrorCalendarOccurrenceIsDeletedFromRecurrence, anything but the event itself): no agent, and the
user is told why. When Graph cannot be reached it fails open: the agent goes and operators are told."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from shared.ports import GraphError, Throttled
from tests.unit.test_sync_and_deploy import _series, connected, sync


def due_now(world) -> list:
    conn = connected(world)
    world.calendar.page_size = 10
    master, occurrences = _series(world, "s9", minutes_from_now=1, days=2)
    for e in (master, *occurrences):
        world.calendar.add(e)
    sync(world, conn)
    return [j for j, _ in world.jobs.deploys if j.deploy_at <= world.clock.now() + timedelta(minutes=1)]


def answering(world, monkeypatch, answer) -> None:
    """Graph's answer to `GET /me/events/{id}` of the meeting's occurrence, from now on."""
    plain = world.calendar.event

    def event(token: str, event_id: str):
        if event_id == "s9-occ0":
            if isinstance(answer, Exception):
                raise answer
            return answer
        return plain(token, event_id)

    monkeypatch.setattr(world.calendar, "event", event)


@pytest.mark.parametrize("answer", [
    None,  # 404 ErrorItemNotFound (the adapter's "missing")
    GraphError(400, "ErrorCalendarOccurrenceIsDeletedFromRecurrence"),
    GraphError(404, "ErrorItemNotFound"),
    {"id": "something-else", "subject": "Not the meeting"},  # anything but the event itself
])
def test_an_occurrence_graph_says_is_gone_gets_no_agent_and_the_user_is_told(world, monkeypatch, answer):
    deploys = due_now(world)
    answering(world, monkeypatch, answer)
    assert [world.deploy.deploy(j, freshen=world.sync.freshen) for j in deploys] == ["meeting_gone"]
    assert world.agents.calls == []
    [told] = [e for e in world.events.published if e.type.value == "com.coagentor.outlook.agent.failed"]
    assert told.data["reason"] == "event_deleted" and told.data["meeting_id"] == deploys[0].meeting_key


@pytest.mark.parametrize("outage", [Throttled(timedelta(seconds=30)), GraphError(503, "ServiceUnavailable")])
def test_when_graph_cannot_be_reached_the_agent_goes_and_operators_are_told(world, monkeypatch, caplog, outage):
    deploys = due_now(world)
    answering(world, monkeypatch, outage)
    with caplog.at_level(logging.ERROR):
        assert [world.deploy.deploy(j, freshen=world.sync.freshen) for j in deploys] == ["deployed"]
    assert len(world.agents.calls) == 1
    assert any(getattr(r, "event", None) == "deploy_unverified" for r in caplog.records)
    assert [e for e in world.events.published if e.type.value == "com.coagentor.outlook.agent.failed"] == []


def test_an_ordinary_cancellation_seen_by_the_delta_round_tells_nobody(world):
    deploys = due_now(world)
    world.calendar.remove("s9-occ0")  # an `@removed` in the next delta round: the calendar says so itself
    assert [world.deploy.deploy(j, freshen=world.sync.freshen) for j in deploys] == ["meeting_gone"]
    assert world.agents.calls == [] and world.events.published == []
