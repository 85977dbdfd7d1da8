"""What the local Functions host reads before it runs anything: host.json, app settings.

host.json keys honoured: `extensions.http.routePrefix` (default "api"), `extensions.queues`
(`maxPollingInterval` default 1 minute, `visibilityTimeout` default 0, `batchSize` default 16,
`newBatchThreshold` default batchSize/2, `maxDequeueCount` default 5, `messageEncoding` default
base64), `singleton` (`listenerLockPeriod` default 1 minute, 15 s to 1 minute as a blob lease;
`listenerLockRecoveryPollingInterval` default 1 minute: the Azure host's SingletonOptions defaults,
which make timers singletons across instances) and `functionTimeout`. Durations are TimeSpans
("00:00:02", "1.00:00:00") or numbers of milliseconds. Other keys are ignored.

As in Azure, an app setting `AzureFunctionsJobHost__<path>` overrides the host.json value at that
path (`__` separates levels, names case-insensitive), e.g.
`AzureFunctionsJobHost__singleton__listenerLockPeriod=00:00:15`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")


def parse_timespan(value: Any, *, what: str) -> float:
    """Seconds in a .NET TimeSpan string ("00:00:02", "1.02:00:00") or a number of milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a TimeSpan like '00:00:02', got {value!r}")
    if isinstance(value, (int, float)):
        return float(value) / 1000
    if isinstance(value, str):
        found = _TIMESPAN.match(value.strip())
        if found:
            days = int(found.group("days") or 0)
            return days * 86_400 + int(found.group("h")) * 3600 + int(found.group("m")) * 60 + float(found.group("s"))
    raise ValueError(f"{what}: expected a TimeSpan like '00:00:02', got {value!r}")


@dataclass(frozen=True)
class QueueOptions:
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    message_encoding: str = "base64"
    min_polling_interval: float = 0.1


@dataclass(frozen=True)
class SingletonOptions:
    """The timer listener lock: held by one instance, renewed at half its period; the others try
    again every recovery interval, so a crashed holder's timers resume within period + interval."""

    listener_lock_period: float = 60.0
    listener_lock_recovery_polling_interval: float = 60.0


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: float | None = None  # seconds; None when unlimited or unset
    singleton: SingletonOptions = field(default_factory=SingletonOptions)


_OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """host.json with each `AzureFunctionsJobHost__a__b` app setting written at path a.b."""
    for name, value in environ.items():
        if not name.startswith(_OVERRIDE_PREFIX) or not value:
            continue
        path = [part for part in name[len(_OVERRIDE_PREFIX):].split("__") if part]
        node = raw
        for part in path[:-1]:
            key = next((k for k in node if k.lower() == part.lower()), part)
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        if path:
            leaf = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
            node[leaf] = value
    return raw


def _get(section: dict[str, Any], key: str, default: Any) -> Any:
    """A host.json value, its name matched without regard to case (as the Functions host does)."""
    return next((v for k, v in section.items() if k.lower() == key.lower()), default)


def load_host_config(script_root: Path, environ: Mapping[str, str] | None = None) -> HostConfig:
    path = script_root / "host.json"
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    raw = apply_overrides(raw, os.environ if environ is None else environ)
    extensions = raw.get("extensions") or {}
    http = extensions.get("http") or {}
    route_prefix = str(http.get("routePrefix", "api")).strip("/")
    queues_raw = extensions.get("queues") or {}
    batch_size = int(queues_raw.get("batchSize", 16))
    if not 1 <= batch_size <= 32:
        raise ValueError(f"host.json extensions.queues.batchSize must be 1-32, got {batch_size}")
    queues = QueueOptions(
        max_polling_interval=parse_timespan(
            queues_raw.get("maxPollingInterval", "00:01:00"), what="extensions.queues.maxPollingInterval"
        ),
        visibility_timeout=parse_timespan(
            queues_raw.get("visibilityTimeout", "00:00:00"), what="extensions.queues.visibilityTimeout"
        ),
        batch_size=batch_size,
        new_batch_threshold=int(queues_raw.get("newBatchThreshold", batch_size // 2)),
        max_dequeue_count=int(queues_raw.get("maxDequeueCount", 5)),
        message_encoding=str(queues_raw.get("messageEncoding", "base64")).lower(),
    )
    if queues.message_encoding not in ("base64", "none"):
        raise ValueError("host.json extensions.queues.messageEncoding must be 'base64' or 'none'")
    timeout_raw = raw.get("functionTimeout")
    timeout = None
    if timeout_raw is not None and str(timeout_raw).strip() != "-1":
        timeout = parse_timespan(timeout_raw, what="functionTimeout")
    singleton_raw = _get(raw, "singleton", None) or {}
    singleton = SingletonOptions(
        listener_lock_period=parse_timespan(
            _get(singleton_raw, "listenerLockPeriod", "00:01:00"), what="singleton.listenerLockPeriod"
        ),
        listener_lock_recovery_polling_interval=parse_timespan(
            _get(singleton_raw, "listenerLockRecoveryPollingInterval", "00:01:00"),
            what="singleton.listenerLockRecoveryPollingInterval",
        ),
    )
    if not 15 <= singleton.listener_lock_period <= 60:
        raise ValueError("host.json singleton.listenerLockPeriod must be 00:00:15 to 00:01:00 (a blob lease)")
    if singleton.listener_lock_recovery_polling_interval < 1:
        raise ValueError("host.json singleton.listenerLockRecoveryPollingInterval must be at least 00:00:01")
    return HostConfig(route_prefix=route_prefix, queues=queues, function_timeout=timeout, singleton=singleton)


def load_local_settings(script_root: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy local.settings.json `Values` into the environment without overriding it (like Core Tools).

    Returns the names that were set.
    """
    path = script_root / "local.settings.json"
    if not path.exists():
        return []
    values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    added = []
    for name, value in values.items():
        if name not in environ and value is not None:
            environ[name] = str(value)
            added.append(name)
    return added


_SETTING = re.compile(r"%([^%]+)%")


def resolve_settings(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace `%NAME%` with the app setting NAME, as binding expressions are resolved at start."""
    env = os.environ if environ is None else environ

    def setting(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in env:
            raise LookupError(f"'%{name}%' does not resolve to a value: app setting {name} is not set")
        return env[name]

    return _SETTING.sub(setting, value)
