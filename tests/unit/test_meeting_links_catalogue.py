"""A catalogue of invitation shapes seen in Outlook calendars, and the meeting link each one carries.

Each case is one Graph event as `calendarView` returns it. A case either names the meeting we must
find (platform, identity and, where it matters, the exact join URL) or says why there is none:
"events without a supported meeting URL will not appear in the Upcoming Meetings view".
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from shared.meeting_links import Platform, Verdict, explain, find_meeting_link

# --------------------------------------------------------------------------------------------
# Real-world shapes

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OID = "4a6d1f3e-2b7c-4e8a-9f10-5c3d2e1b0a99"
THREAD = "19:meeting_NjQ1ZTY4YzMtMjE2Yy00ZGY0LTk4MDgtNDFmZWU1ZmIwY2Iz@thread.v2"
THREAD_ENC = "19%3ameeting_NjQ1ZTY4YzMtMjE2Yy00ZGY0LTk4MDgtNDFmZWU1ZmIwY2Iz%40thread.v2"
CONTEXT_ENC = f"%7b%22Tid%22%3a%22{TID}%22%2c%22Oid%22%3a%22{OID}%22%7d"
CONTEXT_RAW = f'{{"Tid":"{TID}","Oid":"{OID}"}}'
TEAMS_JOIN = f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0?context={CONTEXT_ENC}"
TEAMS_KEY = f"teams:{THREAD}"

ZOOM_NUMBER = "85012345678"
ZOOM_PWD = "bWp5T1VzRXh3dE9aN2x6QzBGQ1pXZz09"
ZOOM_JOIN = f"https://us02web.zoom.us/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"
ZOOM_KEY = f"zoom:{ZOOM_NUMBER}"

MEET_CODE = "xkq-ngvz-pwe"
MEET_JOIN = f"https://meet.google.com/{MEET_CODE}"
MEET_KEY = f"google_meet:{MEET_CODE}"


def safelinks(url: str, region: str = "nam12") -> str:
    """Outlook (Defender for Office 365) Safe Links, as rewritten in a received invitation."""
    return (
        f"https://{region}.safelinks.protection.outlook.com/?url={quote(url, safe='')}"
        "&data=05%7C02%7Cjane.doe%40contoso.com%7C8f1e2d3c4b5a69788796a5b4c3d2e1f0%7C"
        f"{TID}%7C0%7C0%7C638512345678901234%7CUnknown%7CTWFpbGZsb3d8eyJWIjoiMC4wLjAwMDAiLCJQIjoiV2luMzIi"
        "LCJBTiI6Ik1haWwiLCJXVCI6Mn0%3D%7C0%7C%7C%7C&sdata=Xk2cJ9%2FqT0aBcDeFgHiJkLmNoPqRsTuVwXyZ%2B12345%3D"
        "&reserved=0"
    )


def teams_safelinks(url: str) -> str:
    """Safe Links as Teams applies them to links pasted into a meeting chat or invitation."""
    return (
        "https://statics.teams.cdn.office.net/evergreen-assets/safelinks/1/atp-safelinks.html"
        f"?url={quote(url, safe='')}&locale=en-us&dest=https%3A%2F%2Fteams.microsoft.com%2Fv2%2F"
        "&pc=4h3qM7HnLZ1%2BnBXPvcOWqvQm6D1q0Qq3"
    )


def proofpoint_v2(url: str) -> str:
    """URL Defense v2: percent-escapes written as -XX and / as _."""
    encoded = quote(url, safe="/").replace("-", "%2D").replace("_", "%5F").replace("%", "-").replace("/", "_")
    return (
        f"https://urldefense.proofpoint.com/v2/url?u={encoded}&d=DwMFaQ"
        "&c=euGZstcaTDllvimEN8b7jXrwqOf-v5A_CdpgnVfiiMM&r=7ZFMpqJ3uqKPJsH_0fFlzEOHIzxRJkTsB0vLqxo4EYk"
        "&m=Hq3nM8zK2yL5sR1vT0uW9xYzAbCdEfGh&s=pQ7rS2tU5vW8xY1zA4bC7dE0fG3hI6jK&e="
    )


def proofpoint_v3(url: str, unsafe: str = "%#$*!") -> str:
    """URL Defense v3: unsafe characters become `*` (or `**<run length>`), listed base64 after `__;`."""
    runs = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    body, replaced, i = [], [], 0
    while i < len(url):
        j = i
        while j < len(url) and url[j] in unsafe and j - i < 65:
            j += 1
        if j == i:
            body.append(url[i])
            i += 1
            continue
        run = url[i:j]
        replaced.append(run)
        body.append("*" if len(run) == 1 else "**" + runs[len(run) - 2])
        i = j
    encoded = base64.urlsafe_b64encode("".join(replaced).encode()).decode().rstrip("=")
    return f"https://urldefense.com/v3/__{''.join(body)}__;{encoded}!!BhdT!kq3n2Ce9p0gP1sV7h5A$"


def google_redirect(url: str) -> str:
    """Links in an invitation forwarded from Google Calendar."""
    return f"https://www.google.com/url?q={quote(url, safe='')}&sa=D&source=calendar&ust=1712345678901234&usg=AOvVaw3k"


def escaped(url: str) -> str:
    return url.replace("&", "&amp;").replace('"', "&quot;")


def teams_block(join_href: str, meeting_options: bool = True) -> str:
    """The block Outlook and Teams append to a Teams meeting invitation (HTML body)."""
    options = (
        f'<a href="https://teams.microsoft.com/meetingOptions/?organizerId={OID}&amp;tenantId={TID}'
        f"&amp;threadId=19_meeting_NjQ1ZTY4YzMtMjE2Yy00ZGY0LTk4MDgtNDFmZWU1ZmIwY2Iz@thread.v2&amp;messageId=0"
        '&amp;language=en-US" target="_blank">Meeting options</a>'
        if meeting_options
        else ""
    )
    return (
        '<div style="width:100%"><span style="white-space:nowrap;color:#5F5F5F;opacity:.36">'
        "________________________________________________________________________________</span></div>"
        '<div class="me-email-text" lang="en-US" style="color:#252424;font-family:\'Segoe UI\',Helvetica">'
        '<div style="margin-top:24px;margin-bottom:20px">'
        '<span style="font-size:24px">Microsoft Teams meeting</span></div>'
        '<div style="margin-bottom:20px"><div style="font-weight:bold"><span>Join on your computer, mobile app or '
        "room device</span></div>"
        f'<a href="{escaped(join_href)}" class="me-email-headline" target="_blank" rel="noreferrer noopener">'
        "Click here to join the meeting</a></div>"
        '<div style="margin-bottom:20px"><span data-tid="meeting-code">Meeting ID: <span>234 567 890 123</span></span>'
        "<br><span>Passcode: </span><span>Xa9bC3</span>"
        '<div><span><a href="https://www.microsoft.com/en-us/microsoft-teams/download-app" target="_blank">'
        "Download Teams</a> | "
        '<a href="https://www.microsoft.com/microsoft-teams/join-a-meeting" target="_blank">Join on the web</a>'
        "</span></div></div>"
        '<div style="margin-bottom:24px"><span>Or call in (audio only)</span><br>'
        '<a href="tel:+13236524587,,123456789#" target="_blank">+1 323-652-4587,,123456789#</a> United States, '
        'Los Angeles<br><a href="https://dialin.teams.microsoft.com/8551f4c1-bea3-441a-8738-69aa517a91c5?id=123456789"'
        ' target="_blank">Find a local number</a><br>Phone Conference ID: 123 456 789#</div>'
        f'<div><a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US" target="_blank">Learn More</a> | {options}</div>'
        "</div>"
    )


def html_body(*parts: str) -> dict[str, str]:
    inner = "".join(parts)
    return {
        "contentType": "html",
        "content": '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>'
        f"<body>{inner}</body></html>",
    }


def text_body(text: str) -> dict[str, str]:
    return {"contentType": "text", "content": text}


ZOOM_TEXT_INVITATION = f"""Jane Doe is inviting you to a scheduled Zoom meeting.

