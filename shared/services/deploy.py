"""Deploying an agent when a meeting's deploy message surfaces: re-check, claim, call, record — once.

Queue messages can be delivered twice, two calendars can each have scheduled one, and a retry can
overlap a late first attempt. Before calling the agent API a deliverer claims the meeting row (agent
DEPLOYING with a short lease, written with the row's ETag): only one of concurrent deliverers wins;
the others come back once the lease has lapsed, find the meeting deployed and do nothing — or, if the
winner crashed mid-call, take over (the agent API dedupes on the idempotency key)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.agent_states import AgentState, allowed, check
from shared.autojoin import Why
from shared.clock import Clock
from shared.ports import (
    AgentApi,
    AgentTries,
    AgentTry,
    Conflict,
    ConnectionStore,
    DeployJob,
    DeployRequest,
    JobQueue,
    Meeting,
    MeetingStore,
)
from shared.retry import CONFLICT_ATTEMPTS, kept_changing
from shared.scheduling import (
    DEPLOY_LEASE,
    Verdict,
    decide_deployment,
    idempotency_key,
    retry_delay,
)
from shared.services.health import ConnectionHealth
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.teams import Gate, GateVerdict, TeamService

log = logging.getLogger(__name__)

# A new owner of a shared agent looks again this often while the former owner's agent is recalled.
HANDOVER_RECHECK = timedelta(seconds=5)


class DeployService:
    def __init__(
        self,
        *,
        meetings: MeetingStore,
        connections: ConnectionStore,
        agents: AgentApi,
        jobs: JobQueue,
        clock: Clock,
        grace_seconds: int,
        retry_base_seconds: int,
        lifecycle: MeetingLifecycle,
        health: ConnectionHealth,
        recall: Callable[[Meeting], object] | None = None,
        agent_name: Callable[[Meeting], str | None] | None = None,
        tries: AgentTries | None = None,
        teams: TeamService | None = None,
    ) -> None:
        self._teams = teams  # one agent per meeting for a workspace (shared/services/teams.py)
        self._agent_name = agent_name  # a calendar's own name for the agent (shared/services/calendars.py)
        self._tries = tries  # each try by its idempotency key and agent id: how agent statuses find it
        self._health = health
        self._recall = recall  # an agent sent to a meeting the calendar let go of during the call
        self._meetings = meetings
        self._connections = connections
        self._agents = agents
        self._jobs = jobs
        self._clock = clock
        self._grace = timedelta(seconds=grace_seconds)
        self._retry_base = retry_base_seconds
        self._lifecycle = lifecycle

    def deploy(self, job: DeployJob, freshen: Callable[[Meeting], None] | None = None) -> str:
        """`freshen` reads the meeting's calendars once more right before the agent API is called, so a
        meeting cancelled, declined or moved since the last scan gets no agent (see SyncService.freshen)."""
        ctx = {"user_id": job.user_id, "meeting_id": job.meeting_key, "attempt": job.attempt}
        claimed: Meeting | None = None
        for _ in range(CONFLICT_ATTEMPTS):
            meeting = self._meetings.get(job.user_id, job.meeting_key)
            if meeting is None:
                # Cancelled, rescheduled (the new time is another meeting) or disconnected.
                log.info("deployment skipped: meeting gone", extra=ctx)
                return "meeting_gone"
            now = self._clock.now()
            if job.enqueued_at is not None and (meeting.enqueued_at or job.enqueued_at) > job.enqueued_at:
                # A later message owns the meeting (an agent API retry with its back-off, a re-queue):
                # this one, or its backup copy, would deploy early and start a retry chain of its own.
                log.info("deployment skipped: a later deploy message owns the meeting", extra=ctx)
                return "superseded"
            decision = decide_deployment(
                now=now,
                start=meeting.start,
                intended_at=meeting.deploy_at or job.deploy_at,
                agent=meeting.agent,
                lease_until=meeting.lease_until,
                retry_at=meeting.retry_at,
                end=meeting.end,
            )
            if decision.verdict in (Verdict.DEPLOY, Verdict.WAIT):
                # The one join decision, on the rules, choices and connections stored now. Taken again
                # after the calendars are read once more (below): right before the agent API call.
                join = self._lifecycle.decide(meeting)
                if join.why is Why.TOO_LATE:
                    self._record(meeting, AgentState.FAILED, "too_late")
                    log.warning("deployment skipped: meeting already started", extra=ctx)
                    return "too_late"
                # A new try after the lobby: the meeting is on and the user has not withdrawn the agent.
                retrying = meeting.agent is AgentState.NOT_ADMITTED and not join.withdraws_agent
                if not join.will_join and not retrying:
                    try:
                        self._lifecycle.unschedule(meeting)
                    except Conflict:
                        continue  # a sync or a change of mind touched it: decide again
                    log.info("deployment skipped: %s", join.why.value, extra=ctx)
                    return join.why.value
            if decision.verdict is Verdict.WAIT:
                if job.backup:
                    return "waiting"  # the copy of a message that surfaced early: the message itself waits
                self._jobs.schedule_deploy(job, decision.wait)
                return "waiting"
            if decision.verdict is Verdict.IN_PROGRESS:
                # Another delivery is calling the agent API now. Look again once its claim lapses: by
                # then it is deployed (nothing to do) or that deliverer died (take over).
                recheck = decision.wait + timedelta(seconds=1)
                if now + recheck <= meeting.start + self._grace:
                    self._jobs.schedule_deploy(job, recheck)
                log.info("deployment in progress elsewhere", extra=ctx)
                return "in_progress"
            if decision.verdict is not Verdict.DEPLOY:
                log.info("deployment skipped: %s", decision.verdict.value, extra=ctx)
                return decision.verdict.value
            if freshen is not None:
                freshen(meeting)
                freshen = None
                continue  # decide again on what the calendars say now
            gate = self._teams.before_deploy(meeting) if self._teams is not None else Gate(GateVerdict.OWN)
            if gate.verdict is GateVerdict.NOT_OWNER:
                try:
                    self._lifecycle.unschedule(meeting)
                except Conflict:
                    continue
                log.info("deployment skipped: a teammate's agent joins", extra=ctx)
                return Why.TEAMMATE_AGENT.value
            if gate.verdict is GateVerdict.WAIT:
                # The former owner's agent is being recalled: never two agents at once, a short gap.
                if now + HANDOVER_RECHECK <= meeting.start + self._grace:
                    self._jobs.schedule_deploy(job, HANDOVER_RECHECK)
                log.info("deployment waits: the former owner's shared agent is being recalled", extra=ctx)
                return "waiting_for_handover"
            # Which try this is: the next after a lobby refusal, else the one claimed before (a retry
            # after an agent API failure or a crash keeps its try, and so its idempotency key).
            attempt = meeting.agent_attempt + 1 if meeting.agent is AgentState.NOT_ADMITTED else \
                max(meeting.agent_attempt, 1)
            try:
                claimed = self._meetings.replace(
                    replace(meeting, agent=check(meeting.agent, AgentState.DEPLOYING), lease_until=now + DEPLOY_LEASE,
                            agent_attempt=attempt, retry_at=None, waiting_since=None, agent_since=now,
                            failure_reason=None if attempt != meeting.agent_attempt else meeting.failure_reason)
                )
                break
            except Conflict:
                continue  # another deliverer claimed it, or a sync touched it: decide again
        if claimed is None:
            raise kept_changing(f"meeting {job.meeting_key}")
        shared = gate.verdict is GateVerdict.PROCEED
        # A shared agent's key names the workspace (and the hand-overs so far), not the user.
        whose = f"workspace:{gate.workspace}#{gate.handovers}" if shared else claimed.user_id

        key = idempotency_key(whose, claimed.link_key, claimed.start, claimed.recalls, claimed.agent_attempt)
        ctx["try"] = claimed.agent_attempt
        try:
            if self._tries is not None:
                # Before the call: the platform may report a status before its answer is stored.
                self._tries.put(AgentTry(claimed.user_id, claimed.key, claimed.agent_attempt, key))
            result = self._agents.deploy(
                DeployRequest(
                    meeting_url=claimed.join_url,
                    platform=claimed.platform,
                    title=claimed.title,
                    start=claimed.start,
                    end=claimed.end,
                    user_id=claimed.user_id,
                    meeting_id=claimed.key,
                    idempotency_key=key,
                    join_at=claimed.deploy_at,
                    # A calendar's own name for the agent wins over the join rules' (API.md "Join rules").
                    agent_name=(self._agent_name(claimed) if self._agent_name is not None else None)
                    or self._lifecycle.agent_name(claimed),
                    user_ids=gate.user_ids or (claimed.user_id,),
                    attempt=claimed.agent_attempt,
                )
            )
        except BaseException:
            self._record(claimed, AgentState.SCHEDULED, None)  # let a redelivery try at once
            raise
        if result.ok:
            if self._tries is not None and result.agent_id:
                self._tries.put(AgentTry(claimed.user_id, claimed.key, claimed.agent_attempt, key, result.agent_id))
            self._record(claimed, AgentState.DEPLOYED, None, agent_id=result.agent_id)
            if shared and self._teams is not None:
                self._teams.after_deploy(claimed, result.agent_id, deployed=True)
            log.info("agent deployed", extra=ctx)
            return "deployed"
        now = self._clock.now()
        if not result.permanent:
            delay = retry_delay(job.attempt, self._retry_base)
            if now + delay <= claimed.start + self._grace:
                # The retry's message surfaces after `delay`: overdue counts from then, not from now.
                self._record(claimed, AgentState.SCHEDULED, None, enqueued_at=now + delay)
                self._jobs.schedule_deploy(replace(job, attempt=job.attempt + 1, backup=False, enqueued_at=now + delay),
                                           delay)
                log.warning("agent API failed, retrying: %s", result.detail, extra=ctx)
                return "retrying"
        reason = f"agent_api: {result.detail}"[:200]
        self._record(claimed, AgentState.FAILED, reason)
        if shared and self._teams is not None:
            self._teams.after_deploy(claimed, None, deployed=False)
        self._jobs.poison_deploy(job, reason)
        log.error("deployment failed: %s", result.detail, extra=ctx)
        return "failed"

    def recover_overdue(self, user_id: str) -> int:
        """No deployment is lost: a meeting whose deploy time passed `OVERDUE_AFTER` ago without a
        verdict (its message lost, poisoned after repeated crashes, or a deployer that died mid-call)
        is queued again while it can still be joined, and otherwise recorded `failed` ("missed") and
        the user told. Run after every sync of the user's calendars; safe to repeat (the deployer
        claims a meeting before calling the agent API). Returns how many meetings it acted on."""
        now = self._clock.now()
        return sum(self._recover(meeting, now, OVERDUE_AFTER)
                   for meeting in self._meetings.list_for_user(user_id, ending_after=now))

    def watch(self) -> WatchReport:
        """The deployment watchdog (a timer, every WATCHDOG_SCHEDULE): every user's meetings whose deploy
        message should have surfaced `WATCHDOG_AFTER` ago without a verdict, found by the meetings
        themselves (not by a sync of that user, not by waiting for a crashed instance's message to
        reappear after its 10-minute invisibility), are queued again while they can still be joined,
        else recorded missed and the user told. Each re-queue is claimed on the meeting row with its
        ETag first, so two instances watching at once queue it once; the deployer's own claim and the
        agent API's Idempotency-Key make a duplicate delivery harmless anyway."""
        now = self._clock.now()
        report = WatchReport()
        for meeting in self._meetings.awaiting_verdict(due_before=now - WATCHDOG_AFTER, ending_after=now):
            report.looked += 1
            report.requeued += self._recover(meeting, now, WATCHDOG_AFTER)
        if report.requeued:
            log.warning("deployment watchdog queued %d overdue deployments again", report.requeued,
                        extra={"looked": report.looked})
        return report

    def _recover(self, meeting: Meeting, now: datetime, after: timedelta) -> int:
        """Queue an overdue meeting's deployment again (1), record it missed when it can no longer be
        joined (1), or leave it (0: not overdue, no longer wanted, or another instance claimed it)."""
        if meeting.agent is AgentState.NOT_ADMITTED and meeting.retry_at is not None:
            return self._recover_retry(meeting, now, after)
        if not _overdue(meeting, now, after):
            return 0
        decision = self._lifecycle.decide(meeting)
        if not decision.will_join and decision.why is not Why.TOO_LATE:
            return 0  # the join decision withdraws it; replan clears the SCHEDULED state
        ctx = {"user_id": meeting.user_id, "meeting_id": meeting.key}
        # A later try (after the lobby) may go until the meeting ends; a first one within the grace.
        joinable_until = meeting.end if meeting.agent_attempt > 1 else meeting.start + self._grace
        if now <= joinable_until:
            assert meeting.deploy_at is not None
            # Queued again after its planned time: it cannot be on time, and is shown and told as late.
            late = now > meeting.deploy_at + LATE_AFTER
            try:  # the claim: counts from now, so one re-queue per period whoever else looks
                self._meetings.replace(replace(meeting, enqueued_at=now, at_risk=LATE if late else meeting.at_risk))
            except Conflict:
                return 0  # another instance (or the deployer) touched it: theirs to handle
            if late and meeting.at_risk != LATE:
                self._health.agent_late(meeting)
            self._jobs.schedule_deploy(DeployJob(meeting.user_id, meeting.key, meeting.deploy_at, enqueued_at=now),
                                       timedelta(0))
            log.warning("deployment_overdue: no verdict since %s, queued again", meeting.deploy_at.isoformat(),
                        extra={**ctx, "event": "deployment_overdue"})
            return 1
        try:
            self._record(meeting, AgentState.FAILED, "missed")
        except Conflict:
            return 0
        log.error("deployment_missed: the meeting started without a verdict", extra={**ctx,
                                                                                      "event": "deployment_missed"})
        return 1

    def _recover_retry(self, meeting: Meeting, now: datetime, after: timedelta) -> int:
        """A new try after the lobby whose message was lost: queued again while the meeting is on,
        claimed on the row first (its `enqueued_at`), as a first deployment's re-queue is."""
        assert meeting.retry_at is not None
        due = max(meeting.retry_at, meeting.enqueued_at or meeting.retry_at)
        if not due + after <= now < meeting.end:
            return 0
        try:
            self._meetings.replace(replace(meeting, enqueued_at=now))
        except Conflict:
            return 0
        self._jobs.schedule_deploy(DeployJob(meeting.user_id, meeting.key, meeting.retry_at, enqueued_at=now),
                                   timedelta(0))
        log.warning("retry_overdue: try %d not sent since %s, queued again", meeting.agent_attempt + 1,
                    meeting.retry_at.isoformat(), extra={"user_id": meeting.user_id, "meeting_id": meeting.key,
                                                         "event": "deployment_overdue"})
        return 1

    def _record(self, meeting: Meeting, state: AgentState, reason: str | None, *, agent_id: str | None = None,
                enqueued_at: datetime | None = None) -> None:
        """Write the verdict (a deployed agent with the id the agent API gave it, which a recall names).
        A meeting recorded `failed` tells the user (status event agent.failed)."""
        current: Meeting | None = meeting
        for _ in range(CONFLICT_ATTEMPTS):
            if current is None:
                if state is AgentState.DEPLOYED and self._recall is not None:
                    # Cancelled, deleted or moved while the agent was being sent: it leaves again.
                    self._recall(replace(meeting, agent=state, agent_id=agent_id or meeting.agent_id))
                return
            target: AgentState | None = state
            if current.agent is not meeting.agent and not allowed(current.agent, state):
                # The agent platform reported this try's progress before the agent API's answer was
                # stored (joining, in the lobby...): the state stays as reported; the id is kept.
                target, reason = current.agent, current.failure_reason
            if target is AgentState.FAILED and current.agent is not AgentState.FAILED:
                # Queued before the row says failed (its id is the meeting's): a retry repeats it.
                self._health.agent_failed(current, reason or "failed")
            try:
                self._meetings.replace(replace(current, agent=check(current.agent, target), failure_reason=reason,
                                               lease_until=None, agent_id=agent_id or current.agent_id,
                                               enqueued_at=enqueued_at or current.enqueued_at))
            except Conflict:
                current = self._meetings.get(meeting.user_id, meeting.key)
                continue
            return
        raise kept_changing(f"meeting {meeting.key}")


