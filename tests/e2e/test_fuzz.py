"""Fuzzing the running API from its own OpenAPI document (schemathesis, https://schemathesis.readthedocs.io):
every operation, with valid and with invalid input (positive and negative generation), with and without a
valid bearer token. Every answer must be below 500, with a documented status, content type and body (the
document's schemas, and stricter: no undocumented field), and a rejected request (4xx) must write nothing:
no table row and no Key Vault secret.

The run gets a stack of its own, so nothing else writes while it watches for writes. Examples per operation
and mode are bounded (FUZZ_MAX_EXAMPLES, default 10) to keep CI within its time; the figures land in
test-artifacts/fuzz.json (quoted in docs/security.md)."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from azure.data.tables import TableServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.stack import Stack, free_ports, platform_token
from shared.adapters.tables import KEY_TABLES, TABLES
from tests.browser.openapi_contract import REPO, Contract

pytestmark = pytest.mark.e2e
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
REPORT = REPO / "test-artifacts" / "fuzz.json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = {"REFRESH_SCHEDULE": "0 0 0 1 1 *", "SCAN_SCHEDULE": "0 0 0 1 1 *",
                 "RECONCILE_SCHEDULE": "0 0 0 1 1 *", "PRUNE_SCHEDULE": "0 0 0 1 1 *",
                 "WATCHDOG_SCHEDULE": "0 0 0 1 1 *",
                 "PLATFORM_WEB_ORIGINS": "https://app.coagentor.test", "PAGE_TOKEN_FROM_URL": "false"}
    stack = Stack(devstack_dir=Path(tmp_path_factory.mktemp("fuzzstack")), ports=free_ports(), overrides=overrides)
    stack.start(timeout=120)
    try:
        yield stack
    finally:
        stack.stop()


class Writes:
    """What the stack has stored: every app table row (with its ETag) and the vault's secret-set count."""

    def __init__(self, stack: Stack, session: requests.Session) -> None:
        self._tables = TableServiceClient.from_connection_string(stack.storage_connection_string())
        self._kv = f"{stack.key_vault_url}/_kv/stats"
        self._session = session
        self._verify = str(stack.ca.bundle_pem) if stack.ca else True

    def snapshot(self) -> frozenset[tuple[str, ...]]:
        rows = {(t, str(e["PartitionKey"]), str(e["RowKey"]), str(e.metadata.get("etag")))
                for t in TABLES + KEY_TABLES for e in self._tables.get_table_client(t).list_entities()}
        sets = self._session.get(self._kv, verify=self._verify, timeout=30).json()["sets"]
        return frozenset(rows | {("keyvault", "sets", str(sets), "")})


def test_fuzzing_finds_no_server_error_no_undocumented_answer_and_no_write_by_a_rejected_request(fuzz_stack):
    session = requests.Session()
    session.trust_env = False
    base = f"{fuzz_stack.functions_url}/api"
    document = session.get(f"{base}/openapi.json", timeout=30).json()  # the served document drives the run
    schema = schemathesis.openapi.from_dict(document)
    contract = Contract(document)
    user = f"fuzz-{uuid.uuid4().hex[:8]}"
    bearer = platform_token(fuzz_stack.devstack_dir, user, "pro", email=f"{user}@coagentor.example")
    writes = Writes(fuzz_stack, session)
    figures: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    state = {"last": writes.snapshot()}

    def exchange(case: Any, mode: GenerationMode, token: str | None) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        case.headers = headers
        what = f"{case.method} {case.formatted_path} ({mode.value}, {'bearer' if token else 'no token'})"
        try:
            resp = case.call(base_url=base, session=session, allow_redirects=False, timeout=30)
        except requests.RequestException as exc:
            problems.append(f"{what}: no answer ({type(exc).__name__})")
            return
        figures["requests"] += 1
        statuses[str(resp.status_code)] += 1
        if resp.status_code >= 500:
            figures["server_errors"] += 1
        try:
            case.validate_response(resp, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as failure:  # schemathesis: a FailureGroup of what failed
            figures["undocumented"] += 1
            lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
            problems.append(f"{what} -> {resp.status_code}: {' | '.join(lines[1:4])}")
        content_type = next(iter(v[0] for k, v in resp.headers.items() if k.lower() == "content-type" and v), None)
        strict = contract.check_response(case.method, str(resp.request.url), resp.status_code, content_type,
                                         resp.content)
        if strict:
            figures["undocumented_strict"] += 1
            problems.extend(f"{what}: {p}" for p in strict)
        now = writes.snapshot()
        if resp.status_code >= 400:
            figures["rejected"] += 1
            if now != state["last"]:
                figures["rejected_that_wrote"] += 1
                problems.append(f"{what} -> {resp.status_code} wrote {sorted(now - state['last'])[:3]}")
        state["last"] = now

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for token in (bearer, None):
                run(operation.as_strategy(generation_mode=mode), lambda case, m=mode, t=token: exchange(case, m, t))
        figures["operations"] += 1

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"max_examples_per_operation_mode_and_token": MAX_EXAMPLES, **figures,
                                  "statuses": dict(sorted(statuses.items()))}, indent=2) + "\n")
    assert figures["requests"] > 0 and figures["rejected"] > 0
    assert problems == [], f"{len(problems)} problems, e.g.:\n" + "\n".join(problems[:40])
    assert figures["server_errors"] == 0 and figures["rejected_that_wrote"] == 0


def run(strategy: Any, each: Any) -> None:
    """Hypothesis drives `each` with up to MAX_EXAMPLES cases (the same ones on every run)."""

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def examples(case: Any) -> None:
        each(case)

    try:
        examples()
    except Unsatisfiable:
        pass  # no invalid input exists for this operation (negative mode, nothing to break)
