"""A Modbus TCP digital-input module (e.g. a 16-input alarm box) that speaks real Modbus (pymodbus server).

Runs in its own thread and event loop, so a test or the demo drives it with
plain calls: press(1), release(1), unplug(), plug_in(), fail_with(...).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

log = logging.getLogger("campusgw.sim.modbus_di")


class ModbusDISimulator:
    def __init__(self, inputs: int = 16, unit: int = 1, host: str = "127.0.0.1", port: int = 0) -> None:
        self.inputs = inputs
        self.unit = unit
        self.host = host
        self.port = port
        self._bits = [False] * inputs
        self._lock = threading.Lock()
        self._fail: ExcCodes | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self.reads = 0

    # -- control (any thread) ----------------------------------------------------------

    def press(self, number: int) -> float:
        """Close input `number` (1-based); returns the time of the change."""
        return self._set(number, True)

    def release(self, number: int) -> float:
        return self._set(number, False)

    def _set(self, number: int, value: bool) -> float:
        if not 1 <= number <= self.inputs:
            raise ValueError(f"input {number} does not exist: this module has inputs 1-{self.inputs}")
        with self._lock:
            self._bits[number - 1] = value
            return time.time()

    def fail_with(self, code: ExcCodes | None) -> None:
        """Answer every read with this Modbus exception (None: answer normally again)."""
        self._fail = code

    def unplug(self) -> None:
        """Stop answering at all: the listening socket and every connection close, as when unplugged."""
        self._call(self._stop_server())

    def plug_in(self) -> None:
        self._call(self._start_server())

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start_server())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_server())
            loop.close()

        logging.getLogger("pymodbus").setLevel(logging.ERROR)  # it warns about its own deprecations
        self._thread = threading.Thread(target=run, name="sim-modbus-di", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("Modbus DI simulator did not start")
        return self.port

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def _call(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start_server(self) -> None:
        bits = [SimData(0, count=self.inputs, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(self.unit, simdata=(bits, bits, regs, regs), action=self._action)
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        transport: Any = self._server.transport
        self.port = transport.sockets[0].getsockname()[1]

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        if self._fail is not None:
            return self._fail
        if function_code == 2:  # read discrete inputs: show the current contacts
            self.reads += 1
            with self._lock:
                for i in range(len(registers)):
                    n = start_address + i
                    registers[i] = int(self._bits[n]) if n < self.inputs else 0
        return None
