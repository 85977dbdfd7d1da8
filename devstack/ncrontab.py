"""NCRONTAB schedules as Azure Functions timer triggers read them. Pure; no clock, no settings.

Six fields `second minute hour day month day-of-week` (the Functions form); five fields (no
seconds, second 0) are accepted too, as the Functions host does. Each field is `*`, a value, a
range `a-b`, any of these with a step (`*/n`, `a-b/n`, `a/n` = from a to the field's maximum),
or a comma-separated list of them. Months and days of the week also take English names
(`Jan`, `Monday`...). Day of week runs 0-6 with Sunday 0.

As in NCrontab (and unlike Vixie cron), when both day-of-month and day-of-week are restricted a
time must match BOTH. Occurrences are computed on the wall clock of `after`'s own tzinfo; the
Functions host schedules in UTC unless WEBSITE_TIME_ZONE says otherwise, so pass UTC times.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


@dataclass(frozen=True)
class _FieldSpec:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_SECOND = _FieldSpec("second", 0, 59)
_MINUTE = _FieldSpec("minute", 0, 59)
_HOUR = _FieldSpec("hour", 0, 23)
_DAY = _FieldSpec("day", 1, 31)
_MONTH = _FieldSpec("month", 1, 12, tuple(_MONTH_NAMES))
_DAY_OF_WEEK = _FieldSpec("day-of-week", 0, 6, tuple(_DAY_NAMES))


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    def matches_date(self, moment: datetime) -> bool:
        # Python's weekday() is Monday=0; cron's is Sunday=0.
        return (
            moment.month in self.months and moment.day in self.days and (moment.weekday() + 1) % 7 in self.days_of_week
        )


def parse_schedule(expression: str) -> CronSchedule:
    """Parse a five- or six-field NCRONTAB expression; ValueError says what is wrong."""
    tokens = expression.split()
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    if len(tokens) != 6:
        raise ValueError(
            f"'{expression}' is an invalid NCRONTAB expression: it must have 6 fields "
            "(second minute hour day month day-of-week)"
        )
    specs = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DAY_OF_WEEK)
    values = [_parse_field(token, spec) for token, spec in zip(tokens, specs, strict=True)]
    return CronSchedule(expression, *values)


def _parse_field(token: str, spec: _FieldSpec) -> frozenset[int]:
    values: set[int] = set()
    for item in token.split(","):
        if not item:
            raise ValueError(f"empty element in {spec.label} field '{token}'")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"invalid step '{step_text}' in {spec.label} field '{token}'")
            step = int(step_text)
        if base == "*":
            first, last = spec.low, spec.high
        elif "-" in base:
            first_text, _, last_text = base.partition("-")
            first, last = _parse_value(first_text, spec), _parse_value(last_text, spec)
            if first > last:
                raise ValueError(f"range '{base}' runs backwards in {spec.label} field")
        else:
            first = _parse_value(base, spec)
            last = spec.high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if text.isdigit():
        value = int(text)
    else:
        matches = [i for i, name in enumerate(spec.names) if len(text) >= 3 and name.lower().startswith(text.lower())]
        if not matches:
            raise ValueError(f"'{text}' is not a valid {spec.label} value")
        value = matches[0] + spec.low
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{spec.label} value {value} is outside {spec.low}-{spec.high}")
    return value


def next_occurrence(expression: str | CronSchedule, after: datetime) -> datetime:
    """The first time strictly after `after` that the schedule fires (same tzinfo as `after`)."""
    schedule = parse_schedule(expression) if isinstance(expression, str) else expression
    moment = after.replace(microsecond=0) + timedelta(seconds=1)
    limit_year = after.year + 30  # enough for Feb 29 on a given weekday; beyond, it never fires
    while moment.year <= limit_year:
        if moment.month not in schedule.months:
            year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
            moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            continue
        if not schedule.matches_date(moment):
            moment = moment.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            continue
        if moment.hour not in schedule.hours:
            moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if moment.minute not in schedule.minutes:
            moment = moment.replace(second=0) + timedelta(minutes=1)
            continue
        later_seconds = [s for s in schedule.seconds if s >= moment.second]
        if not later_seconds:
            moment = moment.replace(second=0) + timedelta(minutes=1)
            continue
        return moment.replace(second=min(later_seconds))
    raise ValueError(f"'{schedule.expression}' never fires")
