"""The Integrations page (static HTML/CSS/JS that talks only to the JSON API)."""

from pathlib import Path

import azure.functions as func

bp = func.Blueprint()

_WEB = Path(__file__).resolve().parent.parent / "web"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _file(name: str) -> func.HttpResponse:
    path = (_WEB / name).resolve()
    if path.parent != _WEB or path.suffix not in _TYPES or not path.is_file():
        return func.HttpResponse("Not found", status_code=404)
    return func.HttpResponse(
        path.read_bytes(), status_code=200, mimetype=_TYPES[path.suffix], charset="utf-8",
        headers={"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


@bp.function_name("integrations_page")
@bp.route(route="integrations", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def integrations_page(req: func.HttpRequest) -> func.HttpResponse:
    return _file("integrations.html")


@bp.function_name("integrations_assets")
@bp.route(route="integrations/assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def integrations_assets(req: func.HttpRequest) -> func.HttpResponse:
    return _file(req.route_params.get("name", ""))
