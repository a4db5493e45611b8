"""The bollard state machine: readings and commands in, states, coil actions and reasons out (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.bollard.machine import STATES, BollardMachine, Inputs, Settings, decide, utc_clock
from drivers.bollard.schema import BollardConfig

T0 = 1_717_200_000.0  # 2024-06-01 00:00:00 UTC
LOWERED = Inputs(up_limit=False, down_limit=True, vehicle_present=(False, False))
RAISED = Inputs(up_limit=True, down_limit=False, vehicle_present=(False, False))
MIDWAY = Inputs(up_limit=False, down_limit=False, vehicle_present=(False, False))


def reading(base: Inputs = LOWERED, *, loops: tuple[bool, ...] | None = None, **changes: Any) -> Inputs:
    values = {"up_limit": base.up_limit, "down_limit": base.down_limit,
              "vehicle_present": base.vehicle_present if loops is None else loops,
              "fault": base.fault, "efo_active": base.efo_active, "fire": base.fire, **changes}
    return Inputs(**values)


def ready(start: Inputs = LOWERED, at: float = T0) -> BollardMachine:
    """A machine that has seen `start` long enough for the interlock to allow a raise."""
    m = BollardMachine(2)
    m.update(start, at - 5)
    m.update(start, at)
    return m


def coils(step_or_decision: Any) -> list[str]:
    return [a.coil for a in step_or_decision.actions]


# --- states from readings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("inputs", "state"), [
    (LOWERED, "lowered"),
    (RAISED, "raised"),
    (MIDWAY, "unknown"),
    (reading(fault=True), "fault"),
    (reading(RAISED, down_limit=True), "fault"),
    (reading(RAISED, efo_active=True), "efo"),
])
def test_state_from_a_first_reading(inputs: Inputs, state: str) -> None:
    m = BollardMachine(2)
    assert m.state == "unknown"
    step = m.update(inputs, T0)
    assert step.state == state == m.state


def test_both_limits_is_a_sensor_fault() -> None:
    m = ready(RAISED)
    step = m.update(reading(RAISED, down_limit=True), T0 + 1)
    assert [(f.active, f.reason) for f in step.faults] == [
        (True, "sensor fault: up-limit and down-limit both active")]
    assert [(t.from_state, t.to_state) for t in step.transitions] == [("raised", "fault")]


def test_a_full_raise_and_lower() -> None:
    m = ready()
    decision, step = m.command("raise", T0, issued_by="guard-wang")
    assert decision.accepted and coils(decision) == ["raise"]
    assert [(t.from_state, t.to_state) for t in step.transitions] == [("lowered", "raising")]
    assert "guard-wang" in step.transitions[0].reason
    assert m.update(MIDWAY, T0 + 1).state == "raising"
    step = m.update(RAISED, T0 + 2)
    assert [(t.from_state, t.to_state, t.reason) for t in step.transitions] == [
        ("raising", "raised", "up-limit reached")]
    decision, step = m.command("lower", T0 + 3, issued_by="rule:dismissal")
    assert decision.accepted and coils(decision) == ["lower"] and m.state == "lowering"
    m.update(MIDWAY, T0 + 4)
    assert m.update(LOWERED, T0 + 5).state == "lowered"


@pytest.mark.parametrize(("start", "command", "detail"), [
    (RAISED, "raise", "already raised"),
    (LOWERED, "lower", "already lowered"),
])
def test_a_command_for_where_it_already_is_is_accepted_without_moving(start: Inputs, command: str,
                                                                       detail: str) -> None:
    decision, step = ready(start).command(command, T0)
    assert (decision.accepted, decision.reason, coils(decision), step.transitions) == (True, detail, [], [])


# --- the vehicle-loop interlock ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["raise", "efo"])
@pytest.mark.parametrize(("loops", "since", "now", "reason"), [
    ((True, False), T0, T0 + 3, "vehicle on loop 1 (since 00:00:00)"),
    ((False, True), T0 + 2, T0 + 3, "vehicle on loop 2 (since 00:00:02)"),
    ((True, True), T0, T0 + 3, "vehicle on loop 1 (since 00:00:00), loop 2 (since 00:00:00)"),
])
def test_raise_and_efo_are_refused_while_a_vehicle_is_on_a_loop(command: str, loops: tuple[bool, bool],
                                                                 since: float, now: float, reason: str) -> None:
    m = ready()
    m.update(reading(loops=loops), since)
    decision, step = m.command(command, now, issued_by="guard")
    assert (decision.accepted, decision.reason) == (False, reason)
    assert coils(decision) == [] and step.transitions == [] and m.state == "lowered" and not m.efo


@pytest.mark.parametrize(("after", "accepted"), [(0.0, False), (0.5, False), (0.99, False), (1.0, True),
                                                 (3.0, True)])
def test_raise_waits_clear_delay_after_the_loop_clears(after: float, accepted: bool) -> None:
    m = ready()
    m.update(reading(loops=(True, False)), T0 + 1)
    m.update(LOWERED, T0 + 7)  # left at 00:00:07
    decision = m.decide("raise", T0 + 7 + after, issued_by="guard")
    assert decision.accepted is accepted
    if not accepted:
        assert decision.reason == ("vehicle left loop 1 at 00:00:07: raising waits until 1 s after "
                                   "the loop clears")


def test_clear_delay_is_configurable_and_formatting_is_the_callers() -> None:
    m = BollardMachine(1, Settings(clear_delay_s=2.5), clock=lambda ts: f"<{ts - T0:.0f}>")
    m.update(Inputs(False, True, (True,)), T0 - 10)
    m.update(Inputs(False, True, (False,)), T0)
    assert m.decide("raise", T0 + 2).reason == "vehicle left loop 1 at <0>: raising waits until 2.5 s after the " \
                                               "loop clears"
    assert m.decide("raise", T0 + 2.5).accepted


def test_raise_waits_until_the_loops_have_been_read_for_the_clear_delay() -> None:
    m = BollardMachine(2)
    assert m.decide("raise", T0).reason == "no reading from the bollard controller yet"
    m.update(LOWERED, T0)
    assert "loops read only since 00:00:00" in m.decide("raise", T0 + 0.5).reason
    assert m.decide("raise", T0 + 1).accepted
    m.lost_contact(T0 + 2)
    assert m.state == "unknown"
    assert not m.decide("raise", T0 + 3).accepted
    m.update(LOWERED, T0 + 4)
    assert "loops read only since" in m.decide("raise", T0 + 4.5).reason


def test_a_vehicle_arriving_while_raising_reverses_the_travel() -> None:
    m = ready()
    m.command("raise", T0, issued_by="guard")
    step = m.update(reading(MIDWAY, loops=(False, True)), T0 + 0.5)
    assert [(a.coil, a.issued_by) for a in step.actions] == [("lower", "safety-loop")]
    assert [(t.to_state, t.reason) for t in step.transitions] == [
        ("lowering", "vehicle on loop 2 while raising: travel reversed")]


def test_lower_is_never_interlocked_by_the_loops() -> None:
    m = ready(RAISED)
    m.update(reading(RAISED, loops=(True, True)), T0 + 1)
    decision, _ = m.command("lower", T0 + 1, issued_by="guard")
    assert decision.accepted and coils(decision) == ["lower"]


# --- travel timeout, fault, reset ---------------------------------------------------------------------------------


def test_travel_timeout_is_a_fault_with_a_reason() -> None:
    m = ready()
    m.command("raise", T0, issued_by="guard")
    assert m.update(MIDWAY, T0 + 7.9).state == "raising"
    step = m.update(MIDWAY, T0 + 8.2)
    assert [(f.active, f.reason) for f in step.faults] == [
        (True, "travel timeout: commanded raise 8.2 s ago, up-limit not reached")]
    assert [(t.from_state, t.to_state) for t in step.transitions] == [("raising", "fault")]
    assert m.update(MIDWAY, T0 + 20).faults == [], "a fault is reported once"


def test_travel_timeout_is_configurable_and_covers_lowering() -> None:
    m = BollardMachine(2, Settings(travel_timeout_s=2))
    m.update(RAISED, T0 - 5)
    m.command("lower", T0)
    step = m.update(MIDWAY, T0 + 2.5)
    assert step.faults[0].reason == "travel timeout: commanded lower 2.5 s ago, down-limit not reached"


@pytest.mark.parametrize("command", ["raise", "lower", "efo"])
def test_motion_is_refused_in_fault_until_reset(command: str) -> None:
    m = ready()
    m.update(reading(fault=True), T0)
    decision, _ = m.command(command, T0 + 1)
    assert not decision.accepted
    assert decision.reason == "bollard in fault (fault input active at the controller): reset first"


def test_reset_is_refused_while_the_fault_input_is_active_and_clears_it_after() -> None:
    m = ready()
    m.update(reading(fault=True), T0)
    decision, _ = m.command("reset", T0 + 1, issued_by="supervisor")
    assert not decision.accepted and "still reports a fault" in decision.reason
    m.update(LOWERED, T0 + 2)
    assert m.state == "fault", "a fault latches: the input going quiet does not clear it"
    decision, step = m.command("reset", T0 + 3, issued_by="supervisor")
    assert decision.accepted
    assert [(f.active, f.reason) for f in step.faults] == [(False, "reset: fault input active at the controller")]
    assert [(t.from_state, t.to_state) for t in step.transitions] == [("fault", "lowered")]


def test_reset_after_a_jam_leaves_the_state_unknown_and_a_new_command_can_move_it() -> None:
    m = ready()
    m.command("raise", T0)
    m.update(MIDWAY, T0 + 9)
    assert m.state == "fault"
    decision, step = m.command("reset", T0 + 10)
    assert decision.accepted and step.transitions[0].to_state == "unknown"
    decision, _ = m.command("lower", T0 + 11)
    assert decision.accepted and m.state == "lowering"


def test_reset_with_nothing_to_reset() -> None:
    decision, step = ready().command("reset", T0)
    assert (decision.accepted, decision.reason, step.transitions) == (True, "nothing to reset", [])


def test_unknown_command() -> None:
    decision = ready().decide("explode", T0)
    assert not decision.accepted and "unknown command 'explode'" in decision.reason


# --- EFO and fire -------------------------------------------------------------------------------------------------


def test_efo_latches_until_reset_and_blocks_lowering() -> None:
    m = ready()
    decision, step = m.command("efo", T0, issued_by="rule:panic-linkage")
    assert decision.accepted and coils(decision) == ["efo"]
    assert [t.to_state for t in step.transitions] == ["efo"]
    m.update(reading(RAISED, efo_active=True), T0 + 1)
    assert m.state == "efo"
    assert m.decide("lower", T0 + 2).reason == "EFO active: reset first"
    assert m.decide("raise", T0 + 2).reason == "EFO active: reset first"
    assert m.command("reset", T0 + 3)[0].accepted
    assert m.state == "raised"
    m.update(reading(RAISED, efo_active=True), T0 + 4)
    assert m.state == "raised", "the controller's EFO input still on is not a new EFO"


def test_efo_active_at_the_controller_enters_efo() -> None:
    m = ready()
    step = m.update(reading(MIDWAY, efo_active=True), T0 + 1)
    assert [(t.to_state, t.reason) for t in step.transitions] == [("efo", "EFO active at the controller")]


@pytest.mark.parametrize("start", [RAISED, MIDWAY])
def test_fire_lowers(start: Inputs) -> None:
    m = ready(start)
    step = m.update(reading(start, fire=True), T0 + 1)
    assert [(a.coil, a.issued_by) for a in step.actions] == [("lower", "fire-input")]
    assert [(t.to_state, t.reason) for t in step.transitions] == [("lowering", "fire input active: lowering")]
    assert m.update(reading(start, fire=True), T0 + 1.1).actions == [], "once per fire, not every poll"
    assert m.decide("raise", T0 + 2).reason == "fire input active: the bollards are held lowered"
    assert m.decide("efo", T0 + 2).reason == "fire input active: the bollards are held lowered"


def test_fire_ends_efo_and_lowers() -> None:
    m = ready()
    m.command("efo", T0)
    m.update(reading(RAISED, efo_active=True), T0 + 1)
    step = m.update(reading(RAISED, efo_active=True, fire=True), T0 + 2)
    assert coils(step) == ["lower"] and m.state == "lowering" and not m.efo


def test_fire_when_lowered_does_nothing_and_fire_lowers_false_ignores_fire() -> None:
    m = ready()
    assert m.update(reading(fire=True), T0 + 1).actions == []
    m = BollardMachine(2, Settings(fire_lowers=False))
    m.update(RAISED, T0 - 5)
    assert m.update(reading(RAISED, fire=True), T0).actions == []
    assert m.state == "raised"


# --- config -------------------------------------------------------------------------------------------------------


def device(**changes: Any) -> dict[str, Any]:
    return {"id": "gate-bollards", "kind": "bollard", "driver": "modbus_bollard",
            "connection": {"host": "192.0.2.20"}, **changes}


def test_config_defaults() -> None:
    cfg = BollardConfig.model_validate(device())
    assert (cfg.connection.port, cfg.connection.unit, cfg.connection.timeout_s, cfg.poll_ms) == (502, 1, 0.5, 100)
    assert (cfg.coils.raise_, cfg.coils.lower, cfg.coils.efo) == (0, 1, 2)
    assert cfg.inputs.addresses() == [0, 1, 2, 3, 4, 5, 6]
    assert (cfg.travel_timeout_s, cfg.clear_delay_s, cfg.fire_lowers, cfg.pulse_ms) == (8.0, 1.0, True, 500)


@pytest.mark.parametrize(("changes", "message"), [
    ({"coils": {"raise": 0, "lower": 0}}, "three different coils"),
    ({"inputs": {"vehicle_loops": [1]}}, "input 1 is used for two things"),
    ({"inputs": {"vehicle_loops": []}}, "at least 1 item"),
    ({"clear_delay_s": 0.1}, "greater than or equal to 0.5"),
    ({"pulse_ms": 3000, "travel_timeout_s": 2}, "pulse_ms (3000) must be shorter"),
    ({"coils": {"rise": 0}}, "Extra inputs are not permitted"),
])
def test_config_errors_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BollardConfig.model_validate(device(**changes))


# --- fuzz ---------------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

inputs_st = st.builds(Inputs, up_limit=st.booleans(), down_limit=st.booleans(),
                      vehicle_present=st.tuples(st.booleans(), st.booleans()), fault=st.booleans(),
                      efo_active=st.booleans(), fire=st.booleans())
# Mostly quiet readings with the loops mostly clear, so sequences reach raised/raising/lowering and the
# interlock's edges often instead of latching a fault in the first steps.
CLEAR = (False, False)
quiet_st = st.builds(
    lambda limits, loops: Inputs(limits[0], limits[1], loops),
    st.sampled_from([(False, True), (True, False), (False, False)]),
    st.sampled_from([CLEAR, CLEAR, CLEAR, CLEAR, (True, False), (False, True), (True, True)]))
read_st = st.builds(lambda i: ("read", i), st.one_of(quiet_st, quiet_st, quiet_st, quiet_st, inputs_st))
command_st = st.builds(lambda c: ("cmd", c), st.sampled_from(["raise", "raise", "lower", "efo", "reset", "bogus"]))
step_st = st.tuples(st.floats(min_value=0, max_value=3, allow_nan=False),
                    st.one_of(read_st, read_st, read_st, command_st, command_st, st.just(("lost", None))))


@FUZZ
@given(st.lists(step_st, min_size=5, max_size=80), st.sampled_from([0.5, 1.0, 2.0]), st.booleans())
def test_fuzz_never_raises_and_never_raises_the_bollard_onto_a_vehicle(
        steps: list[tuple[float, tuple[str, Any]]], clear_delay: float, fire_lowers: bool) -> None:
    m = BollardMachine(2, Settings(travel_timeout_s=2.0, clear_delay_s=clear_delay, fire_lowers=fire_lowers))
    m.update(LOWERED, T0 - 5)  # start where a raise is allowed, so the sequences test the interlock often
    now = T0
    last_occupied: float | None = None
    contact, contact_at = True, T0 - 5
    for dt, (kind, value) in steps:
        now += dt
        if kind == "read":
            if any(value.vehicle_present):
                last_occupied = now
            if not contact:
                contact, contact_at = True, now
            out = m.update(value, now)
            assert not [a for a in out.actions if a.coil != "lower"], "only ever lowers on its own"
        elif kind == "lost":
            out = m.lost_contact(now)
            contact = False
        else:
            decision, out = m.command(value, now, issued_by="fuzz")
            if any(a.coil in ("raise", "efo") for a in decision.actions):
                reading_ = m.inputs
                assert reading_ is not None and contact
                assert not any(reading_.vehicle_present), "raised onto an occupied loop"
                assert last_occupied is None or now - last_occupied >= clear_delay, "raised within clear delay"
                assert now - contact_at >= clear_delay, "raised before the loops were seen for the clear delay"
                assert not (fire_lowers and reading_.fire)
        assert m.state in STATES
        assert (m.state == "fault") == (m.fault is not None)
        for t in out.transitions:
            assert t.from_state != t.to_state and t.reason


@FUZZ
@given(st.lists(inputs_st, min_size=1, max_size=20), st.sampled_from(["raise", "lower", "efo", "reset"]))
def test_fuzz_decide_is_pure(readings: list[Inputs], command: str) -> None:
    m = BollardMachine(2)
    for i, r in enumerate(readings):
        m.update(r, T0 + i)
    snap = m.snapshot()
    first = decide(snap, command, T0 + 30, m.settings, "x", utc_clock)
    assert decide(snap, command, T0 + 30, m.settings, "x", utc_clock) == first
    assert m.snapshot() == snap
