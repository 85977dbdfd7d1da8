"""Who the caller is: a bearer JWT issued by the CoAgentor platform (`sub` = user id, `plan`, and
optionally `email` / `name` for display, `workspace` (a CoAgentor workspace id) and `workspace_dedupe`
(bool, the workspace admin's choice: teammates share one agent per meeting; API.md "Teams")).

Algorithm, issuer, audience and expiry are pinned; the key is the platform's public key, so this
service can check tokens but never mint them. The key setting is either one PEM public key, or a
JSON Web Key Set (RFC 7517 §5) so the platform can rotate: publish the new key beside the old one,
sign with it (`kid` in the token header names the key, RFC 7515 §4.1.4), then drop the old one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from shared.connections import Plan

_ALGORITHMS = ["RS256"]
_LEEWAY_SECONDS = 30
_MAX_TOKEN_CHARS = 8192
_MAX_CLAIM_CHARS = 320


class Unauthorized(Exception):
    """The request carries no usable CoAgentor token; the message is safe to show."""


@dataclass(frozen=True)
class User:
    id: str
    plan: Plan
    email: str | None = None  # for display only: the page names the CoAgentor account it acts for
    name: str | None = None
    workspace: str | None = None  # the CoAgentor workspace id, when the token names one
    workspace_dedupe: bool = False  # teammates of that workspace share one agent per meeting

    @property
    def shared_workspace(self) -> str | None:
        """The workspace whose teammates share agents, or None (each user gets their own agent)."""
        return self.workspace if self.workspace and self.workspace_dedupe else None


def _keys(setting: str) -> tuple[Any | None, dict[str, Any]]:
    """(the single PEM key or None, kid -> key of a JWKS)."""
    text = setting.strip()
    if not text.startswith("{"):
        return text, {}
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError("the platform key is neither a PEM public key nor a JWKS") from None
    keys: dict[str, Any] = {}
    for jwk in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not jwk.get("kid"):
            raise ValueError("every key of the platform JWKS must be an RSA key with a kid")
        if jwk.get("use", "sig") != "sig":
            continue
        keys[str(jwk["kid"])] = RSAAlgorithm.from_jwk(json.dumps(jwk))
    if not keys:
        raise ValueError("the platform JWKS holds no signing key")
    return None, keys


class PlatformTokenVerifier:
    def __init__(self, *, public_key_pem: str, issuer: str, audience: str) -> None:
        self._pem, self._kids = _keys(public_key_pem)
        self._issuer = issuer
        self._audience = audience

    def user_from_header(self, authorization: str | None) -> User:
        if not authorization:
            raise Unauthorized("Missing Authorization header: sign in to CoAgentor")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        if len(token) > _MAX_TOKEN_CHARS:
            raise Unauthorized("Invalid CoAgentor token")
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Your CoAgentor session has expired: sign in again") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthorized("Invalid CoAgentor token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthorized("Invalid CoAgentor token")
        try:
            plan = Plan(str(claims.get("plan", "free")).lower())
        except ValueError:
            raise Unauthorized("Invalid CoAgentor token: unknown plan") from None
        workspace = claims.get("workspace")
        if workspace is not None and (not isinstance(workspace, str) or not workspace or len(workspace) > 256):
            raise Unauthorized("Invalid CoAgentor token: bad workspace")
        return User(id=sub, plan=plan, email=_display(claims.get("email")), name=_display(claims.get("name")),
                    workspace=workspace, workspace_dedupe=claims.get("workspace_dedupe") is True)

    def _key_for(self, token: str) -> Any:
        if not self._kids:
            return self._pem
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or kid not in self._kids:
            raise jwt.InvalidTokenError("unknown kid")
        return self._kids[kid]


def _display(value: object) -> str | None:
    return value[:_MAX_CLAIM_CHARS] if isinstance(value, str) and value.strip() else None
