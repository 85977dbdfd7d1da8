"""Every Table Storage row of one user, across the app's tables: what erasure deletes.

Generic over the tables in `shared.adapters.tables.TABLES` (read at call time, so a table added
there later is covered): a row belongs to a user when its PartitionKey is the user's key
(`tables.user_key`), the user's owner tag (`connections.owner_tag`: sign-in flows, pending claims) or
one of the user's connection ids, or when it carries `UserId` = the user id. `KEYED_BY` says how the known tables
are partitioned, so erasure reads only the partitions that can hold the user's rows; a table it does
not list is searched by all three conventions (slower, never missed).

OData filters: https://learn.microsoft.com/rest/api/storageservices/querying-tables-and-entities
(string literals quoted with '', doubled inside). Batches: one partition, at most 100 operations
(https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient, TableTransactionError

from shared.adapters import tables
from shared.connections import owner_tag
from shared.ports import Page

Keying = Literal["user", "connection", "owner", "other", "meeting"]
CONNECTIONS_TABLE = "connections"
# How each known table is partitioned: by user id, by connection id, or by something else (a hash)
# with the user id in a `UserId` property.
KEYED_BY: dict[str, Keying] = {
    "authflows": "owner",  # sign-in flows and the admin-consent record, by connections.owner_tag
    "pendingclaims": "owner",
    "connections": "user",
    "meetings": "user",
    "eventindex": "connection",
    "syncstate": "connection",
    "subscriptions": "connection",  # a connection's Graph subscription; names its clientState secret
    "autojoin": "user",  # join rules and per-meeting choices
    "calendars": "connection",  # which of a connection's calendars are read, with their agent names
    "agenttries": "other",  # each agent try by idempotency key and agent id, with UserId
    # A workspace's shared meetings serve several users: no UserId; erasure hands the user's part over
    # first (shared.services.teams.forget_user), never deletes a teammate's row.
    "workspacemeetings": "other",
    # The deployment watchdog's index of meetings awaiting a verdict, partitioned by due time: found from
    # the user's meeting rows, which say where their index row is (`DueIndex`), never by a scan.
    "meetingsdue": "meeting",
}
_BATCH = 100


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _after(raw: Any, moment: datetime) -> bool:
    """Whether a stored ISO timestamp (or a datetime) is later than `moment`."""
    when = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw) if isinstance(raw, str) and raw else None
    return when is not None and when > moment


class TableUserRows:
    def __init__(self, service: TableServiceClient) -> None:
        self._service = service

    def connection_ids(self, user_id: str, made_after: datetime | None = None) -> list[str]:
        rows = self._service.get_table_client(CONNECTIONS_TABLE).query_entities(
            f"PartitionKey eq {_q(tables.user_key(user_id))} and RowKey lt '~'", select=["RowKey", "ConnectedAt"])
        return [str(e["RowKey"]) for e in rows if made_after is None or _after(e.get("ConnectedAt"), made_after)]

    def secret_names(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> set[str]:
        return {str(e["SecretName"]) for _, e in self._rows(user_id, connection_ids, only_connections)
                if e.get("SecretName")}

    def erase(self, user_id: str, connection_ids: Sequence[str], *, only_connections: bool = False) -> int:
        found = list(self._rows(user_id, connection_ids, only_connections))
        # The watchdog's index rows first: they are found through the meeting rows, so a retry after a
        # failure part-way must still have the meetings to find them by. The connections go last.
        index = [(t, e) for t, e in found if KEYED_BY.get(t) == "meeting"]
        last = [(t, e) for t, e in found if t == CONNECTIONS_TABLE]
        middle = [(t, e) for t, e in found if t != CONNECTIONS_TABLE and KEYED_BY.get(t) != "meeting"]
        return self._delete(index) + self._delete(middle) + self._delete(last)

    def connection_partitions(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for table in tables.TABLES:
            if KEYED_BY.get(table) != "connection":
                continue
            for e in self._service.get_table_client(table).list_entities(select=["PartitionKey", "UserId"]):
                partition = str(e["PartitionKey"])
                found[partition] = found.get(partition) or str(e.get("UserId") or "")
        return found

    def partitions_page(self, continuation: str | None, size: int) -> Page[tuple[str, str]]:
        """The connection-keyed tables one after the other: a continuation is {"table": name, "token":
        the table's own continuation}; a table's last page hands on to the next table."""
        keyed = [t for t in tables.TABLES if KEYED_BY.get(t) == "connection"]
        where = json.loads(continuation) if continuation else {"table": keyed[0], "token": None}
        table = str(where["table"])
        if table not in keyed:
            raise ValueError(f"unknown connection-keyed table {table!r}")
        raw, following = tables.query_page(self._service.get_table_client(table), "", size, where.get("token"),
                                           select=["PartitionKey", "UserId"])
        rows, bad = tables.read_rows(raw, lambda e: (str(e["PartitionKey"]), str(e.get("UserId") or "")), table)
        if following is not None:
            after: str | None = json.dumps({"table": table, "token": following})
        else:
            rest = keyed[keyed.index(table) + 1:]
            after = json.dumps({"table": rest[0], "token": None}) if rest else None
        return Page(rows, after, bad)

    def owner_of(self, connection_id: str) -> str:
        for table in tables.TABLES:
            if KEYED_BY.get(table) != "connection":
                continue
            rows = self._service.get_table_client(table).query_entities(
                f"PartitionKey eq {_q(connection_id)} and UserId gt ''", select=["UserId"], results_per_page=1)
            for e in next(rows.by_page(), []):
                return str(e["UserId"])
        return ""

    def _rows(self, user_id: str, connection_ids: Sequence[str],
              only_connections: bool = False) -> Iterator[tuple[str, Any]]:
        seen: set[tuple[str, str, str]] = set()
        for table in tables.TABLES:
            keyed = KEYED_BY.get(table)
            filters: list[str] = []
            if only_connections:
                # Those connections' own partitions, and their rows in the connections table; nothing
                # else of the user's (a connection made since keeps its meetings, rules and sign-ins).
                if table == CONNECTIONS_TABLE:
                    filters += [f"PartitionKey eq {_q(tables.user_key(user_id))} and RowKey eq {_q(c)}"
                                for c in connection_ids]
                elif keyed in (None, "connection"):
                    filters += [f"PartitionKey eq {_q(c)}" for c in connection_ids]
            else:
                if keyed in (None, "user"):
                    filters.append(f"PartitionKey eq {_q(tables.user_key(user_id))}")
                if keyed in (None, "connection"):
                    filters += [f"PartitionKey eq {_q(c)}" for c in connection_ids]
                if keyed == "owner":
                    filters.append(f"PartitionKey eq {_q(owner_tag(user_id))}")
                if keyed in (None, "other"):
                    filters.append(f"UserId eq {_q(user_id)}")
            client = self._service.get_table_client(table)
            if keyed == "meeting" and not only_connections:
                yield from ((table, e) for e in self._due_rows(user_id, client))
            for query in filters:
                for e in client.query_entities(query):
                    key = (table, str(e["PartitionKey"]), str(e["RowKey"]))
                    if key not in seen:
                        seen.add(key)
                        yield table, e

    def _due_rows(self, user_id: str, due: Any) -> Iterator[Any]:
        meetings = self._service.get_table_client("meetings").query_entities(
            f"PartitionKey eq {_q(tables.user_key(user_id))} and DueIndex gt ''", select=["RowKey", "DueIndex"])
        for m in meetings:
            try:
                yield due.get_entity(str(m["DueIndex"]), tables.due_row_key(user_id, str(m["RowKey"])))
            except ResourceNotFoundError:
                continue

    def _delete(self, rows: list[tuple[str, Any]]) -> int:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for table, e in rows:
            groups[(table, str(e["PartitionKey"]))].append(str(e["RowKey"]))
        for (table, partition), row_keys in groups.items():
            client = self._service.get_table_client(table)
            for i in range(0, len(row_keys), _BATCH):
                chunk = row_keys[i:i + _BATCH]
                try:
                    client.submit_transaction([("delete", {"PartitionKey": partition, "RowKey": r}) for r in chunk])
                except (TableTransactionError, ResourceNotFoundError):
                    # One row of the batch is already gone (a concurrent or earlier attempt): one by one.
                    for r in chunk:
                        try:
                            client.delete_entity(partition, r)
                        except ResourceNotFoundError:
                            pass
        return len(rows)
