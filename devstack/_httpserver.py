"""What the local stack's stdlib HTTP servers share: loopback binding, quiet logs, optional TLS.

Each part (Key Vault endpoint, agent API recorder, Functions host) is a `ThreadingHTTPServer` run
in a background thread. TLS is handshaken in the handler thread, not in the accept loop, so one
client that connects and says nothing cannot stall the server.

Like the Azure services they stand in for, they answer a method they do not serve (TRACE,
PROPFIND, any token) with a 4xx, never the standard library's 501, and protocol errors as JSON.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


class LocalHTTPServer(ThreadingHTTPServer):
    """A threading HTTP(S) server whose handler threads never block shutdown."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request or fail the TLS handshake are not worth a traceback.
        pass


class QuietHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1 with Content-Length on every answer, no per-request stderr lines."""

    protocol_version = "HTTP/1.1"
    server_version = "devstack"
    sys_version = ""
    timeout = 30  # idle keep-alive connections give their thread back
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError):
                self.request.close()
                raise
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        # The standard library answers a method without a do_<METHOD> with 501, a server error to
        # every scanner and fuzzer. Returning False after answering ends this request there.
        if not super().parse_request():
            return False
        if hasattr(self, "do_" + self.command):
            return True
        self.undeclared_method()
        return False

    def allowed_methods(self) -> list[str]:
        return sorted(name[3:] for name in dir(type(self)) if name.startswith("do_"))

    def undeclared_method(self) -> None:
        """A method this server has no handler for: 405 with an Allow header. Subclasses may route it."""
        self.close_connection = True  # its body, if any, stays unread
        self.send_json(
            405,
            {"error": {"code": "MethodNotAllowed", "message": f"The {self.command} method is not supported."}},
            headers=[("Allow", ", ".join(self.allowed_methods()))],
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (bad request line, headers too long...) as JSON, not an HTML page."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self.send_json(code, {"error": {"code": phrase.title().replace(" ", ""), "message": message or phrase}})

    def read_body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The request body, whether sent with Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise BodyTooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > limit:
                raise BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def send_bytes(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self.send_response_only(status, phrase)
        self.send_header("Date", self.date_time_string())
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any, *, headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_bytes(status, body, content_type="application/json; charset=utf-8", headers=headers)

    def send_empty(self, status: int, *, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_bytes(status, b"", headers=headers)


class BackgroundServer:
    """Runs a `LocalHTTPServer` in a daemon thread; `stop()` closes it within a fraction of a second."""

    def __init__(self, server: LocalHTTPServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=2)
        self.server.server_close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
