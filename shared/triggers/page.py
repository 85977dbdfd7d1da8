"""The Integrations page (static HTML/CSS/JS that talks only to the JSON API) and the API's OpenAPI
document. No build step: what is in `shared/web/` is what the browser gets."""

from html import escape
from pathlib import Path

import azure.functions as func

from shared.triggers.http import SECURITY_HEADERS
from shared.wiring import container

bp = func.Blueprint()

_SHARED = Path(__file__).resolve().parent.parent
_WEB = _SHARED / "web"
_OPENAPI = _SHARED / "openapi.json"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Strict: no inline script or style, nothing fetched from anywhere but this app.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
# The page learns where its platform token may come from: the web app's origins (postMessage), and
# whether the local stack's #token= convenience is on. Both are settings, never request input.
_ORIGINS_META = b'<meta name="coagentor-web-origins" content="">'
_URL_TOKEN_META = b'<meta name="coagentor-token-from-url" content="false">'
# Where "Upgrade your plan" and the help article link lead (UPGRADE_URL, HELP_ARTICLE_URL; "" = no link).
_LINK_METAS = {"upgrade_url": b'<meta name="coagentor-upgrade-url" content="">',
               "help_article_url": b'<meta name="coagentor-help-url" content="">'}


def _file(name: str) -> func.HttpResponse:
    path = (_WEB / name).resolve()
    if path.parent != _WEB or path.suffix not in _TYPES or not path.is_file():
        return func.HttpResponse("Not found", status_code=404, headers=dict(SECURITY_HEADERS))
    body = path.read_bytes()
    if path.name == "integrations.html":
        body = _configured(body)
    return func.HttpResponse(
        body, status_code=200, mimetype=_TYPES[path.suffix], charset="utf-8",
        headers={"Content-Security-Policy": _CSP, **_HEADERS},
    )


def _configured(html: bytes) -> bytes:
    settings = container().settings
    origins = escape(" ".join(settings.platform_web_origins), quote=True).encode()
    html = html.replace(_ORIGINS_META, _ORIGINS_META.replace(b'content=""', b'content="' + origins + b'"'))
    for setting, tag in _LINK_METAS.items():
        value = escape(getattr(settings, setting), quote=True).encode()
        html = html.replace(tag, tag.replace(b'content=""', b'content="' + value + b'"'))
    if settings.page_token_from_url:
        html = html.replace(_URL_TOKEN_META, _URL_TOKEN_META.replace(b'"false"', b'"true"'))
    return html


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
