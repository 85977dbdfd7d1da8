""""Why isn't my meeting here?" (GET /api/meetings/unlisted): the next 7 days' events that are not in
Upcoming Meetings, each with the reason the sync had, read from Graph on demand."""

from __future__ import annotations

from shared.services.unlisted import UnlistedService
from tests.unit.test_meeting_identity import graph_event, in_calendar
from tests.unit.test_sync_and_deploy import ALICE, PERSONAL, WORK, connected

WEBEX = {"displayName": "https://acme.webex.com/acme/j.php?MTID=m2f7c1d"}
ZOOM = "https://us02web.zoom.us/j/85551234567?pwd=Zz9"


class NoChoices:
    """No calendar chosen on any connection: each reads its default calendar."""

    def get(self, connection_id: str) -> None:
        return None

    def put(self, selection):  # pragma: no cover - not written by this service
        raise AssertionError("the unlisted events never change the selection")

    def remove(self, connection_id: str) -> None:  # pragma: no cover
        raise AssertionError("the unlisted events never change the selection")


def service(world) -> UnlistedService:
    return UnlistedService(connections=world.connections, tokens=world.tokens, calendar=world.calendar,
                           clock=world.clock, selections=NoChoices())


def test_each_event_left_out_of_upcoming_meetings_is_listed_with_its_reason_sorted_by_start(world):
    connected(world, WORK)
    in_calendar(world, WORK[2],
                graph_event(world, "lunch", uid="u1", minutes=30, subject="Team lunch", body="At Luigi's"),
                graph_event(world, "webex", uid="u2", minutes=90, subject="Vendor call", location=WEBEX,
                            body=f"My Zoom: {ZOOM}"),
                graph_event(world, "register", uid="u3", minutes=60, subject="Webinar",
                            body="Register: https://us02web.zoom.us/webinar/register/WN_abc"),
                graph_event(world, "off", uid="u4", minutes=120, subject="Planning", body=ZOOM, isCancelled=True),
                graph_event(world, "listed", uid="u5", minutes=45, subject="Standup", body=ZOOM),
                graph_event(world, "next-week", uid="u6", minutes=8 * 24 * 60, subject="Far off", body="x"),
                graph_event(world, "over", uid="u7", minutes=-60, subject="Ended", body="x"))
    report = service(world).unlisted(ALICE.id)
    assert [(e.title, e.reason) for e in report.events] == [
        ("Team lunch", "no_meeting_link"), ("Webinar", "link_not_joinable"),
        ("Vendor call", "unsupported_platform"), ("Planning", "cancelled")]
    assert all(e.reason_text and e.accounts == (WORK[2],) for e in report.events)
    assert "Webex" in report.events[2].reason_text
    assert report.unread == []


def test_a_search_keeps_the_titles_holding_every_word_and_one_event_in_two_accounts_is_one_entry(world):
    connected(world, WORK)
    connected(world, PERSONAL)
    lunch = graph_event(world, "lunch", uid="same", subject="Quarterly Team Lunch", body="no link")
    other = graph_event(world, "other", uid="x", subject="Team offsite", body="no link")
    in_calendar(world, WORK[2], lunch, other)
    svc = service(world)
    first = svc.unlisted(ALICE.id, "team LUNCH")
    in_calendar(world, PERSONAL[2], {**lunch, "id": "lunch-b"})
    both = svc.unlisted(ALICE.id, "lunch")
    assert [e.title for e in first.events] == ["Quarterly Team Lunch"]
    assert [(e.title, e.accounts) for e in both.events] == [("Quarterly Team Lunch", (WORK[2], PERSONAL[2]))]


def test_a_calendar_that_cannot_be_read_now_is_named_not_silently_left_out(world):
    connected(world, WORK)
    world.calendar.mailbox_unavailable = "MailboxNotEnabledForRESTAPI"
    report = service(world).unlisted(ALICE.id)
    assert (report.events, report.unread) == ([], [WORK[2]])
