"""Typed settings, read once from the environment (app settings in Azure, `local.settings.json`
or `make dev` locally) and validated with errors that name the missing or bad setting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class StorageSettings:
    """Either a connection string (local, Azurite) or identity-based service URIs (Azure)."""

    connection_string: str | None
    table_service_uri: str | None
    queue_service_uri: str | None


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    key_vault_uri: str
    # The Outlook Calendar app registration. Deliberately named apart from any Teams integration's.
    outlook_client_id: str
    outlook_client_secret_name: str
    # How the app proves itself to Entra ID: "client_secret" (read from Key Vault by the name above)
    # or "managed_identity" (a client assertion from the Function App's managed identity, trusted by a
    # federated identity credential on the app registration; no secret anywhere).
    outlook_client_credential: str
    outlook_authority: str
    outlook_redirect_uri: str
    # The directory (tenant) id the app registration lives in: AADSTS7000112 / 700016 there are the
    # service's own failure, elsewhere (in one tenant) that tenant admin's. "" when not configured.
    outlook_app_tenant_id: str
    graph_base_url: str
    integrations_page_url: str
    agent_api_url: str
    agent_api_key_secret_name: str
    queue_signing_secret_name: str  # the HMAC key of destructive queue messages (QueueSigner)
    platform_jwt_issuer: str
    platform_jwt_audience: str
    platform_jwt_public_key: str
    agent_join_lead_seconds: int
    agent_join_grace_seconds: int
    token_refresh_max_age_seconds: int
    token_refresh_ahead_seconds: int
    token_refresh_rate_per_second: int
    token_warning_after_seconds: int
    sync_warning_after_seconds: int
    sync_window_days: int
    full_resync_seconds: int
    deploy_retry_seconds: int
    http_timeout_seconds: float
    platform_events_url: str
    platform_events_secret_name: str
    platform_events_retry_seconds: int
    platform_events_retry_for_seconds: int
    orphan_cache_grace_seconds: int
    meeting_retention_days: int
    error_connection_retention_days: int
    platform_web_origins: tuple[str, ...]
    page_token_from_url: bool
    token_cache_key_name: str  # the Key Vault key that wraps the data keys of the sealed token caches
    migrate_vault_token_caches: bool  # read (then move) per-connection secrets still in Key Vault
    upgrade_url: str  # where "Upgrade your plan" leads (the web app's billing page); "" = no link
    help_article_url: str  # the Outlook Calendar help article the page links to; "" = no link
    notification_url: str  # where Graph sends change notifications (the lifecycle URL is it + "/lifecycle")
    # Agent progress (../shared/API.md "Agent progress"): the Key Vault name of the Standard Webhooks
    # secret the agent platform signs statuses with, and the lobby / retry / readiness timings.
    agent_status_secret_name: str = "agent-status-secret"
    lobby_nudge_seconds: int = 60
    agent_retry_delay_seconds: int = 120
    agent_max_attempts: int = 3
    readiness_check_seconds: int = 600


# Every setting the code reads, with its default (None = required). Infra and local settings are
# checked against this table by tests, so a new setting cannot be forgotten in one of them.
SETTINGS: dict[str, str | None] = {
    "AzureWebJobsStorage": "",  # connection string; empty in Azure where the __*ServiceUri forms are used
    "AzureWebJobsStorage__tableServiceUri": "",
    "AzureWebJobsStorage__queueServiceUri": "",
    "KEY_VAULT_URI": None,
    "OUTLOOK_CLIENT_ID": None,
    "OUTLOOK_CLIENT_SECRET_NAME": "outlook-client-secret",
    # "client_secret" (the local stack's default) or "managed_identity": MSAL authenticates with the
    # managed identity's token for api://AzureADTokenExchange, which a federated identity credential on
    # the app registration trusts (no secret; infra deploys this by default). The identity is the one
    # AZURE_CLIENT_ID names. docs/deploying.md, "No client secret".
    "OUTLOOK_CLIENT_CREDENTIAL": "client_secret",
    "OUTLOOK_AUTHORITY": "https://login.microsoftonline.com/common",
    "OUTLOOK_APP_TENANT_ID": "",
    "OUTLOOK_REDIRECT_URI": None,
    "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0",
    "INTEGRATIONS_PAGE_URL": None,
    "AGENT_API_URL": None,
    "AGENT_API_KEY_SECRET_NAME": "agent-api-key",
    # Key Vault secret: the HMAC key signing erasure, recall and status-event queue messages.
    "QUEUE_SIGNING_SECRET_NAME": "queue-signing-key",
    "PLATFORM_JWT_ISSUER": None,
    "PLATFORM_JWT_AUDIENCE": "coagentor-outlook-calendar",
    "PLATFORM_JWT_PUBLIC_KEY": None,
    "AGENT_JOIN_LEAD_SECONDS": "120",
    "AGENT_JOIN_GRACE_SECONDS": "300",
    "TOKEN_REFRESH_MAX_AGE_SECONDS": "43200",
    # 0: the refresh timer never renews an access token ahead of need; syncs renew it when it lapsed.
    "TOKEN_REFRESH_AHEAD_SECONDS": "0",
    "TOKEN_REFRESH_RATE_PER_SECOND": "20",
    "TOKEN_WARNING_AFTER_SECONDS": "21600",
    "SYNC_WARNING_AFTER_SECONDS": "1800",
    "SYNC_WINDOW_DAYS": "14",
    "FULL_RESYNC_SECONDS": "86400",
    "DEPLOY_RETRY_SECONDS": "15",
    "HTTP_TIMEOUT_SECONDS": "20",
    "PLATFORM_EVENTS_URL": None,
    "PLATFORM_EVENTS_SECRET_NAME": "platform-events-secret",
    "PLATFORM_EVENTS_RETRY_SECONDS": "30",
    "PLATFORM_EVENTS_RETRY_FOR_SECONDS": "86400",
    "ORPHAN_CACHE_GRACE_SECONDS": "3600",
    "MEETING_RETENTION_DAYS": "30",
    "ERROR_CONNECTION_RETENTION_DAYS": "90",
    "PLATFORM_WEB_ORIGINS": "",
    "PAGE_TOKEN_FROM_URL": "false",
    # Links on the Integrations page (https): the web app's plan/billing page and the help article.
    # Empty = the page says where to go in words instead of linking (never a link that 404s).
    "UPGRADE_URL": "",
    "HELP_ARTICLE_URL": "",
    # The app's public HTTPS route for Graph change notifications; empty = the origin of
    # OUTLOOK_REDIRECT_URI + /api/outlook/notifications (the same app).
    "NOTIFICATION_URL": "",
    # Per-connection secrets are sealed in Table Storage under data keys wrapped by this Key Vault key
    # (shared/adapters/envelope.py). While MIGRATE_VAULT_TOKEN_CACHES is true, a token cache or clientState
    # still in Key Vault (the old layout) is read from there, sealed and deleted from the vault; set
    # it false once `reconcile_secrets` logs 0 legacy secrets moved (docs/security.md).
    "TOKEN_CACHE_KEY_NAME": "token-cache-key",
    "MIGRATE_VAULT_TOKEN_CACHES": "true",
    # Agent progress: statuses from the agent platform, lobby nudges, retries, the readiness check.
    "AGENT_STATUS_SECRET_NAME": "agent-status-secret",
    "LOBBY_NUDGE_SECONDS": "60",
    "AGENT_RETRY_DELAY_SECONDS": "120",
    "AGENT_MAX_ATTEMPTS": "3",
    "READINESS_CHECK_SECONDS": "600",
    # Read by the Functions host through the trigger decorators (%NAME%), not by Settings.
    # Notification-first (docs/scale.md, "Defaults and why"): change notifications bring each change;
    # the scan is the safety net every 6 hours; the refresh walk retries failing connections hourly.
    "REFRESH_SCHEDULE": "0 7 * * * *",
    "SCAN_SCHEDULE": "0 13 */6 * * *",
    "RECONCILE_SCHEDULE": "0 17 3 * * *",
    "PRUNE_SCHEDULE": "0 47 3 * * *",
    "WATCHDOG_SCHEDULE": "*/15 * * * * *",
    # Calendars beyond the default one get no change notifications (FACTS.md): connections that read
    # any are synced this often (docs/calendars-and-teams.md; cost in docs/scale.md).
    "SECONDARY_CALENDARS_SCHEDULE": "0 4,34 * * * *",
    "RENEW_SCHEDULE": "0 23 * * * *",
}


# Read by shared.wiring to build the Azure credential. In Azure the managed identity is used
# (AZURE_CLIENT_ID names a user-assigned one; with OUTLOOK_CLIENT_CREDENTIAL=managed_identity it is
# also the identity whose token MSAL asserts); the client-secret trio exists only for the local stack,
# where a simulated Entra ID stands in for managed identity. Never set the secret in Azure.
CREDENTIAL_SETTINGS: dict[str, str] = {
    "AZURE_CLIENT_ID": "",
    "AZURE_TENANT_ID": "",
    "AZURE_CLIENT_SECRET": "",
    "AZURE_AUTHORITY_HOST": "",
}
LOCAL_ONLY_SETTINGS = frozenset({"AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"})


def _get(env: Mapping[str, str], name: str) -> str:
    default = SETTINGS[name]
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"Setting {name} is required but not set")
    return default


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    raw = _get(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"Setting {name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"Setting {name} must be at least {minimum}, got {value}")
    return value


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _url(env: Mapping[str, str], name: str, *, https: bool = False) -> str:
    """An https URL. `http://` only for a loopback host (the local stack) and only where `https` is
    not demanded outright: tokens, codes and keys travel to or from these URLs."""
    return _checked_url(name, _get(env, name), https=https).rstrip("/")


def _checked_url(name: str, value: str, *, https: bool) -> str:
    parts = urlsplit(value)
    try:
        host = parts.hostname or ""
    except ValueError:
        host = ""
    local_http = not https and parts.scheme == "http" and host in _LOOPBACK
    if not host or not (parts.scheme == "https" or local_http):
        want = "an https URL" if https else "an https URL (http only for 127.0.0.1 or localhost)"
        raise SettingsError(f"Setting {name} must be {want}, got {value!r}")
    return value


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated web origins (scheme://host[:port], no path)."""
    origins = []
    for raw in _get(env, name).split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(_checked_url(name, origin, https=False))
        if parts.path or parts.query or parts.fragment or parts.username:
            raise SettingsError(f"Setting {name} must list origins (scheme://host[:port]), got {raw.strip()!r}")
        origins.append(origin)
    return tuple(origins)


