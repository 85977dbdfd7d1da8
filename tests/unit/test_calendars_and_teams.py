"""The pure rules of calendar selection (shared/calendars.py) and of a workspace's shared agent
(shared/teams.py), as the help article and API.md describe them."""

from __future__ import annotations

import pytest

from shared.autojoin import Decision, Why
from shared.calendars import (
    InvalidCalendarChoice,
    LastCalendar,
    UnknownCalendar,
    choose,
    merged,
    parse_choice,
    without,
)
from shared.ports import CalendarInfo, CalendarSelection, Teammate, WorkspaceMeeting
from shared.teams import enlist, teammate_decision

DEFAULT, TEAM, PROJECTS = CalendarInfo("d", "Calendar", True), CalendarInfo("t", "Team", False), \
    CalendarInfo("p", "Projects", False)
ANN, BEN, CAT = Teammate("ann", "ann@x"), Teammate("ben", "ben@x"), Teammate("cat", "cat@x")


def selected(selection: CalendarSelection) -> set[str]:
    return {c.id for c in selection.calendars if c.selected}


def test_a_connection_without_a_stored_selection_reads_its_default_calendar_only():
    fresh = merged(None, [DEFAULT, TEAM], user_id="u", connection_id="c")
    assert selected(fresh) == {"d"} and fresh.default_selected and fresh.secondary == ()


def test_choices_survive_a_new_listing_and_new_calendars_start_unselected():
    chosen = choose(merged(None, [DEFAULT, TEAM], user_id="u", connection_id="c"), "t", True, "Team bot")
    again = merged(chosen, [DEFAULT, TEAM, PROJECTS], user_id="u", connection_id="c")
    assert selected(again) == {"d", "t"} and again.agent_name("t") == "Team bot"
    assert [c.id for c in again.secondary] == ["t"]


def test_the_last_selected_calendar_cannot_be_deselected():
    only_default = merged(None, [DEFAULT, TEAM], user_id="u", connection_id="c")
    with pytest.raises(LastCalendar):
        choose(only_default, "d", False, None)
    swapped = choose(choose(only_default, "t", True, None), "d", False, None)
    assert selected(swapped) == {"t"} and not swapped.default_selected
    with pytest.raises(UnknownCalendar):
        choose(only_default, "nope", True, None)


def test_a_selected_calendar_deleted_in_outlook_falls_out_and_the_default_comes_back_when_none_is_left():
    team_only = choose(choose(merged(None, [DEFAULT, TEAM], user_id="u", connection_id="c"), "t", True, None),
                       "d", False, None)
    assert selected(without(team_only, "t")) == {"d"}
    assert selected(merged(team_only, [DEFAULT], user_id="u", connection_id="c")) == {"d"}


@pytest.mark.parametrize("body", [None, [], {"selected": "yes"}, {"selected": True, "agent_name": ""},
                                  {"selected": True, "agent_name": "x" * 65}, {"selected": True, "colour": "red"},
                                  {"selected": True, "agent_name": "bell\x07"}])
def test_a_calendar_choice_the_api_refuses(body):
    with pytest.raises(InvalidCalendarChoice):
        parse_choice(body)


def test_a_calendar_choice_the_api_takes():
    assert parse_choice({"selected": False}) == (False, None, False)
    assert parse_choice({"selected": True, "agent_name": None}) == (True, None, True)
    assert parse_choice({"selected": True, "agent_name": " Notes "}) == (True, "Notes", True)


def test_a_calendar_choice_that_leaves_the_agent_name_out_keeps_the_name_already_chosen():
    named = choose(merged(None, [DEFAULT, TEAM], user_id="u", connection_id="c"), "t", True, "Team bot")
    selected_again, name, given = parse_choice({"selected": True})
    assert choose(named, "t", selected_again, name, keep_name=not given).agent_name("t") == "Team bot"
    assert choose(named, "t", True, None).agent_name("t") is None  # an explicit null clears it


def test_the_join_rules_and_a_calendar_take_an_agent_name_by_the_same_rule():
    from shared.autojoin import parse_rules
    base = {"responses": ["organizer"], "external_invites": "join", "platforms": ["teams"]}
    assert parse_rules({**base, "agent_name": " Notes "}).agent_name == parse_choice(
        {"selected": True, "agent_name": " Notes "})[1] == "Notes"


