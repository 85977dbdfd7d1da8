"""Graph change-notification subscriptions, one per Active connection: created when it connects or
reconnects, renewed well before it expires, recreated when Graph removes it, deleted when the
connection goes (disconnect, erasure, pruning).

What each subscription's notifications must carry as `clientState` is a random secret of its own,
kept in Key Vault under a name never reused (`graph-notify-<hex>`); the table row names the secret
and never holds it. Order of writes, so nothing is orphaned and every step is safe to repeat:
secret, then the Graph subscription, then the row that names both; removal goes the other way round
(Graph subscription, secret, row). A secret whose row never came (a crash in between) is deleted by
the secret reconciler once older than an hour (shared.services.lifecycle.SecretReconciler).

Lifetimes: Outlook event subscriptions live at most 10,080 minutes (under 7 days) without resource
data (https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime; the
docs said 4,230 minutes until 2023, and a tenant or cloud still capping there answers 400, so a
refused 6-day request is retried once with 70 hours). The renew timer renews any subscription with
less than `RENEW_BEFORE` left, so a subscription gets dozens of chances before it lapses."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.clock import Clock
from shared.connections import Connection
from shared.ports import (
    AccessToken,
    CalendarSubscriptions,
    Conflict,
    ConnectionStore,
    DeployJob,
    FanOutPage,
    GraphSubscription,
    GraphUnauthorized,
    JobQueue,
    ProgressJob,
    RefreshJob,
    SecretStore,
    Subscription,
    SubscriptionGone,
    SubscriptionJob,
    SubscriptionJobs,
    SubscriptionRefused,
    SubscriptionStore,
    SyncJob,
    Throttled,
    WalkStep,
)
from shared.services.accounts import ConnectionUnusable, TokenKeeper

log = logging.getLogger(__name__)

CLIENT_STATE_PREFIX = "graph-notify-"  # Key Vault names of the clientState secrets
LIFETIMES = (timedelta(days=6), timedelta(hours=70))  # asked for, in order (see the module docstring)
RENEW_BEFORE = timedelta(days=2)
ORPHAN_SECRET_GRACE = timedelta(hours=1)
SUBSCRIBE = "subscribe"  # connect / reconnect / the timer found none: renew the one kept, else create
RENEW = "renew"  # close to expiry, or Graph asked to reauthorize it
RECREATE = "recreate"  # Graph removed it: a new one, then a resync
# Graph challenged it (reauthorizationRequired): its change notifications are paused until a PATCH
# with an access token issued after the challenge, and changes made meanwhile are never notified
# (learn.microsoft.com/graph/change-notifications-lifecycle-events). So: a token refreshed now, the
# PATCH, then a resync that reads what the pause lost.
REAUTHORIZE = "reauthorize"
# Queued by the scan for every Active connection: a subscription row is not proof that Graph still
# has it (removed on password reset or account changes, without a word for personal accounts), that
# it is the only one (a create retried after a timeout can leave a second), or that its notifications
# flow (Graph pauses them near the end of the authorizing token's life; a personal account is never
# told). One `GET /subscriptions` per connection and scan period checks the first two; a
# reauthorization when less than REAUTHORIZE_AHEAD of that token's life is left, then a resync,
# keeps the third.
VERIFY = "verify"
ACTIONS = frozenset({SUBSCRIBE, RENEW, RECREATE, REAUTHORIZE, VERIFY})
# Graph challenges `reauthorization_lead` before the authorizing token expires (the simulator's
# default: 10 minutes) and pauses delivery until reauthorized; a personal account is never told. Every
# authorization (create, renew, reauthorize) therefore plans the next reauthorization itself, this far
# ahead of the authorizing token's end (or at half its remaining life, if that is shorter): one
# REAUTHORIZE job per subscription and token lifetime, whatever the scan period. The scan's VERIFY
# reauthorizes too when it finds less than this left (a planned job that was lost).
REAUTHORIZE_AHEAD = timedelta(minutes=15)
# A planned reauthorization that met a passing failure (no token for now, throttled) looks again this
# much later, so a Microsoft outage never ends the chain (nothing else would plan the next one).
PLANNED_RETRY = timedelta(minutes=5)
PLANNED_RETRY_FOR = timedelta(days=1)  # after the authorizing token ended; then the scan's VERIFY carries on
# A planned job whose stamp is this close to the row's `authorized_until` is still the current plan
# (storage may round the stored time).
_SAME_AUTHORIZATION = timedelta(seconds=1)
ASSUMED_TOKEN_LIFETIME = timedelta(minutes=60)  # when MSAL did not say when the access token expires


def _still_planned(job: SubscriptionJob, record: Subscription | None) -> bool:
    """A planned reauthorization still answers for the row's current authorization."""
    if record is None or record.authorized_until is None or job.authorized_until is None:
        return False
    return abs(record.authorized_until - job.authorized_until) <= _SAME_AUTHORIZATION


