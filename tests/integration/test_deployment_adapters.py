"""The deployment watchdog's storage (issue 19), on Azurite: every deploy message has a backup copy
15 s behind it and neither ever expires before it is due; the meetings table finds every user's
meetings awaiting a verdict past their deploy time (or past a new try's time after the lobby)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.adapters.queues import StorageQueues
from shared.adapters.tables import TableMeetingStore, ensure_tables
from shared.agent_states import AgentState
from shared.ports import DeployJob, Meeting


def _queue(stack, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(stack.storage_connection_string(), name,
                                                message_encode_policy=TextBase64EncodePolicy())
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


def test_a_deploy_message_never_expires_and_has_a_backup_copy_a_little_later(stack):
    name = f"deploy-{uuid.uuid4().hex[:8]}"
    deploy = _queue(stack, name)
    jobs = StorageQueues(deploy=deploy, deploy_poison=_queue(stack, f"{name}-poison"), sync=_queue(stack, f"{name}-s"),
                         refresh=_queue(stack, f"{name}-r"))
    due = datetime.now(UTC)
    jobs.schedule_deploy(DeployJob("u1", "m1", due), timedelta(0))

    [first] = list(deploy.receive_messages(visibility_timeout=60))
    body = json.loads(base64.b64decode(first.content))
    assert (body["meeting_key"], body.get("backup")) == ("m1", None)
    assert first.expires_on is not None and first.expires_on.year >= 9999  # never expires
    props = deploy.get_queue_properties()
    assert props.approximate_message_count == 2  # the copy, still hidden

    copy = None
    for _ in range(60):
        got = list(deploy.receive_messages(visibility_timeout=60))
        if got:
            copy = got[0]
            break
        time.sleep(1)
    assert copy is not None, "the backup copy never surfaced"
    assert json.loads(base64.b64decode(copy.content))["backup"] is True
    assert copy.expires_on is not None and copy.expires_on.year >= 9999


def test_the_meetings_awaiting_a_verdict_of_every_user_are_found_by_their_deploy_time(stack):
    service = TableServiceClient.from_connection_string(stack.storage_connection_string())
    ensure_tables(service)
    store = TableMeetingStore(service.get_table_client("meetings"), service.get_table_client("meetingsdue"))
    now = datetime.now(UTC).replace(microsecond=0)
    tag = uuid.uuid4().hex[:8]

    def meeting(user: str, minutes: int, agent: AgentState | None, retry_in: int | None = None) -> Meeting:
        start = now + timedelta(minutes=minutes)
        retry_at = now + timedelta(minutes=retry_in) if retry_in is not None else None
        return store.create(Meeting(user_id=f"{user}-{tag}", key=f"k-{tag}-{minutes}-{user}", link_key="l",
                                    title="t", start=start, end=start + timedelta(minutes=30), platform="teams",
                                    join_url="https://teams.microsoft.com/l/meetup-join/x", sources=(),
                                    agent=agent, deploy_at=start - timedelta(minutes=2), retry_at=retry_at))

    overdue = [meeting("alice", 1, AgentState.SCHEDULED), meeting("bob", 0, AgentState.DEPLOYING),
               meeting("frank", -5, AgentState.NOT_ADMITTED, retry_in=-1)]  # a new try after the lobby, due
    meeting("carol", 1, AgentState.DEPLOYED)  # has its verdict
    meeting("dave", 60, AgentState.SCHEDULED)  # not due yet
    meeting("erin", -40, AgentState.SCHEDULED)  # already over
    meeting("gina", -5, AgentState.NOT_ADMITTED)  # no try left
    meeting("hank", -5, AgentState.NOT_ADMITTED, retry_in=2)  # its new try not due yet
    meeting("ivan", -40, AgentState.NOT_ADMITTED, retry_in=-20)  # already over

    found = {m.key for m in store.awaiting_verdict(due_before=now, ending_after=now) if tag in m.key}

    assert found == {m.key for m in overdue}
