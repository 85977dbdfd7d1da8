"""Azure Table Storage: connections, sign-in flows, pending claims, meetings, sync state, join rules,
Graph subscriptions, and the sealed per-connection secrets.

What is stored, and what never is:
- Rows name a connection's token cache and its subscription's clientState (`SecretName`), never
  their values, and hold no token, authorization code, claim code or key in plaintext.
- `sealedsecrets` holds those values **encrypted** (shared.adapters.envelope): one row per name, the
  AES-256-GCM ciphertext and tag (`Ciphertext`, binary), its 96-bit nonce (`Nonce`), the id of the
  data key that sealed it (`DataKeyId`), when it was written (`UpdatedAt`) and the user id whose rows
  name it (`Owner`, "" on rows written before it was kept). Without the data key a row reveals only
  the value's length.
- `datakeys` holds the data keys **wrapped** by the Key Vault key (RSA-OAEP-256): `WrappedKey`
  (binary), the Key Vault key version that wrapped it (`KeyId`, a URL) and `CreatedAt`. Unwrapping
  needs the Key Vault key, which never leaves the vault.
- One secret is held outside `sealedsecrets`: a sign-in flow row (`authflows`, `Flow`) holds MSAL's
  flow, which carries the PKCE `code_verifier` and the OIDC nonce, for the ten minutes a sign-in may
  take. It is sealed with AES-GCM under a key derived from the sign-in's `state`
  (shared.services.connect.seal_flow), which no row holds (only its SHA-256 names the row), so the
  table alone never yields a verifier; a flow row written before sealing holds it in plain until it
  expires. Pending claims (`pendingclaims`) are keyed by the claim code's hash, never the code.
`sealedsecrets` and `datakeys` are keyed by neither user nor connection: erasure and disconnects
delete sealed rows through the secret names the user's rows hold."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.adapters.envelope import SealedRow, WrappedDataKey
from shared.agent_states import AgentState
from shared.autojoin import NEWER_RULES, EventChoice, ExternalInvites, JoinRules, Response
from shared.connections import Connection, ConnectionStatus, Plan, PlanLimitExceeded, owner_tag, plan_limit
from shared.meeting_links import Platform
from shared.ports import (
    AdminConsent,
    AgentTry,
    CalendarChoice,
    CalendarSelection,
    Conflict,
    ConnectionPage,
    Meeting,
    Page,
    PendingClaim,
    PendingFlow,
    RowTooLarge,
    Source,
    StoredOverride,
    Subscription,
    SyncState,
    TeamClaims,
    Teammate,
    WalkStep,
    WorkspaceMeeting,
)

log = logging.getLogger(__name__)

TABLES = ("authflows", "pendingclaims", "connections", "meetings", "eventindex", "syncstate", "autojoin",
          "subscriptions", "calendars", "agenttries", "workspacemeetings", "apprefusals", "meetingsdue")
# Sealed secrets and wrapped data keys: not per-user rows (erasure deletes sealed rows by name).
KEY_TABLES = ("sealedsecrets", "datakeys")
_SLOT_PREFIX = "~slot-"  # sorts after every connection id (hex), so listing connections skips slots
_ANNOUNCED_ROW = "announced"  # when a change of the calendar was last announced
_QUEUED_ROW = "queued"  # beside a connection's sync "state" row: a "sync now" is queued


def _minute(value: datetime) -> str:
    """A UTC minute as a key: `YYYY-MM-DDTHH:MM`, string order time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _required_dt(value: Any) -> datetime:
    parsed = _dt(value)
    if parsed is None:
        raise ValueError("missing timestamp in stored row")
    return parsed


def ensure_tables(service: TableServiceClient) -> None:
    for name in TABLES + KEY_TABLES:
        service.create_table_if_not_exists(name)


# Characters Table Storage refuses in PartitionKey / RowKey, and its 1 KiB key limit
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
# An id from a URL that breaks them names no row: a read answers "not found", never a 500.
_BAD_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def _too_large(exc: HttpResponseError) -> Exception:
    """Table Storage's 400 for a row over its limits becomes the domain's RowTooLarge (one event's data,
    skipped by the sync); any other failure stays what it is (the run fails and is retried)."""
    code = str(getattr(exc, "error_code", "") or "")
    if exc.status_code in (400, 413) and code in ("PropertyValueTooLarge", "EntityTooLarge", "RequestBodyTooLarge"):
        return RowTooLarge(code)
    return exc


def _put_conditional(table: TableClient, entity: dict[str, Any], etag: str | None) -> str | None:
    """Create the row (etag None) or replace it only if unchanged since read; the new ETag. Raises
    Conflict when it exists already, changed, or is gone."""
    try:
        if etag is None:
            meta = table.create_entity(entity)
        else:
            meta = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        raise Conflict(str(entity["PartitionKey"])) from None
    etag_out: str | None = meta.get("etag")
    return etag_out


_ESCAPED = re.compile(r"[%/\\#?\x00-\x1f\x7f-\x9f]")


def user_key(user_id: str) -> str:
    """The PartitionKey for a CoAgentor user id: the one place ids become keys. The platform may issue
    any string as `sub`; Table Storage refuses `/ \\ # ?` and control characters in keys, so those and
    `%` itself are percent-encoded (UTF-8, `%XX`): reversible (`user_id_of`) and collision-free (every
    `%` in a key starts an escape). Ids without those characters are their own key, so rows written
    before this encoding are found as they were (an id holding `%` was stored raw before: such rows
    are the one case not found again; platform ids are opaque ASCII in practice)."""
    return _ESCAPED.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), user_id)


# Table Storage keys are at most 1 KiB of UTF-16: 512 code units.
_MAX_KEY_UNITS = 512


def fits_in_a_key(user_id: str) -> bool:
    """Whether `user_key(user_id)` is within Table Storage's key size (ids that are not are refused
    at the door with a 400, never half-stored)."""
    return 0 < len(user_key(user_id).encode("utf-16-le")) // 2 <= _MAX_KEY_UNITS


def user_id_of(key: str) -> str:
    """The user id `user_key` encoded."""
    return unquote(key) if "%" in key else key


def _key_ok(*keys: str) -> bool:
    return all(bool(k) and len(k) <= 512 and not _BAD_KEY.search(k) for k in keys)


def _quote(value: str) -> str:
    return value.replace("'", "''")


def query_page(table: TableClient, query: str, size: int, continuation: str | None,
               select: list[str] | None = None) -> tuple[list[Any], str | None]:
    """One request of a query: at most `size` rows (Table Storage returns at most 1,000 per request,
    and fewer, even none, when the server stops after 5 s or at a partition range boundary) and the
    service's continuation (next partition and row key) as JSON, None when the query is done
    (https://learn.microsoft.com/rest/api/storageservices/query-timeout-and-pagination)."""
    token = json.loads(continuation) if continuation else None
    options: dict[str, Any] = {"results_per_page": max(1, min(size, 1000))}
    if select is not None:
        options["select"] = select
    found = table.query_entities(query, **options) if query else table.list_entities(**options)  # "": every row
    pages = found.by_page(continuation_token=token)
    rows = list(next(pages, []))
    following = pages.continuation_token  # type: ignore[attr-defined]
    return rows, json.dumps(following) if following else None


def read_rows(rows: list[Any], read: Any, what: str) -> tuple[list[Any], int]:
    """Each raw row through `read`; a row that cannot be read is logged (`walk_row_failed`, with its
    keys, never its values) and left out. Returns (read rows, how many were left out)."""
    done, bad = [], 0
    for e in rows:
        try:
            done.append(read(e))
        except (KeyError, ValueError, TypeError) as exc:  # one unreadable row never stops a walk
            bad += 1
            log.error("%s row unreadable, skipped by the walk: %s", what, type(exc).__name__,
                      extra={"table_partition": str(e.get("PartitionKey", "")), "table_row": str(e.get("RowKey", "")),
                             "event": "walk_row_failed"})
    return done, bad


