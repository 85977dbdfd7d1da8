"""The local stack's test certificate authority.

One CA per DEVSTACK_DIR, created once and reused, so that a browser or a `requests` session told
to trust `ca.pem` trusts every HTTPS part of the stack (Microsoft simulator, Key Vault endpoint).
`bundle.pem` holds the system CAs plus the test CA: the environment here sets REQUESTS_CA_BUNDLE,
which overrides `session.verify`, so every process of the stack is pointed at this bundle instead.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
import trustme

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class TestCA:
    ca_pem: Path
    bundle_pem: Path
    server_cert_chain_pem: Path
    server_key_pem: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_cert_chain_pem), str(self.server_key_pem))
        return ctx


def ensure_ca(devstack_dir: Path) -> TestCA:
    tls_dir = devstack_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    paths = TestCA(
        ca_pem=tls_dir / "ca.pem",
        bundle_pem=tls_dir / "bundle.pem",
        server_cert_chain_pem=tls_dir / "server-chain.pem",
        server_key_pem=tls_dir / "server-key.pem",
    )
    if not all(p.exists() for p in (paths.ca_pem, paths.bundle_pem, paths.server_cert_chain_pem,
                                    paths.server_key_pem)):
        ca = trustme.CA(organization_name="CoAgentor devstack test CA")
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        ca.cert_pem.write_to_path(str(paths.ca_pem))
        cert.private_key_pem.write_to_path(str(paths.server_key_pem))
        cert.private_key_and_cert_chain_pem.write_to_path(str(paths.server_cert_chain_pem))
        system = SYSTEM_BUNDLE if SYSTEM_BUNDLE.exists() else Path(certifi.where())
        paths.bundle_pem.write_bytes(system.read_bytes() + b"\n" + paths.ca_pem.read_bytes())
    return paths
