"""Will the user's agent join this meeting, and why? The one decision. Pure domain.

`decide` turns the facts of a meeting (the user's RSVP, whether someone outside their organisation
organised it, its platform, whether it is part of a series), the user's join rules, their newest
per-meeting or per-series choice, whether any calendar holding it is Active, and the time into
`Decision(will_join, why, text)`. The sync schedules with it, the deployer re-checks it right before
it calls the agent API, Upcoming Meetings shows it and `tools.explain_event` prints it: there is no
other place that says whether an agent joins.

The contract is `../shared/API.md`, "Join rules" and "Meetings" (the `why` codes). Graph shapes relied
on: `responseStatus.response` is one of none, organizer, tentativelyAccepted, accepted, declined,
notResponded; `isOrganizer`; `organizer.emailAddress.address`; `seriesMasterId`
(https://learn.microsoft.com/graph/api/resources/event, .../responsestatus)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from shared.meeting_links import Platform
from shared.platforms import PLATFORM_NAMES

# Microsoft's tenant id for personal accounts (Outlook.com, Hotmail, Live): every MSA's `tid`.
# https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference ("tid")
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"


class Response(StrEnum):
    """The user's RSVP to a meeting, in the API's words."""

    ORGANIZER = "organizer"
    ACCEPTED = "accepted"
    TENTATIVE = "tentative"
    NOT_RESPONDED = "not_responded"
    DECLINED = "declined"


# Most committed first: a meeting in two calendars counts with the user's most committed answer.
RESPONSES: tuple[Response, ...] = tuple(Response)
_GRAPH_RESPONSES = {
    "organizer": Response.ORGANIZER,
    "accepted": Response.ACCEPTED,
    "tentativelyAccepted": Response.TENTATIVE,
    "notResponded": Response.NOT_RESPONDED,
    "declined": Response.DECLINED,
}
_RESPONSE_WORDS = {
    Response.ORGANIZER: "you organise this meeting",
    Response.ACCEPTED: "you accepted this meeting",
    Response.TENTATIVE: "you tentatively accepted this meeting",
    Response.NOT_RESPONDED: "you haven't answered this invitation",
    Response.DECLINED: "you declined this meeting",
}


class ExternalInvites(StrEnum):
    """What to do with meetings organised outside the connected account's email domain."""

    JOIN = "join"
    SKIP_UNANSWERED = "skip_unanswered"  # no agent until the user accepts (or tentatively accepts)
    SKIP = "skip"


MAX_JOIN_LEAD_SECONDS = 900
MAX_AGENT_NAME_CHARS = 64


class EventChoice(StrEnum):
    """What to do with one kind of event (private, solo, all-day, free)."""

    JOIN = "join"
    SKIP = "skip"


# Rules added after the first three that choose per kind of event, each with its default: a PUT may
# leave them out (they keep their stored value), and a row stored before they existed reads them as
# the default.
NEWER_RULES: Mapping[str, EventChoice] = {
    "private_events": EventChoice.SKIP,
    "solo_events": EventChoice.SKIP,
    "all_day_events": EventChoice.SKIP,
    "free_events": EventChoice.JOIN,
}


@dataclass(frozen=True)
class JoinRules:
    """The user's join rules (../shared/API.md, "Join rules"). `explicit` names the per-kind rules
    (`NEWER_RULES`) the user has stored themselves; the others hold their defaults, and a default
    never recalls an agent deployed before it existed (`Decision.withdraws_agent`)."""

    responses: frozenset[Response]
    external_invites: ExternalInvites
    platforms: frozenset[Platform]
    # How long before the start the agent is sent (None: the service's AGENT_JOIN_LEAD_SECONDS), and
    # the name it shows in the meeting (None: the agent platform's default).
    join_lead_seconds: int | None = None
    agent_name: str | None = None
    private_events: EventChoice = EventChoice.SKIP
    solo_events: EventChoice = EventChoice.SKIP
    all_day_events: EventChoice = EventChoice.SKIP
    free_events: EventChoice = EventChoice.JOIN
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def as_json(self) -> dict[str, Any]:
        """The API's shape, lists in a fixed order."""
        return {
            "responses": [r.value for r in RESPONSES if r in self.responses],
            "external_invites": self.external_invites.value,
            "platforms": [p.value for p in Platform if p in self.platforms],
            "join_lead_seconds": self.join_lead_seconds,
            "agent_name": self.agent_name,
            **{name: getattr(self, name).value for name in NEWER_RULES},
        }

    def lead_seconds(self, default: int) -> int:
        return default if self.join_lead_seconds is None else self.join_lead_seconds


