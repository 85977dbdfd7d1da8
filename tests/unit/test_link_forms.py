"""Link forms added in round four, each with its rule and, when refused, its reason: a Meet link copied
from an instant meeting's address bar, Zoom's app protocol link, a Zoom host's start link (joined by
its number, its host token never kept or shown), a Teams town hall decided the same way in every form."""

from __future__ import annotations

import io
import json

import pytest

from shared.calendar_events import NotAMeeting, Unlisted, copy_of
from shared.meeting_links import Platform, explain, find_meeting_link, parse_join_url
from tools.explain_event import main as explain_event

ZAK = "eyJ0eXAiOiJKV1QiLCJzdiI6IjAwMDAwMSIsInptX3NrbSI6InptX28ybSIsImFsZyI6IkhTMjU2In0.SECRETHOSTTOKEN"


def body(text: str) -> dict[str, object]:
    return {"subject": "Sync", "body": {"contentType": "text", "content": text},
            "start": {"dateTime": "2026-12-08T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-08T15:30:00", "timeZone": "UTC"}}


@pytest.mark.parametrize("copied", [
    "https://meet.google.com/abc-defg-hij?authuser=0",
    "https://meet.google.com/abc-defg-hij?pli=1&authuser=1",
    "https://meet.google.com/abc-defg-hij?hs=187&authuser=0&ijlm=1712345678901",
    "meet.google.com/abc-defg-hij?authuser=2",
])
def test_a_meet_link_copied_from_an_instant_meetings_address_bar_is_that_meeting(copied):
    link = find_meeting_link(body(f"Jump in: {copied}"))
    assert link is not None
    assert (link.platform, link.url, link.key) == (Platform.GOOGLE_MEET, "https://meet.google.com/abc-defg-hij",
                                                   "google_meet:abc-defg-hij")


@pytest.mark.parametrize(("app_link", "url"), [
    ("zoommtg://zoom.us/join?action=join&confno=85551234567&pwd=Zz9kQ", "https://zoom.us/j/85551234567?pwd=Zz9kQ"),
    ("zoommtg://acme.zoom.us/join?confno=85551234567", "https://acme.zoom.us/j/85551234567"),
    ("zoomus://zoom.us/join?confno=8555123456&zc=0", "https://zoom.us/j/8555123456"),
])
def test_the_zoom_apps_protocol_link_is_joined_on_the_web_by_its_number(app_link, url):
    link = find_meeting_link(body(f"Open in the app: {app_link}"))
    assert link is not None and (link.url, link.platform) == (url, Platform.ZOOM)
    assert parse_join_url(app_link) == link


def test_a_zoom_app_link_without_a_meeting_number_says_why():
    story = explain(body("zoommtg://zoom.us/join?action=join"))
    assert story.link is None
    assert [c.reason for c in story.candidates] == ["Zoom app link without a meeting number"]


def test_a_zoom_start_link_is_joined_by_its_meeting_number_and_its_host_token_is_dropped():
    ev = body(f"Start the meeting: https://us02web.zoom.us/s/85551234567?zak={ZAK}\n"
              "Attendees: https://us02web.zoom.us/j/85551234567?pwd=Zz9kQ")
    link = find_meeting_link(ev)
    assert link is not None
    assert link.url == "https://us02web.zoom.us/j/85551234567?pwd=Zz9kQ"  # the passcode from the attendee copy
    only_start = find_meeting_link(body(f"https://us02web.zoom.us/s/85551234567?zak={ZAK}&status=success"))
    assert only_start is not None and only_start.url == "https://us02web.zoom.us/j/85551234567"


def test_the_host_token_never_shows_in_an_explanation_or_the_support_tool():
    ev = body(f"Start: https://us02web.zoom.us/s/85551234567?zak={ZAK} or "
              f"https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Fus02web.zoom.us%2Fs%2F85551234567"
              f"%3Fzak%3D{ZAK}&data=05")
    story = explain(ev)
    assert story.candidates and all("SECRETHOSTTOKEN" not in c.found + c.url + c.reason for c in story.candidates)
    out = io.StringIO()
    explain_event(["--json", "-"], stdin=io.StringIO(json.dumps(ev)), stdout=out, stderr=io.StringIO())
    assert "SECRETHOSTTOKEN" not in out.getvalue() and "[removed]" in out.getvalue()


