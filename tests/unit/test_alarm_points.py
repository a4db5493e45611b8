"""Alarm input points: input bits in, point changes out; and the Modbus DI point configuration."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.modbus_di.points import Point, PointChange, PointTracker
from drivers.modbus_di.schema import ModbusDIConfig

PANIC = Point("panic", 1, "panic")
TAMPER_NC = Point("tamper", 3, "tamper", normally_closed=True)
DOOR = Point("door", 16, "door_contact")


def bits(*on: int, n: int = 16) -> list[bool]:
    """A reading of n inputs with the given 1-based inputs set."""
    return [i + 1 in on for i in range(n)]


def summary(changes: list[PointChange]) -> list[tuple[str, bool, float, bool]]:
    return [(c.point.name, c.active, c.at, c.first_read) for c in changes]


# --- baseline and edges ----------------------------------------------------------------------------------------


def test_first_reading_is_a_baseline_reporting_only_active_points() -> None:
    tracker = PointTracker([PANIC, DOOR])
    assert summary(tracker.update(bits(1), 10.0)) == [("panic", True, 10.0, True)]
    assert tracker.active("panic") is True
    assert tracker.active("door") is False


def test_first_reading_with_nothing_active_reports_nothing() -> None:
    tracker = PointTracker([PANIC, DOOR])
    assert tracker.update(bits(), 10.0) == []
    assert tracker.active("panic") is False


def test_a_change_is_reported_once() -> None:
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(), 0.0)
    assert summary(tracker.update(bits(1), 1.0)) == [("panic", True, 1.0, False)]
    assert tracker.update(bits(1), 2.0) == []
    assert tracker.update(bits(1), 3.0) == []
    assert summary(tracker.update(bits(), 4.0)) == [("panic", False, 4.0, False)]
    assert tracker.update(bits(), 5.0) == []


def test_changes_of_several_points_in_one_reading() -> None:
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(), 0.0)
    assert summary(tracker.update(bits(1, 16), 1.0)) == [("panic", True, 1.0, False), ("door", True, 1.0, False)]


def test_unconfigured_inputs_are_ignored() -> None:
    tracker = PointTracker([PANIC])
    tracker.update(bits(), 0.0)
    assert tracker.update(bits(2, 3, 4, 16), 1.0) == []


def test_normally_closed_point_is_active_when_its_input_opens() -> None:
    tracker = PointTracker([TAMPER_NC])
    assert tracker.update(bits(3), 0.0) == []  # closed loop: normal
    assert tracker.active("tamper") is False
    assert summary(tracker.update(bits(), 1.0)) == [("tamper", True, 1.0, False)]  # loop cut
    assert summary(tracker.update(bits(3), 2.0)) == [("tamper", False, 2.0, False)]


def test_normally_closed_point_open_at_start_is_reported() -> None:
    tracker = PointTracker([TAMPER_NC])
    assert summary(tracker.update(bits(), 0.0)) == [("tamper", True, 0.0, True)]


# --- debounce ---------------------------------------------------------------------------------------------------


# Times and the debounce are binary fractions, so the comparisons at the boundary are exact.
def test_change_shorter_than_debounce_is_not_reported() -> None:
    tracker = PointTracker([PANIC], debounce_s=0.25)
    tracker.update(bits(), 0.0)
    assert tracker.update(bits(1), 1.0) == []
    assert tracker.update(bits(1), 1.125) == []
    assert tracker.update(bits(), 1.1875) == []  # bounced back before 250 ms
    assert tracker.update(bits(), 2.0) == []
    assert tracker.active("panic") is False


def test_change_lasting_the_debounce_is_reported_with_its_start_time() -> None:
    tracker = PointTracker([PANIC], debounce_s=0.25)
    tracker.update(bits(), 0.0)
    assert tracker.update(bits(1), 1.0) == []
    assert tracker.update(bits(1), 1.125) == []
    assert summary(tracker.update(bits(1), 1.25)) == [("panic", True, 1.0, False)]
    assert tracker.update(bits(1), 1.5) == []
    assert tracker.update(bits(), 2.0) == []
    assert summary(tracker.update(bits(), 2.5)) == [("panic", False, 2.0, False)]


def test_debounce_restarts_after_a_bounce() -> None:
    tracker = PointTracker([PANIC], debounce_s=0.25)
    tracker.update(bits(), 0.0)
    tracker.update(bits(1), 1.0)
    tracker.update(bits(), 1.125)
    assert tracker.update(bits(1), 1.1875) == []
    assert tracker.update(bits(1), 1.375) == []  # 375 ms after the first edge, but only 187.5 ms of this one
    assert summary(tracker.update(bits(1), 1.4375)) == [("panic", True, 1.1875, False)]


def test_zero_debounce_reports_on_the_first_differing_poll() -> None:
    tracker = PointTracker([PANIC], debounce_s=0.0)
    tracker.update(bits(), 0.0)
    assert summary(tracker.update(bits(1), 0.05)) == [("panic", True, 0.05, False)]


# --- reconnect --------------------------------------------------------------------------------------------------


def test_after_reset_a_point_still_active_is_not_reported_again() -> None:
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(1), 0.0)
    tracker.reset()
    assert tracker.update(bits(1), 5.0) == []
    assert tracker.active("panic") is True


def test_after_reset_a_point_found_inactive_is_reported_restored() -> None:
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(1), 0.0)
    tracker.reset()
    assert summary(tracker.update(bits(), 5.0)) == [("panic", False, 5.0, True)]


def test_after_reset_a_point_found_active_is_reported_as_first_read() -> None:
    """A press latched by the module while it was unreachable is not lost."""
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(), 0.0)
    tracker.reset()
    assert summary(tracker.update(bits(16), 5.0)) == [("door", True, 5.0, True)]


def test_reset_drops_a_pending_debounce() -> None:
    tracker = PointTracker([PANIC], debounce_s=1.0)
    tracker.update(bits(), 0.0)
    tracker.update(bits(1), 1.0)  # pending, not yet reported
    tracker.reset()
    assert tracker.update(bits(), 3.0) == []  # baseline: still inactive, nothing to report


# --- short readings ---------------------------------------------------------------------------------------------


def test_short_reading_is_counted_not_a_crash() -> None:
    tracker = PointTracker([PANIC, DOOR])
    assert summary(tracker.update(bits(1, n=8), 0.0)) == [("panic", True, 0.0, True)]  # door is on input 16
    assert tracker.short_readings == 1
    assert tracker.update([], 1.0) == []
    assert tracker.short_readings == 3
    assert tracker.readings == 2
    assert tracker.active("panic") is True  # an empty reading does not clear anything


def test_point_missing_from_a_short_first_reading_gets_a_baseline_later() -> None:
    tracker = PointTracker([PANIC, DOOR])
    tracker.update(bits(n=8), 0.0)  # door (input 16) not in this reading
    assert tracker.update(bits(), 1.0) == []


# --- fuzzing ----------------------------------------------------------------------------------------------------

FUZZ_POINTS = [Point("a", 1, "panic"), Point("b", 2, "tamper", normally_closed=True), Point("c", 9, "fault"),
               Point("d", 20, "door_contact", normally_closed=True)]

readings = st.lists(
    st.tuples(st.lists(st.booleans(), max_size=20),
              st.floats(min_value=0.0, max_value=0.5, allow_nan=False),
              st.booleans()),
    max_size=40,
)


@settings(max_examples=300, deadline=None, database=None)
@given(steps=readings, debounce=st.sampled_from([0.0, 0.05, 0.2]), start=st.floats(0, 2e9, allow_nan=False))
def test_random_readings_never_crash_and_changes_alternate(
        steps: list[tuple[list[bool], float, bool]], debounce: float, start: float) -> None:
    tracker = PointTracker(FUZZ_POINTS, debounce_s=debounce)
    reported: dict[str, list[PointChange]] = {p.name: [] for p in FUZZ_POINTS}
    now = start
    for reading, step, reconnect in steps:
        if reconnect:
            tracker.reset()
        now += step
        for change in tracker.update(reading, now):
            assert change.at <= now
            reported[change.point.name].append(change)
    assert tracker.readings == len(steps)
    for name, changes in reported.items():
        states = [c.active for c in changes]
        assert all(x != y for x, y in itertools.pairwise(states)), (name, states)
        times = [c.at for c in changes]
        assert times == sorted(times), (name, times)
        if changes:
            assert tracker.active(name) == changes[-1].active


# --- ModbusDIConfig ---------------------------------------------------------------------------------------------


def device(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "gate-alarm-box", "kind": "alarm_input", "driver": "modbus_di",
        "connection": {"host": "127.0.0.1", "port": 5020},
        "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic"},
                   {"input": 16, "name": "box-tamper", "type": "tamper", "contact": "normally_closed"}],
    }
    out.update(changes)
    return out


def test_modbus_di_config_accepts_a_good_device() -> None:
    cfg = ModbusDIConfig.model_validate(device())
    assert (cfg.inputs, cfg.poll_ms, cfg.debounce_ms, cfg.connection.unit) == (16, 50, 0, 1)
    assert [p.input for p in cfg.points] == [1, 16]


def test_point_beyond_the_module_inputs_is_refused() -> None:
    points = [{"input": 17, "name": "extra", "type": "panic"}]
    with pytest.raises(ValidationError, match=r"'extra' is on input 17 but the module has inputs: 16"):
        ModbusDIConfig.model_validate(device(points=points))
    assert ModbusDIConfig.model_validate(device(points=points, inputs=32)).points[0].input == 17


def test_same_input_twice_is_refused() -> None:
    points = [{"input": 4, "name": "one", "type": "panic"}, {"input": 4, "name": "two", "type": "duress"}]
    with pytest.raises(ValidationError, match=r"'two' \(input 4\) is configured twice"):
        ModbusDIConfig.model_validate(device(points=points))


def test_same_point_name_twice_is_refused() -> None:
    points = [{"input": 4, "name": "one", "type": "panic"}, {"input": 5, "name": "one", "type": "duress"}]
    with pytest.raises(ValidationError, match="configured twice"):
        ModbusDIConfig.model_validate(device(points=points))


def test_device_with_no_points_is_refused() -> None:
    with pytest.raises(ValidationError, match="points"):
        ModbusDIConfig.model_validate(device(points=[]))
