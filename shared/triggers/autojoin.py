"""Join rules and the per-meeting join/skip toggle (`../shared/API.md`, "Join rules" and "Meetings")."""

import logging

import azure.functions as func

from shared.autojoin import InvalidRules
from shared.platform_auth import User
from shared.services.autojoin import Choice, NotASeries
from shared.triggers.http import authed, error, json_body, json_response
from shared.triggers.views import meeting_view
from shared.wiring import Container

log = logging.getLogger(__name__)
bp = func.Blueprint()

_CHOICE_FIELDS = {"join", "series"}


@bp.function_name("get_autojoin_rules")
@bp.route(route="autojoin/rules", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def get_autojoin_rules(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    return json_response(c.autojoin.rules(user.id).as_json())


@bp.function_name("put_autojoin_rules")
@bp.route(route="autojoin/rules", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def put_autojoin_rules(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    body = json_body(req)
    try:
        rules = c.autojoin.set_rules(user.id, body if body is not None else "not an object")
    except InvalidRules as exc:
        return error(400, "invalid_rules", str(exc), reasons=exc.reasons)
    log.info("join rules changed", extra={"user_id": user.id})
    return json_response(rules.as_json())


@bp.function_name("set_meeting_autojoin")
@bp.route(route="meetings/{id}/autojoin", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@authed
def set_meeting_autojoin(req: func.HttpRequest, c: Container, user: User) -> func.HttpResponse:
    body = json_body(req)
    if (body is None or not body.keys() <= _CHOICE_FIELDS or "join" not in body
            or not (body["join"] is None or isinstance(body["join"], bool))
            or not isinstance(body.get("series", False), bool)):
        return error(400, "invalid_body", 'Body must be {"join": true|false|null, "series": false|true}')
    try:
        found = c.autojoin.choose(user.id, req.route_params.get("id", ""),
                                  Choice(join=body["join"], series=body.get("series", False)))
    except NotASeries as exc:
        return error(400, "not_a_series", str(exc))
    if found is None:
        return error(404, "not_found", "No such meeting for this user")
    meeting, decision = found
    log.info("meeting join choice changed: %s", decision.why.value, extra={"meeting_id": meeting.key})
    return json_response(meeting_view(meeting, decision, max_attempts=c.settings.agent_max_attempts))
