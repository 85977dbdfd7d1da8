"""HTTP trigger routes match requests the way the Functions host matches them."""

import pytest

from devstack.host_routes import compile_route


def test_literal_routes_match_case_insensitively_with_or_without_trailing_slash() -> None:
    route = compile_route("api/connections")
    assert route.match("/api/connections") == {}
    assert route.match("/API/Connections/") == {}
    assert route.match("/api/connections/x") is None
    assert route.match("/api/connection") is None


def test_parameters_capture_one_decoded_segment() -> None:
    route = compile_route("api/connections/{id}")
    assert route.match("/api/connections/abc%20def") == {"id": "abc def"}
    assert route.match("/api/connections/") is None
    assert route.match("/api/connections/a/b") is None


def test_an_encoded_slash_stays_inside_its_segment() -> None:
    assert compile_route("api/items/{id}").match("/api/items/a%2Fb") == {"id": "a/b"}


def test_guid_and_int_constraints() -> None:
    by_guid = compile_route("api/meetings/{id:guid}")
    assert by_guid.match("/api/meetings/6f9619ff-8b86-d011-b42d-00cf4fc964ff") == {
        "id": "6f9619ff-8b86-d011-b42d-00cf4fc964ff"
    }
    assert by_guid.match("/api/meetings/not-a-guid") is None
    by_int = compile_route("api/page/{n:int:min(1)}")
    assert by_int.match("/api/page/3") == {"n": "3"}
    assert by_int.match("/api/page/0") is None
    assert by_int.match("/api/page/x") is None


def test_optional_parameters_and_defaults() -> None:
    optional = compile_route("api/meetings/{day?}")
    assert optional.match("/api/meetings") == {}
    assert optional.match("/api/meetings/2026-03-01") == {"day": "2026-03-01"}
    defaulted = compile_route("api/meetings/{view=upcoming}")
    assert defaulted.match("/api/meetings") == {"view": "upcoming"}


def test_catch_all_takes_the_rest_of_the_path() -> None:
    route = compile_route("api/static/{*path}")
    assert route.match("/api/static/css/site.css") == {"path": "css/site.css"}
    assert route.match("/api/static") == {}


def test_catch_all_takes_control_characters_too() -> None:
    """An OPTIONS preflight on `/api/a%0Ab` reaches the `{*path}` function (204/403 as documented),
    as in Azure, where routing decodes the path and a catch-all takes whatever it holds."""
    route = compile_route("api/{*path}")
    for raw, value in [("/api/a%0Ab", "a\nb"), ("/api/%0D%0A", "\r\n"), ("/api/a%01b%7F", "a\x01b\x7f")]:
        assert route.match(raw) == {"path": value}


def test_parameters_inside_a_segment() -> None:
    assert compile_route("api/files/{name}.{ext:alpha}").match("/api/files/report.pdf") == {
        "name": "report",
        "ext": "pdf",
    }


def test_literals_take_precedence_over_parameters() -> None:
    routes = sorted(
        [compile_route("api/connections/{id}"), compile_route("api/connections/health")],
        key=lambda r: r.precedence,
    )
    assert routes[0].template == "api/connections/health"


@pytest.mark.parametrize(
    "template",
    ["api/{id", "api/{id}/{id}", "api/{x:nope}", "api/{*rest}/more", "api//x", "api/{a?}.{b}"],
)
def test_malformed_templates_are_rejected(template: str) -> None:
    with pytest.raises(ValueError):
        compile_route(template)
