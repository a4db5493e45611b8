"""SMS for a GSM modem, sans-IO: SMS-SUBMIT PDUs out (3GPP TS 23.040), the modem's result lines in (TS 27.005/27.007).

Encoding: a text goes as the GSM 7-bit default alphabet (TS 23.038 6.2.1, with its extension table reached by
ESC) when every character is in it, else as UCS2 (UTF-16 big-endian, so Chinese and emoji go through). A text too
long for one message is split into concatenated parts with a user data header (IEI 0x00: 8-bit reference, total,
sequence); a part never ends inside an escape sequence or a surrogate pair, so each part decodes on its own.
The destination's type of address is 0x91 (international, ISDN) for "+86...", 0x81 (unknown, ISDN) for digits
alone, which leaves the number's interpretation to the network as a phone dialling it would. The PDU starts with
SMSC length 00: the modem uses the SMSC stored on the SIM.

Decoding the modem: ModemParser.feed() takes bytes as the port delivers them, in any pieces, and returns events.
It decides one byte at a time, so chunking never changes the result, and it never raises on what a port brings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

# -- the alphabets (TS 23.038 6.2.1) -------------------------------------------------------------------------

# The default alphabet, code 0x00-0x7F in order. 0x1B is the escape to the extension table (never a character).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
ESC = 0x1B
# The default alphabet's extension table: a character here costs two septets, ESC and its code.
GSM7_EXTENSION = {"\x0c": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
                  "|": 0x40, "€": 0x65}
_BASIC_CODE = {char: code for code, char in enumerate(GSM7_BASIC) if code != ESC}

# -- limits (TS 23.040 9.2.3.24.1: 140 octets of user data; the concatenation header takes 6 of them) ----------

SINGLE_SEPTETS = 160  # 140 octets * 8 / 7
PART_SEPTETS = 153  # (140 - 6) * 8 / 7 = 153.1: the header and one fill bit leave 153 septets
SINGLE_UCS2_UNITS = 70  # UTF-16 code units in 140 octets
PART_UCS2_UNITS = 67  # (140 - 6) / 2
MAX_PARTS = 255  # the concatenation header's total is one octet
MAX_ADDRESS_DIGITS = 20  # TP-DA is at most 12 octets: length, type and 10 octets of semi-octets

DCS_GSM7 = 0x00
DCS_UCS2 = 0x08
TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81
IEI_CONCAT_8BIT = 0x00

# First octet of an SMS-SUBMIT (TS 23.040 9.2.2.2)
MTI_SUBMIT = 0x01
VPF_RELATIVE = 0x10
SRR = 0x20
UDHI = 0x40


class SmsEncodeError(ValueError):
    """A number or text that cannot become an SMS; the message says which and why."""


@dataclass(frozen=True)
class SubmitPdu:
    """One part, ready for AT+CMGS=<tpdu_length> and then `pdu` and Ctrl-Z."""

    pdu: str  # upper-case hex: the SMSC part ("00") and the TPDU
    tpdu_length: int  # octets after the SMSC part; what AT+CMGS counts
    part: int  # 1-based
    total: int
    text: str  # this part's share of the text
    encoding: Literal["gsm7", "ucs2"]


# -- encoding -----------------------------------------------------------------------------------------------


def gsm7_codes(text: str) -> list[int] | None:
    """The text as default-alphabet codes (an extension character as ESC, code), or None if one does not fit."""
    out: list[int] = []
    for char in text:
        code = _BASIC_CODE.get(char)
        if code is not None:
            out.append(code)
        elif char in GSM7_EXTENSION:
            out += (ESC, GSM7_EXTENSION[char])
        else:
            return None
    return out


def pack_septets(codes: list[int], fill_bits: int = 0) -> bytes:
    """Septets packed LSB first (TS 23.038 6.1.2.1.1), after `fill_bits` zero bits that align them past a UDH."""
    out = bytearray()
    acc, bits = 0, fill_bits
    for code in codes:
        acc |= (code & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    return bytes(out)


def encode_address(number: str) -> bytes:
    """TP-DA: digit count, type of address, semi-octets with the digits of each pair swapped and F-padded."""
    digits = number.replace(" ", "").replace("-", "")
    international = digits.startswith("+")
    if international:
        digits = digits[1:]
    if not digits.isascii() or not digits.isdigit():
        raise SmsEncodeError(f"phone number {number!r}: expected digits, optionally after '+' (e.g. +8613800138000)")
    if len(digits) > MAX_ADDRESS_DIGITS:
        raise SmsEncodeError(f"phone number {number!r}: {len(digits)} digits, at most {MAX_ADDRESS_DIGITS}")
    padded = digits + "F" * (len(digits) % 2)
    semi = bytes(int(padded[i + 1] + padded[i], 16) for i in range(0, len(padded), 2))
    return bytes([len(digits), TOA_INTERNATIONAL if international else TOA_UNKNOWN]) + semi


def relative_validity(period: timedelta) -> int:
    """TP-VP (relative, TS 23.040 9.2.3.12.1): the shortest period the network offers that is not shorter.

    Rounding up, so a message is never dropped before the time asked for; 5 minutes to 63 weeks.
    """
    minutes = -(-period.total_seconds() // 60)  # whole minutes, rounded up
    if minutes <= 0:
        raise SmsEncodeError(f"validity period {period}: expected a positive duration")
    if minutes <= 12 * 60:
        return int(-(-minutes // 5)) - 1  # 0-143: (VP + 1) * 5 minutes
    if minutes <= 24 * 60:
        return 143 + int(-(-(minutes - 12 * 60) // 30))  # 144-167: 12 h + (VP - 143) * 30 minutes
    days = int(-(-minutes // (24 * 60)))
    if days <= 30:
        return 166 + days  # 168-196: (VP - 166) days
    weeks = -(-days // 7)
    if weeks <= 63:
        return 192 + weeks  # 197-255: (VP - 192) weeks
    raise SmsEncodeError(f"validity period {period}: at most 63 weeks")


def _split(costs: list[int], limit: int) -> list[tuple[int, int]]:
    """Character ranges of at most `limit` units each, greedily; a character (its cost) is never cut."""
    ranges: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, cost in enumerate(costs):
        if used + cost > limit:
            ranges.append((start, i))
            start, used = i, 0
        used += cost
    ranges.append((start, len(costs)))
    return ranges


def encode_submit(number: str, text: str, *, reference: int = 0, status_report: bool = False,
                  validity: timedelta | None = None) -> list[SubmitPdu]:
    """The SMS-SUBMIT PDUs for `text` to `number`: one, or the parts of a concatenated message.

    `reference` ties the parts together on the phone (0-255); use a different one for each long message sent
    to the same number soon after another. `status_report` sets TP-SRR; `validity` a relative TP-VP.
    """
    if not 0 <= reference <= 0xFF:
        raise SmsEncodeError(f"concatenation reference {reference}: expected 0-255")
    address = encode_address(number)
    first = MTI_SUBMIT | (SRR if status_report else 0)
    vp = b""
    if validity is not None:
        first |= VPF_RELATIVE
        vp = bytes([relative_validity(validity)])

    codes = gsm7_codes(text)
    encoding: Literal["gsm7", "ucs2"]
    if codes is not None:
        encoding, dcs, single, per_part = "gsm7", DCS_GSM7, SINGLE_SEPTETS, PART_SEPTETS
        costs = [1 if char in _BASIC_CODE else 2 for char in text]
    else:
        encoding, dcs, single, per_part = "ucs2", DCS_UCS2, SINGLE_UCS2_UNITS, PART_UCS2_UNITS
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
    ranges = [(0, len(text))] if sum(costs) <= single else _split(costs, per_part)
    total = len(ranges)
    if total > MAX_PARTS:
        raise SmsEncodeError(f"text of {len(text)} characters needs {total} parts; at most {MAX_PARTS}")

    pdus: list[SubmitPdu] = []
    for seq, (start, end) in enumerate(ranges, 1):
        piece = text[start:end]
        udh = b"" if total == 1 else bytes([5, IEI_CONCAT_8BIT, 3, reference, total, seq])
        if encoding == "gsm7":
            piece_codes = gsm7_codes(piece) or []
            fill = (7 - len(udh) * 8 % 7) % 7
            user_data = udh + pack_septets(piece_codes, fill)
            udl = (len(udh) * 8 + fill) // 7 + len(piece_codes)  # in septets, header and fill bits included
        else:
            user_data = udh + piece.encode("utf-16-be", "surrogatepass")
            udl = len(user_data)  # in octets
        tpdu = (bytes([first | (UDHI if udh else 0), 0x00]) + address + bytes([0x00, dcs]) + vp
                + bytes([udl]) + user_data)
        pdus.append(SubmitPdu(pdu="00" + tpdu.hex().upper(), tpdu_length=len(tpdu), part=seq, total=total,
                              text=piece, encoding=encoding))
    return pdus


def text_mode_safe(text: str) -> bool:
    """Whether text mode with AT+CSCS="GSM" sends this text unchanged on any modem: plain ASCII letters, digits,
    space, CR/LF and the punctuation that sits at the same code in ASCII and the GSM alphabet, at most 160."""
    return len(text) <= SINGLE_SEPTETS and all(
        char.isascii() and (char.isalnum() or char in " \r\n!\"#%&'()*+,-./:;<=>?") for char in text)


# -- the modem's answers -----------------------------------------------------------------------------------

# +CMS ERROR codes: TS 27.005 3.2.5 (300-500) and the RP/TP causes of TS 24.011 / TS 23.040 9.2.3.22 (below 300)
CMS_REASONS: dict[int, str] = {
    1: "unassigned (unallocated) number", 8: "operator determined barring", 10: "call barred",
    17: "network failure", 21: "short message transfer rejected", 22: "memory capacity exceeded",
    27: "destination out of service", 28: "unidentified subscriber", 29: "facility rejected",
    30: "unknown subscriber", 38: "network out of order", 41: "temporary failure", 42: "congestion",
    47: "resources unavailable", 50: "requested facility not subscribed",
    69: "requested facility not implemented", 81: "invalid short message transfer reference value",
    95: "invalid message", 96: "invalid mandatory information",
    97: "message type non-existent or not implemented", 98: "message not compatible with short message protocol state",
    99: "information element non-existent or not implemented", 111: "protocol error", 127: "interworking error",
    128: "telematic interworking not supported", 129: "short message type 0 not supported",
    130: "cannot replace short message", 143: "unspecified TP-PID error",
    144: "data coding scheme (alphabet) not supported", 145: "message class not supported",
    159: "unspecified TP-DCS error", 160: "command cannot be actioned", 161: "command unsupported",
    175: "unspecified TP-Command error", 176: "TPDU not supported", 192: "SMS centre busy",
    193: "no SMS centre subscription", 194: "SMS centre system failure", 195: "invalid destination address",
    196: "destination barred", 197: "rejected as a duplicate", 198: "validity period format not supported",
    199: "validity period not supported", 208: "SIM SMS storage full", 209: "no SMS storage capability in SIM",
    210: "error in the modem", 211: "memory capacity exceeded", 212: "SIM toolkit busy",
    213: "SIM data download error", 255: "unspecified error cause",
    300: "modem failure", 301: "SMS service of the modem reserved", 302: "operation not allowed",
    303: "operation not supported", 304: "invalid PDU mode parameter", 305: "invalid text mode parameter",
    310: "SIM not inserted", 311: "SIM PIN required", 312: "PH-SIM PIN required", 313: "SIM failure",
    314: "SIM busy", 315: "SIM wrong", 316: "SIM PUK required", 317: "SIM PIN2 required",
    318: "SIM PUK2 required", 320: "memory failure", 321: "invalid memory index",
    322: "memory full (SIM full)", 330: "SMSC address unknown (set the SMS centre number on the SIM)",
    331: "no network service", 332: "network timeout", 340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}

# +CME ERROR codes: TS 27.007 9.2.1
CME_REASONS: dict[int, str] = {
    0: "phone failure", 1: "no connection to phone", 2: "phone-adaptor link reserved", 3: "operation not allowed",
    4: "operation not supported", 5: "PH-SIM PIN required", 10: "SIM not inserted", 11: "SIM PIN required",
    12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy", 15: "SIM wrong", 16: "incorrect password",
    17: "SIM PIN2 required", 18: "SIM PUK2 required", 20: "memory full", 21: "invalid index", 22: "not found",
    23: "memory failure", 24: "text string too long", 25: "invalid characters in text string",
    26: "dial string too long", 27: "invalid characters in dial string", 30: "no network service",
    31: "network timeout", 32: "network not allowed - emergency calls only", 100: "unknown error",
}

# +CREG <stat> (TS 27.007 7.2)
CREG_STATES = {0: "not registered, not searching", 1: "registered, home network",
               2: "not registered, searching", 3: "registration denied", 4: "unknown",
               5: "registered, roaming"}


def cms_reason(code: int) -> str:
    return CMS_REASONS.get(code, "error not in TS 27.005 (see the modem's manual)")


def cme_reason(code: int) -> str:
    return CME_REASONS.get(code, "error not in TS 27.007 (see the modem's manual)")


@dataclass(frozen=True)
class Ok:
    pass


@dataclass(frozen=True)
class Error:
    """A bare ERROR: the command was refused without a reason (before AT+CMEE=1, or a syntax error)."""


@dataclass(frozen=True)
class CmsError:
    code: int | None  # None when the modem gave words instead (AT+CMEE=2)
    reason: str


@dataclass(frozen=True)
class CmeError:
    code: int | None
    reason: str


@dataclass(frozen=True)
class Prompt:
    """The "> " after AT+CMGS: the modem waits for the PDU (or text) and Ctrl-Z."""


@dataclass(frozen=True)
class Cmgs:
    message_ref: int  # TP-MR the modem gave the submitted message


@dataclass(frozen=True)
class Creg:
    n: int | None  # the URC setting; None in an unsolicited +CREG
    stat: int
    unsolicited: bool = False


@dataclass(frozen=True)
class Cpin:
    state: str  # "READY", "SIM PIN", "SIM PUK", ...


@dataclass(frozen=True)
class Csq:
    rssi: int  # 0-31 (-113 to -51 dBm), 99 unknown
    ber: int


@dataclass(frozen=True)
class Unsolicited:
    """A line the modem sends on its own (RING, +CMTI, ...): nothing to do with the command under way."""

    line: str


@dataclass(frozen=True)
class Line:
    """Any other line: an echo, an information text (ATI), a malformed answer."""

    line: str


ModemEvent = Ok | Error | CmsError | CmeError | Prompt | Cmgs | Creg | Cpin | Csq | Unsolicited | Line
FINAL = (Ok, Error, CmsError, CmeError)  # the events that end a command (TS 27.007 5.7 final result codes)

MAX_LINE = 1024  # longest line kept (a +CMGL PDU line is under 400); the rest of a longer line is dropped
CR, LF = 0x0D, 0x0A
_URC_PREFIXES = ("RING", "+CMTI:", "+CMT:", "+CDS:", "+CDSI:", "+CBM:", "+CBMI:", "+CLIP:", "+CRING:", "+CUSD:",
                 "+CIEV:", "+CGREG:", "+CEREG:", "+CGEV:", "+CFUN:", "NO CARRIER", "BUSY", "NO ANSWER",
                 "NO DIALTONE", "RDY", "CALL READY", "SMS READY", "^")


def _ints(text: str) -> list[int] | None:
    try:
        return [int(field) for field in text.split(",")]
    except ValueError:
        return None


def parse_line(line: str) -> ModemEvent:
    """One line of the modem's output (without its CR/LF) as an event; a line it cannot read becomes Line."""
    text = line.strip()
    upper = text.upper()
    if upper == "OK":
        return Ok()
    if upper == "ERROR":
        return Error()
    for prefix, kind, reasons in (("+CMS ERROR:", CmsError, cms_reason), ("+CME ERROR:", CmeError, cme_reason)):
        if upper.startswith(prefix):
            rest = text[len(prefix):].strip()
            if rest.isascii() and rest.isdigit():
                return kind(int(rest), reasons(int(rest)))
            return kind(None, rest or "no reason given")
    head, _, rest = text.partition(":")
    rest = rest.strip()
    head = head.upper()
    if head == "+CMGS":
        fields = _ints(rest.split(",")[0])
        if fields is not None:
            return Cmgs(fields[0])
    elif head == "+CREG":
        fields = _ints(rest)
        if fields is not None and len(fields) >= 2:
            return Creg(fields[0], fields[1])
        first = _ints(rest.split(",")[0])
        if first is not None:  # unsolicited: +CREG: <stat>[,<lac>,<ci>]
            return Creg(None, first[0], unsolicited=True)
    elif head == "+CPIN" and rest:
        return Cpin(rest.upper())
    elif head == "+CSQ":
        fields = _ints(rest)
        if fields is not None and len(fields) == 2:
            return Csq(fields[0], fields[1])
    if upper.startswith(_URC_PREFIXES):
        return Unsolicited(text)
    return Line(text)


class ModemParser:
    """The modem's byte stream as events. Keeps only the unfinished line between feeds."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._skipping = False  # inside an overlong line: drop bytes up to its end

    def feed(self, data: bytes) -> list[ModemEvent]:
        out: list[ModemEvent] = []
        for byte in data:
            if byte in (CR, LF):
                if self._line and not self._skipping:
                    out.append(parse_line(self._line.decode("utf-8", "replace")))
                self._line.clear()
                self._skipping = False
            elif self._skipping:
                continue
            elif len(self._line) >= MAX_LINE:
                out.append(Line(self._line.decode("utf-8", "replace") + " (cut: line too long)"))
                self._line.clear()
                self._skipping = True
            else:
                self._line.append(byte)
                if self._line == b"> ":  # the prompt has no line end (TS 27.005 3.5.1)
                    out.append(Prompt())
                    self._line.clear()
        return out
