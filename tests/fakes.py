"""In-memory implementations of shared.ports for domain tests (no Azure, no network)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.tables import TableMeetingStore
from shared.agent_states import AgentState
from shared.autojoin import JoinRules
from shared.connections import Connection, Plan, PlanLimitExceeded, plan_limit
from shared.ports import (
    AccessToken,
    AdminConsent,
    CalendarInfo,
    CalendarSelection,
    CalendarUnavailable,
    Conflict,
    ConnectionPage,
    DeltaPage,
    DeployJob,
    DeployRequest,
    DeployResult,
    FanOutPage,
    GraphUnauthorized,
    Meeting,
    Page,
    PendingClaim,
    PendingFlow,
    ProgressJob,
    RecallResult,
    RefreshJob,
    RowTooLarge,
    SignedIn,
    StatusEvent,
    StatusEventType,
    StoredOverride,
    StoredSecret,
    SyncJob,
    SyncState,
    SyncStateGone,
    TeamClaims,
    Throttled,
    TokenError,
    WalkStep,
    WorkspaceMeeting,
)
from shared.scheduling import SyncWindow


class Flows:
    def __init__(self) -> None:
        self.rows: dict[str, PendingFlow] = {}

    def put(self, flow: PendingFlow) -> None:
        self.rows[flow.state_hash] = flow

    def take(self, state_hash: str) -> PendingFlow | None:
        return self.rows.pop(state_hash, None)

    def live(self, owner: str, now: datetime) -> list[datetime]:
        return [f.expires_at for k, f in self.rows.items() if k.startswith(f"{owner}.") and f.expires_at > now]

    def purge_expired_page(self, now: datetime, continuation: str | None, size: int) -> WalkStep:
        found = paged([k for k, f in self.rows.items() if f.expires_at <= now], continuation, size, key=str)
        for k in found.items:
            self.rows.pop(k, None)
        return WalkStep(len(found.items), len(found.items), found.continuation)


@dataclass
class RotatingSecret:
    value: str = "whsec_test-consent-secret"
    reloads: int = 0

    def __call__(self) -> str:
        return self.value

    def reload(self) -> None:
        self.reloads += 1


class AdminConsents:
    def __init__(self) -> None:
        self.rows: dict[str, AdminConsent] = {}

    def get(self, owner: str) -> AdminConsent | None:
        return self.rows.get(owner)

    def put(self, consent: AdminConsent) -> None:
        self.rows[consent.owner] = consent


def paged(items: list[Any], continuation: str | None, size: int, key: Any = repr) -> Page[Any]:
    """`size` items from where `continuation` left off, as a table query's page: the continuation is
    the next item's key (Table Storage's next partition and row key), so rows deleted behind the walk
    never make it skip one. `items` in key order."""
    ordered = sorted(items, key=key)
    start = 0 if continuation is None else next((i for i, x in enumerate(ordered) if key(x) >= continuation),
                                                len(ordered))
    following = start + size
    return Page(ordered[start:following], key(ordered[following]) if following < len(ordered) else None)


class Claims:
    def __init__(self) -> None:
        self.rows: dict[str, PendingClaim] = {}

    def put(self, claim: PendingClaim) -> None:
        self.rows[claim.code_hash] = claim

    def get(self, code_hash: str) -> PendingClaim | None:
        return self.rows.get(code_hash)

    def take(self, code_hash: str) -> PendingClaim | None:
        return self.rows.pop(code_hash, None)

    def expired_page(self, now: datetime, continuation: str | None, size: int) -> Page[PendingClaim]:
        expired = [c for c in list(self.rows.values()) if c.expires_at <= now]
        return paged(expired, continuation, size, key=lambda c: c.code_hash)

    def remove(self, code_hash: str) -> None:
        self.rows.pop(code_hash, None)

    def all(self) -> Iterator[PendingClaim]:
        yield from list(self.rows.values())

    def for_user(self, user_id: str) -> list[PendingClaim]:
        return [c for c in list(self.rows.values()) if c.user_id == user_id]


class Connections:
    """Like the table store: conditional replaces (ETags), idempotent add, connection and slot together."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Connection] = {}
        self.lock = threading.RLock()
        self._etags = itertools.count(1)

    def list_for_user(self, user_id: str) -> list[Connection]:
        return [c for (u, _), c in list(self.rows.items()) if u == user_id]

    def get(self, user_id: str, connection_id: str) -> Connection | None:
        return self.rows.get((user_id, connection_id))

    def add(self, connection: Connection, plan: Plan) -> Connection:
        with self.lock:
            if (connection.user_id, connection.id) in self.rows:
                return self.rows[(connection.user_id, connection.id)]
            used = len(self.list_for_user(connection.user_id))
            limit = plan_limit(plan)
            if limit is not None and used >= limit:
                raise PlanLimitExceeded(plan, limit, used)
            stored = replace(connection, etag=str(next(self._etags)))
            self.rows[(connection.user_id, connection.id)] = stored
        return stored

    def update(self, connection: Connection) -> Connection:
        with self.lock:
            current = self.rows.get((connection.user_id, connection.id))
            if current is None or connection.etag is None or current.etag != connection.etag:
                raise Conflict(connection.id)
            stored = replace(connection, etag=str(next(self._etags)))
            self.rows[(connection.user_id, connection.id)] = stored
        return stored

    def page(self, continuation: str | None, size: int) -> ConnectionPage:
        """Rows in key order (as Table Storage returns them), `size` at a time."""
        rows = sorted(self.rows.values(), key=lambda c: (c.user_id, c.id))
        start = int(continuation or 0)
        following = start + size
        return ConnectionPage(rows[start:following], str(following) if following < len(rows) else None)

    def remove(self, connection: Connection) -> None:
        self.rows.pop((connection.user_id, connection.id), None)

    def all(self) -> Iterator[Connection]:
        yield from list(self.rows.values())


