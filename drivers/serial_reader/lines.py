"""Serial line readers, sans-IO: Wiegand-to-ASCII converters and QR/barcode scanners in USB-CDC / RS-232 mode.

They print one line per card or code; some also pass 4-bit Wiegand keypad presses through as single raw bytes.
Feed the bytes as the port delivers them, in any pieces; get back card reads, key presses, scanned codes and
Garbled lines. The driver counts Garbled and moves on: a wrong baud rate or a converter set to print a prefix
shows up as a reason in diagnostics, never as an exception or a card read for the wrong number.

Byte rules, decided one byte at a time so that the result never depends on how the port chunks the stream:
- CR, LF or CRLF end a line; a LF straight after a CR is the second half of CRLF, even in the next feed.
- At the start of a line a byte 0x00-0x0B is a keypad press (0x0A = '*', 0x0B = '#'); this includes a bare LF
  that does not follow a CR. A converter that ends lines in LF alone therefore cannot send empty lines, only '*'.
- Inside a line every control byte (keypad values included) garbles the line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from drivers.card_formats import FORMATS, Card, CardFormatError, from_payload

MAX_LINE = 512  # longest QR payload we accept (bytes, terminator excluded); a longer line is Garbled once
KEYS = "0123456789*#"  # the 4-bit Wiegand keypad values 0x0-0xB, in order
CR, LF = 0x0D, 0x0A
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"[0-9]+")
_HINT = "set the converter to print the bare card number"


@dataclass(frozen=True)
class CardInput:
    card: Card
    line: str  # the line as printed (surrounding spaces removed), for diagnostics


@dataclass(frozen=True)
class KeyInput:
    key: str  # one of "0123456789*#"


@dataclass(frozen=True)
class CodeInput:
    code: str  # a QR / barcode text (QR mode)


@dataclass(frozen=True)
class Garbled:
    raw: bytes  # the line's bytes without its terminator (the first MAX_LINE + 1 of an overlong line)
    reason: str


ReaderInput = CardInput | KeyInput | CodeInput | Garbled


class LineReader:
    """Turns a converter's or scanner's byte stream into inputs. Keeps only the unfinished line between feeds."""

    def __init__(self, mode: Literal["wiegand", "qr"] = "wiegand", encoding: Literal["hex", "decimal"] = "hex",
                 card_format: str = "auto") -> None:
        if mode not in ("wiegand", "qr"):
            raise ValueError(f"reader mode {mode!r}: expected 'wiegand' or 'qr'")
        if encoding not in ("hex", "decimal"):
            raise ValueError(f"reader encoding {encoding!r}: expected 'hex' or 'decimal'")
        if card_format != "auto" and card_format not in FORMATS:
            raise CardFormatError(f"card_format {card_format!r}: expected 'auto' or one of {', '.join(FORMATS)}")
        self.mode = mode
        self.encoding = encoding
        self.card_format = card_format
        self._line = bytearray()
        self._skipping = False  # inside an overlong line already reported: drop bytes up to its terminator
        self._after_cr = False  # the previous byte was CR: a LF now completes CRLF

    def feed(self, data: bytes) -> list[ReaderInput]:
        """Everything complete in `data` plus what was buffered before; never raises on what the port brings."""
        out: list[ReaderInput] = []
        for byte in data:
            after_cr, self._after_cr = self._after_cr, byte == CR
            if byte == LF and after_cr:
                continue
            if byte in (CR, LF) and (self._line or self._skipping or byte == CR):
                self._end_line(out)
            elif byte < len(KEYS) and not self._line and not self._skipping:
                out.append(KeyInput(KEYS[byte]))
            elif self._skipping:
                continue
            elif len(self._line) < MAX_LINE:
                self._line.append(byte)
            else:
                out.append(Garbled(bytes(self._line) + bytes([byte]),
                                   f"line longer than {MAX_LINE} bytes; skipped up to its end (a missing line "
                                   f"terminator? check the converter's line-ending setting)"))
                self._line.clear()
                self._skipping = True
        return out

    def flush(self) -> list[ReaderInput]:
        """A partial line left when the port closed: Garbled, since its end (and so its value) is unknown."""
        raw, skipping = bytes(self._line), self._skipping
        self._line.clear()
        self._skipping = self._after_cr = False
        if not raw or skipping:
            return []
        return [Garbled(raw, "partial line: the port closed before its line terminator")]

    def _end_line(self, out: list[ReaderInput]) -> None:
        raw = bytes(self._line)
        self._line.clear()
        if self._skipping:
            self._skipping = False
            return
        parsed = self._parse(raw)
        if parsed is not None:
            out.append(parsed)

    def _parse(self, raw: bytes) -> ReaderInput | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Garbled(raw, f"not UTF-8 (byte 0x{raw[exc.start]:02X} at {exc.start}); "
                                f"check the port's baud rate and the device's output settings")
        control = next((c for c in text if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            return Garbled(raw, f"control character 0x{ord(control):02X} inside the line; "
                                f"check the port's baud rate and the device's output settings")
        if self.mode == "qr":
            code = text.strip()
            return CodeInput(code) if code else None
        line = text.strip(" ")
        if not line:
            return None
        if len(line) == 1 and line in KEYS:
            return KeyInput(line)
        try:
            return CardInput(self._card(line), line)
        except CardFormatError as exc:
            return Garbled(raw, str(exc))

    def _card(self, line: str) -> Card:
        if self.encoding == "hex":
            if not _HEX.fullmatch(line) or len(line) not in (6, 8):
                raise CardFormatError(f"not a card number: {line[:40]!r}; expected 6 or 8 hex digits; {_HINT}")
            fmt = self.card_format
            if fmt == "auto":
                fmt = "wiegand26" if len(line) == 6 else "wiegand34_uid"
            elif (len(line) == 6) != (fmt == "wiegand26"):
                raise CardFormatError(f"{len(line)} hex digits ({len(line) * 4} data bits) but card_format is {fmt} "
                                      f"({'6' if fmt == 'wiegand26' else '8'} digits); set card_format to match "
                                      f"the cards (or 'auto')")
            return from_payload(int(line, 16), fmt)
        if not _DECIMAL.fullmatch(line) or len(line) > 10:
            raise CardFormatError(f"not a card number: {line[:40]!r}; expected up to 10 decimal digits; {_HINT}")
        value = int(line)
        fmt = self.card_format
        if fmt == "auto":
            fmt = "wiegand26" if len(line) <= 8 and value < 2**24 else "wiegand34_uid"
        return from_payload(value, fmt)
