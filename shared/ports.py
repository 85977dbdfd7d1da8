"""The narrow interfaces the domain services need from the outside world.

Adapters in `shared/adapters/` implement them against Azure Table/Queue Storage, Key Vault, MSAL,
Microsoft Graph and the agent API; unit tests implement them in memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from shared.agent_states import AgentState
from shared.autojoin import JoinRules, Response
from shared.connections import Connection, Plan
from shared.scheduling import SyncWindow


class Conflict(Exception):
    """An optimistic-concurrency write lost a race (ETag changed, or the row already exists)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a walk over a table: at most the size asked for, from one storage query (Table
    Storage: a page of at most 1,000 rows, or fewer when the server stops after 5 s; a page may be
    empty and still not be the last). `continuation` is opaque (None: the walk is over);
    `unreadable` counts rows the adapter could not read, each logged (`walk_row_failed`) and left
    out, so one bad row never stops a walk."""

    items: list[T]
    continuation: str | None
    unreadable: int = 0


# ---------------------------------------------------------------- connect flow records
@dataclass(frozen=True)
class PendingFlow:
    """A started sign-in: MSAL's flow (PKCE verifier, nonce, state) kept server-side, single use."""

    state_hash: str
    user_id: str
    reconnect_id: str | None
    flow: dict[str, Any]
    expires_at: datetime


@dataclass(frozen=True)
class PendingClaim:
    """A redeemed sign-in waiting for the user who started it to claim it."""

    code_hash: str
    user_id: str
    reconnect_id: str | None
    secret_name: str
    home_account_id: str
    tenant_id: str
    email: str
    access_expires_at: datetime | None
    expires_at: datetime
    login_hint: str = ""  # the id_token's login_hint: pre-selects this account on a later reconnect
    calendar_unavailable: str | None = None  # Graph's code when the calendar probe found no mailbox


class FlowStore(Protocol):
    """Sign-in flows by `state_hash` = `<owner tag>.<hash>` (partitioned by the owner tag: the user's
    rows are one partition) or, for rows written before owner tags, a bare hash."""

    def put(self, flow: PendingFlow) -> None: ...
    def take(self, state_hash: str) -> PendingFlow | None:
        """Remove and return it; None when unknown or already taken (single use, race-safe)."""
        ...
    def live(self, owner: str, now: datetime) -> list[datetime]:
        """When each of this owner's flows not yet expired at `now` expires (one partition read)."""
        ...
    def purge_expired_page(self, now: datetime, continuation: str | None, size: int) -> WalkStep:
        """One page of the walk over flows expired at `now`: each deleted (gone already: nothing)."""
        ...


class ClaimStore(Protocol):
    def put(self, claim: PendingClaim) -> None: ...
    def get(self, code_hash: str) -> PendingClaim | None:
        """Read without using it (the claim preview, and a claim that removes the row last)."""
        ...
    def take(self, code_hash: str) -> PendingClaim | None: ...
    def expired_page(self, now: datetime, continuation: str | None, size: int) -> Page[PendingClaim]:
        """One page of the claims expired at `now` (a filtered scan, a page per call)."""
        ...
    def remove(self, code_hash: str) -> None: ...
    def all(self) -> Iterator[PendingClaim]:
        """Every pending claim."""
        ...
    def for_user(self, user_id: str) -> list[PendingClaim]:
        """This user's pending claims (one partition read: claims are kept by the user's owner tag);
        the secret reconciler's view of which token caches a user's claims name."""
        ...


@dataclass(frozen=True)
class AdminConsent:
    """An IT admin came back approved through the admin-consent link of the user with this owner tag
    (connections.owner_tag): what lets that user's page say "approved"."""

    owner: str
    consented_at: datetime
    tenant_id: str | None = None


class AdminConsents(Protocol):
    def get(self, owner: str) -> AdminConsent | None: ...
    def put(self, consent: AdminConsent) -> None:
        """Create or replace the owner's one record."""
        ...


class RotatingSecret(Protocol):
    """One of the app's secrets as Key Vault holds it now; `reload` forgets a cached value, so a
    rotated secret is used without a restart."""

    def __call__(self) -> str: ...
    def reload(self) -> None: ...


class ConnectionStore(Protocol):
    def list_for_user(self, user_id: str) -> list[Connection]: ...
    def get(self, user_id: str, connection_id: str) -> Connection | None: ...
    def add(self, connection: Connection, plan: Plan) -> Connection:
        """Insert atomically within the plan limit; raises PlanLimitExceeded (two concurrent adds
        cannot both take the last place)."""
        ...
    def update(self, connection: Connection) -> Connection:
        """Replace the row, conditional on `connection.etag` (the version this writer read): raises
        Conflict when the row changed or went since, so a writer that read before a reconnect or a
        disconnect never overwrites it. Returns the connection with its new etag."""
        ...
    def remove(self, connection: Connection) -> None:
        """The connection and the plan slot it holds go together (one transaction), so no slot leaks."""
        ...
    def all(self) -> Iterator[Connection]: ...


