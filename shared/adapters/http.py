"""The one HTTP session outbound calls share (Graph, the identity platform through MSAL, the agent
API, the platform's status-event endpoint): pooled connections and a timeout on every request. The
Azure SDK clients (Tables, Queues) get a pool of the same size through `storage_transport`: requests'
default of 10 connections per host is fewer than one instance's concurrent invocations (the Python
worker runs up to 32 at once: https://learn.microsoft.com/azure/azure-functions/python-scale-performance-reference),
so urllib3 would discard ("Connection pool is full") and re-open connections under load.

MSAL given a `requests.Session` passes no timeout of its own (FACTS, "MSAL and Microsoft outages"),
so the default lives here rather than at each call site."""

from __future__ import annotations

from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from urllib3.util.retry import Retry

POOL_SIZE = 32


def pooled(session: requests.Session, pool_size: int = POOL_SIZE, retries: Retry | None = None) -> requests.Session:
    """Mount adapters keeping up to `pool_size` connections per host (and 8 hosts) on `session`;
    `retries`: urllib3's, for callers that retry in their own pipeline."""
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=pool_size,
                                            max_retries=retries if retries is not None else 0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def storage_transport(connection_timeout: float, read_timeout: float, pool_size: int = POOL_SIZE) -> RequestsTransport:
    """An azure-core transport over one pooled session, which the Table and Queue clients share
    (timeouts in seconds, on every request unless a call gives its own; the SDKs' defaults are up to
    300 s). Set up as azure-core sets up its own session: urllib3 retries and redirects off (the SDK
    pipeline retries). Not owned by the clients: closing one leaves the session open for the others."""
    no_retries = Retry(total=False, redirect=False, raise_on_status=False)
    return RequestsTransport(session=pooled(requests.Session(), pool_size, no_retries), session_owner=False,
                             connection_timeout=connection_timeout, read_timeout=read_timeout)


class TimeoutSession(requests.Session):
    """A `requests.Session` whose requests time out after `timeout` seconds (connect and read) unless
    the caller gives its own. Pools up to `pool_size` connections per host: sync fans out."""

    def __init__(self, timeout: float, pool_size: int = POOL_SIZE) -> None:
        super().__init__()
        self.timeout = timeout
        pooled(self, pool_size)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)
