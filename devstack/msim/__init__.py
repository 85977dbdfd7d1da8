"""Local Microsoft identity platform + Graph simulator (HTTPS, loopback only).

MSAL Python and `requests` talk to it unchanged; only the authority host and the CA bundle differ:

    sim = MicrosoftSimulator(ssl_context=ensure_ca(dir).server_context(),
                             apps=[AppRegistration(client_id, secret, [redirect_uri])])
    sim.start()
    msal.ConfidentialClientApplication(client_id, client_credential=secret,
                                       authority=f"{sim.base_url}/common", instance_discovery=False,
                                       http_client=session)

Run it alone with `python -m devstack.msim --port 9443 --client-id X --client-secret-file F
--redirect-uri U`. The admin API under `/_sim/` is described in DEVSTACK.md and `admin.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from devstack._signals import StopSignals
from devstack.msim.directory import (
    APP_HOME_TENANT_ID,
    CONSUMERS_TENANT_ID,
    CONTOSO_TENANT_ID,
    FABRIKAM_TENANT_ID,
    NORTHWIND_TENANT_ID,
    AppRegistration,
)
from devstack.msim.server import MicrosoftSimulator

__all__ = [
    "APP_HOME_TENANT_ID",
    "CONSUMERS_TENANT_ID",
    "CONTOSO_TENANT_ID",
    "FABRIKAM_TENANT_ID",
    "NORTHWIND_TENANT_ID",
    "AppRegistration",
    "MicrosoftSimulator",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    from devstack.tls import ensure_ca

    parser = argparse.ArgumentParser(
        prog="python -m devstack.msim", description="Local Microsoft identity platform + Graph simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIM_PORT", "9443")))
    parser.add_argument("--devstack-dir", type=Path, default=Path(os.environ.get("DEVSTACK_DIR", ".devstack")))
    parser.add_argument("--client-id", help="client id of the app registration to create")
    parser.add_argument("--client-secret-file", type=Path, help="file holding that app's client secret")
    parser.add_argument(
        "--redirect-uri", action="append", default=[], help="registered redirect URI (repeat for several)"
    )
    parser.add_argument("--display-name", default="CoAgentor Outlook Calendar", help="app name on the consent page")
    parser.add_argument("--access-token-lifetime", type=int, default=3600, help="seconds (default 3600)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request (never secrets)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.verbose:
        logging.getLogger("devstack.msim").setLevel(logging.DEBUG)
    apps: list[AppRegistration] = []
    if args.client_id:
        if args.client_secret_file is None:
            parser.error("--client-id needs --client-secret-file")
        secret = args.client_secret_file.read_text(encoding="utf-8").strip()
        if not secret:
            parser.error(f"{args.client_secret_file} is empty")
        apps.append(AppRegistration(args.client_id, secret, list(args.redirect_uri), args.display_name))

    ca = ensure_ca(args.devstack_dir)
    simulator = MicrosoftSimulator(
        host=args.host,
        port=args.port,
        ssl_context=ca.server_context(),
        apps=apps,
        access_token_lifetime=args.access_token_lifetime,
    )
    signals = StopSignals().install()
    simulator.start()
    try:
        signals.wait()
    finally:
        simulator.stop()
    return 0
