"""Every local stand-in answers a method it does not serve with a 4xx, as the Azure services do.

The standard library's default is a 501 HTML page, which a fuzzer driven by the OpenAPI document
counts as a server error. The Functions host's own rule (404, as Azure) is in test_local_host.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import tls
from devstack.agents import AgentRecorder
from devstack.keyvault import KeyVaultEndpoint
from devstack.msim import MicrosoftSimulator

UNDECLARED = ["TRACE", "CONNECT", "PROPFIND", "MKCOL", "FOO-BAR", "get"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tls.TestCA:
    return tls.ensure_ca(Path(tmp_path_factory.mktemp("devstack")))


@pytest.fixture(scope="module")
def servers(ca: tls.TestCA) -> Iterator[dict[str, tuple[int, ssl.SSLContext | None]]]:
    sim = MicrosoftSimulator(ssl_context=ca.server_context())
    vault = KeyVaultEndpoint(ssl_context=ca.server_context(), authority="https://127.0.0.1:1/tenant")
    recorder = AgentRecorder(api_key="k")
    sim.start()
    vault.start()
    recorder.start()
    client_tls = ssl.create_default_context(cafile=str(ca.bundle_pem))
    try:
        yield {"simulator": (sim.port, client_tls), "key vault": (vault.port, client_tls),
               "agent recorder": (recorder.port, None)}
    finally:
        for server in (recorder, vault, sim):
            server.stop()


def call(port: int, context: ssl.SSLContext | None, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5) if context
                  else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", UNDECLARED)
@pytest.mark.parametrize("name", ["simulator", "key vault", "agent recorder"])
def test_an_undeclared_method_is_405_with_allow_and_a_json_error(
    servers: dict[str, tuple[int, ssl.SSLContext | None]], name: str, method: str
) -> None:
    port, context = servers[name]
    path = "127.0.0.1:443" if method == "CONNECT" else "/"

    status, headers, body = call(port, context, method, path)

    assert status == 405, (name, method, body)
    assert "GET" in headers["allow"].split(", ")
    assert method not in headers["allow"].split(", ")
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "MethodNotAllowed"


def test_the_server_still_answers_after_refusing_a_method(
    servers: dict[str, tuple[int, ssl.SSLContext | None]],
) -> None:
    port, context = servers["agent recorder"]
    assert call(port, context, "TRACE", "/")[0] == 405
    assert call(port, context, "GET", "/")[0] == 200
