"""Alarm inputs on Modbus digital-input modules (one-key alarm buttons, duress, tamper, contacts).

Modules are reached over Modbus TCP or Modbus RTU (RS-485); the modules that
share one line (a serial port, or a TCP gateway address) are one driver
instance and are polled in turn every `poll_ms` (default 50 ms). Input bits
become point changes through drivers.alarm_points and are emitted as
`campus.alarm_input.triggered` / `.restored`.

Short presses: where the module latches its inputs (config `latch`), the
latch bits are read with the inputs and cleared by writing 0 to the latch
coils, so a press shorter than the poll, or made while the module was
unreachable, is still caught (the latter marked `found_after_outage`).
Without latching the shortest press seen is one poll period plus the
module's own input filter.

A module that stops answering is reported offline after `offline_after`
failed polls, while the others on the line carry on; a line that cannot be
opened takes all its modules offline, and is reopened with backoff capped at
1 s, so a module is back within about a second of answering again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.alarm_points import Point, PointChange, PointTracker
from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from gateway.config import ID_PATTERN, DeviceConfig

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TcpConnection(_Strict):
    type: Literal["tcp"] = "tcp"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=0.5, gt=0, le=10)

    def line(self) -> str:
        return f"tcp://{self.host}:{self.port}"


class RtuConnection(_Strict):
    type: Literal["rtu"]
    port: str = Field(description="serial device (/dev/ttyUSB0) or a pyserial URL (socket://host:port)")
    baudrate: int = Field(default=9600, ge=1200, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: int = Field(default=1, ge=1, le=247)
    timeout_s: float = Field(default=0.3, gt=0, le=10)

    def line(self) -> str:
        return f"rtu:{self.port}"


class PointConfig(_Strict):
    input: int = Field(ge=1, le=256)
    name: str = Field(pattern=ID_PATTERN)
    type: Literal["panic", "duress", "tamper", "fault", "ac_loss", "door_contact", "fire"]
    contact: Literal["normally_open", "normally_closed"] = "normally_open"
    place: str | None = None
    zone: str | None = None
    test_mode: bool = False


class LatchConfig(_Strict):
    # Latch bits are read as discrete inputs from here (one per input) and cleared by writing 0 to the
    # coils at the same addresses (function 15).
    address: int = Field(ge=0, le=65535)


class ModbusDIConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["alarm_input"]
    driver: Literal["modbus_di"]
    connection: Annotated[TcpConnection | RtuConnection, Field(discriminator="type")]
    poll_ms: int = Field(default=50, ge=10, le=10_000)
    debounce_ms: int = Field(default=0, ge=0, le=5_000)
    first_address: int = Field(default=0, ge=0, le=65535)
    inputs: int = Field(default=16, ge=1, le=256)
    latch: LatchConfig | None = None
    offline_after: int = Field(default=3, ge=1, le=100)
    points: list[PointConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _tcp_by_default(cls, data: Any) -> Any:
        connection = data.get("connection") if isinstance(data, dict) else None
        if isinstance(connection, dict) and "type" not in connection:
            data = {**data, "connection": {**connection, "type": "tcp"}}
        return data

    @model_validator(mode="after")
    def _points_fit(self) -> ModbusDIConfig:
        names, inputs = set(), set()
        for point in self.points:
            if point.input > self.inputs:
                raise ValueError(f"point '{point.name}' is on input {point.input} but the module has "
                                 f"inputs: {self.inputs}")
            if point.name in names or point.input in inputs:
                raise ValueError(f"point '{point.name}' (input {point.input}) is configured twice")
            names.add(point.name)
            inputs.add(point.input)
        return self


@dataclass
class Module:
    """One DI module on the line, with its own points, state and counters."""

    cfg: ModbusDIConfig
    tracker: PointTracker
    online: bool | None = None
    failures: int = 0
    test_points: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=lambda: {"polls": 0, "errors": 0, "changes": 0,
                                                               "latched": 0})
    last_error: str | None = None
    was_offline: bool = False

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
                                       test_points={p.name for p in device.points if p.test_mode}))
        self.connection = self.modules[0].cfg.connection
        self.period = min(m.cfg.poll_ms for m in self.modules) / 1000
        self._stop = asyncio.Event()
        self._client: Client | None = None
        self.line_errors = 0

    @classmethod
    def group_key(cls, device: DeviceConfig) -> str:
        """Modules on one serial line, or behind one TCP address, share a driver and take turns."""
        assert isinstance(device, ModbusDIConfig)
        return device.connection.line()

    async def start(self) -> None:
        await run_with_reconnect(self.ctx, self._stop, self._open, self._poll_until_line_fails, self._close)

    async def _open(self) -> bool:
        c = self.connection
        client: Client
        if isinstance(c, TcpConnection):
            client = AsyncModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0,
                                          reconnect_delay=0, reconnect_delay_max=0)
        else:
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
        bits = await self._read(module)
        if bits is None:
            module.failures += 1
            if module.failures >= module.cfg.offline_after:
                self._went_offline(module, f"{module.where} stopped answering: {module.last_error}")
            return
        module.failures = 0
        self._came_online(module)
        now = time.time()
        changes = module.tracker.update(bits, now)
        for change in changes:
            self._emit(module, change)
        if module.cfg.latch is not None and any(c.active for c in changes):
            await self._clear_latches(module, [c.point.input for c in changes if c.active])
        if changes:
            self.ctx.set_state(module.cfg.id, self._state(module))

    async def _read(self, module: Module) -> list[bool] | None:
        assert self._client is not None
        cfg = module.cfg
        module.counters["polls"] += 1
        try:
            bits = await self._read_bits(module, cfg.first_address, cfg.inputs)
            if bits is not None and cfg.latch is not None:
                latched = await self._read_bits(module, cfg.latch.address, cfg.inputs)
                if latched is None:
                    return None
                module.counters["latched"] += sum(1 for i, on in enumerate(latched) if on and not bits[i])
                bits = [a or b for a, b in zip(bits, latched, strict=True)]
            return bits
        except (TimeoutError, OSError, ModbusException) as exc:
            module.counters["errors"] += 1
            module.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return None

    async def _read_bits(self, module: Module, address: int, count: int) -> list[bool] | None:
        assert self._client is not None
        c = module.cfg.connection
        async with asyncio.timeout(c.timeout_s * 2):  # pymodbus has its own; this bounds a hung transport
            response = await self._client.read_discrete_inputs(address, count=count, device_id=c.unit)
        if response.isError():
            module.counters["errors"] += 1
            module.last_error = f"Modbus exception response {response}"
            return None
        return list(response.bits[:count])

    async def _clear_latches(self, module: Module, inputs: list[int]) -> None:
        assert self._client is not None and module.cfg.latch is not None
        c = module.cfg.connection
        for number in inputs:
            try:
                await asyncio.wait_for(self._client.write_coils(module.cfg.latch.address + number - 1, [False],
                                                                device_id=c.unit), c.timeout_s * 2)
            except (TimeoutError, OSError, ModbusException) as exc:
                module.counters["errors"] += 1
                module.last_error = f"clearing latch of input {number}: {exc}"

    def _emit(self, module: Module, change: PointChange) -> None:
        module.counters["changes"] += 1
        point = change.point
        data: dict[str, Any] = {"point": point.name, "input": point.input, "point_type": point.point_type,
                                "zone": point.zone, "place": point.place}
        test = True if point.name in module.test_points else None
        if change.active:
            if change.first_read and module.was_offline:
                data["found_after_outage"] = True
            self.ctx.emit(module.cfg.id, "campus.alarm_input.triggered", data, at=change.at, test=test)
        else:
            self.ctx.emit(module.cfg.id, "campus.alarm_input.restored", data, at=change.at, test=test)

    def _state(self, module: Module) -> dict[str, Any]:
        return {"points": {p.name: module.tracker.active(p.name) for p in module.tracker.points},
                "test_points": sorted(module.test_points)}

    def _came_online(self, module: Module) -> None:
        if module.online is not True:
            module.online = True
            self.ctx.set_online(module.cfg.id, True)

    def _went_offline(self, module: Module, reason: str) -> None:
        if module.online is not False:
            module.online = False
            module.was_offline = True
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
                "modules": {m.cfg.id: {"online": bool(m.online), **m.counters, "readings": m.tracker.readings,
                                       "last_error": m.last_error} for m in self.modules}}

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
