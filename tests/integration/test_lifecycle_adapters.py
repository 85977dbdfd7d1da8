"""The adapters erasure, the reconciler and the ETag rules rest on, against the real services' stand-ins:
Table Storage (Azurite) and the local Key Vault endpoint, through the same SDK clients as in Azure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from devstack import tls
from devstack.keyvault import KeyVaultEndpoint
from shared.adapters.tables import (
    TableClaimStore,
    TableConnectionStore,
    TableFlowStore,
    TableMeetingStore,
    TableSyncStateStore,
    ensure_tables,
    user_id_of,
    user_key,
)
from shared.adapters.user_rows import TableUserRows
from shared.adapters.vault import KeyVaultSecrets
from shared.connections import Connection, ConnectionStatus, Plan, PlanLimitExceeded, owner_tag
from shared.ports import Conflict, PendingClaim, PendingFlow, SyncState
from tests.integration.test_keyvault_endpoint import client_for

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tables(stack) -> TableServiceClient:
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    return service


def connection(user_id: str, **kw: object) -> Connection:
    fields: dict[str, object] = dict(
        id=uuid.uuid4().hex, user_id=user_id, email="alice@contoso.com", home_account_id=uuid.uuid4().hex,
        tenant_id="t", status=ConnectionStatus.ACTIVE, reason_code=None,
        secret_name=f"outlook-cache-{uuid.uuid4().hex}",
        connected_at=NOW, last_refreshed_at=NOW, access_expires_at=None)
    fields.update(kw)
    return Connection(**fields)  # type: ignore[arg-type]


def test_a_write_based_on_a_stale_read_is_refused(tables):
    store = TableConnectionStore(tables.get_table_client("connections"))
    user = f"etag-{uuid.uuid4().hex[:8]}"
    stored = store.add(connection(user), Plan.FREE)
    assert stored.etag
    fresh = store.update(stored.refreshed(NOW + timedelta(hours=1), None))
    with pytest.raises(Conflict):
        store.update(stored.refreshed(NOW + timedelta(hours=2), None))  # read before the write above
    store.remove(fresh)
    with pytest.raises(Conflict):
        store.update(fresh)  # gone: a late writer never brings it back


def test_adding_the_same_connection_twice_stores_it_once(tables):
    store = TableConnectionStore(tables.get_table_client("connections"))
    user = f"idem-{uuid.uuid4().hex[:8]}"
    conn = connection(user)
    first = store.add(conn, Plan.SOLO)
    again = store.add(conn, Plan.SOLO)  # a retried claim
    assert again.id == first.id and [c.id for c in store.list_for_user(user)] == [conn.id]


def test_a_leaked_plan_slot_is_reclaimed_and_removal_frees_the_slot(tables):
    table = tables.get_table_client("connections")
    store = TableConnectionStore(table)
    user = f"slot-{uuid.uuid4().hex[:8]}"
    # What a disconnect interrupted between its two deletes (before they became one transaction) left.
    table.create_entity({"PartitionKey": user, "RowKey": "~slot-0", "ConnectionId": "long-gone"})
    first = store.add(connection(user), Plan.FREE)  # not "limit reached, 0 used"
    assert first.slot == 0
    with pytest.raises(PlanLimitExceeded):
        store.add(connection(user), Plan.FREE)
    store.remove(first)
    assert [e["RowKey"] for e in table.query_entities(f"PartitionKey eq '{user}'")] == []
    assert store.add(connection(user), Plan.FREE).slot == 0


def test_the_sync_now_marker_is_set_once_until_cleared_or_stale(tables):
    store = TableSyncStateStore(tables.get_table_client("syncstate"))
    conn = uuid.uuid4().hex
    assert store.mark_queued(conn, NOW, timedelta(minutes=10)) is True
    assert store.mark_queued(conn, NOW + timedelta(minutes=1), timedelta(minutes=10)) is False
    assert store.mark_queued(conn, NOW + timedelta(minutes=11), timedelta(minutes=10)) is True  # its job was lost
    store.clear_queued(conn)
    assert store.mark_queued(conn, NOW + timedelta(minutes=12), timedelta(minutes=10)) is True
    store.remove(conn)
    assert list(tables.get_table_client("syncstate").query_entities(f"PartitionKey eq '{conn}'")) == []


def test_announcements_and_a_touched_marker_live_beside_the_state_row_without_changing_its_etag(tables):
    store = TableSyncStateStore(tables.get_table_client("syncstate"))
    conn = uuid.uuid4().hex
    state = store.put(SyncState(conn, NOW, NOW + timedelta(days=7), delta_link=None, full_sync_at=None))
    assert store.announced(conn) is None
    store.announce(conn, NOW)
    store.announce(conn, NOW + timedelta(seconds=5))
    assert store.announced(conn) == NOW + timedelta(seconds=5)
    store.touch_queued(conn, NOW)
    assert store.mark_queued(conn, NOW + timedelta(minutes=1), timedelta(minutes=10)) is False
    assert store.put(state).etag  # a running sync's lease is untouched by either
    store.remove(conn)
    assert store.announced(conn) is None
    assert list(tables.get_table_client("syncstate").query_entities(f"PartitionKey eq '{conn}'")) == []


def test_user_rows_finds_every_convention_and_erases_connections_last(tables):
    user = f"rows-{uuid.uuid4().hex[:8]}"
    other = f"rows-{uuid.uuid4().hex[:8]}"
    conn_id, other_conn = uuid.uuid4().hex, uuid.uuid4().hex
    tables.get_table_client("connections").create_entity(
        {"PartitionKey": user, "RowKey": conn_id, "SecretName": "outlook-cache-a"})
    tables.get_table_client("connections").create_entity({"PartitionKey": user, "RowKey": "~slot-0"})
    tables.get_table_client("connections").create_entity(
        {"PartitionKey": other, "RowKey": other_conn, "SecretName": "outlook-cache-b"})
    tables.get_table_client("meetings").create_entity({"PartitionKey": user, "RowKey": "m'1"})
    tables.get_table_client("eventindex").create_entity({"PartitionKey": conn_id, "RowKey": "e1", "UserId": user})
    tables.get_table_client("syncstate").create_entity({"PartitionKey": conn_id, "RowKey": "state"})
    # Sign-in flows and pending claims live in the user's owner-tag partition (one read, no scan).
    tables.get_table_client("pendingclaims").create_entity(
        {"PartitionKey": owner_tag(user), "RowKey": uuid.uuid4().hex, "UserId": user, "SecretName": "outlook-cache-c"})
    tables.get_table_client("authflows").create_entity(
        {"PartitionKey": owner_tag(user), "RowKey": uuid.uuid4().hex, "UserId": user})
    tables.get_table_client("authflows").create_entity(
        {"PartitionKey": owner_tag(other), "RowKey": uuid.uuid4().hex, "UserId": other})
    rows = TableUserRows(tables)
    assert rows.connection_ids(user) == [conn_id]
    assert rows.secret_names(user, [conn_id]) == {"outlook-cache-a", "outlook-cache-c"}
    assert conn_id in rows.connection_partitions()
    assert rows.erase(user, [conn_id]) == 8 - 1  # everything of the user's, nothing of the other's
    assert rows.connection_ids(user) == [] and rows.secret_names(user, [conn_id]) == set()
    assert rows.connection_ids(other) == [other_conn]
    assert rows.erase(user, [conn_id]) == 0


ODD_IDS = ["team/a", "team%2Fa", "a\\b#c?d", "tab\there", "nul\x00\x1f\x7f\x85end", "100%", "plain-id",
           "ünïcødé/🙂"]


def test_any_platform_id_is_stored_under_a_key_table_storage_takes_and_read_back_unchanged(tables):
    """One encoding, reversible and collision-free: ids differing only by an escaped character are
    different partitions; every one round-trips through real Table Storage."""
    assert len({user_key(i) for i in ODD_IDS}) == len(ODD_IDS)
    assert all(user_id_of(user_key(i)) == i for i in ODD_IDS)
    assert user_key("plain-id") == "plain-id"  # rows written before the encoding are found as they were
    store = TableConnectionStore(tables.get_table_client("connections"))
    suffix = uuid.uuid4().hex[:6]
    for raw in ODD_IDS:
        user = f"{raw}-{suffix}"
        stored = store.add(connection(user), Plan.FREE)
        assert [c.user_id for c in store.list_for_user(user)] == [user]
        assert store.get(user, stored.id) is not None
        with pytest.raises(PlanLimitExceeded) as refused:
            store.add(connection(user), Plan.FREE)
        assert (refused.value.limit, refused.value.used) == (1, 1)
        raw_row = tables.get_table_client("connections").get_entity(user_key(user), stored.id)
        assert user_id_of(raw_row["PartitionKey"]) == user  # what background runs read back from keys
        store.remove(stored)
        assert store.list_for_user(user) == []
    meetings = TableMeetingStore(tables.get_table_client("meetings"), tables.get_table_client("meetingsdue"))
    assert meetings.list_for_user(f"team/a-{suffix}", NOW) == []


def test_sign_in_rows_from_before_owner_tags_are_still_taken_and_purged(tables):
    flows = TableFlowStore(tables.get_table_client("authflows"))
    claims = TableClaimStore(tables.get_table_client("pendingclaims"))
    user = f"legacy-{uuid.uuid4().hex[:8]}"
    legacy, tagged = uuid.uuid4().hex * 2, f"{owner_tag(user)}.{uuid.uuid4().hex * 2}"
    for ref in (legacy, tagged):
        flows.put(PendingFlow(state_hash=ref, user_id=user, reconnect_id=None, flow={"sealed": "x"},
                              expires_at=NOW + timedelta(minutes=10)))
    assert flows.live(owner_tag(user), NOW) == [NOW + timedelta(minutes=10)]  # the tagged one: one partition
    assert flows.live(owner_tag(user), NOW + timedelta(minutes=10)) == []
    taken = flows.take(legacy)
    assert taken is not None and taken.user_id == user
    assert flows.take(legacy) is None
    continuation, purged = None, 0
    while True:
        step = flows.purge_expired_page(NOW + timedelta(minutes=11), continuation, 100)
        purged, continuation = purged + step.done, step.continuation
        if continuation is None:
            break
    assert purged >= 1 and flows.take(tagged) is None
    for ref in (legacy, f"{owner_tag(user)}.{uuid.uuid4().hex * 2}"):
        claims.put(PendingClaim(code_hash=ref, user_id=user, reconnect_id=None, secret_name="outlook-cache-x",
                                home_account_id="h", tenant_id="t", email="a@b.c", access_expires_at=None,
                                expires_at=NOW + timedelta(minutes=10)))
        got = claims.get(ref)
        assert got is not None and got.code_hash == ref
        expired, page = [], claims.expired_page(NOW + timedelta(minutes=11), None, 100)
        while True:
            expired += page.items
            if page.continuation is None:
                break
            page = claims.expired_page(NOW + timedelta(minutes=11), page.continuation, 100)
        assert any(c.code_hash == ref for c in expired)
        assert any(c.code_hash == ref for c in claims.for_user(user)) == (ref != legacy)  # one partition read
        claims.remove(ref)
        assert claims.get(ref) is None


def test_user_rows_can_erase_old_connections_only_and_keep_one_made_since(tables):
    user = f"rows-{uuid.uuid4().hex[:8]}"
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    connections = tables.get_table_client("connections")
    connections.create_entity({"PartitionKey": user, "RowKey": old, "SecretName": "outlook-cache-old",
                               "ConnectedAt": NOW.isoformat()})
    connections.create_entity({"PartitionKey": user, "RowKey": new, "SecretName": "outlook-cache-new",
                               "ConnectedAt": (NOW + timedelta(seconds=5)).isoformat()})
    tables.get_table_client("meetings").create_entity({"PartitionKey": user, "RowKey": "m1"})
    for conn in (old, new):
        tables.get_table_client("syncstate").create_entity({"PartitionKey": conn, "RowKey": "state"})
    rows = TableUserRows(tables)
    assert rows.connection_ids(user, made_after=NOW) == [new]
    assert rows.secret_names(user, [old], only_connections=True) == {"outlook-cache-old"}
    assert rows.erase(user, [old], only_connections=True) == 2  # its sync state and its connection row
    assert rows.connection_ids(user) == [new]
    assert list(tables.get_table_client("meetings").query_entities(f"PartitionKey eq '{user}'"))
    assert rows.erase(user, [new]) == 3


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tls.TestCA:
    return tls.ensure_ca(tmp_path_factory.mktemp("kv"))


@pytest.fixture(params=[True, False], ids=["purge-protected", "purgeable"])
def vault(request, ca) -> Iterator[tuple[KeyVaultEndpoint, KeyVaultSecrets]]:
    endpoint = KeyVaultEndpoint(ssl_context=ca.server_context(), authority="https://127.0.0.1:9/t",
                                purge_protection=request.param).start()
    try:
        yield endpoint, KeyVaultSecrets(client_for(endpoint, ca))
    finally:
        endpoint.stop()


def test_deleting_a_token_cache_purges_it_where_the_vault_allows_and_a_retry_is_harmless(vault):
    endpoint, secrets = vault
    secrets.set("outlook-cache-1", "{}")
    secrets.delete("outlook-cache-1")
    secrets.delete("outlook-cache-1")  # a retried erasure
    names = endpoint.vault.names()
    assert "outlook-cache-1" not in names["secrets"]
    assert ("outlook-cache-1" in names["deleted"]) is endpoint.vault.purge_protection


def test_listing_token_caches_pages_through_the_vault_with_creation_times(vault):
    _, secrets = vault
    for n in range(30):  # more than one page (25 per page)
        secrets.set(f"outlook-cache-{n:02d}", "{}")
    secrets.set("outlook-client-secret", "x")
    listed = list(secrets.list("outlook-cache-"))
    assert sorted(s.name for s in listed) == [f"outlook-cache-{n:02d}" for n in range(30)]
    assert all(s.created_at is not None for s in listed)


def test_a_walk_page_skips_a_connection_row_it_cannot_read_and_reads_the_rest(tables, caplog):
    table = tables.get_table_client("connections")
    store = TableConnectionStore(table)
    user = f"walk-{uuid.uuid4().hex[:8]}"
    good = store.add(connection(user), Plan.PRO)
    table.create_entity({"PartitionKey": user, "RowKey": "0" * 32, "Email": "half-written"})  # no timestamps
    found, continuation = [], None
    while True:
        page = store.page(continuation, 1000)
        found += [c.id for c in page.connections]
        continuation = page.continuation
        if continuation is None:
            break
    assert good.id in found and "0" * 32 not in found
    assert any(getattr(r, "event", "") == "walk_row_failed" for r in caplog.records)
    table.delete_entity(user, "0" * 32)
    store.remove(store.get(user, good.id))