def _split_ref(ref: str, legacy_row: str) -> tuple[str, str]:
    """Keys of a one-time value's row: `<owner tag>.<hash>` → (owner tag, hash), the user's partition;
    a bare hash (rows written before owner tags) → (hash, legacy_row)."""
    owner, dot, digest = ref.partition(".")
    return (owner, digest) if dot else (ref, legacy_row)


def _join_ref(e: Any, legacy_row: str) -> str:
    return str(e["PartitionKey"]) if e["RowKey"] == legacy_row else f"{e['PartitionKey']}.{e['RowKey']}"


class TableFlowStore:
    """`authflows`: one row per started sign-in, in its user's partition (the owner tag); the admin
    consent record shares the partition under RowKey `adminconsent`. Rows written before owner tags
    (PartitionKey the state's hash, RowKey `flow`) are still taken and purged."""

    _LEGACY = "flow"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def put(self, flow: PendingFlow) -> None:
        partition, row = _split_ref(flow.state_hash, self._LEGACY)
        self._t.create_entity({
            "PartitionKey": partition, "RowKey": row, "UserId": flow.user_id,
            "ReconnectId": flow.reconnect_id or "", "Flow": json.dumps(flow.flow),
            "ExpiresAt": _iso(flow.expires_at),
        })

    def take(self, state_hash: str) -> PendingFlow | None:
        partition, row = _split_ref(state_hash, self._LEGACY)
        if not _key_ok(partition, row):
            return None
        try:
            e = self._t.get_entity(partition, row)
            self._t.delete_entity(partition, row, etag=e.metadata["etag"],
                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        return PendingFlow(state_hash=state_hash, user_id=e["UserId"], reconnect_id=e["ReconnectId"] or None,
                           flow=json.loads(e["Flow"]), expires_at=_required_dt(e["ExpiresAt"]))

    def live(self, owner: str, now: datetime) -> list[datetime]:
        rows = self._t.query_entities(f"PartitionKey eq '{_quote(owner)}' and ExpiresAt gt '{_quote(_iso(now))}'",
                                      select=["ExpiresAt"])
        return [_required_dt(e["ExpiresAt"]) for e in rows]

    def purge_expired_page(self, now: datetime, continuation: str | None, size: int) -> WalkStep:
        """Abandoned sign-ins: their sealed PKCE verifiers do not outlive the flow. ExpiresAt is stored
        as isoformat() in UTC, so the service compares it as a string (admin-consent rows have none)."""
        expired, following = query_page(self._t, f"ExpiresAt le '{_quote(_iso(now))}'", size, continuation,
                                        select=["PartitionKey", "RowKey"])
        for e in expired:
            self._t.delete_entity(e["PartitionKey"], e["RowKey"])  # gone already: nothing (the SDK ignores 404)
        return WalkStep(len(expired), len(expired), following)


class TableAdminConsents:
    """In `authflows`, beside the user's sign-in flows: PartitionKey the user's owner tag, RowKey
    `adminconsent`, one row per user (erasure deletes the owner-tag partition)."""

    _ROW = "adminconsent"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, owner: str) -> AdminConsent | None:
        if not _key_ok(owner):
            return None
        try:
            e = self._t.get_entity(owner, self._ROW)
        except ResourceNotFoundError:
            return None
        return AdminConsent(owner=owner, consented_at=_required_dt(e["ConsentedAt"]),
                            tenant_id=e.get("TenantId") or None)

    def put(self, consent: AdminConsent) -> None:
        self._t.upsert_entity({
            "PartitionKey": consent.owner, "RowKey": self._ROW, "ConsentedAt": _iso(consent.consented_at),
            "TenantId": (consent.tenant_id or "")[:64],
        }, mode=UpdateMode.REPLACE)


