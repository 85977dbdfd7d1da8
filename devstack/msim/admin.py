"""The `/_sim/...` admin API that tests and demos drive (no auth: the simulator binds loopback only).

Errors are `{"error": {"code", "message"}}`. See DEVSTACK.md for the contract; additions here:
`GET /_sim/health`, `GET /_sim/users`, `POST /_sim/users` (bulk work accounts with
their events, for load tests), `GET /_sim/users/{upn}/events`, `GET|DELETE /_sim/faults`,
`DELETE /_sim/requests`, `GET|POST /_sim/config`, `GET /_sim/stats` (`requests`, and cumulative
`graph_requests`, `token_requests`, `notification_posts` that the bounded logs cannot give), `GET|POST /_sim/apps`,
`POST /_sim/users/{upn}/expire-delta`, and:

- `GET /_sim/users/{upn}/calendarView?startDateTime=..&endDateTime=..` — the expanded occurrences
  with their ids (UTC, no paging), so a check can change or delete one occurrence.
- `GET|POST /_sim/users/{upn}/settings` — per-account knobs: `scope_echo_omits` (scopes left out of
  the token response's `scope`), `mailbox_unavailable_status` (null, 404 or 401: every calendar
  request answers `MailboxNotEnabledForRESTAPI`).
- `POST /_sim/apps/{client_id}/secret` — `{"secret": "..."}` adds a client secret (an app can hold
  several), `"replace": true` removes the others, `"expired": true` marks that one (or, without
  `secret`, every one) expired: token requests with it answer `invalid_client` AADSTS7000222.
- `GET|POST /_sim/apps/{client_id}` — `{"disabled": true}` (AADSTS7000112) or `{"deleted": true}`
  (AADSTS700016), both `unauthorized_client`.
- `POST /_sim/config` also takes `delta_generations`, `delta_token_expired_code`
  ("SyncStateNotFound" | "syncStateNotFound" | "InvalidDeltaToken"), `sparse_null_keys`,
  `login_hint_claim`; `POST /_sim/faults` also takes `body` ("json" | "html" | "empty").

- `GET|POST /_sim/apps/{client_id}/federatedIdentityCredentials`, `PATCH|DELETE
  /_sim/apps/{client_id}/federatedIdentityCredentials/{name}` — the app registration's federated
  identity credentials, as Graph shapes them (`name`, `issuer`, `subject`, `audiences`,
  `description`): at most 20, names of 3-120 URL-friendly characters, issuer and subject unique.
- `GET /_sim/managed-identities` — the managed identities `/msi/token` issues tokens for
  (`client_id`, `principal_id`, `tenant_id`, `name`).

`POST /_sim/reset` also puts back every account's settings and every app's registered secret and
federated identity credentials.

Change notifications (devstack/msim/subscriptions.py): every event change below is notified to the
mailbox's subscriptions; `GET /_sim/subscriptions`, `POST /_sim/subscriptions/{id}/lifecycle` with
`{"lifecycleEvent": "missed"|"reauthorizationRequired"|"subscriptionRemoved"}`, and
`GET /_sim/notifications` (every delivery attempt, newest last; a delivery given up carries
`"dropped": why`). A change made with `?notify=false` is not notified, as if Graph had dropped the
notification (what a `missed` lifecycle event reports).

Microsoft as it behaves in the field (DEVSTACK.md): `POST /_sim/config` with
`notification_latency_seconds`, `notification_duplicates`, `notification_retry_seconds`,
`slow_endpoint_delay_seconds`, `access_token_lifetime_seconds` (`access_token_lifetime` is still
accepted), `reauthorization_lead_seconds`, `occurrence_delete`; `POST /_sim/subscriptions/{id}/remove`
with `{"notify": bool}`; `POST /_sim/users/{upn}/revoke` also removes the account's subscriptions;
`GET|POST /_sim/tenants/{tenant}/app` with `{"disabled": true}` / `{"deleted": true}` / `{}`.
`GET /_sim/subscriptions` also shows `paused` and `authorizedUntil` (when the access token that last
authorized it expires).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any
from urllib.parse import unquote

from devstack.msim.calendar import UTC, EventError, Mailbox, parse_occurrence_id, parse_window_bound
from devstack.msim.directory import AppRegistration, FederatedCredential
from devstack.msim.graph import Preferences, render_event
from devstack.msim.state import ClientSecret, Fault, SimState
from devstack.msim.subscriptions import lifecycle_admin, remove_admin, remove_for_account
from devstack.msim.web import Request, Response, json_response

FAULT_BODIES = ("json", "html", "empty")


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


def handle(state: SimState, req: Request) -> Response:
    segments = [unquote(s) for s in req.path.split("/")[2:] if s]
    method = req.method
    try:
        body = req.json() if method in ("POST", "PATCH", "PUT") else None
    except ValueError:
        return _error(400, "BadRequest", "The body is not valid JSON.")
    match segments:
        case ["health"] if method == "GET":
            return json_response(200, {"status": "ok"})
        case ["reset"] if method == "POST":
            state.reset()
            return json_response(200, {"status": "reset"})
        case ["users"] if method == "GET":
            return json_response(200, {"value": [_describe_account(state, a) for a in state.directory.accounts]})
        case ["users"] if method == "POST":
            return _add_users(state, body)
        case ["users", upn, *rest]:
            return _user(state, req, upn, rest, body)
        case ["faults"]:
            return _faults(state, method, body)
        case ["requests"] if method == "GET":
            with state.lock:
                return json_response(200, list(copy.deepcopy(state.requests)))
        case ["requests"] if method == "DELETE":
            with state.lock:
                state.requests.clear()
            return Response(204)
        case ["config"]:
            return _config(state, method, body)
        case ["stats"] if method == "GET":
            with state.lock:
                return json_response(
                    200, {"max_concurrency": dict(state.max_concurrency), "requests": state.request_count,
                          "graph_requests": state.graph_request_count, "token_requests": state.token_request_count,
                          "notification_posts": state.notifier.posted, "accounts": len(state.directory.accounts)}
                )
        case ["apps"]:
            return _apps(state, method, body)
        case ["apps", client_id]:
            return _app(state, method, client_id, body)
        case ["apps", client_id, "secret"] if method == "POST":
            return _app_secret(state, client_id, body)
        case ["apps", client_id, "federatedIdentityCredentials"] if method in ("GET", "POST"):
            return _federated_credentials(state, method, client_id, body)
        case ["apps", client_id, "federatedIdentityCredentials", name] if method in ("GET", "PATCH", "DELETE"):
            return _federated_credential(state, method, client_id, name, body)
        case ["managed-identities"] if method == "GET":
            with state.lock:
                return json_response(200, [vars(i) for i in state.managed_identities.values()])
        case ["subscriptions"] if method == "GET":
            live = state.notifier.live(dt.datetime.now(dt.UTC))
            return json_response(200, [s.admin_view() for s in live])
        case ["subscriptions", sid, "lifecycle"] if method == "POST":
            return lifecycle_admin(state, sid, body)
        case ["subscriptions", sid, "remove"] if method == "POST":
            return remove_admin(state, sid, body)
        case ["tenants", tenant, "app"] if method in ("GET", "POST"):
            return _tenant_app(state, method, tenant, body)
        case ["notifications"] if method == "GET":
            return json_response(200, state.notifier.deliveries())
    return _error(404, "NotFound", f"No admin route {method} {req.path}.")


BULK_ACCOUNTS_LIMIT = 1000  # per request
BULK_EVENTS_LIMIT = 20_000  # per request, over all its accounts


def _add_users(state: SimState, body: Any) -> Response:
    """`POST /_sim/users` with `{"accounts": [{"upn", "display_name"?, "events": [Graph event, ...]?}]}`:
    work accounts in a seeded work tenant's domain (contoso.com, northwind.com), each with a mailbox
    holding those events (not notified: nobody can have subscribed yet), for load tests. All or
    nothing: 400 naming the first bad account or event (an upn that exists, a domain of no work
    tenant, an invalid event) and nothing is added. 201 `{"accounts": n, "events": m}`. Added
    accounts sign in, answer Graph and behave as seeded work accounts; `POST /_sim/reset` empties
    their mailboxes but keeps them (as it keeps app registrations)."""
    entries = body.get("accounts") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        return _error(400, "BadRequest", 'Send {"accounts": [{"upn": ..., "events": [...]}, ...]}.')
    if len(entries) > BULK_ACCOUNTS_LIMIT:
        return _error(400, "BadRequest", f"At most {BULK_ACCOUNTS_LIMIT} accounts per request.")
    total = sum(len(e.get("events") or []) for e in entries if isinstance(e.get("events") or [], list))
    if total > BULK_EVENTS_LIMIT:
        return _error(400, "BadRequest", f"At most {BULK_EVENTS_LIMIT} events per request.")
    now = dt.datetime.now(dt.UTC)
    with state.lock:
        made: list[tuple[Any, Any]] = []
        seen: set[str] = set()
        for entry in entries:
            upn, events = entry.get("upn"), entry.get("events") or []
            name = entry.get("display_name")
            if not isinstance(upn, str) or upn.strip().lower() in seen:
                return _error(400, "BadRequest", f"Each account needs a distinct 'upn' (got {upn!r}).")
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                return _error(400, "BadRequest", f"'events' of {upn} must be a list of Graph event objects.")
            if name is not None and not isinstance(name, str):
                return _error(400, "BadRequest", f"'display_name' of {upn} must be a string.")
            seen.add(upn.strip().lower())
            try:
                account = state.directory.work_account(upn, name)
            except ValueError as exc:
                return _error(400, "BadRequest", str(exc))
            mailbox = Mailbox(account)
            try:
                for event in events:
                    mailbox.add(dict(event), state.next_seq(), now)
            except EventError as exc:
                return _error(400, "ErrorInvalidRequest", f"{upn}: {exc}")
            made.append((account, mailbox))
        for account, mailbox in made:
            state.directory.add(account)
            state.mailboxes[account.upn.lower()] = mailbox
    return json_response(201, {"accounts": len(made), "events": total})


def _describe_account(state: SimState, account: Any) -> dict[str, Any]:
    return {
        "upn": account.upn,
        "display_name": account.display_name,
        "kind": account.kind,
        "tenant_id": account.tenant_id,
        "object_id": account.object_id,
        "graph_id": account.graph_id,
        "mail": account.mail,
        "mailbox_host": account.mailbox_host,
        "home_account_id": f"{account.object_id}.{account.tenant_id}",
    }


def _user(state: SimState, req: Request, upn: str, rest: list[str], body: Any) -> Response:
    method = req.method
    account = state.directory.account(upn)
    if account is None:
        return _error(404, "UserNotFound", f"No seeded account '{upn}'.")
    now = dt.datetime.now(dt.UTC)
    with state.lock:
        mailbox = state.mailbox(account)
        match rest:
            case ["events"] if method == "GET":
                return json_response(200, {"value": [copy.deepcopy(e.data) for e in mailbox.events.values()]})
            case ["calendarView" | "calendarview"] if method == "GET":
                return _calendar_view(state, req, upn)
            case ["calendars"] if method == "GET":
                listed = [{"id": mailbox.default_calendar_id, "name": "Calendar", "is_default": True}]
                listed += [{"id": c.id, "name": c.name, "is_default": False} for c in mailbox.calendars.values()]
                return json_response(200, {"value": listed})
            case ["calendars"] if method == "POST":
                name = body.get("name") if isinstance(body, dict) else None
                if not isinstance(name, str) or not name.strip():
                    return _error(400, "BadRequest", "Send {\"name\": \"...\"} for the new calendar.")
                calendar = mailbox.add_calendar(name.strip()[:255])
                return json_response(201, {"id": calendar.id, "name": calendar.name})
            case ["calendars", calendar_id] if method == "DELETE":
                if calendar_id == mailbox.default_calendar_id:
                    return _error(400, "ErrorCannotDeleteDefaultCalendar", "The default calendar cannot be deleted.")
                if not mailbox.remove_calendar(calendar_id, state.next_seq()):
                    return _error(404, "ErrorItemNotFound", f"No calendar '{calendar_id}' in {account.upn}'s mailbox.")
                return Response(204)
            case ["settings"] if method == "GET":
                return json_response(200, state.settings(account).describe())
            case ["settings"] if method == "POST":
                if not isinstance(body, dict):
                    return _error(400, "BadRequest", "Send the settings to change as a JSON object.")
                try:
                    state.settings(account).update(body)
                except ValueError as exc:
                    return _error(400, "BadRequest", str(exc))
                return json_response(200, state.settings(account).describe())
            case ["events"] if method == "POST":
                payloads = body if isinstance(body, list) else [body]
                if not all(isinstance(p, dict) for p in payloads):
                    return _error(400, "BadRequest", "Send a Graph event object (or a list of them).")
                created: list[dict[str, Any]] = []
                try:
                    for payload in payloads:
                        payload = dict(payload)
                        calendar_id = payload.pop("calendar_id", None)
                        if calendar_id is not None and not isinstance(calendar_id, str):
                            raise EventError("'calendar_id' must be a calendar id string.")
                        created.append(mailbox.add(payload, state.next_seq(), now, calendar_id))
                except EventError as exc:
                    for done in created:
                        mailbox.events.pop(done["id"], None)
                    return _error(400, "ErrorInvalidRequest", str(exc))
                for done in created if _notify(req) else []:
                    _changed(state, account, done["id"], "created", str(done.get("changeKey", "")))
                return json_response(201, created if isinstance(body, list) else created[0])
            case ["events", event_id] if method == "PATCH":
                if not isinstance(body, dict):
                    return _error(400, "BadRequest", "Send the event properties to change as a JSON object.")
                try:
                    updated = mailbox.update(event_id, body, state.next_seq(), now)
                except EventError as exc:
                    return _error(400, "ErrorInvalidRequest", str(exc))
                if updated is None:
                    return _error(404, "ErrorItemNotFound", f"No event '{event_id}' in {account.upn}'s calendar.")
                if _notify(req):
                    _changed(state, account, event_id, "updated", str(updated.get("changeKey", "")))
                return json_response(200, updated)
            case ["events", event_id] if method == "DELETE":
                touch = bool(state.config.occurrence_delete.get("master_reemitted", True))
                if not mailbox.delete(event_id, state.next_seq(), touch_master=touch):
                    return _error(404, "ErrorItemNotFound", f"No event '{event_id}' in {account.upn}'s calendar.")
                if _notify(req):
                    _changed(state, account, event_id, "deleted")
                return Response(204)
            case ["revoke"] if method == "POST":
                state.revoked_at_seq[account.upn.lower()] = state.next_seq()
                state.revoked_at_time[account.upn.lower()] = now
                # Graph removes the account's subscriptions too (password reset, revoked sessions):
                # announced to work accounts' apps, silently for personal ones.
                removed = remove_for_account(state, account)
                return json_response(200, {"upn": account.upn, "revoked_at": now.isoformat(),
                                           "subscriptions_removed": removed})
            case ["expire-delta"] if method == "POST":
                mailbox.expire_delta_tokens()
                return Response(204)
    return _error(404, "NotFound", f"No admin route {method} /_sim/users/{upn}/{'/'.join(rest)}.")


def _changed(state: SimState, account: Any, event_id: str, change_type: str, etag: str = "") -> None:
    """Notify a change of one event (the caller holds the state lock): to `/me/events` subscriptions
    and to those on its own calendar's `/me/calendars/{id}/events`, where a secondary calendar's
    subscriptions notify only with `secondary_calendar_notifications` (reported to work, not documented)."""
    mailbox = state.mailbox(account)
    parsed = parse_occurrence_id(event_id)
    calendar_id = mailbox.calendar_of(parsed[0] if parsed is not None else event_id)
    default = calendar_id == mailbox.default_calendar_id
    state.notifier.changed(account, event_id, change_type, etag, calendar_id=calendar_id, default=default,
                           secondary=state.config.secondary_calendar_notifications)


def _notify(req: Request) -> bool:
    """Whether an admin event change is notified to subscriptions (not with `?notify=false`)."""
    return (req.query_param("notify") or "").lower() != "false"


def _calendar_view(state: SimState, req: Request, upn: str) -> Response:
    """Every occurrence (and single event) overlapping the window, expanded as Graph's calendarView
    would (learn.microsoft.com/graph/api/user-list-calendarview), in UTC and without paging."""
    try:
        window = (
            parse_window_bound(req.query_param("startDateTime") or ""),
            parse_window_bound(req.query_param("endDateTime") or ""),
        )
    except ValueError:
        return _error(400, "ErrorInvalidParameter", "Give startDateTime and endDateTime (ISO 8601).")
    prefs = Preferences(zone=UTC, zone_name="UTC", zone_applied=False, body_text=False, max_page_size=None)
    account = state.directory.account(upn)
    assert account is not None
    with state.lock:
        items = state.mailbox(account).instances(*window)
    return json_response(200, {"value": [render_event(i, prefs) for i in items]})


def _faults(state: SimState, method: str, body: Any) -> Response:
    if method == "GET":
        with state.lock:
            return json_response(200, [f.describe() for f in state.faults])
    if method == "DELETE":
        with state.lock:
            state.faults.clear()
        return Response(204)
    if method != "POST":
        return _error(405, "MethodNotAllowed", "Use GET, POST or DELETE.")
    if not isinstance(body, dict) or not str(body.get("path_prefix", "")).startswith("/"):
        return _error(400, "BadRequest", "A fault needs a 'path_prefix' starting with '/'.")
    try:
        status = _optional_int(body, "status")
        latency = _optional_int(body, "latency_ms")
        count = _optional_int(body, "count")
        retry_after = _optional_int(body, "retry_after")
    except ValueError as exc:
        return _error(400, "BadRequest", str(exc))
    failing = status is not None or body.get("error") or body.get("aadsts")
    if not failing and latency is None:
        return _error(400, "BadRequest", "A fault needs 'status', 'error'/'aadsts' or 'latency_ms'.")
    if count is None and failing:
        count = 1
    aadsts = body.get("aadsts")
    if aadsts is not None and not str(aadsts).upper().removeprefix("AADSTS").isdigit():
        return _error(400, "BadRequest", "'aadsts' must look like 'AADSTS700082'.")
    if body.get("body") is not None and body.get("body") not in FAULT_BODIES:
        return _error(400, "BadRequest", f"'body' must be one of {', '.join(FAULT_BODIES)}.")
    with state.lock:
        fault = Fault(
            id=state.next_fault_id(),
            path_prefix=str(body["path_prefix"]),
            method=body.get("method"),
            status=status,
            retry_after=retry_after,
            remaining=count,
            error=body.get("error"),
            aadsts=str(aadsts) if aadsts is not None else None,
            error_description=body.get("error_description"),
            suberror=body.get("suberror"),
            code=body.get("code"),
            message=body.get("message"),
            latency_ms=latency,
            body=body.get("body"),
        )
        state.faults.append(fault)
        return json_response(201, fault.describe())


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{name}' must be a non-negative integer.")
    return value


def _config(state: SimState, method: str, body: Any) -> Response:
    if method == "POST":
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "Send a JSON object of settings.")
        with state.lock:
            try:
                state.config.update(body)
            except ValueError as exc:
                return _error(400, "BadRequest", str(exc))
    elif method != "GET":
        return _error(405, "MethodNotAllowed", "Use GET or POST.")
    with state.lock:
        return json_response(200, state.config.describe())


def _apps(state: SimState, method: str, body: Any) -> Response:
    if method == "POST":
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "Send an app registration as a JSON object.")
        try:
            app = AppRegistration(
                client_id=str(body["client_id"]),
                client_secret=str(body["client_secret"]),
                redirect_uris=[str(u) for u in body.get("redirect_uris", [])],
                display_name=str(body.get("display_name") or "CoAgentor Outlook Calendar"),
            )
        except KeyError as exc:
            return _error(400, "BadRequest", f"Missing {exc.args[0]!r}.")
        with state.lock:
            state.apps[app.client_id] = app
            state.app_states.pop(app.client_id, None)
            return json_response(201, _describe_app(state, app))
    if method != "GET":
        return _error(405, "MethodNotAllowed", "Use GET or POST.")
    with state.lock:
        return json_response(200, [_describe_app(state, a) for a in state.apps.values()])


def _app(state: SimState, method: str, client_id: str, body: Any) -> Response:
    with state.lock:
        app = state.apps.get(client_id)
        if app is None:
            return _error(404, "NotFound", f"No app registration '{client_id}'.")
        if method == "POST":
            if not isinstance(body, dict) or set(body) - {"disabled", "deleted"}:
                return _error(400, "BadRequest", "Send {\"disabled\": bool} and/or {\"deleted\": bool}.")
            if not all(isinstance(v, bool) for v in body.values()):
                return _error(400, "BadRequest", "'disabled' and 'deleted' are true or false.")
            app_state = state.app_state(app)
            app_state.disabled = body.get("disabled", app_state.disabled)
            app_state.deleted = body.get("deleted", app_state.deleted)
        elif method != "GET":
            return _error(405, "MethodNotAllowed", "Use GET or POST.")
        return json_response(200, _describe_app(state, app))


def _app_secret(state: SimState, client_id: str, body: Any) -> Response:
    """Rotate or expire an app's client secrets, as an operator does in the Entra admin center."""
    if not isinstance(body, dict) or set(body) - {"secret", "expired", "replace"}:
        return _error(400, "BadRequest", "Send {\"secret\": ..., \"expired\": bool, \"replace\": bool}.")
    secret, expired, replace = body.get("secret"), body.get("expired", False), body.get("replace", False)
    if secret is not None and (not isinstance(secret, str) or not secret):
        return _error(400, "BadRequest", "'secret' must be a non-empty string.")
    if not isinstance(expired, bool) or not isinstance(replace, bool):
        return _error(400, "BadRequest", "'expired' and 'replace' are true or false.")
    if secret is None and (replace or not expired):
        return _error(400, "BadRequest", "Give a 'secret', or 'expired': true to expire every secret.")
    with state.lock:
        app = state.apps.get(client_id)
        if app is None:
            return _error(404, "NotFound", f"No app registration '{client_id}'.")
        app_state = state.app_state(app)
        if secret is None:
            for held in app_state.secrets:
                held.expired = True
        else:
            kept = [] if replace else [s for s in app_state.secrets if s.value != secret]
            app_state.secrets = [*kept, ClientSecret(secret, expired)]
        return json_response(200, _describe_app(state, app))


FIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")
FIC_LIMIT = 20  # per application (workload-identity-federation-considerations)
FIC_FIELDS = {"name", "issuer", "subject", "audiences", "description"}


def _fic_from(body: Any, current: FederatedCredential | None = None) -> FederatedCredential:
    """A federated identity credential from a JSON body (a whole one, or a PATCH over `current`);
    ValueError names what is wrong, as Graph would refuse it."""
    if not isinstance(body, dict) or set(body) - FIC_FIELDS:
        raise ValueError(f"Send a JSON object with {', '.join(sorted(FIC_FIELDS))}.")
    if current is not None and "name" in body and body["name"] != current.name:
        raise ValueError("'name' cannot change.")
    merged: dict[str, Any] = {**(current.describe() if current else {}), **body}
    for key in ("name", "issuer", "subject"):
        if not isinstance(merged.get(key), str) or not merged[key]:
            raise ValueError(f"'{key}' is required.")
    if not FIC_NAME.match(merged["name"]):
        raise ValueError("'name' takes 3-120 letters, digits, '-' or '_', starting with a letter or digit.")
    audiences = merged.get("audiences")
    if not isinstance(audiences, list) or len(audiences) != 1 or not isinstance(audiences[0], str):
        raise ValueError("'audiences' must hold exactly one audience.")
    description = merged.get("description") or ""
    if not isinstance(description, str) or len(description) > 600:
        raise ValueError("'description' is a string of at most 600 characters.")
    return FederatedCredential(merged["name"], merged["issuer"], merged["subject"], (audiences[0],), description)


