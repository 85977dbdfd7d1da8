"""Per-connection secrets (MSAL token caches, Graph subscriptions' clientState values) sealed with
envelope encryption and kept in Table Storage, so that Key Vault sees a handful of operations a day
whatever the number of connections.

- A **data key** (256-bit, AES-GCM) encrypts the secrets. Data keys are stored only wrapped, by a
  Key Vault RSA **key** (RSA-OAEP-256, `KeyWrapper`), in the `datakeys` table; the unwrapped data key
  is kept in this process's memory, so one unwrap serves every secret a process reads under that data
  key (https://learn.microsoft.com/azure/security/fundamentals/encryption-atrest#envelope-encryption-with-a-key-hierarchy).
- A **sealed secret** is one `sealedsecrets` row per name: the data key's id, a fresh 96-bit nonce and
  the AES-GCM ciphertext with its tag. The associated data binds the ciphertext to the secret's name
  (the token cache name that exactly one connection row or pending claim holds) and to the data key
  id: a ciphertext copied onto another connection's row, or tampered with, fails authentication.
- **Rotation.** A data key is used for new writes for at most `DATA_KEY_MAX_AGE`, then a new one is
  made (random nonces stay far below NIST SP 800-38D's 2^32 encryptions per key); older data keys
  stay readable, and a secret moves to the newest one at its next write. `rewrap()` re-wraps every
  data key under the Key Vault key's current version (after a key rotation); no secret is rewritten.
- **Migration** from the old layout (one Key Vault secret per name): `get` falls back to the legacy
  vault for a name not sealed yet, and `migrate_legacy` seals one page of legacy secrets and deletes
  them (purged where the vault allows); both are safe to repeat and never overwrite a newer sealed
  value.

Errors: a ciphertext that fails authentication (tampered, copied to another name, or sealed under a
data key that no longer unwraps to the one used) is reported as `None` from `get` with an error log
(the connection then asks its user to reconnect); Key Vault failures (the key refused, unreachable)
raise, so the job is retried and the operator sees it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.ports import Conflict, Page, StoredSecret

log = logging.getLogger(__name__)

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
# Writes under one data key: at 1M connections x ~20 cache writes a day, 30 days = 6e8 encryptions,
# well under the 2^32 random-nonce bound for AES-GCM (NIST SP 800-38D, 8.3).
DATA_KEY_MAX_AGE = timedelta(days=30)
# How long a process trusts its idea of the newest data key before reading the table again.
ACTIVE_RECHECK = timedelta(minutes=10)
_AAD_PREFIX = b"coagentor-outlook/sealed-secret/v1\x00"


class KeyWrapper(Protocol):
    """A Key Vault key that wraps data keys (shared.adapters.vault.KeyVaultKeyWrapper)."""

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """(key id with version, wrapped data key), under the key's current version."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key; raises when the vault refuses (wrong key, tampered value, no access)."""
        ...

    def current_key_id(self) -> str:
        """The key's current version's id."""
        ...


@dataclass(frozen=True)
class WrappedDataKey:
    id: str  # sortable by creation: "YYYYmmddTHHMMSS-<hex>"
    key_id: str  # the Key Vault key version that wrapped it
    wrapped: bytes
    created_at: datetime
    etag: str | None = None


@dataclass(frozen=True)
class SealedRow:
    name: str
    data_key_id: str
    nonce: bytes
    ciphertext: bytes
    updated_at: datetime
    owner: str = ""  # the user id whose rows name it ("" on rows written before owners were kept)


class DataKeyRows(Protocol):
    """The `datakeys` table (shared.adapters.tables.TableDataKeys)."""

    def all(self) -> list[WrappedDataKey]: ...
    def get(self, data_key_id: str) -> WrappedDataKey | None: ...
    def create(self, key: WrappedDataKey) -> None: ...
    def replace(self, key: WrappedDataKey) -> None:
        """Raises shared.ports.Conflict when the row changed since it was read (ETag)."""
        ...


