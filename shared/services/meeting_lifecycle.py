"""A meeting's life, in one place: where to look for "will this meeting get an agent, and when?".

1. attach - the sync turns a calendar event with a join link into a meeting, one per (link, start)
   across the user's calendars, each source carrying what its calendar says (RSVP, external
   organiser, series): `SyncService._apply` -> `services.meetings.attach_source`.
2. decide - `JoinContext.decide` gathers the user's join rules, their choices (per meeting, per
   series) and which calendars are Active, and asks the one pure decision, `shared.autojoin.decide`.
3. schedule - a meeting that will be joined gets a deploy message hidden until start - lead
   (`services.meetings.planned`); one that will not keeps no SCHEDULED agent. `MeetingLifecycle.replan`
   applies the decision to all of a user's upcoming meetings at once: after every sync, and right
   after a rule or choice changes (no wait for the next scan).
4. claim, call, record - when the message surfaces, `DeployService.deploy` decides again (fresh
   rules, choices and connections, after reading the calendars once more), claims the meeting row,
   calls the agent API, records the outcome.
5. recall - a deployed agent whose meeting the user then declines or skips (by a choice or the rules)
   is recalled: `MeetingLifecycle(recall=...)` is wired to `services.recall.RecallService.request`
   (a queued `DELETE /agents/{id}`); one the calendar cancels, deletes or moves is recalled as its
   row goes (`services.meetings.OnRemoval`, wired in shared/composition.py). The meeting then
   shows `agent: "recalled"`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.agent_states import LIVE, SENT, AgentState, check
from shared.autojoin import (
    DEFAULT_RULES,
    Decision,
    JoinRules,
    MeetingFacts,
    Override,
    combined_response,
    decide,
    newest,
)
from shared.clock import Clock
from shared.meeting_identity import same_meeting
from shared.ports import (
    Conflict,
    ConnectionStore,
    JobQueue,
    JoinRulesStore,
    Meeting,
    MeetingStore,
    StoredOverride,
    TeamClaims,
)
from shared.retry import CONFLICT_ATTEMPTS
from shared.scheduling import deploy_at
from shared.services.meetings import identities, planned
from shared.teams import teammate_decision

if TYPE_CHECKING:
    from shared.services.teams import TeamService

log = logging.getLogger(__name__)

# An occurrence's choice is kept this long after its meeting ended, then purged.
_KEEP_ENDED_CHOICES = timedelta(days=1)


def facts_of(meeting: Meeting) -> MeetingFacts:
    """One meeting from all the calendars holding it: the user's most committed answer; external
    only when every calendar sees an outside organiser; a series when any calendar has it as one;
    solo only when no calendar shows anyone else. Where copies disagree on sensitivity, free/busy
    or all-day, the copy that holds the deployment (the first source) decides."""
    holder = meeting.sources[0] if meeting.sources else None
    return MeetingFacts(
        platform=meeting.platform,
        start=meeting.start,
        response=combined_response(s.response for s in meeting.sources),
        external=all(s.external for s in meeting.sources),
        series=any(s.series_id for s in meeting.sources),
        private=bool(holder and holder.private),
        all_day=bool(holder and holder.all_day),
        solo=bool(meeting.sources) and all(s.solo for s in meeting.sources),
        free=bool(holder and holder.free),
    )


def applies_to(choice: StoredOverride, meeting: Meeting) -> bool:
    """A choice follows its calendar's event (or series) id, not the meeting's start or link."""
    for s in meeting.sources:
        if s.connection_id != choice.connection_id:
            continue
        if choice.target_id == (s.series_id if choice.series else s.event_id):
            return True
    return False


@dataclass(frozen=True)
class JoinContext:
    """Everything besides the meeting that the decision needs, read once for a user."""

    rules: JoinRules
    choices: tuple[StoredOverride, ...]
    active_connections: frozenset[str]
    grace: timedelta
    lead_seconds: int = 120  # the service's AGENT_JOIN_LEAD_SECONDS, unless the rules say otherwise
    team: TeamClaims | None = None  # the user's workspace when it shares agents (API.md "Teams")

    def join_at(self, start: datetime) -> datetime:
        """When the agent is sent: start - the user's join_lead_seconds (else the service's)."""
        return deploy_at(start, self.rules.lead_seconds(self.lead_seconds))

    def decide(self, meeting: Meeting, now: datetime) -> Decision:
        choice = newest(Override(c.join, c.series, c.set_at) for c in self.choices if applies_to(c, meeting))
        return decide(
            facts_of(meeting), self.rules, choice,
            any_active_connection=any(s.connection_id in self.active_connections for s in meeting.sources),
            agent_sent=meeting.agent in SENT,
            now=now, grace=self.grace,
        )


@dataclass
class ReplanReport:
    meetings: int = 0
    scheduled: int = 0  # newly given a deploy message or a SCHEDULED agent
    unscheduled: int = 0  # a SCHEDULED agent withdrawn before it was sent
    to_recall: int = 0  # deployed agents the decision now withdraws


class MeetingLifecycle:
    def __init__(
        self,
        *,
        meetings: MeetingStore,
        connections: ConnectionStore,
        rules: JoinRulesStore,
        jobs: JobQueue,
        clock: Clock,
        grace_seconds: int,
        recall: Callable[[Meeting], object] | None = None,
        lead_seconds: int = 120,
        readiness_seconds: int | None = None,
        teams: TeamService | None = None,
    ) -> None:
        self._teams = teams
        self._lead = lead_seconds
        self._readiness = readiness_seconds  # READINESS_CHECK_SECONDS; None: no readiness checks
        self._meetings = meetings
        self._connections = connections
        self._rules = rules
        self._jobs = jobs
        self._clock = clock
        self._grace = timedelta(seconds=grace_seconds)
        self._recall = recall

    def context(self, user_id: str) -> JoinContext:
        return JoinContext(
            rules=self._rules.get_rules(user_id) or DEFAULT_RULES,
            choices=tuple(self._rules.overrides(user_id)),
            active_connections=frozenset(c.id for c in self._connections.list_for_user(user_id) if c.is_active),
            grace=self._grace,
            lead_seconds=self._lead,
            team=self._teams.workspace_of(user_id) if self._teams is not None else None,
        )

    @property
    def context_lead_seconds(self) -> int:
        """The service's AGENT_JOIN_LEAD_SECONDS (a user's join rules may say otherwise)."""
        return self._lead

    @property
    def readiness_seconds(self) -> int | None:
        return self._readiness

    def agent_name(self, meeting: Meeting) -> str | None:
        """The name the meeting's agent shows (the user's join rules; None: the platform's default)."""
        return self.context(meeting.user_id).rules.agent_name

    def decide(self, meeting: Meeting) -> Decision:
        """The decision for one meeting on what is stored now (the deployer's re-check)."""
        context = self.context(meeting.user_id)
        return self._shared(context, meeting, context.decide(meeting, self._clock.now()))

    def _shared(self, context: JoinContext, meeting: Meeting, own: Decision) -> Decision:
        """In a workspace that shares agents, one a teammate owns is `teammate_agent` (no write)."""
        if context.team is None or self._teams is None or not own.will_join:
            return own
        return teammate_decision(own, self._teams.row(context.team, meeting), meeting.user_id)

    def upcoming(self, user_id: str) -> list[tuple[Meeting, Decision]]:
        """Upcoming Meetings: every meeting not yet ended, by start, with its decision. Only what the
        user's connections hold now is shown: a sync that was reading a calendar while it was being
        disconnected may have attached it again for a moment (it lets go when it finishes)."""
        now = self._clock.now()
        context = self.context(user_id)
        held = {c.id for c in self._connections.list_for_user(user_id)}
        shown = []
        for m in sorted(self._meetings.list_for_user(user_id, ending_after=now), key=lambda m: (m.start, m.key)):
            sources = tuple(s for s in m.sources if s.connection_id in held)
            if sources:
                shown.append(m if len(sources) == len(m.sources) else replace(m, sources=sources))
        return [(m, self._shared(context, m, context.decide(m, now))) for m in shown]

    def replan(self, user_id: str) -> ReplanReport:
        """Apply the decision to every upcoming meeting of the user: schedule the deployment of one now
        joined (a deploy message exists or is enqueued), withdraw the SCHEDULED agent of one now skipped
        (a message already queued finds it unwanted when it surfaces). Safe to repeat."""
        now = self._clock.now()
        context = self.context(user_id)
        report = ReplanReport()
        self._coalesce(user_id, now)
        for meeting in self._meetings.list_for_user(user_id, ending_after=now):
            report.meetings += 1
            self._apply(context, meeting, now, report)
        self._purge_ended_choices(user_id, context, now)
        return report

    def _coalesce(self, user_id: str, now: datetime) -> int:
        """Rows that turn out to hold one real meeting (`meeting_identity.same_meeting` between their
        copies) become one: written before meeting identities were kept (the Teams long and short
        links in two rows), or by two calendars' syncs at the same moment that found no row to share.
        The row whose agent was sent (else the first by key) keeps its key, agent and idempotency
        key and takes the other's calendar copies; the other, which had no agent sent (a SCHEDULED
        one's message finds no row and does nothing), goes. Two rows that each sent an agent are
        left as they are: one never recalls an agent to merge. Conditional writes; a race is left to
        the next replan. Returns how many rows went."""
        rows = self._meetings.list_for_user(user_id, ending_after=now)
        if len(rows) < 2:
            return 0
        known = {m.key: identities(m) for m in rows}
        ordered = sorted(rows, key=lambda m: (m.agent in (None, AgentState.SCHEDULED), m.key))
        gone: set[str] = set()
        for i, keep in enumerate(ordered):
            if keep.key in gone:
                continue
            for other in ordered[i + 1:]:
                if other.key in gone or other.agent not in (None, AgentState.SCHEDULED):
                    continue
                if not any(same_meeting(a, b) for a in known[keep.key] for b in known[other.key]):
                    continue
                kept = self._fold(keep, other)
                if kept is None:
                    break  # a row changed meanwhile: the next replan looks again
                keep = kept
                gone.add(other.key)
        return len(gone)

    def _fold(self, keep: Meeting, other: Meeting) -> Meeting | None:
        held = {(s.connection_id, s.calendar_id) for s in keep.sources}
        extra = tuple(s for s in other.sources if (s.connection_id, s.calendar_id) not in held)
        try:
            kept = self._meetings.replace(replace(keep, sources=(*keep.sources, *extra))) if extra else keep
            self._meetings.delete(other)
        except Conflict:
            return None
        if self._teams is not None:
            self._teams.leave(other)  # its place in a shared workspace meeting goes with it
        log.info("two rows of one meeting merged", extra={"meeting_id": kept.key, "merged_meeting_id": other.key})
        return kept

    def replan_one(self, user_id: str, key: str) -> None:
        """Apply the decision to one meeting of the user (a shared agent handed over to them)."""
        meeting = self._meetings.get(user_id, key)
        if meeting is not None:
            self._apply(self.context(user_id), meeting, self._clock.now(), ReplanReport())

    def unschedule(self, meeting: Meeting) -> Meeting:
        """The deployer took this meeting's message and found it unwanted: no agent pending and no
        message outstanding, so a later change of mind enqueues a new one. A pending new try after the
        lobby is called off (the agent stays shown as not admitted). Raises Conflict when the row
        changed since it was read (decide again)."""
        if meeting.agent is AgentState.NOT_ADMITTED:
            return self._meetings.replace(replace(meeting, retry_at=None))
        return self._meetings.replace(replace(meeting, agent=check(meeting.agent, None), enqueued_for=None,
                                              lease_until=None))

    def _apply(self, context: JoinContext, meeting: Meeting, now: datetime, report: ReplanReport) -> None:
        current: Meeting | None = meeting
        for _ in range(CONFLICT_ATTEMPTS):
            if current is None:
                return
            decision = context.decide(current, now)
            if context.team is not None and self._teams is not None and current.end > now:
                # The teammate's own decision joins (or leaves) the workspace meeting; who owns it decides.
                row = self._teams.enlist(context.team, current, decision.will_join)
                decision = teammate_decision(decision, row, current.user_id)
            if current.agent in LIVE and decision.withdraws_agent and current.end > now:
                report.to_recall += 1
                if self._recall is not None:
                    self._recall(current)
                else:
                    log.info("agent stays: recall is not available yet (%s)", decision.why.value,
                             extra={"meeting_id": current.key})
                return
            wanted = current
            if wanted.agent in (None, AgentState.SCHEDULED) and wanted.deploy_at is not None:
                # The user's join_lead_seconds may have changed: the plan follows it.
                wanted = replace(wanted, deploy_at=context.join_at(wanted.start))
            if wanted.agent is AgentState.NOT_ADMITTED and wanted.retry_at and decision.withdraws_agent:
                wanted = replace(wanted, retry_at=None)  # skipped after a refusal: no new try
            updated = planned(self._jobs, now, wanted, decision.will_join, self._readiness)
            if updated == current:
                return
            try:
                self._meetings.replace(updated)
            except Conflict:
                current = self._meetings.get(meeting.user_id, meeting.key)
                continue
            if updated.agent is AgentState.SCHEDULED:
                report.scheduled += 1
            elif current.agent is AgentState.SCHEDULED:
                report.unscheduled += 1
            return
        log.warning("replan gave up: the meeting kept changing", extra={"meeting_id": meeting.key})

    def _purge_ended_choices(self, user_id: str, context: JoinContext, now: datetime) -> None:
        ended = [c for c in context.choices if c.until is not None and c.until + _KEEP_ENDED_CHOICES < now]
        if ended:
            self._rules.remove_overrides(user_id, ended)