class TableClaimStore:
    """`pendingclaims`: one row per redeemed sign-in waiting for its claim, in its user's partition
    (the owner tag in the claim code); rows written before owner tags (PartitionKey the code's hash,
    RowKey `claim`) are still read, claimed and purged."""

    _LEGACY = "claim"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def put(self, claim: PendingClaim) -> None:
        partition, row = _split_ref(claim.code_hash, self._LEGACY)
        self._t.create_entity({
            "PartitionKey": partition, "RowKey": row, "UserId": claim.user_id,
            "ReconnectId": claim.reconnect_id or "", "SecretName": claim.secret_name,
            "HomeAccountId": claim.home_account_id, "TenantId": claim.tenant_id, "Email": claim.email,
            "AccessExpiresAt": _iso(claim.access_expires_at), "ExpiresAt": _iso(claim.expires_at),
            "LoginHint": claim.login_hint[:1000], "CalendarUnavailable": claim.calendar_unavailable or "",
        })

    def get(self, code_hash: str) -> PendingClaim | None:
        partition, row = _split_ref(code_hash, self._LEGACY)
        if not _key_ok(partition, row):
            return None
        try:
            return self._claim(self._t.get_entity(partition, row))
        except ResourceNotFoundError:
            return None

    def take(self, code_hash: str) -> PendingClaim | None:
        partition, row = _split_ref(code_hash, self._LEGACY)
        if not _key_ok(partition, row):
            return None
        try:
            e = self._t.get_entity(partition, row)
            self._t.delete_entity(partition, row, etag=e.metadata["etag"],
                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        return self._claim(e)

    def expired_page(self, now: datetime, continuation: str | None, size: int) -> Page[PendingClaim]:
        raw, following = query_page(self._t, f"ExpiresAt le '{_quote(_iso(now))}'", size, continuation)
        rows, bad = read_rows(raw, self._claim, "pending claim")
        return Page(rows, following, bad)

    def remove(self, code_hash: str) -> None:
        partition, row = _split_ref(code_hash, self._LEGACY)
        try:
            self._t.delete_entity(partition, row)
        except ResourceNotFoundError:
            pass

    def all(self) -> Iterator[PendingClaim]:
        yield from map(self._claim, self._t.list_entities())

    def for_user(self, user_id: str) -> list[PendingClaim]:
        rows = self._t.query_entities(f"PartitionKey eq '{_quote(owner_tag(user_id))}'")
        return [self._claim(e) for e in rows]

    @classmethod
    def _claim(cls, e: Any) -> PendingClaim:
        return PendingClaim(
            code_hash=_join_ref(e, cls._LEGACY), user_id=e["UserId"], reconnect_id=e["ReconnectId"] or None,
            secret_name=e["SecretName"], home_account_id=e["HomeAccountId"], tenant_id=e["TenantId"],
            email=e["Email"], access_expires_at=_dt(e.get("AccessExpiresAt")),
            expires_at=_required_dt(e["ExpiresAt"]), login_hint=e.get("LoginHint") or "",
            calendar_unavailable=e.get("CalendarUnavailable") or None,
        )


class TableConnectionStore:
    """Connections partitioned by user. Plan limits are enforced atomically with slot rows: a new
    connection and the slot it takes are inserted in one transaction, so two concurrent sign-ins
    cannot both take the last place; a connection and its slot are deleted in one transaction too,
    and a slot row whose connection is gone (written before that rule) is reclaimed, so a slot never
    leaks. Every replace is conditional on the ETag the writer read (Table Storage optimistic
    concurrency: https://learn.microsoft.com/rest/api/storageservices/update-entity2)."""

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def list_for_user(self, user_id: str) -> list[Connection]:
        rows = self._t.query_entities(f"PartitionKey eq '{_quote(user_key(user_id))}'")
        return [self._conn(e) for e in rows if not e["RowKey"].startswith(_SLOT_PREFIX)]

    def get(self, user_id: str, connection_id: str) -> Connection | None:
        if connection_id.startswith(_SLOT_PREFIX) or not _key_ok(user_key(user_id), connection_id):
            return None
        try:
            return self._conn(self._t.get_entity(user_key(user_id), connection_id))
        except ResourceNotFoundError:
            return None

    def add(self, connection: Connection, plan: Plan) -> Connection:
        """Idempotent on the connection id: adding a connection that is already stored returns it."""
        limit = plan_limit(plan)
        for _ in range(3):
            rows = list(self._t.query_entities(f"PartitionKey eq '{_quote(user_key(connection.user_id))}'"))
            existing = {e["RowKey"]: e for e in rows if not e["RowKey"].startswith(_SLOT_PREFIX)}
            if connection.id in existing:
                return self._conn(existing[connection.id])
            if limit is not None and len(existing) >= limit:
                raise PlanLimitExceeded(plan, limit, len(existing))
            slots = {e["RowKey"]: e for e in rows if e["RowKey"].startswith(_SLOT_PREFIX)}
            if self._reclaim_leaked(slots, existing):
                continue
            taken = {int(e.get("Slot", -1)) for e in existing.values()}
            stored = self._take_a_slot(connection, [n for n in range(limit or len(existing) + 64) if n not in taken])
            if stored is not None:
                return stored
            if self.get(connection.user_id, connection.id) is not None:  # a concurrent add of the same one
                return self.get(connection.user_id, connection.id) or connection
        used = len(self.list_for_user(connection.user_id))
        raise PlanLimitExceeded(plan, limit if limit is not None else used, used)

    def _take_a_slot(self, connection: Connection, candidates: list[int]) -> Connection | None:
        for slot in candidates:
            with_slot = replace(connection, slot=slot)
            try:
                self._t.submit_transaction([
                    ("create", {"PartitionKey": user_key(connection.user_id), "RowKey": f"{_SLOT_PREFIX}{slot}",
                                "ConnectionId": connection.id}),
                    ("create", self._entity(with_slot)),
                ])
            except (TableTransactionError, ResourceExistsError):
                continue
            return self.get(connection.user_id, connection.id) or with_slot
        return None

    def _reclaim_leaked(self, slots: dict[str, Any], existing: dict[str, Any]) -> bool:
        """Delete slot rows that no connection holds (conditional: a slot taken meanwhile stays)."""
        reclaimed = False
        for row_key, slot in slots.items():
            holder = existing.get(slot.get("ConnectionId", ""))
            if holder is not None and f"{_SLOT_PREFIX}{int(holder.get('Slot', -1))}" == row_key:
                continue
            try:
                self._t.delete_entity(slot["PartitionKey"], row_key, etag=slot.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)
                reclaimed = True
            except (ResourceNotFoundError, ResourceModifiedError):
                reclaimed = True
        return reclaimed

    def update(self, connection: Connection) -> Connection:
        if connection.etag is None:
            raise Conflict(f"connection {connection.id}: update needs the ETag it was read with")
        try:
            meta = self._t.update_entity(self._entity(connection), mode=UpdateMode.REPLACE, etag=connection.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise Conflict(connection.id) from None
        return replace(connection, etag=meta.get("etag"))

    def remove(self, connection: Connection) -> None:
        partition = user_key(connection.user_id)
        operations: list[Any] = [("delete", {"PartitionKey": partition, "RowKey": connection.id})]
        if connection.slot is not None:
            operations.append(("delete", {"PartitionKey": partition,
                                          "RowKey": f"{_SLOT_PREFIX}{connection.slot}"}))
        try:
            self._t.submit_transaction(operations)
        except (TableTransactionError, ResourceNotFoundError):
            # One of them is already gone (an earlier attempt): delete what is left, one by one.
            for _, keys in operations:
                try:
                    self._t.delete_entity(keys["PartitionKey"], keys["RowKey"])
                except ResourceNotFoundError:
                    pass

    def all(self) -> Iterator[Connection]:
        for e in self._t.query_entities("RowKey lt '~'"):
            yield self._conn(e)

    def page(self, continuation: str | None, size: int) -> ConnectionPage:
        """One query of at most `size` rows (Table Storage returns at most 1,000 per request); the
        continuation is the service's next-partition/next-row token as JSON. Slot rows are filtered by
        the query, so a page may hold fewer connections than `size` and still not be the last."""
        raw, following = query_page(self._t, "RowKey lt '~'", size, continuation)
        rows, bad = read_rows(raw, self._conn, "connection")
        return ConnectionPage(rows, following, skipped=bad)

    @staticmethod
    def _entity(c: Connection) -> dict[str, Any]:
        return {
            "PartitionKey": user_key(c.user_id), "RowKey": c.id, "Email": c.email, "HomeAccountId": c.home_account_id,
            "TenantId": c.tenant_id, "Status": c.status.value, "ReasonCode": c.reason_code or "",
            "SecretName": c.secret_name, "ConnectedAt": _iso(c.connected_at),
            "LastRefreshedAt": _iso(c.last_refreshed_at), "AccessExpiresAt": _iso(c.access_expires_at),
            "Slot": -1 if c.slot is None else c.slot,
            "TransientFailureSince": _iso(c.transient_failure_since),
            "TransientFailures": c.transient_failures, "RetryAt": _iso(c.retry_at),
            "FailureClass": c.failure_class or "", "FailureCode": (c.failure_code or "")[:100],
            "SyncFailingSince": _iso(c.sync_failing_since), "LoginHint": (c.login_hint or "")[:1000],
        }

    @staticmethod
    def _conn(e: Any) -> Connection:
        slot = int(e.get("Slot", -1))
        return Connection(
            id=e["RowKey"], user_id=user_id_of(e["PartitionKey"]), email=e["Email"], home_account_id=e["HomeAccountId"],
            tenant_id=e["TenantId"], status=ConnectionStatus(e["Status"]), reason_code=e["ReasonCode"] or None,
            secret_name=e["SecretName"], connected_at=_required_dt(e["ConnectedAt"]),
            last_refreshed_at=_dt(e.get("LastRefreshedAt")), access_expires_at=_dt(e.get("AccessExpiresAt")),
            slot=None if slot < 0 else slot, transient_failure_since=_dt(e.get("TransientFailureSince")),
            transient_failures=int(e.get("TransientFailures", 0)), retry_at=_dt(e.get("RetryAt")),
            etag=e.metadata.get("etag"), failure_class=e.get("FailureClass") or None,
            failure_code=e.get("FailureCode") or None, sync_failing_since=_dt(e.get("SyncFailingSince")),
            login_hint=e.get("LoginHint") or None,
        )


def due_row_key(user_id: str, meeting_key: str) -> str:
    """The RowKey of a meeting's row in the `meetingsdue` index (a hash: meeting keys and user ids may
    hold characters RowKey forbids)."""
    return hashlib.sha256(f"{user_key(user_id)}\n{meeting_key}".encode()).hexdigest()[:48]


def awaiting_since(m: Meeting) -> datetime | None:
    """When a meeting starts waiting for a verdict the watchdog looks for: its deploy time while its
    agent is scheduled or being deployed, its next try's time while not admitted with one pending;
    None otherwise."""
    if m.agent in (AgentState.SCHEDULED, AgentState.DEPLOYING):
        return m.deploy_at
    if m.agent is AgentState.NOT_ADMITTED:
        return m.retry_at
    return None


class TableMeetingStore:
    """The `meetings` table (PartitionKey the user's key, RowKey the meeting key), and beside it the
    `meetingsdue` index the deployment watchdog reads instead of scanning every meeting: one row per
    meeting awaiting a verdict, PartitionKey its due minute (`YYYY-MM-DDTHH:MM`, UTC), RowKey a hash of
    user and meeting (`due_row_key`), with `UserId`, `MeetingKey` and `Due`. The index row is written
    before the meeting row that needs it, and the meeting row records where it is (`DueIndex`), so
    the write that gives the meeting its verdict, moves it or deletes it deletes the former index row
    after it, and erasure finds the user's index rows from their meetings. A row left behind (a
    meeting write that failed, a delete that did) names a meeting that no longer waits at that time:
    the watchdog drops it when it reads it. So the watchdog reads the meetings due now and the ones
    still overdue, however many meetings there are."""

    def __init__(self, table: TableClient, due: TableClient) -> None:
        self._t = table
        self._due = due

    def get(self, user_id: str, key: str) -> Meeting | None:
        if not _key_ok(key):
            return None
        try:
            return self._meeting(self._t.get_entity(user_key(user_id), key))
        except ResourceNotFoundError:
            return None

    def list_for_user(self, user_id: str, ending_after: datetime) -> list[Meeting]:
        rows = self._t.query_entities(f"PartitionKey eq '{_quote(user_key(user_id))}'")
        return [m for m in map(self._meeting, rows) if m.end > ending_after]

    def create(self, meeting: Meeting) -> Meeting:
        written, index_etag = self._index(meeting)
        try:
            meta = self._t.create_entity(self._entity(written))
        except ResourceExistsError:
            self._abandon(written, index_etag)
            raise Conflict(meeting.key) from None
        except HttpResponseError as exc:
            self._abandon(written, index_etag)
            raise _too_large(exc) from None
        return replace(written, etag=meta.get("etag"))

    def replace(self, meeting: Meeting) -> Meeting:
        written, index_etag = self._index(meeting)
        try:
            meta = self._t.update_entity(self._entity(written), mode=UpdateMode.REPLACE, etag=meeting.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            self._abandon(written, index_etag)
            raise Conflict(meeting.key) from None
        except HttpResponseError as exc:
            self._abandon(written, index_etag)
            raise _too_large(exc) from None
        if meeting.due_index and meeting.due_index != written.due_index:
            self._unindex(meeting, meeting.due_index)  # its verdict came, or it moved
        return replace(written, etag=meta.get("etag"))

    def delete(self, meeting: Meeting) -> None:
        try:
            self._t.delete_entity(user_key(meeting.user_id), meeting.key, etag=meeting.etag,
                                  match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            raise Conflict(meeting.key) from None
        except ResourceNotFoundError:
            pass
        if meeting.due_index:
            self._unindex(meeting, meeting.due_index)

    def awaiting_verdict(self, due_before: datetime, ending_after: datetime) -> Iterator[Meeting]:
        """From the `meetingsdue` index: its partitions up to `due_before`'s minute (a key range, so
        the meetings due later are never read), each row's meeting by a point read. A row whose
        meeting no longer waits at that time, or ended, is dropped (conditional on the row read: one
        written again meanwhile stays). A row, or the meeting it names, that cannot be read is logged
        once (`walk_row_failed`) and dropped (the daily reindex walk writes again the row of any
        readable meeting still waiting); a storage failure skips the row until the next run."""
        query = f"PartitionKey le '{_quote(_minute(due_before))}'"
        for e in self._due.query_entities(query, results_per_page=1000):
            try:
                due = _required_dt(e["Due"])
                if due > due_before:
                    continue  # later this minute
                meeting = self.get(str(e["UserId"]), str(e["MeetingKey"]))
            except (KeyError, ValueError, TypeError) as exc:
                log.error("meetings-due row or its meeting unreadable, dropped by the watchdog: %s",
                          type(exc).__name__, extra={"table_partition": str(e.get("PartitionKey", "")),
                                                     "meeting_id": str(e.get("MeetingKey", "")),
                                                     "event": "walk_row_failed"})
                meeting = None
            except HttpResponseError as exc:
                log.warning("meetings-due row skipped until the next run: %s", type(exc).__name__,
                            extra={"meeting_id": str(e.get("MeetingKey", ""))})
                continue
            else:
                if meeting is not None and awaiting_since(meeting) == due and meeting.end > ending_after:
                    yield meeting
                    continue
            try:
                self._due.delete_entity(e["PartitionKey"], e["RowKey"], etag=e.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                pass  # gone already, or written again for a meeting that waits again: kept

    def reindex_page(self, continuation: str | None, size: int) -> WalkStep:
        """One page of the walk that writes the `meetingsdue` row of every meeting awaiting a verdict
        (meetings written before the index existed, or whose row write was lost): a filtered scan
        of the meetings table, a page per queue message (prune_data, daily); safe to repeat."""
        query = (f"Agent eq '{AgentState.SCHEDULED.value}' or Agent eq '{AgentState.DEPLOYING.value}' or "
                 f"(Agent eq '{AgentState.NOT_ADMITTED.value}' and RetryAt ne '')")
        raw, following = query_page(self._t, query, size, continuation)
        rows, bad = read_rows(raw, self._meeting, "meeting")
        for meeting in rows:
            written, _ = self._index(meeting)
            if written.due_index != meeting.due_index:
                try:  # the meeting row records where its index row is (erasure deletes it from there)
                    self._t.update_entity({"PartitionKey": user_key(meeting.user_id), "RowKey": meeting.key,
                                           "DueIndex": written.due_index, "DueIndexETag": written.due_index_etag},
                                          mode=UpdateMode.MERGE,
                                          etag=meeting.etag, match_condition=MatchConditions.IfNotModified)
                except (ResourceModifiedError, ResourceNotFoundError):
                    pass  # written meanwhile: that write placed its own index row
        return WalkStep(len(raw), len(rows), following, bad)

    def _index(self, meeting: Meeting) -> tuple[Meeting, str | None]:
        """The meeting's index row written (before the meeting row that needs it); the meeting with
        the index row's place (`due_index`), which its row then records, and the index row's ETag."""
        due = awaiting_since(meeting)
        if due is None:
            return replace(meeting, due_index="", due_index_etag=""), None
        row = {"PartitionKey": _minute(due), "RowKey": due_row_key(meeting.user_id, meeting.key),
               "UserId": meeting.user_id, "MeetingKey": meeting.key, "Due": _iso(due)}
        meta = self._due.upsert_entity(row, mode=UpdateMode.REPLACE)
        etag = meta.get("etag")
        return replace(meeting, due_index=_minute(due), due_index_etag=str(etag or "")), etag

    def _abandon(self, written: Meeting, index_etag: str | None) -> None:
        """The meeting write failed: the index row written for it goes unless the meeting row as it is
        now names it (an erasure or a removal that won the race leaves no row naming the user behind).
        Conditional on the ETag it was written with: a row written again since is someone else's."""
        if not written.due_index or index_etag is None:
            return
        try:
            current = self.get(written.user_id, written.key)
            if current is not None and current.due_index == written.due_index:
                return
            self._due.delete_entity(written.due_index, due_row_key(written.user_id, written.key), etag=index_etag,
                                    match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        except (HttpResponseError, KeyError, ValueError, TypeError) as exc:
            log.warning("meetings-due row left for the watchdog to drop: %s", type(exc).__name__,
                        extra={"meeting_id": written.key})

    def _unindex(self, former: Meeting, due_index: str) -> None:
        """A former index row of the meeting, once its row no longer names it (best effort: a row left
        behind names a meeting that no longer waits there, and the watchdog drops it when it reads it).
        Conditional on the ETag the former version recorded: a concurrent write that moved the meeting
        back to that minute has written the row again since, and it stays (rows from before ETags
        were recorded are deleted unconditionally)."""
        key = due_row_key(former.user_id, former.key)
        try:
            if former.due_index_etag:
                self._due.delete_entity(due_index, key, etag=former.due_index_etag,
                                        match_condition=MatchConditions.IfNotModified)
            else:
                self._due.delete_entity(due_index, key)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass  # written again for a version that waits there again (kept), or gone already
        except HttpResponseError as exc:
            log.warning("meetings-due row left for the watchdog to drop: %s", type(exc).__name__,
                        extra={"meeting_id": former.key})

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[Meeting]:
        # A filtered scan across partitions; End is stored as isoformat() in UTC, so string order is time order.
        raw, following = query_page(self._t, f"End lt '{_quote(_iso(cutoff))}'", size, continuation)
        rows, bad = read_rows(raw, self._meeting, "meeting")
        return Page(rows, following, bad)

    @staticmethod
    def _entity(m: Meeting) -> dict[str, Any]:
        return {
            "PartitionKey": user_key(m.user_id), "RowKey": m.key, "LinkKey": m.link_key, "Title": m.title,
            "Start": _iso(m.start), "End": _iso(m.end), "Platform": m.platform, "JoinUrl": m.join_url,
            "Sources": json.dumps([_source_row(s) for s in m.sources]),
            "Agent": m.agent.value if m.agent else "", "DeployAt": _iso(m.deploy_at),
            "EnqueuedFor": _iso(m.enqueued_for), "FailureReason": m.failure_reason or "",
            "LeaseUntil": _iso(m.lease_until), "AgentId": m.agent_id or "", "EnqueuedAt": _iso(m.enqueued_at),
            "Recalls": m.recalls, "AgentAttempt": m.agent_attempt, "AgentSince": _iso(m.agent_since),
            "WaitingSince": _iso(m.waiting_since), "RetryAt": _iso(m.retry_at), "NudgedAttempt": m.nudged_attempt,
            "AtRisk": m.at_risk or "",
            "RecallQueuedAt": _iso(m.recall_queued_at), "DueIndex": m.due_index, "DueIndexETag": m.due_index_etag,
        }

    @staticmethod
    def _meeting(e: Any) -> Meeting:
        return Meeting(
            user_id=user_id_of(e["PartitionKey"]), key=e["RowKey"], link_key=e["LinkKey"], title=e["Title"],
            start=_required_dt(e["Start"]), end=_required_dt(e["End"]), platform=e["Platform"],
            join_url=e["JoinUrl"], sources=tuple(map(_source, json.loads(e["Sources"]))),
            agent=AgentState(e["Agent"]) if e.get("Agent") else None, deploy_at=_dt(e.get("DeployAt")),
            enqueued_for=_dt(e.get("EnqueuedFor")), failure_reason=e.get("FailureReason") or None,
            lease_until=_dt(e.get("LeaseUntil")), etag=e.metadata.get("etag"),
            agent_id=e.get("AgentId") or None, enqueued_at=_dt(e.get("EnqueuedAt")),
            recalls=int(e.get("Recalls") or 0), agent_attempt=int(e.get("AgentAttempt") or 0),
            agent_since=_dt(e.get("AgentSince")), waiting_since=_dt(e.get("WaitingSince")),
            retry_at=_dt(e.get("RetryAt")), nudged_attempt=int(e.get("NudgedAttempt") or 0),
            at_risk=e.get("AtRisk") or None,
            recall_queued_at=_dt(e.get("RecallQueuedAt")), due_index=str(e.get("DueIndex") or ""),
            due_index_etag=str(e.get("DueIndexETag") or ""),
        )


def _column(rule: str) -> str:
    """private_events -> PrivateEvents"""
    return "".join(part.capitalize() for part in rule.split("_"))


def _source_row(s: Source) -> list[Any]:
    return [s.connection_id, s.event_id, s.email, s.response.value, s.external, s.series_id, s.calendar_id,
            s.ical, list(s.links), s.private, s.solo, s.all_day, s.free]


def _source(row: list[Any]) -> Source:
    """Rows written before the join facts were kept hold [connection, event, email] only; rows written
    before calendars could be chosen hold no calendar (the default one); before meeting identities and
    the privacy facts were kept, the first six or seven."""
    if len(row) < 6:
        return Source(*row[:3])
    base = Source(row[0], row[1], row[2], Response(row[3]), bool(row[4]), row[5] or None,
                  (row[6] or None) if len(row) > 6 else None)
    if len(row) < 13:
        return base
    links = tuple(str(x) for x in row[8]) if isinstance(row[8], list) else ()
    return replace(base, ical=row[7] or None, links=links, private=bool(row[9]), solo=bool(row[10]),
                   all_day=bool(row[11]), free=bool(row[12]))


def _event_row(event_id: str) -> str:
    # Graph ids may hold characters RowKey forbids ('/', '+'); the id itself is kept as a property.
    return hashlib.sha256(event_id.encode()).hexdigest()[:40]


class TableEventIndex:
    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, connection_id: str, event_id: str) -> str | None:
        try:
            return str(self._t.get_entity(connection_id, _event_row(event_id))["MeetingKey"])
        except ResourceNotFoundError:
            return None

    def put(self, connection_id: str, event_id: str, user_id: str, meeting_key: str, generation: str) -> None:
        self._t.upsert_entity({"PartitionKey": connection_id, "RowKey": _event_row(event_id), "EventId": event_id,
                               "UserId": user_id, "MeetingKey": meeting_key, "Generation": generation},
                              mode=UpdateMode.REPLACE)

    def remove(self, connection_id: str, event_id: str) -> None:
        try:
            self._t.delete_entity(connection_id, _event_row(event_id))
        except ResourceNotFoundError:
            pass

    def all_for(self, connection_id: str, not_generation: str | None = None) -> dict[str, str]:
        rows = self._t.query_entities(f"PartitionKey eq '{_quote(connection_id)}'")
        return {e["EventId"]: e["MeetingKey"] for e in rows
                if not_generation is None or e.get("Generation") != not_generation}


class TableSyncStateStore:
    """One row per connection: the delta cursor and the lease of the sync run holding it, written
    with the row's ETag so two syncs of one connection never interleave."""

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, connection_id: str) -> SyncState | None:
        try:
            if not _key_ok(connection_id):
                return None
            e = self._t.get_entity(connection_id, "state")
        except ResourceNotFoundError:
            return None
        return SyncState(
            connection_id=connection_id, window_start=_required_dt(e["WindowStart"]),
            window_end=_required_dt(e["WindowEnd"]), delta_link=e.get("DeltaLink") or None,
            full_sync_at=_dt(e.get("FullSyncAt")), resume_link=e.get("ResumeLink") or None,
            synced_at=_dt(e.get("SyncedAt")), user_id=str(e.get("UserId") or ""),
            generation=e.get("Generation", ""), lease_owner=e.get("LeaseOwner", ""),
            lease_until=_dt(e.get("LeaseUntil")), etag=e.metadata.get("etag"),
        )

    def put(self, state: SyncState) -> SyncState:
        entity = {
            "PartitionKey": state.connection_id, "RowKey": "state", "WindowStart": _iso(state.window_start),
            "WindowEnd": _iso(state.window_end), "DeltaLink": state.delta_link or "",
            "FullSyncAt": _iso(state.full_sync_at), "ResumeLink": state.resume_link or "",
            "SyncedAt": _iso(state.synced_at), "UserId": state.user_id,
            "Generation": state.generation, "LeaseOwner": state.lease_owner, "LeaseUntil": _iso(state.lease_until),
        }
        return replace(state, etag=_put_conditional(self._t, entity, state.etag))

    def remove(self, connection_id: str) -> None:
        for row in ("state", _QUEUED_ROW, _ANNOUNCED_ROW):
            try:
                self._t.delete_entity(connection_id, row)
            except ResourceNotFoundError:
                pass

    def mark_queued(self, connection_id: str, now: datetime, ttl: timedelta) -> bool:
        """A row of its own beside the state row (not a field of it): writing it never changes the
        state row's ETag, so it cannot make a running sync lose its lease. Insert fails when one
        exists; an old one (its job lost) is replaced conditionally, so one caller wins."""
        entity = {"PartitionKey": connection_id, "RowKey": _QUEUED_ROW, "QueuedAt": _iso(now)}
        try:
            self._t.create_entity(entity)
            return True
        except ResourceExistsError:
            pass
        try:
            current = self._t.get_entity(connection_id, _QUEUED_ROW)
            if (_dt(current.get("QueuedAt")) or now) > now - ttl:
                return False
            self._t.update_entity(entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return False  # cleared or re-marked meanwhile by someone else: that one enqueues
        return True

    def clear_queued(self, connection_id: str) -> None:
        try:
            self._t.delete_entity(connection_id, _QUEUED_ROW)
        except ResourceNotFoundError:
            pass

    def touch_queued(self, connection_id: str, now: datetime) -> None:
        if not _key_ok(connection_id):
            return
        self._t.upsert_entity({"PartitionKey": connection_id, "RowKey": _QUEUED_ROW, "QueuedAt": _iso(now)},
                              mode=UpdateMode.REPLACE)

    def announce(self, connection_id: str, at: datetime) -> None:
        if not _key_ok(connection_id):
            return
        self._t.upsert_entity({"PartitionKey": connection_id, "RowKey": _ANNOUNCED_ROW, "At": _iso(at)},
                              mode=UpdateMode.REPLACE)

    def announced(self, connection_id: str) -> datetime | None:
        if not _key_ok(connection_id):
            return None
        try:
            return _dt(self._t.get_entity(connection_id, _ANNOUNCED_ROW).get("At"))
        except ResourceNotFoundError:
            return None


class TableCalendarSelectionStore:
    """The `calendars` table: one row per connection (PartitionKey the connection id, RowKey
    `selection`, `UserId` the user): which of the account's calendars are read, as one JSON list, so a
    choice is written with one conditional replace (two concurrent choices cannot both leave the
    connection without a calendar)."""

    _ROW = "selection"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, connection_id: str) -> CalendarSelection | None:
        if not _key_ok(connection_id):
            return None
        try:
            e = self._t.get_entity(connection_id, self._ROW)
        except ResourceNotFoundError:
            return None
        calendars = tuple(CalendarChoice(id=str(c["id"]), name=str(c.get("name") or ""),
                                         is_default=bool(c.get("default")), selected=bool(c.get("selected")),
                                         agent_name=c.get("agent_name") or None)
                          for c in json.loads(e.get("Calendars") or "[]"))
        return CalendarSelection(connection_id=connection_id, user_id=str(e.get("UserId") or ""),
                                 calendars=calendars, etag=e.metadata.get("etag"))

    def put(self, selection: CalendarSelection) -> CalendarSelection:
        entity = {
            "PartitionKey": selection.connection_id, "RowKey": self._ROW, "UserId": selection.user_id,
            "Calendars": json.dumps([{"id": c.id, "name": c.name, "default": c.is_default, "selected": c.selected,
                                      "agent_name": c.agent_name} for c in selection.calendars]),
        }
        return replace(selection, etag=_put_conditional(self._t, entity, selection.etag))

    def remove(self, connection_id: str) -> None:
        try:
            self._t.delete_entity(connection_id, self._ROW)
        except ResourceNotFoundError:
            pass


class TableTeamClaimsStore:
    """The `autojoin` table, RowKey `workspace` in the user's partition: the workspace claims of the
    user's most recent authenticated request (erased with the user's partition)."""

    _ROW = "workspace"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, user_id: str) -> TeamClaims | None:
        try:
            e = self._t.get_entity(user_key(user_id), self._ROW)
        except ResourceNotFoundError:
            return None
        return TeamClaims(user_id, e.get("Workspace") or None, bool(e.get("Dedupe")), str(e.get("Email") or user_id))

    def put(self, claims: TeamClaims) -> None:
        self._t.upsert_entity({"PartitionKey": user_key(claims.user_id), "RowKey": self._ROW,
                               "Workspace": claims.workspace or "", "Dedupe": claims.dedupe, "Email": claims.email},
                              mode=UpdateMode.REPLACE)


class TableWorkspaceMeetingStore:
    """The `workspacemeetings` table: PartitionKey a hash of the workspace id (any characters allowed),
    RowKey the workspace meeting key; written with the row's ETag. No `UserId`: a row serves several
    users (shared.services.teams hands a user's part over on disconnect and erasure)."""

    def __init__(self, table: TableClient) -> None:
        self._t = table

    @staticmethod
    def _partition(workspace: str) -> str:
        return hashlib.sha256(workspace.encode()).hexdigest()[:40]

    def get(self, workspace: str, key: str) -> WorkspaceMeeting | None:
        if not _key_ok(key):
            return None
        try:
            e = self._t.get_entity(self._partition(workspace), key)
        except ResourceNotFoundError:
            return None
        return self._row(workspace, e)

    @staticmethod
    def _row(workspace: str, e: Any) -> WorkspaceMeeting:
        members = tuple(Teammate(str(m[0]), str(m[1])) for m in json.loads(e.get("Members") or "[]"))
        return WorkspaceMeeting(workspace=workspace, key=str(e["RowKey"]), owner=e.get("Owner") or "", members=members,
                                live_user=e.get("LiveUser") or "", live_agent=e.get("LiveAgent") or "",
                                handovers=int(e.get("Handovers") or 0), end=_dt(e.get("End")),
                                etag=e.metadata.get("etag"))

    def put(self, meeting: WorkspaceMeeting) -> WorkspaceMeeting:
        entity = {"PartitionKey": self._partition(meeting.workspace), "RowKey": meeting.key,
                  "Workspace": meeting.workspace, "End": _iso(meeting.end),
                  "Owner": meeting.owner, "Members": json.dumps([[m.user_id, m.email] for m in meeting.members]),
                  "LiveUser": meeting.live_user, "LiveAgent": meeting.live_agent, "Handovers": meeting.handovers}
        return replace(meeting, etag=_put_conditional(self._t, entity, meeting.etag))

    def ended_before(self, cutoff: datetime) -> Iterator[WorkspaceMeeting]:
        # A filtered scan across partitions, a page (1,000 rows) per request; End is isoformat() in
        # UTC, so string order is time order ("" on no row the service writes, excluded anyway).
        query = f"End lt '{_quote(_iso(cutoff))}' and End gt ''"
        for e in self._t.query_entities(query, results_per_page=1000):
            workspace = str(e.get("Workspace") or "")
            if workspace and self._partition(workspace) == e["PartitionKey"]:
                yield self._row(workspace, e)

    def ended_page(self, cutoff: datetime, continuation: str | None, size: int) -> Page[WorkspaceMeeting]:
        raw, following = query_page(self._t, f"End lt '{_quote(_iso(cutoff))}' and End gt ''", size, continuation)
        mine = [e for e in raw if e.get("Workspace") and self._partition(str(e["Workspace"])) == e["PartitionKey"]]
        rows, bad = read_rows(mine, lambda e: self._row(str(e["Workspace"]), e), "workspace meeting")
        return Page(rows, following, bad)

    def delete(self, meeting: WorkspaceMeeting) -> None:
        try:
            self._t.delete_entity(self._partition(meeting.workspace), meeting.key, etag=meeting.etag,
                                  match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            raise Conflict(meeting.key) from None
        except ResourceNotFoundError:
            pass


class TableAppRefusals:
    """The `apprefusals` table: one row per tenant whose token requests Microsoft refused because the
    app is disabled or missing there (PartitionKey "tenant", RowKey the tenant id), with the code and
    when it was last seen. Rows older than the window no longer count; they are overwritten when the
    tenant is refused again (a handful of rows: one per refusing tenant)."""

    _PARTITION = "tenant"
    WINDOW = timedelta(hours=1)

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def record(self, tenant_id: str, code: str, now: datetime) -> int:
        if not tenant_id or _BAD_KEY.search(tenant_id):
            return 1
        self._t.upsert_entity({"PartitionKey": self._PARTITION, "RowKey": tenant_id, "Code": code[:40],
                               "LastSeen": _iso(now)}, mode=UpdateMode.REPLACE)
        since = now - self.WINDOW
        rows = self._t.query_entities(f"PartitionKey eq '{self._PARTITION}'", select=["RowKey", "LastSeen"])
        recent = {e["RowKey"] for e in rows if (seen := _dt(e.get("LastSeen"))) is not None and seen >= since}
        return len(recent | {tenant_id})


class TableJoinRulesStore:
    """The `autojoin` table: one partition per user; RowKey `rules` holds the join rules, `o~<hash>`
    one per-meeting choice (the hash of its kind, connection and target: Graph ids may hold characters
    RowKey forbids). A user's choices for one meeting are written in one entity-group transaction
    (same partition, at most 100 operations:
    https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions)."""

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get_rules(self, user_id: str) -> JoinRules | None:
        try:
            e = self._t.get_entity(user_key(user_id), "rules")
        except ResourceNotFoundError:
            return None
        lead = e.get("JoinLeadSeconds")
        # A newer rule's column is written only once the user has set it: a row without it (stored
        # before the rule existed, or never set) reads the default, and is not `explicit`.
        newer = {name: EventChoice(e[_column(name)]) for name in NEWER_RULES
                 if str(e.get(_column(name)) or "") in EventChoice._value2member_map_}
        return JoinRules(
            responses=frozenset(Response(v) for v in str(e["Responses"]).split(",") if v),
            external_invites=ExternalInvites(e["ExternalInvites"]),
            platforms=frozenset(Platform(v) for v in str(e["Platforms"]).split(",") if v),
            join_lead_seconds=int(lead) if lead is not None and lead != "" else None,
            agent_name=e.get("AgentName") or None,
            explicit=frozenset(newer), **newer,
        )

    def put_rules(self, user_id: str, rules: JoinRules) -> None:
        shape = rules.as_json()
        self._t.upsert_entity({
            "PartitionKey": user_key(user_id), "RowKey": "rules", "Responses": ",".join(shape["responses"]),
            "ExternalInvites": shape["external_invites"], "Platforms": ",".join(shape["platforms"]),
            **({"JoinLeadSeconds": rules.join_lead_seconds} if rules.join_lead_seconds is not None else {}),
            **({"AgentName": rules.agent_name} if rules.agent_name is not None else {}),
            **{_column(name): shape[name] for name in NEWER_RULES if name in rules.explicit},
        }, mode=UpdateMode.REPLACE)

    def overrides(self, user_id: str) -> list[StoredOverride]:
        rows = self._t.query_entities(
            f"PartitionKey eq '{_quote(user_key(user_id))}' and RowKey gt 'o~' and RowKey lt 'o~~'")
        return [StoredOverride(
            connection_id=e["ConnectionId"], target_id=e["TargetId"], series=bool(e["Series"]), join=bool(e["Join"]),
            set_at=_required_dt(e["SetAt"]), series_id=e.get("SeriesId") or None, until=_dt(e.get("Until")),
        ) for e in rows]

    def put_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        operations: list[Any] = [("upsert", {
            "PartitionKey": user_key(user_id), "RowKey": _override_row(o), "ConnectionId": o.connection_id,
            "TargetId": o.target_id, "Series": o.series, "Join": o.join, "SetAt": _iso(o.set_at),
            "SeriesId": o.series_id or "", "Until": _iso(o.until),
        }, {"mode": UpdateMode.REPLACE}) for o in overrides]
        for start in range(0, len(operations), 100):
            self._t.submit_transaction(operations[start:start + 100])

    def remove_overrides(self, user_id: str, overrides: list[StoredOverride]) -> None:
        for o in overrides:
            try:
                self._t.delete_entity(user_key(user_id), _override_row(o))
            except ResourceNotFoundError:
                pass


def _override_row(o: StoredOverride) -> str:
    kind = "series" if o.series else "occurrence"
    digest = hashlib.sha256(f"{kind}\n{o.connection_id}\n{o.target_id}".encode()).hexdigest()[:40]
    return f"o~{digest}"


class TableSubscriptionStore:
    """The `subscriptions` table: one row per connection (PartitionKey the connection id, RowKey
    "graph"), with the user id, Graph's subscription id and expiry, and the Key Vault name of its
    clientState secret (`SecretName`, so erasure deletes that secret with the rest). Conditional
    writes (ETag) so a renewal never overwrites a recreated subscription."""

    _ROW = "graph"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, connection_id: str) -> Subscription | None:
        try:
            if not _key_ok(connection_id):
                return None
            return self._subscription(self._t.get_entity(connection_id, self._ROW))
        except ResourceNotFoundError:
            return None

    def put(self, subscription: Subscription) -> Subscription:
        entity = {
            "PartitionKey": subscription.connection_id, "RowKey": self._ROW, "UserId": subscription.user_id,
            "SubscriptionId": subscription.subscription_id, "ExpiresAt": _iso(subscription.expires_at),
            "SecretName": subscription.secret_name, "CreatedAt": _iso(subscription.created_at),
            "AuthorizedUntil": _iso(subscription.authorized_until),
        }
        return replace(subscription, etag=_put_conditional(self._t, entity, subscription.etag))

    def remove(self, subscription: Subscription) -> None:
        try:
            self._t.delete_entity(subscription.connection_id, self._ROW)
        except ResourceNotFoundError:
            pass

    def all(self) -> Iterator[Subscription]:
        for e in self._t.query_entities(f"RowKey eq '{self._ROW}'"):
            yield self._subscription(e)

    def page(self, continuation: str | None, size: int) -> Page[Subscription]:
        raw, following = query_page(self._t, f"RowKey eq '{self._ROW}'", size, continuation)
        rows, bad = read_rows(raw, self._subscription, "subscription")
        return Page(rows, following, bad)

    @staticmethod
    def _subscription(e: Any) -> Subscription:
        return Subscription(
            connection_id=e["PartitionKey"], user_id=e["UserId"], subscription_id=e["SubscriptionId"],
            expires_at=_required_dt(e["ExpiresAt"]), secret_name=e["SecretName"],
            created_at=_required_dt(e["CreatedAt"]), etag=e.metadata.get("etag"),
            authorized_until=_dt(e.get("AuthorizedUntil")),
        )


class TableDataKeys:
    """The `datakeys` table: PartitionKey "datakey", RowKey the data key id (sortable by creation)."""

    _PARTITION = "datakey"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def all(self) -> list[WrappedDataKey]:
        return [self._key(e) for e in self._t.query_entities(f"PartitionKey eq '{self._PARTITION}'")]

    def get(self, data_key_id: str) -> WrappedDataKey | None:
        if not _key_ok(data_key_id):
            return None
        try:
            return self._key(self._t.get_entity(self._PARTITION, data_key_id))
        except ResourceNotFoundError:
            return None

    def create(self, key: WrappedDataKey) -> None:
        self._t.create_entity(self._entity(key))

    def replace(self, key: WrappedDataKey) -> None:
        if key.etag is None:
            raise Conflict(key.id)  # only a row read from the table is replaced
        _put_conditional(self._t, self._entity(key), key.etag)

    def _entity(self, key: WrappedDataKey) -> dict[str, Any]:
        return {"PartitionKey": self._PARTITION, "RowKey": key.id, "KeyId": key.key_id, "WrappedKey": key.wrapped,
                "CreatedAt": _iso(key.created_at)}

    @staticmethod
    def _key(e: Any) -> WrappedDataKey:
        return WrappedDataKey(id=e["RowKey"], key_id=e["KeyId"], wrapped=bytes(e["WrappedKey"]),
                              created_at=_required_dt(e["CreatedAt"]), etag=e.metadata.get("etag"))


class TableSealedSecrets:
    """The `sealedsecrets` table: PartitionKey the secret's name (one partition per token cache, so
    writes spread over the account), RowKey "sealed". Binary properties are capped at 64 KiB by Table
    Storage; a larger value is refused with RowTooLarge before anything is written."""

    _ROW = "sealed"

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def get(self, name: str) -> SealedRow | None:
        if not _key_ok(name):
            return None
        try:
            return self._row(self._t.get_entity(name, self._ROW))
        except ResourceNotFoundError:
            return None

    def put(self, row: SealedRow) -> None:
        self._t.upsert_entity(self._entity(row), mode=UpdateMode.REPLACE)

    def create(self, row: SealedRow) -> bool:
        try:
            self._t.create_entity(self._entity(row))
            return True
        except ResourceExistsError:
            return False

    def delete(self, name: str) -> None:
        if _key_ok(name):
            self._t.delete_entity(name, self._ROW)  # absent: nothing (the SDK ignores 404 on delete)

    _LISTED = ["PartitionKey", "DataKeyId", "UpdatedAt", "Owner"]

    def list(self, prefix: str) -> Iterator[SealedRow]:
        for e in self._t.query_entities(self._prefixed(prefix), select=self._LISTED):
            yield self._listed(e)

    def page(self, prefix: str, continuation: str | None, size: int) -> Page[SealedRow]:
        """The names, owners and write times (never the ciphertext) of at most `size` rows."""
        raw, following = query_page(self._t, self._prefixed(prefix), size, continuation, select=self._LISTED)
        rows, bad = read_rows(raw, self._listed, "sealed secret")
        return Page(rows, following, bad)

    def adopt(self, name: str, owner: str) -> None:
        """Merge `Owner` into the row (nothing else changes; a missing row is not created)."""
        if not _key_ok(name) or not owner:
            return
        try:
            self._t.update_entity({"PartitionKey": name, "RowKey": self._ROW, "Owner": owner}, mode=UpdateMode.MERGE)
        except ResourceNotFoundError:
            pass

    @staticmethod
    def _prefixed(prefix: str) -> str:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return f"PartitionKey ge '{_quote(prefix)}' and PartitionKey lt '{_quote(upper)}'"

    @staticmethod
    def _listed(e: Any) -> SealedRow:
        return SealedRow(e["PartitionKey"], e.get("DataKeyId", ""), b"", b"", _required_dt(e["UpdatedAt"]),
                         owner=str(e.get("Owner") or ""))

    def _entity(self, row: SealedRow) -> dict[str, Any]:
        if len(row.ciphertext) > 64 * 1024:
            raise RowTooLarge("PropertyValueTooLarge")
        return {"PartitionKey": row.name, "RowKey": self._ROW, "DataKeyId": row.data_key_id, "Nonce": row.nonce,
                "Ciphertext": row.ciphertext, "UpdatedAt": _iso(row.updated_at), "Owner": row.owner}

    @staticmethod
    def _row(e: Any) -> SealedRow:
        return SealedRow(name=e["PartitionKey"], data_key_id=e["DataKeyId"], nonce=bytes(e["Nonce"]),
                         ciphertext=bytes(e["Ciphertext"]), updated_at=_required_dt(e["UpdatedAt"]),
                         owner=str(e.get("Owner") or ""))


class TableAgentTries:
    """The `agenttries` table: each try's deployment by its idempotency key (PartitionKey `k~<key>`,
    a SHA-256 hex) and by the agent id the agent API gave it (`a~<hash of the id>`: ids are the
    platform's and may hold characters keys forbid), RowKey "try", with `UserId` (erasure finds them)
    and the meeting key; and the `webhook-id`s of agent statuses taken (`w~<hash>`, RowKey "seen"), so
    a replayed status changes nothing."""

    def __init__(self, table: TableClient) -> None:
        self._t = table

    def put(self, entry: AgentTry) -> None:
        row = {"RowKey": "try", "UserId": entry.user_id, "MeetingKey": entry.meeting_key, "Attempt": entry.attempt,
               "IdempotencyKey": entry.idempotency_key, "AgentId": entry.agent_id or "",
               "SeenAt": _iso(datetime.now(UTC))}
        self._t.upsert_entity({**row, "PartitionKey": _hashed("k", entry.idempotency_key)}, mode=UpdateMode.REPLACE)
        if entry.agent_id:
            self._t.upsert_entity({**row, "PartitionKey": _hashed("a", entry.agent_id)}, mode=UpdateMode.REPLACE)

    def by_key(self, idempotency_key: str) -> AgentTry | None:
        return self._get(_hashed("k", idempotency_key))

    def by_agent(self, agent_id: str) -> AgentTry | None:
        return self._get(_hashed("a", agent_id))

    def remember_webhook(self, webhook_id: str, at: datetime) -> bool:
        try:
            self._t.create_entity({"PartitionKey": _hashed("w", webhook_id), "RowKey": "seen", "SeenAt": _iso(at)})
        except ResourceExistsError:
            return False
        return True

    def prune(self, tries_before: datetime, webhooks_before: datetime) -> int:
        """Forget tries stored before `tries_before` (their meetings are long over) and webhook ids
        seen before `webhooks_before` (a replay that old fails its timestamp check anyway). One scan of
        the table; returns how many rows went."""
        gone = 0
        for e in self._t.query_entities(f"SeenAt lt '{_quote(_iso(max(tries_before, webhooks_before)))}'",
                                        select=["PartitionKey", "RowKey", "SeenAt"]):
            seen = _dt(e.get("SeenAt"))
            cutoff = webhooks_before if str(e["PartitionKey"]).startswith("w~") else tries_before
            if seen is not None and seen < cutoff:
                self._t.delete_entity(e["PartitionKey"], e["RowKey"])
                gone += 1
        return gone

    def prune_page(self, tries_before: datetime, webhooks_before: datetime, continuation: str | None,
                   size: int) -> tuple[int, int, str | None]:
        """One page of `prune`: (rows read, rows deleted, continuation; None when the walk is over).
        A row that cannot be deleted is logged (`walk_row_failed`) and left for the next day's walk."""
        query = f"SeenAt lt '{_quote(_iso(max(tries_before, webhooks_before)))}'"
        raw, following = query_page(self._t, query, size, continuation, select=["PartitionKey", "RowKey", "SeenAt"])
        gone = 0
        for e in raw:
            seen = _dt(e.get("SeenAt"))
            cutoff = webhooks_before if str(e["PartitionKey"]).startswith("w~") else tries_before
            if seen is None or seen >= cutoff:
                continue
            try:
                self._t.delete_entity(e["PartitionKey"], e["RowKey"])
                gone += 1
            except HttpResponseError as exc:
                log.error("agent try not pruned: %s", type(exc).__name__,
                          extra={"table_partition": str(e["PartitionKey"]), "event": "walk_row_failed"})
        return len(raw), gone, following

    def webhook_seen(self, webhook_id: str) -> bool:
        try:
            self._t.get_entity(_hashed("w", webhook_id), "seen")
        except ResourceNotFoundError:
            return False
        return True

    def _get(self, partition: str) -> AgentTry | None:
        try:
            e = self._t.get_entity(partition, "try")
        except ResourceNotFoundError:
            return None
        return AgentTry(user_id=e["UserId"], meeting_key=e["MeetingKey"], attempt=int(e["Attempt"]),
                        idempotency_key=e["IdempotencyKey"], agent_id=e.get("AgentId") or None)


def _hashed(kind: str, value: str) -> str:
    return f"{kind}~{hashlib.sha256(value.encode()).hexdigest()[:48]}"
