"""SNTP, sans-IO: the offset from a server's answer, and answers that must not be believed."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import clock
from gateway.clock import NtpError


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
