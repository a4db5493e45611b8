"""Escalation steps at their times, linkage from the site's table, bollard schedules by the clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.config import BollardSchedule, EscalationConfig, LinkageRule, RosterEntry, Window
from gateway.rules.alarms import RaiseAlarm
from gateway.rules.escalation import Unacknowledged, escalations_due
from gateway.rules.linkage import (
    BollardCommand,
    OpenAlarm,
    OutputPulse,
    PoliceForward,
    SnapshotRequest,
    held_relays,
    linked_actions,
    outputs_wanted,
)
from gateway.rules.schedules import wanted
from gateway.windows import in_windows

T0 = datetime(2026, 11, 30, 0, 0, 0, tzinfo=UTC)
ROSTER = [RosterEntry(id="li", name="Li"), RosterEntry(id="wang", name="Wang"), RosterEntry(id="zhao", name="Zhao")]
POLICY = EscalationConfig(after_s={"panic": 30}, default_after_s=120, repeat_s=60)


def panic(level: int = 0, test: bool = False, alarm_type: str = "panic") -> Unacknowledged:
    return Unacknowledged(id=7, alarm_type=alarm_type, raised_at=T0, level=level, test=test)


@pytest.mark.parametrize(("seconds", "level", "expected"), [
    (29, 0, None),        # not yet
    (30, 0, ("li", 1)),   # panic: 30 s
    (89, 1, None),        # the next person 60 s later
    (90, 1, ("wang", 2)),
    (150, 2, ("zhao", 3)),
    (9999, 3, None),      # the roster is exhausted
    (9999, 0, ("li", 1)),  # a late tick takes one step at a time: nobody is skipped
])
def test_escalation_steps_at_their_times(seconds: int, level: int, expected: tuple[str, int] | None) -> None:
    steps = escalations_due([panic(level)], T0 + timedelta(seconds=seconds), POLICY, ROSTER)
    assert [(s.person.id, s.level) for s in steps] == ([expected] if expected else [])


def test_other_types_use_the_default_and_tests_never_escalate() -> None:
    assert not escalations_due([panic(alarm_type="tamper")], T0 + timedelta(seconds=119), POLICY, ROSTER)
    assert escalations_due([panic(alarm_type="tamper")], T0 + timedelta(seconds=120), POLICY, ROSTER)
    assert not escalations_due([panic(test=True)], T0 + timedelta(hours=1), POLICY, ROSTER)
    assert not escalations_due([panic()], T0 + timedelta(hours=1), POLICY, []), "no roster, no one to call"


def alarm(alarm_type: str = "panic", zone: str | None = "gate", test: bool = False) -> RaiseAlarm:
    return RaiseAlarm(key="box:p", device_id="box", alarm_type=alarm_type, priority=1, latching=True, zone=zone,
                      place=None, test=test, event_id="e", at=T0)


LINKAGE = [
    LinkageRule.model_validate({"when": {"alarm_type": ["panic", "duress"], "zone": ["gate"]},
                                "bollards": {"devices": ["gate-bollard"], "command": "efo"},
                                "cameras": ["gate-cam"], "police": True}),
    LinkageRule.model_validate({"when": {"alarm_type": ["fire"]},
                                "bollards": {"devices": ["gate-bollard"], "command": "lower"}}),
    LinkageRule.model_validate({"when": {"alarm_type": ["panic"]}, "cameras": ["gate-cam"]}),
]


def test_a_panic_at_the_gate_raises_the_bollards_asks_the_camera_and_calls_the_police() -> None:
    assert linked_actions(alarm(), LINKAGE) == [BollardCommand("gate-bollard", "efo"), SnapshotRequest("gate-cam"),
                                                PoliceForward()], "the camera is asked once, not twice"


def test_linkage_follows_type_and_zone_and_tests_move_nothing() -> None:
    assert linked_actions(alarm(zone="perimeter"), LINKAGE) == [SnapshotRequest("gate-cam")]
    assert linked_actions(alarm("fire", zone=None), LINKAGE) == [BollardCommand("gate-bollard", "lower")]
    assert linked_actions(alarm("tamper"), LINKAGE) == []
    assert linked_actions(alarm(test=True), LINKAGE) == [PoliceForward(test=True)], \
        "a button test moves no bollard and reaches the police only as a test report"
    assert linked_actions(alarm(test=True), LINKAGE, test_reports=False) == [], "or not at all"


SCHEDULE = BollardSchedule.model_validate({
    "bollards": ["gate-bollard"], "holidays": ["2026-12-02"],
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:20", "to": "08:10"},
                {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "16:20", "to": "17:10"}]})
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(("local", "expected"), [
    ("2026-11-30 07:19", "lower"),   # Monday, before arrival
    ("2026-11-30 07:20", "raise"),
    ("2026-11-30 08:09", "raise"),
    ("2026-11-30 08:10", "lower"),
    ("2026-11-30 16:45", "raise"),   # dismissal
    ("2026-12-02 07:30", "lower"),   # a holiday
    ("2026-12-05 07:30", "lower"),   # Saturday
])
def test_bollards_follow_the_school_day(local: str, expected: str) -> None:
    when = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI)
    assert wanted(SCHEDULE, when) == expected


def test_linkage_naming_an_unknown_bollard_is_a_config_error() -> None:
    from gateway.config import ConfigError
    from gateway.config_file import parse_config

    text = ("site: {id: s1, name: Test}\n"
            "linkage:\n"
            "  - when: {alarm_type: [panic]}\n"
            "    bollards: {devices: [gate-bolard], command: efo}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.yaml")
    assert info.value.problems == ["site.yaml line 4: linkage[0].bollards.devices[0]: unknown bollard 'gate-bolard', "
                                   "expected one of: none (no device of kind bollard)"]


NIGHTS = [Window.model_validate({"days": ["mon", "tue", "wed", "thu", "fri"], "from": "18:00", "to": "06:30"}),
          Window.model_validate({"days": ["sat", "sun"], "from": "00:00", "to": "23:59"})]


@pytest.mark.parametrize(("local", "inside"), [
    ("2026-11-30 17:59", False),  # Monday before the evening window
    ("2026-11-30 18:00", True),   # Monday evening
    ("2026-12-01 03:00", True),   # Tuesday night: Monday's window runs past midnight
    ("2026-12-01 06:30", False),  # the end is not in it
    ("2026-12-01 12:00", False),  # school hours
    ("2026-11-29 12:00", True),   # Sunday
    ("2026-11-30 02:00", False),  # early Monday: Sunday's window ends at 23:59 and does not run over
])
def test_camera_schedules_with_windows_past_midnight(local: str, inside: bool) -> None:
    assert in_windows(NIGHTS, datetime.fromisoformat(local).replace(tzinfo=SHANGHAI)) is inside


def test_a_holiday_is_watched_all_day() -> None:
    noon = datetime(2026, 10, 1, 12, 0, tzinfo=SHANGHAI)  # a Thursday, National Day
    assert not in_windows(NIGHTS, noon) and in_windows(NIGHTS, noon, ["2026-10-01"])


# --- outputs: which held relays an open alarm keeps on --------------------------------------------------------

GATEHOUSE = LinkageRule.model_validate({"when": {"alarm_type": ["panic", "duress"], "zone": ["gate"]}, "outputs": [
    {"device": "relays", "relays": ["siren", "strobe"], "mode": "until_reset"},
    {"device": "relays", "relays": ["pa"], "mode": "until_ack"},
    {"device": "relays", "relays": ["bell"], "mode": "pulse", "pulse_s": 5}]})
SOUNDERS = {("relays", "siren"), ("relays", "pa")}


def open_alarm(state: str = "active_unack", alarm_type: str = "panic", zone: str | None = "gate",
               test: bool = False, silenced: bool = False) -> OpenAlarm:
    return OpenAlarm(alarm_type, zone, state, test, silenced)


def on(*alarms: OpenAlarm) -> set[str]:
    return {relay for _, relay in outputs_wanted(list(alarms), [GATEHOUSE], SOUNDERS)}


def test_held_relays_follow_the_alarm_until_its_ack_or_reset() -> None:
    assert on(open_alarm()) == {"siren", "strobe", "pa"}
    assert on(open_alarm("active_ack")) == {"siren", "strobe"}, "the PA stops at the acknowledgement"
    assert on(open_alarm("cleared_unack")) == {"siren", "strobe", "pa"}, "restored but nobody has seen it"
    assert on(open_alarm("cleared_ack")) == set(), "reset"
    assert on(open_alarm("closed")) == set()
    assert held_relays([GATEHOUSE]) == {("relays", r) for r in ("siren", "strobe", "pa")}, "a pulse is not held"


def test_silence_stops_the_sounders_only_and_another_alarm_keeps_them() -> None:
    assert on(open_alarm(silenced=True)) == {"strobe"}
    assert on(open_alarm(silenced=True), open_alarm("active_ack", "duress")) == {"siren", "strobe"}, \
        "a second alarm that nobody silenced still sounds"
    assert on(open_alarm("cleared_ack"), open_alarm("active_ack")) == {"siren", "strobe"}, "one reset, one open"


def test_tests_other_types_and_other_zones_hold_nothing() -> None:
    assert on(open_alarm(test=True)) == set()
    assert on(open_alarm(alarm_type="fire")) == set()
    assert on(open_alarm(zone="yard")) == set()


def test_a_pulse_is_sent_at_the_raise_and_not_for_a_test() -> None:
    raised = RaiseAlarm(key="box:panic", device_id="box", alarm_type="panic", priority=1, latching=True,
                        zone="gate", place=None, test=False, event_id="e1", at=datetime(2026, 12, 7, 8, tzinfo=UTC))
    assert [a for a in linked_actions(raised, [GATEHOUSE]) if isinstance(a, OutputPulse)] == [
        OutputPulse("relays", "bell", 5.0)]
    test = replace(raised, test=True)
    assert not [a for a in linked_actions(test, [GATEHOUSE]) if isinstance(a, OutputPulse)]
