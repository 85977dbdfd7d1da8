"""Join rules and the per-meeting toggle through the services (in memory, controllable clock): what gets
an agent, pending deployments following a change at once, choices that survive re-syncs, moves and
reconnects, and the deployer re-checking right before it calls the agent API."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.autojoin import DEFAULT_RULES, InvalidRules, Why
from shared.connections import ConnectionStatus, Plan
from shared.platform_auth import User
from shared.ports import DeployJob, SyncJob
from shared.scheduling import AgentState
from shared.services.autojoin import Choice, NotASeries
from tests.fakes_notifications import RecallingAgents
from tests.unit.conftest import LEAD, build_world

ALICE = User("user-alice", Plan.PRO)
WORK = ("uid-a.tid-contoso", "tid-contoso", "alice@contoso.com")
TEAMS = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_{}%40thread.v2/0?context="
         "%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%7d")


def event(world, eid, minutes_from_now=60, **extra):
    start = world.clock.now() + timedelta(minutes=minutes_from_now)
    ev = {
        "id": eid, "subject": f"Meeting {eid}", "type": "singleInstance", "isOrganizer": True,
        "responseStatus": {"response": "organizer"},
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "onlineMeeting": {"joinUrl": TEAMS.format(eid.replace("-", ""))},
    }
    ev.update(extra)
    return ev


def invitation(world, eid, organizer="mallory@fabrikam.com", response="notResponded", **extra):
    return event(world, eid, isOrganizer=False, responseStatus={"response": response},
                 organizer={"emailAddress": {"name": "Someone", "address": organizer}}, **extra)


def series(world, eid, days=3, minutes_from_now=60, **master_fields):
    start = world.clock.now() + timedelta(minutes=minutes_from_now)
    master = event(world, eid, minutes_from_now=minutes_from_now, type="seriesMaster",
                   recurrence={"pattern": {"type": "daily"}}, **master_fields)
    occurrences = [occurrence(eid, start + timedelta(days=d), f"{eid}-occ{d}") for d in range(days)]
    return master, occurrences


def occurrence(master_id, start, eid):
    return {"id": eid, "type": "occurrence", "seriesMasterId": master_id,
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                    "timeZone": "UTC"}}


def connected(world, account=WORK):
    conn = world.connect_account(ALICE, account).connection
    world.jobs.syncs.clear()
    world.calendar.page_size = 20
    return conn


def sync(world, conn):
    return world.sync.sync(SyncJob(ALICE.id, conn.id))


def shown(world):
    """Upcoming Meetings as (title, will_join, why, agent)."""
    return [(m.title, d.will_join, d.why, m.agent) for m, d in world.meeting_lifecycle.upcoming(ALICE.id)]


def meeting(world, title):
    return next(m for m, _ in world.meeting_lifecycle.upcoming(ALICE.id) if m.title == title)


def messages(world, title=None):
    keys = {m.key for m, _ in world.meeting_lifecycle.upcoming(ALICE.id) if title is None or m.title == title}
    return [j for j, _ in world.jobs.deploys if j.meeting_key in keys]


def deliver(world, title):
    """The meeting's deploy message surfaces at its time."""
    m = meeting(world, title)
    world.clock.set(m.deploy_at)
    return world.deploy.deploy(DeployJob(ALICE.id, m.key, m.deploy_at))


def rules_with(**changes):
    return {**DEFAULT_RULES.as_json(), **changes}


# ---------------------------------------------------------------- which meetings get an agent
def test_a_strangers_unanswered_invite_is_listed_without_an_agent_until_the_user_accepts_it(world):
    conn = connected(world)
    world.calendar.add(invitation(world, "spam"))
    world.calendar.add(invitation(world, "colleague", organizer="bob@contoso.com"))
    sync(world, conn)
    assert sorted(shown(world)) == [("Meeting colleague", True, Why.RULES, AgentState.SCHEDULED),
                                    ("Meeting spam", False, Why.EXTERNAL_UNANSWERED, None)]
    assert messages(world, "Meeting spam") == []
    world.calendar.add(invitation(world, "spam", response="accepted"))
    sync(world, conn)
    assert ("Meeting spam", True, Why.RULES, AgentState.SCHEDULED) in shown(world)
    assert len(messages(world, "Meeting spam")) == 1
    assert deliver(world, "Meeting spam") == "deployed"