class SealedRows(Protocol):
    """The `sealedsecrets` table (shared.adapters.tables.TableSealedSecrets)."""

    def get(self, name: str) -> SealedRow | None: ...
    def put(self, row: SealedRow) -> None: ...
    def create(self, row: SealedRow) -> bool:
        """Insert only if absent; False when a row exists (a newer value is never overwritten)."""
        ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[SealedRow]: ...
    def page(self, prefix: str, continuation: str | None, size: int) -> Page[SealedRow]: ...
    def adopt(self, name: str, owner: str) -> None:
        """Record the owner beside the row, changing nothing else; nothing when the row is absent."""
        ...


class SealedSecretUnreadable(Exception):
    """A sealed secret failed authentication: tampered, moved to another name, or the wrong key."""


class DataKeys:
    """The data keys: the newest one (made when none is younger than DATA_KEY_MAX_AGE) for writes,
    any for reads; unwrapped once per process each."""

    def __init__(self, rows: DataKeyRows, wrapper: KeyWrapper, now: Callable[[], datetime]) -> None:
        self._rows = rows
        self._wrapper = wrapper
        self._now = now
        self._plain: dict[str, bytes] = {}
        self._active: tuple[str, datetime] | None = None  # (id, when this process last looked)
        self._lock = threading.Lock()

    def active(self) -> tuple[str, bytes]:
        with self._lock:
            now = self._now()
            if self._active is None or now - self._active[1] >= ACTIVE_RECHECK:
                newest = max(self._rows.all(), key=lambda k: k.id, default=None)
                if newest is None or now - newest.created_at >= DATA_KEY_MAX_AGE:
                    newest = self._make(now)
                self._active = (newest.id, now)
            data_key_id = self._active[0]
        return data_key_id, self.plain(data_key_id)

    def plain(self, data_key_id: str) -> bytes:
        """The unwrapped data key; raises SealedSecretUnreadable when no such data key exists."""
        with self._lock:
            known = self._plain.get(data_key_id)
        if known is not None:
            return known
        row = self._rows.get(data_key_id)
        if row is None:
            raise SealedSecretUnreadable(f"data key {data_key_id} does not exist")
        plain = self._wrapper.unwrap(row.key_id, row.wrapped)
        if len(plain) != DATA_KEY_BYTES:
            raise SealedSecretUnreadable(f"data key {data_key_id} unwrapped to {len(plain)} bytes")
        with self._lock:
            self._plain[data_key_id] = plain
        return plain

    def rotate(self) -> str:
        """A new data key for the writes from now on (every process picks it up within
        ACTIVE_RECHECK); returns its id."""
        with self._lock:
            made = self._make(self._now())
            self._active = (made.id, self._now())
            return made.id

    def rewrap(self) -> int:
        """Re-wrap every data key not wrapped by the Key Vault key's current version (after the
        key was rotated); returns how many were re-wrapped. Safe to repeat and to run concurrently
        (a row changed meanwhile is left to the other writer)."""
        current = self._wrapper.current_key_id()
        done = 0
        for row in self._rows.all():
            if row.key_id == current:
                continue
            plain = self.plain(row.id)
            key_id, wrapped = self._wrapper.wrap(plain)
            try:
                self._rows.replace(WrappedDataKey(row.id, key_id, wrapped, row.created_at, row.etag))
                done += 1
            except Conflict:
                continue
        if done:
            log.info("data keys re-wrapped under the current Key Vault key version", extra={"data_keys": done})
        return done

    def _make(self, now: datetime) -> WrappedDataKey:
        plain = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
        key_id, wrapped = self._wrapper.wrap(plain)
        made = WrappedDataKey(f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}", key_id, wrapped, now)
        self._rows.create(made)
        self._plain[made.id] = plain
        log.info("new data key made", extra={"data_key_id": made.id})
        return made


class LegacySecrets(Protocol):
    def get(self, name: str) -> str | None: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[StoredSecret]: ...


