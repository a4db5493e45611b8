"""A Modbus TCP relay output module (DO: coils), as wired at a gatehouse to a siren, a strobe, door locks and the
PA system's trigger. Real Modbus (a pymodbus server) with the module's communication watchdog: when the master
has sent nothing for the watchdog's seconds, every relay drops (the module's safe state), as on the common
RS-485 / Ethernet DO modules whose watchdog time is a holding register.

Coils 0..15 are the relays. Holding register WATCHDOG_REGISTER holds the watchdog time in seconds (0: off).
Every coil change is recorded with its time, so a test can tell when the siren sounded and what switched it
off; `unplug()` / `plug_in()` / `fail_with()` as every Modbus simulator.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from simulators.base import ModbusSimulator

RELAYS = 16
WATCHDOG_REGISTER = 0x0100  # the module's communication watchdog, seconds (0 = off)


@dataclass(frozen=True)
class Change:
    at: float  # wall time
    relay: int
    on: bool
    by: str  # "master" (a write) or "watchdog"


class RelayOutputSimulator(ModbusSimulator):
    name = "relay_outputs"

    def __init__(self, unit: int = 1, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.unit = unit
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._relays = [False] * RELAYS
        self._last_request = time.monotonic()
        self.watchdog_s = 0
        self.changes: list[Change] = []
        self.watchdog_trips = 0
        self.requests = 0
        self._watch_task: asyncio.Task[None] | None = None

    # -- what happened -----------------------------------------------------------------

    def relay(self, n: int) -> bool:
        with self._lock:
            return self._relays[n]

    def relays(self) -> list[bool]:
        with self._lock:
            return list(self._relays)

    def switched(self, n: int, on: bool) -> list[Change]:
        """The changes of relay n to `on`, oldest first."""
        with self._lock:
            return [c for c in self.changes if c.relay == n and c.on == on]

    # -- the module ----------------------------------------------------------------------

    def _set(self, first: int, values: list[bool], by: str) -> None:
        with self._lock:
            wall = time.time()
            for offset, value in enumerate(values):
                n = first + offset
                if n < RELAYS and self._relays[n] != value:
                    self._relays[n] = value
                    self.changes.append(Change(wall, n, value, by))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            with self._lock:
                quiet = time.monotonic() - self._last_request
                due = self.watchdog_s > 0 and quiet >= self.watchdog_s and any(self._relays)
            if due:
                self.watchdog_trips += 1
                self._set(0, [False] * RELAYS, "watchdog")

    async def _start_server(self) -> None:
        bits = [SimData(0, count=RELAYS, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=WATCHDOG_REGISTER + 1, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(self.unit, simdata=(bits, bits, regs, regs), action=self._action)
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        self.port = self._listening_port()
        if self._watch_task is None:
            self._watch_task = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._loop is not None and self._watch_task is not None:
            self._loop.call_soon_threadsafe(self._watch_task.cancel)
        super().stop()

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        if self._fail is not None:
            return self._fail
        with self._lock:
            self._last_request = time.monotonic()
            self.requests += 1
        if function_code == 1:  # read coils: the relays as they are
            bits = self.relays()
            registers[:] = SimUtils.bitsToRegisters((bits + [False] * 16 * len(registers))[:16 * len(registers)])
        elif function_code in (5, 15) and set_values is not None:  # None is pymodbus reading back
            self._set(address, [bool(v) for v in set_values], "master")
        elif function_code in (6, 16) and set_values is not None and address == WATCHDOG_REGISTER:
            with self._lock:
                self.watchdog_s = int(set_values[0])
        return None
