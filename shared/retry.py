"""The one retry toolkit: back-off steps, retry budgets and `Retry-After`.

Every retry in the service (Graph calls inside a run, agent API deploys and recalls, status event
deliveries, sync jobs that met a passing failure) takes its waits from `Backoff` and reads a server's
`Retry-After` with `retry_after`, so there is one formula and one parser to reason about.

- `Backoff(base, cap, attempts, jitter)`: the wait after failed attempt n (1-based) is
  base * 2^(n-1), at most `cap`; with `jitter`, multiplied by a random factor in [1, 1 + jitter) so
  many workers retrying together spread out (AWS Architecture Blog, "Exponential Backoff And
  Jitter"). `attempts` is the budget: `gives_up(n)` once n attempts have failed, and the caller then
  tells someone (the user, or the operator with an ERROR log) instead of trying again.
- `CONFLICT_ATTEMPTS` and `kept_changing(what)`: optimistic concurrency on a row written with its
  ETag (Table Storage's If-Match, answered 412 and raised as `shared.ports.Conflict`): a
  read-decide-write loop runs `for _ in range(CONFLICT_ATTEMPTS)`, a lost write `continue`s to read
  again, and when every write lost the loop ends with `raise kept_changing("meeting <key>")` for
  the caller (a queue job's retry, an HTTP 409/503) — or, where giving up is harmless, logs it.
- `retry_after(value, now, cap)`: RFC 9110 section 10.2.3, delay-seconds or an HTTP-date, as a
  wait clamped to [0, cap]; None when absent or unusable (NaN, negative, garbage, a date without a
  zone), so the caller falls back to its back-off.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# How many times a read-decide-write on one row is tried when other writers keep winning.
CONFLICT_ATTEMPTS = 8


def kept_changing(what: str) -> Exception:
    """The Conflict to raise when every one of CONFLICT_ATTEMPTS writes of `what` lost to another."""
    from shared.ports import Conflict  # the domain's port error; retry.py stays importable alone

    return Conflict(f"{what} kept changing")


@dataclass(frozen=True)
class Backoff:
    base: timedelta
    cap: timedelta
    attempts: int | None = None  # None: no budget of its own (bounded by something else, e.g. a meeting's end)
    jitter: float = 0.0  # 0.5 = up to 50 % more

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt `attempt` (1-based): base, 2x, 4x... at most `cap` (before jitter)."""
        doublings = min(max(attempt - 1, 0), 40)
        step = min(self.base * (1 << doublings), self.cap)
        if self.jitter > 0:
            step = step * random.uniform(1.0, 1.0 + self.jitter)
        return step

    def gives_up(self, attempt: int) -> bool:
        """True once `attempt` failed attempts used the budget up (never without a budget)."""
        return self.attempts is not None and attempt >= self.attempts


def retry_after(
    value: str | None, now: datetime | None = None, cap: timedelta = timedelta(hours=1)
) -> timedelta | None:
    """A `Retry-After` header value as a wait (RFC 9110 10.2.3: delay-seconds or an HTTP-date),
    clamped to [0, cap]; None when absent or unusable."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # RFC 9110: an HTTP-date is always GMT
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        seconds = max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), cap)