def test_declining_withdraws_the_agent_and_send_my_agent_in_my_place_brings_it_back(world):
    conn = connected(world)
    world.calendar.add(invitation(world, "m", organizer="bob@contoso.com", response="accepted"))
    sync(world, conn)
    world.calendar.add(invitation(world, "m", organizer="bob@contoso.com", response="declined"))
    sync(world, conn)
    assert shown(world) == [("Meeting m", False, Why.RESPONSE_EXCLUDED, None)]
    world.autojoin.set_rules(ALICE.id, rules_with(responses=["organizer", "accepted", "tentative", "not_responded",
                                                             "declined"]))
    assert shown(world) == [("Meeting m", True, Why.RULES, AgentState.SCHEDULED)]
    assert deliver(world, "Meeting m") == "deployed"
    assert [c.title for c in world.agents.calls] == ["Meeting m"]


def test_rules_are_stored_whole_and_refused_with_a_reason(world):
    shown_default = world.autojoin.rules(ALICE.id)
    assert shown_default == replace(DEFAULT_RULES, join_lead_seconds=120)  # the service's default lead, shown
    with pytest.raises(InvalidRules):
        world.autojoin.set_rules(ALICE.id, rules_with(platforms=["teams", "skype"]))
    assert world.autojoin.rules(ALICE.id) == shown_default
    stored = world.autojoin.set_rules(ALICE.id, rules_with(external_invites="skip", platforms=["zoom"]))
    assert world.autojoin.rules(ALICE.id) == stored
    assert stored.as_json()["platforms"] == ["zoom"]


# ---------------------------------------------------------------- a change applies at once
def test_a_rule_change_schedules_and_withdraws_pending_deployments_at_once(world):
    conn = connected(world)
    world.calendar.add(invitation(world, "external"))
    world.calendar.add(event(world, "zoom", onlineMeeting=None,
                             location={"displayName": "https://contoso.zoom.us/j/81234567890"}))
    sync(world, conn)
    assert messages(world, "Meeting external") == [] and len(messages(world, "Meeting zoom")) == 1

    world.autojoin.set_rules(ALICE.id, rules_with(external_invites="join", platforms=["teams"]))  # no sync
    assert sorted(shown(world)) == [("Meeting external", True, Why.RULES, AgentState.SCHEDULED),
                                    ("Meeting zoom", False, Why.PLATFORM_EXCLUDED, None)]
    assert len(messages(world, "Meeting external")) == 1
    # The Zoom meeting's message is still queued: when it surfaces it finds the meeting unwanted.
    assert deliver(world, "Meeting zoom") == "platform_excluded"
    assert world.agents.calls == []


