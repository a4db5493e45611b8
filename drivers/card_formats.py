"""Wiegand card formats, sans-IO: raw card bits <-> (format, facility, number) <-> the credential people use.

An OSDP reader hands over bits (bytes + a bit count, left-aligned), a Wiegand-to-ASCII converter hands over the
data bits as a number, and an installer types "018,54919" from the card's print or a CSV. All three must land on
the same credential string, or a valid card is refused at the gate. Parity is checked here so that a misread
(noise, D0/D1 swapped, the wrong format configured) is refused with a reason instead of matching another person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeGuard

FORMATS: tuple[str, ...] = ("wiegand26", "wiegand34", "wiegand34_uid", "raw32")


class CardFormatError(ValueError):
    """Card bits or a credential that cannot be a card of the configured format; the message says what to check."""


@dataclass(frozen=True)
class _Layout:
    bits: int  # on the wire, parity included
    facility_bits: int  # 0: no facility code, the data bits are one number
    number_bits: int
    parity: bool  # leading even parity over the first half of the data bits, trailing odd over the second half


_LAYOUTS = {
    "wiegand26": _Layout(26, 8, 16, True),  # HID H10301
    "wiegand34": _Layout(34, 16, 16, True),  # 16-bit facility, H10306-like
    "wiegand34_uid": _Layout(34, 0, 32, True),  # the common "W34": the card's 32-bit UID between the parity bits
    "raw32": _Layout(32, 0, 32, False),
}
_AUTO_BY_BITS = {26: "wiegand26", 34: "wiegand34_uid", 32: "raw32"}
MAX_UID = 2**32 - 1
_PAIR = re.compile(r"([0-9]+)\s*[,\- ]\s*([0-9]+)")  # "18,54919", "018-54919", "018 54919"
_DECIMAL = re.compile(r"[0-9]+")


def _layout(fmt: str) -> _Layout:
    try:
        return _LAYOUTS[fmt]
    except KeyError:
        raise CardFormatError(f"unknown card format {fmt!r}: expected one of {', '.join(FORMATS)}") from None


@dataclass(frozen=True)
class Card:
    """One card as the access rules see it. Checked on creation, so a Card always encodes and prints."""

    format: str
    facility: int | None
    number: int

    def __post_init__(self) -> None:
        layout = _layout(self.format)
        if layout.facility_bits:
            top = (1 << layout.facility_bits) - 1
            if not _is_int(self.facility) or not 0 <= self.facility <= top:
                raise CardFormatError(f"{self.format} card: facility code {self.facility!r} outside 0-{top} "
                                      f"({layout.facility_bits} bits); check the facility printed on the card")
        elif self.facility is not None:
            raise CardFormatError(f"{self.format} card: this format has no facility code (got {self.facility!r}); "
                                  f"give the card number only")
        top = (1 << layout.number_bits) - 1
        if not _is_int(self.number) or not 0 <= self.number <= top:
            raise CardFormatError(f"{self.format} card: card number {self.number!r} outside 0-{top} "
                                  f"({layout.number_bits} bits); check the number printed on the card")

    @property
    def credential(self) -> str:
        """The text access lists hold: "018,54919" as printed on HID/EM cards, or the 10-digit UID."""
        if self.facility is not None:
            return f"{self.facility:03d},{self.number:05d}"
        return f"{self.number:010d}"

    @property
    def bit_length(self) -> int:
        return _LAYOUTS[self.format].bits


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def make_card(fmt: str, number: int, facility: int | None = None) -> Card:
    """A card from what a person knows about it (format, number, facility); CardFormatError if out of range."""
    return Card(fmt, facility, number)


def from_payload(value: int, fmt: str) -> Card:
    """A card from a converter's number: the data bits without parity (24 bits for wiegand26, 32 otherwise)."""
    layout = _layout(fmt)
    data_bits = layout.facility_bits + layout.number_bits
    if not _is_int(value) or not 0 <= value < 1 << data_bits:
        raise CardFormatError(f"payload {value!r} does not fit {fmt} ({data_bits} data bits, 0-{(1 << data_bits) - 1})"
                              f"; check the converter's output and the reader's card_format")
    if layout.facility_bits:
        return Card(fmt, value >> layout.number_bits, value & ((1 << layout.number_bits) - 1))
    return Card(fmt, None, value)


