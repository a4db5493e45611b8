"""Bollard schedules: up during the arrival and dismissal windows, down outside them.

Pure: a schedule and a local time in, the wanted position out. The service
sends a command only when the wanted position changes, so a manual command
holds until the next window begins or ends.
"""

from __future__ import annotations

from datetime import datetime

from gateway.config import BollardSchedule, Window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def in_windows(windows: list[Window], local: datetime, holidays: list[str] | None = None) -> bool:
    """Whether `local` (the site's time) falls in any window. A window whose end is before its start runs
    past midnight and belongs to the day it starts on (fri 18:00-06:00 covers Saturday 03:00). On a
    holiday every window is open all day (after-hours watch on a day without school)."""
    if holidays and local.date().isoformat() in holidays:
        return True
    hhmm = local.strftime("%H:%M")
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    for window in windows:
        if window.start <= window.end:
            if today in window.days and window.start <= hhmm < window.end:
                return True
        elif (today in window.days and hhmm >= window.start) or (yesterday in window.days and hhmm < window.end):
            return True
    return False


def wanted(schedule: BollardSchedule, local: datetime) -> str:
    """'raise' inside a window on a school day, 'lower' otherwise. `local` is in the site's time zone."""
    if local.date().isoformat() in schedule.holidays:
        return "lower"
    day, hhmm = DAYS[local.weekday()], local.strftime("%H:%M")
    for window in schedule.windows:
        if day in window.days and window.start <= hhmm < window.end:
            return "raise"
    return "lower"
