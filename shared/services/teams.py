"""One agent per meeting for a workspace (API.md "Teams"): the workspace meeting rows, written with
their ETag, and the hooks the meeting lifecycle, the deployer, recalls, disconnects and erasure call.

- The platform claims (`workspace`, `workspace_dedupe`) of a user's most recent authenticated
  request are stored (`remember`), because timers and queues act without a request.
- `enlist` applies one teammate's own join decision to the workspace meeting (shared.teams.enlist),
  conditional on the row's ETag: two users syncing at once on two instances agree on one owner. When
  the owner changes, the new owner's meeting is planned at once (`on_handover`).
- The deployer asks `before_deploy`: only the owner deploys, and only once no other teammate's agent
  is live (set before the agent API call, cleared when that agent is recalled); `after_deploy`
  records the agent (or lets go on failure), and recalls it at once if the owner changed meanwhile.
- `leave` (a meeting row removed: cancelled, disconnect, erasure) hands the meeting over first and
  recalls the leaving owner's agent; `recalled` clears the live mark when a recall completed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from shared.agent_states import LIVE, SENT, AgentState
from shared.clock import Clock
from shared.platform_auth import User
from shared.ports import (
    Conflict,
    Meeting,
    MeetingStore,
    RecallJob,
    TeamClaims,
    TeamClaimsStore,
    Teammate,
    WorkspaceMeeting,
    WorkspaceMeetingStore,
)
from shared.retry import CONFLICT_ATTEMPTS, kept_changing
from shared.teams import enlist, workspace_meeting_key

log = logging.getLogger(__name__)



class GateVerdict(StrEnum):
    OWN = "own"  # not a shared workspace meeting: the user's own agent, as before
    PROCEED = "proceed"  # the owner, and no other teammate's agent is live: send the shared agent
    NOT_OWNER = "not_owner"  # a teammate owns it
    WAIT = "wait"  # the former owner's agent is still being recalled: look again shortly


@dataclass(frozen=True)
class Gate:
    verdict: GateVerdict
    workspace: str = ""
    user_ids: tuple[str, ...] = ()
    handovers: int = 0


@dataclass(frozen=True)
class SharedAgent:
    """What a teammate who does not own the shared agent sees of it."""

    owner_email: str
    agent: AgentState | None


class TeamService:
    def __init__(self, *, claims: TeamClaimsStore, rows: WorkspaceMeetingStore, meetings: MeetingStore,
                 clock: Clock) -> None:
        self._claims = claims
        self._rows = rows
        self._meetings = meetings
        self._clock = clock
        self._known: dict[str, TeamClaims] = {}  # what this process last stored per user (skips rewrites)
        # Set by the composition root: plan the new owner's meeting (MeetingLifecycle.replan_one), and
        # recall an agent (RecallService.request).
        self.on_handover: Callable[[str, str], object] | None = None
        self.recall: Callable[[Meeting], object] | None = None

    def now(self) -> datetime:
        return self._clock.now()

    # ------------------------------------------------------------------ claims
    def remember(self, user: User) -> None:
        """Store the claims of this authenticated request when they differ from the stored ones."""
        claims = TeamClaims(user.id, user.workspace, user.workspace_dedupe, user.email or user.id)
        if self._known.get(user.id) == claims:
            return
        if self._claims.get(user.id) != claims:
            self._claims.put(claims)
        self._known[user.id] = claims

    def workspace_of(self, user_id: str) -> TeamClaims | None:
        """The user's claims when their workspace shares agents, else None."""
        claims = self._claims.get(user_id)
        return claims if claims is not None and claims.shared_workspace else None

    def shared_workspace(self, user_id: str) -> str | None:
        claims = self.workspace_of(user_id)
        return claims.shared_workspace if claims is not None else None

    # ------------------------------------------------------------------ membership
    def row(self, claims: TeamClaims, meeting: Meeting) -> WorkspaceMeeting | None:
        return self._rows.get(str(claims.shared_workspace), workspace_meeting_key(meeting))

    def enlist(self, claims: TeamClaims, meeting: Meeting, wants: bool) -> WorkspaceMeeting:
        """Apply this teammate's own decision to the workspace meeting; returns the row as stored. A
        teammate leaving who never got an agent out lets go of a live mark it left behind (a deployer
        that died between marking and calling)."""
        workspace = str(claims.shared_workspace)
        key = workspace_meeting_key(meeting)
        me = Teammate(claims.user_id, claims.email)
        for _ in range(CONFLICT_ATTEMPTS):
            current = self._rows.get(workspace, key) or WorkspaceMeeting(workspace, key)
            updated = replace(enlist(current, me, wants), end=meeting.end)
            if (not wants and updated.live_user == me.user_id and not updated.live_agent
                    and meeting.agent not in SENT):
                updated = replace(updated, live_user="")
            if updated == current and current.etag is not None:
                return current
            try:
                stored = self._rows.put(updated)
            except Conflict:
                continue
            if stored.owner != current.owner:
                log.info("workspace meeting owner changed", extra={"meeting_id": key, "handovers": stored.handovers})
                if stored.owner and stored.owner != me.user_id and self.on_handover is not None:
                    self.on_handover(stored.owner, meeting.key)
            return stored
        raise kept_changing(f"workspace meeting {key}")

    def leave(self, meeting: Meeting) -> None:
        """The user's meeting row is going (cancelled, moved, disconnected, erased): hand the shared
        meeting over first, then recall the leaving owner's agent (the new owner's deployer waits until
        that recall completed)."""
        claims = self.workspace_of(meeting.user_id)
        if claims is None:
            return
        before = self.row(claims, meeting)
        self.enlist(claims, meeting, wants=False)
        if (before is not None and before.live_user == meeting.user_id and meeting.agent in LIVE
                and self.recall is not None):
            self.recall(meeting)

    def forget_user(self, user_id: str) -> None:
        """Erasure: every meeting of the user is handed over (or its agent recalled) first."""
        if self.workspace_of(user_id) is None:
            return
        for meeting in self._meetings.list_for_user(user_id, ending_after=datetime.min.replace(tzinfo=UTC)):
            self.leave(meeting)

    # ------------------------------------------------------------------ what teammates see
    def shared_agents(self, user_id: str, meetings: list[Meeting]) -> dict[str, SharedAgent]:
        """Meeting key -> the shared agent, for this user's meetings a teammate owns."""
        claims = self.workspace_of(user_id)
        if claims is None:
            return {}
        found: dict[str, SharedAgent] = {}
        for meeting in meetings:
            row = self.row(claims, meeting)
            if row is None or not row.owner or row.owner == user_id:
                continue
            owned = self._meetings.get(row.owner, meeting.key)
            found[meeting.key] = SharedAgent(row.owner_email, owned.agent if owned is not None else None)
        return found

    # ------------------------------------------------------------------ the deployer's gate
    def before_deploy(self, meeting: Meeting) -> Gate:
        """Called by the deployer right before it claims the meeting and calls the agent API."""
        claims = self.workspace_of(meeting.user_id)
        if claims is None:
            return Gate(GateVerdict.OWN)
        workspace = str(claims.shared_workspace)
        for _ in range(CONFLICT_ATTEMPTS):
            row = self.row(claims, meeting)
            if row is None:
                row = self.enlist(claims, meeting, wants=True)
            if row.owner != meeting.user_id:
                return Gate(GateVerdict.NOT_OWNER, workspace)
            if row.live_user and row.live_user != meeting.user_id:
                return Gate(GateVerdict.WAIT, workspace)
            ids = tuple(m.user_id for m in row.members)
            if row.live_user == meeting.user_id:
                return Gate(GateVerdict.PROCEED, workspace, ids, row.handovers)
            try:
                self._rows.put(replace(row, live_user=meeting.user_id, live_agent=""))
            except Conflict:
                continue
            return Gate(GateVerdict.PROCEED, workspace, ids, row.handovers)
        raise kept_changing(f"workspace meeting {meeting.key}")

    def after_deploy(self, meeting: Meeting, agent_id: str | None, *, deployed: bool) -> None:
        """Record the shared agent (or let go of the mark when none went out). If the owner changed while
        the agent API was called, the agent is recalled at once."""
        claims = self.workspace_of(meeting.user_id)
        if claims is None:
            return
        for _ in range(CONFLICT_ATTEMPTS):
            row = self.row(claims, meeting)
            if row is None or row.live_user != meeting.user_id:
                if deployed:
                    # The live mark was let go (or taken by a teammate) while the agent API was called:
                    # a teammate's agent may be out too, so this one goes (never two agents at once).
                    log.warning("shared agent sent without its live mark: recalling it",
                                extra={"meeting_id": meeting.key, "live_user": row.live_user if row else ""})
                    self._recall(meeting, agent_id)
                return
            updated = replace(row, live_agent=agent_id or "") if deployed else replace(row, live_user="", live_agent="")
            try:
                self._rows.put(updated)
            except Conflict:
                continue
            if deployed and row.owner != meeting.user_id:
                self._recall(meeting, agent_id)
            return
        log.warning("shared agent not recorded: the workspace meeting kept changing",
                    extra={"meeting_id": meeting.key, "deployed": deployed})

    def _recall(self, meeting: Meeting, agent_id: str | None) -> None:
        if self.recall is not None:
            self.recall(replace(meeting, agent=AgentState.DEPLOYED, agent_id=agent_id))

    def recalled(self, job: RecallJob) -> None:
        """A recall completed: the agent is out of the meeting, so the next owner may send theirs."""
        if not job.workspace:
            return
        for _ in range(CONFLICT_ATTEMPTS):
            row = self._rows.get(job.workspace, job.meeting_key)
            if row is None or row.live_user != job.user_id or row.live_agent not in ("", job.agent_id):
                return
            try:
                self._rows.put(replace(row, live_user="", live_agent=""))
            except Conflict:
                continue
            log.info("shared agent recalled: the meeting is free for the next owner",
                     extra={"meeting_id": job.meeting_key})
            return


def leave_if_on(teams: TeamService) -> Callable[[Meeting], None]:
    """A removal hook (`services.meetings.OnRemoval`): a meeting row going before its meeting ended
    hands the shared workspace meeting over (TeamService.leave)."""

    def before_delete(meeting: Meeting) -> None:
        if meeting.end > teams.now():
            teams.leave(meeting)

    return before_delete
