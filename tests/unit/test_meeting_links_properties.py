"""Properties of meeting-link recognition that must hold for every link, not just the catalogued ones.

- One meeting, one identity: wrapping a recognised link in Safe Links, Teams Safe Links, Proofpoint
  v2/v3 or a Google redirect (nested, in any order) and entity-escaping it in an HTML body changes
  neither its key nor its join URL.
- Surrounding prose and non-meeting links do not change what is found.
- Nothing JSON-shaped makes recognition raise.
- Every join URL is ASCII and at most ``MAX_JOIN_URL_CHARS`` long, whatever the event holds.
- A copy of a meeting without its credentials, seen first, is completed by a later copy.
- Brackets, Markdown and other text around a link do not change it.
- A host is Zoom exactly when it is an official Zoom domain or under one.
- The shortcuts taken for speed (quick URL split, the context as Teams writes it, skipping text
  that cannot carry a credential) agree with the general path.

Example counts are modest so the suite stays fast; `MEETING_LINKS_EXAMPLES=5000` searches harder.
"""

from __future__ import annotations

import base64
import json
import os
import re
import string
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared.meeting_links as module
from shared.meeting_links import MAX_JOIN_URL_CHARS, ZOOM_CLOUDS, explain, find_meeting_link, parse_join_url


def budget(examples: int) -> settings:
    examples = int(os.environ.get("MEETING_LINKS_EXAMPLES", examples))
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PROPERTY_SETTINGS = budget(75)

# --------------------------------------------------------------------------------------------
# Recognised links

B64 = string.ascii_letters + string.digits
guids = st.uuids().map(str)


@st.composite
def teams_meetup_join(draw: st.DrawFn) -> str:
    host = draw(
        st.sampled_from(
            [
                "teams.microsoft.com",
                "teams.live.com",
                "teams.cloud.microsoft",
                "gov.teams.microsoft.us",
                "dod.teams.microsoft.us",
            ]
        )
    )
    thread = "19:meeting_" + draw(st.text(alphabet=B64, min_size=40, max_size=64)) + "@thread.v2"
    tid, oid = draw(guids), draw(guids)
    context = f'{{"Tid":"{tid}","Oid":"{oid}"}}'
    if draw(st.booleans()):
        hexcase = draw(st.sampled_from([str.lower, str.upper]))
        path_thread = quote(thread, safe="")
        encoded_context = quote(context, safe="")
        if hexcase is str.lower:
            path_thread = path_thread.replace("%3A", "%3a").replace("%40", "%40")
            encoded_context = encoded_context.replace("%7B", "%7b").replace("%7D", "%7d").replace("%3A", "%3a")
        return f"https://{host}/l/meetup-join/{path_thread}/0?context={encoded_context}"
    return f"https://{host}/l/meetup-join/{quote(thread, safe=':@')}/0?context={quote(context, safe='')}"


@st.composite
def teams_short_link(draw: st.DrawFn) -> str:
    host = draw(st.sampled_from(["teams.microsoft.com", "teams.live.com", "gov.teams.microsoft.us"]))
    meeting_id = draw(st.text(alphabet=string.digits, min_size=10, max_size=15))
    passcode = draw(st.text(alphabet=B64, min_size=6, max_size=18))
    return f"https://{host}/meet/{meeting_id}?p={passcode}"


@st.composite
def zoom_link(draw: st.DrawFn) -> str:
    host = draw(st.sampled_from(["zoom.us", "us02web.zoom.us", "us06web.zoom.us", "contoso.zoom.us", "zoomgov.com"]))
    kind = draw(st.sampled_from(["j", "w"]))
    number = draw(st.integers(min_value=100_000_000, max_value=99_999_999_999))
    params = []
    if draw(st.booleans()):
        params.append("pwd=" + draw(st.text(alphabet=B64, min_size=6, max_size=32)) + draw(st.sampled_from(["", ".1"])))
    if draw(st.booleans()):
        params.append("from=addon")
    if kind == "w" and draw(st.booleans()):
        params.append("tk=" + draw(st.text(alphabet=B64 + "-_.", min_size=8, max_size=40)))
    params = draw(st.permutations(params))
    tail = draw(st.sampled_from(["", "#success"]))
    return f"https://{host}/{kind}/{number}" + ("?" + "&".join(params) if params else "") + tail


