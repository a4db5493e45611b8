"""How far the gateway's clock is from a time server (SNTP, RFC 4330), sans-IO plus a thin UDP shell,
whether the wall clock can be trusted to delete records and count down deadlines (ClockGuard), and the
site's clock (SiteClock): the time records, rules and deadlines go by, which a demo or a test can start at a
chosen moment and run faster than real time.

NTP synchronisation status (timedatectl) says whether the system believes it is synchronised; this
measures it: records carry times, and the standards allow a clock to be off by less than 5 s a day.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

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


# The wall clock minus the monotonic clock moves only when someone steps the wall clock: NTP's slewing
# changes the rate of both. NTP itself steps by fractions of a second, and a clock drifting the 5 s a day
# the standards allow takes two months to reach this; an hour (a time zone or DST mistake) is far past it.
CLOCK_STEP_S = 300.0
# At start, a clock this far past the newest record is held to be wrong until NTP confirms it. Longer than
# the longest school holiday (summer: about 8 weeks, and a kindergarten may switch the gatehouse box off for
# all of it), so a box without NTP does not stop its retention and deadlines on the first day of term; a
# clock months or a year ahead (a wrong year typed, a bad RTC) is still caught. Retention never deletes
# within its own days of the newest record anyway (gateway.rules_service.service), so a clock inside this gap
# cannot empty the raw event log either.
START_GAP = timedelta(days=90)


@dataclass(frozen=True)
class ClockVerdict:
    trusted: bool
    reason: str  # for the person who has to look at the clock


class ClockGuard:
    """Whether the wall clock can be trusted: pure, fed readings of the wall and monotonic clocks.

    Until it has a baseline the clock is held against the newest stored record: more than `start_gap`
    after it, or more than `step_s` before it (the clock went back), it is suspect. The first trusted
    reading sets the baseline, wall minus monotonic, and later trusted readings move it (so NTP's small
    steps never add up to a jump). A reading more than `step_s` off the baseline is a jump: suspect until
    the clock is back within `step_s` of the baseline, or `confirm` (NTP says it is synchronised) takes
    the clock as it is."""

    def __init__(self, newest_record: datetime | None, step_s: float = CLOCK_STEP_S,
                 start_gap: timedelta = START_GAP) -> None:
        self.newest_record = newest_record
        self.step_s = step_s
        self.start_gap = start_gap
        self._baseline: float | None = None
        self._jump: str | None = None  # the reason given since the jump was seen, kept until it is over

    def check(self, wall: datetime, mono: float) -> ClockVerdict:
        offset = wall.timestamp() - mono
        if self._baseline is None:
            doubt = self._against_records(wall)
            if doubt:
                return ClockVerdict(False, doubt)
            self._baseline = offset
            return ClockVerdict(True, "the clock agrees with the newest record")
        step = offset - self._baseline
        if abs(step) <= self.step_s:
            self._baseline = offset
            back, self._jump = self._jump is not None, None
            return ClockVerdict(True, "the clock is back where it was" if back else "the clock runs steadily")
        if self._jump is None:
            was = datetime.fromtimestamp(self._baseline + mono, wall.tzinfo)
            self._jump = (f"the clock jumped {_span(abs(step))} {'ahead' if step > 0 else 'back'} at {was:%H:%M} "
                          f"(it reads {wall:%Y-%m-%d %H:%M}); retention and deadlines wait until it is back "
                          "or NTP confirms it")
        return ClockVerdict(False, self._jump)

    def confirm(self, wall: datetime, mono: float) -> ClockVerdict:
        """NTP says the clock is synchronised: it is right as it is, and the new baseline."""
        self._baseline = wall.timestamp() - mono
        self._jump = None
        return ClockVerdict(True, "NTP confirms the clock")

    def _against_records(self, wall: datetime) -> str | None:
        if self.newest_record is None:
            return None
        newest = self.newest_record.astimezone(wall.tzinfo)
        ahead = (wall - newest).total_seconds()
        if ahead > self.start_gap.total_seconds():
            return (f"the clock reads {_span(ahead)} after the newest record ({newest:%Y-%m-%d %H:%M}); "
                    "retention and deadlines wait until NTP confirms the clock")
        if -ahead > self.step_s:
            return (f"the clock reads {_span(-ahead)} before the newest record ({newest:%Y-%m-%d %H:%M}): it "
                    "went back; retention and deadlines wait until it passes that time or NTP confirms it")
        return None


def _span(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds:.0f} s"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


# -- the site's clock ------------------------------------------------------------------------------------------

SITE_CLOCK_ENV = "CAMPUSGW_SITE_CLOCK"


@dataclass(frozen=True)
class SiteClock:
    """Site time = `site_start` + (monotonic time - `mono_start`) x `speed`, in Unix seconds.

    Only what it is o'clock on the site follows it: event and record times, the rules' now (escalation,
    deadlines, schedules, passes, patrols), the clock guard. Mechanisms keep real time (poll periods, timeouts,
    backoff, command freshness, a bollard's travel time), so a demo at 60x still talks to devices at their own
    pace. It runs on CLOCK_MONOTONIC, which every process on the machine shares, not on the wall clock: a step
    of the machine's clock (NTP, a VM resumed) would be multiplied by the speed (7 s became 35 site minutes at
    300x, and the clock guard then held patrol judging back). Every process of one gateway reads the same
    clock from the environment (CAMPUSGW_SITE_CLOCK), so they agree to the millisecond."""

    site_start: float
    mono_start: float
    speed: float = 1.0

    def at(self, mono: float) -> float:
        """The site's time at the monotonic moment `mono`."""
        return self.site_start + (mono - self.mono_start) * self.speed

    def mono(self, site: float) -> float:
        """The monotonic moment at which the site's clock shows `site`."""
        return self.mono_start + (site - self.site_start) / self.speed

    def now(self) -> float:
        return self.at(time.monotonic())

    def encode(self) -> str:
        return f"{self.site_start!r}@{self.mono_start!r}x{self.speed!r}"

    @classmethod
    def decode(cls, text: str) -> SiteClock:
        """`<site start>@<monotonic start>x<speed>`, seconds; a clear error for anything else."""
        try:
            site, rest = text.split("@")
            mono, speed = rest.split("x")
            clock = cls(float(site), float(mono), float(speed))
        except ValueError:
            raise ValueError(f"{SITE_CLOCK_ENV}={text!r}: expected <site start>@<monotonic start>x<speed> in "
                             "seconds (Unix time, CLOCK_MONOTONIC), e.g. 1796000000.0@12345.6x60") from None
        if not (clock.speed > 0 and all(map(math.isfinite, (clock.site_start, clock.mono_start, clock.speed)))):
            raise ValueError(f"{SITE_CLOCK_ENV}={text!r}: the speed must be above 0 and the times finite")
        return clock


def _from_environment() -> SiteClock | None:
    text = os.environ.get(SITE_CLOCK_ENV)
    return SiteClock.decode(text) if text else None


_site_clock = _from_environment()


def use_site_clock(clock: SiteClock | None) -> None:
    """Run this process (and the processes it starts) on `clock`; None: real time again."""
    global _site_clock
    _site_clock = clock
    if clock is None:
        os.environ.pop(SITE_CLOCK_ENV, None)
    else:
        os.environ[SITE_CLOCK_ENV] = clock.encode()


def site_clock() -> SiteClock | None:
    return _site_clock


def site_time(real: float | None = None) -> float:
    """The site's time now, or at the recent real moment `real` (a device's reading, from time.time()): Unix
    seconds. A reading is placed by its age, so a step of the wall clock before it does not move it."""
    if _site_clock is None:
        return time.time() if real is None else real
    now = _site_clock.now()
    return now if real is None else now - (time.time() - real) * _site_clock.speed


def site_monotonic() -> float:
    """A monotonic clock at the site clock's pace: what the clock guard holds the site's wall clock against."""
    mono = time.monotonic()
    return mono if _site_clock is None else mono * _site_clock.speed

