"""Telling people: a connection that needs the user (or their admin) goes to Error and the user is
told through a status event; a meeting that will get no agent is reported; recoveries too.

The one place that turns "this connection failed" into an Error row plus a status event, so the
refresh, the sync, the callback and the deployer cannot each do it differently. Events go to the
platform (../shared/API.md, "Status events") through an outbox; their `id` is derived from the
transition (the connection and the state it leaves: its last successful refresh and reason), never
from a row version, so a retried job that repeats the transition sends the same id (the platform
dedupes). Events are queued before the row records the transition: a crash in between repeats it
rather than losing it — except connection.error, which must not be sent for an Error write that then
loses to a reconnect: its row goes first, marked until the event is queued (see `fail`).
A failure of the service itself (its own credentials, Microsoft outages) never reaches this module:
it sends no per-user event, it alerts the operators (see shared/services/accounts.py)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.connections import UNTOLD, Connection, Reason
from shared.ports import (
    Conflict,
    ConnectionStore,
    Meeting,
    MeetingStore,
    StatusEvent,
    StatusEvents,
    StatusEventType,
)

log = logging.getLogger(__name__)

AT_RISK_HORIZON = timedelta(hours=24)
_NAMESPACE = uuid.UUID("7c1f0c9e-4a53-4d7e-9a58-2f4f3c0f5b11")


class ConnectionHealth:
    def __init__(
        self,
        *,
        connections: ConnectionStore,
        meetings: MeetingStore,
        events: StatusEvents | None,
        clock: Clock,
    ) -> None:
        self._connections = connections
        self._meetings = meetings
        self._events = events
        self._clock = clock

    def fail(self, conn: Connection, reason: Reason, *, code: str = "") -> Connection:
        """Error with `reason` (what the user sees); the user is told once per transition, with the
        number of meetings in the next 24 h that will now get no agent. Raises Conflict (from the
        store) when the row changed since it was read — a reconnect, a disconnect, another refresh —
        and then nobody is told: the row is written first (ETag-conditional), marked UNTOLD, the event
        queued next, the mark cleared last; a crash in between is finished by the refresh walk
        (`retell`, same event id). Retrying the caller is safe."""
        failed = conn.failed(reason)
        if not (conn.is_active or conn.reason_code != reason.code):
            stored = self._connections.update(failed)  # already told of this very state
        else:
            stored = self._connections.update(replace(failed, failure_class=UNTOLD))
            self._tell_error(stored)
            try:
                stored = self._connections.update(replace(stored, failure_class=None))
            except Conflict:
                pass  # a newer write replaced the row; still UNTOLD there, the refresh walk re-tells it
        log.warning("connection needs the user: %s", reason.code,
                    extra={"connection_id": conn.id, "user_id": conn.user_id, "failure_code": code})
        return stored

    def retell(self, conn: Connection) -> bool:
        """An Error row still marked UNTOLD (the process ended between writing it and queueing its
        event): queue the event now (the same id as the first try), then clear the mark. Raises
        Conflict when the row changed meanwhile. False when there was nothing to tell."""
        if conn.is_active or conn.failure_class != UNTOLD or conn.reason is None:
            return False
        self._tell_error(conn)
        self._connections.update(replace(conn, failure_class=None))
        return True

    def _tell_error(self, failed: Connection) -> None:
        reason = failed.reason
        assert reason is not None
        # The transition makes the id: the connection, the sign-in and refresh it had, and the reason.
        # A retry (or a re-tell) of the same transition repeats it; a failure after a reconnect or a
        # successful refresh is a new one.
        identity = (f"{StatusEventType.CONNECTION_ERROR.value}|{failed.id}|{_iso(failed.connected_at)}|"
                    f"{_iso(failed.last_refreshed_at)}|{reason.code}")
        self._publish_raw(StatusEventType.CONNECTION_ERROR, failed.user_id, {
            "connection_id": failed.id, "email": failed.email, "reason_code": reason.code,
            "action": reason.action.value if reason.action else None,
            "meetings_at_risk": self.meetings_at_risk(failed),
        }, identity)

    def restored(self, before: Connection) -> None:
        """A connection in Error (`before`) is being made Active again (reconnected)."""
        if before.is_active:
            return
        self._publish(StatusEventType.CONNECTION_RESTORED, before, {
            "connection_id": before.id, "email": before.email}, "restored")

    def disconnected(self, conn: Connection) -> None:
        self._publish(StatusEventType.CONNECTION_DISCONNECTED, conn, {
            "connection_id": conn.id, "email": conn.email}, "disconnected")

    def agent_failed(self, meeting: Meeting, reason: str) -> None:
        """A meeting the user expects an agent in will get none (the page shows it `failed`): one
        `agent.failed` per meeting, whichever part of the service finds it first."""
        self.tell_about_meeting(StatusEventType.AGENT_FAILED, meeting, {"reason": reason}, "agent-failed")

    def agent_late(self, meeting: Meeting) -> None:
        """The agent cannot be on time (its deployment had to be queued again after its planned time):
        `meeting.at_risk` with reason `late`, once per planned time (the event id is fixed by it)."""
        planned = utc_iso(meeting.deploy_at or meeting.start)
        self.tell_about_meeting(StatusEventType.MEETING_AT_RISK, meeting, {"reason": "late"}, f"{planned}|late")

    def tell_about_meeting(self, type_: StatusEventType, meeting: Meeting, data: dict[str, Any], what: str) -> None:
        """One status event about `meeting` (../shared/API.md "Status events"): data `{meeting_id,
        title, start, **data}`; its id is fixed by the type, the meeting and `what`, so every repetition
        of the same step sends the same id (the platform deduplicates) and a new step a new one."""
        self._publish_raw(type_, meeting.user_id, {
            "meeting_id": meeting.key, "title": meeting.title, "start": utc_iso(meeting.start), **data,
        }, f"{type_.value}|{meeting.user_id}|{meeting.key}|{what}")

    def meetings_at_risk(self, conn: Connection) -> int:
        """Meetings starting in the next 24 h whose every calendar holding them is this connection or
        another connection that cannot serve them: they will get no agent because of this failure."""
        now = self._clock.now()
        active = {c.id for c in self._connections.list_for_user(conn.user_id) if c.is_active and c.id != conn.id}
        return sum(
            1 for m in self._meetings.list_for_user(conn.user_id, ending_after=now)
            if m.start <= now + AT_RISK_HORIZON
            and any(s.connection_id == conn.id for s in m.sources)
            and not any(s.connection_id in active for s in m.sources)
            and m.agent is not None and m.agent.value in ("scheduled", "deploying")
        )

    def _publish(self, type_: StatusEventType, conn: Connection, data: dict[str, Any], what: str) -> None:
        # The state the transition leaves makes the id: a retry of the same transition (even after a
        # conflicting write changed the row's ETag) repeats it; a later, separate failure of the same
        # connection (after a reconnect or a successful refresh) gets a new one.
        state = f"{_iso(conn.connected_at)}|{_iso(conn.last_refreshed_at)}|{conn.status.value}|{conn.reason_code}"
        self._publish_raw(type_, conn.user_id, data, f"{type_.value}|{conn.id}|{state}|{what}")

    def _publish_raw(self, type_: StatusEventType, user_id: str, data: dict[str, Any], identity: str) -> None:
        if self._events is None:
            return
        event = StatusEvent(type=type_, subject=user_id, data=data,
                            id=str(uuid.uuid5(_NAMESPACE, identity)), time=self._clock.now())
        self._events.publish(event)
        log.info("status event queued: %s", type_.value, extra={"user_id": user_id, "event_id": event.id})


def utc_iso(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`, as every time in the JSON API and status events is written."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "-"
