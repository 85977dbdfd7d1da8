"""The whole local stack: Azurite, Microsoft simulator, Key Vault endpoint, agent API recorder and
the local Functions host running `function_app.app`. Used by `make dev` and by the tests.

Azurite and the Functions host are child processes, each in a session of its own and started
through `_leash.py`, so they die with the stack even when it is killed outright (SIGKILL, OOM).
On Linux that follows the thread that called `start()`: call it from one that lives as long as
the stack (the main thread).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.tls import TestCA, ensure_ca

REPO = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published well-known development key (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
OUTLOOK_CLIENT_ID = "6f1f5c7e-4a3b-4f7e-9c1d-0c0a9e5b7d21"
FUNCTION_IDENTITY_CLIENT_ID = "5a0f3c2d-7b1e-4c9a-8e6f-2d4b6a8c0e13"
PLATFORM_ISSUER = "https://coagentor.local/devstack"
PLATFORM_AUDIENCE = "coagentor-outlook-calendar"

LEASH = Path(__file__).resolve().with_name("_leash.py")
STOP_GRACE_SECONDS = 5.0  # then SIGKILL

DEFAULT_PORTS = {
    "FUNCTIONS_PORT": 7071, "SIM_PORT": 9443, "AGENTS_PORT": 7081, "KEYVAULT_PORT": 9444,
    "AZURITE_BLOB_PORT": 10000, "AZURITE_QUEUE_PORT": 10001, "AZURITE_TABLE_PORT": 10002,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports_from_env(env: dict[str, str] | None = None) -> dict[str, int]:
    env = dict(os.environ) if env is None else env
    return {k: int(env.get(k, v)) for k, v in DEFAULT_PORTS.items()}


def free_ports() -> dict[str, int]:
    return {k: free_port() for k in DEFAULT_PORTS}


def host_ports_from_env(first: int, env: dict[str, str] | None = None) -> list[int]:
    """The Functions host instances' ports: `FUNCTION_HOSTS` (default 1) of them, the first on
    `first` (FUNCTIONS_PORT), instance i >= 2 on the i-1th port of `FUNCTION_HOST_PORTS`
    (comma-separated) or else on first + 100*(i-1). ValueError for a count below 1 or a bad list."""
    env = dict(os.environ) if env is None else env
    count = int(env.get("FUNCTION_HOSTS") or "1")
    if count < 1:
        raise ValueError(f"FUNCTION_HOSTS must be at least 1, got {count}")
    listed = [int(p) for p in (env.get("FUNCTION_HOST_PORTS") or "").split(",") if p.strip()]
    listed = [p for p in listed if p != first]
    ports = [first]
    for i in range(2, count + 1):
        ports.append(listed[i - 2] if len(listed) >= i - 1 else first + 100 * (i - 1))
    if len(set(ports)) != len(ports):
        raise ValueError(f"Functions host ports must differ, got {ports}")
    return ports


class StartCancelled(Exception):
    """A stop was asked for while the stack was starting."""


def _never() -> bool:
    return False


def _wait_port(
    port: int,
    deadline: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    cancelled: Callable[[], bool] = _never,
) -> None:
    while time.monotonic() < deadline:
        if cancelled():
            raise StartCancelled
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} in time")


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class DevSecrets:
    """Random per DEVSTACK_DIR, created once: dev stand-ins for what Azure keeps in Key Vault / Entra."""

    outlook_client_secret: str
    agent_api_key: str
    function_identity_secret: str
    platform_private_key_pem: str
    platform_public_key_pem: str
    # Standard Webhooks `whsec_<base64>`: the app signs status events with it, the recorder verifies.
    platform_events_secret: str = ""
    # Standard Webhooks `whsec_<base64>`: the recorder (as the agent platform) signs agent statuses.
    agent_status_secret: str = ""

    @classmethod
    def ensure(cls, directory: Path) -> DevSecrets:
        path = directory / "dev-secrets.json"
        if path.exists():
            known = json.loads(path.read_text())
            if known.get("platform_events_secret") and known.get("agent_status_secret"):
                return cls(**known)
            # Written before status events or agent statuses existed: add what is missing.
            made = cls(**{**known, "platform_events_secret": known.get("platform_events_secret") or _whsec(),
                          "agent_status_secret": known.get("agent_status_secret") or _whsec()})
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            made = cls(
                outlook_client_secret=secrets.token_urlsafe(32),
                agent_api_key=secrets.token_urlsafe(32),
                function_identity_secret=secrets.token_urlsafe(32),
                platform_private_key_pem=key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode(),
                platform_public_key_pem=key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ).decode(),
                platform_events_secret=_whsec(),
                agent_status_secret=_whsec(),
            )
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(made.__dict__))
        path.chmod(0o600)
        return made


def platform_token(directory: Path, user_id: str, plan: str, lifetime: timedelta = timedelta(hours=12),
                   email: str | None = None, workspace: str | None = None, workspace_dedupe: bool = False) -> str:
    dev = DevSecrets.ensure(directory)
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": user_id, "plan": plan, "iss": PLATFORM_ISSUER, "aud": PLATFORM_AUDIENCE,
                              "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp())}
    if email:
        claims["email"] = email
    if workspace:
        claims["workspace"] = workspace
    if workspace_dedupe:
        claims["workspace_dedupe"] = True
    return jwt.encode(claims, dev.platform_private_key_pem, algorithm="RS256")


@dataclass
class Stack:
    devstack_dir: Path
    ports: dict[str, int]
    overrides: dict[str, str] = field(default_factory=dict)
    # Simulator knobs (`POST /_sim/config` keys) in force from the start, and after `/_sim/reset`:
    # for what the host does while starting (its health probe already fetches a managed identity token).
    sim_config: dict[str, Any] = field(default_factory=dict)
    quiet: bool = True
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _servers: list[Any] = field(default_factory=list)
    _cancelled: Callable[[], bool] = field(default=_never, init=False, repr=False)
    ca: TestCA | None = None
    dev: DevSecrets | None = None
    # Ports of Functions host instances 2..N (FUNCTION_HOSTS); instance 1 is FUNCTIONS_PORT.
    extra_host_ports: list[int] = field(default_factory=list)
    _hosts: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False, repr=False)
    _host_env: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _supervisor: Any = field(default=None, init=False, repr=False)
    _stopping: Any = field(default=None, init=False, repr=False)
    _supervise_lock: Any = field(default=None, init=False, repr=False)
    restarts: int = field(default=0, init=False)

    # ------------------------------------------------------------------ URLs
    @property
    def functions_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['FUNCTIONS_PORT']}"

    @property
    def host_ports(self) -> list[int]:
        return [self.ports["FUNCTIONS_PORT"], *self.extra_host_ports]

    @property
    def function_host_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.host_ports]

    @property
    def sim_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['SIM_PORT']}"

    @property
    def agents_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['AGENTS_PORT']}"

    @property
    def key_vault_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['KEYVAULT_PORT']}"

    @property
    def identity_header(self) -> str:
        """The local host's `IDENTITY_HEADER` for the simulator's managed identity endpoint (App
        Service's, DEVSTACK.md): derived from this DEVSTACK_DIR's dev secrets, so `make dev` keeps it."""
        assert self.dev is not None
        return hashlib.sha256(b"identity-header:" + self.dev.function_identity_secret.encode()).hexdigest()

    def managed_identity(self) -> Any:
        """The Functions host's user-assigned managed identity in the simulator: its client id is
        AZURE_CLIENT_ID (as in Azure), its principal id what the app registration's federated
        identity credential trusts."""
        from devstack.msim.directory import APP_HOME_TENANT_ID, ManagedIdentity
        from devstack.msim.tokens import service_principal_id

        return ManagedIdentity(client_id=FUNCTION_IDENTITY_CLIENT_ID,
                               principal_id=service_principal_id(FUNCTION_IDENTITY_CLIENT_ID, APP_HOME_TENANT_ID),
                               tenant_id=APP_HOME_TENANT_ID)

    def federated_credential(self) -> Any:
        """What infra/modules/app-registration-trust.bicep puts on the app registration in Azure: trust
        the host's managed identity (issuer the simulated authority's home tenant v2.0 endpoint)."""
        from devstack.msim.directory import APP_HOME_TENANT_ID, FederatedCredential

        return FederatedCredential(name="outlookcal-function-identity",
                                   issuer=f"{self.sim_url}/{APP_HOME_TENANT_ID}/v2.0",
                                   subject=self.managed_identity().principal_id,
                                   description="The Functions host's managed identity (local stack)")

    def storage_connection_string(self) -> str:
        p = self.ports
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{p['AZURITE_BLOB_PORT']}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{p['AZURITE_QUEUE_PORT']}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{p['AZURITE_TABLE_PORT']}/{AZURITE_ACCOUNT};"
        )

    def app_settings(self) -> dict[str, str]:
        """What `local.settings.json` holds for `func start`; any of them can be overridden."""
        from devstack.msim.directory import APP_HOME_TENANT_ID

        assert self.ca is not None and self.dev is not None
        settings = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.storage_connection_string(),
            "KEY_VAULT_URI": self.key_vault_url,
            "OUTLOOK_CLIENT_ID": OUTLOOK_CLIENT_ID,
            "OUTLOOK_AUTHORITY": f"{self.sim_url}/common",
            "OUTLOOK_APP_TENANT_ID": APP_HOME_TENANT_ID,
            "OUTLOOK_REDIRECT_URI": f"{self.functions_url}/api/outlook/callback",
            # Graph (the simulator) POSTs change notifications here; http is accepted for loopback only.
            "NOTIFICATION_URL": f"{self.functions_url}/api/outlook/notifications",
            "GRAPH_BASE_URL": f"{self.sim_url}/v1.0",
            "INTEGRATIONS_PAGE_URL": f"{self.functions_url}/api/integrations",
            "AGENT_API_URL": self.agents_url,
            "PLATFORM_EVENTS_URL": f"{self.agents_url}/events",
            "PLATFORM_JWT_ISSUER": PLATFORM_ISSUER,
            "PLATFORM_JWT_AUDIENCE": PLATFORM_AUDIENCE,
            "PLATFORM_JWT_PUBLIC_KEY": self.dev.platform_public_key_pem,
            # Dev convenience: the page takes a platform token from its #fragment (the link in
            # endpoints.json). Never set in Azure, where the web app hands it over by postMessage.
            "PAGE_TOKEN_FROM_URL": "true",
            "AZURE_CLIENT_ID": FUNCTION_IDENTITY_CLIENT_ID,
            "AZURE_TENANT_ID": APP_HOME_TENANT_ID,
            "AZURE_CLIENT_SECRET": self.dev.function_identity_secret,
            "AZURE_AUTHORITY_HOST": self.sim_url,
            # App Service's managed identity endpoint, as Azure sets it for the app: the simulator's
            # (OUTLOOK_CLIENT_CREDENTIAL=managed_identity asks it for the client assertion).
            "IDENTITY_ENDPOINT": f"{self.sim_url}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": str(self.ca.bundle_pem),
            "SSL_CERT_FILE": str(self.ca.bundle_pem),
            "CURL_CA_BUNDLE": str(self.ca.bundle_pem),
        }
        from shared.config import SETTINGS

        for name, default in SETTINGS.items():
            if name.startswith("AzureWebJobsStorage"):
                continue
            if os.environ.get(name):
                settings[name] = os.environ[name]  # e.g. AGENT_JOIN_LEAD_SECONDS=60 make dev
            elif default and name not in settings:
                settings[name] = default
        settings.update(self.overrides)
        return settings

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """The test CA and dev secrets, created once per DEVSTACK_DIR."""
        self.devstack_dir.mkdir(parents=True, exist_ok=True)
        self.ca = ensure_ca(self.devstack_dir)
        self.dev = DevSecrets.ensure(self.devstack_dir)

    def start(self, timeout: float = 60.0, cancelled: Callable[[], bool] = _never) -> None:
        """Start every part, or raise (StartCancelled once `cancelled()`) with nothing left running."""
        from devstack.agents import AgentRecorder
        from devstack.keyvault import KeyVaultEndpoint
        from devstack.msim import AppRegistration, MicrosoftSimulator
        from devstack.msim.directory import APP_HOME_TENANT_ID

        deadline = time.monotonic() + timeout
        self._cancelled = cancelled
        (self.devstack_dir / "endpoints.json").unlink(missing_ok=True)  # left by a stack that was killed
        self.prepare()
        assert self.ca is not None and self.dev is not None
        try:
            self._start_azurite(deadline)
            self._check_cancelled()
            sim = MicrosoftSimulator(
                port=self.ports["SIM_PORT"], ssl_context=self.ca.server_context(),
                apps=[
                    AppRegistration(client_id=OUTLOOK_CLIENT_ID, client_secret=self.dev.outlook_client_secret,
                                    redirect_uris=[f"{self.functions_url}/api/outlook/callback"],
                                    federated_credentials=[self.federated_credential()]),
                    AppRegistration(client_id=FUNCTION_IDENTITY_CLIENT_ID,
                                    client_secret=self.dev.function_identity_secret, redirect_uris=[],
                                    display_name="CoAgentor function app identity (dev)"),
                ],
                managed_identities=[self.managed_identity()], identity_header=self.identity_header,
            )
            if self.sim_config:
                sim.state.initial_config.update(self.sim_config)
                sim.state.reset()
            sim.start()
            self._servers.append(sim)
            kv = KeyVaultEndpoint(port=self.ports["KEYVAULT_PORT"], ssl_context=self.ca.server_context(),
                                  authority=f"{self.sim_url}/{APP_HOME_TENANT_ID}")
            kv.start()
            self._servers.append(kv)
            agents = AgentRecorder(port=self.ports["AGENTS_PORT"], api_key=self.dev.agent_api_key,
                                   events_secret=self.dev.platform_events_secret,
                                   status_url=f"{self.functions_url}/api/agents/status",
                                   status_secret=self.dev.agent_status_secret)
            agents.start()
            self._servers.append(agents)
            self._check_cancelled()
            self._seed_key_vault()
            self._check_cancelled()
            self._start_host(deadline)
        except BaseException:
            self.stop()
            raise

    def _check_cancelled(self) -> None:
        if self._cancelled():
            raise StartCancelled

    def _spawn(self, name: str, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """A child in a session of its own that does not outlive this process (see _leash.py)."""
        leashed = [sys.executable, "-S", str(LEASH), str(os.getpid()), *cmd]
        proc = subprocess.Popen(leashed, start_new_session=True, **kwargs)
        self._procs.append((name, proc))
        return proc

    def _start_azurite(self, deadline: float) -> None:
        binary = REPO / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` (make dev does it)")
        location = self.devstack_dir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        p = self.ports
        # --disableTelemetry: otherwise Azurite phones home, and its SIGTERM waits on that for seconds.
        cmd = [str(binary), "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
               "--location", str(location),
               "--blobHost", "127.0.0.1", "--blobPort", str(p["AZURITE_BLOB_PORT"]),
               "--queueHost", "127.0.0.1", "--queuePort", str(p["AZURITE_QUEUE_PORT"]),
               "--tableHost", "127.0.0.1", "--tablePort", str(p["AZURITE_TABLE_PORT"])]
        log = open(self.devstack_dir / "azurite.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        with log:
            proc = self._spawn("azurite", cmd, stdout=log, stderr=subprocess.STDOUT)
        for key in ("AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT"):
            _wait_port(p[key], deadline, "Azurite", proc, self._cancelled)

    def _seed_key_vault(self) -> None:
        """The app's own secrets, written through the real SecretClient as an operator would, and the
        RSA key that wraps the data keys of the sealed token caches (infra creates it in Azure)."""
        from azure.keyvault.keys import KeyClient
        from azure.keyvault.secrets import SecretClient

        from shared.wiring import azure_credential

        assert self.dev is not None and self.ca is not None
        settings = self.app_settings()
        saved = {k: os.environ.get(k) for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                                                 "AZURE_AUTHORITY_HOST", "REQUESTS_CA_BUNDLE")}
        try:
            for k in saved:
                os.environ[k] = settings[k]
            client = SecretClient(self.key_vault_url, azure_credential(), verify_challenge_resource=False)
            if settings.get("OUTLOOK_CLIENT_CREDENTIAL", "client_secret") == "client_secret":
                # With a managed identity's client assertion there is no client secret to keep.
                client.set_secret(settings.get("OUTLOOK_CLIENT_SECRET_NAME", "outlook-client-secret"),
                                  self.dev.outlook_client_secret)
            client.set_secret(settings.get("AGENT_API_KEY_SECRET_NAME", "agent-api-key"), self.dev.agent_api_key)
            client.set_secret(settings.get("QUEUE_SIGNING_SECRET_NAME", "queue-signing-key"),
                              secrets.token_urlsafe(32))
            client.set_secret(settings.get("PLATFORM_EVENTS_SECRET_NAME", "platform-events-secret"),
                              self.dev.platform_events_secret)
            KeyClient(self.key_vault_url, azure_credential(), verify_challenge_resource=False).create_rsa_key(
                settings.get("TOKEN_CACHE_KEY_NAME", "token-cache-key"), size=2048, key_operations=["wrapKey",
                                                                                                   "unwrapKey"])
            client.set_secret(settings.get("AGENT_STATUS_SECRET_NAME", "agent-status-secret"),
                              self.dev.agent_status_secret)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _start_host(self, deadline: float) -> None:
        """Every Functions host instance on one storage account, then a supervisor that starts a
        fresh process on the same port whenever one ends while the stack runs (a crash)."""
        self._host_env = {**os.environ, **self.app_settings(), "PYTHONUNBUFFERED": "1"}
        self._stopping = threading.Event()
        self._supervise_lock = threading.Lock()
        for index in range(len(self.host_ports)):
            self._hosts.append(self._spawn_host(index))
        for index, port in enumerate(self.host_ports):
            self._wait_healthy(port, deadline, self._hosts[index], self._host_log(index))
        self._supervisor = threading.Thread(target=self._supervise, name="host-supervisor", daemon=True)
        self._supervisor.start()

    def _host_log(self, index: int) -> Path:
        return self.devstack_dir / ("functions.log" if index == 0 else f"functions-{index + 1}.log")

    def _spawn_host(self, index: int) -> subprocess.Popen[bytes]:
        log_path = self._host_log(index)
        out = None if not self.quiet else open(log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        proc = self._spawn(
            f"functions host {index + 1}",
            [sys.executable, "-m", "devstack.host", "--port", str(self.host_ports[index]),
             "--script-root", str(REPO)],
            cwd=str(REPO), env=self._host_env, stdout=out, stderr=subprocess.STDOUT if out else None,
        )
        if out is not None:
            out.close()
        return proc

    def _wait_healthy(self, port: int, deadline: float, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        _wait_port(port, deadline, "Functions host", proc, self._cancelled)
        while time.monotonic() < deadline:
            self._check_cancelled()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"Functions host not healthy in time; see {log_path}")

    def _supervise(self) -> None:
        # This thread spawns the replacements, so it lives as long as the stack (see _leash.py).
        while not self._stopping.wait(0.1):
            with self._supervise_lock:
                if self._stopping.is_set():
                    return
                for index, proc in enumerate(self._hosts):
                    code = proc.poll()
                    if code is None:
                        continue
                    print(f"devstack: Functions host {index + 1} (port {self.host_ports[index]}) ended with "
                          f"code {code}; starting a fresh one", file=sys.stderr, flush=True)
                    fresh = self._spawn_host(index)
                    self._procs[:] = [(n, p) for n, p in self._procs if p is not proc]
                    self._hosts[index] = fresh
                    self.restarts += 1

    def endpoints(self) -> dict[str, Any]:
        assert self.ca is not None
        p = self.ports
        token = platform_token(self.devstack_dir, "dev-user", "solo")
        return {
            "functions": self.functions_url,
            "simulator": self.sim_url,
            "agents": self.agents_url,
            "key_vault": self.key_vault_url,
            "azurite": {
                "blob": f"http://127.0.0.1:{p['AZURITE_BLOB_PORT']}/{AZURITE_ACCOUNT}",
                "queue": f"http://127.0.0.1:{p['AZURITE_QUEUE_PORT']}/{AZURITE_ACCOUNT}",
                "table": f"http://127.0.0.1:{p['AZURITE_TABLE_PORT']}/{AZURITE_ACCOUNT}",
            },
            "ca_bundle": str(self.ca.ca_pem.resolve()),
            "function_hosts": self.function_host_urls,
            "integrations_page": f"{self.functions_url}/api/integrations#token={token}",
        }

    def write_endpoints(self) -> Path:
        path = self.devstack_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints(), indent=2))
        return path

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to every child's process group, SIGKILL to whatever is left after `grace` seconds."""
        (self.devstack_dir / "endpoints.json").unlink(missing_ok=True)
        if self._stopping is not None:
            with self._supervise_lock:
                self._stopping.set()  # no restart of a host this stop ends
        procs = [proc for _name, proc in reversed(self._procs)]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            # Also for those that exited: whatever they left in their group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        self._hosts.clear()
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                server.stop()
        self._servers.clear()

    def kill_now(self) -> None:
        """A forced stop, safe inside a signal handler: no locks, no waiting, no buffered output.

        Children are SIGKILLed by process group; the in-process servers end with this process.
        """
        with contextlib.suppress(OSError):
            (self.devstack_dir / "endpoints.json").unlink()
        for _name, proc in list(self._procs):
            if proc.returncode is None:  # still unreaped, so its pid cannot have been reused
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def wipe_storage(self) -> None:
        shutil.rmtree(self.devstack_dir / "azurite", ignore_errors=True)