class UserRows(Protocol):
    """Every stored row of one user, whatever its table: rows partitioned by the user id or by one of
    the user's connection ids, and rows that carry the user id (`UserId`). Erasure is generic over the
    tables, so a table added later is erased as long as its rows follow one of these conventions."""

    def connection_ids(self, user_id: str, made_after: datetime | None = None) -> list[str]:
        """The user's connections (only those connected after `made_after`, when given)."""
        ...
    def secret_names(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> set[str]:
        """Key Vault secrets those rows name (`SecretName`): to delete before the rows that name them.
        `only_connections`: of those connections' rows only, nothing else of the user's."""
        ...
    def erase(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> int:
        """Delete the rows, the user's connection rows last (so a retry still knows the connection
        ids); returns how many went. Safe to repeat. `only_connections`: those connections' rows only
        (their own partitions and connection rows), nothing else of the user's."""
        ...
    def connection_partitions(self) -> dict[str, str]:
        """connection id -> user id ("" when no row says) of every connection-keyed row (event index,
        sync state): pruning compares them with the connections that exist."""
        ...
    def partitions_page(self, continuation: str | None, size: int) -> Page[tuple[str, str]]:
        """One page of the walk over every connection-keyed table (event index, sync state,
        subscriptions, calendars), table after table: (connection id, user id or "") per row read, at
        most `size` rows, one storage query."""
        ...
    def owner_of(self, connection_id: str) -> str:
        """The user id a connection's rows carry (`UserId`), from that connection's own partitions
        only; "" when none says."""
        ...


# ---------------------------------------------------------------- meetings and sync state
@dataclass(frozen=True)
class Source:
    """One connection's event feeding a meeting, with what that calendar says of the user's part
    (rows written before these facts were kept read as an accepted, internal, single meeting)."""

    connection_id: str
    event_id: str
    email: str
    response: Response = Response.ACCEPTED
    external: bool = False
    series_id: str | None = None
    calendar_id: str | None = None  # None: the account's default calendar (all rows written before calendars)
    # The copy's identity (shared.meeting_identity): `ical:...` and its link identities. Rows written
    # before identities were kept have none: the meeting's `link_key` stands for their link.
    ical: str | None = None
    links: tuple[str, ...] = ()
    # What the join rules read (rows written before they were kept read as False).
    private: bool = False
    solo: bool = False
    all_day: bool = False
    free: bool = False


@dataclass(frozen=True)
class Meeting:
    """One meeting of a user, merged from every calendar copy (`sources`; the first is the copy that
    holds the deployment). `key` is fixed when the row is created; `link_key` is the identity the
    meeting was created and is deployed under (`MeetingIdentity.primary`: an `ical:` identity, or
    the join link's key — all rows written before iCalUId was used), so neither changes under a
    meeting that already has an agent."""

    user_id: str
    key: str
    link_key: str
    title: str
    start: datetime
    end: datetime
    platform: str
    join_url: str
    sources: tuple[Source, ...]
    agent: AgentState | None = None
    deploy_at: datetime | None = None
    enqueued_for: datetime | None = None
    enqueued_at: datetime | None = None  # when that deploy message was queued (a late one counts from here)
    recalls: int = 0  # agents recalled from this meeting so far: a new one sent after is a new deployment
    failure_reason: str | None = None
    lease_until: datetime | None = None  # while agent is DEPLOYING: when the deployer's claim lapses
    agent_id: str | None = None  # the agent API's id of the deployed agent (what a recall names)
    # Agent progress (shared/services/agent_progress.py): which try the agent is on (1-based; 0 before
    # the first deployment), when its current state began as the platform reported it, since when it
    # waits in the lobby, when the next try goes (while one is pending), the last try the user was
    # told was waiting, and what the readiness check found would stop the agent (a reason code).
    agent_attempt: int = 0
    agent_since: datetime | None = None
    waiting_since: datetime | None = None
    retry_at: datetime | None = None
    nudged_attempt: int = 0
    at_risk: str | None = None
    recall_queued_at: datetime | None = None  # a recall chain for agent_id lives (queued or retrying) since
    # Storage bookkeeping, like etag: where the deployment watchdog's index row of this version of the
    # meeting is (shared.adapters.tables.TableMeetingStore), "" when it has none, and that row's ETag
    # as written for this version (a later write deletes the row only if nobody wrote it since).
    due_index: str = ""
    due_index_etag: str = ""
    etag: str | None = None


class MeetingStore(Protocol):
    def get(self, user_id: str, key: str) -> Meeting | None: ...
    def list_for_user(self, user_id: str, ending_after: datetime) -> list[Meeting]: ...
    def create(self, meeting: Meeting) -> Meeting:
        """Raises Conflict when it exists."""
        ...
    def replace(self, meeting: Meeting) -> Meeting:
        """Conditional on meeting.etag; raises Conflict when it changed."""
        ...
    def delete(self, meeting: Meeting) -> None:
        """Conditional on meeting.etag; raises Conflict when it changed."""
        ...
    def awaiting_verdict(self, due_before: datetime, ending_after: datetime) -> Iterator[Meeting]:
        """Every user's meetings whose agent is scheduled or being deployed, due (deploy time) before
        `due_before`, or not admitted with a new try due (`retry_at`) before `due_before`, and ending
        after `ending_after`: what the deployment watchdog checks."""
        ...
    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        """One page of the pruning walk: meetings that ended before `cutoff`, at most `size`."""
        ...


@dataclass(frozen=True)
class StoredOverride:
    """A per-meeting choice as stored: for one calendar's occurrence (`target_id` = its event id,
    `series_id` = its series, if any) or for a whole series (`target_id` = the series master id)."""

    connection_id: str
    target_id: str
    series: bool
    join: bool
    set_at: datetime
    series_id: str | None = None
    until: datetime | None = None  # an occurrence's choice matters until the meeting ends


class JoinRulesStore(Protocol):
    """The user's join rules and per-meeting choices (one partition per user)."""

    def get_rules(self, user_id: str) -> JoinRules | None: ...
    def put_rules(self, user_id: str, rules: JoinRules) -> None: ...
    def overrides(self, user_id: str) -> list[StoredOverride]: ...
    def put_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        """All or nothing (one transaction): replaces any choice for the same target."""
        ...
    def remove_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        """Removes these (by target); ones already gone are fine."""
        ...


class EventIndex(Protocol):
    """Which meeting each of a connection's events feeds, so changes and removals find it."""

    def get(self, connection_id: str, event_id: str) -> str | None: ...
    def put(self, connection_id: str, event_id: str, user_id: str, meeting_key: str, generation: str) -> None: ...
    def remove(self, connection_id: str, event_id: str) -> None: ...
    def all_for(self, connection_id: str, not_generation: str | None = None) -> dict[str, str]:
        """event id -> meeting key; with not_generation, only entries a full sync did not see."""
        ...


@dataclass(frozen=True)
class SyncState:
    connection_id: str
    window_start: datetime
    window_end: datetime
    delta_link: str | None
    full_sync_at: datetime | None
    resume_link: str | None = None  # a page link to continue a sync that was throttled mid-way
    generation: str = ""  # marks index entries seen by the current full sync
    lease_owner: str = ""  # the sync run that holds this connection now (two syncs never interleave)
    lease_until: datetime | None = None
    etag: str | None = None
    synced_at: datetime | None = None  # when a delta round last completed (Connections' last_synced_at)
    user_id: str = ""  # whose connection ("" on rows written before it was kept): pruning reads one row


class SyncStateStore(Protocol):
    def get(self, connection_id: str) -> SyncState | None: ...
    def put(self, state: SyncState) -> SyncState:
        """Conditional: creates when state.etag is None, else replaces the row only if unchanged since
        read; raises Conflict otherwise. Returns the state with its new etag."""
        ...
    def remove(self, connection_id: str) -> None:
        """The state row and any sync-queued marker of the connection; nothing when already gone."""
        ...
    def mark_queued(self, connection_id: str, now: datetime, ttl: timedelta) -> bool:
        """Record that a "sync now" is queued for the connection, unless one already is (and was
        marked less than `ttl` ago): True when this call marked it (and should enqueue the job).
        Atomic: of concurrent calls exactly one gets True."""
        ...
    def clear_queued(self, connection_id: str) -> None:
        """No requested sync is queued or running any more: the next request queues one."""
        ...
    def touch_queued(self, connection_id: str, now: datetime) -> None:
        """The requested sync lives on (it re-queued itself): the marker counts from `now`."""
        ...
    def announce(self, connection_id: str, at: datetime) -> None:
        """A change of the calendar was announced at `at` (a notification, "sync now"): a sync run
        whose delta round started before `at` has not read it. A row of its own (the state row's
        ETag, and so a running sync's lease, is untouched); the latest announcement wins."""
        ...
    def announced(self, connection_id: str) -> datetime | None:
        """When a change was last announced, None if never."""
        ...


# ---------------------------------------------------------------- the account's calendars
@dataclass(frozen=True)
class CalendarInfo:
    """One of the account's own calendars as Graph lists it (`GET /me/calendars`:
    https://learn.microsoft.com/graph/api/user-list-calendars): `id`, `name`, `isDefaultCalendar`."""

    id: str
    name: str
    is_default: bool


@dataclass(frozen=True)
class CalendarChoice:
    """A calendar with the user's choice for it: whether it is read, and the name the agent shows in
    its meetings (None: the join rules' name, else the platform's default)."""

    id: str
    name: str
    is_default: bool
    selected: bool
    agent_name: str | None = None


@dataclass(frozen=True)
class CalendarSelection:
    """Which calendars of one connection are read. No stored row means the default calendar only (so
    connections made before calendars could be chosen need no migration). `calendars` are the ones
    Graph listed last time, with their choices."""

    connection_id: str
    user_id: str
    calendars: tuple[CalendarChoice, ...] = ()
    etag: str | None = None

    @property
    def default_selected(self) -> bool:
        default = next((c for c in self.calendars if c.is_default), None)
        return default is None or default.selected

    @property
    def secondary(self) -> tuple[CalendarChoice, ...]:
        """The selected calendars other than the default one: read with calendarView."""
        return tuple(c for c in self.calendars if c.selected and not c.is_default)

    def agent_name(self, calendar_id: str | None) -> str | None:
        """The agent name chosen for a calendar (None: the default calendar)."""
        for c in self.calendars:
            if (c.id == calendar_id) if calendar_id is not None else c.is_default:
                return c.agent_name
        return None


class CalendarSelectionStore(Protocol):
    """One row per connection (partitioned by connection id, carrying the user id)."""

    def get(self, connection_id: str) -> CalendarSelection | None: ...
    def put(self, selection: CalendarSelection) -> CalendarSelection:
        """Creates when `etag` is None, else replaces only if unchanged since read; raises Conflict
        otherwise. Returns it with its new etag."""
        ...
    def remove(self, connection_id: str) -> None:
        """Nothing when it is already gone."""
        ...


class CalendarGone(Exception):
    """Graph no longer has this calendar (404 ErrorItemNotFound): deleted in Outlook."""


# ---------------------------------------------------------------- teams: one agent per meeting for a workspace
@dataclass(frozen=True)
class TeamClaims:
    """The workspace claims of a user's most recent authenticated request (what background work goes
    by, API.md "Teams"), with the display email the owner of a shared agent is shown by."""

    user_id: str
    workspace: str | None
    dedupe: bool
    email: str  # the token's `email` claim, else the user id

    @property
    def shared_workspace(self) -> str | None:
        return self.workspace if self.workspace and self.dedupe else None


class TeamClaimsStore(Protocol):
    """One row per user (in the user's partition: erased with the user)."""

    def get(self, user_id: str) -> TeamClaims | None: ...
    def put(self, claims: TeamClaims) -> None: ...


@dataclass(frozen=True)
class Teammate:
    user_id: str
    email: str


@dataclass(frozen=True)
class WorkspaceMeeting:
    """One meeting of a workspace whose teammates share an agent. `members`: the teammates whose own
    rules join it, in the order they came; `owner`: the one whose meeting row deploys the shared agent
    ("" when none); `live_user`/`live_agent`: whose agent is in the meeting, or being sent ("" agent id
    while the agent API is called) — set before the call and cleared once recalled, so a hand-over
    never sends a second agent while the first is still there; `handovers`: owner changes so far (the
    shared agent's idempotency key counts them); `end`: when the meeting ends (the row is pruned with
    the meetings, `Pruner`; None on rows written before it was kept). Written with its ETag."""

    workspace: str
    key: str
    owner: str = ""
    members: tuple[Teammate, ...] = ()
    live_user: str = ""
    live_agent: str = ""
    handovers: int = 0
    end: datetime | None = None
    etag: str | None = None

    @property
    def owner_email(self) -> str:
        return next((m.email for m in self.members if m.user_id == self.owner), self.owner)


class WorkspaceMeetingStore(Protocol):
    """Partitioned by workspace id; no `UserId` (a row serves several users: erasure leaves it, and
    hands the user's part over, through shared.services.teams)."""

    def get(self, workspace: str, key: str) -> WorkspaceMeeting | None: ...
    def put(self, meeting: WorkspaceMeeting) -> WorkspaceMeeting:
        """Creates when `etag` is None, else replaces only if unchanged since read; raises Conflict."""
        ...
    def ended_before(self, cutoff: datetime) -> Iterator[WorkspaceMeeting]:
        """Rows whose meeting ended before `cutoff` (rows without `end` are never listed)."""
        ...
    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[WorkspaceMeeting]:
        """One page of the pruning walk over the rows `ended_before` lists."""
        ...
    def delete(self, meeting: WorkspaceMeeting) -> None:
        """Only if unchanged since read (raises Conflict); nothing when it is already gone."""
        ...


# ---------------------------------------------------------------- secrets, identity, Graph, agents
@dataclass(frozen=True)
class StoredSecret:
    name: str
    created_at: datetime | None
    # The user whose rows name it (a connection, a pending claim, a subscription), as its writer said;
    # "" when written before owners were kept. Lets the reconciler judge one secret by reading that
    # user's rows only (shared.services.lifecycle.SecretReconciler).
    owner: str = ""


class OwnedSecrets(Protocol):
    """What the secret reconciler walks (shared.adapters.envelope.SealedSecrets)."""

    def page(self, prefix: str, continuation: str | None, size: int) -> Page[StoredSecret]:
        """One page of the secrets whose name starts with `prefix`, with their owner and write time."""
        ...
    def adopt(self, name: str, owner: str) -> None:
        """Record `owner` beside the secret (nothing when it does not exist); safe to repeat."""
        ...
    def delete(self, name: str) -> None: ...


class SecretStore(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str, owner: str = "") -> None:
        """Create or replace it; `owner`: the user id whose rows name it (kept beside it, see
        StoredSecret.owner)."""
        ...
    def delete(self, name: str) -> None:
        """Delete it, and purge it where the vault allows (no purge protection); nothing when it is
        already gone. The name is never reused."""
        ...
    def list(self, prefix: str) -> Iterator[StoredSecret]:
        """The live (not deleted) secrets whose name starts with `prefix`, with their creation time."""
        ...


@dataclass(frozen=True)
class TokenError:
    """An identity-platform error as data; never carries a token. `error`, `error_codes` and
    `suberror` are what the token endpoint answered (RFC 6749 section 5.2 plus Microsoft's
    extensions); `description` is for logs only and never drives a decision when codes are given.
    Adapter-made errors: `unreachable` (timeout, 5xx, non-JSON answer), `state_mismatch`,
    `no_account`, `no_token` (the stored cache holds no usable refresh token)."""

    error: str
    description: str
    error_codes: tuple[int, ...] = ()
    suberror: str | None = None


class IdentityUnavailable(Exception):
    """Microsoft's identity platform could not be reached to start a sign-in (try again later)."""


@dataclass(frozen=True)
class SignedIn:
    cache: str  # serialized MSAL token cache: a secret, goes to Key Vault only
    access_token: str
    access_expires_at: datetime | None
    home_account_id: str
    tenant_id: str
    username: str
    login_hint: str = ""  # id_token `login_hint` claim (else preferred_username): for reconnects


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime | None
    cache: str | None  # the cache when MSAL changed it (write back), else None


class IdentityProvider(Protocol):
    def begin(self, state: str, login_hint: str | None = None) -> dict[str, Any]:
        """Start an auth code flow (PKCE, nonce); the flow dict holds `auth_uri`. A reconnect passes
        the connection's account as the hint, so the right account is pre-selected."""
        ...
    def redeem(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn | TokenError: ...
    def acquire(self, cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken | TokenError: ...


class Throttled(Exception):
    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"throttled for {retry_after.total_seconds():.0f}s")
        self.retry_after = retry_after


class SyncStateGone(Exception):
    """The delta link is no longer valid (410 / syncStateNotFound): start a full sync."""


class GraphUnauthorized(Exception):
    """Graph refused the access token."""


class GraphError(Exception):
    """A Graph answer that is neither success nor one the sync handles by kind. Carries the HTTP
    status and Graph's error code, never the body or the token."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"Graph request failed: HTTP {status} {code}")
        self.status, self.code = status, code


class RowTooLarge(ValueError):
    """Table Storage refused a row as too large (400 PropertyValueTooLarge / EntityTooLarge)."""


class CalendarUnavailable(Exception):
    """Graph cannot read this account's mailbox whatever token we hold (on-premises, unlicensed or
    not provisioned: 404/401 `MailboxNotEnabledForRESTAPI` and kin). Permanent until an admin acts.
    `code` is Graph's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"Graph cannot read this mailbox ({code})")
        self.code = code


@dataclass(frozen=True)
class DeltaPage:
    events: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None


class CalendarReader(Protocol):
    def me_email(self, access_token: str) -> str: ...
    def probe(self, access_token: str) -> None:
        """One cheap calendar read; raises CalendarUnavailable when Graph cannot read the mailbox."""
        ...
    def instances(self, access_token: str, series_master_id: str, window: SyncWindow) -> list[dict[str, Any]] | None:
        """The live occurrences of a series within the window (id, start, end, isCancelled...); None
        when the series itself is gone."""
        ...
    def delta_first(self, access_token: str, window: SyncWindow) -> DeltaPage: ...
    def delta_next(self, access_token: str, link: str) -> DeltaPage: ...
    def event(self, access_token: str, event_id: str) -> dict[str, Any] | None:
        """One event (a series master, for occurrences delta lists sparse); None when gone."""
        ...
    def calendars(self, access_token: str) -> list[CalendarInfo]:
        """The account's own calendars (`GET /me/calendars`), the default one among them."""
        ...
    def calendar_view(self, access_token: str, calendar_id: str,
                      window: SyncWindow) -> tuple[list[dict[str, Any]], int]:
        """Every event and occurrence of one calendar in the window (`GET /me/calendars/{id}/calendarView`,
        v1.0: delta on it is beta only) and how many Graph requests that took. Raises CalendarGone."""
        ...


@dataclass(frozen=True)
class DeployRequest:
    meeting_url: str
    platform: str
    title: str
    start: datetime
    end: datetime
    user_id: str
    meeting_id: str
    idempotency_key: str
    join_at: datetime | None = None  # start - the user's join_lead_seconds
    agent_name: str | None = None  # the name the agent shows (a calendar's own, else the join rules'), else None
    user_ids: tuple[str, ...] = ()  # every CoAgentor user the agent serves (a workspace's shared agent)
    attempt: int = 1  # which try this deployment is (1-based)


@dataclass(frozen=True)
class DeployResult:
    ok: bool
    permanent: bool = False
    detail: str = ""
    agent_id: str | None = None  # the agent API's `id` for the deployed agent, when it gave one


class AgentApi(Protocol):
    def deploy(self, request: DeployRequest) -> DeployResult: ...
    def recall(self, agent_id: str) -> RecallResult:
        """`DELETE {AGENT_API_URL}/agents/{id}`: gone on 204 or 404 (../shared/API.md)."""
        ...


@dataclass(frozen=True)
class AgentTry:
    """One try's deployment as the agent platform may name it in a status: by the idempotency key
    (known before the agent API answers) or by the agent id (after)."""

    user_id: str
    meeting_key: str
    attempt: int
    idempotency_key: str
    agent_id: str | None = None


class AgentTries(Protocol):
    def put(self, entry: AgentTry) -> None:
        """Remember the try by its key, and by its agent id when it has one. Safe to repeat."""
        ...
    def by_key(self, idempotency_key: str) -> AgentTry | None: ...
    def by_agent(self, agent_id: str) -> AgentTry | None: ...
    def remember_webhook(self, webhook_id: str, at: datetime) -> bool:
        """Record a status webhook's `webhook-id`: False when it was already recorded (a replay)."""
        ...
    def webhook_seen(self, webhook_id: str) -> bool: ...
    def prune_page(self, tries_before: datetime, webhooks_before: datetime, continuation: str | None,
                   size: int) -> tuple[int, int, str | None]:
        """One page of the pruning walk (TriesPruning)."""
        ...


# ---------------------------------------------------------------- status events to the platform
class StatusEventType(StrEnum):
    """CloudEvents `type` values of the status events (../shared/API.md, "Status events")."""

    CONNECTION_ERROR = "com.coagentor.outlook.connection.error"
    CONNECTION_RESTORED = "com.coagentor.outlook.connection.restored"
    CONNECTION_DISCONNECTED = "com.coagentor.outlook.connection.disconnected"
    AGENT_FAILED = "com.coagentor.outlook.agent.failed"
    AGENT_WAITING_FOR_ADMISSION = "com.coagentor.outlook.agent.waiting_for_admission"
    AGENT_NOT_ADMITTED = "com.coagentor.outlook.agent.not_admitted"
    MEETING_AT_RISK = "com.coagentor.outlook.meeting.at_risk"


@dataclass(frozen=True)
class StatusEvent:
    """Something the user must hear about. `id` is fixed when the event is created and kept on every
    delivery attempt (the platform dedupes on it); `subject` is the CoAgentor user id.
    `data` is JSON-serialisable and never holds a token, code or secret."""

    type: StatusEventType
    subject: str
    data: dict[str, Any]
    id: str
    time: datetime


class StatusEvents(Protocol):
    def publish(self, event: StatusEvent) -> None:
        """Hand the event over for at-least-once delivery (an outbox: returns once it is durably
        queued, delivery and retries happen later). Raises only when it could not be queued."""
        ...


# ---------------------------------------------------------------- queues
@dataclass(frozen=True)
class DeployJob:
    user_id: str
    meeting_key: str
    deploy_at: datetime
    attempt: int = 1
    backup: bool = False  # the copy sent a little after each deploy message (shared/adapters/queues.py)
    # The meeting row's `enqueued_at` written with this message: a row naming a later one means a later
    # message owns the meeting, and this one (or its backup copy) does nothing. None: no such check.
    enqueued_at: datetime | None = None


@dataclass(frozen=True)
class RefreshJob:
    user_id: str
    connection_id: str


@dataclass(frozen=True)
class SyncJob:
    user_id: str
    connection_id: str
    reason: str = "scheduled"
    attempt: int = 1  # a requested sync that met a passing failure retries with back-off, within a budget


class SyncOutcome(StrEnum):
    """What one sync job did. The operator's reading of each (ok, deferred, user, failed) is
    `shared.adapters.telemetry.sync_result`, exhaustive over these (mypy checks it)."""

    SYNCED = "synced"
    UP_TO_DATE = "up_to_date"  # asked to read changes a later round already read: nothing to do
    SKIPPED = "skipped"  # the connection is gone or not Active
    DISCONNECTED = "disconnected"  # disconnected while this run read it: cleaned up
    BUSY = "busy"  # another run holds the connection; it reads what was announced before it lets go
    THROTTLED = "throttled"  # resumes after Graph's Retry-After
    LEASE_LOST = "lease_lost"
    RACED = "raced"  # the connection row changed while its token was taken: looked at again soon
    NO_TOKEN_TRANSIENT = "no_token:transient"  # Microsoft unreachable or 5xx: retried within a budget
    NO_TOKEN_SERVICE = "no_token:service"  # the service's own credentials refused (operators alerted)
    NO_TOKEN_USER = "no_token:user"  # the user or their admin must act: the connection shows Error
    GRAPH_UNAUTHORIZED = "graph_unauthorized"
    CALENDAR_UNAVAILABLE = "calendar_unavailable"
    GAVE_UP = "gave_up"  # a requested sync's retries ran out: the operator is told (ERROR sync_gave_up)
    ERROR = "error"  # an exception left the job (the queue retries the message)


class ErasureJobs(Protocol):
    def enqueue(self, user_id: str, delay: timedelta, before: datetime | None = None,
                connection_ids: Sequence[str] = ()) -> None:
        """Erase this user's data once the delay has passed (retried by the queue until it succeeds);
        `before`: when the erasure was asked for (a connection made after it is the user's new start);
        `connection_ids`: the user's connections when it was asked for. Their connection rows are gone
        by the queued pass, so it could not find their partitions (sync state, event index) otherwise:
        a sync that raced the first pass may have written there."""
        ...


@dataclass(frozen=True)
class ProgressJob:
    """A delayed look at one meeting's agent (shared/services/agent_progress.py): `nudge` — has try
    `attempt` waited in the lobby for LOBBY_NUDGE_SECONDS?; `readiness` — will anything stop the
    agent due at `join_at`?"""

    kind: str  # "nudge" | "readiness"
    user_id: str
    meeting_key: str
    attempt: int = 0
    join_at: datetime | None = None


class JobQueue(Protocol):
    def schedule_deploy(self, job: DeployJob, delay: timedelta) -> None: ...
    def schedule_progress(self, job: ProgressJob, delay: timedelta) -> None: ...
    def poison_deploy(self, job: DeployJob, reason: str) -> None: ...
    def enqueue_sync(self, job: SyncJob, delay: timedelta = ...) -> None: ...
    def enqueue_refresh(self, job: RefreshJob, delay: timedelta = ...) -> None: ...


# ---------------------------------------------------------------- fan-out in pages
@dataclass(frozen=True)
class ConnectionPage:
    connections: list[Connection]
    continuation: str | None  # opaque; None on the last page
    skipped: int = 0  # rows that could not be read (logged `walk_row_failed`, left out)


class ConnectionPages(Protocol):
    def page(self, continuation: str | None, size: int) -> ConnectionPage:
        """At most `size` connections in storage order, from where `continuation` left off (None: the
        start). One storage query, however many connections exist."""
        ...


@dataclass(frozen=True)
class FanOutPage:
    """One step of a timer's walk over the connections: which walk (`kind`: "sync" or "refresh"),
    where it is (`continuation`), when the timer started it, and how many jobs earlier pages enqueued
    (so refreshes stay paced across pages)."""

    kind: str
    continuation: str | None
    started_at: datetime
    number: int = 0
    enqueued_before: int = 0
    # Rows this walk (and the walks before it in its chain, see FanOut) could not read or handle so far:
    # a walk that judges by what an earlier walk saw judges nothing that walk may have missed.
    skipped: int = 0
    chain_from: str = ""  # the walk that began this chain ("": this one); `started_at` is that walk's start


@dataclass(frozen=True)
class WalkStep:
    """What one page of a table walk did: rows read, rows changed (deleted, released), where the walk
    goes on (None: it is over) and rows it could not read or handle (each logged `walk_row_failed`)."""

    read: int
    done: int
    continuation: str | None
    skipped: int = 0


class TriesPruning(Protocol):
    def prune_page(self, tries_before: datetime, webhooks_before: datetime, continuation: str | None,
                   size: int) -> tuple[int, int, str | None]:
        """One page of the agent tries walk: tries stored before `tries_before` and status webhook ids
        seen before `webhooks_before` deleted; (rows read, rows deleted, continuation or None)."""
        ...


class FanOutQueue(Protocol):
    def enqueue_page(self, page: FanOutPage) -> None: ...


# ---------------------------------------------------------------- change notifications and recalls
class AppRefusals(Protocol):
    """Which tenants' token requests Microsoft lately refused because the app is disabled or missing
    there (AADSTS7000112 / 700016): one tenant is its admin's doing, many at once are the service's."""

    def record(self, tenant_id: str, code: str, now: datetime) -> int:
        """Remember this tenant's refusal; return how many distinct tenants were refused within the
        last hour, this one included."""
        ...


@dataclass(frozen=True)
class GraphSubscription:
    """A Graph subscription as Graph answered it (learn.microsoft.com/graph/api/resources/subscription)."""

    id: str
    expires_at: datetime
    notification_url: str = ""  # as Graph lists it (a listed subscription tells whose it is by this)


class SubscriptionGone(Exception):
    """Graph no longer knows the subscription (404 on PATCH or DELETE): expired or removed."""


class SubscriptionRefused(Exception):
    """Graph refused a subscription call (a 4xx other than 401/403/404: the notification URL failed
    validation, a lifetime beyond the maximum...). Carries the status and Graph's code only."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"Graph refused the subscription call: HTTP {status} {code}")
        self.status, self.code = status, code


class CalendarSubscriptions(Protocol):
    def create(self, access_token: str, *, notification_url: str, lifecycle_url: str, client_state: str,
               expires_at: datetime) -> GraphSubscription: ...
    def renew(self, access_token: str, subscription_id: str, expires_at: datetime) -> GraphSubscription:
        """Raises SubscriptionGone when Graph no longer has it."""
        ...
    def delete(self, access_token: str, subscription_id: str) -> None:
        """Nothing when it is already gone."""
        ...
    def list(self, access_token: str) -> list[GraphSubscription]:
        """Every subscription this app holds for the signed-in user (`GET /subscriptions`)."""
        ...


@dataclass(frozen=True)
class Subscription:
    """A connection's Graph subscription as the service keeps it: the clientState its notifications
    must carry lives in Key Vault under `secret_name`, never in the row."""

    connection_id: str
    user_id: str
    subscription_id: str
    expires_at: datetime
    secret_name: str
    created_at: datetime
    etag: str | None = None
    # When the access token that last authorized it (create, PATCH) expires: Graph pauses its
    # notifications some time before (reauthorizationRequired; personal accounts without a word).
    authorized_until: datetime | None = None


class SubscriptionStore(Protocol):
    """One row per connection (partitioned by connection id, carrying the user id)."""

    def get(self, connection_id: str) -> Subscription | None: ...
    def put(self, subscription: Subscription) -> Subscription:
        """Creates when `etag` is None, else replaces only if unchanged since read; raises Conflict
        otherwise. Returns it with its new etag."""
        ...
    def remove(self, subscription: Subscription) -> None:
        """Nothing when it is already gone."""
        ...
    def all(self) -> Iterator[Subscription]: ...
    def page(self, continuation: str | None, size: int) -> Page[Subscription]:
        """One page of the walk over every subscription row (the daily sweep)."""
        ...


@dataclass(frozen=True)
class SubscriptionJob:
    user_id: str
    connection_id: str
    action: str  # "subscribe" | "renew" | "recreate" | "reauthorize" | "verify" (shared.services.subscriptions)
    # A reauthorization planned ahead of an authorizing token's end carries that token's end: it does
    # nothing once the subscription was authorized again since (another job got there first).
    authorized_until: datetime | None = None


class SubscriptionJobs(Protocol):
    def enqueue(self, job: SubscriptionJob, delay: timedelta = ...) -> None: ...


@dataclass(frozen=True)
class RecallResult:
    gone: bool  # 204, or 404: the agent is not in the meeting any more
    permanent: bool = False  # a refusal retrying will not change
    detail: str = ""


@dataclass(frozen=True)
class RecallJob:
    user_id: str
    meeting_key: str
    agent_id: str
    end: datetime  # recalling after the meeting ended is pointless
    reason: str = "withdrawn"  # "withdrawn" (the decision) | "removed" (the calendar let go of it)
    attempt: int = 1
    workspace: str = ""  # the shared workspace whose agent this is ("" when the user's own)


class RecallJobs(Protocol):
    def enqueue(self, job: RecallJob, delay: timedelta = ...) -> None: ...
