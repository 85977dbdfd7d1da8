"""Microsoft identity platform through MSAL: auth code flow with PKCE, silent token acquisition.

One SerializableTokenCache (and one ConfidentialClientApplication) per connection, loaded from and
written back to Key Vault by the caller only when MSAL changed it. Errors come back as data."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import msal
import requests

from shared.ports import AccessToken, SignedIn, TokenError

# MSAL adds openid, profile and offline_access itself (passing them raises ValueError).
SCOPES = ["Calendars.Read", "User.Read", "email"]
GRAPH_RESOURCE = "https://graph.microsoft.com/"


def admin_consent_url(authority: str, client_id: str, redirect_uri: str) -> str:
    """Where an IT admin grants tenant-wide consent (v2 admin consent endpoint). `organizations`,
    not `common`, as the endpoint needs a work or school admin; the admin returns to our callback
    with `admin_consent=True&tenant=...`."""
    base = authority.rstrip("/").rsplit("/", 1)[0]
    scope = " ".join(GRAPH_RESOURCE + s for s in ("Calendars.Read", "User.Read"))
    query = urlencode({"client_id": client_id, "scope": scope, "redirect_uri": redirect_uri})
    return f"{base}/organizations/v2.0/adminconsent?{query}"


class MsalIdentity:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: Callable[[], str],
        authority: str,
        redirect_uri: str,
        session: requests.Session,
        now: Callable[[], datetime],
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._authority = authority
        self._redirect_uri = redirect_uri
        self._session = session
        self._now = now
        # Discovery documents and instance metadata, shared by every per-connection app (no tokens in it).
        self._http_cache: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def _app(self, cache: msal.SerializableTokenCache | None = None) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._client_secret(),
            authority=self._authority,
            token_cache=cache,
            http_client=self._session,
            http_cache=self._http_cache,
            instance_discovery="login.microsoftonline.com" in self._authority,
        )

    def begin(self, state: str, login_hint: str | None = None) -> dict[str, Any]:
        flow: dict[str, Any] = self._app().initiate_auth_code_flow(
            SCOPES, redirect_uri=self._redirect_uri, state=state, login_hint=login_hint
        )
        return flow

    def redeem(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn | TokenError:
        cache = msal.SerializableTokenCache()
        app = self._app(cache)
        try:
            result = app.acquire_token_by_auth_code_flow(dict(flow), dict(response))
        except ValueError:
            return TokenError("state_mismatch", "The sign-in response did not match the flow", transient=False)
        except (requests.ConnectionError, requests.Timeout):
            return TokenError("unreachable", "Microsoft sign-in could not be reached", transient=True)
        if "access_token" not in result:
            return _error(result)
        accounts = app.get_accounts()
        claims = result.get("id_token_claims") or {}
        home_account_id = accounts[0]["home_account_id"] if accounts else ""
        if not home_account_id:
            return TokenError("no_account", "Microsoft returned no account information", transient=False)
        return SignedIn(
            cache=cache.serialize(),
            access_token=result["access_token"],
            access_expires_at=self._expiry(result),
            home_account_id=home_account_id,
            tenant_id=str(claims.get("tid") or home_account_id.split(".")[-1]),
            username=str(claims.get("preferred_username") or claims.get("email") or ""),
        )

    def acquire(self, cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken | TokenError:
        token_cache = msal.SerializableTokenCache()
        token_cache.deserialize(cache)
        app = self._app(token_cache)
        account = next((a for a in app.get_accounts() if a.get("home_account_id") == home_account_id), None)
        if account is None:
            return TokenError("no_account", "The stored sign-in holds no account", transient=False)
        try:
            result = app.acquire_token_silent_with_error(SCOPES, account, force_refresh=force_refresh)
        except (requests.ConnectionError, requests.Timeout):
            return TokenError("unreachable", "Microsoft sign-in could not be reached", transient=True)
        if result is None:
            return TokenError("no_token", "No refresh token in the stored sign-in", transient=False)
        if "access_token" not in result:
            return _error(result)
        return AccessToken(
            token=result["access_token"],
            expires_at=self._expiry(result),
            cache=token_cache.serialize() if token_cache.has_state_changed else None,
        )

    def _expiry(self, result: Mapping[str, Any]) -> datetime | None:
        expires_in = result.get("expires_in")
        if isinstance(expires_in, int | float | str) and str(expires_in).isdigit():
            return self._now() + timedelta(seconds=int(expires_in))
        return None


def _error(result: Mapping[str, Any]) -> TokenError:
    error = str(result.get("error") or "unknown_error")
    # Keep only the AADSTS line: descriptions never hold tokens, but keep them short for logs.
    description = str(result.get("error_description") or "").split("\n")[0][:300]
    transient = error in ("temporarily_unavailable", "server_error") or "throttl" in description.lower()
    return TokenError(error, description, transient=transient)
