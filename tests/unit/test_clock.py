"""SNTP, sans-IO: the offset from a server's answer, and answers that must not be believed."""

from __future__ import annotations

import contextlib
import os
import struct
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import clock
from gateway.clock import (
    SITE_CLOCK_ENV,
    NtpError,
    SiteClock,
    site_clock,
    site_monotonic,
    site_time,
    use_site_clock,
)


def server_answer(sent: bytes, t2: float, t3: float, stratum: int = 2, leap: int = 0, mode: int = 4) -> bytes:
    def ntp(unix: float) -> bytes:
        seconds = unix + clock.NTP_EPOCH
        return struct.pack("!II", int(seconds), int((seconds % 1) * 2**32))

    head = struct.pack("!BBbb", leap << 6 | 4 << 3 | mode, stratum, 4, -20) + bytes(8) + b"GPS\x00"
    return head + ntp(t2) + sent[40:48] + ntp(t2) + ntp(t3)


def test_offset_and_delay_follow_rfc_4330() -> None:
    sent = clock.request(1_800_000_000.0)
    t1 = clock.sent_time(sent)
    # The server is 7 s ahead; the network takes 10 ms each way; the server holds it 1 ms.
    got = clock.answer(server_answer(sent, t1 + 7.010, t1 + 7.011), sent, t1 + 0.021)
    assert got.offset_s == pytest.approx(7.0, abs=1e-6) and got.delay_s == pytest.approx(0.020, abs=1e-6)
    assert got.stratum == 2


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"mode": 3}, "not a server's answer"), ({"stratum": 0}, "kiss-of-death"),
    ({"leap": 3}, "not synchronised"), ({"stratum": 16}, "not synchronised")])
def test_answers_that_do_not_tell_the_time(kwargs: dict[str, int], why: str) -> None:
    sent = clock.request(1_800_000_000.0)
    with pytest.raises(NtpError, match=why):
        clock.answer(server_answer(sent, 1_800_000_000.0, 1_800_000_000.0, **kwargs), sent, 1_800_000_000.0)


def test_an_answer_to_someone_elses_request_is_refused() -> None:
    mine, theirs = clock.request(1_800_000_000.0), clock.request(1_800_000_000.0)
    assert mine[40:48] != theirs[40:48], "the low bits of our transmit time are random"
    with pytest.raises(NtpError, match="not to our request"):
        clock.answer(server_answer(theirs, 1.8e9, 1.8e9), mine, 1.8e9)


@given(st.binary(max_size=100))
def test_no_bytes_crash_it(data: bytes) -> None:
    with contextlib.suppress(NtpError):
        clock.answer(data, clock.request(1_800_000_000.0), 1_800_000_000.0)


# --- ClockGuard: may retention and deadlines believe the wall clock? --------------------------------------------

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=TZ)
H = 3600.0


def readings(guard: clock.ClockGuard, *steps: tuple[float, float]) -> list[clock.ClockVerdict]:
    """Verdicts for readings (seconds since T0 on the monotonic clock, the wall clock's error then)."""
    return [guard.check(T0 + timedelta(seconds=at + error), 1000.0 + at) for at, error in steps]


@pytest.mark.parametrize(("steps", "trusted"), [
    pytest.param([(0, 0), (1, 0), (2, 0)], [True, True, True], id="steady"),
    pytest.param([(0, 0), (60, H), (61, H)], [True, False, False], id="jump-ahead-1h"),
    pytest.param([(0, 0), (60, -H), (61, -H)], [True, False, False], id="jump-back-1h"),
    pytest.param([(0, 0), (60, H), (120, 0)], [True, False, True], id="jumps-and-comes-back"),
    pytest.param([(0, 0), (60, 0.128), (3600, 2.5), (86400, 4.9)], [True] * 4, id="ntp-steps-and-slews"),
    pytest.param([(0, 0), (60, 299), (120, 299 + 299)], [True, True, True], id="small-steps-followed"),
    pytest.param([(0, 0), (60, 301)], [True, False], id="just-past-the-bound"),
])
def test_a_jump_against_the_monotonic_clock_makes_it_suspect(steps: list[tuple[float, float]],
                                                              trusted: list[bool]) -> None:
    guard = clock.ClockGuard(newest_record=T0 - timedelta(minutes=1))
    assert [v.trusted for v in readings(guard, *steps)] == trusted


def test_a_jump_is_told_as_a_person_reads_it_once_per_episode() -> None:
    guard = clock.ClockGuard(newest_record=None)
    first, jumped, still = readings(guard, (0, 0), (2 * H, H), (2 * H + 60, H + 30))
    assert first.trusted
    assert jumped.reason == ("the clock jumped 3600 s ahead at 10:00 (it reads 2026-05-01 11:00); retention and "
                             "deadlines wait until it is back or NTP confirms it")
    assert still.reason == jumped.reason
    assert len(jumped.reason) <= 200, "it is shown as the alarm's place (200 characters)"
    [back] = readings(guard, (2 * H + 120, 10))
    assert back == clock.ClockVerdict(True, "the clock is back where it was")


