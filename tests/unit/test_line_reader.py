"""Serial line readers: whatever a converter or scanner prints, in whatever pieces the port delivers it, becomes
card reads, key presses and codes, or a Garbled line with a reason; never an exception, never the wrong card."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.card_formats import CardFormatError, make_card
from drivers.serial_reader.lines import (
    KEYS,
    MAX_LINE,
    CardInput,
    CodeInput,
    Garbled,
    KeyInput,
    LineReader,
    ReaderInput,
)

# H10301 facility 18, card 54919: the converter prints the 24 data bits, 0x12D687 = 1234567 decimal
CARD_18_54919 = make_card("wiegand26", 54919, 18)


def credentials(inputs: list[ReaderInput]) -> list[str]:
    return [i.card.credential for i in inputs if isinstance(i, CardInput)]


def summary(inputs: list[ReaderInput]) -> list[str]:
    """Inputs as a guard would read them in the event log."""
    out = []
    for i in inputs:
        if isinstance(i, CardInput):
            out.append(f"card {i.card.credential}")
        elif isinstance(i, KeyInput):
            out.append(f"key {i.key}")
        elif isinstance(i, CodeInput):
            out.append(f"code {i.code}")
        else:
            out.append("garbled")
    return out


@pytest.mark.parametrize("stream", [b"12D687\r", b"12D687\n", b"12D687\r\n", b"\r\n12D687\r\n\r\n"])
def test_each_line_ending_gives_one_card_read(stream: bytes) -> None:
    assert LineReader().feed(stream) == [CardInput(CARD_18_54919, "12D687")]


def test_a_crlf_split_across_feeds_is_one_terminator_not_a_star_key() -> None:
    reader = LineReader()
    assert summary(reader.feed(b"12D687\r")) == ["card 018,54919"]
    assert summary(reader.feed(b"\n")) == []
    assert summary(reader.feed(b"12D687\r")) == ["card 018,54919"]
    assert summary(reader.feed(b"\n12D687\r\n")) == ["card 018,54919"]


@pytest.mark.parametrize("stream", [b"\r\n\r\n", b"\r\r\r", b"   \r\n", b"\r\n  \r"])
def test_empty_and_blank_lines_are_ignored(stream: bytes) -> None:
    assert LineReader().feed(stream) == []
    assert LineReader(mode="qr").feed(stream) == []


def test_a_line_arriving_in_pieces_is_read_once_it_ends() -> None:
    reader = LineReader()
    assert reader.feed(b"12") == []
    assert reader.feed(b"D6") == []
    assert reader.feed(b"87") == []
    assert summary(reader.feed(b"\r\n123456")) == ["card 018,54919"]
    assert summary(reader.feed(b"78\r\n")) == ["card 0305419896"]


def test_an_overlong_line_is_garbled_once_and_the_next_line_reads() -> None:
    reader = LineReader()
    got = reader.feed(b"A" * (MAX_LINE + 1))
    assert len(got) == 1 and isinstance(got[0], Garbled) and f"longer than {MAX_LINE}" in got[0].reason
    assert got[0].raw == b"A" * (MAX_LINE + 1)
    assert reader.feed(b"A" * 5000) == []  # still the same line: not reported again
    assert reader.feed(b"\x05B\r") == []  # its tail, keypad-looking bytes included, is skipped
    assert summary(reader.feed(b"\n12D687\r\n")) == ["card 018,54919"]
    assert reader.flush() == []


def test_an_overlong_line_fed_byte_by_byte_is_still_one_garbled() -> None:
    reader = LineReader()
    got = [i for byte in b"A" * 2000 + b"\n12D687\n" for i in reader.feed(bytes([byte]))]
    assert summary(got) == ["garbled", "card 018,54919"]


def test_a_qr_payload_of_max_line_bytes_is_accepted_and_one_more_is_not() -> None:
    reader = LineReader(mode="qr")
    assert reader.feed(b"Q" * MAX_LINE + b"\r\n") == [CodeInput("Q" * MAX_LINE)]
    assert summary(reader.feed(b"Q" * (MAX_LINE + 1) + b"\r\n")) == ["garbled"]


@pytest.mark.parametrize(("byte", "key"), list(zip(range(12), KEYS, strict=True)))
def test_a_lone_keypad_byte_is_a_key_press_at_once(byte: int, key: str) -> None:
    # 4-bit Wiegand keypads: 0x00-0x09 digits, 0x0A '*', 0x0B '#'; no line terminator follows
    assert LineReader().feed(bytes([byte])) == [KeyInput(key)]
    assert LineReader(mode="qr").feed(bytes([byte])) == [KeyInput(key)]


def test_a_pin_typed_between_card_reads_comes_through_in_order() -> None:
    stream = b"12D687\r\n\x01\x02\x03\x04\x0b12D687\r\n\x0a"
    assert summary(LineReader().feed(stream)) == [
        "card 018,54919", "key 1", "key 2", "key 3", "key 4", "key #", "card 018,54919", "key *"]


@pytest.mark.parametrize(("line", "key"), [(b"5", "5"), (b"*", "*"), (b"#", "#"), (b" 0 ", "0")])
def test_a_converter_printing_a_key_as_a_line_gives_a_key_press(line: bytes, key: str) -> None:
    assert LineReader().feed(line + b"\r\n") == [KeyInput(key)]
    assert LineReader(encoding="decimal").feed(line + b"\r\n") == [KeyInput(key)]


@pytest.mark.parametrize("control", [0x05, 0x09, 0x0B, 0x0C, 0x0E, 0x1B, 0x1F, 0x7F])
def test_a_control_byte_inside_a_line_garbles_it_and_the_next_line_reads(control: int) -> None:
    reader = LineReader()
    got = reader.feed(b"12" + bytes([control]) + b"D687\r\n12D687\r\n")
    assert summary(got) == ["garbled", "card 018,54919"]
    assert isinstance(got[0], Garbled) and f"control character 0x{control:02X}" in got[0].reason


def test_a_c1_control_character_in_utf8_garbles_the_line() -> None:
    assert summary(LineReader(mode="qr").feed("ab\u009bcd\r".encode())) == ["garbled"]


@pytest.mark.parametrize("line", [b"\xff\xfe\xfd", b"12D6\x87", b"\xc3", b"\xe8\xae", b"\xed\xa0\x80"])
def test_invalid_utf8_is_garbled_with_a_baud_rate_hint(line: bytes) -> None:
    for reader in (LineReader(), LineReader(mode="qr")):
        (got,) = reader.feed(line + b"\r\n")
        assert isinstance(got, Garbled) and got.raw == line
        assert "not UTF-8" in got.reason and "baud rate" in got.reason


@pytest.mark.parametrize(("encoding", "card_format", "line", "credential", "fmt"), [
    ("hex", "auto", b"12D687", "018,54919", "wiegand26"),
    ("hex", "auto", b"12d687", "018,54919", "wiegand26"),
    ("hex", "auto", b"  12D687  ", "018,54919", "wiegand26"),
    ("hex", "auto", b"000001", "000,00001", "wiegand26"),
    ("hex", "auto", b"12345678", "0305419896", "wiegand34_uid"),
    ("hex", "auto", b"0012D687", "0001234567", "wiegand34_uid"),
    ("hex", "wiegand26", b"12D687", "018,54919", "wiegand26"),
    ("hex", "wiegand34", b"0012D687", "018,54919", "wiegand34"),
    ("hex", "wiegand34", b"04D2162E", "1234,05678", "wiegand34"),
    ("hex", "raw32", b"DEADBEEF", "3735928559", "raw32"),
    ("decimal", "auto", b"1234567", "018,54919", "wiegand26"),
    ("decimal", "auto", b"01234567", "018,54919", "wiegand26"),
    ("decimal", "auto", b"16777215", "255,65535", "wiegand26"),
    ("decimal", "auto", b"16777216", "0016777216", "wiegand34_uid"),
    ("decimal", "auto", b"012345678", "0012345678", "wiegand34_uid"),
    ("decimal", "auto", b"0001234567", "0001234567", "wiegand34_uid"),
    ("decimal", "auto", b"4294967295", "4294967295", "wiegand34_uid"),
    ("decimal", "wiegand34", b"1234567", "018,54919", "wiegand34"),
    ("decimal", "raw32", b"42", "0000000042", "raw32"),
])
def test_hex_and_decimal_converter_lines_read_as_cards(
        encoding: str, card_format: str, line: bytes, credential: str, fmt: str) -> None:
    reader = LineReader(encoding=encoding, card_format=card_format)  # type: ignore[arg-type]
    (got,) = reader.feed(line + b"\r\n")
    assert isinstance(got, CardInput)
    assert (got.card.credential, got.card.format) == (credential, fmt)
    assert got.line == line.decode().strip()


@pytest.mark.parametrize(("encoding", "card_format", "line", "reason"), [
    ("hex", "auto", b"0x12D687", "not a card number: '0x12D687'; expected 6 or 8 hex digits; set the converter"),
    ("hex", "auto", b"W26:12D687", "bare card number"),
    ("hex", "auto", b"ID=12345678", "bare card number"),
    ("hex", "auto", b"12D68", "expected 6 or 8 hex digits"),
    ("hex", "auto", b"12D6871", "expected 6 or 8 hex digits"),
    ("hex", "auto", b"12 D6 87", "expected 6 or 8 hex digits"),
    ("hex", "auto", b"12D687\t", "control character 0x09"),
    ("hex", "wiegand34", b"12D687", "6 hex digits .* card_format is wiegand34"),
    ("hex", "wiegand26", b"12345678", "8 hex digits .* card_format is wiegand26"),
    ("decimal", "auto", b"12D687", "expected up to 10 decimal digits"),
    ("decimal", "auto", b"018,54919", "expected up to 10 decimal digits"),
    ("decimal", "auto", b"4294967296", "does not fit wiegand34_uid"),
    ("decimal", "auto", b"12345678901", "expected up to 10 decimal digits"),
    ("decimal", "wiegand26", b"16777216", "does not fit wiegand26 .* card_format"),
    ("decimal", "auto", "１２３４５６７".encode(), "expected up to 10 decimal digits"),  # full-width digits
])
def test_lines_that_are_not_a_bare_card_number_are_garbled_with_the_reason(
        encoding: str, card_format: str, line: bytes, reason: str) -> None:
    reader = LineReader(encoding=encoding, card_format=card_format)  # type: ignore[arg-type]
    (got,) = reader.feed(line + b"\r\n")
    assert isinstance(got, Garbled) and got.raw == line
    assert re.search(reason, got.reason), got.reason


def test_qr_mode_gives_the_scanned_text_stripped() -> None:
    reader = LineReader(mode="qr")
    stream = "  https://visitor.example/p/AB12?day=2026-11-30  \r\n访客 王老师\r\n5\r\n12D687\n".encode()
    assert reader.feed(stream) == [CodeInput("https://visitor.example/p/AB12?day=2026-11-30"),
                                   CodeInput("访客 王老师"), CodeInput("5"), CodeInput("12D687")]


def test_qr_mode_still_takes_keypad_bytes_and_garbles_control_characters() -> None:
    reader = LineReader(mode="qr")
    assert summary(reader.feed(b"\x07\x0bVISIT-42\r\nVIS\x1bIT\r\n")) == ["key 7", "key #", "code VISIT-42", "garbled"]


def test_a_partial_line_when_the_port_closes_is_garbled_not_read() -> None:
    reader = LineReader()
    assert reader.feed(b"12D687\r\n12D6") == [CardInput(CARD_18_54919, "12D687")]
    (got,) = reader.flush()
    assert isinstance(got, Garbled) and got.raw == b"12D6" and "partial line" in got.reason
    assert reader.flush() == []
    assert summary(reader.feed(b"12D687\r\n")) == ["card 018,54919"]


def test_flush_after_a_finished_line_gives_nothing_and_forgets_a_pending_cr() -> None:
    reader = LineReader()
    reader.feed(b"12D687\r")
    assert reader.flush() == []
    assert reader.feed(b"\n") == [KeyInput("*")]  # a new port session: this LF is not the old CRLF's


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"card_format": "h10301"}, CardFormatError, "card_format 'h10301': expected 'auto' or one of wiegand26"),
    ({"mode": "barcode"}, ValueError, "reader mode 'barcode': expected 'wiegand' or 'qr'"),
    ({"encoding": "bcd"}, ValueError, "reader encoding 'bcd': expected 'hex' or 'decimal'"),
])
def test_a_misconfigured_reader_is_refused_when_built(kwargs: dict[str, str], error: type[Exception],
                                                      message: str) -> None:
    with pytest.raises(error, match=message):
        LineReader(**kwargs)  # type: ignore[arg-type]


READERS = [LineReader, lambda: LineReader(encoding="decimal"), lambda: LineReader(mode="qr"),
           lambda: LineReader(card_format="wiegand34")]
# pieces real streams are made of, so the fuzzer reaches terminators, keys and long lines often
TOKENS = st.sampled_from([b"12D687", b"12345678", b"1234567", b"\r", b"\n", b"\r\n", b" ", b"\x00", b"\x0a", b"\x0b",
                          b"\x1b", b"\xff", b"\xe8\xae", "访".encode(), b"0x", b"A" * 300, b"*", b"#"])
STREAMS = st.one_of(st.binary(max_size=2000), st.lists(TOKENS, max_size=40).map(b"".join))


def read(make: int, chunks: list[bytes]) -> list[ReaderInput]:
    reader = READERS[make]()
    out = [i for chunk in chunks for i in reader.feed(chunk)]
    return out + reader.flush()


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(READERS) - 1), st.lists(st.binary(max_size=600), max_size=10))
def test_no_bytes_in_any_chunks_make_the_reader_raise(make: int, chunks: list[bytes]) -> None:
    for got in read(make, chunks):
        assert isinstance(got, CardInput | KeyInput | CodeInput | Garbled)
        if isinstance(got, KeyInput):
            assert got.key in KEYS
        if isinstance(got, Garbled):
            assert got.reason and len(got.raw) <= MAX_LINE + 1


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(READERS) - 1), STREAMS, st.lists(st.integers(0, 2000), max_size=20))
def test_the_same_stream_gives_the_same_inputs_however_the_port_chunks_it(
        make: int, stream: bytes, cuts: list[int]) -> None:
    whole = read(make, [stream])
    assert read(make, [stream[i:i + 1] for i in range(len(stream))]) == whole
    edges = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    assert read(make, [stream[a:b] for a, b in itertools.pairwise(edges)]) == whole
