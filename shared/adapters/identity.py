"""Microsoft identity platform through MSAL: auth code flow with PKCE, silent token acquisition.

One SerializableTokenCache (and one ConfidentialClientApplication) per connection, loaded from and
written back by the caller only when MSAL changed it. Errors come back as data.

The app proves who it is with one of two client credentials (OUTLOOK_CLIENT_CREDENTIAL):
- `client_secret`: the app registration's secret, read from Key Vault (`ClientSecret`);
- `managed_identity`: no secret at all. The app registration holds a federated identity credential
  that trusts the Function App's user-assigned managed identity (issuer
  `https://login.microsoftonline.com/{tenant}/v2.0`, subject its principal id, audience
  `api://AzureADTokenExchange`), and MSAL sends a client assertion: that identity's token for
  `api://AzureADTokenExchange` (`ManagedIdentityAssertion`). Source:
  learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity;
  MSAL Python's `client_credential={"client_assertion": callable}` (msal 1.39 `ClientApplication`
  docs: the callable is invoked only when a token request goes on the wire)."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import msal
import msal.exceptions
import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.connections import FixedBy, classify_token_error
from shared.ports import AccessToken, IdentityUnavailable, SignedIn, TokenError

log = logging.getLogger(__name__)

# MSAL adds openid, profile and offline_access itself (passing them raises ValueError).
SCOPES = ["Calendars.Read", "User.Read", "email"]
# Silent calls ask for the calendar only: some accounts' token responses echo a `scope` without
# `email` (or `openid`), and MSAL would then miss its access-token cache on every call and redeem the
# refresh token each time (FACTS, "Scope echo"). Graph calls need Calendars.Read (and /me, read at
# sign-in only, User.Read).
SILENT_SCOPES = ["Calendars.Read"]
GRAPH_RESOURCE = "https://graph.microsoft.com/"


# What MSAL's authorize request adds to SCOPES (msal's reserved scopes): an admin consents to all of
# them, so nobody meets a consent screen after the admin approved.
_OIDC_SCOPES = ("openid", "profile", "offline_access")


def admin_consent_url(authority: str, client_id: str, redirect_uri: str, state: str | None) -> str:
    """Where an IT admin grants tenant-wide consent (v2 admin consent endpoint,
    learn.microsoft.com/entra/identity-platform/v2-admin-consent: `scope` required, resource-qualified
    permissions and OIDC scopes; `state` returned as sent). `organizations`, not `common`, as the
    endpoint needs a work or school admin. It asks for exactly what sign-in asks for: SCOPES on Graph
    plus openid, profile and offline_access. The admin returns to our callback with
    `admin_consent=True&tenant=...&state=...`, where `state` is checked."""
    base = authority.rstrip("/").rsplit("/", 1)[0]
    scope = " ".join([GRAPH_RESOURCE + s for s in SCOPES if s not in ("email",)] + ["email", *_OIDC_SCOPES])
    params = {"client_id": client_id, "scope": scope, "redirect_uri": redirect_uri}
    if state:
        params["state"] = state
    query = urlencode(params)
    return f"{base}/organizations/v2.0/adminconsent?{query}"


class ClientSecret(Protocol):
    """The app's client secret as Key Vault holds it now; `reload` forgets the cached value so a
    rotated (or newly fixed) secret is used without a restart."""

    def __call__(self) -> str: ...
    def reload(self) -> None: ...


# The audience of a managed identity's token that Entra ID exchanges for an app token (global cloud;
# US Government: api://AzureADTokenExchangeUSGov, China: api://AzureADTokenExchangeChina).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


class AssertionUnavailable(Exception):
    """The managed identity gave no token to assert. `service` True: the identity itself is refused or
    missing (not assigned to the app, wrong client id): the operator must act; False: its endpoint did
    not answer (retry later). Carries only the exception class name, never a token."""

    def __init__(self, cause: str, *, service: bool) -> None:
        super().__init__(cause)
        self.cause = cause
        self.service = service


class ManagedIdentityAssertion:
    """The client assertion of an app registration that trusts a managed identity: that identity's
    access token for `api://AzureADTokenExchange` (a JWT whose `iss` is
    `https://login.microsoftonline.com/{tenant}/v2.0`, `sub` the identity's principal id, `aud` the
    exchange audience), from azure-identity's `ManagedIdentityCredential`, which caches it and fetches
    a new one before it expires (managed identity tokens live about 24 h). MSAL calls this only when it
    sends a token request (code redemption, refresh), never for tokens served from its cache.

    Raises AssertionUnavailable: `service=True` for `ClientAuthenticationError` (and its subclass
    `CredentialUnavailableError`: no managed identity endpoint, or the identity refused), else False."""

    def __init__(self, credential: TokenCredential, audience: str = TOKEN_EXCHANGE_AUDIENCE) -> None:
        self._credential = credential
        self._scope = f"{audience}/.default"

    def __call__(self) -> str:
        try:
            return self._credential.get_token(self._scope).token
        except ClientAuthenticationError as exc:
            raise AssertionUnavailable(type(exc).__name__, service=True) from None
        except Exception as exc:  # the endpoint unreachable or answering nonsense: transient
            raise AssertionUnavailable(type(exc).__name__, service=False) from None


class MsalIdentity:
    """MSAL errors come back as `TokenError`; no MSAL or HTTP exception escapes. MSAL raises rather
    than returning an error dict when the token endpoint answers 5xx (`requests.HTTPError`) or
    non-JSON (`json.JSONDecodeError`): both are `unreachable` (FACTS, "MSAL and Microsoft outages").
    The session given must carry a default timeout (MSAL sets none)."""

    def __init__(
        self,
        *,
        client_id: str,
        authority: str,
        redirect_uri: str,
        session: requests.Session,
        now: Callable[[], datetime],
        client_secret: ClientSecret | None = None,
        client_assertion: Callable[[], str] | None = None,
    ) -> None:
        """Exactly one of `client_secret` (the secret as Key Vault holds it) and `client_assertion`
        (e.g. `ManagedIdentityAssertion`): ValueError otherwise."""
        if (client_secret is None) == (client_assertion is None):
            raise ValueError("give exactly one of client_secret and client_assertion")
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_assertion = client_assertion
        self._authority = authority
        self._redirect_uri = redirect_uri
        self._session = session
        self._now = now
        # Discovery documents and instance metadata, shared by every per-connection app (no tokens in it).
        self._http_cache: dict[Any, Any] = {}

    def _secret(self) -> str | None:
        """The client secret now (read from Key Vault on first use), None with a client assertion."""
        return self._client_secret() if self._client_secret is not None else None

    def _app(self, cache: msal.SerializableTokenCache | None = None,
             secret: str | None = None) -> msal.ConfidentialClientApplication:
        credential: str | dict[str, Any]
        if self._client_assertion is not None:
            credential = {"client_assertion": self._client_assertion}
        else:
            credential = secret if secret is not None else str(self._secret())
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=credential,
            authority=self._authority,
            token_cache=cache,
            http_client=self._session,
            http_cache=self._http_cache,
            instance_discovery="login.microsoftonline.com" in self._authority,
        )

    def begin(self, state: str, login_hint: str | None = None) -> dict[str, Any]:
        """Raises IdentityUnavailable when Microsoft's discovery document cannot be read."""
        try:
            flow: dict[str, Any] = self._app().initiate_auth_code_flow(
                SCOPES, redirect_uri=self._redirect_uri, state=state, login_hint=login_hint or None
            )
        except Exception as exc:  # discovery down, MSAL's own checks, Key Vault not answering for the secret
            log.warning("starting a sign-in failed: %s", type(exc).__name__)
            raise IdentityUnavailable(type(exc).__name__) from None
        return flow

    def redeem(self, flow: Mapping[str, Any], response: Mapping[str, str]) -> SignedIn | TokenError:
        for attempt in (1, 2):
            cache = msal.SerializableTokenCache()
            try:
                secret = self._secret()
                app = self._app(cache, secret)
                result = app.acquire_token_by_auth_code_flow(dict(flow), dict(response))
            except AssertionUnavailable as exc:
                return _no_assertion(exc)
            except (requests.RequestException, json.JSONDecodeError, msal.exceptions.MsalServiceError) as exc:
                return _unreachable(exc)
            except ValueError:
                return TokenError("state_mismatch", "The sign-in response did not match the flow")
            except Exception as exc:  # MSAL's own checks (nonce, id_token): never a 500
                log.warning("MSAL rejected the sign-in response: %s", type(exc).__name__)
                return TokenError("invalid_response", f"Microsoft's answer failed a check ({type(exc).__name__})")
            if "access_token" not in result:
                error = _error(result)
                if attempt == 1 and self._secret_rotated(error, secret):
                    continue
                return error
            break
        accounts = app.get_accounts()
        claims = result.get("id_token_claims") or {}
        home_account_id = accounts[0]["home_account_id"] if accounts else ""
        if not home_account_id:
            return TokenError("no_account", "Microsoft returned no account information")
        username = str(claims.get("preferred_username") or claims.get("email") or "")
        return SignedIn(
            cache=cache.serialize(),
            access_token=result["access_token"],
            access_expires_at=self._expiry(result),
            home_account_id=home_account_id,
            tenant_id=str(claims.get("tid") or home_account_id.split(".")[-1]),
            username=username,
            login_hint=str(claims.get("login_hint") or username),
        )

    def acquire(self, cache: str, home_account_id: str, *, force_refresh: bool) -> AccessToken | TokenError:
        for attempt in (1, 2):
            token_cache = msal.SerializableTokenCache()
            try:
                token_cache.deserialize(cache)
                secret = self._secret()
                app = self._app(token_cache, secret)
                account = next((a for a in app.get_accounts() if a.get("home_account_id") == home_account_id),
                               None)
                if account is None:
                    return TokenError("no_account", "The stored sign-in holds no account")
                result = app.acquire_token_silent_with_error(SILENT_SCOPES, account, force_refresh=force_refresh)
            except AssertionUnavailable as exc:
                return _no_assertion(exc)
            except (requests.RequestException, ValueError, msal.exceptions.MsalServiceError) as exc:
                return _unreachable(exc)
            except Exception as exc:  # anything else MSAL raises: retry later, operators see the type
                log.warning("MSAL failed unexpectedly: %s", type(exc).__name__)
                return TokenError("unreachable", f"Microsoft sign-in failed unexpectedly ({type(exc).__name__})")
            if result is None:
                return TokenError("no_token", "No refresh token in the stored sign-in")
            if "access_token" not in result:
                error = _error(result)
                if attempt == 1 and self._secret_rotated(error, secret):
                    continue
                return error
            return AccessToken(
                token=result["access_token"],
                expires_at=self._expiry(result),
                cache=token_cache.serialize() if token_cache.has_state_changed else None,
            )
        raise AssertionError("unreachable")

    def _secret_rotated(self, error: TokenError, used: str | None) -> bool:
        """On an app-level failure (our secret expired or replaced), read the client secret from Key
        Vault again: when it differs from the one just refused (the operator put a new one there, or
        a concurrent call already re-read it), retry once with it. Never with a client assertion: the
        managed identity's token is not the app's to rotate (a refused one is the operator's to fix in
        the federated credential; the next run tries again)."""
        if used is None or self._client_secret is None:
            return False
        if classify_token_error(error.error, error.description, error.error_codes,
                                error.suberror).fixed_by is not FixedBy.SERVICE:
            return False
        try:
            if hmac.compare_digest(self._client_secret().encode(), used.encode()):
                self._client_secret.reload()
            current = self._client_secret()
        except Exception as exc:
            log.error("reading the client secret from Key Vault failed: %s", type(exc).__name__)
            return False
        return not hmac.compare_digest(current.encode(), used.encode())

    def _expiry(self, result: Mapping[str, Any]) -> datetime | None:
        expires_in = result.get("expires_in")
        if isinstance(expires_in, int | float | str) and str(expires_in).isdigit():
            return self._now() + timedelta(seconds=int(expires_in))
        return None


def _no_assertion(exc: AssertionUnavailable) -> TokenError:
    """No client assertion to send: the managed identity refused or missing is the service's own
    failure (`invalid_client`, as Entra ID answers a bad client credential), its endpoint not answering
    is transient (`unreachable`)."""
    log.warning("no managed identity token for the client assertion: %s", exc.cause)
    if exc.service:
        return TokenError("invalid_client", f"No managed identity token for the client assertion ({exc.cause})")
    return TokenError("unreachable", f"The managed identity endpoint did not answer ({exc.cause})")


def _unreachable(exc: BaseException) -> TokenError:
    return TokenError("unreachable", f"Microsoft sign-in did not answer usably ({type(exc).__name__})")


def _error(result: Mapping[str, Any]) -> TokenError:
    error = str(result.get("error") or "unknown_error")
    # Keep only the AADSTS line: descriptions never hold tokens, but keep them short for logs.
    description = str(result.get("error_description") or "").split("\n")[0][:300]
    raw_codes = result.get("error_codes")
    codes = tuple(c for c in raw_codes if isinstance(c, int)) if isinstance(raw_codes, list) else ()
    suberror = result.get("suberror")
    return TokenError(error, description, codes, suberror if isinstance(suberror, str) else None)
