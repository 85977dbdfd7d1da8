"""Fixtures shared by integration and end-to-end tests: one local stack per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack, free_ports


@pytest.fixture(scope="module", autouse=True)
def erase_the_modules_users() -> Iterator[None]:
    """Users a test module connected stay connected to the shared simulated mailboxes and react to
    every later change there (syncs, deployments, events): erased when their module ends."""
    from tests.e2e.client import MINTED, erase_minted

    before = set(MINTED)
    yield
    erase_minted(before)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = Path(tmp_path_factory.mktemp("devstack"))
    overrides = {
        # Deploy immediately for meetings starting within 10 minutes; farther ones stay scheduled.
        "AGENT_JOIN_LEAD_SECONDS": "600",
        "TOKEN_REFRESH_MAX_AGE_SECONDS": "0",
        # Timers never fire on their own during tests; tests run them through the admin API.
        "REFRESH_SCHEDULE": "0 0 0 1 1 *",
        "SCAN_SCHEDULE": "0 0 0 1 1 *",
        "RECONCILE_SCHEDULE": "0 0 0 1 1 *",
        "PRUNE_SCHEDULE": "0 0 0 1 1 *",
        "WATCHDOG_SCHEDULE": "0 0 0 1 1 *",
        "SECONDARY_CALENDARS_SCHEDULE": "0 0 0 1 1 *",
        # The CoAgentor web app, as the browser tests stand it in (tests/browser/conftest.py).
        "PLATFORM_WEB_ORIGINS": "https://app.coagentor.test",
        # As in Azure: the page takes its token only from the web app, never from its URL.
        "PAGE_TOKEN_FROM_URL": "false",
        # Where the page's "Upgrade your plan" and help-article links lead (the web app, stood in).
        "UPGRADE_URL": "https://app.coagentor.test/settings/plan",
        "HELP_ARTICLE_URL": "https://app.coagentor.test/help/outlook-calendar",
        # Status events the recorder refuses are retried after 1 s, 2 s... rather than 30 s, 60 s...
        "PLATFORM_EVENTS_RETRY_SECONDS": "1",
    }
    s = Stack(devstack_dir=directory, ports=free_ports(), overrides=overrides)
    s.start(timeout=120)
    s.write_endpoints()
    os.environ.setdefault("DEVSTACK_DIR_FOR_TESTS", str(directory))
    try:
        yield s
    finally:
        s.stop()
