"""A Key Vault-compatible HTTPS endpoint for secrets, for the local stack and tests.

The real `azure.keyvault.secrets.SecretClient` talks to it unchanged, given
`verify_challenge_resource=False` (the vault is not under vault.azure.net) and a transport that
trusts the test CA. It implements the secrets REST surface the service uses, with the shapes of
the Key Vault REST reference (SetSecret, GetSecret, GetSecrets, GetSecretVersions,
UpdateSecret, DeleteSecret, GetDeletedSecret(s), PurgeDeletedSecret, RecoverDeletedSecret):

- every set creates a new version; delete is soft (the vault always has soft delete on);
- setting a soft-deleted name answers 409 ObjectIsDeletedButRecoverable;
- purge answers 403 while the vault has purge protection (the default, like production);
- names are `[0-9a-zA-Z-]{1,127}`, values at most 25,600 bytes (UTF-8), else 400 BadParameter.

Keys (for envelope encryption: the app's data keys are wrapped by a vault key), with the shapes of
the Key Vault keys REST reference and used through `azure.keyvault.keys` (KeyClient,
CryptographyClient): CreateKey (`POST /keys/{name}/create`, RSA 2048-4096), GetKey
(`GET /keys/{name}[/{version}]`, public JWK only: `n`, `e`), GetKeyVersions, RotateKey
(`POST /keys/{name}/rotate`, a new version; old versions still unwrap), WrapKey / UnwrapKey
(`POST /keys/{name}/{version}/wrapkey|unwrapkey`, `alg` RSA-OAEP-256 or RSA-OAEP, `value` base64url).
A key whose versions are all gone answers 404 KeyNotFound; a value that does not unwrap under the
key version named answers 400 BadParameter (as Key Vault does for a wrong key or a tampered value).
The private keys never leave the endpoint.

Authentication is Key Vault's challenge protocol: a request without `Authorization: Bearer`
gets 401 with `WWW-Authenticate: Bearer authorization="<authority>", resource="https://vault.azure.net"`.
Bearer tokens are JWTs whose `aud` must be the vault resource and which must not be expired.
LOCAL ONLY: the token's signature is NOT verified (any well-formed JWT with that audience is
accepted); there are no access policies or RBAC roles.

Test helpers, unauthenticated: `GET /_kv/stats` -> {"sets", "gets", "deletes", "key_creates",
"key_gets", "wraps", "unwraps"} (every billed operation, by kind),
`GET /_kv/names` -> {"secrets": [...], "deleted": [...]}, `POST /_kv/secrets/{name}/age` with
`{"seconds": N}` -> 204 (the secret's versions become N seconds older: checks of age-based cleanup).
Everything lives in memory and is lost when the endpoint stops.

CLI: `python -m devstack.keyvault --port 9444 --devstack-dir .devstack --authority URL`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack._httpserver import BackgroundServer, BodyTooLarge, LocalHTTPServer, QuietHandler
from devstack._signals import StopSignals

VAULT_RESOURCE = "https://vault.azure.net"
# Audiences Key Vault accepts: the resource URI (v1 and v2 tokens) and Key Vault's app id.
ACCEPTED_AUDIENCES = frozenset({VAULT_RESOURCE, VAULT_RESOURCE + "/", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"})
NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE_BYTES = 25_600
MAX_RESULTS = 25
RECOVERABLE_DAYS = 90
_NOT_FOUND_HELP = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery "
    "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


class KeyVaultError(Exception):
    def __init__(self, status: int, code: str, message: str, inner_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int


@dataclass
class _Secret:
    name: str
    versions: list[_Version] = field(default_factory=list)

    @property
    def latest(self) -> _Version:
        return self.versions[-1]


@dataclass
class _DeletedSecret:
    secret: _Secret
    deleted_date: int
    scheduled_purge_date: int


class _Vault:
    """The secrets of one vault and the operations on them. Thread-safe."""

    def __init__(self, *, purge_protection: bool) -> None:
        self.purge_protection = purge_protection
        self._lock = threading.Lock()
        self._live: dict[str, _Secret] = {}
        self._deleted: dict[str, _DeletedSecret] = {}
        self.stats = {"sets": 0, "gets": 0, "deletes": 0, "key_creates": 0, "key_gets": 0, "wraps": 0, "unwraps": 0}
        self.keys = _Keys(self.stats, self._lock)

    @property
    def recovery_level(self) -> str:
        return "Recoverable" if self.purge_protection else "Recoverable+Purgeable"

    def set(self, name: str, params: dict[str, Any]) -> tuple[_Secret, _Version]:
        value = params.get("value")
        if not isinstance(value, str):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise KeyVaultError(
                400,
                "BadParameter",
                f"Secret is beyond the maximum permitted length of {MAX_VALUE_BYTES} characters.",
            )
        content_type = _optional_str(params, "contentType")
        tags = _tags(params.get("tags"))
        enabled, not_before, expires = _attributes(params.get("attributes"))
        now = int(time.time())
        with self._lock:
            key = name.lower()
            if key in self._deleted:
                raise KeyVaultError(
                    409,
                    "Conflict",
                    f"Secret {self._deleted[key].secret.name} is currently in a deleted but recoverable "
                    "state, and its name cannot be reused; in this state, the secret can only be "
                    "recovered or purged.",
                    inner_code="ObjectIsDeletedButRecoverable",
                )
            secret = self._live.setdefault(key, _Secret(name=name))
            version = _Version(
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=tags,
                enabled=True if enabled is None else enabled,
                not_before=not_before,
                expires=expires,
                created=now,
                updated=now,
            )
            secret.versions.append(version)
            self.stats["sets"] += 1
            return secret, version

    def get(self, name: str, version: str | None) -> tuple[_Secret, _Version]:
        with self._lock:
            secret, found = self._find_version(name, version)
            if not found.enabled:
                raise KeyVaultError(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    inner_code="SecretDisabled",
                )
            self.stats["gets"] += 1
            return secret, found

    def update(self, name: str, version: str | None, params: dict[str, Any]) -> tuple[_Secret, _Version]:
        content_type = _optional_str(params, "contentType")
        tags = _tags(params.get("tags"))
        enabled, not_before, expires = _attributes(params.get("attributes"))
        with self._lock:
            secret, found = self._find_version(name, version)
            if "contentType" in params:
                found.content_type = content_type
            if "tags" in params:
                found.tags = tags
            if enabled is not None:
                found.enabled = enabled
            if not_before is not None:
                found.not_before = not_before
            if expires is not None:
                found.expires = expires
            found.updated = int(time.time())
            return secret, found

    def _find_version(self, name: str, version: str | None) -> tuple[_Secret, _Version]:
        secret = self._live.get(name.lower())
        if secret is None:
            raise _secret_not_found(name)
        if not version:
            return secret, secret.latest
        for candidate in secret.versions:
            if candidate.version == version.lower():
                return secret, candidate
        raise _secret_not_found(f"{name}/{version}")

    def list_latest(self) -> list[tuple[_Secret, _Version]]:
        with self._lock:
            return [(s, s.latest) for _, s in sorted(self._live.items())]

    def list_versions(self, name: str) -> list[tuple[_Secret, _Version]]:
        with self._lock:
            secret = self._live.get(name.lower())
            if secret is None:
                raise _secret_not_found(name)
            return [(secret, v) for v in secret.versions]

    def delete(self, name: str) -> _DeletedSecret:
        with self._lock:
            secret = self._live.pop(name.lower(), None)
            if secret is None:
                raise _secret_not_found(name)
            now = int(time.time())
            deleted = _DeletedSecret(secret, now, now + RECOVERABLE_DAYS * 86_400)
            self._deleted[name.lower()] = deleted
            self.stats["deletes"] += 1
            return deleted

    def get_deleted(self, name: str) -> _DeletedSecret:
        with self._lock:
            deleted = self._deleted.get(name.lower())
            if deleted is None:
                raise KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            return deleted

    def list_deleted(self) -> list[_DeletedSecret]:
        with self._lock:
            return [d for _, d in sorted(self._deleted.items())]

    def purge(self, name: str) -> None:
        with self._lock:
            if name.lower() not in self._deleted:
                raise KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            if self.purge_protection:
                raise KeyVaultError(
                    403,
                    "Forbidden",
                    'Operation "purge" is not allowed because purge protection is enabled for this vault. '
                    "Key Vault service will automatically purge it after the retention period has passed.",
                )
            del self._deleted[name.lower()]

    def recover(self, name: str) -> tuple[_Secret, _Version]:
        with self._lock:
            deleted = self._deleted.pop(name.lower(), None)
            if deleted is None:
                raise KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            self._live[name.lower()] = deleted.secret
            return deleted.secret, deleted.secret.latest

    def age(self, name: str, seconds: int) -> None:
        """Test helper: the secret's versions were created and updated `seconds` earlier."""
        with self._lock:
            secret = self._live.get(name.lower())
            if secret is None:
                raise _secret_not_found(name)
            for version in secret.versions:
                version.created -= seconds
                version.updated -= seconds

    def stats_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)

    def names(self) -> dict[str, list[str]]:
        with self._lock:
            return {
                "secrets": sorted(s.name for s in self._live.values()),
                "deleted": sorted(d.secret.name for d in self._deleted.values()),
            }


