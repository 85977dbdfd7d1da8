"""Connecting an Outlook account: start → Microsoft sign-in → callback → claim.

The callback never trusts the browser that lands on it: the redeemed result waits as a pending
claim bound to the CoAgentor user who started the flow, and only that user (holding their own
bearer token) can claim it. That is what defeats account-linking CSRF."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.clock import Clock
from shared.connections import (
    Connection,
    ConnectionStatus,
    FixedBy,
    PlanLimitExceeded,
    aadsts_code,
    classify_token_error,
    owner_tag,
    plan_limit,
)
from shared.platform_auth import User
from shared.ports import (
    AdminConsent,
    AdminConsents,
    CalendarReader,
    CalendarUnavailable,
    ClaimStore,
    Conflict,
    ConnectionStore,
    FanOutPage,
    FlowStore,
    IdentityProvider,
    JobQueue,
    PendingClaim,
    PendingFlow,
    RotatingSecret,
    SecretStore,
    SignedIn,
    SyncJob,
    WalkStep,
)
from shared.services.health import ConnectionHealth

log = logging.getLogger(__name__)

FLOW_LIFETIME = timedelta(minutes=10)
CLAIM_LIFETIME = timedelta(minutes=10)
# An admin-consent link is forwarded to IT and may be opened days later.
ADMIN_CONSENT_LINK_LIFETIME = timedelta(days=7)
_CONSENT_KEY_INFO = b"coagentor-outlook admin-consent state v1"
# How long after an admin came back through the user's link the page may say "approved".
ADMIN_CONSENT_NEWS = timedelta(minutes=30)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


_OWNER = re.compile(r"[0-9a-f]{32}")


def _one_time(user_id: str) -> str:
    """A one-time value for a URL (a sign-in's `state`, a claim code): `<owner tag>.<256 random bits>`.
    The owner tag names the starting user's storage partition (so erasure and the per-user limit read
    one partition), never the user id itself."""
    return f"{owner_tag(user_id)}.{secrets.token_urlsafe(32)}"


def _ref(value: str) -> str:
    """How storage names the row of a one-time value: `<owner tag>.<SHA-256 of the value>` (the value
    itself is never stored). Values issued before owner tags (no valid tag) are their bare SHA-256,
    as their rows were written then."""
    owner, dot, _ = value.partition(".")
    return f"{owner}.{_hash(value)}" if dot and _OWNER.fullmatch(owner) else _hash(value)


# MSAL's flow holds the PKCE `code_verifier` and the OIDC `nonce`. The row keeps it sealed (AES-GCM)
# under a key derived (HKDF-SHA256) from the sign-in's `state`, which the row does not hold (only its
# SHA-256 names the row): the table alone never yields a verifier. The callback brings the state back
# and opens it. Rows written before sealing hold the plain flow and are read as they are.
_FLOW_KEY_INFO = b"coagentor-outlook sign-in flow v1"


def _flow_key(state: str) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FLOW_KEY_INFO).derive(state.encode()))


def seal_flow(state: str, flow: Mapping[str, Any]) -> dict[str, Any]:
    """`{"sealed": <base64 of 12-byte nonce + AES-GCM ciphertext of the flow's JSON>}`."""
    nonce = secrets.token_bytes(12)
    sealed = _flow_key(state).encrypt(nonce, json.dumps(dict(flow)).encode(), _FLOW_KEY_INFO)
    return {"sealed": base64.b64encode(nonce + sealed).decode()}


def open_flow(state: str, stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """The flow `seal_flow` sealed with this state; a legacy plain flow as it is; None when it does
    not open (not this state's)."""
    if "sealed" not in stored:
        return dict(stored)
    raw = base64.b64decode(str(stored["sealed"]))
    try:
        opened: dict[str, Any] = json.loads(_flow_key(state).decrypt(raw[:12], raw[12:], _FLOW_KEY_INFO))
    except InvalidTag:
        return None
    return opened


TOKEN_CACHE_PREFIX = "outlook-cache-"  # every token cache's name starts so (the reconciler lists them)


def new_secret_name() -> str:
    """Key Vault name for one token cache. Random, never reused: a soft-deleted name stays taken."""
    return f"{TOKEN_CACHE_PREFIX}{uuid.uuid4().hex}"


class Outcome(StrEnum):
    CONFIRM = "confirm"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    EXPIRED = "expired"
    FAILED = "failed"
    ADMIN_CONSENTED = "admin_consented"


@dataclass(frozen=True)
class CallbackResult:
    outcome: Outcome
    reason: str | None = None
    claim: str | None = None


class ConnectionNotFound(Exception):
    pass


# Sign-ins a user may have open at once (each started, not yet back): a person needs one or two;
# starting more answers 429 until the oldest expires (FLOW_LIFETIME) or comes back.
MAX_PENDING_SIGN_INS = 5


class TooManySignIns(Exception):
    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"too many sign-ins open; retry after {retry_after}")
        self.retry_after = retry_after