@pytest.mark.parametrize(("newest_ago", "trusted", "says"), [
    pytest.param(timedelta(days=200), False, "the clock reads 200 days after the newest record (2025-10-13 08:00)",
                 id="200-days-ahead"),
    pytest.param(timedelta(days=400), False, "400 days after", id="a-year-typed-wrong"),
    pytest.param(timedelta(days=62), True, "agrees", id="summer-holiday-switched-off"),
    pytest.param(timedelta(days=30), True, "agrees", id="winter-holiday"),
    pytest.param(timedelta(minutes=1), True, "agrees", id="restart"),
    pytest.param(-timedelta(minutes=4), True, "agrees", id="record-a-little-ahead"),
    pytest.param(-timedelta(hours=3), False, "reads 3.0 h before the newest record (2026-05-01 11:00): it went back",
                 id="clock-went-back"),
])
def test_at_start_the_clock_is_held_against_the_newest_record(newest_ago: timedelta, trusted: bool,
                                                              says: str) -> None:
    verdict = clock.ClockGuard(newest_record=T0 - newest_ago).check(T0, 1000.0)
    assert verdict.trusted is trusted
    assert says in verdict.reason
    assert len(verdict.reason) <= 200


def test_no_records_yet_trusts_the_clock() -> None:
    assert clock.ClockGuard(newest_record=None).check(T0 + timedelta(days=3650), 5.0).trusted


def test_a_clock_that_went_back_is_trusted_once_it_passes_the_newest_record() -> None:
    guard = clock.ClockGuard(newest_record=(T0 + timedelta(hours=1)).astimezone(UTC))
    verdicts = readings(guard, (0, 0), (3000, 0), (3400, 0), (3500, 0))
    assert [v.trusted for v in verdicts] == [False, False, True, True]  # 300 s before it: close enough


def test_confirm_takes_the_clock_as_it_is_and_rebaselines() -> None:
    guard = clock.ClockGuard(newest_record=T0 - timedelta(days=200))
    assert not guard.check(T0, 1000.0).trusted
    assert guard.confirm(T0, 1000.0) == clock.ClockVerdict(True, "NTP confirms the clock")
    assert [v.trusted for v in readings(guard, (60, 0), (120, 0))] == [True, True]
    # After a jump, confirming takes the new time; going back to the old one is now the jump.
    assert [v.trusted for v in readings(guard, (180, H))] == [False]
    guard.confirm(T0 + timedelta(seconds=180 + H), 1180.0)
    assert [v.trusted for v in readings(guard, (240, H), (300, 0))] == [True, False]


# -- the site's clock ---------------------------------------------------------------------------------------


def test_a_site_clock_runs_from_its_start_at_its_speed_and_back() -> None:
    clock = SiteClock(site_start=1_788_000_000.0, mono_start=5_000.0, speed=60.0)
    assert clock.at(5_000.0) == 1_788_000_000.0
    assert clock.at(5_010.0) == 1_788_000_600.0, "ten real seconds are ten site minutes"
    assert clock.mono(1_788_000_600.0) == 5_010.0
    assert SiteClock.decode(clock.encode()) == clock


@pytest.mark.parametrize("text", ["", "60", "1@2", "1@2x", "a@2x3", "1@2x0", "1@2x-1", "1@2xnan", "1@inf x2"])
def test_a_broken_site_clock_says_what_it_expects(text: str) -> None:
    with pytest.raises(ValueError, match="CAMPUSGW_SITE_CLOCK"):
        SiteClock.decode(text)


def test_site_time_is_real_time_unless_a_site_clock_is_used() -> None:
    assert site_clock() is None
    assert abs(site_time() - time.time()) < 1 and site_time(12.5) == 12.5
    try:
        use_site_clock(SiteClock(1_000.0, time.monotonic(), 2.0))
        assert os.environ[SITE_CLOCK_ENV], "processes started now run on it too"
        assert 999.0 < site_time() < 1_010.0 and site_monotonic() > time.monotonic()
        reading = time.time() - 3.0  # a device's reading three real seconds ago: six site seconds
        assert site_time() - site_time(reading) == pytest.approx(6.0, abs=0.1)
    finally:
        use_site_clock(None)
    assert SITE_CLOCK_ENV not in os.environ and abs(site_time() - time.time()) < 1


def test_a_step_of_the_machines_clock_does_not_move_a_fast_site_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI: the VM's clock stepped 7 s, a 300x site clock read it as 35 minutes and the clock guard stopped
    judging patrols. The site's clock runs on CLOCK_MONOTONIC; only the wall clock can be stepped here."""
    wall = time.time
    try:
        use_site_clock(SiteClock(1_000.0, time.monotonic(), 300.0))
        before = site_time()
        reading = time.time()
        monkeypatch.setattr(time, "time", lambda: wall() + 7.0)  # NTP steps the wall clock 7 s ahead
        after = site_time()
        assert 0 <= after - before < 60, "a few real milliseconds, not 35 site minutes"
        assert abs(site_time(reading + 7.0) - after) < 60, "a reading taken after the step is placed by its age"
    finally:
        monkeypatch.undo()
        use_site_clock(None)
