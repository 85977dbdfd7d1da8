"""Meetings as Upcoming Meetings shows them: one per real meeting (`shared.meeting_identity`: the same
iCalUId, or the same meeting identity read from its link at overlapping times), merged across the
user's connections and their calendars, each remembering which calendars' events feed it (a source is
one connection's calendar: a meeting in two selected calendars of one account is one meeting with two
sources)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

from shared.agent_states import AgentState, check
from shared.meeting_identity import MeetingIdentity, same_meeting
from shared.ports import Conflict, DeployJob, EventIndex, JobQueue, Meeting, MeetingStore, Page, ProgressJob, Source
from shared.retry import CONFLICT_ATTEMPTS, kept_changing
from shared.scheduling import enqueue_delay

ANY_CALENDAR = "*"  # detach_source: every calendar of the connection (a disconnect)


def _held_by(source: Source, connection_id: str, calendar_id: str | None) -> bool:
    """Whether the source is that connection's calendar (None: its default calendar; ANY_CALENDAR: any)."""
    return source.connection_id == connection_id and calendar_id in (ANY_CALENDAR, source.calendar_id)


def copy_identity(source: Source, start: datetime, end: datetime, fallback_link: str) -> MeetingIdentity:
    """One calendar copy's identity as stored (a row written before identities were kept stands for
    its meeting's link key)."""
    links = source.links or (fallback_link,)
    return MeetingIdentity(ical=source.ical, link=links[0], start=start, end=end, aliases=frozenset(links[1:]))


def identities(meeting: Meeting) -> list[MeetingIdentity]:
    """Every copy's identity, at the meeting's times: what another copy (or a teammate's meeting,
    for a shared workspace agent) is compared with (`meeting_identity.same_meeting`)."""
    return [copy_identity(s, meeting.start, meeting.end, meeting.link_key) for s in meeting.sources]


def holds(meeting: Meeting, identity: MeetingIdentity) -> bool:
    """The stored meeting is the one this copy belongs to."""
    return any(same_meeting(mine, identity) for mine in identities(meeting))


def attach_source(meetings: MeetingStore, jobs: JobQueue, now: datetime, candidate: Meeting,
                  will_join: Callable[[Meeting], bool], readiness_seconds: int | None = None, *,
                  previous: str | None = None, known: Callable[[], Iterable[Meeting]] | None = None) -> Meeting:
    """Create or merge the meeting for one calendar's event, and schedule its deployment when
    `will_join` (the join decision, see services.meeting_lifecycle) says so, it is within the queue's horizon
    and not scheduled yet. The message is enqueued before the row records it: a crash in between can
    only duplicate a message (the deployer dedupes), never lose one.

    Which meeting: the one this event fed before (`previous`, from the event index), else the one
    named by the candidate's key (the same link at the same start always names the same row, so two
    calendars synced at once meet on one row), else any of the user's meetings (`known`) that holds
    the same meeting (`holds`: the same iCalUId with another link form, the same link at an
    overlapping time); else a new one (two rows two syncs made at once for one meeting are merged
    at the next replan: `MeetingLifecycle._coalesce`). A stored meeting
    keeps its key and identity (`link_key`), so its idempotency key never changes under it. The copy
    that holds the deployment (the first source) says the title, times and join link; another copy
    only adds itself. The caller lets go of `previous` when the answer is another meeting."""
    (source,) = candidate.sources
    mine = copy_identity(source, candidate.start, candidate.end, candidate.link_key)
    for _ in range(CONFLICT_ATTEMPTS):
        current = _target(meetings, candidate, mine, previous, known)
        if current is None:
            fresh = replace(candidate, agent=None, enqueued_for=None)
            fresh = planned(jobs, now, fresh, will_join(fresh), readiness_seconds)
            try:
                return meetings.create(fresh)
            except Conflict:
                continue
        mine_at = [i for i, s in enumerate(current.sources) if _held_by(s, source.connection_id, source.calendar_id)]
        kept = [s for s in current.sources if not _held_by(s, source.connection_id, source.calendar_id)]
        at = min(mine_at[0], len(kept)) if mine_at else len(kept)
        merged = replace(current, sources=(*kept[:at], source, *kept[at:]))
        if at == 0:
            merged = replace(merged, title=candidate.title, start=candidate.start, end=candidate.end,
                             join_url=candidate.join_url, platform=candidate.platform)
            if merged.deploy_at != candidate.deploy_at:
                merged = replace(merged, deploy_at=candidate.deploy_at, enqueued_for=None)
        merged = planned(jobs, now, merged, will_join(merged), readiness_seconds)
        if merged == current:
            return current
        try:
            return meetings.replace(merged)
        except Conflict:
            continue
    raise kept_changing(f"meeting {candidate.key}")