_OAEP = {
    "RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
}
KEY_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]


@dataclass
class _KeyVersion:
    version: str
    private: rsa.RSAPrivateKey
    key_ops: list[str]
    created: int
    enabled: bool = True


class _Keys:
    """The RSA keys of one vault. Thread-safe. Counts every operation Key Vault bills."""

    def __init__(self, stats: dict[str, int], lock: threading.Lock) -> None:
        self._stats = stats
        self._lock = lock
        self._keys: dict[str, list[_KeyVersion]] = {}

    def create(self, name: str, params: dict[str, Any]) -> tuple[str, _KeyVersion]:
        kty = params.get("kty")
        if kty not in ("RSA", "RSA-HSM"):
            raise KeyVaultError(400, "BadParameter", "Only RSA keys are supported by this local vault (kty RSA).")
        size = params.get("key_size", 2048)
        if isinstance(size, bool) or not isinstance(size, int) or size not in (2048, 3072, 4096):
            raise KeyVaultError(400, "BadParameter", "key_size must be 2048, 3072 or 4096.")
        ops = params.get("key_ops") or KEY_OPS
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise KeyVaultError(400, "BadParameter", "key_ops must be a list of strings.")
        version = _KeyVersion(uuid.uuid4().hex, rsa.generate_private_key(public_exponent=65537, key_size=size),
                              list(ops), int(time.time()))
        with self._lock:
            self._keys.setdefault(name.lower(), []).append(version)
            self._stats["key_creates"] += 1
        return name, version

    def rotate(self, name: str) -> tuple[str, _KeyVersion]:
        latest = self.get(name, None, count=False)[1]
        return self.create(name, {"kty": "RSA", "key_size": latest.private.key_size, "key_ops": latest.key_ops})

    def get(self, name: str, version: str | None, *, count: bool = True) -> tuple[str, _KeyVersion]:
        with self._lock:
            versions = self._keys.get(name.lower())
            if not versions:
                raise _key_not_found(name)
            found = versions[-1] if not version else next(
                (v for v in versions if v.version == version.lower()), None)
            if found is None:
                raise _key_not_found(f"{name}/{version}")
            if count:
                self._stats["key_gets"] += 1
            return name, found

    def versions(self, name: str) -> list[tuple[str, _KeyVersion]]:
        with self._lock:
            versions = self._keys.get(name.lower())
            if not versions:
                raise _key_not_found(name)
            return [(name, v) for v in versions]

    def wrap(self, name: str, version: str, params: dict[str, Any], *, unwrap: bool) -> tuple[str, _KeyVersion, bytes]:
        alg = params.get("alg")
        if alg not in _OAEP:
            raise KeyVaultError(400, "BadParameter", f"Algorithm {alg!r} is not supported: use RSA-OAEP-256.")
        value = params.get("value")
        if not isinstance(value, str):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is required (base64url).")
        try:
            data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, binascii.Error):
            raise KeyVaultError(400, "BadParameter", "Property 'value' is not base64url.") from None
        name, found = self.get(name, version, count=False)
        op = "unwrapKey" if unwrap else "wrapKey"
        if op not in found.key_ops or not found.enabled:
            raise KeyVaultError(403, "Forbidden", f"Operation {op} is not permitted on this key.",
                                inner_code="KeyOperationForbidden")
        with self._lock:
            self._stats["unwraps" if unwrap else "wraps"] += 1
        try:
            if unwrap:
                result = found.private.decrypt(data, _OAEP[alg]())
            else:
                result = found.private.public_key().encrypt(data, _OAEP[alg]())
        except ValueError:
            raise KeyVaultError(400, "BadParameter", "Unable to decrypt the specified value with this key.") \
                from None
        return name, found, result


