"""Properties of meeting-link recognition that must hold for every link, not just the catalogued ones.

- One meeting, one identity: wrapping a recognised link in Safe Links, Teams Safe Links, Proofpoint
  v2/v3 or a Google redirect (nested, in any order) and entity-escaping it in an HTML body changes
  neither its key nor its join URL.
- Surrounding prose and non-meeting links do not change what is found.
- Nothing JSON-shaped makes recognition raise.

Example counts are modest so the suite stays fast; `MEETING_LINKS_EXAMPLES=5000` searches harder.
"""

from __future__ import annotations

import base64
import os
import string
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.meeting_links import explain, find_meeting_link, parse_join_url


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
