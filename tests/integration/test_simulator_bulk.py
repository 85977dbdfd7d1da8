# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""Bulk seeding for load tests (`POST /_sim/users`): thousands of work accounts with their mailboxes
in a few requests. An added account signs in and is read through Graph as a seeded one is; a bad
request adds nothing; the cumulative counters in `/_sim/stats` count what the bounded logs drop."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.scheduling import sync_window
from tests.integration.test_identity_faults import Vault, identity, signed_in
from tests.integration.test_simulator import CLIENT_SECRET, ca, seeded, session, sim  # noqa: F401
from tests.integration.test_simulator_calendars import graph

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


def event(subject: str, days: int) -> dict:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0, tzinfo=None)
    return {"subject": subject, "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat(), "timeZone": "UTC"}}


def test_bulk_accounts_sign_in_and_their_mailboxes_answer_graph(sim, session, ca):
    run = uuid.uuid4().hex[:6]
    accounts = [{"upn": f"load-{run}-{i}@contoso.com", "events": [event(f"M{i}-{d}", d) for d in (1, 2, 3)]}
                for i in range(3)]
    accounts.append({"upn": f"load-{run}-nw@northwind.com", "display_name": "Nora West"})
    made = session.post(f"{sim.base_url}/_sim/users", json={"accounts": accounts})
    assert made.status_code == 201, made.text
    assert made.json() == {"accounts": 4, "events": 9}
    before = session.get(f"{sim.base_url}/_sim/stats").json()

    upn = accounts[1]["upn"]
    token = signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), upn).access_token
    page = graph(sim, ca).delta_first(token, sync_window(datetime.now(UTC), 7))
    assert sorted(e.get("subject") for e in page.events) == ["M1-1", "M1-2", "M1-3"]
    listed = {u["upn"]: u for u in session.get(f"{sim.base_url}/_sim/users").json()["value"]}
    assert listed[accounts[3]["upn"]]["display_name"] == "Nora West"
    assert listed[accounts[3]["upn"]]["tenant_id"] != listed[upn]["tenant_id"]  # northwind, not contoso

    after = session.get(f"{sim.base_url}/_sim/stats").json()
    assert after["token_requests"] >= before["token_requests"] + 1
    assert after["graph_requests"] >= before["graph_requests"] + 1


@pytest.mark.parametrize("bad", [
    {"upn": "alice@contoso.com"},  # exists
    {"upn": "someone@example.org"},  # no work tenant owns the domain
    {"upn": "someone@outlook.com"},  # personal accounts are not made in bulk
    {"upn": "ok-{run}@contoso.com", "events": [{"subject": "no start"}]},
])
def test_a_bad_bulk_request_adds_nothing_and_says_why(sim, session, bad):
    run = uuid.uuid4().hex[:6]
    good = {"upn": f"fine-{run}@contoso.com", "events": [event("Fine", 1)]}
    bad = {k: v.format(run=run) if isinstance(v, str) else v for k, v in bad.items()}
    answer = session.post(f"{sim.base_url}/_sim/users", json={"accounts": [good, bad]})
    assert answer.status_code == 400 and answer.json()["error"]["message"]
    upns = {u["upn"] for u in session.get(f"{sim.base_url}/_sim/users").json()["value"]}
    assert good["upn"] not in upns
    retried = session.post(f"{sim.base_url}/_sim/users", json={"accounts": [good]})
    assert retried.status_code == 201  # nothing was half-added: the good one can be added now


def test_reset_keeps_bulk_accounts_with_empty_mailboxes(sim, session):
    upn = f"keep-{uuid.uuid4().hex[:6]}@contoso.com"
    session.post(f"{sim.base_url}/_sim/users", json={"accounts": [{"upn": upn, "events": [event("X", 1)]}]}
                 ).raise_for_status()
    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()
    assert session.get(f"{sim.base_url}/_sim/users/{upn}/events").json() == {"value": []}