def test_changing_ones_mind_before_the_queued_message_surfaces_needs_no_new_message(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    key = meeting(world, "Meeting m").key
    world.autojoin.choose(ALICE.id, key, Choice(join=False, series=False))
    world.autojoin.choose(ALICE.id, key, Choice(join=None, series=False))
    assert len(messages(world)) == 1  # the first message still stands
    assert shown(world) == [("Meeting m", True, Why.RULES, AgentState.SCHEDULED)]
    assert deliver(world, "Meeting m") == "deployed"


def test_a_meeting_joined_after_its_message_was_dropped_gets_a_new_one(world):
    conn = connected(world)
    world.calendar.add(event(world, "m", minutes_from_now=30))
    sync(world, conn)
    key = meeting(world, "Meeting m").key
    world.autojoin.choose(ALICE.id, key, Choice(join=False, series=False))
    assert deliver(world, "Meeting m") == "skipped_by_you"  # the message is used up
    world.jobs.deploys.clear()
    m, d = world.autojoin.choose(ALICE.id, key, Choice(join=True, series=False))
    assert (d.will_join, d.why, m.agent) == (True, Why.JOINED_BY_YOU, AgentState.SCHEDULED)
    assert [j.meeting_key for j in messages(world)] == [key]
    assert world.deploy.deploy(messages(world)[0]) == "deployed"


def test_the_deployer_decides_again_right_before_calling_the_agent_api(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    m = meeting(world, "Meeting m")
    world.clock.set(m.deploy_at)

    def a_skip_arrives_while_the_calendars_are_read(_):
        world.autojoin.choose(ALICE.id, m.key, Choice(join=False, series=False))

    assert world.deploy.deploy(DeployJob(ALICE.id, m.key, m.deploy_at),
                               freshen=a_skip_arrives_while_the_calendars_are_read) == "skipped_by_you"
    assert world.agents.calls == []
    assert shown(world) == [("Meeting m", False, Why.SKIPPED_BY_YOU, None)]


def test_a_connection_in_error_gets_no_agent_and_reconnecting_schedules_it_again(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    broken = replace(world.connections.get(ALICE.id, conn.id), status=ConnectionStatus.ERROR,
                     reason_code="access_revoked")
    world.connections.update(broken)
    assert shown(world) == [("Meeting m", False, Why.CONNECTION_ERROR, AgentState.SCHEDULED)]
    assert deliver(world, "Meeting m") == "connection_error"
    world.jobs.deploys.clear()
    world.clock.set(world.clock.now() - timedelta(seconds=60))  # before the deploy time again
    world.connect_account(ALICE, WORK, reconnect=conn.id)
    sync(world, conn)
    assert shown(world) == [("Meeting m", True, Why.RULES, AgentState.SCHEDULED)]
    assert len(messages(world)) == 1


# ---------------------------------------------------------------- choices per meeting and per series
def test_a_skipped_meeting_stays_skipped_through_resyncs_a_move_and_a_reconnect(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    m, d = world.autojoin.choose(ALICE.id, meeting(world, "Meeting m").key, Choice(join=False, series=False))
    assert (d.will_join, d.why, m.agent) == (False, Why.SKIPPED_BY_YOU, None)
    world.states.rows.clear()  # the next sync is a full one
    sync(world, conn)
    assert shown(world) == [("Meeting m", False, Why.SKIPPED_BY_YOU, None)]
    world.calendar.add(event(world, "m", minutes_from_now=90))  # the organiser moves it
    sync(world, conn)
    assert [(s[1], s[2]) for s in shown(world)] == [(False, Why.SKIPPED_BY_YOU)]
    assert meeting(world, "Meeting m").start == world.clock.now() + timedelta(minutes=90)
    world.connect_account(ALICE, WORK, reconnect=conn.id)
    sync(world, conn)
    assert [(s[1], s[2]) for s in shown(world)] == [(False, Why.SKIPPED_BY_YOU)]
    world.clock.set(meeting(world, "Meeting m").start - timedelta(seconds=LEAD))
    for job, _ in list(world.jobs.deploys):
        world.deploy.deploy(job)
    assert world.agents.calls == []


def test_skipping_a_series_skips_every_occurrence_present_and_future(world):
    conn = connected(world)
    master, occs = series(world, "weekly")
    for e in (master, *occs):
        world.calendar.add(e)
    sync(world, conn)
    first = min(m.start for m, _ in world.meeting_lifecycle.upcoming(ALICE.id))
    key = next(m.key for m, _ in world.meeting_lifecycle.upcoming(ALICE.id) if m.start == first)
    _, d = world.autojoin.choose(ALICE.id, key, Choice(join=False, series=True))
    assert (d.will_join, d.why) == (False, Why.SERIES_SKIPPED_BY_YOU)
    assert {(s[1], s[2], s[3]) for s in shown(world)} == {(False, Why.SERIES_SKIPPED_BY_YOU, None)}
    # A later occurrence that appears with the next sync is skipped too.
    world.calendar.add(occurrence("weekly", first + timedelta(days=5), "weekly-occ5"))
    sync(world, conn)
    assert len(shown(world)) == 4
    assert {(s[1], s[2]) for s in shown(world)} == {(False, Why.SERIES_SKIPPED_BY_YOU)}


def test_joining_one_occurrence_of_a_skipped_series_makes_an_exception_and_the_series_can_go_back(world):
    conn = connected(world)
    master, occs = series(world, "standup", **{"isOrganizer": False, "responseStatus": {"response": "declined"},
                                               "organizer": {"emailAddress": {"address": "bob@contoso.com"}}})
    for e in (master, *occs):
        world.calendar.add(e)
    sync(world, conn)
    meetings = [m for m, _ in world.meeting_lifecycle.upcoming(ALICE.id)]
    assert {(s[1], s[2]) for s in shown(world)} == {(False, Why.RESPONSE_EXCLUDED)}
    world.autojoin.choose(ALICE.id, meetings[0].key, Choice(join=True, series=True))
    assert {(s[1], s[2]) for s in shown(world)} == {(True, Why.JOINED_BY_YOU)}
    world.autojoin.choose(ALICE.id, meetings[1].key, Choice(join=False, series=False))
    assert [(s[1], s[2]) for s in shown(world)] == [(True, Why.JOINED_BY_YOU), (False, Why.SKIPPED_BY_YOU),
                                                    (True, Why.JOINED_BY_YOU)]
    # Skipping the series again overrides the earlier single choices; back to the rules clears it all.
    world.autojoin.choose(ALICE.id, meetings[2].key, Choice(join=False, series=True))
    assert {(s[1], s[2]) for s in shown(world)} == {(False, Why.SERIES_SKIPPED_BY_YOU)}
    world.autojoin.choose(ALICE.id, meetings[1].key, Choice(join=None, series=True))
    assert {(s[1], s[2]) for s in shown(world)} == {(False, Why.RESPONSE_EXCLUDED)}
    assert world.rules.overrides(ALICE.id) == []


def test_a_choice_for_a_single_meeting_cannot_be_for_its_series_and_unknown_meetings_are_not_found(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    with pytest.raises(NotASeries):
        world.autojoin.choose(ALICE.id, meeting(world, "Meeting m").key, Choice(join=False, series=True))
    assert world.rules.overrides(ALICE.id) == []
    assert world.autojoin.choose(ALICE.id, "no-such-meeting", Choice(join=False, series=False)) is None
    assert world.autojoin.choose("someone-else", meeting(world, "Meeting m").key,
                                 Choice(join=False, series=False)) is None


def test_choices_for_meetings_long_ended_are_purged(world):
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    world.autojoin.choose(ALICE.id, meeting(world, "Meeting m").key, Choice(join=False, series=False))
    assert len(world.rules.overrides(ALICE.id)) == 1
    world.clock.advance(3 * 86400)
    world.meeting_lifecycle.replan(ALICE.id)
    assert world.rules.overrides(ALICE.id) == []


def test_skipping_a_meeting_whose_agent_was_sent_asks_for_a_recall():
    world = build_world(agents=RecallingAgents())
    conn = connected(world)
    world.calendar.add(event(world, "m"))
    sync(world, conn)
    assert deliver(world, "Meeting m") == "deployed"
    sent = meeting(world, "Meeting m")
    world.autojoin.choose(ALICE.id, sent.key, Choice(join=False, series=False))
    [job] = world.recall_jobs.take()
    assert (job.meeting_key, job.agent_id, job.reason) == (sent.key, sent.agent_id, "withdrawn")
    assert meeting(world, "Meeting m").agent is AgentState.DEPLOYED  # until the recall job has run
