"""The local Functions host reads host.json, settings and the app's decorators as Azure does."""

import json
from pathlib import Path

import azure.functions as func
import pytest

from devstack.host import http_response_parts
from devstack.host_config import load_host_config, load_local_settings, parse_timespan, resolve_settings
from devstack.host_functions import load_functions, queue_message_bodies
from devstack.host_queues import QueueConfigError, decode_content, encode_body, storage_connection_string


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("00:00:02", 2.0), ("00:01:00", 60.0), ("1.02:00:00", 93_600.0), ("00:00:00.5", 0.5), (2000, 2.0)],
)
def test_timespans_and_milliseconds(value: object, seconds: float) -> None:
    assert parse_timespan(value, what="x") == seconds


def test_a_malformed_timespan_names_the_setting() -> None:
    with pytest.raises(ValueError, match="maxPollingInterval"):
        parse_timespan("2s", what="maxPollingInterval")


def test_host_json_defaults_match_azure(tmp_path: Path) -> None:
    config = load_host_config(tmp_path)
    assert config.route_prefix == "api"
    assert config.queues.max_polling_interval == 60.0
    assert config.queues.visibility_timeout == 0.0
    assert config.queues.batch_size == 16
    assert config.queues.new_batch_threshold == 8
    assert config.queues.max_dequeue_count == 5
    assert config.function_timeout is None


def test_host_json_values_are_read(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {
                "version": "2.0",
                "functionTimeout": "00:10:00",
                "extensions": {
                    "http": {"routePrefix": ""},
                    "queues": {"maxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:10", "batchSize": 4},
                },
            }
        )
    )
    config = load_host_config(tmp_path)
    assert config.route_prefix == ""
    assert config.queues.max_polling_interval == 2.0
    assert config.queues.visibility_timeout == 10.0
    assert (config.queues.batch_size, config.queues.new_batch_threshold) == (4, 2)
    assert config.function_timeout == 600.0


def test_local_settings_never_override_the_environment(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"A": "file", "B": "file"}}))
    env = {"A": "env"}

    assert load_local_settings(tmp_path, env) == ["B"]
    assert env == {"A": "env", "B": "file"}


def test_percent_settings_resolve_or_name_what_is_missing() -> None:
    assert resolve_settings("%SCAN_SCHEDULE%", {"SCAN_SCHEDULE": "0 */5 * * * *"}) == "0 */5 * * * *"
    assert resolve_settings("jobs-%ENV%", {"ENV": "dev"}) == "jobs-dev"
    with pytest.raises(LookupError, match="SCAN_SCHEDULE"):
        resolve_settings("%SCAN_SCHEDULE%", {})


def test_storage_connections_resolve_like_the_host() -> None:
    assert storage_connection_string("", {"AzureWebJobsStorage": "cs"}) == "cs"
    assert storage_connection_string("Jobs", {"AzureWebJobsJobs": "cs2"}) == "cs2"
    with pytest.raises(QueueConfigError, match="identity-based"):
        storage_connection_string("AzureWebJobsStorage", {"AzureWebJobsStorage__queueServiceUri": "https://q"})
    with pytest.raises(QueueConfigError, match="not set"):
        storage_connection_string("AzureWebJobsStorage", {})


def test_queue_messages_are_base64_text() -> None:
    assert encode_body(b"hello", "base64") == "aGVsbG8="
    assert decode_content("aGVsbG8=", "base64") == b"hello"
    assert decode_content("plain", "none") == b"plain"
    with pytest.raises(ValueError):
        decode_content("not base64!", "base64")


def test_queue_outputs_accept_what_the_worker_accepts() -> None:
    assert queue_message_bodies("a") == [b"a"]
    assert queue_message_bodies(b"b") == [b"b"]
    assert queue_message_bodies(["a", func.QueueMessage(body="c")]) == [b"a", b"c"]
    assert queue_message_bodies(None) == []


def test_http_responses_keep_every_header_and_default_the_content_type() -> None:
    response = func.HttpResponse("hi", status_code=201, headers={"Location": "/x"})
    response.headers.add("Set-Cookie", "a=1")
    response.headers.add("Set-Cookie", "b=2")

    status, headers, body = http_response_parts(response)

    assert (status, body) == (201, b"hi")
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert http_response_parts(func.HttpResponse(b"{}", mimetype="application/json"))[1][-1] == (
        "Content-Type",
        "application/json",
    )
    assert http_response_parts("text")[0] == 200
    assert http_response_parts(None)[0] == 204


def test_blueprint_functions_are_found_and_unsupported_bindings_refused() -> None:
    bp = func.Blueprint()  # type: ignore[no-untyped-call,unused-ignore]

    @bp.route(route="items/{id}")
    def get_item(req: func.HttpRequest) -> str:
        return "ok"

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(bp)
    specs = load_functions(app)
    assert [(s.name, s.trigger_type) for s in specs] == [("get_item", "httpTrigger")]

    other = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @other.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass

    @other.route(route="x")
    def needs_more(req: func.HttpRequest, extra: str) -> str:
        return extra

    with pytest.raises(ValueError) as raised:
        load_functions(other)
    assert "on_blob: trigger 'blobTrigger' is not supported" in str(raised.value)
    assert "needs_more: parameter 'extra' is bound to nothing" in str(raised.value)


def test_timer_locks_and_message_leases_default_to_the_azure_hosts_figures(tmp_path: Path) -> None:
    from devstack.host_queues import lease_seconds

    config = load_host_config(tmp_path, {})
    assert (config.singleton.listener_lock_period, config.singleton.listener_lock_recovery_polling_interval) == (
        60.0, 60.0)
    assert lease_seconds({}) == 600  # a taken message stays hidden 10 minutes (renewed while it runs)
    assert lease_seconds({"DEVSTACK_QUEUE_LEASE_SECONDS": "4"}) == 4


def test_app_settings_override_host_json_as_in_azure(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"batchSize": 8}}}))
    env = {
        "AzureFunctionsJobHost__singleton__listenerLockPeriod": "00:00:15",
        "AzureFunctionsJobHost__Singleton__ListenerLockRecoveryPollingInterval": "00:00:01",
        "AzureFunctionsJobHost__extensions__queues__batchSize": "4",
    }
    config = load_host_config(tmp_path, env)
    assert config.singleton.listener_lock_period == 15.0
    assert config.singleton.listener_lock_recovery_polling_interval == 1.0
    assert config.queues.batch_size == 4


def test_a_timer_lock_period_a_blob_lease_cannot_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="listenerLockPeriod"):
        load_host_config(tmp_path, {"AzureFunctionsJobHost__singleton__listenerLockPeriod": "00:05:00"})
