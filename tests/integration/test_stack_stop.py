"""`make dev` always stops cleanly, and nothing it started outlives it.

Runs `python -m devstack up` as `make dev` does, in a process group of its own, on the same ports
every time (a leftover would hold one and the next start would fail), and stops it the ways a
terminal or a process manager does: SIGTERM or SIGINT to the group, twice for a forced stop, or
SIGKILL of the stack process alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import polling
from devstack.stack import REPO, free_ports

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="walks /proc to find the stack's processes"),
    pytest.mark.skipif(not (REPO / "node_modules" / ".bin" / "azurite").exists(), reason="Azurite not installed"),
]

START_TIMEOUT = 60.0
GONE_WITHIN = 10.0  # generous: a clean stop takes well under a second here


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> dict[int, str]:
    """Every process below `root`, by pid, with its start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            found[pid] = started
            todo.append(pid)
    return found


def _alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[1] != "Z"  # a zombie holds no port


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    polling.until(what, condition, timeout, 0.05)


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    directory: Path
    log: Path
    children: dict[int, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def child(self, command_part: str) -> int:
        return next(pid for pid in self.children if command_part in _cmdline(pid))


class Launcher:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = free_ports()
        self.started: list[RunningStack] = []
        self.runs = 0

    def start(self, *, wait: bool = True) -> RunningStack:
        self.runs += 1
        log = self.directory / f"up-{self.runs}.log"
        endpoints = self.directory / "endpoints.json"
        endpoints.unlink(missing_ok=True)  # a stack killed outright leaves its file behind
        env = {
            **os.environ,
            **{name: str(port) for name, port in self.ports.items()},
            "DEVSTACK_DIR": str(self.directory),
            "PYTHONUNBUFFERED": "1",
            "SCAN_SCHEDULE": "0 0 0 1 1 *",
            "REFRESH_SCHEDULE": "0 0 0 1 1 *",
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "devstack", "up"], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        running = RunningStack(proc, self.directory, log, {})
        self.started.append(running)
        if wait:
            _wait_until("the stack writes endpoints.json",
                        lambda: endpoints.exists() or proc.poll() is not None, START_TIMEOUT)
            assert proc.poll() is None, running.output()
            running.children = _descendants(proc.pid)
            assert len(running.children) >= 2, running.children  # Azurite and the Functions host
        return running

    def assert_all_gone(self, running: RunningStack) -> None:
        everything = dict(running.children)
        _wait_until(
            "the stack and every process it started are gone",
            lambda: running.proc.poll() is not None and not any(_alive(p, s) for p, s in everything.items()),
            GONE_WITHIN,
        )
        _wait_until("every port is free again",
                    lambda: not any(_port_in_use(port) for port in self.ports.values()), GONE_WITHIN)

    def kill_leftovers(self) -> None:
        for running in self.started:
            for pid, started in [*running.children.items(), *_descendants(running.proc.pid).items()]:
                if _alive(pid, started):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            if running.proc.poll() is None:
                running.proc.kill()
                running.proc.wait()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("devstack-stop"))
    try:
        yield launcher
    finally:
        launcher.kill_leftovers()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT] * 3, ids=lambda s: s.name)
def test_a_signal_to_the_group_stops_everything_and_frees_the_ports(launcher: Launcher, sig: signal.Signals) -> None:
    running = launcher.start()

    os.killpg(running.proc.pid, sig)

    launcher.assert_all_gone(running)
    assert running.proc.returncode == 0, running.output()
    assert not (running.directory / "endpoints.json").exists()


def test_a_stop_while_starting_leaves_nothing_behind(launcher: Launcher) -> None:
    running = launcher.start(wait=False)
    _wait_until("Azurite is started", lambda: bool(_descendants(running.proc.pid)), START_TIMEOUT)
    running.children = _descendants(running.proc.pid)

    os.killpg(running.proc.pid, signal.SIGTERM)

    launcher.assert_all_gone(running)
    assert not (running.directory / "endpoints.json").exists()


def test_children_die_with_a_stack_that_is_killed_outright(launcher: Launcher) -> None:
    running = launcher.start()

    os.kill(running.proc.pid, signal.SIGKILL)  # the stack alone: it gets no chance to stop anything

    launcher.assert_all_gone(running)


def test_a_second_ctrl_c_stops_at_once_when_a_child_hangs(launcher: Launcher) -> None:
    running = launcher.start()
    os.kill(running.child("devstack.host"), signal.SIGSTOP)  # a host that ignores SIGTERM for now

    os.killpg(running.proc.pid, signal.SIGINT)
    _wait_until("the stack says it is stopping", lambda: "Ctrl-C again" in running.output(), GONE_WITHIN)
    os.killpg(running.proc.pid, signal.SIGINT)

    launcher.assert_all_gone(running)
    assert running.proc.returncode == 128 + signal.SIGINT, running.output()
    assert "stopped at once" in running.output()
