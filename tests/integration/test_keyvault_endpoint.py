"""The local Key Vault endpoint behaves like Key Vault for the real SecretClient."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient

from devstack import tls
from devstack.keyvault import KeyVaultEndpoint

AUTHORITY = "https://127.0.0.1:9443/5f1c2a7e-0000-4000-8000-00000000c0de"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_jwt(**claims: Any) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


class FakeCredential:
    """A TokenCredential that hands out unsigned JWTs for the requested audience."""

    def __init__(self, audience: str = "https://vault.azure.net") -> None:
        self.audience = audience
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests.append((scopes, kwargs))
        expires = int(time.time()) + 3600
        return AccessToken(unsigned_jwt(aud=self.audience, exp=expires, tid=kwargs.get("tenant_id")), expires)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tls.TestCA:
    return tls.ensure_ca(Path(tmp_path_factory.mktemp("devstack")))


def _endpoint(ca: tls.TestCA, *, purge_protection: bool = True) -> KeyVaultEndpoint:
    return KeyVaultEndpoint(
        ssl_context=ca.server_context(), authority=AUTHORITY, purge_protection=purge_protection
    ).start()


@pytest.fixture
def vault(ca: tls.TestCA) -> Iterator[KeyVaultEndpoint]:
    endpoint = _endpoint(ca)
    yield endpoint
    endpoint.stop()


def client_for(endpoint: KeyVaultEndpoint, ca: tls.TestCA, credential: Any = None) -> SecretClient:
    # trust_env=False: the machine's REQUESTS_CA_BUNDLE/proxies must not override the test CA.
    session = requests.Session()
    session.trust_env = False
    return SecretClient(
        endpoint.url,
        credential or FakeCredential(),
        verify_challenge_resource=False,
        transport=RequestsTransport(session=session, session_owner=False, connection_verify=str(ca.bundle_pem)),
    )


def test_set_then_get_returns_the_value_and_a_versioned_id(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    credential = FakeCredential()
    client = client_for(vault, ca, credential)

    stored = client.set_secret("conn-1-refresh", "r3fr3sh", content_type="text/plain", tags={"user": "u1"})
    got = client.get_secret("conn-1-refresh")

    assert got.value == "r3fr3sh"
    assert got.id == f"{vault.url}/secrets/conn-1-refresh/{stored.properties.version}"
    assert got.properties.content_type == "text/plain"
    assert got.properties.tags == {"user": "u1"}
    assert got.properties.enabled is True
    assert got.properties.recovery_level == "Recoverable"
    assert got.properties.created_on is not None
    # The challenge told the credential which tenant and resource to ask for.
    scopes, kwargs = credential.requests[0]
    assert scopes == ("https://vault.azure.net/.default",)
    assert kwargs["tenant_id"] == "5f1c2a7e-0000-4000-8000-00000000c0de"


def test_every_set_creates_a_new_version_and_old_versions_stay_readable(
    vault: KeyVaultEndpoint, ca: tls.TestCA
) -> None:
    client = client_for(vault, ca)
    first = client.set_secret("rotating", "one")
    second = client.set_secret("rotating", "two")

    assert first.properties.version != second.properties.version
    assert client.get_secret("rotating").value == "two"
    assert client.get_secret("rotating", first.properties.version).value == "one"
    versions = {p.version for p in client.list_properties_of_secret_versions("rotating")}
    assert versions == {first.properties.version, second.properties.version}


def test_listing_pages_through_properties_without_values(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    for i in range(30):  # more than one page of 25
        client.set_secret(f"s-{i:02d}", f"value-{i}")

    listed = list(client.list_properties_of_secrets())

    assert sorted(str(p.name) for p in listed) == [f"s-{i:02d}" for i in range(30)]
    assert all(p.version is None for p in listed)
    raw = requests.get(
        f"{vault.url}/secrets?api-version=7.5",
        headers={"Authorization": f"Bearer {unsigned_jwt(aud='https://vault.azure.net')}"},
        verify=str(ca.bundle_pem),
    ).json()
    assert len(raw["value"]) == 25
    assert "value" not in raw["value"][0]
    assert raw["nextLink"].startswith(f"{vault.url}/secrets?")


def test_delete_is_soft_and_recoverable(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    client.set_secret("to-delete", "keep-me")

    poller = client.begin_delete_secret("to-delete")
    deleted = poller.result()
    poller.wait()

    assert deleted.recovery_id == f"{vault.url}/deletedsecrets/to-delete"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("to-delete")
    assert client.get_deleted_secret("to-delete").name == "to-delete"

    recover = client.begin_recover_deleted_secret("to-delete")
    recover.wait()
    assert client.get_secret("to-delete").value == "keep-me"


def test_a_soft_deleted_name_cannot_be_reused(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    client.set_secret("gone", "x")
    client.begin_delete_secret("gone").wait()

    with pytest.raises(ResourceExistsError) as raised:
        client.set_secret("gone", "y")

    assert raised.value.status_code == 409
    assert raised.value.error is not None
    assert raised.value.error.code == "Conflict"
    assert raised.value.error.innererror == {"code": "ObjectIsDeletedButRecoverable"}
    assert "deleted but recoverable state" in str(raised.value.error.message)


def test_purge_is_refused_under_purge_protection(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    client.set_secret("protected", "x")
    client.begin_delete_secret("protected").wait()

    with pytest.raises(HttpResponseError) as raised:
        client.purge_deleted_secret("protected")

    assert raised.value.status_code == 403
    assert client.get_deleted_secret("protected").name == "protected"


def test_purge_without_protection_frees_the_name(ca: tls.TestCA) -> None:
    endpoint = _endpoint(ca, purge_protection=False)
    try:
        client = client_for(endpoint, ca)
        client.set_secret("purgeable", "x")
        client.begin_delete_secret("purgeable").wait()

        client.purge_deleted_secret("purgeable")

        with pytest.raises(ResourceNotFoundError):
            client.get_deleted_secret("purgeable")
        assert client.set_secret("purgeable", "again").value == "again"
        assert client.get_secret("purgeable").properties.recovery_level == "Recoverable+Purgeable"
    finally:
        endpoint.stop()


@pytest.mark.parametrize("name", ["has_underscore", "a" * 128, "dots.not.allowed"])
def test_invalid_names_are_bad_parameters(vault: KeyVaultEndpoint, ca: tls.TestCA, name: str) -> None:
    with pytest.raises(HttpResponseError) as raised:
        client_for(vault, ca).set_secret(name, "x")

    assert raised.value.status_code == 400
    assert raised.value.error is not None and raised.value.error.code == "BadParameter"


def test_values_over_25600_bytes_are_refused(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    client.set_secret("big", "x" * 25_600)

    with pytest.raises(HttpResponseError) as raised:
        client.set_secret("big", "x" * 25_601)

    assert raised.value.status_code == 400


def test_missing_secrets_are_not_found(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        client_for(vault, ca).get_secret("never-set")
    assert raised.value.error is not None and raised.value.error.code == "SecretNotFound"


def test_a_request_without_a_token_gets_the_challenge(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    answer = requests.put(f"{vault.url}/secrets/x?api-version=7.5", json={"value": "v"}, verify=str(ca.bundle_pem))

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{AUTHORITY}", resource="https://vault.azure.net"'
    )
    assert answer.json()["error"]["code"] == "Unauthorized"


def test_tokens_for_another_audience_are_refused(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca, FakeCredential(audience="https://graph.microsoft.com"))

    with pytest.raises(ClientAuthenticationError):
        client.set_secret("x", "v")

    assert vault.vault.names()["secrets"] == []


def test_expired_tokens_are_refused(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    token = unsigned_jwt(aud="https://vault.azure.net", exp=int(time.time()) - 60)
    answer = requests.get(
        f"{vault.url}/secrets/x?api-version=7.5",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(ca.bundle_pem),
    )
    assert answer.status_code == 401


def test_helpers_count_operations_and_list_names(vault: KeyVaultEndpoint, ca: tls.TestCA) -> None:
    client = client_for(vault, ca)
    client.set_secret("one", "1")
    client.set_secret("two", "2")
    client.get_secret("one")
    client.begin_delete_secret("two").wait()

    stats = requests.get(f"{vault.url}/_kv/stats", verify=str(ca.bundle_pem)).json()
    names = requests.get(f"{vault.url}/_kv/names", verify=str(ca.bundle_pem)).json()

    assert stats == {"sets": 2, "gets": 1, "deletes": 1, "key_creates": 0, "key_gets": 0, "wraps": 0, "unwraps": 0}
    assert names == {"secrets": ["one"], "deleted": ["two"]}
