"""The fault matrix: inject each fault on the real local stack and record what the user sees, what
the operator sees, and what was lost. `make faults` runs it and rewrites docs/reliability.md.

    python -m bench.fault_matrix [--write docs/reliability.md]

Starts the whole local stack (Azurite, the Microsoft simulator, the Key Vault endpoint, the agent
API recorder, the local Functions host), then plays one scenario per fault, each with its own
CoAgentor user and calendars (the simulator is reset in between). For each it records:

- **user sees**: the connection cards (`GET /api/outlook/connections`: status, reason_code,
  warning), the meeting's agent state, and the status events the platform received (recorder
  `GET /_events`: CloudEvents `type`);
- **operator sees**: the WARNING/ERROR lines the service logged meanwhile (the local host's
  `functions.log`), grouped by their first words;
- **lost**: meetings that should have got an agent and did not (recorder `GET /_recorded`);
- **wrongly flipped**: connections shown in Error although the fault was not the user's;
- **silent**: something was lost, flipped or left broken and neither the user nor the operator was
  told.

The goals (issue 10): wrongly flipped 0, lost 0, silent 0. The run is bounded: every wait has a
deadline (about five minutes in all, most of it waiting for a lost deploy message to be noticed).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.storage.queue import QueueClient

from devstack import polling
from devstack.stack import Stack, free_ports
from tests.e2e.client import Client, teams_link

OVERRIDES = {
    "AGENT_JOIN_LEAD_SECONDS": "600",  # meetings within 10 minutes are deployed at once
    "TOKEN_REFRESH_MAX_AGE_SECONDS": "0",
    "REFRESH_SCHEDULE": "0 0 0 1 1 *",
    "SCAN_SCHEDULE": "0 0 0 1 1 *",
    "RECONCILE_SCHEDULE": "0 0 0 1 1 *",
    "PRUNE_SCHEDULE": "0 0 0 1 1 *",
    "WATCHDOG_SCHEDULE": "0 0 0 1 1 *",
    "HTTP_TIMEOUT_SECONDS": "4",
    "DEPLOY_RETRY_SECONDS": "1",
    "SYNC_WARNING_AFTER_SECONDS": "2",
    "PLATFORM_EVENTS_RETRY_SECONDS": "1",
}
_LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR) (shared\.\S+): (.*)$")


@dataclass
class Row:
    fault: str
    fixed_by: str
    user_sees: str = ""
    operator_sees: str = ""
    lost: int = 0
    wrongly_flipped: int = 0
    silent: bool = False
    notes: list[str] = field(default_factory=list)


class Lab:
    """The running stack, with the helpers scenarios share."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.c = Client(stack)
        self.client_id = stack.app_settings()["OUTLOOK_CLIENT_ID"]
        self.log = stack.devstack_dir / "functions.log"

    # ---- the service
    def user(self, plan: str = "pro") -> tuple[str, str]:
        uid = f"fault-{uuid.uuid4().hex[:8]}"
        return uid, self.c.token(uid, plan)

    def connect(self, token: str, login: str) -> dict[str, Any]:
        connection: dict[str, Any] = self.c.connect(token, login)["connection"]
        return connection

    def refresh(self, uid: str, conn_id: str) -> None:
        self.c.run_function("refresh_connection", json.dumps({"user_id": uid, "connection_id": conn_id}))

    def sync(self, uid: str, conn_id: str) -> None:
        self.c.run_function("sync_calendar", json.dumps({"user_id": uid, "connection_id": conn_id}))

    def cards(self, token: str) -> list[dict[str, Any]]:
        return list(self.c.connections(token)["connections"])

    def meeting(self, token: str, title: str) -> dict[str, Any] | None:
        return next((m for m in self.c.upcoming(token) if m["title"] == title), None)

    def events(self, uid: str) -> list[str]:
        received = [json.loads(e["raw_body"]) for e in
                    self.c.api.get(f"{self.stack.agents_url}/_events", timeout=30).json()]
        return [e["type"].removeprefix("com.coagentor.outlook.") for e in received if e.get("subject") == uid]

    def deployed(self, uid: str) -> list[dict[str, Any]]:
        recorded = self.c.api.get(f"{self.stack.agents_url}/_recorded", timeout=30).json()
        return [r for r in recorded if r["body"].get("user_id") == uid]

    # ---- the simulator and the recorder
    def sim(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.c.sim(method, path, json=body) if body is not None else self.c.sim(method, path)
        assert resp.status_code < 300, (path, resp.status_code, resp.text[:300])
        return resp.json() if resp.content else None

    def token_fault(self, **fault: Any) -> None:
        self.sim("POST", "/_sim/faults", {"path_prefix": "/common/oauth2/v2.0/token", **fault})

    def add_event(self, upn: str, title: str, start: datetime, **fields: Any) -> dict[str, Any]:
        return self.c.add_event(upn, title, start, **fields)

    def agent_fault(self, **fault: Any) -> None:
        resp = self.c.api.post(f"{self.stack.agents_url}/_faults", json=fault, timeout=30)
        assert resp.status_code < 300, resp.text

    # ---- what the operator saw
    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def operator(self, since: int) -> str:
        with self.log.open("rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", errors="replace")
        seen: Counter[str] = Counter()
        for line in text.splitlines():
            m = _LOG_LINE.match(line)
            if m:
                words = re.split(r"[:(=]", m.group(3))[0].strip()
                seen[f"{m.group(1)} {' '.join(words.split()[:6])}"] += 1
        return "; ".join(f"{k} x{n}" for k, n in seen.most_common(4)) or "nothing"


def until(probe: Callable[[], Any], timeout: float = 40.0, every: float = 0.5) -> Any:
    return polling.poll(probe, timeout, every)


def soon(minutes: float = 5) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes)