def notification_urls(base_url: str, connection_id: str) -> tuple[str, str]:
    """The change and lifecycle notification URLs of one connection's subscription. Graph repeats a
    notificationUrl's query string on every POST, so the connection is found by a point read."""
    return f"{base_url}?connection={connection_id}", f"{base_url}/lifecycle?connection={connection_id}"


@dataclass
class Maintained:
    renewing: int = 0
    subscribing: int = 0
    dropped: int = 0  # rows of connections that no longer exist


class SubscriptionService:
    def __init__(
        self,
        *,
        connections: ConnectionStore,
        subscriptions: SubscriptionStore,
        graph: CalendarSubscriptions,
        tokens: TokenKeeper,
        secrets_store: SecretStore,
        jobs: SubscriptionJobs,
        clock: Clock,
        notification_url: str,
        request_sync: Callable[[str, str], object] | None = None,
        rate_per_second: int = 20,
    ) -> None:
        self._connections = connections
        self._store = subscriptions
        self._graph = graph
        self._tokens = tokens
        self._secrets = secrets_store
        self._jobs = jobs
        self._clock = clock
        self._url = notification_url.rstrip("/")
        self._request_sync = request_sync
        self._rate = max(rate_per_second, 1)

    # ------------------------------------------------------------------ jobs
    def run(self, job: SubscriptionJob) -> str:
        """One subscription job: "created", "renewed", "recreated", or why nothing was done
        ("skipped": connection gone or in error; "no_token"; "refused:<code>"). Raises Throttled
        (and other transient errors) for the queue to retry."""
        if job.action not in ACTIONS:
            log.warning("unknown subscription job %r ignored", job.action[:40],
                        extra={"connection_id": job.connection_id})
            return "ignored"
        conn = self._connections.get(job.user_id, job.connection_id)
        record = self._store.get(job.connection_id)
        if conn is None:
            if record is not None:
                self._drop(record)
            return "skipped"
        if not conn.is_active:
            return "skipped"  # reconnecting it subscribes again
        if job.authorized_until is not None and not _still_planned(job, record):
            return "superseded"  # authorized again since this was planned: that authorization plans the next
        try:
            # A challenge is answered only by a token issued after it: MSAL's cached one may predate it.
            conn, token = self._tokens.access_token(conn, force_refresh=job.action == REAUTHORIZE)
        except ConnectionUnusable as exc:
            log.info("subscription job without a token: %s", exc, extra={"connection_id": conn.id})
            self._plan_again(job, conn)
            return "no_token"
        except Conflict:
            # The row changed while the token was taken: a concurrent sync on another instance wrote
            # the renewed token, or a disconnect or reconnect happened. Raised, so the queue runs the
            # job again (10 s later) on what is stored then; "skipped" here left the connection
            # without a subscription until the renew timer.
            raise
        ctx = {"connection_id": conn.id, "user_id": conn.user_id}
        try:
            if job.action == VERIFY and record is not None:
                outcome = self._verify(conn, token, record)
            elif record is not None and job.action != RECREATE:
                outcome = self._renew(conn, token, record)
            else:
                outcome = self._create(conn, token, record)
        except SubscriptionRefused as exc:
            log.warning("Graph refused the subscription: HTTP %d %s", exc.status, exc.code, extra=ctx)
            self._plan_again(job, conn)
            return f"refused:{exc.code or exc.status}"
        except GraphUnauthorized:
            log.warning("Graph refused the connection's token for a subscription", extra=ctx)
            self._plan_again(job, conn)
            return "unauthorized"
        except Throttled:
            if job.authorized_until is None:
                raise  # the queue retries it
            self._plan_again(job, conn)
            return "throttled"
        if outcome in ("created", "recreated", "reauthorized") or job.action == REAUTHORIZE:
            # Changes made while no subscription (or the new one's row) existed, or while Graph held
            # delivery back for a reauthorization, were not notified: read the calendar.
            self._resync(conn)
        return outcome

    def _verify(self, conn: Connection, token: AccessToken, record: Subscription) -> str:
        """The scan's check (VERIFY): "verified", "recreated" (Graph no longer had it: removed without a
        word), "reauthorized" (its authorizing token was about to run out), or "no_token"."""
        listed = self._graph.list(token.token)
        change_url, _ = notification_urls(self._url, conn.id)
        ours = {s.id for s in listed if s.notification_url == change_url}
        if record.subscription_id not in ours:
            log.warning("subscription_missing: Graph no longer has the connection's subscription; a new one",
                        extra={"connection_id": conn.id, "event": "subscription_missing"})
            return self._create(conn, token, record)
        self._delete_extras(conn, token.token, listed, keep=record.subscription_id)
        now = self._clock.now()
        if record.authorized_until is not None and record.authorized_until - now >= REAUTHORIZE_AHEAD:
            return "verified"
        try:
            conn, fresh = self._tokens.access_token(conn, force_refresh=True)
        except (ConnectionUnusable, Conflict) as exc:
            log.info("subscription not reauthorized: %s", exc, extra={"connection_id": conn.id})
            return "no_token"
        self._renew(conn, fresh, record)
        log.info("subscription reauthorized ahead of its token's end", extra={"connection_id": conn.id})
        return "reauthorized"

    def _plan_again(self, job: SubscriptionJob, conn: Connection) -> None:
        """A planned reauthorization that could not be done now is tried again PLANNED_RETRY later, with
        the same stamp (so it is still superseded by any authorization meanwhile), while the
        connection is Active (a connection in Error is subscribed again when it is reconnected)."""
        if job.authorized_until is None or not conn.is_active:
            return
        if self._clock.now() - job.authorized_until > PLANNED_RETRY_FOR:
            log.warning("planned reauthorization given up: still failing a day after its token ended; the "
                        "scan's check keeps trying", extra={"connection_id": conn.id, "event": "reauthorize_gave_up"})
            return
        self._jobs.enqueue(job, PLANNED_RETRY)
        log.info("planned reauthorization tried again later", extra={"connection_id": conn.id})

    def _plan_reauthorization(self, record: Subscription) -> None:
        """The next reauthorization of `record`, REAUTHORIZE_AHEAD before its authorizing token ends;
        a token with less than that (plus a minute) left is reauthorized at half its remaining life,
        so short-lived tokens never loop."""
        if record.authorized_until is None:
            return
        left = record.authorized_until - self._clock.now()
        ahead = left - REAUTHORIZE_AHEAD
        delay = ahead if ahead >= timedelta(minutes=1) else max(left / 2, timedelta(0))
        self._jobs.enqueue(SubscriptionJob(record.user_id, record.connection_id, REAUTHORIZE,
                                           authorized_until=record.authorized_until), delay)

    def _delete_extras(self, conn: Connection, token: str, listed: list[GraphSubscription], keep: str) -> None:
        """Other subscriptions of this connection at Graph (a create retried after a timeout, or one
        whose row was lost) notify twice and lapse only in days: deleted."""
        change_url, _ = notification_urls(self._url, conn.id)
        for extra in [s for s in listed if s.notification_url == change_url and s.id != keep]:
            log.warning("duplicate subscription deleted", extra={"connection_id": conn.id})
            self._delete_in_graph(conn, token, extra.id)

    def _authorized_until(self, token: AccessToken) -> datetime:
        return token.expires_at or self._clock.now() + ASSUMED_TOKEN_LIFETIME

    def _renew(self, conn: Connection, token: AccessToken, record: Subscription) -> str:
        """PATCH its expiry (which also reauthorizes it); a subscription Graph no longer has (expired,
        removed) is created anew."""
        try:
            try:
                renewed = self._graph.renew(token.token, record.subscription_id, self._clock.now() + LIFETIMES[0])
            except SubscriptionRefused:
                renewed = self._graph.renew(token.token, record.subscription_id, self._clock.now() + LIFETIMES[1])
        except SubscriptionGone:
            log.info("subscription gone at Graph: creating a new one", extra={"connection_id": conn.id})
            return self._create(conn, token, record)
        try:
            stored = self._store.put(replace(record, expires_at=renewed.expires_at,
                                             authorized_until=self._authorized_until(token)))
        except Conflict:
            pass  # recreated meanwhile by another job: that row is newer (and planned its own)
        else:
            self._plan_reauthorization(stored)
        log.info("subscription renewed", extra={"connection_id": conn.id,
                                                "expires_at": renewed.expires_at.isoformat()})
        return "renewed"

    def _create(self, conn: Connection, access: AccessToken, replacing: Subscription | None) -> str:
        token = access.token
        secret_name = f"{CLIENT_STATE_PREFIX}{uuid.uuid4().hex}"
        client_state = secrets.token_urlsafe(48)  # 64 characters; Graph allows 128
        self._secrets.set(secret_name, client_state, owner=conn.user_id)
        try:
            created = self._create_in_graph(conn, token, client_state)
        except BaseException:
            self._secrets.delete(secret_name)
            raise
        record = Subscription(connection_id=conn.id, user_id=conn.user_id, subscription_id=created.id,
                              expires_at=created.expires_at, secret_name=secret_name, created_at=self._clock.now(),
                              etag=replacing.etag if replacing is not None else None,
                              authorized_until=self._authorized_until(access))
        try:
            stored = self._store.put(record)
        except Conflict:
            # Another job stored a subscription for this connection meanwhile: keep that one.
            self._delete_in_graph(conn, token, created.id)
            self._secrets.delete(secret_name)
            log.info("subscription raced another job: ours deleted", extra={"connection_id": conn.id})
            return "raced"
        self._plan_reauthorization(stored)
        if replacing is not None:
            self._delete_in_graph(conn, token, replacing.subscription_id)
            self._secrets.delete(replacing.secret_name)
        if self._connections.get(conn.user_id, conn.id) is None:
            # Disconnected (or erased) while this job made the subscription: it goes too.
            self._delete_in_graph(conn, token, created.id)
            self._drop(stored)
            log.info("subscription made for a connection removed meanwhile: deleted", extra={"connection_id": conn.id})
            return "raced"
        try:
            # A POST that timed out and was sent again may have left a second live subscription.
            self._delete_extras(conn, token, self._graph.list(token), keep=created.id)
        except (Throttled, GraphUnauthorized, SubscriptionRefused, SubscriptionGone, OSError) as exc:
            log.info("subscriptions not listed after a create: %s", type(exc).__name__,
                     extra={"connection_id": conn.id})
        log.info("subscription %s", "recreated" if replacing else "created",
                 extra={"connection_id": conn.id, "expires_at": created.expires_at.isoformat()})
        return "recreated" if replacing is not None else "created"

    def _create_in_graph(self, conn: Connection, token: str, client_state: str) -> GraphSubscription:
        change_url, lifecycle_url = notification_urls(self._url, conn.id)
        for lifetime in LIFETIMES:
            try:
                return self._graph.create(token, notification_url=change_url, lifecycle_url=lifecycle_url,
                                          client_state=client_state, expires_at=self._clock.now() + lifetime)
            except SubscriptionRefused as exc:
                if lifetime == LIFETIMES[-1] or exc.status != 400:
                    raise
                log.info("Graph refused a %s subscription (%s): asking for less", lifetime, exc.code,
                         extra={"connection_id": conn.id})
        raise AssertionError("unreachable")

    def _delete_in_graph(self, conn: Connection, token: str, subscription_id: str) -> None:
        try:
            self._graph.delete(token, subscription_id)
        except (Throttled, GraphUnauthorized, SubscriptionRefused, OSError) as exc:
            # It lapses by itself within days; its notifications find no row and change nothing.
            log.warning("old subscription not deleted at Graph: %s", type(exc).__name__,
                        extra={"connection_id": conn.id})

    def _resync(self, conn: Connection) -> None:
        if self._request_sync is not None:
            self._request_sync(conn.user_id, conn.id)

    # ------------------------------------------------------------------ connection going away
    def release(self, conn: Connection) -> None:
        """The connection goes (disconnect, erasure, pruning): its subscription is deleted at Graph
        while a token can still be had (a parting token: the connection's row is not touched and the
        user is told nothing, whatever the identity platform answers), then its clientState secret,
        then the row. Never raises for Graph: a subscription left behind lapses within days and its
        notifications change nothing."""
        record = self._store.get(conn.id)
        if record is None:
            return
        try:
            token = self._tokens.parting_token(conn) if conn.is_active else None
            if token is not None:
                self._delete_in_graph(conn, token, record.subscription_id)
            else:
                log.info("subscription left to lapse: no token", extra={"connection_id": conn.id})
        except Exception as exc:
            log.warning("subscription left to lapse: %s", type(exc).__name__, extra={"connection_id": conn.id})
        self._drop(record)

    def forget_user(self, user_id: str, connection_ids: list[str]) -> None:
        """Erasure: every subscription of the user's connections goes (see `release`)."""
        for connection_id in connection_ids:
            conn = self._connections.get(user_id, connection_id)
            if conn is not None:
                self.release(conn)
            else:
                record = self._store.get(connection_id)
                if record is not None:
                    self._drop(record)

    def _drop(self, record: Subscription) -> None:
        self._secrets.delete(record.secret_name)
        self._store.remove(record)

    # ------------------------------------------------------------------ timer
    def maintain(self) -> Maintained:
        """Everything in one run: `renew_page` over every connection, then `sweep`. For tests and
        small deployments; the `renew_subscriptions` timer walks the connections a page per queue
        message instead (shared/services/fanout.py) and `reconcile_secrets` sweeps daily."""
        done = Maintained()
        self.renew_page(list(self._connections.all()), 0, done)
        self.sweep(done)
        return done

    def renew_page(self, connections: list[Connection], enqueued_before: int, done: Maintained | None = None) -> int:
        """One page of the renewal walk: a renewal for every Active connection's subscription with
        less than RENEW_BEFORE left, a subscription for every Active connection without one (created
        before this feature, or whose creation failed). Jobs are spaced at `rate_per_second` across
        the whole walk (`enqueued_before` jobs came before this page): each may redeem a refresh
        token. A connection whose row cannot be read is logged and skipped; the walk goes on.
        Returns the jobs enqueued."""
        done = done if done is not None else Maintained()
        now = self._clock.now()
        queued = 0
        for conn in connections:
            if not conn.is_active:
                continue
            try:
                record = self._store.get(conn.id)
                if record is None:
                    action = SUBSCRIBE
                    done.subscribing += 1
                elif record.expires_at - now < RENEW_BEFORE:
                    action = RENEW
                    done.renewing += 1
                else:
                    continue
                delay = timedelta(seconds=(enqueued_before + queued) / self._rate)
                self._jobs.enqueue(SubscriptionJob(conn.user_id, conn.id, action), delay)
                queued += 1
            except Exception as exc:  # one unreadable row never stops the walk
                log.error("subscription renewal skipped a connection: %s", type(exc).__name__,
                          extra={"connection_id": conn.id, "event": "walk_row_failed"})
        return queued

    def sweep(self, done: Maintained | None = None) -> Maintained:
        """Every subscription row in one run (tests, small deployments): `sweep_page` to the end. The
        `reconcile_secrets` timer walks them a page per queue message instead; clientState secrets
        no row names are the secret reconciler's (shared.services.lifecycle.SecretReconciler)."""
        done = done if done is not None else Maintained()
        page = FanOutPage(kind="", continuation=None, started_at=self._clock.now())
        while True:
            step = self.sweep_page(page, 200)
            done.dropped += step.done
            if step.continuation is None:
                break
            page = replace(page, continuation=step.continuation)
        log.info("subscriptions maintained", extra={"renewing": done.renewing, "subscribing": done.subscribing,
                                                    "dropped": done.dropped})
        return done

    def sweep_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of the daily sweep: rows of connections that are gone dropped (their clientState
        secret first, then the row), each looked up by a point read; safe to repeat."""
        found = self._store.page(page.continuation, size)
        dropped, failed = 0, 0
        for record in found.items:
            try:
                if self._connections.get(record.user_id, record.connection_id) is None:
                    self._drop(record)
                    dropped += 1
            except Exception as exc:  # one unreadable row never stops the sweep
                failed += 1
                log.error("subscription sweep skipped a row: %s", type(exc).__name__,
                          extra={"connection_id": record.connection_id, "event": "walk_row_failed"})
        return WalkStep(len(found.items) + found.unreadable, dropped, found.continuation, found.unreadable + failed)


class SubscribeOnClaim:
    """The job queue a claim writes through: the sync job a claim queues for a connected or
    reconnected account also queues that connection's subscribe job, so every connect and reconnect
    (re)subscribes without the connect flow knowing about subscriptions. Everything else passes."""

    CLAIM_REASONS = frozenset({"connected", "reconnected"})

    def __init__(self, jobs: JobQueue, subscriptions: SubscriptionJobs) -> None:
        self._jobs = jobs
        self._subscriptions = subscriptions

    def enqueue_sync(self, job: SyncJob, delay: timedelta = timedelta(0)) -> None:
        self._jobs.enqueue_sync(job, delay)
        if job.reason in self.CLAIM_REASONS:
            self._subscriptions.enqueue(SubscriptionJob(job.user_id, job.connection_id, SUBSCRIBE))

    def schedule_deploy(self, job: DeployJob, delay: timedelta) -> None:
        self._jobs.schedule_deploy(job, delay)

    def poison_deploy(self, job: DeployJob, reason: str) -> None:
        self._jobs.poison_deploy(job, reason)

    def schedule_progress(self, job: ProgressJob, delay: timedelta) -> None:
        self._jobs.schedule_progress(job, delay)

    def enqueue_refresh(self, job: RefreshJob, delay: timedelta = timedelta(0)) -> None:
        self._jobs.enqueue_refresh(job, delay)
