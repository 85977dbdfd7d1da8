"""Support can tell a user why their Outlook event is, or is not, in Upcoming Meetings.

The help article: "My Outlook events aren't appearing — check that the calendar events contain a
Teams, Zoom, or Google Meet link." `python -m tools.explain_event` shows exactly that.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import shared.autojoin
from shared.meeting_links import Platform
from tools.explain_event import BAD_INPUT, FOUND, NOT_FOUND, PLATFORM_NAMES, main

REPO = Path(__file__).resolve().parents[2]
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OID = "4a6d1f3e-2b7c-4e8a-9f10-5c3d2e1b0a99"
TEAMS_JOIN = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjQ1ZTY4YzMtMjE2Yy00ZGY0LTk4MDgtNDFmZWU1ZmIwY2Iz%40thread.v2"
    f"/0?context=%7b%22Tid%22%3a%22{TID}%22%2c%22Oid%22%3a%22{OID}%22%7d"
)
SAFE_LINK = f"https://nam12.safelinks.protection.outlook.com/?url={quote(TEAMS_JOIN, safe='')}&data=05%7C02&reserved=0"

TEAMS_INVITATION = {
    "id": "AAMkAGI2TG93AAA=",
    "subject": "Quarterly planning",
    "body": {
        "contentType": "html",
        "content": f'<html><body><a href="{SAFE_LINK.replace("&", "&amp;")}">Click here to join the meeting</a>'
        ' <a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US">Learn More</a></body></html>',
    },
}
NO_LINK = {
    "id": "AAMkAGI2TG94AAA=",
    "subject": "Dentist",
    "location": {"displayName": "High Street"},
    "body": {
        "contentType": "text",
        "content": "Get the app: https://zoom.us/download and dial +1 800 555 0199",
    },
}


def run(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, data: Any, name: str = "event.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_a_found_link_is_shown_with_its_field_and_the_wrappers_removed(tmp_path: Path) -> None:
    code, out, err = run([write(tmp_path, TEAMS_INVITATION)])
    assert code == FOUND and err == ""
    assert "FOUND a Microsoft Teams meeting in body.content (html)" in out
    assert f"join URL:  {TEAMS_JOIN}" in out
    assert "unwrapped: Outlook Safe Links" in out
    assert "[rejected] body.content (html): https://aka.ms/JoinTeamsMeeting?omkt=en-US" in out
    assert "Microsoft help link, not a meeting" in out


def test_an_event_without_a_link_says_it_stays_out_of_upcoming_meetings_and_why(tmp_path: Path) -> None:
    code, out, _ = run([write(tmp_path, NO_LINK)])
    assert code == NOT_FOUND
    assert "NOT FOUND: no Microsoft Teams, Zoom or Google Meet link" in out and "Upcoming Meetings" in out
    assert "https://zoom.us/download" in out and "Zoom download page, not a meeting" in out
    assert "location.displayName" in out


def test_the_event_can_come_on_stdin() -> None:
    code, out, _ = run(["-"], stdin=json.dumps(TEAMS_INVITATION))
    assert code == FOUND and "FOUND" in out


def test_a_calendar_view_page_explains_every_event_and_fails_if_any_has_no_link(tmp_path: Path) -> None:
    page = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/calendarView",
        "value": [TEAMS_INVITATION, NO_LINK],
    }
    code, out, _ = run([write(tmp_path, page)])
    assert code == NOT_FOUND
    assert 'Event "Quarterly planning"' in out and 'Event "Dentist"' in out


def test_json_output_for_tools_and_tickets(tmp_path: Path) -> None:
    code, out, _ = run(["--json", write(tmp_path, TEAMS_INVITATION)])
    assert code == FOUND
    data = json.loads(out)
    [event] = data["events"]
    assert event["found"] is True
    assert event["link"] == {
        "platform": "teams",
        "url": TEAMS_JOIN,
        "key": "teams:19:meeting_NjQ1ZTY4YzMtMjE2Yy00ZGY0LTk4MDgtNDFmZWU1ZmIwY2Iz@thread.v2",
    }
    assert event["source"] == "body.content (html)"
    verdicts = {c["url"]: c["verdict"] for c in event["candidates"]}
    assert verdicts[TEAMS_JOIN] == "chosen"
    assert verdicts["https://aka.ms/JoinTeamsMeeting?omkt=en-US"] == "rejected"


def test_other_reasons_an_event_stays_out_are_mentioned(tmp_path: Path) -> None:
    cancelled = {**TEAMS_INVITATION, "isCancelled": True, "responseStatus": {"response": "declined"}}
    _, out, _ = run([write(tmp_path, cancelled)])
    assert "Also: the event is cancelled" in out
    assert "Agent:" not in out  # not a meeting at all, so no decision


# ---------------------------------------------------------------- will an agent join, and why
STRANGER_INVITE = {**TEAMS_INVITATION, "isOrganizer": False, "responseStatus": {"response": "notResponded"},
                   "organizer": {"emailAddress": {"name": "Mallory", "address": "mallory@fabrikam.com"}},
                   "start": {"dateTime": "2099-01-05T15:00:00.0000000", "timeZone": "UTC"},
                   "end": {"dateTime": "2099-01-05T15:30:00.0000000", "timeZone": "UTC"}}


def test_it_says_whether_the_agent_joins_and_why_with_the_services_own_decision(tmp_path: Path) -> None:
    event = write(tmp_path, STRANGER_INVITE)
    _, out, _ = run(["--account", "alice@contoso.com", event])
    assert "Agent: NO AGENT [external_unanswered] No agent yet: this invitation comes from outside your " \
           "organisation" in out
    _, out, _ = run(["--account", "alice@contoso.com", "--choice", "join", event])
    assert "Agent: JOINS [joined_by_you]" in out
    _, out, _ = run([event])  # without the account, nobody is external
    assert "Agent: JOINS [rules] Your agent joins by your rules: you haven't answered this invitation." in out
    assert "Pass --account" in out
    declined = write(tmp_path, {**STRANGER_INVITE, "responseStatus": {"response": "declined"}}, "declined.json")
    _, out, _ = run(["--account", "alice@contoso.com", "--json", declined])
    [explained] = json.loads(out)["events"]
    assert explained["agent"]["will_join"] is False and explained["agent"]["why"] == "response_excluded"


def test_the_users_rules_can_be_given_as_the_api_returns_them(tmp_path: Path) -> None:
    rules = {"responses": ["accepted"], "external_invites": "join", "platforms": ["zoom"]}
    _, out, _ = run(["--rules", write(tmp_path, rules, "rules.json"), write(tmp_path, STRANGER_INVITE)])
    assert "Agent: NO AGENT [platform_excluded] No agent: your join rules skip Microsoft Teams meetings." in out
    code, _, err = run(["--rules", write(tmp_path, {**rules, "platforms": ["webex"]}, "bad.json"),
                        write(tmp_path, STRANGER_INVITE)])
    assert code == BAD_INPUT and "the rules are not usable: platforms holds 'webex'" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param('{"subject": "x",', "not valid JSON (line 1", id="truncated json"),
        pytest.param("", "the input is empty", id="empty file"),
        pytest.param('"just a string"', "expected a Graph event", id="a json string"),
        pytest.param("[1, 2]", "expected a Graph event", id="a list of numbers"),
        pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="absurdly nested json"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "event.json"
    path.write_text(content, encoding="utf-8")
    code, out, err = run([str(path)])
    assert code == BAD_INPUT and out == ""
    assert err.startswith("explain_event: ") and message in err
    assert "Traceback" not in err


def test_a_missing_file_is_bad_input() -> None:
    code, _, err = run(["/nonexistent/event.json"])
    assert code == BAD_INPUT and "cannot read /nonexistent/event.json" in err


def test_a_file_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(b'{"subject": "\xff\xfe"}')
    code, _, err = run([str(path)])
    assert code == BAD_INPUT and "not UTF-8" in err


def test_a_byte_order_mark_from_a_windows_export_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TEAMS_INVITATION).encode())
    code, _, _ = run([str(path)])
    assert code == FOUND


def test_it_runs_as_a_module_from_the_repository_root(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-m", "tools.explain_event", write(tmp_path, TEAMS_INVITATION)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert found.returncode == FOUND, found.stderr
    broken = subprocess.run(
        [sys.executable, "-m", "tools.explain_event", "-"],
        cwd=REPO,
        input="not json",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert broken.returncode == BAD_INPUT
    assert "Traceback" not in broken.stderr and "not valid JSON" in broken.stderr


def test_the_tool_names_the_platforms_the_product_names() -> None:
    assert PLATFORM_NAMES is shared.autojoin.PLATFORM_NAMES
    assert set(PLATFORM_NAMES) == set(Platform)


def test_a_zoom_x_meeting_is_found_with_its_cloud(tmp_path: Path) -> None:
    zoom_x = {
        "id": "AAMkAGI2TG95AAA=",
        "subject": "Lehrstuhltreffen",
        "body": {
            "contentType": "text",
            "content": "Zoom-Meeting beitreten\nhttps://tu-darmstadt.zoom-x.de/j/61234567890?pwd=abc.1\n",
        },
    }
    code, out, _ = run([write(tmp_path, zoom_x)])
    assert code == FOUND
    assert "FOUND a Zoom meeting in body.content (text)" in out
    assert "join URL:  https://tu-darmstadt.zoom-x.de/j/61234567890?pwd=abc.1" in out
    assert "meeting:   zoom:x:61234567890" in out


def test_a_join_url_completed_from_a_later_copy_says_where_the_passcode_came_from(tmp_path: Path) -> None:
    twice = {
        "id": "AAMkAGI2TG96AAA=",
        "subject": "Design review",
        "location": {"displayName": "https://us02web.zoom.us/j/85012345678"},
        "body": {"contentType": "text", "content": "Join: https://us02web.zoom.us/j/85012345678?pwd=bWp5T1Vz.1"},
    }
    code, out, _ = run([write(tmp_path, twice)])
    assert code == FOUND
    assert "FOUND a Zoom meeting in location.displayName" in out
    assert "join URL:  https://us02web.zoom.us/j/85012345678?pwd=bWp5T1Vz.1" in out
    assert "[same meeting] body.content (text)" in out
    assert "Note: join URL completed with the passcode (pwd) from body.content (text)" in out
