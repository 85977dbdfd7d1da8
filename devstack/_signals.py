"""Stopping on SIGINT/SIGTERM without taking a lock inside the signal handler.

Python runs signal handlers in the main thread between two bytecodes of whatever it was doing.
A handler that calls `threading.Event.set()` can therefore wait forever for the lock that the
interrupted `Event.wait()` holds. The handler here only appends to a list and writes one byte to
a pipe; the main thread waits on the pipe. A repeated signal calls `on_repeat` (which must not
take locks either: `os.killpg`, `os.write`, `os._exit` are fine), by default an immediate exit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Iterable
from types import FrameType


def exit_now(signum: int) -> None:
    """The conventional exit status for a process ended by `signum`, without any clean-up."""
    os._exit(128 + signum)


class StopSignals:
    def __init__(self, on_repeat: Callable[[int], None] = exit_now) -> None:
        self._received: list[int] = []
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._on_repeat = on_repeat

    def install(self, signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> StopSignals:
        for sig in signals:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)  # one C call: safe even if this handler interrupts itself
        with contextlib.suppress(OSError):  # a full pipe already holds a wake-up byte
            os.write(self._write, b"\0")
        if len(self._received) > 1:
            self._on_repeat(signum)

    @property
    def requested(self) -> bool:
        return bool(self._received)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop signal arrives (or `timeout` passes); True once one has."""
        if not self._received:
            # A signal landing between the check and select() has written to the pipe already.
            select.select([self._read], [], [], timeout)
        return self.requested
