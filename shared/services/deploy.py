"""Deploying an agent when a meeting's deploy message surfaces: re-check, call, record — once."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from shared.clock import Clock
from shared.ports import (
    AgentApi,
    Conflict,
    ConnectionStore,
    DeployJob,
    DeployRequest,
    JobQueue,
    Meeting,
    MeetingStore,
)
from shared.scheduling import AgentState, Verdict, decide_deployment, idempotency_key, retry_delay

log = logging.getLogger(__name__)


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
    ) -> None:
        self._meetings = meetings
        self._connections = connections
        self._agents = agents
        self._jobs = jobs
        self._clock = clock
        self._grace = grace_seconds
        self._retry_base = retry_base_seconds

    def deploy(self, job: DeployJob) -> str:
        meeting = self._meetings.get(job.user_id, job.meeting_key)
        ctx = {"user_id": job.user_id, "meeting_id": job.meeting_key, "attempt": job.attempt}
        if meeting is None:
            # Cancelled, rescheduled (the new time is another meeting) or disconnected.
            log.info("deployment skipped: meeting gone", extra=ctx)
            return "meeting_gone"
        now = self._clock.now()
        any_active = any(
            (c := self._connections.get(job.user_id, s.connection_id)) is not None and c.is_active
            for s in meeting.sources
        )
        decision = decide_deployment(
            now=now,
            start=meeting.start,
            intended_at=meeting.deploy_at or job.deploy_at,
            agent=meeting.agent,
            any_active_connection=any_active,
            grace_seconds=self._grace,
        )
        if decision.verdict is Verdict.WAIT:
            self._jobs.schedule_deploy(job, decision.wait)
            return "waiting"
        if decision.verdict is Verdict.TOO_LATE:
            self._record(meeting, AgentState.FAILED, "too_late")
            log.warning("deployment skipped: meeting already started", extra=ctx)
            return "too_late"
        if decision.verdict is not Verdict.DEPLOY:
            log.info("deployment skipped: %s", decision.verdict.value, extra=ctx)
            return decision.verdict.value

        result = self._agents.deploy(
            DeployRequest(
                meeting_url=meeting.join_url,
                platform=meeting.platform,
                title=meeting.title,
                start=meeting.start,
                end=meeting.end,
                user_id=meeting.user_id,
                meeting_id=meeting.key,
                idempotency_key=idempotency_key(meeting.user_id, meeting.link_key, meeting.start),
            )
        )
        if result.ok:
            self._record(meeting, AgentState.DEPLOYED, None)
            log.info("agent deployed", extra=ctx)
            return "deployed"
        if not result.permanent:
            delay = retry_delay(job.attempt, self._retry_base)
            if now + delay <= meeting.start + timedelta(seconds=self._grace):
                self._jobs.schedule_deploy(replace(job, attempt=job.attempt + 1), delay)
                log.warning("agent API failed, retrying: %s", result.detail, extra=ctx)
                return "retrying"
        reason = f"agent_api: {result.detail}"[:200]
        self._record(meeting, AgentState.FAILED, reason)
        self._jobs.poison_deploy(job, reason)
        log.error("deployment failed: %s", result.detail, extra=ctx)
        return "failed"

    def _record(self, meeting: Meeting, state: AgentState, reason: str | None) -> None:
        current: Meeting | None = meeting
        for _ in range(8):
            if current is None:
                return
            try:
                self._meetings.replace(replace(current, agent=state, failure_reason=reason))
                return
            except Conflict:
                current = self._meetings.get(meeting.user_id, meeting.key)
        raise Conflict(f"meeting {meeting.key} kept changing")
