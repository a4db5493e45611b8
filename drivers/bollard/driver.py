"""Rising bollards (anti-ramming barriers) behind a PLC on Modbus TCP.

Polls the controller's discrete inputs (limits, vehicle loops, fault, EFO active, fire) every `poll_ms`
(default 100 ms), runs drivers.bollard.machine, pulses the raise / lower / EFO coils for `pulse_ms`, and
publishes the bollard's state (retained) and `campus.bollard.state_changed` / `.command` / `.fault` events.

Commands: raise, lower, efo, reset. Before deciding one the driver reads the inputs afresh, so the
vehicle-loop interlock never acts on a reading older than the command. A refusal is a result with the
reason, a `campus.bollard.command` event with accepted=false, and a log line. A controller that stops
answering is reported offline after `offline_after` failed polls, its state becomes `unknown`, every
command is refused, and it is reconnected with backoff capped at 1 s; on reconnecting every coil is
switched off first, so a pulse cut short by the outage cannot keep driving the bollard.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from drivers.bollard.machine import COMMANDS, BollardMachine, Coil, Inputs, Settings, Step
from drivers.bollard.schema import BollardConfig
from drivers.modbus_tcp import ModbusTcpLink
from gateway.config import DeviceConfig


class BollardDriver(Driver):
    name = "modbus_bollard"
    config_model = BollardConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        (device,) = devices
        assert isinstance(device, BollardConfig)
        self.cfg = device
        self.tz = ctx.tz
        self.machine = BollardMachine(
            len(device.inputs.vehicle_loops),
            Settings(device.travel_timeout_s, device.clear_delay_s, device.fire_lowers), clock=self._clock)
        self._first_input = min(device.inputs.addresses())
        self._input_count = max(device.inputs.addresses()) - self._first_input + 1
        self._stop = asyncio.Event()
        self._coils_on: dict[Coil, float] = {}  # coil -> monotonic time to switch it off
        self._published: dict[str, Any] | None = None
        self.last_command: dict[str, Any] | None = None
        self.counters = {"polls": 0, "errors": 0, "reconnects": 0, "commands": 0, "refused": 0,
                         "coil_writes": 0, "transitions": 0}
        # polls and commands interleave, one Modbus transaction at a time (link.io)
        self.link = ModbusTcpLink(ctx, device.id, device.connection, self.counters)

    def _clock(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%H:%M:%S")

    # -- connection --------------------------------------------------------------------

    async def start(self) -> None:
        await run_with_reconnect(self.ctx, self._stop, self._connect, self._poll_until_failure, self.link.close)

    async def _connect(self) -> bool:
        return await self.link.open(self._all_coils_off, self._went_offline)

    async def _all_coils_off(self) -> bool:
        """A coil left on by a pulse the outage cut short must not keep driving the bollard."""
        self._coils_on.clear()
        for coil in ("raise", "lower", "efo"):
            if not await self._write(coil, False):
                return False
        return True

    async def _poll_until_failure(self) -> None:
        await self.link.poll_until_failure(self._stop, self.cfg.poll_ms / 1000, self.cfg.offline_after, self._poll,
                                           self._went_offline)

    async def _poll(self) -> bool:
        """One read, the machine updated, due coils switched off, the state published. Hold `link.io`."""
        inputs = await self._read()
        if inputs is None:
            return False
        self.link.came_online()
        await self._run(self.machine.update(inputs, time.time()))
        now = time.monotonic()
        for coil, off_at in list(self._coils_on.items()):
            if now >= off_at and await self._write(coil, False):
                del self._coils_on[coil]
        self._publish_state()
        return True

    async def _read(self) -> Inputs | None:
        if self.link.client is None:
            return None
        self.counters["polls"] += 1
        response = await self.link.call(lambda client, unit: client.read_discrete_inputs(
            self._first_input, count=self._input_count, device_id=unit), "reading the inputs")
        if response is None:
            return None
        bits = list(response.bits[: self._input_count])
        if len(bits) < self._input_count:
            self.counters["errors"] += 1
            self.link.last_error = f"short read: {len(bits)} of {self._input_count} inputs"
            return None
        cfg = self.cfg.inputs

        def bit(address: int) -> bool:
            return bool(bits[address - self._first_input])

        return Inputs(up_limit=bit(cfg.up_limit), down_limit=bit(cfg.down_limit),
                      vehicle_present=tuple(bit(a) for a in cfg.vehicle_loops), fault=bit(cfg.fault),
                      efo_active=bit(cfg.efo_active), fire=bit(cfg.fire) if cfg.fire is not None else False)

    async def _write(self, coil: Coil, value: bool) -> bool:
        if self.link.client is None:
            self.link.last_error = "not connected"
            return False
        self.counters["coil_writes"] += 1
        address = self.cfg.coils.address(coil)
        return await self.link.call(lambda client, unit: client.write_coil(address, value, device_id=unit),
                                    f"writing the {coil} coil") is not None

    async def _pulse(self, coil: Coil) -> bool:
        """Switch the opposite motion off, then hold `coil` on for `pulse_ms` (the poll loop ends it)."""
        for other in (("lower",) if coil != "lower" else ("raise", "efo")):
            if other in self._coils_on:
                if not await self._write(other, False):
                    return False
                del self._coils_on[other]
        if not await self._write(coil, True):
            return False
        self._coils_on[coil] = time.monotonic() + self.cfg.pulse_ms / 1000
        return True

    # -- machine output -> coils, events, state -----------------------------------------

    async def _run(self, step: Step) -> None:
        """Carry out what the machine decided on its own (fire lowers, a loop reverses a raise), then report."""
        for action in step.actions:
            ok = await self._pulse(action.coil)
            self._command_event(action.coil, action.issued_by, ok,
                                action.reason if ok else f"{action.reason}; the controller did not take the "
                                                         f"write: {self.link.last_error}")
        self._report(step)

    def _report(self, step: Step) -> None:
        for t in step.transitions:
            self.counters["transitions"] += 1
            self.ctx.log.info("%s: %s -> %s (%s)", self.cfg.id, t.from_state, t.to_state, t.reason)
            self.ctx.emit(self.cfg.id, "campus.bollard.state_changed",
                          {"from": t.from_state, "to": t.to_state, "reason": t.reason[:500]})
        for f in step.faults:
            log = self.ctx.log.warning if f.active else self.ctx.log.info
            log("%s: fault %s: %s", self.cfg.id, "raised" if f.active else "cleared", f.reason)
            self.ctx.emit(self.cfg.id, "campus.bollard.fault",
                          {"reason": f.reason[:500], "active": f.active, "zone": self.cfg.zone,
                           "place": self.cfg.name})

    def _command_event(self, command: str, issued_by: str, accepted: bool, reason: str) -> None:
        self.counters["commands"] += 1
        if not accepted:
            self.counters["refused"] += 1
            self.ctx.log.warning("%s: %s from %s refused: %s", self.cfg.id, command, issued_by, reason)
        else:
            self.ctx.log.info("%s: %s from %s: %s", self.cfg.id, command, issued_by, reason)
        self.last_command = {"command": command, "issued_by": issued_by, "accepted": accepted,
                             "reason": reason, "at": round(time.time(), 3)}
        self.ctx.emit(self.cfg.id, "campus.bollard.command",
                      {"command": command, "issued_by": issued_by[:200], "accepted": accepted,
                       "reason": reason[:500], "state": self.machine.state})

    def state(self) -> dict[str, Any]:
        m = self.machine
        inputs = m.inputs
        return {
            "state": m.state,
            "reason": m.reason,
            "online": bool(self.link.online),
            "vehicle_present": list(inputs.vehicle_present) if inputs else None,
            "limits": {"up": inputs.up_limit, "down": inputs.down_limit} if inputs else None,
            "fault": m.fault,
            "efo": m.efo,
            "fire": inputs.fire if inputs else None,
            "raise_blocked": m.raise_blocked(time.time()),
            "last_command": self.last_command,
        }

    def _publish_state(self) -> None:
        state = self.state()
        if state != self._published:
            self._published = state
            self.ctx.set_state(self.cfg.id, state)

    def _went_offline(self, reason: str) -> None:
        self._coils_on.clear()
        self._report(self.machine.lost_contact(time.time(), f"controller not answering: {reason}"))
        self.link.went_offline(reason)
        self._publish_state()

    async def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        return {"online": bool(self.link.online), "state": self.machine.state, **self.counters,
                "last_error": self.link.last_error}

    # -- commands ----------------------------------------------------------------------

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        if name == "read_state":
            return CommandResult(True, data=self.state())
        if name not in COMMANDS:
            return await super().handle_command(device_id, name, args, issued_by)
        async with self.link.io:
            if not self.link.online or self.link.client is None:
                reason = (f"the bollard controller at {self.link.where()} is offline "
                          f"({self.link.last_error or 'not connected'})")
                self._command_event(name, issued_by, False, reason)
                self._publish_state()
                return CommandResult(False, reason, {"state": self.machine.state})
            # Decide on a reading taken now, not on the last poll: a car may have reached the loop since.
            if not await self._poll():
                reason = f"no answer from the bollard controller at {self.link.where()}: {self.link.last_error}"
                self._command_event(name, issued_by, False, reason)
                self._publish_state()
                return CommandResult(False, reason, {"state": self.machine.state})
            now = time.time()
            decision = self.machine.decide(name, now, issued_by)
            for action in decision.actions:
                if not await self._pulse(action.coil):
                    decision = replace(decision, accepted=False, actions=(),
                                       reason=f"the controller at {self.link.where()} did not take the {action.coil} "
                                              f"coil write: {self.link.last_error}")
                    break
            step = self.machine.apply(decision, now)
            self._command_event(name, issued_by, decision.accepted, decision.reason)
            self._report(step)  # its coils were written above, before the machine took the decision
            self._publish_state()
        return CommandResult(decision.accepted, decision.reason, {"state": self.machine.state})

