"""When agents are deployed, and whether a deployment is still wanted. Pure domain."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.agent_states import LIVE, AgentState
from shared.retry import Backoff

# Queue messages can be hidden for at most 7 days; keep a margin so the enqueue never fails.
MAX_QUEUE_DELAY = timedelta(days=7) - timedelta(minutes=5)


# How long a deployer holds its claim on a meeting: covers one agent API call (HTTP timeout) with a
# margin. A deployer that crashed mid-call is taken over once its claim has lapsed.
DEPLOY_LEASE = timedelta(seconds=60)


def meeting_key(link_key: str, start: datetime) -> str:
    """One meeting = one join link at one start time, whichever calendars hold it. Sortable by start."""
    digest = hashlib.sha256(link_key.encode()).hexdigest()[:32]
    return f"{start:%Y%m%dT%H%M%SZ}-{digest}"


def idempotency_key(user_id: str, link_key: str, start: datetime, recalls: int = 0, attempt: int = 1) -> str:
    """Stable id of (user, meeting link, start, try): the agent API deploys once per key. After
    `recalls` agents were recalled from the meeting, the next one is a new deployment with a key of its
    own; so is every try after the first (`attempt` 2, 3, ...: after a lobby timeout or a refusal). The
    first try's key is the one earlier versions used, so an upgrade never sends a second agent."""
    raw = f"{user_id}\n{link_key}\n{start.isoformat()}" + (f"\n{recalls}" if recalls else "")
    if attempt > 1:
        raw += f"\ntry {attempt}"
    return hashlib.sha256(raw.encode()).hexdigest()


def deploy_at(start: datetime, lead_seconds: int) -> datetime:
    return start - timedelta(seconds=lead_seconds)


def enqueue_delay(now: datetime, when: datetime) -> timedelta | None:
    """How long the deploy message stays hidden; None when it is beyond the queue's horizon
    (a later sync schedules it)."""
    delay = max(when - now, timedelta(0))
    return None if delay > MAX_QUEUE_DELAY else delay


class Verdict(StrEnum):
    DEPLOY = "deploy"
    WAIT = "wait"  # surfaced early (horizon hop): hide again until it is time
    ALREADY_DEPLOYED = "already_deployed"
    ALREADY_FAILED = "already_failed"
    RECALLED = "recalled"  # sent, then recalled: never sent again by a stale message
    IN_PROGRESS = "in_progress"  # another delivery holds a fresh claim: look again when it lapses
    NO_TRY_LEFT = "no_try_left"  # not admitted, and no further try is planned


@dataclass(frozen=True)
class DeployDecision:
    verdict: Verdict
    wait: timedelta = timedelta(0)


def decide_deployment(
    *,
    now: datetime,
    start: datetime,
    intended_at: datetime,
    agent: AgentState | None,
    lease_until: datetime | None = None,
    retry_at: datetime | None = None,
    end: datetime | None = None,
) -> DeployDecision:
    """Whether a surfacing deploy message acts now: the mechanics only (already done, someone else
    on it, too early). Whether an agent should join at all is `shared.autojoin.decide`'s to say.
    A meeting whose agent was not admitted deploys again only when a new try is planned
    (`retry_at`), and not before that time."""
    if agent in LIVE or agent is AgentState.ENDED:
        return DeployDecision(Verdict.ALREADY_DEPLOYED)
    if agent is AgentState.FAILED:
        return DeployDecision(Verdict.ALREADY_FAILED)
    if agent is AgentState.RECALLED:
        return DeployDecision(Verdict.RECALLED)
    if agent is AgentState.NOT_ADMITTED:
        if retry_at is None or (end is not None and now >= end):
            return DeployDecision(Verdict.NO_TRY_LEFT)
        intended_at = retry_at
    if agent is AgentState.DEPLOYING and lease_until is not None and lease_until > now:
        return DeployDecision(Verdict.IN_PROGRESS, lease_until - now)
    if now < intended_at - timedelta(seconds=1):
        return DeployDecision(Verdict.WAIT, intended_at - now)
    return DeployDecision(Verdict.DEPLOY)


def retry_delay(attempt: int, base_seconds: int) -> timedelta:
    """Exponential back-off for agent API retries (shared.retry.Backoff): base, 2*base, 4*base, ...
    capped at 5 minutes."""
    return Backoff(base=timedelta(seconds=base_seconds), cap=timedelta(minutes=5)).delay(attempt)


@dataclass(frozen=True)
class SyncWindow:
    start: datetime
    end: datetime


def sync_window(now: datetime, days_ahead: int) -> SyncWindow:
    """Midnight UTC yesterday to `days_ahead` days after today: fixed for a day, so a delta link
    stays usable until the window slides (then a fresh full sync starts it again)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return SyncWindow(start=today - timedelta(days=1), end=today + timedelta(days=days_ahead + 1))
