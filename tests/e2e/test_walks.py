"""The daily walks through the local Functions host: the `prune_data` timer's run only enqueues its
walks, and `fan_out_page` carries them a page per queue message to their end (meetings long past and
sync rows of a connection that is gone deleted, one unreadable row skipped); the deployment
watchdog's index is rewritten for a meeting scheduled without one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.tables import TableMeetingStore, user_key
from shared.agent_states import AgentState
from shared.ports import Meeting, Source
from tests.e2e.client import Client, eventually

pytestmark = pytest.mark.e2e
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(stack):
    return Client(stack)


def test_prune_data_walks_its_tables_through_the_queue_and_skips_a_row_it_cannot_read(client, stack):
    tables = TableServiceClient.from_connection_string(stack.storage_connection_string())
    meetings_table, due = tables.get_table_client("meetings"), tables.get_table_client("meetingsdue")
    meetings = TableMeetingStore(meetings_table, due)
    user, gone_connection = f"walks-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    for n in range(5):
        meetings.create(Meeting(user_id=user, key=f"old-{n}", link_key="l", title="Long past",
                                start=LONG_AGO - timedelta(hours=n + 2), end=LONG_AGO - timedelta(hours=n + 1),
                                platform="teams", join_url="https://teams.microsoft.com/l/meetup-join/x",
                                sources=(Source(gone_connection, f"e{n}", "a@x"),)))
    meetings_table.create_entity({"PartitionKey": user_key(user), "RowKey": "unreadable",
                                  "End": LONG_AGO.isoformat()})  # no Sources: the walk logs it and goes on
    tables.get_table_client("syncstate").create_entity({"PartitionKey": gone_connection, "RowKey": "state",
                                                        "UserId": user})
    start = datetime.now(UTC) + timedelta(days=2)
    # A meeting scheduled without its index row (as before the index existed).
    meetings_table.create_entity(TableMeetingStore._entity(Meeting(
        user_id=user, key="scheduled", link_key="l", title="Later", start=start, end=start + timedelta(minutes=30),
        platform="teams", join_url="https://teams.microsoft.com/l/meetup-join/y", sources=(),
        agent=AgentState.SCHEDULED, deploy_at=start - timedelta(minutes=2))))

    client.run_function("prune_data")

    def keys() -> set[str]:
        return {str(e["RowKey"]) for e in meetings_table.query_entities(f"PartitionKey eq '{user_key(user)}'")}

    eventually(lambda: keys() == {"unreadable", "scheduled"}, timeout=60)
    eventually(lambda: not list(tables.get_table_client("syncstate").query_entities(
        f"PartitionKey eq '{gone_connection}'")), timeout=60)
    eventually(lambda: [e for e in due.query_entities(f"UserId eq '{user}'") if e["MeetingKey"] == "scheduled"],
               timeout=60)
    for key in ("unreadable", "scheduled"):
        meetings_table.delete_entity(user_key(user), key)
