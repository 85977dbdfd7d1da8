"""The Microsoft identity platform v2.0 endpoints: OIDC discovery, keys, authorize and token.

Shapes follow learn.microsoft.com ("OAuth 2.0 authorization code flow", "ID token claims",
"AADSTS error codes") and what MSAL Python sends and checks: it puts the SHA-256 of its nonce in
the authorize request and expects that value back in the id_token; it sends `client_info=1` and
builds `home_account_id` as `{uid}.{utid}` from the answer.

Token error bodies carry `error`, `error_description` ("AADSTSnnn: message" then trace, correlation
and timestamp lines), `error_codes` (ints), `timestamp`, `trace_id`, `correlation_id`, `error_uri`,
and `suberror` where the platform sends one ("Microsoft Entra authentication and authorization error
codes", learn.microsoft.com/entra/identity-platform/reference-error-codes). The app's own credential
problems are `invalid_client` (AADSTS7000215 wrong secret, 7000222 expired secret) or
`unauthorized_client` (700016 app not found, 7000112 app disabled): admin knobs in `admin.py` turn
them on. An outage of the token endpoint answers a 5xx with an HTML page, which MSAL Python raises
on (it raises on every 5xx).

Client assertions from a managed identity (workload identity federation): a token request may
authenticate with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
`client_assertion=<JWT>` instead of a secret. The JWT must match one of the app registration's
federated identity credentials (`iss`, `sub` compared case-sensitively, `aud`), carry a signature the
simulator's key verifies (it signs the managed identity tokens of `/msi/token`) and be within its
valid time range; refusals answer `invalid_client` (401) with the codes reported in the field:
AADSTS50027 (not a JWT), AADSTS700211 / 700212 / 700213 (no federated credential for its issuer /
audience / subject; 7002138 when the subject differs only in case), AADSTS700027 (signature, or an
assertion signed by the app itself: no certificate is registered), AADSTS700024 (expired or not yet
valid), AADSTS700229 (a user's token presented). Sources: learn.microsoft.com/entra/workload-id/
workload-identity-federation-config-app-trust-managed-identity and reference-error-codes;
Azure/azure-workload-identity#1200, Azure/login#482, #515, AzureAD/microsoft-authentication-library-
for-dotnet#4951 for the messages.

Also the v2 admin consent endpoint (learn.microsoft.com/entra/identity-platform/v2-admin-consent):
the same form as the sign-in page; errors come back to the redirect URI still carrying
`admin_consent=True`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import html
import json
import secrets
import uuid
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

import jwt

from devstack.msim import pages
from devstack.msim.directory import (
    APP_HOME_TENANT_ID,
    CONSUMERS_TENANT_ID,
    META_TENANTS,
    Account,
    AppRegistration,
    FederatedCredential,
    sign_in_refusal,
)
from devstack.msim.state import ACTING_UPN, AppState, AuthCode, ClientSecret, Fault, RefreshGrant, SimState
from devstack.msim.tokens import (
    GRAPH_APP_ID,
    b64url,
    login_from_hint,
    login_hint_claim,
    pairwise_subject,
    random_claim,
    service_principal_id,
)
from devstack.msim.web import NO_STORE, Request, Response, html_response, json_response, outage_response, redirect

OIDC_SCOPES = ("profile", "openid", "email")
RESERVED_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
GRAPH_PREFIX = "https://graph.microsoft.com/"
# Delegated Graph permissions the simulator knows, with the consent prompt's wording.
GRAPH_PERMISSIONS = {
    "User.Read": "Sign you in and read your profile",
    "User.ReadBasic.All": "Read all users' basic profiles",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadBasic": "Read basic details of your calendars",
    "Calendars.Read.Shared": "Read user and shared calendars",
    "Calendars.ReadWrite": "Have full access to your calendars",
    "Calendars.ReadWrite.Shared": "Read and write user and shared calendars",
    "Mail.Read": "Read your mail",
    "OnlineMeetings.Read": "Read your online meetings",
}
OIDC_PERMISSIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}
# What `https://graph.microsoft.com/.default` grants in a delegated flow (the app's configured permissions).
DEFAULT_GRAPH_PERMISSIONS = ("User.Read", "Calendars.Read")
_CANONICAL = {name.lower(): name for name in GRAPH_PERMISSIONS}

# Messages for AADSTS codes that faults may ask for without giving a description.
KNOWN_ERRORS = {
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
    "might have changed or reset their password.",
    700082: "The refresh token has expired due to inactivity. The token was issued on {issued} and was "
    "inactive for 90.00:00:00.",
    70000: "The provided value for the 'refresh_token' is not valid.",
    70008: "The provided authorization code or refresh token has expired due to inactivity. Send a new "
    "interactive authorization request for this user and resource.",
    70043: "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access.",
    50076: "Due to a configuration change made by your administrator, or because you moved to a new location, "
    "you must use multi-factor authentication to access the resource.",
    65001: "The user or administrator has not consented to use the application. Send an interactive "
    "authorization request for this user and resource.",
    90094: "Admin consent is required for the permissions requested by this application.",
    53003: "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
    50058: "A silent sign-in request was sent but no user is signed in.",
    54005: "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
    "existing refresh token.",
    501481: "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
    9002313: "Invalid request. Request is malformed or invalid.",
    7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
    "value, not the client secret ID, for a secret added to app '{client_id}'.",
    7000222: "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create "
    "new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
    "security: https://aka.ms/certCreds.",
    700016: "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
    "if the application has not been installed by the administrator of the tenant or consented to by any user in "
    "the tenant. You may have sent your authentication request to the wrong tenant.",
    7000112: "Application '{client_id}'({app_name}) is disabled.",
    65004: "User declined to consent to access the app.",
    50020: "User account does not exist in tenant and cannot access the application in that tenant.",
    50034: "The user account does not exist in the directory.",
    500208: "The domain is not a valid login domain for the account type.",
    90006: "The service is temporarily unavailable. Please try again later.",
    700027: "Client assertion failed signature validation.",
    700024: "Client assertion is not within its valid time range.",
    700211: "No matching federated identity record found for presented assertion issuer.",
    700213: "No matching federated identity record found for presented assertion subject.",
    50027: "JWT token is invalid or malformed.",
}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_CLOCK_SKEW_SECONDS = 300  # Entra ID tolerates 5 minutes of clock skew on nbf/exp
_FIC_CHECK = ("Check your federated identity credential Subject, Audience and Issuer against the presented "
              "assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation")
# The `error` (and HTTP status) the token endpoint answers each code with; other codes: invalid_grant, 400.
# invalid_client: "Client authentication failed"; unauthorized_client: the app is not registered in (or
# not usable by) the tenant (reference-error-codes, "Handling error codes in your application").
ERROR_TYPES: dict[int, tuple[str, int]] = {
    7000215: ("invalid_client", 401),
    7000222: ("invalid_client", 401),
    7000218: ("invalid_client", 401),
    700027: ("invalid_client", 401),
    700024: ("invalid_client", 401),
    700211: ("invalid_client", 401),
    700212: ("invalid_client", 401),
    700213: ("invalid_client", 401),
    7002138: ("invalid_client", 401),
    700229: ("invalid_client", 401),
    50027: ("invalid_client", 401),
    700016: ("unauthorized_client", 400),
    7000112: ("unauthorized_client", 400),
    90002: ("invalid_tenant", 400),
    70011: ("invalid_scope", 400),
    900144: ("invalid_request", 400),
    90006: ("temporarily_unavailable", 503),
}
KNOWN_SUBERRORS = {
    50173: "bad_token",
    700082: "bad_token",
    70043: "bad_token",
    65001: "consent_required",
    50076: "basic_action",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def described(code: int, message: str, trace_id: str, correlation_id: str, moment: dt.datetime) -> str:
    return (
        f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
        f"Timestamp: {_stamp(moment)}"
    )


def aad_error(
    state: SimState,
    req: Request,
    status: int,
    error: str,
    code: int,
    message: str,
    *,
    suberror: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    moment = _now()
    trace_id = req.request_id
    correlation_id = req.client_request_id
    body: dict[str, Any] = {
        "error": error,
        "error_description": described(code, message, trace_id, correlation_id, moment),
        "error_codes": [code],
        "timestamp": _stamp(moment),
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{state.base_url}/error?code={code}",
    }
    if suberror:
        body["suberror"] = suberror
    extra = [*NO_STORE, ("x-ms-request-id", trace_id), ("client-request-id", correlation_id)]
    return json_response(status, body, extra + list(headers or []))



def missing_parameter(state: SimState, req: Request, name: str) -> Response:
    """AADSTS900144, as the token endpoint answers a request that lacks a parameter."""
    return aad_error(state, req, 400, "invalid_request", 900144,
                     f"The request body must contain the following parameter: '{name}'.")

def _message(code: int, **values: str) -> str:
    """The message of a known AADSTS code, its placeholders filled in."""
    template = KNOWN_ERRORS.get(code, "Injected by the simulator.")
    return template.format_map(_Placeholders(values))


class _Placeholders(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fault_response(state: SimState, req: Request, fault: Fault) -> Response:
    """An injected failure on an identity endpoint, as the platform would answer it.

    With `error`/`aadsts`: that error body, its `error` and status from `ERROR_TYPES` unless the fault
    names them. Without: a 5xx answers the outage page (HTML, as Microsoft's front door serves it; MSAL
    raises), a 429 the JSON `temporarily_unavailable` body; `body` ("json", "html", "empty") overrides.
    """
    headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
    if fault.error or fault.aadsts:
        code = int(str(fault.aadsts or "AADSTS70000").upper().removeprefix("AADSTS") or 70000)
        default_error, default_status = ERROR_TYPES.get(code, ("invalid_grant", 400))
        status = fault.status or default_status
        if fault.body in ("html", "empty"):
            return _with_headers(outage_response(status, fault.body), headers)
        client_id = _client_id_of(req)
        with state.lock:
            app = state.apps.get(client_id)
        message = fault.error_description or _message(
            code,
            issued=_stamp(_now() - dt.timedelta(days=91)),
            client_id=client_id,
            app_name=app.display_name if app else "",
            tenant=req.path.strip("/").split("/")[0],
        )
        return aad_error(
            state,
            req,
            status,
            fault.error or default_error,
            code,
            message,
            suberror=fault.suberror or KNOWN_SUBERRORS.get(code),
            headers=headers,
        )
    status = fault.status or 503
    body = fault.body or ("html" if status >= 500 else "json")
    if body != "json":
        return _with_headers(outage_response(status, body), headers)
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    return aad_error(state, req, status, error, 90006, KNOWN_ERRORS[90006], headers=headers)


def _client_id_of(req: Request) -> str:
    """The client id a request names: in its form, its Basic authorization, or its query string."""
    authorization = req.header("Authorization") or ""
    basic_id = ""
    if authorization.lower().startswith("basic "):
        try:
            basic_id = unquote_plus(base64.b64decode(authorization[6:].strip()).decode("utf-8").partition(":")[0])
        except (binascii.Error, UnicodeDecodeError):
            basic_id = ""
    return req.form().get("client_id") or basic_id or req.query_param("client_id") or ""


def _with_headers(response: Response, headers: list[tuple[str, str]]) -> Response:
    response.headers = [*NO_STORE, *response.headers, *headers]
    return response


# ---------------------------------------------------------------------------------------------
# Discovery and keys


def _authority_tenant(state: SimState, tenant: str) -> str | None:
    """The tenant path segment as endpoints show it (GUID for domains), None when unknown."""
    key = tenant.lower()
    if key in META_TENANTS:
        return key
    found = state.directory.tenant(key)
    return found.id if found else None


def _issuer(state: SimState, authority_tenant: str) -> str:
    if authority_tenant in ("common", "organizations"):
        return f"{state.base_url}/{{tenantid}}/v2.0"
    if authority_tenant == "consumers":
        return f"{state.base_url}/{CONSUMERS_TENANT_ID}/v2.0"
    return f"{state.base_url}/{authority_tenant}/v2.0"


def unknown_tenant(state: SimState, req: Request, tenant: str) -> Response:
    return aad_error(
        state,
        req,
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant.",
    )


def discovery(state: SimState, req: Request, tenant: str) -> Response:
    authority = _authority_tenant(state, tenant)
    if authority is None:
        return unknown_tenant(state, req, tenant)
    base = f"{state.base_url}/{authority}"
    host = urlsplit(state.base_url).netloc
    document = {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": _issuer(state, authority),
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{state.base_url}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": None,
        "cloud_instance_name": host,
        "cloud_graph_host_name": host,
        "msgraph_host": host,
        "rbac_url": "https://pas.windows.net",
    }
    return json_response(200, document, [("Cache-Control", "max-age=86400, private")])


def jwks(state: SimState, req: Request, tenant: str) -> Response:
    authority = _authority_tenant(state, tenant)
    if authority is None:
        return unknown_tenant(state, req, tenant)
    return json_response(200, {"keys": [state.key.jwk(f"{state.base_url}/{{tenantid}}/v2.0")]})


def instance_discovery(state: SimState, req: Request) -> Response:
    """`/common/discovery/instance`, for clients that were not told `instance_discovery=False`."""
    host = urlsplit(state.base_url).netloc
    endpoint = req.query_param("authorization_endpoint") or f"{state.base_url}/common/oauth2/v2.0/authorize"
    tenant = urlsplit(endpoint).path.strip("/").split("/")[0] or "common"
    return json_response(
        200,
        {
            "tenant_discovery_endpoint": f"{state.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        },
    )


# ---------------------------------------------------------------------------------------------
# Scopes


def requested_scopes(raw_scope: str) -> tuple[list[str], list[str], tuple[str, int, str] | None]:
    """The `scope` of an authorize or admin-consent request: Graph scopes, OIDC scopes, and the error
    (error, AADSTS code, message) Microsoft answers a missing or invalid one with, else None."""
    if not raw_scope.strip():
        return [], [], ("invalid_request", 900144,
                        "The request body must contain the following parameter: 'scope'.")
    graph_scopes, oidc_scopes, invalid = parse_scopes(raw_scope)
    if invalid is not None:
        return [], [], ("invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not "
                        f"valid. The scope {invalid} is not valid.")
    return graph_scopes, oidc_scopes, None


def parse_scopes(raw: str) -> tuple[list[str], list[str], str | None]:
    """(Graph permissions, OIDC scopes, first invalid scope) of a requested scope string."""
    graph: list[str] = []
    oidc: list[str] = []
    for item in raw.split():
        lowered = item.lower()
        if lowered in RESERVED_SCOPES:
            if lowered not in oidc:
                oidc.append(lowered)
            continue
        name = item[len(GRAPH_PREFIX) :] if lowered.startswith(GRAPH_PREFIX) else item
        if lowered in (GRAPH_PREFIX + ".default", "00000003-0000-0000-c000-000000000000/.default"):
            names = list(DEFAULT_GRAPH_PERMISSIONS)
        elif name.lower() in _CANONICAL:
            names = [_CANONICAL[name.lower()]]
        else:
            return graph, oidc, item
        graph.extend(n for n in names if n not in graph)
    return graph, oidc, None


def granted_scope_string(scopes: list[str]) -> str:
    """The `scope` of a token response: Graph permissions by short name, then OIDC scopes.

    The identity platform leaves `offline_access` out of it even when a refresh token comes back.
    """
    graph = [s for s in scopes if s not in RESERVED_SCOPES]
    oidc = [s for s in OIDC_SCOPES if s in scopes]
    return " ".join(graph + oidc)


# ---------------------------------------------------------------------------------------------
# Authorize


def _error_page(status: int, code: int, message: str, req: Request) -> Response:
    moment = _now()
    page = pages.error_page(code, message, req.request_id, req.client_request_id, _stamp(moment))
    return html_response(status, page)


def _back_to_app(
    redirect_uri: str, response_mode: str, params: dict[str, str], *, script_nonce: str | None = None
) -> Response:
    if response_mode == "form_post":
        nonce = script_nonce or secrets.token_urlsafe(16)
        return html_response(200, pages.form_post_page(redirect_uri, params, nonce), script_nonce=nonce)
    encoded = urlencode(params)
    if response_mode == "fragment":
        return redirect(f"{redirect_uri}#{encoded}")
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return redirect(f"{redirect_uri}{separator}{encoded}")


def _error_to_app(
    redirect_uri: str,
    response_mode: str,
    req: Request,
    state_param: str | None,
    error: str,
    code: int,
    message: str,
    base_url: str,
) -> Response:
    moment = _now()
    params = {
        "error": error,
        "error_description": described(code, message, req.request_id, req.client_request_id, moment),
        "error_uri": f"{base_url}/error?code={code}",
    }
    if state_param is not None:
        params["state"] = state_param
    return _back_to_app(redirect_uri, response_mode, params)


def _browser_app(state: SimState, req: Request, tenant: str) -> tuple[AppRegistration, str] | Response:
    """The app and redirect URI of a browser request (authorize, admin consent), or the error page that
    Microsoft shows instead of redirecting anywhere: unknown tenant, app or redirect URI."""
    params = req.query
    if _authority_tenant(state, tenant) is None:
        return _error_page(400, 90002, f"Tenant '{tenant}' not found.", req)
    client_id = params.get("client_id", "")
    if not client_id:
        return _error_page(400, 900144, "The request body must contain the following parameter: 'client_id'.", req)
    with state.lock:
        app = state.apps.get(client_id)
        app_state = state.app_state(app) if app is not None else None
    if app is None or app_state is None or app_state.deleted:
        return _error_page(400, 700016, _message(700016, client_id=client_id, tenant=tenant), req)
    if app_state.disabled:
        return _error_page(400, 7000112, _message(7000112, client_id=client_id, app_name=app.display_name), req)
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        return _error_page(400, 900971, "No reply address provided.", req)
    if redirect_uri not in app.redirect_uris:
        return _error_page(
            400,
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            f"configured for the application '{client_id}'. Make sure the redirect URI sent in the request "
            "matches one added to your application in the Azure portal.",
            req,
        )
    return app, redirect_uri


def authorize(state: SimState, req: Request, tenant: str) -> Response:
    params = req.query
    authority = _authority_tenant(state, tenant)
    if authority is None:
        return _error_page(400, 90002, f"Tenant '{tenant}' not found.", req)
    client_id = params.get("client_id", "")
    found = _browser_app(state, req, tenant)
    if isinstance(found, Response):
        return found
    app, redirect_uri = found
    response_mode = params.get("response_mode") or "query"
    if response_mode not in ("query", "fragment", "form_post"):
        return _error_page(400, 70007, f"The response_mode '{response_mode}' is not supported.", req)
    state_param = params.get("state")

    def back(error: str, code: int, message: str) -> Response:
        return _error_to_app(redirect_uri, response_mode, req, state_param, error, code, message, state.base_url)

    response_type = params.get("response_type", "")
    if response_type != "code":
        if "id_token" in response_type.split() or "token" in response_type.split():
            return back(
                "unsupported_response_type", 700054, "response_type 'id_token' is not enabled for the application."
            )
        return back("unsupported_response_type", 70005, f"response_type '{response_type}' is not supported.")
    raw_scope = params.get("scope", "")
    graph_scopes, oidc_scopes, scope_error = requested_scopes(raw_scope)
    if scope_error is not None:
        return back(*scope_error)
    challenge = params.get("code_challenge", "")
    if not challenge:
        return back(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code_challenge'. (The simulator requires PKCE.)",
        )
    if params.get("code_challenge_method", "plain") != "S256":
        return back("invalid_request", 90100, "code_challenge_method must be S256 (the simulator requires S256).")
    if len(challenge) != 43:
        return back("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
    if params.get("prompt") == "none":
        return back("login_required", 50058, KNOWN_ERRORS[50058])

    requested = graph_scopes + oidc_scopes
    if req.method == "GET":
        return _sign_in_page(app, requested, login_from_hint(params.get("login_hint", "")), None)

    form = req.form()
    action = form.get("action", "")
    login = form.get("login", "").strip()
    if action == "cancel":
        return back("access_denied", 65004, "User declined to consent to access the app.")
    if action != "accept":
        return _sign_in_page(app, requested, login, "Choose Accept or Cancel.")
    ACTING_UPN.set(login or None)
    account = state.directory.account(login)
    if account is None:
        message = (
            f"AADSTS50034: The user account {login or '(empty)'} does not exist in the directory. To sign into "
            "this application, the account must be added to the directory."
        )
        return _sign_in_page(app, requested, login, message)
    refusal = sign_in_refusal(state.directory, authority, account)
    if refusal is not None:
        return _sign_in_page(app, requested, login, f"AADSTS{refusal[0]}: {refusal[1]}")
    if state.directory.tenant_by_id(account.tenant_id).blocks_third_party_apps:
        return back("access_denied", 53003, KNOWN_ERRORS[53003])
    with state.lock:
        tenant_app = state.tenant_apps.get(account.tenant_id)
    if tenant_app == "disabled":
        return _error_page(400, 7000112, _message(7000112, client_id=client_id, app_name=app.display_name), req)
    if tenant_app == "deleted":
        name = state.directory.tenant_by_id(account.tenant_id).display_name
        return _error_page(400, 700016, _message(700016, client_id=client_id, tenant=name), req)

    code = secrets.token_urlsafe(64)
    with state.lock:
        _forget_stale_codes(state)
        state.codes[code] = AuthCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            scopes=requested,
            nonce=params.get("nonce"),
            upn=account.upn,
            authority_tenant=authority,
            issued_at=state.monotonic(),
            seq=state.next_seq(),
        )
    answer = {"code": code}
    if state_param is not None:
        answer["state"] = state_param
    answer["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, account.upn))
    return _back_to_app(redirect_uri, response_mode, answer)


def _forget_stale_codes(state: SimState) -> None:
    """Codes live 10 minutes; keep them a while longer so that a late replay still reads as redeemed."""
    horizon = state.monotonic() - 6 * max(state.config.auth_code_lifetime, 600)
    for stale in [c for c, grant in state.codes.items() if grant.issued_at < horizon]:
        del state.codes[stale]


def _sign_in_page(
    app: AppRegistration, scopes: list[str], login: str, error: str | None, *, organization: bool = False
) -> Response:
    permissions = [(s, GRAPH_PERMISSIONS.get(s) or OIDC_PERMISSIONS.get(s, s)) for s in scopes]
    return html_response(200, pages.sign_in_page(app.display_name, permissions, login, error, organization))


# ---------------------------------------------------------------------------------------------
# Admin consent


def admin_consent(state: SimState, req: Request, tenant: str) -> Response:
    """`GET|POST /{tenant}/v2.0/adminconsent?client_id&redirect_uri&scope&state`: an admin grants the
    app's permissions for the whole organization (learn.microsoft.com/entra/identity-platform/
    v2-admin-consent). GET renders the sign-in form; POST with `action=accept` answers 302
    `redirect_uri?admin_consent=True&tenant={tenant id}&scope=...&state=...`; `action=cancel` answers
    302 `redirect_uri?admin_consent=True&error=access_denied&error_subcode=cancel&error_description=
    AADSTS65004...&state=...`. Unknown apps and redirect URIs get an error page, never a redirect.
    Personal accounts cannot consent for an organization."""
    found = _browser_app(state, req, tenant)
    if isinstance(found, Response):
        return found
    app, redirect_uri = found
    authority = _authority_tenant(state, tenant)
    assert authority is not None
    params = req.query
    state_param = params.get("state")

    def back(error: str, code: int, message: str, subcode: str | None = None) -> Response:
        return _admin_consent_error(state, req, redirect_uri, state_param, error, code, message, subcode)

    raw_scope = params.get("scope", "")
    graph_scopes, oidc_scopes, scope_error = requested_scopes(raw_scope)
    if scope_error is not None:
        return back(*scope_error)
    requested = graph_scopes + oidc_scopes
    if req.method == "GET":
        return _sign_in_page(app, requested, login_from_hint(params.get("login_hint", "")), None, organization=True)
    form = req.form()
    action = form.get("action", "")
    login = form.get("login", "").strip()
    if action == "cancel":
        return back("access_denied", 65004, KNOWN_ERRORS[65004], "cancel")
    if action != "accept":
        return _sign_in_page(app, requested, login, "Choose Accept or Cancel.", organization=True)
    ACTING_UPN.set(login or None)
    account = state.directory.account(login)
    if account is None:
        message = f"AADSTS50034: The user account {login or '(empty)'} does not exist in the directory."
        return _sign_in_page(app, requested, login, message, organization=True)
    if account.kind == "personal":
        message = (
            "AADSTS500208: The domain is not a valid login domain for the account type. Personal accounts "
            "cannot consent for an organization. Use your work or school account instead."
        )
        return _sign_in_page(app, requested, login, message, organization=True)
    refusal = sign_in_refusal(state.directory, "organizations" if authority in META_TENANTS else authority, account)
    if refusal is not None:
        return _sign_in_page(app, requested, login, f"AADSTS{refusal[0]}: {refusal[1]}", organization=True)
    answer = {"admin_consent": "True", "tenant": account.tenant_id, "scope": _consented_scope_string(raw_scope)}
    if state_param is not None:
        answer["state"] = state_param
    return _back_to_app(redirect_uri, "query", answer)


def _consented_scope_string(raw_scope: str) -> str:
    """The `scope` of an admin consent answer: the permissions granted, resource-qualified as in the
    request (`https://graph.microsoft.com/Calendars.Read ...`)."""
    granted: list[str] = []
    for item in raw_scope.split():
        lowered = item.lower()
        if lowered in RESERVED_SCOPES:
            name = lowered
        elif lowered.endswith("/.default") and not lowered.startswith(GRAPH_PREFIX):
            name = item  # a resource's .default by its app id URI or id, as requested
        elif lowered.startswith(GRAPH_PREFIX):
            name = GRAPH_PREFIX + _CANONICAL.get(lowered[len(GRAPH_PREFIX) :], item[len(GRAPH_PREFIX) :])
        else:
            name = GRAPH_PREFIX + _CANONICAL.get(lowered, item)
        if name not in granted:
            granted.append(name)
    return " ".join(granted)


def _admin_consent_error(
    state: SimState,
    req: Request,
    redirect_uri: str,
    state_param: str | None,
    error: str,
    code: int,
    message: str,
    subcode: str | None = None,
) -> Response:
    params = {"admin_consent": "True", "error": error}
    if subcode:
        params["error_subcode"] = subcode
    params["error_description"] = described(code, message, req.request_id, req.client_request_id, _now())
    params["error_uri"] = f"{state.base_url}/error?code={code}"
    if state_param is not None:
        params["state"] = state_param
    return _back_to_app(redirect_uri, "query", params)


def browser_fault(state: SimState, req: Request, tenant: str, fault: Fault, *, admin_consent: bool) -> Response:
    """An injected failure on the authorize or admin consent page. With `error`/`aadsts` it comes back
    to the app's redirect URI, as the platform sends errors it can tell the app about; without, the
    page itself is down (the outage page)."""
    if not (fault.error or fault.aadsts):
        return _with_headers(outage_response(fault.status or 503, "empty" if fault.body == "empty" else "html"), [])
    found = _browser_app(state, req, tenant)
    if isinstance(found, Response):
        return found
    _, redirect_uri = found
    code = int(str(fault.aadsts or "AADSTS70000").upper().removeprefix("AADSTS") or 70000)
    error = fault.error or ("access_denied" if code in (65004, 53003) else "invalid_request")
    message = fault.error_description or _message(code)
    state_param = req.query.get("state")
    if admin_consent:
        return _admin_consent_error(state, req, redirect_uri, state_param, error, code, message)
    response_mode = req.query.get("response_mode") or "query"
    if response_mode not in ("query", "fragment", "form_post"):
        response_mode = "query"
    return _error_to_app(redirect_uri, response_mode, req, state_param, error, code, message, state.base_url)


# ---------------------------------------------------------------------------------------------
# Token


def _client(state: SimState, req: Request, form: dict[str, str]) -> tuple[AppRegistration | None, Response | None]:
    client_id = form.get("client_id", "")
    secret = form.get("client_secret")
    authorization = req.header("Authorization") or ""
    if authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, aad_error(state, req, 401, "invalid_client", 7000216, "Malformed Basic authorization.")
        basic_id, _, basic_secret = decoded.partition(":")
        client_id = client_id or unquote_plus(basic_id)
        secret = unquote_plus(basic_secret)
    if not client_id:
        return None, missing_parameter(state, req, "client_id")
    with state.lock:
        app = state.apps.get(client_id)
        app_state = state.app_state(app) if app is not None else None
    tenant = req.path.strip("/").split("/")[0]
    if app is None or app_state is None or app_state.deleted:
        return None, aad_error(
            state, req, 400, "unauthorized_client", 700016, _message(700016, client_id=client_id, tenant=tenant)
        )
    if app_state.disabled:
        return None, aad_error(
            state,
            req,
            400,
            "unauthorized_client",
            7000112,
            _message(7000112, client_id=client_id, app_name=app.display_name),
        )
    if form.get("client_assertion") or form.get("client_assertion_type"):
        with state.lock:
            credentials = list(app_state.federated_credentials)
        refused = _assertion_refusal(state, req, app, credentials, form)
        return (None, refused) if refused is not None else (app, None)
    if not secret:
        return None, aad_error(
            state,
            req,
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    matched = _matching_secret(app_state, secret)
    if matched is None:
        return None, aad_error(state, req, 401, "invalid_client", 7000215, _message(7000215, client_id=client_id))
    if matched.expired:
        return None, aad_error(state, req, 401, "invalid_client", 7000222, _message(7000222, client_id=client_id))
    return app, None


def _assertion_refusal(
    state: SimState, req: Request, app: AppRegistration, credentials: list[FederatedCredential], form: dict[str, str]
) -> Response | None:
    """Why Entra ID would refuse this client assertion for `app`, or None when it authenticates it."""

    def refuse(code: int, message: str) -> Response:
        return aad_error(state, req, 401, "invalid_client", code, message)

    assertion_type = form.get("client_assertion_type", "")
    if not assertion_type:
        return missing_parameter(state, req, "client_assertion_type")
    if assertion_type != JWT_BEARER:
        return aad_error(state, req, 400, "invalid_request", 9002313,
                         "Invalid request. Request is malformed or invalid. (client_assertion_type)")
    assertion = form.get("client_assertion", "")
    if not assertion:
        return missing_parameter(state, req, "client_assertion")
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return refuse(50027, "JWT token is invalid or malformed.")
    if not isinstance(claims.get("iss"), str) or not isinstance(claims.get("sub"), str) or "aud" not in claims \
            or not isinstance(claims.get("exp"), int | float):
        return refuse(50027, "JWT token is invalid or malformed. The token lacks iss, sub, aud or exp.")
    issuer, subject = claims["iss"], claims["sub"]
    audiences = [claims["aud"]] if isinstance(claims["aud"], str) else [a for a in claims["aud"] if isinstance(a, str)]
    if issuer == app.client_id:
        # An assertion the app signed itself (a certificate credential): none is registered here.
        return refuse(700027, "Client assertion contains an invalid signature. [Reason - The key was not found., "
                              f"Thumbprint of key used by client: '{header.get('x5t') or header.get('kid') or ''}']")
    by_issuer = [c for c in credentials if c.issuer == issuer]
    if not by_issuer:
        return refuse(700211, f"No matching federated identity record found for presented assertion issuer "
                              f"'{issuer}'. {_FIC_CHECK}")
    by_audience = [c for c in by_issuer if set(c.audiences) & set(audiences)]
    if not by_audience:
        return refuse(700212, f"No matching federated identity record found for presented assertion audience "
                              f"'{' '.join(audiences)}'. {_FIC_CHECK}")
    if not any(c.subject == subject for c in by_audience):
        if any(c.subject.lower() == subject.lower() for c in by_audience):
            return refuse(7002138, f"No matching federated identity record found for presented assertion subject "
                                   f"'{subject}'. The subject matches with case-insensitive comparison, but not "
                                   f"with case-sensitive comparison. {_FIC_CHECK}")
        return refuse(700213, f"No matching federated identity record found for presented assertion subject "
                              f"'{subject}'. {_FIC_CHECK}")
    if claims.get("idtyp") == "user" or "scp" in claims:
        return refuse(700229, "ForbiddenTokenType: Only app-only tokens can be used as Federated Identity "
                              "Credentials for Microsoft Entra issuer.")
    try:
        jwt.decode(assertion, state.key.public_key, algorithms=["RS256"],
                   options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidTokenError:
        return refuse(700027, "Client assertion failed signature validation. [Reason - The key was not found.]")
    now = _now()
    raw_nbf = claims.get("nbf")
    not_before = float(raw_nbf) if isinstance(raw_nbf, int | float) else 0.0
    expires = float(claims["exp"])
    skew = ASSERTION_CLOCK_SKEW_SECONDS
    if expires + skew < now.timestamp() or not_before - skew > now.timestamp():
        def iso(seconds: float) -> str:
            return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")

        return refuse(700024, f"Client assertion is not within its valid time range. Current time: "
                              f"{iso(now.timestamp())}, assertion valid from {iso(not_before)}, expiry time "
                              f"of assertion {iso(expires)}. Review the documentation at "
                              "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .")
    return None


def _matching_secret(app_state: AppState, secret: str) -> ClientSecret | None:
    """The app's client secret equal to `secret` (compared in constant time), or None."""
    found = None
    for candidate in app_state.secrets:
        if hmac.compare_digest(secret.encode(), candidate.value.encode()):
            found = candidate
    return found


