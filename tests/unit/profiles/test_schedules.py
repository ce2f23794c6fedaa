"""Schedule windows: days, crossing midnight, 24:00, holidays, time zones."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime

from filterd.config import Config
from filterd.config.groups import EVERY_DAY, WEEKDAYS, ScheduleConfig, Window
from filterd.profiles.profileset import ProfileSet
from filterd.profiles.schedules import describe, is_active

SCHOOL = ScheduleConfig(
    "school", (Window(WEEKDAYS, 7 * 60, 17 * 60, frozenset({date(2026, 9, 2)})),)
)
NIGHT = ScheduleConfig(
    "night", (Window(EVERY_DAY, 22 * 60, 6 * 60, frozenset({date(2026, 9, 2)})),)
)
LATE = ScheduleConfig("late", (Window(frozenset({4}), 20 * 60, 24 * 60),))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_weekday_window() -> None:
    assert not is_active(SCHOOL, at("2026-09-07T06:59"))  # a Monday
    assert is_active(SCHOOL, at("2026-09-07T07:00"))
    assert is_active(SCHOOL, at("2026-09-07T16:59"))
    assert not is_active(SCHOOL, at("2026-09-07T17:00"))  # the end is excluded
    assert not is_active(SCHOOL, at("2026-09-06T10:00"))  # a Sunday


def test_a_holiday_keeps_a_window_closed() -> None:
    assert not is_active(SCHOOL, at("2026-09-02T10:00"))  # Wednesday, National Day
    assert is_active(SCHOOL, at("2026-09-03T10:00"))


def test_a_window_across_midnight_closes_the_next_morning() -> None:
    assert is_active(NIGHT, at("2026-09-07T22:00"))
    assert is_active(NIGHT, at("2026-09-08T05:59"))
    assert not is_active(NIGHT, at("2026-09-08T06:00"))
    assert not is_active(NIGHT, at("2026-09-07T21:59"))
    # It does not open on the holiday, but one opened the evening before closes as usual.
    assert is_active(NIGHT, at("2026-09-02T03:00"))
    assert not is_active(NIGHT, at("2026-09-02T23:00"))
    assert not is_active(NIGHT, at("2026-09-03T03:00"))


def test_until_midnight() -> None:
    assert is_active(LATE, at("2026-09-11T23:59"))  # Friday
    assert not is_active(LATE, at("2026-09-12T00:00"))


def test_descriptions() -> None:
    assert describe(SCHOOL) == "school (mon-fri 07:00-17:00, not on 1 holidays)"
    assert describe(LATE) == "late (fri 20:00-24:00)"


def test_profiles_read_schedules_in_the_configured_zone() -> None:
    profiles = ProfileSet(Config())
    family = profiles.profiles["family"]
    # 2026-09-07 00:30 UTC is 07:30 in Ho Chi Minh City: school hours.
    moment = datetime(2026, 9, 7, 0, 30, tzinfo=zoneinfo.ZoneInfo("UTC")).timestamp()
    local = profiles.local(moment)
    assert (local.hour, local.minute) == (7, 30)
    assert "games" in family.categories_at(local)
    assert "social" not in family.categories_at(local)
    assert "games" not in family.categories_at(profiles.local(moment + 10 * 3600))  # 17:30
    assert "social" in family.categories_at(profiles.local(moment + 15 * 3600))  # 22:30