def _page_link(env: Mapping[str, str], name: str) -> str:
    """An https URL the page links to, or "" (no link). http only for a loopback host."""
    value = _get(env, name)
    if not value:
        return ""
    parts = urlsplit(_checked_url(name, value, https=False))
    if parts.username or parts.password:
        raise SettingsError(f"Setting {name} must not carry credentials")
    return value


CLIENT_CREDENTIALS = ("client_secret", "managed_identity")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _get(env, name).lower()
    if value not in choices:
        raise SettingsError(f"Setting {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name).lower()
    if raw not in ("true", "false"):
        raise SettingsError(f"Setting {name} must be true or false, got {raw!r}")
    return raw == "true"


NOTIFICATION_ROUTE = "/api/outlook/notifications"


def _notification_url(env: Mapping[str, str]) -> str:
    """NOTIFICATION_URL, or the same app's route next to the OAuth callback. Graph requires https
    (http only for a loopback host: the local stack's simulator)."""
    if _get(env, "NOTIFICATION_URL"):
        url = _url(env, "NOTIFICATION_URL")
    else:
        redirect = urlsplit(_url(env, "OUTLOOK_REDIRECT_URI"))
        url = f"{redirect.scheme}://{redirect.netloc}{NOTIFICATION_ROUTE}"
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise SettingsError(f"Setting NOTIFICATION_URL must have no query or fragment, got {url!r}")
    return url


def schedule(name: str) -> str:
    """The `%NAME%` form the trigger decorators take, so schedules come from app settings."""
    if name not in SETTINGS:
        raise KeyError(name)
    return f"%{name}%"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    storage = StorageSettings(
        connection_string=env.get("AzureWebJobsStorage", "").strip() or None,
        table_service_uri=env.get("AzureWebJobsStorage__tableServiceUri", "").strip() or None,
        queue_service_uri=env.get("AzureWebJobsStorage__queueServiceUri", "").strip() or None,
    )
    if storage.connection_string is None and not (storage.table_service_uri and storage.queue_service_uri):
        raise SettingsError(
            "Setting AzureWebJobsStorage (connection string) or both "
            "AzureWebJobsStorage__tableServiceUri and AzureWebJobsStorage__queueServiceUri are required"
        )
    public_key = _get(env, "PLATFORM_JWT_PUBLIC_KEY").replace("\\n", "\n")
    if "BEGIN PUBLIC KEY" not in public_key and not public_key.lstrip().startswith("{"):
        raise SettingsError("Setting PLATFORM_JWT_PUBLIC_KEY must be a PEM public key or a JWKS ({\"keys\": [...]})")
    return Settings(
        storage=storage,
        key_vault_uri=_url(env, "KEY_VAULT_URI", https=True),
        outlook_client_id=_get(env, "OUTLOOK_CLIENT_ID"),
        outlook_client_secret_name=_get(env, "OUTLOOK_CLIENT_SECRET_NAME"),
        outlook_client_credential=_choice(env, "OUTLOOK_CLIENT_CREDENTIAL", CLIENT_CREDENTIALS),
        outlook_authority=_url(env, "OUTLOOK_AUTHORITY", https=True),
        outlook_app_tenant_id=_get(env, "OUTLOOK_APP_TENANT_ID").lower(),
        outlook_redirect_uri=_url(env, "OUTLOOK_REDIRECT_URI"),
        graph_base_url=_url(env, "GRAPH_BASE_URL", https=True),
        integrations_page_url=_url(env, "INTEGRATIONS_PAGE_URL"),
        agent_api_url=_url(env, "AGENT_API_URL"),
        agent_api_key_secret_name=_get(env, "AGENT_API_KEY_SECRET_NAME"),
        queue_signing_secret_name=_get(env, "QUEUE_SIGNING_SECRET_NAME"),
        platform_jwt_issuer=_get(env, "PLATFORM_JWT_ISSUER"),
        platform_jwt_audience=_get(env, "PLATFORM_JWT_AUDIENCE"),
        platform_jwt_public_key=public_key,
        agent_join_lead_seconds=_int(env, "AGENT_JOIN_LEAD_SECONDS"),
        agent_join_grace_seconds=_int(env, "AGENT_JOIN_GRACE_SECONDS"),
        token_refresh_max_age_seconds=_int(env, "TOKEN_REFRESH_MAX_AGE_SECONDS"),
        token_refresh_ahead_seconds=_int(env, "TOKEN_REFRESH_AHEAD_SECONDS"),
        token_refresh_rate_per_second=_int(env, "TOKEN_REFRESH_RATE_PER_SECOND", minimum=1),
        token_warning_after_seconds=_int(env, "TOKEN_WARNING_AFTER_SECONDS"),
        sync_warning_after_seconds=_int(env, "SYNC_WARNING_AFTER_SECONDS"),
        sync_window_days=_int(env, "SYNC_WINDOW_DAYS", minimum=1),
        full_resync_seconds=_int(env, "FULL_RESYNC_SECONDS", minimum=60),
        deploy_retry_seconds=_int(env, "DEPLOY_RETRY_SECONDS", minimum=1),
        http_timeout_seconds=float(_int(env, "HTTP_TIMEOUT_SECONDS", minimum=1)),
        platform_events_url=_url(env, "PLATFORM_EVENTS_URL"),
        platform_events_secret_name=_get(env, "PLATFORM_EVENTS_SECRET_NAME"),
        platform_events_retry_seconds=_int(env, "PLATFORM_EVENTS_RETRY_SECONDS", minimum=1),
        platform_events_retry_for_seconds=_int(env, "PLATFORM_EVENTS_RETRY_FOR_SECONDS", minimum=60),
        # Longer than a sign-in can take between writing a token cache and the row that names it.
        orphan_cache_grace_seconds=_int(env, "ORPHAN_CACHE_GRACE_SECONDS", minimum=900),
        meeting_retention_days=_int(env, "MEETING_RETENTION_DAYS", minimum=1),
        error_connection_retention_days=_int(env, "ERROR_CONNECTION_RETENTION_DAYS", minimum=1),
        platform_web_origins=_origins(env, "PLATFORM_WEB_ORIGINS"),
        page_token_from_url=_bool(env, "PAGE_TOKEN_FROM_URL"),
        token_cache_key_name=_get(env, "TOKEN_CACHE_KEY_NAME"),
        migrate_vault_token_caches=_bool(env, "MIGRATE_VAULT_TOKEN_CACHES"),
        upgrade_url=_page_link(env, "UPGRADE_URL"),
        help_article_url=_page_link(env, "HELP_ARTICLE_URL"),
        notification_url=_notification_url(env),
        agent_status_secret_name=_get(env, "AGENT_STATUS_SECRET_NAME"),
        lobby_nudge_seconds=_int(env, "LOBBY_NUDGE_SECONDS"),
        agent_retry_delay_seconds=_int(env, "AGENT_RETRY_DELAY_SECONDS"),
        agent_max_attempts=_int(env, "AGENT_MAX_ATTEMPTS", minimum=1),
        readiness_check_seconds=_int(env, "READINESS_CHECK_SECONDS"),
    )
