from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.composition import Ports, Services, compose
from shared.config import Settings, load_settings
from shared.connections import Plan
from shared.platform_auth import User
from shared.services.accounts import AccountsService, TokenKeeper
from shared.services.autojoin import AutojoinService
from shared.services.connect import ConnectService
from shared.services.deploy import DeployService
from shared.services.health import ConnectionHealth
from shared.services.meeting_lifecycle import MeetingLifecycle
from shared.services.sync import SyncService
from tests import fakes
from tests.fakes_notifications import GraphSubscriptionsFake, RecallJobsFake, SubscriptionJobsFake, SubscriptionsTable

# The settings the unit world runs with: the shipped defaults, and the few values no default has.
TEST_ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "KEY_VAULT_URI": "https://127.0.0.1:8443",
    "OUTLOOK_CLIENT_ID": "client-id",
    "OUTLOOK_REDIRECT_URI": "https://app.example/api/outlook/callback",
    "INTEGRATIONS_PAGE_URL": "https://app.example/integrations",
    "AGENT_API_URL": "https://agents.example",
    "PLATFORM_JWT_ISSUER": "https://platform.example",
    "PLATFORM_JWT_PUBLIC_KEY": "{\"keys\": []}",
    "PLATFORM_EVENTS_URL": "https://platform.example/events",
    "OUTLOOK_APP_TENANT_ID": fakes.APP_HOME_TENANT,
}
NOTIFICATION_URL = "https://app.example/api/outlook/notifications"


def unit_settings(**overrides: Any) -> Settings:
    """`load_settings` over TEST_ENV, then `overrides` by field name (e.g. agent_join_lead_seconds=60)."""
    return replace(load_settings(TEST_ENV), **overrides)


@dataclass
class World:
    """Every port as an in-memory fake, and the services built from them by the production
    composition root (shared/composition.py): the same graph, seams and settings as in Azure."""

    clock: FixedClock
    settings: Settings
    flows: fakes.Flows
    consents: fakes.AdminConsents
    claims: fakes.Claims
    connections: fakes.Connections
    meetings: fakes.Meetings
    index: fakes.Index
    states: fakes.SyncStates
    secrets: fakes.Secrets
    identity: fakes.Identity
    calendar: fakes.Calendar
    jobs: fakes.Jobs
    agents: Any  # fakes.Agents, or an override (tests.fakes_notifications.RecallingAgents)
    refusals: fakes.AppRefusals
    rules: fakes.JoinRulesStore
    selections: fakes.CalendarSelections
    team_claims: fakes.TeamClaimsStore
    workspace_meetings: fakes.WorkspaceMeetings
    tries: fakes.AgentTries
    user_rows: fakes.UserRows
    subscriptions_table: SubscriptionsTable
    graph_subscriptions: GraphSubscriptionsFake
    sub_jobs: SubscriptionJobsFake
    recall_jobs: RecallJobsFake
    erasure_jobs: fakes.ErasureJobs
    pages: fakes.FanOutPages
    events: fakes.RecordingStatusEvents
    services: Services

    # The services, by the names the tests use.
    @property
    def connect(self) -> ConnectService:
        return self.services.connect

    @property
    def accounts(self) -> AccountsService:
        return self.services.accounts

    @property
    def tokens(self) -> TokenKeeper:
        return self.services.tokens

    @property
    def sync(self) -> SyncService:
        return self.services.sync

    @property
    def deploy(self) -> DeployService:
        return self.services.deploy

    @property
    def meeting_lifecycle(self) -> MeetingLifecycle:
        return self.services.meeting_lifecycle

    @property
    def autojoin(self) -> AutojoinService:
        return self.services.autojoin

    @property
    def health(self) -> ConnectionHealth:
        return self.services.connection_health

    def connect_account(self, user: User, account: tuple[str, str, str] | None = None,
                        reconnect: str | None = None):
        if account:
            self.identity.next_account = account
            self.calendar.email = account[2]
        url = self.connect.start(user, reconnect)
        state = url.split("state=")[1]
        result = self.connect.complete({"code": "c", "state": state})
        assert result.claim, result
        return self.connect.claim(user, result.claim)


LEAD = 120


def build_world(settings: Settings | None = None, **overrides: Any) -> World:
    """A world at 2026-11-24 09:00 UTC; `overrides` replace fakes by World field name (e.g.
    agents=RecallingAgents())."""
    clock = FixedClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    settings = settings or unit_settings(notification_url=NOTIFICATION_URL)
    flows, claims, connections = fakes.Flows(), fakes.Claims(), fakes.Connections()
    meetings, index, states = fakes.Meetings(), fakes.Index(), fakes.SyncStates()
    w: dict[str, Any] = dict(
        flows=flows, consents=fakes.AdminConsents(), claims=claims, connections=connections, meetings=meetings,
        index=index, states=states, secrets=fakes.Secrets(), identity=fakes.Identity(now=clock.now),
        calendar=fakes.Calendar(), jobs=fakes.Jobs(), agents=fakes.Agents(), refusals=fakes.AppRefusals(),
        rules=fakes.JoinRulesStore(), selections=fakes.CalendarSelections(), team_claims=fakes.TeamClaimsStore(),
        workspace_meetings=fakes.WorkspaceMeetings(), tries=fakes.AgentTries(),
        user_rows=fakes.UserRows(flows, claims, connections, meetings, index, states),
        subscriptions_table=SubscriptionsTable(), graph_subscriptions=GraphSubscriptionsFake(clock=clock),
        sub_jobs=SubscriptionJobsFake(), recall_jobs=RecallJobsFake(), erasure_jobs=fakes.ErasureJobs(),
        pages=fakes.FanOutPages(), events=fakes.RecordingStatusEvents(),
    )
    unknown = set(overrides) - set(w)
    assert not unknown, f"no such fake: {unknown}"
    w.update(overrides)
    ports = Ports(
        connections=w["connections"], meetings=w["meetings"], index=w["index"], sync_state=w["states"],
        flows=w["flows"], consents=w["consents"], claims=w["claims"], refusals=w["refusals"],
        join_rules=w["rules"], calendar_selections=w["selections"], workspace_meetings=w["workspace_meetings"],
        team_claims=w["team_claims"], agent_tries=w["tries"], subscriptions=w["subscriptions_table"],
        user_rows=w["user_rows"], secrets=w["secrets"], consent_secret=fakes.RotatingSecret(),
        identity=w["identity"], calendar=w["calendar"], graph_subscriptions=w["graph_subscriptions"],
        agents=w["agents"], status_events=w["events"], jobs=w["jobs"], recall_jobs=w["recall_jobs"],
        subscription_jobs=w["sub_jobs"], erasure_jobs=w["erasure_jobs"], fanout_pages=w["pages"],
    )
    return World(clock=clock, settings=settings, services=compose(ports, settings, clock), **w)


@pytest.fixture
def world() -> World:
    return build_world()


ALICE = User("user-alice", Plan.FREE)