@st.composite
def google_meet_link(draw: st.DrawFn) -> str:
    letters = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=1)
    parts = [draw(st.text(alphabet=string.ascii_lowercase, min_size=n, max_size=n)) for n in (3, 4, 3)]
    del letters
    query = draw(st.sampled_from(["", "?authuser=0", "?hs=122&authuser=1", "?pli=1"]))
    return f"https://meet.google.com/{'-'.join(parts)}{query}"


meeting_links = st.one_of(teams_meetup_join(), teams_short_link(), zoom_link(), google_meet_link())

# --------------------------------------------------------------------------------------------
# Wrappers


def safelinks(url: str) -> str:
    return (
        f"https://eur03.safelinks.protection.outlook.com/?url={quote(url, safe='')}"
        "&data=05%7C02%7Cjane%40contoso.com%7C0%7C638512345678901234%7CUnknown&sdata=Xk2cJ9%2Fq%3D&reserved=0"
    )


def teams_safelinks(url: str) -> str:
    return (
        "https://statics.teams.cdn.office.net/evergreen-assets/safelinks/2/atp-safelinks.html"
        f"?url={quote(url, safe='')}&locale=en-gb&dest=https%3A%2F%2Fteams.microsoft.com%2Fv2%2F&pc=4h3q"
    )


def proofpoint_v2(url: str) -> str:
    encoded = quote(url, safe="/").replace("-", "%2D").replace("_", "%5F").replace("%", "-").replace("/", "_")
    return f"https://urldefense.proofpoint.com/v2/url?u={encoded}&d=DwMFaQ&c=euGZ&r=7ZFM&m=Hq3n&s=pQ7r&e="


def proofpoint_v3(url: str, unsafe: str = "%") -> str:
    runs = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    body, replaced, i = [], [], 0
    while i < len(url):
        j = i
        while j < len(url) and url[j] in unsafe and j - i < 65:
            j += 1
        if j == i:
            body.append(url[i])
            i += 1
            continue
        replaced.append(url[i:j])
        body.append("*" if j - i == 1 else "**" + runs[j - i - 2])
        i = j
    encoded = base64.urlsafe_b64encode("".join(replaced).encode()).decode().rstrip("=")
    return f"https://urldefense.com/v3/__{''.join(body)}__;{encoded}!!BhdT!kq3n2Ce9$"


def google_redirect(url: str) -> str:
    return f"https://www.google.com/url?q={quote(url, safe='')}&sa=D&source=calendar&usg=AOvVaw3k"


@st.composite
def proofpoint_v3_wrapper(draw: st.DrawFn) -> Any:
    extra = draw(st.text(alphabet="?=&:/._-", max_size=4))
    return lambda url: proofpoint_v3(url, unsafe="%*!" + extra)


wrappers = st.one_of(
    st.sampled_from([safelinks, teams_safelinks, proofpoint_v2, google_redirect]),
    proofpoint_v3_wrapper(),
)


def entity_escape(url: str) -> str:
    return url.replace("&", "&amp;").replace('"', "&quot;")


WORDS = [
    "Agenda:",
    "review",
    "the",
    "Q3",
    "roadmap.",
    "Docs:",
    "https://contoso.sharepoint.com/sites/Plan/Shared%20Documents/Roadmap.docx",
    "https://aka.ms/JoinTeamsMeeting?omkt=en-US",
    "(optional)",
    "Thanks,",
    "Jane",
    "—",
    "tel:+442079460958",
]

# --------------------------------------------------------------------------------------------
# Properties


@PROPERTY_SETTINGS
@given(url=meeting_links, layers=st.lists(wrappers, max_size=3), html=st.booleans())
def test_wrapping_and_escaping_keep_the_meeting_identity(url: str, layers: list[Any], html: bool) -> None:
    bare = parse_join_url(url)
    assert bare is not None, url
    wrapped = url
    for wrap in layers:
        wrapped = wrap(wrapped)
    if html:
        body = {
            "contentType": "html",
            "content": f'<p>Join: <a href="{entity_escape(wrapped)}">Join the meeting</a></p>',
        }
    else:
        body = {"contentType": "text", "content": f"Join: <{wrapped}>"}
    found = find_meeting_link({"subject": "Sync", "body": body})
    assert found is not None, wrapped
    assert found.key == bare.key
    assert found.url == bare.url
    assert found.platform == bare.platform