def _key_not_found(what: str) -> KeyVaultError:
    return KeyVaultError(404, "KeyNotFound", f"A key with (name/id) {what} was not found in this key vault. "
                         f"{_NOT_FOUND_HELP}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _secret_not_found(what: str) -> KeyVaultError:
    return KeyVaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {what} was not found in this key vault. {_NOT_FOUND_HELP}",
    )


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise KeyVaultError(400, "BadParameter", f"Property '{key}' must be a string.")
    return value


def _tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise KeyVaultError(400, "BadParameter", "Property 'tags' must map strings to strings.")
    if len(value) > 15:
        raise KeyVaultError(400, "BadParameter", "A secret can have at most 15 tags.")
    return dict(value)


def _attributes(value: Any) -> tuple[bool | None, int | None, int | None]:
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise KeyVaultError(400, "BadParameter", "Property 'attributes' must be an object.")
    enabled = value.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise KeyVaultError(400, "BadParameter", "Attribute 'enabled' must be a boolean.")
    times: list[int | None] = []
    for key in ("nbf", "exp"):
        stamp = value.get(key)
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int)):
            raise KeyVaultError(400, "BadParameter", f"Attribute '{key}' must be a Unix time in seconds.")
        times.append(stamp)
    return enabled, times[0], times[1]


