"""Microsoft Graph v1.0: `/me`, calendarView (with delta), events, instances, and Graph-shaped errors.

Errors are `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`
(learn.microsoft.com/graph/errors). Times come back in UTC unless `Prefer: outlook.timezone="..."`
asks otherwise; bodies are HTML unless `Prefer: outlook.body-content-type="text"`. Pages hold 10
items by default (`$top` or `Prefer: odata.maxpagesize=N` change that); `@odata.nextLink` is an
absolute URL (learn.microsoft.com/graph/api/user-list-calendarview,
learn.microsoft.com/graph/api/event-list-instances).

A mailbox Graph cannot reach (on-premises, unlicensed, not yet provisioned) answers every calendar
request 404 `MailboxNotEnabledForRESTAPI` "The mailbox is either inactive, soft-deleted, or is
hosted on-premise." while `/me` works (learn.microsoft.com/graph/hybrid-rest-support; the message
as public reports quote it, e.g. microsoftgraph/msgraph-sdk-javascript#1756); some report 401.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jwt

from devstack.msim.calendar import (
    UTC,
    DeltaItem,
    Instance,
    Mailbox,
    SyncStateNotFound,
    format_local,
    html_to_text,
    parse_window_bound,
    resolve_zone,
)
from devstack.msim.directory import Account
from devstack.msim.state import ACTING_UPN, Fault, SimState
from devstack.msim.tokens import GRAPH_APP_ID, GRAPH_AUDIENCES, pairwise_subject
from devstack.msim.web import Request, Response, json_response, outage_response

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
PROFILE_SCOPES = frozenset({"User.Read", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite"})
CALENDAR_SCOPES = frozenset(
    {
        "Calendars.Read",
        "Calendars.ReadBasic",
        "Calendars.Read.Shared",
        "Calendars.ReadWrite",
        "Calendars.ReadWrite.Shared",
    }
)
DELTA_UNSUPPORTED = ("$orderby", "$filter", "$select", "$expand", "$search", "$top")
SYNC_STATE_NOT_FOUND = (
    "The sync state generation is not found. The delta token is expired and data must be synchronized again."
)
INVALID_DELTA_TOKEN = "The delta token is invalid or has expired. Synchronize again without it."
MAILBOX_NOT_ENABLED = "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
# Keys that plain occurrences in calendarView delta may carry with null values (as reported, e.g.
# keeper.sh#409: "Graph sends explicit nulls"), when `sparse_null_keys` is on.
SPARSE_NULL_KEYS = (
    "subject",
    "bodyPreview",
    "body",
    "isCancelled",
    "isAllDay",
    "isOnlineMeeting",
    "onlineMeeting",
    "onlineMeetingUrl",
    "onlineMeetingProvider",
    "location",
    "locations",
    "responseStatus",
    "organizer",
    "attendees",
    "iCalUId",
    "showAs",
)
SPARSE_KEYS = ("@odata.type", "@odata.etag", "seriesMasterId", "type", "start", "end", "id")
_FAULT_DEFAULTS = {
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    410: ("syncStateNotFound", SYNC_STATE_NOT_FOUND),
    429: ("TooManyRequests", "Too many requests. Retry after the time given in Retry-After."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Try again later."),
    504: ("GatewayTimeout", "The gateway timed out."),
}


def graph_error(
    req: Request, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": req.request_id,
                "client-request-id": req.client_request_id,
            },
        }
    }
    return json_response(status, body, [*_ids(req), *(headers or [])])


def _ids(req: Request) -> list[tuple[str, str]]:
    return [("request-id", req.request_id), ("client-request-id", req.client_request_id)]


def non_json_response(req: Request, status: int, body: str, headers: list[tuple[str, str]]) -> Response:
    """What the gateway in front of Graph answers when the service behind it is down."""
    response = outage_response(status, body)
    response.headers = [*_ids(req), *headers]
    return response


def fault_response(req: Request, fault: Fault) -> Response:
    status = fault.status or 503
    if fault.body in ("html", "empty"):
        headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
        return non_json_response(req, status, fault.body, headers)
    code, message = _FAULT_DEFAULTS.get(status, ("BadRequest", "Injected by the simulator."))
    headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
    return graph_error(req, status, fault.code or code, fault.message or message, headers)


def mailbox_concurrency_exceeded(req: Request) -> Response:
    return graph_error(
        req, 429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", [("Retry-After", "1")]
    )


# ---------------------------------------------------------------------------------------------
# Authentication


@dataclass(frozen=True)
class Principal:
    client_id: str
    account: Account | None  # None for app-only tokens
    scopes: frozenset[str]
    issued_at: float = 0.0  # the access token's `iat` (epoch seconds)
    expires_at: float = float("inf")  # its `exp`


def _unauthorized(state: SimState, req: Request, message: str) -> Response:
    challenge = (
        f'Bearer realm="", authorization_uri="{state.base_url}/common/oauth2/authorize", client_id="{GRAPH_APP_ID}"'
    )
    return graph_error(req, 401, "InvalidAuthenticationToken", message, [("WWW-Authenticate", challenge)])


def authenticate(state: SimState, req: Request) -> Principal | Response:
    authorization = req.header("Authorization") or ""
    if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
        return _unauthorized(state, req, "Access token is empty.")
    try:
        claims = state.key.verify(authorization[7:].strip())
    except jwt.ExpiredSignatureError:
        return _unauthorized(state, req, "Lifetime validation failed, the token is expired.")
    except jwt.InvalidTokenError:
        return _unauthorized(state, req, "Access token validation failure.")
    if claims.get("aud") not in GRAPH_AUDIENCES:
        return _unauthorized(state, req, "Access token validation failure. Invalid audience.")
    client_id = str(claims.get("appid", ""))
    if claims.get("idtyp") == "app":
        return Principal(client_id, None, frozenset(claims.get("roles") or ()))
    account = state.directory.account_by_oid(str(claims.get("tid")), str(claims.get("oid")))
    if account is None:
        return _unauthorized(state, req, "Access token validation failure. The user does not exist.")
    ACTING_UPN.set(account.upn)
    return Principal(client_id, account, frozenset(str(claims.get("scp", "")).split()),
                     issued_at=float(claims.get("iat") or 0), expires_at=float(claims.get("exp") or float("inf")))


@dataclass(frozen=True)
class Target:
    """Whose data a Graph request addresses, and the rest of its path."""

    account: Account
    prefix: str  # "me" or "users/{key}", as the request spelled it
    rest: list[str]


def resolve_target(state: SimState, req: Request, principal: Principal) -> Target | Response:
    segments = [unquote(s) for s in req.path.split("/")[2:] if s]
    if not segments:
        return graph_error(req, 400, "BadRequest", "Invalid request.")
    head = segments[0].lower()
    if head == "me":
        if principal.account is None:
            return graph_error(req, 400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        return Target(principal.account, "me", segments[1:])
    if head == "users" and len(segments) >= 2:
        account = state.directory.account_by_graph_key(segments[1])
        if account is None:
            return graph_error(
                req,
                404,
                "Request_ResourceNotFound",
                f"Resource '{segments[1]}' does not exist or one of its queried reference-property objects are "
                "not present.",
            )
        if principal.account is None or principal.account != account:
            return graph_error(req, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return Target(account, f"users/{quote(segments[1], safe='@')}", segments[2:])
    return graph_error(req, 400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")


# ---------------------------------------------------------------------------------------------
# Request options


@dataclass(frozen=True)
class Preferences:
    zone: dt.tzinfo
    zone_name: str
    zone_applied: bool
    body_text: bool
    max_page_size: int | None

    def applied(self) -> list[str]:
        applied: list[str] = []
        if self.zone_applied:
            applied.append(f'outlook.timezone="{self.zone_name}"')
        if self.body_text:
            applied.append('outlook.body-content-type="text"')
        if self.max_page_size is not None:
            applied.append(f"odata.maxpagesize={self.max_page_size}")
        return applied


def preferences(req: Request) -> Preferences:
    raw = ",".join(req.headers.get_all("Prefer") or [])
    values: dict[str, str] = {}
    for item in re.findall(r'([\w.-]+)\s*=\s*("[^"]*"|[^,;\s]*)', raw):
        values[item[0].lower()] = item[1].strip('"')
    zone_name = values.get("outlook.timezone")
    zone = resolve_zone(zone_name) if zone_name else None
    page_size: int | None = None
    if values.get("odata.maxpagesize", "").isdigit():
        page_size = max(1, min(MAX_PAGE_SIZE, int(values["odata.maxpagesize"])))
    return Preferences(
        zone=zone or UTC,
        zone_name=zone_name if zone is not None and zone_name else "UTC",
        zone_applied=zone is not None,
        body_text=values.get("outlook.body-content-type", "").lower() == "text",
        max_page_size=page_size,
    )


def _int_param(req: Request, name: str) -> int | Response | None:
    raw = req.query_param(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        return graph_error(req, 400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'.")
    return int(raw)


def _window(req: Request) -> tuple[dt.datetime, dt.datetime] | Response:
    start_raw = req.query_param("startDateTime")
    end_raw = req.query_param("endDateTime")
    if not start_raw or not end_raw:
        return graph_error(
            req,
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and "
            "EndDateTime.",
        )
    bounds: list[dt.datetime] = []
    for name, raw in (("StartDateTime", start_raw), ("EndDateTime", end_raw)):
        try:
            bounds.append(parse_window_bound(raw))
        except ValueError:
            return graph_error(
                req, 400, "ErrorInvalidParameter", f"The value '{raw}' of parameter '{name}' is invalid."
            )
    return bounds[0], bounds[1]


def render_event(
    instance: Instance, prefs: Preferences, *, select: list[str] | None = None, delta: bool = False
) -> dict[str, Any]:
    event = copy.deepcopy(instance.event)
    event["start"] = {"dateTime": format_local(instance.start, prefs.zone), "timeZone": prefs.zone_name}
    event["end"] = {"dateTime": format_local(instance.end, prefs.zone), "timeZone": prefs.zone_name}
    body = event.get("body") or {}
    if prefs.body_text and str(body.get("contentType", "")).lower() == "html":
        event["body"] = {"contentType": "text", "content": html_to_text(str(body.get("content") or ""))}
    rendered: dict[str, Any] = {}
    if delta:
        rendered["@odata.type"] = "#microsoft.graph.event"
    rendered["@odata.etag"] = f'W/"{event.get("changeKey", "")}"'
    if select:
        wanted = {s.lower() for s in select} | {"id"}
        rendered.update({k: v for k, v in event.items() if k.lower() in wanted})
    else:
        rendered.update(event)
    return rendered


def _select(req: Request) -> list[str] | None:
    raw = req.query_param("$select")
    return [s.strip() for s in raw.split(",") if s.strip()] if raw else None


def _link(state: SimState, req: Request, params: list[tuple[str, str]]) -> str:
    return f"{state.base_url}{req.path}?" + urlencode(params, safe="$", quote_via=quote)


def _context(state: SimState, account: Account, tail: str) -> str:
    return f"{state.base_url}/v1.0/$metadata#users('{account.graph_id}')/{tail}"


def _collection(
    state: SimState,
    req: Request,
    items: list[Instance],
    context: str,
    keep: list[str],
    *,
    prefs: Preferences,
) -> Response:
    top = _int_param(req, "$top")
    if isinstance(top, Response):
        return top
    skip = _int_param(req, "$skip")
    if isinstance(skip, Response):
        return skip
    page_size = min(MAX_PAGE_SIZE, top) if top else (prefs.max_page_size or DEFAULT_PAGE_SIZE)
    offset = skip or 0
    orderby = (req.query_param("$orderby") or "").lower()
    if orderby.startswith("start/datetime") and orderby.endswith("desc"):
        items = list(reversed(items))
    chunk = items[offset : offset + page_size]
    select = _select(req)
    payload: dict[str, Any] = {
        "@odata.context": context,
        "value": [render_event(i, prefs, select=select) for i in chunk],
    }
    if offset + page_size < len(items):
        params = [(name, value) for name, value in req.query.items() if name.lower() in keep]
        params.append(("$skip", str(offset + page_size)))
        payload["@odata.nextLink"] = _link(state, req, params)
    return _answer(req, payload, prefs)


def _answer(req: Request, payload: dict[str, Any], prefs: Preferences) -> Response:
    headers = _ids(req)
    applied = prefs.applied()
    if applied:
        headers.append(("Preference-Applied", ", ".join(applied)))
    return json_response(200, payload, headers)


# ---------------------------------------------------------------------------------------------
# Routes


def dispatch(state: SimState, req: Request, principal: Principal, target: Target) -> Response:
    if req.method not in ("GET", "HEAD"):
        return graph_error(req, 405, "BadRequest", f"The HTTP method '{req.method}' is not supported by the simulator.")
    rest = [s.lower() for s in target.rest]
    raw = target.rest
    default_calendar = rest == ["calendar"]
    if rest and rest[0] == "calendar":
        rest, raw = rest[1:], raw[1:]
    if not target.rest:
        return _profile(state, req, principal, target.account)
    with state.lock:
        unreachable = state.settings(target.account).mailbox_unavailable_status
    if unreachable is not None:
        # Scopes are checked first, then the mailbox: every calendar (or other mailbox) path fails.
        return _calendar_scope(req, principal) or graph_error(
            req, unreachable, "MailboxNotEnabledForRESTAPI", MAILBOX_NOT_ENABLED
        )
    if default_calendar:
        return _calendar_scope(req, principal) or _default_calendar(state, req, target.account)
    if rest and rest[0] == "calendars":
        return _calendar_scope(req, principal) or _calendars(state, req, target, rest[1:], raw[1:])
    delta_names = ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")
    if len(rest) == 2 and rest[0] == "calendarview" and rest[1] in delta_names:
        return _calendar_scope(req, principal) or _delta(state, req, target)
    if rest == ["calendarview"]:
        return _calendar_scope(req, principal) or _calendar_view(state, req, target.account)
    if rest == ["events"]:
        return _calendar_scope(req, principal) or _events(state, req, target.account)
    if len(rest) == 2 and rest[0] == "events":
        return _calendar_scope(req, principal) or _event(state, req, target.account, raw[1])
    if len(rest) == 3 and rest[0] == "events" and rest[2] == "instances":
        return _calendar_scope(req, principal) or _instances(state, req, target.account, raw[1])
    return graph_error(req, 400, "BadRequest", f"Resource not found for the segment '{target.rest[-1]}'.")


def _calendar_scope(req: Request, principal: Principal) -> Response | None:
    if principal.scopes & CALENDAR_SCOPES:
        return None
    return graph_error(req, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def _profile(state: SimState, req: Request, principal: Principal, account: Account) -> Response:
    if not principal.scopes & PROFILE_SCOPES:
        return graph_error(
            req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
    profile: dict[str, Any] = {
        "businessPhones": [],
        "displayName": account.display_name,
        "givenName": account.given_name,
        "jobTitle": None,
        "mail": account.mail,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": account.surname,
        "userPrincipalName": account.upn,
        "id": account.graph_id,
    }
    select = _select(req)
    context = f"{state.base_url}/v1.0/$metadata#users/$entity"
    if select:
        wanted = {s.lower() for s in select}
        profile = {k: v for k, v in profile.items() if k.lower() in wanted}
        context = f"{state.base_url}/v1.0/$metadata#users({','.join(select)})/$entity"
    return json_response(200, {"@odata.context": context, **profile}, _ids(req))


def _calendar_resource(account: Account, calendar_id: str, name: str, *, default: bool) -> dict[str, Any]:
    """A `calendar` resource (https://learn.microsoft.com/graph/api/resources/calendar)."""
    return {
        "id": calendar_id,
        "name": name,
        "color": "auto",
        "hexColor": "",
        "isDefaultCalendar": default,
        "changeKey": "fJKVL07sbkmIfHqjbDnRgQAAAAACMA==",
        "canShare": True,
        "canViewPrivateItems": True,
        "canEdit": True,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "isTallyingResponses": default,
        "isRemovable": not default,
        "owner": {"name": account.display_name, "address": account.mail or account.upn},
    }


def _calendars(state: SimState, req: Request, target: Target, rest: list[str], raw: list[str]) -> Response:
    """`GET /me/calendars` (https://learn.microsoft.com/graph/api/user-list-calendars): the default
    calendar first, then the others; `/me/calendars/{id}` one of them; `/me/calendars/{id}/calendarView`
    and `/me/calendars/{id}/events` as on the default calendar. v1.0 has no delta on a calendar's
    calendarView (`/me/calendars/{id}/calendarView/delta` is beta only): 400 here, as Graph answers a
    segment v1.0 does not know. An unknown calendar id: 404 ErrorItemNotFound."""
    account = target.account
    with state.lock:
        mailbox = state.mailbox(account)
        listed = [(mailbox.default_calendar_id, "Calendar", True)]
        listed += [(c.id, c.name, False) for c in mailbox.calendars.values()]
    if not rest:
        context = f"{state.base_url}/v1.0/$metadata#users('{account.graph_id}')/calendars"
        select = _select(req)
        values = [_calendar_resource(account, cid, name, default=d) for cid, name, d in listed]
        if select:
            wanted = {s.lower() for s in select} | {"id"}
            values = [{k: v for k, v in c.items() if k.lower() in wanted} for c in values]
        return json_response(200, {"@odata.context": context, "value": values}, _ids(req))
    found = next(((cid, name, d) for cid, name, d in listed if cid == raw[0]), None)
    if found is None:
        return graph_error(req, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
    calendar_id = found[0]
    tail = rest[1:]
    if not tail:
        return json_response(200, _calendar_resource(account, *found[:2], default=found[2]), _ids(req))
    delta_names = ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")
    if len(tail) == 2 and tail[0] == "calendarview" and tail[1] in delta_names:
        return graph_error(req, 400, "BadRequest", f"Resource not found for the segment '{raw[-1]}'.")
    if tail == ["calendarview"]:
        return _calendar_view(state, req, account, calendar_id)
    if tail == ["events"]:
        return _events(state, req, account, calendar_id)
    return graph_error(req, 400, "BadRequest", f"Resource not found for the segment '{raw[-1]}'.")


def _default_calendar(state: SimState, req: Request, account: Account) -> Response:
    """`GET /me/calendar` (https://learn.microsoft.com/graph/api/calendar-get): the user's default
    calendar resource; `$select` honoured. What a cheap "can Graph read this mailbox" probe reads."""
    with state.lock:
        calendar_id = state.mailbox(account).default_calendar_id
    calendar = _calendar_resource(account, calendar_id, "Calendar", default=True)
    select = _select(req)
    context = f"{state.base_url}/v1.0/$metadata#users('{account.graph_id}')/calendar/$entity"
    if select:
        wanted = {s.lower() for s in select}
        calendar = {k: v for k, v in calendar.items() if k.lower() in wanted or k == "id"}
    return json_response(200, {"@odata.context": context, **calendar}, _ids(req))


def _calendar_view(state: SimState, req: Request, account: Account, calendar_id: str | None = None) -> Response:
    window = _window(req)
    if isinstance(window, Response):
        return window
    if req.query_param("$filter") is not None:
        return graph_error(req, 400, "ErrorInvalidUrlQuery", "The simulator does not support $filter on calendarView.")
    with state.lock:
        items = state.mailbox(account).instances(*window, calendar_id)
    keep = ["startdatetime", "enddatetime", "$top", "$select", "$orderby"]
    return _collection(state, req, items, _context(state, account, "calendarView"), keep, prefs=preferences(req))


def _events(state: SimState, req: Request, account: Account, calendar_id: str | None = None) -> Response:
    with state.lock:
        items = state.mailbox(account).masters_and_singles(calendar_id)
    keep = ["$top", "$select", "$orderby"]
    return _collection(state, req, items, _context(state, account, "events"), keep, prefs=preferences(req))


def _event(state: SimState, req: Request, account: Account, event_id: str) -> Response:
    with state.lock:
        mailbox = state.mailbox(account)
        instance = mailbox.find_instance(event_id)
        deleted_from_series = instance is None and mailbox.deleted_occurrence(event_id)
        answer = state.config.occurrence_delete.get("get_by_id", 404)
    if deleted_from_series and answer == 400:
        # What Exchange answers for an occurrence deleted from its series (Config.occurrence_delete).
        return graph_error(req, 400, "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                           "Occurrence has been deleted from the recurrence.")
    if instance is None:
        return graph_error(req, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
    prefs = preferences(req)
    payload = {
        "@odata.context": _context(state, account, "events/$entity"),
        **render_event(instance, prefs, select=_select(req)),
    }
    return _answer(req, payload, prefs)


def _instances(state: SimState, req: Request, account: Account, event_id: str) -> Response:
    window = _window(req)
    if isinstance(window, Response):
        return window
    with state.lock:
        mailbox = state.mailbox(account)
        master = mailbox.events.get(event_id)
        if master is None:
            return graph_error(req, 404, "ErrorItemNotFound", "The specified object was not found in the store.")
        items = [i for i in mailbox.instances(*window) if i.id == event_id or i.event.get("seriesMasterId") == event_id]
    keep = ["startdatetime", "enddatetime", "$top", "$select", "$orderby"]
    context = _context(state, account, f"events('{event_id}')/instances")
    return _collection(state, req, items, context, keep, prefs=preferences(req))


def _delta(state: SimState, req: Request, target: Target) -> Response:
    unsupported = [p for p in DELTA_UNSUPPORTED if req.query_param(p) is not None]
    if unsupported:
        return graph_error(
            req,
            400,
            "ErrorInvalidUrlQuery",
            "The following parameters are not supported with change tracking over the 'CalendarView' resource: "
            f"'{', '.join(DELTA_UNSUPPORTED)}'.",
        )
    prefs = preferences(req)
    page_size = prefs.max_page_size or DEFAULT_PAGE_SIZE
    skip_token = req.query_param("$skiptoken")
    delta_token = req.query_param("$deltatoken")
    window: tuple[dt.datetime, dt.datetime] | None = None
    if not skip_token and not delta_token:
        found = _window(req)
        if isinstance(found, Response):
            return found
        window = found
    with state.lock:
        mailbox: Mailbox = state.mailbox(target.account)
        try:
            if skip_token:
                pages = mailbox.continue_round(skip_token)
                units, offset, final = pages.units, pages.offset, pages.final
            else:
                units, final = mailbox.start_delta_round(window, delta_token or None, state.next_seq())
                offset = 0
        except SyncStateNotFound as gone:
            return _sync_state_not_found(state, req, target, gone)
        chunk, next_skip, next_delta = mailbox.page(units, offset, page_size, final, state.config.delta_generations)
        null_keys = state.config.sparse_null_keys
    base = f"{state.base_url}/v1.0/{target.prefix}/calendarView/delta"
    payload: dict[str, Any] = {"@odata.context": f"{state.base_url}/v1.0/$metadata#Collection(event)"}
    if next_skip:
        payload["@odata.nextLink"] = f"{base}?$skiptoken={next_skip}"
    else:
        payload["@odata.deltaLink"] = f"{base}?$deltatoken={next_delta}"
    payload["value"] = [_delta_entry(item, prefs, null_keys=null_keys) for item in chunk]
    return _answer(req, payload, prefs)


def _delta_entry(item: DeltaItem, prefs: Preferences, *, null_keys: bool = False) -> dict[str, Any]:
    """An entry of a delta page. Removed: `{"@odata.type", "id", "@removed": {"reason": "deleted"}}`.
    Plain occurrences are sparse: only @odata.type, @odata.etag, id, type, seriesMasterId, start and
    end (microsoftgraph/microsoft-graph-docs#7632), plus null-valued keys when `null_keys`."""
    if item.instance is None:
        return {"@odata.type": "#microsoft.graph.event", "id": item.id, "@removed": {"reason": "deleted"}}
    rendered = render_event(item.instance, prefs, delta=True)
    if item.sparse:
        sparse = {k: rendered[k] for k in SPARSE_KEYS}
        if null_keys:
            sparse.update(dict.fromkeys(SPARSE_NULL_KEYS))
        return sparse
    return rendered


def _sync_state_not_found(state: SimState, req: Request, target: Target, gone: SyncStateNotFound) -> Response:
    """A delta link whose sync state generation is gone, answered as `Config.delta_token_expired_code`
    says: "SyncStateNotFound" 410 with the generations still kept (as reported), "syncStateNotFound"
    410 (as learn.microsoft.com/graph/errors documents it) or 400 "InvalidDeltaToken"."""
    with state.lock:
        answer = state.config.delta_token_expired_code
    if answer == "InvalidDeltaToken":
        return graph_error(req, 400, "InvalidDeltaToken", INVALID_DELTA_TOKEN)
    headers: list[tuple[str, str]] = []
    if gone.window is not None:
        params = [("startDateTime", _iso(gone.window[0])), ("endDateTime", _iso(gone.window[1]))]
        location = f"{state.base_url}/v1.0/{target.prefix}/calendarView/delta?" + urlencode(params, quote_via=quote)
        headers.append(("Location", location))
    if answer == "SyncStateNotFound":
        message = f"The sync state generation is not found; {gone.detail}." if gone.detail else SYNC_STATE_NOT_FOUND
        return graph_error(req, 410, "SyncStateNotFound", message, headers)
    return graph_error(req, 410, "syncStateNotFound", SYNC_STATE_NOT_FOUND, headers)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def userinfo(state: SimState, req: Request) -> Response:
    """The OIDC userinfo endpoint (Graph-hosted in the real cloud)."""
    principal = authenticate(state, req)
    if isinstance(principal, Response):
        return principal
    if principal.account is None or "openid" not in principal.scopes:
        return graph_error(
            req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
        )
    account = principal.account
    return json_response(
        200,
        {
            "sub": pairwise_subject(account.object_id, principal.client_id),
            "name": account.display_name,
            "family_name": account.surname,
            "given_name": account.given_name,
            "picture": f"{state.base_url}/v1.0/me/photo/$value",
            "email": account.email,
        },
        _ids(req),
    )
