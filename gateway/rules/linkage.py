"""Linkage: what an alarm sets in motion (bollards, sirens and strobes, camera evidence, the police), from the
site's table.

Pure: a raised alarm and the linkage rules in, the actions out; the open alarms in, the relays that should be
on out.
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


@dataclass(frozen=True)
class OutputPulse:
    device: str
    relay: str
    seconds: float


Action = BollardCommand | SnapshotRequest | PoliceForward | OutputPulse
Relay = tuple[str, str]  # (output module, relay name)
UNACKNOWLEDGED = ("active_unack", "cleared_unack")
NOT_RESET = ("active_unack", "active_ack", "cleared_unack")  # reset (or cleared and seen) is cleared_ack


@dataclass(frozen=True)
class OpenAlarm:
    """What the outputs need of an alarm that is not closed."""

    alarm_type: str
    zone: str | None
    state: str
    test: bool
    silenced: bool


def applies(rule: LinkageRule, alarm_type: str, zone: str | None) -> bool:
    return alarm_type in rule.when.alarm_type and (rule.when.zone is None or zone in rule.when.zone)


def held_relays(rules: list[LinkageRule]) -> set[Relay]:
    """The relays linkage holds on for an alarm (until_ack, until_reset): it also switches them off."""
    return {(o.device, r) for rule in rules for o in rule.outputs if o.mode != "pulse" for r in o.relays}


def outputs_wanted(alarms: list[OpenAlarm], rules: list[LinkageRule], sounders: set[Relay]) -> set[Relay]:
    """The held relays that should be on now: any open alarm that holds one keeps it on (two panics, one
    acknowledged: the siren sounds for the other). Test alarms sound nothing; a silenced alarm holds no sounder."""
    wanted: set[Relay] = set()
    for alarm in alarms:
        if alarm.test or alarm.state not in NOT_RESET:
            continue
        for rule in rules:
            if not applies(rule, alarm.alarm_type, alarm.zone):
                continue
            for out in rule.outputs:
                if out.mode == "pulse" or (out.mode == "until_ack" and alarm.state not in UNACKNOWLEDGED):
                    continue
                wanted |= {(out.device, r) for r in out.relays if not (alarm.silenced and (out.device, r) in sounders)}
    return wanted


def linked_actions(alarm: RaiseAlarm, rules: list[LinkageRule], test_reports: bool = True) -> list[Action]:
    """Test alarms move nothing: a scheduled button test must not lower a bollard, and reaches the police
    only as a test report (when `test_reports`), never as the alarm."""
    actions: list[Action] = []
    for rule in rules:
        if not applies(rule, alarm.alarm_type, alarm.zone):
            continue
        if alarm.test:
            if rule.police and test_reports:
                actions.append(PoliceForward(test=True))
            continue
        if rule.bollards:
            actions += [BollardCommand(d, rule.bollards.command) for d in rule.bollards.devices]
        actions += [OutputPulse(o.device, r, o.pulse_s) for o in rule.outputs if o.mode == "pulse" for r in o.relays]
        actions += [SnapshotRequest(c) for c in rule.cameras]
        if rule.police:
            actions.append(PoliceForward())
    return list(dict.fromkeys(actions))  # two rules naming the same action: do it once
