"""Connections to Outlook accounts: states, the reasons users see, plan limits. Pure domain."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime
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


def owner_tag(user_id: str) -> str:
    """An opaque, stable tag of a CoAgentor user (32 hex characters: SHA-256 of the id), used where
    a value must name its user's storage partition but leaves the service in a URL (a sign-in's
    `state`, a claim code, an admin-consent `state`): the platform's user id itself never does."""
    return hashlib.sha256(f"owner:{user_id}".encode()).hexdigest()[:32]


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
        Reason("app_blocked_in_tenant", "Your organisation's admin disabled or removed CoAgentor's enterprise "
               "app (\"CoAgentor Outlook Calendar\") in your Microsoft tenant, so Microsoft no longer lets it "
               "read this calendar. Ask your IT admin to enable it again in the Microsoft Entra admin center "
               "(Enterprise applications), then reconnect.", Action.CONTACT_ADMIN),
        Reason("calendar_unavailable", "This account signs in, but Microsoft Graph cannot read its calendar "
               "(the mailbox is on-premises, unlicensed or not yet set up). Ask your IT admin to give the "
               "account an Exchange Online mailbox that Microsoft Graph can read, then reconnect.",
               Action.CONTACT_ADMIN),
    )
}

# Who can fix a failure decides what the user sees (Microsoft's error-code reference tells apps to
# react to `error`, `error_codes` and `suberror`, never to parse `error_description`:
# https://learn.microsoft.com/entra/identity-platform/reference-error-codes#handling-error-codes-in-your-application).
class FixedBy(StrEnum):
    USER = "user"  # reconnecting fixes it: Error, action reconnect
    ADMIN = "admin"  # only their IT admin can: Error, action contact_admin
    SERVICE = "service"  # our own credentials or registration: every user at once; operators fix it
    TRANSIENT = "transient"  # Microsoft unreachable, 5xx, throttled: retry, it recovers by itself


@dataclass(frozen=True)
class Failure:
    """A classified failure. `reason` is set exactly when the user or their admin must act."""

    fixed_by: FixedBy
    reason: Reason | None = None
    code: str = ""  # what operators see in logs: the AADSTS code, Graph error code or error
    recognised: bool = True  # False: an answer none of the rules knows (kept transient, watched)


# AADSTS codes that mean the stored grant is no longer usable, mapped to what the user sees.
_AADSTS_REASONS: dict[int, str] = {
    700082: "token_expired",
    700084: "token_expired",
    70008: "token_expired",
    50173: "access_revoked",
    70000: "access_revoked",
    50132: "access_revoked",
    50057: "access_revoked",  # account disabled
    50126: "access_revoked",
    70043: "sign_in_required",
    50076: "sign_in_required",
    50079: "sign_in_required",
    50078: "sign_in_required",
    50055: "sign_in_required",  # password expired
    65001: "consent_required",
    90094: "admin_approval_required",
    90095: "admin_approval_required",
    50105: "admin_approval_required",  # the user is not assigned to the app in their tenant
    500021: "blocked_by_policy",  # the tenant's tenant restrictions deny the app
    53003: "blocked_by_policy",
    53000: "blocked_by_policy",
    530003: "blocked_by_policy",
    530002: "blocked_by_policy",
}
# The service's own credentials or registration (FACTS: app-level identity failures): no user action
# helps, and every connection fails at once.
# With a managed identity's client assertion (workload identity federation) the service's own failures
# are Entra refusing the assertion: no federated credential for its issuer / audience / subject
# (700211 / 700212 / 700213, 7002138 subject differing in case; 70021 the older code), not within its
# valid time range (700024), not a JWT (50027), a user's token presented (700229).
APP_IDENTITY_CODES = frozenset({7000222, 7000215, 7000216, 7000218, 700016, 7000112, 700027, 700025, 50011,
                                700211, 700212, 700213, 7002138, 70021, 700024, 50027, 700229})
_APP_IDENTITY_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# Microsoft says so itself: try again later.
# Microsoft's reference calls these retryable / temporary: 50033 RetryableError, 90006
# ExternalServerRetryableError, 90033 MsodsServiceUnavailable, 70012 MsaServerError, 90012 RequestTimeout,
# 90024 RequestBudgetExceededError, 90055 TenantThrottlingError, 90090 GraphRetryableError, 50196
# LoopDetected (the client asked too often); 50053 (account locked after failed sign-ins, or an IP
# blocked for suspicious activity) lifts by itself.
_TRANSIENT_CODES = frozenset({50033, 90006, 90033, 70012, 90012, 90024, 90055, 90090, 50196, 50053})
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "unreachable", "service_unavailable",
                               "request_timeout", "slow_down"})
