"""What the sample functions were called with, kept in the host process and served by GET /api/calls."""

import threading
from typing import Any

_lock = threading.Lock()
_calls: list[dict[str, Any]] = []


def record(function: str, **details: Any) -> None:
    with _lock:
        _calls.append({"function": function, **details})


def calls() -> list[dict[str, Any]]:
    with _lock:
        return list(_calls)
