"""Modbus TCP framing: requests byte for byte, responses parsed, and no bytes on the wire can crash it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.modbus_di import frames


def test_requests_are_the_bytes_the_standard_gives() -> None:
    # Modbus Application Protocol 6.2 / Messaging Implementation Guide: MBAP + function 2
    assert frames.read_inputs(0x0102, 1, 0x00C4, 22) == bytes.fromhex("0102 0000 0006 01 02 00C4 0016")
    # function 15, 10 coils from 19: CD 01 (the spec's example values)
    values = [True, False, True, True, False, False, True, True, True, False]
    assert frames.write_coils(7, 1, 19, values) == bytes.fromhex("0007 0000 0009 01 0F 0013 000A 02 CD 01")


def test_responses_arrive_in_pieces_and_together() -> None:
    decoder = frames.TcpDecoder()
    reply = bytes.fromhex("0102 0000 0006 01 02 03 ACDB35")  # 22 inputs -> 3 bytes
    assert decoder.feed(reply[:5]) == []
    (first,) = decoder.feed(reply[5:])
    assert first.transaction == 0x0102 and first.bits is not None
    assert first.bits[:8] == [False, False, True, True, False, True, False, True]  # 0xAC, least bit first
    exception = bytes.fromhex("0103 0000 0003 01 82 02")
    write_ack = bytes.fromhex("0104 0000 0006 01 0F 0013 000A")
    got = decoder.feed(exception + write_ack)
    assert [(r.transaction, r.function, r.exception) for r in got] == [(0x0103, 2, 2), (0x0104, 15, None)]
    assert decoder.garbled == 0


def test_garbage_is_counted_and_the_stream_recovers() -> None:
    decoder = frames.TcpDecoder()
    assert decoder.feed(b"\xde\xad\xbe\xef\x00\x00\x00\x00") == []  # protocol id is not 0
    assert decoder.garbled == 1
    assert len(decoder.feed(bytes.fromhex("0001 0000 0004 01 02 01 05"))) == 1
    assert decoder.feed(bytes.fromhex("0002 0000 0004 01 02 05 05")) == []  # byte count does not fit
    assert decoder.garbled == 2


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_no_bytes_crash_the_decoder(chunks: list[bytes]) -> None:
    decoder = frames.TcpDecoder()
    for chunk in chunks:
        for response in decoder.feed(chunk):
            assert 0 <= response.transaction <= 0xFFFF
            assert response.bits is not None or response.exception is not None or response.function == 15
