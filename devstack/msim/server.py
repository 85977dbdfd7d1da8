"""The simulator's HTTPS server: routing, faults, the request log and per-mailbox concurrency."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from devstack._httpserver import BackgroundServer, BodyTooLarge, LocalHTTPServer, QuietHandler
from devstack.msim import admin, graph, identity, managed_identity, subscriptions
from devstack.msim.directory import AppRegistration, ManagedIdentity
from devstack.msim.state import ACTING_UPN, MAILBOX_CONCURRENCY_LIMIT, Config, SimState
from devstack.msim.web import Request, Response, json_response

log = logging.getLogger("devstack.msim")


class MicrosoftSimulator:
    """The Microsoft identity platform and Graph, served over HTTPS on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext,
        apps: Iterable[AppRegistration] = (),
        access_token_lifetime: int = 3600,
        managed_identities: Iterable[ManagedIdentity] = (),
        identity_header: str = "",
    ) -> None:
        """`managed_identities` and `identity_header`: what `GET /msi/token` (App Service's managed
        identity endpoint, devstack/msim/managed_identity.py) issues tokens for, and the
        `X-IDENTITY-HEADER` it requires (no header configured: it refuses every request)."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"The simulator binds loopback only, not {host!r}.")
        self._server = _SimulatorServer((host, port), _Handler, ssl_context=ssl_context)
        self._server.simulator = self
        self._background = BackgroundServer(self._server, "microsoft-simulator")
        self.host = host
        self.port = self._background.port
        display_host = f"[{host}]" if ":" in host else host
        self.base_url = f"https://{display_host}:{self.port}"
        self.state = SimState(
            base_url=self.base_url, initial_config=Config(access_token_lifetime_seconds=access_token_lifetime)
        )
        for app in apps:
            self.register_app(app)
        with self.state.lock:
            self.state.managed_identities.update({i.client_id: i for i in managed_identities})
            self.state.identity_header = identity_header

    def start(self) -> None:
        self._background.start()
        log.info("Microsoft simulator serving %s", self.base_url)

    def stop(self) -> None:
        self._background.stop()

    def register_app(self, app: AppRegistration) -> None:
        with self.state.lock:
            self.state.apps[app.client_id] = app
            self.state.app_states.pop(app.client_id, None)

    def __enter__(self) -> MicrosoftSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling --------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        path = req.path
        if path.startswith("/_sim/"):
            return admin.handle(self.state, req)
        entry = self.state.record(req.method, unquote(path), req.raw_query, req.form())
        acting = ACTING_UPN.set(None)
        try:
            response = self._route(req)
        except Exception:
            log.exception("simulator failure on %s %s", req.method, path)
            response = json_response(500, {"error": {"code": "InternalServerError", "message": "Simulator bug."}})
        with self.state.lock:
            entry["status"] = response.status
            entry["upn"] = ACTING_UPN.get()
        ACTING_UPN.reset(acting)
        log.debug("%s %s -> %d", req.method, path, response.status)  # never the query: it may hold codes
        return response

    def _route(self, req: Request) -> Response:
        state = self.state
        path = req.path
        if path == "/v1.0" or path.startswith("/v1.0/"):
            return self._graph(req)
        latency_ms, fault = state.take_faults(req.method, unquote(path))
        if latency_ms:
            time.sleep(latency_ms / 1000)
        segments = [unquote(s) for s in path.split("/")[1:]]
        if fault is not None:
            page = [s.lower() for s in segments[1:]]
            if len(segments) >= 2 and page in (["oauth2", "v2.0", "authorize"], ["v2.0", "adminconsent"]):
                admin_consent = page == ["v2.0", "adminconsent"]
                return identity.browser_fault(state, req, segments[0], fault, admin_consent=admin_consent)
            return identity.fault_response(state, req, fault)
        if path == "/msi/token":
            return managed_identity.token(state, req)
        if path == "/oidc/userinfo":
            return graph.userinfo(state, req)
        if path == "/error":
            return identity.error_lookup(state, req)
        if len(segments) >= 2:
            tenant, rest = segments[0], [s.lower() for s in segments[1:]]
            if rest == ["v2.0", ".well-known", "openid-configuration"] and req.method == "GET":
                return identity.discovery(state, req, tenant)
            if rest in (["discovery", "v2.0", "keys"], ["discovery", "keys"]) and req.method == "GET":
                return identity.jwks(state, req, tenant)
            if rest == ["discovery", "instance"] and req.method == "GET":
                return identity.instance_discovery(state, req)
            if rest == ["oauth2", "v2.0", "authorize"] and req.method in ("GET", "POST"):
                return identity.authorize(state, req, tenant)
            if rest == ["v2.0", "adminconsent"] and req.method in ("GET", "POST"):
                return identity.admin_consent(state, req, tenant)
            if rest == ["oauth2", "v2.0", "token"]:
                if req.method != "POST":
                    return identity.aad_error(
                        state,
                        req,
                        405,
                        "invalid_request",
                        900561,
                        f"The endpoint only accepts POST requests. Received a {req.method} request.",
                    )
                return identity.token(state, req, tenant)
            if rest == ["oauth2", "v2.0", "logout"]:
                return identity.logout(state, req)
        return json_response(404, {"error": {"code": "NotFound", "message": f"Nothing simulated at {path}."}})

    def _graph(self, req: Request) -> Response:
        state = self.state
        latency_ms, fault = state.take_faults(req.method, unquote(req.path))
        principal = graph.authenticate(state, req)
        if isinstance(principal, Response):
            return principal
        if req.path.split("/")[2:3] == ["subscriptions"]:
            if latency_ms:
                time.sleep(latency_ms / 1000)
            if fault is not None:
                return graph.fault_response(req, fault)
            return subscriptions.handle(state, req, principal)
        target = graph.resolve_target(state, req, principal)
        if isinstance(target, Response):
            return target
        key = (principal.client_id, target.account.upn)
        upn = target.account.upn
        with state.lock:
            in_flight = state.in_flight.get(key, 0) + 1
            state.in_flight[key] = in_flight
            state.max_concurrency[upn] = max(state.max_concurrency.get(upn, 0), in_flight)
        try:
            if in_flight > MAILBOX_CONCURRENCY_LIMIT:
                return graph.mailbox_concurrency_exceeded(req)
            if latency_ms:
                time.sleep(latency_ms / 1000)
            if fault is not None:
                return graph.fault_response(req, fault)
            return graph.dispatch(state, req, principal, target)
        finally:
            with state.lock:
                state.in_flight[key] -= 1


class _SimulatorServer(LocalHTTPServer):
    simulator: MicrosoftSimulator


class _Handler(QuietHandler):
    server_version = "Microsoft-IIS/10.0"
    server: _SimulatorServer

    def _serve(self) -> None:
        simulator = self.server.simulator
        split = urlsplit(self.path)
        try:
            body = self.read_body()
        except BodyTooLarge:
            self.send_json(413, {"error": {"code": "RequestEntityTooLarge", "message": "Body too large."}})
            self.close_connection = True
            return
        req = Request(self.command, split.path or "/", split.query, self.headers, body)
        response = simulator.handle(req)
        self.send_bytes(response.status, response.body, content_type=response.content_type, headers=response.headers)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _serve