def card_text(cards: list[dict[str, Any]]) -> str:
    parts = []
    for c in cards:
        text = c["status"]
        if c.get("reason_code"):
            text += f" `{c['reason_code']}` ({c['action']})"
        if c.get("warning"):
            text += " + warning"
        parts.append(text)
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Scenarios: each returns its row. A scenario the product handles well still records what was shown.


def token_outage(lab: Lab) -> Row:
    row = Row("Token endpoint 5xx (HTML outage page)", "Microsoft")
    uid, tok = lab.user()
    conn = lab.connect(tok, "dave@contoso.com")
    mark = lab.mark()
    lab.token_fault(status=503, body="html", count=3)
    lab.refresh(uid, conn["id"])
    cards = until(lambda: (c := lab.cards(tok)) and c[0]["warning"] and c) or lab.cards(tok)
    row.user_sees = card_text(cards) + " at once"
    row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
    recovered = _recovers(lab, uid, tok, conn["id"])
    row.notes.append("recovers by itself at the next run" if recovered else "NOT recovered")
    row.silent = not _warned(cards) or not recovered
    row.operator_sees = lab.operator(mark)
    return row


def _recovers(lab: Lab, uid: str, tok: str, conn_id: str) -> bool:
    """The next refresh runs clear the warning (MSAL holds back a retry of a 5xx for a few seconds)."""
    def run_and_look() -> bool:
        lab.refresh(uid, conn_id)
        time.sleep(1)
        return bool(lab.cards(tok)[0]["warning"] is None)
    return bool(until(run_and_look, timeout=60, every=1))


def token_timeout(lab: Lab) -> Row:
    row = Row("Token endpoint hangs past the HTTP timeout", "Microsoft")
    uid, tok = lab.user()
    conn = lab.connect(tok, "dave@contoso.com")
    mark = lab.mark()
    lab.token_fault(latency_ms=7000, count=1)
    lab.refresh(uid, conn["id"])
    cards = until(lambda: (c := lab.cards(tok)) and c[0]["warning"] and c, timeout=30) or lab.cards(tok)
    row.user_sees = card_text(cards)
    row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
    row.silent = not _warned(cards)
    row.operator_sees = lab.operator(mark)
    return row


def _warned(cards: list[dict[str, Any]]) -> bool:
    """Every card says auto-join may be delayed, none says Error (the fault is not the user's)."""
    return bool(cards) and all(c["warning"] and c["status"] == "active" for c in cards)


