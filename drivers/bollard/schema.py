"""The site-file schema of a rising-bollard PLC (kind bollard, driver modbus_bollard): light, so check-config loads
no protocol library."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.bollard.machine import Coil
from drivers.modbus_di.schema import TcpConnection
from gateway.config import DeviceConfig

MAX_READ_BITS = 2000  # Modbus limit for one read of discrete inputs


class BollardCoils(BaseModel):
    """Coil addresses (0-based, as on the wire)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    raise_: int = Field(default=0, ge=0, le=65535, alias="raise")
    lower: int = Field(default=1, ge=0, le=65535)
    efo: int = Field(default=2, ge=0, le=65535)

    @model_validator(mode="after")
    def _distinct(self) -> BollardCoils:
        if len({self.raise_, self.lower, self.efo}) != 3:
            raise ValueError(f"raise, lower and efo need three different coils, got {self.raise_}, "
                             f"{self.lower}, {self.efo}")
        return self

    def address(self, coil: Coil) -> int:
        return {"raise": self.raise_, "lower": self.lower, "efo": self.efo}[coil]


class BollardInputs(BaseModel):
    """Discrete input addresses (0-based, as on the wire); `fire: null` when no fire input is wired."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_limit: int = Field(default=0, ge=0, le=65535)
    down_limit: int = Field(default=1, ge=0, le=65535)
    vehicle_loops: list[int] = Field(default=[2, 3], min_length=1, max_length=8)
    fault: int = Field(default=4, ge=0, le=65535)
    efo_active: int = Field(default=5, ge=0, le=65535)
    fire: int | None = Field(default=6, ge=0, le=65535)

    @model_validator(mode="after")
    def _distinct(self) -> BollardInputs:
        used = self.addresses()
        for address in self.vehicle_loops:
            if not 0 <= address <= 65535:
                raise ValueError(f"vehicle loop input {address} is out of range 0-65535")
        if len(set(used)) != len(used):
            twice = sorted({a for a in used if used.count(a) > 1})
            raise ValueError(f"input {', '.join(map(str, twice))} is used for two things")
        if max(used) - min(used) >= MAX_READ_BITS:
            raise ValueError(f"inputs must lie within {MAX_READ_BITS} addresses of each other (one Modbus read)")
        return self

    def addresses(self) -> list[int]:
        fire = [self.fire] if self.fire is not None else []
        return [self.up_limit, self.down_limit, *self.vehicle_loops, self.fault, self.efo_active, *fire]


class BollardConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["bollard"]
    driver: Literal["modbus_bollard"]
    connection: TcpConnection
    poll_ms: int = Field(default=100, ge=20, le=5_000)
    offline_after: int = Field(default=3, ge=1, le=100)
    coils: BollardCoils = BollardCoils()
    inputs: BollardInputs = BollardInputs()
    travel_timeout_s: float = Field(default=8.0, gt=0, le=300)
    # Below half a second the interlock would not bridge the gap between a car and its trailer.
    clear_delay_s: float = Field(default=1.0, ge=0.5, le=60)
    fire_lowers: bool = True
    pulse_ms: int = Field(default=500, ge=50, le=10_000)

    @model_validator(mode="after")
    def _pulse_within_travel(self) -> BollardConfig:
        if self.pulse_ms / 1000 >= self.travel_timeout_s:
            raise ValueError(f"pulse_ms ({self.pulse_ms}) must be shorter than travel_timeout_s "
                             f"({self.travel_timeout_s:g} s)")
        return self
