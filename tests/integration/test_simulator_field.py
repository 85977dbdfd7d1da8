# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""The simulator behaves like Microsoft in the field (DEVSTACK.md, "Microsoft as it behaves in the
field"): duplicated and late notifications, deliveries given up with `missed`, slow endpoints
throttled, reauthorization challenges that pause delivery, subscriptions removed without a word,
an app disabled or deleted in one customer tenant, and what a deleted occurrence looks like."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.ports import SubscriptionGone, TokenError
from tests.e2e.client import eventually
from tests.integration.test_identity_faults import Vault, identity, signed_in
from tests.integration.test_simulator import CLIENT_SECRET, ca, seeded, session, sim  # noqa: F401
from tests.integration.test_simulator_subscriptions import (  # noqa: F401
    Endpoint,
    endpoint,
    event,
    subscribe,
    subscriptions,
)

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


def configure(sim, session, **values: Any) -> dict[str, Any]:
    resp = session.post(f"{sim.base_url}/_sim/config", json=values)
    assert resp.status_code == 200, resp.text
    config: dict[str, Any] = resp.json()
    return config


def fresh_token(sim, session, ca, upn: str = "dave@contoso.com") -> str:
    return signed_in(sim, session, identity(sim, ca, Vault(CLIENT_SECRET)), upn).access_token


def listed(sim, session) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = session.get(f"{sim.base_url}/_sim/subscriptions").json()
    return found


def next_second() -> None:
    """Tokens carry whole seconds (`iat`): let the clock pass into the next one, so that a token
    issued before a challenge is told apart from one issued after it."""
    start = int(time.time())
    eventually(lambda: int(time.time()) > start, timeout=3, interval=0.05)


# ---------------------------------------------------------------- /_sim/config
def test_the_field_knobs_default_to_fast_values_and_reset_restores_them(sim, session):
    config = session.get(f"{sim.base_url}/_sim/config").json()
    assert config["notification_latency_seconds"] == [0.0, 0.5] and config["notification_duplicates"] == 1
    assert config["notification_retry_seconds"] == 60 and config["slow_endpoint_delay_seconds"] == 30
    assert (config["access_token_lifetime_seconds"], config["reauthorization_lead_seconds"]) == (3600, 600)
    assert config["occurrence_delete"] == {"master_reemitted": True, "get_by_id": 404}
    configure(sim, session, notification_duplicates=3, occurrence_delete={"get_by_id": 400})
    changed = session.get(f"{sim.base_url}/_sim/config").json()
    assert changed["notification_duplicates"] == 3
    assert changed["occurrence_delete"] == {"master_reemitted": True, "get_by_id": 400}
    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()
    assert session.get(f"{sim.base_url}/_sim/config").json() == config


@pytest.mark.parametrize("bad", [
    {"notification_duplicates": 2, "no_such_knob": 1},
    {"notification_duplicates": 2, "notification_latency_seconds": [3, 1]},
    {"notification_duplicates": 2, "occurrence_delete": {"get_by_id": 500}},
    {"notification_duplicates": 2, "occurrence_delete": {"sometimes": True}},
    {"notification_duplicates": 2, "slow_endpoint_delay_seconds": -1},
])
def test_a_bad_or_unknown_knob_is_refused_by_name_and_nothing_of_the_request_is_applied(sim, session, bad):
    before = session.get(f"{sim.base_url}/_sim/config").json()
    resp = session.post(f"{sim.base_url}/_sim/config", json=bad)
    assert resp.status_code == 400
    wrong = next(k for k in bad if k != "notification_duplicates")
    assert wrong in resp.json()["error"]["message"]
    assert session.get(f"{sim.base_url}/_sim/config").json() == before