# A deployment is overdue when this long has passed since its deploy time without a verdict: longer
# than a queue delivery's usual delay plus one agent API call, shorter than a scan period.
OVERDUE_AFTER = timedelta(minutes=2)
# The watchdog looks sooner: past the backup copy of every deploy message (queues.DEPLOY_BACKUP_AFTER,
# 15 s) and a deployment's usual few seconds, so a meeting whose messages both went with a crashed
# instance is queued again about 45-60 s after its deploy time (the watchdog runs every 15 s).
WATCHDOG_AFTER = timedelta(seconds=45)
# Queued again this long after its planned time, an agent is late: the page shows it (`at_risk`
# reason `late`) and the user is told (`meeting.at_risk`), never "scheduled" as if all were well.
LATE_AFTER = timedelta(seconds=30)
LATE = "late"


@dataclass
class WatchReport:
    looked: int = 0  # meetings awaiting a verdict past their due time
    requeued: int = 0  # queued again, or recorded missed


def _overdue(meeting: Meeting, now: datetime, after: timedelta = OVERDUE_AFTER) -> bool:
    """No verdict `after` the message was due to surface: its deploy time, or when it was queued for
    a meeting found only after its deploy time (a last-minute one), or last queued again."""
    if meeting.deploy_at is None:
        return False
    due = max(meeting.deploy_at, meeting.enqueued_at or meeting.deploy_at)
    if now < due + after:
        return False
    if meeting.agent is AgentState.SCHEDULED:
        return True
    # A deployer that claimed it and died: its claim has lapsed and nobody took over.
    return meeting.agent is AgentState.DEPLOYING and (meeting.lease_until is None or meeting.lease_until < now)