def _federated_credentials(state: SimState, method: str, client_id: str, body: Any) -> Response:
    with state.lock:
        app = state.apps.get(client_id)
        if app is None:
            return _error(404, "NotFound", f"No app registration '{client_id}'.")
        app_state = state.app_state(app)
        if method == "POST":
            try:
                made = _fic_from(body)
            except ValueError as exc:
                return _error(400, "BadRequest", str(exc))
            held = app_state.federated_credentials
            if any(c.name == made.name for c in held):
                return _error(409, "Request_MultipleObjectsWithSameKeyValue", f"'{made.name}' exists.")
            if any((c.issuer, c.subject) == (made.issuer, made.subject) for c in held):
                return _error(400, "BadRequest", "Issuer and subject combination already exists for this app.")
            if len(held) >= FIC_LIMIT:
                return _error(400, "BadRequest", f"An application holds at most {FIC_LIMIT} federated credentials.")
            held.append(made)
            return json_response(201, made.describe())
        return json_response(200, {"value": [c.describe() for c in app_state.federated_credentials]})


def _federated_credential(state: SimState, method: str, client_id: str, name: str, body: Any) -> Response:
    with state.lock:
        app = state.apps.get(client_id)
        if app is None:
            return _error(404, "NotFound", f"No app registration '{client_id}'.")
        held = state.app_state(app).federated_credentials
        found = next((c for c in held if c.name == name), None)
        if found is None:
            return _error(404, "Request_ResourceNotFound", f"No federated identity credential '{name}'.")
        if method == "GET":
            return json_response(200, found.describe())
        if method == "DELETE":
            held.remove(found)
            return Response(204)
        try:
            changed = _fic_from(body, found)
        except ValueError as exc:
            return _error(400, "BadRequest", str(exc))
        held[held.index(found)] = changed
        return Response(204)