# ---------------------------------------------------------------- delivery
def test_each_notification_arrives_as_many_times_as_configured(sim, session, ca, endpoint):
    configure(sim, session, notification_duplicates=3, notification_latency_seconds=[0.1, 0.6])
    created = subscribe(sim, ca, fresh_token(sim, session, ca), endpoint)
    stored = event(session, sim, "Said three times")
    items = eventually(lambda: (found := endpoint.items()) and len(found) >= 3 and found, timeout=15)
    assert len({i["id"] for i in items}) == 1  # the same notification, delivered again (at least once)
    assert all(i["subscriptionId"] == created.id and i["resourceData"]["id"] == stored["id"] for i in items)


def test_a_notification_never_taken_is_dropped_and_reported_missed(sim, session, ca, endpoint):
    configure(sim, session, notification_retry_seconds=2)
    created = subscribe(sim, ca, fresh_token(sim, session, ca), endpoint)
    endpoint.status = 503
    event(session, sim, "Never taken")
    missed = eventually(lambda: [i for i in endpoint.items("/lifecycle") if i["lifecycleEvent"] == "missed"],
                        timeout=20)
    assert missed[0]["subscriptionId"] == created.id
    log = session.get(f"{sim.base_url}/_sim/notifications").json()
    assert any(d.get("dropped") for d in log if d["kind"] == "change")
    assert max(d["attempt"] for d in log if d["kind"] == "change") >= 2  # retried before giving up


def test_an_endpoint_that_answers_slowly_is_throttled_then_dropped_with_missed(sim, session, ca, endpoint):
    configure(sim, session, slow_endpoint_delay_seconds=1, notification_retry_seconds=120)
    subscribe(sim, ca, fresh_token(sim, session, ca), endpoint)
    endpoint.delay = 3.1  # over Graph's 3 s: slow, and not taken
    event(session, sim, "Answered too slowly")
    eventually(lambda: [i for i in endpoint.items("/lifecycle") if i["lifecycleEvent"] == "missed"], timeout=60)
    log = [d for d in session.get(f"{sim.base_url}/_sim/notifications").json() if d["kind"] == "change"]
    assert any("slow" in (d.get("dropped") or "") for d in log)
    assert len([d for d in log if not d.get("dropped")]) >= 3  # 3 slow answers of the last 20: 15 %


# ---------------------------------------------------------------- reauthorization
def test_a_challenged_subscription_pauses_until_reauthorized_with_a_token_issued_after_it(sim, session, ca, endpoint):
    configure(sim, session, access_token_lifetime_seconds=3600, reauthorization_lead_seconds=600)
    old = fresh_token(sim, session, ca)
    created = subscribe(sim, ca, old, endpoint)
    next_second()
    # A token that expires within the lead: the subscription it authorizes is challenged at once.
    configure(sim, session, access_token_lifetime_seconds=601)
    graph = subscriptions(sim, ca)
    graph.renew(fresh_token(sim, session, ca), created.id, datetime.now(UTC) + timedelta(days=2))
    challenge = eventually(lambda: [i for i in endpoint.items("/lifecycle")
                                    if i["lifecycleEvent"] == "reauthorizationRequired"], timeout=10)
    assert challenge[0]["subscriptionId"] == created.id
    [paused] = listed(sim, session)
    assert paused["paused"] is True and paused["reauthorizationRequired"] is True
    lost = event(session, sim, "Made during the pause")
    graph.renew(old, created.id, datetime.now(UTC) + timedelta(days=2))  # a token from before: still paused
    assert listed(sim, session)[0]["paused"] is True
    configure(sim, session, access_token_lifetime_seconds=3600)
    graph.renew(fresh_token(sim, session, ca), created.id, datetime.now(UTC) + timedelta(days=2))
    assert listed(sim, session)[0]["paused"] is False
    seen = event(session, sim, "Made after reauthorizing")
    eventually(lambda: [i for i in endpoint.items() if i["resourceData"]["id"] == seen["id"]], timeout=10)
    assert lost["id"] not in {i["resourceData"]["id"] for i in endpoint.items()}  # never notified


