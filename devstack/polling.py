"""Waiting for a condition on the local stack: poll it with a deadline, never sleep a fixed time.

The one polling loop the tests, the benchmarks and the scenarios share (each keeps its own error:
tests fail with AssertionError, command-line scenarios exit with SystemExit). Deadlines are on the
monotonic clock; a probe is always tried once more at the deadline, so a slow machine is not failed
by its own last sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(probe: Callable[[], T], timeout: float, every: float = 0.2) -> T:
    """`probe()` every `every` seconds until it returns something truthy, or `timeout` seconds have
    passed: its last answer either way (falsy when time ran out)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.2,
          error: Callable[[str], BaseException] = AssertionError) -> T:
    """`poll`, raising `error("<what> did not happen within <timeout> s")` when time ran out."""
    value = poll(probe, timeout, every)
    if not value:
        raise error(f"{what} did not happen within {timeout:.0f} s")
    return value
