"""What every Modbus simulator shares: a pymodbus server in its own thread and event loop, so a test or
the CLI drives the simulated device with plain calls from any thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

from pymodbus.constants import ExcCodes


class ModbusSimulator(ABC):
    name = "simulator"

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None
        self._fail: ExcCodes | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    async def _start_server(self) -> None:
        """Build and start this simulator's pymodbus server (and set self.port for TCP)."""

    def start(self) -> int:
        """Start serving; returns the TCP port (0 for a serial line)."""
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:  # handed to start()'s caller
                error.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_server())
            loop.close()

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it warns about its own deprecations
        self._thread = threading.Thread(target=run, name=f"sim-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} simulator did not start")
        if error:
            raise error[0]
        return self.port

    def stop(self) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def fail_with(self, code: ExcCodes | None) -> None:
        """Answer every request with this Modbus exception (None: answer normally again)."""
        self._fail = code

    def unplug(self) -> None:
        """Stop answering at all: the listener and every connection close, as when unplugged."""
        self._call(self._stop_server())

    def plug_in(self) -> None:
        self._call(self._start_server())

    def _call(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def _listening_port(self) -> int:
        transport: Any = self._server.transport
        return int(transport.sockets[0].getsockname()[1])