def tenant_app_refusal(state: SimState, req: Request, app: AppRegistration, tenant_id: str) -> Response | None:
    """The app's service principal disabled (AADSTS7000112) or deleted (700016) by the admin of one
    customer tenant (`POST /_sim/tenants/{tenant}/app`): that tenant's token requests are refused,
    as `unauthorized_client`, and every other tenant's still work."""
    with state.lock:
        kind = state.tenant_apps.get(tenant_id)
    if kind is None:
        return None
    if kind == "disabled":
        return aad_error(state, req, 400, "unauthorized_client", 7000112,
                         _message(7000112, client_id=app.client_id, app_name=app.display_name))
    name = state.directory.tenant_by_id(tenant_id).display_name
    return aad_error(state, req, 400, "unauthorized_client", 700016,
                     _message(700016, client_id=app.client_id, tenant=name))


def token(state: SimState, req: Request, tenant: str) -> Response:
    authority = _authority_tenant(state, tenant)
    if authority is None:
        return unknown_tenant(state, req, tenant)
    form = req.form()
    if not form:
        return missing_parameter(state, req, "grant_type")
    app, failure = _client(state, req, form)
    if failure is not None:
        return failure
    assert app is not None
    if authority not in META_TENANTS and (refused := tenant_app_refusal(state, req, app, authority)) is not None:
        return refused
    grant_type = form.get("grant_type", "")
    if grant_type == "authorization_code":
        return _redeem_code(state, req, authority, app, form)
    if grant_type == "refresh_token":
        return _redeem_refresh_token(state, req, app, form)
    if grant_type == "client_credentials":
        return _client_credentials(state, req, authority, app, form)
    if not grant_type:
        return missing_parameter(state, req, "grant_type")
    return aad_error(
        state, req, 400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
    )


