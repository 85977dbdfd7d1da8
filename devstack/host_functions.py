"""The functions of a v2-model app as the local host sees them, and how one is invoked.

`load_functions(app)` reads the decorator metadata of `func.FunctionApp` (blueprints included,
since `register_functions` copies their builders into the app) and checks, before anything
runs, that every function uses only what this host supports: HTTP, timer and queue triggers,
the HTTP `$return` output, queue outputs (`@app.queue_output`, a `func.Out` parameter or
`$return`), and a `context` parameter. Anything else is refused with the function's name.

`Invoker` calls a function as the Python worker would: sync functions on the calling thread,
`async def` functions on one shared event loop, output bindings flushed only on success.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc as func_abc

from devstack.host_config import resolve_settings

log = logging.getLogger("devstack.host")

HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
QUEUE_TRIGGER = "queueTrigger"
SUPPORTED_TRIGGERS = (HTTP_TRIGGER, TIMER_TRIGGER, QUEUE_TRIGGER)
DEFAULT_STORAGE_CONNECTION = "AzureWebJobsStorage"


@dataclass(frozen=True)
class QueueOutput:
    """A queue output binding: `name` is the parameter (or `$return`) it is bound to."""

    name: str
    queue_name: str
    connection: str


@dataclass
class FunctionSpec:
    name: str
    trigger_type: str
    trigger: Any  # the azure.functions.decorators Trigger object
    user_function: Callable[..., Any]
    trigger_arg: str
    takes_context: bool
    queue_outputs: list[QueueOutput] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def load_functions(app: Any) -> list[FunctionSpec]:
    """FunctionSpecs for every function of `app`; ValueError listing every unsupported use."""
    if not hasattr(app, "get_functions"):
        raise ValueError(f"{app!r} is not a func.FunctionApp")
    # get_functions() may be called only once per app: it remembers names to refuse duplicates.
    functions = app.get_functions()
    specs: list[FunctionSpec] = []
    problems: list[str] = []
    for function in functions:
        name = function.get_function_name()
        trigger = function.get_trigger()
        trigger_type = getattr(trigger, "type", None)
        if trigger_type not in SUPPORTED_TRIGGERS:
            problems.append(f"{name}: trigger '{trigger_type}' is not supported by the local host")
            continue
        outputs: list[QueueOutput] = []
        for binding in function.get_bindings():
            if binding is trigger:
                continue
            kind = binding.type
            if kind == "http" and trigger_type == HTTP_TRIGGER:
                continue
            if kind == "queue" and _enum_value(binding.direction) == 1:
                try:
                    queue_name = resolve_settings(binding.queue_name)
                except LookupError as error:
                    problems.append(f"{name}: queue output {binding.name}: {error}")
                    continue
                outputs.append(QueueOutput(binding.name, queue_name, binding.connection or ""))
                continue
            problems.append(f"{name}: binding '{kind}' ({binding.name}) is not supported by the local host")
        user_function = function.get_user_function()
        parameters = inspect.signature(user_function).parameters
        bound = {trigger.name, *(o.name for o in outputs)}
        for parameter in parameters.values():
            if parameter.name in bound or parameter.name == "context":
                continue
            if parameter.default is inspect.Parameter.empty and parameter.kind not in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            ):
                problems.append(f"{name}: parameter '{parameter.name}' is bound to nothing")
        if trigger.name not in parameters:
            problems.append(f"{name}: the function has no parameter named '{trigger.name}' for its trigger")
        specs.append(
            FunctionSpec(
                name=name,
                trigger_type=trigger_type,
                trigger=trigger,
                user_function=user_function,
                trigger_arg=trigger.name,
                takes_context="context" in parameters,
                queue_outputs=outputs,
            )
        )
    if problems:
        raise ValueError("the app uses what the local host cannot run:\n  " + "\n  ".join(problems))
    return specs


class _Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return _TraceContext()

    @property
    def retry_context(self) -> Any:
        return _RetryContext()


def queue_message_bodies(value: Any) -> list[bytes]:
    """Message bodies from what a function put in a queue output (str, bytes, QueueMessage, lists)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.encode("utf-8")]
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value)]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, dict):
        return [json.dumps(value).encode("utf-8")]
    if isinstance(value, Iterable):
        return [body for item in value for body in queue_message_bodies(item)]
    raise TypeError(f"cannot send {type(value).__name__} to a queue output")


QueueSender = Callable[[QueueOutput, list[bytes]], None]


class Invoker:
    """Calls user functions; owns the event loop that `async def` functions share."""

    def __init__(self, *, send_to_queue: QueueSender, function_directory: str, timeout: float | None) -> None:
        self._send_to_queue = send_to_queue
        self._function_directory = function_directory
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="host-asyncio", daemon=True)
        self._loop_thread.start()

    def invoke(self, spec: FunctionSpec, trigger_value: Any, *, reason: str, quiet: bool = False) -> Any:
        """Run the function and flush its queue outputs; exceptions propagate after being logged."""
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {spec.trigger_arg: trigger_value}
        outs: dict[str, _Out] = {}
        for output in spec.queue_outputs:
            if output.name != "$return":
                outs[output.name] = kwargs[output.name] = _Out()
        if spec.takes_context:
            kwargs["context"] = InvocationContext(invocation_id, spec.name, self._function_directory)
        log.debug("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        started = time.monotonic()
        try:
            if spec.is_async:
                future = asyncio.run_coroutine_threadsafe(spec.user_function(**kwargs), self._loop)
                try:
                    result = future.result(timeout=self._timeout)
                except TimeoutError:
                    future.cancel()
                    raise TimeoutError(f"function '{spec.name}' exceeded functionTimeout") from None
            else:
                result = spec.user_function(**kwargs)
            for output in spec.queue_outputs:
                value = result if output.name == "$return" else outs[output.name].get()
                bodies = queue_message_bodies(value)
                if bodies:
                    self._send_to_queue(output, bodies)
        except Exception:
            elapsed = (time.monotonic() - started) * 1000
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)", spec.name, invocation_id, elapsed)
            raise
        elapsed = (time.monotonic() - started) * 1000
        if self._timeout is not None and elapsed / 1000 > self._timeout:
            log.warning("'Functions.%s' ran longer than functionTimeout; Azure would have stopped it", spec.name)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)",
            spec.name,
            invocation_id,
            elapsed,
        )
        return result

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=1)
