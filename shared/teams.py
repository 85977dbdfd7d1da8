"""One agent per meeting for a workspace (API.md "Teams"). Pure domain.

When the platform token says `workspace_dedupe`, teammates of one workspace invited to the same
meeting get one agent: the first whose rules join it owns the deployment, the agent serves every
teammate whose rules join it (`user_ids`), the others are told a teammate's agent joins for them.
When the owner leaves (skips, disconnects, is erased), the next teammate who still wants it becomes
the owner; the deployer waits until the former owner's agent is recalled before it sends the new
one (a short gap, never two agents at once). With nobody left, the agent is recalled.

`enlist` is the one transition of a workspace meeting's membership; `shared.services.teams` writes
it with the row's ETag, so concurrent syncs of different users on different instances agree on one
owner."""

from __future__ import annotations

from dataclasses import replace

from shared.autojoin import Decision, Why
from shared.ports import Meeting, Teammate, WorkspaceMeeting


def workspace_meeting_key(meeting: Meeting) -> str:
    """The same meeting in teammates' calendars: the user-independent meeting key, made of the
    meeting's primary identity (its iCalUId when Graph gives one, which every attendee's mailbox
    shares whatever link form it shows; else its join link's identity) and its start
    (shared.meeting_identity)."""
    return meeting.key


def enlist(row: WorkspaceMeeting, teammate: Teammate, wants: bool) -> WorkspaceMeeting:
    """The row after `teammate`'s own decision (`wants`: their rules join it). The owner stays while
    they want it; when they leave, the first remaining member takes over (`handovers` counts it);
    nobody left: no owner."""
    members = tuple(m for m in row.members if m.user_id != teammate.user_id)
    if wants:
        present = next((m for m in row.members if m.user_id == teammate.user_id), None)
        members = row.members if present == teammate else (*members, teammate)
    owner = row.owner if any(m.user_id == row.owner for m in members) else (members[0].user_id if members else "")
    handovers = row.handovers + (1 if row.owner and owner != row.owner else 0)
    return replace(row, members=members, owner=owner, handovers=handovers)


def teammate_decision(own: Decision, row: WorkspaceMeeting | None, user_id: str) -> Decision:
    """The user's decision in a shared workspace: one their rules join, but whose agent a teammate
    owns, gets no agent of its own (`teammate_agent`)."""
    if not own.will_join or row is None or not row.owner or row.owner == user_id:
        return own
    return replace(own, will_join=False, why=Why.TEAMMATE_AGENT,
                   text=f"A teammate's agent joins for you: {row.owner_email} sends it to this meeting.")
