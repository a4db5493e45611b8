"""Rising-bollard state machine, sans-IO: input readings (and the time) in, states, coil actions and reasons out.

No sockets and no clock: the driver passes every reading and the time (seconds since the epoch), so the
machine is tested with plain values and fuzzed. Commands are decided by the pure function `decide`;
`BollardMachine.command` decides and applies in one go, or the driver applies a decision only once the
controller has taken the coil write (`apply`).

States: lowered, raising, raised, lowering, fault, efo, unknown. `fault` and `efo` latch: only `reset`
leaves them, and reset is refused while the controller's fault input is still active.

The interlock this module exists for: a bollard must never rise under a vehicle. Raise and EFO are refused
while any safety loop is occupied and until `clear_delay_s` after the last loop cleared (a car's loop
signal drops between axles and between a car and its trailer), and until the loops have been read for
`clear_delay_s` after (re)connecting, since nobody saw them before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["lowered", "raising", "raised", "lowering", "fault", "efo", "unknown"]
Coil = Literal["raise", "lower", "efo"]
Command = Literal["raise", "lower", "efo", "reset"]
COMMANDS: tuple[Command, ...] = ("raise", "lower", "efo", "reset")
STATES: tuple[State, ...] = ("lowered", "raising", "raised", "lowering", "fault", "efo", "unknown")


def utc_clock(ts: float) -> str:
    """The default clock format for reasons; the driver passes one in the site's time zone."""
    return time.strftime("%H:%M:%S", time.gmtime(ts))


@dataclass(frozen=True)
class Inputs:
    """One reading of the controller's inputs; `vehicle_present` has one entry per safety loop (loop 1 first)."""

    up_limit: bool
    down_limit: bool
    vehicle_present: tuple[bool, ...]
    fault: bool = False
    efo_active: bool = False
    fire: bool = False


@dataclass(frozen=True)
class Action:
    """Pulse this coil on the controller (the driver switches the opposite motion coil off first)."""

    coil: Coil
    reason: str
    issued_by: str  # a person, a rule, or the machine itself ("safety-loop", "fire-input")


@dataclass(frozen=True)
class Transition:
    from_state: State
    to_state: State
    reason: str


@dataclass(frozen=True)
class FaultChange:
    active: bool  # true: entered fault; false: the fault was reset
    reason: str


@dataclass(frozen=True)
class Motion:
    coil: Coil
    since: float
    issued_by: str


@dataclass(frozen=True)
class Settings:
    travel_timeout_s: float = 8.0
    clear_delay_s: float = 1.0
    fire_lowers: bool = True


@dataclass(frozen=True)
class Snapshot:
    """Everything `decide` needs; the machine's state at one moment, immutable."""

    state: State
    inputs: Inputs | None  # None: no reading since start or since contact was lost
    occupied_since: tuple[float | None, ...]  # per loop: when it became occupied, None if clear
    cleared_at: tuple[float | None, ...]  # per loop: when it last cleared
    readings_since: float | None  # first reading after (re)connecting
    fault: str | None  # latched fault reason
    efo: bool  # latched EFO
    motion: Motion | None


@dataclass(frozen=True)
class Decision:
    command: str
    accepted: bool
    reason: str
    actions: tuple[Action, ...] = ()
    # what applying it changes; `None` fields leave the machine as it is
    motion: Motion | None = None
    stop_motion: bool = False
    set_efo: bool = False
    clear_latches: bool = False


@dataclass
class Step:
    """What one update (or one applied command) produced."""

    state: State
    transitions: list[Transition] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    faults: list[FaultChange] = field(default_factory=list)


def raise_blocked(snap: Snapshot, now: float, settings: Settings, clock: Callable[[float], str]) -> str | None:
    """Why a raise (or EFO) may not happen now because of the vehicle loops, or None when it may."""
    if snap.inputs is None or snap.readings_since is None:
        return "no reading of the vehicle loops from the controller"
    occupied = [f"loop {i + 1} (since {clock(since)})" for i, since in enumerate(snap.occupied_since)
                if since is not None]
    if occupied:
        return "vehicle on " + ", ".join(occupied)
    delay = settings.clear_delay_s
    recent = [(at, i) for i, at in enumerate(snap.cleared_at) if at is not None and now - at < delay]
    if recent:
        at, i = max(recent)
        return (f"vehicle left loop {i + 1} at {clock(at)}: raising waits until {delay:g} s after "
                f"the loop clears")
    if now - snap.readings_since < delay:
        return (f"loops read only since {clock(snap.readings_since)}: raising waits until they have been "
                f"seen clear for {delay:g} s")
    return None


