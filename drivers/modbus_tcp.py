"""What the drivers of Modbus TCP controllers share (the bollard PLC, the relay module): a client with the
timeouts a controller on the LAN needs, each failure counted with a reason a person can act on, the device
reported online and offline once each way, and the poll loop that takes it offline after `offline_after`
failed polls in a row. One transaction at a time: hold `io` around each poll and each command."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.base import DriverContext
from drivers.modbus_di.schema import TcpConnection


class ModbusTcpLink:
    def __init__(self, ctx: DriverContext, device_id: str, connection: TcpConnection,
                 counters: dict[str, int]) -> None:
        self.ctx = ctx
        self.device_id = device_id
        self.connection = connection
        self.counters = counters  # the driver's; "errors" counted here
        self.client: AsyncModbusTcpClient | None = None
        self.online: bool | None = None
        self.last_error: str | None = None
        self.io = asyncio.Lock()

    def where(self) -> str:
        c = self.connection
        return f"{c.host}:{c.port} unit {c.unit}"

    async def connect(self) -> bool:
        """A new client, connected within twice the timeout; False (and last_error) if not."""
        c = self.connection
        self.client = AsyncModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0,
                                           reconnect_delay=0, reconnect_delay_max=0)
        try:
            return bool(await asyncio.wait_for(self.client.connect(), c.timeout_s * 2))
        except (TimeoutError, OSError, ModbusException) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    async def open(self, prepare: Callable[[], Awaitable[bool]], offline: Callable[[str], None]) -> bool:
        """Connect and `prepare` the controller (holding io: its first writes); on failure `offline(reason)`,
        the client closed, False: run_with_reconnect tries again with backoff."""
        ok = await self.connect()
        if ok:
            async with self.io:
                ok = await prepare()
        if not ok:
            self.counters["errors"] += 1
            offline(f"no answer from {self.where()} ({self.last_error or 'connection refused'})")
            self.close()
            return False
        self.counters["reconnects"] += 1
        return True

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def call(self, request: Callable[[AsyncModbusTcpClient, int], Awaitable[Any]], what: str) -> Any | None:
        """One transaction (`request(client, unit)`), bounded by twice the timeout; None when there is no
        connection, it failed or the controller answered with an exception (counted, last_error says which)."""
        if self.client is None:
            self.last_error = "not connected"
            return None
        c = self.connection
        try:
            async with asyncio.timeout(c.timeout_s * 2):  # bounds a hung transport; cheaper than wait_for
                response = await request(self.client, c.unit)
        except (TimeoutError, OSError, ModbusException) as exc:
            self.failed(exc)
            return None
        if response.isError():
            self.counters["errors"] += 1
            self.last_error = f"Modbus exception response {response} {what}"
            return None
        return response

    def failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def came_online(self) -> None:
        if self.online is not True:
            self.online = True
            self.ctx.set_online(self.device_id, True)

    def went_offline(self, reason: str) -> None:
        if self.online is not False:
            self.online = False
            self.ctx.log.warning("%s offline: %s", self.device_id, reason)
            self.ctx.set_online(self.device_id, False, reason)

    async def poll_until_failure(self, stop: asyncio.Event, period_s: float, offline_after: int,
                                 poll: Callable[[], Awaitable[bool]], offline: Callable[[str], None]) -> None:
        """`poll` (holding io) every period_s until offline_after fail in a row: then `offline(reason)`."""
        failures = 0
        next_poll = time.monotonic()
        while not stop.is_set():
            self.ctx.heartbeat()
            async with self.io:
                ok = await poll()
            failures = 0 if ok else failures + 1
            if failures >= offline_after:
                offline(f"{self.where()} stopped answering: {self.last_error}")
                return
            next_poll += period_s
            delay = next_poll - time.monotonic()
            if delay < 0:  # fell behind (slow controller): do not try to catch up with a burst
                next_poll, delay = time.monotonic(), 0
            await asyncio.sleep(delay)  # cheaper than wait_for(stop.wait()) at 20 polls/s; stop is seen next cycle
