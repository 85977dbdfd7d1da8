"""From "scheduled" to "in the call": what the agent platform reports, and what the user is told.

The contract is ../shared/API.md, "Agent progress"; docs/agent-progress.md explains it for the agent
platform's team. Three entry points, each safe to repeat and to run on many instances at once:

- `take(report)` — one status from the agent platform (`POST /api/agents/status`, verified by the
  trigger). Matched to a try by agent id, or by idempotency key when the deployment's answer is not
  stored yet (the try is remembered under its key before the agent API is called,
  `DeployService`). The meeting's agent state moves only as `shared.agent_states` allows: forward
  within a try, never back to an older try. Side effects are queued *before* the row records the
  state (a crash repeats them; each has a fixed id or is deduplicated by the meeting row):
  - waiting_for_admission: a delayed `nudge` job (LOBBY_NUDGE_SECONDS after the wait began);
  - not_admitted / admission_timeout while the meeting is on, the user still wants the agent and tries
    are left (AGENT_MAX_ATTEMPTS): the next try's deploy message, AGENT_RETRY_DELAY_SECONDS later
    (the deployer gives it a new idempotency key); otherwise, and for removed, the
    `agent.not_admitted` event; failed: `agent.failed`.
- `nudge(job)` — once the lobby wait of try n has lasted LOBBY_NUDGE_SECONDS and the agent still
  waits: one `agent.waiting_for_admission` event for that try (its id is derived from the meeting and
  the try, so a repeated job sends the same event, which the platform deduplicates; the row records
  `nudged_attempt` so a later job sends nothing).
- `check_readiness(job)` — READINESS_CHECK_SECONDS before `join_at`, for a meeting the rules would
  join: reads the meeting's calendars (one Graph request per calendar, until one answers) for what
  would stop the agent and the user can fix: no Active connection, the event gone or moved, its link
  changed → `meeting.at_risk` event, shown on the page (`Meeting.at_risk`). A meeting that is fine
  sends nothing. A failure of the service or Microsoft during the check (token endpoint or Graph
  unreachable, throttled, our own credentials refused) is logged at error level for operators
  (`readiness_check_failed`) and tells the user nothing.

Graph shapes relied on: `GET /me/events/{id}` answers the event or 404 (None here); `isCancelled`,
`start` (https://learn.microsoft.com/graph/api/event-get)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.agent_states import (
    RETRYABLE,
    SHOWN_AS,
    AgentState,
    ReportedStatus,
    check,
    report_applies,
)
from shared.autojoin import Decision, Why
from shared.clock import Clock
from shared.meeting_links import find_meeting_link
from shared.ports import (
    AgentTries,
    CalendarReader,
    CalendarUnavailable,
    Conflict,
    ConnectionStore,
    DeployJob,
    GraphError,
    GraphUnauthorized,
    JobQueue,
    Meeting,
    MeetingStore,
    ProgressJob,
    StatusEventType,
    Throttled,
)
from shared.retry import CONFLICT_ATTEMPTS, kept_changing
from shared.services.accounts import ConnectionUnusable, TokenKeeper
from shared.services.health import ConnectionHealth, utc_iso
from shared.services.meetings import identities
from shared.services.sync import parse_graph_time

log = logging.getLogger(__name__)

MAX_TEXT = 255  # status event text that outsiders control (titles, the platform's reason) is capped
NUDGE = "nudge"
READINESS = "readiness"


class MalformedStatus(ValueError):
    """A status body the API refuses (400); the message says what is wrong."""


@dataclass(frozen=True)
class StatusReport:
    agent_id: str | None
    idempotency_key: str | None
    status: ReportedStatus
    at: datetime
    reason: str | None


def parse_status(body: object) -> StatusReport:
    """`{"agent_id", "idempotency_key", "status", "at": RFC 3339 with offset, "reason": null|str}`:
    at least one of agent_id / idempotency_key (non-empty strings, at most 200 characters), a known
    status. Raises MalformedStatus naming the first problem."""
    if not isinstance(body, Mapping):
        raise MalformedStatus("The body must be a JSON object")
    unknown = sorted(set(body) - {"agent_id", "idempotency_key", "status", "at", "reason"})
    if unknown:
        raise MalformedStatus(f"Unknown field {unknown[0]!r}")
    ids = {}
    for name in ("agent_id", "idempotency_key"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
            raise MalformedStatus(f"{name} must be a non-empty string of at most 200 characters, or null")
        ids[name] = value
    if not ids["agent_id"] and not ids["idempotency_key"]:
        raise MalformedStatus("Give agent_id, or idempotency_key when the agent id is not known yet")
    status = body.get("status")
    if not isinstance(status, str) or status not in ReportedStatus._value2member_map_:
        raise MalformedStatus(f"status must be one of {', '.join(s.value for s in ReportedStatus)}")
    at_raw = body.get("at")
    try:
        at = datetime.fromisoformat(at_raw) if isinstance(at_raw, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise MalformedStatus("at must be an RFC 3339 time with an offset, e.g. 2026-03-01T10:02:00Z")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MalformedStatus("reason must be a string or null")
    return StatusReport(ids["agent_id"], ids["idempotency_key"], ReportedStatus(status), at,
                        _printable(reason)[:MAX_TEXT] if reason else None)


class Taken(StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"  # late, repeated, or an older try's: nothing moved
    UNKNOWN_AGENT = "unknown_agent"  # neither the id nor the key names a try of ours (404)
    MEETING_GONE = "meeting_gone"  # the meeting left the calendar: nothing to show


class Risk(StrEnum):
    """What the readiness check found would stop the agent (the `reason` of `meeting.at_risk`)."""

    CONNECTION_ERROR = "connection_error"
    EVENT_GONE = "event_gone"
    EVENT_MOVED = "event_moved"
    LINK_CHANGED = "link_changed"
    LATE = "late"  # the deployment watchdog had to queue the agent again after its planned time


RISK_TEXT: Mapping[Risk, str] = {
    Risk.CONNECTION_ERROR: "The Outlook connection holding this meeting needs attention: reconnect it, or the "
                           "agent will not join.",
    Risk.EVENT_GONE: "This meeting was cancelled or deleted in Outlook: the agent will not join.",
    Risk.EVENT_MOVED: "This meeting was moved in Outlook: the agent follows the new time once the calendar is "
                      "read again.",
    Risk.LINK_CHANGED: "This meeting's join link changed in Outlook: the agent would go to the old link.",
    Risk.LATE: "Running late: the service is catching up after a delay, so the agent joins after its planned "
               "time, as soon as it can.",
}


class ServiceTrouble(Exception):
    """The check could not be made for a reason that is the service's or Microsoft's, not the user's."""


