"""How long a crashed Functions host instance is away: `python -m bench.host_restart [--crashes 6]`.

Starts `python -m devstack up` with FUNCTION_HOSTS=2 on free ports, then crashes the instances in
turn (`POST /admin/crash`) and prints, for each crash, the seconds from the 202 until the port
refuses connections and from then until `/api/health` answers again on the same port. Bounded: each
wait gives up after 30 s. The stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from devstack.stack import REPO, free_port, free_ports


def _until(condition: object, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if callable(condition) and condition():
            return time.monotonic() - started
        time.sleep(0.02)
    raise SystemExit(f"gave up after {timeout:.0f} s")


def _health(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.host_restart")
    parser.add_argument("--crashes", type=int, default=6)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="host-restart-"))
    env = {**os.environ, **{k: str(v) for k, v in free_ports().items()}, "DEVSTACK_DIR": str(directory),
           "FUNCTION_HOSTS": "2", "FUNCTION_HOST_PORTS": str(free_port()),
           "SCAN_SCHEDULE": "0 0 0 1 1 *", "REFRESH_SCHEDULE": "0 0 0 1 1 *"}
    stack = subprocess.Popen([sys.executable, "-m", "devstack", "up"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoints = directory / "endpoints.json"
        _until(endpoints.exists, 120)
        urls = json.loads(endpoints.read_text())["function_hosts"]
        down, back = [], []
        for i in range(args.crashes):
            url = urls[i % len(urls)]
            requests.post(f"{url}/admin/crash", timeout=5)
            down.append(_until(lambda u=url: not _health(u)))
            back.append(_until(lambda u=url: _health(u)))
        print(f"{args.crashes} crashes: down after {statistics.median(down):.2f} s (median), serving again "
              f"after {min(back):.2f}-{max(back):.2f} s (median {statistics.median(back):.2f} s)")
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