def _target(meetings: MeetingStore, candidate: Meeting, mine: MeetingIdentity, previous: str | None,
            known: Callable[[], Iterable[Meeting]] | None) -> Meeting | None:
    for key in dict.fromkeys(k for k in (previous, candidate.key) if k):
        row = meetings.get(candidate.user_id, key)
        if row is not None and holds(row, mine):
            return row
    for row in known() if known is not None else ():
        if row.key != candidate.key and holds(row, mine):
            fresh = meetings.get(candidate.user_id, row.key)
            if fresh is not None and holds(fresh, mine):
                return fresh
    return None


def planned(jobs: JobQueue, now: datetime, meeting: Meeting, will_join: bool,
            readiness_seconds: int | None = None) -> Meeting:
    """The meeting with its deployment scheduled (`will_join`) or withdrawn (not). A skipped meeting
    keeps the record of a message already queued (`enqueued_for`): if the user changes their mind
    before it surfaces, that message deploys; the deployer finds it unwanted otherwise.
    With `readiness_seconds`, each deploy message comes with a readiness check that many seconds
    before it (shared/services/agent_progress.py), for the same join time."""
    if meeting.agent is AgentState.RECALLED and will_join:
        # Recalled (skipped, declined), then wanted again (joined, accepted): a new agent, a new
        # deployment (the idempotency key counts the recalls), from a new deploy message, tries afresh.
        meeting = replace(meeting, agent=check(meeting.agent, None), enqueued_for=None, agent_id=None,
                          agent_attempt=0, retry_at=None, waiting_since=None, nudged_attempt=0)
    if meeting.deploy_at is None or meeting.agent not in (None, AgentState.SCHEDULED):
        return meeting  # sent, failed, refused or recalled (and not wanted): settled
    if not will_join:
        return meeting if meeting.agent is None else replace(meeting, agent=check(meeting.agent, None))
    if meeting.enqueued_for == meeting.deploy_at:
        scheduled = check(meeting.agent, AgentState.SCHEDULED)
        return meeting if meeting.agent is scheduled else replace(meeting, agent=scheduled)
    delay = enqueue_delay(now, meeting.deploy_at)
    if delay is None:
        return meeting
    if readiness_seconds is not None:
        check_in = delay - timedelta(seconds=readiness_seconds)
        if check_in > timedelta(0):  # a meeting found later than that is checked by the deployer's re-read
            jobs.schedule_progress(ProgressJob("readiness", meeting.user_id, meeting.key, join_at=meeting.deploy_at),
                                   check_in)
    jobs.schedule_deploy(DeployJob(meeting.user_id, meeting.key, meeting.deploy_at, enqueued_at=now), delay)
    return replace(meeting, enqueued_for=meeting.deploy_at, enqueued_at=now,
                   agent=check(meeting.agent, AgentState.SCHEDULED), at_risk=None)


def detach_source(meetings: MeetingStore, user_id: str, key: str, connection_id: str,
                  calendar_id: str | None = ANY_CALENDAR) -> None:
    """This connection's calendar (`calendar_id`: None the default one, ANY_CALENDAR all of them) no
    longer holds the meeting; the meeting goes when no calendar does."""
    _let_go(meetings, user_id, key, lambda s: _held_by(s, connection_id, calendar_id))


