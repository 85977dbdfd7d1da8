"""Small helpers shared by the HTTP blueprints."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.platform_auth import Unauthorized, User
from shared.wiring import Container, container

log = logging.getLogger(__name__)

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=dict(_SECURITY_HEADERS))


def error(status: int, code: str, message: str, **extra: Any) -> func.HttpResponse:
    return json_response({"error": code, "message": message, **extra}, status)


def authed(handler: Callable[[func.HttpRequest, Container, User], func.HttpResponse]
           ) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Runs the handler for the signed-in CoAgentor user, or answers 401."""

    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        c = container()
        try:
            user = c.verifier.user_from_header(req.headers.get("Authorization"))
        except Unauthorized as exc:
            return error(401, "unauthorized", str(exc))
        return handler(req, c, user)

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


def json_body(req: func.HttpRequest) -> dict[str, Any] | None:
    """The JSON object body; {} when empty; None when it is not a JSON object."""
    raw = req.get_body() or b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None
