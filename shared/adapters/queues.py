"""Azure Queue Storage: deploy messages scheduled by visibility delay, sync jobs, poison records.

Messages are base64 text, as the Functions queue trigger expects."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.adapters.telemetry import trace_carrier
from shared.ports import DeployJob, FanOutPage, ProgressJob, RecallJob, RefreshJob, SubscriptionJob, SyncJob

DEPLOY_QUEUE = "agent-deployments"
SYNC_QUEUE = "sync-jobs"
REFRESH_QUEUE = "token-refresh"
STATUS_EVENTS_QUEUE = "status-events"  # the status events outbox (shared/adapters/platform_events.py)
ERASURE_QUEUE = "user-erasures"  # DELETE /api/outlook/data: the durable half of an erasure
FANOUT_QUEUE = "fanout-pages"  # the timers' walks over the connections, one page per message
SUBSCRIPTION_QUEUE = "subscription-jobs"  # create, renew, recreate Graph subscriptions (manage_subscription)
RECALL_QUEUE = "agent-recalls"  # recall a deployed agent (recall_agent)
PROGRESS_QUEUE = "agent-progress"  # lobby nudges and readiness checks, delayed (follow_agent)
QUEUES = (SYNC_QUEUE, DEPLOY_QUEUE, REFRESH_QUEUE, STATUS_EVENTS_QUEUE, ERASURE_QUEUE, FANOUT_QUEUE,
          SUBSCRIPTION_QUEUE, RECALL_QUEUE, PROGRESS_QUEUE)


def encode_deploy(job: DeployJob) -> str:
    body = {"user_id": job.user_id, "meeting_key": job.meeting_key, "deploy_at": job.deploy_at.isoformat(),
            "attempt": job.attempt}
    if job.enqueued_at is not None:
        body["enqueued_at"] = job.enqueued_at.isoformat()
    return json.dumps(body | {"backup": True} if job.backup else body)


def decode_deploy(body: str) -> DeployJob:
    data = json.loads(body)
    return DeployJob(user_id=str(data["user_id"]), meeting_key=str(data["meeting_key"]),
                     deploy_at=datetime.fromisoformat(data["deploy_at"]), attempt=int(data.get("attempt", 1)),
                     backup=data.get("backup") is True,
                     enqueued_at=datetime.fromisoformat(data["enqueued_at"]) if data.get("enqueued_at") else None)


def encode_sync(job: SyncJob) -> str:
    return json.dumps(asdict(job))


def decode_sync(body: str) -> SyncJob:
    data = json.loads(body)
    return SyncJob(user_id=str(data["user_id"]), connection_id=str(data["connection_id"]),
                   reason=str(data.get("reason", "scheduled")), attempt=max(1, int(data.get("attempt", 1))))


def encode_refresh(job: RefreshJob) -> str:
    return json.dumps(asdict(job))


def decode_refresh(body: str) -> RefreshJob:
    data = json.loads(body)
    return RefreshJob(user_id=str(data["user_id"]), connection_id=str(data["connection_id"]))


def encode_progress(job: ProgressJob) -> str:
    return json.dumps({"kind": job.kind, "user_id": job.user_id, "meeting_key": job.meeting_key,
                       "attempt": job.attempt, "join_at": job.join_at.isoformat() if job.join_at else None})


def decode_progress(body: str) -> ProgressJob:
    data = json.loads(body)
    kind = str(data["kind"])
    if kind not in ("nudge", "readiness"):
        raise ValueError(f"unknown agent progress job {kind!r}")
    join_at = data.get("join_at")
    return ProgressJob(kind=kind, user_id=str(data["user_id"]), meeting_key=str(data["meeting_key"]),
                       attempt=int(data.get("attempt", 0)),
                       join_at=datetime.fromisoformat(join_at) if join_at else None)


class StorageQueues:
    def __init__(self, *, deploy: QueueClient, deploy_poison: QueueClient, sync: QueueClient,
                 refresh: QueueClient, progress: QueueClient | None = None) -> None:
        self._progress = progress
        self._deploy = deploy
        self._deploy_poison = deploy_poison
        self._sync = sync
        self._refresh = refresh

    def enqueue_refresh(self, job: RefreshJob, delay: timedelta = timedelta(0)) -> None:
        self._refresh.send_message(traced(encode_refresh(job)), visibility_timeout=_seconds(delay))

    def schedule_deploy(self, job: DeployJob, delay: timedelta) -> None:
        """The deploy message, hidden for `delay`, and (unless this is one) its backup copy hidden
        DEPLOY_BACKUP_AFTER longer. An instance that takes a message and dies keeps it invisible for
        up to 10 minutes (the Functions host's lease); the copy, taken by another instance, deploys
        instead (or finds the meeting deployed and does nothing: the deployer claims the meeting row).
        Neither expires before it is due: time-to-live -1 (never), since a message hidden near the
        7-day limit would otherwise expire minutes after it surfaced."""
        self._deploy.send_message(traced(encode_deploy(job)), visibility_timeout=_seconds(delay),
                                  time_to_live=NEVER_EXPIRES)
        if not job.backup:
            self._deploy.send_message(traced(encode_deploy(replace(job, backup=True))),
                                      visibility_timeout=_seconds(min(delay + DEPLOY_BACKUP_AFTER, MAX_DELAY)),
                                      time_to_live=NEVER_EXPIRES)

    def schedule_progress(self, job: ProgressJob, delay: timedelta) -> None:
        if self._progress is None:
            raise RuntimeError("no agent-progress queue configured")
        self._progress.send_message(traced(encode_progress(job)), visibility_timeout=_seconds(delay))

    def poison_deploy(self, job: DeployJob, reason: str) -> None:
        body = json.loads(encode_deploy(job)) | {"reason": reason}
        self._deploy_poison.send_message(json.dumps(body))

    def enqueue_sync(self, job: SyncJob, delay: timedelta = timedelta(0)) -> None:
        self._sync.send_message(traced(encode_sync(job)), visibility_timeout=_seconds(delay))


class ForgedMessage(ValueError):
    """A queue message that does not carry a valid signature (see QueueSigner)."""


class QueueSigner:
    """HMAC-SHA256 over a queue message (RFC 2104), for the queues whose messages do destructive or
    outward work: erase a user (`user-erasures`), recall (delete) an agent (`agent-recalls`), send a
    signed status event to the platform (`status-events`). Whoever can only enqueue (Storage Queue
    Data Message Sender, a leaked SAS) cannot forge one: the key is a Key Vault secret only the app
    reads (QUEUE_SIGNING_SECRET_NAME).

    The message stays JSON; `sig` is the hex MAC over the other fields serialised with sorted keys
    and no spaces, so fields added before signing (the trace context) are covered and a decoder that
    ignores `sig` reads it unchanged. `verify` raises ForgedMessage for a missing, malformed or wrong
    signature (compared in constant time)."""

    FIELD = "sig"

    def __init__(self, key: Callable[[], str]) -> None:
        self._key = key

    def sign(self, body: str) -> str:
        data = json.loads(body)
        data.pop(self.FIELD, None)
        data[self.FIELD] = self._mac(data)
        return json.dumps(data)

    def verify(self, body: str) -> str:
        try:
            data = json.loads(body)
        except ValueError:
            raise ForgedMessage("not JSON") from None
        if not isinstance(data, dict):
            raise ForgedMessage("not a JSON object")
        sig = data.pop(self.FIELD, None)
        if not isinstance(sig, str) or not hmac.compare_digest(sig, self._mac(data)):
            raise ForgedMessage("missing or wrong signature")
        return body

    def _mac(self, data: dict[str, Any]) -> str:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hmac.new(self._key().encode("utf-8"), canonical, hashlib.sha256).hexdigest()


def traced(body: str) -> str:
    """The message with the current trace context (W3C `traceparent`) beside its fields, so the
    function that handles it continues the same trace (decoders ignore fields they do not know)."""
    carrier = trace_carrier()
    return json.dumps(json.loads(body) | carrier) if carrier else body


def encode_fanout(page: FanOutPage) -> str:
    return json.dumps({"kind": page.kind, "continuation": page.continuation,
                       "started_at": page.started_at.isoformat(), "number": page.number,
                       "enqueued_before": page.enqueued_before, "skipped": page.skipped,
                       "chain_from": page.chain_from})


def decode_fanout(body: str) -> FanOutPage:
    data = json.loads(body)
    continuation = data.get("continuation")
    return FanOutPage(kind=str(data["kind"]), continuation=str(continuation) if continuation else None,
                      started_at=datetime.fromisoformat(data["started_at"]), number=int(data.get("number", 0)),
                      enqueued_before=int(data.get("enqueued_before", 0)), skipped=int(data.get("skipped", 0)),
                      chain_from=str(data.get("chain_from") or ""))


class StorageFanOutQueue:
    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def enqueue_page(self, page: FanOutPage) -> None:
        self._queue.send_message(traced(encode_fanout(page)))


# Queue Storage's "never expires" time-to-live (REST API version 2017-07-29 and later).
NEVER_EXPIRES = -1
DEPLOY_BACKUP_AFTER = timedelta(seconds=15)
MAX_DELAY = timedelta(days=7)


def _seconds(delay: timedelta) -> int:
    return max(0, min(int(delay.total_seconds() + 0.999), 7 * 24 * 3600))


ERASURE_CONNECTIONS_CARRIED = 1000


def decode_erasure(body: str) -> tuple[str, datetime | None, tuple[str, ...]]:
    """The user id of an erasure job, when the erasure was asked for (None in older messages) and the
    user's connection ids at that moment (none in older messages). Raises ValueError (or KeyError)
    for a body that is not such a job: the trigger lets the host retry it, then `user-erasures-poison`."""
    data = json.loads(body)
    user_id = data["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("erasure job without a user id")
    before = data.get("before")
    carried = data.get("connections") or []
    if not isinstance(carried, list) or not all(isinstance(c, str) and c for c in carried):
        raise ValueError("erasure job with malformed connection ids")
    return user_id, datetime.fromisoformat(before) if isinstance(before, str) and before else None, tuple(carried)


class ErasureQueue:
    def __init__(self, queue: QueueClient, signer: QueueSigner) -> None:
        self._queue = queue
        self._signer = signer

    def enqueue(self, user_id: str, delay: timedelta, before: datetime | None = None,
                connection_ids: Sequence[str] = ()) -> None:
        body: dict[str, Any] = {"user_id": user_id, **({"before": before.isoformat()} if before is not None else {})}
        if connection_ids:
            # About 36 bytes each as JSON: 1,000 stay inside a message's 64 KiB after Base64. Beyond the
            # cap, prune_data's sweep of partitions no connection names removes what a raced sync left.
            body["connections"] = list(connection_ids)[:ERASURE_CONNECTIONS_CARRIED]
        self._queue.send_message(self._signer.sign(json.dumps(body)), visibility_timeout=_seconds(delay))


class QueueDepths:
    """Approximate message counts of the app's queues and their `-poison` queues (one `Get Queue
    Metadata` request each), for the operators' gauge. A queue that does not exist yet counts 0."""

    def __init__(self, service: QueueServiceClient, names: tuple[str, ...] = QUEUES) -> None:
        self._service = service
        self._names = tuple(n for name in names for n in (name, f"{name}-poison"))

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for name in self._names:
            try:
                props = self._service.get_queue_client(name).get_queue_properties()
            except ResourceNotFoundError:
                found[name] = 0
                continue
            found[name] = int(props.approximate_message_count or 0)
        return found


def encode_subscription_job(job: SubscriptionJob) -> str:
    data: dict[str, Any] = {"user_id": job.user_id, "connection_id": job.connection_id, "action": job.action}
    if job.authorized_until is not None:
        data["authorized_until"] = job.authorized_until.isoformat()
    return json.dumps(data)


def decode_subscription_job(body: str) -> SubscriptionJob:
    data = json.loads(body)
    until = data.get("authorized_until")
    return SubscriptionJob(user_id=str(data["user_id"]), connection_id=str(data["connection_id"]),
                           action=str(data["action"]),
                           authorized_until=datetime.fromisoformat(str(until)) if until else None)


class SubscriptionQueue:
    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def enqueue(self, job: SubscriptionJob, delay: timedelta = timedelta(0)) -> None:
        self._queue.send_message(traced(encode_subscription_job(job)), visibility_timeout=_seconds(delay))


def encode_recall(job: RecallJob) -> str:
    return json.dumps({"user_id": job.user_id, "meeting_key": job.meeting_key, "agent_id": job.agent_id,
                       "end": job.end.isoformat(), "reason": job.reason, "attempt": job.attempt,
                       "workspace": job.workspace})


def decode_recall(body: str) -> RecallJob:
    data = json.loads(body)
    return RecallJob(user_id=str(data["user_id"]), meeting_key=str(data["meeting_key"]),
                     agent_id=str(data["agent_id"]), end=datetime.fromisoformat(data["end"]),
                     reason=str(data.get("reason", "withdrawn")), attempt=int(data.get("attempt", 1)),
                     workspace=str(data.get("workspace") or ""))


class RecallQueue:
    def __init__(self, queue: QueueClient, signer: QueueSigner) -> None:
        self._queue = queue
        self._signer = signer

    def enqueue(self, job: RecallJob, delay: timedelta = timedelta(0)) -> None:
        self._queue.send_message(self._signer.sign(traced(encode_recall(job))), visibility_timeout=_seconds(delay))