def test_a_personal_accounts_subscription_pauses_without_a_challenge(sim, session, ca, endpoint):
    configure(sim, session, access_token_lifetime_seconds=601)  # within the 600 s lead at once
    bob = fresh_token(sim, session, ca, "bob@outlook.com")
    created = subscribe(sim, ca, bob, endpoint)
    eventually(lambda: listed(sim, session)[0]["paused"], timeout=10)
    quiet = session.post(f"{sim.base_url}/_sim/users/bob@outlook.com/events", json={
        "subject": "Never notified", "start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2030-01-01T10:30:00", "timeZone": "UTC"}}).json()
    next_second()
    configure(sim, session, access_token_lifetime_seconds=3600)
    subscriptions(sim, ca).renew(fresh_token(sim, session, ca, "bob@outlook.com"), created.id,
                                 datetime.now(UTC) + timedelta(days=2))
    assert listed(sim, session)[0]["paused"] is False
    loud = session.post(f"{sim.base_url}/_sim/users/bob@outlook.com/events", json={
        "subject": "Notified", "start": {"dateTime": "2030-01-02T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2030-01-02T10:30:00", "timeZone": "UTC"}}).json()
    eventually(lambda: [i for i in endpoint.items() if i["resourceData"]["id"] == loud["id"]], timeout=10)
    assert quiet["id"] not in {i["resourceData"]["id"] for i in endpoint.items()}
    assert endpoint.items("/lifecycle") == []  # no lifecycle notification ever reaches a personal account


# ---------------------------------------------------------------- removal without a word
def test_a_subscription_removed_silently_answers_404_and_nothing_is_said(sim, session, ca, endpoint):
    token = fresh_token(sim, session, ca)
    created = subscribe(sim, ca, token, endpoint)
    resp = session.post(f"{sim.base_url}/_sim/subscriptions/{created.id}/remove", json={"notify": False})
    assert resp.status_code == 200 and resp.json()["announced"] is False
    with pytest.raises(SubscriptionGone):
        subscriptions(sim, ca).renew(token, created.id, datetime.now(UTC) + timedelta(days=1))
    event(session, sim, "Nobody hears of this")
    announced = subscribe(sim, ca, token, endpoint)
    session.post(f"{sim.base_url}/_sim/subscriptions/{announced.id}/remove", json={"notify": True}).raise_for_status()
    removed = eventually(lambda: endpoint.items("/lifecycle"), timeout=10)
    assert [(i["lifecycleEvent"], i["subscriptionId"]) for i in removed] == [("subscriptionRemoved", announced.id)]
    assert endpoint.items() == []  # the silent one's change was never notified


def test_revoking_an_account_removes_its_subscriptions_announced_for_work_silently_for_personal(
        sim, session, ca, endpoint):
    dave = subscribe(sim, ca, fresh_token(sim, session, ca), endpoint)
    bob_endpoint = Endpoint()
    try:
        subscribe(sim, ca, fresh_token(sim, session, ca, "bob@outlook.com"), bob_endpoint)
        for upn in ("dave@contoso.com", "bob@outlook.com"):
            session.post(f"{sim.base_url}/_sim/users/{upn}/revoke").raise_for_status()
        assert listed(sim, session) == []
        removed = eventually(lambda: endpoint.items("/lifecycle"), timeout=10)
        assert [(i["lifecycleEvent"], i["subscriptionId"]) for i in removed] == [("subscriptionRemoved", dave.id)]
        assert bob_endpoint.items("/lifecycle") == []
    finally:
        bob_endpoint.server.shutdown()


