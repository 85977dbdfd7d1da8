"""A local Azure Functions host for the v2-model app (Core Tools cannot be installed here).

    python -m devstack.host --port 7071 [--host 127.0.0.1] [--app function_app] [--script-root .]

It imports `<app>.app` (a `func.FunctionApp`) from the script root and runs its functions:

- HTTP triggers under `/<routePrefix>/` (host.json, default "api"): route templates with
  constraints and optional parameters (see host_routes), `methods`, sync or async functions,
  `func.HttpResponse` mapped to the response (every header, several Set-Cookie included).
  A function that raises answers 500 with a generic body; the traceback is logged with the
  function's name. Unknown routes, and known routes with another method (any method, TRACE or
  PROPFIND included), answer 404: the Azure host answers 404 there too, not 405
  (Azure/azure-functions-host#10098). A function that declares no methods gets every one.
  Auth levels are not enforced: like Core Tools, FUNCTION and ADMIN functions need no key here.
- Timer triggers: 6-field NCRONTAB (UTC) or a TimeSpan interval, `%SETTING%` resolved from the
  environment, `run_on_startup` (when this instance starts listening); runs of one timer never
  overlap; a failed run is logged and not retried. Several instances on one storage account fire
  each timer once per schedule: the instance holding the timer's listener lock fires it (see
  host_leases; host.json `singleton`), and one that takes the lock over fires a missed occurrence
  once, as past due.
- Queue triggers and queue outputs on Azure Storage queues (Azurite): see host_queues.
- Admin API: `GET /admin/functions` -> [{"name", "trigger"}]; `POST /admin/functions/{name}`
  with `{"input": "..."}` -> 202 and the timer or queue function runs now in the background
  (a queue function gets the input as its message body, dequeue_count 1, not via the queue);
  `GET /admin/host/status` -> {"state": "Running"}. No master key is required locally.
  `POST /admin/crash` -> 202, then the process ends within a second as a killed instance does
  (`os._exit`, nothing completed or released: its queue messages come back after their lease,
  its timer locks lapse after their period). Local only: Azure has no such route.
- `local.settings.json` `Values` are copied into the environment where not already set.

It prints `Functions host listening on http://127.0.0.1:PORT (N functions)` once serving, logs
one access line per request (path only: query strings may carry OAuth codes), and stops within
about two seconds on SIGINT or SIGTERM. A clean-up that outlives `STOP_GRACE_SECONDS` (storage that
stops answering while the host hands its timer locks over) is abandoned with a warning and every
thread's stack on stderr: the process still ends, as Azure ends an instance after its grace period.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import azure.functions.queue as func_queue
import azure.functions.timer as func_timer

from devstack._httpserver import BackgroundServer, BodyTooLarge, LocalHTTPServer, QuietHandler
from devstack._signals import StopSignals
from devstack.host_config import HostConfig, load_host_config, load_local_settings, parse_timespan, resolve_settings
from devstack.host_functions import (
    HTTP_TRIGGER,
    QUEUE_TRIGGER,
    TIMER_TRIGGER,
    FunctionSpec,
    Invoker,
    QueueOutput,
    load_functions,
)
from devstack.host_leases import TimerLocks
from devstack.host_queues import (
    QueueClients,
    QueueConfigError,
    QueueListener,
    lease_seconds,
    storage_connection_string,
)
from devstack.host_routes import RouteTemplate, compile_route
from devstack.ncrontab import CronSchedule, next_occurrence, parse_schedule

log = logging.getLogger("devstack.host")
access_log = logging.getLogger("devstack.host.access")

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions HTTP request limit
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


class HostStartError(Exception):
    pass


@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method


class TimerSchedule:
    """When a timer fires next: an NCRONTAB expression or a fixed TimeSpan interval."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._cron: CronSchedule | None = None
        self._interval: float | None = None
        if re.fullmatch(r"(\d+\.)?\d{1,2}:\d{1,2}:\d{1,2}", expression.strip()):
            self._interval = parse_timespan(expression, what="schedule")
            if self._interval <= 0:
                raise ValueError(f"schedule '{expression}' must be a positive interval")
        else:
            self._cron = parse_schedule(expression)

    @property
    def is_interval(self) -> bool:
        return self._interval is not None

    def next_after(self, moment: datetime) -> datetime:
        if self._interval is not None:
            return moment + timedelta(seconds=self._interval)
        assert self._cron is not None
        return next_occurrence(self._cron, moment)


@dataclass
class _Timer:
    spec: FunctionSpec
    schedule: TimerSchedule
    run_on_startup: bool
    thread: threading.Thread | None = None
    last: datetime | None = None


