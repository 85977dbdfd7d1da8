"""`python -m devstack demo` (the README's on-ramp): against a running stack it fills the simulator's
mailboxes with meetings that show up for whoever connects them, says where to look, and can be run
again without doubling anything up."""

from __future__ import annotations

import uuid

import pytest

from devstack.__main__ import main
from devstack.demo import PREFIX
from tests.e2e.client import Client, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack) -> Client:
    return Client(stack)


def _demo_events(client, upn: str) -> list[dict]:
    value = client.sim("GET", f"/_sim/users/{upn}/events").json()["value"]
    return [e for e in value if e["subject"].startswith(PREFIX)]


def test_the_demo_seeds_meetings_a_connected_calendar_shows_and_says_where_to_look(stack, client, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("DEVSTACK_DIR", str(stack.devstack_dir))
    try:
        assert main(["demo"]) == 0
        assert main(["demo"]) == 0  # again: its own meetings are replaced, not doubled
        out = capsys.readouterr().out
        assert f"{stack.functions_url}/api/integrations#token=" in out
        assert "sign in as alice@contoso.com" in out and f"{stack.agents_url}/_recorded" in out
        assert len(_demo_events(client, "alice@contoso.com")) == 5
        assert len(_demo_events(client, "bob@outlook.com")) == 1

        token = client.token(f"demo-{uuid.uuid4().hex[:8]}", "solo")
        client.connect(token, "alice@contoso.com")
        titles = {"Design review", "Customer call", "Weekly sync", "Vendor pitch"}
        shown = eventually(lambda: (m := {x["title"].removeprefix(PREFIX): x for x in client.upcoming(token)
                                          if x["title"].startswith(PREFIX)}) and set(m) == titles and m,
                           timeout=60, interval=1)
        assert shown["Vendor pitch"]["will_join"] is False and shown["Vendor pitch"]["why"] == "external_unanswered"
        joined = titles - {"Vendor pitch"}
        assert {t: shown[t]["why"] for t in joined} == dict.fromkeys(joined, "rules")
        assert client.call("DELETE", "outlook/data", token).status_code == 202
    finally:
        for upn in ("alice@contoso.com", "bob@outlook.com"):
            for event in _demo_events(client, upn):
                client.sim("DELETE", f"/_sim/users/{upn}/events/{event['id']}")


def test_the_demo_without_a_running_stack_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEVSTACK_DIR", str(tmp_path))
    assert main(["demo"]) == 1
    assert "start it with `make dev`" in capsys.readouterr().err