DEFAULT_RULES = JoinRules(
    responses=frozenset({Response.ORGANIZER, Response.ACCEPTED, Response.TENTATIVE, Response.NOT_RESPONDED}),
    external_invites=ExternalInvites.SKIP_UNANSWERED,
    platforms=frozenset(Platform),
)


_E = TypeVar("_E", Response, Platform)


class InvalidRules(ValueError):
    """A rules object the API refuses (400 `invalid_rules`); the message says what is wrong, `reasons`
    lists every problem found."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or [message]


_RULE_FIELDS = ("responses", "external_invites", "platforms")
# Added later: a PUT from a client written before them may leave them out (they keep their value).
_LATER_FIELDS = ("join_lead_seconds", "agent_name", *NEWER_RULES)


def parse_rules(body: object, current: JoinRules | None = None) -> JoinRules:
    """The whole rules object as PUT: every original field present, nothing unknown, no repeated
    values; fields added later (`_LATER_FIELDS`) may be left out and keep their value in `current`
    (else their default). Raises InvalidRules naming the problem(s)."""
    if not isinstance(body, Mapping):
        raise InvalidRules("Rules must be a JSON object with responses, external_invites and platforms")
    unknown = sorted(set(body) - set(_RULE_FIELDS) - set(_LATER_FIELDS))
    if unknown:
        raise InvalidRules(f"Unknown field {unknown[0]!r}; rules have {', '.join(_RULE_FIELDS + _LATER_FIELDS)}")
    missing = [f for f in _RULE_FIELDS if f not in body]
    if missing:
        raise InvalidRules(f"Missing field {missing[0]!r}: send the whole rules object")
    responses = _values(body["responses"], "responses", Response)
    platforms = _values(body["platforms"], "platforms", Platform)
    external = body["external_invites"]
    if not isinstance(external, str) or external not in ExternalInvites._value2member_map_:
        raise InvalidRules(f"external_invites must be one of {_listed(ExternalInvites)}")
    base = current or DEFAULT_RULES
    problems: list[str] = []
    lead = body.get("join_lead_seconds", base.join_lead_seconds)
    if lead is not None and (isinstance(lead, bool) or not isinstance(lead, int)
                             or not 0 <= lead <= MAX_JOIN_LEAD_SECONDS):
        problems.append(f"join_lead_seconds must be a whole number of seconds from 0 to {MAX_JOIN_LEAD_SECONDS}")
    name = body.get("agent_name", base.agent_name)
    if name is not None:
        name = agent_name(name)
        if name is None:
            problems.append(AGENT_NAME_RULE)
    kinds: dict[str, EventChoice] = {}
    for rule in NEWER_RULES:
        value = body.get(rule, getattr(base, rule).value)
        if not isinstance(value, str) or value not in EventChoice._value2member_map_:
            problems.append(f"{rule} must be one of {_listed(EventChoice)}")
            continue
        kinds[rule] = EventChoice(value)
    if problems:
        raise InvalidRules("; ".join(problems), problems)
    explicit = base.explicit | {rule for rule in NEWER_RULES if rule in body}
    return JoinRules(frozenset(responses), ExternalInvites(external), frozenset(platforms),
                     join_lead_seconds=lead, agent_name=name, explicit=frozenset(explicit), **kinds)


AGENT_NAME_RULE = (f"agent_name must be 1 to {MAX_AGENT_NAME_CHARS} printable characters (not only spaces), "
                   "or null for the platform's default")


def agent_name(value: object) -> str | None:
    """The one rule for a name the agent shows in a meeting (the join rules' and a calendar's): 1 to
    64 printable characters once leading and trailing spaces are dropped. Returns the name without
    those spaces, or None when `value` is not such a name."""
    if not isinstance(value, str) or not value.isprintable():
        return None
    name = value.strip()
    return name if 1 <= len(name) <= MAX_AGENT_NAME_CHARS else None


def _values(raw: object, name: str, kind: type[_E]) -> list[_E]:
    if not isinstance(raw, list):
        raise InvalidRules(f"{name} must be a list drawn from {_listed(kind)}")
    seen: list[_E] = []
    for item in raw:
        if not isinstance(item, str) or item not in kind._value2member_map_:
            raise InvalidRules(f"{name} holds {item!r}; allowed: {_listed(kind)}")
        if kind(item) in seen:
            raise InvalidRules(f"{name} lists {item!r} twice")
        seen.append(kind(item))
    return seen


def _listed(kind: type[StrEnum]) -> str:
    return ", ".join(m.value for m in kind)


# ---------------------------------------------------------------- what one calendar says
@dataclass(frozen=True)
class EventFacts:
    """What one calendar's event says of the user's part in a meeting."""

    response: Response
    external: bool
    series_id: str | None  # the series master's id in that calendar, for occurrences and exceptions


def event_facts(event: Mapping[str, Any], account_email: str, tenant_id: str) -> EventFacts:
    """Facts of a Graph event in the calendar of `account_email` (its tenant tells personal accounts).

    - response: `responseStatus.response`; `none`, `organizer` or missing mean the mailbox owner's
      own meeting (organizer) unless `isOrganizer` is false, then an unanswered invitation.
    - external: organised by someone outside the account's email domain — for a personal account,
      by anyone but the account itself. An organiser address without `@` is an Exchange-internal
      (X500) address Graph shows for people in the same organisation: internal.
    - series_id: `seriesMasterId` of an occurrence or exception."""
    own = event.get("isOrganizer") is not False
    status = event.get("responseStatus")
    given = _GRAPH_RESPONSES.get(str(status.get("response"))) if isinstance(status, Mapping) else None
    if given is None or given is Response.ORGANIZER:
        response = Response.ORGANIZER if own else Response.NOT_RESPONDED
    else:
        response = given  # an answer given wins over the flag
    series = event.get("seriesMasterId")
    return EventFacts(
        response=response,
        external=False if own else _outside(_organizer_address(event), account_email, tenant_id),
        series_id=series if isinstance(series, str) and series else None,
    )


def _organizer_address(event: Mapping[str, Any]) -> str:
    organizer = event.get("organizer")
    email = organizer.get("emailAddress") if isinstance(organizer, Mapping) else None
    address = email.get("address") if isinstance(email, Mapping) else None
    return address.strip().lower() if isinstance(address, str) else ""


def _outside(organizer: str, account_email: str, tenant_id: str) -> bool:
    account = account_email.strip().lower()
    if not organizer:
        return True  # nobody named: treat as a stranger's invitation
    if "@" not in organizer:
        return False  # Exchange-internal address
    if organizer == account:
        return False
    if tenant_id == CONSUMER_TENANT_ID:
        return True
    return organizer.rsplit("@", 1)[1] != account.rsplit("@", 1)[-1]


def combined_response(responses: Iterable[Response]) -> Response:
    """A meeting in several of the user's calendars counts with their most committed answer."""
    given = set(responses)
    return next((r for r in RESPONSES if r in given), Response.NOT_RESPONDED)


