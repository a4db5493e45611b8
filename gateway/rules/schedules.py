"""Bollard schedules: up during the arrival and dismissal windows, down outside them.

Pure: a schedule and a local time in, the wanted position out. The service
sends a command only when the wanted position changes, so a manual command
holds until the next window begins or ends.
"""

from __future__ import annotations

from datetime import datetime

from gateway.config import BollardSchedule
from gateway.windows import DAYS


def wanted(schedule: BollardSchedule, local: datetime) -> str:
    """'raise' inside a window on a school day, 'lower' otherwise. `local` is in the site's time zone."""
    if local.date().isoformat() in schedule.holidays:
        return "lower"
    day, hhmm = DAYS[local.weekday()], local.strftime("%H:%M")
    for window in schedule.windows:
        if day in window.days and window.start <= hhmm < window.end:
            return "raise"
    return "lower"
