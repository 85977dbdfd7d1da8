# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""Calendars beyond the default one in the simulator, driven through the app's Graph adapter as
Graph v1.0 documents them: `/me/calendars` lists them, `/me/calendars/{id}/calendarView` reads one,
delta on it is beta only (400), `/me/events` and its delta cover the default calendar only, and
subscriptions on a secondary calendar notify only when `secondary_calendar_notifications` is on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.graph import GraphCalendar
from shared.adapters.http import TimeoutSession
from shared.ports import CalendarGone
from shared.scheduling import sync_window
from tests.e2e.client import eventually
from tests.integration.test_identity_faults import Vault, identity, signed_in
from tests.integration.test_simulator import CLIENT_SECRET, ca, seeded, session, sim  # noqa: F401
from tests.integration.test_simulator_subscriptions import Endpoint, endpoint, subscriptions  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")
UPN = "dave@contoso.com"


@pytest.fixture
def dave(sim, session, ca) -> str:
    return signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), UPN).access_token


def graph(sim, ca) -> GraphCalendar:
    http = TimeoutSession(15)
    http.trust_env = False
    http.verify = str(ca.bundle_pem)
    return GraphCalendar(base_url=f"{sim.base_url}/v1.0", session=http, timeout=15, sleep=lambda s: None)


def add(session, sim, subject: str, calendar_id: str | None = None) -> dict:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    body = {"subject": subject, "start": {"dateTime": start.isoformat()[:19], "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()[:19], "timeZone": "UTC"}}
    if calendar_id:
        body["calendar_id"] = calendar_id
    resp = session.post(f"{sim.base_url}/_sim/users/{UPN}/events", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_calendars_are_listed_and_each_read_on_its_own(sim, session, ca, dave):
    made = session.post(f"{sim.base_url}/_sim/users/{UPN}/calendars", json={"name": "Team"})
    assert made.status_code == 201
    team = made.json()["id"]
    client = graph(sim, ca)
    listed = {c.name: c for c in client.calendars(dave)}
    assert listed["Calendar"].is_default and not listed["Team"].is_default and listed["Team"].id == team
    raw = session.get(f"{sim.base_url}/v1.0/me/calendars", headers={"Authorization": f"Bearer {dave}"}).json()
    assert all({"isDefaultCalendar", "canEdit", "owner"} <= set(c) for c in raw["value"])

    add(session, sim, "In the default calendar")
    add(session, sim, "In the team calendar", team)
    window = sync_window(datetime.now(UTC), 7)
    events, requests_made = client.calendar_view(dave, team, window)
    assert [e["subject"] for e in events] == ["In the team calendar"] and requests_made == 1
    delta = client.delta_first(dave, window).events
    assert [e.get("subject") for e in delta] == ["In the default calendar"]  # delta: the default only
    beta_only = session.get(f"{sim.base_url}/v1.0/me/calendars/{team}/calendarView/delta",
                            params={"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2026-01-02T00:00:00Z"},
                            headers={"Authorization": f"Bearer {dave}"})
    assert beta_only.status_code == 400

    assert session.delete(f"{sim.base_url}/_sim/users/{UPN}/calendars/{team}").status_code == 204
    with pytest.raises(CalendarGone):
        client.calendar_view(dave, team, window)
    assert [c.name for c in client.calendars(dave)] == ["Calendar"]


def test_a_secondary_calendars_subscription_notifies_only_when_configured(sim, session, ca, dave, endpoint):
    team = session.post(f"{sim.base_url}/_sim/users/{UPN}/calendars", json={"name": "Team"}).json()["id"]
    created = subscriptions(sim, ca).create(
        dave, notification_url=endpoint.url, lifecycle_url=f"{endpoint.url}/lifecycle", client_state="s" * 40,
        expires_at=datetime.now(UTC) + timedelta(days=1), resource=f"/me/calendars/{team}/events")
    everything = subscriptions(sim, ca).create(
        dave, notification_url=endpoint.url, lifecycle_url=f"{endpoint.url}/lifecycle", client_state="e" * 40,
        expires_at=datetime.now(UTC) + timedelta(days=1))
    quiet = add(session, sim, "Not notified", team)
    default = add(session, sim, "Notified on /me/events")
    items = eventually(lambda: (found := endpoint.items()) and found)
    assert {(i["subscriptionId"], i["resourceData"]["id"]) for i in items} == {(everything.id, default["id"])}
    assert quiet["id"] not in {i["resourceData"]["id"] for i in endpoint.items()}

    session.post(f"{sim.base_url}/_sim/config", json={"secondary_calendar_notifications": True}).raise_for_status()
    loud = add(session, sim, "Notified on its calendar", team)
    eventually(lambda: any(i["subscriptionId"] == created.id and i["resourceData"]["id"] == loud["id"]
                           for i in endpoint.items()))