def _redeem_code(state: SimState, req: Request, authority: str, app: AppRegistration, form: dict[str, str]) -> Response:
    code = form.get("code", "")
    if not code:
        return missing_parameter(state, req, "code")
    with state.lock:
        grant = state.codes.get(code)
        if grant is None:
            return aad_error(
                state, req, 400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if grant.redeemed:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
                "existing refresh token.",
            )
        if state.monotonic() - grant.issued_at > state.config.auth_code_lifetime:
            return aad_error(state, req, 400, "invalid_grant", 70008, KNOWN_ERRORS[70008])
        if grant.client_id != app.client_id:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                70000,
                "The provided authorization code was issued to a different client.",
            )
        if grant.authority_tenant != authority:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                700005,
                "Provided Authorization Code is intended to use against other tenant, thus rejected.",
            )
        if form.get("redirect_uri", "") != grant.redirect_uri:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                500112,
                f"The reply address '{form.get('redirect_uri', '')}' does not match the reply address "
                f"'{grant.redirect_uri}' provided when requesting Authorization code.",
            )
        verifier = form.get("code_verifier", "")
        expected = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
        if not verifier or not hmac.compare_digest(expected, grant.code_challenge):
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        ACTING_UPN.set(grant.upn)
        if state.is_revoked(grant.upn, grant.seq):
            return aad_error(state, req, 400, "invalid_grant", 50173, KNOWN_ERRORS[50173], suberror="bad_token")
        account = state.directory.account(grant.upn)
        assert account is not None
        refused = tenant_app_refusal(state, req, app, account.tenant_id)
        if refused is not None:
            return refused
        grant.redeemed = True
        return _issue_user_tokens(state, app, account, grant.scopes, grant.nonce, form)