def app_secret_expired(lab: Lab) -> Row:
    row = Row("The service's client secret expires (AADSTS7000222)", "the service (operator)")
    uid, tok = lab.user()
    conns = [lab.connect(tok, login) for login in ("dave@contoso.com", "bob@outlook.com")]
    vault = _vault(lab.stack)
    name = lab.stack.app_settings().get("OUTLOOK_CLIENT_SECRET_NAME", "outlook-client-secret")
    original = vault.get_secret(name).value
    mark = lab.mark()
    try:
        lab.sim("POST", f"/_sim/apps/{lab.client_id}/secret", {"expired": True})
        for c in conns:
            lab.refresh(uid, c["id"])
        cards = until(lambda: (s := lab.cards(tok)) and all(c["warning"] for c in s) and s) or lab.cards(tok)
        row.user_sees = card_text(cards) + "; status events: " + (", ".join(lab.events(uid)) or "none")
        row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
        fresh = "rotated-" + uuid.uuid4().hex
        lab.sim("POST", f"/_sim/apps/{lab.client_id}/secret", {"secret": fresh, "replace": True})
        vault.set_secret(name, fresh)
        for c in conns:
            lab.refresh(uid, c["id"])
        ok = until(lambda: all(c["warning"] is None and c["status"] == "active" for c in lab.cards(tok)))
        row.notes.append("all recover once Key Vault holds the new secret, nobody reconnects" if ok
                         else "NOT recovered after the fix")
        row.silent = not _warned(cards) or not ok or bool(lab.events(uid))
    finally:
        lab.sim("POST", f"/_sim/apps/{lab.client_id}/secret", {"secret": original, "replace": True})
        vault.set_secret(name, original)
    row.operator_sees = lab.operator(mark)
    return row


