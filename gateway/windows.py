"""Time windows of the week (a shift, a schedule, an analytic's hours), shared by the rules and the drivers.

Pure: windows and a local time in, whether it falls in one out.
"""

from __future__ import annotations

from datetime import datetime

from gateway.config import Window

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
