"""A GSM modem (a SIMCom / Quectel USB stick, say) on a pty, as the gateway's SMS sender sees one.

It answers the AT commands an SMS sender uses like a real modem: echo on until ATE0; OK / ERROR, or +CME ERROR
and +CMS ERROR codes once AT+CMEE=1; +CPIN, +CREG, +CSQ; and AT+CMGS in PDU mode (AT+CMGF=0: the "> " prompt,
hex until Ctrl-Z, ESC cancels; the PDU's length must match AT+CMGS=<n>) and in text mode (AT+CMGF=1). Each
submitted PDU is decoded here with a decoder of its own (not the gateway's encoder run backwards), kept in
`submitted`, and a message whose parts have all arrived is put together in `messages` for the tests; `arrived`
has each such message with the time.time() its last PDU came in (for benchmarks: when it was handed over).

Faults, switched by attribute or set_fault(name): "no_network" (+CREG stat 2, +CMS ERROR: 331 on a send),
"sim_full" (322), "error_500" (500), "sim_pin" (+CPIN: SIM PIN, sends refused with 311) and "silent" (reads
everything, answers nothing: a modem without power behind a live USB-serial bridge). unplug() removes the pty
and the link altogether.

CLI: `python -m simulators.gsm_modem /tmp/ttyGSM`, then on stdin `fault no_network|sim_full|error_500|sim_pin|
silent|none`, `unplug`, `plugin`, `quit`; each message that arrives is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import select
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.notify.sms_pdu import ESC, GSM7_BASIC, GSM7_EXTENSION

log = logging.getLogger("campusgw.sim.gsm_modem")

SELECT_S = 0.05  # the modem thread's select timeout: how long stop() and unplug() wait for it at most
MAX_PDU_HEX = 2 * 176  # the longest PDU: 12 octets of SMSC part and 164 of TPDU
CTRL_Z, ESC_BYTE = 0x1A, 0x1B
FAULTS = ("no_network", "sim_full", "error_500", "sim_pin", "silent")
_EXTENSION_CHAR = {code: char for char, code in GSM7_EXTENSION.items()}


class PduError(ValueError):
    """A PDU this modem cannot take (it answers +CMS ERROR: 304)."""


@dataclass(frozen=True)
class SubmittedPart:
    number: str  # "+8613800138000" or national digits
    text: str
    dcs: int
    status_report: bool
    validity: int | None  # TP-VP (relative), if given
    concat: tuple[int, int, int] | None  # (reference, total, sequence) from the UDH
    user_data: bytes  # after the UDH, as sent: packed septets or UCS2
    pdu: bytes  # the whole PDU, SMSC part included


@dataclass(frozen=True)
class Message:
    number: str
    text: str
    parts: list[SubmittedPart]


def _unpack_septets(data: bytes, count: int, skip_bits: int) -> list[int]:
    bits = int.from_bytes(data, "little")
    return [(bits >> (skip_bits + 7 * i)) & 0x7F for i in range(count)]


def _gsm7_text(codes: list[int]) -> str:
    out: list[str] = []
    escaped = False
    for code in codes:
        if escaped:
            out.append(_EXTENSION_CHAR.get(code, " "))  # TS 23.038: an unknown extension shows as a space
            escaped = False
        elif code == ESC:
            escaped = True
        else:
            out.append(GSM7_BASIC[code])
    return "".join(out)


def decode_submit(pdu: bytes) -> SubmittedPart:
    """An SMS-SUBMIT PDU (SMSC part first) read back: number, text and header fields. PduError if malformed."""
    try:
        return _decode_submit(pdu)
    except IndexError:
        raise PduError("PDU too short for its fields") from None


def _decode_submit(pdu: bytes) -> SubmittedPart:
    pos = 1 + pdu[0]  # skip the SMSC part
    first = pdu[pos]
    if first & 0x03 != 0x01:
        raise PduError(f"not an SMS-SUBMIT (first octet 0x{first:02X})")
    digits_count, toa = pdu[pos + 2], pdu[pos + 3]
    semi = pdu[pos + 4: pos + 4 + (digits_count + 1) // 2]
    digits = "".join(f"{b & 0x0F:X}{b >> 4:X}" for b in semi)[:digits_count]
    if not digits.isdigit():
        raise PduError(f"destination {digits!r} is not digits")
    number = ("+" if toa == 0x91 else "") + digits
    pos += 4 + (digits_count + 1) // 2
    pid, dcs = pdu[pos], pdu[pos + 1]
    if pid != 0:
        raise PduError(f"protocol identifier 0x{pid:02X}")
    pos += 2
    vpf = (first >> 3) & 0x03
    validity = None
    if vpf == 2:
        validity = pdu[pos]
        pos += 1
    elif vpf in (1, 3):
        pos += 7
    udl = pdu[pos]
    ud = pdu[pos + 1:]
    concat = None
    udh_len = 0
    if first & 0x40:
        udh_len = ud[0] + 1
        i = 1
        while i < udh_len:
            iei, length = ud[i], ud[i + 1]
            if iei == 0x00 and length == 3:
                concat = (ud[i + 2], ud[i + 3], ud[i + 4])
            i += 2 + length
    if dcs == 0x00:
        header_septets = (udh_len * 8 + 6) // 7
        count = udl - header_septets
        if count < 0 or len(ud) != (udl * 7 + 7) // 8:
            raise PduError(f"user data length {udl} septets does not match {len(ud)} octets")
        text = _gsm7_text(_unpack_septets(ud, count, header_septets * 7))
        body = ud[udh_len:]
    elif dcs == 0x08:
        if len(ud) != udl or (udl - udh_len) % 2:
            raise PduError(f"user data length {udl} octets does not match {len(ud)} octets of UCS2")
        body = ud[udh_len:]
        text = body.decode("utf-16-be", "surrogatepass")
    else:
        raise PduError(f"data coding scheme 0x{dcs:02X} not taken here")
    return SubmittedPart(number, text, dcs, bool(first & 0x20), validity, concat, bytes(body), bytes(pdu))


class GsmModemSimulator:
    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.registration = 1  # +CREG stat
        self.send_error: int | None = None  # +CMS ERROR code for every AT+CMGS, when set
        self.pin_required = False
        self.silent = False
        self.csq = (20, 99)
        self.submitted: list[SubmittedPart] = []  # every part accepted, in order
        self._pending: list[SubmittedPart] = []  # parts of concatenated messages still incomplete
        self.messages: list[Message] = []
        self.arrived: list[tuple[float, Message]] = []  # (time.time() its last PDU came in, the message)
        self.commands: list[str] = []  # every command line received, for tests
        self.on_message: Callable[[Message], None] | None = None
        self._next_ref = 1
        self._master: int | None = None
        self._slave: int | None = None
        self._port: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._reset_session()

    def _reset_session(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self._line = bytearray()
        self._sending: tuple[str, int | str] | None = None  # ("pdu", length) or ("text", number) after a prompt

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Plug the modem in; returns the link path the gateway opens."""
        self.plug_in()
        return str(self.link)

    def stop(self) -> None:
        self.unplug()

    @property
    def port(self) -> str | None:
        return self._port

    def plug_in(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # the slave stays open here too, so the gateway may reopen
        self._port = os.ttyname(slave)
        self._reset_session()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        staging = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        staging.unlink(missing_ok=True)
        staging.symlink_to(self._port)
        os.replace(staging, self.link)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(master, self._stop),
                                        name=f"sim-gsm-modem-{self.link.name}", daemon=True)
        self._thread.start()
        log.info("GSM modem %s plugged in at %s", self.link, self._port)

    def unplug(self) -> None:
        if self._master is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self.link.is_symlink():
            self.link.unlink()
        log.info("GSM modem %s unplugged (was %s)", self.link, self._port)
        self._port = None

    def set_fault(self, fault: str | None) -> None:
        """One of FAULTS, or None for a healthy modem."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r}: expected one of {', '.join(FAULTS)} or none")
        self.registration, self.send_error, self.pin_required, self.silent = 1, None, False, False
        if fault == "no_network":
            self.registration, self.send_error = 2, 331
        elif fault == "sim_full":
            self.send_error = 322
        elif fault == "error_500":
            self.send_error = 500
        elif fault == "sim_pin":
            self.pin_required, self.registration = True, 0
        elif fault == "silent":
            self.silent = True

    def wait_for_message(self, predicate: Callable[[Message], bool] = lambda m: True,
                         timeout: float = 5.0) -> Message | None:
        """The first complete message matching `predicate`, or None after `timeout` seconds."""
        found: list[Message] = []

        def match() -> bool:
            found[:] = [m for m in self.messages if predicate(m)][:1]
            return bool(found)

        with self._cond:
            if self._cond.wait_for(match, timeout):
                return found[0]
        return None

    # -- the modem -----------------------------------------------------------------------

    def _run(self, master: int, stop: threading.Event) -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], SELECT_S)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # no one has the slave open for a moment
                time.sleep(SELECT_S)
                continue
            if self.silent:
                continue
            out = bytearray()
            for byte in data:
                out += self._byte(byte)
            if out:
                self._write(master, bytes(out))

    def _write(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(master, view):]
            except BlockingIOError:
                log.warning("GSM modem %s: nobody reading, %d bytes lost", self.link, len(view))
                return

    def _byte(self, byte: int) -> bytes:
        if self._sending is not None:
            return self._message_byte(byte)
        if byte == ESC_BYTE:
            self._line.clear()
            return b""
        if byte == 0x0A:
            return b""
        if byte != 0x0D:
            if len(self._line) < 560:
                self._line.append(byte)
            return bytes([byte]) if self.echo else b""
        line = self._line.decode("ascii", "replace").strip()
        self._line.clear()
        echo = b"\r" if self.echo else b""
        if not line:
            return echo
        with self._cond:
            self.commands.append(line)
        return echo + self._command(line)

    def _final(self, text: str) -> bytes:
        return f"\r\n{text}\r\n".encode("ascii")

    def _error(self, cme: int | None = None, cms: int | None = None) -> bytes:
        if self.cmee and cms is not None:
            return self._final(f"+CMS ERROR: {cms}")
        if self.cmee and cme is not None:
            return self._final(f"+CME ERROR: {cme}")
        return self._final("ERROR")

    def _command(self, line: str) -> bytes:
        upper = line.upper()
        if not upper.startswith("AT"):
            return self._error(cme=4)
        cmd = upper[2:]
        info: str | None = None
        if cmd in ("", "Z", "&F"):
            if cmd:
                self.cmee, self.cmgf = 0, 0
        elif cmd in ("E0", "E1", "E"):
            self.echo = cmd == "E1"
        elif cmd in ("I", "+CGMI", "+CGMM"):
            info = "campusgw GSM modem simulator"
        elif m := re.fullmatch(r"\+CMEE=([012])", cmd):
            self.cmee = int(m[1])
        elif cmd == "+CMEE?":
            info = f"+CMEE: {self.cmee}"
        elif cmd == "+CPIN?":
            info = f"+CPIN: {'SIM PIN' if self.pin_required else 'READY'}"
        elif cmd == "+CREG?":
            info = f"+CREG: 0,{self.registration}"
        elif cmd == "+CSQ":
            info = f"+CSQ: {self.csq[0]},{self.csq[1]}"
        elif m := re.fullmatch(r"\+CMGF=([01])", cmd):
            self.cmgf = int(m[1])
        elif cmd == "+CMGF?":
            info = f"+CMGF: {self.cmgf}"
        elif re.fullmatch(r'\+CSCS="(GSM|IRA|UCS2)"', cmd):
            pass
        elif m := re.fullmatch(r"\+CMGS=(.*)", line[2:], re.IGNORECASE):
            return self._cmgs(m[1].strip())
        else:
            return self._error(cme=4)  # operation not supported
        return (self._final(info) if info else b"") + self._final("OK")

    def _cmgs(self, arg: str) -> bytes:
        if self.pin_required:
            return self._error(cms=311)
        if self.cmgf == 0:
            if not arg.isdigit() or not 7 <= int(arg) <= 164:
                return self._error(cms=304)
            self._sending = ("pdu", int(arg))
        else:
            m = re.fullmatch(r'"(\+?\d{1,20})"(?:,\d+)?', arg)
            if not m:
                return self._error(cms=305)
            self._sending = ("text", m[1])
        return b"\r\n> "

    def _message_byte(self, byte: int) -> bytes:
        assert self._sending is not None
        if byte == ESC_BYTE:  # cancelled: nothing sent
            self._sending = None
            self._line.clear()
            return self._final("OK")
        if byte != CTRL_Z:
            if len(self._line) < MAX_PDU_HEX + 2:
                self._line.append(byte)
            return bytes([byte]) if self.echo else b""
        kind, arg = self._sending
        body = bytes(self._line)
        self._sending = None
        self._line.clear()
        try:
            if kind == "pdu":
                part = self._pdu(body, int(arg))
            else:
                text = body.decode("ascii")
                part = SubmittedPart(str(arg), text, 0x00, False, None, None, body, body)
        except (PduError, ValueError) as exc:
            log.info("GSM modem %s refused a message: %s", self.link, exc)
            return self._error(cms=304 if kind == "pdu" else 305)
        if self.send_error is not None:
            return self._error(cms=self.send_error)
        ref = self._next_ref
        self._next_ref = self._next_ref % 255 + 1
        self._record(part)
        return self._final(f"+CMGS: {ref}") + self._final("OK")

    def _pdu(self, body: bytes, length: int) -> SubmittedPart:
        text = body.decode("ascii").strip()
        pdu = bytes.fromhex(text)
        if len(pdu) - 1 - pdu[0] != length:
            raise PduError(f"AT+CMGS={length} but the TPDU has {len(pdu) - 1 - pdu[0]} octets")
        return decode_submit(pdu)

    def _record(self, part: SubmittedPart) -> None:
        with self._cond:
            self.submitted.append(part)
            message: Message | None = None
            if part.concat is None:
                message = Message(part.number, part.text, [part])
            else:
                self._pending.append(part)
                ref, total, _ = part.concat
                same = [p for p in self._pending if p.number == part.number and p.concat is not None
                        and p.concat[:2] == (ref, total)]
                by_seq = {p.concat[2]: p for p in same if p.concat is not None}
                if sorted(by_seq) == list(range(1, total + 1)):
                    parts = [by_seq[i] for i in range(1, total + 1)]
                    message = Message(part.number, "".join(p.text for p in parts), parts)
                    self._pending = [p for p in self._pending if p not in same]  # the reference may come again
            if message is not None:
                self.messages.append(message)
                self.arrived.append((time.time(), message))
                self._cond.notify_all()
        if message is not None and self.on_message is not None:
            self.on_message(message)


def main(argv: list[str] | None = None) -> int:
    """Run a GSM modem on a pty behind LINK; type faults on stdin; messages that arrive are printed."""
    parser = argparse.ArgumentParser(prog="python -m simulators.gsm_modem", description=main.__doc__)
    parser.add_argument("link", help="symlink to create for the port, e.g. /tmp/serial/by-id/usb-gsm-modem")
    args = parser.parse_args(argv)
    sim = GsmModemSimulator(args.link)
    sim.on_message = lambda m: print(f"SMS to {m.number} ({len(m.parts)} part(s)): {m.text}", flush=True)
    print(sim.start(), flush=True)
    try:
        for raw in sys.stdin:
            command, _, rest = raw.strip().partition(" ")
            rest = rest.strip()
            try:
                if command == "fault":
                    sim.set_fault(None if rest == "none" else rest)
                elif command == "unplug":
                    sim.unplug()
                elif command == "plugin":
                    sim.plug_in()
                    print(sim.link, flush=True)
                elif command == "quit":
                    break
                elif command:
                    print(f"commands: fault {'|'.join(FAULTS)}|none | unplug | plugin | quit",
                          file=sys.stderr, flush=True)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
