"""Shared workspace meeting rows keep their meeting's end, and the prune walk finds and deletes the
ones long past (with the teammates' emails they name) (Azurite, real SDK)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.tables import TableWorkspaceMeetingStore, ensure_tables
from shared.ports import Conflict, Teammate, WorkspaceMeeting


@pytest.fixture(scope="module")
def tables(stack) -> TableServiceClient:
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    return service


def test_rows_long_past_are_listed_for_pruning_and_deleted_only_unchanged(tables) -> None:
    rows = TableWorkspaceMeetingStore(tables.get_table_client("workspacemeetings"))
    workspace, now = f"ws/{uuid.uuid4().hex}#?", datetime.now(UTC)  # a workspace id may hold any character
    ann = (Teammate("ann", "ann@x"),)
    past = rows.put(WorkspaceMeeting(workspace, f"past-{uuid.uuid4().hex}", "ann", ann, end=now - timedelta(days=400)))
    later = rows.put(WorkspaceMeeting(workspace, f"later-{uuid.uuid4().hex}", "ann", ann, end=now + timedelta(days=1)))
    assert rows.get(workspace, later.key) == later
    found = [r for r in rows.ended_before(now - timedelta(days=300)) if r.workspace == workspace]
    assert found == [past]
    changed = rows.put(replace_owner(past))
    with pytest.raises(Conflict):
        rows.delete(past)  # changed since read: the next run looks again
    rows.delete(changed)
    rows.delete(changed)  # already gone: nothing
    assert rows.get(workspace, past.key) is None and rows.get(workspace, later.key) == later


def replace_owner(row: WorkspaceMeeting) -> WorkspaceMeeting:
    return WorkspaceMeeting(row.workspace, row.key, "", (), end=row.end, etag=row.etag)
