"""The JSON API the Integrations page uses: connections, upcoming meetings, health."""

import logging

import azure.functions as func

from shared.adapters.identity import admin_consent_url
from shared.autojoin import Why
from shared.calendars import InvalidCalendarChoice, LastCalendar, UnknownCalendar, parse_choice
from shared.connections import plan_limit
from shared.platform_auth import User
from shared.services.calendars import CalendarsUnreadable, ConnectionNotReadable
from shared.services.unlisted import MAX_QUERY_CHARS
from shared.triggers.http import SECURITY_HEADERS, authed, error, json_body, json_response
from shared.triggers.views import account_view, calendar_view, connection_view, iso, meeting_view, unlisted_view
from shared.wiring import Container, container

log = logging.getLogger(__name__)
bp = func.Blueprint()


@bp.function_name("list_connections")
@bp.route(route="outlook/connections", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def list_connections(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    connections = c.accounts.list(user.id)
    return json_response({
        "connections": [connection_view(x, c.clock.now(), c.settings.token_warning_after_seconds,
                                        c.settings.sync_warning_after_seconds, c.accounts.last_synced_at(x.id))
                        for x in connections],
        "plan": {"name": user.plan.value, "limit": plan_limit(user.plan), "used": len(connections)},
        "account": account_view(user),
        # For IT admins: the app id to allow, and where to grant tenant-wide consent (public values).
        "app": {
            "client_id": c.settings.outlook_client_id,
            "admin_consent_url": admin_consent_url(c.settings.outlook_authority, c.settings.outlook_client_id,
                                                   c.settings.outlook_redirect_uri,
                                                   c.connect.admin_consent_state(user)),
            # Set only when an admin came back through this user's link lately: the page says
            # "approved" from this, never from its own URL.
            "admin_consented_at": iso(c.connect.admin_consented_at(user)),
        },
    })


@bp.function_name("disconnect_connection")
@bp.route(route="outlook/connections/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def disconnect_connection(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    connection_id = req.route_params.get("id", "")
    if not c.accounts.disconnect(user.id, connection_id):
        return error(404, "not_found", "No such Outlook connection for this user")
    return func.HttpResponse(status_code=204, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@bp.function_name("sync_connection_now")
@bp.route(route="outlook/connections/{id}/sync", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def sync_connection_now(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """"Sync now": read this calendar's changes soon. Repeated calls while one is queued queue nothing more."""
    outcome = c.sync.sync_now(user.id, req.route_params.get("id", ""))
    if outcome == "not_found":
        return error(404, "not_found", "No such Outlook connection for this user")
    if outcome == "connection_error":
        return error(409, "connection_error", "This connection is in error: reconnect it, then sync.")
    return json_response({"queued": True}, 202)


@bp.function_name("list_calendars")
@bp.route(route="outlook/connections/{id}/calendars", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def list_calendars(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """The account's own calendars, which are read, and the agent name per calendar."""
    try:
        calendars = c.calendars.list(user.id, req.route_params.get("id", ""))
    except ConnectionNotReadable:
        return error(409, "connection_error", "This connection is in error: reconnect it to choose its calendars.")
    except CalendarsUnreadable as exc:
        return _graph_unavailable(exc)
    if calendars is None:
        return error(404, "not_found", "No such Outlook connection for this user")
    return json_response({"calendars": [calendar_view(x) for x in calendars]})


@bp.function_name("choose_calendar")
@bp.route(route="outlook/connections/{id}/calendars/{calendar_id}", methods=["PUT"],
          auth_level=func.AuthLevel.ANONYMOUS)
@authed
def choose_calendar(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """Read this calendar or not, and the agent's name in its meetings. 409 `last_calendar` when it
    would leave no calendar read."""
    try:
        selected, agent_name, name_given = parse_choice(json_body(req))
    except InvalidCalendarChoice as exc:
        return error(400, "invalid_calendar", str(exc))
    try:
        chosen = c.calendars.choose(user.id, req.route_params.get("id", ""), req.route_params.get("calendar_id", ""),
                                    selected, agent_name, keep_name=not name_given)
    except UnknownCalendar:
        return error(404, "not_found", "No such calendar in this Outlook account")
    except LastCalendar:
        return error(409, "last_calendar", "At least one calendar must stay selected: select another one first.")
    except ConnectionNotReadable:
        return error(409, "connection_error", "This connection is in error: reconnect it to choose its calendars.")
    except CalendarsUnreadable as exc:
        return _graph_unavailable(exc)
    if chosen is None:
        return error(404, "not_found", "No such Outlook connection for this user")
    return json_response(calendar_view(chosen))


@bp.function_name("upcoming_meetings")
@bp.route(route="meetings/upcoming", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def upcoming_meetings(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    planned = c.meeting_lifecycle.upcoming(user.id)
    shared = c.teams.shared_agents(user.id, [m for m, d in planned if d.why is Why.TEAMMATE_AGENT])
    return json_response({"meetings": [meeting_view(m, d, shared.get(m.key), max_attempts=c.settings.agent_max_attempts)
                                       for m, d in planned]})


def _graph_unavailable(exc: CalendarsUnreadable) -> func.HttpResponse:
    resp = error(503, "microsoft_unavailable", "Microsoft did not answer for this calendar just now; nothing was "
                 "changed. Try again in a moment.")
    resp.headers["Retry-After"] = str(max(1, round(exc.retry_after.total_seconds())))
    return resp


@bp.function_name("unlisted_meetings")
@bp.route(route="meetings/unlisted", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def unlisted_meetings(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    """"Why isn't my meeting here?": the next 7 days' events not in Upcoming Meetings, with reasons."""
    query = req.params.get("q")
    if query is not None and len(query) > MAX_QUERY_CHARS:
        return error(400, "invalid_query", f"q is at most {MAX_QUERY_CHARS} characters")
    report = c.unlisted.unlisted(user.id, query)
    return json_response({"events": [unlisted_view(e) for e in report.events], "unread_accounts": report.unread})


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """200 when storage (tables, queues) and Key Vault answer; 503 naming the ones that do not."""
    try:
        c = container()
    except Exception as exc:
        # Building the app touches storage first (tables and queues are created): that is what failed.
        log.exception("health check failed: the app could not start")
        return error(503, "unhealthy", f"The app could not start ({type(exc).__name__}); storage is the "
                     "first dependency it needs", dependencies={"storage": "down"})
    report = c.health.report()
    if not report.healthy:
        down = ", ".join(f"{name} ({why})" for name, why in sorted(report.problems.items()))
        return error(503, "unhealthy", f"Not reachable: {down}", dependencies=report.dependencies)
    return json_response({"status": "ok", "dependencies": report.dependencies})
