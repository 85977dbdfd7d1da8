"""The composition root of the domain: every service built, once, from the ports it talks through.

Production (`shared/wiring.py`) builds the ports from Azure's SDKs and the outside services' adapters
and hands them here; the unit tests hand in-memory fakes of the same ports (tests/unit/conftest.py).
Both therefore run the same graph: the same seams (a removal recalls the agent and hands a shared
workspace meeting over, a claim subscribes, an erasure hands teammates' agents over first), the same
settings. Nothing here knows of Azure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from shared.clock import Clock
from shared.config import Settings
from shared.ports import (
    AdminConsents,
    AgentApi,
    AgentTries,
    AppRefusals,
    CalendarReader,
    CalendarSelectionStore,
    CalendarSubscriptions,
    ClaimStore,
    ConnectionPages,
    ConnectionStore,
    ErasureJobs,
    EventIndex,
    FanOutQueue,
    FlowStore,
    IdentityProvider,
    JobQueue,
    JoinRulesStore,
    Meeting,
    MeetingStore,
    OwnedSecrets,
    RecallJobs,
    RotatingSecret,
    SecretStore,
    StatusEvents,
    SubscriptionJobs,
    SubscriptionStore,
    SyncStateStore,
    TeamClaimsStore,
    UserRows,
    WorkspaceMeetingStore,
)
from shared.services.accounts import AccountsService, TokenKeeper
from shared.services.agent_progress import AgentProgress
from shared.services.autojoin import AutojoinService
from shared.services.calendars import CalendarService, calendar_agent_name
from shared.services.connect import ConnectService
from shared.services.deploy import DeployService
from shared.services.fanout import PRUNE, PURGE_CLAIMS, PURGE_FLOWS, RENEW, SECONDARY, SWEEP, FanOut
from shared.services.health import ConnectionHealth
from shared.services.lifecycle import Erasure, Pruner, SecretReconciler
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.meetings import OnRemoval
from shared.services.notifications import ClientStates, NotificationService, SyncRequests
from shared.services.recall import REMOVED, RecallService
from shared.services.subscriptions import SubscribeOnClaim, SubscriptionService
from shared.services.sync import SYNC_LEASE, SyncService
from shared.services.teams import TeamService, leave_if_on
from shared.services.unlisted import UnlistedService


class ConnectionRows(ConnectionStore, ConnectionPages, Protocol):
    """The connections table: point reads and writes, and the paged walk the timers fan out over."""


class SealedSecretStore(SecretStore, OwnedSecrets, Protocol):
    """Per-connection secrets: read and written by name, walked a page at a time with their owners."""


@dataclass(frozen=True)
class Ports:
    """Every outside service and table the domain reads or writes, as its port (shared/ports.py)."""

    # Table Storage
    connections: ConnectionRows
    meetings: MeetingStore
    index: EventIndex
    sync_state: SyncStateStore
    flows: FlowStore
    consents: AdminConsents
    claims: ClaimStore
    refusals: AppRefusals
    join_rules: JoinRulesStore
    calendar_selections: CalendarSelectionStore
    workspace_meetings: WorkspaceMeetingStore
    team_claims: TeamClaimsStore
    agent_tries: AgentTries
    subscriptions: SubscriptionStore
    user_rows: UserRows
    # Per-connection secrets (sealed token caches, clientStates) and the consent-link signing secret.
    secrets: SealedSecretStore
    consent_secret: RotatingSecret
    # Microsoft identity platform, Microsoft Graph, the agent platform.
    identity: IdentityProvider
    calendar: CalendarReader
    graph_subscriptions: CalendarSubscriptions
    agents: AgentApi
    status_events: StatusEvents
    # Storage queues.
    jobs: JobQueue
    recall_jobs: RecallJobs
    subscription_jobs: SubscriptionJobs
    erasure_jobs: ErasureJobs
    fanout_pages: FanOutQueue
    # Told of every genuine change notification accepted (telemetry); None: nobody.
    notification_received: Callable[[str], None] | None = None
    # How long a sync may hold its connection's lease (shared/services/sync.py); None: the default.
    sync_lease: timedelta | None = None


@dataclass(frozen=True)
class Services:
    """The use cases the triggers call, and the seams they share."""

    connect: ConnectService
    accounts: AccountsService
    tokens: TokenKeeper
    connection_health: ConnectionHealth
    sync: SyncService
    sync_requests: SyncRequests
    deploy: DeployService
    meeting_lifecycle: MeetingLifecycle
    autojoin: AutojoinService
    erasure: Erasure
    reconciler: SecretReconciler
    pruner: Pruner
    fanout: FanOut
    subscriptions: SubscriptionService
    notifications: NotificationService
    recalls: RecallService
    teams: TeamService
    calendars: CalendarService
    agent_progress: AgentProgress
    unlisted: UnlistedService


def compose(ports: Ports, settings: Settings, clock: Clock) -> Services:
    """Build every service from `ports` and `settings`. Called once per process (and once per test)."""
    p = ports
    health = ConnectionHealth(connections=p.connections, meetings=p.meetings, events=p.status_events, clock=clock)
    tokens = TokenKeeper(connections=p.connections, identity=p.identity, secrets_store=p.secrets, clock=clock,
                         health=health, refusals=p.refusals, home_tenant_id=settings.outlook_app_tenant_id)
    # One agent per meeting for a workspace (API.md "Teams"): the workspace meeting rows and their hooks.
    teams = TeamService(claims=p.team_claims, rows=p.workspace_meetings, meetings=p.meetings, clock=clock)
    recalls = RecallService(meetings=p.meetings, agents=p.agents, jobs=p.recall_jobs, clock=clock,
                            retry_base_seconds=settings.deploy_retry_seconds, workspace_of=teams.shared_workspace,
                            on_recalled=teams.recalled)
    # A deployed agent is recalled when the decision withdraws it (the lifecycle's seam) or the calendar
    # lets go of its meeting (the sync and a calendar choice write meetings through `removing`).
    lifecycle = MeetingLifecycle(meetings=p.meetings, connections=p.connections, rules=p.join_rules, jobs=p.jobs,
                                 clock=clock, grace_seconds=settings.agent_join_grace_seconds, recall=recalls.request,
                                 lead_seconds=settings.agent_join_lead_seconds,
                                 readiness_seconds=settings.readiness_check_seconds, teams=teams)
    teams.on_handover = lifecycle.replan_one
    teams.recall = lambda m: recalls.request(m, REMOVED)
    hand_over = leave_if_on(teams)

    def hand_over_then_recall(meeting: Meeting) -> None:
        hand_over(meeting)
        recalls.request(meeting, REMOVED)

    removing = OnRemoval(p.meetings, hand_over_then_recall)
    # Graph change notifications: one subscription per Active connection; a notification queues a sync.
    sync_requests = SyncRequests(sync_state=p.sync_state, jobs=p.jobs, clock=clock)
    subscriptions = SubscriptionService(
        connections=p.connections, subscriptions=p.subscriptions, graph=p.graph_subscriptions, tokens=tokens,
        secrets_store=p.secrets, jobs=p.subscription_jobs, clock=clock, notification_url=settings.notification_url,
        request_sync=sync_requests.request, rate_per_second=settings.token_refresh_rate_per_second,
    )
    notifications = NotificationService(subscriptions=p.subscriptions, client_states=ClientStates(p.secrets),
                                        syncs=sync_requests, jobs=p.subscription_jobs,
                                        on_accepted=p.notification_received)
    accounts = AccountsService(before_release=subscriptions.release, connections=p.connections,
                               meetings=OnRemoval(p.meetings, hand_over), index=p.index, sync_state=p.sync_state,
                               secrets_store=p.secrets, clock=clock, health=health, calendars=p.calendar_selections)
    pruner = Pruner(meetings=p.meetings, connections=p.connections, accounts=accounts, rows=p.user_rows,
                    index=p.index, sync_state=p.sync_state, clock=clock,
                    meeting_retention=timedelta(days=settings.meeting_retention_days),
                    error_retention=timedelta(days=settings.error_connection_retention_days),
                    workspace_meetings=p.workspace_meetings, tries=p.agent_tries)
    reconciler = SecretReconciler(secrets_store=p.secrets, connections=p.connections, claims=p.claims, clock=clock,
                                  grace=timedelta(seconds=settings.orphan_cache_grace_seconds),
                                  connection_pages=p.connections, subscriptions=p.subscriptions)

    def before_erase(user_id: str, connection_ids: list[str]) -> None:
        # Erasure lets go of what lives outside: shared workspace agents handed over first, then the
        # Graph subscriptions (while the tokens still work).
        teams.forget_user(user_id)
        subscriptions.forget_user(user_id, connection_ids)

    connect = ConnectService(
        flows=p.flows, claims=p.claims, connections=p.connections, identity=p.identity, calendar=p.calendar,
        secrets_store=p.secrets, clock=clock,
        jobs=SubscribeOnClaim(p.jobs, p.subscription_jobs),  # a connect or reconnect also subscribes
        health=health, consents=p.consents, consent_secret=p.consent_secret,
    )

    calendars = CalendarService(connections=p.connections, tokens=tokens, calendar=p.calendar,
                                selections=p.calendar_selections, meetings=removing, jobs=p.jobs, clock=clock,
                                sync_state=p.sync_state)
    return Services(
        connect=connect,
        accounts=accounts,
        tokens=tokens,
        connection_health=health,
        sync=SyncService(
            connections=p.connections, tokens=tokens, calendar=p.calendar, meetings=removing, index=p.index,
            sync_state=p.sync_state, jobs=p.jobs, clock=clock, window_days=settings.sync_window_days,
            full_resync_seconds=settings.full_resync_seconds, lead_seconds=settings.agent_join_lead_seconds,
            lifecycle=lifecycle, health=health, calendars=p.calendar_selections,
            lease=p.sync_lease or SYNC_LEASE,
        ),
        sync_requests=sync_requests,
        deploy=DeployService(
            meetings=p.meetings, connections=p.connections, agents=p.agents, jobs=p.jobs, clock=clock,
            grace_seconds=settings.agent_join_grace_seconds, retry_base_seconds=settings.deploy_retry_seconds,
            lifecycle=lifecycle, health=health, recall=lambda m: recalls.request(m, REMOVED),
            agent_name=lambda m: calendar_agent_name(p.calendar_selections, m), tries=p.agent_tries, teams=teams,
        ),
        meeting_lifecycle=lifecycle,
        autojoin=AutojoinService(store=p.join_rules, meetings=p.meetings, lifecycle=lifecycle, clock=clock),
        erasure=Erasure(rows=p.user_rows, secrets_store=p.secrets, jobs=p.erasure_jobs, clock=clock,
                        before_erase=before_erase),
        reconciler=reconciler,
        pruner=pruner,
        fanout=FanOut(connections=p.connections, pages=p.fanout_pages, jobs=p.jobs, clock=clock,
                      refresh_ahead_seconds=settings.token_refresh_ahead_seconds,
                      refresh_max_age_seconds=settings.token_refresh_max_age_seconds,
                      refresh_rate_per_second=settings.token_refresh_rate_per_second,
                      subscriptions=p.subscription_jobs,
                      handlers={RENEW: lambda conns, page: subscriptions.renew_page(conns, page.enqueued_before),
                                PRUNE: lambda conns, page: pruner.prune_connections(conns),
                                SECONDARY: lambda conns, page: calendars.read_secondary_page(conns)},
                      walks={**pruner.walks(), **reconciler.walks(), SWEEP: subscriptions.sweep_page,
                             PURGE_FLOWS: connect.purge_flows_page, PURGE_CLAIMS: connect.purge_claims_page},
                      then=SecretReconciler.THEN),
        subscriptions=subscriptions,
        notifications=notifications,
        recalls=recalls,
        teams=teams,
        calendars=calendars,
        agent_progress=AgentProgress(
            meetings=p.meetings, tries=p.agent_tries, jobs=p.jobs, health=health,
            decide=lifecycle.decide, connections=p.connections, tokens=tokens, calendar=p.calendar, clock=clock,
            nudge_seconds=settings.lobby_nudge_seconds, retry_delay_seconds=settings.agent_retry_delay_seconds,
            max_attempts=settings.agent_max_attempts, request_sync=sync_requests.request,
        ),
        unlisted=UnlistedService(connections=p.connections, tokens=tokens, calendar=p.calendar, clock=clock,
                                 selections=p.calendar_selections),
    )