Join Zoom Meeting
{ZOOM_JOIN}

Meeting ID: 850 1234 5678
Passcode: 427193

---

One tap mobile
+16469313860,,{ZOOM_NUMBER}#,,,,*427193# US
+13017158592,,{ZOOM_NUMBER}#,,,,*427193# US (Washington DC)

Dial by your location
• +1 646 931 3860 US
• +1 301 715 8592 US (Washington DC)

Meeting ID: 850 1234 5678
Passcode: 427193

Find your local number: https://us02web.zoom.us/u/kdKx8ZQw1
"""


def google_invitation_html(join: str) -> str:
    return (
        "<div>Agenda: quarterly planning</div><div>-::~:~::~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~::~:~::-</div>"
        f'<div>Join with Google Meet: <a href="{escaped(join)}">{MEET_JOIN.removeprefix("https://")}</a></div>'
        "<div>Or dial: (US) +1 415-555-0132 PIN: 284 193 675#</div>"
        f'<div>More phone numbers: <a href="https://tel.meet/{MEET_CODE}?pin=2841936751234">'
        f"https://tel.meet/{MEET_CODE}?pin=2841936751234</a></div>"
        '<div>Learn more about Meet at: <a href="https://support.google.com/a/users/answer/9282720">'
        "https://support.google.com/a/users/answer/9282720</a></div>"
        "<div>Please do not edit this section.</div>"
    )


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "AAMkAGI2TG93AAA=",
        "subject": "Quarterly planning",
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "onlineMeeting": None,
        "onlineMeetingUrl": None,
        "location": {"displayName": "", "locationType": "default"},
        "locations": [],
        "body": text_body(""),
    }
    base.update(fields)
    return base


def teams_event(**fields: Any) -> dict[str, Any]:
    base = {
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        "onlineMeeting": {"joinUrl": TEAMS_JOIN},
        "location": {"displayName": "Microsoft Teams Meeting", "locationType": "default"},
        "body": html_body("<p>Let's review the roadmap.</p>", teams_block(TEAMS_JOIN)),
    }
    base.update(fields)
    return event(**base)


def light_meetings_coords(data: dict[str, str]) -> str:
    return quote(base64.b64encode(json.dumps(data).encode()).decode(), safe="")


# --------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Meeting:
    platform: Platform
    key: str
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class NoMeeting:
    because: str


Case = tuple[str, dict[str, Any], Meeting | NoMeeting]

TEAMS: list[Case] = [
    (
        "graph onlineMeeting.joinUrl of a teams meeting",
        teams_event(),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "onlineMeeting.joinUrl"),
    ),
    (
        "teams meetup-join in an html body of an invitation from another organisation",
        event(body=html_body("<p>Hi all</p>", teams_block(TEAMS_JOIN))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "body.content (html)"),
    ),
    (
        "outlook safe link around a teams meetup-join in an html body",
        event(body=html_body(teams_block(safelinks(TEAMS_JOIN)))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "outlook safe link from a european datacentre around a teams meetup-join",
        event(body=html_body(teams_block(safelinks(TEAMS_JOIN, region="eur03")))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams atp safe link around a teams meetup-join",
        event(body=html_body(teams_block(teams_safelinks(TEAMS_JOIN)))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "proofpoint v2 around an outlook safe link around a teams meetup-join",
        event(body=html_body(teams_block(proofpoint_v2(safelinks(TEAMS_JOIN))))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "proofpoint v3 around a teams meetup-join (every % replaced by *)",
        event(body=html_body(teams_block(proofpoint_v3(TEAMS_JOIN)))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "outlook safe link around proofpoint v3 around a teams meetup-join",
        event(body=html_body(teams_block(safelinks(proofpoint_v3(TEAMS_JOIN))))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams meetup-join written with upper-case percent escapes",
        event(onlineMeeting={"joinUrl": TEAMS_JOIN.replace("%3a", "%3A").replace("%40", "%40").replace("%7b", "%7B")}),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams meetup-join with an unencoded thread id and context in a text body",
        event(
            body=text_body(
                "Microsoft Teams meeting\nJoin on your computer, mobile app or room device\n"
                f"Click here to join the meeting: https://teams.microsoft.com/l/meetup-join/{THREAD}/0?context={CONTEXT_RAW}\n"
                "Meeting ID: 234 567 890 123\nPasscode: Xa9bC3\n"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams meetup-join with an entity-escaped raw context in an html body",
        event(
            body=html_body(
                f"<p>Join: https://teams.microsoft.com/l/meetup-join/{THREAD}/0?context="
                f"{CONTEXT_RAW.replace(chr(34), '&quot;')}</p>"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "text body with the join link in angle brackets after its label",
        event(
            body=text_body(
                "________________________________________________________________________________\n"
                "Microsoft Teams meeting\nJoin on your computer, mobile app or room device\n"
                f"Click here to join the meeting<{TEAMS_JOIN}>\n\nMeeting ID: 234 567 890 123\n"
                "Learn More<https://aka.ms/JoinTeamsMeeting?omkt=en-US> | Meeting options"
                f"<https://teams.microsoft.com/meetingOptions/?organizerId={OID}&tenantId={TID}>\n"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "body.content (text)"),
    ),
    (
        "teams launcher link with the meeting path in url=/_#/",
        event(
            onlineMeetingUrl=(
                f"https://teams.microsoft.com/dl/launcher/launcher.html?url=/_#/l/meetup-join/{THREAD}/0"
                f"?context={CONTEXT_ENC}&anon=true&type=meetup-join&deeplinkId=5044eb28-9d33-4309-bf23-3aa618a9e6b0"
                "&directDl=true&msLaunch=true&enableMobilePage=true&suppressPrompt=true"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams launcher link with a percent-encoded url parameter",
        event(
            body=text_body(
                "Join here: https://teams.microsoft.com/dl/launcher/launcher.html?url=%2F_%23%2Fl%2Fmeetup-join%2F"
                f"{quote(THREAD, safe='')}%2F0%3Fcontext%3D{quote(CONTEXT_ENC, safe='')}%26anon%3Dtrue"
                "&type=meetup-join&deeplinkId=0b1c2d3e&directDl=true&msLaunch=true"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams v2 web app link with the meeting in the fragment",
        event(
            location={
                "displayName": f"https://teams.microsoft.com/v2/?meetingjoin=true#/l/meetup-join/{THREAD}/0"
                f"?context={CONTEXT_ENC}&anon=true&deeplinkId=3c0a3c3e-8f1b-4e1a-9a6f-0d2b1d8c9e11"
            }
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "location.displayName"),
    ),
    (
        "teams light-meetings link with base64 coords",
        event(
            body=text_body(
                "https://teams.microsoft.com/light-meetings/launch?agent=web&version=25072001100&coords="
                + light_meetings_coords(
                    {"conversationId": THREAD, "tenantId": TID, "organizerId": OID, "messageId": "0"}
                )
                + "&deeplinkId=0ac0a241-1111-4111-8ddc-4a4b333dd286"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams short meeting-id link with passcode",
        event(
            body=html_body(
                '<p>Join: <a href="https://teams.microsoft.com/meet/23456789012345?p=Xa9bC3dE4fG5hI6jK7">'
                "https://teams.microsoft.com/meet/23456789012345?p=Xa9bC3dE4fG5hI6jK7</a></p>"
            )
        ),
        Meeting(
            Platform.TEAMS,
            "teams:meet:23456789012345",
            "https://teams.microsoft.com/meet/23456789012345?p=Xa9bC3dE4fG5hI6jK7",
        ),
    ),
    (
        "teams.live.com short link from a personal microsoft account",
        event(subject="Catch-up https://teams.live.com/meet/9371234567890?p=qHDqtvFSfIg1rT"),
        Meeting(
            Platform.TEAMS, "teams:meet:9371234567890", "https://teams.live.com/meet/9371234567890?p=qHDqtvFSfIg1rT"
        ),
    ),
    (
        "teams.live.com meetup-join keeps the consumer host",
        event(onlineMeetingUrl=TEAMS_JOIN.replace("teams.microsoft.com", "teams.live.com")),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN.replace("teams.microsoft.com", "teams.live.com")),
    ),
    (
        "teams.cloud.microsoft meetup-join",
        event(onlineMeeting={"joinUrl": TEAMS_JOIN.replace("teams.microsoft.com", "teams.cloud.microsoft")}),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN.replace("teams.microsoft.com", "teams.cloud.microsoft")),
    ),
    (
        "gcc high government cloud meetup-join keeps the gov host",
        event(onlineMeeting={"joinUrl": TEAMS_JOIN.replace("teams.microsoft.com", "gov.teams.microsoft.us")}),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN.replace("teams.microsoft.com", "gov.teams.microsoft.us")),
    ),
    (
        "dod cloud short link behind a government safe link",
        event(
            body=html_body(
                '<a href="https://gcc02.safelinks.protection.office365.us/?url=https%3A%2F%2Fdod.teams.microsoft.us'
                '%2Fmeet%2F24681357902%3Fp%3DgOvPa55&amp;data=05%7C02&amp;reserved=0">Join the meeting</a>'
            )
        ),
        Meeting(Platform.TEAMS, "teams:meet:24681357902", "https://dod.teams.microsoft.us/meet/24681357902?p=gOvPa55"),
    ),
    (
        "teams channel meeting is keyed by its message id",
        event(
            onlineMeeting={
                "joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3a4f6e1c2b8a9d4e7f9a0b1c2d3e4f5a6b%40thread.tacv2"
                f"/1712345678901?context=%7b%22Tid%22%3a%22{TID}%22%2c%22Oid%22%3a%22{OID}%22%7d"
            }
        ),
        Meeting(Platform.TEAMS, "teams:19:4f6e1c2b8a9d4e7f9a0b1c2d3e4f5a6b@thread.tacv2/1712345678901"),
    ),
    (
        "teams live event keeps its broadcast flag in the context",
        event(
            onlineMeeting={
                "joinUrl": f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0?context=%7b%22Tid%22%3a%22{TID}"
                f"%22%2c%22Oid%22%3a%22{OID}%22%2c%22IsBroadcastMeeting%22%3atrue%7d&btype=a&role=a"
            }
        ),
        Meeting(
            Platform.TEAMS,
            TEAMS_KEY,
            f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0?context=%7b%22Tid%22%3a%22{TID}%22%2c%22Oid"
            f"%22%3a%22{OID}%22%2c%22IsBroadcastMeeting%22%3atrue%7d",
        ),
    ),
    (
        "teams link text broken by <wbr> with no href",
        event(
            body=html_body(
                "<p>Join: https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjQ1ZTY4YzMtMjE2Yy00<wbr>ZGY0LTk4MDgt"
                f"NDFmZWU1ZmIwY2Iz%40thread.v2/0?context=%7b%22Tid%22%3a%22{TID}%22%2c<wbr/>%22Oid%22%3a%22{OID}%22%7d</p>"
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams meetup-join in locations[].locationUri",
        event(locations=[{"displayName": "Room 4.12"}, {"displayName": "Teams", "locationUri": TEAMS_JOIN}]),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "locations[1].locationUri"),
    ),
    (
        "teams meetup-join at the end of a sentence",
        event(body=text_body(f"Please use this link: {TEAMS_JOIN}. See you there!")),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "teams meetup-join without context still identifies the meeting",
        event(body=text_body(f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0")),
        Meeting(Platform.TEAMS, TEAMS_KEY, f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0"),
    ),
]

ZOOM: list[Case] = [
    (
        "zoom regional subdomain keeps the passcode",
        event(body=text_body(ZOOM_TEXT_INVITATION)),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "body.content (text)"),
    ),
    (
        "zoom vanity subdomain of a company",
        event(location={"displayName": f"https://contoso.zoom.us/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"}),
        Meeting(Platform.ZOOM, ZOOM_KEY, f"https://contoso.zoom.us/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"),
    ),
    (
        "zoomgov meeting is a separate cloud",
        event(body=text_body(f"Join ZoomGov Meeting\nhttps://www.zoomgov.com/j/1612345678?pwd={ZOOM_PWD}\n")),
        Meeting(Platform.ZOOM, "zoom:gov:1612345678", f"https://www.zoomgov.com/j/1612345678?pwd={ZOOM_PWD}"),
    ),
    (
        "zoom webinar with a registrant token",
        event(
            body=text_body(f"Join from PC: https://us06web.zoom.us/w/91234567890?tk=AbC-d_EfG.DQMAAA&pwd={ZOOM_PWD}")
        ),
        Meeting(
            Platform.ZOOM,
            "zoom:91234567890",
            f"https://us06web.zoom.us/w/91234567890?pwd={ZOOM_PWD}&tk=AbC-d_EfG.DQMAAA",
        ),
    ),
    (
        "zoom #success tail after joining once",
        event(location={"displayName": f"{ZOOM_JOIN}#success"}),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom calendar add-on tracking dropped whatever the parameter order",
        event(body=text_body(f"https://us02web.zoom.us/j/{ZOOM_NUMBER}?from=addon&omn=81234567890&pwd={ZOOM_PWD}")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom pwd after an html-escaped ampersand",
        event(
            body=html_body(f'<a href="https://us02web.zoom.us/j/{ZOOM_NUMBER}?from=addon&amp;pwd={ZOOM_PWD}">Join</a>')
        ),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom web client link becomes a join link",
        event(body=text_body(f"Browser: https://zoom.us/wc/join/{ZOOM_NUMBER}")),
        Meeting(Platform.ZOOM, ZOOM_KEY, f"https://zoom.us/j/{ZOOM_NUMBER}"),
    ),
    (
        "zoom personal meeting room",
        event(location={"displayName": "https://zoom.us/my/jane.doe"}),
        Meeting(Platform.ZOOM, "zoom:my:jane.doe", "https://zoom.us/my/jane.doe"),
    ),
    (
        "zoom.com domain",
        event(body=text_body(f"https://app.zoom.com/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}")),
        Meeting(Platform.ZOOM, ZOOM_KEY),
    ),
    (
        "zoom in the legacy onlineMeetingUrl field",
        event(onlineMeetingUrl=ZOOM_JOIN, isOnlineMeeting=True),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "onlineMeetingUrl"),
    ),
    (
        "zoom without scheme in the location",
        event(location={"displayName": f"us02web.zoom.us/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"}),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "location.displayName"),
    ),
    (
        "zoom behind a google calendar redirect in a forwarded invitation",
        event(body=html_body(f'<a href="{escaped(google_redirect(ZOOM_JOIN))}">{ZOOM_JOIN}</a>')),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom in parentheses",
        event(body=text_body(f"Dial-in details below (or join online: {ZOOM_JOIN})")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom behind proofpoint v2",
        event(body=html_body(f'<a href="{escaped(proofpoint_v2(ZOOM_JOIN))}">Join Zoom Meeting</a>')),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "zoom behind proofpoint v3 as written in the proofpoint documentation",
        event(body=text_body("https://urldefense.com/v3/__https://zoom.us/j/123456789?pwd=abc__;!!ABC!xyz$")),
        Meeting(Platform.ZOOM, "zoom:123456789", "https://zoom.us/j/123456789?pwd=abc"),
    ),
    (
        "zoom in a location field listing several locations",
        event(location={"displayName": f"Board room; {ZOOM_JOIN}; Building 2"}),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
]

GOOGLE_MEET: list[Case] = [
    (
        "google meet in an invitation sent from google calendar",
        event(body=html_body(google_invitation_html(MEET_JOIN))),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
    (
        "google meet without scheme in the subject",
        event(subject=f"Design review meet.google.com/{MEET_CODE}"),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN, "subject"),
    ),
    (
        "google meet with authuser and hs parameters dropped",
        event(body=text_body(f"{MEET_JOIN}?authuser=1&hs=122")),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
    (
        "google meet code typed in capitals",
        event(location={"displayName": "https://meet.google.com/XKQ-NGVZ-PWE"}),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
    (
        "google meet behind outlook safe links",
        event(body=html_body(f'<a href="{escaped(safelinks(MEET_JOIN))}">Join with Google Meet</a>')),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
    (
        "google meet behind a google calendar redirect",
        event(body=html_body(google_invitation_html(google_redirect(MEET_JOIN + "?hs=224")))),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
]

# Zoom's other clouds: Zoom X (Deutsche Telekom), ZoomGov, Zoom China. Each numbers its own meetings.
ZOOM_X_JOIN = f"https://tu-darmstadt.zoom-x.de/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"

ZOOM_CLOUDS: list[Case] = [
    (
        "zoom x link of a german organisation",
        event(
            body=text_body(f"Zoom-Meeting beitreten\n{ZOOM_X_JOIN}\n\nMeeting-ID: 850 1234 5678\nKenncode: 427193\n")
        ),
        Meeting(Platform.ZOOM, f"zoom:x:{ZOOM_NUMBER}", ZOOM_X_JOIN, "body.content (text)"),
    ),
    (
        "zoom x on its bare domain behind outlook safe links",
        event(
            body=html_body(
                f'<a href="{escaped(safelinks(f"https://zoom-x.de/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"))}">Beitreten</a>'
            )
        ),
        Meeting(Platform.ZOOM, f"zoom:x:{ZOOM_NUMBER}", f"https://zoom-x.de/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"),
    ),
    (
        "zoom x without scheme in the location",
        event(location={"displayName": f"tu-darmstadt.zoom-x.de/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"}),
        Meeting(Platform.ZOOM, f"zoom:x:{ZOOM_NUMBER}", ZOOM_X_JOIN, "location.displayName"),
    ),
    (
        "zoom x personal meeting room",
        event(location={"displayName": "https://uni-example.zoom-x.de/my/prof.mueller"}),
        Meeting(Platform.ZOOM, "zoom:x:my:prof.mueller", "https://uni-example.zoom-x.de/my/prof.mueller"),
    ),
    (
        "zoomgov agency subdomain",
        event(body=text_body(f"https://agency.zoomgov.com/j/1612345678?pwd={ZOOM_PWD}")),
        Meeting(Platform.ZOOM, "zoom:gov:1612345678", f"https://agency.zoomgov.com/j/1612345678?pwd={ZOOM_PWD}"),
    ),
    (
        "zoom china link",
        event(body=text_body(f"https://zoom.com.cn/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}")),
        Meeting(Platform.ZOOM, f"zoom:cn:{ZOOM_NUMBER}", f"https://zoom.com.cn/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}"),
    ),
    (
        "a zoom x link and a zoom.us link with the same number are different meetings",
        event(
            location={"displayName": f"https://zoom.us/j/{ZOOM_NUMBER}"},
            body=text_body(f"Backup: {ZOOM_X_JOIN}"),
        ),
        Meeting(Platform.ZOOM, ZOOM_KEY, f"https://zoom.us/j/{ZOOM_NUMBER}", "location.displayName"),
    ),
]

# Several copies of one meeting: the first in priority order is chosen, and completed with the
# credentials later copies carry (passcode, registrant token, Teams tenant and organiser).
ZOOM_NO_PWD = f"https://us02web.zoom.us/j/{ZOOM_NUMBER}"
TEAMS_NO_CONTEXT = f"https://teams.microsoft.com/l/meetup-join/{THREAD_ENC}/0"
SHORT_LINK = "https://teams.microsoft.com/meet/23456789012345"

BEST_COPY: list[Case] = [
    (
        "zoom link twice: the wrapped copy lost its passcode, the link text kept it",
        event(
            body=html_body(f'<p>Join Zoom Meeting<br><a href="{escaped(safelinks(ZOOM_NO_PWD))}">{ZOOM_JOIN}</a></p>')
        ),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "body.content (html)"),
    ),
    (
        "zoom location without passcode, the invitation body has it",
        event(location={"displayName": ZOOM_NO_PWD}, body=text_body(ZOOM_TEXT_INVITATION)),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "location.displayName"),
    ),
    (
        "zoom webinar registrant token from a later copy joins the passcode of the first",
        event(
            location={"displayName": f"https://us06web.zoom.us/w/91234567890?pwd={ZOOM_PWD}"},
            body=text_body("Your personal link: https://us06web.zoom.us/w/91234567890?tk=AbC-d_EfG.DQMAAA"),
        ),
        Meeting(
            Platform.ZOOM,
            "zoom:91234567890",
            f"https://us06web.zoom.us/w/91234567890?pwd={ZOOM_PWD}&tk=AbC-d_EfG.DQMAAA",
        ),
    ),
    (
        "the chosen copy's passcode wins over a different one later",
        event(location={"displayName": ZOOM_JOIN}, body=text_body(f"{ZOOM_NO_PWD}?pwd=SomethingElse")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "a passcode of another meeting is not borrowed",
        event(
            location={"displayName": ZOOM_NO_PWD},
            body=text_body(f"Last week: https://us02web.zoom.us/j/85099999999?pwd={ZOOM_PWD}"),
        ),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_NO_PWD),
    ),
    (
        "teams joinUrl without context, the invitation body carries the tenant",
        teams_event(onlineMeeting={"joinUrl": TEAMS_NO_CONTEXT}),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "onlineMeeting.joinUrl"),
    ),
    (
        "teams context from light-meetings coordinates completes a bare meetup-join",
        event(
            location={"displayName": TEAMS_NO_CONTEXT},
            body=text_body(
                "https://teams.microsoft.com/light-meetings/launch?agent=web&coords="
                + light_meetings_coords({"conversationId": THREAD, "tenantId": TID, "organizerId": OID})
            ),
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "location.displayName"),
    ),
    (
        "teams short link without passcode in the location, the body has it",
        event(
            location={"displayName": f"Teams {SHORT_LINK}"},
            body=html_body(f'<a href="{SHORT_LINK}?p=Xa9bC3dE4fG5hI6jK7">Join the meeting</a>'),
        ),
        Meeting(Platform.TEAMS, "teams:meet:23456789012345", f"{SHORT_LINK}?p=Xa9bC3dE4fG5hI6jK7"),
    ),
]

# Where a link ends in a plain-text body: as mail clients decide, not glued to what follows.
DELIMITERS: list[Case] = [
    (
        "markdown link with the url as its label",
        event(body=text_body(f"Join: [{ZOOM_JOIN}]({ZOOM_JOIN})")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "markdown link followed by text without a space",
        event(body=text_body(f"[Join Zoom Meeting]({ZOOM_JOIN})and dial in if you must")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "url in square brackets",
        event(body=text_body(f"Zoom: [{ZOOM_JOIN}]")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "url in parentheses glued to the next word",
        event(body=text_body(f"Online ({ZOOM_JOIN})Meeting ID: 850 1234 5678")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "slack style link with a label after a pipe",
        event(body=text_body(f"<{ZOOM_JOIN}|Join Zoom Meeting>")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "markdown code span",
        event(body=text_body(f"Paste `{ZOOM_JOIN}` into your browser")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "markdown bold link",
        event(body=text_body(f"**{ZOOM_JOIN}**")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "teams short link passcode in a markdown link",
        event(body=text_body("[Join](https://teams.live.com/meet/9371234567890?p=qHDqtvFSfIg1rT)!")),
        Meeting(
            Platform.TEAMS, "teams:meet:9371234567890", "https://teams.live.com/meet/9371234567890?p=qHDqtvFSfIg1rT"
        ),
    ),
    (
        "teams raw context inside a markdown link",
        event(
            body=text_body(
                f"[Join the meeting](https://teams.microsoft.com/l/meetup-join/{THREAD}/0?context={CONTEXT_RAW})."
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "a link with balanced parentheses before the meeting keeps them",
        event(body=text_body(f"About Zoom: https://en.wikipedia.org/wiki/Zoom_(software) Join: ({ZOOM_JOIN})")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
]

# Join URLs are stored as they are: absurd ones are turned down, never cut.
HUGE_PWD = "é" * 1000  # 6,000 characters once percent-encoded

SIZE: list[Case] = [
    (
        "zoom passcode of a thousand non-ascii characters",
        event(body=text_body(f"https://zoom.us/j/{ZOOM_NUMBER}?pwd={HUGE_PWD}")),
        NoMeeting("longer than 2048 characters"),
    ),
    (
        "an absurd copy does not hide the genuine one after it",
        event(body=text_body(f"https://us02web.zoom.us/j/{ZOOM_NUMBER}?pwd={HUGE_PWD} or {ZOOM_JOIN}")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "an absurd passcode from a later copy is not added",
        event(location={"displayName": ZOOM_NO_PWD}, body=text_body(f"{ZOOM_NO_PWD}?pwd={HUGE_PWD}")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_NO_PWD),
    ),
    (
        "teams context of absurd size",
        event(
            onlineMeeting={
                "joinUrl": f"{TEAMS_NO_CONTEXT}?context="
                + quote('{"Tid":"' + TID + '","Oid":"' + OID + '","Note":"' + "ü" * 300 + '"}', safe="")
            }
        ),
        NoMeeting("longer than 2048 characters"),
    ),
]

PRIORITY: list[Case] = [
    (
        "teams join button wins over a backup zoom link in the notes",
        teams_event(body=html_body(f"<p>If Teams fails use {ZOOM_JOIN}</p>", teams_block(TEAMS_JOIN))),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN, "onlineMeeting.joinUrl"),
    ),
    (
        "zoom link in the location wins over a teams link pasted in the notes",
        event(location={"displayName": ZOOM_JOIN}, body=text_body(f"Old link: {TEAMS_JOIN}")),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN, "location.displayName"),
    ),
    (
        "help links before the join link do not hide it",
        event(
            body=html_body(
                '<a href="https://aka.ms/JoinTeamsMeeting">Need help?</a> '
                '<a href="https://www.microsoft.com/microsoft-teams/download-app">Download</a> '
                f'<a href="{escaped(TEAMS_JOIN)}">Join</a>'
            )
        ),
        Meeting(Platform.TEAMS, TEAMS_KEY, TEAMS_JOIN),
    ),
    (
        "last week's zoom recording before this week's zoom meeting",
        event(
            body=text_body(
                "Recording of last session: https://us02web.zoom.us/rec/share/Xb8c-7yZk2wQ.abcDEF?startTime=1712345678000\n"
                f"This week: {ZOOM_JOIN}"
            )
        ),
        Meeting(Platform.ZOOM, ZOOM_KEY, ZOOM_JOIN),
    ),
    (
        "teams recording shared link before a google meet",
        event(
            body=text_body(
                "Last time: https://contoso-my.sharepoint.com/:v:/g/personal/jane_contoso_com/EbX1?e=Ab12Cd "
                f"Today: {MEET_JOIN}"
            )
        ),
        Meeting(Platform.GOOGLE_MEET, MEET_KEY, MEET_JOIN),
    ),
]

NOT_MEETINGS: list[Case] = [
    (
        "teams help and download links only",
        event(
            body=html_body(
                '<a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US">Learn More</a> '
                '<a href="https://www.microsoft.com/en-us/microsoft-teams/download-app">Download Teams</a>'
            )
        ),
        NoMeeting("Microsoft help link"),
    ),
    (
        "teams channel link",
        event(
            body=text_body(
                "Discuss in https://teams.microsoft.com/l/channel/19%3a4f6e1c2b8a9d4e7f9a0b1c2d3e4f5a6b%40thread.tacv2/"
                f"General?groupId=8a3b2c1d-0000-4000-8000-000000000002&tenantId={TID}"
            )
        ),
        NoMeeting("Teams channel"),
    ),
    (
        "teams meeting options link on its own",
        event(body=text_body(f"https://teams.microsoft.com/meetingOptions/?organizerId={OID}&tenantId={TID}")),
        NoMeeting("meeting options"),
    ),
    (
        "teams dial-in page",
        event(body=text_body("Find a local number: https://dialin.teams.microsoft.com/8551f4c1?id=123456789")),
        NoMeeting("dial-in"),
    ),
    (
        "bare teams domain",
        event(body=text_body("We use https://teams.microsoft.com for calls")),
        NoMeeting("without a meeting"),
    ),
    ("zoom download link", event(body=text_body("Get the app: https://zoom.us/download")), NoMeeting("download")),
    (
        "zoom recording link",
        event(body=text_body("https://us02web.zoom.us/rec/play/AbC-dEf.GhI?continueMode=true")),
        NoMeeting("recording"),
    ),
    (
        "zoom registration page",
        event(body=text_body("Register: https://us06web.zoom.us/webinar/register/WN_AbCdEfGhIjKlMnOp")),
        NoMeeting("registration"),
    ),
    ("zoom local numbers page", event(body=text_body("https://us02web.zoom.us/u/kdKx8ZQw1")), NoMeeting("dial-in")),
    ("bare zoom domain", event(location={"displayName": "zoom.us/"}), NoMeeting("bare Zoom")),
    (
        "zoom link with a too short meeting number",
        event(body=text_body("https://zoom.us/j/12345")),
        NoMeeting("meeting number"),
    ),
    (
        "google meet new-meeting link",
        event(body=text_body("Start one: https://meet.google.com/new")),
        NoMeeting("new meeting"),
    ),
    (
        "google meet dial-in page",
        event(body=text_body(f"https://tel.meet/{MEET_CODE}?pin=2841936751234")),
        NoMeeting("dial-in"),
    ),
    (
        "dial-in only conference call",
        event(
            body=html_body(
                '<p>Dial <a href="tel:+18005550199,,4433221#">+1 800 555 0199</a>, code 443 3221#</p>'
                "<p>International: +44 20 7946 0958</p>"
            )
        ),
        NoMeeting(""),
    ),
    (
        "look-alike of zoom x under another domain",
        event(body=text_body(f"https://zoom-x.de.example.com/j/{ZOOM_NUMBER}?pwd={ZOOM_PWD}")),
        NoMeeting("not a Teams, Zoom or Google Meet address"),
    ),
    (
        "look-alikes of zoom domains",
        event(
            body=text_body(
                f"https://zoomx.de/j/{ZOOM_NUMBER} https://notzoom.us/j/{ZOOM_NUMBER} "
                f"https://my-zoom-x.de/j/{ZOOM_NUMBER} https://zoom.us.example.com/j/{ZOOM_NUMBER} "
                f"https://zoom.com.cn.example.net/j/{ZOOM_NUMBER} https://zoomgov.co/j/{ZOOM_NUMBER}"
            )
        ),
        NoMeeting("not a Teams, Zoom or Google Meet address"),
    ),
    (
        "zoom x download page",
        event(body=text_body("https://zoom-x.de/download")),
        NoMeeting("download"),
    ),
    (
        "skype for business meeting",
        event(body=text_body("Join Skype Meeting https://meet.lync.com/contoso/jdoe/X7Y8Z9W0")),
        NoMeeting("Skype for Business"),
    ),
    (
        "webex meeting is not supported",
        event(body=text_body("https://contoso.webex.com/contoso/j.php?MTID=m1a2b3c4d5e6f")),
        NoMeeting("Webex"),
    ),
    (
        "mimecast protected link cannot be unwrapped",
        event(body=text_body("https://protect-eu.mimecast.com/s/AbCdEfGhIjKlMn?domain=zoom.us")),
        NoMeeting("Mimecast"),
    ),
    (
        "outlook safe link around a shared document",
        event(
            body=html_body(f'<a href="{escaped(safelinks("https://contoso.sharepoint.com/sites/x/doc.docx"))}">Doc</a>')
        ),
        NoMeeting("not a Teams, Zoom or Google Meet address"),
    ),
    ("event with no link at all", event(body=text_body("Lunch at the usual place")), NoMeeting("")),
    (
        "event with every field null",
        {"id": "x", "subject": None, "body": None, "location": None, "locations": None, "onlineMeeting": None},
        NoMeeting(""),
    ),
]

CATALOGUE = TEAMS + ZOOM + ZOOM_CLOUDS + GOOGLE_MEET + BEST_COPY + DELIMITERS + SIZE + PRIORITY + NOT_MEETINGS


@pytest.mark.parametrize(("graph_event", "expected"), [pytest.param(e, x, id=i) for i, e, x in CATALOGUE])
def test_invitation_shape(graph_event: dict[str, Any], expected: Meeting | NoMeeting) -> None:
    link = find_meeting_link(graph_event)
    story = explain(graph_event)
    assert story.link == link, "explain() and find_meeting_link() must agree"
    if isinstance(expected, NoMeeting):
        assert link is None, f"found {link}"
        if expected.because:
            reasons = [c.reason for c in story.candidates if c.verdict is Verdict.REJECTED]
            assert any(expected.because in r for r in reasons), reasons
        return
    assert link is not None, [(c.source, c.url, c.reason) for c in story.candidates]
    assert link.platform == expected.platform
    assert link.key == expected.key
    if expected.url is not None:
        assert link.url == expected.url
    if expected.source is not None:
        assert story.source == expected.source


def test_catalogue_ids_are_unique_and_cover_every_platform() -> None:
    ids = [i for i, _, _ in CATALOGUE]
    assert len(ids) == len(set(ids))
    platforms = {x.platform for _, _, x in CATALOGUE if isinstance(x, Meeting)}
    assert platforms == set(Platform)


def test_every_form_of_one_teams_meeting_gets_one_key() -> None:
    keys = {
        find_meeting_link(graph_event).key  # type: ignore[union-attr]
        for _, graph_event, expected in TEAMS
        if isinstance(expected, Meeting) and expected.key == TEAMS_KEY
    }
    assert keys == {TEAMS_KEY}


def test_the_join_url_never_carries_the_wrapper_or_tracking_noise() -> None:
    for _, graph_event, _expected in CATALOGUE:
        link = find_meeting_link(graph_event)
        if link is None:
            continue
        for noise in (
            "safelinks",
            "urldefense",
            "sdata",
            "from=addon",
            "authuser",
            "#success",
            "&amp;",
            "google.com/url",
        ):
            assert noise not in link.url, (noise, link.url)
