"""Small helpers shared by the HTTP blueprints."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.adapters.tables import fits_in_a_key
from shared.platform_auth import Unauthorized, User
from shared.wiring import Container, container

log = logging.getLogger(__name__)

# On every answer of the service (the page adds its own CSP). HSTS: RFC 6797 (browsers ignore it over
# plain http, so the local stack is unaffected); frame-ancestors: CSP Level 3 (and X-Frame-Options for
# older browsers), so no other site can frame the page or the API.
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_API_HEADERS = {
    **SECURITY_HEADERS,
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# Every JSON body the API takes is a few hundred bytes; the limits stop memory and recursion abuse.
MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 16
_CORS_METHODS = "GET, POST, PUT, DELETE"
_CORS_HEADERS = "Authorization, Content-Type"


class Rejected(Exception):
    """A request refused before the use case runs: answered as `status` with `code` and `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=dict(_API_HEADERS))


def error(status: int, code: str, message: str, **extra: Any) -> func.HttpResponse:
    return json_response({"error": code, "message": message, **extra}, status)


def authed(handler: Callable[[func.HttpRequest, Container, User], func.HttpResponse]
           ) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Runs the handler for the signed-in CoAgentor user, or answers 401."""

    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        c = container()
        try:
            user = c.verifier.user_from_header(req.headers.get("Authorization"))
            if not fits_in_a_key(user.id):
                raise Rejected(400, "unsupported_user_id", "This CoAgentor user id is too long to be stored "
                               "(over 512 UTF-16 code units once its reserved characters are escaped)")
            c.teams.remember(user)  # background work goes by the latest request's workspace claims
            response = handler(req, c, user)
        except Unauthorized as exc:
            response = error(401, "unauthorized", str(exc))
        except Rejected as exc:
            response = error(exc.status, exc.code, exc.message)
        return with_cors(req, response, c.settings.platform_web_origins)

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


def json_body(req: func.HttpRequest) -> dict[str, Any] | None:
    """The JSON object body; {} when empty; None when it is not a JSON object. Raises Rejected (413)
    above MAX_BODY_BYTES and (400) for JSON nested deeper than MAX_JSON_DEPTH."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise Rejected(413, "body_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise Rejected(400, "invalid_body", f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def json_depth(raw: bytes) -> int:
    """How deeply `[` / `{` nest in a JSON text, outside strings (a linear scan, no parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def with_cors(req: func.HttpRequest, response: func.HttpResponse, origins: tuple[str, ...]) -> func.HttpResponse:
    """CORS (https://fetch.spec.whatwg.org/#http-cors-protocol) for the CoAgentor web app's origins
    only (PLATFORM_WEB_ORIGINS); any other origin gets no CORS header, so its browser keeps the answer
    from it. The bearer token travels in a header, never a cookie: no credentials mode."""
    origin = req.headers.get("Origin")
    response.headers["Vary"] = "Origin"
    if origin and origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        if req.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    return response


def preflight(req: func.HttpRequest, origins: tuple[str, ...]) -> func.HttpResponse:
    """An OPTIONS preflight: 204 with the CORS grant for an allowed origin, else 403."""
    origin = req.headers.get("Origin")
    if not origin or origin not in origins:
        return error(403, "origin_not_allowed", "Cross-origin calls are allowed only from the CoAgentor web app")
    return with_cors(req, func.HttpResponse(status_code=204, headers=dict(_API_HEADERS)), origins)
