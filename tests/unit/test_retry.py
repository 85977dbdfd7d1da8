"""The one retry toolkit (shared/retry.py): every back-off and every Retry-After goes through it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters import graph, platform_events
from shared.retry import Backoff, retry_after
from shared.scheduling import retry_delay

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    steps = Backoff(base=timedelta(seconds=30), cap=timedelta(minutes=5))
    assert [steps.delay(n).total_seconds() for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]


def test_a_budget_gives_up_after_its_attempts_and_none_never_does() -> None:
    budget = Backoff(base=timedelta(seconds=1), cap=timedelta(seconds=8), attempts=3)
    assert [budget.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert not Backoff(base=timedelta(seconds=1), cap=timedelta(seconds=8)).gives_up(10_000)


def test_jitter_only_lengthens_a_wait_and_by_at_most_its_share() -> None:
    steps = Backoff(base=timedelta(seconds=4), cap=timedelta(seconds=30), jitter=0.5)
    waits = [steps.delay(1).total_seconds() for _ in range(200)]
    assert all(4 <= w < 6 for w in waits)


@pytest.mark.parametrize(("header", "expected"), [
    ("120", timedelta(seconds=120)),
    ("0", timedelta(0)),
    ("Mon, 02 Mar 2026 09:01:30 GMT", timedelta(seconds=90)),
    ("Mon, 02 Mar 2026 08:00:00 GMT", timedelta(0)),  # a date in the past: at once
    ("999999999", timedelta(hours=1)),  # capped
    ("soon", None), ("-5", None), ("nan", None), ("", None), (None, None),
])
def test_retry_after_reads_seconds_and_http_dates_and_refuses_garbage(
        header: str | None, expected: timedelta | None) -> None:
    assert retry_after(header, NOW) == expected


def test_the_callers_share_the_toolkit() -> None:
    # Agent API retries, status events and Graph all take their waits from Backoff/retry_after.
    assert retry_delay(3, 15) == timedelta(seconds=60)
    assert platform_events.retry_after({"Retry-After": "7"}, NOW) == timedelta(seconds=7)
    assert graph.retry_after("7", 1) == 7.0
    assert 1.0 <= graph.retry_after("garbage", 1) < 1.5  # the back-off, with jitter

