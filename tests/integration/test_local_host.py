"""The local Functions host runs a v2-model app like Azure does: HTTP routes, timers, queues, admin API.

Starts Azurite and `python -m devstack.host` on the sample app in tests/integration/sample_app.
"""

from __future__ import annotations

import base64
import http.client
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devstack import polling

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = Path(__file__).resolve().parent / "sample_app"
AZURITE = REPO / "node_modules" / ".bin" / "azurite"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MAX_DEQUEUE_COUNT = 3  # sample_app/host.json

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    return polling.until(what, probe, timeout, 0.1)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Azurite on free ports; yields its connection string with explicit endpoints."""
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed (npm ci)")
    location = tmp_path_factory.mktemp("azurite")
    blob, queue_port, table = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            str(AZURITE),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",  # else its SIGTERM waits seconds on telemetry
            "--location",
            str(location),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(blob),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(table),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", queue_port)) == 0

    try:
        wait_for("Azurite", accepting, timeout=30)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;"
        )
    finally:
        # Azurite can take many seconds to close its keep-alive connections; its data is disposable.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class RunningHost:
    process: subprocess.Popen[str]
    url: str
    log_path: Path
    banner: str

    def calls(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = requests.get(f"{self.url}/api/calls", timeout=5).json()
        return answer

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_host(tmp_path: Path, env: dict[str, str]) -> RunningHost:
    port = free_port()
    log_path = tmp_path / "host.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.host", "--port", str(port), "--script-root", str(SAMPLE_APP)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line.startswith("Functions host listening on"):
            return RunningHost(process, f"http://127.0.0.1:{port}", log_path, line.strip())
    process.kill()
    process.wait()
    raise AssertionError(f"the host did not start:\n{log_path.read_text()}")


def stop_host(host: RunningHost) -> int | None:
    if host.process.poll() is None:
        host.process.send_signal(signal.SIGTERM)
        try:
            return host.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait()
            return None
    return host.process.returncode


@pytest.fixture(scope="module")
def host(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    running = start_host(
        tmp_path_factory.mktemp("host"),
        {"AzureWebJobsStorage": azurite, "SAMPLE_SCHEDULE": "* * * * * *", "SAMPLE_QUEUE": "sample-in",
         "SAMPLE_SLOW_QUEUE": "sample-slow"},
    )
    yield running
    stop_host(running)


def send(connection: str, queue_name: str, text: str, *, raw: bool = False) -> None:
    # Closed after use: Azurite waits for open connections before it exits.
    with QueueClient.from_connection_string(connection, queue_name) as client:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        client.send_message(text if raw else base64.b64encode(text.encode()).decode())


def peek(connection: str, queue_name: str) -> list[str]:
    with QueueClient.from_connection_string(connection, queue_name) as client:
        try:
            return [str(m.content) for m in client.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []


# Start-up and admin API


def test_it_announces_itself_with_the_number_of_functions(host: RunningHost) -> None:
    assert host.banner == f"Functions host listening on {host.url} (12 functions)"
    assert requests.get(host.url, timeout=5).status_code == 200


def test_admin_lists_functions_with_their_triggers_blueprints_included(host: RunningHost) -> None:
    listed = requests.get(f"{host.url}/admin/functions", timeout=5).json()

    triggers = {f["name"]: f["trigger"] for f in listed}
    assert triggers["get_item"] == "httpTrigger"  # from the blueprint
    assert triggers["tick"] == "timerTrigger"
    assert triggers["record_message"] == "queueTrigger"
    assert len(triggers) == 12


def test_admin_runs_a_queue_function_now_with_the_input_as_body(host: RunningHost) -> None:
    body = f"manual-{uuid.uuid4()}"

    answer = requests.post(f"{host.url}/admin/functions/record_message", json={"input": body}, timeout=5)

    assert answer.status_code == 202
    call = wait_for("the manual run", lambda: [c for c in host.calls() if c.get("body") == body])[0]
    assert call["dequeue_count"] == 1
    assert call["function_name"] == "record_message"


def test_admin_runs_a_timer_now(host: RunningHost) -> None:
    before = len([c for c in host.calls() if c["function"] == "tick"])

    assert requests.post(f"{host.url}/admin/functions/tick", json={"input": ""}, timeout=5).status_code == 202

    wait_for("another tick", lambda: len([c for c in host.calls() if c["function"] == "tick"]) > before)


def test_admin_refuses_unknown_functions_and_http_functions(host: RunningHost) -> None:
    assert requests.post(f"{host.url}/admin/functions/nope", json={"input": ""}, timeout=5).status_code == 404
    assert requests.post(f"{host.url}/admin/functions/get_item", json={"input": ""}, timeout=5).status_code == 400


# HTTP triggers


def test_route_parameters_query_and_headers_reach_the_function(host: RunningHost) -> None:
    answer = requests.get(f"{host.url}/api/items/42", params={"q": "x y"}, headers={"X-Sample": "yes"}, timeout=5)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "id": "42",
        "q": "x y",
        "header": "yes",
        "url": f"{host.url}/api/items/42?q=x+y",
        "method": "GET",
    }


def test_unknown_routes_other_methods_and_failed_constraints_are_not_found(host: RunningHost) -> None:
    assert requests.get(f"{host.url}/api/nothing-here", timeout=5).status_code == 404
    assert requests.delete(f"{host.url}/api/items/42", timeout=5).status_code == 404
    assert requests.post(f"{host.url}/api/items/not-a-guid/cookies", timeout=5).status_code == 404
    assert requests.get(f"{host.url}/items/42", timeout=5).status_code == 404  # outside the route prefix


def test_any_method_a_route_does_not_declare_is_not_found_never_a_server_error(host: RunningHost) -> None:
    # Azure's host answers 404 (not 405) for a method a route does not declare: Azure/azure-functions-host#10098.
    port = int(host.url.rsplit(":", 1)[1])
    for method, path in [("TRACE", "/api/items/42"), ("PROPFIND", "/api/items/42"), ("CONNECT", "127.0.0.1:1"),
                         ("FOO-BAR", "/api/calls"), ("TRACE", "/api/nothing-here"), ("TRACE", "/admin/functions"),
                         ("TRACE", "/")]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request(method, path)
            assert connection.getresponse().status == 404, (method, path)
        finally:
            connection.close()


def test_a_route_without_methods_takes_any_method(host: RunningHost) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(host.url.rsplit(":", 1)[1]), timeout=5)
    try:
        connection.request("PROPFIND", "/api/keyed")
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b"no key needed locally")
    finally:
        connection.close()


def test_status_location_and_several_set_cookie_headers_come_back(host: RunningHost) -> None:
    answer = requests.post(
        f"{host.url}/api/items/6f9619ff-8b86-d011-b42d-00cf4fc964ff/cookies", data=b"payload", timeout=5
    )

    assert answer.status_code == 201
    assert answer.content == b"payload"
    assert answer.headers["Location"] == "/api/items/x"
    assert answer.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_async_functions_and_optional_parameters(host: RunningHost) -> None:
    assert requests.get(f"{host.url}/api/greet", timeout=5).text == "hello world"
    assert requests.get(f"{host.url}/api/greet/bob", timeout=5).text == "hello bob"


def test_function_level_auth_needs_no_key_locally(host: RunningHost) -> None:
    answer = requests.get(f"{host.url}/api/keyed", timeout=5)
    assert (answer.status_code, answer.text) == (200, "no key needed locally")


def test_an_exception_is_a_generic_500_and_logged_with_the_function_name(host: RunningHost) -> None:
    answer = requests.get(f"{host.url}/api/boom", timeout=5)

    assert answer.status_code == 500
    assert "secret detail" not in answer.text
    wait_for("the failure in the log", lambda: "Functions.boom' (Failed" in host.log())


def test_the_access_log_leaves_out_query_strings(host: RunningHost) -> None:
    code = f"oauth-code-{uuid.uuid4()}"
    requests.get(f"{host.url}/api/items/7", params={"code": code}, timeout=5)

    wait_for("the access line", lambda: "GET /api/items/7 200" in host.log())
    assert code not in host.log()


# Timers


def test_a_timer_fires_on_the_schedule_from_its_app_setting(host: RunningHost) -> None:
    ticks = wait_for("two ticks", lambda: [c for c in host.calls() if c["function"] == "tick"][1:])
    assert ticks[0]["past_due"] is False


def test_run_on_startup_fires_once_when_the_host_starts(host: RunningHost) -> None:
    wait_for("the startup run", lambda: [c for c in host.calls() if c["function"] == "on_startup"])
    assert len([c for c in host.calls() if c["function"] == "on_startup"]) == 1


# Queues


def test_a_queue_message_runs_the_function_and_its_queue_output(host: RunningHost, azurite: str) -> None:
    body = f"hello-{uuid.uuid4()}"

    send(azurite, "sample-in", body)

    call = wait_for("the queue function", lambda: [c for c in host.calls() if c.get("body") == body])[0]
    assert call["function"] == "record_message"
    assert call["dequeue_count"] == 1
    wait_for("the output message", lambda: [c for c in host.calls() if c.get("body") == f"seen:{body}"])
    wait_for("the message to be deleted", lambda: not peek(azurite, "sample-in") or None)


def test_a_failing_message_is_retried_then_moved_to_the_poison_queue(host: RunningHost, azurite: str) -> None:
    body = f"fail-{uuid.uuid4()}"
    encoded = base64.b64encode(body.encode()).decode()

    send(azurite, "sample-flaky", body)

    wait_for("the poison message", lambda: encoded in peek(azurite, "sample-flaky-poison"))
    attempts = [c["dequeue_count"] for c in host.calls() if c.get("body") == body]
    assert attempts == list(range(1, MAX_DEQUEUE_COUNT + 1))
    assert encoded not in peek(azurite, "sample-flaky")


def test_a_message_that_is_not_base64_goes_straight_to_poison(host: RunningHost, azurite: str) -> None:
    text = f"not base64! {uuid.uuid4()}"

    send(azurite, "sample-flaky", text, raw=True)

    wait_for("the poison message", lambda: text in peek(azurite, "sample-flaky-poison"))
    assert not [c for c in host.calls() if text in str(c.get("body"))]


def test_a_message_that_succeeds_is_deleted_not_poisoned(host: RunningHost, azurite: str) -> None:
    body = f"ok-{uuid.uuid4()}"

    send(azurite, "sample-flaky", body)

    wait_for("the call", lambda: [c for c in host.calls() if c.get("body") == body])
    encoded = base64.b64encode(body.encode()).decode()
    wait_for("the message to be deleted", lambda: encoded not in peek(azurite, "sample-flaky") or None)
    assert encoded not in peek(azurite, "sample-flaky-poison")


# Lifecycle


def test_sigterm_stops_the_host_cleanly(azurite: str, tmp_path: Path) -> None:
    running = start_host(
        tmp_path, {"AzureWebJobsStorage": azurite, "SAMPLE_SCHEDULE": "0 0 0 1 1 *", "SAMPLE_QUEUE": "sample-stop",
                   "SAMPLE_SLOW_QUEUE": "sample-stop-slow"}
    )

    assert stop_host(running) == 0, running.log()[-4000:]


def test_a_missing_app_setting_stops_start_up_with_its_name(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SAMPLE_SCHEDULE", "SAMPLE_QUEUE")}
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    result = subprocess.run(
        [sys.executable, "-m", "devstack.host", "--port", str(free_port()), "--script-root", str(SAMPLE_APP)],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "SAMPLE_SCHEDULE" in result.stderr
    assert "SAMPLE_QUEUE" in result.stderr


def test_identity_based_storage_connections_are_explained(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    env.update(
        SAMPLE_SCHEDULE="* * * * * *",
        SAMPLE_QUEUE="sample-in",
        SAMPLE_SLOW_QUEUE="sample-slow",
        AzureWebJobsStorage__queueServiceUri="https://example.queue.core.windows.net",
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-m", "devstack.host", "--port", str(free_port()), "--script-root", str(SAMPLE_APP)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "identity-based" in result.stderr


# Several instances of one app on one storage account (DEVSTACK.md "Several instances")


@dataclass
class Instances:
    app: str  # the host id the instances share; their queues are named after it
    hosts: list[RunningHost]

    def calls(self, function: str) -> list[tuple[int, dict[str, Any]]]:
        """(instance index, call) for every live instance's calls of `function`."""
        found = []
        for index, running in enumerate(self.hosts):
            if running.process.poll() is not None:
                continue
            try:
                found.extend((index, c) for c in running.calls() if c["function"] == function)
            except requests.RequestException:
                continue
        return found