def decode(data: bytes, bit_length: int, fmt: str = "auto") -> Card:
    """A card from raw reader bits (MSB first, left-aligned); checks the length and the parity bits."""
    if fmt == "auto":
        name = _AUTO_BY_BITS.get(bit_length)
        if name is None:
            raise CardFormatError(f"{bit_length}-bit card: no format for {bit_length} bits (auto knows 26, 32 and 34); "
                                  f"set the reader's card_format, or set the reader to output 26 or 34 bits")
    else:
        name = fmt
    layout = _layout(name)
    if bit_length != layout.bits:
        raise CardFormatError(f"{bit_length}-bit card: card_format {name} expects {layout.bits} bits; "
                              f"set card_format to match the cards (or 'auto')")
    size = (bit_length + 7) // 8
    if len(data) != size:
        raise CardFormatError(f"{bit_length}-bit card: {len(data)} data bytes, expected {size}; "
                              f"the reader sent a malformed card report")
    value = int.from_bytes(data, "big") >> (size * 8 - bit_length)  # padding bits are ignored
    if not layout.parity:
        return from_payload(value, name)
    data_bits = bit_length - 2
    half = data_bits // 2
    payload = (value >> 1) & ((1 << data_bits) - 1)
    first, second = payload >> half, payload & ((1 << half) - 1)
    label = f"{bit_length}-bit card 0x{value:0{(bit_length + 3) // 4}X}"
    hint = "re-present the card; if it repeats, check the D0/D1 wiring and the reader's card_format"
    if value >> (bit_length - 1) != first.bit_count() % 2:
        raise CardFormatError(f"{label}: even parity (bits 1-{half}) does not match; {hint}")
    if value & 1 != 1 - second.bit_count() % 2:
        raise CardFormatError(f"{label}: odd parity (bits {half + 1}-{data_bits}) does not match; {hint}")
    return from_payload(payload, name)


def encode(card: Card) -> tuple[bytes, int]:
    """(data, bit_length) as a reader would send this card, parity included, left-aligned, padding zero."""
    layout = _layout(card.format)
    payload = card.number if card.facility is None else card.facility << layout.number_bits | card.number
    value = payload
    if layout.parity:
        data_bits = layout.bits - 2
        half = data_bits // 2
        even = (payload >> half).bit_count() % 2
        odd = 1 - (payload & ((1 << half) - 1)).bit_count() % 2
        value = even << (layout.bits - 1) | payload << 1 | odd
    size = (layout.bits + 7) // 8
    return (value << (size * 8 - layout.bits)).to_bytes(size, "big"), layout.bits


def normalise_credential(text: str) -> str:
    """What a person types or a CSV holds -> the credential a Card prints, so both compare equal.

    "18,54919", "018-54919" and "018 54919" -> "018,54919"; "12345678" -> "0012345678".
    """
    stripped = text.strip()
    pair = _PAIR.fullmatch(stripped)
    if pair:
        facility, number = int(pair.group(1)), int(pair.group(2))
        if facility > 0xFFFF or number > 0xFFFF:
            raise CardFormatError(f"credential {text!r}: facility and card number must each be 0-65535")
        return f"{facility:03d},{number:05d}"
    if _DECIMAL.fullmatch(stripped):
        value = int(stripped)
        if value > MAX_UID:
            raise CardFormatError(f"credential {text!r}: a card number is at most {MAX_UID} (32 bits)")
        return f"{value:010d}"
    raise CardFormatError(f"credential {text!r}: expected facility,number as printed on the card (e.g. 018,54919) "
                          f"or the card number alone (up to 10 digits)")
