"""Linkage: what an alarm sets in motion (bollards, camera evidence, the police), from the site's table.

Pure: a raised alarm and the linkage rules in, the actions out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import LinkageRule
from gateway.rules.alarms import RaiseAlarm


@dataclass(frozen=True)
class BollardCommand:
    device: str
    command: str


@dataclass(frozen=True)
class SnapshotRequest:
    camera: str
    pre_s: int = 30  # the standards want the seconds before the alarm with it


@dataclass(frozen=True)
class PoliceForward:
    test: bool = False  # a button test: a test report (601), never the alarm itself


Action = BollardCommand | SnapshotRequest | PoliceForward


def linked_actions(alarm: RaiseAlarm, rules: list[LinkageRule], test_reports: bool = True) -> list[Action]:
    """Test alarms move nothing: a scheduled button test must not lower a bollard, and reaches the police
    only as a test report (when `test_reports`), never as the alarm."""
    actions: list[Action] = []
    for rule in rules:
        if alarm.alarm_type not in rule.when.alarm_type:
            continue
        if rule.when.zone is not None and alarm.zone not in rule.when.zone:
            continue
        if alarm.test:
            if rule.police and test_reports:
                actions.append(PoliceForward(test=True))
            continue
        if rule.bollards:
            actions += [BollardCommand(d, rule.bollards.command) for d in rule.bollards.devices]
        actions += [SnapshotRequest(c) for c in rule.cameras]
        if rule.police:
            actions.append(PoliceForward())
    return list(dict.fromkeys(actions))  # two rules naming the same action: do it once
