"""A Graph event turned into one calendar copy of a meeting, or the reason it is none
(shared/calendar_events.py): the event's own platform first, the facts the privacy and intent rules
read, and the reasons "why isn't my meeting here?" gives. Events shaped as Graph returns them
(learn.microsoft.com/graph/api/resources/event) and as public reports show them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.calendar_events import MeetingCopy, NotAMeeting, Unlisted, copy_of

ME = "alice@contoso.com"
ZOOM_SIGNATURE = ("<p>Best,<br>Jane Doe | Account Executive<br>My Zoom room: "
                  "<a href=\"https://acme.zoom.us/my/jane.doe\">https://acme.zoom.us/my/jane.doe</a></p>")
TEAMS_BACKUP = ("<p>Other ways to join: <a href=\"https://teams.microsoft.com/l/meetup-join/19%3ameeting_Yjk1"
                "%40thread.v2/0?context=%7b%22Tid%22%3a%22t%22%2c%22Oid%22%3a%22o%22%7d\">Teams</a></p>")


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "AAMkAGI2", "subject": "Pipeline review", "type": "singleInstance", "isOrganizer": False,
        "iCalUId": "040000008200E00074C5B7101A82E00800000000D0E1F2",
        "responseStatus": {"response": "accepted", "time": "2026-12-01T10:00:00Z"},
        "organizer": {"emailAddress": {"name": "Jane Doe", "address": "jane@fabrikam.com"}},
        "attendees": [{"type": "required", "emailAddress": {"name": "Alice", "address": ME},
                       "status": {"response": "accepted", "time": "2026-12-01T10:00:00Z"}}],
        "start": {"dateTime": "2026-12-08T15:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-08T15:30:00.0000000", "timeZone": "UTC"},
        "sensitivity": "normal", "showAs": "busy", "isAllDay": False, "isCancelled": False,
        "onlineMeetingProvider": "unknown", "isOnlineMeeting": False, "onlineMeeting": None,
        "location": {"displayName": "", "locationType": "default"}, "locations": [],
        "body": {"contentType": "html", "content": "<p>Agenda</p>"},
    }
    base.update(fields)
    return base


def copy(ev: dict[str, Any]) -> MeetingCopy | NotAMeeting:
    return copy_of(ev, account_email=ME, tenant_id="contoso", why_not=True)


# ---------------------------------------------------------------- the event's own platform first
@pytest.mark.parametrize(("location", "platform"), [
    ({"displayName": "https://acme.webex.com/acme/j.php?MTID=m2f7c1d", "locationType": "default"}, "Webex"),
    ({"displayName": "Webex", "locationUri": "https://acme.webex.com/meet/jane.doe"}, "Webex"),
    ({"displayName": "https://global.gotomeeting.com/join/123456789"}, "GoTo Meeting"),
    ({"displayName": "https://meet.goto.com/123456789"}, "GoTo Meeting"),
    ({"displayName": "https://chime.aws/3417852906"}, "Amazon Chime"),
    ({"displayName": "https://bluejeans.com/123456789/0123"}, "BlueJeans"),
    ({"displayName": "https://join.skype.com/aBcDeFgHiJk"}, "Skype"),
])
def test_an_event_on_an_unsupported_platform_is_not_taken_for_a_zoom_or_teams_link_further_down(location, platform):
    found = copy(event(location=location, body={"contentType": "html", "content": ZOOM_SIGNATURE + TEAMS_BACKUP}))
    assert isinstance(found, NotAMeeting)
    assert (found.reason, found.platform) == (Unlisted.UNSUPPORTED_PLATFORM, platform)
    assert platform in found.text


def test_a_webex_link_among_several_locations_counts_too():
    ev = event(locations=[{"displayName": "Conference Room 4B", "locationType": "conferenceRoom"},
                          {"displayName": "https://acme.webex.com/acme/j.php?MTID=m1"}],
               body={"contentType": "html", "content": ZOOM_SIGNATURE})
    assert isinstance(copy(ev), NotAMeeting)


def test_a_skype_for_business_online_meeting_is_skype_whatever_the_body_says():
    ev = event(isOnlineMeeting=True, onlineMeetingProvider="skypeForBusiness",
               onlineMeeting={"joinUrl": "https://meet.lync.com/contoso/jane/ABC123"},
               body={"contentType": "html", "content": TEAMS_BACKUP})
    found = copy(ev)
    assert isinstance(found, NotAMeeting) and found.platform == "Skype"


@pytest.mark.parametrize("room", ["Webex Room Kit Pro - 4th floor", "Zoom Room 3 (Webex Board)",
                                  "BlueJeans Huddle; Chime corner", "room-webex@contoso.com"])
def test_a_room_merely_named_after_a_device_does_not_make_it_another_platforms_meeting(room):
    found = copy(event(location={"displayName": room, "locationType": "conferenceRoom"},
                       body={"contentType": "html", "content": TEAMS_BACKUP}))
    assert isinstance(found, MeetingCopy) and found.link.platform == "teams"


def test_a_teams_meeting_of_its_own_keeps_its_link_even_when_the_location_names_a_webex_url():
    ev = event(isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness",
               onlineMeeting={"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_QQ%40thread.v2/0"},
               location={"displayName": "https://acme.webex.com/meet/jane.doe"})
    found = copy(ev)
    assert isinstance(found, MeetingCopy) and found.link.platform == "teams"


# ---------------------------------------------------------------- why an event is not listed
@pytest.mark.parametrize(("body", "reason"), [
    ("<p>Lunch with the team at Luigi's</p>", Unlisted.NO_MEETING_LINK),
    ("Register: https://us02web.zoom.us/meeting/register/tZ0kd-mhqz4jGtY", Unlisted.LINK_NOT_JOINABLE),
    ("Recording: https://acme.zoom.us/rec/share/AbCdEf.123", Unlisted.LINK_NOT_JOINABLE),
    ("Options: https://teams.microsoft.com/meetingOptions/?organizerId=1&tenantId=2", Unlisted.LINK_NOT_JOINABLE),
    ("Join Webex: https://acme.webex.com/acme/j.php?MTID=m2f7c1d", Unlisted.UNSUPPORTED_PLATFORM),
    ("Get Teams: https://www.microsoft.com/microsoft-teams/download-app", Unlisted.NO_MEETING_LINK),
])
def test_why_an_event_is_not_a_meeting(body, reason):
    found = copy(event(body={"contentType": "text", "content": body}))
    assert isinstance(found, NotAMeeting) and found.reason is reason and found.text


def test_a_cancelled_meeting_says_so():
    found = copy(event(isCancelled=True, subject="Canceled: Pipeline review", body={"content": TEAMS_BACKUP}))
    assert isinstance(found, NotAMeeting) and found.reason is Unlisted.CANCELLED


# ---------------------------------------------------------------- the facts the rules read
def teams(**fields: Any) -> MeetingCopy:
    found = copy(event(body={"contentType": "html", "content": TEAMS_BACKUP}, **fields))
    assert isinstance(found, MeetingCopy)
    return found


def test_private_and_confidential_events_are_private_personal_and_normal_ones_are_not():
    assert teams(sensitivity="private").facts.private
    assert teams(sensitivity="confidential").facts.private
    assert not teams(sensitivity="personal").facts.private
    assert not teams().facts.private


def test_the_users_own_focus_block_with_only_a_room_is_solo_an_invitation_never_is():
    own = {"isOrganizer": True, "responseStatus": {"response": "organizer"},
           "organizer": {"emailAddress": {"address": ME}}}
    assert teams(**own, attendees=[]).facts.solo
    assert teams(**own, attendees=[{"type": "resource", "emailAddress": {"address": "room4b@contoso.com"}}]).facts.solo
    assert not teams(**own, attendees=[{"type": "required", "emailAddress": {"address": "bob@contoso.com"}}]).facts.solo
    assert not teams(attendees=[]).facts.solo  # someone else's invitation
    unknown = event(**own, body={"content": TEAMS_BACKUP})
    del unknown["attendees"]
    found = copy(unknown)
    assert isinstance(found, MeetingCopy) and not found.facts.solo  # Graph did not say: not taken for solo


def test_all_day_and_free_events_are_meetings_with_those_facts():
    assert teams(isAllDay=True, start={"dateTime": "2026-12-08T00:00:00.0000000", "timeZone": "UTC"},
                 end={"dateTime": "2026-12-09T00:00:00.0000000", "timeZone": "UTC"}).facts.all_day
    assert teams(showAs="free").facts.free
    assert not teams(showAs="tentative").facts.free
