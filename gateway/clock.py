"""How far the gateway's clock is from a time server (SNTP, RFC 4330), sans-IO plus a thin UDP shell.

NTP synchronisation status (timedatectl) says whether the system believes it is synchronised; this
measures it: records carry times, and the standards allow a clock to be off by less than 5 s a day.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
PACKET = struct.Struct("!BBbb11I")


class NtpError(ValueError):
    """An answer that does not tell the time (wrong mode, kiss-of-death, not ours, unsynchronised)."""


@dataclass(frozen=True)
class Measurement:
    offset_s: float  # server time minus ours: positive when our clock is behind
    delay_s: float  # the round trip, less the server's own time
    stratum: int


def _to_ntp(unix: float) -> tuple[int, int]:
    seconds = unix + NTP_EPOCH
    whole = int(seconds)
    return whole & 0xFFFFFFFF, int((seconds - whole) * 2**32) & 0xFFFFFFFF


def _from_ntp(seconds: int, fraction: int) -> float:
    return seconds - NTP_EPOCH + fraction / 2**32


def request(transmit: float) -> bytes:
    """A client request (version 4, mode 3) carrying our transmit time, which the answer must echo."""
    sec, frac = _to_ntp(transmit)
    # The low bits of the fraction are random, so an answer cannot be guessed (RFC 4330 section 3).
    frac = (frac & 0xFFFFF000) | int.from_bytes(os.urandom(2), "big") & 0xFFF
    return PACKET.pack(0b00_100_011, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sec, frac)


def sent_time(packet: bytes) -> float:
    """Our transmit time exactly as the request carries it (the answer's origin time must match)."""
    fields = PACKET.unpack(packet)
    return _from_ntp(fields[-2], fields[-1])


def answer(data: bytes, sent: bytes, received: float) -> Measurement:
    """The measurement from a server's answer to `sent`, received (our clock) at `received`."""
    if len(data) < PACKET.size:
        raise NtpError(f"an answer of {len(data)} bytes; NTP's is at least {PACKET.size}")
    fields = PACKET.unpack(data[:PACKET.size])
    flags, stratum = fields[0], fields[1]
    leap, mode = flags >> 6, flags & 0b111
    if mode not in (4, 5):
        raise NtpError(f"mode {mode}: not a server's answer")
    if stratum == 0:
        raise NtpError(f"kiss-of-death {data[12:16].decode('ascii', 'replace')!r}: the server refuses to answer")
    if leap == 3 or stratum > 15:
        raise NtpError("the server is not synchronised itself")
    if data[24:32] != sent[40:48]:
        raise NtpError("the answer is not to our request (origin time differs)")
    t1 = sent_time(sent)
    t2 = _from_ntp(fields[11], fields[12])  # the server's receive time
    t3 = _from_ntp(fields[13], fields[14])  # and its transmit time
    t4 = received
    return Measurement(offset_s=((t2 - t1) + (t3 - t4)) / 2, delay_s=(t4 - t1) - (t3 - t2), stratum=stratum)


def measure(server: str, port: int = 123, timeout: float = 3.0) -> Measurement:
    """Ask `server` once; raises NtpError or OSError (no answer, no route)."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        packet = request(time.time())
        sock.send(packet)
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(512)
            try:
                return answer(data, packet, time.time())
            except NtpError as exc:
                if "not to our request" not in str(exc) or time.monotonic() >= deadline:
                    raise
