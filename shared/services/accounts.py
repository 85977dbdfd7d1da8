"""Keeping connections alive: background token refresh, silent access for sync, disconnect."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from shared.clock import Clock
from shared.connections import (
    REASONS,
    TENANT_SCOPED_APP_CODES,
    Connection,
    FixedBy,
    Reason,
    TenantScope,
    classify_token_error,
)
from shared.ports import (
    AccessToken,
    AppRefusals,
    CalendarSelectionStore,
    Conflict,
    ConnectionStore,
    EventIndex,
    IdentityProvider,
    MeetingStore,
    RefreshJob,
    SecretStore,
    SyncStateStore,
    TokenError,
)
from shared.services.health import ConnectionHealth
from shared.services.meetings import ANY_CALENDAR, detach_calendar, forget_events

log = logging.getLogger(__name__)


class ConnectionUnusable(Exception):
    """The connection cannot get a token now (it is in error, or the failure was transient)."""


class TokenKeeper:
    """The one path to a connection's access token, used by the refresh timer and by sync.

    Failures are classified by who can fix them (shared.connections.classify_token_error): the user
    or their admin → Error with a reason, and the user is told (ConnectionHealth); the service's own
    credentials → stays Active with a warning shown at once, an `app_identity_failure` error logged
    for operators, and no user event; Microsoft unreachable / 5xx → stays Active, retried at the next
    run. Neither of the last two backs off per connection, so recovery shows at the first run after
    the cause is gone."""

    def __init__(
        self, *, connections: ConnectionStore, identity: IdentityProvider, secrets_store: SecretStore, clock: Clock,
        health: ConnectionHealth, refusals: AppRefusals | None = None, home_tenant_id: str = "",
    ) -> None:
        self._connections = connections
        self._identity = identity
        self._secrets = secrets_store
        self._clock = clock
        self._health = health
        self._refusals = refusals
        self._home_tenant_id = home_tenant_id

    def access_token(self, conn: Connection, *, force_refresh: bool = False) -> tuple[Connection, AccessToken]:
        """Raises ConnectionUnusable with the failure class ("service", "transient") or the reason code."""
        cache = self._secrets.get(conn.secret_name)
        if cache is None:
            current = self._connections.get(conn.user_id, conn.id)
            if current is None or current.secret_name != conn.secret_name:
                # Disconnected (its cache deleted with it) or reconnected (a new cache) since this
                # caller read it: nothing failed, and the user is told nothing.
                raise Conflict(conn.id)
            self._fail(conn, REASONS["refresh_failed"], "cache_missing")
            raise ConnectionUnusable("refresh_failed")
        result = self._identity.acquire(cache, conn.home_account_id, force_refresh=force_refresh)
        now = self._clock.now()
        if isinstance(result, TokenError):
            failure = classify_token_error(result.error, result.description, result.error_codes, result.suberror,
                                           scope=self._scope(conn, result, now))
            if failure.reason is None:
                # Not the user's: stay active, keep the cache, try again at the next run.
                self._connections.update(conn.transiently_failed(now, failure))
                if failure.fixed_by is FixedBy.SERVICE:
                    log.error("app_identity_failure: the service's own credentials were refused (%s)", failure.code,
                              extra={"connection_id": conn.id, "failure_code": failure.code,
                                     "event": "app_identity_failure"})
                else:
                    log.warning("token refresh failed transiently: %s", failure.code,
                                extra={"connection_id": conn.id, "failure_code": failure.code})
                raise ConnectionUnusable(failure.fixed_by.value)
            self._fail(conn, failure.reason, failure.code)
            raise ConnectionUnusable(failure.reason.code)
        if result.cache is not None:
            current = self._connections.get(conn.user_id, conn.id)
            if current is None or current.secret_name != conn.secret_name:
                # Disconnected, erased or reconnected while Microsoft answered: writing now would bring
                # a deleted token cache back (Key Vault re-creates a purged name) or clobber the new one.
                raise ConnectionUnusable("disconnected")
            self._secrets.set(conn.secret_name, result.cache, owner=conn.user_id)
        updated = conn
        # Only a token Microsoft just issued proves a recovery: one served from MSAL's cache says
        # nothing about whether the refresh token (or our own credentials) work again.
        if force_refresh or result.cache is not None:
            updated = self._connections.update(conn.refreshed(now, result.expires_at))  # with its new ETag
        return updated, result

    def _scope(self, conn: Connection, error: TokenError, now: datetime) -> TenantScope | None:
        """Where the refusal came from, for the codes whose owner depends on it (the app disabled or
        missing in a tenant): this tenant's refusal is remembered, and counted with the others'."""
        code = next((c for c in error.error_codes if c in TENANT_SCOPED_APP_CODES), None)
        if code is None or self._refusals is None:
            return None
        try:
            refusing = self._refusals.record(conn.tenant_id, f"AADSTS{code}", now)
        except Exception as exc:  # not knowing how widespread it is: the service's failure, as before
            log.warning("app refusals not recorded: %s", type(exc).__name__, extra={"connection_id": conn.id})
            return None
        return TenantScope(conn.tenant_id, self._home_tenant_id, refusing)

    def parting_token(self, conn: Connection) -> str | None:
        """An access token for one last call on the connection's behalf as it goes (deleting its Graph
        subscription): nothing is written and nobody is told, whatever happens; None when none can
        be had (the cache is about to be deleted, so a refreshed one is not kept)."""
        cache = self._secrets.get(conn.secret_name)
        if cache is None:
            return None
        result = self._identity.acquire(cache, conn.home_account_id, force_refresh=False)
        return None if isinstance(result, TokenError) else result.token

    def _fail(self, conn: Connection, reason: Reason, code: str) -> None:
        self._health.fail(conn, reason, code=code)

    def refresh_one(self, job: RefreshJob) -> str:
        conn = self._connections.get(job.user_id, job.connection_id)
        if conn is not None and not conn.is_active:
            try:
                return "told" if self._health.retell(conn) else "skipped"
            except Conflict:
                return "raced"
        if conn is None:
            return "skipped"
        try:
            self.access_token(conn, force_refresh=True)
        except ConnectionUnusable as exc:
            return {"transient": "transient", "service": "service_failure"}.get(str(exc), "failed")
        except Conflict:
            # The row changed since it was read (a reconnect, a disconnect, another refresh): that
            # write stands, this one is dropped (ETag), and the next run starts from the new row.
            return "raced"
        return "refreshed"


class AccountsService:
    def __init__(
        self,
        *,
        connections: ConnectionStore,
        meetings: MeetingStore,
        index: EventIndex,
        sync_state: SyncStateStore,
        secrets_store: SecretStore,
        clock: Clock,
        health: ConnectionHealth,
        before_release: Callable[[Connection], None] | None = None,
        calendars: CalendarSelectionStore | None = None,
    ) -> None:
        self._health = health
        self._calendars = calendars
        self._before_release = before_release
        self._connections = connections
        self._meetings = meetings
        self._index = index
        self._sync_state = sync_state
        self._secrets = secrets_store
        self._clock = clock

    def list(self, user_id: str) -> list[Connection]:
        return sorted(self._connections.list_for_user(user_id), key=lambda c: (c.connected_at, c.id))

    def last_synced_at(self, connection_id: str) -> datetime | None:
        """When this connection's calendar was last read through (a delta round completed)."""
        state = self._sync_state.get(connection_id)
        return state.synced_at if state is not None else None

    def disconnect(self, user_id: str, connection_id: str) -> bool:
        """Stops everything for this account: its meetings leave Upcoming Meetings, pending
        deployments find nothing to deploy, and its token cache is deleted from Key Vault."""
        conn = self._connections.get(user_id, connection_id)
        if conn is None:
            return False
        self._health.disconnected(conn)  # queued first: a retried disconnect repeats it, same id
        self.release(conn)
        log.info("connection disconnected", extra={"user_id": user_id, "connection_id": conn.id})
        return True

    def release(self, conn: Connection) -> None:
        """Everything a connection holds, the row that names the rest last: a failure part-way leaves
        the connection listed, and a retry (or the pruning timer) finishes the job; nothing is orphaned.
        Its meetings let go first, so a deploy message that surfaces meanwhile finds nothing to deploy.
        What it holds outside (its Graph subscription) goes before that, while its token still works."""
        if self._before_release is not None:
            self._before_release(conn)
        forget_events(self._meetings, self._index, conn.user_id, conn.id, self._index.all_for(conn.id))
        detach_calendar(self._meetings, conn.user_id, conn.id, ANY_CALENDAR, self._clock.now())
        if self._calendars is not None:
            self._calendars.remove(conn.id)
        self._sync_state.remove(conn.id)
        self._secrets.delete(conn.secret_name)
        self._connections.remove(conn)
