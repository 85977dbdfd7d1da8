"""A stop signal ends a devstack server's wait whichever thread the kernel hands it to.

Run in a child process: one of the child's worker threads sends SIGTERM to itself (`pthread_kill`),
as the kernel may hand a process-wide signal to any thread, while the main thread sleeps in
`StopSignals.wait()`. Either of the two ways out must suffice on its own: the wake-up fd written by
the C-level handler, and the periodic re-check (each run with the other disabled).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import signal, sys, threading, time
    import devstack._signals as stop_signals

    if "fd-only" in sys.argv:
        stop_signals.RECHECK_SECONDS = 3600
    signals = stop_signals.StopSignals().install()
    if "recheck-only" in sys.argv:
        signal.set_wakeup_fd(-1)

    def later() -> None:
        time.sleep(0.3)  # the main thread is asleep in wait() by then
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # the C-level handler runs here

    threading.Thread(target=later, daemon=True).start()
    print("stopped" if signals.wait() else "woke without a signal", flush=True)
    """
)


@pytest.mark.parametrize("way", ["fd-only", "recheck-only", "both"])
def test_a_stop_signal_caught_by_a_worker_thread_still_ends_the_wait(way: str) -> None:
    result = subprocess.run([sys.executable, "-c", CHILD, way], cwd=REPO, capture_output=True, text=True,
                            timeout=60)

    assert result.stdout.strip() == "stopped", result.stderr


def test_a_second_signal_exits_at_once_with_the_conventional_status() -> None:
    child = CHILD + "signal.raise_signal(signal.SIGINT)\nprint('still running', flush=True)\n"
    result = subprocess.run([sys.executable, "-c", child, "both"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 128 + 2
    assert result.stdout.strip() == "stopped"


def test_installing_beside_another_wake_up_fd_is_refused_rather_than_stealing_it() -> None:
    child = textwrap.dedent(
        """
        import os, signal
        from devstack._signals import StopSignals

        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        try:
            StopSignals().install()
        except RuntimeError:
            print("refused" if signal.set_wakeup_fd(-1) == w else "stolen")
        """
    )
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "refused", result.stderr
