"""Everything the simulator remembers, behind one lock.

Issued codes and refresh tokens, mailboxes, revocations, injected faults, the request log and the
concurrency counters, plus the knobs tests turn: `Config` (global), `AccountSettings` (per account)
and `AppState` (an app registration's client secrets, disabled or deleted). Handlers take
`state.lock` for every read or change of shared data and never sleep while holding it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from devstack.msim.calendar import Mailbox
from devstack.msim.directory import Account, AppRegistration, Directory, FederatedCredential, ManagedIdentity
from devstack.msim.subscriptions import Notifier
from devstack.msim.tokens import SigningKey

MAILBOX_CONCURRENCY_LIMIT = 4  # Outlook: 4 concurrent requests per app per mailbox
REQUEST_LOG_LIMIT = 20_000
REDACTED = "[redacted]"
# Never kept in the request log, wherever they appear (query string or form body).
SECRET_PARAMETERS = frozenset(
    {
        "code",
        "refresh_token",
        "client_secret",
        "code_verifier",
        "access_token",
        "id_token",
        "client_assertion",
        "assertion",
        "password",
    }
)


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: list[str]
    nonce: str | None
    upn: str
    authority_tenant: str  # the {tenant} path segment of the authorize request, lower-cased
    issued_at: float  # time.monotonic()
    seq: int
    redeemed: bool = False


@dataclass
class RefreshGrant:
    client_id: str
    upn: str
    scopes: list[str]
    seq: int  # issue order, compared with revocations
    issued_at: dt.datetime
    last_used: float  # time.monotonic()


@dataclass
class Fault:
    id: int
    path_prefix: str
    method: str | None = None
    status: int | None = None
    retry_after: int | None = None
    remaining: int | None = None  # None: every matching request until reset
    error: str | None = None
    aadsts: str | None = None
    error_description: str | None = None
    suberror: str | None = None
    code: str | None = None  # Graph error code
    message: str | None = None  # Graph error message
    latency_ms: int | None = None
    body: str | None = None  # "json", "html" (an outage page) or "empty"; None: what the endpoint usually sends

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if path.startswith(self.path_prefix):
            return True
        # "/oauth2/v2.0/token" matches the token endpoint of every tenant.
        if self.path_prefix.startswith("/oauth2/"):
            tail = "/" + path.lstrip("/").partition("/")[2]
            return tail.startswith(self.path_prefix)
        return False

    def describe(self) -> dict[str, Any]:
        shown = {
            "id": self.id,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "status": self.status,
            "retry_after": self.retry_after,
            "count": self.remaining,
            "error": self.error,
            "aadsts": self.aadsts,
            "error_description": self.error_description,
            "suberror": self.suberror,
            "code": self.code,
            "message": self.message,
            "latency_ms": self.latency_ms,
            "body": self.body,
        }
        return {k: v for k, v in shown.items() if v is not None or k == "count"}


# How Graph answers a delta link whose sync state is gone: as reported ("SyncStateNotFound", 410,
# with the generations it still keeps), as documented ("syncStateNotFound", 410), or the 400
# "InvalidDeltaToken" some developers report instead.
DELTA_EXPIRED_CODES = ("SyncStateNotFound", "syncStateNotFound", "InvalidDeltaToken")
_AT_LEAST_ONE = frozenset({"access_token_lifetime_seconds", "delta_generations", "notification_duplicates"})
_CHOICES: dict[str, tuple[str, ...]] = {"delta_token_expired_code": DELTA_EXPIRED_CODES}
_SECONDS = frozenset({"notification_retry_seconds", "slow_endpoint_delay_seconds"})
# Names accepted for compatibility with checks written before the field knobs: old -> current.
_ALIASES = {"access_token_lifetime": "access_token_lifetime_seconds"}
OCCURRENCE_GET_BY_ID = (404, 400)


@dataclass
class Config:
    """Global knobs, `GET|POST /_sim/config`. `reset` puts back the values the simulator started with.

    The field knobs (DEVSTACK.md, "Microsoft as it behaves in the field") default to fast values so
    that tests stay quick; Microsoft's own figures are in the comments."""

    access_token_lifetime_seconds: int = 3600
    # That long before the access token that last authorized a subscription expires, Graph challenges
    # it (reauthorizationRequired) and pauses its change notifications until it is reauthorized.
    reauthorization_lead_seconds: int = 600
    # Each change notification waits a random delay in [min, max] before its first attempt (Graph:
    # under a minute on average, up to 3 minutes for calendars).
    notification_latency_seconds: list[float] = field(default_factory=lambda: [0.0, 0.5])
    notification_duplicates: int = 1  # each notification POSTed this many times (at least once)
    notification_retry_seconds: float = 60.0  # Graph: 4 hours, then dropped and `missed`
    slow_endpoint_delay_seconds: float = 30.0  # Graph: 10 minutes once 10 % of answers are slow
    # After one occurrence of a series is deleted: is its master re-emitted by calendarView delta, and
    # what `GET /me/events/{occurrence id}` answers (404 ErrorItemNotFound or 400
    # ErrorCalendarOccurrenceIsDeletedFromRecurrence). Neither is documented.
    occurrence_delete: dict[str, Any] = field(
        default_factory=lambda: {"master_reemitted": True, "get_by_id": 404})
    auth_code_lifetime: int = 600
    refresh_token_idle_lifetime: int = 90 * 24 * 3600
    # Sync-state generations Exchange keeps per delta sync (every nextLink and deltaLink is one):
    # older links answer SyncStateNotFound ("generation=149;[highest=157][157][155][156]",
    # microsoftgraph/microsoft-graph-docs#2350, #2877).
    delta_generations: int = 3
    delta_token_expired_code: str = "SyncStateNotFound"
    # Plain occurrences in calendarView delta also carry null-valued event keys, as reported.
    sparse_null_keys: bool = False
    # The id_token carries the `login_hint` optional claim (the registration has it configured).
    login_hint_claim: bool = True
    # Subscriptions on a secondary calendar's `/me/calendars/{id}/events` notify (reported to work,
    # not documented for v1.0): off by default, so the service must not depend on them.
    secondary_calendar_notifications: bool = False
    # Managed identity tokens (`/msi/token`): how long they live (Azure: about 24 h; MSAL and
    # azure-identity reuse one until 5 minutes before it expires, so below 300 every client assertion
    # is a fresh token and the next knob applies at once), and how old they already are when issued
    # (an identity endpoint whose clock lags: beyond the lifetime they arrive expired, and Entra ID
    # refuses them as client assertions with AADSTS700024).
    managed_identity_token_lifetime_seconds: int = 86400
    managed_identity_token_age_seconds: int = 0

    @property
    def access_token_lifetime(self) -> int:
        return self.access_token_lifetime_seconds

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, values: dict[str, Any]) -> None:
        """Apply settings all at once, or none: ValueError names the first bad one."""
        renamed = {_ALIASES.get(k, k): v for k, v in values.items()}
        checked = _checked_settings(self.describe(), renamed)
        for name, value in checked.items():
            setattr(self, name, value)