# `suberror` values of invalid_grant / interaction_required (MSAL's result dicts carry them).
_SUBERROR_REASONS: dict[str, str] = {
    "basic_action": "sign_in_required",
    "additional_action": "sign_in_required",
    "message_only": "sign_in_required",
    "user_password_expired": "sign_in_required",
    "consent_required": "consent_required",
    "bad_token": "access_revoked",
    "token_expired": "token_expired",
}
# The grant itself is unusable: the user reconnects. `no_token` / `no_account` describe a stored cache
# without a usable refresh token or account: retrying can never help either.
_USER_ERRORS: dict[str, str] = {
    "invalid_grant": "refresh_failed",
    "interaction_required": "sign_in_required",
    "consent_required": "consent_required",
    "login_required": "sign_in_required",
    "no_token": "refresh_failed",
    "no_account": "refresh_failed",
    "cache_missing": "refresh_failed",
}
_AADSTS = re.compile(r"AADSTS(\d{4,7})")
# The app's service principal disabled (7000112) or absent (700016) in the tenant the request was for.
# In one customer tenant that is its admin's doing; in the app's home tenant, for personal accounts
# (`consumers`, whose "tenant" no customer administers) or in many tenants at once, the service's own
# registration is broken (FACTS, round three; learn.microsoft.com/entra/identity-platform/reference-error-codes).
TENANT_SCOPED_APP_CODES = frozenset({7000112, 700016})
CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
MANY_TENANTS = 3  # this many distinct tenants refusing the app within the window: the service's failure


@dataclass(frozen=True)
class TenantScope:
    """Where a refused token request came from, for the codes whose owner depends on it.

    - tenant_id: the connection's tenant (the `utid` of its home account id);
    - home_tenant_id: the tenant the app registration lives in ("" when not configured);
    - tenants_refusing: distinct tenants whose token requests were refused with these codes lately,
      this one included (shared.ports.AppRefusals)."""

    tenant_id: str
    home_tenant_id: str = ""
    tenants_refusing: int = 1

    @property
    def one_customer_tenant(self) -> bool:
        tenant = self.tenant_id.lower()
        return (bool(tenant) and tenant not in (CONSUMERS_TENANT_ID, "consumers", self.home_tenant_id.lower())
                and self.tenants_refusing < MANY_TENANTS)


def aadsts_code(description: str | None) -> str | None:
    """The AADSTS number in an error description: for logs and for the text fallback only."""
    m = _AADSTS.search(description or "")
    return m.group(1) if m else None


def classify_token_error(
    error: str | None,
    description: str | None = None,
    error_codes: tuple[int, ...] = (),
    suberror: str | None = None,
    *,
    scope: TenantScope | None = None,
) -> Failure:
    """Who can fix a token-endpoint failure, from `error`, `error_codes` (ints) and `suberror`; the
    AADSTS number in `error_description` is read only when `error_codes` is missing. `scope` says where
    the request came from: AADSTS7000112 / 700016 in one customer tenant are that tenant admin's to
    fix (`app_blocked_in_tenant`); without a scope, or in the home tenant, `consumers` or many
    tenants at once, they are the service's."""
    codes = tuple(error_codes) or tuple(int(c) for c in [aadsts_code(description)] if c)
    label = f"AADSTS{codes[0]}" if codes else (error or "unknown_error")
    if scope is not None and scope.one_customer_tenant and any(c in TENANT_SCOPED_APP_CODES for c in codes):
        return _failure(REASONS["app_blocked_in_tenant"], label)
    if error in _APP_IDENTITY_ERRORS or any(c in APP_IDENTITY_CODES for c in codes):
        return Failure(FixedBy.SERVICE, None, label)
    for c in codes:
        if c in _AADSTS_REASONS:
            return _failure(REASONS[_AADSTS_REASONS[c]], label)
    if error in _TRANSIENT_ERRORS or any(c in _TRANSIENT_CODES for c in codes):
        return Failure(FixedBy.TRANSIENT, None, label)
    if suberror in _SUBERROR_REASONS:
        return _failure(REASONS[_SUBERROR_REASONS[suberror]], label)
    if error in _USER_ERRORS:
        return _failure(REASONS[_USER_ERRORS[error]], label)
    # Unknown: keep trying; a warning shows if it lasts (TOKEN_WARNING_AFTER_SECONDS).
    return Failure(FixedBy.TRANSIENT, None, label, recognised=False)


def _failure(reason: Reason, code: str) -> Failure:
    return Failure(FixedBy.ADMIN if reason.action is Action.CONTACT_ADMIN else FixedBy.USER, reason, code)