@PROPERTY_SETTINGS
@given(url=meeting_links, before=st.lists(st.sampled_from(WORDS), max_size=12), after=st.lists(st.sampled_from(WORDS)))
def test_surrounding_prose_and_other_links_do_not_change_what_is_found(
    url: str, before: list[str], after: list[str]
) -> None:
    content = " ".join([*before, url, *after])
    found = find_meeting_link({"body": {"contentType": "text", "content": content}})
    assert found == parse_join_url(url)


@PROPERTY_SETTINGS
@given(url=meeting_links)
def test_the_join_url_is_a_fixed_point(url: str) -> None:
    link = parse_join_url(url)
    assert link is not None
    again = parse_join_url(link.url)
    assert again == link


@PROPERTY_SETTINGS
@given(url=teams_meetup_join())
def test_percent_escape_case_does_not_change_a_teams_meeting(url: str) -> None:
    lower = parse_join_url(url)
    upper = parse_join_url(url.replace("%3a", "%3A").replace("%40", "%40").replace("%7b", "%7B").replace("%22", "%22"))
    assert lower is not None and upper is not None
    assert lower.key == upper.key and lower.url == upper.url


URLISH = [
    "https://",
    "http://",
    "teams.microsoft.com/l/meetup-join/",
    "19%3ameeting_",
    "%40thread.v2/0?context=",
    "%7b%22Tid%22",
    "{",
    '"',
    "}",
    "zoom.us/j/",
    "123456789",
    "?pwd=",
    "meet.google.com/",
    "abc-defg-hij",
    "safelinks.protection.outlook.com/?url=",
    "urldefense.com/v3/__",
    "__;",
    "!!",
    "*",
    "**A",
    "urldefense.proofpoint.com/v2/url?u=",
    "-3A__",
    "&amp;",
    "&quot;",
    "<wbr>",
    "<",
    ">",
    " ",
    "\n",
    "/light-meetings/launch?coords=",
    "eyJjb252ZXJzYXRpb25JZCI6",
    "%",
    "%2F",
    "/meet/",
    "?p=",
    ".",
    ")",
]
urlish_text = st.lists(st.one_of(st.sampled_from(URLISH), st.text(max_size=4)), max_size=40).map("".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | urlish_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
event_keys = st.sampled_from(["onlineMeeting", "onlineMeetingUrl", "location", "locations", "subject", "body"])
graph_like_events = st.dictionaries(event_keys, json_values, max_size=6) | st.fixed_dictionaries(
    {
        "onlineMeeting": st.one_of(st.none(), st.fixed_dictionaries({"joinUrl": json_values})),
        "location": st.fixed_dictionaries({"displayName": json_values, "locationUri": json_values}),
        "locations": st.lists(
            st.fixed_dictionaries({"displayName": json_values, "locationUri": json_values}), max_size=3
        ),
        "subject": json_values,
        "body": st.fixed_dictionaries({"contentType": st.sampled_from(["html", "text", 3]), "content": urlish_text}),
    }
)


@budget(200)
@given(event=graph_like_events | json_values)
def test_nothing_json_shaped_makes_recognition_raise(event: Any) -> None:
    link = find_meeting_link(event)
    story = explain(event)
    assert story.link == link
    if link is not None:
        assert link.url.startswith("https://")
        assert link.key.startswith(("teams:", "zoom:", "google_meet:"))


@budget(200)
@given(text=urlish_text)
def test_any_text_is_safe_to_parse_as_a_single_link(text: str) -> None:
    link = parse_join_url(text)
    if link is not None:
        assert parse_join_url(link.url) == link


# --------------------------------------------------------------------------------------------
# Round 2: size, best copy, delimiters, Zoom clouds, and the shortcuts taken for speed

long_texts = st.text(min_size=0, max_size=3000) | st.text(alphabet="éü€😀中", min_size=200, max_size=3000)


@st.composite
def links_with_absurd_credentials(draw: st.DrawFn) -> str:
    value = quote(draw(long_texts), safe="")
    shape = draw(st.sampled_from(["zoom", "short", "context"]))
    if shape == "zoom":
        return f"https://us02web.zoom.us/j/85012345678?pwd={value}&tk={quote(draw(long_texts), safe='')}"
    if shape == "short":
        return f"https://teams.microsoft.com/meet/23456789012345?p={value}"
    context = quote(json.dumps({"Tid": draw(guids), "Oid": draw(guids), "Note": draw(long_texts)}), safe="")
    return f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context={context}"


@budget(200)
@given(event=graph_like_events | json_values, absurd=st.lists(links_with_absurd_credentials(), max_size=3))
def test_every_join_url_is_ascii_and_within_the_documented_bound(event: Any, absurd: list[str]) -> None:
    for candidate in (event, {"location": {"displayName": " ".join(absurd)}, "body": {"content": " ".join(absurd)}}):
        link = find_meeting_link(candidate)
        if link is not None:
            assert link.url.isascii()
            assert len(link.url) <= MAX_JOIN_URL_CHARS


def without_credentials(url: str) -> str:
    return url.split("?", 1)[0]


@PROPERTY_SETTINGS
@given(url=st.one_of(teams_meetup_join(), teams_short_link(), zoom_link()), field_first=st.booleans())
def test_a_copy_without_credentials_first_is_completed_by_a_later_one(url: str, field_first: bool) -> None:
    full = parse_join_url(url)
    assert full is not None
    bare = without_credentials(url)
    if field_first:  # the credential-less copy in the location, the full one in the body
        event = {"location": {"displayName": bare}, "body": {"contentType": "text", "content": f"Join: {url}"}}
    else:  # both in the body, the credential-less one first
        event = {"body": {"contentType": "text", "content": f"{bare}\nor\n{url}"}}
    found = find_meeting_link(event)
    assert found == full
    assert explain(event).link == full


# Characters that end a link wherever they stand: text glued after them does not matter.
ENDED = ["[Join]({})", "[{0}]({0})", "({})", "[{}]", "<{}>", "<{}|Join the meeting>", "`{}`", '"{}"', "'{}'"]
# Markdown emphasis is only dropped at the end of a link, as mail clients and GFM autolinks do.
TRAILING = ["**{}**", "*{}*", "{}."]


@PROPERTY_SETTINGS
@given(
    url=meeting_links,
    shape_and_glue=st.one_of(
        st.tuples(st.sampled_from(ENDED), st.sampled_from(["", "and", ".", ",", "Meeting", ")", "]", "x=1"])),
        st.tuples(st.sampled_from(TRAILING), st.sampled_from(["", ".", ",", "!"])),
    ),
)
def test_delimiters_around_a_link_in_text_do_not_change_it(url: str, shape_and_glue: tuple[str, str]) -> None:
    shape, glued = shape_and_glue
    content = "Agenda first. " + shape.format(url) + glued + " Thanks"
    found = find_meeting_link({"body": {"contentType": "text", "content": content}})
    assert found == parse_join_url(url)


labels = st.sampled_from(["zoom", "zoom-x", "zoomgov", "de", "us", "com", "cn", "example", "acme", "us02web", "x"])


@budget(300)
@given(host=st.lists(labels, min_size=1, max_size=5).map(".".join))
def test_a_host_is_zoom_exactly_when_it_is_under_an_official_zoom_domain(host: str) -> None:
    link = parse_join_url(f"https://{host}/j/85012345678")
    official = [d for d in ZOOM_CLOUDS if host == d or host.endswith("." + d)]
    assert (link is not None) == bool(official), host
    if link is not None:
        cloud = ZOOM_CLOUDS[official[0]]
        assert link.key == (f"zoom:{cloud}:85012345678" if cloud else "zoom:85012345678")


# The shortcuts taken for speed read exactly what the general path reads.

URL_PIECES = ["https://", "http://", "HTTPS://", "zoom.us", "Teams.Microsoft.com", ":", "443", "/", "?", "#"]
URL_PIECES += ["@", "[", "]", "a", "%", "&", ".", "ß", "\u212a", "j/123", "=", "-", "_"]
url_pieces = st.sampled_from(URL_PIECES)


@budget(300)
@given(url=st.lists(url_pieces, max_size=10).map("".join))
def test_the_quick_split_agrees_with_urlsplit(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        expected = (parts, host) if host else None
    except ValueError:
        expected = None
    assert module._split(url) == expected


context_values = st.one_of(st.text(max_size=12), st.booleans(), st.integers(), st.floats(allow_nan=False))


@budget(300)
@given(context=st.dictionaries(st.text(max_size=8), context_values, max_size=4))
def test_the_context_is_written_as_json_quoted_would_write_it(context: dict[str, object]) -> None:
    expected = quote(json.dumps(context, separators=(",", ":"), ensure_ascii=True), safe="")
    expected = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), expected)
    assert module._context_query(tuple(context.items())) == expected