# ---------------------------------------------------------------- the user's choices
@dataclass(frozen=True)
class Override:
    """A choice made with the per-meeting toggle: join or skip, for one occurrence or its series."""

    join: bool
    series: bool
    set_at: datetime


def newest(overrides: Iterable[Override]) -> Override | None:
    """The latest choice wins (a series skip after joining one occurrence skips it too; joining one
    occurrence after skipping the series makes an exception); on a tie the occurrence's own wins."""
    return max(overrides, key=lambda o: (o.set_at, not o.series), default=None)


# ---------------------------------------------------------------- the decision
class Why(StrEnum):
    RULES = "rules"
    JOINED_BY_YOU = "joined_by_you"
    SKIPPED_BY_YOU = "skipped_by_you"
    SERIES_SKIPPED_BY_YOU = "series_skipped_by_you"
    RESPONSE_EXCLUDED = "response_excluded"
    EXTERNAL_UNANSWERED = "external_unanswered"
    EXTERNAL_SKIPPED = "external_skipped"
    PLATFORM_EXCLUDED = "platform_excluded"
    PRIVATE_SKIPPED = "private_skipped"
    NO_OTHER_ATTENDEES = "no_other_attendees"
    ALL_DAY = "all_day"
    FREE_SKIPPED = "free_skipped"
    TEAMMATE_AGENT = "teammate_agent"  # a teammate's shared agent joins for the user (shared/teams.py)
    CONNECTION_ERROR = "connection_error"
    TOO_LATE = "too_late"


@dataclass(frozen=True)
class MeetingFacts:
    platform: str
    start: datetime
    response: Response
    external: bool
    series: bool
    private: bool = False  # Graph `sensitivity` private or confidential
    all_day: bool = False
    solo: bool = False  # the user's own event with no other attendee
    free: bool = False  # Graph `showAs: free`