class SealedSecrets:
    """The SecretStore of per-connection secrets: AES-GCM in Table Storage (see the module doc).
    Values are UTF-8 text; the ciphertext is at most one Table property (64 KiB)."""

    def __init__(self, rows: SealedRows, keys: DataKeys, now: Callable[[], datetime],
                 legacy: LegacySecrets | None = None) -> None:
        self._rows = rows
        self._keys = keys
        self._now = now
        self._legacy = legacy

    def get(self, name: str) -> str | None:
        row = self._rows.get(name)
        if row is None:
            return self._from_legacy(name)
        try:
            return self.open(row)
        except SealedSecretUnreadable as exc:
            log.error("sealed secret unreadable: %s", exc, extra={"secret_name": name, "event": "sealed_unreadable"})
            return None

    def set(self, name: str, value: str, owner: str = "") -> None:
        self._rows.put(self.seal(name, value, owner))

    def delete(self, name: str) -> None:
        """Deletes the sealed row and, while migrating, a legacy Key Vault secret of that name."""
        self._rows.delete(name)
        if self._legacy is not None:
            self._legacy.delete(name)

    def list(self, prefix: str) -> Iterator[StoredSecret]:
        for row in self._rows.list(prefix):
            yield StoredSecret(name=row.name, created_at=row.updated_at, owner=row.owner)

    def page(self, prefix: str, continuation: str | None, size: int) -> Page[StoredSecret]:
        """One page of `list` (the reconciler's walk): names, write times and owners, no values."""
        found = self._rows.page(prefix, continuation, size)
        return Page([StoredSecret(r.name, r.updated_at, r.owner) for r in found.items], found.continuation,
                    found.unreadable)

    def adopt(self, name: str, owner: str) -> None:
        self._rows.adopt(name, owner)

    def seal(self, name: str, value: str, owner: str = "") -> SealedRow:
        data_key_id, key = self._keys.active()
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, value.encode("utf-8"), _aad(name, data_key_id))
        return SealedRow(name, data_key_id, nonce, ciphertext, self._now(), owner)

    def open(self, row: SealedRow) -> str:
        key = self._keys.plain(row.data_key_id)
        try:
            plain = AESGCM(key).decrypt(row.nonce, row.ciphertext, _aad(row.name, row.data_key_id))
        except InvalidTag:
            raise SealedSecretUnreadable(f"sealed secret {row.name} failed authentication") from None
        return plain.decode("utf-8")

    def _from_legacy(self, name: str) -> str | None:
        if self._legacy is None:
            return None
        value = self._legacy.get(name)
        if value is None:
            return None
        self._migrate(name, value)
        return value

    def _migrate(self, name: str, value: str) -> None:
        assert self._legacy is not None
        self._rows.create(self.seal(name, value))  # a sealed value written meanwhile is newer: kept
        self._legacy.delete(name)

    def migrate_legacy(self, prefixes: tuple[str, ...], limit: int) -> int:
        """Seal up to `limit` legacy Key Vault secrets under these prefixes and delete them from the
        vault; returns how many were moved (0: nothing left). A secret that cannot be moved is
        logged and left for the next run; the others still move."""
        if self._legacy is None:
            return 0
        moved = 0
        for prefix in prefixes:
            for stored in self._legacy.list(prefix):
                if moved >= limit:
                    return moved
                try:
                    value = self._legacy.get(stored.name)
                    if value is not None:
                        self._migrate(stored.name, value)
                    else:
                        self._legacy.delete(stored.name)
                    moved += 1
                except Exception as exc:  # one unreadable secret never stops the migration
                    log.error("legacy secret not migrated: %s", type(exc).__name__,
                              extra={"secret_name": stored.name, "event": "legacy_migration_failed"})
        return moved


def _aad(name: str, data_key_id: str) -> bytes:
    return _AAD_PREFIX + name.encode("utf-8") + b"\x00" + data_key_id.encode("ascii")

