"""One entry and one agent per real meeting (../shared/API.md, "Meetings"): the same Graph iCalUId (an
occurrence: its series' iCalUId and original start), or the same meeting identity read from its link
at overlapping times, across accounts, calendars and link forms. Through the sync, in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.meeting_identity import MeetingIdentity, ical_identity, printed_aliases, same_meeting
from shared.meeting_links import find_meeting_link
from shared.ports import DeployJob, Meeting, Source
from shared.scheduling import AgentState, idempotency_key, meeting_key
from shared.services.autojoin import Choice
from tests.unit.test_sync_and_deploy import ALICE, PERSONAL, WORK, connected, run_due_deploys, sync, upcoming

# Microsoft's own examples: the long form Graph keeps in onlineMeeting.joinUrl, and the short form
# newer invitations print, with the meeting id printed beside it ("Meeting ID: 254 815 338 471 27").
LONG = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NTg0NmQ3NTctZDVkZC00YzRhLThmNmEtOGQ3M2E0ODdmZDZk"
        "%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a%22"
        "bc55b173-cff6-457d-b7a1-64bda7d7581a%22%7d")
SHORT = "https://teams.microsoft.com/meet/25481533847127?p=OEPK9DBvXvWSgYhbBq"
INVITATION = ("<div>Microsoft Teams <a href=\"https://aka.ms/JoinTeamsMeeting?omkt=en-US\">Need help?</a></div>"
              f"<div><a href=\"{LONG}\">Join the meeting now</a></div>"
              "<div>Meeting ID: <span>254 815 338 471 27</span></div><div>Passcode: <span>X9yb2Ed7</span></div>"
              "<div>For organizers: <a href=\"https://teams.microsoft.com/meetingOptions/?organizerId=bc55\">"
              "Meeting options</a></div>")
UID = "040000008200E00074C5B7101A82E00800000000A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718"


def graph_event(world, eid: str, *, minutes=60, length=30, uid: str | None = UID, join: str | None = None,
                body: str = "<p>Agenda</p>", **extra):
    start = world.clock.now() + timedelta(minutes=minutes)
    ev = {
        "id": eid, "subject": "Quarterly review", "type": "singleInstance",
        "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=length)).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                "timeZone": "UTC"},
        "body": {"contentType": "html", "content": body},
    }
    if uid:
        ev["iCalUId"] = uid
    if join:
        ev.update(onlineMeeting={"joinUrl": join}, isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness")
    ev.update(extra)
    return ev


def in_calendar(world, conn_email: str, *events) -> None:
    world.calendar.events = {e["id"]: e for e in events}
    world.calendar.email = conn_email


def two_accounts(world):
    return connected(world, WORK), connected(world, PERSONAL)


def test_the_short_and_long_teams_links_of_one_meeting_make_one_entry_and_one_agent(world):
    a, b = two_accounts(world)
    in_calendar(world, WORK[2], graph_event(world, "in-work", join=LONG))  # nothing in common but the iCalUId
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "in-personal", body=f'<a href="{SHORT}">Join</a>'))
    sync(world, b)
    [meeting] = upcoming(world)
    assert {s.connection_id for s in meeting.sources} == {a.id, b.id}
    assert meeting.join_url.startswith("https://teams.microsoft.com/l/meetup-join/")  # the first copy's link
    world.clock.set(meeting.deploy_at)
    run_due_deploys(world)
    assert len(world.agents.calls) == 1


def test_the_meeting_id_printed_in_the_invitation_ties_the_two_link_forms_without_a_shared_icaluid(world):
    a, b = two_accounts(world)
    in_calendar(world, WORK[2], graph_event(world, "organiser", join=LONG, body=INVITATION))
    sync(world, a)
    # Pasted by hand into the other calendar: its own iCalUId, the short link only, and it starts 5
    # minutes later (the times overlap).
    in_calendar(world, PERSONAL[2], graph_event(world, "pasted", uid="pasted-by-hand-1", minutes=65,
                                                body=f"Join: {SHORT}"))
    sync(world, b)
    assert len(upcoming(world)) == 1


def test_a_standing_zoom_room_used_for_different_meetings_stays_apart(world):
    conn = connected(world)
    room = "https://acme.zoom.us/my/jane.doe?pwd=abc123"
    in_calendar(world, WORK[2],
                graph_event(world, "standup", uid="uid-standup", minutes=60, body=room, subject="Stand-up"),
                graph_event(world, "review", uid="uid-review", minutes=90, body=room, subject="Review"),
                graph_event(world, "tomorrow", uid="uid-tomorrow", minutes=60 + 24 * 60, body=room))
    sync(world, conn)
    assert len(upcoming(world)) == 3  # back to back (60-90, 90-120) and a day later: three meetings


def test_the_same_link_at_overlapping_times_without_an_icaluid_in_common_is_one_meeting(world):
    a, b = two_accounts(world)
    link = "https://us02web.zoom.us/j/85551234567?pwd=Zz9"
    in_calendar(world, WORK[2], graph_event(world, "mine", uid="uid-1", body=link))
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "copy", uid="uid-2", minutes=70, body=link))
    sync(world, b)
    assert len(upcoming(world)) == 1


def test_an_occurrence_in_two_mailboxes_is_one_meeting_by_its_series_icaluid_and_original_start(world):
    a, b = two_accounts(world)
    start = world.clock.now() + timedelta(hours=2)

    def series(master_id: str, occurrence_id: str, link: str):
        master = graph_event(world, master_id, minutes=120, body=f'<a href="{link}">Join</a>', type="seriesMaster",
                             recurrence={"pattern": {"type": "daily", "interval": 1}})
        occurrence = {"id": occurrence_id, "type": "occurrence", "seriesMasterId": master_id,
                      "start": master["start"], "end": master["end"]}  # sparse, as calendarView delta lists it
        return master, occurrence

    in_calendar(world, WORK[2], *series("m-work", "o-work", SHORT))
    sync(world, a)
    in_calendar(world, PERSONAL[2], *series("m-personal", "o-personal", LONG))
    sync(world, b)
    [meeting] = upcoming(world)
    assert meeting.start == start.replace(microsecond=0)
    assert {s.ical for s in meeting.sources} == {f"ical:{UID}@{start:%Y-%m-%dT%H:%M:%SZ}"}


def test_a_choice_and_a_cancellation_follow_the_merged_meeting(world):
    a, b = two_accounts(world)
    in_calendar(world, WORK[2], graph_event(world, "w", join=LONG))
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "p", body=SHORT))
    sync(world, b)
    [meeting] = upcoming(world)
    world.autojoin.choose(ALICE.id, meeting.key, Choice(join=False, series=False))
    assert world.meeting_lifecycle.decide(upcoming(world)[0]).why.value == "skipped_by_you"
    # The organiser cancels: each mailbox's copy goes, and with the last the meeting.
    world.calendar.email = PERSONAL[2]
    world.calendar.add(graph_event(world, "p", body=SHORT, isCancelled=True))
    sync(world, b)
    [still] = upcoming(world)
    assert [s.connection_id for s in still.sources] == [a.id]
    world.calendar.email = WORK[2]
    world.calendar.add(graph_event(world, "w", join=LONG, isCancelled=True))
    sync(world, a)
    assert upcoming(world) == []


def test_an_agent_deployed_before_the_upgrade_is_not_sent_again_when_the_meeting_gains_its_icaluid(world):
    """A row written the old way (keyed by link and start, sources without identities) with its agent
    deployed: syncing the same event, now read with its iCalUId, keeps that row, its key and its
    idempotency key; a second calendar's copy joins it; no second agent."""
    a, b = two_accounts(world)
    ev = graph_event(world, "w", join=LONG, body=INVITATION)
    link = find_meeting_link(ev)
    assert link is not None
    start = world.clock.now() + timedelta(minutes=60)
    old_key = meeting_key(link.key, start)
    world.meetings.create(Meeting(
        user_id=ALICE.id, key=old_key, link_key=link.key, title="Quarterly review", start=start,
        end=start + timedelta(minutes=30), platform="teams", join_url=link.url,
        sources=(Source(a.id, "w", WORK[2]),), agent=AgentState.DEPLOYED, agent_id="agent-1",
        deploy_at=start - timedelta(minutes=2), enqueued_for=start - timedelta(minutes=2)))
    world.index.put(a.id, "w", ALICE.id, old_key, "g0")
    in_calendar(world, WORK[2], ev)
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "p", body=SHORT))
    sync(world, b)
    [meeting] = upcoming(world)
    assert (meeting.key, meeting.link_key, meeting.agent, meeting.agent_id) == (
        old_key, link.key, AgentState.DEPLOYED, "agent-1")
    assert {s.connection_id for s in meeting.sources} == {a.id, b.id}
    assert idempotency_key(ALICE.id, meeting.link_key, meeting.start) == idempotency_key(ALICE.id, link.key, start)
    world.clock.set(start)
    run_due_deploys(world)
    assert world.agents.calls == []


