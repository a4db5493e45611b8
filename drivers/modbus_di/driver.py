"""Alarm inputs on Modbus digital-input modules (one-key alarm buttons, duress, tamper, contacts).

Modules are reached over Modbus TCP or Modbus RTU (RS-485); the modules that
share one line (a serial port, or a TCP gateway address) are one driver
instance and are polled in turn every `poll_ms` (default 50 ms). Input bits
become point changes through drivers.modbus_di.points and are emitted as
`campus.alarm_input.triggered` / `.restored`.

Short presses: where the module latches its inputs (config `latch`), the
latch bits are read with the inputs and cleared by writing 0 to the latch
coils, so a press shorter than the poll, or made while the module was
unreachable, is still caught (the latter marked `found_after_outage`). A latch
is cleared once its press is recorded and again once the input is released
(drivers.modbus_di.points.latches_to_clear): modules that latch on the level set it
again while the button is held. Normally-closed points ignore their latch.
Without latching the shortest press seen is one poll period plus the
module's own input filter.

A module that stops answering is reported offline after `offline_after`
failed polls, while the others on the line carry on; a line that cannot be
opened takes all its modules offline, and is reopened with backoff capped at
1 s, so a module is back within about a second of answering again.

TCP lines use our own sans-IO framing (drivers.modbus_di.frames): every line's request goes out on one
shared tick and answers are handled as they arrive, one request at a time per connection — a hundred
modules at 50 ms cost under 10 % of a core. RTU lines, one request at a time on the wire anyway, go
through pymodbus.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from drivers.modbus_di import frames
from drivers.modbus_di.points import Point, PointChange, PointTracker
from drivers.modbus_di.polling import ModulePolls, Requests
from drivers.modbus_di.schema import ModbusDIConfig, RtuConnection, TcpConnection
from gateway.config import DeviceConfig

MAX_READ_BITS = frames.MAX_READ_BITS


@dataclass
class Module:
    """One DI module on the line, with its own points, state and counters."""

    cfg: ModbusDIConfig
    tracker: PointTracker
    polls: ModulePolls
    test_points: set[str] = field(default_factory=set)
    changes: int = 0
    last_data: bytes | None = None  # the last reading as sent, to skip decoding when it is the same

    @property
    def where(self) -> str:
        return f"{self.cfg.connection.line()} unit {self.cfg.connection.unit}"


class ModbusDIDriver(Driver):
    name = "modbus_di"
    config_model = ModbusDIConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self.modules: list[Module] = []
        for device in devices:
            assert isinstance(device, ModbusDIConfig)
            points = [Point(p.name, p.input, p.type, p.contact == "normally_closed", p.zone or device.zone, p.place)
                      for p in device.points]
            self.modules.append(Module(device, PointTracker(points, debounce_s=device.debounce_ms / 1000),
                                       ModulePolls(device.offline_after),
                                       test_points={p.name for p in device.points if p.test_mode}))
        self.connection = self.modules[0].cfg.connection
        self.period = min(m.cfg.poll_ms for m in self.modules) / 1000
        self._stop = asyncio.Event()
        self._client: AsyncModbusSerialClient | None = None
        self._link: _TcpLink | None = None
        # TCP requests awaiting their answer: (module, None) a read, (module, input) the clear of its latch
        self._requests: Requests[tuple[Module, int | None]] = Requests()
        self.line_errors = 0

    @classmethod
    def group_key(cls, device: DeviceConfig) -> str:
        """Modules on one serial line, or behind one TCP address, share a driver and take turns."""
        assert isinstance(device, ModbusDIConfig)
        return device.connection.line()

    async def start(self) -> None:
        if isinstance(self.connection, TcpConnection):
            await run_with_reconnect(self.ctx, self._stop, self._open_tcp, self._run_tcp, self._close_tcp)
        else:
            await run_with_reconnect(self.ctx, self._stop, self._open, self._poll_until_line_fails, self._close)

    async def _open(self) -> bool:
        """An RTU line (serial port or pyserial URL) through pymodbus; TCP lines use _open_tcp."""
        c = self.connection
        assert isinstance(c, RtuConnection)
        client = AsyncModbusSerialClient(c.port, baudrate=c.baudrate, parity=c.parity, stopbits=c.stopbits,
                                         bytesize=c.bytesize, timeout=c.timeout_s, retries=0,
                                         reconnect_delay=0, reconnect_delay_max=0)
        self._client = client
        error = "connection refused"
        try:
            ok = await asyncio.wait_for(client.connect(), c.timeout_s * 2 + 1)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self.line_errors += 1
            for module in self.modules:
                self._went_offline(module, f"cannot open {c.line()} ({error})")
            self._close()
            return False
        for module in self.modules:
            module.tracker.reset()
        return True

    async def _poll_until_line_fails(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self.ctx.heartbeat()
            for module in self.modules:
                await self._poll(module)
            if self._client is None or not self._client.connected:
                return  # the line itself went (TCP closed, serial port unplugged): reopen it
            next_poll += self.period
            delay = next_poll - time.monotonic()
            if delay < 0:  # fell behind (slow line): do not try to catch up with a burst
                next_poll, delay = time.monotonic(), 0
            await asyncio.sleep(delay)  # cheaper than wait_for(stop.wait()) at 20 polls/s; stop is seen next cycle

    async def _poll(self, module: Module) -> None:
        module.polls.sent()
        try:
            bits = await self._read_bits(module, module.cfg.first_address, module.cfg.span)
        except (TimeoutError, OSError, ModbusException) as exc:
            self._poll_failed(module, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return
        if bits is None or isinstance(bits, int):
            self._read_refused(module, bits)
            return
        for number in self._reading(module, bits):
            await self._clear_latch(module, number)

    def _poll_failed(self, module: Module, error: str, refused: bool = False) -> None:
        if module.polls.failed(error) == "offline":
            where = module.cfg.connection.line() if refused else f"{module.where} stopped answering"
            self._offline(module, f"{where}: {error}")

    def _read_refused(self, module: Module, code: int | None) -> None:
        """The module answered the read with a Modbus exception: it is there, but its points cannot be read."""
        self._poll_failed(module, _read_refusal(module.cfg, code), refused=True)

    def _reading(self, module: Module, span: list[bool]) -> list[int]:
        """One reading of a module (inputs, then latch bits): emit its changes; returns the inputs whose
        latch to clear."""
        cfg = module.cfg
        if module.polls.answered() == "online":
            self.ctx.set_online(cfg.id, True)
        inputs = span[:cfg.inputs]
        clear: list[int] = []
        if cfg.latch is None:
            changes = module.tracker.update(inputs, time.time())
        else:
            offset = cfg.latch.address - cfg.first_address
            changes, clear = module.tracker.update_latching(inputs, span[offset:offset + cfg.inputs], time.time())
        for change in changes:
            self._emit(module, change)
        if changes:
            self.ctx.set_state(cfg.id, self._state(module))
        return clear

    async def _read_bits(self, module: Module, address: int, count: int) -> list[bool] | int | None:
        """The bits read, or the Modbus exception code the module answered with (None: an unknown one)."""
        assert self._client is not None
        c = module.cfg.connection
        async with asyncio.timeout(c.timeout_s * 2):  # pymodbus has its own; this bounds a hung transport
            response = await self._client.read_discrete_inputs(address, count=count, device_id=c.unit)
        if response.isError():
            code = getattr(response, "exception_code", None)
            return code if isinstance(code, int) else None
        return list(response.bits[:count])

    async def _clear_latch(self, module: Module, number: int) -> None:
        assert self._client is not None and module.cfg.latch is not None
        c = module.cfg.connection
        try:
            response = await asyncio.wait_for(self._client.write_coils(
                module.cfg.latch.address + number - 1, [False], device_id=c.unit), c.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            _clear_failed(module, number, f"{type(exc).__name__}: {exc}")
            return
        if response.isError():
            code = getattr(response, "exception_code", None)
            _clear_failed(module, number, _refusal(code if isinstance(code, int) else None))

    # -- Modbus TCP: requests sent on a shared tick, answers handled as they arrive ---------------

    async def _open_tcp(self) -> bool:
        c = self.connection
        assert isinstance(c, TcpConnection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(c.timeout_s * 2 + 1):
                _, self._link = await loop.create_connection(lambda: _TcpLink(self), c.host, c.port)
        except (TimeoutError, OSError) as exc:
            self.line_errors += 1
            for module in self.modules:
                self._went_offline(module, f"cannot open {c.line()} ({type(exc).__name__}: {exc})")
            return False
        for module in self.modules:
            module.tracker.reset()
            module.polls.pending = None
            module.last_data = None
        return True

    async def _run_tcp(self) -> None:
        assert self._link is not None
        ticker = self.ctx.ticker(self.period)
        ticker.add(self._tick)
        try:
            while not self._stop.is_set() and not self._link.lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._link.lost.wait(), 1.0)
        finally:
            ticker.remove(self._tick)

    def _tick(self) -> None:
        """Every poll period: ask each module for its inputs, unless it still owes an answer."""
        link = self._link
        if link is None or link.transport is None:
            return
        self.ctx.heartbeat()
        expired = link.expire(self.connection.timeout_s)
        owner = self._requests.answered(expired) if expired is not None else None
        if owner is not None:
            module, latch_input = owner
            silence = f"no answer within {self.connection.timeout_s:g} s"
            if latch_input is not None:
                _clear_failed(module, latch_input, silence)
            elif module.polls.pending == expired:
                self._poll_failed(module, silence)
        for module in self.modules:
            if module.polls.pending is not None:
                continue  # still queued or on the wire: never pile requests up on a slow module
            c = module.cfg.connection
            transaction = self._requests.new((module, None))
            module.polls.sent(transaction)
            link.submit(frames.read_inputs(transaction, c.unit, module.cfg.first_address, module.cfg.span), transaction)

    def _on_response(self, response: frames.Response) -> None:
        owner = self._requests.answered(response.transaction)
        if owner is None:
            return  # one that came after we gave up on it
        module, latch_input = owner
        if latch_input is not None:
            if response.exception is not None:
                _clear_failed(module, latch_input, _refusal(response.exception))
            return
        if response.function == frames.WRITE_MULTIPLE_COILS:
            return
        if response.exception is not None or response.data is None:
            self._read_refused(module, response.exception)
            return
        if response.data == module.last_data and module.tracker.settled and module.polls.online:
            module.polls.answered()  # nearly every poll: nothing changed, so nothing to decode
            module.tracker.readings += 1
            return
        bits = response.bits
        assert bits is not None
        clear = self._reading(module, bits[:module.cfg.span])
        # After a reading that asks for a clear the next one is decoded even if it is the same: the clear may
        # have been lost. That read goes out after the clear on this one connection: one clear outstanding at most.
        module.last_data = None if clear else response.data
        for number in clear:
            self._send_latch_clear(module, number)

    def _send_latch_clear(self, module: Module, number: int) -> None:
        assert module.cfg.latch is not None
        if self._link is not None:
            transaction = self._requests.new((module, number))
            self._link.submit(frames.write_coils(transaction, module.cfg.connection.unit,
                                                 module.cfg.latch.address + number - 1, [False]), transaction)

    def _close_tcp(self) -> None:
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
        self._link = None
        self._requests.clear()

    def _emit(self, module: Module, change: PointChange) -> None:
        module.changes += 1
        point = change.point
        data: dict[str, Any] = {"point": point.name, "input": point.input, "point_type": point.point_type,
                                "zone": point.zone, "place": point.place}
        test = True if point.name in module.test_points else None
        if change.active:
            if change.first_read and module.polls.was_offline:
                data["found_after_outage"] = True
            self.ctx.emit(module.cfg.id, "campus.alarm_input.triggered", data, at=change.at, test=test)
        else:
            self.ctx.emit(module.cfg.id, "campus.alarm_input.restored", data, at=change.at, test=test)

    def _state(self, module: Module) -> dict[str, Any]:
        return {"points": {p.name: module.tracker.active(p.name) for p in module.tracker.points},
                "test_points": sorted(module.test_points)}

    def _went_offline(self, module: Module, reason: str) -> None:
        if module.polls.went_offline() == "offline":
            self._offline(module, reason)

    def _offline(self, module: Module, reason: str) -> None:
        self.ctx.log.warning("%s offline: %s", module.cfg.id, reason)
        self.ctx.set_online(module.cfg.id, False, reason)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        return {"line": self.connection.line(), "line_errors": self.line_errors,
                "garbled_frames": self._link.decoder.garbled if self._link else 0,
                "modules": {m.cfg.id: {"online": bool(m.polls.online), "polls": m.polls.polls,
                                       "errors": m.polls.errors, "changes": m.changes,
                                       "readings": m.tracker.readings, "latched": m.tracker.latched_readings,
                                       "last_error": m.polls.last_error}
                            for m in self.modules}}

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        module = next((m for m in self.modules if m.cfg.id == device_id), None)
        if module is None:
            return CommandResult(False, f"{device_id} is not on this line")
        if name == "read_inputs":
            return CommandResult(True, data=self._state(module))
        if name == "set_test_mode":
            # Scheduled button tests: events of these points are recorded and marked as tests.
            on = bool(args.get("on", True))
            names = {p.name for p in module.tracker.points}
            chosen = set(args.get("points") or names)
            if not chosen <= names:
                return CommandResult(False, f"unknown points: {', '.join(sorted(chosen - names))}")
            module.test_points = (module.test_points | chosen) if on else (module.test_points - chosen)
            self.ctx.log.info("%s: test mode %s for %s by %s", device_id, "on" if on else "off",
                              ", ".join(sorted(chosen)), issued_by)
            self.ctx.set_state(device_id, self._state(module))
            return CommandResult(True, f"test mode {'on' if on else 'off'}", data=self._state(module))
        return await super().handle_command(device_id, name, args, issued_by)


def _refusal(code: int | None) -> str:
    return f"Modbus exception {code}: {frames.EXCEPTION_NAMES.get(code or 0, 'unknown')}"


def _read_refusal(cfg: ModbusDIConfig, code: int | None) -> str:
    """Why a module's read was refused, naming the unit and what was read: 0x02 means the module has no such
    addresses (a configuration error), 0x0A/0x0B that no module answers at this unit id behind a gateway."""
    unit, first = cfg.connection.unit, cfg.first_address
    what = f"discrete inputs {first}-{first + cfg.span - 1}"
    if cfg.latch is not None:
        what += f" (inputs {first}-{first + cfg.inputs - 1}, latch bits {cfg.latch.address}-" \
                f"{cfg.latch.address + cfg.inputs - 1})"
    if code == 2:
        return f"configuration error: unit {unit} has no {what}: {_refusal(code)}"
    if code in (10, 11):
        return f"no module answers at unit {unit}: reading {what} refused with {_refusal(code)}"
    return f"unit {unit} refused reading {what}: {_refusal(code)}"


def _clear_failed(module: Module, number: int, why: str) -> None:
    """Counted only: the next reading still shows the latch set and asks again."""
    module.polls.side_error(f"clearing latch of input {number}: {why}")


class _TcpLink(asyncio.Protocol):
    """One TCP connection to a module (or a Modbus gateway in front of several). One request at a time:
    many modules and gateways answer only the first of several requests sent back to back."""

    def __init__(self, driver: ModbusDIDriver) -> None:
        self.driver = driver
        self.decoder = frames.TcpDecoder()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()
        self.queue: deque[tuple[bytes, int]] = deque()
        self.in_flight: tuple[int, float] | None = None  # (transaction id, sent at in loop time)

    def submit(self, frame: bytes, transaction: int) -> None:
        self.queue.append((frame, transaction))
        self._pump()

    def expire(self, timeout_s: float) -> int | None:
        """Give up on a request unanswered for `timeout_s`; returns its transaction id."""
        if self.in_flight is None or self.transport is None:
            return None
        transaction, sent = self.in_flight
        if asyncio.get_running_loop().time() - sent < timeout_s:
            return None
        self.in_flight = None
        self._pump()
        return transaction

    def _pump(self) -> None:
        if self.in_flight is None and self.queue and self.transport is not None:
            frame, transaction = self.queue.popleft()
            self.transport.write(frame)
            self.in_flight = (transaction, asyncio.get_running_loop().time())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        for response in self.decoder.feed(data):
            if self.in_flight is not None and response.transaction == self.in_flight[0]:
                self.in_flight = None
            self.driver._on_response(response)
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost.set()