def decide(snap: Snapshot, command: str, now: float, settings: Settings, issued_by: str = "?",
           clock: Callable[[float], str] = utc_clock) -> Decision:
    """Whether `command` may be carried out now, why (or why not), and which coils it pulses. Pure."""
    if command not in COMMANDS:
        return Decision(command, False, f"unknown command '{command}', expected one of: {', '.join(COMMANDS)}")
    cmd = command
    inputs = snap.inputs
    if cmd == "reset":
        if snap.fault is None and not snap.efo:
            return Decision(cmd, True, "nothing to reset")
        if inputs is not None and inputs.fault:
            return Decision(cmd, False, "the controller still reports a fault: clear it at the bollard, then reset")
        what = f"fault cleared ({snap.fault})" if snap.fault is not None else "EFO cleared"
        return Decision(cmd, True, what, stop_motion=True, clear_latches=True)
    if snap.fault is not None:
        return Decision(cmd, False, f"bollard in fault ({snap.fault}): reset first")
    if inputs is None:
        return Decision(cmd, False, "no reading from the bollard controller yet")
    if cmd == "lower":
        if snap.efo:
            return Decision(cmd, False, "EFO active: reset first")
        if snap.state == "lowered" and snap.motion is None:
            return Decision(cmd, True, "already lowered")
        return Decision(cmd, True, "lowering", (Action("lower", f"commanded by {issued_by}", issued_by),),
                        motion=Motion("lower", now, issued_by))
    # raise and efo: both move the bollard up
    if snap.efo:
        if cmd == "efo":
            return Decision(cmd, True, "EFO already active")
        return Decision(cmd, False, "EFO active: reset first")
    if inputs.fire and settings.fire_lowers:
        return Decision(cmd, False, "fire input active: the bollards are held lowered")
    # A bollard must never rise under a vehicle, and EFO is no exception: an emergency raise that lifts a
    # car (or a child on a bicycle) is worse than the intrusion it is meant to stop. So the loop interlock
    # applies to EFO exactly as to a normal raise.
    blocked = raise_blocked(snap, now, settings, clock)
    if blocked is not None:
        return Decision(cmd, False, blocked)
    if cmd == "raise" and snap.state == "raised" and snap.motion is None:
        return Decision(cmd, True, "already raised")
    reason = "emergency fast operation" if cmd == "efo" else "raising"
    return Decision(cmd, True, reason, (Action(cmd, f"commanded by {issued_by}", issued_by),),
                    motion=Motion(cmd, now, issued_by), set_efo=cmd == "efo")


