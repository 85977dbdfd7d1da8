"""Azure Key Vault: per-connection MSAL token caches and the app's own secrets."""

from __future__ import annotations

import logging

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

log = logging.getLogger(__name__)


class KeyVaultSecrets:
    def __init__(self, client: SecretClient) -> None:
        self._client = client

    def get(self, name: str) -> str | None:
        try:
            return self._client.get_secret(name).value
        except ResourceNotFoundError:
            return None

    def set(self, name: str, value: str) -> None:
        self._client.set_secret(name, value, content_type="application/json")

    def delete(self, name: str) -> None:
        """Soft delete (recoverable for the retention period). The name is never reused."""
        try:
            self._client.begin_delete_secret(name)
        except ResourceNotFoundError:
            log.info("secret already gone", extra={"secret_name": name})

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise RuntimeError(f"Key Vault secret {name!r} is missing or empty")
        return value
