"""Keeping secrets out of logs and exception text.

Every log record passes `scrub` (installed as the logging record factory, so handlers added later by
the Functions worker or OpenTelemetry see scrubbed records too): bearer tokens, JWTs, OAuth fields in
URLs, forms and JSON (RFC 6749: `code`, `refresh_token`, `access_token`, `client_secret`...), Standard
Webhooks secrets (`whsec_`), and every secret value the app has read from Key Vault are replaced."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any

_REDACTED = "[redacted]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + _REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), _REDACTED),
    (re.compile(r"(?i)\b(code|refresh_token|access_token|id_token|client_secret|client_assertion|claim|state|"
                r"token|password|sig|signature|api[_-]?key|code_verifier|validationtoken|zak|tk)=([^&\s'\"<>]+)"),
     r"\1=" + _REDACTED),
    (re.compile(r"(?i)\"(refresh_token|access_token|id_token|client_secret|secret|password|api_key|value|"
                r"clientState)\"\s*:\s*\"[^\"]*\""), r'"\1": "' + _REDACTED + '"'),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), _REDACTED),
)
_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """A secret value the app holds (read from Key Vault): never shown verbatim anywhere."""
    if value and len(value) >= 8:
        with _lock:
            _known.add(value)
            for line in value.splitlines():  # a value with a newline reaches text split across lines
                if len(line.strip()) >= 8:
                    _known.add(line.strip())


def scrub(text: str) -> str:
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_installed = False


def install() -> None:
    """Scrub every log record from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)