@budget(300)
@given(
    tid=st.text(alphabet=B64 + "-._~%", max_size=40),
    oid=st.text(alphabet=B64 + "-._~", max_size=40),
    upper=st.booleans(),
)
def test_the_context_teams_writes_is_read_as_json_would_read_it(tid: str, oid: str, upper: bool) -> None:
    encoded = quote(json.dumps({"Tid": tid, "Oid": oid}, separators=(",", ":")), safe="")
    encoded = encoded if upper else re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)
    assert module._teams_context(f"/0?context={encoded}") == json.loads(unquote(encoded))


@budget(300)
@given(raw=urlish_text)
def test_text_that_cannot_carry_a_credential_yields_no_credential(raw: str) -> None:
    if not module._may_carry_credentials(raw):
        join = module._evaluate(raw).join
        assert join is None or not join.values


@budget(300)
@given(
    query=st.lists(st.sampled_from(["pwd", "tk", "=", "&", "+", "%", "%70", "wd", "a", "%2", "Z", "é"]), max_size=12)
)
def test_the_query_is_read_as_parse_qsl_reads_it(query: list[str]) -> None:
    text = "".join(query)
    first = {name: value for name, value in reversed(parse_qsl(text))}
    expected = tuple((name, first[name]) for name in ("pwd", "tk") if first.get(name))
    assert module._query_values(text, ("pwd", "tk")) == expected


