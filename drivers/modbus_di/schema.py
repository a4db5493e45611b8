"""The site-file schema of a Modbus DI module (kind alarm_input, driver modbus_di): light, so check-config loads no
protocol library."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus_di.frames import MAX_READ_BITS
from gateway.catalogue import PointType
from gateway.config import ID_PATTERN, DeviceConfig


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
    type: PointType
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

    @property
    def span(self) -> int:
        """Bits read per poll: the inputs, and the latch bits above them, in one request."""
        return (self.latch.address - self.first_address if self.latch else 0) + self.inputs

    @model_validator(mode="after")
    def _latch_above_inputs(self) -> ModbusDIConfig:
        if self.latch is not None and not (
                self.first_address + self.inputs <= self.latch.address <= self.first_address + MAX_READ_BITS
                - self.inputs):
            raise ValueError(f"latch.address {self.latch.address} must lie above the inputs "
                             f"({self.first_address}-{self.first_address + self.inputs - 1}) and within "
                             f"{MAX_READ_BITS} bits of them, so one read takes both")
        return self

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
