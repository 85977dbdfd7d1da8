"""The local Microsoft simulator speaks the identity platform and Graph the way MSAL and requests expect.

Everything here goes through the real `msal.ConfidentialClientApplication` and `requests` over HTTPS
with the devstack test CA. MSAL remembers an identical failed token POST for 60 s, per application
object: every test builds its own application.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests

from devstack._httpserver import free_port
from devstack.msim import (
    APP_HOME_TENANT_ID,
    CONSUMERS_TENANT_ID,
    CONTOSO_TENANT_ID,
    AppRegistration,
    MicrosoftSimulator,
)
from devstack.tls import ensure_ca

CLIENT_ID = "5a1c6c2e-7d1b-4c61-9c1f-2f6b0a0f7e11"
CLIENT_SECRET = "sim-secret-" + "x" * 24
REDIRECT_URI = "http://localhost:7071/api/connections/outlook/callback"
SCOPES = ["Calendars.Read", "User.Read", "email"]
WINDOW = {"startDateTime": "2026-11-23T00:00:00Z", "endDateTime": "2026-11-30T00:00:00Z"}
REPO = Path(__file__).resolve().parents[2]

# The contract's sign-in answers with a 302 and a query string; MSAL would rather have form_post.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return ensure_ca(tmp_path_factory.mktemp("devstack"))


@pytest.fixture(scope="module")
def sim(ca):
    simulator = MicrosoftSimulator(
        ssl_context=ca.server_context(),
        apps=[AppRegistration(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])],
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def session(ca):
    with requests.Session() as s:
        s.trust_env = False  # REQUESTS_CA_BUNDLE from the environment would override verify
        s.verify = str(ca.bundle_pem)
        yield s


@pytest.fixture(autouse=True)
def seeded(sim, session):
    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()


def new_app(
    sim: MicrosoftSimulator, session: requests.Session, tenant: str = "common", secret: str = CLIENT_SECRET
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=secret,
        authority=f"{sim.base_url}/{tenant}",
        instance_discovery=False,
        http_client=session,
    )


def sign_in(
    session: requests.Session,
    app: msal.ConfidentialClientApplication,
    login: str,
    *,
    action: str = "accept",
    scopes: list[str] = SCOPES,
    response_mode: str | None = None,
) -> tuple[dict[str, Any], requests.Response]:
    flow: dict[str, Any] = app.initiate_auth_code_flow(
        scopes, redirect_uri=REDIRECT_URI, state=secrets.token_urlsafe(32), response_mode=response_mode
    )
    page = session.get(flow["auth_uri"])
    assert page.status_code == 200, page.text
    answer = session.post(flow["auth_uri"], data={"login": login, "action": action}, allow_redirects=False)
    return flow, answer


def redirect_params(answer: requests.Response) -> dict[str, str]:
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def connect(
    sim: MicrosoftSimulator, session: requests.Session, login: str, tenant: str = "common", scopes: list[str] = SCOPES
) -> tuple[msal.ConfidentialClientApplication, dict[str, Any]]:
    app = new_app(sim, session, tenant)
    flow, answer = sign_in(session, app, login, scopes=scopes)
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, redirect_params(answer))
    assert "access_token" in result, result
    return app, result


def graph(
    sim: MicrosoftSimulator,
    session: requests.Session,
    token: str | None,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    params: dict[str, str] | None = None,
) -> requests.Response:
    url = path if path.startswith("https://") else f"{sim.base_url}/v1.0{path}"
    return session.get(url, params=params, headers={"Authorization": f"Bearer {token}", **(headers or {})})


def add_events(
    sim: MicrosoftSimulator, session: requests.Session, upn: str, *events: dict[str, Any]
) -> list[dict[str, Any]]:
    created = session.post(f"{sim.base_url}/_sim/users/{upn}/events", json=list(events))
    assert created.status_code == 201, created.text
    stored: list[dict[str, Any]] = created.json()
    return stored


def event(subject: str, start: str, minutes: int = 30, zone: str = "UTC", **extra: Any) -> dict[str, Any]:
    hours, mins = divmod(int(start[11:13]) * 60 + int(start[14:16]) + minutes, 60)
    end_day = start[:10]
    if hours >= 24:  # tests keep events within a day
        raise ValueError("event crosses midnight")
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": f"{end_day}T{hours:02d}:{mins:02d}:00", "timeZone": zone},
        **extra,
    }


def all_pages(
    sim: MicrosoftSimulator,
    session: requests.Session,
    token: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    params: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    pages = [graph(sim, session, token, path, headers, params=params)]
    while "@odata.nextLink" in pages[-1].json():
        pages.append(graph(sim, session, token, pages[-1].json()["@odata.nextLink"], headers))
    for page in pages:
        assert page.status_code == 200, page.text
    return [p.json() for p in pages]


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append({"attrs": attributes, "inputs": {}, "buttons": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"][attributes.get("name")] = attributes.get("value", "")
        elif tag == "button" and self.forms:
            self.forms[-1]["buttons"].append((attributes.get("name"), attributes.get("value")))


def forms_of(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


# ---------------------------------------------------------------------------------------------
# Discovery and keys


def test_discovery_document_is_what_msal_expects(sim, session):
    common = session.get(f"{sim.base_url}/common/v2.0/.well-known/openid-configuration").json()
    assert common["issuer"] == f"{sim.base_url}/{{tenantid}}/v2.0"
    assert common["authorization_endpoint"] == f"{sim.base_url}/common/oauth2/v2.0/authorize"
    assert common["token_endpoint"] == f"{sim.base_url}/common/oauth2/v2.0/token"
    consumers = session.get(f"{sim.base_url}/consumers/v2.0/.well-known/openid-configuration").json()
    assert consumers["issuer"] == f"{sim.base_url}/{CONSUMERS_TENANT_ID}/v2.0"
    by_domain = session.get(f"{sim.base_url}/contoso.com/v2.0/.well-known/openid-configuration").json()
    assert by_domain["token_endpoint"] == f"{sim.base_url}/{CONTOSO_TENANT_ID}/oauth2/v2.0/token"
    keys = session.get(common["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["kid"] and keys[0]["x5c"]

    unknown = session.get(f"{sim.base_url}/nosuchtenant.com/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]


# ---------------------------------------------------------------------------------------------
# Sign-in with MSAL


def test_msal_sign_in_gives_tokens_and_a_home_account(sim, session):
    app, result = connect(sim, session, "alice@contoso.com")

    assert result["token_type"] == "Bearer"
    assert result["refresh_token"]
    assert result["scope"].split() == ["Calendars.Read", "User.Read", "profile", "openid", "email"]
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == "alice@contoso.com"
    assert claims["tid"] == CONTOSO_TENANT_ID
    assert claims["email"] == "alice@contoso.com"
    assert claims["iss"] == f"{sim.base_url}/{CONTOSO_TENANT_ID}/v2.0"
    [account] = app.get_accounts()
    assert account["home_account_id"] == f"{claims['oid']}.{CONTOSO_TENANT_ID}"
    assert account["username"] == "alice@contoso.com"

    jwk = session.get(f"{sim.base_url}/common/discovery/v2.0/keys").json()["keys"][0]
    key = jwt.PyJWK(jwk).key
    verified = jwt.decode(result["id_token"], key, algorithms=["RS256"], audience=CLIENT_ID)
    assert verified["oid"] == claims["oid"]
    access = jwt.decode(
        result["access_token"], key, algorithms=["RS256"], audience="00000003-0000-0000-c000-000000000000"
    )
    assert access["scp"] == "Calendars.Read User.Read profile openid email"
    assert access["upn"] == "alice@contoso.com"


def test_graph_me_answers_the_signed_in_work_account(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    me = graph(sim, session, result["access_token"], "/me")
    assert me.status_code == 200
    body = me.json()
    assert body["@odata.context"] == f"{sim.base_url}/v1.0/$metadata#users/$entity"
    assert body["mail"] == "alice@contoso.com"
    assert body["userPrincipalName"] == "alice@contoso.com"
    assert body["id"] == result["id_token_claims"]["oid"]


def test_personal_account_has_null_mail_on_graph_but_an_email_claim(sim, session):
    app, result = connect(sim, session, "bob@outlook.com")
    claims = result["id_token_claims"]
    assert claims["tid"] == CONSUMERS_TENANT_ID
    assert claims["email"] == "bob@outlook.com"
    assert app.get_accounts()[0]["home_account_id"].endswith("." + CONSUMERS_TENANT_ID)
    me = graph(sim, session, result["access_token"], "/me").json()
    assert me["mail"] is None
    assert me["userPrincipalName"] == "bob@outlook.com"
    assert re.fullmatch(r"[0-9a-f]{16}", me["id"])  # personal accounts: /me id is not the token's oid


def test_sign_in_page_shows_the_app_and_the_permissions(sim, session):
    app = new_app(sim, session)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, state="s" * 43, login_hint="dave@contoso.com")
    page = session.get(flow["auth_uri"])
    assert page.status_code == 200
    assert "CoAgentor Outlook Calendar" in page.text
    assert "Read your calendars" in page.text and "Calendars.Read" in page.text
    [form] = forms_of(page.text)
    assert form["inputs"]["login"] == "dave@contoso.com"
    assert ("action", "accept") in form["buttons"] and ("action", "cancel") in form["buttons"]


def test_cancel_returns_access_denied_to_the_app(sim, session):
    flow, answer = sign_in(session, new_app(sim, session), "alice@contoso.com", action="cancel")
    params = redirect_params(answer)
    assert params["error"] == "access_denied"
    assert params["error_description"].startswith("AADSTS65004: User declined to consent")
    assert params["state"] == flow["state"]
    assert "code" not in params


def test_conditional_access_blocks_carol(sim, session):
    flow, answer = sign_in(session, new_app(sim, session), "carol@fabrikam.com")
    params = redirect_params(answer)
    assert params["error"] == "access_denied"
    assert params["error_description"].startswith("AADSTS53003")
    assert params["state"] == flow["state"]


def test_unknown_login_shows_the_form_again(sim, session):
    _, answer = sign_in(session, new_app(sim, session), "mallory@contoso.com")
    assert answer.status_code == 200
    assert "AADSTS50034" in answer.text
    assert forms_of(answer.text)[0]["inputs"]["login"] == "mallory@contoso.com"


def test_organizations_refuses_personal_and_consumers_refuses_work_accounts(sim, session):
    _, answer = sign_in(session, new_app(sim, session, "organizations"), "bob@outlook.com")
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert "AADSTS500208" in answer.text
    _, answer = sign_in(session, new_app(sim, session, "consumers"), "alice@contoso.com")
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert "AADSTS500208" in answer.text
    _, answer = sign_in(session, new_app(sim, session, CONTOSO_TENANT_ID), "erin@northwind.com")
    assert "AADSTS50020" in answer.text

    _, work = connect(sim, session, "alice@contoso.com", tenant="organizations")
    assert work["id_token_claims"]["tid"] == CONTOSO_TENANT_ID
    _, personal = connect(sim, session, "bob@outlook.com", tenant="consumers")
    assert personal["id_token_claims"]["tid"] == CONSUMERS_TENANT_ID


def test_unknown_app_and_unregistered_redirect_uri_never_redirect(sim, session):
    flow = new_app(sim, session).initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, state="s")
    unknown_app = session.get(flow["auth_uri"].replace(CLIENT_ID, "00000000-1111-2222-3333-444444444444"))
    assert unknown_app.status_code == 400 and "AADSTS700016" in unknown_app.text
    evil = flow["auth_uri"].replace("localhost%3A7071", "evil.example")
    for answer in (
        session.get(evil),
        session.post(evil, data={"login": "alice@contoso.com", "action": "accept"}, allow_redirects=False),
    ):
        assert answer.status_code == 400
        assert "AADSTS50011" in answer.text
        assert "Location" not in answer.headers


def test_form_post_response_mode_posts_code_and_state_to_the_app(sim, session):
    app = new_app(sim, session)
    flow, answer = sign_in(session, app, "dave@contoso.com", response_mode="form_post")
    assert answer.status_code == 200
    [form] = forms_of(answer.text)
    assert form["attrs"]["action"] == REDIRECT_URI and form["attrs"]["method"].upper() == "POST"
    assert form["inputs"]["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, form["inputs"])
    assert result["id_token_claims"]["preferred_username"] == "dave@contoso.com"


def test_an_authorization_code_works_once(sim, session):
    app = new_app(sim, session)
    flow, answer = sign_in(session, app, "alice@contoso.com")
    params = redirect_params(answer)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, params)
    replay = new_app(sim, session).acquire_token_by_auth_code_flow(flow, params)
    assert replay["error"] == "invalid_grant"
    assert replay["error_description"].startswith("AADSTS54005")
    assert replay["error_codes"] == [54005]
    assert {"timestamp", "trace_id", "correlation_id"} <= replay.keys()


def test_a_code_needs_the_pkce_verifier_it_was_issued_for(sim, session):
    app = new_app(sim, session)
    flow, answer = sign_in(session, app, "alice@contoso.com")
    tampered = dict(flow, code_verifier=secrets.token_urlsafe(32))
    result = app.acquire_token_by_auth_code_flow(tampered, redirect_params(answer))
    assert result["error"] == "invalid_grant"
    assert "AADSTS501481" in result["error_description"]


def test_wrong_client_secret_is_invalid_client(sim, session):
    app = new_app(sim, session, secret="not-the-secret")
    flow, answer = sign_in(session, app, "alice@contoso.com")
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(answer))
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215")


# ---------------------------------------------------------------------------------------------
# Refresh and revocation


def test_refresh_rotates_the_refresh_token_and_the_old_one_keeps_working(sim, session):
    app, first = connect(sim, session, "alice@contoso.com")
    [account] = app.get_accounts()
    refreshed = app.acquire_token_silent_with_error(SCOPES, account, force_refresh=True)
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["token_source"] == "identity_provider"
    [cached_rt] = list(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))
    assert cached_rt["secret"] != first["refresh_token"]

    old = session.post(
        f"{sim.base_url}/common/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": CLIENT_ID,
            "scope": "Calendars.Read offline_access openid",
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert old.status_code == 200, old.text
    assert old.json()["scope"] == "Calendars.Read openid"


def test_revoked_account_cannot_refresh_until_it_signs_in_again(sim, session):
    app, _ = connect(sim, session, "alice@contoso.com")
    session.post(f"{sim.base_url}/_sim/users/alice@contoso.com/revoke").raise_for_status()
    result = app.acquire_token_silent_with_error(SCOPES, app.get_accounts()[0], force_refresh=True)
    assert result["error"] == "invalid_grant"
    assert "AADSTS50173" in result["error_description"]

    again, _ = connect(sim, session, "alice@contoso.com")
    assert "access_token" in again.acquire_token_silent_with_error(SCOPES, again.get_accounts()[0], force_refresh=True)


def test_refreshing_for_a_scope_never_consented_needs_consent(sim, session):
    app, _ = connect(sim, session, "alice@contoso.com", scopes=["User.Read"])
    result = app.acquire_token_silent_with_error(["Calendars.Read"], app.get_accounts()[0])
    assert result["error"] == "invalid_grant"
    assert result["error_description"].startswith("AADSTS65001")
    assert result["suberror"] == "consent_required"


def test_silent_sign_in_without_a_session_is_login_required(sim, session):
    app = new_app(sim, session)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, state="st", prompt="none")
    params = redirect_params(session.get(flow["auth_uri"], allow_redirects=False))
    assert params["error"] == "login_required" and params["state"] == "st"


def test_token_endpoint_faults_answer_with_the_requested_aadsts_code(sim, session):
    app, _ = connect(sim, session, "dave@contoso.com")
    fault = {"path_prefix": "/common/oauth2/v2.0/token", "error": "invalid_grant", "aadsts": "AADSTS700082"}
    session.post(f"{sim.base_url}/_sim/faults", json=fault).raise_for_status()
    result = app.acquire_token_silent_with_error(SCOPES, app.get_accounts()[0], force_refresh=True)
    assert result["error"] == "invalid_grant"
    assert result["error_description"].startswith("AADSTS700082")


def test_client_credentials_token_for_the_local_key_vault(sim, session):
    app = new_app(sim, session, APP_HOME_TENANT_ID)
    result = app.acquire_token_for_client(["https://vault.azure.net/.default"])
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["tid"] == APP_HOME_TENANT_ID and claims["appid"] == CLIENT_ID and claims["idtyp"] == "app"
    bad_scope = new_app(sim, session, APP_HOME_TENANT_ID).acquire_token_for_client(["https://vault.azure.net/read"])
    assert "AADSTS1002012" in bad_scope["error_description"]


# ---------------------------------------------------------------------------------------------
# Graph calendar


def test_graph_rejects_expired_tokens_and_missing_scopes(sim, session):
    session.post(f"{sim.base_url}/_sim/config", json={"access_token_lifetime": 1}).raise_for_status()
    _, short = connect(sim, session, "alice@contoso.com")
    _, no_calendar = connect(sim, session, "dave@contoso.com", scopes=["User.Read"])

    forbidden = graph(sim, session, no_calendar["access_token"], "/me/calendarView", params=WINDOW)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "ErrorAccessDenied"
    time.sleep(2.1)
    expired = graph(sim, session, short["access_token"], "/me")
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in expired.headers
    assert graph(sim, session, None, "/me").status_code == 401


def test_calendar_view_needs_a_window(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    answer = graph(sim, session, result["access_token"], "/me/calendarView")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "ErrorInvalidParameter"
    assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()


def test_calendar_view_pages_ten_events_at_a_time(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    add_events(
        sim,
        session,
        "alice@contoso.com",
        *(event(f"Meeting {i}", f"2026-11-{24 + i // 8}T{8 + i % 8:02d}:00:00") for i in range(23)),
    )
    add_events(sim, session, "alice@contoso.com", event("Outside", "2026-12-05T09:00:00"))
    add_events(sim, session, "dave@contoso.com", event("Dave's", "2026-11-24T09:00:00"))

    pages = all_pages(sim, session, token, "/me/calendarView", params=WINDOW)
    assert [len(p["value"]) for p in pages] == [10, 10, 3]
    assert pages[0]["@odata.nextLink"].startswith(f"{sim.base_url}/v1.0/me/calendarView?")
    subjects = [e["subject"] for p in pages for e in p["value"]]
    assert sorted(subjects) == sorted(f"Meeting {i}" for i in range(23))
    first = pages[0]["value"][0]
    assert first["start"] == {"dateTime": "2026-11-24T08:00:00.0000000", "timeZone": "UTC"}
    assert first["type"] == "singleInstance" and first["@odata.etag"].startswith('W/"')

    smaller = all_pages(sim, session, token, "/me/calendarView", {"Prefer": "odata.maxpagesize=5"}, params=WINDOW)
    assert [len(p["value"]) for p in smaller] == [5, 5, 5, 5, 3]
    assert len(graph(sim, session, token, "/me/calendarView", params={**WINDOW, "$top": "7"}).json()["value"]) == 7


def test_recurring_series_expand_into_occurrences(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    [weekly, daily] = add_events(
        sim,
        session,
        "alice@contoso.com",
        event(
            "Weekly sync",
            "2026-11-02T10:00:00",
            zone="W. Europe Standard Time",
            recurrence={
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]},
                "range": {"type": "numbered", "startDate": "2026-11-02", "numberOfOccurrences": 8},
            },
        ),
        # US daylight saving time ends on 1 Nov 2026: 09:00 New York is 13:00 UTC before, 14:00 after.
        event(
            "Stand-up",
            "2026-10-30T09:00:00",
            minutes=15,
            zone="America/New_York",
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "endDate", "startDate": "2026-10-30", "endDate": "2026-11-02"},
            },
        ),
    )
    assert weekly["type"] == "seriesMaster"

    view = all_pages(
        sim,
        session,
        token,
        "/me/calendarView",
        params={"startDateTime": "2026-10-26T00:00:00Z", "endDateTime": "2026-12-31T00:00:00Z"},
    )
    occurrences = [e for p in view for e in p["value"]]
    sync = [e for e in occurrences if e["subject"] == "Weekly sync"]
    assert [e["start"]["dateTime"][:16] for e in sync] == [
        "2026-11-02T09:00",
        "2026-11-04T09:00",
        "2026-11-09T09:00",
        "2026-11-11T09:00",
        "2026-11-16T09:00",
        "2026-11-18T09:00",
        "2026-11-23T09:00",
        "2026-11-25T09:00",
    ]
    assert {e["type"] for e in sync} == {"occurrence"}
    assert {e["seriesMasterId"] for e in sync} == {weekly["id"]}
    assert len({e["id"] for e in sync}) == 8 and weekly["id"] not in {e["id"] for e in sync}
    standup = [e["start"]["dateTime"][:16] for e in occurrences if e["subject"] == "Stand-up"]
    assert standup == ["2026-10-30T13:00", "2026-10-31T13:00", "2026-11-01T14:00", "2026-11-02T14:00"]
    assert daily["recurrence"]["range"]["endDate"] == "2026-11-02"

    moved, cancelled = sync[6]["id"], sync[7]["id"]
    assert graph(sim, session, token, f"/me/events/{moved}").json()["seriesMasterId"] == weekly["id"]
    patched = session.patch(
        f"{sim.base_url}/_sim/users/alice@contoso.com/events/{moved}",
        json={
            "subject": "Weekly sync (moved)",
            "start": {"dateTime": "2026-11-24T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-24T16:00:00", "timeZone": "UTC"},
        },
    )
    assert patched.status_code == 200, patched.text
    assert session.delete(f"{sim.base_url}/_sim/users/alice@contoso.com/events/{cancelled}").status_code == 204
    week = [e for p in all_pages(sim, session, token, "/me/calendarView", params=WINDOW) for e in p["value"]]
    assert [(e["subject"], e["type"], e["start"]["dateTime"][:16]) for e in week] == [
        ("Weekly sync (moved)", "exception", "2026-11-24T15:00")
    ]
    assert graph(sim, session, token, f"/me/events/{cancelled}").status_code == 404


def test_graph_addresses_only_the_signed_in_mailbox(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    add_events(sim, session, "alice@contoso.com", event("Mine", "2026-11-24T09:00:00"))
    oid = result["id_token_claims"]["oid"]
    for me in (f"/users/{oid}", "/users/alice@contoso.com"):
        [item] = graph(sim, session, token, f"{me}/calendarView", params=WINDOW).json()["value"]
        assert item["subject"] == "Mine"
    other = graph(sim, session, token, "/users/dave@contoso.com/calendarView", params=WINDOW)
    assert other.status_code == 403
    missing = graph(sim, session, token, "/me/events/AAMkADnope=")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"


def test_time_zone_and_text_body_preferences(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=%7b%7d"
    add_events(
        sim,
        session,
        "alice@contoso.com",
        event(
            "Teams call",
            "2026-11-25T18:00:00",
            body={
                "contentType": "html",
                "content": f'<html><body><p>Hi&nbsp;all</p><a href="{join}">Join the meeting now</a></body></html>',
            },
        ),
    )
    prefer = {"Prefer": 'outlook.timezone="Pacific Standard Time", outlook.body-content-type="text"'}
    answer = graph(sim, session, result["access_token"], "/me/calendarView", prefer, params=WINDOW)
    [item] = answer.json()["value"]
    assert item["start"] == {"dateTime": "2026-11-25T10:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert item["body"]["contentType"] == "text"
    assert f"Join the meeting now<{join}>" in item["body"]["content"]
    assert "outlook.timezone" in answer.headers["Preference-Applied"]
    html_body = graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW).json()["value"][0][
        "body"
    ]
    assert html_body["contentType"] == "html"


def test_calendar_view_delta_tracks_changes_and_expires(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    upn = "alice@contoso.com"
    created = add_events(sim, session, upn, *(event(f"E{i}", f"2026-11-24T{8 + i:02d}:00:00") for i in range(12)))
    prefer = {"Prefer": "odata.maxpagesize=5"}

    pages = all_pages(sim, session, token, "/me/calendarView/delta", prefer, params=WINDOW)
    assert [len(p["value"]) for p in pages] == [5, 5, 2]
    assert all("$skiptoken=" in p["@odata.nextLink"] for p in pages[:-1])
    delta_link = pages[-1]["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link and delta_link.startswith(f"{sim.base_url}/v1.0/me/calendarView/delta?")
    assert pages[0]["value"][0]["@odata.type"] == "#microsoft.graph.event"

    base = f"{sim.base_url}/_sim/users/{upn}/events"
    session.patch(f"{base}/{created[0]['id']}", json={"subject": "E0 renamed"}).raise_for_status()
    session.delete(f"{base}/{created[1]['id']}").raise_for_status()
    session.patch(
        f"{base}/{created[2]['id']}",
        json={
            "start": {"dateTime": "2027-01-05T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-01-05T10:00:00", "timeZone": "UTC"},
        },
    ).raise_for_status()
    [new] = add_events(sim, session, upn, event("New", "2026-11-26T09:00:00"))

    changes = graph(sim, session, token, delta_link).json()
    by_id = {e["id"]: e for e in changes["value"]}
    assert by_id[created[0]["id"]]["subject"] == "E0 renamed"
    assert by_id[new["id"]]["subject"] == "New"
    for gone in (created[1]["id"], created[2]["id"]):
        assert by_id[gone] == {"@odata.type": "#microsoft.graph.event", "id": gone, "@removed": {"reason": "deleted"}}
    assert len(by_id) == 4
    quiet = graph(sim, session, token, changes["@odata.deltaLink"]).json()
    assert quiet["value"] == [] and "@odata.deltaLink" in quiet

    assert (
        graph(sim, session, token, "/me/calendarView/delta", params={**WINDOW, "$select": "subject"}).status_code == 400
    )
    session.post(f"{sim.base_url}/_sim/users/{upn}/expire-delta").raise_for_status()
    gone = graph(sim, session, token, quiet["@odata.deltaLink"])
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"  # as reported; the docs spell it syncStateNotFound
    assert "/me/calendarView/delta?startDateTime=2026-11-23" in gone.headers["Location"]


def test_delta_sends_series_masters_in_full_and_occurrences_sparse(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    token = result["access_token"]
    upn = "alice@contoso.com"
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_series%40thread.v2/0"
    [first, series, *_] = add_events(
        sim,
        session,
        upn,
        event("Before", "2026-11-23T09:00:00"),
        event(
            "Daily",
            "2026-11-24T10:00:00",
            body={"contentType": "html", "content": f'<a href="{join}">Join</a>'},
            recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2026-11-24", "numberOfOccurrences": 4},
            },
        ),
        event("After 1", "2026-11-28T09:00:00"),
        event("After 2", "2026-11-29T09:00:00"),
    )
    prefer = {"Prefer": "odata.maxpagesize=3"}
    pages = all_pages(sim, session, token, "/me/calendarView/delta", prefer, params=WINDOW)
    assert [[e.get("subject", e["type"]) for e in p["value"]] for p in pages] == [
        ["Before"],
        ["Daily", "occurrence", "occurrence", "occurrence", "occurrence"],  # a series is never split
        ["After 1", "After 2"],
    ]
    master, *occurrences = pages[1]["value"]
    assert master["type"] == "seriesMaster" and join in master["body"]["content"]
    for occurrence in occurrences:
        assert set(occurrence) == {"@odata.type", "@odata.etag", "id", "type", "seriesMasterId", "start", "end"}
        assert occurrence["seriesMasterId"] == series["id"]

    base = f"{sim.base_url}/_sim/users/{upn}/events"
    session.delete(f"{base}/{occurrences[1]['id']}").raise_for_status()
    session.patch(f"{base}/{occurrences[2]['id']}", json={"subject": "Daily (longer)"}).raise_for_status()
    session.delete(f"{base}/{first['id']}").raise_for_status()
    changes = graph(sim, session, token, pages[-1]["@odata.deltaLink"]).json()["value"]
    by_id = {e["id"]: e for e in changes}
    assert by_id[series["id"]]["type"] == "seriesMaster"
    assert by_id[occurrences[2]["id"]]["type"] == "exception"
    assert by_id[occurrences[2]["id"]]["subject"] == "Daily (longer)"
    assert occurrences[1]["id"] not in by_id  # as reported: a deleted occurrence is never @removed
    assert by_id[first["id"]]["@removed"] == {"reason": "deleted"}
    assert len(changes) == 3


def test_injected_429_carries_retry_after(sim, session):
    _, result = connect(sim, session, "alice@contoso.com")
    fault = {"path_prefix": "/v1.0/me/calendarView", "status": 429, "retry_after": 2, "count": 2}
    session.post(f"{sim.base_url}/_sim/faults", json=fault).raise_for_status()
    answers = [graph(sim, session, result["access_token"], "/me/calendarView", params=WINDOW) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].json()["error"]["code"] == "TooManyRequests"


def test_fifth_concurrent_request_on_a_mailbox_is_throttled(sim, session, ca):
    _, result = connect(sim, session, "alice@contoso.com")
    fault = {"path_prefix": "/v1.0/me/calendarView", "latency_ms": 700}
    session.post(f"{sim.base_url}/_sim/faults", json=fault).raise_for_status()

    def one_call(_):
        with requests.Session() as own:
            own.trust_env = False
            own.verify = str(ca.bundle_pem)
            return graph(sim, own, result["access_token"], "/me/calendarView", params=WINDOW)

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(one_call, range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) <= 4 and 429 in statuses
    throttled = next(a for a in answers if a.status_code == 429)
    assert throttled.json()["error"]["code"] == "ApplicationThrottled"
    assert throttled.headers["Retry-After"]
    stats = session.get(f"{sim.base_url}/_sim/stats").json()
    assert stats["max_concurrency"]["alice@contoso.com"] >= 5


# ---------------------------------------------------------------------------------------------
# Admin API


def test_request_log_keeps_no_secrets(sim, session):
    app = new_app(sim, session)
    flow, answer = sign_in(session, app, "alice@contoso.com")
    params = redirect_params(answer)
    result = app.acquire_token_by_auth_code_flow(flow, params)
    graph(sim, session, result["access_token"], "/me")

    log = session.get(f"{sim.base_url}/_sim/requests").json()
    dumped = json.dumps(log)
    for secret in (
        CLIENT_SECRET,
        params["code"],
        result["refresh_token"],
        result["access_token"],
        flow["code_verifier"],
    ):
        assert secret not in dumped
    [redeem] = [r for r in log if r["path"] == "/common/oauth2/v2.0/token"]
    assert redeem["method"] == "POST" and redeem["status"] == 200
    assert redeem["form"]["code"] == "[redacted]" and redeem["form"]["client_info"] == "1"
    authorize = [r for r in log if r["path"] == "/common/oauth2/v2.0/authorize"]
    assert authorize[0]["params"]["client_id"] == CLIENT_ID
    assert f"client_id={CLIENT_ID}" in authorize[0]["query"]
    assert {"method", "path", "query", "time"} <= log[-1].keys()


def test_request_log_names_the_account_each_request_acted_for(sim, session):
    """DEVSTACK.md: `upn` = the account the request acted for when the simulator knows it, else
    null: so a check can count token and Graph requests per connection."""
    app = new_app(sim, session)
    flow, answer = sign_in(session, app, "alice@contoso.com")
    result = app.acquire_token_by_auth_code_flow(flow, redirect_params(answer))
    graph(sim, session, result["access_token"], "/me")
    app.acquire_token_by_refresh_token(result["refresh_token"], ["https://graph.microsoft.com/Calendars.Read"])
    log = session.get(f"{sim.base_url}/_sim/requests").json()
    acted = [(r["method"], r["path"], r["upn"]) for r in log if r["upn"] is not None]
    assert ("GET", "/v1.0/me", "alice@contoso.com") in acted
    tokens = [r for r in log if r["path"] == "/common/oauth2/v2.0/token"]
    assert len(tokens) == 2 and {r["upn"] for r in tokens} == {"alice@contoso.com"}
    discovery = [r for r in log if r["path"].endswith("openid-configuration")]
    assert discovery and all(r["upn"] is None for r in discovery)


def test_admin_events_and_reset(sim, session):
    upn = "erin@northwind.com"
    [stored] = add_events(sim, session, upn, event("Board", "2026-11-24T09:00:00", id="AAMkADcustom="))
    assert stored["id"] == "AAMkADcustom="
    assert {"iCalUId", "createdDateTime", "lastModifiedDateTime", "changeKey"} <= stored.keys()
    patched = session.patch(f"{sim.base_url}/_sim/users/{upn}/events/AAMkADcustom=", json={"isCancelled": True})
    assert patched.json()["isCancelled"] is True and patched.json()["subject"] == "Board"
    assert patched.json()["changeKey"] != stored["changeKey"]
    bad = session.post(f"{sim.base_url}/_sim/users/{upn}/events", json={"subject": "no times"})
    assert bad.status_code == 400
    assert session.post(f"{sim.base_url}/_sim/users/nobody@contoso.com/events", json={}).status_code == 404

    session.post(f"{sim.base_url}/_sim/reset").raise_for_status()
    assert session.get(f"{sim.base_url}/_sim/users/{upn}/events").json()["value"] == []
    users = {u["upn"]: u for u in session.get(f"{sim.base_url}/_sim/users").json()["value"]}
    assert users["bob@outlook.com"]["mail"] is None


def test_command_line_serves_quietly_until_sigterm(tmp_path, ca):
    port = free_port()
    secret_file = tmp_path / "secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.msim",
            "--port",
            str(port),
            "--devstack-dir",
            str(tmp_path),
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            str(secret_file),
            "--redirect-uri",
            REDIRECT_URI,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with requests.Session() as s:
            s.trust_env = False
            s.verify = str(ensure_ca(tmp_path).bundle_pem)
            deadline = time.monotonic() + 15
            while True:
                try:
                    if s.get(f"https://127.0.0.1:{port}/_sim/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
            app = msal.ConfidentialClientApplication(
                CLIENT_ID,
                client_credential=CLIENT_SECRET,
                authority=f"https://127.0.0.1:{port}/common",
                instance_discovery=False,
                http_client=s,
            )
            flow, answer = sign_in(s, app, "alice@contoso.com")
            assert "access_token" in app.acquire_token_by_auth_code_flow(flow, redirect_params(answer))
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == b"" and stderr == b""