@dataclass
class AccountSettings:
    """Per-account knobs, `GET|POST /_sim/users/{upn}/settings`; `reset` puts back the seeded ones."""

    # Scopes left out of the token response's `scope` although granted: reported for some personal
    # accounts (`email`, `openid`); MSAL then misses its access-token cache on every silent call.
    scope_echo_omits: list[str] = field(default_factory=list)
    # 404 (or, as sometimes reported, 401) MailboxNotEnabledForRESTAPI on every calendar request.
    mailbox_unavailable_status: int | None = None

    @classmethod
    def seeded(cls, account: Account) -> AccountSettings:
        return cls(mailbox_unavailable_status=404 if account.mailbox_host == "on_premises" else None)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, values: dict[str, Any]) -> None:
        unknown = [k for k in values if k not in self.describe()]
        if unknown:
            raise ValueError(f"Unknown settings: {', '.join(unknown)}.")
        omits = values.get("scope_echo_omits", self.scope_echo_omits)
        if not isinstance(omits, list) or not all(isinstance(s, str) for s in omits):
            raise ValueError("'scope_echo_omits' must be a list of scope names.")
        status = values.get("mailbox_unavailable_status", self.mailbox_unavailable_status)
        if status not in (None, 401, 404):
            raise ValueError("'mailbox_unavailable_status' must be null, 404 or 401.")
        self.scope_echo_omits = [s.strip() for s in omits if s.strip()]
        self.mailbox_unavailable_status = status


