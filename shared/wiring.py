"""Builds the adapters and use cases from settings, once per process. Nothing else constructs an
SDK client."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
from shared.adapters.http import TimeoutSession
from shared.adapters.identity import MsalIdentity
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
from shared.config import Settings, load_settings
from shared.platform_auth import PlatformTokenVerifier
from shared.ports import StatusEvents
from shared.services.accounts import AccountsService, TokenKeeper
from shared.services.agent_progress import AgentProgress
from shared.services.autojoin import AutojoinService
from shared.services.calendars import CalendarService, calendar_agent_name
from shared.services.connect import ConnectService
from shared.services.deploy import DeployService
from shared.services.fanout import PRUNE, RENEW, FanOut
from shared.services.health import ConnectionHealth
from shared.services.lifecycle import Erasure, Pruner, SecretReconciler
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.notifications import ClientStates, NotificationService, SyncRequests
from shared.services.recall import REMOVED, RecallOnRemoval, RecallService
from shared.services.subscriptions import SubscribeOnClaim, SubscriptionService
from shared.services.sync import SyncService, sync_lease
from shared.services.teams import TeamOnRemoval, TeamService
from shared.services.unlisted import UnlistedService


@dataclass(frozen=True)
class Container:
    settings: Settings
    clock: Clock
    verifier: PlatformTokenVerifier
    connect: ConnectService
    accounts: AccountsService
    tokens: TokenKeeper
    sync: SyncService
    deploy: DeployService
    erasure: Erasure
    reconciler: SecretReconciler
    pruner: Pruner
    meetings: TableMeetingStore
    table_service: TableServiceClient
    jobs: StorageQueues
    # Status events to the platform: services publish (an outbox), deliver_status_event delivers.
    status_events: StatusEvents
    status_event_delivery: PlatformEventsDeliverer
    telemetry: Telemetry
    health: HealthCheck
    fanout: FanOut
    queue_depths: QueueDepths
    meeting_lifecycle: MeetingLifecycle
    autojoin: AutojoinService
    # Graph change notifications (shared/services/{subscriptions,notifications}.py) and agent recalls.
    subscriptions: SubscriptionService
    notifications: NotificationService
    recalls: RecallService
    signer: QueueSigner  # verifies erasure, recall and status-event messages before they act
    calendars: CalendarService  # which of an account's calendars are read (shared/services/calendars.py)
    # Per-connection secrets (token caches, clientStates), sealed in Table Storage; their data keys.
    sealed: SealedSecrets
    data_keys: DataKeys
    # Agent progress from the agent platform (shared/services/agent_progress.py).
    agent_progress: AgentProgress
    agent_tries: TableAgentTries
    agent_status_signatures: StatusSignatures
    teams: TeamService  # one agent per meeting for a workspace (shared/services/teams.py)
    unlisted: UnlistedService  # "why isn't my meeting here?" (read from Graph on demand, nothing kept)


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
    if storage.connection_string:
        tables = TableServiceClient.from_connection_string(storage.connection_string, **timeouts)
        queues = QueueServiceClient.from_connection_string(storage.connection_string, **timeouts)
    else:
        tables = TableServiceClient(endpoint=str(storage.table_service_uri), credential=cred(), **timeouts)
        queues = QueueServiceClient(account_url=str(storage.queue_service_uri), credential=cred(), **timeouts)
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
    client_secret = AppSecret(vault, settings.outlook_client_secret_name)
    agent_key = AppSecret(vault, settings.agent_api_key_secret_name)
    telemetry = Telemetry()
    identity = ObservedIdentity(MsalIdentity(
        client_id=settings.outlook_client_id, client_secret=client_secret, authority=settings.outlook_authority,
        redirect_uri=settings.outlook_redirect_uri, session=session, now=clock.now,
    ), telemetry)
    graph = GraphCalendar(base_url=settings.graph_base_url, session=session, timeout=settings.http_timeout_seconds)
    agents = AgentApiClient(base_url=settings.agent_api_url, api_key=agent_key, session=session,
                            timeout=settings.http_timeout_seconds)
    connections = TableConnectionStore(tables.get_table_client("connections"))
    meetings = TableMeetingStore(tables.get_table_client("meetings"))
    index = TableEventIndex(tables.get_table_client("eventindex"))
    sync_state = TableSyncStateStore(tables.get_table_client("syncstate"))
    connection_health = ConnectionHealth(connections=connections, meetings=meetings, events=status_events,
                                         clock=clock)
    tokens = TokenKeeper(connections=connections, identity=identity, secrets_store=sealed, clock=clock,
                         health=connection_health, refusals=TableAppRefusals(tables.get_table_client("apprefusals")),
                         home_tenant_id=settings.outlook_app_tenant_id)
    join_rules = TableJoinRulesStore(tables.get_table_client("autojoin"))
    calendar_selections = TableCalendarSelectionStore(tables.get_table_client("calendars"))
    # A deployed agent is recalled when the decision withdraws it (the lifecycle's seam) or the calendar
    # lets go of its meeting (the sync writes meetings through RecallOnRemoval).
    # One agent per meeting for a workspace (API.md "Teams"): the workspace meeting rows and their hooks.
    workspace_meetings = TableWorkspaceMeetingStore(tables.get_table_client("workspacemeetings"))
    teams = TeamService(claims=TableTeamClaimsStore(tables.get_table_client("autojoin")),
                        rows=workspace_meetings, meetings=meetings, clock=clock)
    recalls = RecallService(meetings=meetings, agents=agents, jobs=RecallQueue(queue(RECALL_QUEUE), signer),
                            clock=clock,
                            retry_base_seconds=settings.deploy_retry_seconds, workspace_of=teams.shared_workspace,
                            on_recalled=teams.recalled)
    lifecycle = MeetingLifecycle(meetings=meetings, connections=connections, rules=join_rules, jobs=jobs, clock=clock,
                                 grace_seconds=settings.agent_join_grace_seconds, recall=recalls.request,
                                 lead_seconds=settings.agent_join_lead_seconds,
                                 readiness_seconds=settings.readiness_check_seconds, teams=teams)
    teams.on_handover = lifecycle.replan_one
    teams.recall = lambda m: recalls.request(m, REMOVED)
    # What the sync and a calendar choice remove recalls its agent and hands a shared meeting over.
    removing = TeamOnRemoval(RecallOnRemoval(meetings, recalls), teams)
    agent_tries = TableAgentTries(tables.get_table_client("agenttries"))
    # Graph change notifications: one subscription per Active connection; a notification queues a sync.
    subscription_jobs = SubscriptionQueue(queue(SUBSCRIPTION_QUEUE))
    subscription_store = TableSubscriptionStore(tables.get_table_client("subscriptions"))
    sync_requests = SyncRequests(sync_state=sync_state, jobs=jobs, clock=clock)
    subscriptions = SubscriptionService(
        connections=connections, subscriptions=subscription_store,
        graph=GraphSubscriptions(base_url=settings.graph_base_url, session=session,
                                 timeout=settings.http_timeout_seconds),
        tokens=tokens, secrets_store=sealed, jobs=subscription_jobs, clock=clock,
        notification_url=settings.notification_url, request_sync=sync_requests.request,
        rate_per_second=settings.token_refresh_rate_per_second,
    )
    notifications = NotificationService(subscriptions=subscription_store, client_states=ClientStates(sealed),
                                        syncs=sync_requests, jobs=subscription_jobs,
                                        on_accepted=telemetry.notification_received)
    status_event_delivery = PlatformEventsDeliverer(
        url=settings.platform_events_url, secrets=vault, secret_name=settings.platform_events_secret_name,
        session=session, timeout=settings.http_timeout_seconds, outbox=status_events, clock=clock,
        retry_base=timedelta(seconds=settings.platform_events_retry_seconds),
        retry_for=timedelta(seconds=settings.platform_events_retry_for_seconds),
    )
    accounts = AccountsService(before_release=subscriptions.release,
                               connections=connections, meetings=TeamOnRemoval(meetings, teams), index=index,
                               sync_state=sync_state, secrets_store=sealed, clock=clock, health=connection_health,
                               calendars=calendar_selections)
    claims = TableClaimStore(tables.get_table_client("pendingclaims"))
    user_rows = TableUserRows(tables)
    pruner = Pruner(meetings=meetings, connections=connections, accounts=accounts, rows=user_rows, index=index,
                    sync_state=sync_state, clock=clock,
                    meeting_retention=timedelta(days=settings.meeting_retention_days),
                    error_retention=timedelta(days=settings.error_connection_retention_days),
                    workspace_meetings=workspace_meetings)
    return Container(
        settings=settings,
        clock=clock,
        verifier=PlatformTokenVerifier(public_key_pem=settings.platform_jwt_public_key,
                                       issuer=settings.platform_jwt_issuer, audience=settings.platform_jwt_audience),
        connect=ConnectService(
            flows=TableFlowStore(tables.get_table_client("authflows")),
            claims=claims,
            connections=connections, identity=identity, calendar=graph, secrets_store=sealed, clock=clock,
            jobs=SubscribeOnClaim(jobs, subscription_jobs),  # a connect or reconnect also subscribes
            health=connection_health,
            consents=TableAdminConsents(tables.get_table_client("authflows")),
            # The admin-consent link's state is signed with a key derived from this secret.
            consent_secret=AppSecret(vault, settings.platform_events_secret_name),
        ),
        accounts=accounts,
        erasure=Erasure(rows=user_rows, secrets_store=sealed, jobs=ErasureQueue(queue(ERASURE_QUEUE), signer),
                        clock=clock,
                        before_erase=_first_hand_over(teams, subscriptions.forget_user)),
        reconciler=SecretReconciler(secrets_store=sealed, connections=connections, claims=claims, clock=clock,
                                    grace=timedelta(seconds=settings.orphan_cache_grace_seconds)),
        pruner=pruner,
        tokens=tokens,
        sync=SyncService(
            connections=connections, tokens=tokens, calendar=graph, meetings=removing,
            index=index,
            sync_state=sync_state, jobs=jobs, clock=clock, window_days=settings.sync_window_days,
            full_resync_seconds=settings.full_resync_seconds, lead_seconds=settings.agent_join_lead_seconds,
            lifecycle=lifecycle, health=connection_health, calendars=calendar_selections,
            lease=sync_lease(longest_request(settings.http_timeout_seconds)),
        ),
        deploy=DeployService(meetings=meetings, connections=connections, agents=agents, jobs=jobs, clock=clock,
                             grace_seconds=settings.agent_join_grace_seconds,
                             retry_base_seconds=settings.deploy_retry_seconds, lifecycle=lifecycle,
                             health=connection_health, recall=lambda m: recalls.request(m, REMOVED),
                             agent_name=lambda m: calendar_agent_name(calendar_selections, m),
                             tries=agent_tries, teams=teams),
        meetings=meetings,
        table_service=tables,
        jobs=jobs,
        status_events=status_events,
        status_event_delivery=status_event_delivery,
        telemetry=telemetry,
        fanout=FanOut(connections=connections, pages=StorageFanOutQueue(queue(FANOUT_QUEUE)), jobs=jobs, clock=clock,
                      refresh_ahead_seconds=settings.token_refresh_ahead_seconds,
                      refresh_max_age_seconds=settings.token_refresh_max_age_seconds,
                      refresh_rate_per_second=settings.token_refresh_rate_per_second,
                      subscriptions=subscription_jobs,
                      handlers={RENEW: lambda conns, page: subscriptions.renew_page(conns, page.enqueued_before),
                                PRUNE: lambda conns, page: pruner.prune_connections(conns)}),
        queue_depths=QueueDepths(queues),
        health=HealthCheck({
            "storage": lambda: next(iter(tables.list_tables(results_per_page=1)), None),
            "queues": lambda: queues.get_queue_client(DEPLOY_QUEUE).get_queue_properties(),
            "key_vault": lambda: vault.require(settings.outlook_client_secret_name),
        }),
        meeting_lifecycle=lifecycle,
        autojoin=AutojoinService(store=join_rules, meetings=meetings, lifecycle=lifecycle, clock=clock),
        subscriptions=subscriptions,
        notifications=notifications,
        recalls=recalls,
        teams=teams,
        calendars=CalendarService(connections=connections, tokens=tokens, calendar=graph,
                                  selections=calendar_selections, meetings=removing,
                                  jobs=jobs, clock=clock),
        sealed=sealed,
        data_keys=data_keys,
        signer=signer,
        agent_progress=AgentProgress(
            meetings=meetings, tries=agent_tries, jobs=jobs, events=status_events, decide=lifecycle.decide,
            connections=connections, tokens=tokens, calendar=graph, clock=clock,
            nudge_seconds=settings.lobby_nudge_seconds, retry_delay_seconds=settings.agent_retry_delay_seconds,
            max_attempts=settings.agent_max_attempts,
            request_sync=sync_requests.request,
        ),
        agent_tries=agent_tries,
        agent_status_signatures=StatusSignatures(AppSecret(vault, settings.agent_status_secret_name)),
        unlisted=UnlistedService(connections=connections, tokens=tokens, calendar=graph, clock=clock,
                                 selections=calendar_selections),
    )


def _first_hand_over(teams: TeamService, then: Callable[[str, list[str]], None]) -> Callable[[str, list[str]], None]:
    """Erasure lets go of what lives outside: shared workspace agents handed over first, then the
    Graph subscriptions (while the tokens still work)."""

    def before_erase(user_id: str, connection_ids: list[str]) -> None:
        teams.forget_user(user_id)
        then(user_id, connection_ids)

    return before_erase


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