@pytest.fixture
def instances(azurite: str, tmp_path: Path) -> Iterator[Instances]:
    """Two hosts of one app sharing Azurite, with the shortest timer lock Azure allows (15 s)."""
    app = f"app-{uuid.uuid4().hex[:8]}"
    env = {
        "AzureWebJobsStorage": azurite,
        "AzureFunctionsWebHost__hostid": app,
        "SAMPLE_SCHEDULE": "* * * * * *",
        "SAMPLE_QUEUE": f"{app}-in",
        "SAMPLE_SLOW_QUEUE": f"{app}-slow",
        "AzureFunctionsJobHost__singleton__listenerLockPeriod": "00:00:15",
        "AzureFunctionsJobHost__singleton__listenerLockRecoveryPollingInterval": "00:00:01",
        "DEVSTACK_QUEUE_LEASE_SECONDS": "4",
    }
    hosts = []
    try:
        for index in range(2):
            folder = tmp_path / f"instance-{index + 1}"
            folder.mkdir()
            hosts.append(start_host(folder, env))
        yield Instances(app, hosts)
    finally:
        for running in hosts:
            stop_host(running)


def test_each_queue_message_goes_to_one_instance_once(instances: Instances, azurite: str) -> None:
    bodies = [f"m{i}-{uuid.uuid4().hex[:6]}" for i in range(24)]
    for body in bodies:
        send(azurite, f"{instances.app}-in", body)

    def all_seen() -> list[tuple[int, dict[str, Any]]] | None:
        seen = [(i, c) for i, c in instances.calls("record_message") if c["body"] in bodies]
        return seen if len({c["body"] for _, c in seen}) == len(bodies) else None

    seen = wait_for("every message handled", all_seen, timeout=60)
    assert sorted(c["body"] for _, c in seen) == sorted(bodies)  # each once, none twice
    assert all(c["dequeue_count"] == 1 for _, c in seen)