def _describe_app(state: SimState, app: AppRegistration) -> dict[str, Any]:
    """Caller holds the lock."""
    return {
        "client_id": app.client_id,
        "redirect_uris": app.redirect_uris,
        "display_name": app.display_name,
        **state.app_state(app).describe(),
    }


TENANT_APP_STATES = {"disabled": "disabled", "deleted": "deleted"}


def _tenant_app(state: SimState, method: str, key: str, body: Any) -> Response:
    """`GET|POST /_sim/tenants/{tenant}/app`: the app's service principal in one customer tenant, as
    its admin left it. `{"disabled": true}`: token requests for that tenant's users answer
    `unauthorized_client` AADSTS7000112; `{"deleted": true}`: AADSTS700016; `{}`: restored. Other
    tenants are unaffected. `tenant` is a tenant id, a verified domain or its first label
    (`contoso`)."""
    tenant = state.directory.tenant(key) or state.directory.tenant(f"{key}.com")
    if tenant is None:
        return _error(404, "TenantNotFound", f"No seeded tenant '{key}'.")
    if method == "POST":
        if not isinstance(body, dict) or set(body) - set(TENANT_APP_STATES):
            return _error(400, "BadRequest", 'Send {"disabled": true}, {"deleted": true} or {} to restore.')
        if not all(isinstance(v, bool) for v in body.values()):
            return _error(400, "BadRequest", "'disabled' and 'deleted' are true or false.")
        chosen = [name for name, on in body.items() if on]
        if len(chosen) > 1:
            return _error(400, "BadRequest", "Either disabled or deleted, not both.")
        with state.lock:
            if chosen:
                state.tenant_apps[tenant.id] = TENANT_APP_STATES[chosen[0]]
            else:
                state.tenant_apps.pop(tenant.id, None)
    with state.lock:
        current = state.tenant_apps.get(tenant.id)
    return json_response(200, {"tenant_id": tenant.id, "tenant": tenant.display_name,
                               "disabled": current == "disabled", "deleted": current == "deleted"})
