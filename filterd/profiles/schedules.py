"""Is a schedule active at a given local time?

A schedule is a set of weekly windows (``filterd.config.groups.Window``) in
the configured time zone: a window opens on its listed days at ``start``
and closes at ``end`` the same day, or the next day when it crosses
midnight; on a holiday it does not open (a window that opened the evening
before a holiday still closes as usual). Times are wall-clock times of the
zone (``zoneinfo``), so a daylight-saving zone keeps 07:00 at 07:00.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from filterd.config.groups import DAY_NAMES, ScheduleConfig, Window, hhmm


def is_active(schedule: ScheduleConfig, local: datetime) -> bool:
    """Is any window of ``schedule`` open at ``local`` (an aware datetime in
    the schedule's zone, or a naive one meaning local time)?"""
    return any(window_open(window, local) for window in schedule.windows)


def window_open(window: Window, local: datetime) -> bool:
    today = local.date()
    minute = local.hour * 60 + local.minute
    if window.start < window.end:
        return (
            window.start <= minute < window.end
            and today.weekday() in window.days
            and today not in window.holidays
        )
    if minute >= window.start:
        return today.weekday() in window.days and today not in window.holidays
    if minute < window.end:
        opened = today - timedelta(days=1)
        return opened.weekday() in window.days and opened not in window.holidays
    return False


def describe(schedule: ScheduleConfig) -> str:
    """``school-hours (mon-fri 07:00-17:00)``: for ``filterd lookup`` and logs."""
    return f"{schedule.name} ({'; '.join(_window_text(w) for w in schedule.windows)})"


def _window_text(window: Window) -> str:
    days = sorted(window.days)
    if days == list(range(7)):
        when = "every day"
    elif days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        when = f"{DAY_NAMES[days[0]]}-{DAY_NAMES[days[-1]]}"
    else:
        when = ",".join(DAY_NAMES[d] for d in days)
    text = f"{when} {hhmm(window.start)}-{hhmm(window.end)}"
    if window.holidays:
        text += f", not on {len(window.holidays)} holidays"
    return text
