"""SIA DC-09 framing, sans-IO: messages to bytes and bytes to messages, no sockets.

A frame is  LF  CRC(4 hex)  0LLL(length, hex)  "ID"seq[Rrcvr]Lpref#acct[data][xdata]_HH:MM:SS,MM-DD-YYYY  CR.
CRC (CRC-16/ARC) and length cover everything from the first quote to the character before CR.
Encrypted ("*ID"): after the '[' comes the hex of AES-CBC (zero IV) over  pad|data][xdata]_timestamp,
the pad filling it to whole 16-byte blocks, with none of '|', '[', ']' in it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LF, CR = b"\n", b"\r"
MAX_FRAME = 4096  # a DC-09 frame is a few hundred bytes; anything longer is noise
# Receiver and line in either order: pysiaalarm's NAK puts L before R, and its ACK writes "None" for a
# missing receiver number. Receivers are what they are; we read them.
_HEADER = re.compile(
    rb'^"(?P<star>\*)?(?P<token>[A-Z][A-Z-]{1,15})"(?P<seq>\d{4})(?:None)?'
    rb"(?:R(?P<receiver>[0-9A-Fa-f]{1,6}))?L(?P<line>[0-9A-Fa-f]{1,6})(?(receiver)|(?:R(?P<receiver2>[0-9A-Fa-f]{1,6}))?)"
    rb"(?:#(?P<account>[0-9A-Za-z]{1,16}))?(?P<rest>\[.*)$",
    re.S,
)
_TIMESTAMP = re.compile(r"_(\d{2}):(\d{2}):(\d{2}),(\d{2})-(\d{2})-(\d{4})$")
_PAD_ALPHABET = bytes(c for c in range(0x21, 0x7F) if c not in b"|[]")


class FrameError(ValueError):
    """A frame that is not a valid DC-09 message; `reason` names what was wrong (crc, length, format, key)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Message:
    token: str  # SIA-DCS, ADM-CID, NULL; answers ACK, NAK, DUH, RSP
    seq: int
    line: str = "0"  # hex digits, without the L
    account: str | None = None
    receiver: str | None = None  # hex digits, without the R
    data: str = ""  # what is between the first [ and its ]
    xdata: tuple[str, ...] = ()  # each extended-data field, without brackets
    timestamp: datetime | None = None
    # How it came over the wire (decode fills these in; encode goes by its key).
    encrypted: bool = field(default=False, compare=False)
    pad: str = field(default="", compare=False)


def crc16(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0), the CRC DC-09 names."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def format_timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("_%H:%M:%S,%m-%d-%Y")


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    if len(key) not in (16, 24, 32):
        raise ValueError(f"a DC-09 key is 16, 24 or 32 bytes (AES-128/192/256), not {len(key)}")
    return Cipher(algorithms.AES(key), modes.CBC(bytes(16)))


def _random_pad(length: int) -> str:
    return "".join(chr(_PAD_ALPHABET[b % len(_PAD_ALPHABET)]) for b in os.urandom(length))


def encode(message: Message, key: bytes | None = None, pad_char: str | None = None) -> bytes:
    """The frame for a message; encrypted when a key is given (then a timestamp is required).
    The pad is random unless `pad_char` fixes it (tests, and receivers that want zeros)."""
    star = "*" if key is not None else ""
    head = f'"{star}{message.token}"{message.seq:04d}'
    if message.receiver is not None:
        head += f"R{message.receiver}"
    head += f"L{message.line}"
    if message.account is not None:
        head += f"#{message.account}"
    tail = f"{message.data}]" + "".join(f"[{x}]" for x in message.xdata)
    if message.timestamp is not None:
        tail += format_timestamp(message.timestamp)
    if key is None:
        body = f"{head}[{tail}".encode("ascii")
    else:
        if message.timestamp is None:
            raise ValueError("an encrypted DC-09 message must carry a timestamp")
        plain = tail.encode("ascii")
        size = -(len(plain) + 1) % 16 or 16  # the pad is never empty: at least one character before the '|'
        if pad_char is not None and (len(pad_char) != 1 or pad_char in "|[]"):
            raise ValueError("the pad character must be one character, not one of '|[]'")
        pad = _random_pad(size) if pad_char is None else pad_char * size
        encryptor = _cipher(key).encryptor()
        secret = encryptor.update(pad.encode("ascii") + b"|" + plain) + encryptor.finalize()
        body = f"{head}[".encode("ascii") + secret.hex().upper().encode("ascii")
    if len(body) > 0xFFF:
        raise ValueError("a DC-09 message body is at most 4095 characters")
    return LF + f"{crc16(body):04X}0{len(body):03X}".encode("ascii") + body + CR


