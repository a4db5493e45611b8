"""SIA DC-09 framing byte for byte, against frames other implementations produced, and fuzzed.

The standard's own text is not free to copy here, so the fixed vectors are frames made by independent
implementations (named at each), and the CRC is checked against the CRC catalogue's check value.
pysiaalarm, the receiver Home Assistant uses, parses what we build.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysiaalarm import SIAAccount, SIAEvent

from gateway.police import dc09
from gateway.police.dc09 import FrameError, Message

AT = datetime(2026, 11, 29, 7, 30, 5, tzinfo=UTC)


def test_crc_is_crc16_arc() -> None:
    assert dc09.crc16(b"123456789") == 0xBB3D  # the catalogue's check value for CRC-16/ARC


def test_a_frame_is_crc_length_and_body() -> None:
    message = Message("SIA-DCS", 1, line="77", receiver="F3", account="1234", data="#1234|NRR|Atest")
    # made by the Rust `dc09` receiver/dialler (fioletoven/dc09) for the same message
    assert dc09.encode(message) == b'\nF4D20029"SIA-DCS"0001RF3L77#1234[#1234|NRR|Atest]\r'
    assert dc09.decode(b'\n96ED0016"SIA-DCS"0001L0#1234[]\r') == Message("SIA-DCS", 1, line="0", account="1234")


def test_a_frame_with_receiver_line_extended_data_and_timestamp() -> None:
    frame = b'73580056"SIA-DCS"0002R1L232#78919[#78919|Nri1/BA012][X012W34.1][Y045N12.2]_14:12:04,09-25-2026'
    message = dc09.decode(frame)
    assert (message.receiver, message.line, message.account, message.seq) == ("1", "232", "78919", 2)
    assert message.data == "#78919|Nri1/BA012" and message.xdata == ("X012W34.1", "Y045N12.2")
    assert message.timestamp == datetime(2026, 9, 25, 14, 12, 4, tzinfo=UTC)
    assert dc09.encode(message) == b"\n" + frame + b"\r"


def test_a_nak_carries_the_receivers_time() -> None:
    nak = dc09.decode(b'\nE4410025"NAK"0000R0L0A0[]_16:20:01,09-24-2025\r')
    assert nak.token == "NAK" and nak.timestamp == datetime(2025, 9, 24, 16, 20, 1, tzinfo=UTC)
    body = b'"NAK"0000L0R0A0[]_16:20:01,09-24-2025'  # pysiaalarm's order: line before receiver
    assert dc09.decode(b"%04X0%03X" % (dc09.crc16(body), len(body)) + body).timestamp == nak.timestamp


def test_an_encrypted_frame_from_another_transmitter_decrypts() -> None:
    # An AES-128 frame from pysiaalarm's test set: a pad of zeros and '|', no account in the data.
    frame = (b'05BB0076"*SIA-DCS"7654L0#1111[C07DA1EB73C617857476EE5D79436CEE5E0084485E79EC56B0D5D1F3F6E648B2'
             b"78050BBCCBC8FE5DCA7E3C80DBDD4945")
    message = dc09.decode(frame, b"AAAAAAAAAAAAAAAA")
    assert message.encrypted and message.account == "1111" and message.seq == 7654
    assert message.data == "Nri1/WA000" and message.timestamp == datetime(2020, 7, 9, 16, 4, 2, tzinfo=UTC)
    with pytest.raises(FrameError) as wrong:
        dc09.decode(frame, b"BBBBBBBBBBBBBBBB")
    assert wrong.value.reason == "key"
    with pytest.raises(FrameError) as none:
        dc09.decode(frame)
    assert none.value.reason == "key"


def test_encryption_fills_whole_blocks_with_a_pad_and_a_bar() -> None:
    message = Message("ADM-CID", 42, line="1", account="5678", data=dc09.contact_id("5678", False, 120, 1, 3),
                      timestamp=AT)
    frame = dc09.encode(message, b"K" * 16, pad_char="x")
    body = frame[9:-1]
    assert body.startswith(b'"*ADM-CID"0042L1#5678[')
    secret = bytes.fromhex(body.split(b"[", 1)[1].decode())
    assert len(secret) % 16 == 0
    assert dc09.decode(frame, b"K" * 16).pad.strip("x") == "", "the pad, then '|', then the data"
    assert dc09.decode(frame, b"K" * 16) == message
    with pytest.raises(ValueError, match="pad"):
        dc09.encode(message, b"K" * 16, pad_char="|")
    with pytest.raises(ValueError, match="timestamp"):
        dc09.encode(Message("NULL", 1), b"K" * 16)


def test_header_errors_are_named() -> None:
    good = dc09.encode(Message("NULL", 5, account="1234", timestamp=AT))
    for bad, reason in [(b"\n0000" + good[5:], "crc"), (good[:5] + b"0FFF" + good[9:], "length"),
                        (b"\nhello\r", "format"), (dc09.encode(Message("NULL", 5, data="]x", timestamp=None)),
                                                    "format")]:
        with pytest.raises(FrameError) as error:
            dc09.decode(bad)
        assert error.value.reason == reason


def test_contact_id_and_sia_data_fields() -> None:
    assert dc09.contact_id("1234", False, 120, 1, 5) == "#1234|1120 01 005"
    assert dc09.contact_id("1234", True, 137, 0, 12) == "#1234|3137 00 012"
    assert dc09.sia_dcs("1234", "PA", 1, 5, "门卫室 gate^[x]") == "#1234|Nri1/PA005^ gatex^"
    with pytest.raises(ValueError):
        dc09.sia_dcs("1234", "pa", 1, 5)


@pytest.mark.parametrize("key", [None, b"0123456789ABCDEF", b"0123456789ABCDEF01234567",
                                 b"0123456789ABCDEF0123456789ABCDEF"])
@pytest.mark.parametrize("token", ["ADM-CID", "SIA-DCS"])
@pytest.mark.parametrize("receiver", [None, "2"])  # without one, pysiaalarm answers "ACK"0017NoneL1...
def test_pysiaalarm_reads_what_we_send(key: bytes | None, token: str, receiver: str | None) -> None:
    data = dc09.contact_id("1234", False, 120, 1, 5) if token == "ADM-CID" else dc09.sia_dcs("1234", "PA", 1, 5)
    now = datetime.now(UTC).replace(microsecond=0)
    frame = dc09.encode(Message(token, 17, line="1", receiver=receiver, account="1234", data=data, timestamp=now), key)
    account = SIAAccount("1234", key.decode() if key else None)
    event = SIAEvent.from_line(frame.strip().decode(), {"1234": account})
    assert event.valid_message, "CRC as pysiaalarm computes it"
    assert (event.code, event.ri, event.sequence, event.account) == ("PA", "005" if token == "ADM-CID" else "1",
                                                                      "0017", "1234")
    assert event.timestamp == now
    answer = dc09.decode(event.create_response(), key)
    assert (answer.token, answer.seq, answer.account) == ("ACK", 17, "1234")


messages = st.builds(
    Message,
    token=st.sampled_from(["SIA-DCS", "ADM-CID", "NULL", "ACK"]),
    seq=st.integers(0, 9999),
    line=st.from_regex(r"[0-9A-F]{1,6}", fullmatch=True),
    account=st.from_regex(r"[0-9A-F]{3,16}", fullmatch=True),
    receiver=st.none() | st.from_regex(r"[0-9A-F]{1,6}", fullmatch=True),
    data=st.from_regex(r"[ -Z\\^-~]{0,60}", fullmatch=True),
    xdata=st.lists(st.from_regex(r"[A-Z][ -Z\\^-~]{0,20}", fullmatch=True), max_size=3).map(tuple),
    timestamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=UTC)),
)


@settings(max_examples=300, deadline=None)
@given(messages, st.sampled_from([None, b"k" * 16, b"k" * 24, b"k" * 32]))
def test_every_message_survives_the_round_trip(message: Message, key: bytes | None) -> None:
    back = dc09.decode(dc09.encode(message, key), key)
    assert back == message and back.encrypted == (key is not None)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, b"k" * 16]))
def test_no_bytes_crash_the_decoder(data: bytes, key: bytes | None) -> None:
    with contextlib.suppress(FrameError):  # the only way it may refuse
        dc09.decode(data, key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_the_frame_reader_finds_frames_among_noise(noise: list[bytes]) -> None:
    frame = dc09.encode(Message("NULL", 3, account="1234", timestamp=AT))
    reader = dc09.FrameReader()
    stream = b"".join(n.replace(b"\n", b"").replace(b"\r", b"") + frame for n in noise) or frame
    found = []
    for i in range(0, len(stream), 7):
        found += reader.feed(stream[i:i + 7])
    assert found == [frame] * max(1, len(noise))