@dataclass(frozen=True)
class Decision:
    will_join: bool
    why: Why
    text: str
    choice: Override | None = None  # the user's choice the decision weighed, if any

    by_default: bool = False  # skipped by a newer rule the user never set (its default)

    @property
    def withdraws_agent(self) -> bool:
        """An agent already sent should leave: the user (or their rules) no longer wants it there.
        A connection in error or a late start says nothing about the user's wish, and a rule's default
        never recalls an agent deployed before that rule existed (new defaults apply to decisions
        made after the upgrade, ../shared/API.md)."""
        return not self.will_join and not self.by_default and self.why not in (Why.CONNECTION_ERROR, Why.TOO_LATE)


_RULE_OF = {Why.PRIVATE_SKIPPED: "private_events", Why.NO_OTHER_ATTENDEES: "solo_events",
            Why.ALL_DAY: "all_day_events", Why.FREE_SKIPPED: "free_events"}


def decide(
    facts: MeetingFacts,
    rules: JoinRules,
    override: Override | None,
    *,
    any_active_connection: bool,
    agent_sent: bool,
    now: datetime,
    grace: timedelta,
) -> Decision:
    """The user's newest choice (joined_by_you / skipped_by_you / series_skipped_by_you), else the
    rules in this order: platform, private, all-day, no other attendees, free, RSVP, external
    organiser (skipped, then unanswered) — the `why` order of ../shared/API.md. A meeting that would be joined still is
    not when no Active calendar holds it (connection_error) or when it started more than `grace` ago
    and no agent was sent (too_late); a meeting the user or the rules skip keeps that reason."""
    wanted = _wanted(facts, rules, override)
    rule = _RULE_OF.get(wanted.why)
    if rule is not None and rule not in rules.explicit:
        wanted = replace(wanted, by_default=True)
    if wanted.will_join and not any_active_connection:
        wanted = Decision(False, Why.CONNECTION_ERROR, "No agent: the Outlook connection holding this meeting needs "
                          "attention. Reconnect it to resume auto-join.")
    elif wanted.will_join and not agent_sent and now > facts.start + grace:
        wanted = Decision(False, Why.TOO_LATE, "No agent: the meeting started too long ago for the agent to join.")
    return replace(wanted, choice=override)


def _wanted(facts: MeetingFacts, rules: JoinRules, override: Override | None) -> Decision:
    if override is not None:
        if override.join:
            scope = "every meeting of this series" if override.series else "this meeting"
            return Decision(True, Why.JOINED_BY_YOU, f"Your agent joins because you chose to send it to {scope}.")
        if override.series:
            return Decision(False, Why.SERIES_SKIPPED_BY_YOU,
                            "No agent: you chose to skip every meeting of this series.")
        return Decision(False, Why.SKIPPED_BY_YOU, "No agent: you chose to skip this meeting.")
    platform = PLATFORM_NAMES.get(facts.platform, facts.platform)  # StrEnum keys match their values
    if facts.platform not in rules.platforms:
        return Decision(False, Why.PLATFORM_EXCLUDED, f"No agent: your join rules skip {platform} meetings.")
    if facts.private and rules.private_events is EventChoice.SKIP:
        return Decision(False, Why.PRIVATE_SKIPPED, "No agent: this event is marked private, and your join rules "
                        "skip private events. Choose Join to send your agent anyway.")
    if facts.all_day and rules.all_day_events is EventChoice.SKIP:
        return Decision(False, Why.ALL_DAY, "No agent: this is an all-day event, and your join rules skip those. "
                        "Choose Join to send your agent anyway.")
    if facts.solo and rules.solo_events is EventChoice.SKIP:
        return Decision(False, Why.NO_OTHER_ATTENDEES, "No agent: nobody else is invited to this event of yours "
                        "(a focus block, a reminder), and your join rules skip those.")
    if facts.free and rules.free_events is EventChoice.SKIP:
        return Decision(False, Why.FREE_SKIPPED, "No agent: this event shows you as free, and your join rules "
                        "skip events shown as free.")
    said = _RESPONSE_WORDS[facts.response]
    if facts.response not in rules.responses:
        return Decision(False, Why.RESPONSE_EXCLUDED,
                        f"No agent: {said}, and your join rules don't send an agent then.")
    if facts.external and rules.external_invites is ExternalInvites.SKIP:
        return Decision(False, Why.EXTERNAL_SKIPPED,
                        "No agent: it is organised outside your organisation, and your join rules skip those.")
    if facts.external and rules.external_invites is ExternalInvites.SKIP_UNANSWERED \
            and facts.response is Response.NOT_RESPONDED:
        return Decision(False, Why.EXTERNAL_UNANSWERED,
                        "No agent yet: this invitation comes from outside your organisation and you haven't "
                        "answered it. Accept it, or choose Join, to send your agent.")
    return Decision(True, Why.RULES, f"Your agent joins by your rules: {said}.")
