"""What the OSDP and serial reader drivers share: the access-point fields of a reader's config and the
events a read becomes."""

from __future__ import annotations

from typing import Any, Literal

from drivers.card_formats import FORMATS, Card

CardFormatName = Literal["auto", "wiegand26", "wiegand34", "wiegand34_uid", "raw32"]
Direction = Literal["entry", "exit"]
FEEDBACK_RESULTS = ("granted", "denied", "alert")

assert set(FORMATS) == {"wiegand26", "wiegand34", "wiegand34_uid", "raw32"}  # CardFormatName follows FORMATS


def card_event(card: Card, reader: int, direction: Direction | None) -> dict[str, Any]:
    """The data of a campus.reader.card_read event."""
    data: dict[str, Any] = {"reader": reader, "credential": card.credential, "format": card.format,
                            "facility": card.facility, "number": card.number, "bits": card.bit_length}
    if direction:
        data["direction"] = direction
    return data


def code_event(code: str, reader: int, direction: Direction | None) -> dict[str, Any]:
    """The data of a campus.reader.code_scanned event (a QR pass, a checkpoint tag)."""
    data: dict[str, Any] = {"reader": reader, "code": code[:512]}
    if direction:
        data["direction"] = direction
    return data
