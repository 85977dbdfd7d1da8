"""Verifying the agent platform's signed statuses (`POST /api/agents/status`).

The agent platform signs each status as the Standard Webhooks specification says
(https://www.standardwebhooks.com/, `webhook-id`, `webhook-timestamp`, `webhook-signature` =
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`) with a `whsec_<base64>` secret kept in Key
Vault under AGENT_STATUS_SECRET_NAME (its own secret: not the status events one). The
`standardwebhooks` library checks the signature and refuses a timestamp more than 5 minutes from
now either way. A signature that does not verify makes the secret be read from Key Vault again (it may
have been rotated) at most once a minute, so anonymous callers cannot turn bad signatures into a flood
of Key Vault reads. The secret never appears in a log line or an exception."""

from __future__ import annotations

import binascii
import logging
import threading
import time
from collections.abc import Callable, Mapping

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

log = logging.getLogger(__name__)

RELOAD_AT_MOST_EVERY = 60.0  # seconds


class SignatureRejected(Exception):
    """Missing, malformed, stale or wrong signature (401). The message is safe to return."""


class StatusSignatures:
    def __init__(self, secret: Callable[[], str], *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._reloaded_at: float | None = None

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The verified `webhook-id`; raises SignatureRejected."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if not (lowered.get("webhook-id") and lowered.get("webhook-timestamp") and lowered.get("webhook-signature")):
            raise SignatureRejected("Missing webhook-id, webhook-timestamp or webhook-signature")
        problem = self._check(body, lowered)
        if problem is not None and self._reload():
            problem = self._check(body, lowered)
        if problem is not None:
            raise SignatureRejected(problem)
        return lowered["webhook-id"]

    def _check(self, body: bytes, headers: dict[str, str]) -> str | None:
        try:
            secret = self._secret()
        except RuntimeError:
            log.error("agent_status_secret_missing: the agent status secret is not in Key Vault; every "
                      "agent status is refused", extra={"event": "agent_status_secret_missing"})
            return "The service cannot verify agent statuses yet"
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            return f"Signature refused: {exc}"
        except EmptyWebhookSecretError:
            log.error("agent_status_secret_missing: the agent status secret is empty",
                      extra={"event": "agent_status_secret_missing"})
            return "The service cannot verify agent statuses yet"
        except (ValueError, binascii.Error, UnicodeDecodeError, IndexError):
            return "Signature refused: malformed signature header or body"
        return None

    def _reload(self) -> bool:
        """Forget the kept secret (rotation) when it was not done in the last minute; True if done."""
        reload = getattr(self._secret, "reload", None)
        if reload is None:
            return False
        with self._lock:
            now = self._monotonic()
            if self._reloaded_at is not None and now - self._reloaded_at < RELOAD_AT_MOST_EVERY:
                return False
            self._reloaded_at = now
        reload()
        return True