# ---------------------------------------------------------------- the pure function
T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def ident(ical: str | None, link: str, start_minutes: int = 0, length: int = 30, aliases=()) -> MeetingIdentity:
    start = T0 + timedelta(minutes=start_minutes)
    return MeetingIdentity(ical=ical, link=link, start=start, end=start + timedelta(minutes=length),
                           aliases=frozenset(aliases))


def test_same_meeting_needs_a_shared_identity_and_overlapping_times():
    assert same_meeting(ident("ical:A", "teams:x"), ident("ical:A", "teams:meet:1"))
    assert same_meeting(ident("ical:A", "zoom:1"), ident("ical:B", "zoom:1", start_minutes=15))
    assert not same_meeting(ident("ical:A", "zoom:1"), ident("ical:B", "zoom:1", start_minutes=30))  # back to back
    assert not same_meeting(ident("ical:A", "zoom:1"), ident("ical:A", "zoom:1", start_minutes=24 * 60))
    assert not same_meeting(ident("ical:A", "zoom:1"), ident("ical:B", "zoom:2"))
    assert same_meeting(ident(None, "teams:x", aliases=["teams:meet:1"]), ident(None, "teams:meet:1"))
    assert same_meeting(ident(None, "zoom:1", length=0), ident(None, "zoom:1", length=0))


