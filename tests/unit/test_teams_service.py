"""The workspace shared agent's service (shared/services/teams.py): never two live agents for one
meeting, and a hand-over that fails is retried (API.md "Teams")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.agent_states import AgentState
from shared.clock import FixedClock
from shared.ports import Meeting, Source, TeamClaims
from shared.services.meetings import OnRemoval
from shared.services.teams import GateVerdict, TeamService, leave_if_on
from tests.fakes import Meetings, TeamClaimsStore, WorkspaceMeetings

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def meeting(user_id: str, agent: AgentState = AgentState.SCHEDULED) -> Meeting:
    return Meeting(user_id=user_id, key="k1", link_key="k1", title="Weekly", start=NOW + timedelta(hours=1),
                   end=NOW + timedelta(hours=2), platform="teams", join_url="https://teams.microsoft.com/l/x",
                   sources=(Source("c-" + user_id, "e1", f"{user_id}@x"),), agent=agent)


@pytest.fixture()
def team():
    claims, rows, meetings = TeamClaimsStore(), WorkspaceMeetings(), Meetings()
    for user in ("ann", "ben"):
        claims.put(TeamClaims(user, "w", True, f"{user}@x"))
    teams = TeamService(claims=claims, rows=rows, meetings=meetings, clock=FixedClock(NOW))
    recalled: list[str | None] = []
    teams.recall = lambda m: recalled.append(m.agent_id)
    return teams, rows, meetings, recalled


def test_a_replan_from_an_old_copy_while_the_owner_deploys_ends_with_one_live_agent(team):
    teams, rows, _, recalled = team
    ann, ben = teams.workspace_of("ann"), teams.workspace_of("ben")
    teams.enlist(ann, meeting("ann"), wants=True)
    teams.enlist(ben, meeting("ben"), wants=True)
    assert teams.before_deploy(meeting("ann", AgentState.DEPLOYING)).verdict is GateVerdict.PROCEED
    teams.enlist(ann, meeting("ann"), wants=False)  # a replan working from the SCHEDULED copy
    assert teams.before_deploy(meeting("ben", AgentState.DEPLOYING)).verdict is GateVerdict.PROCEED
    teams.after_deploy(meeting("ben", AgentState.DEPLOYING), "agent-ben", deployed=True)
    teams.after_deploy(meeting("ann", AgentState.DEPLOYING), "agent-ann", deployed=True)
    live = {"agent-ann", "agent-ben"} - set(recalled)
    assert live == {"agent-ben"}
    assert rows.get("w", "k1").live_user == "ben"  # ann's recall never frees ben's mark
    assert rows.get("w", "k1").end == meeting("ben").end  # what pruning goes by


def test_a_hand_over_that_fails_leaves_the_meeting_row_for_the_retry(team):
    teams, rows, meetings, _ = team
    ann, ben = teams.workspace_of("ann"), teams.workspace_of("ben")
    teams.enlist(ann, meeting("ann"), wants=True)
    teams.enlist(ben, meeting("ben"), wants=True)
    stored = meetings.create(meeting("ann"))
    store = OnRemoval(meetings, leave_if_on(teams))
    rows.down = True
    with pytest.raises(OSError):
        store.delete(stored)
    assert meetings.get("ann", "k1") is not None  # the retry finds it
    rows.down = False
    store.delete(meetings.get("ann", "k1"))
    assert meetings.get("ann", "k1") is None
    assert rows.get("w", "k1").owner == "ben"
    assert teams.before_deploy(meeting("ben", AgentState.DEPLOYING)).verdict is GateVerdict.PROCEED
