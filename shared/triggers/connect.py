"""Connect an Outlook account: start, OAuth callback, claim."""

import logging
import math
from urllib.parse import parse_qsl

import azure.functions as func

from shared.connections import PlanLimitExceeded
from shared.platform_auth import User
from shared.ports import IdentityUnavailable
from shared.services.connect import (
    MAX_PENDING_SIGN_INS,
    AccountMismatch,
    CallbackResult,
    ClaimExpired,
    ClaimMismatch,
    ConnectionNotFound,
    Outcome,
    TooManySignIns,
    redirect_url,
)
from shared.triggers.http import SECURITY_HEADERS, authed, error, json_body, json_response
from shared.triggers.views import account_view, connection_view, plan_limit_error
from shared.wiring import Container, container

log = logging.getLogger(__name__)
bp = func.Blueprint()

# The callback's form body (response_mode=form_post): Microsoft's holds a code, a state and a few
# short fields, well under this.
MAX_CALLBACK_BODY_BYTES = 16 * 1024
_MAX_CALLBACK_FIELDS = 32
# Only these callback fields reach MSAL; anything else in the request is ignored.
_CALLBACK_FIELDS = ("code", "state", "error", "error_description", "error_uri", "client_info", "session_state",
                    "admin_consent", "tenant")


@bp.function_name("outlook_connect")
@bp.route(route="outlook/connect", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def outlook_connect(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    body = json_body(req)
    if body is None:
        return error(400, "invalid_body", "Body must be a JSON object, e.g. {} or {\"reconnect\": \"<id>\"}")
    reconnect = body.get("reconnect")
    if reconnect is not None and (not isinstance(reconnect, str) or not reconnect):
        return error(400, "invalid_body", "reconnect must be a connection id")
    try:
        url = c.connect.start(user, reconnect)
    except PlanLimitExceeded as exc:
        return plan_limit_error(exc)
    except ConnectionNotFound:
        return error(404, "not_found", "No such Outlook connection for this user")
    except TooManySignIns as exc:
        wait = max(1, math.ceil(exc.retry_after.total_seconds()))
        resp = error(429, "too_many_sign_ins", f"You have {MAX_PENDING_SIGN_INS} Microsoft sign-ins open already. "
                     f"Finish one, or try again in {wait} seconds.", retry_after=wait)
        resp.headers["Retry-After"] = str(wait)
        return resp
    except IdentityUnavailable:
        resp = error(503, "microsoft_unavailable", "Microsoft sign-in cannot be reached right now. Try again in a "
                     "minute.")
        resp.headers["Retry-After"] = "60"
        return resp
    return json_response({"authorize_url": url})


@bp.function_name("outlook_callback")
@bp.route(route="outlook/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def outlook_callback(req: func.HttpRequest) -> func.HttpResponse:
    c = container()
    fields: dict[str, str] = dict(req.params)
    raw = (req.get_body() or b"") if req.method == "POST" else b""
    if len(raw) > MAX_CALLBACK_BODY_BYTES:
        # Microsoft's form_post carries a code, a state and a few short fields (a few KiB): a bigger
        # body is not a sign-in. Not parsed; the browser still lands on the page (always a 302).
        log.warning("outlook callback body refused: %d bytes", len(raw))
        return _to_page(c, CallbackResult(Outcome.FAILED, "request_too_large"))
    if raw:
        fields.update(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True,
                                max_num_fields=_MAX_CALLBACK_FIELDS))
    response = {k: fields[k] for k in _CALLBACK_FIELDS if fields.get(k)}
    try:
        result = c.connect.complete(response)
    except Exception as exc:
        # The callback always lands on the page: a failure of ours (storage, Key Vault) is shown as
        # one, never as a bare 500 the user cannot act on. Operators see the error in the logs.
        log.error("outlook callback failed: %s", type(exc).__name__)
        result = CallbackResult(Outcome.FAILED, "temporary_error")
    log.info("outlook callback: %s", result.outcome.value, extra={"reason": result.reason})
    return _to_page(c, result)


def _to_page(c: Container, result: CallbackResult) -> func.HttpResponse:
    location = redirect_url(c.settings.integrations_page_url, result)
    return func.HttpResponse(status_code=302, headers={**SECURITY_HEADERS, "Location": location,
                                                       "Cache-Control": "no-store"})


@bp.function_name("outlook_claim_preview")
@bp.route(route="outlook/claim", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def outlook_claim_preview(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """What a claim would connect, for the page to ask "connect <Microsoft account> to <CoAgentor
    account>?" before it claims. The same rules as the claim (403 destroys it, 410; 409 for a reconnect
    with another Microsoft account, which destroys it too, so the page refuses before asking)."""
    code = req.params.get("claim", "")
    if not code or len(code) > 512:
        return error(400, "invalid_claim", "Give the claim code from the redirect: ?claim=<code>")
    try:
        preview = c.connect.preview(user, code)
    except ClaimExpired:
        return _claim_expired()
    except ClaimMismatch:
        return _claim_mismatch()
    except AccountMismatch:
        return _account_mismatch()
    return json_response({"email": preview.email, "reconnect": preview.reconnect_id, "account": account_view(user)})


def _claim_expired() -> func.HttpResponse:
    return error(410, "claim_expired", "This sign-in is unknown, already used or expired. Connect again.")


def _account_mismatch() -> func.HttpResponse:
    return error(409, "account_mismatch", "You signed in with a different Microsoft account than this "
                 "connection uses. Nothing was changed: reconnect with the original account, or connect "
                 "the new one separately.")


def _claim_mismatch() -> func.HttpResponse:
    return error(403, "claim_mismatch", "This sign-in was started from another CoAgentor account, so it "
                 "was discarded. Nothing was connected.")


@bp.function_name("outlook_claim")
@bp.route(route="outlook/claim", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def outlook_claim(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    body = json_body(req)
    code = body.get("claim") if body else None
    if not isinstance(code, str) or not code:
        return error(400, "invalid_body", "Body must be {\"claim\": \"<code from the redirect>\"}")
    try:
        claimed = c.connect.claim(user, code)
    except ClaimExpired:
        return _claim_expired()
    except ClaimMismatch:
        return _claim_mismatch()
    except AccountMismatch:
        return _account_mismatch()
    except PlanLimitExceeded as exc:
        return plan_limit_error(exc)
    view = connection_view(claimed.connection, c.clock.now(), c.settings.token_warning_after_seconds,
                           c.settings.sync_warning_after_seconds, c.accounts.last_synced_at(claimed.connection.id))
    return json_response({"outcome": claimed.outcome, "connection": view})
