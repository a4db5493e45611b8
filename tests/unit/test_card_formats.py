"""Card formats: the bits a reader sends, the number a converter prints and the text an installer types all give
the same credential, and a misread card is refused with a reason instead of matching someone else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.card_formats import (
    FORMATS,
    Card,
    CardFormatError,
    decode,
    encode,
    from_payload,
    make_card,
    normalise_credential,
)


def bits_to_bytes(bits: str) -> bytes:
    """A bit pattern as written on paper -> OSDP raw data: MSB first, left-aligned, padding zero."""
    size = (len(bits) + 7) // 8
    return int(bits.ljust(size * 8, "0"), 2).to_bytes(size, "big")


# Worked by hand. H10301, facility 18, card 54919 (printed "018,54919" on the card):
#   facility 18    = 00010010
#   card 54919     = 0xD687 = 1101011010000111
#   bits 1-12      = 00010010 1101          -> 5 ones -> even parity bit 0 = 1 (makes 6)
#   bits 13-24     = 011010000111           -> 6 ones -> odd parity bit 25 = 1 (makes 7)
H10301_18_54919 = "1" + "00010010" + "1101011010000111" + "1"
# Facility 0, card 1: bits 1-12 have no ones (even parity 0), bits 13-24 one (odd parity 0)
H10301_0_1 = "0" + "00000000" + "0000000000000001" + "0"
# 34-bit, facility 1234 = 0x04D2 = 0000010011010010 (5 ones -> even 1), card 5678 = 0x162E = 0001011000101110
# (7 ones -> odd 0)
W34_1234_5678 = "1" + "0000010011010010" + "0001011000101110" + "0"
# W34 UID 0x12345678: 0x1234 = 0001001000110100 (5 ones -> even 1), 0x5678 = 0101011001111000 (8 ones -> odd 1)
W34_UID_12345678 = "1" + "0001001000110100" + "0101011001111000" + "1"


@pytest.mark.parametrize(("bits", "fmt", "facility", "number", "credential"), [
    (H10301_18_54919, "wiegand26", 18, 54919, "018,54919"),
    (H10301_0_1, "wiegand26", 0, 1, "000,00001"),
    (W34_1234_5678, "wiegand34", 1234, 5678, "1234,05678"),
    (W34_UID_12345678, "wiegand34_uid", None, 0x12345678, "0305419896"),
    ("11011110101011011011111011101111", "raw32", None, 0xDEADBEEF, "3735928559"),
])
def test_known_cards_encode_to_the_bits_worked_by_hand(
        bits: str, fmt: str, facility: int | None, number: int, credential: str) -> None:
    card = make_card(fmt, number, facility)
    assert card.credential == credential
    assert card.bit_length == len(bits)
    assert encode(card) == (bits_to_bytes(bits), len(bits))
    assert decode(bits_to_bytes(bits), len(bits), fmt) == card


def test_h10301_18_54919_is_the_bytes_a_reader_sends() -> None:
    # 26 bits left-aligned in 4 bytes: 10001001 01101011 01000011 11|000000
    assert bits_to_bytes(H10301_18_54919) == bytes.fromhex("896B43C0")
    assert decode(bytes.fromhex("896B43C0"), 26).credential == "018,54919"
    # a converter prints the 24 data bits: 0x12D687 = 1234567
    assert from_payload(0x12D687, "wiegand26") == make_card("wiegand26", 54919, 18)


@pytest.mark.parametrize(("bit_length", "fmt"), [(26, "wiegand26"), (34, "wiegand34_uid"), (32, "raw32")])
def test_auto_picks_the_format_by_bit_length(bit_length: int, fmt: str) -> None:
    data = encode(from_payload(1, fmt))[0]
    assert decode(data, bit_length).format == fmt


def test_a_34_bit_facility_card_read_in_auto_is_its_32_bit_number() -> None:
    # auto cannot tell the two 34-bit layouts apart; the installer sets card_format=wiegand34 to get "1234,05678"
    card = decode(bits_to_bytes(W34_1234_5678), 34)
    assert card == make_card("wiegand34_uid", 1234 << 16 | 5678)
    assert decode(bits_to_bytes(W34_1234_5678), 34, "wiegand34").credential == "1234,05678"


def test_padding_bits_left_set_by_a_reader_do_not_refuse_the_card() -> None:
    data = bytearray(bits_to_bytes(H10301_18_54919))
    data[-1] |= 0b111111
    assert decode(bytes(data), 26).credential == "018,54919"


def test_parity_errors_name_the_card_and_the_bits() -> None:
    flipped_bit_1 = "1" + "1" + H10301_18_54919[2:]
    with pytest.raises(CardFormatError, match=r"^26-bit card 0x325AD0F: even parity \(bits 1-12\) does not match"):
        decode(bits_to_bytes(flipped_bit_1), 26)
    flipped_bit_25 = H10301_18_54919[:-1] + "0"
    with pytest.raises(CardFormatError, match=r"26-bit card 0x225AD0E: odd parity \(bits 13-24\) .*D0/D1 wiring"):
        decode(bits_to_bytes(flipped_bit_25), 26)


@pytest.mark.parametrize(("data", "bit_length", "fmt", "message"), [
    (bytes(5), 37, "auto", "no format for 37 bits .*card_format"),
    (bytes(0), 0, "auto", "no format for 0 bits"),
    (bytes(5), 34, "wiegand26", "card_format wiegand26 expects 26 bits"),
    (bytes(4), 26, "wiegand34", "card_format wiegand34 expects 34 bits"),
    (bytes(3), 26, "auto", "3 data bytes, expected 4"),
    (bytes(5), 32, "raw32", "5 data bytes, expected 4"),
    (bytes(4), 26, "h10302", "unknown card format 'h10302': expected one of wiegand26"),
])
def test_wrong_lengths_and_formats_say_what_to_configure(data: bytes, bit_length: int, fmt: str, message: str) -> None:
    with pytest.raises(CardFormatError, match=message):
        decode(data, bit_length, fmt)


@pytest.mark.parametrize(("fmt", "number", "facility", "message"), [
    ("wiegand26", 54919, 256, r"facility code 256 outside 0-255 \(8 bits\)"),
    ("wiegand26", 65536, 18, "card number 65536 outside 0-65535"),
    ("wiegand26", -1, 18, "card number -1 outside"),
    ("wiegand26", 54919, None, "facility code None outside"),
    ("wiegand34", 1, 65536, "facility code 65536 outside 0-65535"),
    ("wiegand34_uid", 2**32, None, "card number 4294967296 outside 0-4294967295"),
    ("wiegand34_uid", 1, 18, "no facility code"),
    ("raw32", 1, 0, "no facility code"),
    ("wiegand26", True, 18, "card number True"),
    ("auto", 1, None, "unknown card format 'auto'"),
])
def test_make_card_refuses_numbers_the_format_cannot_carry(
        fmt: str, number: int, facility: int | None, message: str) -> None:
    with pytest.raises(CardFormatError, match=message):
        make_card(fmt, number, facility)


@pytest.mark.parametrize(("value", "fmt", "message"), [
    (2**24, "wiegand26", "does not fit wiegand26 \\(24 data bits"),
    (-1, "raw32", "does not fit raw32"),
    (1, "auto", "unknown card format 'auto'"),
])
def test_a_converter_number_too_big_for_the_format_is_refused(value: int, fmt: str, message: str) -> None:
    with pytest.raises(CardFormatError, match=message):
        from_payload(value, fmt)


def test_every_format_knows_its_bit_length() -> None:
    assert FORMATS == ("wiegand26", "wiegand34", "wiegand34_uid", "raw32")
    assert [from_payload(0, fmt).bit_length for fmt in FORMATS] == [26, 34, 34, 32]


@st.composite
def cards(draw: st.DrawFn, formats: tuple[str, ...] = FORMATS) -> Card:
    fmt = draw(st.sampled_from(formats))
    if fmt == "wiegand26":
        return make_card(fmt, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFF)))
    if fmt == "wiegand34":
        return make_card(fmt, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    return make_card(fmt, draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=500, deadline=None, database=None)
@given(cards())
def test_every_card_survives_encode_then_decode(card: Card) -> None:
    data, bit_length = encode(card)
    assert len(data) == (bit_length + 7) // 8
    assert int.from_bytes(data, "big") & ((1 << (len(data) * 8 - bit_length)) - 1) == 0  # padding zero
    assert decode(data, bit_length, card.format) == card
    if card.format != "wiegand34":  # auto reads every 34-bit card as a UID
        assert decode(data, bit_length) == card


@settings(max_examples=300, deadline=None, database=None)
@given(cards())
def test_the_converter_number_is_the_data_bits_without_parity(card: Card) -> None:
    data, bit_length = encode(card)
    value = int.from_bytes(data, "big") >> (len(data) * 8 - bit_length)
    payload = value if card.format == "raw32" else value >> 1 & ((1 << (bit_length - 2)) - 1)
    assert from_payload(payload, card.format) == card


@settings(max_examples=500, deadline=None, database=None)
@given(cards(("wiegand26", "wiegand34", "wiegand34_uid")), st.integers(0, 33))
def test_any_single_misread_bit_is_refused_by_parity(card: Card, position: int) -> None:
    data, bit_length = encode(card)
    position %= bit_length
    flipped = (int.from_bytes(data, "big") ^ 1 << (len(data) * 8 - 1 - position)).to_bytes(len(data), "big")
    with pytest.raises(CardFormatError, match="parity"):
        decode(flipped, bit_length, card.format)


@settings(max_examples=300, deadline=None, database=None)
@given(cards(("wiegand26", "wiegand34", "wiegand34_uid")))
def test_d0_d1_swapped_is_refused_not_read_as_another_card(card: Card) -> None:
    # swapped data lines invert every bit; each parity group covers an odd number of bits, so parity fails
    data, bit_length = encode(card)
    inverted = int.from_bytes(data, "big") ^ ((1 << bit_length) - 1) << (len(data) * 8 - bit_length)
    with pytest.raises(CardFormatError, match="parity"):
        decode(inverted.to_bytes(len(data), "big"), bit_length, card.format)


@pytest.mark.parametrize(("typed", "credential"), [
    ("18,54919", "018,54919"),
    ("018,54919", "018,54919"),
    ("018-54919", "018,54919"),
    ("018 54919", "018,54919"),
    ("  18 , 54919 ", "018,54919"),
    ("0,1", "000,00001"),
    ("1234,5678", "1234,05678"),
    ("65535,65535", "65535,65535"),
    ("12345678", "0012345678"),
    ("0012345678", "0012345678"),
    (" 4294967295\n", "4294967295"),
    ("0", "0000000000"),
])
def test_what_an_installer_types_becomes_the_credential_a_card_prints(typed: str, credential: str) -> None:
    assert normalise_credential(typed) == credential


@pytest.mark.parametrize(("typed", "message"), [
    ("", "expected facility,number"),
    ("abc", "expected facility,number .* or the card number alone"),
    ("18;54919", "expected facility,number"),
    ("18,549,19", "expected facility,number"),
    ("-5", "expected facility,number"),
    ("0x12D687", "expected facility,number"),
    ("18,65536", "each be 0-65535"),
    ("65536,1", "each be 0-65535"),
    ("4294967296", "at most 4294967295"),
    ("١٢٣", "expected facility,number"),  # Arabic-Indic digits: not what the card prints
])
def test_a_credential_that_fits_no_card_is_refused_with_the_expected_shapes(typed: str, message: str) -> None:
    with pytest.raises(CardFormatError, match=message):
        normalise_credential(typed)


@settings(max_examples=300, deadline=None, database=None)
@given(cards(), st.sampled_from([",", "-", " ", " , "]))
def test_the_printed_numbers_of_any_card_normalise_to_its_credential(card: Card, separator: str) -> None:
    typed = str(card.number) if card.facility is None else f"{card.facility}{separator}{card.number}"
    assert normalise_credential(typed) == card.credential
    assert normalise_credential(card.credential) == card.credential
