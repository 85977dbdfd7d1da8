"""`FUNCTION_HOSTS=2 make dev`: two Functions host instances on one storage, each restarted after a
crash, and every process gone when the stack stops (DEVSTACK.md "Functions host" / "Several instances")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from devstack import polling
from devstack.stack import REPO, free_port, free_ports, host_ports_from_env

pytestmark = pytest.mark.skipif(not (REPO / "node_modules" / ".bin" / "azurite").exists(),
                                reason="Azurite not installed")


def wait_for(what: str, probe: Callable[[], object], timeout: float) -> object:
    return polling.until(what, probe, timeout, 0.05)


def serving(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def host_pid(port: int) -> int | None:
    """The pid of the Functions host process listening on `port` (its command line names the port)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"devstack.host" in cmd and b"--port" in cmd and cmd[cmd.index(b"--port") + 1] == str(port).encode():
            return int(entry.name)
    return None


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    directory = tmp_path_factory.mktemp("two-hosts")
    ports = free_ports()
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "DEVSTACK_DIR": str(directory),
        "FUNCTION_HOSTS": "2",
        "FUNCTION_HOST_PORTS": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        "SCAN_SCHEDULE": "0 0 0 1 1 *",
        "REFRESH_SCHEDULE": "0 0 0 1 1 *",
    }
    log = directory / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devstack", "up"], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    endpoints = directory / "endpoints.json"
    try:
        wait_for("endpoints.json", lambda: endpoints.exists() or proc.poll() is not None, 120)
        assert proc.poll() is None, log.read_text()
        yield {"endpoints": json.loads(endpoints.read_text()), "log": log, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ports_of_instances_follow_the_contract() -> None:
    assert host_ports_from_env(7071, {}) == [7071]
    assert host_ports_from_env(7071, {"FUNCTION_HOSTS": "3"}) == [7071, 7171, 7271]
    assert host_ports_from_env(7071, {"FUNCTION_HOSTS": "2", "FUNCTION_HOST_PORTS": "8001"}) == [7071, 8001]
    with pytest.raises(ValueError):
        host_ports_from_env(7071, {"FUNCTION_HOSTS": "0"})


def test_endpoints_list_every_instance_and_each_serves(two_hosts: dict[str, object]) -> None:
    endpoints = two_hosts["endpoints"]
    assert isinstance(endpoints, dict)
    hosts = endpoints["function_hosts"]

    assert len(hosts) == 2
    assert hosts[0] == endpoints["functions"]
    assert all(serving(url) for url in hosts)


@pytest.mark.parametrize("instance", [1, 0])
def test_a_crashed_instance_is_replaced_by_a_fresh_process_on_its_port(
    two_hosts: dict[str, object], instance: int
) -> None:
    endpoints = two_hosts["endpoints"]
    assert isinstance(endpoints, dict)
    url = endpoints["function_hosts"][instance]
    port = int(url.rsplit(":", 1)[1])
    before = host_pid(port)
    assert before is not None

    answer = requests.post(f"{url}/admin/crash", timeout=5)

    assert answer.status_code == 202
    wait_for("the crashed process to end", lambda: host_pid(port) != before, 10)
    wait_for("a fresh process serving on the same port", lambda: serving(url), 30)
    after = host_pid(port)
    assert after is not None and after != before
    log = two_hosts["log"]
    assert isinstance(log, Path)
    assert "starting a fresh one" in log.read_text(errors="replace")
    other = endpoints["function_hosts"][1 - instance]
    assert serving(other)  # the other instance never stopped
