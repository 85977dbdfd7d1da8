"""The one HTTP session outbound calls share (Graph, the identity platform through MSAL, the agent
API, the platform's status-event endpoint): pooled connections and a timeout on every request.

MSAL given a `requests.Session` passes no timeout of its own (FACTS, "MSAL and Microsoft outages"),
so the default lives here rather than at each call site."""

from __future__ import annotations

from typing import Any

import requests


class TimeoutSession(requests.Session):
    """A `requests.Session` whose requests time out after `timeout` seconds (connect and read) unless
    the caller gives its own. Pools up to `pool_size` connections per host: sync fans out."""

    def __init__(self, timeout: float, pool_size: int = 32) -> None:
        super().__init__()
        self.timeout = timeout
        adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=pool_size)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)