def decode(frame: bytes, key: bytes | None = None) -> Message:
    """One frame (with or without its LF and CR) to a message. Raises FrameError."""
    frame = frame.strip(b"\n\r")
    if len(frame) < 9 or not re.fullmatch(rb"[0-9A-Fa-f]{4}[0-9A-Fa-f]{4}", frame[:8]):
        raise FrameError("format", "no CRC and length header")
    body = frame[8:]
    if int(frame[4:8], 16) != len(body):
        raise FrameError("length", f"header says {int(frame[4:8], 16)} characters, the body has {len(body)}")
    if int(frame[:4], 16) != crc16(body):
        raise FrameError("crc", f"header says {frame[:4].decode()}, the body's CRC is {crc16(body):04X}")
    match = _HEADER.match(body)
    if match is None:
        raise FrameError("format", "no \"ID\"seq...L... header")
    rest = match["rest"][1:]  # after the first '['
    encrypted = bool(match["star"])
    pad = ""
    try:
        text = rest.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("format", "bytes that are not ASCII") from None
    if encrypted:
        if key is None:
            raise FrameError("key", "an encrypted message and no key for it")
        try:
            decryptor = _cipher(key).decryptor()
            plain = decryptor.update(bytes.fromhex(text)) + decryptor.finalize()
        except ValueError:
            raise FrameError("format", "the encrypted part is not whole AES blocks of hex") from None
        # A wrong key gives bytes outside ASCII: that is how it shows.
        try:
            text = plain.decode("ascii")
        except UnicodeDecodeError:
            raise FrameError("key", "the message does not decrypt with this key") from None
        close = text.find("]")
        if close < 0:
            raise FrameError("key", "the message does not decrypt with this key")
        bar = text.find("|", 0, close)
        # Some receivers answer with a pad and no '|' (an empty data field): the pad is all there is.
        pad, text = (text[:bar], text[bar + 1:]) if bar >= 0 else (text[:close], text[close:])
    close = text.find("]")
    if close < 0:
        raise FrameError("format", "no ']' closing the data")
    data, text = text[:close], text[close + 1:]
    xdata: list[str] = []
    while text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise FrameError("format", "an extended-data field without its ']'")
        xdata.append(text[1:end])
        text = text[end + 1:]
    timestamp = None
    if text:
        stamp = _TIMESTAMP.fullmatch(text)
        if stamp is None:
            raise FrameError("format", f"'{text[:30]}' where the timestamp belongs")
        hh, mi, ss, mo, dd, yyyy = map(int, stamp.groups())
        try:
            timestamp = datetime(yyyy, mo, dd, hh, mi, ss, tzinfo=UTC)
        except ValueError:
            raise FrameError("format", f"'{text}' is not a valid time") from None
    return Message(
        token=match["token"].decode(), seq=int(match["seq"]), line=match["line"].decode(),
        account=match["account"].decode() if match["account"] else None,
        receiver=(match["receiver"] or match["receiver2"] or b"").decode() or None,
        data=data, xdata=tuple(xdata), timestamp=timestamp, encrypted=encrypted, pad=pad)


class FrameReader:
    """Splits a byte stream into frames (LF ... CR); noise between frames is counted and skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            start = self._buffer.find(LF)
            if start < 0:
                self.skipped_bytes += len(self._buffer)
                self._buffer.clear()
                return frames
            if start:
                self.skipped_bytes += start
                del self._buffer[:start]
            end = self._buffer.find(CR)
            if end < 0:
                if len(self._buffer) > MAX_FRAME:  # never ends: drop it rather than grow without bound
                    self.skipped_bytes += len(self._buffer)
                    self._buffer.clear()
                return frames
            frame = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            nested = frame.rfind(LF)  # a frame cut short and a new one begun: keep the new one
            if nested > 0:
                self.skipped_bytes += nested
                frame = frame[nested:]
            frames.append(frame)


# -- the data field for each format ---------------------------------------------------------------


def contact_id(account: str, restore: bool, code: int, partition: int, zone: int) -> str:
    """ADM-CID data: #acct|QXYZ GG CCC, Q 1 for a new event (E), 3 for a restore (R)."""
    if not (0 <= code <= 999 and 0 <= partition <= 99 and 0 <= zone <= 999):
        raise ValueError("Contact ID: code 0-999, partition 0-99, zone 0-999")
    return f"#{account}|{3 if restore else 1}{code:03d} {partition:02d} {zone:03d}"


def sia_dcs(account: str, code: str, partition: int, zone: int, text: str | None = None) -> str:
    """SIA-DCS data: #acct|Nri<partition>/<code><zone>, with ^text^ when there is one."""
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise ValueError(f"a SIA event code is two capital letters, not '{code}'")
    clean = "" if not text else "^" + re.sub(r"[^ -~]|[\^\[\]|]", "", text)[:40] + "^"
    return f"#{account}|Nri{partition}/{code}{zone:03d}{clean}"
