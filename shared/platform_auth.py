"""Who the caller is: a bearer JWT issued by the CoAgentor platform (`sub` = user id, `plan`).

Algorithm, issuer, audience and expiry are pinned; the key is the platform's public key, so this
service can check tokens but never mint them."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from shared.connections import Plan

_ALGORITHMS = ["RS256"]
_LEEWAY_SECONDS = 30


class Unauthorized(Exception):
    """The request carries no usable CoAgentor token; the message is safe to show."""


@dataclass(frozen=True)
class User:
    id: str
    plan: Plan


class PlatformTokenVerifier:
    def __init__(self, *, public_key_pem: str, issuer: str, audience: str) -> None:
        self._key = public_key_pem
        self._issuer = issuer
        self._audience = audience

    def user_from_header(self, authorization: str | None) -> User:
        if not authorization:
            raise Unauthorized("Missing Authorization header: sign in to CoAgentor")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Your CoAgentor session has expired: sign in again") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("Invalid CoAgentor token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("Invalid CoAgentor token")
        try:
            plan = Plan(str(claims.get("plan", "free")).lower())
        except ValueError:
            raise Unauthorized("Invalid CoAgentor token: unknown plan") from None
        return User(id=sub, plan=plan)
