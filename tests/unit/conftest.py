from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from shared.clock import FixedClock
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


@dataclass
class World:
    clock: FixedClock
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
    agents: fakes.Agents
    refusals: fakes.AppRefusals
    connect: ConnectService
    accounts: AccountsService
    tokens: TokenKeeper
    sync: SyncService
    deploy: DeployService
    rules: fakes.JoinRulesStore
    meeting_lifecycle: MeetingLifecycle
    autojoin: AutojoinService
    events: fakes.RecordingStatusEvents
    health: ConnectionHealth

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


@pytest.fixture
def world() -> World:
    clock = FixedClock(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    w = dict(
        flows=fakes.Flows(), consents=fakes.AdminConsents(), claims=fakes.Claims(),
        connections=fakes.Connections(), meetings=fakes.Meetings(),
        index=fakes.Index(), states=fakes.SyncStates(), secrets=fakes.Secrets(),
        identity=fakes.Identity(now=clock.now), calendar=fakes.Calendar(), jobs=fakes.Jobs(), agents=fakes.Agents(),
        rules=fakes.JoinRulesStore(), refusals=fakes.AppRefusals(),
    )
    lifecycle = MeetingLifecycle(meetings=w["meetings"], connections=w["connections"], rules=w["rules"],
                                 jobs=w["jobs"], clock=clock, grace_seconds=300)
    events = fakes.RecordingStatusEvents()
    health = ConnectionHealth(connections=w["connections"], meetings=w["meetings"], events=events, clock=clock)
    tokens = TokenKeeper(connections=w["connections"], identity=w["identity"], secrets_store=w["secrets"],
                         clock=clock, health=health, refusals=w["refusals"], home_tenant_id=fakes.APP_HOME_TENANT)
    return World(
        clock=clock, **w,
        connect=ConnectService(flows=w["flows"], claims=w["claims"], connections=w["connections"],
                               identity=w["identity"], calendar=w["calendar"], secrets_store=w["secrets"],
                               jobs=w["jobs"], clock=clock, health=health, consents=w["consents"],
                               consent_secret=fakes.RotatingSecret()),
        accounts=AccountsService(connections=w["connections"], meetings=w["meetings"], index=w["index"],
                                 sync_state=w["states"], secrets_store=w["secrets"], clock=clock, health=health),
        tokens=tokens,
        sync=SyncService(connections=w["connections"], tokens=tokens, calendar=w["calendar"],
                         meetings=w["meetings"], index=w["index"], sync_state=w["states"], jobs=w["jobs"],
                         clock=clock, window_days=14, full_resync_seconds=86400, lead_seconds=LEAD,
                         lifecycle=lifecycle, health=health),
        deploy=DeployService(meetings=w["meetings"], connections=w["connections"], agents=w["agents"],
                             jobs=w["jobs"], clock=clock, grace_seconds=300, retry_base_seconds=15,
                             lifecycle=lifecycle, health=health),
        meeting_lifecycle=lifecycle,
        autojoin=AutojoinService(store=w["rules"], meetings=w["meetings"], lifecycle=lifecycle, clock=clock),
        events=events,
        health=health,
    )


ALICE = User("user-alice", Plan.FREE)