def token_audience_error(authorization: str | None, now: float | None = None) -> str | None:
    """Why a bearer token is not acceptable to the vault, or None when it is.

    The signature is deliberately not checked: this endpoint only runs on a developer's machine.
    """
    if not authorization or not authorization.lower().startswith("bearer "):
        return "AKV10000: Request is missing a Bearer or PoP token."
    token = authorization[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return "AKV10013: The token is not a well-formed JWT."
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return "AKV10013: The token is not a well-formed JWT."
    if not isinstance(claims, dict):
        return "AKV10013: The token is not a well-formed JWT."
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not any(isinstance(a, str) and a in ACCEPTED_AUDIENCES for a in audiences):
        return f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {audience}."
    expires = claims.get("exp")
    if isinstance(expires, (int, float)) and expires < (time.time() if now is None else now):
        return "AKV10020: The token has expired."
    return None


class KeyVaultEndpoint:
    """An in-memory Key Vault (secrets only) served over HTTPS on the loopback interface."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext,
        authority: str,
        purge_protection: bool = True,
    ) -> None:
        self.authority = authority.rstrip("/")
        self.vault = _Vault(purge_protection=purge_protection)
        endpoint = self

        class Handler(_KeyVaultHandler):
            pass

        Handler.endpoint = endpoint
        self._server = BackgroundServer(
            LocalHTTPServer((host, port), Handler, ssl_context=ssl_context), name="keyvault"
        )
        self.host = host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def challenge(self) -> str:
        return f'Bearer authorization="{self.authority}", resource="{VAULT_RESOURCE}"'

    def start(self) -> KeyVaultEndpoint:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


class _KeyVaultHandler(QuietHandler):
    endpoint: KeyVaultEndpoint

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self.read_body(limit=1024 * 1024)
        except BodyTooLarge:
            self.close_connection = True
            self._error(KeyVaultError(413, "RequestEntityTooLarge", "The request body is too large."))
            return
        except ValueError:
            self.close_connection = True
            self._error(KeyVaultError(400, "BadParameter", "The request body could not be read."))
            return
        split = urlsplit(self.path)
        segments = [unquote(s) for s in split.path.split("/") if s]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            if segments[:1] == ["_kv"]:
                self._test_helpers(segments, body)
                return
            problem = token_audience_error(self.headers.get("Authorization"))
            if problem is not None:
                self.send_json(
                    401,
                    KeyVaultError(401, "Unauthorized", problem).body(),
                    headers=[("WWW-Authenticate", self.endpoint.challenge)],
                )
                return
            if segments[:1] not in (["secrets"], ["deletedsecrets"], ["keys"]):
                raise KeyVaultError(404, "NotFound", "The requested resource was not found.")
            if "api-version" not in query:
                raise KeyVaultError(400, "BadParameter", "The 'api-version' query parameter is missing.")
            if len(segments) > 1 and not NAME_PATTERN.match(segments[1]):
                raise KeyVaultError(400, "BadParameter", f"The request URI contains an invalid name: {segments[1]}")
            if segments[0] == "secrets":
                self._secrets(segments[1:], query, body)
            elif segments[0] == "keys":
                self._keys(segments[1:], query, body)
            else:
                self._deleted_secrets(segments[1:], query)
        except KeyVaultError as error:
            self._error(error)

    def _error(self, error: KeyVaultError) -> None:
        self.send_json(error.status, error.body())

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise KeyVaultError(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise KeyVaultError(400, "BadParameter", "The request body must be a JSON object.")
        return params

    def _test_helpers(self, segments: list[str], body: bytes = b"") -> None:
        vault = self.endpoint.vault
        if self.command == "GET" and segments == ["_kv", "stats"]:
            self.send_json(200, vault.stats_snapshot())
        elif self.command == "GET" and segments == ["_kv", "names"]:
            self.send_json(200, vault.names())
        elif self.command == "POST" and len(segments) == 4 and segments[1] == "secrets" and segments[3] == "age":
            seconds = self._json_body(body).get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                raise KeyVaultError(400, "BadParameter", 'Body must be {"seconds": <whole number>}.')
            vault.age(segments[2], seconds)
            self.send_empty(204)
        else:
            raise KeyVaultError(404, "NotFound", "Unknown test helper.")

    def _secrets(self, rest: list[str], query: dict[str, str], body: bytes) -> None:
        vault = self.endpoint.vault
        method = self.command
        if not rest and method == "GET":
            self._page([self._item(s, v, with_version=False) for s, v in vault.list_latest()], query)
        elif len(rest) == 1 and method == "PUT":
            secret, version = vault.set(rest[0], self._json_body(body))
            self.send_json(200, self._bundle(secret, version, with_value=True))
        elif len(rest) == 1 and method == "DELETE":
            self.send_json(200, self._deleted_bundle(vault.delete(rest[0])))
        elif len(rest) in (1, 2) and method == "GET" and rest[1:] != ["versions"]:
            secret, version = vault.get(rest[0], rest[1] if len(rest) == 2 else None)
            self.send_json(200, self._bundle(secret, version, with_value=True))
        elif len(rest) == 2 and method == "GET":
            items = [self._item(s, v, with_version=True) for s, v in vault.list_versions(rest[0])]
            self._page(items, query)
        elif len(rest) in (1, 2) and method == "PATCH":
            secret, version = vault.update(rest[0], rest[1] if len(rest) == 2 else None, self._json_body(body))
            self.send_json(200, self._bundle(secret, version, with_value=False))
        else:
            raise KeyVaultError(405, "MethodNotAllowed", f"{method} is not supported on this resource.")

    def _keys(self, rest: list[str], query: dict[str, str], body: bytes) -> None:
        keys = self.endpoint.vault.keys
        method = self.command
        if len(rest) == 2 and rest[1] == "create" and method == "POST":
            self.send_json(200, self._key_bundle(*keys.create(rest[0], self._json_body(body))))
        elif len(rest) == 2 and rest[1] == "rotate" and method == "POST":
            self.send_json(200, self._key_bundle(*keys.rotate(rest[0])))
        elif len(rest) == 2 and rest[1] == "versions" and method == "GET":
            items = [{"kid": self._kid(n, v), "attributes": self._key_attributes(v)} for n, v in keys.versions(rest[0])]
            self._page(items, query)
        elif len(rest) == 3 and rest[2] in ("wrapkey", "unwrapkey") and method == "POST":
            name, version, value = keys.wrap(rest[0], rest[1], self._json_body(body), unwrap=rest[2] == "unwrapkey")
            self.send_json(200, {"kid": self._kid(name, version), "value": _b64url(value)})
        elif len(rest) in (1, 2) and method == "GET":
            self.send_json(200, self._key_bundle(*keys.get(rest[0], rest[1] if len(rest) == 2 else None)))
        else:
            raise KeyVaultError(405, "MethodNotAllowed", f"{method} is not supported on this resource.")

    def _kid(self, name: str, version: _KeyVersion) -> str:
        return f"{self.endpoint.url}/keys/{name}/{version.version}"

    def _key_attributes(self, version: _KeyVersion) -> dict[str, Any]:
        return {"enabled": version.enabled, "created": version.created, "updated": version.created,
                "recoveryLevel": self.endpoint.vault.recovery_level, "recoverableDays": RECOVERABLE_DAYS,
                "exportable": False}

    def _key_bundle(self, name: str, version: _KeyVersion) -> dict[str, Any]:
        public = version.private.public_key().public_numbers()
        return {"key": {"kid": self._kid(name, version), "kty": "RSA", "key_ops": version.key_ops,
                        "n": _int_b64url(public.n), "e": _int_b64url(public.e)},
                "attributes": self._key_attributes(version)}

    def _deleted_secrets(self, rest: list[str], query: dict[str, str]) -> None:
        vault = self.endpoint.vault
        method = self.command
        if not rest and method == "GET":
            items = []
            for deleted in vault.list_deleted():
                item = self._item(deleted.secret, deleted.secret.latest, with_version=False)
                item.update(self._deletion_fields(deleted))
                items.append(item)
            self._page(items, query)
        elif len(rest) == 1 and method == "GET":
            self.send_json(200, self._deleted_bundle(vault.get_deleted(rest[0])))
        elif len(rest) == 1 and method == "DELETE":
            vault.purge(rest[0])
            self.send_empty(204)
        elif rest[1:] == ["recover"] and method == "POST":
            secret, version = vault.recover(rest[0])
            self.send_json(200, self._bundle(secret, version, with_value=False))
        else:
            raise KeyVaultError(405, "MethodNotAllowed", f"{method} is not supported on this resource.")

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> None:
        try:
            page_size = int(query.get("maxresults", MAX_RESULTS))
            offset = int(query.get("$skiptoken", "0"))
        except ValueError:
            raise KeyVaultError(400, "BadParameter", "Invalid maxresults or $skiptoken.") from None
        if not 1 <= page_size <= MAX_RESULTS or offset < 0:
            raise KeyVaultError(400, "BadParameter", f"maxresults must be between 1 and {MAX_RESULTS}.")
        end = offset + page_size
        next_link = None
        if end < len(items):
            path = urlsplit(self.path).path
            next_link = (
                f"{self.endpoint.url}{path}?api-version={query['api-version']}&$skiptoken={end}&maxresults={page_size}"
            )
        self.send_json(200, {"value": items[offset:end], "nextLink": next_link})

    def _secret_id(self, secret: _Secret, version: _Version | None) -> str:
        base = f"{self.endpoint.url}/secrets/{secret.name}"
        return f"{base}/{version.version}" if version else base

    def _attributes(self, version: _Version) -> dict[str, Any]:
        attributes: dict[str, Any] = {"enabled": version.enabled}
        if version.not_before is not None:
            attributes["nbf"] = version.not_before
        if version.expires is not None:
            attributes["exp"] = version.expires
        attributes.update(
            created=version.created,
            updated=version.updated,
            recoveryLevel=self.endpoint.vault.recovery_level,
            recoverableDays=RECOVERABLE_DAYS,
        )
        return attributes

    def _common(self, version: _Version) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if version.content_type is not None:
            fields["contentType"] = version.content_type
        fields["attributes"] = self._attributes(version)
        if version.tags is not None:
            fields["tags"] = version.tags
        return fields

    def _bundle(self, secret: _Secret, version: _Version, *, with_value: bool) -> dict[str, Any]:
        bundle: dict[str, Any] = {"value": version.value} if with_value else {}
        bundle["id"] = self._secret_id(secret, version)
        bundle.update(self._common(version))
        return bundle

    def _item(self, secret: _Secret, version: _Version, *, with_version: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self._secret_id(secret, version if with_version else None)}
        item.update(self._common(version))
        return item

    def _deletion_fields(self, deleted: _DeletedSecret) -> dict[str, Any]:
        return {
            "recoveryId": f"{self.endpoint.url}/deletedsecrets/{deleted.secret.name}",
            "deletedDate": deleted.deleted_date,
            "scheduledPurgeDate": deleted.scheduled_purge_date,
        }

    def _deleted_bundle(self, deleted: _DeletedSecret) -> dict[str, Any]:
        bundle = self._deletion_fields(deleted)
        bundle.update(self._bundle(deleted.secret, deleted.secret.latest, with_value=False))
        return bundle


def main(argv: list[str] | None = None) -> int:
    from devstack.tls import ensure_ca

    parser = argparse.ArgumentParser(prog="python -m devstack.keyvault", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9444)
    parser.add_argument("--devstack-dir", type=Path, default=Path(".devstack"))
    parser.add_argument(
        "--authority",
        required=True,
        help="authority URL (with the tenant) put in the 401 challenge, e.g. https://127.0.0.1:9443/<tenant>",
    )
    parser.add_argument("--no-purge-protection", action="store_true", help="allow purging deleted secrets")
    args = parser.parse_args(argv)
    ca = ensure_ca(args.devstack_dir)
    endpoint = KeyVaultEndpoint(
        host=args.host,
        port=args.port,
        ssl_context=ca.server_context(),
        authority=args.authority,
        purge_protection=not args.no_purge_protection,
    ).start()
    signals = StopSignals().install()
    print(f"Key Vault endpoint listening on {endpoint.url}", flush=True)
    signals.wait()
    endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
