"""Runs a command that must not outlive the process that started it.

    python -S devstack/_leash.py PARENT_PID COMMAND [ARG...]

The local stack starts Azurite and the Functions host through this, each in a session of its own
(so a Ctrl-C meant for the stack does not reach them half-way through its own stop). If the stack
is killed outright it cannot stop them, so:

- on Linux the kernel kills the command when its parent dies (PR_SET_PDEATHSIG, which survives
  exec) and the command replaces this process, keeping its pid;
- elsewhere this process stays as the command's parent, checks every quarter second whether
  PARENT_PID is still its parent, and kills its process group once it is not.

Standard library only, and run as a script: nothing to import from the project.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _supervise(parent: int, command: list[str]) -> int:
    # The stack signals this process group: the command gets the signal itself and this process
    # waits for it to exit. A handler, not SIG_IGN, which the command would inherit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    child = subprocess.Popen(command)
    while child.poll() is None:
        if os.getppid() != parent:
            if os.getpgid(0) == os.getpid():
                os.killpg(0, signal.SIGKILL)
            child.kill()
            return 1
        time.sleep(0.25)
    return child.returncode


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: _leash.py PARENT_PID COMMAND [ARG...]", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    if _die_with_parent():
        if os.getppid() != parent:
            return 1  # the parent died before the kernel was told to watch it
        os.execvp(command[0], command)
    return _supervise(parent, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