# ---------------------------------------------------------------- an app blocked in one tenant
@pytest.mark.parametrize(("state", "code"), [("disabled", 7000112), ("deleted", 700016)])
def test_an_app_blocked_by_one_tenants_admin_fails_that_tenants_tokens_only(sim, session, ca, state, code):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    dave = signed_in(sim, session, ident, "dave@contoso.com")
    erin = signed_in(sim, session, ident, "erin@northwind.com")
    assert session.post(f"{sim.base_url}/_sim/tenants/contoso/app", json={state: True}).json()[state] is True
    refused = ident.acquire(dave.cache, dave.home_account_id, force_refresh=True)
    assert isinstance(refused, TokenError) and refused.error == "unauthorized_client"
    assert refused.error_codes == (code,)
    if code == 700016:
        assert "Contoso" in refused.description  # the directory it is missing from
    assert not isinstance(ident.acquire(erin.cache, erin.home_account_id, force_refresh=True), TokenError)
    session.post(f"{sim.base_url}/_sim/tenants/contoso/app", json={}).raise_for_status()
    later = identity(sim, ca, Vault(CLIENT_SECRET))  # MSAL holds back an identical refused request for 60 s
    assert not isinstance(later.acquire(dave.cache, dave.home_account_id, force_refresh=True), TokenError)


def test_tenant_app_knob_refuses_unknown_tenants_and_states(sim, session):
    assert session.post(f"{sim.base_url}/_sim/tenants/nowhere/app", json={"disabled": True}).status_code == 404
    assert session.post(f"{sim.base_url}/_sim/tenants/contoso/app", json={"paused": True}).status_code == 400
    both = session.post(f"{sim.base_url}/_sim/tenants/contoso/app", json={"disabled": True, "deleted": True})
    assert both.status_code == 400


# ---------------------------------------------------------------- deleted occurrences
def _series(session, sim) -> tuple[dict[str, Any], str]:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    master = session.post(f"{sim.base_url}/_sim/users/dave@contoso.com/events", json={
        "subject": "Daily", "start": {"dateTime": start.isoformat()[:19], "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=15)).isoformat()[:19], "timeZone": "UTC"},
        "recurrence": {"pattern": {"type": "daily", "interval": 1},
                       "range": {"type": "numbered", "startDate": start.date().isoformat(),
                                 "numberOfOccurrences": 3}}}).json()
    view = session.get(f"{sim.base_url}/_sim/users/dave@contoso.com/calendarView", params={
        "startDateTime": start.isoformat(), "endDateTime": (start + timedelta(days=3)).isoformat()}).json()["value"]
    return master, view[1]["id"]


def _delta(session, sim, token: str, link: str | None = None) -> tuple[list[dict[str, Any]], str]:
    now = datetime.now(UTC)
    url = link or f"{sim.base_url}/v1.0/me/calendarView/delta"
    params = None if link else {"startDateTime": now.isoformat(), "endDateTime": (now + timedelta(days=7)).isoformat()}
    items: list[dict[str, Any]] = []
    while True:
        page = session.get(url, params=params, headers={"Authorization": f"Bearer {token}"}).json()
        items += page["value"]
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        url, params = page["@odata.nextLink"], None


@pytest.mark.parametrize(("reemitted", "by_id"), [(True, 404), (False, 400)])
def test_a_deleted_occurrence_is_shown_as_configured(sim, session, ca, reemitted, by_id):
    configure(sim, session, occurrence_delete={"master_reemitted": reemitted, "get_by_id": by_id})
    token = fresh_token(sim, session, ca)
    master, occurrence = _series(session, sim)
    _, link = _delta(session, sim, token)
    session.delete(f"{sim.base_url}/_sim/users/dave@contoso.com/events/{occurrence}").raise_for_status()
    changed, _ = _delta(session, sim, token, link)
    assert (master["id"] in {i["id"] for i in changed}) is reemitted
    assert occurrence not in {i["id"] for i in changed}  # never an @removed for the occurrence itself
    answer = session.get(f"{sim.base_url}/v1.0/me/events/{occurrence}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == by_id
    expected = "ErrorItemNotFound" if by_id == 404 else "ErrorCalendarOccurrenceIsDeletedFromRecurrence"
    assert answer.json()["error"]["code"] == expected
