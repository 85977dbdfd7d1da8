"""Recognition stays linear on hostile or huge events: no backtracking blow-up, no quadratic loop.

No test here reads a clock. Linearity is shown two ways that do not depend on the machine:

- structurally: every regular expression in the module is free of nested quantifiers and quantified
  alternations, so the regex engine cannot backtrack catastrophically;
- by counting work: the Python lines executed inside `shared/meeting_links.py` (a deterministic count)
  for an input of size n and 2n. Doubling the input at most doubles the work, and inputs past the
  module's caps (candidate length, unwrap depth, candidates per field) cost no more than at the cap.

A generous per-test timeout is the last guard if either argument were wrong.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import quote

import pytest

import shared.meeting_links as meeting_links
from shared.meeting_links import (
    MAX_CANDIDATES_PER_FIELD,
    MAX_UNWRAP_DEPTH,
    MAX_URL_CHARS,
    explain,
    find_meeting_link,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants
    import sre_parse

pytestmark = pytest.mark.timeout(60)

MEGABYTE = 1 << 20
ZOOM = "https://us02web.zoom.us/j/85012345678?pwd=bWp5T1VzRXh3dE9aN2x6QzBGQ1pXZz09"


def work(fn: Callable[[Any], object], arg: Any) -> int:
    """Python lines executed inside meeting_links.py while running fn(arg)."""
    target = meeting_links.__file__
    count = 0

    def tracer(frame: FrameType, event: str, _: object) -> Any:
        nonlocal count
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn(arg)
    finally:
        sys.settrace(previous)
    return count


def body_event(content: str, kind: str = "html") -> dict[str, Any]:
    return {"subject": "x", "body": {"contentType": kind, "content": content}}


def repeat_to(unit: str, size: int) -> str:
    return unit * (size // len(unit))


# --------------------------------------------------------------------------------------------
# Structure of the regular expressions

REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)}


def nested_quantifiers(items: Any, inside_repeat: bool = False) -> list[str]:
    problems: list[str] = []
    for op, av in items:
        if op in REPEATS:
            low, high, sub = av
            varies = low != high
            if inside_repeat and varies:
                problems.append(f"variable repeat {{{low},{high}}} inside another repeat")
            problems += nested_quantifiers(sub, inside_repeat or high > 1)
        elif op is sre_constants.BRANCH:
            if inside_repeat:
                problems.append("alternation inside a repeat")
            for branch in av[1]:
                problems += nested_quantifiers(branch, inside_repeat)
        elif op is sre_constants.SUBPATTERN:
            problems += nested_quantifiers(av[-1], inside_repeat)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            problems += nested_quantifiers(av[1], inside_repeat)
        elif op is sre_constants.GROUPREF_EXISTS:
            for branch in av[1:]:
                if branch is not None:
                    problems += nested_quantifiers(branch, inside_repeat)
    return problems


def module_patterns() -> dict[str, re.Pattern[str]]:
    """Every compiled pattern of the module, including those kept in tuples (and tuples of tuples)."""
    found: dict[str, re.Pattern[str]] = {}

    def collect(name: str, value: object) -> None:
        if isinstance(value, re.Pattern):
            found[name] = value
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                collect(f"{name}[{i}]", item)

    for name, value in vars(meeting_links).items():
        collect(name, value)
    return found


def test_the_module_has_regular_expressions_to_check() -> None:
    assert len(module_patterns()) >= 15


@pytest.mark.parametrize("name", sorted(module_patterns()))
def test_no_regular_expression_can_backtrack_catastrophically(name: str) -> None:
    pattern = module_patterns()[name]
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    assert nested_quantifiers(parsed.data) == []


def test_the_whitespace_spelled_out_for_speed_is_exactly_what_backslash_s_matches() -> None:
    spelled_out = re.compile(f"[{meeting_links._WHITESPACE}]")
    assert all(
        bool(spelled_out.match(char)) == bool(re.match(r"\s", char)) == char.isspace()
        for char in map(chr, range(sys.maxunicode + 1))
    )


def test_the_checker_catches_the_classic_catastrophic_shapes() -> None:
    for bad in (r"(a+)+b", r"(?:foo|fo)*x", r"(?:[a-z0-9-]+\.)*zoom\.us"):
        assert nested_quantifiers(sre_parse.parse(bad).data), bad


# --------------------------------------------------------------------------------------------
# Work grows at most linearly, and stops growing at the caps


def doubling(make: Callable[[int], Any], size: int, fn: Callable[[Any], object] = find_meeting_link) -> tuple[int, int]:
    return work(fn, make(size)), work(fn, make(2 * size))


def test_a_megabyte_of_prose_is_left_to_the_regex_engine() -> None:
    prose = "Agenda: review the roadmap, budget and hiring plan with the team. "
    small, large = doubling(lambda n: body_event(repeat_to(prose, n)), MEGABYTE // 2)
    assert large <= small + 5


def test_near_urls_cost_in_proportion_to_their_number() -> None:
    near = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ "
    small, large = doubling(lambda n: body_event(near * n), 100)
    assert 1.8 * small <= large <= 2.2 * small


def test_a_megabyte_of_near_urls_stops_at_the_candidate_cap() -> None:
    near = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ zoom.us/j/1 https://meet.google.com/new "
    event = body_event(repeat_to(near, MEGABYTE))
    assert find_meeting_link(event) is None
    assert any("stopped after" in note for note in explain(event).notes)
    at_cap, past_cap = doubling(lambda n: body_event(repeat_to(near, n)), MEGABYTE // 2)
    assert past_cap <= at_cap + 5


def test_the_meeting_link_after_the_cap_is_not_reached_but_before_it_is() -> None:
    junk = "https://example.com/a "
    before = body_event(junk * (MAX_CANDIDATES_PER_FIELD - 1) + ZOOM)
    after = body_event(junk * (MAX_CANDIDATES_PER_FIELD + 1) + ZOOM)
    assert find_meeting_link(before) is not None
    assert find_meeting_link(after) is None


@pytest.mark.parametrize("unit", ["https://", "https://zoom.us/j/1?pwd=", "%7b%22Tid%22", "&amp;"])
def test_a_megabyte_without_separators_is_one_overlong_candidate(unit: str) -> None:
    event = body_event("https://" + repeat_to(unit, MEGABYTE))
    assert find_meeting_link(event) is None
    story = explain(event)
    assert [c.reason for c in story.candidates] == [f"longer than {MAX_URL_CHARS} characters"]
    small, large = doubling(lambda n: body_event("https://" + repeat_to(unit, n)), MEGABYTE // 2)
    assert large <= small + 5


def safelinks(url: str) -> str:
    return f"https://nam12.safelinks.protection.outlook.com/?url={quote(url, safe='')}&data=05%7C02&reserved=0"


def google_redirect_raw(url: str) -> str:
    return f"https://www.google.com/url?q={url}"


def test_unwrapping_stops_at_the_depth_limit() -> None:
    link = ZOOM
    for _ in range(MAX_UNWRAP_DEPTH):
        link = safelinks(link)
    assert find_meeting_link(body_event(link, "text")) is not None
    too_deep = safelinks(link)
    assert find_meeting_link(body_event(too_deep, "text")) is None
    assert explain(body_event(too_deep, "text")).candidates[0].reason == f"wrapped more than {MAX_UNWRAP_DEPTH} times"


def test_deeply_nested_wrappers_cost_no_more_than_the_depth_limit_allows() -> None:
    def nested(depth: int) -> dict[str, Any]:
        link = ZOOM
        for _ in range(depth):
            link = google_redirect_raw(link)
        return body_event(link, "text")

    limit, far_past = work(find_meeting_link, nested(MAX_UNWRAP_DEPTH + 1)), work(find_meeting_link, nested(200))
    assert far_past <= limit + 5
    assert len(nested(200)["body"]["content"]) < MAX_URL_CHARS  # the cap here is the depth, not the length


def test_proofpoint_v3_star_runs_decode_in_linear_work() -> None:
    def v3(stars: int) -> str:
        return (
            "https://urldefense.com/v3/__https://zoom.us/j/123456789?pwd=" + "*" * stars + "__;" + "QUFB" * 4 + "!!x$"
        )

    small, large = doubling(lambda n: body_event(v3(n), "text"), 2000)
    assert large <= 2.2 * small


def test_trailing_punctuation_and_entities_are_stripped_in_linear_work() -> None:
    small, large = doubling(lambda n: body_event(ZOOM + ")" * n, "text"), 2000)
    assert large <= 2.2 * small
    small, large = doubling(lambda n: body_event(ZOOM + "&amp;x=1" * n, "html"), 500)
    assert large <= 2.2 * small


def test_brackets_are_weighed_in_linear_work() -> None:
    unit = "https://example.com/wiki/A_(b)_[c]_{d}" + "()" * 30 + ") "
    small, large = doubling(lambda n: body_event(unit * n, "text"), 200, fn=explain)
    assert 1.8 * small <= large <= 2.2 * small


def test_raw_teams_context_quotes_are_followed_a_bounded_distance() -> None:
    unit = 'https://teams.microsoft.com/l/meetup-join/19:meeting_x@thread.v2/0?context={"Tid' + " " * 700
    small, large = doubling(lambda n: body_event(unit * n, "text"), 200, fn=explain)
    assert 1.8 * small <= large <= 2.2 * small


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("<wbr>" * (MEGABYTE // 5), id="a megabyte of wbr tags"),
        pytest.param("zoom.us/" * (MEGABYTE // 8), id="a megabyte of scheme-less hosts"),
        pytest.param(("a" * 250 + "zoom.us/ ") * (MEGABYTE // 259), id="long host-like runs before bare hosts"),
        pytest.param(('https://x/?context={"' + "a" * 30 + '" ') * (MEGABYTE // 55), id="unclosed raw contexts"),
        pytest.param("&" * MEGABYTE, id="a megabyte of ampersands"),
        pytest.param(("https://urldefense.com/v3/__" + "**A" * 40 + "__;!!$ ") * (MEGABYTE // 170), id="proofpoint"),
        pytest.param("https://x/" + "()" * (MEGABYTE // 2), id="a megabyte of bracket pairs in one link"),
        pytest.param("https://x/)" * (MEGABYTE // 11), id="links ended by closers they never opened"),
        pytest.param(("[https://x/](https://x/) " * (MEGABYTE // 25)), id="markdown links"),
        pytest.param("https://x/a<wbr>" * (MEGABYTE // 16), id="a link broken by a megabyte of wbr tags"),
    ],
)
def test_hostile_megabyte_bodies_are_handled_without_a_match(hostile: str) -> None:
    event = body_event(hostile)
    assert find_meeting_link(event) is None
    explain(event)
    assert work(find_meeting_link, event) < 2_000_000
