"""The site-file schema of an OSDP reader (kind reader, driver osdp): light, so check-config loads no libosdp."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.reader_common import CardFormatName, Direction
from gateway.config import ConfigError, DeviceConfig, SecretRef


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OsdpBus(_Strict):
    port: str = Field(description="serial device of the RS-485 adapter, e.g. /dev/ttyUSB0")
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 9600


class Signal(_Strict):
    """What a reader shows for a decision: its LED in a colour for on_ms, and beeps."""

    color: Literal["off", "red", "green", "amber", "blue"]
    on_ms: int = Field(default=1000, ge=100, le=25_500)
    beeps: int = Field(default=1, ge=0, le=10)


class Feedback(_Strict):
    granted: Signal = Signal(color="green", on_ms=1500, beeps=1)
    denied: Signal = Signal(color="red", on_ms=2000, beeps=3)
    alert: Signal = Signal(color="amber", on_ms=3000, beeps=5)


class OsdpReaderConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["reader"]
    driver: Literal["osdp"]
    bus: OsdpBus
    address: int = Field(ge=0, le=126)
    key_env: str | None = None  # the reader's SCBK: 32 hex digits
    key_file: Path | None = None
    secure: bool = True  # false only for a reader without secure channel support (card numbers in clear)
    install_mode: bool = False
    card_format: CardFormatName = "auto"
    direction: Direction | None = None  # the way a person passes this reader (the access rules need it)
    feedback: Feedback = Feedback()
    retry_s: float = Field(default=1.0, ge=0.2, le=60)

    @model_validator(mode="after")
    def _key_when_secure(self) -> OsdpReaderConfig:
        if self.secure and not (self.key_env or self.key_file):
            raise ValueError("a secure reader needs its key: key_env or key_file (32 hex digits); "
                             "or secure: false for a reader without secure channel")
        if self.install_mode and not self.secure:
            raise ValueError("install_mode gives the reader a secure channel key: it needs secure: true")
        return self

    def scbk(self) -> bytes | None:
        if not self.secure:
            return None
        value = SecretRef(env=self.key_env, file=self.key_file).resolve()
        try:
            key = bytes.fromhex(value or "")
        except ValueError:
            key = b""
        if len(key) != 16:
            raise ConfigError([f"reader '{self.id}': the secure channel key must be 32 hex digits (16 bytes)"])
        return key
