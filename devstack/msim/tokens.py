"""The simulator's token signing key, its JWKS, and the JWTs it issues.

One RS256 key is generated per simulator start (a key rollover on every restart: tokens from a
previous run no longer validate). The JWKS entry carries `x5c`/`x5t` like Microsoft's, from a
self-signed certificate around the key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_AUDIENCES = frozenset({GRAPH_APP_ID, GRAPH_RESOURCE, GRAPH_RESOURCE + "/"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def pairwise_subject(object_id: str, audience: str) -> str:
    """`sub`: unique per user and app, as the identity platform makes it."""
    return b64url(hashlib.sha256(f"{object_id}|{audience}".encode()).digest())


def service_principal_id(client_id: str, tenant_id: str) -> str:
    """Stable object id of an app's service principal in a tenant (the `oid` of app-only tokens)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{tenant_id}:{client_id}"))


def login_hint_claim(object_id: str, tenant_id: str, upn: str) -> str:
    """The id_token's `login_hint` optional claim: "an opaque, reliable login hint claim that's base64
    encoded" and "the best value to use for the login_hint OAuth parameter" (learn.microsoft.com/
    entra/identity-platform/optional-claims-reference). Microsoft's start with "O."; so do these."""
    return "O." + base64.b64encode(f"{object_id}|{tenant_id}|{upn}".encode()).decode("ascii")


def login_from_hint(hint: str) -> str:
    """What the sign-in page pre-fills for a `login_hint` parameter: a UPN as given, or the UPN inside
    a `login_hint` claim."""
    if not hint.startswith("O."):
        return hint
    try:
        decoded = base64.b64decode(hint[2:], validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.rsplit("|", 1)[-1] if decoded.count("|") == 2 else ""


def random_claim() -> str:
    """Opaque per-token values such as `aio`, `uti`, `rh`, `sid`."""
    return b64url(secrets.token_bytes(18))


class SigningKey:
    def __init__(self) -> None:
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._private.public_key()
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devstack Microsoft simulator signing")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(self._private, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        self.kid = b64url(hashlib.sha1(der).digest())  # Microsoft's kid is the x5t thumbprint
        self._x5c = base64.b64encode(der).decode("ascii")

    def jwk(self, issuer: str) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_b64url(numbers.n),
            "e": _int_b64url(numbers.e),
            "x5c": [self._x5c],
            "issuer": issuer,
        }

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})

    def verify(self, token: str, *, leeway: int = 0) -> dict[str, Any]:
        """Claims of a token this key signed; raises jwt.InvalidTokenError (incl. ExpiredSignatureError)."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.public_key,
            algorithms=["RS256"],
            options={"verify_aud": False, "require": ["exp", "iat"]},
            leeway=leeway,
        )
        return claims
