"""The alerts an operator relies on exist in infra/modules/alerts.bicep, are wired from main.bicep to an
action group parameter, and query only the metric names, dimensions, values and log events the code
really emits (shared/adapters/telemetry.py). Bicep is read with tree-sitter, as in test_infra."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.adapters import telemetry as t
from shared.adapters.telemetry import SYNC_RESULTS
from tests.unit.test_infra import INFRA, MAIN, declarations, entries, kids, literal, prop, resources, text, value_of

ALERTS = INFRA / "modules" / "alerts.bicep"
REPO = INFRA.parent
RULE_TYPE = "Microsoft.Insights/scheduledQueryRules"
# What each required alert must look at: (metric or log event names, dimension values it selects on).
REQUIRED = {
    "app-identity-failure": ({t.TOKEN_REFRESHES, t.APP_IDENTITY_FAILURE}, {t.SERVICE}),
    "poison-messages": ({t.QUEUE_MESSAGES}, {"-poison"}),
    "deployments-missed-or-late": ({t.DEPLOYMENTS, t.DEPLOYMENT_MISSED}, {t.LATE, t.MISSED}),
    "sync-failure-rate": ({t.SYNCS}, {t.SYNC_FAILED}),
    "notifications-stopped": ({t.NOTIFICATIONS_RECEIVED}, set()),
    "walk-rows-failed": (set(), {t.WALK_ROW_FAILED}),
}
KNOWN_VALUES = {t.SERVICE, t.LATE, t.MISSED, t.ON_TIME, t.SYNC_FAILED, "-poison", *t.FIXED_BY_VALUES,
                *SYNC_RESULTS.values(), t.WALK_ROW_FAILED}


def rules() -> dict[str, tuple[str, object]]:
    """rule name suffix -> (its KQL query, its body node)."""
    found = {}
    for kind, body in resources(ALERTS):
        if kind.startswith(RULE_TYPE + "@"):
            name = text(prop(body, "name")).strip("'")
            suffix = name.split("}-", 1)[-1]
            criteria = kids(prop(body, "properties", "criteria", "allOf"))
            assert len(criteria) == 1, name
            query = literal(prop(criteria[0], "query"))
            assert query is not None, f"{name}: the query must be a plain string this test can read"
            found[suffix] = (query, body)
    return found


def test_every_alert_the_operators_need_is_defined() -> None:
    assert set(REQUIRED) <= set(rules()), sorted(rules())


@pytest.mark.parametrize("suffix", sorted(REQUIRED))
def test_each_alert_queries_the_names_and_values_the_code_emits(suffix: str) -> None:
    query, _ = rules()[suffix]
    metrics = set(re.findall(r'name == "([^"]+)"', query))
    events = set(re.findall(r'message (?:==|startswith) "([^"]+)"', query))
    dimensions = set(re.findall(r'customDimensions\["([^"]+)"\]', query))
    values = set(re.findall(r'(?:==|endswith|in \(|, ) ?"([^"]+)"', query)) - metrics - events
    assert metrics <= t.METRICS, f"{suffix}: unknown metrics {metrics - t.METRICS}"
    assert events <= t.LOG_EVENTS, f"{suffix}: unknown log events {events - t.LOG_EVENTS}"
    assert dimensions <= t.DIMENSIONS, f"{suffix}: unknown dimensions {dimensions - t.DIMENSIONS}"
    assert values <= KNOWN_VALUES, f"{suffix}: values the code never sets {values - KNOWN_VALUES}"
    wanted_names, wanted_values = REQUIRED[suffix]
    assert wanted_names <= metrics | events, f"{suffix} should look at {wanted_names - metrics - events}"
    assert wanted_values <= values, f"{suffix} should select {wanted_values - values}"


def test_every_rule_is_scoped_to_application_insights_and_notifies_the_action_group() -> None:
    for suffix, (_, body) in rules().items():
        props = prop(body, "properties")
        assert [text(s) for s in kids(prop(props, "scopes"))] == ["applicationInsightsId"], suffix
        assert text(prop(props, "actions", "actionGroups")) == "actionGroups", suffix
        assert literal(prop(props, "autoMitigate")) == "true", suffix
    variables = declarations(ALERTS, "variable")
    assert "actionGroupId" in text(value_of(variables["actionGroups"]))


def test_main_template_deploys_the_alerts_with_the_operators_action_group() -> None:
    modules = [m for m in declarations(MAIN, "module").values() if literal(kids(m)[1]) == "modules/alerts.bicep"]
    assert len(modules) == 1
    body = value_of(modules[0])
    assert body is not None
    params = entries(prop(body, "params"))
    assert text(params["actionGroupId"]) == "alertActionGroupId"
    assert text(params["applicationInsightsId"]) == "monitoring.outputs.applicationInsightsId"
    assert "alertActionGroupId" in declarations(MAIN, "parameter")


def test_the_missed_deployment_log_event_is_what_the_deployer_logs() -> None:
    # The deployer (shared/services/deploy.py) logs it when a meeting started without a verdict.
    source = (REPO / "shared" / "services" / "deploy.py").read_text()
    assert f'log.error("{t.DEPLOYMENT_MISSED}' in source


def test_the_app_identity_log_event_is_what_the_observed_identity_logs() -> None:
    source = Path(t.__file__).read_text()
    assert "log.error(APP_IDENTITY_FAILURE" in source


def test_the_walks_log_the_event_the_skipped_rows_alert_selects() -> None:
    """Each walk that skips a row it cannot read or act on logs `extra` event walk_row_failed."""
    needle = f'"event": "{t.WALK_ROW_FAILED}"'
    sites = {path.relative_to(REPO / "shared").as_posix(): path.read_text().count(needle)
             for path in (REPO / "shared").rglob("*.py")}
    # Renewals and sweeps, expired claims, secret owners and caches, pruning, secondary calendars,
    # table pages, the watchdog's index, agent tries.
    assert {"services/subscriptions.py", "services/connect.py", "services/lifecycle.py", "services/calendars.py",
            "adapters/tables.py"} <= {
        name for name, n in sites.items() if n}
    assert sum(sites.values()) >= 10