@PROPERTY_SETTINGS
@given(url=teams_meetup_join(), message=st.sampled_from(["0", "00", "1712345678901"]), dot=st.booleans())
def test_a_teams_join_url_as_teams_writes_it_is_read_as_the_general_path_reads_it(
    url: str, message: str, dot: bool
) -> None:
    link = parse_join_url(url)
    assert link is not None
    written = link.url.replace("/0?context=", f"/{message}?context=")
    if dot:  # a host with its final dot: not the shape, so the general path reads it
        written = written.replace(".com/", ".com./", 1)
    split = module._split(written)
    assert split is not None
    general, reason = module._recognise(split[0], split[1], written)
    assert module._evaluate(written) == (written, (), general, reason)


SKIP_HOSTS = ["zoom.us", "us02web.zoom.us", "zoom-x.de", "zoomgov.com", "teams.microsoft.com", "meet.google.com"]
SKIP_HOSTS += ["nam12.safelinks.protection.outlook.com", "www.google.com", "urldefense.com", "aka.ms", "x.com"]
SKIP_HOSTS += ["zoom.us.", "Zoom.US", "zoom.us:443", "user@zoom.us", "zoom&#46;us", "zo<wbr>om.us", "zoom\u200b.us"]
SKIP_PATHS = ["", "/", "/u/kdKx8", "/j/85012345678", "/J/85012345678", "/%6a/85012345678", "/&#106;/85012345678"]
SKIP_PATHS += ["/meetingOptions/", "/l/meetup-join/19%3ameeting_x%40thread.v2/0", "/_#/l/meetup-join/19:a@thread.v2/0"]
SKIP_PATHS += ["/xkq-ngvz-pwe", "/j<wbr>/850123456", "/u\u200b/x", "/url", "/v3/__https://zoom.us/j/123456789__;!!x$"]
SKIP_QUERIES = ["", "?pwd=abc", "?url=https%3A%2F%2Fzoom.us%2Fj%2F85012345678", "?url=https%3A%2F%2Fx.com%2Fa"]
SKIP_QUERIES += [
    "?q=https%3A%2F%2Fmeet.google.com%2Fxkq-ngvz-pwe",
    "?q=https%3A%2F%2Fx.com%2F",
    "?url=https%3A%2F%2Fx.com",
]
SKIP_QUERIES += [
    "?url=https%3A%2F%2Fx.zoom%2Eus%2F",
    "?url=https%3A%2F%2Fzoom.us&amp;data=1",
    "#/l/meetup-join/19:a@thread.v2/0",
]


# Proofpoint v2 (-XX escapes, _ for /) and v3 (the target as is, * for replaced characters).
SKIP_HOSTS += ["urldefense.proofpoint.com"]
SKIP_PATHS += ["/v2/url", "/v3/__https://x.com/a__;!!x$", "/v3/__https://x.zoom*us/j/123456789__;Lg!!x$"]
SKIP_PATHS += ["/v3/__https://x.com__;!!x$", "/v3/__https://zoom.us.example.com/j/123456789__;!!x$"]
SKIP_QUERIES += [
    "?u=https-3A__x.com_a&d=1",
    "?u=https-3A__zoom.us_j_85012345678-3Fpwd-3Dabc",
    "?u=https-3A__x.zoom-2Eus_",
]
SKIP_QUERIES += [
    "?u=https-3A__x.zoom-2Eus_j_85012345678-3Fpwd-3Dabc",
    "?u=https-3A__x.zoom&#46;us_j_85012345678",
    "?u=https-3A__teams.microsoft.com-3Fx",
    "?u=https-3A__x.com",
]