@dataclass
class ClientSecret:
    value: str
    expired: bool = False


@dataclass
class AppState:
    """What can change about an app registration while the simulator runs: its client secrets (an app
    can hold several; each may expire), and whether it is disabled or deleted. Starts from the
    registration; `reset` goes back to it."""

    secrets: list[ClientSecret]
    disabled: bool = False
    deleted: bool = False
    federated_credentials: list[FederatedCredential] = field(default_factory=list)

    @classmethod
    def registered(cls, app: AppRegistration) -> AppState:
        return cls([ClientSecret(app.client_secret)], federated_credentials=list(app.federated_credentials))

    def describe(self) -> dict[str, Any]:
        # Like the portal, a hint of each secret's value (its first three characters), never the value.
        return {
            "secrets": [{"hint": s.value[:3], "expired": s.expired} for s in self.secrets],
            "disabled": self.disabled,
            "deleted": self.deleted,
            "federatedIdentityCredentials": [c.describe() for c in self.federated_credentials],
        }


def _checked_settings(current: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in values if k not in current]
    if unknown:
        raise ValueError(f"Unknown settings: {', '.join(unknown)}.")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        kind = type(current[name])
        if name == "notification_latency_seconds":
            checked[name] = _latency_range(value)
            continue
        if name == "occurrence_delete":
            checked[name] = _occurrence_delete(current[name], value)
            continue
        if name in _SECONDS:
            if not _number(value) or value < 0:
                raise ValueError(f"'{name}' must be a non-negative number of seconds.")
            checked[name] = float(value)
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"'{name}' must be true or false.")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"'{name}' must be a non-negative integer.")
            value = max(1, value) if name in _AT_LEAST_ONE else value
        elif name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"'{name}' must be one of {', '.join(_CHOICES[name])}.")
        checked[name] = value
    return checked


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _latency_range(value: Any) -> list[float]:
    if (not isinstance(value, list) or len(value) != 2 or not all(_number(v) for v in value)
            or not 0 <= value[0] <= value[1]):
        raise ValueError("'notification_latency_seconds' must be [min, max] seconds with 0 <= min <= max.")
    return [float(value[0]), float(value[1])]


def _occurrence_delete(current: dict[str, Any], value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"master_reemitted", "get_by_id"}:
        unknown = sorted(set(value) - {"master_reemitted", "get_by_id"}) if isinstance(value, dict) else []
        named = f" (unknown: {', '.join(unknown)})" if unknown else ""
        raise ValueError(f"'occurrence_delete' takes master_reemitted and get_by_id{named}.")
    merged = {**current, **value}
    if not isinstance(merged["master_reemitted"], bool):
        raise ValueError("'occurrence_delete.master_reemitted' must be true or false.")
    if merged["get_by_id"] not in OCCURRENCE_GET_BY_ID or isinstance(merged["get_by_id"], bool):
        raise ValueError("'occurrence_delete.get_by_id' must be 404 or 400.")
    return merged


# The account the request being handled acts for, once the simulator knows it (a bearer token's
# user, a grant's user, the login of a sign-in form): `GET /_sim/requests` reports it as `upn`.
ACTING_UPN: ContextVar[str | None] = ContextVar("acting_upn", default=None)