def _redeem_refresh_token(state: SimState, req: Request, app: AppRegistration, form: dict[str, str]) -> Response:
    refresh_token = form.get("refresh_token", "")
    if not refresh_token:
        return missing_parameter(state, req, "refresh_token")
    with state.lock:
        grant = state.refresh_tokens.get(refresh_token)
        if grant is None:
            return aad_error(
                state, req, 400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if grant.client_id != app.client_id:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed. The refresh token was issued to a different client.",
            )
        ACTING_UPN.set(grant.upn)
        if state.is_revoked(grant.upn, grant.seq):
            revoked = state.revoked_at_time.get(grant.upn.lower(), _now())
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                50173,
                f"{KNOWN_ERRORS[50173]} The grant was issued on '{grant.issued_at.isoformat()}' and the "
                f"TokensValidFrom date (before which tokens are not valid) for this user is "
                f"'{revoked.isoformat()}'.",
                suberror="bad_token",
            )
        if state.monotonic() - grant.last_used > state.config.refresh_token_idle_lifetime:
            return aad_error(
                state,
                req,
                400,
                "invalid_grant",
                700082,
                KNOWN_ERRORS[700082].format(issued=_stamp(grant.issued_at)),
                suberror="bad_token",
            )
        account = state.directory.account(grant.upn)
        assert account is not None
        refused = tenant_app_refusal(state, req, app, account.tenant_id)
        if refused is not None:
            return refused
        scopes = grant.scopes
        requested = form.get("scope")
        if requested:
            graph_scopes, oidc_scopes, invalid = parse_scopes(requested)
            if invalid is not None:
                return aad_error(
                    state,
                    req,
                    400,
                    "invalid_scope",
                    70011,
                    f"The provided value for the input parameter 'scope' is not valid. The scope {invalid} is not "
                    "valid.",
                )
            missing = [s for s in graph_scopes if s not in grant.scopes]
            if missing:
                return aad_error(
                    state,
                    req,
                    400,
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the application with ID "
                    f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization request "
                    "for this user and resource.",
                    suberror="consent_required",
                )
            scopes = (graph_scopes or [s for s in grant.scopes if s not in RESERVED_SCOPES]) + [
                s for s in grant.scopes if s in RESERVED_SCOPES and (s in oidc_scopes or s == "offline_access")
            ]
        grant.last_used = state.monotonic()
        return _issue_user_tokens(state, app, account, scopes, None, form, granted=grant.scopes)


