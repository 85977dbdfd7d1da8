"""The Integrations page (static HTML/CSS/JS that talks only to the JSON API) and the API's OpenAPI
document. No build step: what is in `shared/web/` is what the browser gets."""

from pathlib import Path

import azure.functions as func

bp = func.Blueprint()

_SHARED = Path(__file__).resolve().parent.parent
_WEB = _SHARED / "web"
_OPENAPI = _SHARED / "openapi.json"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Strict: no inline script or style, nothing fetched from anywhere but this app.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _file(name: str) -> func.HttpResponse:
    path = (_WEB / name).resolve()
    if path.parent != _WEB or path.suffix not in _TYPES or not path.is_file():
        return func.HttpResponse("Not found", status_code=404)
    return func.HttpResponse(
        path.read_bytes(), status_code=200, mimetype=_TYPES[path.suffix], charset="utf-8",
        headers={"Content-Security-Policy": _CSP, **_HEADERS},
    )


@bp.function_name("integrations_page")
@bp.route(route="integrations", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def integrations_page(req: func.HttpRequest) -> func.HttpResponse:
    return _file("integrations.html")


@bp.function_name("integrations_assets")
@bp.route(route="integrations/assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def integrations_assets(req: func.HttpRequest) -> func.HttpResponse:
    return _file(req.route_params.get("name", ""))


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 description of the JSON API (`shared/openapi.json`, checked by the tests)."""
    return func.HttpResponse(_OPENAPI.read_bytes(), status_code=200, mimetype="application/json",
                             headers=dict(_HEADERS))
