"""`python -m devstack up` runs the local stack until Ctrl-C; `python -m devstack token` prints a
platform token the running stack accepts; `python -m devstack demo` puts demo meetings into the
running stack's simulated mailboxes and says where to look.

The first SIGINT or SIGTERM stops everything (children get SIGTERM, then SIGKILL after a few
seconds); a second one kills the children at once and exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devstack._signals import StopSignals
from devstack.stack import Stack, StartCancelled, host_ports_from_env, platform_token, ports_from_env


def _dir() -> Path:
    return Path(os.environ.get("DEVSTACK_DIR", ".devstack")).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the whole local stack in the foreground")
    tok = sub.add_parser("token", help="print a CoAgentor platform token for a dev user")
    tok.add_argument("--user", required=True)
    tok.add_argument("--plan", choices=["free", "solo", "pro", "business"], default="free")
    tok.add_argument("--email", help="an `email` claim (the page names the CoAgentor account with it)")
    tok.add_argument("--workspace", help="a `workspace` claim (the user's CoAgentor workspace id)")
    tok.add_argument("--workspace-dedupe", action="store_true",
                     help="`workspace_dedupe: true`: teammates invited to one meeting share one agent")
    sub.add_parser("local-settings", help="write local.settings.json for `func start` against this stack")
    sub.add_parser("demo", help="put demo meetings into the running stack's mailboxes and say where to look")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from devstack.demo import DemoError, load_endpoints, seed, summary

        try:
            endpoints = load_endpoints(_dir())
            print(summary(endpoints, seed(endpoints)))
        except DemoError as exc:
            print(f"devstack demo: {exc}", file=sys.stderr)
            return 1
        return 0

    if args.command == "local-settings":
        stack = Stack(devstack_dir=_dir(), ports=ports_from_env())
        stack.prepare()
        values = {k: v for k, v in stack.app_settings().items() if k != "CURL_CA_BUNDLE"}
        Path("local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
        print("wrote local.settings.json (git-ignored; holds dev-only secrets)")
        return 0

    if args.command == "token":
        print(platform_token(_dir(), args.user, args.plan, email=args.email, workspace=args.workspace,
                             workspace_dedupe=args.workspace_dedupe))
        return 0

    ports = ports_from_env()
    try:
        host_ports = host_ports_from_env(ports["FUNCTIONS_PORT"])
    except ValueError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    stack = Stack(devstack_dir=_dir(), ports=ports, quiet=False, extra_host_ports=host_ports[1:])

    def force_stop(signum: int) -> None:
        # Inside the signal handler: nothing that takes a lock (print() does; os.write does not).
        stack.kill_now()
        os.write(2, b"\ndevstack: stopped at once\n")
        os._exit(128 + signum)

    signals = StopSignals(on_repeat=force_stop).install()
    try:
        stack.start(cancelled=lambda: signals.requested)
        stack.write_endpoints()
        print(json.dumps(stack.endpoints(), indent=2), flush=True)
        print("\nOpen integrations_page in a browser (signed in as dev-user on Solo). Ctrl-C stops everything.",
              flush=True)
        signals.wait()
    except StartCancelled:
        pass
    except RuntimeError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        if signals.requested:
            print("\ndevstack: stopping (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
