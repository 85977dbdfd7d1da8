"""`make dev` gives the app every setting it reads, valid, without anything set by hand."""

from __future__ import annotations

from devstack.stack import Stack, ports_from_env
from shared.config import SETTINGS, load_settings


def test_dev_settings_cover_every_setting_and_validate(tmp_path, monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    stack = Stack(devstack_dir=tmp_path, ports=ports_from_env({}))
    stack.prepare()
    settings = stack.app_settings()
    missing = [n for n, d in SETTINGS.items() if d and not n.startswith("AzureWebJobsStorage") and n not in settings]
    assert not missing
    loaded = load_settings(settings)
    assert loaded.outlook_redirect_uri == "http://127.0.0.1:7071/api/outlook/callback"
    assert loaded.outlook_authority == "https://127.0.0.1:9443/common"


def test_any_setting_can_be_overridden_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_JOIN_LEAD_SECONDS", "60")
    stack = Stack(devstack_dir=tmp_path, ports=ports_from_env({}))
    stack.prepare()
    assert load_settings(stack.app_settings()).agent_join_lead_seconds == 60