def forget_events(meetings: MeetingStore, index: EventIndex, user_id: str, connection_id: str,
                  entries: dict[str, str], calendar_id: str | None = ANY_CALENDAR) -> int:
    """The connection no longer holds these events (event id -> meeting key): their meetings let go
    of it (of its `calendar_id`), and the index forgets them."""
    for event_id, key in entries.items():
        detach_source(meetings, user_id, key, connection_id, calendar_id)
        index.remove(connection_id, event_id)
    return len(entries)


def detach_calendar(meetings: MeetingStore, user_id: str, connection_id: str, calendar_id: str | None,
                    now: datetime, keep: dict[str, str] | None = None) -> int:
    """Every upcoming meeting fed by this connection's calendar (`calendar_id`; None: the default one,
    ANY_CALENDAR: all) lets go of it, except the events in `keep` (event id -> the meeting key they
    feed now). A meeting no other calendar holds goes (its deployed agent is recalled by the store it
    is removed through). Returns how many sources went."""
    gone = 0
    for meeting in meetings.list_for_user(user_id, ending_after=now):
        for source in meeting.sources:
            if not _held_by(source, connection_id, calendar_id):
                continue
            if keep is not None and keep.get(source.event_id) == meeting.key:
                continue
            detach_one(meetings, user_id, meeting.key, source)
            gone += 1
    return gone


def detach_one(meetings: MeetingStore, user_id: str, key: str, source: Source) -> None:
    """One calendar event no longer feeds the meeting."""
    _let_go(meetings, user_id, key,
            lambda s: s.connection_id == source.connection_id and s.event_id == source.event_id)


def _let_go(meetings: MeetingStore, user_id: str, key: str, leaving: Callable[[Source], bool]) -> None:
    """The meeting's sources for which `leaving` is true no longer feed it; it goes when none is left
    (deleted through the store, which recalls a deployed agent). Re-read and retried on a conflict."""
    for _ in range(CONFLICT_ATTEMPTS):
        current = meetings.get(user_id, key)
        if current is None:
            return
        remaining = tuple(s for s in current.sources if not leaving(s))
        if len(remaining) == len(current.sources):
            return
        try:
            if remaining:
                meetings.replace(replace(current, sources=remaining))
            else:
                meetings.delete(current)
            return
        except Conflict:
            continue
    raise kept_changing(f"meeting {key}")


def upcoming(meetings: MeetingStore, user_id: str, now: datetime) -> list[Meeting]:
    return sorted(meetings.list_for_user(user_id, ending_after=now), key=lambda m: (m.start, m.key))


def accounts_of(meeting: Meeting) -> list[str]:
    return sorted({s.email for s in meeting.sources})



class OnRemoval:
    """The meeting store as the sync, a calendar choice and a disconnect write through it: removing a
    meeting row first runs `before_delete(meeting)` (composition: hand a shared workspace meeting
    over, then ask for the agent's recall), then deletes. A hook that fails leaves the row, so the
    retry finds it. Everything else passes through unchanged."""

    def __init__(self, store: MeetingStore, before_delete: Callable[[Meeting], object]) -> None:
        self._store = store
        self._before_delete = before_delete

    def get(self, user_id: str, key: str) -> Meeting | None:
        return self._store.get(user_id, key)

    def list_for_user(self, user_id: str, ending_after: datetime) -> list[Meeting]:
        return self._store.list_for_user(user_id, ending_after)

    def create(self, meeting: Meeting) -> Meeting:
        return self._store.create(meeting)

    def replace(self, meeting: Meeting) -> Meeting:
        return self._store.replace(meeting)

    def delete(self, meeting: Meeting) -> None:
        self._before_delete(meeting)
        self._store.delete(meeting)

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        return self._store.ended_page(cutoff, continuation, size)

    def awaiting_verdict(self, due_before: datetime, ending_after: datetime) -> Iterator[Meeting]:
        return self._store.awaiting_verdict(due_before, ending_after)
