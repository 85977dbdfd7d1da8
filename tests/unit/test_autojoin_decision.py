"""The one join decision (shared/autojoin.py): every `why` code, the rules' validation, and what a Graph
event says of the user's part in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.autojoin import (
    CONSUMER_TENANT_ID,
    DEFAULT_RULES,
    Decision,
    ExternalInvites,
    InvalidRules,
    JoinRules,
    MeetingFacts,
    Override,
    Response,
    Why,
    combined_response,
    decide,
    event_facts,
    newest,
    parse_rules,
)
from shared.meeting_links import Platform
from shared.ports import Teammate, WorkspaceMeeting
from shared.teams import teammate_decision

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
GRACE = timedelta(minutes=5)
WORK_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def facts(response: Response = Response.ACCEPTED, *, external: bool = False, platform: str = "teams",
          start: datetime = NOW + timedelta(hours=1), series: bool = False, **kinds: bool) -> MeetingFacts:
    return MeetingFacts(platform=platform, start=start, response=response, external=external, series=series,
                        **kinds)


def rules(**changes: object) -> JoinRules:
    shape = {**DEFAULT_RULES.as_json(), **changes}
    return parse_rules(shape)


def run(f: MeetingFacts, r: JoinRules = DEFAULT_RULES, override: Override | None = None, *,
        active: bool = True, sent: bool = False, now: datetime = NOW) -> Decision:
    return decide(f, r, override, any_active_connection=active, agent_sent=sent, now=now, grace=GRACE)


SKIP_ONE = Override(join=False, series=False, set_at=NOW)
SKIP_SERIES = Override(join=False, series=True, set_at=NOW)
JOIN_ONE = Override(join=True, series=False, set_at=NOW)
JOIN_SERIES = Override(join=True, series=True, set_at=NOW)


# ---------------------------------------------------------------- the decision table
@pytest.mark.parametrize(("case", "decision", "expected"), [
    ("organised by the user", run(facts(Response.ORGANIZER)), (True, Why.RULES)),
    ("accepted", run(facts(Response.ACCEPTED)), (True, Why.RULES)),
    ("tentative", run(facts(Response.TENTATIVE)), (True, Why.RULES)),
    ("a colleague's invitation not answered", run(facts(Response.NOT_RESPONDED)), (True, Why.RULES)),
    ("declined", run(facts(Response.DECLINED)), (False, Why.RESPONSE_EXCLUDED)),
    ("declined, with 'send my agent in my place'",
     run(facts(Response.DECLINED), rules(responses=[*DEFAULT_RULES.as_json()["responses"], "declined"])),
     (True, Why.RULES)),
    ("tentative, rules only for accepted", run(facts(Response.TENTATIVE), rules(responses=["accepted"])),
     (False, Why.RESPONSE_EXCLUDED)),
    ("a stranger's invitation not answered", run(facts(Response.NOT_RESPONDED, external=True)),
     (False, Why.EXTERNAL_UNANSWERED)),
    ("a stranger's invitation accepted", run(facts(Response.ACCEPTED, external=True)), (True, Why.RULES)),
    ("a stranger's invitation tentatively accepted", run(facts(Response.TENTATIVE, external=True)),
     (True, Why.RULES)),
    ("a stranger's invitation not answered, external join",
     run(facts(Response.NOT_RESPONDED, external=True), rules(external_invites="join")), (True, Why.RULES)),
    ("a stranger's invitation accepted, external skip",
     run(facts(Response.ACCEPTED, external=True), rules(external_invites="skip")), (False, Why.EXTERNAL_SKIPPED)),
    ("an internal meeting, external skip", run(facts(), rules(external_invites="skip")), (True, Why.RULES)),
    ("a Zoom meeting, rules for Teams only", run(facts(platform="zoom"), rules(platforms=["teams"])),
     (False, Why.PLATFORM_EXCLUDED)),
    ("skipped by the user", run(facts(), override=SKIP_ONE), (False, Why.SKIPPED_BY_YOU)),
    ("its series skipped by the user", run(facts(series=True), override=SKIP_SERIES),
     (False, Why.SERIES_SKIPPED_BY_YOU)),
    ("declined but joined by the user", run(facts(Response.DECLINED), override=JOIN_ONE), (True, Why.JOINED_BY_YOU)),
    ("a stranger's unanswered series joined by the user",
     run(facts(Response.NOT_RESPONDED, external=True, series=True), override=JOIN_SERIES),
     (True, Why.JOINED_BY_YOU)),
    ("an excluded platform joined by the user", run(facts(platform="zoom"), rules(platforms=[]), JOIN_ONE),
     (True, Why.JOINED_BY_YOU)),
    ("no Active calendar holds it", run(facts(), active=False), (False, Why.CONNECTION_ERROR)),
    ("no Active calendar, even when joined by the user", run(facts(), override=JOIN_ONE, active=False),
     (False, Why.CONNECTION_ERROR)),
    ("started longer ago than the grace", run(facts(start=NOW - GRACE - timedelta(seconds=1))),
     (False, Why.TOO_LATE)),
    ("skipped by the user, in a calendar in error", run(facts(), override=SKIP_ONE, active=False),
     (False, Why.SKIPPED_BY_YOU)),
    ("declined, in a calendar in error", run(facts(Response.DECLINED), active=False),
     (False, Why.RESPONSE_EXCLUDED)),
    ("its series skipped, started long ago", run(facts(start=NOW - timedelta(hours=1)), override=SKIP_SERIES),
     (False, Why.SERIES_SKIPPED_BY_YOU)),
    ("started within the grace", run(facts(start=NOW - GRACE)), (True, Why.RULES)),
    ("started long ago but its agent was sent", run(facts(start=NOW - timedelta(minutes=20)), sent=True),
     (True, Why.RULES)),
    ("a private appointment with a Teams link", run(facts(Response.ORGANIZER, private=True)),
     (False, Why.PRIVATE_SKIPPED)),
    ("a private appointment, private events joined", run(facts(private=True), rules(private_events="join")),
     (True, Why.RULES)),
    ("a private appointment joined by the user", run(facts(private=True), override=JOIN_ONE),
     (True, Why.JOINED_BY_YOU)),
    ("a focus block a policy gave a Teams link", run(facts(Response.ORGANIZER, solo=True)),
     (False, Why.NO_OTHER_ATTENDEES)),
    ("a focus block, solo events joined", run(facts(solo=True), rules(solo_events="join")), (True, Why.RULES)),
    ("an all-day event with a link", run(facts(all_day=True)), (False, Why.ALL_DAY)),
    ("an all-day event, all-day events joined", run(facts(all_day=True), rules(all_day_events="join")),
     (True, Why.RULES)),
    ("an event shown as free", run(facts(free=True)), (True, Why.RULES)),
    ("an event shown as free, free events skipped", run(facts(free=True), rules(free_events="skip")),
     (False, Why.FREE_SKIPPED)),
    # When several rules skip a meeting, `why` names the first in the API's order.
    ("a Zoom, private, all-day, solo, free, declined meeting, rules for Teams only",
     run(facts(Response.DECLINED, platform="zoom", private=True, all_day=True, solo=True, free=True),
         rules(platforms=["teams"], free_events="skip")), (False, Why.PLATFORM_EXCLUDED)),
    ("private, all-day, solo, free and declined",
     run(facts(Response.DECLINED, private=True, all_day=True, solo=True, free=True), rules(free_events="skip")),
     (False, Why.PRIVATE_SKIPPED)),
    ("all-day, solo, free and declined",
     run(facts(Response.DECLINED, all_day=True, solo=True, free=True), rules(free_events="skip")),
     (False, Why.ALL_DAY)),
    ("solo, free and declined", run(facts(Response.DECLINED, solo=True, free=True), rules(free_events="skip")),
     (False, Why.NO_OTHER_ATTENDEES)),
    ("free, declined and external", run(facts(Response.DECLINED, external=True, free=True),
                                        rules(free_events="skip", external_invites="skip")),
     (False, Why.FREE_SKIPPED)),
    ("private and in a calendar in error", run(facts(private=True), active=False), (False, Why.PRIVATE_SKIPPED)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_decision_table(case, decision, expected):
    assert (decision.will_join, decision.why) == expected, case
    assert decision.text


def test_every_why_code_is_reachable_and_explained_in_its_own_words():
    seen = {
        run(facts()), run(facts(), override=JOIN_ONE), run(facts(), override=SKIP_ONE),
        run(facts(series=True), override=SKIP_SERIES), run(facts(Response.DECLINED)),
        run(facts(Response.NOT_RESPONDED, external=True)), run(facts(external=True), rules(external_invites="skip")),
        run(facts(platform="google_meet"), rules(platforms=["zoom"])), run(facts(), active=False),
        run(facts(start=NOW - timedelta(hours=1))),
        # A workspace that shares agents: a teammate owns this meeting's agent (shared/teams.py).
        teammate_decision(run(facts()), WorkspaceMeeting("ws", "k", owner="bob", members=(Teammate("bob", "b@x"),)),
                          "me"),
        run(facts(private=True)), run(facts(solo=True)), run(facts(all_day=True)),
        run(facts(free=True), rules(free_events="skip")),
    }
    assert {d.why for d in seen} == set(Why)
    assert len({d.text for d in seen}) == len(Why)


def test_the_texts_name_what_the_user_did_and_the_platform():
    assert "you declined" in run(facts(Response.DECLINED)).text
    assert "Google Meet" in run(facts(platform="google_meet"), rules(platforms=["teams"])).text
    assert "series" in run(facts(series=True), override=JOIN_SERIES).text
    assert "Accept it" in run(facts(Response.NOT_RESPONDED, external=True)).text


def test_only_the_users_wish_withdraws_an_agent_already_sent():
    assert run(facts(), override=SKIP_ONE, sent=True).withdraws_agent
    assert run(facts(Response.DECLINED), sent=True).withdraws_agent
    assert not run(facts(), active=False, sent=True).withdraws_agent
    assert not run(facts(start=NOW - timedelta(hours=1))).withdraws_agent
    assert not run(facts(), sent=True).withdraws_agent


def test_a_newer_rules_default_never_withdraws_an_agent_but_the_users_own_setting_does():
    assert not run(facts(private=True), sent=True).withdraws_agent
    assert not run(facts(solo=True), sent=True).withdraws_agent
    assert not run(facts(all_day=True), sent=True).withdraws_agent
    assert run(facts(private=True), rules(private_events="skip"), sent=True).withdraws_agent
    assert run(facts(free=True), rules(free_events="skip"), sent=True).withdraws_agent


def test_a_put_from_an_older_client_keeps_the_newer_rules_stored_values():
    stored = parse_rules({**DEFAULT_RULES.as_json(), "private_events": "join", "free_events": "skip"})
    older_client = {"responses": ["accepted"], "external_invites": "join", "platforms": ["teams"]}
    kept = parse_rules(older_client, stored)
    assert (kept.private_events.value, kept.free_events.value, kept.solo_events.value) == ("join", "skip", "skip")
    assert kept.explicit == {"private_events", "free_events", "solo_events", "all_day_events"}
    assert parse_rules(older_client).explicit == frozenset()
    with pytest.raises(InvalidRules, match="private_events must be one of join, skip"):
        parse_rules({**older_client, "private_events": "maybe"})


def test_the_newest_choice_wins_and_an_occurrences_own_wins_a_tie():
    earlier, later = NOW - timedelta(minutes=1), NOW
    assert newest([]) is None
    assert newest([Override(True, False, earlier), Override(False, True, later)]) == Override(False, True, later)
    assert newest([Override(False, True, earlier), Override(True, False, later)]) == Override(True, False, later)
    assert newest([Override(False, True, later), Override(True, False, later)]) == Override(True, False, later)


def test_a_meeting_in_two_calendars_counts_with_the_most_committed_answer():
    assert combined_response([Response.DECLINED, Response.ACCEPTED]) is Response.ACCEPTED
    assert combined_response([Response.NOT_RESPONDED, Response.TENTATIVE]) is Response.TENTATIVE
    assert combined_response([Response.ORGANIZER, Response.DECLINED]) is Response.ORGANIZER
    assert combined_response([]) is Response.NOT_RESPONDED


# ---------------------------------------------------------------- the rules as the API takes them
def test_the_defaults_are_the_contracts():
    assert DEFAULT_RULES.as_json() == {
        "responses": ["organizer", "accepted", "tentative", "not_responded"],
        "external_invites": "skip_unanswered",
        "platforms": ["teams", "zoom", "google_meet"],
        "join_lead_seconds": None,  # the API shows the service's AGENT_JOIN_LEAD_SECONDS
        "agent_name": None,
        "private_events": "skip", "solo_events": "skip", "all_day_events": "skip", "free_events": "join",
    }
    assert parse_rules(DEFAULT_RULES.as_json()) == DEFAULT_RULES


def test_rules_round_trip_in_a_fixed_order_whatever_order_they_came_in():
    r = parse_rules({"platforms": ["zoom", "teams"], "external_invites": "join",
                     "responses": ["declined", "organizer"]})
    assert r == JoinRules(frozenset({Response.DECLINED, Response.ORGANIZER}), ExternalInvites.JOIN,
                          frozenset({Platform.ZOOM, Platform.TEAMS}))
    assert r.as_json() == {"responses": ["organizer", "declined"], "external_invites": "join",
                           "platforms": ["teams", "zoom"], "join_lead_seconds": None, "agent_name": None,
                           "private_events": "skip", "solo_events": "skip", "all_day_events": "skip",
                           "free_events": "join"}
    assert parse_rules({"responses": [], "external_invites": "skip", "platforms": []}).as_json()["responses"] == []


@pytest.mark.parametrize(("body", "says"), [
    ("rules", "JSON object"),
    ([], "JSON object"),
    ({**DEFAULT_RULES.as_json(), "calendars": ["work"]}, "Unknown field 'calendars'"),
    ({"responses": ["accepted"], "platforms": ["teams"]}, "Missing field 'external_invites'"),
    ({**DEFAULT_RULES.as_json(), "responses": "accepted"}, "responses must be a list"),
    ({**DEFAULT_RULES.as_json(), "responses": ["maybe"]}, "responses holds 'maybe'"),
    ({**DEFAULT_RULES.as_json(), "responses": ["accepted", "accepted"]}, "lists 'accepted' twice"),
    ({**DEFAULT_RULES.as_json(), "responses": [None]}, "responses holds None"),
    ({**DEFAULT_RULES.as_json(), "platforms": ["webex"]}, "platforms holds 'webex'"),
    ({**DEFAULT_RULES.as_json(), "external_invites": "sometimes"}, "external_invites must be one of"),
    ({**DEFAULT_RULES.as_json(), "external_invites": True}, "external_invites must be one of"),
])
def test_rules_are_validated_strictly_with_a_reason(body, says):
    with pytest.raises(InvalidRules, match=says.replace("(", r"\(")):
        parse_rules(body)


# ---------------------------------------------------------------- what a Graph event says
def invitation(organizer: str | None, response: str = "notResponded", **extra: object) -> dict[str, object]:
    event: dict[str, object] = {"isOrganizer": False, "responseStatus": {"response": response,
                                                                       "time": "2026-11-20T10:00:00Z"}, **extra}
    if organizer is not None:
        event["organizer"] = {"emailAddress": {"name": "Someone", "address": organizer}}
    return event


@pytest.mark.parametrize(("graph", "ours"), [
    ("accepted", Response.ACCEPTED), ("tentativelyAccepted", Response.TENTATIVE),
    ("notResponded", Response.NOT_RESPONDED), ("declined", Response.DECLINED), ("none", Response.NOT_RESPONDED),
])
def test_graph_responses_map_to_the_apis(graph, ours):
    assert event_facts(invitation("bob@contoso.com", graph), "alice@contoso.com", WORK_TENANT).response is ours


def test_the_users_own_meeting_is_organised_by_them_and_never_external():
    own = {"isOrganizer": True, "responseStatus": {"response": "organizer"},
           "organizer": {"emailAddress": {"address": "alice@contoso.com"}}}
    assert event_facts(own, "alice@contoso.com", WORK_TENANT) == event_facts(
        {"responseStatus": {"response": "none"}}, "alice@contoso.com", WORK_TENANT)
    assert event_facts(own, "alice@contoso.com", WORK_TENANT).response is Response.ORGANIZER
    assert event_facts(own, "alice@contoso.com", WORK_TENANT).external is False


@pytest.mark.parametrize(("organizer", "account", "tenant", "external"), [
    ("bob@contoso.com", "alice@contoso.com", WORK_TENANT, False),
    ("BOB@Contoso.COM", "alice@contoso.com", WORK_TENANT, False),
    ("mallory@fabrikam.com", "alice@contoso.com", WORK_TENANT, True),
    ("someone@sub.contoso.com", "alice@contoso.com", WORK_TENANT, True),
    # Exchange shows colleagues' X500 addresses to their own organisation.
    ("/O=EXCHANGELABS/OU=EXCHANGE ADMINISTRATIVE GROUP/CN=RECIPIENTS/CN=BOB", "alice@contoso.com", WORK_TENANT, False),
    (None, "alice@contoso.com", WORK_TENANT, True),
    # A personal account has no organisation: anyone else is external, even on the same domain.
    ("carol@outlook.com", "bob@outlook.com", CONSUMER_TENANT_ID, True),
    ("bob@outlook.com", "bob@outlook.com", CONSUMER_TENANT_ID, False),
])
def test_external_means_organised_outside_the_accounts_email_domain(organizer, account, tenant, external):
    assert event_facts(invitation(organizer), account, tenant).external is external


def test_an_answer_given_wins_over_the_organiser_flag():
    declined_own = {"isOrganizer": True, "responseStatus": {"response": "declined"}}
    assert event_facts(declined_own, "alice@contoso.com", WORK_TENANT).response is Response.DECLINED
    organizer_not_own = invitation("bob@contoso.com", "organizer")
    assert event_facts(organizer_not_own, "alice@contoso.com", WORK_TENANT).response is Response.NOT_RESPONDED


def test_occurrences_carry_their_series():
    occurrence = invitation("bob@contoso.com", "accepted", seriesMasterId="AAMk-master", type="occurrence")
    assert event_facts(occurrence, "alice@contoso.com", WORK_TENANT).series_id == "AAMk-master"
    assert event_facts(invitation("bob@contoso.com"), "alice@contoso.com", WORK_TENANT).series_id is None
