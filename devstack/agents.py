"""The CoAgentor agent API as the local stack sees it: a recorder of deployments (plain HTTP).

- `POST /agents` (JSON object) -> 201 with the body echoed plus an `id`; recorded with its headers.
  A second POST whose `Idempotency-Key` was already deployed -> 409 `{"error": "already_deployed",
  "id": <that agent's id>}`. With an expected API key configured, anything but
  `Authorization: Bearer <key>` -> 401.
- `DELETE /agents/{id}` -> 204 the first time (the deployment is marked `recalled_at`), 404 for an id
  never deployed or already recalled; the same faults and key check as `POST /agents`.
- `GET /_recorded` -> successful deployments `[{"received_at", "idempotency_key", "body", "id", "headers",
  "recalled_at"}]` (`recalled_at` null until recalled); `GET /_recorded?all=1` -> every attempt, each
  with its `status` (faults, 401s, duplicates included).
- `GET /_recalls` -> every `DELETE /agents/{id}` attempt `[{"received_at", "id", "status"}]`.
- `POST /_faults` `{"status": 503, "count": 2}` -> the next `count` deployments fail that way
  (optional `"latency_ms"` delays them first, `"retry_after"` adds a Retry-After header;
  `{"latency_ms": 50, "count": 1}` without a status only slows the next call down).
- `POST /_reset` -> forget everything recorded and every pending fault.

It also stands in for the platform's status-event endpoint (../shared/API.md, "Status events"):
- `POST /events` (a CloudEvents JSON body, Standard Webhooks headers) -> 200 `{"received": true}`;
  with a signing secret configured (`whsec_...`, as the local vault holds it), a missing or wrong
  `webhook-signature` -> 401, as the platform would answer.
- `GET /_events` -> accepted events `[{"received_at", "headers", "body", "raw_body"}]` (`body` parsed,
  `raw_body` the exact text that was signed); `GET /_events?all=1` -> every attempt, with `status`.
- `POST /_faults` with `"path": "/events"` -> the next `count` status events fail that way instead of
  deployments (faults for the two paths are kept apart).

The order of checks on `POST /agents`: injected fault, then authorization, then the body, then
the idempotency key (as a gateway in front of the real API would fail first).

It also plays the agent platform's side of agent progress (../shared/API.md "Agent progress"), when
started with the service's status URL and the agent status secret:
- `POST /_agents/{id}/report` `{"status": ..., "reason": null|str, "webhook_timestamp": null|<unix
  seconds to sign with, default now>, "sign": true|false (default true)}` -> POSTs a status signed as
  Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) to the service, with that
  agent's `agent_id` and `idempotency_key`, and answers `{"status": <the service's HTTP status>,
  "webhook_id": ...}` with the service's status code. Extra keys: `"webhook_id"` (send that id again: a
  replay), `"at"` (RFC 3339, default now), `"bad_signature": true` (signed with another secret),
  `"omit_agent_id": true` (only the idempotency key, as before the deployment's answer is known).
  404 for an agent id never deployed.
- `POST /_behaviour` `{"lobby": {"after_seconds": s, "outcome": "in_call"|"admission_timeout"|
  "not_admitted", "wait_seconds": w}}` -> every later deployment reports `joining` at once, then
  `waiting_for_admission` after s seconds, then the outcome after w more (in the background); `{}`
  turns it off. Answers 200 with the behaviour, 400 for anything else.
- `GET /_reports` -> every status sent `[{"sent_at", "agent_id", "webhook_id", "body", "status"}]`.

CLI: `python -m devstack.agents --port 7081 [--api-key KEY]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from devstack._httpserver import BackgroundServer, BodyTooLarge, LocalHTTPServer, QuietHandler
from devstack._signals import StopSignals


@dataclass
class _Fault:
    status: int | None
    remaining: int
    latency_ms: int
    retry_after: int | None


class AgentRecorder:
    """Records agent deployments in memory; see the module docstring for the HTTP surface."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None,
                 events_secret: str | None = None, status_url: str | None = None,
                 status_secret: str | None = None) -> None:
        self.status_url = status_url  # the service's POST /api/agents/status
        self.status_secret = status_secret  # whsec_...: the agent status secret, as the vault holds it
        self._behaviour: dict[str, Any] = {}
        self._reports: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self.api_key = api_key
        self.events_secret = events_secret
        self.host = host
        self._lock = threading.Lock()
        self._attempts: list[dict[str, Any]] = []
        self._deployed_keys: dict[str, str] = {}  # Idempotency-Key -> agent id
        self._recalls: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._events: list[dict[str, Any]] = []
        self._event_faults: list[_Fault] = []
        recorder = self

        class Handler(_RecorderHandler):
            pass

        Handler.recorder = recorder
        self._server = BackgroundServer(LocalHTTPServer((host, port), Handler), name="agents")

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> AgentRecorder:
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop()

    # Agent progress, as the agent platform reports it.

    def set_behaviour(self, behaviour: dict[str, Any]) -> dict[str, Any]:
        """Validate and set the lobby script; raises ValueError."""
        if not isinstance(behaviour, dict) or set(behaviour) - {"lobby"}:
            raise ValueError('expected {} or {"lobby": {...}}')
        lobby = behaviour.get("lobby")
        if lobby is not None:
            if not isinstance(lobby, dict) or set(lobby) - {"after_seconds", "outcome", "wait_seconds"}:
                raise ValueError("lobby takes after_seconds, outcome, wait_seconds")
            if lobby.get("outcome") not in ("in_call", "admission_timeout", "not_admitted"):
                raise ValueError("outcome must be in_call, admission_timeout or not_admitted")
            for name in ("after_seconds", "wait_seconds"):
                value = lobby.get(name, 0)
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
                    raise ValueError(f"{name} must be a number of seconds from 0 to 3600")
        with self._lock:
            self._behaviour = dict(behaviour)
        return behaviour

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._reports]

    def report(self, agent_id: str, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send one signed status for a deployed agent to the service; (HTTP status, answer)."""
        import requests  # the product's HTTP client; only the report path needs it

        with self._lock:
            deployed = next((a for a in self._attempts if a.get("id") == agent_id and a["status"] == 201), None)
        if deployed is None:
            return 404, {"error": "not_found", "message": "no agent with that id was deployed"}
        if not self.status_url or not self.status_secret:
            return 409, {"error": "not_configured", "message": "the recorder has no status URL or secret"}
        status = spec.get("status")
        if not isinstance(status, str):
            return 400, {"error": "invalid_report", "message": "status is required"}
        body = {
            "agent_id": None if spec.get("omit_agent_id") else agent_id,
            "idempotency_key": deployed.get("idempotency_key"),
            "status": status,
            "at": spec.get("at") or self._now(),
            "reason": spec.get("reason"),
        }
        raw = json.dumps(body)
        webhook_id = str(spec.get("webhook_id") or f"msg_{uuid.uuid4().hex}")
        headers = {"Content-Type": "application/json"}
        if spec.get("sign", True):
            stamp = spec.get("webhook_timestamp")
            when = datetime.fromtimestamp(float(stamp) if stamp is not None else time.time(), tz=UTC)
            secret = "whsec_" + base64.b64encode(os.urandom(32)).decode() if spec.get("bad_signature") \
                else self.status_secret
            headers.update({"webhook-id": webhook_id, "webhook-timestamp": str(int(when.timestamp())),
                            "webhook-signature": Webhook(secret).sign(webhook_id, when, raw)})
        try:
            answer = requests.post(self.status_url, data=raw.encode(), headers=headers, timeout=10)
            code = answer.status_code
        except requests.RequestException as exc:
            code = 599
            detail = type(exc).__name__
        else:
            detail = answer.text[:500]
        with self._lock:
            self._reports.append({"sent_at": self._now(), "agent_id": agent_id, "webhook_id": webhook_id,
                                  "body": body, "status": code})
        return code, {"status": code, "webhook_id": webhook_id, "answer": detail}

    def _play_lobby(self, agent_id: str, lobby: dict[str, Any]) -> None:
        """The scripted lobby for one deployment: joining, waiting, then the outcome."""
        steps = [(0.0, "joining"), (float(lobby.get("after_seconds", 0)), "waiting_for_admission"),
                 (float(lobby.get("wait_seconds", 0)), str(lobby["outcome"]))]
        for delay, status in steps:
            if self._stopping.wait(delay):
                return
            for _ in range(20):  # the service may be restarting: retry as a platform would
                code, _ = self.report(agent_id, {"status": status})
                if code < 500 or self._stopping.wait(0.5):
                    break

    # Recorder state, also usable in-process by tests.

    def recorded(self, *, include_all: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            attempts = [dict(a) for a in self._attempts]
        if include_all:
            return attempts
        return [{k: v for k, v in a.items() if k != "status"} for a in attempts if a["status"] == 201]

    def recalls(self) -> list[dict[str, Any]]:
        """Every `DELETE /agents/{id}` attempt with its status."""
        with self._lock:
            return [dict(r) for r in self._recalls]

    def events(self, *, include_all: bool = False) -> list[dict[str, Any]]:
        """Status events received: accepted ones, or with include_all every attempt and its `status`."""
        with self._lock:
            attempts = [dict(a) for a in self._events]
        if include_all:
            return attempts
        return [{k: v for k, v in a.items() if k != "status"} for a in attempts if 200 <= a["status"] < 300]

    def add_fault(self, *, status: int | None, count: int, latency_ms: int = 0, retry_after: int | None = None,
                  path: str = "/agents") -> None:
        with self._lock:
            faults = self._event_faults if path == "/events" else self._faults
            faults.append(_Fault(status, count, latency_ms, retry_after))

    def reset(self) -> None:
        with self._lock:
            self._attempts.clear()
            self._deployed_keys.clear()
            self._recalls.clear()
            self._faults.clear()
            self._events.clear()
            self._event_faults.clear()
            self._behaviour = {}
            self._reports.clear()

    def _take_fault(self, faults: list[_Fault] | None = None) -> _Fault | None:
        with self._lock:
            faults = self._faults if faults is None else faults
            while faults and faults[0].remaining <= 0:
                faults.pop(0)
            if not faults:
                return None
            fault = faults[0]
            fault.remaining -= 1
            return fault

    @staticmethod
    def _injected(fault: _Fault | None) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
        """The answer an injected fault asks for (after its latency), or None to answer normally."""
        if fault is not None and fault.latency_ms > 0:
            time.sleep(fault.latency_ms / 1000)
        if fault is None or fault.status is None:
            return None
        extra = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        return fault.status, {"error": "injected_fault", "status": fault.status}, extra

    @staticmethod
    def _now() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def handle_event(
        self, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Decide the answer to one `POST /events` (a status event) and record the attempt."""
        injected = self._injected(self._take_fault(self._event_faults))
        text = raw_body.decode("utf-8", errors="replace")
        body: Any
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = text
        attempt: dict[str, Any] = {"received_at": self._now(), "headers": headers, "body": body, "raw_body": text}
        status: int
        answer: dict[str, Any]
        extra: list[tuple[str, str]] = []
        if injected is not None:
            status, answer, extra = injected
        elif self.events_secret is not None and not _signed(self.events_secret, raw_body, headers):
            status, answer = 401, {"error": "invalid_signature"}
        elif not isinstance(body, dict):
            status, answer = 400, {"error": "invalid_body", "message": "expected a CloudEvents JSON object"}
        else:
            status, answer = 200, {"received": True}
        attempt["status"] = status
        with self._lock:
            self._events.append(attempt)
        return status, answer, extra

    def handle_deployment(
        self, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Decide the answer to one `POST /agents` and record the attempt."""
        injected = self._injected(self._take_fault())
        key = _header(headers, "Idempotency-Key")
        body: Any
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode("utf-8", errors="replace")
        attempt: dict[str, Any] = {"received_at": self._now(), "idempotency_key": key, "body": body,
                                   "headers": headers}
        status: int
        answer: dict[str, Any]
        extra: list[tuple[str, str]] = []
        if injected is not None:
            status, answer, extra = injected
        elif self.api_key is not None and _header(headers, "Authorization") != f"Bearer {self.api_key}":
            status, answer = 401, {"error": "unauthorized"}
        elif not isinstance(body, dict):
            status, answer = 400, {"error": "invalid_body", "message": "expected a JSON object"}
        else:
            with self._lock:
                if key is not None and key in self._deployed_keys:
                    status, answer = 409, {"error": "already_deployed", "id": self._deployed_keys[key]}
                else:
                    status = 201
                    answer = dict(body)
                    answer["id"] = f"agt_{uuid.uuid4().hex}"
                    attempt["id"] = answer["id"]
                    attempt["recalled_at"] = None
                    if key is not None:
                        self._deployed_keys[key] = answer["id"]
                    lobby = self._behaviour.get("lobby")
                    if lobby:
                        threading.Thread(target=self._play_lobby, args=(answer["id"], dict(lobby)),
                                         name="agents-lobby", daemon=True).start()
        attempt["status"] = status
        with self._lock:
            self._attempts.append(attempt)
        return status, answer, extra


    def handle_recall(self, headers: dict[str, str], agent_id: str) -> tuple[int, dict[str, Any] | None]:
        """Decide the answer to one `DELETE /agents/{id}` and record the attempt."""
        injected = self._injected(self._take_fault())
        now = self._now()
        status: int
        answer: dict[str, Any] | None = None
        if injected is not None:
            status, answer, _ = injected
        elif self.api_key is not None and _header(headers, "Authorization") != f"Bearer {self.api_key}":
            status, answer = 401, {"error": "unauthorized"}
        else:
            with self._lock:
                deployed = next((a for a in self._attempts if a.get("id") == agent_id and a["status"] == 201), None)
                if deployed is None or deployed.get("recalled_at"):
                    status, answer = 404, {"error": "not_found"}
                else:
                    deployed["recalled_at"] = now
                    status = 204
        with self._lock:
            self._recalls.append({"received_at": now, "id": agent_id, "status": status})
        return status, answer


def _signed(secret: str, raw_body: bytes, headers: dict[str, str]) -> bool:
    """Whether the Standard Webhooks signature verifies (and its timestamp is within 5 minutes)."""
    try:
        Webhook(secret).verify(raw_body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError, UnicodeDecodeError):
        return False
    return True


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


class _RecorderHandler(QuietHandler):
    recorder: AgentRecorder

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        self._drain()
        if split.path == "/_recorded":
            everything = parse_qs(split.query).get("all", ["0"])[-1] not in ("0", "", "false")
            self.send_json(200, self.recorder.recorded(include_all=everything))
        elif split.path == "/_recalls":
            self.send_json(200, self.recorder.recalls())
        elif split.path == "/_reports":
            self.send_json(200, self.recorder.reports())
        elif split.path == "/_events":
            everything = parse_qs(split.query).get("all", ["0"])[-1] not in ("0", "", "false")
            self.send_json(200, self.recorder.events(include_all=everything))
        elif split.path == "/":
            self.send_json(200, {"service": "agent API recorder"})
        else:
            self.send_json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            raw = self.read_body(limit=1024 * 1024)
        except (BodyTooLarge, ValueError):
            self.close_connection = True
            self.send_json(413, {"error": "body_too_large"})
            return
        if path == "/agents":
            status, answer, extra = self.recorder.handle_deployment(dict(self.headers.items()), raw)
            self.send_json(status, answer, headers=extra)
        elif path == "/events":
            status, answer, extra = self.recorder.handle_event(dict(self.headers.items()), raw)
            self.send_json(status, answer, headers=extra)
        elif path == "/_faults":
            self._faults(raw)
        elif path == "/_behaviour":
            try:
                self.send_json(200, self.recorder.set_behaviour(json.loads(raw or b"{}")))
            except ValueError as exc:
                self.send_json(400, {"error": "invalid_behaviour", "message": str(exc)})
        elif path.startswith("/_agents/") and path.endswith("/report") and path.count("/") == 3:
            try:
                spec = json.loads(raw or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as exc:
                self.send_json(400, {"error": "invalid_report", "message": str(exc)})
                return
            status, answer = self.recorder.report(unquote(path.split("/")[2]), spec)
            if status in (204, 304):
                self.send_empty(status)  # no body may follow these
            else:
                self.send_json(status, answer)
        elif path == "/_reset":
            self.recorder.reset()
            self.send_json(200, {"reset": True})
        else:
            self.send_json(404, {"error": "not_found"})

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        self._drain()
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "agents" and parts[2]:
            status, answer = self.recorder.handle_recall(dict(self.headers.items()), unquote(parts[2]))
            if answer is None:
                self.send_empty(status)
            else:
                self.send_json(status, answer)
        else:
            self.send_json(404, {"error": "not_found"})

    def _faults(self, raw: bytes) -> None:
        try:
            spec = json.loads(raw or b"{}")
            status = spec.get("status")
            count = int(spec.get("count", 1))
            latency_ms = int(spec.get("latency_ms", 0))
            retry_after = None if spec.get("retry_after") is None else int(spec["retry_after"])
            path = spec.get("path", "/agents")
            if path not in ("/agents", "/events"):
                raise ValueError("path must be /agents or /events")
            if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
                raise ValueError("status must be an HTTP status code")
            if status is None and latency_ms <= 0:
                raise ValueError("give a status, a latency_ms, or both")
            if count < 1 or latency_ms < 0:
                raise ValueError("count must be >= 1 and latency_ms >= 0")
        except (ValueError, TypeError, AttributeError) as error:
            self.send_json(400, {"error": "invalid_fault", "message": str(error)})
            return
        self.recorder.add_fault(
            status=status,
            count=count,
            latency_ms=latency_ms,
            retry_after=retry_after,
            path=path,
        )
        self.send_json(200, {"status": status, "count": count, "latency_ms": latency_ms, "path": path})

    def _drain(self) -> None:
        try:
            self.read_body(limit=1024 * 1024)
        except (BodyTooLarge, ValueError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.agents", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7081)
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer <key> on POST /agents")
    args = parser.parse_args(argv)
    recorder = AgentRecorder(host=args.host, port=args.port, api_key=args.api_key).start()
    signals = StopSignals().install()
    print(f"Agent API recorder listening on {recorder.url}", flush=True)
    signals.wait()
    recorder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
