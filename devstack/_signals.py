"""Stopping on SIGINT/SIGTERM without taking a lock inside the signal handler.

Python runs signal handlers in the main thread between two bytecodes of whatever it was doing.
A handler that calls `threading.Event.set()` can therefore wait forever for the lock that the
interrupted `Event.wait()` holds. The handler here only appends to a list and writes one byte to
a pipe; the main thread waits on the pipe.

The kernel delivers a process-wide signal to any thread that does not block it. When a worker
thread takes it, CPython's C-level handler only flags it for the main thread, which would run the
Python handler at its next bytecode: never, while it sleeps in `select()` without a timeout. The
pipe is therefore also the interpreter's wake-up fd (`signal.set_wakeup_fd`, written by the C-level
handler in whichever thread caught the signal), and `wait()` re-checks at least every
`RECHECK_SECONDS` besides (https://docs.python.org/3/library/signal.html#signal.set_wakeup_fd).
A repeated signal calls `on_repeat` (which must not take locks either: `os.killpg`, `os.write`,
`os._exit` are fine), by default an immediate exit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from types import FrameType

RECHECK_SECONDS = 0.5


def exit_now(signum: int) -> None:
    """The conventional exit status for a process ended by `signum`, without any clean-up."""
    os._exit(128 + signum)


class StopSignals:
    def __init__(self, on_repeat: Callable[[int], None] = exit_now) -> None:
        self._received: list[int] = []
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        os.set_blocking(self._read, False)
        self._on_repeat = on_repeat

    def install(self, signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> StopSignals:
        """Install the handlers; call from the main thread (Python runs signal handlers only there).
        Raises RuntimeError when something else already set the interpreter's wake-up fd (there is one)."""
        earlier = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        if earlier not in (-1, self._write):
            signal.set_wakeup_fd(earlier)
            raise RuntimeError("the interpreter's signal wake-up fd is taken already (an asyncio loop's?)")
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
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._received:
            left = RECHECK_SECONDS if deadline is None else min(RECHECK_SECONDS, deadline - time.monotonic())
            if left <= 0:
                break
            # A signal landing between the check and select() has written to the pipe already.
            readable, _, _ = select.select([self._read], [], [], left)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._read, 512)  # the Python handler runs before the loop's next check
        return self.requested