def _issue_user_tokens(
    state: SimState,
    app: AppRegistration,
    account: Account,
    scopes: list[str],
    nonce: str | None,
    form: dict[str, str],
    *,
    granted: list[str] | None = None,
) -> Response:
    """Caller holds state.lock."""
    now = _now()
    lifetime = state.config.access_token_lifetime
    # Some accounts' answers leave granted scopes out of `scope` (reported for `email`/`openid` on
    # personal accounts); the tokens themselves are unaffected.
    omitted = {s.lower() for s in state.settings(account).scope_echo_omits}
    answer: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(s for s in granted_scope_string(scopes).split() if s.lower() not in omitted),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": state.key.sign(_user_access_claims(state, app, account, scopes, now, lifetime)),
    }
    if "offline_access" in scopes:
        refresh_token = secrets.token_urlsafe(96)
        state.refresh_tokens[refresh_token] = RefreshGrant(
            client_id=app.client_id,
            upn=account.upn,
            scopes=list(granted or scopes),
            seq=state.next_seq(),
            issued_at=now,
            last_used=state.monotonic(),
        )
        answer["refresh_token"] = refresh_token
    if "openid" in scopes:
        answer["id_token"] = state.key.sign(_id_token_claims(state, app, account, scopes, nonce, now))
    if form.get("client_info") == "1":
        client_info = {"uid": account.object_id, "utid": account.tenant_id}
        answer["client_info"] = b64url(json.dumps(client_info, separators=(",", ":")).encode())
    return json_response(200, answer, list(NO_STORE))