# Graph error codes meaning this account's mailbox cannot be read through Graph, whatever token we
# hold (on-premises, unlicensed, inactive or not provisioned). FACTS: "Mailboxes Graph cannot reach".
MAILBOX_UNAVAILABLE_CODES = frozenset({"MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI",
                                       "ErrorMailboxNotEnabled", "ResourceNotFound.MailboxNotEnabled",
                                       "ErrorNonExistentMailbox"})


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
    retry_at: datetime | None = None  # legacy rows only: no per-connection back-off any more
    etag: str | None = None  # the stored row's version this copy was read at (None: not stored yet)
    failure_class: str | None = None  # while refreshes fail: "service", "transient" (known) or "unknown"
    failure_code: str | None = None  # for operators and support: AADSTS code / error, never text
    sync_failing_since: datetime | None = None  # syncs of an Active connection keep failing
    login_hint: str | None = None  # id_token `login_hint` (or preferred_username): the reconnect hint

    @property
    def reason(self) -> Reason | None:
        return REASONS.get(self.reason_code) if self.reason_code else None

    @property
    def is_active(self) -> bool:
        return self.status is ConnectionStatus.ACTIVE

    def failed(self, reason: Reason) -> Connection:
        return replace(self, status=ConnectionStatus.ERROR, reason_code=reason.code,
                       transient_failure_since=None, transient_failures=0, retry_at=None, failure_class=None)

    def refreshed(self, now: datetime, access_expires_at: datetime | None) -> Connection:
        return replace(self, status=ConnectionStatus.ACTIVE, reason_code=None, last_refreshed_at=now,
                       access_expires_at=access_expires_at or self.access_expires_at,
                       transient_failure_since=None, transient_failures=0, retry_at=None,
                       failure_class=None, failure_code=None)

    def transiently_failed(self, now: datetime, failure: Failure | None = None) -> Connection:
        """Not the user's failure (our credentials, Microsoft down, throttled): stay active, keep the
        cache, and try again at the very next refresh run, so recovery is never hidden by a back-off
        (the refresh timer's period paces the retries)."""
        failure_class = ("unknown" if failure is None or not failure.recognised else failure.fixed_by.value)
        return replace(self, transient_failure_since=self.transient_failure_since or now,
                       transient_failures=self.transient_failures + 1, retry_at=None,
                       failure_class=failure_class, failure_code=failure.code if failure else None)

    def synced(self, now: datetime, ok: bool) -> Connection:
        """After a sync: remember since when syncs keep failing (cleared by one that succeeds)."""
        if ok:
            return replace(self, sync_failing_since=None)
        return replace(self, sync_failing_since=self.sync_failing_since or now)

    def warning(self, now: datetime, after_seconds: int, sync_after_seconds: int | None = None) -> str | None:
        """Shown on an Active connection when auto-join may be delayed by something the user need not
        fix: at once for a failure of the service's own credentials or a known Microsoft outage, after
        `after_seconds` for an unrecognised refresh failure, after `sync_after_seconds` (default
        `after_seconds`) for syncs that keep failing. None when all is well."""
        if not self.is_active:
            return None
        since = self.transient_failure_since
        if since is not None:
            if self.failure_class == FixedBy.SERVICE.value:
                return ("A problem on CoAgentor's side is delaying updates from this calendar since "
                        f"{since:%Y-%m-%d %H:%M} UTC. Our team has been alerted; auto-join may be delayed. "
                        "There is nothing you need to do.")
            known_outage = self.failure_class == FixedBy.TRANSIENT.value
            if known_outage or (now - since).total_seconds() >= after_seconds:
                return (f"Microsoft has not renewed access to this calendar since {since:%Y-%m-%d %H:%M} UTC. "
                        "We keep retrying automatically; auto-join may be delayed until Microsoft answers.")
        failing = self.sync_failing_since
        threshold = after_seconds if sync_after_seconds is None else sync_after_seconds
        if failing is not None and (now - failing).total_seconds() >= threshold:
            return (f"This calendar could not be read since {failing:%Y-%m-%d %H:%M} UTC. We keep retrying; "
                    "new or changed meetings may not get an agent until it succeeds.")
        return None


# `failure_class` of an Error row whose user has not been told yet: the row is written first (so a
# write that loses to a reconnect tells nobody), the status event next; the refresh walk finishes a
# telling that a crash cut short (shared/services/health.py).
UNTOLD = "untold"


def refresh_due(conn: Connection, now: datetime, next_run_in_seconds: float, max_age_seconds: int) -> bool:
    """Redeem the refresh token when the last redemption is older than the max age (refresh tokens
    never reach the 90-day inactivity expiry, and a revocation surfaces within that age), after a
    transient failure, or, with `next_run_in_seconds` > 0, when the access token lapses before the
    next run. With 0 (the default) access tokens are renewed by the syncs that need them. An Error
    row is due only while its user is untold."""
    if not conn.is_active:
        return conn.failure_class == UNTOLD
    if conn.transient_failure_since is not None:
        return True
    if conn.last_refreshed_at is None or max_age_seconds == 0:
        return True
    if (now - conn.last_refreshed_at).total_seconds() >= max_age_seconds:
        return True
    if next_run_in_seconds <= 0:
        return False  # never ahead of need: the next sync renews a lapsed access token itself
    if conn.access_expires_at is None:
        return True
    return (conn.access_expires_at - now).total_seconds() <= next_run_in_seconds


class PlanLimitExceeded(Exception):
    def __init__(self, plan: Plan, limit: int, used: int) -> None:
        super().__init__(f"The {plan.value} plan allows {limit} Outlook account(s); {used} connected")
        self.plan, self.limit, self.used = plan, limit, used
