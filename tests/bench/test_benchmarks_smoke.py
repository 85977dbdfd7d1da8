"""Every benchmark `make bench` runs, at a tiny size, so a change that breaks one fails `make test`
(they rotted once: bench_punctuality failed for weeks because nothing ran it). Each runs its real
`main` (the local stack where the benchmark uses one) and must exit 0: for the benchmarks that
check answers (links found, deployments on time and only for the right meetings, no misses), 0
means the answers were right."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bench import bench_cost, bench_meeting_links, bench_notifications, bench_punctuality, bench_sync, load

TINY: dict[str, tuple[Callable[[list[str] | None], int], list[str]]] = {
    "meeting_links": (bench_meeting_links.main, ["--events", "200", "--rounds", "1"]),
    "sync": (bench_sync.main, ["--connections", "4", "--workers", "4", "--per-day", "2", "--time-limit", "10"]),
    "punctuality": (bench_punctuality.main, ["--meetings", "12", "--span", "10", "--drain", "2"]),
    "notifications": (bench_notifications.main, ["--changes", "3", "--last-minute", "0", "--asap", "0"]),
    "cost": (bench_cost.main, ["--connections", "2", "--events", "4"]),
    # `make load` (not in `make bench`: minutes at its size), with every phase at a handful.
    "load": (load.main, ["--connections", "3", "--events", "4", "--instances", "1", "--workers", "3",
                         "--idle-seconds", "1", "--probe-calibration", "2", "--churn-seconds", "4",
                         "--churn-rate", "1", "--reconnects", "1", "--reauthorizations", "2", "--quiet", "1",
                         "--sample-seconds", "1", "--limit", "400"]),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(TINY))
def test_the_benchmark_runs_at_a_tiny_size(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    main, argv = TINY[name]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.strip(), "a benchmark prints its figures"
    if name == "cost":  # its last line is the figures as JSON, measured at the shipped defaults
        last = json.loads(out.strip().splitlines()[-1])
        assert last["defaults"] is True
        for key in ("usd_per_1000_connections_month", "graph_requests_per_connection_day",
                    "key_vault_ops_per_connection_day"):
            assert isinstance(last[key], int | float) and last[key] >= 0
    if name == "load":  # every change it made was listed; its figures end the output as JSON
        last = json.loads(out.strip().splitlines()[-1])
        assert last["defaults"] is True and last["connections"] == 3 and last["unlisted"] == 0
        assert last["changes"] >= 1 and last["p95_change_to_listed_seconds"] > 0
        for key in ("cpu_seconds_per_connection_day", "graph_requests_per_connection_day",
                    "storage_transactions_per_connection_day", "usd_per_1000_connections_month", "peak_rss_mb"):
            assert isinstance(last[key], int | float) and last[key] > 0
        assert set(last["first_limit"]) == {"10000", "100000", "1000000"}
