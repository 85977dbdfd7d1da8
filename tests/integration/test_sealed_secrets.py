"""Token caches sealed with envelope encryption (shared/adapters/envelope.py), against Table Storage
(Azurite) and the local Key Vault's keys API through the real azure-keyvault-keys clients: what is
stored, what Key Vault is asked, tampering, the wrong key, rotation and the migration of the old
one-secret-per-connection layout."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient
from azure.keyvault.keys import KeyClient

from devstack import tls
from devstack.keyvault import KeyVaultEndpoint
from shared.adapters.envelope import DATA_KEY_MAX_AGE, DataKeys, SealedSecrets
from shared.adapters.tables import TableDataKeys, TableSealedSecrets, ensure_tables
from shared.adapters.vault import KeyVaultKeyWrapper, KeyVaultSecrets
from tests.integration.test_keyvault_endpoint import FakeCredential, client_for

CACHE = '{"RefreshToken": {"k": {"secret": "1.AVEA-refresh-token-value"}}}'


class World:
    def __init__(self, service: TableServiceClient, endpoint: KeyVaultEndpoint, ca: tls.TestCA) -> None:
        suffix = uuid.uuid4().hex[:8]
        # Tables of their own per test, so data keys made by one test never serve another.
        self.sealed_table: TableClient = service.create_table(f"sealed{suffix}")
        self.keys_table: TableClient = service.create_table(f"datakeys{suffix}")
        self.endpoint, self.ca = endpoint, ca
        self.keys = KeyClient(endpoint.url, FakeCredential(), verify_challenge_resource=False, **self._transport())
        self.key_name = f"token-cache-key-{suffix}"
        self.keys.create_rsa_key(self.key_name, size=2048)
        self.legacy = KeyVaultSecrets(client_for(endpoint, ca))
        self.now = datetime.now(UTC)

    def _transport(self) -> dict[str, Any]:
        session = requests.Session()
        session.trust_env = False
        return {"transport": RequestsTransport(session=session, session_owner=False,
                                               connection_verify=str(self.ca.bundle_pem))}

    def process(self, *, legacy: bool = False, key_name: str | None = None) -> SealedSecrets:
        """What one Functions process builds: its own data-key cache."""
        wrapper = KeyVaultKeyWrapper(self.keys, key_name or self.key_name, FakeCredential(),
                                     verify_challenge_resource=False, **self._transport())
        keys = DataKeys(TableDataKeys(self.keys_table), wrapper, lambda: self.now)
        return SealedSecrets(TableSealedSecrets(self.sealed_table), keys, lambda: self.now,
                             legacy=self.legacy if legacy else None)

    def data_keys(self, process: SealedSecrets) -> DataKeys:
        return process._keys

    def kv_ops(self) -> int:
        stats = self.endpoint.vault.stats_snapshot()
        return sum(stats[k] for k in ("sets", "gets", "deletes", "key_creates", "key_gets", "wraps", "unwraps"))

    def row(self, name: str) -> dict[str, Any]:
        return dict(self.sealed_table.get_entity(name, "sealed"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tls.TestCA:
    return tls.ensure_ca(tmp_path_factory.mktemp("sealed-ca"))


@pytest.fixture(scope="module")
def endpoint(ca: tls.TestCA) -> Iterator[KeyVaultEndpoint]:
    vault = KeyVaultEndpoint(ssl_context=ca.server_context(), authority="https://127.0.0.1:9/t",
                             purge_protection=False).start()
    yield vault
    vault.stop()


@pytest.fixture
def world(stack, endpoint: KeyVaultEndpoint, ca: tls.TestCA) -> Iterator[World]:
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    made = World(service, endpoint, ca)
    yield made
    service.delete_table(made.sealed_table.table_name)
    service.delete_table(made.keys_table.table_name)


def name() -> str:
    return f"outlook-cache-{uuid.uuid4().hex}"


def test_a_token_cache_is_stored_encrypted_and_read_back_without_key_vault_after_the_first_unwrap(world):
    first = world.process()
    cache = name()
    first.set(cache, CACHE)
    assert first.get(cache) == CACHE
    row = world.row(cache)
    assert "refresh-token" not in str(row) and CACHE.encode() not in bytes(row["Ciphertext"])
    assert set(row) >= {"DataKeyId", "Nonce", "Ciphertext", "UpdatedAt"}
    wrapped = list(world.keys_table.list_entities())
    assert len(wrapped) == 1 and wrapped[0]["KeyId"].startswith(f"{world.endpoint.url}/keys/{world.key_name}/")

    # Another process (a new Functions instance) unwraps the data key once, then never asks Key Vault again.
    other = world.process()
    assert other.get(cache) == CACHE
    before = world.kv_ops()
    for n in range(20):
        other.set(cache, CACHE + str(n))
        assert other.get(cache) == CACHE + str(n)
        other.set(name(), CACHE)
    assert world.kv_ops() == before
    assert world.row(cache)["Nonce"] != row["Nonce"]  # a fresh nonce every write


def test_a_tampered_ciphertext_or_nonce_is_refused_and_reported(world, caplog):
    store = world.process()
    for field in ("Ciphertext", "Nonce"):
        cache = name()
        store.set(cache, CACHE)
        row = world.row(cache)
        flipped = bytearray(row[field])
        flipped[len(flipped) // 2] ^= 0x01
        world.sealed_table.upsert_entity({**row, field: bytes(flipped)})
        with caplog.at_level(logging.ERROR):
            assert store.get(cache) is None  # the connection then asks its user to reconnect
        assert any(getattr(r, "event", "") == "sealed_unreadable" for r in caplog.records)
        assert "refresh-token" not in caplog.text


def test_a_ciphertext_moved_to_another_connections_name_does_not_open(world):
    store = world.process()
    mine, theirs = name(), name()
    store.set(mine, CACHE)
    store.set(theirs, '{"other": "cache"}')
    world.sealed_table.upsert_entity({**world.row(mine), "PartitionKey": theirs})
    assert store.get(theirs) is None and store.get(mine) == CACHE


def test_the_wrong_key_opens_nothing(world):
    store = world.process()
    cache = name()
    store.set(cache, CACHE)
    # A data key wrapped by another Key Vault key: the vault refuses to unwrap it with this one.
    other_key = f"other-key-{uuid.uuid4().hex[:6]}"
    world.keys.create_rsa_key(other_key, size=2048)
    (row,) = list(world.keys_table.list_entities())
    foreign_wrap = KeyVaultKeyWrapper(world.keys, other_key, FakeCredential(), verify_challenge_resource=False,
                                      **world._transport())
    _, wrapped_elsewhere = foreign_wrap.wrap(b"\x00" * 32)
    world.keys_table.upsert_entity({**row, "WrappedKey": wrapped_elsewhere})
    with pytest.raises(HttpResponseError) as refused:
        world.process().get(cache)  # a fresh process must unwrap: Key Vault refuses (400)
    assert refused.value.status_code == 400
    # A secret sealed under another data key (its id swapped) fails authentication.
    world.keys_table.upsert_entity(row)
    keys = world.data_keys(store)
    new_id = keys.rotate()
    world.sealed_table.upsert_entity({**world.row(cache), "DataKeyId": new_id})
    assert store.get(cache) is None


def test_key_rotation_rewraps_the_data_keys_and_every_secret_still_opens(world):
    store = world.process()
    old, new = name(), name()
    store.set(old, CACHE)
    first_kid = next(iter(world.keys_table.list_entities()))["KeyId"]
    # Key Vault key rotated (a new version; Bicep's rotation policy does it yearly): data keys re-wrapped.
    world.keys.rotate_key(world.key_name)
    keys = world.data_keys(store)
    assert keys.rewrap() == 1 and keys.rewrap() == 0  # done once; a repeat finds nothing to do
    (rewrapped,) = list(world.keys_table.list_entities())
    assert rewrapped["KeyId"] != first_kid and rewrapped["KeyId"] == world.keys.get_key(world.key_name).id
    assert world.process().get(old) == CACHE  # a fresh process unwraps under the new version

    # Data key rotation: new writes use the new data key; old secrets still open; a rewrite moves one.
    before = world.row(old)["DataKeyId"]
    new_id = keys.rotate()
    store.set(new, CACHE)
    assert world.row(new)["DataKeyId"] == new_id != before
    assert world.process().get(old) == CACHE and world.process().get(new) == CACHE
    store.set(old, CACHE + " ")
    assert world.row(old)["DataKeyId"] == new_id


def test_a_data_key_older_than_its_age_limit_is_replaced_for_new_writes(world):
    store = world.process()
    first = name()
    store.set(first, CACHE)
    world.now += DATA_KEY_MAX_AGE + timedelta(minutes=11)
    later = world.process()
    second = name()
    later.set(second, CACHE)
    assert world.row(first)["DataKeyId"] != world.row(second)["DataKeyId"]
    assert later.get(first) == CACHE


def test_migration_moves_legacy_secrets_deletes_them_and_is_safe_to_rerun(world):
    legacy_names = [f"outlook-cache-mig{uuid.uuid4().hex}" for _ in range(3)]
    for n, legacy in enumerate(legacy_names):
        world.legacy.set(legacy, CACHE + str(n))
    store = world.process(legacy=True)
    # A connection synced before the migration reached it: read from the vault, sealed, deleted there.
    assert store.get(legacy_names[0]) == CACHE + "0"
    # Another was refreshed meanwhile (a newer sealed value): the migration never overwrites it.
    store.set(legacy_names[1], CACHE + " newer")
    world.legacy.set(legacy_names[1], CACHE + "1")  # the old copy still in the vault
    assert store.migrate_legacy(("outlook-cache-mig",), limit=10) == 2
    assert store.migrate_legacy(("outlook-cache-mig",), limit=10) == 0  # re-run: nothing left
    assert [store.get(n) for n in legacy_names] == [CACHE + "0", CACHE + " newer", CACHE + "2"]
    names = world.endpoint.vault.names()
    assert not set(legacy_names) & set(names["secrets"])
    assert not set(legacy_names) & set(names["deleted"])  # purged: this vault allows it
    # Disconnect deletes both the sealed row and any legacy copy.
    store.delete(legacy_names[2])
    assert store.get(legacy_names[2]) is None


def test_listing_by_prefix_names_only_that_kind_with_write_times(world):
    store = world.process()
    caches = sorted(name() for _ in range(3))
    for cache in caches:
        store.set(cache, CACHE)
    store.set(f"graph-notify-{uuid.uuid4().hex}", "state")
    listed = list(store.list("outlook-cache-"))
    assert sorted(s.name for s in listed) == caches
    assert all(s.created_at == world.now for s in listed)