def _id_token_claims(
    state: SimState, app: AppRegistration, account: Account, scopes: list[str], nonce: str | None, now: dt.datetime
) -> dict[str, Any]:
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "aud": app.client_id,
        "iss": f"{state.base_url}/{account.tenant_id}/v2.0",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 3600,
        "aio": random_claim(),
        "rh": random_claim(),
        "sid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sid:{account.upn}")),
        "sub": pairwise_subject(account.object_id, app.client_id),
        "tid": account.tenant_id,
        "uti": random_claim(),
        "ver": "2.0",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if state.config.login_hint_claim:
        claims["login_hint"] = login_hint_claim(account.object_id, account.tenant_id, account.upn)
    if "profile" in scopes:
        claims.update({"name": account.display_name, "oid": account.object_id, "preferred_username": account.upn})
    if "email" in scopes and (account.mail or account.kind == "personal"):
        claims["email"] = account.email
    if account.kind == "personal":
        claims["idp"] = CONSUMERS_TENANT_ID
    return claims


def _user_access_claims(
    state: SimState, app: AppRegistration, account: Account, scopes: list[str], now: dt.datetime, lifetime: int
) -> dict[str, Any]:
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "aud": GRAPH_APP_ID,
        "iss": f"https://sts.windows.net/{account.tenant_id}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "acct": 1 if account.kind == "personal" else 0,
        "acr": "1",
        "aio": random_claim(),
        "amr": ["pwd"],
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "appidacr": "1",
        "family_name": account.surname,
        "given_name": account.given_name,
        "idtyp": "user",
        "ipaddr": "127.0.0.1",
        "name": account.display_name,
        "oid": account.object_id,
        "scp": " ".join(s for s in granted_scope_string(scopes).split()),
        "sub": pairwise_subject(account.object_id, GRAPH_APP_ID),
        "tid": account.tenant_id,
        "unique_name": account.upn if account.kind == "work" else f"live.com#{account.upn}",
        "uti": random_claim(),
        "ver": "1.0",
    }
    if account.kind == "work":
        claims["upn"] = account.upn
    else:
        claims["idp"] = "live.com"
        claims["email"] = account.email
    return claims


