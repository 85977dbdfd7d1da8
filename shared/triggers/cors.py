"""CORS preflight for the CoAgentor web app's origins (PLATFORM_WEB_ORIGINS). The answers themselves
get their CORS header in shared/triggers/http.py; Azure's platform CORS stays off so this is the one
place the rule lives."""

import azure.functions as func

from shared.triggers.http import preflight
from shared.wiring import container

bp = func.Blueprint()


@bp.function_name("cors_preflight")
@bp.route(route="{*path}", methods=["OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
def cors_preflight(req: func.HttpRequest) -> func.HttpResponse:
    return preflight(req, container().settings.platform_web_origins)
