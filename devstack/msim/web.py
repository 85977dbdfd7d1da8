"""Plain request/response values, so that the protocol code never touches the HTTP handler."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class Request:
    method: str
    path: str  # without the query string, still percent-encoded
    raw_query: str
    headers: Message
    body: bytes = b""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def query(self) -> dict[str, str]:
        """First value of each query parameter, names as sent."""
        values: dict[str, str] = {}
        for name, value in parse_qsl(self.raw_query, keep_blank_values=True):
            values.setdefault(name, value)
        return values

    def query_param(self, name: str) -> str | None:
        """A query parameter by case-insensitive name (Graph and the identity platform ignore case)."""
        wanted = name.lower()
        for key, value in parse_qsl(self.raw_query, keep_blank_values=True):
            if key.lower() == wanted:
                return value
        return None

    def form(self) -> dict[str, str]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        values: dict[str, str] = {}
        for name, value in parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True):
            values.setdefault(name, value)
        return values

    def json(self) -> Any:
        if not self.body.strip():
            return None
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return str(value) if value is not None else None

    @property
    def client_request_id(self) -> str:
        return self.header("client-request-id") or self.request_id


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


NO_STORE = [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")]


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        json.dumps(payload).encode("utf-8"),
        "application/json; charset=utf-8",
        list(headers or []),
    )


def html_response(status: int, page: str, *, script_nonce: str | None = None) -> Response:
    script = f" script-src 'nonce-{script_nonce}';" if script_nonce else ""
    return Response(
        status,
        page.encode("utf-8"),
        "text/html; charset=utf-8",
        [
            *NO_STORE,
            (
                "Content-Security-Policy",
                f"default-src 'none'; style-src 'unsafe-inline';{script} frame-ancestors 'none'",
            ),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
        ],
    )


# What a front door or gateway (IIS, Azure Front Door) serves when the service behind it is down.
OUTAGE_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    "<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n"
    '<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    "<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error {status}. The service is unavailable.</p>\r\n"
    "</BODY></HTML>\r\n"
)


def outage_response(status: int, body: str = "html") -> Response:
    """A non-JSON answer: the outage page (`body="html"`) or an empty body (`"empty"`)."""
    if body == "empty":
        return Response(status, b"", None, [])
    return Response(status, OUTAGE_PAGE.format(status=status).encode("ascii"), "text/html; charset=us-ascii", [])


def redirect(location: str) -> Response:
    return Response(302, b"", None, [*NO_STORE, ("Location", location)])