class BollardMachine:
    """The state of one bollard (or group on one controller), updated from readings and commands."""

    def __init__(self, loops: int, settings: Settings | None = None,
                 clock: Callable[[float], str] = utc_clock) -> None:
        if loops < 1:
            raise ValueError("a bollard needs at least one vehicle loop")
        self.loops = loops
        self.settings = settings or Settings()
        self.clock = clock
        self.state: State = "unknown"
        self.inputs: Inputs | None = None
        self.occupied_since: list[float | None] = [None] * loops
        self.cleared_at: list[float | None] = [None] * loops
        self.readings_since: float | None = None
        self.fault: str | None = None
        self.efo = False
        self.motion: Motion | None = None
        self.reason = "no reading yet"

    # -- queries -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(self.state, self.inputs, tuple(self.occupied_since), tuple(self.cleared_at),
                        self.readings_since, self.fault, self.efo, self.motion)

    def raise_blocked(self, now: float) -> str | None:
        return raise_blocked(self.snapshot(), now, self.settings, self.clock)

    # -- inputs ------------------------------------------------------------------------

    def lost_contact(self, now: float, why: str = "no answer from the controller") -> Step:
        """The controller stopped answering: nothing is known until the next reading."""
        self.inputs = None
        self.readings_since = None
        return self._settle(now, why)

    def update(self, inputs: Inputs, now: float) -> Step:
        if len(inputs.vehicle_present) != self.loops:
            raise ValueError(f"expected {self.loops} vehicle loop readings, got {len(inputs.vehicle_present)}")
        step = Step(self.state)
        before = self.inputs
        if self.readings_since is None:
            self.readings_since = now
        for i, present in enumerate(inputs.vehicle_present):
            if present and self.occupied_since[i] is None:
                self.occupied_since[i] = now
            elif not present and self.occupied_since[i] is not None:
                self.occupied_since[i] = None
                self.cleared_at[i] = now
        self.inputs = inputs
        why: str | None = None

        if inputs.fault:
            self._enter_fault("fault input active at the controller", step)
        if inputs.up_limit and inputs.down_limit:
            self._enter_fault("sensor fault: up-limit and down-limit both active", step)

        motion = self.motion
        if motion is not None:
            reached = inputs.down_limit if motion.coil == "lower" else inputs.up_limit
            if reached and not (inputs.up_limit and inputs.down_limit):
                self.motion = None
                why = "down-limit reached" if motion.coil == "lower" else "up-limit reached"
            elif now - motion.since > self.settings.travel_timeout_s:
                self.motion = None
                limit = "down-limit" if motion.coil == "lower" else "up-limit"
                self._enter_fault(f"travel timeout: commanded {motion.coil} {now - motion.since:.1f} s ago, "
                                  f"{limit} not reached", step)

        # A vehicle on a loop while a normal raise travels: reverse, as the controller's own loop logic
        # should; this is the second line of defence. An EFO in progress is not reversed: it was only
        # started with the loops clear, and reversing it would open the gate to the vehicle it stops.
        if self.motion is not None and self.motion.coil == "raise" and any(inputs.vehicle_present):
            loop = inputs.vehicle_present.index(True) + 1
            why = f"vehicle on loop {loop} while raising: travel reversed"
            self.motion = Motion("lower", now, "safety-loop")
            step.actions.append(Action("lower", why, "safety-loop"))

        fire_edge = inputs.fire and not (before is not None and before.fire)
        if fire_edge and self.settings.fire_lowers:
            why = "fire input active: lowering"
            self.efo = False
            if not (inputs.down_limit and not inputs.up_limit and self.motion is None):
                self.motion = Motion("lower", now, "fire-input")
                step.actions.append(Action("lower", why, "fire-input"))

        efo_edge = inputs.efo_active and not (before is not None and before.efo_active)
        if efo_edge and not self.efo and not (inputs.fire and self.settings.fire_lowers):
            self.efo = True
            why = "EFO active at the controller"

        settled = self._settle(now, why)
        step.transitions += settled.transitions
        step.state = self.state
        return step

    # -- commands ----------------------------------------------------------------------

    def decide(self, command: str, now: float, issued_by: str = "?") -> Decision:
        return decide(self.snapshot(), command, now, self.settings, issued_by, self.clock)

    def apply(self, decision: Decision, now: float) -> Step:
        """Make an accepted decision take effect (after its coil writes went through)."""
        if not decision.accepted:
            return Step(self.state)
        step = Step(self.state, actions=list(decision.actions))
        if decision.clear_latches:
            if self.fault is not None:
                step.faults.append(FaultChange(False, f"reset: {self.fault}"))
            self.fault = None
            self.efo = False
        if decision.stop_motion:
            self.motion = None
        if decision.set_efo:
            self.efo = True
        if decision.motion is not None:
            self.motion = decision.motion
        why = decision.reason if decision.clear_latches else None  # motion: the state says who commanded it
        settled = self._settle(now, why)
        step.transitions += settled.transitions
        step.state = self.state
        return step

    def command(self, command: str, now: float, issued_by: str = "?") -> tuple[Decision, Step]:
        decision = self.decide(command, now, issued_by)
        return decision, self.apply(decision, now)

    # -- internals ---------------------------------------------------------------------

    def _enter_fault(self, reason: str, step: Step) -> None:
        if self.fault is None:
            self.fault = reason
            self.motion = None
            step.faults.append(FaultChange(True, reason))

    def _derive(self) -> tuple[State, str]:
        inputs = self.inputs
        if self.fault is not None:
            return "fault", self.fault
        if self.efo:
            if self.motion is not None and self.motion.coil == "efo":
                return "efo", f"emergency fast operation commanded by {self.motion.issued_by}"
            return "efo", "emergency fast operation"
        if inputs is None:
            return "unknown", "no reading from the controller"
        if self.motion is not None:
            if self.motion.coil == "lower":
                return "lowering", f"lower commanded by {self.motion.issued_by}"
            return "raising", f"{self.motion.coil} commanded by {self.motion.issued_by}"
        if inputs.up_limit and not inputs.down_limit:
            return "raised", "up-limit active"
        if inputs.down_limit and not inputs.up_limit:
            return "lowered", "down-limit active"
        return "unknown", "neither limit switch active"

    def _settle(self, now: float, why: str | None) -> Step:
        state, default_reason = self._derive()
        step = Step(state)
        if state != self.state:
            reason = why if why and state not in ("fault",) else default_reason
            step.transitions.append(Transition(self.state, state, reason))
            self.reason = reason
        self.state = state
        return step

