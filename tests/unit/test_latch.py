"""Latching alarm modules: which latch bits the driver clears, and a press of any length on a module of
either latch style gives one trigger and one restore. Pure: a simulated module and a 50 ms poll, no sockets."""

from __future__ import annotations

import heapq
import itertools

import pytest

from drivers.modbus_di.points import Point, PointTracker, latches_to_clear
from simulators.modbus_di import LatchStyle, Module

PANIC = Point("panic", 1, "panic")
TAMPER_NC = Point("tamper", 1, "tamper", normally_closed=True)
POLL_MS = 50


# --- the rule, one reading at a time ----------------------------------------------------------------------------


@pytest.mark.parametrize(("pressed", "latched", "active", "triggered", "clear"), [
    (True, True, True, True, [1]),  # press just recorded, still held: clear, so the next press latches (edge)
    (False, True, True, True, [1]),  # a press shorter than the poll, recorded from its latch
    (True, True, True, False, []),  # held: nothing, however long
    (False, True, True, False, [1]),  # released, latched again while it was held (level)
    (False, True, False, False, []),  # not recorded yet (debounce under way): the latch holds the press
    (False, True, None, False, []),  # nothing recorded at all yet
    (False, False, True, False, []),  # nothing latched
])
def test_which_latches_are_cleared(pressed: bool, latched: bool, active: bool | None, triggered: bool,
                                   clear: list[int]) -> None:
    assert latches_to_clear([PANIC], [pressed], [latched], {"panic": active},
                            {"panic"} if triggered else set()) == clear


def test_a_short_reading_clears_nothing_it_cannot_see() -> None:
    assert latches_to_clear([PANIC, Point("door", 9, "door_contact")], [False] * 8, [True] * 8,
                            {"panic": True, "door": True}, set()) == [1]


def test_a_normally_closed_point_ignores_its_latch() -> None:
    """The module latches a contact closing: for a normally-closed loop that is the return to normal."""
    tracker = PointTracker([TAMPER_NC])
    assert tracker.update_latching([True], [True], 0.0) == ([], [])  # loop closed, latched when it closed
    changes, clear = tracker.update_latching([False], [True], 1.0)  # cut: not hidden by the stale latch
    assert [(c.point.name, c.active) for c in changes] == [("tamper", True)] and clear == []
    changes, clear = tracker.update_latching([True], [True], 2.0)
    assert [c.active for c in changes] == [False] and clear == []
    assert tracker.latched_readings == 0


def test_after_a_reconnect_a_latched_press_is_reported_and_cleared() -> None:
    tracker = PointTracker([PANIC])
    tracker.update_latching([True], [True], 0.0)
    tracker.reset()
    changes, clear = tracker.update_latching([False], [True], 5.0)  # released and pressed again, unseen
    assert [(c.active, c.first_read) for c in changes] == [(True, True)] and clear == [1]
    assert tracker.latched_readings == 1


# --- the simulated module ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "after_clear"), [("edge", False), ("level", True)])
def test_a_clear_while_held(style: LatchStyle, after_clear: bool) -> None:
    module = Module(4, style)
    module.set_input(0, True)
    assert module.latched[0]
    module.clear_latch(0)
    assert module.latched[0] is after_clear
    module.set_input(0, False)
    module.clear_latch(0)
    assert not module.latched[0]


# --- presses of every length against a 50 ms poll ---------------------------------------------------------------


def simulate(style: LatchStyle, presses: list[tuple[int, int]], *, point: Point = PANIC, debounce_ms: int = 0,
             clear_delay_ms: int = 0, lost_clears: int = 0) -> tuple[list[bool], int]:
    """Polls a module every 50 ms from t=0 while `presses` ((start, length) in ms) are made on input 1; clears
    reach the module `clear_delay_ms` after the reading that asked for them, except the first `lost_clears`.
    Returns the point's changes in order (True: triggered) and the clears carried out."""
    module = Module(16, style)
    module.set_input(0, point.normally_closed)  # at rest
    tracker = PointTracker([point], debounce_s=debounce_ms / 1000)
    order = itertools.count()  # at one instant: contacts change, then clears land, then the poll reads
    events: list[tuple[int, int, int, str, int]] = []
    for start, length in presses:
        heapq.heappush(events, (start, 0, next(order), "press", 0))
        heapq.heappush(events, (start + length, 0, next(order), "release", 0))
    end = max(start + length for start, length in presses) + 1000
    for t in range(0, end, POLL_MS):
        heapq.heappush(events, (t, 2, next(order), "poll", 0))
    changes: list[bool] = []
    while events:
        t, _, _, what, index = heapq.heappop(events)
        if what in ("press", "release"):
            module.set_input(0, (what == "press") != point.normally_closed)
        elif what == "clear":
            module.clear_latch(index)
        else:
            found, clear = tracker.update_latching(module.bits, module.latched, t / 1000)
            changes += [c.active for c in found]
            for number in clear:
                if lost_clears:
                    lost_clears -= 1
                else:
                    heapq.heappush(events, (t + clear_delay_ms, 1, next(order), "clear", number - 1))
    return changes, module.latch_clears


LENGTHS_MS = [10, 30, 60, 100, 500, 2000]
PHASES_MS = [0, 1, 25, 49]  # where the press begins within a poll period


@pytest.mark.parametrize("clear_delay_ms", [0, 20])
@pytest.mark.parametrize("phase", PHASES_MS)
@pytest.mark.parametrize("length", LENGTHS_MS)
@pytest.mark.parametrize("style", ["edge", "level"])
def test_every_press_gives_one_trigger_and_one_restore(style: LatchStyle, length: int, phase: int,
                                                       clear_delay_ms: int) -> None:
    first = 1000 + phase
    second = first + length + 150 + 17  # after the release is seen (two polls), at another phase
    changes, clears = simulate(style, [(first, length), (second, length)], clear_delay_ms=clear_delay_ms)
    assert changes == [True, False, True, False]
    assert clears <= 4, "a held button costs a clear at each end, not one per poll"


@pytest.mark.parametrize("lost", [1, 2, 3])
@pytest.mark.parametrize("length", [10, 100, 2000])
@pytest.mark.parametrize("style", ["edge", "level"])
def test_a_lost_clear_is_sent_again(style: LatchStyle, length: int, lost: int) -> None:
    changes, _ = simulate(style, [(1010, length), (1010 + length + 400, length)], lost_clears=lost)
    assert changes == [True, False, True, False]


@pytest.mark.parametrize("length", [10, 2000])
@pytest.mark.parametrize("style", ["edge", "level"])
def test_with_debounce_the_latch_holds_a_short_press_until_it_is_recorded(style: LatchStyle, length: int) -> None:
    changes, _ = simulate(style, [(1010, length), (1010 + length + 500, length)], debounce_ms=100)
    assert changes == [True, False, True, False]


@pytest.mark.parametrize("length", [60, 100, 500, 2000])
@pytest.mark.parametrize("style", ["edge", "level"])
def test_a_normally_closed_loop_cut_is_seen_once_and_its_latch_left_alone(style: LatchStyle, length: int) -> None:
    changes, clears = simulate(style, [(1025, length), (1025 + length + 100, length)], point=TAMPER_NC)
    assert changes == [True, False, True, False]
    assert clears == 0