def test_an_occurrence_is_identified_by_its_series_icaluid_and_original_start():
    start = T0 + timedelta(hours=1)
    exception = {"seriesMasterId": "m", "iCalUId": "own", "originalStart": "2026-12-08T09:00:00.0000000Z"}
    assert ical_identity(exception, "SERIES", start) == "ical:SERIES@2026-12-08T09:00:00Z"
    assert ical_identity({"seriesMasterId": "m"}, "SERIES", T0) == "ical:SERIES@2026-12-08T09:00:00Z"
    assert ical_identity({"seriesMasterId": "m", "iCalUId": "own"}, None, T0) == "ical:own"
    # Listed in full without its master (a secondary calendar's calendarView): the series' iCalUId is
    # read from the occurrence's own (Exchange puts the instance date in bytes 16-19 of the series').
    series = "040000008200E00074C5B7101A82E00800000000A1B2C3D4E5F6"
    occurrence = "040000008200E00074C5B7101A82E00807EA0C08A1B2C3D4E5F6"
    listed_in_full = {"seriesMasterId": "m", "iCalUId": occurrence, "originalStart": "2026-12-08T09:00:00Z"}
    assert ical_identity(listed_in_full, None, T0) == ical_identity({"seriesMasterId": "m"}, series, T0)
    assert ical_identity({"iCalUId": "single"}, None, T0) == "ical:single"
    assert ical_identity({}, None, T0) is None


def test_the_teams_meeting_id_printed_in_an_invitation_reads_as_the_short_links_identity():
    assert printed_aliases("teams", [INVITATION]) == {"teams:meet:25481533847127"}
    assert printed_aliases("teams", [f"Join: {SHORT}"]) == {"teams:meet:25481533847127"}
    assert printed_aliases("zoom", [INVITATION]) == frozenset()
    assert printed_aliases("teams", ["Meeting ID: 12"]) == frozenset()


