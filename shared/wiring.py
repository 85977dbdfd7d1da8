"""Builds the adapters and use cases from settings, once per process. Nothing else constructs an
SDK client."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared.adapters.agent_status import StatusSignatures
from shared.adapters.agents import AgentApiClient
from shared.adapters.envelope import DataKeys, SealedSecrets
from shared.adapters.graph import GraphCalendar, longest_request
from shared.adapters.graph_subscriptions import GraphSubscriptions
from shared.adapters.health import HealthCheck
from shared.adapters.http import TimeoutSession, storage_transport
from shared.adapters.identity import ManagedIdentityAssertion, MsalIdentity
from shared.adapters.platform_events import PlatformEventsDeliverer, QueuedStatusEvents
from shared.adapters.queues import (
    DEPLOY_QUEUE,
    ERASURE_QUEUE,
    FANOUT_QUEUE,
    PROGRESS_QUEUE,
    RECALL_QUEUE,
    REFRESH_QUEUE,
    STATUS_EVENTS_QUEUE,
    SUBSCRIPTION_QUEUE,
    SYNC_QUEUE,
    ErasureQueue,
    QueueDepths,
    QueueSigner,
    RecallQueue,
    StorageFanOutQueue,
    StorageQueues,
    SubscriptionQueue,
)
from shared.adapters.tables import (
    TableAdminConsents,
    TableAgentTries,
    TableAppRefusals,
    TableCalendarSelectionStore,
    TableClaimStore,
    TableConnectionStore,
    TableDataKeys,
    TableEventIndex,
    TableFlowStore,
    TableJoinRulesStore,
    TableMeetingStore,
    TableSealedSecrets,
    TableSubscriptionStore,
    TableSyncStateStore,
    TableTeamClaimsStore,
    TableWorkspaceMeetingStore,
    ensure_tables,
)
from shared.adapters.telemetry import ObservedIdentity, Telemetry, configure_azure_monitor_export
from shared.adapters.user_rows import TableUserRows
from shared.adapters.vault import AppSecret, KeyVaultKeyWrapper, KeyVaultSecrets
from shared.clock import Clock, SystemClock
from shared.composition import Ports, Services, compose
from shared.config import Settings, load_settings
from shared.platform_auth import PlatformTokenVerifier
from shared.ports import StatusEvents
from shared.services.fanout import INDEX_AWAITING
from shared.services.sync import sync_lease


@dataclass(frozen=True)
class Container(Services):
    """The services (shared/composition.py) and the Azure-side pieces the triggers use directly."""

    settings: Settings
    clock: Clock
    verifier: PlatformTokenVerifier
    meetings: TableMeetingStore
    table_service: TableServiceClient
    jobs: StorageQueues
    # Status events to the platform: services publish (an outbox), deliver_status_event delivers.
    status_events: StatusEvents
    status_event_delivery: PlatformEventsDeliverer
    telemetry: Telemetry
    health: HealthCheck
    queue_depths: QueueDepths
    signer: QueueSigner  # verifies erasure, recall and status-event messages before they act
    # Per-connection secrets (token caches, clientStates), sealed in Table Storage; their data keys.
    sealed: SealedSecrets
    data_keys: DataKeys
    agent_tries: TableAgentTries
    agent_status_signatures: StatusSignatures


def azure_credential() -> TokenCredential:
    """Managed identity in Azure. The client-secret form exists for the local stack only, where a
    simulated Entra ID issues the tokens the local Key Vault endpoint accepts."""
    env = os.environ
    if env.get("AZURE_CLIENT_SECRET"):
        authority = env.get("AZURE_AUTHORITY_HOST") or "https://login.microsoftonline.com"
        return ClientSecretCredential(
            env["AZURE_TENANT_ID"], env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"],
            authority=authority, disable_instance_discovery=True,
        )
    return ManagedIdentityCredential(client_id=env.get("AZURE_CLIENT_ID") or None)


def outlook_client_credential(settings: Settings, vault: KeyVaultSecrets) -> dict[str, Any]:
    """MsalIdentity's credential keyword: the client secret from Key Vault, or (managed_identity) the
    assertion of the identity AZURE_CLIENT_ID names, always a ManagedIdentityCredential (in Azure, the
    App Service/Flex identity endpoint; locally, the simulator's, through IDENTITY_ENDPOINT)."""
    if settings.outlook_client_credential == "managed_identity":
        identity = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        return {"client_assertion": ManagedIdentityAssertion(identity)}
    return {"client_secret": AppSecret(vault, settings.outlook_client_secret_name)}


def build(settings: Settings | None = None, clock: Clock | None = None) -> Container:
    settings = settings or load_settings()
    clock = clock or SystemClock()
    credential: TokenCredential | None = None

    def cred() -> TokenCredential:
        nonlocal credential
        credential = credential or azure_credential()
        return credential

    storage = settings.storage
    # azure-core waits up to 300 s for a connection and 300 s for a read by default: bound both, so
    # a hung dependency fails a function run instead of holding it (and its leases) for minutes.
    timeouts: dict[str, Any] = {"connection_timeout": 10, "read_timeout": max(settings.http_timeout_seconds, 30)}
    transport = storage_transport(**timeouts)  # the Table and Queue clients share one pool
    if storage.connection_string:
        tables = TableServiceClient.from_connection_string(storage.connection_string, transport=transport)
        queues = QueueServiceClient.from_connection_string(storage.connection_string, transport=transport)
    else:
        tables = TableServiceClient(endpoint=str(storage.table_service_uri), credential=cred(), transport=transport)
        queues = QueueServiceClient(account_url=str(storage.queue_service_uri), credential=cred(), transport=transport)
    ensure_tables(tables)

    def queue(name: str) -> QueueClient:
        client = queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        return client

    jobs = StorageQueues(deploy=queue(DEPLOY_QUEUE), deploy_poison=queue(f"{DEPLOY_QUEUE}-poison"),
                         sync=queue(SYNC_QUEUE), refresh=queue(REFRESH_QUEUE), progress=queue(PROGRESS_QUEUE))
    # A local endpoint cannot be *.vault.azure.net, which the challenge check expects.
    vault_options: dict[str, Any] = {"verify_challenge_resource": not _local(settings.key_vault_uri), **timeouts}
    vault = KeyVaultSecrets(SecretClient(settings.key_vault_uri, cred(), **vault_options))
    # Erasure, recall and status-event messages are signed with a key only the app reads.
    signer = QueueSigner(AppSecret(vault, settings.queue_signing_secret_name))
    status_events = QueuedStatusEvents(queue=queue(STATUS_EVENTS_QUEUE), poison=queue(f"{STATUS_EVENTS_QUEUE}-poison"),
                                       clock=clock, signer=signer)
    # Token caches and clientStates: AES-GCM in Table Storage, data keys wrapped by a Key Vault key.
    data_keys = DataKeys(
        TableDataKeys(tables.get_table_client("datakeys")),
        KeyVaultKeyWrapper(KeyClient(settings.key_vault_uri, cred(), **vault_options),
                           settings.token_cache_key_name, cred(), **vault_options),
        clock.now)
    sealed = SealedSecrets(TableSealedSecrets(tables.get_table_client("sealedsecrets")), data_keys, clock.now,
                           legacy=vault if settings.migrate_vault_token_caches else None)
    # Sync fans out across many connections at once; the default pool of 10 would reopen connections.
    session = TimeoutSession(settings.http_timeout_seconds, pool_size=32)
    outlook_credential = outlook_client_credential(settings, vault)
    agent_key = AppSecret(vault, settings.agent_api_key_secret_name)
    telemetry = Telemetry()
    identity = ObservedIdentity(MsalIdentity(
        client_id=settings.outlook_client_id, authority=settings.outlook_authority,
        redirect_uri=settings.outlook_redirect_uri, session=session, now=clock.now, **outlook_credential,
    ), telemetry)
    graph = GraphCalendar(base_url=settings.graph_base_url, session=session, timeout=settings.http_timeout_seconds)
    agents = AgentApiClient(base_url=settings.agent_api_url, api_key=agent_key, session=session,
                            timeout=settings.http_timeout_seconds)
    meetings = TableMeetingStore(tables.get_table_client("meetings"), tables.get_table_client("meetingsdue"))
    agent_tries = TableAgentTries(tables.get_table_client("agenttries"))
    status_event_delivery = PlatformEventsDeliverer(
        url=settings.platform_events_url, secrets=vault, secret_name=settings.platform_events_secret_name,
        session=session, timeout=settings.http_timeout_seconds, outbox=status_events, clock=clock,
        retry_base=timedelta(seconds=settings.platform_events_retry_seconds),
        retry_for=timedelta(seconds=settings.platform_events_retry_for_seconds),
    )
    ports = Ports(
        connections=TableConnectionStore(tables.get_table_client("connections")),
        meetings=meetings,
        index=TableEventIndex(tables.get_table_client("eventindex")),
        sync_state=TableSyncStateStore(tables.get_table_client("syncstate")),
        flows=TableFlowStore(tables.get_table_client("authflows")),
        consents=TableAdminConsents(tables.get_table_client("authflows")),
        claims=TableClaimStore(tables.get_table_client("pendingclaims")),
        refusals=TableAppRefusals(tables.get_table_client("apprefusals")),
        join_rules=TableJoinRulesStore(tables.get_table_client("autojoin")),
        calendar_selections=TableCalendarSelectionStore(tables.get_table_client("calendars")),
        workspace_meetings=TableWorkspaceMeetingStore(tables.get_table_client("workspacemeetings")),
        team_claims=TableTeamClaimsStore(tables.get_table_client("autojoin")),
        agent_tries=agent_tries,
        subscriptions=TableSubscriptionStore(tables.get_table_client("subscriptions")),
        user_rows=TableUserRows(tables),
        secrets=sealed,
        # The admin-consent link's state is signed with a key derived from this secret.
        consent_secret=AppSecret(vault, settings.platform_events_secret_name),
        identity=identity,
        calendar=graph,
        graph_subscriptions=GraphSubscriptions(base_url=settings.graph_base_url, session=session,
                                               timeout=settings.http_timeout_seconds),
        agents=agents,
        status_events=status_events,
        jobs=jobs,
        recall_jobs=RecallQueue(queue(RECALL_QUEUE), signer),
        subscription_jobs=SubscriptionQueue(queue(SUBSCRIPTION_QUEUE)),
        erasure_jobs=ErasureQueue(queue(ERASURE_QUEUE), signer),
        fanout_pages=StorageFanOutQueue(queue(FANOUT_QUEUE)),
        notification_received=telemetry.notification_received,
        sync_lease=sync_lease(longest_request(settings.http_timeout_seconds)),
    )
    services = compose(ports, settings, clock)
    # The deployment watchdog's index (an adapter's own table) is rewritten by a walk of its own.
    services.fanout.add_walks({INDEX_AWAITING: lambda page, size: meetings.reindex_page(page.continuation, size)})
    return Container(
        **{f.name: getattr(services, f.name) for f in fields(Services)},
        settings=settings,
        clock=clock,
        verifier=PlatformTokenVerifier(public_key_pem=settings.platform_jwt_public_key,
                                       issuer=settings.platform_jwt_issuer, audience=settings.platform_jwt_audience),
        meetings=meetings,
        table_service=tables,
        jobs=jobs,
        status_events=status_events,
        status_event_delivery=status_event_delivery,
        telemetry=telemetry,
        health=HealthCheck({
            "storage": lambda: next(iter(tables.list_tables(results_per_page=1)), None),
            "queues": lambda: queues.get_queue_client(DEPLOY_QUEUE).get_queue_properties(),
            # With a client assertion there is no client secret: Key Vault is probed with a secret
            # every mode reads, and the managed identity's assertion token is probed on its own.
            "key_vault": lambda: vault.require(settings.outlook_client_secret_name
                                               if "client_secret" in outlook_credential
                                               else settings.queue_signing_secret_name),
            **({"managed_identity": outlook_credential["client_assertion"]}
               if "client_assertion" in outlook_credential else {}),
        }),
        queue_depths=QueueDepths(queues),
        signer=signer,
        sealed=sealed,
        data_keys=data_keys,
        agent_tries=agent_tries,
        agent_status_signatures=StatusSignatures(AppSecret(vault, settings.agent_status_secret_name)),
    )


def configure_telemetry() -> bool:
    """Export logs, traces and metrics to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING
    is set (Azure); ingestion is authenticated with the app's managed identity when
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING asks for Entra ID (`Authorization=AAD`), as infra sets it.
    Returns whether it did. Called once, when the function app is imported."""
    connection_string = os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        return False
    entra = "authorization=aad" in os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").lower()
    configure_azure_monitor_export(connection_string, credential=azure_credential() if entra else None)
    return True


def _local(url: str) -> bool:
    return url.startswith(("https://127.0.0.1", "https://localhost"))


_container: Container | None = None
_lock = threading.Lock()


def container() -> Container:
    """The process-wide container, built on first use (so importing the app never needs settings)."""
    global _container
    if _container is None:
        with _lock:
            if _container is None:
                _container = build()
    return _container

