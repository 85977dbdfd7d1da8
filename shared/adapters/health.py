"""Which of the app's dependencies answer now: one cheap probe each (Table Storage, Queue Storage,
Key Vault), run side by side under one deadline, so `GET /api/health` names the one that is down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

log = logging.getLogger(__name__)

OK = "ok"
DOWN = "down"
DEADLINE_SECONDS = 10.0  # an SDK retrying against a dead endpoint would otherwise hold the probe
MAX_AGE_SECONDS = 15.0  # how long a report answers /api/health before the dependencies are probed again


@dataclass(frozen=True)
class HealthReport:
    dependencies: dict[str, str]  # name -> "ok" | "down"
    problems: dict[str, str]  # name -> exception type (never its message: it may hold a URL)

    @property
    def healthy(self) -> bool:
        return all(state == OK for state in self.dependencies.values())


class HealthCheck:
    """Probes are callables that raise when their dependency cannot be used (any return value is
    ignored); one that has not answered within `deadline` seconds counts as down ("Timeout")."""

    def __init__(self, probes: Mapping[str, Callable[[], object]], deadline: float = DEADLINE_SECONDS,
                 max_age: float = MAX_AGE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._probes = dict(probes)
        self._deadline = deadline
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, HealthReport] | None = None

    def report(self) -> HealthReport:
        """The last report while it is younger than `max_age` seconds, else a fresh one; one probe run
        at a time per process. The route is anonymous: a flood of requests must not become a flood of
        Key Vault reads, which every user's token refresh shares."""
        with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self._max_age:
                return self._last[1]
            fresh = self.run()
            self._last = (self._clock(), fresh)
            return fresh

    @property
    def names(self) -> list[str]:
        return list(self._probes)

    def run(self) -> HealthReport:
        pool = ThreadPoolExecutor(max_workers=max(len(self._probes), 1), thread_name_prefix="health")
        try:
            futures = {name: pool.submit(probe) for name, probe in self._probes.items()}
            wait(futures.values(), timeout=self._deadline)
            dependencies: dict[str, str] = {}
            problems: dict[str, str] = {}
            for name, future in futures.items():
                if not future.done():
                    dependencies[name], problems[name] = DOWN, "Timeout"
                elif (error := future.exception()) is not None:
                    dependencies[name], problems[name] = DOWN, type(error).__name__
                else:
                    dependencies[name] = OK
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if problems:
            log.warning("health: dependencies down: %s", ", ".join(sorted(problems)),
                        extra={"dependencies_down": ",".join(sorted(problems))})
        return HealthReport(dependencies, problems)