def test_a_zoom_start_link_without_a_number_says_why_not():
    story = explain(body("https://us02web.zoom.us/s/?zak=abc"))
    assert story.link is None
    assert "start link without a meeting number" in story.candidates[0].reason
    assert "abc" not in story.candidates[0].found


TOWN_HALL_LONG = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NTg0ZTY4%40thread.v2/0?context=%7b%22Tid"
                  "%22%3a%22t%22%2c%22Oid%22%3a%22o%22%2c%22IsBroadcastMeeting%22%3atrue%7d&btype=a&role=a")
TOWN_HALL_JOIN = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NTg0ZTY4%40thread.v2/0?context=%7b%22Tid"
                  "%22%3a%22t%22%2c%22Oid%22%3a%22o%22%2c%22IsBroadcastMeeting%22%3atrue%7d")


@pytest.mark.parametrize("form", [
    TOWN_HALL_LONG,
    "https://teams.microsoft.com/dl/launcher/launcher.html?url=%2F_%23%2Fl%2Fmeetup-join%2F19%3Ameeting_NTg0ZTY4"
    "%40thread.v2%2F0%3Fcontext%3D%257b%2522Tid%2522%253a%2522t%2522%252c%2522Oid%2522%253a%2522o%2522%252c%2522"
    "IsBroadcastMeeting%2522%253atrue%257d%26btype%3Da%26role%3Da&type=meetup-join&deeplinkId=x&directDl=true",
    "https://teams.microsoft.com/v2/?meetingjoin=true#/l/meetup-join/19%3ameeting_NTg0ZTY4%40thread.v2/0?context="
    "%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%2c%22IsBroadcastMeeting%22%3atrue%7d&btype=a&role=a&anon=true",
    "https://teams.microsoft.com/light-meetings/launch?agent=web&version=23&coords=eyJjb252ZXJzYXRpb25JZCI6IjE5Om1l"
    "ZXRpbmdfTlRnMFpUWTRAdGhyZWFkLnYyIiwidGVuYW50SWQiOiJ0Iiwib3JnYW5pemVySWQiOiJvIiwiaXNCcm9hZGNhc3RNZWV0aW5nIjp0"
    "cnVlfQ%3d%3d",
])
def test_a_teams_town_hall_is_the_same_meeting_with_the_same_join_link_in_every_form(form):
    link = parse_join_url(form)
    assert link is not None
    assert (link.key, link.url) == ("teams:19:meeting_NTg0ZTY4@thread.v2", TOWN_HALL_JOIN)


def test_a_town_halls_event_page_is_no_join_link_and_says_so():
    page = "https://events.teams.microsoft.com/event/1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718@72f988bf"
    found = copy_of(body(f"Event details: {page}"), account_email="a@contoso.com", tenant_id="t", why_not=True)
    assert isinstance(found, NotAMeeting) and found.reason is Unlisted.LINK_NOT_JOINABLE
    assert "event page" in found.text
    both = find_meeting_link(body(f"Event details: {page}\nJoin: {TOWN_HALL_LONG}"))
    assert both is not None and both.url == TOWN_HALL_JOIN


def test_the_support_tool_says_an_event_on_webex_is_not_listed_for_the_zoom_link_in_its_signature():
    ev = {**body("Best, Jane | My Zoom: https://acme.zoom.us/j/85551234567"),
          "location": {"displayName": "https://acme.webex.com/acme/j.php?MTID=m2f7c1d"}}
    out = io.StringIO()
    status = explain_event(["-"], stdin=io.StringIO(json.dumps(ev)), stdout=out, stderr=io.StringIO())
    assert status == 1
    assert "NOT LISTED: It is a Webex meeting" in out.getvalue()
