"""A stop signal ends a devstack server's wait whichever thread the kernel hands it to.

Run in a child process: the test sends SIGTERM to one of the child's worker threads (`pthread_kill`),
as the kernel may do with a process-wide signal, and the child must notice while its main thread
sleeps in `StopSignals.wait()`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import signal, sys, threading
    from devstack._signals import StopSignals

    signals = StopSignals().install()
    parked = threading.Event()
    worker = threading.Thread(target=parked.wait, daemon=True)
    worker.start()
    signal.pthread_kill(worker.ident, signal.SIGTERM)  # the C-level handler runs on the worker
    print("stopped" if signals.wait() else "woke without a signal", flush=True)
    """
)


def test_a_stop_signal_caught_by_a_worker_thread_still_ends_the_wait() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "stopped", result.stderr


def test_a_second_signal_exits_at_once_with_the_conventional_status() -> None:
    child = CHILD + "signal.raise_signal(signal.SIGINT)\nprint('still running', flush=True)\n"
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert result.returncode == 128 + 2
    assert result.stdout.strip() == "stopped"
