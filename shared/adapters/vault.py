"""Azure Key Vault: the app's own secrets, the key that wraps the data keys of the sealed
per-connection secrets (shared.adapters.envelope), and, while they are migrated, the per-connection
token caches of the old layout (one secret each).

Deletion is soft in Key Vault (recoverable for the retention period); purging is permanent and only
allowed when the vault has no purge protection (`recoveryLevel` "Recoverable+Purgeable"), see
https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview. Token caches are never
recovered by the app, so a deleted one is purged whenever the vault allows it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient

from shared.ports import StoredSecret
from shared.redaction import register_secret

log = logging.getLogger(__name__)


class KeyVaultSecrets:
    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def get(self, name: str) -> str | None:
        try:
            return self._client.get_secret(name).value
        except ResourceNotFoundError:
            return None

    def set(self, name: str, value: str, owner: str = "") -> None:
        """`owner` is not kept: Key Vault holds the app's own secrets, which no walk judges."""
        self._client.set_secret(name, value, content_type="application/json")

    def delete(self, name: str) -> None:
        """Soft delete, then purge where the vault allows it. The name is never reused. Nothing when
        the secret is already gone (a retry of an erasure or a disconnect)."""
        try:
            poller = self._client.begin_delete_secret(name)
        except ResourceNotFoundError:
            log.info("secret already deleted", extra={"secret_name": name})
            self._purge(name)
            return
        # result() is the DELETE answer (no waiting); purge only once the deletion has completed.
        if "Purgeable" in (poller.result().properties.recovery_level or ""):
            poller.wait(timeout=60)
            self._purge(name)

    def _purge(self, name: str) -> None:
        try:
            self._client.purge_deleted_secret(name)
        except ResourceNotFoundError:
            pass  # purged already, or never soft-deleted
        except HttpResponseError as exc:
            if exc.status_code != 403:  # 403: purge protection; it is purged when retention ends
                raise
            log.info("secret deleted; purge protection keeps it until retention ends", extra={"secret_name": name})

    def list(self, prefix: str) -> Iterator[StoredSecret]:
        for props in self._client.list_properties_of_secrets():
            if props.name and props.name.startswith(prefix):
                yield StoredSecret(name=props.name, created_at=props.created_on)

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise RuntimeError(f"Key Vault secret {name!r} is missing or empty")
        register_secret(value)  # an app secret: never shown in a log line or an exception text
        return value


class AppSecret:
    """One of the app's own secrets (the Outlook client secret, the agent API key), read from Key
    Vault on first use and kept for the process; `reload()` forgets it, so a rotated secret is picked
    up without a restart when the old one is refused."""

    def __init__(self, vault: KeyVaultSecrets, name: str) -> None:
        self._vault = vault
        self._name = name
        self._value: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._value is None:
                self._value = self._vault.require(self._name)
            return self._value

    def reload(self) -> None:
        with self._lock:
            self._value = None


class KeyVaultKeyWrapper:
    """Wraps and unwraps data keys with one Key Vault RSA key, RSA-OAEP-256
    (https://learn.microsoft.com/rest/api/keyvault/keys/wrap-key/wrap-key). Needs the keys get,
    wrapKey and unwrapKey permissions on that key only ("Key Vault Crypto Service Encryption User").

    Wrapping uses the public key of the current version, fetched once per process (one GetKey) and
    applied locally by the SDK; unwrapping is a Key Vault operation (the private key never leaves the
    vault), made once per data key per process by the caller's cache. Raises the SDK's
    HttpResponseError when the vault refuses (no access, a wrong or disabled key version, a tampered
    value) or does not answer."""

    def __init__(self, keys: KeyClient, name: str, credential: Any, **client_kwargs: Any) -> None:
        self._keys = keys
        self._name = name
        self._credential = credential
        self._kwargs = client_kwargs
        self._current: CryptographyClient | None = None
        self._by_id: dict[str, CryptographyClient] = {}
        self._lock = threading.Lock()

    def current_key_id(self) -> str:
        """The key's current version's id; read from the vault each time (rotation is rare, this is
        called once a day by the re-wrap and when a process makes a data key)."""
        key = self._keys.get_key(self._name)
        with self._lock:
            if self._current is None or self._current.key_id != key.id:
                self._current = CryptographyClient(key, self._credential, **self._kwargs)
        return str(key.id)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        self.current_key_id()
        assert self._current is not None
        result = self._current.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, data_key)
        return str(result.key_id), bytes(result.encrypted_key)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        with self._lock:
            client = self._by_id.get(key_id)
            if client is None:
                client = self._by_id[key_id] = CryptographyClient(key_id, self._credential, **self._kwargs)
        return bytes(client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key)
