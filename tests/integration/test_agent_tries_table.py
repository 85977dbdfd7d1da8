"""Each agent try is found again by its idempotency key and by its agent id, a replayed status id is
known, and both are erased with the user or pruned once they no longer matter (Azurite, real SDK)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.tables import TableAgentTries, ensure_tables
from shared.adapters.user_rows import TableUserRows
from shared.ports import AgentTry


@pytest.fixture(scope="module")
def tables(stack) -> TableServiceClient:
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    return service


def test_a_try_is_found_by_key_before_its_agent_id_is_known_and_by_id_after(tables) -> None:
    tries = TableAgentTries(tables.get_table_client("agenttries"))
    key, agent = uuid.uuid4().hex, f"agt/{uuid.uuid4().hex}#?"  # the platform's ids may hold any character
    tries.put(AgentTry("user-1", "m-1", 2, key))
    assert tries.by_key(key) == AgentTry("user-1", "m-1", 2, key)
    assert tries.by_agent(agent) is None
    tries.put(AgentTry("user-1", "m-1", 2, key, agent))
    assert tries.by_agent(agent) == tries.by_key(key) == AgentTry("user-1", "m-1", 2, key, agent)


def test_a_webhook_id_is_taken_once(tables) -> None:
    tries = TableAgentTries(tables.get_table_client("agenttries"))
    webhook = f"msg_{uuid.uuid4().hex}"
    assert not tries.webhook_seen(webhook)
    assert tries.remember_webhook(webhook, datetime.now(UTC)) is True
    assert tries.remember_webhook(webhook, datetime.now(UTC)) is False and tries.webhook_seen(webhook)


def test_tries_go_with_the_users_data_and_old_rows_are_pruned(tables) -> None:
    tries = TableAgentTries(tables.get_table_client("agenttries"))
    user, key = f"erase-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    tries.put(AgentTry(user, "m-1", 1, key, f"agt_{key}"))
    TableUserRows(tables).erase(user, [])
    assert tries.by_key(key) is None and tries.by_agent(f"agt_{key}") is None

    kept, old_webhook = uuid.uuid4().hex, f"msg_{uuid.uuid4().hex}"
    tries.put(AgentTry("user-2", "m-2", 1, kept))
    tries.remember_webhook(old_webhook, datetime.now(UTC) - timedelta(days=2))
    later = datetime.now(UTC) + timedelta(seconds=1)
    tries.prune(tries_before=later - timedelta(days=30), webhooks_before=later - timedelta(days=1))
    assert not tries.webhook_seen(old_webhook) and tries.by_key(kept) is not None  # a recent try stays
