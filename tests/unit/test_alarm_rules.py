"""Alarm rules: which alarms an event raises, updates or clears, and what a guard may do to an alarm."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.events import Event, make_event
from gateway.rules.alarms import (
    NOTE_MIN,
    OPEN_STATES,
    SILENT_AFTER,
    DeviceStatus,
    OpenAlarm,
    RaiseAlarm,
    RefusedAction,
    UpdateAlarm,
    alarm_key,
    closes_while_active,
    evaluate,
    note_long_enough,
    operator_transition,
    source_silent,
)

TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2024, 6, 1, 8, 0, 0, tzinfo=TZ)
TS = AT.timestamp()
STATES = (*OPEN_STATES, "closed")
ACTIONS = ("ack", "reset", "close")

PANIC = {"point": "gatehouse-panic", "input": 1, "point_type": "panic", "zone": "gate", "place": "门卫室"}
TAMPER = {"point": "box-tamper", "input": 8, "point_type": "tamper", "zone": "gate", "place": "报警模块箱"}
PANIC_KEY = "box-1:gatehouse-panic"
TAMPER_KEY = "box-1:box-tamper"
OFFLINE_KEY = "box-1:offline"


def ev(event_type: str, data: dict[str, Any], test: bool = False) -> Event:
    return make_event("s1", "alarm_input", "box-1", event_type, data, 1, TS, TZ, test=test)


def triggered(data: dict[str, Any], test: bool = False) -> Event:
    return ev("campus.alarm_input.triggered", data, test)


def restored(data: dict[str, Any]) -> Event:
    return ev("campus.alarm_input.restored", data)


def alarm(key: str, state: str, latching: bool, condition_active: bool = True) -> dict[str, OpenAlarm]:
    return {key: OpenAlarm(id=42, key=key, state=state, latching=latching,  # type: ignore[arg-type]
                           condition_active=condition_active)}


def raised(e: Event, key: str, alarm_type: str, priority: int, latching: bool, zone: str | None,
           place: str | None) -> RaiseAlarm:
    return RaiseAlarm(key=key, device_id="box-1", alarm_type=alarm_type, priority=priority, latching=latching,
                      zone=zone, place=place, test=e.test, event_id=e.id, at=AT)


def update(e: Event, action: str, from_state: str, to_state: str, condition_active: bool,
           priority: int | None = None) -> UpdateAlarm:
    return UpdateAlarm(alarm_id=42, action=action, from_state=from_state, to_state=to_state,  # type: ignore[arg-type]
                       condition_active=condition_active, event_id=e.id, at=AT, priority=priority)


# Each case: (event, open alarms, expected effects given the event). Events get fresh ids, hence the lambdas.
Case = tuple[Event, dict[str, OpenAlarm], Callable[[Event], list[Any]]]

EVALUATE_CASES: dict[str, Callable[[], Case]] = {
    "panic, nothing open -> raise latching priority 1": lambda: (
        triggered(PANIC), {},
        lambda e: [raised(e, PANIC_KEY, "panic", 1, True, "gate", "门卫室")]),
    "duress raises latching priority 1": lambda: (
        triggered({**PANIC, "point": "desk", "point_type": "duress"}), {},
        lambda e: [raised(e, "box-1:desk", "duress", 1, True, "gate", "门卫室")]),
    "fire raises latching priority 1": lambda: (
        triggered({"point": "smoke", "input": 3, "point_type": "fire"}), {},
        lambda e: [raised(e, "box-1:smoke", "fire", 1, True, None, None)]),
    "tamper raises non-latching priority 2": lambda: (
        triggered(TAMPER), {},
        lambda e: [raised(e, TAMPER_KEY, "tamper", 2, False, "gate", "报警模块箱")]),
    "door contact raises priority 4": lambda: (
        triggered({"point": "door", "input": 4, "point_type": "door_contact"}), {},
        lambda e: [raised(e, "box-1:door", "door_contact", 4, False, None, None)]),
    "open alarm on another point does not matter": lambda: (
        triggered(PANIC), alarm(TAMPER_KEY, "active_unack", False),
        lambda e: [raised(e, PANIC_KEY, "panic", 1, True, "gate", "门卫室")]),
    "panic again while active_unack -> retrigger, state kept": lambda: (
        triggered(PANIC), alarm(PANIC_KEY, "active_unack", True),
        lambda e: [update(e, "retrigger", "active_unack", "active_unack", True, priority=2)]),
    "panic again while active_ack -> retrigger, waiting for a person again": lambda: (
        triggered(PANIC), alarm(PANIC_KEY, "active_ack", True, condition_active=False),
        lambda e: [update(e, "retrigger", "active_ack", "active_unack", True, priority=2)]),
    "panic again after reset (cleared_ack) -> active_unack": lambda: (
        triggered(PANIC), alarm(PANIC_KEY, "cleared_ack", True, condition_active=False),
        lambda e: [update(e, "retrigger", "cleared_ack", "active_unack", True, priority=2)]),
    "tamper again while cleared_unack -> active_unack": lambda: (
        triggered(TAMPER), alarm(TAMPER_KEY, "cleared_unack", False, condition_active=False),
        lambda e: [update(e, "retrigger", "cleared_unack", "active_unack", True, priority=2)]),
    "tamper again while cleared_ack -> active_unack": lambda: (
        triggered(TAMPER), alarm(TAMPER_KEY, "cleared_ack", False, condition_active=False),
        lambda e: [update(e, "retrigger", "cleared_ack", "active_unack", True, priority=2)]),
    "panic restored while active_unack -> condition_restored, still active_unack": lambda: (
        restored(PANIC), alarm(PANIC_KEY, "active_unack", True),
        lambda e: [update(e, "condition_restored", "active_unack", "active_unack", False)]),
    "panic restored while active_ack -> condition_restored, still active_ack": lambda: (
        restored(PANIC), alarm(PANIC_KEY, "active_ack", True),
        lambda e: [update(e, "condition_restored", "active_ack", "active_ack", False)]),
    "tamper restored while active_unack -> clear to cleared_unack": lambda: (
        restored(TAMPER), alarm(TAMPER_KEY, "active_unack", False),
        lambda e: [update(e, "clear", "active_unack", "cleared_unack", False)]),
    "tamper restored while active_ack -> clear to cleared_ack": lambda: (
        restored(TAMPER), alarm(TAMPER_KEY, "active_ack", False),
        lambda e: [update(e, "clear", "active_ack", "cleared_ack", False)]),
    "restored with no open alarm -> nothing": lambda: (
        restored(TAMPER), {},
        lambda e: []),
    "restored twice (condition already inactive) -> nothing": lambda: (
        restored(TAMPER), alarm(TAMPER_KEY, "cleared_unack", False, condition_active=False),
        lambda e: []),
    "device offline -> status offline + raise device_offline": lambda: (
        ev("campus.device.offline", {"reason": "no answer", "zone": "gate"}), {},
        lambda e: [DeviceStatus("box-1", False, "no answer", AT),
                   raised(e, OFFLINE_KEY, "device_offline", 3, False, "gate", None)]),
    "device offline again while open -> status + retrigger": lambda: (
        ev("campus.device.offline", {"reason": "no answer"}), alarm(OFFLINE_KEY, "cleared_ack", False, False),
        lambda e: [DeviceStatus("box-1", False, "no answer", AT),
                   update(e, "retrigger", "cleared_ack", "active_unack", True, priority=2)]),
    "device online with offline alarm open -> status online + clear": lambda: (
        ev("campus.device.online", {"offline_s": 30}), alarm(OFFLINE_KEY, "active_unack", False),
        lambda e: [DeviceStatus("box-1", True, None, AT),
                   update(e, "clear", "active_unack", "cleared_unack", False)]),
    "device online with nothing open -> status only": lambda: (
        ev("campus.device.online", {}), {},
        lambda e: [DeviceStatus("box-1", True, None, AT)]),
    "telemetry -> no effects": lambda: (
        ev("campus.device.telemetry", {"metrics": {"rssi": -60}}), alarm(PANIC_KEY, "active_unack", True),
        lambda e: []),
    "test-mode panic -> raise marked test": lambda: (
        triggered(PANIC, test=True), {},
        lambda e: [raised(e, PANIC_KEY, "panic", 1, True, "gate", "门卫室")]),
    "gateway health active -> raise gateway_health": lambda: (
        ev("campus.gateway.health", {"condition": "outbox_shedding", "active": True, "detail": "64 MB"}), {},
        lambda e: [raised(e, "box-1:outbox_shedding", "gateway_health", 3, False, None, "64 MB")]),
    "gateway health inactive -> clear": lambda: (
        ev("campus.gateway.health", {"condition": "outbox_shedding", "active": False}),
        alarm("box-1:outbox_shedding", "active_ack", False),
        lambda e: [update(e, "clear", "active_ack", "cleared_ack", False)]),
}


@pytest.mark.parametrize("name", list(EVALUATE_CASES))
def test_evaluate(name: str) -> None:
    event, open_alarms, expected = EVALUATE_CASES[name]()
    assert evaluate(event, open_alarms, AT) == expected(event)


def test_test_mode_flag_is_carried() -> None:
    (effect,) = evaluate(triggered(PANIC, test=True), {}, AT)
    assert isinstance(effect, RaiseAlarm)
    assert effect.test is True
    (effect,) = evaluate(triggered(PANIC), {}, AT)
    assert isinstance(effect, RaiseAlarm)
    assert effect.test is False


def test_a_repeated_press_raises_the_level_but_never_above_1() -> None:
    tamper = {"t:tamper-1": OpenAlarm(1, "t:tamper-1", "active_ack", False, True, priority=2)}
    panic = {"box-1:p": OpenAlarm(2, "box-1:p", "active_unack", True, True, priority=1)}
    again = triggered({"point": "tamper-1", "input": 2, "point_type": "tamper"})
    assert evaluate(again, {"box-1:tamper-1": tamper["t:tamper-1"]}, AT)[0].priority == 1  # type: ignore[union-attr]
    press = triggered({"point": "p", "input": 1, "point_type": "panic"})
    assert evaluate(press, panic, AT)[0].priority == 1  # type: ignore[union-attr]


def test_a_restore_older_than_the_alarm_is_ignored() -> None:
    """Events can arrive out of order (a broker delivering concurrently): an old 'restored' must not clear
    an alarm that a newer trigger set."""
    tamper = {"box-1:t": OpenAlarm(1, "box-1:t", "active_unack", False, True, 2, AT)}
    late = restored({"point": "t", "input": 2, "point_type": "tamper"})
    assert evaluate(late, tamper, AT - timedelta(seconds=1)) == []
    assert evaluate(late, tamper, AT + timedelta(seconds=1))[0].to_state == "cleared_unack"  # type: ignore[union-attr]


def test_alarm_keys() -> None:
    assert alarm_key(triggered(PANIC)) == PANIC_KEY
    assert alarm_key(restored(PANIC)) == PANIC_KEY  # restore finds the alarm its trigger opened
    assert alarm_key(ev("campus.device.offline", {"reason": "x"})) == OFFLINE_KEY
    assert alarm_key(ev("campus.device.online", {})) == OFFLINE_KEY
    assert alarm_key(ev("campus.device.telemetry", {"metrics": {}})) is None


def test_latching_alarm_never_clears_by_itself() -> None:
    """Press, release, press, release: the panic alarm stays active until a person resets it."""
    state, condition = "active_unack", True
    for event in [restored(PANIC), triggered(PANIC), restored(PANIC), restored(PANIC)]:
        effects = evaluate(event, alarm(PANIC_KEY, state, True, condition), AT)
        for effect in effects:
            assert isinstance(effect, UpdateAlarm)
            state, condition = effect.to_state, effect.condition_active
        assert state == "active_unack"


def test_panic_lifecycle_with_operator() -> None:
    (effect,) = evaluate(triggered(PANIC), {}, AT)
    assert isinstance(effect, RaiseAlarm)
    assert effect.latching
    state = operator_transition("active_unack", "ack", latching=True, condition_active=True)
    (effect,) = evaluate(restored(PANIC), alarm(PANIC_KEY, state, True, True), AT)
    assert isinstance(effect, UpdateAlarm)
    assert (effect.to_state, effect.condition_active) == ("active_ack", False)
    state = operator_transition(effect.to_state, "reset", latching=True, condition_active=False)
    assert state == "cleared_ack"
    assert operator_transition(state, "close", latching=True, condition_active=False) == "closed"


# --- operator actions ------------------------------------------------------------------------------------------

FLAGS = list(itertools.product((True, False), (True, False)))  # (latching, condition_active)


def _expect(state: str, action: str, latching: bool, condition_active: bool) -> str | RefusedAction:
    """The specification, one (state, action) pair at a time; a RefusedAction holds a word its message must have."""
    table: dict[tuple[str, str], str | RefusedAction] = {
        ("active_unack", "ack"): "active_ack",
        ("active_ack", "ack"): RefusedAction("already acknowledged"),
        ("cleared_unack", "ack"): "cleared_ack",
        ("cleared_ack", "ack"): RefusedAction("already acknowledged"),
        ("active_unack", "reset"): RefusedAction("acknowledge"),
        ("active_ack", "reset"): (RefusedAction("still active") if condition_active and not latching
                                  else "cleared_ack"),
        ("cleared_unack", "reset"): RefusedAction("not active"),
        ("cleared_ack", "reset"): RefusedAction("not active"),
        ("active_unack", "close"): RefusedAction("reset" if latching else "still active"),
        ("active_ack", "close"): RefusedAction("reset" if latching else "still active"),
        ("cleared_unack", "close"): RefusedAction("acknowledge"),
        ("cleared_ack", "close"): "closed",
    }
    if state == "closed":
        return RefusedAction("already closed")
    return table[(state, action)]


TRANSITIONS = [
    pytest.param(s, a, lat, cond, _expect(s, a, lat, cond),
                 id=f"{s}-{a}-{'latching' if lat else 'nonlatching'}-{'input_active' if cond else 'input_normal'}")
    for s, a, (lat, cond) in itertools.product(STATES, ACTIONS, FLAGS)
]


@pytest.mark.parametrize(("state", "action", "latching", "condition_active", "expected"), TRANSITIONS)
def test_operator_transition(state: str, action: str, latching: bool, condition_active: bool,
                             expected: str | RefusedAction) -> None:
    if isinstance(expected, RefusedAction):
        with pytest.raises(RefusedAction, match=str(expected)):
            operator_transition(state, action, latching=latching, condition_active=condition_active)  # type: ignore[arg-type]
    else:
        assert operator_transition(state, action, latching=latching,  # type: ignore[arg-type]
                                   condition_active=condition_active) == expected


def test_transition_table_covers_every_pair() -> None:
    assert len(TRANSITIONS) == len(STATES) * len(ACTIONS) * 4 == 60


def test_unknown_action_is_refused() -> None:
    with pytest.raises(RefusedAction, match="unknown action"):
        operator_transition("active_unack", "silence", latching=True, condition_active=True)  # type: ignore[arg-type]


def test_acknowledging_twice_is_refused() -> None:
    state = operator_transition("active_unack", "ack", latching=True, condition_active=True)
    with pytest.raises(RefusedAction, match="already acknowledged"):
        operator_transition(state, "ack", latching=True, condition_active=True)


# --- closing an alarm whose input is still active (issue 16 item 2) ------------------------------------------
# A non-latching alarm never clears by itself when its source stops talking (a camera whose "cleared" was lost):
# a supervisor closes it with a note, once the source has gone silent. Nothing else changes.

GOOD_NOTE = "摄像头已修复"  # 6 characters
EXTRAS = [  # (note, silent) besides the plain (None, False) of the table above
    pytest.param(GOOD_NOTE, False, id="note-not_silent"),
    pytest.param(None, True, id="no_note-silent"),
    pytest.param("ok ok", True, id="short_note-silent"),
    pytest.param(GOOD_NOTE, True, id="note-silent"),
]


def _expect_with(state: str, action: str, latching: bool, condition_active: bool, note: str | None,
                 silent: bool) -> str | RefusedAction:
    if (state, action, latching, condition_active) != ("active_ack", "close", False, True):
        return _expect(state, action, latching, condition_active)  # a note and a silent source change nothing else
    if not silent:
        return RefusedAction("less than 10 minutes ago")
    if not note or len("".join(note.split())) < 6:
        return RefusedAction("note of at least 6 characters")
    return "closed"


FORCED = [
    pytest.param(s, a, lat, cond, *extra.values, _expect_with(s, a, lat, cond, *extra.values),
                 id=f"{s}-{a}-{'latching' if lat else 'nonlatching'}-{'input_active' if cond else 'input_normal'}-"
                    f"{extra.id}")
    for s, a, (lat, cond), extra in itertools.product(STATES, ACTIONS, FLAGS, EXTRAS)
]


@pytest.mark.parametrize(("state", "action", "latching", "condition_active", "note", "silent", "expected"), FORCED)
def test_operator_transition_with_note_and_silent_source(state: str, action: str, latching: bool,
                                                          condition_active: bool, note: str | None, silent: bool,
                                                          expected: str | RefusedAction) -> None:
    kwargs: dict[str, Any] = {"latching": latching, "condition_active": condition_active, "note": note,
                              "silent": silent}
    if isinstance(expected, RefusedAction):
        with pytest.raises(RefusedAction, match=str(expected)):
            operator_transition(state, action, **kwargs)  # type: ignore[arg-type]
    else:
        assert operator_transition(state, action, **kwargs) == expected  # type: ignore[arg-type]
    assert closes_while_active(state, action, latching=latching,  # type: ignore[arg-type]
                               condition_active=condition_active) == (
        (state, action, latching, condition_active) == ("active_ack", "close", False, True))


def test_forced_close_table_covers_every_pair() -> None:
    assert len(FORCED) == len(STATES) * len(ACTIONS) * 4 * len(EXTRAS) == 240


def test_the_refusals_name_the_limits_the_rules_use() -> None:
    """The messages are literal (translated whole): they must say the numbers the rules check."""
    with pytest.raises(RefusedAction, match=f"{NOTE_MIN} characters"):
        operator_transition("active_ack", "close", latching=False, condition_active=True, note="x", silent=True)
    with pytest.raises(RefusedAction, match=f"{int(SILENT_AFTER.total_seconds() // 60)} minutes"):
        operator_transition("active_ack", "close", latching=False, condition_active=True, note=GOOD_NOTE)
    with pytest.raises(RefusedAction, match="close the alarm with a note"):  # reset points to the way out
        operator_transition("active_ack", "reset", latching=False, condition_active=True, note=GOOD_NOTE, silent=True)


@pytest.mark.parametrize(("alarm_type", "online", "age", "silent"), [
    ("tamper", False, timedelta(0), True),  # its device is offline: nothing it says can reach us
    ("tamper", True, timedelta(0), False),  # just reported, by a device that is talking
    ("tamper", True, timedelta(minutes=9, seconds=59), False),
    ("tamper", True, timedelta(minutes=10), True),  # nothing about it for 10 minutes
    ("tamper", None, timedelta(minutes=1), False),  # a device never heard from is not "offline"
    ("tamper", None, timedelta(hours=3), True),
    ("incident_deadline", None, timedelta(minutes=1), False),  # no device behind it: only time counts
    ("device_offline", False, timedelta(minutes=1), False),  # the device being offline is this alarm's news
    ("device_offline", False, timedelta(minutes=10), True),
    ("tamper", True, None, True),  # no event time known at all
    ("tamper", True, -timedelta(minutes=30), False),  # a device clock ahead: not silent
])
def test_source_silent(alarm_type: str, online: bool | None, age: timedelta | None, silent: bool) -> None:
    assert source_silent(alarm_type, online, None if age is None else AT - age, AT) is silent


@pytest.mark.parametrize(("note", "ok"), [
    (None, False), ("", False), ("      ", False), ("ok", False), ("a b c d e", False),
    ("摄像头已修复", True), ("camera ok", True), (" ab  cd  ef ", True),
])
def test_note_long_enough(note: str | None, ok: bool) -> None:
    assert note_long_enough(note) is ok


def camera_tamper(active: bool) -> Event:
    return make_event("s1", "camera", "cam-1", "campus.camera.tamper",
                      {"kind": "covered", "active": active, "detail": "lens covered"}, 1, TS, TZ)


def test_after_a_forced_close_the_input_raises_a_new_alarm_and_a_late_clear_does_nothing() -> None:
    """Closed alarms are not open alarms (the records look up open ones by key): the same input reporting
    the condition again raises a new alarm, and its late "cleared" finds nothing to clear or reopen."""
    key = "cam-1:tamper:covered"
    assert alarm_key(camera_tamper(True)) == key
    state = operator_transition("active_unack", "ack", latching=False, condition_active=True)
    assert operator_transition(state, "close", latching=False, condition_active=True, note="camera back, seen",
                               silent=True) == "closed"
    assert evaluate(camera_tamper(False), {}, AT) == []
    (effect,) = evaluate(camera_tamper(True), {}, AT)
    assert isinstance(effect, RaiseAlarm) and (effect.key, effect.alarm_type) == (key, "tamper")
