"""A rising-bollard PLC that speaks real Modbus TCP (pymodbus server), with a physical model behind it.

Coils (0-based, the driver's defaults): 0 raise, 1 lower, 2 EFO (emergency fast operation). Writing a coil
on starts travel: `travel_s` for a full stroke (EFO: `efo_travel_s`), limit switches follow the position.
Discrete inputs: 0 up-limit, 1 down-limit, 2.. one per vehicle loop (2 and 3 by default), then fault,
EFO active and fire (4, 5, 6 with two loops). Like a real controller it has no loop interlock of its own
to rely on here, so a test sees exactly what the driver sent: every coil write is recorded, and any upward
travel while a loop is occupied is recorded as a violation.

Runs in its own thread and event loop; a test or the demo drives it with plain calls:
vehicle_arrives(1), vehicle_leaves(1), jam(), fault(True), fire(True), unplug(), plug_in().
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from simulators.base import ModbusSimulator

log = logging.getLogger("campusgw.sim.bollard")

COIL_RAISE, COIL_LOWER, COIL_EFO = 0, 1, 2
COILS = {COIL_RAISE: "raise", COIL_LOWER: "lower", COIL_EFO: "efo"}
IN_UP_LIMIT, IN_DOWN_LIMIT, IN_FIRST_LOOP = 0, 1, 2
BITS = 16  # one 16-bit block of coils and one of discrete inputs
JAM_AT = 0.5  # where a jammed bollard stops: midway


@dataclass(frozen=True)
class CoilWrite:
    at: float
    coil: str  # raise | lower | efo | <address> for an unassigned coil
    value: bool


class BollardSimulator(ModbusSimulator):
    name = "bollard"

    def __init__(self, loops: int = 2, unit: int = 1, host: str = "127.0.0.1", port: int = 0,
                 travel_s: float = 2.0, efo_travel_s: float = 1.0, start_raised: bool = False) -> None:
        if not 1 <= loops <= BITS - 5:
            raise ValueError(f"loops must be 1-{BITS - 5}")
        super().__init__()
        self.loops = loops
        self.unit = unit
        self.host = host
        self.port = port
        self.travel_s = travel_s
        self.efo_travel_s = efo_travel_s
        # inputs after the loops
        self.in_fault = IN_FIRST_LOOP + loops
        self.in_efo_active = self.in_fault + 1
        self.in_fire = self.in_fault + 2
        self._lock = threading.Lock()
        self._position = 1.0 if start_raised else 0.0  # 0 = fully down, 1 = fully up
        self._direction = 0  # +1 rising, -1 lowering, 0 still
        self._speed = 0.0  # stroke per second
        self._moved_at = time.monotonic()
        self._jammed = False
        self._vehicles = [False] * loops
        self._fault = False
        self._fire = False
        self._efo_active = False
        self.writes: list[CoilWrite] = []
        self.violations: list[str] = []  # upward travel started with a vehicle on a loop: must stay empty
        self.reads = 0

    # -- the physical model (call with the lock held) ----------------------------------

    def _advance(self, now: float) -> None:
        if self._direction:
            target = 1.0 if self._direction > 0 else 0.0
            position = self._position + self._direction * self._speed * (now - self._moved_at)
            if self._jammed and (self._position - JAM_AT) * (position - JAM_AT) <= 0 and self._position != JAM_AT:
                position, self._direction = JAM_AT, 0
            elif (position - target) * self._direction >= 0:
                position, self._direction = target, 0
            self._position = position
        self._moved_at = now

    def _start(self, direction: int, stroke_s: float, now: float) -> None:
        self._advance(now)
        if self._fault:
            return  # a controller in fault does not move
        if self._jammed and self._position == JAM_AT:
            return  # stuck where it jammed
        if direction > 0 and any(self._vehicles):
            loops = [str(i + 1) for i, v in enumerate(self._vehicles) if v]
            self.violations.append(f"raised with a vehicle on loop {', '.join(loops)}")
        self._direction, self._speed = direction, 1.0 / max(stroke_s, 1e-3)

    def _inputs(self, now: float) -> list[bool]:
        self._advance(now)
        bits = [False] * BITS
        bits[IN_UP_LIMIT] = self._position >= 1.0
        bits[IN_DOWN_LIMIT] = self._position <= 0.0
        for i, present in enumerate(self._vehicles):
            bits[IN_FIRST_LOOP + i] = present
        bits[self.in_fault] = self._fault
        bits[self.in_efo_active] = self._efo_active
        bits[self.in_fire] = self._fire
        return bits

    # -- control (any thread) ----------------------------------------------------------

    def vehicle_arrives(self, loop: int = 1) -> float:
        return self._set_vehicle(loop, True)

    def vehicle_leaves(self, loop: int = 1) -> float:
        return self._set_vehicle(loop, False)

    def _set_vehicle(self, loop: int, present: bool) -> float:
        if not 1 <= loop <= self.loops:
            raise ValueError(f"loop {loop} does not exist: this bollard has loops 1-{self.loops}")
        with self._lock:
            self._advance(time.monotonic())
            self._vehicles[loop - 1] = present
            return time.time()

    def jam(self, on: bool = True) -> None:
        """Travel stops midway (or where it is, if already past the middle) until unjammed."""
        with self._lock:
            self._advance(time.monotonic())
            self._jammed = on
            if on and self._direction and (self._position - JAM_AT) * self._direction > 0:
                self._direction = 0  # past the middle: stops where it is

    def fault(self, on: bool = True) -> None:
        """Set the controller's fault input; a faulted controller stops and ignores motion coils."""
        with self._lock:
            self._advance(time.monotonic())
            self._fault = on
            if on:
                self._direction = 0

    def fire(self, on: bool = True) -> None:
        with self._lock:
            self._fire = on

    def set_travel(self, travel_s: float, efo_travel_s: float | None = None) -> None:
        with self._lock:
            self.travel_s = travel_s
            if efo_travel_s is not None:
                self.efo_travel_s = efo_travel_s

    # -- what happened -----------------------------------------------------------------

    @property
    def position(self) -> float:
        with self._lock:
            self._advance(time.monotonic())
            return self._position

    def limits(self) -> tuple[bool, bool]:
        """(up-limit, down-limit) as the controller reports them now."""
        with self._lock:
            bits = self._inputs(time.monotonic())
        return bits[IN_UP_LIMIT], bits[IN_DOWN_LIMIT]

    def coil_writes(self, coil: str, value: bool | None = True) -> list[CoilWrite]:
        """The writes to one coil (by name), only those of `value` unless it is None."""
        with self._lock:
            return [w for w in self.writes if w.coil == coil and (value is None or w.value == value)]

    # -- lifecycle ---------------------------------------------------------------------

    async def _start_server(self) -> None:
        bits = [SimData(0, count=BITS, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(self.unit, simdata=(bits, bits, regs, regs), action=self._action)
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        self.port = self._listening_port()

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        if self._fail is not None:
            return self._fail
        if function_code == 2:  # read discrete inputs: the model as it is now
            self.reads += 1
            with self._lock:
                bits = self._inputs(time.monotonic())
            registers[:] = SimUtils.bitsToRegisters((bits + [False] * BITS * len(registers))[:BITS * len(registers)])
        elif function_code in (5, 15) and set_values is not None:  # write coil(s); None is pymodbus reading back
            self._on_coils(address, [bool(v) for v in set_values])
        return None

    def _on_coils(self, first: int, values: list[bool]) -> None:
        with self._lock:
            now, wall = time.monotonic(), time.time()
            for offset, value in enumerate(values):
                address = first + offset
                coil = COILS.get(address, str(address))
                self.writes.append(CoilWrite(wall, coil, value))
                if not value:
                    continue
                if coil == "raise":
                    self._start(+1, self.travel_s, now)
                elif coil == "lower":
                    self._efo_active = False  # leaving EFO takes a lower command at this controller
                    self._start(-1, self.travel_s, now)
                elif coil == "efo":
                    self._efo_active = not self._fault
                    self._start(+1, self.efo_travel_s, now)
