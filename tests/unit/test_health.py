"""GET /api/health tells an operator (and a load balancer) which dependency is down, in the shape the
OpenAPI document describes, without waiting on a dependency that hangs."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import azure.functions as func
import pytest
from azure.core.exceptions import ServiceRequestError

from shared.adapters.health import HealthCheck
from shared.triggers import api
from tests.browser.openapi_contract import Contract


def _get_health() -> func.HttpResponse:
    req = func.HttpRequest(method="GET", url="http://localhost/api/health", body=b"")
    response: func.HttpResponse = api.health(req)
    return response


def _check(response: func.HttpResponse) -> dict:
    contract = Contract.load()
    problems = contract.check_response("GET", "http://localhost/api/health", response.status_code,
                                       response.mimetype, response.get_body())
    assert not problems, problems
    body: dict = json.loads(response.get_body())
    return body


def _refuse() -> None:
    raise ServiceRequestError("connection refused to https://kv.example/secrets/x?api-version=1")


def test_healthy_app_lists_every_dependency_as_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    check = HealthCheck({"storage": lambda: None, "queues": lambda: None, "key_vault": lambda: "s3cret"})
    monkeypatch.setattr(api, "container", lambda: SimpleNamespace(health=check))
    response = _get_health()
    assert response.status_code == 200
    assert _check(response) == {"status": "ok", "dependencies": {"storage": "ok", "queues": "ok", "key_vault": "ok"}}


def test_key_vault_down_answers_503_naming_key_vault_only(monkeypatch: pytest.MonkeyPatch) -> None:
    check = HealthCheck({"storage": lambda: None, "queues": lambda: None, "key_vault": _refuse})
    monkeypatch.setattr(api, "container", lambda: SimpleNamespace(health=check))
    response = _get_health()
    assert response.status_code == 503
    body = _check(response)
    assert body["dependencies"] == {"storage": "ok", "queues": "ok", "key_vault": "down"}
    assert "key_vault (ServiceRequestError)" in body["message"] and "storage" not in body["message"]
    assert "kv.example" not in response.get_body().decode()  # exception text (URLs) never leaves the app


def test_a_hanging_dependency_is_reported_down_after_the_deadline() -> None:
    release = threading.Event()
    check = HealthCheck({"storage": lambda: None, "queues": lambda: release.wait(30)}, deadline=0.2)
    try:
        report = check.run()
    finally:
        release.set()
    assert report.dependencies == {"storage": "ok", "queues": "down"}
    assert report.problems == {"queues": "Timeout"}


def test_an_app_that_cannot_start_says_storage_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ServiceRequestError("Azurite is not running")

    monkeypatch.setattr(api, "container", broken)
    response = _get_health()
    assert response.status_code == 503
    assert _check(response)["dependencies"] == {"storage": "down"}


def test_a_flood_of_health_requests_probes_the_dependencies_once_per_interval():
    """GET /api/health is anonymous: its Key Vault read must not multiply with requests."""
    from shared.adapters.health import HealthCheck

    calls = {"vault": 0}
    now = {"t": 0.0}

    def vault():
        calls["vault"] += 1

    check = HealthCheck({"key_vault": vault}, max_age=15, clock=lambda: now["t"])
    for _ in range(100):
        assert check.report().healthy
    assert calls["vault"] == 1
    now["t"] = 16
    check.report()
    assert calls["vault"] == 2