class LocalFunctionsHost:
    """Loads the app, then serves HTTP functions, runs timers and polls queues until stopped."""

    def __init__(
        self,
        *,
        app_module: str = "function_app",
        script_root: Path = Path("."),
        host: str = "127.0.0.1",
        port: int = 7071,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.app_module = app_module
        self.script_root = script_root.resolve()
        self.host = host
        self.requested_port = port
        self.environ = os.environ if environ is None else environ
        self.config = HostConfig()
        self.functions: list[FunctionSpec] = []
        self.stopping = threading.Event()
        self._routes: list[HttpRoute] = []
        self._timers: list[_Timer] = []
        self._listeners: list[QueueListener] = []
        self._queue_clients = QueueClients(self.environ)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fn")
        self._invoker: Invoker | None = None
        self._server: BackgroundServer | None = None
        self._loaded = False
        self.instance_id = self.environ.get("WEBSITE_INSTANCE_ID") or uuid.uuid4().hex
        self._locks: TimerLocks | None = None
        self._renewer: threading.Thread | None = None

    # Start-up

    def load(self) -> None:
        """Read host.json and settings, import the app and check everything it declares."""
        load_local_settings(self.script_root, self.environ)
        self.environ.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
        self.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
        self.environ["AzureWebJobsScriptRoot"] = str(self.script_root)
        try:
            self.config = load_host_config(self.script_root, self.environ)
        except ValueError as error:
            raise HostStartError(f"host.json: {error}") from error
        if str(self.script_root) not in sys.path:
            sys.path.insert(0, str(self.script_root))
        try:
            module = importlib.import_module(self.app_module)
        except Exception as error:
            raise HostStartError(f"importing {self.app_module} failed: {error!r}") from error
        app = getattr(module, "app", None)
        if app is None:
            raise HostStartError(f"{self.app_module} has no `app` (a func.FunctionApp)")
        try:
            self.functions = load_functions(app)
        except ValueError as error:
            raise HostStartError(str(error)) from error
        problems: list[str] = []
        for spec in self.functions:
            try:
                self._prepare(spec)
            except (ValueError, LookupError, QueueConfigError) as error:
                problems.append(f"{spec.name}: {error}")
            for output in spec.queue_outputs:
                problems.extend(
                    f"{spec.name}: output {output.name}: {problem}"
                    for problem in self._queue_problems(output.queue_name, output.connection)
                )
        if problems:
            raise HostStartError("functions that cannot run:\n  " + "\n  ".join(problems))
        self._routes.sort(key=lambda r: r.template.precedence)
        self._loaded = True

    def _prepare(self, spec: FunctionSpec) -> None:
        trigger = spec.trigger
        if spec.trigger_type == HTTP_TRIGGER:
            route = str(getattr(trigger, "route", None) or spec.name)
            full = f"{self.config.route_prefix}/{route.strip('/')}" if self.config.route_prefix else route
            methods = getattr(trigger, "methods", None)
            allowed = frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None
            self._routes.append(HttpRoute(spec, compile_route(full), allowed))
        elif spec.trigger_type == TIMER_TRIGGER:
            expression = resolve_settings(str(trigger.schedule), self.environ)
            self._timers.append(_Timer(spec, TimerSchedule(expression), bool(trigger.run_on_startup)))
        elif spec.trigger_type == QUEUE_TRIGGER:
            queue_name = resolve_settings(str(trigger.queue_name), self.environ)
            problems = self._queue_problems(queue_name, trigger.connection or "")
            if problems:
                raise ValueError("; ".join(problems))
            listener = QueueListener(
                function_name=spec.name,
                queue_name=queue_name,
                connection=trigger.connection or "",
                clients=self._queue_clients,
                options=self.config.queues,
                handler=self._queue_handler(spec, queue_name),
                executor=self._executor,
                lease_seconds=lease_seconds(self.environ),
                stopping=self.stopping,
            )
            self._listeners.append(listener)

    def _queue_problems(self, queue_name: str, connection: str) -> list[str]:
        problems = []
        if not _QUEUE_NAME.match(queue_name):
            problems.append(f"'{queue_name}' is not a valid queue name (3-63 lowercase letters, digits, -)")
        try:
            storage_connection_string(connection, self.environ)
        except QueueConfigError as error:
            problems.append(str(error))
        return problems

    def start(self) -> LocalFunctionsHost:
        if not self._loaded:
            self.load()
        self._invoker = Invoker(
            send_to_queue=self._send_to_queue,
            function_directory=str(self.script_root),
            timeout=self.config.function_timeout,
        )
        host = self

        class Handler(_HostHandler):
            pass

        Handler.functions_host = host
        self._server = BackgroundServer(LocalHTTPServer((self.host, self.requested_port), Handler), name="host-http")
        self._server.start()
        for listener in self._listeners:
            listener.start()
        self._locks = self._timer_locks()
        if self._locks is not None:
            self._renewer = threading.Thread(target=self._renew_locks, args=(self._locks,), name="timer-locks")
            self._renewer.daemon = True
            self._renewer.start()
        for timer in self._timers:
            timer.thread = threading.Thread(target=self._run_timer, args=(timer,), name=f"timer-{timer.spec.name}")
            timer.thread.daemon = True
            timer.thread.start()
        return self

    def _timer_locks(self) -> TimerLocks | None:
        """Listener locks in the app's storage account; none without one (a lone host fires alone)."""
        if not self._timers:
            return None
        try:
            connection = storage_connection_string("AzureWebJobsStorage", self.environ)
        except QueueConfigError:
            return None
        # Azure derives the host id from the app's name; every instance of one app shares it.
        host_id = self.environ.get("AzureFunctionsWebHost__hostid") or re.sub(
            r"[^a-z0-9-]", "-", self.script_root.name.lower())[:32] or "local"
        return TimerLocks(connection, host_id=host_id, instance_id=self.instance_id,
                          period=self.config.singleton.listener_lock_period)

    def _renew_locks(self, locks: TimerLocks) -> None:
        while not self.stopping.wait(locks.period / 2):
            locks.renew_all()

    def crash(self) -> None:
        """End this process as a killed instance ends: no cleanup, nothing released."""
        log.warning("Crash requested through the admin API: this instance ends now")

        def end() -> None:
            time.sleep(0.2)  # the 202 leaves first
            os._exit(137)

        threading.Thread(target=end, name="crash", daemon=True).start()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 1.5) -> None:
        deadline = time.monotonic() + timeout
        self.stopping.set()
        for listener in self._listeners:
            listener.wake()
        if self._server is not None:
            self._server.stop()
        for listener in self._listeners:
            listener.join(max(0.0, deadline - time.monotonic()))
        for listener in self._listeners:
            listener.wait_idle(max(0.0, deadline - time.monotonic()))
        for timer in self._timers:
            if timer.thread is not None:
                timer.thread.join(max(0.0, deadline - time.monotonic()))
        if self._locks is not None:
            self._locks.release_all()  # a clean stop hands the timers over at the peers' next poll
            self._locks.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._queue_clients.close()
        if self._invoker is not None:
            self._invoker.close()

    # Invocation

    @property
    def invoker(self) -> Invoker:
        assert self._invoker is not None, "the host is not started"
        return self._invoker

    def _send_to_queue(self, output: QueueOutput, bodies: list[bytes]) -> None:
        self._queue_clients.send(
            output.connection, output.queue_name, bodies, encoding=self.config.queues.message_encoding
        )

    def _queue_handler(self, spec: FunctionSpec, queue_name: str) -> Callable[[func_queue.QueueMessage], bool]:
        def handle(message: func_queue.QueueMessage) -> bool:
            try:
                self.invoker.invoke(spec, message, reason=f"New queue message detected on '{queue_name}'.")
            except Exception:
                return False
            return True

        return handle

    def _fire_timer(self, timer: _Timer, *, past_due: bool, scheduled: datetime | None, reason: str) -> None:
        now = datetime.now(UTC)
        status = {
            "Last": (timer.last or now).isoformat(),
            "Next": timer.schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = func_timer.TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        timer.last = scheduled or now
        try:
            self.invoker.invoke(timer.spec, request, reason=reason)
        except Exception:
            pass  # logged by the invoker; timers do not retry a failed run

    def _run_timer(self, timer: _Timer) -> None:
        """Fire the timer while this instance holds its listener lock; otherwise poll for the lock."""
        locks = self._locks
        recovery = self.config.singleton.listener_lock_recovery_polling_interval
        started = False
        while not self.stopping.is_set():
            if locks is not None and not locks.acquire(timer.spec.name):
                if self.stopping.wait(recovery):
                    return
                continue
            if not started and timer.run_on_startup:
                self._fire_timer(timer, past_due=False, scheduled=None, reason="Timer fired at startup")
            started = True
            self._listen(timer, locks)

    def _listen(self, timer: _Timer, locks: TimerLocks | None) -> None:
        name, expression = timer.spec.name, timer.schedule.expression
        now = datetime.now(UTC)
        after = now
        last = locks.last_scheduled(name, expression) if locks is not None else None
        if last is not None:
            try:
                missed = timer.schedule.next_after(last)
            except ValueError:
                missed = now
            if missed < now - timedelta(seconds=1):
                # Due while no instance held the lock (a crash): fired once, as past due.
                self._fire_timer(timer, past_due=True, scheduled=missed, reason="Timer fired (past due)")
                if locks is not None:
                    locks.record(name, expression, missed)
            else:
                after = last
        while not self.stopping.is_set():
            try:
                scheduled = timer.schedule.next_after(after)
            except ValueError as error:
                log.error("Timer %s stops: %s", name, error)
                self.stopping.wait()
                return
            while (wait := (scheduled - datetime.now(UTC)).total_seconds()) > 0:
                if self.stopping.wait(min(wait, 1.0)):
                    return
                if locks is not None and not locks.holds(name):
                    return
            if locks is not None and not locks.holds(name):
                return
            late = (datetime.now(UTC) - scheduled).total_seconds()
            self._fire_timer(timer, past_due=late > 1.0, scheduled=scheduled, reason="Timer fired")
            if locks is not None:
                locks.record(name, expression, scheduled)
            # Occurrences missed while this run lasted are skipped, as the Functions host skips them.
            after = scheduled if timer.schedule.is_interval else max(scheduled, datetime.now(UTC))

    def run_now(self, spec: FunctionSpec, payload: str) -> None:
        """The admin API's 'run this non-HTTP function now', in the background."""

        def run() -> None:
            if spec.trigger_type == TIMER_TRIGGER:
                timer = next(t for t in self._timers if t.spec is spec)
                self._fire_timer(timer, past_due=False, scheduled=None, reason="Manually triggered")
                return
            now = datetime.now(UTC)
            message = func_queue.QueueMessage(
                id=str(uuid.uuid4()),
                body=payload.encode("utf-8"),
                dequeue_count=1,
                insertion_time=now,
                expiration_time=now + timedelta(days=7),
                time_next_visible=now,
                pop_receipt=None,
            )
            try:
                self.invoker.invoke(spec, message, reason="Manually triggered")
            except Exception:
                pass  # logged by the invoker

        self._executor.submit(run)

    def find_function(self, name: str) -> FunctionSpec | None:
        return next((f for f in self.functions if f.name.lower() == name.lower()), None)

    def match_route(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self._routes:
            values = route.template.match(path)
            if values is not None and (route.methods is None or method in route.methods):
                return route, values
        return None


def http_response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of what an HTTP function returned (as the Python worker maps it)."""
    if result is None:
        return 204, [], b""
    if isinstance(result, str):
        return 200, [("Content-Type", "text/plain; charset=utf-8")], result.encode("utf-8")
    if isinstance(result, (bytes, bytearray)):
        return 200, [("Content-Type", "application/octet-stream")], bytes(result)
    if isinstance(result, func.HttpResponse) or all(
        hasattr(result, a) for a in ("status_code", "headers", "get_body", "mimetype")
    ):
        raw_headers = result.headers
        headers = [(str(k), str(v)) for k, v in (raw_headers.items() if raw_headers is not None else [])]
        if not any(name.lower() == "content-type" for name, _ in headers):
            mimetype = result.mimetype or "text/plain"
            charset = getattr(result, "charset", None) or "utf-8"
            content_type = f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
            headers.append(("Content-Type", content_type))
        return int(result.status_code), headers, result.get_body() or b""
    raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")


class _HostHandler(QuietHandler):
    functions_host: LocalFunctionsHost

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def undeclared_method(self) -> None:
        self._handle()  # routing decides, as in Azure: a function without `methods` takes any

    def _handle(self) -> None:
        started = time.monotonic()
        path = urlsplit(self.path).path
        status = 500
        try:
            status = self._answer(path)
        finally:
            access_log.info("%s %s %d %.0fms", self.command, path, status, (time.monotonic() - started) * 1000)

    def _answer(self, path: str) -> int:
        try:
            body = self.read_body(limit=MAX_REQUEST_BYTES)
        except BodyTooLarge:
            self.close_connection = True
            self.send_empty(413)
            return 413
        except ValueError:
            self.close_connection = True
            self.send_empty(400)
            return 400
        host = self.functions_host
        if path in ("", "/") and self.command in ("GET", "HEAD"):
            self.send_bytes(200, b"Functions host running\n", content_type="text/plain; charset=utf-8")
            return 200
        if path.rstrip("/") == "/admin" or path.startswith("/admin/"):
            return self._admin(path.rstrip("/"), body)
        found = host.match_route(self.command, path)
        if found is None:
            self.send_empty(404)
            return 404
        route, route_params = found
        return self._run_http_function(route, route_params, body)

    def _admin(self, path: str, body: bytes) -> int:
        host = self.functions_host
        if path == "/admin/host/status" and self.command == "GET":
            self.send_json(200, {"state": "Running", "functions": len(host.functions)})
            return 200
        if path == "/admin/functions" and self.command == "GET":
            self.send_json(200, [{"name": f.name, "trigger": f.trigger_type} for f in host.functions])
            return 200
        if path == "/admin/crash" and self.command == "POST":
            self.send_empty(202)
            host.crash()
            return 202
        parts = path.split("/")
        if len(parts) == 4 and parts[2] == "functions":
            spec = host.find_function(parts[3])
            if spec is None:
                self.send_json(404, {"error": f"no function named '{parts[3]}'"})
                return 404
            if self.command == "GET":
                self.send_json(200, {"name": spec.name, "trigger": spec.trigger_type})
                return 200
            if self.command == "POST":
                return self._admin_run(spec, body)
        self.send_json(404, {"error": "not found"})
        return 404

    def _admin_run(self, spec: FunctionSpec, body: bytes) -> int:
        if spec.trigger_type == HTTP_TRIGGER:
            self.send_json(400, {"error": f"'{spec.name}' is an HTTP function: call its route instead"})
            return 400
        try:
            payload = json.loads(body or b"{}")
            text = payload.get("input", "") if isinstance(payload, dict) else None
        except ValueError:
            text = None
        if not isinstance(text, str):
            self.send_json(400, {"error": 'the body must be {"input": "<string>"}'})
            return 400
        self.functions_host.run_now(spec, text)
        self.send_empty(202)
        return 202

    def _run_http_function(self, route: HttpRoute, route_params: dict[str, str], body: bytes) -> int:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        params: dict[str, str] = {}
        for name, value in parse_qsl(urlsplit(self.path).query, keep_blank_values=True):
            params[name] = f"{params[name]},{value}" if name in params else value
        authority = self.headers.get("Host") or f"{self.functions_host.host}:{self.functions_host.port}"
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{authority}{self.path}",
            headers=headers,
            params=params,
            route_params=route_params,
            body=body,
        )
        try:
            result = self.functions_host.invoker.invoke(route.spec, request, reason="http", quiet=True)
            status, response_headers, response_body = http_response_parts(result)
        except Exception as error:
            if isinstance(error, TypeError) and "returned" in str(error):
                log.error("Function %s: %s", route.spec.name, error)
            self.send_bytes(500, b"Internal Server Error", content_type="text/plain; charset=utf-8")
            return 500
        self.send_bytes(status, response_body, headers=response_headers)
        return status


_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _DimensionsFormatter(logging.Formatter):
    """Appends a record's `extra` fields as key=value, as App Insights shows customDimensions."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        dims = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        return line + "".join(f" {k}={v}" for k, v in sorted(dims.items())) if dims else line


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_DimensionsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # The SDKs log every HTTP request at INFO; queue polling would drown everything else.
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


STOP_GRACE_SECONDS = 4.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.host", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUNCTIONS_PORT", "7071")))
    parser.add_argument("--app", default="function_app", help="module defining `app` (default function_app)")
    parser.add_argument("--script-root", type=Path, default=Path("."), help="folder with host.json and the app")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    signals = StopSignals().install()  # a second signal exits at once
    host = LocalFunctionsHost(app_module=args.app, script_root=args.script_root, host=args.host, port=args.port)
    # The working directory changes below: keep modules importable from where we were started.
    sys.path[:] = [os.getcwd() if entry in ("", ".") else entry for entry in sys.path]
    try:
        os.chdir(host.script_root)  # the Functions worker runs with the script root as working directory
        host.load()
        host.start()
    except (HostStartError, OSError) as error:
        print(f"Functions host failed to start: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"Functions host listening on {host.url} ({len(host.functions)} functions)", flush=True)
    signals.wait()
    log.info("Stopping the Functions host")
    stopper = threading.Thread(target=host.stop, name="stop", daemon=True)
    stopper.start()
    stopper.join(STOP_GRACE_SECONDS)
    if stopper.is_alive():
        log.warning("Clean-up did not finish in %s s: leaving without it; every thread's stack follows",
                    STOP_GRACE_SECONDS)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Invocations still running on pool threads would hold the interpreter open: Azure would stop them too.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