# Wrapper shapes whose parts belong together, so that each target form is met often.
TARGETS = [
    f"?url={quote(u, safe='')}"
    for u in ("https://zoom.us/j/85012345678?pwd=a", "https://x.com/a", "https://x.zoom.us/")
]
TARGETS += ["?url=https%3A%2F%2Fx.zoom%2Eus%2Fj%2F85012345678", "?url=https%3A%2F%2Fx.com%26%2346%3Bzoom.us%2F"]
WRAPPED = st.one_of(
    st.tuples(st.just("eur03.safelinks.protection.outlook.com"), st.sampled_from(["/", ""]), st.sampled_from(TARGETS)),
    st.tuples(
        st.just("www.google.com"), st.just("/url"), st.sampled_from([t.replace("?url=", "?q=") for t in TARGETS])
    ),
    st.tuples(
        st.just("urldefense.proofpoint.com"),
        st.just("/v2/url"),
        st.sampled_from([q for q in SKIP_QUERIES if q.startswith("?u=")]),
    ),
    st.tuples(st.just("urldefense.com"), st.sampled_from([p for p in SKIP_PATHS if p.startswith("/v3/")]), st.just("")),
).map("".join)
ANY_LINK = st.tuples(st.sampled_from(SKIP_HOSTS), st.sampled_from(SKIP_PATHS), st.sampled_from(SKIP_QUERIES)).map(
    "".join
)


@budget(300)
@given(
    links=st.lists(
        st.tuples(
            st.sampled_from(["https://", "http://", "HTTPS://"]),
            ANY_LINK | WRAPPED,
            st.sampled_from([" ", '"', ")", "(", "<br>", ".", "\n"]),
        ).map("".join),
        min_size=1,
        max_size=6,
    )
)
def test_links_the_quick_scan_steps_over_are_links_evaluate_turns_down(links: list[str]) -> None:
    text = "".join(links)
    kept = [raw for raw, too_long in module._scan(text, all_links=False)]
    for raw, too_long in module._scan(text):
        if raw in kept:
            kept.remove(raw)
        elif not too_long:
            assert module._evaluate(raw).join is None, raw
    event = {"body": {"contentType": "text", "content": text}}
    assert find_meeting_link(event) == explain(event).link


@PROPERTY_SETTINGS
@given(
    url=zoom_link(),
    host=st.sampled_from(["zoom.us", "acme.zoom-x.de", "zoom.com.cn", "zoom.us.", "x.com"]),
    tail=st.sampled_from(["", "&from=addon", "&omn=81234567890&from=addon", "&tk=AbC", "&%74k=AbC", "&t+k=1", "#ok"]),
)
def test_a_zoom_join_url_as_zoom_writes_it_is_read_as_the_general_path_reads_it(url: str, host: str, tail: str) -> None:
    link = parse_join_url(url)
    assert link is not None
    for written in (link.url + tail, link.url.replace(link.url.split("/")[2], host, 1) + tail):
        split = module._split(written)
        assert split is not None
        general, reason = module._recognise(split[0], split[1], written)
        if general is None or len(general.link.url) > MAX_JOIN_URL_CHARS:
            assert module._evaluate(written).join is None
        else:
            assert module._evaluate(written) == (written, (), general, reason)


@PROPERTY_SETTINGS
@given(url=google_meet_link(), variant=st.sampled_from(["", "/", "?authuser=0", "x", "#a"]), upper=st.booleans())
def test_a_meet_join_url_as_google_writes_it_is_read_as_the_general_path_reads_it(
    url: str, variant: str, upper: bool
) -> None:
    link = parse_join_url(url)
    assert link is not None
    written = link.url + variant
    written = written.upper().replace("HTTPS://MEET.GOOGLE.COM", "https://meet.google.com") if upper else written
    split = module._split(written)
    assert split is not None
    general, reason = module._recognise(split[0], split[1], written)
    assert module._evaluate(written) == (written, (), general, reason)