def _client_credentials(
    state: SimState, req: Request, authority: str, app: AppRegistration, form: dict[str, str]
) -> Response:
    if authority in ("common", "consumers"):
        return aad_error(
            state,
            req,
            400,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the "
            "/organizations or tenant-specific endpoint.",
        )
    tenant_id = APP_HOME_TENANT_ID if authority == "organizations" else authority
    scope = form.get("scope", "").strip()
    if not scope:
        return missing_parameter(state, req, "scope")
    if len(scope.split()) != 1 or not scope.endswith("/.default"):
        return aad_error(
            state,
            req,
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
            "with /.default suffixed to the resource identifier (application ID URI).",
        )
    resource = scope[: -len("/.default")]
    now = _now()
    issued = int(now.timestamp())
    lifetime = state.config.access_token_lifetime
    principal = service_principal_id(app.client_id, tenant_id)
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "aio": random_claim(),
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "appidacr": "1",
        "idp": f"https://sts.windows.net/{tenant_id}/",
        "idtyp": "app",
        "oid": principal,
        "rh": random_claim(),
        "sub": principal,
        "tid": tenant_id,
        "uti": random_claim(),
        "ver": "1.0",
    }
    answer = {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": state.key.sign(claims),
    }
    return json_response(200, answer, list(NO_STORE))


# ---------------------------------------------------------------------------------------------
# Misc pages


def logout(state: SimState, req: Request) -> Response:
    return html_response(200, pages.signed_out_page())


def error_lookup(state: SimState, req: Request) -> Response:
    code = req.query_param("code") or ""
    try:
        number = int(code)
    except ValueError:
        number = 0
    message = KNOWN_ERRORS.get(number, "See https://login.microsoftonline.com/error for this code.")
    return html_response(200, pages.error_page(number, html.unescape(message), req.request_id, "", _stamp(_now())))
