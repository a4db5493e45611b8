"""Alarm inputs on a Modbus TCP digital-input module (one-key alarm buttons, tamper, contacts).

Polls the module's discrete inputs every `poll_ms` (default 50 ms), turns
them into point changes with drivers.alarm_points, and emits
`campus.alarm_input.triggered` / `.restored`. A module that stops answering is
reported offline after `offline_after` failed polls and reconnected with
backoff capped at 1 s, so it is back within about a second of answering again.

Minimum detectable press without latch registers: one poll period plus the
module's own input filter (a press shorter than `poll_ms` may be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.alarm_points import Point, PointChange, PointTracker
from drivers.base import CommandResult, Driver, DriverContext
from gateway.config import ID_PATTERN, DeviceConfig

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0


class ModbusTcpConnection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=0.5, gt=0, le=10)


class PointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: int = Field(ge=1, le=256)
    name: str = Field(pattern=ID_PATTERN)
    type: Literal["panic", "duress", "tamper", "fault", "ac_loss", "door_contact", "fire"]
    contact: Literal["normally_open", "normally_closed"] = "normally_open"
    place: str | None = None
    zone: str | None = None


class ModbusDIConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["alarm_input"]
    driver: Literal["modbus_di"]
    connection: ModbusTcpConnection
    poll_ms: int = Field(default=50, ge=10, le=10_000)
    debounce_ms: int = Field(default=0, ge=0, le=5_000)
    first_address: int = Field(default=0, ge=0, le=65535)
    inputs: int = Field(default=16, ge=1, le=256)
    offline_after: int = Field(default=3, ge=1, le=100)
    points: list[PointConfig] = Field(min_length=1)

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


class ModbusDIDriver(Driver):
    name = "modbus_di"
    config_model = ModbusDIConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        (device,) = devices
        assert isinstance(device, ModbusDIConfig)
        self.cfg = device
        self.tracker = PointTracker(
            [Point(p.name, p.input, p.type, p.contact == "normally_closed", p.zone or device.zone, p.place)
             for p in device.points],
            debounce_s=device.debounce_ms / 1000)
        self._stop = asyncio.Event()
        self._client: AsyncModbusTcpClient | None = None
        self._online: bool | None = None
        self.counters = {"polls": 0, "errors": 0, "changes": 0, "reconnects": 0}
        self.last_error: str | None = None

    def _where(self) -> str:
        c = self.cfg.connection
        return f"{c.host}:{c.port} unit {c.unit}"

    async def start(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self._stop.is_set():
            self.ctx.heartbeat()
            if await self._connect():
                backoff = RECONNECT_MIN_S
                await self._poll_until_failure()
                self._close()
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _connect(self) -> bool:
        c = self.cfg.connection
        self._client = AsyncModbusTcpClient(c.host, port=c.port, timeout=c.timeout_s, retries=0,
                                            reconnect_delay=0, reconnect_delay_max=0)
        try:
            ok = await asyncio.wait_for(self._client.connect(), c.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok, self.last_error = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self.counters["errors"] += 1
            self._went_offline(f"no answer from {self._where()} ({self.last_error or 'connection refused'})")
            self._close()
            return False
        self.counters["reconnects"] += 1
        self.tracker.reset()
        return True

    async def _poll_until_failure(self) -> None:
        period = self.cfg.poll_ms / 1000
        failures = 0
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self.ctx.heartbeat()
            bits = await self._read()
            if bits is None:
                failures += 1
                if failures >= self.cfg.offline_after:
                    self._went_offline(f"{self._where()} stopped answering: {self.last_error}")
                    return
            else:
                failures = 0
                self._came_online()
                for change in self.tracker.update(bits, time.time()):
                    self._emit(change)
            next_poll += period
            delay = next_poll - time.monotonic()
            if delay < 0:  # fell behind (slow module): do not try to catch up with a burst
                next_poll, delay = time.monotonic(), 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _read(self) -> list[bool] | None:
        assert self._client is not None
        c = self.cfg.connection
        self.counters["polls"] += 1
        try:
            response = await asyncio.wait_for(
                self._client.read_discrete_inputs(self.cfg.first_address, count=self.cfg.inputs, device_id=c.unit),
                c.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            self.counters["errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return None
        if response.isError():
            self.counters["errors"] += 1
            self.last_error = f"Modbus exception response {response}"
            return None
        return list(response.bits[: self.cfg.inputs])

    def _emit(self, change: PointChange) -> None:
        self.counters["changes"] += 1
        point = change.point
        data: dict[str, Any] = {"point": point.name, "input": point.input, "point_type": point.point_type,
                                "zone": point.zone, "place": point.place}
        if change.active:
            if change.first_read and self.counters["reconnects"] > 1:
                data["found_after_outage"] = True
            self.ctx.emit(self.cfg.id, "campus.alarm_input.triggered", data, at=change.at)
        else:
            self.ctx.emit(self.cfg.id, "campus.alarm_input.restored", data, at=change.at)
        self.ctx.set_state(self.cfg.id, self._state())

    def _state(self) -> dict[str, Any]:
        return {"points": {p.name: self.tracker.active(p.name) for p in self.tracker.points}}

    def _came_online(self) -> None:
        if self._online is not True:
            self._online = True
            self.ctx.set_online(self.cfg.id, True)

    def _went_offline(self, reason: str) -> None:
        if self._online is not False:
            self._online = False
            self.ctx.log.warning("%s offline: %s", self.cfg.id, reason)
            self.ctx.set_online(self.cfg.id, False, reason)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        return {"online": bool(self._online), **self.counters,
                "readings": self.tracker.readings, "last_error": self.last_error}

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        if name == "read_inputs":
            return CommandResult(True, data=self._state())
        return await super().handle_command(device_id, name, args, issued_by)