class AgentProgress:
    def __init__(
        self,
        *,
        meetings: MeetingStore,
        tries: AgentTries,
        jobs: JobQueue,
        health: ConnectionHealth,
        decide: Callable[[Meeting], Decision],
        connections: ConnectionStore,
        tokens: TokenKeeper,
        calendar: CalendarReader,
        clock: Clock,
        nudge_seconds: int,
        retry_delay_seconds: int,
        max_attempts: int,
        request_sync: Callable[[str, str], object] | None = None,
    ) -> None:
        self._meetings = meetings
        self._tries = tries
        self._jobs = jobs
        self._health = health
        self._decide = decide
        self._connections = connections
        self._tokens = tokens
        self._calendar = calendar
        self._clock = clock
        self._nudge = timedelta(seconds=nudge_seconds)
        self._retry_delay = timedelta(seconds=retry_delay_seconds)
        self.max_attempts = max_attempts
        self._request_sync = request_sync

    # ------------------------------------------------------------------ statuses
    def take(self, report: StatusReport) -> Taken:
        entry = self._tries.by_agent(report.agent_id) if report.agent_id else None
        if entry is None and report.idempotency_key:
            entry = self._tries.by_key(report.idempotency_key)
            if entry is not None and report.agent_id and entry.agent_id not in (None, report.agent_id):
                entry = None  # the key names another agent than the one reporting
            elif entry is not None and report.agent_id:
                self._tries.put(replace(entry, agent_id=report.agent_id))  # before the answer is stored
        if entry is None:
            return Taken.UNKNOWN_AGENT
        ctx = {"user_id": entry.user_id, "meeting_id": entry.meeting_key, "attempt": entry.attempt,
               "status": report.status.value}
        for _ in range(CONFLICT_ATTEMPTS):
            meeting = self._meetings.get(entry.user_id, entry.meeting_key)
            if meeting is None:
                log.info("agent status for a meeting no longer listed", extra=ctx)
                return Taken.MEETING_GONE
            if not report_applies(meeting.agent, meeting.agent_attempt, report.status, entry.attempt):
                log.info("agent status changes nothing (late, repeated or an older try's)", extra=ctx)
                return Taken.IGNORED
            updated = self._moved(meeting, report, entry.agent_id or report.agent_id)
            try:
                self._meetings.replace(updated)
            except Conflict:
                continue
            log.info("agent status taken: %s", report.status.value, extra=ctx)
            return Taken.APPLIED
        raise kept_changing(f"meeting {entry.meeting_key}")

    def _moved(self, meeting: Meeting, report: StatusReport, agent_id: str | None) -> Meeting:
        """The meeting after the status, its follow-ups queued (before the row says so)."""
        now = self._clock.now()
        at = min(report.at, now)  # a platform clock ahead of ours never dates a state in the future
        target = check(meeting.agent, SHOWN_AS[report.status])
        updated = replace(meeting, agent=target, agent_since=at, lease_until=None,
                          agent_id=agent_id or meeting.agent_id)
        if target is AgentState.WAITING_FOR_ADMISSION:
            updated = replace(updated, waiting_since=at)
            self._jobs.schedule_progress(ProgressJob(NUDGE, meeting.user_id, meeting.key, meeting.agent_attempt),
                                         max(at + self._nudge - now, timedelta(0)))
        elif target is AgentState.NOT_ADMITTED:
            reason = report.status.value + (f": {report.reason}" if report.reason else "")
            updated = replace(updated, failure_reason=reason[:MAX_TEXT])
            retry_at = self._retry_at(meeting, now) if report.status in RETRYABLE else None
            if retry_at is not None:
                updated = replace(updated, retry_at=retry_at)
                self._jobs.schedule_deploy(DeployJob(meeting.user_id, meeting.key, retry_at, enqueued_at=now),
                                           retry_at - now)
            elif meeting.end > now:
                self._tell_not_admitted(meeting, report)
        elif target is AgentState.FAILED:
            reason = "agent_failed" + (f": {report.reason}" if report.reason else "")
            updated = replace(updated, failure_reason=reason[:MAX_TEXT])
            self._health.agent_failed(meeting, report.reason or "The agent could not join the meeting.")
        return updated

    def _retry_at(self, meeting: Meeting, now: datetime) -> datetime | None:
        """When the next try goes: tries left, the meeting still on by then, and the user (or their
        rules) still wanting the agent there. None otherwise."""
        if meeting.agent_attempt >= self.max_attempts:
            return None
        at = now + self._retry_delay
        if at >= meeting.end or self._decide(meeting).withdraws_agent:
            return None
        return at

    def _tell_not_admitted(self, meeting: Meeting, report: StatusReport) -> None:
        if report.status is ReportedStatus.REMOVED:
            reason = "The agent was removed from the meeting."
        elif report.status is ReportedStatus.ADMISSION_TIMEOUT:
            reason = "Nobody admitted the agent from the lobby in time."
        else:
            reason = "The agent was not let into the meeting."
        if report.reason:
            reason = f"{reason} ({report.reason})"
        self._tell(StatusEventType.AGENT_NOT_ADMITTED, meeting, {
            "reason": reason[:MAX_TEXT], "attempts": meeting.agent_attempt}, f"not-admitted|{meeting.agent_attempt}")

    # ------------------------------------------------------------------ the lobby nudge
    def nudge(self, job: ProgressJob) -> str:
        """"told", "early" (looked again later), or why nothing was sent: "gone", "moved_on", "already"."""
        for _ in range(CONFLICT_ATTEMPTS):
            meeting = self._meetings.get(job.user_id, job.meeting_key)
            if meeting is None:
                return "gone"
            if (meeting.agent is not AgentState.WAITING_FOR_ADMISSION or meeting.agent_attempt != job.attempt
                    or meeting.waiting_since is None):
                return "moved_on"  # admitted, refused, ended, or another try is on
            if meeting.nudged_attempt >= job.attempt:
                return "already"
            now = self._clock.now()
            due = meeting.waiting_since + self._nudge
            if now < due - timedelta(seconds=1):
                self._jobs.schedule_progress(job, due - now)
                return "early"
            self._tell(StatusEventType.AGENT_WAITING_FOR_ADMISSION, meeting, {
                "platform": meeting.platform, "join_url": meeting.join_url,
                "waiting_since": _iso(meeting.waiting_since)}, f"waiting|{job.attempt}")
            try:
                self._meetings.replace(replace(meeting, nudged_attempt=job.attempt))
            except Conflict:
                continue  # looked at again: the event's id is fixed, so a second publish is deduplicated
            log.info("user told the agent waits in the lobby",
                     extra={"user_id": job.user_id, "meeting_id": job.meeting_key, "attempt": job.attempt})
            return "told"
        raise kept_changing(f"meeting {job.meeting_key}")

    # ------------------------------------------------------------------ the readiness check
    def check_readiness(self, job: ProgressJob) -> str:
        """"fine", "at_risk", "service_trouble", or why it was not checked: "gone", "stale",
        "not_joined", "already_sent"."""
        meeting = self._meetings.get(job.user_id, job.meeting_key)
        if meeting is None:
            return "gone"  # cancelled, deleted or moved (a moved meeting has a check of its own)
        if job.join_at is None or meeting.deploy_at != job.join_at:
            return "stale"  # planned for another join time: that plan has its own check
        if meeting.agent not in (None, AgentState.SCHEDULED):
            return "already_sent"
        decision = self._decide(meeting)
        if not (decision.will_join or decision.why is Why.CONNECTION_ERROR):
            return "not_joined"
        ctx = {"user_id": meeting.user_id, "meeting_id": meeting.key}
        try:
            risk = self._find_risk(meeting)
        except ServiceTrouble as exc:
            log.error("readiness_check_failed: %s", exc, extra={**ctx, "event": "readiness_check_failed"})
            return "service_trouble"
        self._record_risk(meeting, risk)
        if risk is None:
            return "fine"
        self._tell(StatusEventType.MEETING_AT_RISK, meeting, {"reason": risk.value},
                   f"at-risk|{_iso(job.join_at)}|{risk.value}")
        log.warning("meeting at risk: %s", risk.value, extra=ctx)
        if risk in (Risk.EVENT_GONE, Risk.EVENT_MOVED, Risk.LINK_CHANGED) and self._request_sync is not None:
            for source in meeting.sources:  # catch up at once: the sync withdraws or follows the change
                self._request_sync(meeting.user_id, source.connection_id)
        return "at_risk"

    def _find_risk(self, meeting: Meeting) -> Risk | None:
        usable = False
        for source in meeting.sources:
            conn = self._connections.get(meeting.user_id, source.connection_id)
            if conn is None or not conn.is_active:
                continue
            try:
                conn, token = self._tokens.access_token(conn)
            except ConnectionUnusable as exc:
                if str(exc) in ("service", "transient"):
                    raise ServiceTrouble(f"no access token ({exc})") from None
                continue  # now in Error, and the user told so by the token keeper
            except Conflict:
                continue  # disconnected meanwhile
            try:
                event = self._calendar.event(token.token, source.event_id)
            except CalendarUnavailable:
                continue
            except (Throttled, GraphError, GraphUnauthorized, OSError) as exc:
                raise ServiceTrouble(f"Graph: {type(exc).__name__}") from None
            usable = True
            return _event_risk(meeting, event)
        return None if usable else Risk.CONNECTION_ERROR

    def _record_risk(self, meeting: Meeting, risk: Risk | None) -> None:
        value = risk.value if risk else None
        current: Meeting | None = meeting
        for _ in range(CONFLICT_ATTEMPTS):
            if current is None or current.at_risk == value:
                return
            try:
                self._meetings.replace(replace(current, at_risk=value))
                return
            except Conflict:
                current = self._meetings.get(meeting.user_id, meeting.key)
        log.warning("readiness risk not recorded: the meeting kept changing", extra={"meeting_id": meeting.key})

    # ------------------------------------------------------------------ telling the user
    def _tell(self, type_: StatusEventType, meeting: Meeting, data: dict[str, Any], what: str) -> None:
        self._health.tell_about_meeting(type_, meeting, data, what)


def _event_risk(meeting: Meeting, event: dict[str, Any] | None) -> Risk | None:
    if event is None or event.get("isCancelled") is True:
        return Risk.EVENT_GONE
    if parse_graph_time(event.get("start")) != meeting.start:
        return Risk.EVENT_MOVED
    link = find_meeting_link(event)
    if link is None or link.key not in _link_identities(meeting):
        return Risk.LINK_CHANGED
    return None


def _link_identities(meeting: Meeting) -> set[str]:
    """The link identities the meeting's copies were read with (services.meetings.identities): the
    meeting's `link_key` is an `ical:` identity for meetings keyed by iCalUId, not a link."""
    return {i.link for i in identities(meeting)} | {meeting.link_key}


def _iso(value: datetime | None) -> str | None:
    return utc_iso(value) if value is not None else None


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())