@dataclass
class SimState:
    base_url: str
    initial_config: Config
    directory: Directory = field(default_factory=Directory)
    lock: threading.RLock = field(default_factory=threading.RLock)
    key: SigningKey = field(default_factory=SigningKey)
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    # User-assigned managed identities the local host may ask `/msi/token` for, by client id, and the
    # `X-IDENTITY-HEADER` value that endpoint requires (App Service's IDENTITY_HEADER).
    managed_identities: dict[str, ManagedIdentity] = field(default_factory=dict)
    identity_header: str = ""
    config: Config = field(default_factory=Config)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshGrant] = field(default_factory=dict)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    account_settings: dict[str, AccountSettings] = field(default_factory=dict)
    app_states: dict[str, AppState] = field(default_factory=dict)
    revoked_at_seq: dict[str, int] = field(default_factory=dict)  # upn -> seq of the revocation
    revoked_at_time: dict[str, dt.datetime] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_LIMIT))
    request_count: int = 0
    # Cumulative, unlike the bounded log: Graph (/v1.0/...) and token-endpoint requests since start or reset.
    graph_request_count: int = 0
    token_request_count: int = 0
    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    max_concurrency: dict[str, int] = field(default_factory=dict)
    notifier: Notifier = field(default_factory=Notifier)  # Graph subscriptions and their notifications
    # The app's service principal in one customer tenant, as that tenant's admin left it: tenant id ->
    # "disabled" (AADSTS7000112) or "deleted" (AADSTS700016). `POST /_sim/tenants/{tenant}/app`.
    tenant_apps: dict[str, str] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _fault_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.notifier.settings = lambda: self.config
        self.reset()

    def next_seq(self) -> int:
        return next(self._seq)

    def next_fault_id(self) -> int:
        return next(self._fault_ids)

    def reset(self) -> None:
        """Back to the seeded state. App registrations (with the secrets they were registered with), the
        signing key and issued tokens stay."""
        with self.lock:
            self.config = Config(**self.initial_config.describe())
            self.mailboxes = {a.upn.lower(): Mailbox(a) for a in self.directory.accounts}
            self.account_settings = {a.upn.lower(): AccountSettings.seeded(a) for a in self.directory.accounts}
            self.app_states.clear()
            self.tenant_apps.clear()
            self.revoked_at_seq.clear()
            self.revoked_at_time.clear()
            self.faults.clear()
            self.requests.clear()
            self.request_count = 0
            self.graph_request_count = 0
            self.token_request_count = 0
            self.max_concurrency.clear()
            self.notifier.reset()

    def mailbox(self, account: Account) -> Mailbox:
        return self.mailboxes[account.upn.lower()]

    def settings(self, account: Account) -> AccountSettings:
        """Caller holds the lock."""
        return self.account_settings.setdefault(account.upn.lower(), AccountSettings.seeded(account))

    def app_state(self, app: AppRegistration) -> AppState:
        """Caller holds the lock."""
        return self.app_states.setdefault(app.client_id, AppState.registered(app))

    def is_revoked(self, upn: str, issued_seq: int) -> bool:
        revoked = self.revoked_at_seq.get(upn.lower())
        return revoked is not None and issued_seq < revoked

    # -- faults -------------------------------------------------------------------------------

    def take_faults(self, method: str, path: str) -> tuple[int, Fault | None]:
        """Latency to add (ms) and the error fault, if any, that this request gets."""
        latency = 0
        failure: Fault | None = None
        with self.lock:
            for fault in list(self.faults):
                if not fault.matches(method, path):
                    continue
                if fault.latency_ms is not None and fault.status is None and fault.error is None:
                    latency += fault.latency_ms
                elif failure is None:
                    failure = fault
                    latency += fault.latency_ms or 0
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
        return latency, failure

    # -- request log --------------------------------------------------------------------------

    def record(self, method: str, path: str, raw_query: str, form: dict[str, str]) -> dict[str, Any]:
        """Log a request: `query` is the query string as sent, `params` its decoded values, `form` the
        decoded form body; secret values are replaced by "[redacted]" in all three."""
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": _redact_query(raw_query),
            "params": _redact(dict(parse_qsl(raw_query, keep_blank_values=True))),
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "status": None,
            "upn": None,
        }
        if form:
            entry["form"] = _redact(form)
        with self.lock:
            self.requests.append(entry)
            self.request_count += 1
            if path == "/v1.0" or path.startswith("/v1.0/"):
                self.graph_request_count += 1
            elif path.lower().endswith("/oauth2/v2.0/token"):
                self.token_request_count += 1
        return entry

    def monotonic(self) -> float:
        return time.monotonic()


def _redact_query(raw_query: str) -> str:
    pieces = []
    for piece in raw_query.split("&") if raw_query else []:
        name, sep, value = piece.partition("=")
        secret = unquote_plus(name).lower() in SECRET_PARAMETERS and value
        pieces.append(f"{name}{sep}{REDACTED}" if secret else piece)
    return "&".join(pieces)


def _redact(values: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in SECRET_PARAMETERS and v else v) for k, v in values.items()}
