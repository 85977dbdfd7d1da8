"""A customer tenant's admin disabling (AADSTS7000112) or deleting (700016) CoAgentor's enterprise app
is that admin's to fix: the tenant's connections go to Error `app_blocked_in_tenant` (contact_admin)
and their users are told; the same codes in the app's home tenant, for personal accounts or in many
tenants at once stay the service's failure (Active with a warning, operators alerted, nobody told)."""

from __future__ import annotations

import logging

import pytest

from shared.connections import (
    CONSUMERS_TENANT_ID,
    MANY_TENANTS,
    REASONS,
    Action,
    ConnectionStatus,
    FixedBy,
    TenantScope,
    classify_token_error,
)
from shared.ports import TokenError
from tests import fakes
from tests.unit.test_connection_lifecycle import refresh_run
from tests.unit.test_sync_and_deploy import ALICE, WORK, connected

DISABLED = TokenError("unauthorized_client", "AADSTS7000112: Application is disabled.", (7000112,))
DELETED = TokenError("unauthorized_client", "AADSTS700016: Application not found in 'Contoso'.", (700016,))


def classify(error: TokenError, scope: TenantScope | None):
    return classify_token_error(error.error, error.description, error.error_codes, error.suberror, scope=scope)


@pytest.mark.parametrize("error", [DISABLED, DELETED])
def test_the_app_refused_in_one_customer_tenant_is_that_admins_to_fix(error):
    failure = classify(error, TenantScope("tid-contoso", fakes.APP_HOME_TENANT, tenants_refusing=1))
    assert failure.fixed_by is FixedBy.ADMIN and failure.reason is REASONS["app_blocked_in_tenant"]
    assert failure.reason.action is Action.CONTACT_ADMIN and "enterprise app" in failure.reason.message
    assert failure.code == f"AADSTS{error.error_codes[0]}"


@pytest.mark.parametrize("scope", [
    None,  # nobody said where: as before
    TenantScope(fakes.APP_HOME_TENANT, fakes.APP_HOME_TENANT),  # the registration's own tenant
    TenantScope(CONSUMERS_TENANT_ID, fakes.APP_HOME_TENANT),  # personal accounts: no customer admin
    TenantScope("tid-contoso", fakes.APP_HOME_TENANT, tenants_refusing=MANY_TENANTS),  # everywhere at once
])
@pytest.mark.parametrize("error", [DISABLED, DELETED])
def test_the_same_codes_elsewhere_stay_the_services_failure(error, scope):
    failure = classify(error, scope)
    assert failure.fixed_by is FixedBy.SERVICE and failure.reason is None


def test_a_tenant_scope_changes_nothing_for_the_services_own_secret():
    expired = TokenError("invalid_client", "AADSTS7000222: expired", (7000222,))
    assert classify(expired, TenantScope("tid-contoso", fakes.APP_HOME_TENANT)).fixed_by is FixedBy.SERVICE


def test_a_tenant_that_disables_the_app_puts_its_connections_in_error_and_tells_the_users(world, caplog):
    conn = connected(world)
    world.identity.refresh_errors[WORK[0]] = DISABLED
    with caplog.at_level(logging.ERROR):
        assert refresh_run(world)[1] == ["failed"]
    [c] = world.accounts.list(ALICE.id)
    assert (c.status, c.reason_code, c.reason.action) == (ConnectionStatus.ERROR, "app_blocked_in_tenant",
                                                          Action.CONTACT_ADMIN)
    [event] = world.events.published
    assert event.type.value == "com.coagentor.outlook.connection.error"
    assert event.data["connection_id"] == conn.id and event.data["reason_code"] == "app_blocked_in_tenant"
    assert event.data["action"] == "contact_admin"
    assert not any("app_identity_failure" in r.getMessage() for r in caplog.records)  # no page to on-call
    assert world.refusals.seen.keys() == {"tid-contoso"}


def test_the_app_refused_in_many_tenants_at_once_is_the_services_failure(world, caplog):
    for n in range(MANY_TENANTS - 1):
        world.refusals.record(f"tid-other-{n}", "AADSTS700016", world.clock.now())
    connected(world)
    world.identity.refresh_errors[WORK[0]] = DELETED
    with caplog.at_level(logging.ERROR):
        assert refresh_run(world)[1] == ["service_failure"]
    [c] = world.accounts.list(ALICE.id)
    assert c.is_active and "problem on CoAgentor's side" in c.warning(world.clock.now(), after_seconds=3600)
    assert world.events.published == []
    assert any("app_identity_failure" in r.getMessage() for r in caplog.records)


def test_refusals_older_than_the_window_no_longer_count(world):
    for n in range(MANY_TENANTS - 1):
        world.refusals.record(f"tid-other-{n}", "AADSTS700016", world.clock.now())
    world.clock.advance(2 * 3600)
    connected(world)
    world.identity.refresh_errors[WORK[0]] = DELETED
    assert refresh_run(world)[1] == ["failed"]
    assert world.accounts.list(ALICE.id)[0].reason_code == "app_blocked_in_tenant"


def test_a_personal_account_refused_the_app_is_the_services_failure(world):
    personal = ("uid-b." + CONSUMERS_TENANT_ID, CONSUMERS_TENANT_ID, "bob@outlook.com")
    connected(world, personal)
    world.identity.refresh_errors[personal[0]] = DISABLED
    assert refresh_run(world)[1] == ["service_failure"]
    assert world.accounts.list(ALICE.id)[0].is_active and world.events.published == []
