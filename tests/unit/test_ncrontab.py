"""Timer schedules fire when Azure Functions would fire them (NCRONTAB, UTC)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devstack.ncrontab import next_occurrence, parse_schedule


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def occurrences(expr: str, after: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        after = next_occurrence(expr, after)
        found.append(after)
    return found


def test_every_five_minutes_fires_on_the_minute_multiple_of_five() -> None:
    assert occurrences("0 */5 * * * *", utc(2026, 3, 1, 10, 2, 30), 3) == [
        utc(2026, 3, 1, 10, 5),
        utc(2026, 3, 1, 10, 10),
        utc(2026, 3, 1, 10, 15),
    ]


def test_the_next_occurrence_is_strictly_after_the_given_time() -> None:
    assert next_occurrence("0 */5 * * * *", utc(2026, 3, 1, 10, 5)) == utc(2026, 3, 1, 10, 10)
    assert next_occurrence("* * * * * *", utc(2026, 3, 1, 10, 5).replace(microsecond=500_000)) == utc(
        2026, 3, 1, 10, 5, 1
    )


def test_every_ten_seconds() -> None:
    assert occurrences("*/10 * * * * *", utc(2026, 3, 1, 23, 59, 45), 3) == [
        utc(2026, 3, 1, 23, 59, 50),
        utc(2026, 3, 2, 0, 0, 0),
        utc(2026, 3, 2, 0, 0, 10),
    ]


def test_lists_and_ranges_with_steps() -> None:
    # 09:30 and 09:45, 11:30..., on the hours 9-17 every second hour.
    assert occurrences("0 30,45 9-17/2 * * *", utc(2026, 3, 1, 9, 40), 4) == [
        utc(2026, 3, 1, 9, 45),
        utc(2026, 3, 1, 11, 30),
        utc(2026, 3, 1, 11, 45),
        utc(2026, 3, 1, 13, 30),
    ]


def test_a_single_value_with_a_step_runs_to_the_end_of_the_field() -> None:
    assert occurrences("0 50/5 * * * *", utc(2026, 3, 1, 10, 0), 3) == [
        utc(2026, 3, 1, 10, 50),
        utc(2026, 3, 1, 10, 55),
        utc(2026, 3, 1, 11, 50),
    ]


def test_weekdays_at_nine_skip_the_weekend() -> None:
    # 2026-03-06 is a Friday.
    assert occurrences("0 0 9 * * 1-5", utc(2026, 3, 6, 10, 0), 2) == [
        utc(2026, 3, 9, 9, 0),
        utc(2026, 3, 10, 9, 0),
    ]


def test_day_names_and_month_names() -> None:
    assert next_occurrence("0 0 12 * Jan Mon", utc(2026, 12, 31)) == utc(2027, 1, 4, 12)
    assert next_occurrence("0 0 12 * * Sunday", utc(2026, 3, 6)) == utc(2026, 3, 8, 12)


def test_sunday_is_zero() -> None:
    assert next_occurrence("0 0 0 * * 0", utc(2026, 3, 6)) == utc(2026, 3, 8)


def test_day_of_month_and_day_of_week_must_both_match_like_ncrontab() -> None:
    # Friday the 13th, not "every Friday or every 13th" as Vixie cron would have it.
    assert occurrences("0 0 0 13 * 5", utc(2026, 1, 1), 2) == [utc(2026, 2, 13), utc(2026, 3, 13)]


def test_day_31_skips_shorter_months() -> None:
    assert occurrences("0 0 0 31 * *", utc(2026, 1, 31, 1), 2) == [utc(2026, 3, 31), utc(2026, 5, 31)]


def test_february_29_waits_for_a_leap_year() -> None:
    assert next_occurrence("0 0 0 29 2 *", utc(2026, 3, 1)) == utc(2028, 2, 29)


def test_year_rollover() -> None:
    assert next_occurrence("0 0 0 1 1 *", utc(2026, 12, 31, 23, 59, 59)) == utc(2027, 1, 1)


def test_five_fields_mean_second_zero() -> None:
    assert next_occurrence("*/15 * * * *", utc(2026, 3, 1, 10, 1, 10)) == utc(2026, 3, 1, 10, 15)


def test_keeps_the_callers_timezone() -> None:
    plus_two = timezone(timedelta(hours=2))
    found = next_occurrence("0 0 8 * * *", datetime(2026, 3, 1, 9, 0, tzinfo=plus_two))
    assert found == datetime(2026, 3, 2, 8, 0, tzinfo=plus_two)
    assert found.tzinfo is plus_two


def test_naive_datetimes_stay_naive() -> None:
    assert next_occurrence("0 0 * * * *", datetime(2026, 3, 1, 9, 30)) == datetime(2026, 3, 1, 10, 0)


def test_a_schedule_that_never_fires_is_reported() -> None:
    with pytest.raises(ValueError, match="never fires"):
        next_occurrence("0 0 0 31 2 *", utc(2026, 1, 1))


@pytest.mark.parametrize(
    "expr",
    [
        "* * * *",  # too few fields
        "* * * * * * *",  # too many
        "60 * * * * *",  # second out of range
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * * 13 *",
        "* * * * * 7",  # NCrontab's day of week stops at 6
        "* */0 * * * *",
        "* 10-5 * * * *",
        "* a * * * *",
        "* * * * Foo *",
        "* 1,,2 * * * *",
    ],
)
def test_invalid_expressions_are_rejected(expr: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(expr)
