"""Hardening an operator or an attacker would notice: secrets never in logs or exception text, URLs
that carry tokens must be https, the platform key can rotate (JWKS `kid`), oversized or deeply nested
bodies are refused."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.stack import Stack, ports_from_env
from shared import redaction
from shared.adapters.agents import AgentApiClient
from shared.config import SettingsError, load_settings
from shared.platform_auth import PlatformTokenVerifier, Unauthorized
from shared.ports import DeployRequest
from shared.triggers.http import MAX_JSON_DEPTH, json_depth


# ---------------------------------------------------------------- secrets out of logs
@pytest.fixture
def scrubbed_logs(caplog):
    redaction.install()
    caplog.set_level(logging.INFO)
    return caplog


def test_tokens_codes_and_app_secrets_never_reach_a_log_line(scrubbed_logs):
    redaction.register_secret("s3cr3t-agent-api-key\nsecond-line-of-it")
    log = logging.getLogger("test.redaction")
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    log.info("calling with Authorization: Bearer %s", jwt_like)
    log.warning("redirect to https://x/cb?code=0.AAAA-secret-code&state=abc123 failed")
    log.info('token answer {"refresh_token": "1.AQ-refresh", "access_token": "at"}')
    # A Zoom start link carries the host's own token (zak), a registration link the registrant's (tk).
    log.info("event body had https://us02web.zoom.us/s/8812345678?zak=eyJzm-host-token&tk=reg-tok-99 in it")
    try:
        raise ValueError("Invalid header value: 'Bearer s3cr3t-agent-api-key\\nsecond-line-of-it'")
    except ValueError:
        log.exception("deploy failed")
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in scrubbed_logs.records)
    for secret in ("s3cr3t-agent-api-key", "second-line-of-it", jwt_like, "0.AAAA-secret-code", "abc123",
                   "1.AQ-refresh", "eyJzm-host-token", "reg-tok-99"):
        assert secret not in text, secret
    assert "[redacted]" in text


def test_an_agent_api_key_with_a_newline_never_reaches_the_deploy_result_or_the_logs(scrubbed_logs):
    key = "agent-key-with\nnewline-0123456789"
    client = AgentApiClient(base_url="http://127.0.0.1:9", api_key=lambda: key, session=requests.Session(),
                            timeout=1)
    now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    result = client.deploy(DeployRequest("https://teams.microsoft.com/l/x", "teams", "t", now, now, "u", "m", "k"))
    assert not result.ok and not result.permanent  # retried, never crashes the function with the key in it
    assert "newline" not in result.detail and "agent-key" not in result.detail
    assert "agent-key" not in scrubbed_logs.text


# ---------------------------------------------------------------- https-only settings
def dev_settings(tmp_path) -> dict[str, str]:
    stack = Stack(devstack_dir=tmp_path, ports=ports_from_env({}))
    stack.prepare()
    return stack.app_settings()


@pytest.mark.parametrize("name", ["OUTLOOK_REDIRECT_URI", "INTEGRATIONS_PAGE_URL", "AGENT_API_URL",
                                  "PLATFORM_EVENTS_URL"])
def test_urls_that_carry_tokens_or_codes_must_be_https_except_on_loopback(tmp_path, name):
    settings = dev_settings(tmp_path)
    load_settings(settings)  # the local stack's http://127.0.0.1 URLs are fine
    with pytest.raises(SettingsError, match=name):
        load_settings({**settings, name: "http://coagentor.example/api"})
    with pytest.raises(SettingsError, match=name):
        load_settings({**settings, name: "http://127.0.0.1.evil.example/api"})
    load_settings({**settings, name: "https://coagentor.example/api"})


def test_web_origins_are_origins_and_the_url_token_convenience_is_a_strict_flag(tmp_path):
    settings = dev_settings(tmp_path)
    loaded = load_settings({**settings, "PLATFORM_WEB_ORIGINS": "https://app.coagentor.com, https://eu.coagentor.com"})
    assert loaded.platform_web_origins == ("https://app.coagentor.com", "https://eu.coagentor.com")
    for bad in ("http://app.coagentor.com", "https://app.coagentor.com/integrations", "*"):
        with pytest.raises(SettingsError, match="PLATFORM_WEB_ORIGINS"):
            load_settings({**settings, "PLATFORM_WEB_ORIGINS": bad})
    assert load_settings({k: v for k, v in settings.items() if k != "PAGE_TOKEN_FROM_URL"}).page_token_from_url is False
    with pytest.raises(SettingsError, match="PAGE_TOKEN_FROM_URL"):
        load_settings({**settings, "PAGE_TOKEN_FROM_URL": "yes"})


# ---------------------------------------------------------------- the platform key can rotate
def _key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid, "use": "sig"}


def _token(private: rsa.RSAPrivateKey, kid: str | None, **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "user-1", "plan": "solo", "iss": "https://platform", "aud": "outlook", "iat": now, "exp": now + 300,
            **claims}
    return jwt.encode(body, private, "RS256", headers={"kid": kid} if kid else None)


def test_a_jwks_lets_the_platform_rotate_its_signing_key(tmp_path):
    old, old_jwk = _key("2026-01")
    new, new_jwk = _key("2026-07")
    both = PlatformTokenVerifier(public_key_pem=json.dumps({"keys": [old_jwk, new_jwk]}), issuer="https://platform",
                                 audience="outlook")
    assert both.user_from_header("Bearer " + _token(old, "2026-01")).id == "user-1"
    user = both.user_from_header("Bearer " + _token(new, "2026-07", email="ann@coagentor.example"))
    assert (user.id, user.email) == ("user-1", "ann@coagentor.example")
    only_new = PlatformTokenVerifier(public_key_pem=json.dumps({"keys": [new_jwk]}), issuer="https://platform",
                                     audience="outlook")
    for token in (_token(old, "2026-01"), _token(old, "2026-07"), _token(new, None), _token(new, "unknown")):
        with pytest.raises(Unauthorized):
            only_new.user_from_header("Bearer " + token)


def test_a_single_pem_key_still_works(tmp_path):
    private, _ = _key("k")
    from cryptography.hazmat.primitives import serialization
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = PlatformTokenVerifier(public_key_pem=pem, issuer="https://platform", audience="outlook")
    assert verifier.user_from_header("Bearer " + _token(private, None)).id == "user-1"
    with pytest.raises(Unauthorized):
        verifier.user_from_header("Bearer " + "x" * 10_000)


# ---------------------------------------------------------------- body limits
def test_json_depth_is_measured_outside_strings():
    assert json_depth(b'{"a": [1, {"b": "[[[[["}]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1
