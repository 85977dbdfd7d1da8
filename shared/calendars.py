"""Which of an account's calendars are read, and the agent name per calendar. Pure domain.

The contract is `../shared/API.md` ("Connections": calendars). Only selected calendars are read; a
new connection (and one made before calendars could be chosen: no stored selection) reads its
default calendar; the last selected calendar cannot be deselected; a selected calendar that Graph no
longer lists (deleted in Outlook) falls out of the selection, and when none is left the default
calendar is selected again."""

from __future__ import annotations

from dataclasses import replace

from shared.autojoin import AGENT_NAME_RULE, agent_name
from shared.ports import CalendarChoice, CalendarInfo, CalendarSelection


class UnknownCalendar(LookupError):
    """No such calendar in this account (404)."""


class LastCalendar(ValueError):
    """The change would leave no calendar selected (409 `last_calendar`)."""


class InvalidCalendarChoice(ValueError):
    """A body the API refuses (400); the message says what is wrong."""


def merged(stored: CalendarSelection | None, live: list[CalendarInfo], *, user_id: str,
           connection_id: str) -> CalendarSelection:
    """The selection over the calendars Graph lists now: known ones keep their choice, new ones start
    unselected (the default one selected when nothing was stored), gone ones drop out; if nothing is
    selected afterwards, the default calendar is. Keeps the stored etag (for a conditional write)."""
    known = {c.id: c for c in (stored.calendars if stored else ())}
    calendars = []
    for info in live:
        before = known.get(info.id)
        if before is not None:
            calendars.append(replace(before, name=info.name, is_default=info.is_default))
        else:
            calendars.append(CalendarChoice(info.id, info.name, info.is_default,
                                            selected=info.is_default and _default_unchosen(stored)))
    selection = CalendarSelection(connection_id=connection_id, user_id=user_id, calendars=tuple(calendars),
                                  etag=stored.etag if stored else None)
    return with_a_calendar(selection)


def _default_unchosen(stored: CalendarSelection | None) -> bool:
    """A default calendar not seen before is selected unless the user chose another default earlier
    (no stored choice at all: the connection reads its default calendar, as before calendars)."""
    return stored is None or not any(c.is_default for c in stored.calendars)


def with_a_calendar(selection: CalendarSelection) -> CalendarSelection:
    """The default calendar selected again when no calendar is."""
    if any(c.selected for c in selection.calendars):
        return selection
    return replace(selection, calendars=tuple(replace(c, selected=True) if c.is_default else c
                                              for c in selection.calendars))


def without(selection: CalendarSelection, calendar_id: str) -> CalendarSelection:
    """A calendar Graph no longer has (deleted in Outlook) leaves the selection."""
    return with_a_calendar(replace(selection, calendars=tuple(c for c in selection.calendars if c.id != calendar_id)))


def choose(selection: CalendarSelection, calendar_id: str, selected: bool, name: str | None,
           *, keep_name: bool = False) -> CalendarSelection:
    """The user's choice for one calendar (`keep_name`: the choice left the agent's name out, so the
    stored one stays). Raises UnknownCalendar, LastCalendar."""
    if not any(c.id == calendar_id for c in selection.calendars):
        raise UnknownCalendar(calendar_id)
    calendars = tuple(replace(c, selected=selected, agent_name=c.agent_name if keep_name else name)
                      if c.id == calendar_id else c for c in selection.calendars)
    if not any(c.selected for c in calendars):
        raise LastCalendar(calendar_id)
    return replace(selection, calendars=calendars)


def parse_choice(body: object) -> tuple[bool, str | None, bool]:
    """`{"selected": bool, "agent_name": null|str}` → (selected, agent_name, whether agent_name was
    given). agent_name follows the join rules' one rule (`shared.autojoin.agent_name`); left out, the
    stored name stays (as a join rules PUT keeps fields it leaves out). Raises InvalidCalendarChoice
    naming the problem."""
    if not isinstance(body, dict):
        raise InvalidCalendarChoice("Send a JSON object: {\"selected\": true|false, \"agent_name\": null|\"...\"}")
    unknown = sorted(set(body) - {"selected", "agent_name"})
    if unknown:
        raise InvalidCalendarChoice(f"Unknown field {unknown[0]!r}; a calendar has selected and agent_name")
    selected = body.get("selected")
    if not isinstance(selected, bool):
        raise InvalidCalendarChoice("selected must be true or false")
    if "agent_name" not in body:
        return selected, None, False
    raw = body["agent_name"]
    if raw is None:
        return selected, None, True
    name = agent_name(raw)
    if name is None:
        raise InvalidCalendarChoice(AGENT_NAME_RULE)
    return selected, name, True

