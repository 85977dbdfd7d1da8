"""Destructive queue messages (erase a user, recall an agent, send a signed status event) carry an
HMAC only the app can make: whoever can only enqueue cannot forge one (shared/adapters/queues.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.queues import ErasureQueue, ForgedMessage, QueueSigner, decode_erasure

KEY = "k" * 43


def test_a_signed_message_verifies_and_reads_unchanged() -> None:
    signer = QueueSigner(lambda: KEY)
    body = signer.sign(json.dumps({"user_id": "alice", "traceparent": "00-abc-def-01"}))
    assert json.loads(signer.verify(body))["user_id"] == "alice"


@pytest.mark.parametrize("forge", [
    lambda body: json.dumps({"user_id": "alice"}),  # unsigned: what a queue sender can write
    lambda body: body.replace("alice", "bob"),  # another user, the signature kept
    lambda body: json.dumps(json.loads(body) | {"sig": "0" * 64}),  # a made-up signature
    lambda body: json.dumps(json.loads(body) | {"extra": 1}),  # a field added after signing
    lambda body: "not json",
    lambda body: json.dumps(["alice"]),
], ids=["unsigned", "user swapped", "made-up sig", "field added", "not json", "not an object"])
def test_a_forged_or_altered_message_is_refused(forge) -> None:
    signer = QueueSigner(lambda: KEY)
    body = signer.sign(json.dumps({"user_id": "alice"}))
    with pytest.raises(ForgedMessage):
        signer.verify(forge(body))


def test_a_message_signed_with_another_key_is_refused() -> None:
    body = QueueSigner(lambda: "another key").sign(json.dumps({"user_id": "alice"}))
    with pytest.raises(ForgedMessage):
        QueueSigner(lambda: KEY).verify(body)


class _Sent:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def send_message(self, text: str, visibility_timeout: int = 0) -> None:
        self.messages.append(text)


def test_an_erasure_job_carries_the_users_connections_signed_and_reads_back() -> None:
    signer, sent = QueueSigner(lambda: "k" * 32), _Sent()
    asked = datetime(2026, 12, 7, 10, tzinfo=UTC)
    ErasureQueue(sent, signer).enqueue("team/a#b", timedelta(seconds=20), asked, ["c1", "c2"])  # type: ignore[arg-type]
    [message] = sent.messages
    assert decode_erasure(signer.verify(message)) == ("team/a#b", asked, ("c1", "c2"))
    stripped = json.loads(message)
    del stripped["connections"]
    with pytest.raises(ForgedMessage):  # the ids are covered by the signature
        signer.verify(json.dumps(stripped))
    assert decode_erasure(json.dumps({"user_id": "u"})) == ("u", None, ())  # a job queued before this change
