"""In-memory stand-ins for the change-notification and recall ports (see tests/fakes.py for the rest)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.ports import (
    Conflict,
    DeployRequest,
    DeployResult,
    GraphSubscription,
    Page,
    RecallJob,
    RecallResult,
    Subscription,
    SubscriptionGone,
    SubscriptionJob,
    SubscriptionRefused,
)
from tests.fakes import paged


@dataclass
class GraphSubscriptionsFake:
    """Graph's /subscriptions: what was created, renewed and deleted, and scripted refusals."""

    live: dict[str, GraphSubscription] = field(default_factory=dict)
    client_states: dict[str, str] = field(default_factory=dict)
    urls: dict[str, tuple[str, str]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    max_lifetime: timedelta | None = None  # longer requests answer 400, like Graph's lifetime cap
    refuse_creates: int = 0  # the next creates answer 400 (validation failed)
    fail_creates: list[Exception] = field(default_factory=list)
    clock: Any = None  # with max_lifetime: the clock a lifetime is measured from
    listed: int = 0  # GET /subscriptions calls

    def create(self, access_token: str, *, notification_url: str, lifecycle_url: str, client_state: str,
               expires_at: datetime) -> GraphSubscription:
        if self.fail_creates:
            raise self.fail_creates.pop(0)
        if self.refuse_creates:
            self.refuse_creates -= 1
            raise SubscriptionRefused(400, "ValidationError")
        if self.max_lifetime is not None and expires_at - self.clock.now() > self.max_lifetime:
            raise SubscriptionRefused(400, "ExtensionError")
        sub = GraphSubscription(id=str(uuid.uuid4()), expires_at=expires_at)
        self.live[sub.id] = sub
        self.client_states[sub.id] = client_state
        self.urls[sub.id] = (notification_url, lifecycle_url)
        self.created.append(sub.id)
        return sub

    def renew(self, access_token: str, subscription_id: str, expires_at: datetime) -> GraphSubscription:
        if subscription_id not in self.live:
            raise SubscriptionGone("ResourceNotFound")
        if self.max_lifetime is not None and expires_at - self.clock.now() > self.max_lifetime:
            raise SubscriptionRefused(400, "ExtensionError")
        self.live[subscription_id] = GraphSubscription(subscription_id, expires_at)
        self.renewed.append(subscription_id)
        return self.live[subscription_id]

    def delete(self, access_token: str, subscription_id: str) -> None:
        self.live.pop(subscription_id, None)
        self.deleted.append(subscription_id)

    def list(self, access_token: str) -> list[GraphSubscription]:
        self.listed += 1
        return [replace(s, notification_url=self.urls[s.id][0]) for s in self.live.values()]

    def remove_behind_our_back(self, subscription_id: str) -> None:
        """Graph removed it (subscriptionRemoved, or it lapsed)."""
        self.live.pop(subscription_id, None)


class SubscriptionsTable:
    """Like TableSubscriptionStore: one row per connection, ETag'd writes."""

    def __init__(self) -> None:
        self.rows: dict[str, Subscription] = {}
        self._etags = itertools.count(1)

    def get(self, connection_id: str) -> Subscription | None:
        return self.rows.get(connection_id)

    def put(self, subscription: Subscription) -> Subscription:
        current = self.rows.get(subscription.connection_id)
        if (current.etag if current else None) != subscription.etag:
            raise Conflict(subscription.connection_id)
        stored = replace(subscription, etag=str(next(self._etags)))
        self.rows[subscription.connection_id] = stored
        return stored

    def remove(self, subscription: Subscription) -> None:
        self.rows.pop(subscription.connection_id, None)

    def all(self) -> Iterator[Subscription]:
        yield from list(self.rows.values())

    def page(self, continuation: str | None, size: int) -> Page[Subscription]:
        return paged(list(self.rows.values()), continuation, size, key=lambda s: s.connection_id)


@dataclass
class SubscriptionJobsFake:
    jobs: list[tuple[SubscriptionJob, timedelta]] = field(default_factory=list)

    def enqueue(self, job: SubscriptionJob, delay: timedelta = timedelta(0)) -> None:
        self.jobs.append((job, delay))

    def actions(self) -> list[str]:
        return [j.action for j, _ in self.jobs]


@dataclass
class RecallJobsFake:
    jobs: list[tuple[RecallJob, timedelta]] = field(default_factory=list)

    def enqueue(self, job: RecallJob, delay: timedelta = timedelta(0)) -> None:
        self.jobs.append((job, delay))

    def take(self) -> list[RecallJob]:
        taken = [j for j, _ in self.jobs]
        self.jobs.clear()
        return taken


@dataclass
class RecallingAgents:
    """The agent API with ids: each deployment gets one; recalls answer as scripted (default: gone)."""

    calls: list[DeployRequest] = field(default_factory=list)
    recalls: list[str] = field(default_factory=list)
    recall_script: list[RecallResult] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # meeting id -> agent id

    def deploy(self, request: DeployRequest) -> DeployResult:
        self.calls.append(request)
        agent_id = self.ids.setdefault(request.meeting_id, f"agt_{uuid.uuid4().hex[:12]}")
        return DeployResult(ok=True, detail="201", agent_id=agent_id)

    def recall(self, agent_id: str) -> RecallResult:
        self.recalls.append(agent_id)
        return self.recall_script.pop(0) if self.recall_script else RecallResult(gone=True, detail="204")
