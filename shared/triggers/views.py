"""JSON shapes of the API (see the OpenAPI document)."""

from datetime import datetime
from typing import Any

import azure.functions as func

from shared.agent_states import AgentState
from shared.autojoin import Decision, Why
from shared.connections import Connection, PlanLimitExceeded
from shared.platform_auth import User
from shared.ports import CalendarChoice, Meeting
from shared.services.agent_progress import RISK_TEXT, Risk
from shared.services.meeting_lifecycle import facts_of
from shared.services.meetings import accounts_of
from shared.services.teams import SharedAgent
from shared.services.unlisted import UnlistedEvent
from shared.triggers.http import error


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def account_view(user: User) -> dict[str, Any]:
    """The CoAgentor account the request acts for (from the verified platform token): the page names
    it, so a session that is not the person's own shows at once."""
    return {"id": user.id, "email": user.email, "name": user.name}


def connection_view(c: Connection, now: datetime, warning_after_seconds: int,
                    sync_warning_after_seconds: int, last_synced_at: datetime | None) -> dict[str, Any]:
    reason = c.reason
    return {
        "id": c.id,
        "email": c.email,
        "status": c.status.value,
        "reason_code": reason.code if reason else None,
        "reason": reason.message if reason else None,
        "action": reason.action.value if reason and reason.action else None,
        "connected_at": iso(c.connected_at),
        "last_refreshed_at": iso(c.last_refreshed_at),
        "last_synced_at": iso(last_synced_at),
        "warning": c.warning(now, warning_after_seconds, sync_warning_after_seconds),
        # Since when reading the calendar keeps failing (cleared by a read that succeeds): Refresh
        # shows a failure at once instead of waiting for `warning`.
        "sync_failing_since": iso(c.sync_failing_since) if c.is_active else None,
    }


def calendar_view(choice: CalendarChoice) -> dict[str, Any]:
    """One of the account's calendars as `GET /api/outlook/connections/{id}/calendars` lists it."""
    return {"id": choice.id, "name": choice.name, "is_default": choice.is_default, "selected": choice.selected,
            "agent_name": choice.agent_name}


def meeting_view(m: Meeting, decision: Decision, shared: SharedAgent | None = None, *,
                 max_attempts: int = 3) -> dict[str, Any]:
    """A meeting with its join decision and its agent's progress. An agent is shown as scheduled (and
    `agent_at` as when it goes) only while the decision still says it joins. A meeting whose agent a
    teammate sends (`shared`, API.md "Teams") shows that agent's state and whose it is (`agent_owner`)."""
    facts = facts_of(m)
    agent = m.agent.public if m.agent else None
    if agent == AgentState.SCHEDULED.value and not decision.will_join:
        agent = None
    sent = m.agent_attempt > 0 and agent not in (None, AgentState.SCHEDULED.value)
    if shared is not None and decision.why is Why.TEAMMATE_AGENT:
        agent = shared.agent.public if shared.agent else None
    return {
        "id": m.key,
        "title": m.title,
        "start": iso(m.start),
        "end": iso(m.end),
        "platform": m.platform,
        "join_url": m.join_url,
        "accounts": accounts_of(m),
        "agent": agent,
        "agent_at": iso(m.deploy_at) if decision.will_join or agent is not None else None,
        "agent_detail": agent_detail(m, max_attempts) if agent is not None else None,
        "agent_attempt": m.agent_attempt if sent else None,
        "agent_attempts": max_attempts,
        "agent_since": iso(m.agent_since) if sent else None,
        "agent_retry_at": iso(m.retry_at) if m.agent is AgentState.NOT_ADMITTED else None,
        "at_risk": _at_risk(m, agent),
        "response": facts.response.value,
        "external": facts.external,
        "series": facts.series,
        "will_join": decision.will_join,
        "why": decision.why.value,
        "why_text": decision.text,
        "choice": None if decision.choice is None else {"join": decision.choice.join,
                                                        "series": decision.choice.series},
        "agent_owner": shared.owner_email if shared is not None and decision.why is Why.TEAMMATE_AGENT else None,
    }


def _at_risk(m: Meeting, agent: str | None) -> dict[str, str] | None:
    """What the readiness check found would stop the agent, while it has not been sent."""
    if m.at_risk is None or m.at_risk not in Risk._value2member_map_ or agent not in (None, "scheduled"):
        return None
    return {"reason": m.at_risk, "text": RISK_TEXT[Risk(m.at_risk)]}


def agent_detail(m: Meeting, max_attempts: int) -> str | None:
    """What the agent is doing, in the user's words (times in UTC; the page shows them in the
    viewer's own time from `agent_since` / `agent_retry_at`)."""
    state, n = m.agent, m.agent_attempt
    tries = f"Try {n} of {max_attempts}" if n > 1 else ""
    since = f"{m.agent_since:%H:%M} UTC" if m.agent_since else ""
    if state is AgentState.DEPLOYED:
        text = "Sent: the agent is on its way"
    elif state is AgentState.JOINING:
        text = "Joining the meeting"
    elif state is AgentState.WAITING_FOR_ADMISSION:
        waiting = f"{m.waiting_since:%H:%M} UTC" if m.waiting_since else since
        text = f"Waiting in the lobby since {waiting} — ask the organiser to admit it"
    elif state is AgentState.IN_CALL:
        text = f"In the call since {since}" if since else "In the call"
    elif state is AgentState.ENDED:
        text = "Left when the call ended"
    elif state is AgentState.NOT_ADMITTED:
        reason = (m.failure_reason or "").split(":", 1)[0]
        text = {"admission_timeout": "Nobody admitted the agent from the lobby in time",
                "removed": "The agent was removed from the meeting"}.get(reason, "The agent was not let in")
        if m.retry_at is not None:
            return f"{text} — try {n + 1} of {max_attempts} goes at {m.retry_at:%H:%M} UTC"
        if n > 1:
            return f"{text} (tried {n} times)"
        return text
    elif state is AgentState.FAILED:
        text = "The agent could not join"
    else:
        return None
    return f"{text} ({tries})" if tries else text


def unlisted_view(e: UnlistedEvent) -> dict[str, Any]:
    return {"title": e.title, "start": iso(e.start), "accounts": list(e.accounts), "reason": e.reason,
            "reason_text": e.reason_text}


def plan_limit_error(exc: PlanLimitExceeded) -> func.HttpResponse:
    return error(
        403, "plan_limit",
        f"Your {exc.plan.value.capitalize()} plan allows {exc.limit} Outlook account"
        f"{'' if exc.limit == 1 else 's'}. Upgrade your plan to connect more, or disconnect one first.",
        plan=exc.plan.value, limit=exc.limit, used=exc.used,
    )