def test_a_timer_fires_on_one_instance_only(instances: Instances) -> None:
    ticks = wait_for("five ticks", lambda: (found := instances.calls("tick"))[4:] and found)
    ticks.sort(key=lambda t: t[1]["at"])
    holders = [index for index, _ in ticks]
    assert len(set(holders)) == 1, f"both instances fired the timer: {holders}"


def test_a_crashed_instances_timer_moves_to_another_and_fires_the_missed_run_once(instances: Instances) -> None:
    first = wait_for("a tick", lambda: instances.calls("tick"))
    holder = first[0][0]
    other = 1 - holder

    crashed = requests.post(f"{instances.hosts[holder].url}/admin/crash", timeout=5)

    assert crashed.status_code == 202
    assert instances.hosts[holder].process.wait(timeout=10) != 0  # ended as a killed process ends
    taken = wait_for("the other instance's ticks", lambda: (t := instances.calls("tick"))[2:] and t, timeout=60)
    assert {index for index, _ in taken} == {other}
    taken.sort(key=lambda t: t[1]["at"])
    assert taken[0][1]["past_due"] is True  # the seconds nobody held the lock: fired once, as past due
    assert [t[1]["past_due"] for t in taken[1:]].count(True) == 0


def test_a_message_taken_by_a_crashed_instance_comes_back_after_its_lease(
    instances: Instances, azurite: str
) -> None:
    name = f"slow-{uuid.uuid4().hex[:6]}"
    send(azurite, f"{instances.app}-slow", f"{name}:30")
    started = wait_for("the slow message to start", lambda: [
        (i, c) for i, c in instances.calls("slow_started") if c["body"] == name])
    holder = started[0][0]

    assert requests.post(f"{instances.hosts[holder].url}/admin/crash", timeout=5).status_code == 202
    instances.hosts[holder].process.wait(timeout=10)
    again = wait_for("the message on the other instance", lambda: [
        (i, c) for i, c in instances.calls("slow_started") if c["body"] == name], timeout=60)

    assert [(i, c["dequeue_count"]) for i, c in again] == [(1 - holder, 2)]


def test_a_message_that_runs_longer_than_its_lease_is_not_handed_out_twice(
    instances: Instances, azurite: str
) -> None:
    name = f"long-{uuid.uuid4().hex[:6]}"
    send(azurite, f"{instances.app}-slow", f"{name}:10")  # the lease is 4 s here: renewed while it runs

    wait_for("the long message to finish", lambda: [c for _, c in instances.calls("slow_done") if c["body"] == name],
             timeout=60)

    assert [c["dequeue_count"] for _, c in instances.calls("slow_started") if c["body"] == name] == [1]
    wait_for("the message to be deleted", lambda: not peek(azurite, f"{instances.app}-slow") or None)