def test_the_first_teammate_whose_rules_join_owns_the_agent_and_later_ones_are_served():
    row = enlist(enlist(WorkspaceMeeting("w", "k"), ANN, True), BEN, True)
    assert row.owner == "ann" and [m.user_id for m in row.members] == ["ann", "ben"]
    assert enlist(row, BEN, True) == row  # at-least-once: enlisting again changes nothing


def test_when_the_owner_leaves_the_next_teammate_takes_over_and_with_nobody_left_there_is_no_owner():
    row = enlist(enlist(enlist(WorkspaceMeeting("w", "k"), ANN, True), BEN, True), CAT, True)
    handed = enlist(row, ANN, False)
    assert (handed.owner, handed.handovers) == ("ben", 1)
    assert enlist(handed, CAT, False).owner == "ben"  # a teammate who is not the owner leaving changes nothing
    empty = enlist(enlist(handed, BEN, False), CAT, False)
    assert (empty.owner, empty.members) == ("", ())


def test_a_teammates_agent_is_what_the_others_are_told():
    own = Decision(True, Why.RULES, "Your agent joins by your rules.")
    row = enlist(enlist(WorkspaceMeeting("w", "k"), ANN, True), BEN, True)
    told = teammate_decision(own, row, "ben")
    assert (told.will_join, told.why) == (False, Why.TEAMMATE_AGENT) and "ann@x" in told.text
    assert teammate_decision(own, row, "ann") == own
    skipped = Decision(False, Why.SKIPPED_BY_YOU, "No agent: you chose to skip this meeting.")
    assert teammate_decision(skipped, row, "ben") == skipped  # their own choice stays their reason


# ---------------------------------------------------------------- secondary calendars read on a schedule
def test_connections_reading_a_second_calendar_are_synced_by_their_own_walk_and_never_twice_at_once(caplog):
    """Graph notifies changes in the default calendar only (FACTS.md): the `read_secondary_calendars`
    walk queues a sync of every Active connection reading another calendar, through the queued-sync
    marker (one at a time, notifications never muted); the others cost nothing; a row it cannot read
    is logged and skipped."""
    import logging

    from shared.connections import Plan
    from shared.platform_auth import User
    from shared.ports import CalendarChoice
    from shared.services.fanout import SECONDARY
    from shared.services.sync import SECONDARY_CALENDARS
    from tests.unit.conftest import build_world

    world = build_world()
    ann, ben, cat = (User(f"user-{n}", Plan.PRO) for n in ("ann", "ben", "cat"))
    team = world.connect_account(ann, (("uid-ann.tid"), "tid", "ann@contoso.com")).connection
    plain = world.connect_account(ben, (("uid-ben.tid"), "tid", "ben@contoso.com")).connection
    broken = world.connect_account(cat, (("uid-cat.tid"), "tid", "cat@contoso.com")).connection
    world.selections.put(CalendarSelection(team.id, ann.id, (CalendarChoice("d", "Calendar", True, True),
                                                            CalendarChoice("t", "Team", False, True))))
    world.selections.put(CalendarSelection(plain.id, ben.id, (CalendarChoice("d", "Calendar", True, True),
                                                             CalendarChoice("t", "Team", False, False))))
    original = world.selections.get
    world.selections.get = lambda cid: (_ for _ in ()).throw(ValueError("bad row")) if cid == broken.id \
        else original(cid)
    world.jobs.syncs.clear()

    def walk() -> None:
        world.services.fanout.start(SECONDARY)
        while world.pages.queued:
            world.services.fanout.page(world.pages.queued.pop(0))

    with caplog.at_level(logging.ERROR):
        walk()
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(team.id, SECONDARY_CALENDARS)]
    assert "walk_row_failed" in [getattr(r, "event", None) for r in caplog.records]
    walk()  # the first is still queued: nothing more
    assert len(world.jobs.syncs) == 1
    world.sync.sync(world.jobs.syncs.pop()[0])  # it runs (and reads the team calendar)
    walk()
    assert [(j.connection_id, j.reason) for j, _ in world.jobs.syncs] == [(team.id, SECONDARY_CALENDARS)]
