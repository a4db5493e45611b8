"""Linkage: what an alarm sets in motion (bollards, camera evidence, the police), from the site's table.

Pure: a raised alarm and the linkage rules in, the actions out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import LinkageRule
from gateway.rules.alarms import RaiseAlarm

# Contact ID event codes for the police / alarm-centre link (SIA DC-05), by alarm type.
CONTACT_ID = {"panic": 120, "duress": 121, "fire": 110, "tamper": 137, "ac_loss": 301, "fault": 300,
              "device_offline": 350, "bollard_fault": 300}


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
    contact_id: int


Action = BollardCommand | SnapshotRequest | PoliceForward


def linked_actions(alarm: RaiseAlarm, rules: list[LinkageRule]) -> list[Action]:
    """Test alarms move nothing and call no one: a scheduled button test must not lower a bollard or
    reach the police."""
    if alarm.test:
        return []
    actions: list[Action] = []
    for rule in rules:
        if alarm.alarm_type not in rule.when.alarm_type:
            continue
        if rule.when.zone is not None and alarm.zone not in rule.when.zone:
            continue
        if rule.bollards:
            actions += [BollardCommand(d, rule.bollards.command) for d in rule.bollards.devices]
        actions += [SnapshotRequest(c) for c in rule.cameras]
        if rule.police:
            actions.append(PoliceForward(CONTACT_ID.get(alarm.alarm_type, 130)))
    return list(dict.fromkeys(actions))  # two rules naming the same action: do it once
