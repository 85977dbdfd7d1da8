"""HTTP functions of the sample app, in a blueprint as the real app keeps them."""

import asyncio
import json

import azure.functions as func
from sample_calls import calls  # type: ignore[import-not-found,unused-ignore]

bp = func.Blueprint()  # type: ignore[no-untyped-call,unused-ignore]


@bp.route(route="items/{id}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "id": req.route_params["id"],
        "q": req.params.get("q"),
        "header": req.headers.get("x-sample"),
        "url": req.url,
        "method": req.method,
    }
    return func.HttpResponse(json.dumps(payload), mimetype="application/json", status_code=200)


@bp.route(route="items/{id:guid}/cookies", methods=["POST"])
def set_cookies(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse(req.get_body(), status_code=201, headers={"Location": "/api/items/x"})
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    return response


@bp.route(route="greet/{name?}", methods=["GET"])
async def greet(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(f"hello {req.route_params.get('name', 'world')}")


@bp.route(route="keyed", auth_level=func.AuthLevel.FUNCTION)
def keyed(req: func.HttpRequest) -> str:
    return "no key needed locally"


@bp.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("sample failure with a secret detail")


@bp.route(route="calls", methods=["GET"])
def list_calls(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(calls()), mimetype="application/json")