class ClaimExpired(Exception):
    pass


class ClaimMismatch(Exception):
    pass


class AccountMismatch(Exception):
    pass


@dataclass(frozen=True)
class Claimed:
    outcome: str  # "connected" | "reconnected"
    connection: Connection


@dataclass(frozen=True)
class ClaimPreview:
    email: str  # the Microsoft account that signed in
    reconnect_id: str | None  # the connection it reconnects, if the sign-in was a reconnect


_ATTEMPTS = 3


class ConnectService:
    def __init__(
        self,
        *,
        flows: FlowStore,
        claims: ClaimStore,
        connections: ConnectionStore,
        identity: IdentityProvider,
        calendar: CalendarReader,
        secrets_store: SecretStore,
        jobs: JobQueue,
        clock: Clock,
        health: ConnectionHealth,
        consents: AdminConsents,
        consent_secret: RotatingSecret,
    ) -> None:
        self._consents = consents
        self._consent_secret = consent_secret
        self._health = health
        self._flows = flows
        self._claims = claims
        self._connections = connections
        self._identity = identity
        self._calendar = calendar
        self._secrets = secrets_store
        self._jobs = jobs
        self._clock = clock

    # ------------------------------------------------------------------ leg 1
    def start(self, user: User, reconnect_id: str | None = None) -> str:
        """The Microsoft authorize URL for this user; raises PlanLimitExceeded / ConnectionNotFound, and
        TooManySignIns when MAX_PENDING_SIGN_INS of theirs are still open (each row holds a sealed
        PKCE verifier for 10 minutes: without a cap one user could fill the table)."""
        existing = self._connections.list_for_user(user.id)
        hint = None
        if reconnect_id is not None:
            target = next((c for c in existing if c.id == reconnect_id), None)
            if target is None:
                raise ConnectionNotFound(reconnect_id)
            hint = target.login_hint or target.email
        else:
            limit = plan_limit(user.plan)
            if limit is not None and len(existing) >= limit:
                raise PlanLimitExceeded(user.plan, limit, len(existing))
        now = self._clock.now()
        pending = sorted(self._flows.live(owner_tag(user.id), now))
        if len(pending) >= MAX_PENDING_SIGN_INS:
            raise TooManySignIns(pending[0] - now)
        state = _one_time(user.id)
        flow = self._identity.begin(state, hint)
        self._flows.put(
            PendingFlow(
                state_hash=_ref(state),
                user_id=user.id,
                reconnect_id=reconnect_id,
                flow=seal_flow(state, flow),
                expires_at=self._clock.now() + FLOW_LIFETIME,
            )
        )
        log.info("connect started", extra={"user_id": user.id, "reconnect": bool(reconnect_id)})
        return str(flow["auth_uri"])

    # ------------------------------------------------------------------ admin consent
    def admin_consent_state(self, user: User) -> str | None:
        """The `state` of this user's admin-consent link: `<owner tag>.<expiry>.<HMAC-SHA256>`, keyed
        with a key derived (HKDF) from the app's status-event secret. Nothing is stored to issue it (so
        showing the link writes nothing); the same link is shown all day and accepted until `expiry`,
        7 to 8 days on. None (a link without state, whose return is not counted) when the secret
        cannot be read right now."""
        owner = owner_tag(user.id)
        today = self._clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        expiry = int((today + ADMIN_CONSENT_LINK_LIFETIME + timedelta(days=1)).timestamp())
        try:
            signature = self._consent_signature(owner, expiry)
        except Exception as exc:  # Key Vault busy or down: the page still works, the link carries no state
            log.warning("admin consent state unavailable: %s", type(exc).__name__)
            return None
        return f"{owner}.{expiry}.{signature}"

    def _consent_signature(self, owner: str, expiry: int) -> str:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_CONSENT_KEY_INFO).derive(self._consent_secret().encode())
        digest = hmac.new(key, f"{owner}|{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def admin_consented_at(self, user: User) -> datetime | None:
        """When an admin last came back through this user's link, if within ADMIN_CONSENT_NEWS (what
        lets the page say "approved": the redirect's `?outlook=admin_consented` alone never does)."""
        consent = self._consents.get(owner_tag(user.id))
        if consent is None or consent.consented_at < self._clock.now() - ADMIN_CONSENT_NEWS:
            return None
        return consent.consented_at

    def _admin_consent_returned(self, response: Mapping[str, str]) -> CallbackResult:
        """An IT admin back from the admin-consent endpoint (learn.microsoft.com/entra/identity-platform/
        v2-admin-consent: `admin_consent=True&tenant=...&state=...`, or `error` beside admin_consent).
        Counts only with a `state` this service signed and that has not expired."""
        state = response.get("state", "")
        owner, _, rest = state.partition(".")
        expiry_text, _, signature = rest.partition(".")
        now = self._clock.now()
        valid = False
        if owner and expiry_text.isdigit() and signature and int(expiry_text) > now.timestamp():
            for fresh in (False, True):  # a mismatch may be a rotated secret: read it once more
                try:
                    if fresh:
                        self._consent_secret.reload()
                    expected = self._consent_signature(owner, int(expiry_text))
                except Exception as exc:
                    log.error("admin consent state cannot be checked: %s", type(exc).__name__)
                    return CallbackResult(Outcome.FAILED, "temporary_error")
                valid = hmac.compare_digest(expected.encode(), signature.encode())
                if valid:
                    break
        if not valid:
            log.warning("admin consent return with an unknown or expired state")
            return CallbackResult(Outcome.EXPIRED, "unknown_state" if state else "missing_state")
        # Microsoft's error redirect still carries admin_consent=True next to `error`: check it first.
        if response.get("error"):
            return _sign_in_error(response["error"], response.get("error_description"))
        if response["admin_consent"].lower() != "true":
            return CallbackResult(Outcome.FAILED, "admin_consent_not_granted")
        self._consents.put(AdminConsent(owner=owner, consented_at=now, tenant_id=response.get("tenant") or None))
        log.info("admin consent granted through a user's link", extra={"tenant_id": response.get("tenant")})
        return CallbackResult(Outcome.ADMIN_CONSENTED)

    # ------------------------------------------------------------------ leg 2
    def complete(self, response: Mapping[str, str]) -> CallbackResult:
        if "admin_consent" in response:
            return self._admin_consent_returned(response)
        state = response.get("state", "")
        pending = self._flows.take(_ref(state)) if state else None
        if pending is None:
            return CallbackResult(Outcome.EXPIRED, "unknown_state" if state else "missing_state")
        if pending.expires_at <= self._clock.now():
            return CallbackResult(Outcome.EXPIRED, "stale_state")
        if response.get("error"):
            return _sign_in_error(response.get("error", ""), response.get("error_description"))
        if not response.get("code"):
            return CallbackResult(Outcome.FAILED, "missing_code")

        flow = open_flow(state, pending.flow)
        if flow is None:
            return CallbackResult(Outcome.EXPIRED, "unknown_state")
        result = self._identity.redeem(flow, response)
        if not isinstance(result, SignedIn):
            failure = classify_token_error(result.error, result.description, result.error_codes, result.suberror)
            log.warning("code redemption failed: %s", failure.code,
                        extra={"user_id": pending.user_id, "error": result.error, "failure_code": failure.code})
            if failure.fixed_by is FixedBy.ADMIN and failure.reason is not None:
                return CallbackResult(Outcome.BLOCKED, failure.reason.code)
            if failure.fixed_by is FixedBy.SERVICE:
                log.error("app_identity_failure: the service's own credentials were refused (%s)", failure.code,
                          extra={"event": "app_identity_failure", "failure_code": failure.code})
                return CallbackResult(Outcome.FAILED, "service_unavailable")
            if failure.fixed_by is FixedBy.TRANSIENT:
                return CallbackResult(Outcome.FAILED, "microsoft_unavailable")
            return CallbackResult(Outcome.FAILED, "code_rejected")
        try:
            email = self._calendar.me_email(result.access_token)
        except Exception as exc:
            log.warning("reading the signed-in profile failed: %s", type(exc).__name__,
                        extra={"user_id": pending.user_id})
            return CallbackResult(Outcome.FAILED, "profile_unavailable")
        # One cheap calendar read before anything is stored: an account whose mailbox Graph cannot
        # read signs in fine and would otherwise look Active with an empty list for ever.
        calendar_unavailable: str | None = None
        try:
            self._calendar.probe(result.access_token)
        except CalendarUnavailable as exc:
            calendar_unavailable = exc.code
            log.warning("connected account's calendar is unavailable: %s", exc.code,
                        extra={"user_id": pending.user_id, "failure_code": exc.code})
        except Exception as exc:
            # Graph busy or down right now: the sync will find out and say so.
            log.warning("calendar probe failed: %s", type(exc).__name__, extra={"user_id": pending.user_id})

        secret_name = new_secret_name()
        self._secrets.set(secret_name, result.cache, owner=pending.user_id)
        code = _one_time(pending.user_id)
        try:
            self._claims.put(
                PendingClaim(
                    code_hash=_ref(code),
                    user_id=pending.user_id,
                    reconnect_id=pending.reconnect_id,
                    secret_name=secret_name,
                    home_account_id=result.home_account_id,
                    tenant_id=result.tenant_id,
                    email=email,
                    access_expires_at=result.access_expires_at,
                    expires_at=self._clock.now() + CLAIM_LIFETIME,
                    login_hint=result.login_hint,
                    calendar_unavailable=calendar_unavailable,
                )
            )
        except Exception:
            # No row will ever name this cache: delete it now (the reconciler would, later).
            self._secrets.delete(secret_name)
            raise
        log.info("sign-in redeemed, waiting for claim", extra={"user_id": pending.user_id})
        return CallbackResult(Outcome.CONFIRM, claim=code)

    # ------------------------------------------------------------------ leg 3
    def preview(self, user: User, code: str) -> ClaimPreview:
        """What claiming would connect, without using the claim, so the page can ask the person to
        confirm "connect <Microsoft account> to <CoAgentor account>". The same rules as the claim:
        ClaimExpired when unknown, used or stale; ClaimMismatch (and the sign-in destroyed) when this
        user did not start it; AccountMismatch (and the sign-in destroyed) when it reconnects a
        connection with a different Microsoft account, so the page refuses before asking."""
        pending = self._pending_for(user, code)
        self._reconnect_target(pending, self._connections.list_for_user(user.id))
        return ClaimPreview(email=pending.email, reconnect_id=pending.reconnect_id)

    def claim(self, user: User, code: str) -> Claimed:
        """Store the connection. Safe to retry: the claim row goes last, so a failure before that
        leaves it claimable; a new connection's id comes from the claim, so a repeated or concurrent
        claim stores it once; the reconnected row is replaced only if unchanged since read (ETag)."""
        pending = self._pending_for(user, code)
        for _ in range(_ATTEMPTS):
            try:
                outcome, connection = self._store(user, pending)
                break
            except Conflict:
                continue  # the connection changed under us (a refresh, a disconnect): read it again
        else:
            raise Conflict(f"connection for claim kept changing (user {user.id})")
        self._claims.take(pending.code_hash)
        if connection.is_active:
            self._jobs.enqueue_sync(SyncJob(user.id, connection.id, reason=outcome))
        log.info("connection %s", outcome, extra={"user_id": user.id, "connection_id": connection.id})
        return Claimed(outcome, connection)

    def _pending_for(self, user: User, code: str) -> PendingClaim:
        pending = self._claims.get(_ref(code)) if code else None
        if pending is None:
            raise ClaimExpired()
        if pending.expires_at <= self._clock.now():
            self._discard(pending)
            raise ClaimExpired()
        if pending.user_id != user.id:
            # Someone else's sign-in landed in this browser: destroy it, connect nothing.
            self._discard(pending)
            log.warning("claim by another user refused", extra={"user_id": user.id})
            raise ClaimMismatch()
        return pending

    def _reconnect_target(self, pending: PendingClaim, existing: list[Connection]) -> Connection | None:
        """The connection a reconnect sign-in replaces (None: not a reconnect, or it is gone). A
        different Microsoft account than it had: the sign-in is destroyed and AccountMismatch raised."""
        if pending.reconnect_id is None:
            return None
        target = next((c for c in existing if c.id == pending.reconnect_id), None)
        if target is not None and target.home_account_id != pending.home_account_id:
            self._discard(pending)
            raise AccountMismatch()
        return target

    def _store(self, user: User, pending: PendingClaim) -> tuple[str, Connection]:
        existing = self._connections.list_for_user(user.id)
        target = self._reconnect_target(pending, existing)
        if target is None:
            target = next((c for c in existing if c.home_account_id == pending.home_account_id), None)

        now = self._clock.now()
        new_id = _connection_id(pending)
        # The calendar probe decided: a mailbox Graph cannot read is stored in Error with the reason
        # (the user sees what their admin must do); reconnecting once it is fixed restores it.
        status, reason_code = ((ConnectionStatus.ERROR, "calendar_unavailable") if pending.calendar_unavailable
                               else (ConnectionStatus.ACTIVE, None))
        if target is not None:
            outcome = "connected" if target.id == new_id else "reconnected"
            if target.secret_name == pending.secret_name:
                return outcome, target  # a retry of this very claim: already stored
            if status is ConnectionStatus.ACTIVE:
                self._health.restored(target)  # queued first: a retried claim repeats it, same id
            updated = self._connections.update(replace(
                target,
                email=pending.email,
                status=status,
                reason_code=reason_code,
                secret_name=pending.secret_name,
                last_refreshed_at=now,
                access_expires_at=pending.access_expires_at,
                transient_failure_since=None,
                transient_failures=0,
                failure_class=None,
                failure_code=None,
                sync_failing_since=None,
                login_hint=pending.login_hint or target.login_hint,
            ))
            # The replaced cache; should this fail, the reconciler deletes it (no row names it).
            self._secrets.delete(target.secret_name)
            return outcome, updated
        new = Connection(
            id=new_id,
            user_id=user.id,
            email=pending.email,
            home_account_id=pending.home_account_id,
            tenant_id=pending.tenant_id,
            status=status,
            reason_code=reason_code,
            secret_name=pending.secret_name,
            connected_at=now,
            last_refreshed_at=now,
            access_expires_at=pending.access_expires_at,
            login_hint=pending.login_hint or None,
        )
        try:
            return "connected", self._connections.add(new, user.plan)
        except PlanLimitExceeded:
            self._discard(pending)
            raise

    def purge_expired(self) -> int:
        """Every page of both walks in one run (tests, small deployments); the `refresh_tokens` timer
        walks them a page per queue message instead (shared/services/fanout.py). Returns rows purged."""
        purged = 0
        for walk in (self.purge_flows_page, self.purge_claims_page):
            page = FanOutPage(kind="", continuation=None, started_at=self._clock.now())
            while True:
                step = walk(page, 200)
                purged += step.done
                if step.continuation is None:
                    break
                page = replace(page, continuation=step.continuation)
        return purged

    def purge_flows_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of abandoned sign-ins (flow rows past their ten minutes), deleted."""
        return self._flows.purge_expired_page(self._clock.now(), page.continuation, size)

    def purge_claims_page(self, page: FanOutPage, size: int) -> WalkStep:
        """One page of unclaimed sign-ins: the token cache goes before the row that names it (unless a
        connection names it), so a page that fails half-way leaves the row for the retry to finish."""
        found = self._claims.expired_page(self._clock.now(), page.continuation, size)
        failed = 0
        for pending in found.items:
            try:
                if not self._in_use(pending):
                    self._secrets.delete(pending.secret_name)
                self._claims.remove(pending.code_hash)
            except Exception as exc:  # one row never stops the walk: the next hour looks again
                failed += 1
                log.error("expired claim not purged: %s", type(exc).__name__,
                          extra={"user_id": pending.user_id, "event": "walk_row_failed"})
        return WalkStep(len(found.items) + found.unreadable, len(found.items) - failed, found.continuation,
                        found.unreadable + failed)

    def _in_use(self, pending: PendingClaim) -> bool:
        """Whether a connection already names this claim's token cache: a claim interrupted after it
        stored the connection and before it used the claim up leaves the claim row behind, and that
        cache is now the connection's live one (only the row may go)."""
        return any(c.secret_name == pending.secret_name for c in self._connections.list_for_user(pending.user_id))

    def _discard(self, pending: PendingClaim) -> None:
        """Use up the claim, then delete its cache (should that fail, no row names the cache any more
        and the reconciler deletes it). Only the caller that took the row deletes the cache."""
        if self._claims.take(pending.code_hash) is not None and not self._in_use(pending):
            self._secrets.delete(pending.secret_name)


def _connection_id(pending: PendingClaim) -> str:
    """A new connection's id, derived from its claim (the code's hash, itself never shown)."""
    return hashlib.sha256(f"connection:{pending.code_hash}".encode()).hexdigest()[:32]


def _sign_in_error(error: str, description: str | None) -> CallbackResult:
    # The authorize endpoint's error redirect carries only `error` and `error_description` (no
    # error_codes), so the AADSTS number in the text is all there is here.
    code = aadsts_code(description)
    failure = classify_token_error("invalid_grant", description) if code else None
    if failure is not None and failure.fixed_by is FixedBy.ADMIN and failure.reason is not None:
        return CallbackResult(Outcome.BLOCKED, failure.reason.code)
    if error == "access_denied" and code in (None, "65004"):
        return CallbackResult(Outcome.CANCELLED, "user_cancelled")
    if error == "consent_required" or code == "65001":
        return CallbackResult(Outcome.BLOCKED, "admin_approval_required")
    return CallbackResult(Outcome.FAILED, f"aadsts_{code}" if code else "sign_in_error")


def redirect_url(page: str, result: CallbackResult) -> str:
    """Where the browser goes after the callback: always the configured page, never a URL from the
    request; carries the outcome and, on success, only the one-time claim code."""
    params = {"outlook": result.outcome.value}
    if result.claim:
        params["claim"] = result.claim
    if result.reason:
        params["reason"] = result.reason
    sep = "&" if "?" in page else "?"
    return f"{page}{sep}{urlencode(params)}"

