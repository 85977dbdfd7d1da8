"""The managed identity endpoint of App Service / Azure Functions (Flex Consumption included), as the
local Functions host's "identity endpoint".

Azure sets `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` in the app's environment; azure-identity's
`ManagedIdentityCredential` (through MSAL Python's `ManagedIdentityClient`) then asks
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<resource>&client_id=<user-assigned id>` with
the header `X-IDENTITY-HEADER: {IDENTITY_HEADER}` and reads
`{"access_token", "expires_on" (Unix seconds, a string), "resource", "token_type", "client_id"}`
(learn.microsoft.com/azure/app-service/overview-managed-identity, "REST endpoint reference").
Failures answer `{"statusCode", "message", "correlationId"}`, as App Service does.

A token for `api://AzureADTokenExchange` is what an app registration's federated identity credential
trusts: issued by `{authority}/{tenant}/v2.0` (the simulator's base URL standing in for
`https://login.microsoftonline.com`), `sub` and `oid` the identity's principal id, `aud` the resource,
signed with the simulator's key (published in its JWKS, so the token endpoint verifies it as Entra ID
verifies a managed identity's token). Field reports (AzureAD/microsoft-identity-web#2551) show these
claims on real managed identity tokens for that audience.
"""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from typing import Any

from devstack.msim.state import SimState
from devstack.msim.tokens import random_claim
from devstack.msim.web import NO_STORE, Request, Response, json_response

API_VERSION = "2019-08-01"


def _refused(status: int, message: str) -> Response:
    body = {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return json_response(status, body, list(NO_STORE))


def token(state: SimState, req: Request) -> Response:
    """`GET /msi/token`: a managed identity's access token for `resource`."""
    if req.method != "GET":
        return _refused(405, "Only GET is supported.")
    header = req.header("X-IDENTITY-HEADER") or ""
    if not state.identity_header or not hmac.compare_digest(header.encode(), state.identity_header.encode()):
        return _refused(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
    if req.query_param("api-version") != API_VERSION:
        return _refused(400, f"api-version must be {API_VERSION}.")
    resource = (req.query_param("resource") or "").strip()
    if not resource:
        return _refused(400, "The resource parameter is required.")
    client_id = req.query_param("client_id") or ""
    principal_id = req.query_param("principal_id") or req.query_param("object_id") or ""
    with state.lock:
        identities = list(state.managed_identities.values())
        config = state.config
        lifetime = config.managed_identity_token_lifetime_seconds
        age = config.managed_identity_token_age_seconds
    if client_id:
        chosen = [i for i in identities if i.client_id.lower() == client_id.lower()]
    elif principal_id:
        chosen = [i for i in identities if i.principal_id.lower() == principal_id.lower()]
    else:
        chosen = []  # the system-assigned identity: the local host has none
    if not chosen:
        return _refused(400, "No User Assigned or Delegated Managed Identity found for specified "
                             "ClientId/ResourceId/PrincipalId.")
    identity = chosen[0]
    issued = int(dt.datetime.now(dt.UTC).timestamp()) - age
    expires = issued + lifetime
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"{state.base_url}/{identity.tenant_id}/v2.0",
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "aio": random_claim(),
        "azp": identity.client_id,
        "azpacr": "2",
        "idtyp": "app",
        "oid": identity.principal_id,
        "rh": random_claim(),
        "sub": identity.principal_id,
        "tid": identity.tenant_id,
        "uti": random_claim(),
        "ver": "2.0",
        "xms_mirid": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-dev/providers/"
                     f"Microsoft.ManagedIdentity/userAssignedIdentities/{identity.name}",
    }
    answer = {
        "access_token": state.key.sign(claims),
        "expires_on": str(expires),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    }
    return json_response(200, answer, list(NO_STORE))
