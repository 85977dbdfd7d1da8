# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""The Graph adapter against the simulator: the calendar probe, mailboxes Graph cannot read, a series'
live instances after one occurrence is deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.graph import GraphCalendar
from shared.adapters.http import TimeoutSession
from shared.ports import CalendarUnavailable
from shared.scheduling import sync_window
from tests.integration.test_identity_faults import Vault, identity, signed_in
from tests.integration.test_simulator import CLIENT_SECRET, ca, seeded, session, sim  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


def graph(sim, ca) -> GraphCalendar:
    http = TimeoutSession(10)
    http.trust_env = False
    http.verify = str(ca.bundle_pem)
    return GraphCalendar(base_url=f"{sim.base_url}/v1.0", session=http, timeout=10, sleep=lambda s: None)


def test_the_probe_passes_for_a_cloud_mailbox_and_names_one_graph_cannot_read(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    g = graph(sim, ca)
    g.probe(signed_in(sim, session, ident, "alice@contoso.com").access_token)
    frank = signed_in(sim, session, ident, "frank@contoso.com")
    assert g.me_email(frank.access_token) == "frank@contoso.com"  # signs in, /me works
    with pytest.raises(CalendarUnavailable) as raised:
        g.probe(frank.access_token)
    assert raised.value.code == "MailboxNotEnabledForRESTAPI"
    with pytest.raises(CalendarUnavailable):
        g.delta_first(frank.access_token, sync_window(datetime.now(UTC), 14))


def test_instances_list_only_the_live_occurrences(sim, session, ca):
    ident = identity(sim, ca, Vault(CLIENT_SECRET))
    token = signed_in(sim, session, ident, "dave@contoso.com").access_token
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=15, minute=0, second=0, microsecond=0)
    master = session.post(f"{sim.base_url}/_sim/users/dave@contoso.com/events", json={
        "subject": "Standup", "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "recurrence": {"pattern": {"type": "daily", "interval": 1},
                       "range": {"type": "numbered", "numberOfOccurrences": 3,
                                 "startDate": start.strftime("%Y-%m-%d")}},
    }).json()
    g = graph(sim, ca)
    window = sync_window(datetime.now(UTC), 14)
    live = g.instances(token, master["id"], window)
    assert live is not None and len(live) == 3
    session.delete(f"{sim.base_url}/_sim/users/dave@contoso.com/events/{live[1]['id']}").raise_for_status()
    assert [o["id"] for o in g.instances(token, master["id"], window) or []] == [live[0]["id"], live[2]["id"]]
    assert g.event(token, live[1]["id"]) is None  # 404 ErrorItemNotFound: gone
    session.delete(f"{sim.base_url}/_sim/users/dave@contoso.com/events/{master['id']}").raise_for_status()
    assert g.instances(token, master["id"], window) is None
