"""`make dev` gives the app every setting it reads, valid, without anything set by hand."""

from __future__ import annotations

import json

from standardwebhooks import Webhook

from devstack.stack import DevSecrets, Stack, ports_from_env
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


def test_status_events_go_to_the_recorder_signed_with_a_dev_whsec_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("PLATFORM_EVENTS_URL", raising=False)
    stack = Stack(devstack_dir=tmp_path, ports=ports_from_env({}))
    stack.prepare()
    assert load_settings(stack.app_settings()).platform_events_url == "http://127.0.0.1:7081/events"
    assert stack.dev is not None and Webhook(stack.dev.platform_events_secret)
    # A stack directory from before status events gains a secret once, kept from then on.
    path = tmp_path / "dev-secrets.json"
    older = {k: v for k, v in json.loads(path.read_text()).items() if k != "platform_events_secret"}
    path.write_text(json.dumps(older))
    added = DevSecrets.ensure(tmp_path).platform_events_secret
    assert added.startswith("whsec_") and Webhook(added)
    assert DevSecrets.ensure(tmp_path).platform_events_secret == added


def test_the_token_command_can_carry_an_email_claim(tmp_path, monkeypatch, capsys):
    """DEVSTACK.md: `python -m devstack token --user U --plan P --email E` prints a token with `email`."""
    import jwt

    from devstack.__main__ import main

    monkeypatch.setenv("DEVSTACK_DIR", str(tmp_path))
    assert main(["token", "--user", "u-1", "--plan", "pro", "--email", "ann@example.com"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["plan"], claims["email"]) == ("u-1", "pro", "ann@example.com")


def test_the_settings_reference_states_the_defaults_the_code_uses() -> None:
    """docs/reference.md's settings table is what operators read: its default for each setting it
    names alone agrees with shared/config.py (a default changed in code is changed in the docs)."""
    import re
    from pathlib import Path

    table = (Path(__file__).parents[2] / "docs" / "reference.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Za-z_]+)` \| ([^|]+) \|", table, re.M)
    checked = 0
    for name, cell in rows:
        if name not in SETTINGS:
            continue
        cell = cell.strip()
        default = SETTINGS[name]
        if default is None:
            assert cell.startswith("required"), (name, cell)
        elif re.fullmatch(r"`[^`]*`", cell):
            assert cell.strip("`") == default, f"{name}: docs say {cell}, code says {default!r}"
        else:
            continue
        checked += 1
    assert checked >= 20