class EntityTooLarge(RowTooLarge):
    """What Table Storage answers (400 PropertyValueTooLarge / EntityTooLarge); Azurite may not."""


def check_table_entity(entity: dict[str, Any]) -> None:
    """Table Storage's limits, which Azurite does not enforce (FACTS): a string property holds at most
    64 KiB (32K UTF-16 code units), a key at most 1 KiB, an entity at most 1 MiB, 255 properties
    (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model)."""
    if len(entity) > 252:  # PartitionKey, RowKey and Timestamp make 255
        raise EntityTooLarge("more than 255 properties")
    size = 0
    for name, value in entity.items():
        if isinstance(value, str):
            units = len(value.encode("utf-16-le")) // 2
            if name in ("PartitionKey", "RowKey") and units > 512:
                raise EntityTooLarge(f"{name} over 1 KiB")
            if units > 32 * 1024:
                raise EntityTooLarge(f"property {name} is {units} UTF-16 units (at most 32K)")
            size += 2 * units
        else:
            size += 8
        size += 8 + 2 * len(name)
    if size > 1024 * 1024:
        raise EntityTooLarge(f"entity of {size} bytes (at most 1 MiB)")


class Meetings:
    """Like the table store: conditional writes (ETags), and Table Storage's size limits enforced."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Meeting] = {}
        self._etags = itertools.count(1)
        self._lock = threading.RLock()  # conditional writes are atomic, as in Table Storage
        self.contended = 0  # the next replaces lose to another writer (the row changes under them)
        self.lost_writes = 0

    def get(self, user_id: str, key: str) -> Meeting | None:
        return self.rows.get((user_id, key))

    def list_for_user(self, user_id: str, ending_after: datetime) -> list[Meeting]:
        return [m for (u, _), m in list(self.rows.items()) if u == user_id and m.end > ending_after]

    def create(self, meeting: Meeting) -> Meeting:
        with self._lock:
            return self._create(meeting)

    def replace(self, meeting: Meeting) -> Meeting:
        with self._lock:
            return self._replace(meeting)

    def delete(self, meeting: Meeting) -> None:
        with self._lock:
            self._delete(meeting)

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        ended = [m for m in list(self.rows.values()) if m.end < cutoff]
        return paged(ended, continuation, size, key=lambda m: f"{m.user_id}\x00{m.key}")

    def awaiting_verdict(self, due_before: datetime, ending_after: datetime) -> Iterator[Meeting]:
        yield from [m for m in list(self.rows.values())
                    if m.end > ending_after and (
                        (m.agent in (AgentState.SCHEDULED, AgentState.DEPLOYING) and m.deploy_at is not None
                         and m.deploy_at <= due_before)
                        or (m.agent is AgentState.NOT_ADMITTED and m.retry_at is not None
                            and m.retry_at <= due_before))]

    def _create(self, meeting: Meeting) -> Meeting:
        if (meeting.user_id, meeting.key) in self.rows:
            raise Conflict(meeting.key)
        check_table_entity(TableMeetingStore._entity(meeting))
        stored = replace(meeting, etag=str(next(self._etags)))
        self.rows[(meeting.user_id, meeting.key)] = stored
        return stored

    def _replace(self, meeting: Meeting) -> Meeting:
        current = self.rows.get((meeting.user_id, meeting.key))
        if self.contended and current is not None:
            self.contended -= 1
            self.lost_writes += 1
            self.rows[(meeting.user_id, meeting.key)] = replace(current, etag=str(next(self._etags)))
            raise Conflict(meeting.key)
        if current is None or current.etag != meeting.etag:
            raise Conflict(meeting.key)
        check_table_entity(TableMeetingStore._entity(meeting))
        stored = replace(meeting, etag=str(next(self._etags)))
        self.rows[(meeting.user_id, meeting.key)] = stored
        return stored

    def _delete(self, meeting: Meeting) -> None:
        current = self.rows.get((meeting.user_id, meeting.key))
        if current is not None and current.etag != meeting.etag:
            raise Conflict(meeting.key)
        self.rows.pop((meeting.user_id, meeting.key), None)


class Index:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[str, str]] = {}
        self.users: dict[tuple[str, str], str] = {}

    def get(self, connection_id: str, event_id: str) -> str | None:
        row = self.rows.get((connection_id, event_id))
        return row[0] if row else None

    def put(self, connection_id: str, event_id: str, user_id: str, meeting_key: str, generation: str) -> None:
        self.rows[(connection_id, event_id)] = (meeting_key, generation)
        self.users[(connection_id, event_id)] = user_id

    def remove(self, connection_id: str, event_id: str) -> None:
        self.rows.pop((connection_id, event_id), None)

    def all_for(self, connection_id: str, not_generation: str | None = None) -> dict[str, str]:
        return {e: k for (c, e), (k, g) in list(self.rows.items())
                if c == connection_id and (not_generation is None or g != not_generation)}


class SyncStates:
    def __init__(self) -> None:
        self.rows: dict[str, SyncState] = {}
        self.queued: dict[str, datetime] = {}
        self.announcements: dict[str, datetime] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, connection_id: str) -> SyncState | None:
        return self.rows.get(connection_id)

    def put(self, state: SyncState) -> SyncState:
        with self._lock:
            current = self.rows.get(state.connection_id)
            if (current.etag if current else None) != state.etag:
                raise Conflict(state.connection_id)
            stored = replace(state, etag=str(next(self._etags)))
            self.rows[state.connection_id] = stored
        return stored

    def remove(self, connection_id: str) -> None:
        self.rows.pop(connection_id, None)
        self.queued.pop(connection_id, None)
        self.announcements.pop(connection_id, None)

    def mark_queued(self, connection_id: str, now: datetime, ttl: timedelta) -> bool:
        with self._lock:
            at = self.queued.get(connection_id)
            if at is not None and at > now - ttl:
                return False
            self.queued[connection_id] = now
            return True

    def clear_queued(self, connection_id: str) -> None:
        self.queued.pop(connection_id, None)

    def touch_queued(self, connection_id: str, now: datetime) -> None:
        self.queued[connection_id] = now

    def announce(self, connection_id: str, at: datetime) -> None:
        self.announcements[connection_id] = at

    def announced(self, connection_id: str) -> datetime | None:
        return self.announcements.get(connection_id)


class Secrets:
    """A vault without purge protection: deleted secrets are purged (`purged`)."""

    def __init__(self, now: Any = None) -> None:
        self.values: dict[str, str] = {}
        self.created: dict[str, datetime | None] = {}
        self.deleted: set[str] = set()
        self.purged: set[str] = set()
        self.sets = 0
        self.fail_deletes = 0  # the next deletes raise (an outage mid-way)
        self.owners: dict[str, str] = {}  # the owner each secret's writer named (sealed rows' `Owner`)
        self.pages = 0  # pages listed (the reconciler's walk)
        self.largest_page = 0
        self._now = now

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str, owner: str = "") -> None:
        assert name not in self.deleted, "a deleted secret's name must never be reused"
        self.sets += 1
        self.values[name] = value
        self.owners[name] = owner  # a write replaces the row, owner included
        self.created.setdefault(name, self._now() if self._now else None)

    def adopt(self, name: str, owner: str) -> None:
        if name in self.values:
            self.owners[name] = owner

    def page(self, prefix: str, continuation: str | None, size: int) -> Page[StoredSecret]:
        """In name order, as the sealed table lists its partitions."""
        self.pages += 1
        found = paged(list(self.list(prefix)), continuation, size, key=lambda s: s.name)
        self.largest_page = max(self.largest_page, len(found.items))
        return found

    def delete(self, name: str) -> None:
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise RuntimeError("Key Vault unavailable")
        if self.values.pop(name, None) is not None:
            self.deleted.add(name)
            self.purged.add(name)

    def list(self, prefix: str) -> Iterator[StoredSecret]:
        for name in list(self.values):
            if name.startswith(prefix):
                yield StoredSecret(name, self.created.get(name), self.owners.get(name, ""))


APP_HOME_TENANT = "tid-coagentor"  # the tenant the app registration lives in


@dataclass
class AppRefusals:
    """Tenants refused with AADSTS7000112 / 700016, and when (the `apprefusals` table in memory)."""

    seen: dict[str, datetime] = field(default_factory=dict)
    window: timedelta = timedelta(hours=1)

    def record(self, tenant_id: str, code: str, now: datetime) -> int:
        self.seen[tenant_id] = now
        return len({t for t, at in self.seen.items() if at >= now - self.window})


@dataclass
class Identity:
    """A fake identity platform: sign-ins by account, refresh outcomes scripted per account."""

    now: Any
    next_account: tuple[str, str, str] = ("uid-alice.tid-contoso", "tid-contoso", "alice@contoso.com")
    redeem_error: TokenError | None = None
    refresh_errors: dict[str, TokenError] = field(default_factory=dict)
    refreshes: int = 0
    lifetime: timedelta = timedelta(hours=1)  # of the access tokens it issues

    def begin(self, state: str, login_hint: str | None = None) -> dict[str, Any]:
        return {"state": state, "auth_uri": f"https://login.example/authorize?state={state}", "code_verifier": "v"}

    def redeem(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn | TokenError:
        if self.redeem_error:
            return self.redeem_error
        home, tid, email = self.next_account
        return SignedIn(cache=f"cache-for-{home}", access_token="at", access_expires_at=self.now() + self.lifetime,
                        home_account_id=home, tenant_id=tid, username=email)

    def acquire(self, cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken | TokenError:
        if home_account_id in self.refresh_errors:
            return self.refresh_errors[home_account_id]
        if force_refresh:
            self.refreshes += 1
            return AccessToken("at2", self.now() + self.lifetime, cache + "+")
        return AccessToken("at", self.now() + self.lifetime, None)


@dataclass
class Calendar:
    """Pages of delta results per call, scripted by the test."""

    email: str = "alice@contoso.com"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # every change, in order: delta links are positions
    _log_start: int = 0
    throttle_next: int = 0
    gone_next: bool = False
    refuse_token: bool = False  # Graph answers 401 / 403
    mailbox_unavailable: str | None = None  # Graph's code for a mailbox it cannot read (every call)
    calls: list[str] = field(default_factory=list)
    page_size: int = 2
    _pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def me_email(self, access_token: str) -> str:
        return self.email

    def probe(self, access_token: str) -> None:
        self.calls.append("probe")
        self._mailbox()

    def instances(self, access_token: str, series_master_id: str, window: SyncWindow) -> list[dict[str, Any]] | None:
        self.calls.append(f"instances:{series_master_id}")
        self._mailbox()
        if series_master_id not in self.events:
            return None
        return [e for e in self.events.values() if e.get("seriesMasterId") == series_master_id]

    def _mailbox(self) -> None:
        if self.mailbox_unavailable:
            raise CalendarUnavailable(self.mailbox_unavailable)

    def delta_first(self, access_token: str, window: SyncWindow) -> DeltaPage:
        self._mailbox()
        self.calls.append("first")
        self._log_start = len(self.log)
        return self._serve(list(self.events.values()), 0)

    def event(self, access_token: str, event_id: str) -> dict[str, Any] | None:
        self._mailbox()
        self.calls.append(f"event:{event_id}")
        return self.events.get(event_id)

    def calendars(self, access_token: str) -> list[CalendarInfo]:
        self._mailbox()
        return [CalendarInfo(id="default-calendar", name="Calendar", is_default=True)]

    def calendar_view(self, access_token: str, calendar_id: str,
                      window: SyncWindow) -> tuple[list[dict[str, Any]], int]:
        """The events in the window (one calendar: the account's), series masters left out."""
        self._mailbox()
        self.calls.append(f"calendarView:{calendar_id}")
        return [e for e in self.events.values() if e.get("type") != "seriesMaster" and _within(e, window)], 1

    def delta_next(self, access_token: str, link: str) -> DeltaPage:
        self._mailbox()
        if self.refuse_token:
            raise GraphUnauthorized("Graph refused access (401 InvalidAuthenticationToken)")
        self.calls.append(link)
        if self.throttle_next:
            self.throttle_next -= 1
            raise Throttled(timedelta(seconds=30))
        if link.startswith("delta:"):
            if self.gone_next:
                self.gone_next = False
                raise SyncStateGone("syncStateNotFound")
            # Like Graph, a delta link is a position: read again (a round that was not saved), it
            # answers the same changes again, plus any newer ones.
            position = int(link.split(":")[1]) if link[6:].isdigit() else self._log_start
            return self._serve(self.log[position:], 0)
        _, items_id, offset = link.split(":")
        return self._serve(self._pending[items_id], int(offset))

    def _serve(self, items: list[dict[str, Any]], offset: int) -> DeltaPage:
        items_id = str(id(items))
        self._pending[items_id] = items
        page = items[offset:offset + self.page_size]
        if offset + self.page_size < len(items):
            return DeltaPage(page, f"page:{items_id}:{offset + self.page_size}", None)
        return DeltaPage(page, None, f"delta:{len(self.log)}")

    # test helpers
    def add(self, event: dict[str, Any]) -> None:
        self.events[event["id"]] = event
        self.log.append(event)

    def remove(self, event_id: str) -> None:
        self.events.pop(event_id, None)
        self.log.append({"id": event_id, "@removed": {"reason": "deleted"}})

    def delete_occurrence(self, occurrence_id: str) -> None:
        """As Graph is reported to do: the occurrence disappears with no `@removed`; only its series
        master comes back changed (FACTS, "Deleted occurrences")."""
        gone = self.events.pop(occurrence_id)
        self.log.append(self.events[gone["seriesMasterId"]])


class Jobs:
    def __init__(self) -> None:
        self.deploys: list[tuple[DeployJob, timedelta]] = []
        self.poisoned: list[tuple[DeployJob, str]] = []
        self.syncs: list[tuple[SyncJob, timedelta]] = []
        self.refreshes: list[tuple[RefreshJob, timedelta]] = []
        self.progress: list[tuple[ProgressJob, timedelta]] = []

    def schedule_progress(self, job: ProgressJob, delay: timedelta) -> None:
        self.progress.append((job, delay))

    def enqueue_refresh(self, job: RefreshJob, delay: timedelta = timedelta(0)) -> None:
        self.refreshes.append((job, delay))

    def schedule_deploy(self, job: DeployJob, delay: timedelta) -> None:
        self.deploys.append((job, delay))

    def poison_deploy(self, job: DeployJob, reason: str) -> None:
        self.poisoned.append((job, reason))

    def enqueue_sync(self, job: SyncJob, delay: timedelta = timedelta(0)) -> None:
        self.syncs.append((job, delay))


@dataclass
class Agents:
    """The agent API: deployments answer as scripted (default: sent, no id); recalls as scripted
    (default: gone)."""

    script: list[DeployResult] = field(default_factory=list)
    calls: list[DeployRequest] = field(default_factory=list)
    recalls: list[str] = field(default_factory=list)
    recall_script: list[RecallResult] = field(default_factory=list)

    def deploy(self, request: DeployRequest) -> DeployResult:
        self.calls.append(request)
        return self.script.pop(0) if self.script else DeployResult(ok=True)

    def recall(self, agent_id: str) -> RecallResult:
        self.recalls.append(agent_id)
        return self.recall_script.pop(0) if self.recall_script else RecallResult(gone=True, detail="204")


class UserRows:
    """Every row of one user across the fake stores (what the table adapter finds by key conventions)."""

    def __init__(self, flows: Flows, claims: Claims, connections: Connections, meetings: Meetings, index: Index,
                 states: SyncStates) -> None:
        self.flows, self.claims, self.connections = flows, claims, connections
        self.meetings, self.index, self.states = meetings, index, states
        self.fail_after: int | None = None  # raise after deleting this many rows (a crash mid-way)

    def connection_ids(self, user_id: str, made_after: datetime | None = None) -> list[str]:
        return [c.id for c in self.connections.list_for_user(user_id)
                if made_after is None or c.connected_at > made_after]

    def connection_partitions(self) -> dict[str, str]:
        found = {c: "" for c in self.states.rows}
        found.update({c: self.index.users.get((c, e), "") for (c, e) in self.index.rows})
        return found

    def partitions_page(self, continuation: str | None, size: int) -> Page[tuple[str, str]]:
        """Sync state rows, then event index rows, in key order (one row each, as the tables list them)."""
        rows = [("1", c, s.user_id, "") for c, s in self.states.rows.items()]
        rows += [("2", c, self.index.users.get((c, e), ""), e) for (c, e) in self.index.rows]
        found = paged(rows, continuation, size, key=lambda r: f"{r[0]}\x00{r[1]}\x00{r[3]}")
        return Page([(c, u) for _, c, u, _ in found.items], found.continuation)

    def owner_of(self, connection_id: str) -> str:
        users = [u for (c, _), u in self.index.users.items() if c == connection_id and u]
        state = self.states.rows.get(connection_id)
        return users[0] if users else state.user_id if state is not None else ""

    def secret_names(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> set[str]:
        if only_connections:
            return {c.secret_name for c in self.connections.list_for_user(user_id) if c.id in connection_ids}
        return ({c.secret_name for c in self.connections.list_for_user(user_id)}
                | {c.secret_name for c in self.claims.rows.values() if c.user_id == user_id})

    def erase(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> int:
        doomed: list[tuple[dict[Any, Any], Any]] = []
        if not only_connections:
            doomed += [(self.flows.rows, k) for k, f in self.flows.rows.items() if f.user_id == user_id]
            doomed += [(self.claims.rows, k) for k, c in self.claims.rows.items() if c.user_id == user_id]
            doomed += [(self.meetings.rows, k) for k in self.meetings.rows if k[0] == user_id]
        doomed += [(self.index.rows, k) for k in self.index.rows if k[0] in connection_ids]
        doomed += [(self.states.rows, k) for k in self.states.rows if k in connection_ids]
        doomed += [(self.states.queued, k) for k in self.states.queued if k in connection_ids]
        doomed += [(self.connections.rows, k) for k in self.connections.rows  # last
                   if k[0] == user_id and (not only_connections or k[1] in connection_ids)]
        for n, (rows, key) in enumerate(doomed):
            if self.fail_after is not None and n >= self.fail_after:
                self.fail_after = None
                raise RuntimeError("Table Storage unavailable")
            rows.pop(key, None)
        return len(doomed)


@dataclass
class RecordingStatusEvents:
    """StatusEvents that records what was published, in order (the outbox, without delivery)."""

    published: list[StatusEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, event: StatusEvent) -> None:
        assert event.id and event.subject, "a status event needs its stable id and the user id"
        assert event.time.tzinfo is not None, "status event times are timezone-aware"
        with self._lock:
            self.published.append(event)

    def of_type(self, kind: StatusEventType) -> list[StatusEvent]:
        with self._lock:
            return [e for e in self.published if e.type is kind]


class JoinRulesStore:
    """Join rules and per-meeting choices, keyed as the table keys them (kind, connection, target)."""

    def __init__(self) -> None:
        self.rules: dict[str, JoinRules] = {}
        self.choices: dict[str, dict[tuple[bool, str, str], StoredOverride]] = {}

    def get_rules(self, user_id: str) -> JoinRules | None:
        return self.rules.get(user_id)

    def put_rules(self, user_id: str, rules: JoinRules) -> None:
        self.rules[user_id] = rules

    def overrides(self, user_id: str) -> list[StoredOverride]:
        return list(self.choices.get(user_id, {}).values())

    def put_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        mine = self.choices.setdefault(user_id, {})
        for o in overrides:
            mine[(o.series, o.connection_id, o.target_id)] = o

    def remove_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        mine = self.choices.get(user_id, {})
        for o in overrides:
            mine.pop((o.series, o.connection_id, o.target_id), None)


class ErasureJobs:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, timedelta]] = []
        self.before: list[datetime | None] = []
        self.connection_ids: list[tuple[str, ...]] = []

    def enqueue(self, user_id: str, delay: timedelta, before: datetime | None = None,
                connection_ids: Sequence[str] = ()) -> None:
        self.jobs.append((user_id, delay))
        self.before.append(before)
        self.connection_ids.append(tuple(connection_ids))


def _within(event: dict[str, Any], window: SyncWindow) -> bool:
    from shared.calendar_events import parse_graph_time

    start, end = parse_graph_time(event.get("start")), parse_graph_time(event.get("end"))
    return start is not None and end is not None and start < window.end and end > window.start


class AgentTries:
    """Each agent try by idempotency key and agent id, and the webhook ids taken, in memory."""

    def __init__(self) -> None:
        from shared.ports import AgentTry

        self.by_keys: dict[str, AgentTry] = {}
        self.by_agents: dict[str, AgentTry] = {}
        self.webhooks: set[str] = set()
        self.seen_at: dict[tuple[str, str], datetime] = {}  # (kind, key) -> when stored, as the table keeps it

    def put(self, entry: Any) -> None:
        self.by_keys[entry.idempotency_key] = entry
        self.seen_at[("k", entry.idempotency_key)] = datetime.now(UTC)
        if entry.agent_id:
            self.by_agents[entry.agent_id] = entry
            self.seen_at[("a", entry.agent_id)] = datetime.now(UTC)

    def prune_page(self, tries_before: datetime, webhooks_before: datetime, continuation: str | None,
                   size: int) -> tuple[int, int, str | None]:
        old = [k for k, at in self.seen_at.items() if at < (webhooks_before if k[0] == "w" else tries_before)]
        found = paged(old, continuation, size, key=lambda k: f"{k[0]}~{k[1]}")
        for kind, key in found.items:
            self.seen_at.pop((kind, key), None)
            {"k": self.by_keys, "a": self.by_agents}.get(kind, {}).pop(key, None)
            if kind == "w":
                self.webhooks.discard(key)
        return len(found.items), len(found.items), found.continuation

    def by_key(self, idempotency_key: str) -> Any:
        return self.by_keys.get(idempotency_key)

    def by_agent(self, agent_id: str) -> Any:
        return self.by_agents.get(agent_id)

    def remember_webhook(self, webhook_id: str, at: datetime) -> bool:
        if webhook_id in self.webhooks:
            return False
        self.webhooks.add(webhook_id)
        self.seen_at[("w", webhook_id)] = at
        return True

    def webhook_seen(self, webhook_id: str) -> bool:
        return webhook_id in self.webhooks


class WorkspaceMeetings:
    """Workspace meeting rows written with their ETag, as the table store does; `down`
    makes writes fail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], WorkspaceMeeting] = {}
        self._etag = 0
        self.down = False

    def get(self, workspace: str, key: str) -> WorkspaceMeeting | None:
        return self.rows.get((workspace, key))

    def put(self, meeting: WorkspaceMeeting) -> WorkspaceMeeting:
        if self.down:
            raise OSError("storage down")
        current = self.rows.get((meeting.workspace, meeting.key))
        if (current.etag if current else None) != meeting.etag:
            raise Conflict(meeting.key)
        self._etag += 1
        stored = replace(meeting, etag=str(self._etag))
        self.rows[(meeting.workspace, meeting.key)] = stored
        return stored

    def ended_before(self, cutoff: datetime) -> Iterator[WorkspaceMeeting]:
        yield from [m for m in list(self.rows.values()) if m.end is not None and m.end < cutoff]

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[WorkspaceMeeting]:
        return paged(list(self.ended_before(cutoff)), continuation, size, key=lambda m: f"{m.workspace}\x00{m.key}")

    def delete(self, meeting: WorkspaceMeeting) -> None:
        current = self.rows.get((meeting.workspace, meeting.key))
        if current is not None and current.etag != meeting.etag:
            raise Conflict(meeting.key)
        self.rows.pop((meeting.workspace, meeting.key), None)


class CalendarSelections:
    """One selection row per connection, written with its ETag as the table store does."""

    def __init__(self) -> None:
        self.rows: dict[str, CalendarSelection] = {}
        self._etags = itertools.count(1)

    def get(self, connection_id: str) -> CalendarSelection | None:
        return self.rows.get(connection_id)

    def put(self, selection: CalendarSelection) -> CalendarSelection:
        current = self.rows.get(selection.connection_id)
        if (current.etag if current else None) != selection.etag:
            raise Conflict(selection.connection_id)
        stored = replace(selection, etag=str(next(self._etags)))
        self.rows[selection.connection_id] = stored
        return stored

    def remove(self, connection_id: str) -> None:
        self.rows.pop(connection_id, None)


class TeamClaimsStore:
    def __init__(self) -> None:
        self.rows: dict[str, TeamClaims] = {}

    def get(self, user_id: str) -> TeamClaims | None:
        return self.rows.get(user_id)

    def put(self, claims: TeamClaims) -> None:
        self.rows[claims.user_id] = claims


class FanOutPages:
    def __init__(self) -> None:
        self.queued: list[FanOutPage] = []

    def enqueue_page(self, page: FanOutPage) -> None:
        self.queued.append(page)
