"""The Table and Queue clients keep a connection per concurrent invocation (against Azurite).

requests pools 10 connections per host by default; an instance runs up to 32 invocations at once.
Past the pool, urllib3 discards each extra connection ("Connection pool is full") and the next call
opens a new one: log noise for the operator, a TCP (and in Azure a TLS) handshake per call."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient

from shared.adapters.http import POOL_SIZE, storage_transport

CONCURRENT = 24  # one instance's invocations, fewer than POOL_SIZE and more than requests' default 10


def _read_concurrently(service: TableServiceClient) -> None:
    table = service.get_table_client(f"pool{uuid.uuid4().hex[:12]}")
    try:
        table.create_table()
    except ResourceExistsError:
        pass
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
    start = threading.Barrier(CONCURRENT)

    def read(_: int) -> None:
        start.wait(timeout=60)
        for _ in range(5):
            table.get_entity("p", "r")

    with ThreadPoolExecutor(CONCURRENT) as pool:
        list(pool.map(read, range(CONCURRENT)))
    table.delete_table()


def test_concurrent_invocations_reuse_pooled_storage_connections(stack, caplog: pytest.LogCaptureFixture) -> None:
    assert CONCURRENT < POOL_SIZE
    service = TableServiceClient.from_connection_string(stack.storage_connection_string(),
                                                        transport=storage_transport(10, 30))
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        _read_concurrently(service)
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]

