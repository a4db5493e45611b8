"""The site-file schema of a relay output module (kind output, driver modbus_do): light, so check-config loads no
protocol library."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.modbus_di.schema import TcpConnection
from gateway.config import ID_PATTERN, DeviceConfig

# What a relay drives. A siren (and the PA trigger) is what a guard may silence; a strobe keeps flashing until
# the alarm is acknowledged or reset. A lock relay is on = locked: off, the module's safe state, leaves the
# door free for escape (fail-safe, as fire codes want for exit doors); a release relay is on = unlocked.
Role = Literal["siren", "strobe", "pa", "lock", "release", "other"]
SOUNDERS: frozenset[str] = frozenset({"siren", "pa"})
MAX_RELAYS = 2000  # Modbus limit for one read of coils


class RelayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ID_PATTERN)
    coil: int = Field(ge=0, le=65535)  # 0-based, as on the wire
    role: Role = "other"
    label: str | None = None  # what it says on the wiring plan, e.g. 门卫室声光报警器
    max_on_s: float | None = Field(default=None, gt=0, le=86_400)  # switched off after this long, whatever asked


class RelayOutputConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["output"]
    driver: Literal["modbus_do"]
    connection: TcpConnection
    relays: list[RelayConfig] = Field(min_length=1)
    # Every poll reads the relays back (a relay found otherwise is written again) and feeds the watchdog.
    poll_ms: int = Field(default=500, ge=20, le=5_000)
    offline_after: int = Field(default=3, ge=1, le=100)
    # The module's communication watchdog: the holding register its time goes to, and the time. With the
    # gateway gone (stopped hard, crashed, the cable cut) the module drops every relay after that long.
    watchdog_register: int | None = Field(default=0x0100, ge=0, le=65535)
    watchdog_s: int = Field(default=5, ge=1, le=3600)

    @model_validator(mode="after")
    def _distinct(self) -> RelayOutputConfig:
        names = [r.name for r in self.relays]
        coils = [str(r.coil) for r in self.relays]
        for what, values in (("name", names), ("coil", coils)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"relay {what} {', '.join(twice)} is used twice")
        coil_numbers = [r.coil for r in self.relays]
        if max(coil_numbers) - min(coil_numbers) >= MAX_RELAYS:
            raise ValueError(f"relay coils must lie within {MAX_RELAYS} of each other (one Modbus read)")
        if self.watchdog_s * 1000 <= self.poll_ms * 2:
            raise ValueError(f"watchdog_s ({self.watchdog_s}) must be longer than two polls ({self.poll_ms} ms "
                             "each), or the module would drop the relays between them")
        return self

    def relay(self, name: str) -> RelayConfig | None:
        return next((r for r in self.relays if r.name == name), None)


def relay_roles(device: DeviceConfig) -> dict[str, str]:
    """Relay name -> role of an output module as the site config holds it (the rules and check-config read
    devices untyped: each driver's model validates its own keys)."""
    typed = device if isinstance(device, RelayOutputConfig) else RelayOutputConfig.model_validate(device.model_dump())
    return {r.name: r.role for r in typed.relays}
