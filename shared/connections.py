"""Connections to Outlook accounts: states, the reasons users see, plan limits. Pure domain."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class Plan(StrEnum):
    FREE = "free"
    SOLO = "solo"
    PRO = "pro"
    BUSINESS = "business"


# None = unlimited. From the help article's plan table.
PLAN_LIMITS: dict[Plan, int | None] = {Plan.FREE: 1, Plan.SOLO: 2, Plan.PRO: None, Plan.BUSINESS: None}


def plan_limit(plan: Plan) -> int | None:
    return PLAN_LIMITS[plan]


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    ERROR = "error"


class Action(StrEnum):
    RECONNECT = "reconnect"
    CONTACT_ADMIN = "contact_admin"


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    action: Action | None


REASONS: dict[str, Reason] = {
    r.code: r
    for r in (
        Reason("token_expired", "Microsoft sign-in expired after a long time without use. Reconnect to "
               "resume auto-join.", Action.RECONNECT),
        Reason("access_revoked", "Access to this calendar was revoked in Microsoft (password change, "
               "sign-out everywhere, or removed app permission). Reconnect to resume auto-join.",
               Action.RECONNECT),
        Reason("sign_in_required", "Your organisation requires you to sign in again (sign-in frequency or "
               "multi-factor policy). Reconnect to resume auto-join.", Action.RECONNECT),
        Reason("consent_required", "Permission to read this calendar is no longer granted. Reconnect and "
               "accept the permissions to resume auto-join.", Action.RECONNECT),
        Reason("admin_approval_required", "Your organisation requires an administrator to approve "
               "CoAgentor. Ask your IT admin to allow CoAgentor's Outlook Calendar app.",
               Action.CONTACT_ADMIN),
        Reason("blocked_by_policy", "Your organisation's conditional access policy blocks CoAgentor. Ask "
               "your IT admin to allow CoAgentor's Outlook Calendar app.", Action.CONTACT_ADMIN),
        Reason("refresh_failed", "Microsoft refused to renew access to this calendar. Reconnect to resume "
               "auto-join.", Action.RECONNECT),
    )
}

# AADSTS codes that mean the stored grant is no longer usable, mapped to what the user sees.
_AADSTS_REASONS: dict[str, str] = {
    "700082": "token_expired",
    "700084": "token_expired",
    "50173": "access_revoked",
    "70000": "access_revoked",
    "70008": "token_expired",
    "50132": "access_revoked",
    "70043": "sign_in_required",
    "50076": "sign_in_required",
    "50079": "sign_in_required",
    "50078": "sign_in_required",
    "65001": "consent_required",
    "90094": "admin_approval_required",
    "90095": "admin_approval_required",
    "53003": "blocked_by_policy",
    "53000": "blocked_by_policy",
    "530003": "blocked_by_policy",
}
_AADSTS = re.compile(r"AADSTS(\d{4,7})")
_PERMANENT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required",
                               "unauthorized_client", "invalid_client"})


def aadsts_code(description: str | None) -> str | None:
    m = _AADSTS.search(description or "")
    return m.group(1) if m else None


def classify_token_error(error: str | None, description: str | None) -> Reason | None:
    """A permanent failure's reason, or None for a transient one (timeouts, 5xx, 429: retry later)."""
    code = aadsts_code(description)
    if code in _AADSTS_REASONS:
        return REASONS[_AADSTS_REASONS[code]]
    if error in _PERMANENT_ERRORS:
        return REASONS["refresh_failed"]
    return None


@dataclass(frozen=True)
class Connection:
    id: str
    user_id: str
    email: str
    home_account_id: str
    tenant_id: str
    status: ConnectionStatus
    reason_code: str | None
    secret_name: str
    connected_at: datetime
    last_refreshed_at: datetime | None
    access_expires_at: datetime | None
    slot: int | None = None
    transient_failure_since: datetime | None = None
    transient_failures: int = 0
    retry_at: datetime | None = None

    @property
    def reason(self) -> Reason | None:
        return REASONS.get(self.reason_code) if self.reason_code else None

    @property
    def is_active(self) -> bool:
        return self.status is ConnectionStatus.ACTIVE

    def failed(self, reason: Reason) -> Connection:
        return replace(self, status=ConnectionStatus.ERROR, reason_code=reason.code)

    def refreshed(self, now: datetime, access_expires_at: datetime | None) -> Connection:
        return replace(self, status=ConnectionStatus.ACTIVE, reason_code=None, last_refreshed_at=now,
                       access_expires_at=access_expires_at or self.access_expires_at,
                       transient_failure_since=None, transient_failures=0, retry_at=None)

    def transiently_failed(self, now: datetime) -> Connection:
        """Microsoft could not be reached or asked us to wait: stay active, back off, keep the cache."""
        failures = self.transient_failures + 1
        return replace(self, transient_failure_since=self.transient_failure_since or now,
                       transient_failures=failures, retry_at=now + transient_backoff(failures))

    def warning(self, now: datetime, after_seconds: int) -> str | None:
        """Shown on an Active connection whose refreshes have kept failing for a while, so the user
        hears of it before an agent fails to show."""
        since = self.transient_failure_since
        if not self.is_active or since is None or (now - since).total_seconds() < after_seconds:
            return None
        return (f"Microsoft has not renewed access to this calendar since {since:%Y-%m-%d %H:%M} UTC. "
                "We keep retrying; if this persists, auto-join may stop. Reconnecting can help.")


def transient_backoff(failures: int) -> timedelta:
    """1, 2, 4 … minutes between attempts after transient failures, at most an hour."""
    return timedelta(seconds=min(60 * 2 ** max(failures - 1, 0), 3600))


def refresh_due(conn: Connection, now: datetime, next_run_in_seconds: float, max_age_seconds: int) -> bool:
    """Redeem the refresh token when the access token lapses before the next run, or when the last
    redemption is older than the max age: refresh tokens never reach the 90-day inactivity expiry,
    and a revocation surfaces within that age."""
    if not conn.is_active:
        return False
    if conn.retry_at is not None and now < conn.retry_at:
        return False  # backing off after transient failures
    if conn.transient_failure_since is not None:
        return True
    if conn.last_refreshed_at is None or max_age_seconds == 0:
        return True
    if (now - conn.last_refreshed_at).total_seconds() >= max_age_seconds:
        return True
    if conn.access_expires_at is None:
        return True
    return (conn.access_expires_at - now).total_seconds() <= next_run_in_seconds


class PlanLimitExceeded(Exception):
    def __init__(self, plan: Plan, limit: int, used: int) -> None:
        super().__init__(f"The {plan.value} plan allows {limit} Outlook account(s); {used} connected")
        self.plan, self.limit, self.used = plan, limit, used
