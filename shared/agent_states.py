"""A meeting's agent state, and every move it may make: one declarative table. Pure domain.

Every writer of `Meeting.agent` asks `allowed(current, target)` (or `check`) before it writes:
the sync's planning (scheduled / withdrawn), the deployer (claim, answer, failure), the recall, and
the agent platform's progress reports (`shared/services/agent_progress.py`). A move the table does
not hold is a bug in the writer (or a late message), never a silent overwrite.

States (the API's `agent`, ../shared/API.md "Meetings" and "Agent progress"):
- scheduled: a deploy message waits for `join_at`; deploying: a deployer holds the claim (shown
  as scheduled); deployed: the agent API took it;
- joining < waiting_for_admission < in_call < ended: what the agent platform reports, in the order
  one try goes through (a try only moves forward);
- not_admitted (the platform's not_admitted, admission_timeout or removed), failed: final for a
  try; not_admitted may lead to a new try (deploying) while the meeting is on;
- recalled: withdrawn by the service before the meeting ended; may be sent again (scheduled).

The progress order for one try is `RANK`; a newer try (a higher `agent_attempt`) supersedes an older
try's statuses whatever their rank (`report_applies`)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class AgentState(StrEnum):
    SCHEDULED = "scheduled"
    DEPLOYING = "deploying"  # internal: a deployer holds the claim (shown as "scheduled")
    DEPLOYED = "deployed"
    JOINING = "joining"
    WAITING_FOR_ADMISSION = "waiting_for_admission"
    IN_CALL = "in_call"
    NOT_ADMITTED = "not_admitted"
    ENDED = "ended"
    FAILED = "failed"
    RECALLED = "recalled"  # deployed, then withdrawn before the meeting ended (shared/services/recall.py)

    @property
    def public(self) -> str:
        """What the API shows: scheduled|deployed|joining|waiting_for_admission|in_call|
        not_admitted|ended|failed|recalled."""
        return AgentState.SCHEDULED.value if self is AgentState.DEPLOYING else self.value


class ReportedStatus(StrEnum):
    """The `status` values the agent platform reports (`POST /api/agents/status`)."""

    JOINING = "joining"
    WAITING_FOR_ADMISSION = "waiting_for_admission"
    IN_CALL = "in_call"
    NOT_ADMITTED = "not_admitted"
    ADMISSION_TIMEOUT = "admission_timeout"
    REMOVED = "removed"
    ENDED = "ended"
    FAILED = "failed"


# What the meeting shows for each reported status (admission_timeout and removed show as not_admitted).
SHOWN_AS: Mapping[ReportedStatus, AgentState] = {
    ReportedStatus.JOINING: AgentState.JOINING,
    ReportedStatus.WAITING_FOR_ADMISSION: AgentState.WAITING_FOR_ADMISSION,
    ReportedStatus.IN_CALL: AgentState.IN_CALL,
    ReportedStatus.NOT_ADMITTED: AgentState.NOT_ADMITTED,
    ReportedStatus.ADMISSION_TIMEOUT: AgentState.NOT_ADMITTED,
    ReportedStatus.REMOVED: AgentState.NOT_ADMITTED,
    ReportedStatus.ENDED: AgentState.ENDED,
    ReportedStatus.FAILED: AgentState.FAILED,
}

# Statuses after which another try may follow (while the meeting is on and tries are left).
RETRYABLE: frozenset[ReportedStatus] = frozenset({ReportedStatus.NOT_ADMITTED, ReportedStatus.ADMISSION_TIMEOUT})

_S = AgentState
# Agent states in which an agent is (or may be) in the meeting: what a recall takes out.
LIVE: frozenset[AgentState] = frozenset({_S.DEPLOYED, _S.JOINING, _S.WAITING_FOR_ADMISSION, _S.IN_CALL})
# States in which an agent was sent for the meeting (the join decision's `agent_sent`).
SENT: frozenset[AgentState] = LIVE | {_S.DEPLOYING, _S.NOT_ADMITTED, _S.ENDED}
_REPORTED = frozenset(SHOWN_AS.values())

# Progress order within one try. Final states outrank every progress state.
RANK: Mapping[AgentState, int] = {
    _S.DEPLOYING: 0, _S.DEPLOYED: 1, _S.JOINING: 2, _S.WAITING_FOR_ADMISSION: 3, _S.IN_CALL: 4,
    _S.ENDED: 9, _S.NOT_ADMITTED: 9, _S.FAILED: 9,
}
FINAL: frozenset[AgentState] = frozenset({_S.ENDED, _S.NOT_ADMITTED, _S.FAILED})

# THE table: from each state (None = no agent planned), the states a writer may move it to. Staying
# in the same state (a rewrite of other fields) is always allowed.
TRANSITIONS: Mapping[AgentState | None, frozenset[AgentState | None]] = {
    None: frozenset({_S.SCHEDULED}),
    # planned: withdrawn (None); deployer: claim, too late / missed (failed)
    _S.SCHEDULED: frozenset({None, _S.DEPLOYING, _S.FAILED}),
    # deployer: answer (deployed), retry or crash (scheduled), permanent refusal (failed); the
    # platform may report before the answer is stored (every reported state)
    _S.DEPLOYING: frozenset({None, _S.SCHEDULED, _S.DEPLOYED, _S.FAILED}) | _REPORTED,
    # reports move it on; a recall takes it out
    _S.DEPLOYED: _REPORTED | {_S.RECALLED},
    _S.JOINING: _REPORTED - {_S.JOINING} | {_S.RECALLED},
    _S.WAITING_FOR_ADMISSION: _REPORTED - {_S.JOINING, _S.WAITING_FOR_ADMISSION} | {_S.RECALLED},
    _S.IN_CALL: frozenset({_S.ENDED, _S.NOT_ADMITTED, _S.FAILED, _S.RECALLED}),
    # a new try (the deployer claims again), or, when the retry is withdrawn, it stays
    _S.NOT_ADMITTED: frozenset({_S.DEPLOYING}),
    _S.ENDED: frozenset(),
    _S.FAILED: frozenset(),
    # wanted again: a new agent, scheduled afresh (or planned from nothing)
    _S.RECALLED: frozenset({None, _S.SCHEDULED}),
}


class IllegalTransition(ValueError):
    """A writer tried a move the table does not hold."""


def allowed(current: AgentState | None, target: AgentState | None) -> bool:
    return current == target or target in TRANSITIONS[current]


def check(current: AgentState | None, target: AgentState | None) -> AgentState | None:
    """`target`, or IllegalTransition naming both states."""
    if not allowed(current, target):
        raise IllegalTransition(f"agent state {current} cannot move to {target}")
    return target


def report_applies(current: AgentState | None, current_attempt: int, reported: ReportedStatus,
                   report_attempt: int) -> bool:
    """Whether a status the platform reported for try `report_attempt` moves the meeting now at
    (`current`, `current_attempt`): an older try's status never does; within the same try only a
    forward move does (a late or repeated status changes nothing)."""
    if report_attempt != current_attempt or current is None:
        return False
    target = SHOWN_AS[reported]
    if current not in RANK or current in FINAL:
        return False
    return RANK[target] > RANK[current] and allowed(current, target)
