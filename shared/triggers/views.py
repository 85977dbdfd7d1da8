"""JSON shapes of the API (see the OpenAPI document)."""

from datetime import datetime
from typing import Any

import azure.functions as func

from shared.autojoin import Decision
from shared.connections import Connection, PlanLimitExceeded
from shared.platform_auth import User
from shared.ports import CalendarChoice, Meeting
from shared.scheduling import AgentState
from shared.services.meeting_lifecycle import facts_of
from shared.services.meetings import accounts_of
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
    }


def calendar_view(choice: CalendarChoice) -> dict[str, Any]:
    """One of the account's calendars as `GET /api/outlook/connections/{id}/calendars` lists it."""
    return {"id": choice.id, "name": choice.name, "is_default": choice.is_default, "selected": choice.selected,
            "agent_name": choice.agent_name}


def meeting_view(m: Meeting, decision: Decision) -> dict[str, Any]:
    """A meeting with its join decision. An agent is shown as scheduled (and `agent_at` as when it
    goes) only while the decision still says it joins."""
    facts = facts_of(m)
    agent = m.agent.public if m.agent else None
    if agent == AgentState.SCHEDULED.value and not decision.will_join:
        agent = None
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
        "response": facts.response.value,
        "external": facts.external,
        "series": facts.series,
        "will_join": decision.will_join,
        "why": decision.why.value,
        "why_text": decision.text,
        "choice": None if decision.choice is None else {"join": decision.choice.join,
                                                        "series": decision.choice.series},
    }


def plan_limit_error(exc: PlanLimitExceeded) -> func.HttpResponse:
    return error(
        403, "plan_limit",
        f"Your {exc.plan.value.capitalize()} plan allows {exc.limit} Outlook account"
        f"{'' if exc.limit == 1 else 's'}. Upgrade your plan to connect more, or disconnect one first.",
        plan=exc.plan.value, limit=exc.limit, used=exc.used,
    )
