# ruff: noqa: F811  (the simulator fixtures are imported, then named as test parameters)
"""The simulator tells the truth about Microsoft's awkward cases (issue 10): a mailbox Graph cannot
reach, deleted occurrences that delta never reports, delta links that outlive their sync state,
sparse occurrences with null keys, token endpoint outages and app credential failures, a scope echo
that drops `email`, the admin consent endpoint and the id_token's `login_hint`.

Like test_simulator.py, everything goes through MSAL and `requests` over HTTPS with the test CA.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msal
import pytest
import requests

from devstack.msim import CONTOSO_TENANT_ID
from tests.integration.test_simulator import (  # noqa: F401  (ca, sim, session, seeded: shared fixtures)
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    SCOPES,
    WINDOW,
    add_events,
    all_pages,
    ca,
    connect,
    event,
    forms_of,
    graph,
    new_app,
    redirect_params,
    seeded,
    session,
    sign_in,
    sim,
)

pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")

FRANK = "frank@contoso.com"
MAILBOX_MESSAGE = "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
SPARSE = {"@odata.type", "@odata.etag", "id", "type", "seriesMasterId", "start", "end"}


def admin(sim: Any, session: requests.Session, method: str, path: str, **kwargs: Any) -> requests.Response:
    return session.request(method, f"{sim.base_url}/_sim{path}", **kwargs)


def token_post(sim: Any, session: requests.Session, secret: str = CLIENT_SECRET, **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "scope": "https://vault.azure.net/.default", **form}
    return session.post(
        f"{sim.base_url}/organizations/oauth2/v2.0/token", data=data, auth=(CLIENT_ID, secret)
    )


def series(subject: str, start: str, count: int, **extra: Any) -> dict[str, Any]:
    return event(
        subject,
        start,
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": start[:10], "numberOfOccurrences": count},
        },
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# A mailbox Graph cannot reach


def test_frank_signs_in_and_reads_his_profile_but_every_calendar_request_is_mailbox_not_enabled(sim, session):
    _, result = connect(sim, session, FRANK)
    token = result["access_token"]
    me = graph(sim, session, token, "/me")
    assert me.status_code == 200 and me.json()["userPrincipalName"] == FRANK
    users = {u["upn"]: u for u in admin(sim, session, "GET", "/users").json()["value"]}
    assert (users[FRANK]["mailbox_host"], users["alice@contoso.com"]["mailbox_host"]) == (
        "on_premises",
        "exchange_online",
    )

    for path, params in (
        ("/me/calendarView/delta", WINDOW),
        ("/me/calendarView", WINDOW),
        ("/me/events", None),
        ("/me/events/AAMkADanything=", None),
        ("/me/events/AAMkADanything=/instances", WINDOW),
        ("/me/calendar/events", None),
        ("/me/calendar/calendarView", WINDOW),
        (f"/users/{FRANK}/calendarView", WINDOW),
    ):
        answer = graph(sim, session, token, path, params=params)
        assert answer.status_code == 404, path
        error = answer.json()["error"]
        assert (error["code"], error["message"]) == ("MailboxNotEnabledForRESTAPI", MAILBOX_MESSAGE), path


def test_an_unreachable_mailbox_can_answer_401_and_recovers_when_its_admin_acts(sim, session):
    _, result = connect(sim, session, FRANK)
    settings = f"/users/{FRANK}/settings"
    assert admin(sim, session, "GET", settings).json()["mailbox_unavailable_status"] == 404

    admin(sim, session, "POST", settings, json={"mailbox_unavailable_status": 401}).raise_for_status()
    answer = graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "MailboxNotEnabledForRESTAPI"

    admin(sim, session, "POST", settings, json={"mailbox_unavailable_status": None}).raise_for_status()
    assert graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW).status_code == 200
    assert admin(sim, session, "POST", settings, json={"mailbox_unavailable_status": 500}).status_code == 400

    admin(sim, session, "POST", "/reset").raise_for_status()
    assert graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW).status_code == 404

    # Any account can be made unreachable for a check, and only its calendar is affected.
    _, alice = connect(sim, session, "alice@contoso.com")
    admin(sim, session, "POST", "/users/alice@contoso.com/settings", json={"mailbox_unavailable_status": 404})
    assert graph(sim, session, alice["access_token"], "/me/events").status_code == 404
    assert graph(sim, session, alice["access_token"], "/me").status_code == 200


# ---------------------------------------------------------------------------------------------
# Deleted occurrences and series


def test_a_deleted_occurrence_never_comes_back_removed_only_its_master_changes(sim, session):
    upn = "alice@contoso.com"
    _, result = connect(sim, session, upn)
    token = result["access_token"]
    [daily] = add_events(sim, session, upn, series("Daily", "2026-11-24T10:00:00", 4))
    view = admin(sim, session, "GET", f"/users/{upn}/calendarView", params=WINDOW).json()["value"]
    assert [(o["type"], o["seriesMasterId"], o["start"]["dateTime"][:16]) for o in view] == [
        ("occurrence", daily["id"], f"2026-11-{day}T10:00") for day in (24, 25, 26, 27)
    ]
    [first, deleted, moved, kept] = [o["id"] for o in view]
    delta_link = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]

    events = f"/users/{upn}/events"
    assert admin(sim, session, "DELETE", f"{events}/{deleted}").status_code == 204
    changes = graph(sim, session, token, delta_link).json()
    assert [(e["id"], e["type"]) for e in changes["value"]] == [(daily["id"], "seriesMaster")]
    assert graph(sim, session, token, f"/me/events/{deleted}").json()["error"]["code"] == "ErrorItemNotFound"
    assert graph(sim, session, token, f"/me/events/{first}").json()["type"] == "occurrence"

    instances = all_pages(sim, session, token, f"/me/events/{daily['id']}/instances", params=WINDOW)
    assert [o["id"] for p in instances for o in p["value"]] == [first, moved, kept]
    paged = all_pages(
        sim, session, token, f"/me/events/{daily['id']}/instances", params={**WINDOW, "$top": "2", "$select": "start"}
    )
    assert [len(p["value"]) for p in paged] == [2, 1]
    assert set(paged[0]["value"][0]) == {"@odata.etag", "id", "start"}
    assert all(o["id"] in (first, moved, kept) for o in paged[1]["value"])

    # An occurrence that still exists but moved out of the window does come back removed.
    admin(
        sim,
        session,
        "PATCH",
        f"{events}/{moved}",
        json={
            "start": {"dateTime": "2027-02-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-02-01T10:30:00", "timeZone": "UTC"},
        },
    ).raise_for_status()
    later = graph(sim, session, token, changes["@odata.deltaLink"]).json()
    assert {e["id"]: e.get("@removed") for e in later["value"]} == {daily["id"]: None, moved: {"reason": "deleted"}}


def test_a_deleted_series_comes_back_removed_as_its_master_only(sim, session):
    upn = "erin@northwind.com"
    _, result = connect(sim, session, upn)
    token = result["access_token"]
    [daily] = add_events(sim, session, upn, series("Daily", "2026-11-24T10:00:00", 3))
    view = admin(sim, session, "GET", f"/users/{upn}/calendarView", params=WINDOW).json()["value"]
    occurrences = [o["id"] for o in view]
    delta_link = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]

    assert admin(sim, session, "DELETE", f"/users/{upn}/events/{daily['id']}").status_code == 204
    changes = graph(sim, session, token, delta_link).json()["value"]
    assert changes == [{"@odata.type": "#microsoft.graph.event", "id": daily["id"], "@removed": {"reason": "deleted"}}]
    for gone in (daily["id"], occurrences[0]):
        assert graph(sim, session, token, f"/me/events/{gone}").status_code == 404
    missing = graph(sim, session, token, f"/me/events/{daily['id']}/instances", params=WINDOW)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"


def test_admin_calendar_view_needs_a_window_and_a_known_account(sim, session):
    assert admin(sim, session, "GET", "/users/alice@contoso.com/calendarView").status_code == 400
    assert admin(sim, session, "GET", "/users/nobody@contoso.com/calendarView", params=WINDOW).status_code == 404
    assert admin(sim, session, "GET", f"/users/{FRANK}/calendarView", params=WINDOW).json() == {"value": []}


# ---------------------------------------------------------------------------------------------
# Delta sync state generations


def test_a_delta_sync_keeps_only_its_last_three_generations(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    add_events(sim, session, "alice@contoso.com", event("Standing", "2026-11-24T09:00:00"))
    links = [all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]]
    for _ in range(3):
        links.append(graph(sim, session, token, links[-1]).json()["@odata.deltaLink"])

    gone = graph(sim, session, token, links[0])
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"
    assert gone.json()["error"]["message"] == (
        "The sync state generation is not found; generation=1;[highest=4][4][2][3]."
    )
    assert "/me/calendarView/delta?startDateTime=2026-11-23" in gone.headers["Location"]
    assert graph(sim, session, token, links[1]).status_code == 200  # generation 2 still answers, and makes 5

    # Another sync of the same window keeps its own generations.
    other = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]
    for _ in range(4):
        other = graph(sim, session, token, other).json()["@odata.deltaLink"]
    assert graph(sim, session, token, links[3]).status_code == 200


def test_next_links_are_generations_too(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    add_events(sim, session, "alice@contoso.com", *(event(f"E{i}", f"2026-11-24T{8 + i:02d}:00:00") for i in range(8)))
    pages = all_pages(sim, session, token, "/me/calendarView/delta", {"Prefer": "odata.maxpagesize=2"}, params=WINDOW)
    assert len(pages) == 4  # nextLinks are generations 1-3, the deltaLink 4
    assert graph(sim, session, token, pages[0]["@odata.nextLink"]).status_code == 410
    assert graph(sim, session, token, pages[2]["@odata.nextLink"]).status_code == 200


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [("syncStateNotFound", 410, "syncStateNotFound"), ("InvalidDeltaToken", 400, "InvalidDeltaToken")],
)
def test_an_expired_delta_link_can_answer_as_documented_or_400(sim, session, answer, status, code):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    link = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]
    admin(sim, session, "POST", "/config", json={"delta_token_expired_code": answer}).raise_for_status()
    admin(sim, session, "POST", "/users/alice@contoso.com/expire-delta").raise_for_status()
    gone = graph(sim, session, token, link)
    assert (gone.status_code, gone.json()["error"]["code"]) == (status, code)
    assert admin(sim, session, "POST", "/config", json={"delta_token_expired_code": "Gone"}).status_code == 400


def test_delta_generations_are_a_knob(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    admin(sim, session, "POST", "/config", json={"delta_generations": 1}).raise_for_status()
    first = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)[-1]["@odata.deltaLink"]
    second = graph(sim, session, token, first).json()["@odata.deltaLink"]
    assert graph(sim, session, token, first).status_code == 410
    assert graph(sim, session, token, second).status_code == 200
    assert admin(sim, session, "GET", "/config").json()["delta_generations"] == 1
    admin(sim, session, "POST", "/reset").raise_for_status()
    assert admin(sim, session, "GET", "/config").json()["delta_generations"] == 3


# ---------------------------------------------------------------------------------------------
# Sparse occurrences with null keys


def test_sparse_occurrences_can_carry_extra_null_keys(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_nulls%40thread.v2/0"
    add_events(
        sim,
        session,
        "alice@contoso.com",
        series("Daily", "2026-11-24T10:00:00", 2, body={"contentType": "html", "content": f'<a href="{join}">J</a>'}),
    )
    admin(sim, session, "POST", "/config", json={"sparse_null_keys": True}).raise_for_status()
    [page] = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)
    master, *occurrences = page["value"]
    assert master["type"] == "seriesMaster" and join in master["body"]["content"] and master["subject"] == "Daily"
    for occurrence in occurrences:
        extra = {k: v for k, v in occurrence.items() if k not in SPARSE}
        assert {"subject", "onlineMeeting", "isCancelled", "body"} <= extra.keys()
        assert set(extra.values()) == {None}
        assert occurrence["start"]["dateTime"] and occurrence["seriesMasterId"] == master["id"]

    admin(sim, session, "POST", "/config", json={"sparse_null_keys": False}).raise_for_status()
    [plain] = all_pages(sim, session, token, "/me/calendarView/delta", params=WINDOW)
    assert all(set(o) == SPARSE for o in plain["value"][1:])


# ---------------------------------------------------------------------------------------------
# Token endpoint outages and the app's own credentials


def test_a_token_endpoint_outage_answers_html_and_msal_raises(sim, session):
    app, _ = connect(sim, session, "dave@contoso.com")
    fault = {"path_prefix": "/common/oauth2/v2.0/token", "status": 503, "count": 2}
    admin(sim, session, "POST", "/faults", json=fault).raise_for_status()
    with pytest.raises(msal.exceptions.MsalServiceError):  # not an error dict: MSAL raises on any 5xx
        app.acquire_token_silent_with_error(SCOPES, app.get_accounts()[0], force_refresh=True)
    raw = session.post(f"{sim.base_url}/common/oauth2/v2.0/token", data={"grant_type": "refresh_token"})
    assert raw.status_code == 503 and raw.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        raw.json()

    admin(sim, session, "POST", "/faults", json={**fault, "status": 503, "body": "json", "count": 1})
    as_json = session.post(f"{sim.base_url}/common/oauth2/v2.0/token", data={"grant_type": "refresh_token"})
    assert (as_json.status_code, as_json.json()["error"]) == (503, "temporarily_unavailable")
    assert admin(sim, session, "POST", "/faults", json={**fault, "body": "xml"}).status_code == 400
    # The outage is over (a new application object: MSAL replays a 5xx to the same one for 5 s).
    again, _ = connect(sim, session, "dave@contoso.com")
    assert "access_token" in again.acquire_token_silent_with_error(SCOPES, again.get_accounts()[0], force_refresh=True)


@pytest.mark.parametrize(
    ("aadsts", "error", "status"),
    [
        ("AADSTS7000222", "invalid_client", 401),
        ("AADSTS7000215", "invalid_client", 401),
        ("AADSTS700016", "unauthorized_client", 400),
        ("AADSTS7000112", "unauthorized_client", 400),
    ],
)
def test_app_credential_faults_answer_with_the_error_microsoft_uses(sim, session, aadsts, error, status):
    admin(sim, session, "POST", "/faults", json={"path_prefix": "/oauth2/v2.0/token", "aadsts": aadsts})
    answer = token_post(sim, session)
    body = answer.json()
    assert (answer.status_code, body["error"], body["error_codes"]) == (status, error, [int(aadsts[6:])])
    assert body["error_description"].startswith(f"{aadsts}: ") and CLIENT_ID in body["error_description"]
    assert "suberror" not in body
    assert "access_token" in token_post(sim, session).json()  # count defaults to 1


def test_an_expired_client_secret_fails_every_token_call_until_the_new_one_is_used(sim, session):
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=CLIENT_SECRET,
        authority=f"{sim.base_url}/common",
        instance_discovery=False,
        http_client=session,
        token_cache=msal.SerializableTokenCache(),
    )
    flow, answer = sign_in(session, app, "alice@contoso.com")
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, redirect_params(answer))
    assert isinstance(app.token_cache, msal.SerializableTokenCache)
    cache = app.token_cache.serialize()
    admin(sim, session, "POST", f"/apps/{CLIENT_ID}/secret", json={"expired": True}).raise_for_status()

    result = app.acquire_token_silent_with_error(SCOPES, app.get_accounts()[0], force_refresh=True)
    assert (result["error"], result["error_codes"]) == ("invalid_client", [7000222])
    fresh = new_app(sim, session)
    flow, answer = sign_in(session, fresh, "dave@contoso.com")
    assert fresh.acquire_token_by_auth_code_flow(flow, redirect_params(answer))["error_codes"] == [7000222]
    assert token_post(sim, session).json()["error_codes"] == [7000222]

    new_secret = "rotated-" + secrets.token_urlsafe(24)
    shown = admin(sim, session, "POST", f"/apps/{CLIENT_ID}/secret", json={"secret": new_secret}).json()
    assert [(s["hint"], s["expired"]) for s in shown["secrets"]] == [(CLIENT_SECRET[:3], True), (new_secret[:3], False)]
    assert new_secret not in str(admin(sim, session, "GET", "/apps").json())

    # The operator's new secret redeems the refresh tokens issued before: nobody signs in again.
    restored = msal.SerializableTokenCache()
    restored.deserialize(cache)
    recovered = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=new_secret,
        authority=f"{sim.base_url}/common",
        instance_discovery=False,
        http_client=session,
        token_cache=restored,
    )
    refreshed = recovered.acquire_token_silent_with_error(SCOPES, recovered.get_accounts()[0], force_refresh=True)
    assert refreshed["token_source"] == "identity_provider"
    assert graph(sim, session, refreshed["access_token"], "/me/calendarView", params=WINDOW).status_code == 200
    assert token_post(sim, session).json()["error_codes"] == [7000222]  # the old one stays expired

    admin(sim, session, "POST", f"/apps/{CLIENT_ID}/secret", json={"secret": new_secret, "replace": True})
    assert token_post(sim, session).json()["error_codes"] == [7000215]  # removed: now simply wrong
    admin(sim, session, "POST", "/reset").raise_for_status()
    assert "access_token" in token_post(sim, session).json()
    assert token_post(sim, session, secret=new_secret).json()["error_codes"] == [7000215]


def test_a_disabled_or_deleted_app_is_unauthorized_client(sim, session):
    admin(sim, session, "POST", f"/apps/{CLIENT_ID}", json={"disabled": True}).raise_for_status()
    body = token_post(sim, session).json()
    assert (body["error"], body["error_codes"]) == ("unauthorized_client", [7000112])
    flow = new_app(sim, session).initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, state="s")
    page = session.get(flow["auth_uri"], allow_redirects=False)
    assert page.status_code == 400 and "AADSTS7000112" in page.text and "Location" not in page.headers

    admin(sim, session, "POST", f"/apps/{CLIENT_ID}", json={"disabled": False, "deleted": True})
    body = token_post(sim, session).json()
    assert (body["error"], body["error_codes"]) == ("unauthorized_client", [700016])
    assert admin(sim, session, "GET", f"/apps/{CLIENT_ID}").json()["deleted"] is True
    assert admin(sim, session, "POST", f"/apps/{CLIENT_ID}", json={"gone": True}).status_code == 400


# ---------------------------------------------------------------------------------------------
# Scope echo


def test_a_scope_echo_without_email_makes_msal_refresh_on_every_silent_call(sim, session):
    upn = "bob@outlook.com"
    admin(sim, session, "POST", f"/users/{upn}/settings", json={"scope_echo_omits": ["email"]}).raise_for_status()
    app, result = connect(sim, session, upn)
    assert "email" not in result["scope"].split() and "Calendars.Read" in result["scope"].split()
    assert result["id_token_claims"]["email"]  # granted, only left out of the echo
    assert graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW).status_code == 200

    account = app.get_accounts()[0]
    for _ in range(2):
        assert app.acquire_token_silent_with_error(SCOPES, account)["token_source"] == "identity_provider"
    assert app.acquire_token_silent_with_error(["Calendars.Read"], account)["token_source"] == "cache"

    admin(sim, session, "POST", "/reset").raise_for_status()
    again, _ = connect(sim, session, upn)
    assert again.acquire_token_silent_with_error(SCOPES, again.get_accounts()[0])["token_source"] == "cache"


# ---------------------------------------------------------------------------------------------
# Admin consent


def consent_url(sim: Any, tenant: str = "organizations", **overrides: str) -> str:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "https://graph.microsoft.com/Calendars.Read https://graph.microsoft.com/User.Read",
        "state": "consent-state",
        **overrides,
    }
    return f"{sim.base_url}/{tenant}/v2.0/adminconsent?" + urlencode(params)


def test_admin_consent_renders_the_sign_in_form_and_returns_the_tenant(sim, session):
    url = consent_url(sim)
    page = session.get(url)
    assert page.status_code == 200
    [form] = forms_of(page.text)
    assert "login" in form["inputs"]
    assert {("action", "accept"), ("action", "cancel")} <= set(form["buttons"])
    assert "on behalf of your organization" in page.text

    answer = session.post(url, data={"login": "alice@contoso.com", "action": "accept"}, allow_redirects=False)
    assert redirect_params(answer) == {
        "admin_consent": "True",
        "tenant": CONTOSO_TENANT_ID,
        "scope": "https://graph.microsoft.com/Calendars.Read https://graph.microsoft.com/User.Read",
        "state": "consent-state",
    }
    assert urlsplit(answer.headers["Location"]).query.startswith("admin_consent=True&")


def test_declining_admin_consent_comes_back_with_admin_consent_true_and_an_error(sim, session):
    url = consent_url(sim)
    answer = session.post(url, data={"login": "alice@contoso.com", "action": "cancel"}, allow_redirects=False)
    params = redirect_params(answer)
    assert (params["admin_consent"], params["error"], params["state"]) == ("True", "access_denied", "consent-state")
    assert params["error_description"].startswith("AADSTS65004")

    fault = {"path_prefix": "/organizations/v2.0/adminconsent", "error": "consent_required", "aadsts": "AADSTS65004"}
    admin(sim, session, "POST", "/faults", json=fault).raise_for_status()
    injected = redirect_params(session.get(url, allow_redirects=False))
    assert (injected["admin_consent"], injected["error"]) == ("True", "consent_required")


def test_admin_consent_refuses_personal_accounts_and_never_redirects_to_unregistered_uris(sim, session):
    url = consent_url(sim)
    refused = session.post(url, data={"login": "bob@outlook.com", "action": "accept"}, allow_redirects=False)
    assert refused.status_code == 200 and "AADSTS500208" in refused.text
    other_tenant = consent_url(sim, tenant=CONTOSO_TENANT_ID)
    wrong = session.post(other_tenant, data={"login": "erin@northwind.com", "action": "accept"}, allow_redirects=False)
    assert wrong.status_code == 200 and "AADSTS50020" in wrong.text

    evil = session.get(consent_url(sim, redirect_uri="https://evil.example/cb"), allow_redirects=False)
    assert evil.status_code == 400 and "AADSTS50011" in evil.text and "Location" not in evil.headers
    no_scope = redirect_params(session.get(consent_url(sim, scope=""), allow_redirects=False))
    assert (no_scope["admin_consent"], no_scope["error"]) == ("True", "invalid_request")


# ---------------------------------------------------------------------------------------------
# The id_token's login_hint


def test_the_id_token_carries_an_opaque_login_hint_that_preselects_the_account(sim, session):
    _, result = connect(sim, session, "dave@contoso.com")
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == "dave@contoso.com"
    hint = claims["login_hint"]
    assert hint.startswith("O.") and "dave@contoso.com" not in hint

    flow = new_app(sim, session).initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT_URI, state=secrets.token_urlsafe(32), login_hint=hint
    )
    [form] = forms_of(session.get(flow["auth_uri"]).text)
    assert form["inputs"]["login"] == "dave@contoso.com"
    assert parse_qs(urlsplit(flow["auth_uri"]).query)["login_hint"] == [hint]

    admin(sim, session, "POST", "/config", json={"login_hint_claim": False}).raise_for_status()
    _, without = connect(sim, session, "dave@contoso.com")
    assert "login_hint" not in without["id_token_claims"]
    assert admin(sim, session, "POST", "/config", json={"login_hint_claim": "yes"}).status_code == 400