def app_disabled(lab: Lab) -> Row:
    row = Row("The app registration is disabled (AADSTS7000112)", "the service (operator)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "dave@contoso.com")
    mark = lab.mark()
    try:
        lab.sim("POST", f"/_sim/apps/{lab.client_id}", {"disabled": True})
        lab.refresh(uid, conn["id"])
        cards = until(lambda: (s := lab.cards(tok)) and s[0]["warning"] and s) or lab.cards(tok)
        row.user_sees = card_text(cards)
        row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
    finally:
        lab.sim("POST", f"/_sim/apps/{lab.client_id}", {"disabled": False})
    ok = _recovers(lab, uid, tok, conn["id"])
    row.notes.append("recovers once re-enabled" if ok else "NOT recovered")
    row.silent = not _warned(cards) or not ok
    row.operator_sees = lab.operator(mark)
    return row


def _in_error_and_told(lab: Lab, row: Row, login: str, prepare: Callable[[str, str, dict[str, Any]], None],
                       inject: Callable[[], None], act: Callable[[str, dict[str, Any]], None]) -> Row:
    """A fault the user (or their admin) must fix: the card shows Error with its reason, and the user
    is told by a `connection.error` status event."""
    uid, tok = lab.user()
    conn = lab.connect(tok, login)
    prepare(uid, tok, conn)
    mark = lab.mark()
    inject()
    act(uid, conn)
    cards = until(lambda: (s := lab.cards(tok)) and s[0]["status"] == "error" and s) or lab.cards(tok)
    told = until(lambda: lab.events(uid), timeout=20) or []
    row.user_sees = card_text(cards) + "; status events: " + (", ".join(told) or "none")
    row.silent = "connection.error" not in told or cards[0]["status"] != "error"
    row.operator_sees = lab.operator(mark)
    return row


def grant_revoked(lab: Lab) -> Row:
    def with_a_meeting(uid: str, tok: str, conn: dict[str, Any]) -> None:
        lab.add_event("erin@northwind.com", "Revoked soon", soon(200), onlineMeeting={"joinUrl": teams_link(8101)})
        lab.sync(uid, conn["id"])
        until(lambda: lab.meeting(tok, "Revoked soon"))

    return _in_error_and_told(lab, Row("The user's grant is revoked (AADSTS50173)", "the user"),
                              "erin@northwind.com", with_a_meeting,
                              lambda: lab.sim("POST", "/_sim/users/erin@northwind.com/revoke"),
                              lambda uid, conn: lab.refresh(uid, conn["id"]))


def conditional_access(lab: Lab) -> Row:
    return _in_error_and_told(lab, Row("Conditional access starts blocking the app (AADSTS53003)", "their admin"),
                              "dave@contoso.com", lambda uid, tok, conn: None,
                              lambda: lab.token_fault(status=400, error="invalid_grant", aadsts="AADSTS53003",
                                                      count=1),
                              lambda uid, conn: lab.refresh(uid, conn["id"]))


def mailbox_lost_later(lab: Lab) -> Row:
    return _in_error_and_told(lab, Row("Mailbox becomes unreadable later (licence removed)", "their admin"),
                              "dave@contoso.com", lambda uid, tok, conn: lab.sync(uid, conn["id"]),
                              lambda: lab.sim("POST", "/_sim/users/dave@contoso.com/settings",
                                              {"mailbox_unavailable_status": 404}),
                              lambda uid, conn: lab.sync(uid, conn["id"]))


def mailbox_on_premises(lab: Lab) -> Row:
    row = Row("Mailbox Graph cannot read, found when connecting (frank, on-premises)", "their admin")
    _, tok = lab.user()
    mark = lab.mark()
    conn = lab.connect(tok, "frank@contoso.com")
    row.user_sees = card_text([conn]) + " on the card as it connects"
    row.silent = conn["status"] != "error"
    row.operator_sees = lab.operator(mark)
    return row


def _deployed_within(lab: Lab, uid: str, tok: str, title: str, timeout: float = 60) -> bool:
    return bool(until(lambda: any(d["body"]["title"] == title for d in lab.deployed(uid)), timeout=timeout))


def _meeting_through(lab: Lab, row: Row, title: str, link: int, inject: Callable[[], None],
                     shown: str = "agent deployed") -> Row:
    """A meeting due now on a synced calendar; the fault is injected, the calendar synced: its agent
    must still be deployed."""
    uid, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    lab.sync(uid, conn["id"])
    lab.add_event("alice@contoso.com", title, soon(5), onlineMeeting={"joinUrl": teams_link(link)})
    mark = lab.mark()
    inject()
    lab.sync(uid, conn["id"])
    ok = _deployed_within(lab, uid, tok, title)
    sent = len([d for d in lab.deployed(uid) if d["body"]["title"] == title])
    cards = lab.cards(tok)
    row.lost = 0 if ok else 1
    row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
    row.user_sees = card_text(cards) + (f"; {shown} ({sent} deployment)" if ok else "; NO agent")
    row.silent = not ok or sent != 1
    row.operator_sees = lab.operator(mark)
    return row


def graph_throttled(lab: Lab) -> Row:
    return _meeting_through(lab, Row("Graph throttles calendar reads (429, Retry-After 2 s, x3)", "nobody (Graph)"),
                            "Throttled", 8201, lambda: lab.sim("POST", "/_sim/faults", {
                                "path_prefix": "/v1.0/me/calendarView", "status": 429, "retry_after": 2, "count": 3}))


def graph_down(lab: Lab) -> Row:
    row = Row("Graph answers 503 to every calendar read for a while", "nobody (Graph)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    lab.sync(uid, conn["id"])
    lab.add_event("alice@contoso.com", "During outage", soon(6), onlineMeeting={"joinUrl": teams_link(8301)})
    mark = lab.mark()
    lab.sim("POST", "/_sim/faults", {"path_prefix": "/v1.0/me/calendarView", "status": 503, "count": 40})
    for _ in range(3):
        lab.sync(uid, conn["id"])
        time.sleep(2)
    cards = until(lambda: (s := lab.cards(tok)) and s[0]["warning"] and s, timeout=30) or lab.cards(tok)
    row.user_sees = card_text(cards)
    row.wrongly_flipped = sum(c["status"] == "error" for c in cards)
    lab.sim("DELETE", "/_sim/faults")
    lab.sync(uid, conn["id"])
    ok = _deployed_within(lab, uid, tok, "During outage")
    cleared = until(lambda: lab.cards(tok)[0]["warning"] is None, timeout=20)
    row.lost = 0 if ok else 1
    row.notes.append(("agent deployed after Graph recovers" if ok else "NO agent") +
                     ("; warning cleared" if cleared else "; warning stuck"))
    row.silent = not cards[0]["warning"]
    row.operator_sees = lab.operator(mark)
    return row


def bad_events(lab: Lab) -> Row:
    row = Row("Outsized events beside a good one (100 KB subject, 900 KB body, 12 KB passcode)", "nobody (data)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    start = soon(5)
    lab.add_event("alice@contoso.com", "x" * 100_000, start, onlineMeeting={"joinUrl": teams_link(8401)})
    lab.add_event("alice@contoso.com", "Huge body", start, body={"contentType": "html", "content": "<p>" +
                  "agenda " * 130_000 + f"{teams_link(8403)}</p>"})
    lab.add_event("alice@contoso.com", "Huge passcode", start,
                  onlineMeeting={"joinUrl": "https://contoso.zoom.us/j/81234567890?pwd=" + "%C3%A9" * 2000})
    lab.add_event("alice@contoso.com", "Good one", start + timedelta(minutes=1),
                  onlineMeeting={"joinUrl": teams_link(8402)})
    mark = lab.mark()
    lab.sync(uid, conn["id"])
    ok = _deployed_within(lab, uid, tok, "Good one")
    row.lost = 0 if ok else 1
    long_title = next((len(m["title"]) for m in lab.c.upcoming(tok) if m["title"].startswith("xxx")), None)
    row.user_sees = (card_text(lab.cards(tok)) + ("; good meeting's agent deployed" if ok else "; NO agent") +
                     (f"; long title stored as {long_title} chars" if long_title else ""))
    row.silent = not ok
    row.operator_sees = lab.operator(mark)
    return row


def deleted_occurrence(lab: Lab) -> Row:
    row = Row("An occurrence is deleted; Graph sends no @removed", "nobody (Graph)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "dave@contoso.com")
    start = soon(11)  # deploy time (start - 10 min) is a minute away: the message waits hidden
    series = lab.add_event("dave@contoso.com", "Daily (deleted today)", start,
                           onlineMeeting={"joinUrl": teams_link(8501)},
                           recurrence={"pattern": {"type": "daily", "interval": 1},
                                       "range": {"type": "numbered", "numberOfOccurrences": 3,
                                                 "startDate": start.strftime("%Y-%m-%d")}})
    lab.sync(uid, conn["id"])
    until(lambda: len([m for m in lab.c.upcoming(tok) if m["title"] == "Daily (deleted today)"]) == 3)
    window = {"startDateTime": (start - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "endDateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    today = [o for o in lab.c.sim("GET", "/_sim/users/dave@contoso.com/calendarView", params=window).json()["value"]
             if o.get("seriesMasterId") == series["id"]]
    mark = lab.mark()
    lab.sim("DELETE", f"/_sim/users/dave@contoso.com/events/{today[0]['id']}")
    time.sleep(75)  # past its deploy time: the deployer confirms the event first
    wrong = [d for d in lab.deployed(uid) if d["body"]["title"] == "Daily (deleted today)"]
    left = [m for m in lab.c.upcoming(tok) if m["title"] == "Daily (deleted today)"]
    row.user_sees = f"no agent sent ({len(wrong)} sent); {len(left)} of 3 occurrences still listed"
    row.silent = bool(wrong)
    row.notes.append("the deployer reads the occurrence by id (404) right before the agent API call")
    row.operator_sees = lab.operator(mark)
    return row


def delta_expired(lab: Lab) -> Row:
    return _meeting_through(lab, Row("The delta link expires (410 SyncStateNotFound)", "nobody (Graph)"),
                            "After expiry", 8601,
                            lambda: lab.sim("POST", "/_sim/users/alice@contoso.com/expire-delta"),
                            "agent deployed after a full resync")


def agent_api_flaky(lab: Lab) -> Row:
    return _meeting_through(lab, Row("Agent API answers 503 twice", "nobody (CoAgentor platform)"),
                            "Flaky agent API", 8701, lambda: lab.agent_fault(status=503, count=2))


def deploy_message_lost(lab: Lab) -> Row:
    row = Row("A deploy message is lost (queue cleared before it surfaces)", "nobody (queue)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    lab.sync(uid, conn["id"])
    lab.add_event("alice@contoso.com", "Lost message", soon(10.3), onlineMeeting={"joinUrl": teams_link(8801)})
    lab.sync(uid, conn["id"])
    until(lambda: (m := lab.meeting(tok, "Lost message")) and m["agent"] == "scheduled")
    queue = QueueClient.from_connection_string(lab.stack.app_settings()["AzureWebJobsStorage"], "agent-deployments")
    queue.clear_messages()
    mark = lab.mark()
    def resynced_and_deployed() -> bool:
        lab.sync(uid, conn["id"])
        return any(d["body"]["title"] == "Lost message" for d in lab.deployed(uid))

    ok = until(resynced_and_deployed, timeout=200, every=10)
    row.lost = 0 if ok else 1
    shown = lab.meeting(tok, "Lost message") or {}
    row.user_sees = f"agent {shown.get('agent')}" + ("" if ok else " — NOT deployed")
    row.silent = not ok
    row.notes.append("noticed by the next sync two minutes after its deploy time, queued again")
    row.operator_sees = lab.operator(mark)
    return row


def platform_events_down(lab: Lab) -> Row:
    row = Row("The platform's status-event endpoint answers 503 twice", "nobody (CoAgentor platform)")
    uid, tok = lab.user()
    conn = lab.connect(tok, "erin@northwind.com")
    mark = lab.mark()
    lab.agent_fault(status=503, count=2, path="/events")
    lab.sim("POST", "/_sim/users/erin@northwind.com/revoke")
    lab.refresh(uid, conn["id"])
    told = until(lambda: lab.events(uid), timeout=40) or []
    attempts = [e for e in lab.c.api.get(f"{lab.stack.agents_url}/_events?all=1", timeout=30).json()
                if json.loads(e["raw_body"]).get("subject") == uid]
    ids = {e["headers"].get("webhook-id") or e["headers"].get("Webhook-Id") for e in attempts}
    row.user_sees = f"told once ({', '.join(told) or 'not told'}) after {len(attempts)} attempts, {len(ids)} id"
    row.silent = not told
    row.operator_sees = lab.operator(mark)
    return row


def tenant_blocks_app(lab: Lab) -> Row:
    """Issue 19: one customer tenant's admin disables the enterprise app; another tenant is untouched."""
    row = Row("A customer tenant's admin disables the app (AADSTS7000112 for that tenant only)", "their admin")
    other_uid, other_tok = lab.user()
    other = lab.connect(other_tok, "dave@contoso.com")

    def restore_after(uid: str, conn: dict[str, Any]) -> None:
        lab.refresh(uid, conn["id"])
        lab.refresh(other_uid, other["id"])

    try:
        _in_error_and_told(lab, row, "erin@northwind.com", lambda uid, tok, conn: None,
                           lambda: lab.sim("POST", "/_sim/tenants/northwind/app", {"disabled": True}),
                           restore_after)
    finally:
        lab.sim("POST", "/_sim/tenants/northwind/app", {})
    others = lab.cards(other_tok)
    row.wrongly_flipped = sum(c["status"] == "error" for c in others)
    row.user_sees += f"; the other tenant's card: {card_text(others)}"
    row.silent = row.silent or bool(lab.events(other_uid))
    return row


def occurrence_deleted_400(lab: Lab) -> Row:
    """Issue 19: Graph re-emits nothing and answers 400 ErrorCalendarOccurrenceIsDeletedFromRecurrence."""
    row = Row("An occurrence is deleted; delta says nothing, by id 400 ErrorCalendarOccurrenceIsDeletedFromRecurrence",
              "nobody (Graph)")
    uid, tok = lab.user()
    rules = lab.c.call("GET", "autojoin/rules", tok).json()
    lab.c.call("PUT", "autojoin/rules", tok, json={**rules, "platforms": ["zoom"]})
    lab.sim("POST", "/_sim/config", {"occurrence_delete": {"master_reemitted": False, "get_by_id": 400}})
    start = soon(5)
    series = lab.add_event("dave@contoso.com", "Standup (gone today)", start,
                           onlineMeeting={"joinUrl": teams_link(8901)},
                           recurrence={"pattern": {"type": "daily", "interval": 1},
                                       "range": {"type": "numbered", "numberOfOccurrences": 2,
                                                 "startDate": start.strftime("%Y-%m-%d")}})
    conn = lab.connect(tok, "dave@contoso.com")
    lab.sync(uid, conn["id"])
    until(lambda: lab.meeting(tok, "Standup (gone today)"))
    window = {"startDateTime": (start - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "endDateTime": (start + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    [today] = [o for o in lab.c.sim("GET", "/_sim/users/dave@contoso.com/calendarView", params=window).json()["value"]
               if o.get("seriesMasterId") == series["id"]]
    mark = lab.mark()
    lab.sim("DELETE", f"/_sim/users/dave@contoso.com/events/{today['id']}")
    lab.c.call("PUT", "autojoin/rules", tok, json=rules)  # Teams joined again: the deploy is due now
    told = until(lambda: "agent.failed" in lab.events(uid)) and lab.events(uid)
    wrong = [d for d in lab.deployed(uid) if d["body"]["title"] == "Standup (gone today)"]
    row.user_sees = f"no agent sent ({len(wrong)} sent); status events: {', '.join(told or []) or 'none'}"
    row.lost = 0
    row.silent = bool(wrong) or not told
    row.notes.append("fails closed: the deployer reads the occurrence by id right before the agent API call")
    row.operator_sees = lab.operator(mark)
    return row


def subscription_removed_silently(lab: Lab) -> Row:
    """Issue 19: Graph removes the subscription without a word; the scan notices within one period."""
    row = Row("Graph removes a subscription without a word (no subscriptionRemoved)", "nobody (Graph)")
    _, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    sub = until(lambda: next((s for s in lab.sim("GET", "/_sim/subscriptions")
                              if s["notificationUrl"].endswith(f"connection={conn['id']}")), None))
    mark = lab.mark()
    lab.sim("POST", f"/_sim/subscriptions/{sub['id']}/remove", {"notify": False})
    lab.add_event("alice@contoso.com", "Made while unsubscribed", soon(300),
                  onlineMeeting={"joinUrl": teams_link(8902)})
    lab.c.run_function("scan_calendars")
    new = until(lambda: next((s for s in lab.sim("GET", "/_sim/subscriptions")
                              if s["notificationUrl"].endswith(f"connection={conn['id']}") and s["id"] != sub["id"]),
                             None))
    listed = until(lambda: lab.meeting(tok, "Made while unsubscribed"))
    lab.add_event("alice@contoso.com", "Made after", soon(301), onlineMeeting={"joinUrl": teams_link(8903)})
    notified = until(lambda: lab.meeting(tok, "Made after"))
    row.user_sees = (f"meeting made meanwhile {'listed' if listed else 'NOT listed'} after the scan; "
                     f"a later change {'notified' if notified else 'NOT notified'}")
    row.silent = not (new and listed and notified)
    row.notes.append("one GET /subscriptions per connection and scan period; a new subscription, then a resync")
    row.operator_sees = lab.operator(mark)
    return row


def reauthorization_pause(lab: Lab) -> Row:
    """Issue 19: Graph challenges the subscription and holds notifications back until reauthorized."""
    row = Row("Graph pauses notifications for reauthorization (reauthorizationRequired)", "nobody (Graph)")
    _, tok = lab.user()
    conn = lab.connect(tok, "alice@contoso.com")
    sub = until(lambda: next((s for s in lab.sim("GET", "/_sim/subscriptions")
                              if s["notificationUrl"].endswith(f"connection={conn['id']}")), None))
    mark = lab.mark()
    lab.token_fault(latency_ms=3000, count=1)  # the fresh token takes a while: the change lands in the pause
    lab.sim("POST", f"/_sim/subscriptions/{sub['id']}/lifecycle", {"lifecycleEvent": "reauthorizationRequired"})
    lab.add_event("alice@contoso.com", "Made during the pause", soon(302), onlineMeeting={"joinUrl": teams_link(8904)})
    resumed = until(lambda: any(s["id"] == sub["id"] and not s["paused"]
                                for s in lab.sim("GET", "/_sim/subscriptions")))
    listed = until(lambda: lab.meeting(tok, "Made during the pause"))
    row.user_sees = f"meeting made during the pause {'listed' if listed else 'NOT listed'}"
    row.silent = not (resumed and listed)
    row.notes.append("reauthorized with a token issued after the challenge, then the calendar read")
    row.operator_sees = lab.operator(mark)
    return row


SCENARIOS: list[Callable[[Lab], Row]] = [
    token_outage, token_timeout, app_secret_expired, app_disabled, grant_revoked, conditional_access,
    mailbox_on_premises, mailbox_lost_later, graph_throttled, graph_down, bad_events, deleted_occurrence,
    delta_expired, agent_api_flaky, deploy_message_lost, platform_events_down,
    tenant_blocks_app, occurrence_deleted_400, subscription_removed_silently, reauthorization_pause,
]


def _vault(stack: Stack) -> Any:
    from azure.identity import ClientSecretCredential
    from azure.keyvault.secrets import SecretClient

    s = stack.app_settings()
    assert stack.ca is not None
    cred = ClientSecretCredential(s["AZURE_TENANT_ID"], s["AZURE_CLIENT_ID"], s["AZURE_CLIENT_SECRET"],
                                  authority=s["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
                                  connection_verify=str(stack.ca.bundle_pem))
    return SecretClient(stack.key_vault_url, cred, verify_challenge_resource=False,
                        connection_verify=str(stack.ca.bundle_pem))


def run(only: list[str] | None = None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        stack = Stack(devstack_dir=Path(tmp), ports=free_ports(), overrides=OVERRIDES)
        stack.start(timeout=120)
        try:
            lab = Lab(stack)
            rows = []
            for scenario in SCENARIOS:
                if only and scenario.__name__ not in only:
                    continue
                lab.c.sim("POST", "/_sim/reset")
                lab.c.sim("DELETE", "/_sim/faults")
                started = time.monotonic()
                try:
                    row = scenario(lab)
                except Exception as exc:  # a broken scenario is reported, never hidden
                    row = Row(scenario.__name__, "?", notes=[f"scenario failed: {type(exc).__name__}: {exc}"],
                              silent=True)
                row.notes.append(f"{time.monotonic() - started:.0f} s")
                print(f"{row.fault}: lost {row.lost}, wrongly flipped {row.wrongly_flipped}, "
                      f"silent {row.silent} — {row.user_sees}", file=sys.stderr)
                rows.append(row)
            return rows
        finally:
            stack.stop()


def markdown(rows: list[Row], command: str) -> str:
    lost = sum(r.lost for r in rows)
    flipped = sum(r.wrongly_flipped for r in rows)
    silent = sum(r.silent for r in rows)
    out = [
        "| Fault injected | Who can fix it | What the user sees | What the operator sees | Lost | Wrongly in Error | "
        "Silent | Notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.fault, r.fixed_by, r.user_sees, r.operator_sees, str(r.lost), str(r.wrongly_flipped),
                 "yes" if r.silent else "no", "; ".join(r.notes)]
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    summary = (f"Faults tried: **{len(rows)}**. Connections wrongly flipped to Error: **{flipped}**. "
               f"Meetings that lost their agent: **{lost}**. Silent failures: **{silent}**.")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!-- fault-matrix:start -->\n{summary}\n\nProduced by `{command}` on {stamp}.\n\n" + \
        "\n".join(out) + "\n<!-- fault-matrix:end -->\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, help="rewrite the matrix between the markers in this file")
    parser.add_argument("--only", nargs="*", help="scenario function names to run")
    args = parser.parse_args(argv)
    rows = run(args.only)
    table = markdown(rows, "make faults")
    if args.write:
        text = args.write.read_text() if args.write.exists() else ""
        if "<!-- fault-matrix:start -->" in text:
            head, rest = text.split("<!-- fault-matrix:start -->", 1)
            tail = rest.split("<!-- fault-matrix:end -->", 1)[1].lstrip("\n")
            text = head + table + "\n" + tail
        else:
            text = text + "\n" + table
        args.write.write_text(text)
    print(table)
    bad = sum(r.lost + r.wrongly_flipped + r.silent for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
