"""Escalation: an alarm nobody acknowledges is taken to the next person on the roster, then the next.

Pure: the alarms, the policy, the roster and the time in; the steps due out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config import EscalationConfig, RosterEntry


@dataclass(frozen=True)
class Unacknowledged:
    id: int
    alarm_type: str
    raised_at: datetime
    level: int  # how many people have been notified so far
    test: bool


@dataclass(frozen=True)
class Escalate:
    alarm_id: int
    level: int  # 1 = the first person on the roster
    person: RosterEntry
    due: datetime


def step_due(alarm: Unacknowledged, level: int, policy: EscalationConfig) -> datetime:
    first = policy.after_s.get(alarm.alarm_type, policy.default_after_s)
    return alarm.raised_at + timedelta(seconds=first + (level - 1) * policy.repeat_s)


def escalations_due(alarms: list[Unacknowledged], now: datetime, policy: EscalationConfig,
                    roster: list[RosterEntry]) -> list[Escalate]:
    """One step per alarm per call at most (the next), so a late tick never skips a person.
    Test alarms (scheduled button tests) are not escalated; past the end of the roster nothing more is due."""
    steps = []
    for alarm in alarms:
        level = alarm.level + 1
        if alarm.test or level > len(roster):
            continue
        due = step_due(alarm, level, policy)
        if now >= due:
            steps.append(Escalate(alarm.id, level, roster[level - 1], due))
    return steps