def test_the_readiness_check_knows_a_merged_meeting_by_each_of_its_copies_links(world):
    """The check before an agent goes compares an event's link with the links the meeting's copies
    were read with: the short-link copy of a meeting named by its long link is not "link changed"
    for that; a new link still is."""
    from shared.services.agent_progress import Risk, _event_risk

    a, b = two_accounts(world)
    in_calendar(world, WORK[2], graph_event(world, "w", join=LONG))
    sync(world, a)
    short_copy = graph_event(world, "p", body=SHORT)
    in_calendar(world, PERSONAL[2], short_copy)
    sync(world, b)
    [meeting] = upcoming(world)
    assert meeting.link_key.startswith("teams:19:")  # named by the first copy's (long) link
    assert _event_risk(meeting, short_copy) is None
    moved_room = {**short_copy, "body": {"contentType": "text", "content": "https://us02web.zoom.us/j/85551234567"}}
    assert _event_risk(meeting, moved_room) is Risk.LINK_CHANGED


def test_two_rows_written_before_the_upgrade_for_one_meeting_become_one_and_send_one_agent(world):
    """The old bug's aftermath: the long-link copy and the short-link copy of one meeting in two rows,
    both scheduled, neither sent. Once the upgraded syncs read their iCalUId, they are one meeting
    with one agent; the row that goes had its own deploy message, which then finds nothing to do."""
    a, b = two_accounts(world)
    start = world.clock.now() + timedelta(minutes=60)
    rows = {}
    for conn, email, eid, link_url in ((a, WORK[2], "w", LONG), (b, PERSONAL[2], "p", SHORT)):
        link = find_meeting_link({"body": {"contentType": "text", "content": link_url}})
        assert link is not None
        key = meeting_key(link.key, start)
        rows[eid] = world.meetings.create(Meeting(
            user_id=ALICE.id, key=key, link_key=link.key, title="Quarterly review", start=start,
            end=start + timedelta(minutes=30), platform="teams", join_url=link.url,
            sources=(Source(conn.id, eid, email),), agent=AgentState.SCHEDULED,
            deploy_at=start - timedelta(minutes=2), enqueued_for=start - timedelta(minutes=2)))
        world.index.put(conn.id, eid, ALICE.id, key, "g0")
        world.jobs.deploys.append((DeployJob(ALICE.id, key, start - timedelta(minutes=2)), timedelta(minutes=58)))
    in_calendar(world, WORK[2], graph_event(world, "w", join=LONG))
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "p", body=SHORT))
    sync(world, b)
    [meeting] = upcoming(world)
    assert {s.connection_id for s in meeting.sources} == {a.id, b.id}
    assert meeting.key in {r.key for r in rows.values()} and meeting.agent is AgentState.SCHEDULED
    world.clock.set(start - timedelta(minutes=2))
    run_due_deploys(world)
    assert len(world.agents.calls) == 1


def test_a_merged_meeting_moved_in_both_mailboxes_recalls_its_agent_once_and_sends_one_to_the_new_time():
    """Moving a meeting is another meeting at the new time (API.md "Meetings"); merged across two
    accounts, the old one's agent is recalled once (when its last copy goes), and the new time gets
    one agent, never one per mailbox."""
    from tests.fakes_notifications import RecallingAgents
    from tests.unit.conftest import build_world

    world = build_world(agents=RecallingAgents())
    a, b = two_accounts(world)
    in_calendar(world, WORK[2], graph_event(world, "w", minutes=1, join=LONG))
    sync(world, a)
    in_calendar(world, PERSONAL[2], graph_event(world, "p", minutes=1, body=SHORT))
    sync(world, b)
    assert run_due_deploys(world) == ["deployed"]
    [sent] = upcoming(world)
    world.calendar.email = WORK[2]
    world.calendar.add(graph_event(world, "w", minutes=180, join=LONG))
    sync(world, a)
    assert world.recall_jobs.jobs == []  # the personal copy still holds the old time
    world.calendar.email = PERSONAL[2]
    world.calendar.add(graph_event(world, "p", minutes=180, body=SHORT))
    sync(world, b)
    [recall] = world.recall_jobs.take()
    assert (recall.agent_id, recall.reason) == (sent.agent_id, "removed")
    [moved] = upcoming(world)
    assert {s.connection_id for s in moved.sources} == {a.id, b.id} and moved.agent is AgentState.SCHEDULED
    world.clock.advance(178 * 60)
    assert run_due_deploys(world) == ["deployed"]
    assert len(world.agents.calls) == 2 and world.recall_jobs.jobs == []
