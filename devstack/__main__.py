"""`python -m devstack up` runs the local stack until Ctrl-C; `python -m devstack token` prints a
platform token the running stack accepts."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from devstack.stack import Stack, platform_token, ports_from_env


def _dir() -> Path:
    return Path(os.environ.get("DEVSTACK_DIR", ".devstack")).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole local stack in the foreground")
    tok = sub.add_parser("token", help="print a CoAgentor platform token for a dev user")
    tok.add_argument("--user", required=True)
    tok.add_argument("--plan", choices=["free", "solo", "pro", "business"], default="free")
    sub.add_parser("local-settings", help="write local.settings.json for `func start` against this stack")
    args = parser.parse_args(argv)

    if args.command == "local-settings":
        stack = Stack(devstack_dir=_dir(), ports=ports_from_env())
        stack.prepare()
        values = {k: v for k, v in stack.app_settings().items() if k != "CURL_CA_BUNDLE"}
        Path("local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
        print("wrote local.settings.json (git-ignored; holds dev-only secrets)")
        return 0

    if args.command == "token":
        print(platform_token(_dir(), args.user, args.plan))
        return 0

    stack = Stack(devstack_dir=_dir(), ports=ports_from_env(), quiet=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start()
        stack.write_endpoints()
        print(json.dumps(stack.endpoints(), indent=2), flush=True)
        print("\nOpen integrations_page in a browser (signed in as dev-user on Solo). Ctrl-C stops everything.",
              flush=True)
        stop.wait()
    except RuntimeError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
