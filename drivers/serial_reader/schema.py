"""The site-file schema of a serial line reader or checkpoint (driver serial_reader): light, so check-config loads
no pyserial."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.reader_common import CardFormatName, Direction
from gateway.config import DeviceConfig


class FeedbackLines(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    granted: str | None = None  # e.g. "@BEEP1" for a scanner that beeps on command; sent with CR LF
    denied: str | None = None
    alert: str | None = None


class SerialReaderConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["reader", "checkpoint"]
    driver: Literal["serial_reader"]
    port: str = Field(description="serial device, best a /dev/serial/by-id/... path")
    baudrate: int = Field(default=9600, ge=1200, le=921600)
    mode: Literal["wiegand", "qr"] = "wiegand"
    encoding: Literal["hex", "decimal"] = "hex"  # how a Wiegand converter prints a card
    card_format: CardFormatName = "auto"
    direction: Direction | None = None
    feedback_lines: FeedbackLines = FeedbackLines()
