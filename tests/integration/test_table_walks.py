"""The daily walks' pages against Table Storage (Azurite, real SDK): a page holds at most what was
asked, the continuation token (the service's next partition and row key) carries the walk on from
one queue message to the next, rows deleted behind the walk never make it skip one, and a row that
cannot be read is logged and left out without stopping the walk."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.envelope import SealedRow
from shared.adapters.tables import TableAgentTries, TableMeetingStore, TableSealedSecrets, ensure_tables, user_key
from shared.adapters.user_rows import TableUserRows
from shared.agent_states import AgentState
from shared.ports import AgentTry, Conflict, Meeting, Source

# Far in the past: no other test's meetings end before it, so the walk sees only this file's rows.
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def tables(stack) -> TableServiceClient:
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    return service


def _meeting(user: str, n: int, end: datetime) -> Meeting:
    return Meeting(user_id=user, key=f"m{n:03d}", link_key=f"l{n}", title="Old", start=end - timedelta(hours=1),
                   end=end, platform="teams", join_url="https://teams.microsoft.com/l/meetup-join/x",
                   sources=(Source("c", f"e{n}", "a@x"),))


def test_the_meetings_walk_goes_on_from_message_to_message_by_its_continuation_and_skips_nothing(tables, caplog):
    store = TableMeetingStore(tables.get_table_client("meetings"), tables.get_table_client("meetingsdue"))
    users = [f"walk-{uuid.uuid4().hex[:8]}" for _ in range(3)]  # three partitions
    for u, user in enumerate(users):
        for n in range(4):
            store.create(_meeting(user, n, LONG_AGO - timedelta(days=30 * u + n + 1)))
        store.create(_meeting(user, 99, datetime.now(UTC) + timedelta(days=1)))  # not past: never listed
    # A row the service did not write as it reads it (no Sources): left out, logged, the walk goes on.
    tables.get_table_client("meetings").create_entity({"PartitionKey": user_key(users[1]), "RowKey": "m050",
                                                      "End": (LONG_AGO - timedelta(days=1)).isoformat()})
    seen: list[str] = []
    continuation, pages, unreadable = None, 0, 0
    with caplog.at_level(logging.ERROR):
        while True:
            page = store.ended_page(LONG_AGO, continuation, 5)
            pages += 1
            assert len(page.items) + page.unreadable <= 5
            unreadable += page.unreadable
            for meeting in page.items:
                seen.append(f"{meeting.user_id}/{meeting.key}")
                store.delete(meeting)  # as the pruning walk does, behind the continuation
            if page.continuation is None:
                break
            assert json.loads(page.continuation)  # the service's token, carried in the next queue message
            continuation = page.continuation
    assert pages >= 3
    assert sorted(seen) == sorted(f"{u}/m{n:03d}" for u in users for n in range(4))
    assert unreadable == 1 and [r for r in caplog.records if getattr(r, "event", "") == "walk_row_failed"]
    table = tables.get_table_client("meetings")
    left = {(e["PartitionKey"], e["RowKey"]) for u in users for e in table.query_entities(f"PartitionKey eq '{u}'")}
    assert left == {(u, "m099") for u in users} | {(users[1], "m050")}  # the unreadable row is left as it was
    table.delete_entity(users[1], "m050")


def test_sealed_secrets_are_listed_a_page_at_a_time_and_adopted_without_being_rewritten(tables):
    sealed = TableSealedSecrets(tables.get_table_client("sealedsecrets"))
    prefix = f"outlook-cache-walk{uuid.uuid4().hex[:8]}-"
    now = datetime.now(UTC)
    for n in range(7):
        sealed.put(SealedRow(f"{prefix}{n}", "dk", b"n" * 12, b"ciphertext", now, owner="user-a" if n % 2 else ""))
    listed, continuation = [], None
    while True:
        page = sealed.page(prefix, continuation, 3)
        assert len(page.items) <= 3
        listed += page.items
        if page.continuation is None:
            break
        continuation = page.continuation
    assert [r.name for r in listed] == [f"{prefix}{n}" for n in range(7)]
    assert [r.owner for r in listed] == ["", "user-a"] * 3 + [""]
    assert all(r.ciphertext == b"" for r in listed)  # a page never carries the sealed values
    sealed.adopt(f"{prefix}0", "user-b")
    sealed.adopt(f"{prefix}gone", "user-b")  # no row: none is made
    row = sealed.get(f"{prefix}0")
    assert row is not None and row.owner == "user-b" and row.ciphertext == b"ciphertext" and row.updated_at == now
    assert sealed.get(f"{prefix}gone") is None
    for n in range(7):
        sealed.delete(f"{prefix}{n}")


def test_the_orphans_walk_reads_every_connection_keyed_table_in_turn(tables):
    rows = TableUserRows(tables)
    conn, user = uuid.uuid4().hex, f"walk-{uuid.uuid4().hex[:8]}"
    tables.get_table_client("syncstate").create_entity({"PartitionKey": conn, "RowKey": "state"})  # names no user
    tables.get_table_client("eventindex").create_entity({"PartitionKey": conn, "RowKey": "e1", "UserId": user})
    found: dict[str, set[str]] = {}
    continuation, tables_seen = None, []
    while True:
        page = rows.partitions_page(continuation, 500)
        assert len(page.items) <= 500
        for connection_id, user_id in page.items:
            found.setdefault(connection_id, set()).add(user_id)
        if page.continuation is None:
            break
        continuation = page.continuation
        tables_seen.append(json.loads(continuation)["table"])
    assert found[conn] == {"", user}  # the sync row (no user) and the index row (its user)
    assert {"syncstate", "subscriptions", "calendars"} <= set(tables_seen)  # handed on table after table
    assert rows.owner_of(conn) == user  # the sync row's connection found by its own partitions
    assert rows.owner_of(uuid.uuid4().hex) == ""


def test_agent_tries_are_pruned_a_page_at_a_time(tables):
    tries = TableAgentTries(tables.get_table_client("agenttries"))
    table = tables.get_table_client("agenttries")
    keys = [uuid.uuid4().hex for _ in range(5)]
    for key in keys:
        tries.put(AgentTry("u", "m", 1, key))
    for key in keys:  # stored long ago (put stamps now)
        row = next(iter(table.query_entities(f"IdempotencyKey eq '{key}'")))
        table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": "try",
                             "SeenAt": (LONG_AGO - timedelta(days=1)).isoformat()})
    gone, continuation = 0, None
    while True:
        read, deleted, continuation = tries.prune_page(LONG_AGO, LONG_AGO, continuation, 2)
        assert read <= 2
        gone += deleted
        if continuation is None:
            break
    assert gone == 5 and all(tries.by_key(k) is None for k in keys)


def test_the_watchdog_reads_the_due_index_and_drops_rows_whose_meeting_no_longer_waits(tables):
    meetings, due = tables.get_table_client("meetings"), tables.get_table_client("meetingsdue")
    store = TableMeetingStore(meetings, due)
    now = datetime.now(UTC).replace(microsecond=0)
    user = f"due-{uuid.uuid4().hex[:8]}"

    def scheduled(key: str, deploy_in: timedelta) -> Meeting:
        start = now + deploy_in + timedelta(minutes=2)
        return Meeting(user_id=user, key=key, link_key="l", title="t", start=start, end=start + timedelta(minutes=30),
                       platform="teams", join_url="https://teams.microsoft.com/l/meetup-join/x", sources=(),
                       agent=AgentState.SCHEDULED, deploy_at=now + deploy_in)

    late = store.create(scheduled("late", timedelta(minutes=-1)))
    answered = store.create(scheduled("answered", timedelta(minutes=-2)))
    store.create(scheduled("later", timedelta(days=3)))  # its index row is in a partition days ahead: never read
    store.replace(replace(answered, agent=AgentState.DEPLOYED))
    # Scheduled before the index existed: no index row until the reindex walk writes one.
    meetings.create_entity(TableMeetingStore._entity(scheduled("before", timedelta(minutes=-3))))

    def mine() -> set[str]:
        return {m.key for m in store.awaiting_verdict(due_before=now, ending_after=now) if m.user_id == user}

    def indexed() -> set[str]:
        return {str(e["MeetingKey"]) for e in due.query_entities(f"UserId eq '{user}'")}

    assert indexed() == {"late", "later"}  # the answered meeting's row went with the write of its verdict
    # A row left behind (a meeting write that failed after its index row was written) is dropped on reading.
    store.create(scheduled("crashed", timedelta(minutes=-4)))
    meetings.delete_entity(user, "crashed")
    # An index row that cannot be read: logged once and dropped, the others still read.
    due.create_entity({"PartitionKey": "2001-01-01T00:00", "RowKey": uuid.uuid4().hex, "UserId": user,
                       "MeetingKey": "broken"})
    assert mine() == {"late"}
    assert indexed() == {"late", "later"}
    continuation: str | None = None
    while True:
        step = store.reindex_page(continuation, 200)
        if step.continuation is None:
            break
        continuation = step.continuation
    assert mine() == {"late", "before"}
    store.replace(replace(store.get(user, "late"), agent=AgentState.DEPLOYED))  # type: ignore[arg-type]
    assert mine() == {"before"}
    assert late.key not in indexed()
    TableUserRows(tables).erase(user, [])  # erasure finds the index rows from the meetings, no scan
    assert indexed() == set() and mine() == set()


@pytest.mark.parametrize("moved", [False, True])
def test_a_meeting_write_that_loses_to_an_erasure_leaves_no_index_row_naming_the_user(tables, moved):
    meetings, due = tables.get_table_client("meetings"), tables.get_table_client("meetingsdue")
    store = TableMeetingStore(meetings, due)
    user, start = f"race-{uuid.uuid4().hex[:8]}", datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    read = store.create(Meeting(user_id=user, key="m", link_key="l", title="t", start=start,
                                end=start + timedelta(minutes=30), platform="teams",
                                join_url="https://teams.microsoft.com/l/meetup-join/x", sources=(),
                                agent=AgentState.SCHEDULED, deploy_at=start - timedelta(minutes=2)))
    TableUserRows(tables).erase(user, [])  # the erasure wins the race with a sync holding `read`
    later = timedelta(minutes=10) if moved else timedelta(0)
    with pytest.raises(Conflict):
        store.replace(replace(read, title="changed", deploy_at=read.deploy_at + later))  # type: ignore[operator]
    assert list(due.query_entities(f"UserId eq '{user}'")) == []
    assert list(meetings.query_entities(f"PartitionKey eq '{user}'")) == []


def test_a_late_clean_up_of_a_moved_meetings_index_row_spares_the_row_a_move_back_wrote(tables, monkeypatch):
    """Writer A moves a meeting from minute X to a day later and, slow, deletes X's index row only
    after writer B has moved the meeting back to X: the row B wrote stays, so the watchdog still sees
    the meeting that waits at X."""
    meetings, due = tables.get_table_client("meetings"), tables.get_table_client("meetingsdue")
    b, a = TableMeetingStore(meetings, due), TableMeetingStore(meetings, due)
    deferred: list[tuple[object, ...]] = []
    monkeypatch.setattr(a, "_unindex", lambda *args: deferred.append(args))
    now = datetime.now(UTC).replace(microsecond=0)
    user = f"move-{uuid.uuid4().hex[:8]}"
    at_x = now - timedelta(minutes=1)
    start = now + timedelta(minutes=5)
    first = b.create(Meeting(user_id=user, key="m", link_key="l", title="t", start=start,
                             end=start + timedelta(minutes=30), platform="teams",
                             join_url="https://teams.microsoft.com/l/meetup-join/x", sources=(),
                             agent=AgentState.SCHEDULED, deploy_at=at_x))
    moved = a.replace(replace(first, deploy_at=now + timedelta(days=1)))  # A: moved; its clean-up waits
    b.replace(replace(b.get(user, "m"), deploy_at=at_x))  # type: ignore[arg-type]  # B: moved back to X
    assert moved.due_index != first.due_index and deferred
    monkeypatch.undo()
    for args in deferred:
        a._unindex(*args)  # A's clean-up, late
    assert [m.key for m in b.awaiting_verdict(due_before=now, ending_after=now) if m.user_id == user] == ["m"]
