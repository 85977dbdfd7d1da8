"""Recalling an agent already sent to a meeting the user no longer wants it in.

Two ways a deployed agent becomes unwanted before its meeting ends:
- the calendar lets go of the meeting: cancelled, deleted, or moved (a moved meeting is another
  meeting at the new time, which gets its own agent): the meeting store the sync writes through
  (`services.meetings.OnRemoval`, shared/composition.py) asks for a recall when a row whose agent is deployed goes;
- the join decision withdraws it: declined, or skipped by the user or their rules
  (`MeetingLifecycle(recall=RecallService.request)`).

A recall is a queue job (`agent-recalls`) carrying the agent id (the meeting row may be gone by the
time it runs): `DELETE {AGENT_API_URL}/agents/{id}`, 204 or 404 meaning gone (../shared/API.md).
Before calling, the job looks at the meeting again: if the row is back, or still there and the
decision now wants the agent after all, the agent stays. A meeting still listed then shows
`agent: "recalled"`. Failures retry with back-off until the meeting ends; a permanent refusal is
logged as an error (the agent stays, and operators see why).

One chain per agent: asking while a recall of the same agent is queued or retrying (the meeting row's
`recall_queued_at`, refreshed at every retry, younger than `RECALL_MARK`) queues nothing, so a replan
after every sync does not start another chain while the agent API refuses the DELETE. A chain that
ends without recalling (kept, or refused for good) lets the next ask start one; one refused for good
is asked again at most once per `RECALL_MARK`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from shared.agent_states import LIVE, AgentState, check
from shared.autojoin import Decision
from shared.clock import Clock
from shared.ports import AgentApi, Conflict, Meeting, MeetingStore, RecallJob, RecallJobs
from shared.retry import CONFLICT_ATTEMPTS, kept_changing
from shared.scheduling import retry_delay

log = logging.getLogger(__name__)

# A job asking because the row was removed looks after this long, so the removal has been written;
# if the row is still (or again) there, it looks once more before deciding the calendar kept it.
REMOVAL_SETTLE = timedelta(seconds=3)
REMOVED = "removed"
WITHDRAWN = "withdrawn"
# A recall chain's marker older than this is a lost chain (its longest step is the 5-minute back-off cap).
RECALL_MARK = timedelta(minutes=10)


class RecallService:
    def __init__(self, *, meetings: MeetingStore, agents: AgentApi, jobs: RecallJobs, clock: Clock,
                 retry_base_seconds: int = 15, workspace_of: Callable[[str], str | None] | None = None,
                 on_recalled: Callable[[RecallJob], object] | None = None) -> None:
        # A shared workspace agent's recall says so, and its completion frees the meeting for the next
        # owner (shared/services/teams.py).
        self._workspace_of = workspace_of
        self._on_recalled = on_recalled
        self._meetings = meetings
        self._agents = agents
        self._jobs = jobs
        self._clock = clock
        self._retry_base = retry_base_seconds

    def request(self, meeting: Meeting, reason: str = WITHDRAWN) -> bool:
        """Queue the recall of this meeting's deployed agent; False (and nothing queued) when it has
        none to recall (not deployed, already ended) or no id to recall it by (logged as an error)."""
        if meeting.agent not in LIVE or meeting.end <= self._clock.now():
            return False
        ctx = {"user_id": meeting.user_id, "meeting_id": meeting.key, "reason": reason}
        if not meeting.agent_id:
            log.error("agent cannot be recalled: the agent API gave no id for it", extra=ctx)
            return False
        now = self._clock.now()
        if reason != REMOVED:  # a removed row is deleted right after: nothing to mark, and it happens once
            if meeting.recall_queued_at is not None and now - meeting.recall_queued_at < RECALL_MARK:
                return False  # a chain for this agent lives: it recalls it (or says why not)
            try:
                self._meetings.replace(replace(meeting, recall_queued_at=now))
            except Conflict:
                if self._meetings.get(meeting.user_id, meeting.key) is not None:
                    return False  # changed meanwhile: the next replan decides again on what is stored
        delay = REMOVAL_SETTLE if reason == REMOVED else timedelta(0)
        workspace = (self._workspace_of(meeting.user_id) if self._workspace_of is not None else None) or ""
        self._jobs.enqueue(RecallJob(meeting.user_id, meeting.key, meeting.agent_id, meeting.end, reason,
                                     workspace=workspace), delay)
        log.info("agent recall queued", extra=ctx)
        return True

    def recall(self, job: RecallJob, decide: Callable[[Meeting], Decision]) -> str:
        """Run one recall job: "recalled", "kept" (wanted again), "already" (nothing to do),
        "retrying", "ended" or "failed". `decide` is the one join decision on what is stored now."""
        ctx = {"user_id": job.user_id, "meeting_id": job.meeting_key, "attempt": job.attempt}
        now = self._clock.now()
        if job.end <= now:
            log.info("recall dropped: the meeting has ended", extra=ctx)
            return "ended"
        meeting = self._meetings.get(job.user_id, job.meeting_key)
        if meeting is not None:
            if meeting.agent_id != job.agent_id or meeting.agent not in LIVE:
                return "already"  # recalled by an earlier job, or the row holds another agent
            if not decide(meeting).withdraws_agent:
                if job.reason == REMOVED and job.attempt == 1:
                    self._jobs.enqueue(replace(job, attempt=2), REMOVAL_SETTLE)
                    return "retrying"
                log.info("recall cancelled: the agent is wanted again", extra=ctx)
                self._mark(job, None)  # a later change of mind starts a chain of its own
                return "kept"
        result = self._agents.recall(job.agent_id)
        if not result.gone:
            delay = retry_delay(job.attempt, self._retry_base)
            if not result.permanent and now + delay < job.end:
                self._mark(job, now)  # the chain lives on: asking meanwhile queues nothing
                self._jobs.enqueue(replace(job, attempt=job.attempt + 1), delay)
                log.warning("agent recall failed, retrying: %s", result.detail, extra=ctx)
                return "retrying"
            log.error("agent recall failed: %s", result.detail, extra=ctx)
            return "failed"
        self._record(job)
        if self._on_recalled is not None:
            self._on_recalled(job)
        log.info("agent recalled", extra=ctx)
        return "recalled"

    def _mark(self, job: RecallJob, at: datetime | None) -> None:
        """Best effort: the meeting row says since when a chain for this agent lives (None: none)."""
        meeting = self._meetings.get(job.user_id, job.meeting_key)
        if meeting is None or meeting.agent_id != job.agent_id or meeting.recall_queued_at == at:
            return
        try:
            self._meetings.replace(replace(meeting, recall_queued_at=at))
        except Conflict:
            pass  # the next step of the chain (or the next ask) marks it again

    def _record(self, job: RecallJob) -> None:
        for _ in range(CONFLICT_ATTEMPTS):
            meeting = self._meetings.get(job.user_id, job.meeting_key)
            if meeting is None or meeting.agent_id != job.agent_id:
                return  # the meeting left the calendar: nothing to show
            if meeting.agent not in LIVE:
                return  # it ended or was refused meanwhile: that is what it shows
            try:
                self._meetings.replace(replace(meeting, agent=check(meeting.agent, AgentState.RECALLED),
                                               lease_until=None, recalls=meeting.recalls + 1,
                                               recall_queued_at=None))
                return
            except Conflict:
                continue
        raise kept_changing(f"meeting {job.meeting_key}")
