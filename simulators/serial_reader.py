"""A Wiegand-to-ASCII converter or a QR scanner on a USB serial port, as the gateway sees one: a line per card.

The converter prints the card's data bits without parity (hex, 6 digits for a 26-bit card and 8 for 34/32 bits,
upper case; or decimal: the number for a 26-bit card, 10 digits for 32 data bits), then its terminator; a 4-bit
Wiegand keypad comes through as lone bytes 0x00-0x0B. A QR scanner in serial mode prints the code's text. The
gateway opens `link`, a stable path like /dev/serial/by-id/usb-...: a symlink to the pty slave, because a USB
device gets a new /dev/ttyACMn when it comes back and installers configure the by-id path. unplug() is the USB
cable pulled: both pty ends close (the gateway's open port fails on its next read) and the symlink goes
(reopening fails until plug_in()).

What the gateway writes back (feedback lines, e.g. to a converter that drives a buzzer) is kept in `received`.
A test or the CLI drives it with plain calls: present_card(card), scan("VISITOR-42"), key("5"),
send_raw(b"\\x07garbage"), unplug(), plug_in().

CLI: `python -m simulators.serial_reader /tmp/reader-gate-east [--decimal]`, then lines on stdin:
`card 018,54919`, `card 0012345678`, `scan TEXT`, `key 5`, `garbage`, `unplug`, `plugin`, `quit`.
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
from pathlib import Path
from typing import Literal

from drivers.card_formats import Card, make_card, normalise_credential

log = logging.getLogger("campusgw.sim.serial_reader")

KEYS = "0123456789*#"  # 4-bit Wiegand keypad values 0x0-0xB, in order
SELECT_S = 0.05  # the reader thread's select timeout: how long stop() and unplug() wait for it at most
_LINE_END = re.compile(rb"[\r\n]+")


def card_from_text(text: str) -> Card:
    """The card a person means by "018,54919" (26-bit HID; 34-bit if the facility needs 16 bits) or a UID.

    Shared by both reader simulators' command lines; CardFormatError says what was wrong with the text.
    """
    credential = normalise_credential(text)
    if "," in credential:
        facility, number = (int(part) for part in credential.split(","))
        return make_card("wiegand26" if facility <= 0xFF else "wiegand34", number, facility)
    return make_card("wiegand34_uid", int(credential))


def converter_line(card: Card, encoding: Literal["hex", "decimal"] = "hex") -> bytes:
    """What a Wiegand-to-ASCII converter prints for this card: the data bits without parity, no terminator."""
    payload = card.number if card.facility is None else card.facility << 16 | card.number  # both have 16-bit numbers
    if encoding == "decimal":  # 32 data bits as 10 digits, as W34 readers print a UID ("0012345678")
        return (str(payload) if card.bit_length == 26 else f"{payload:010d}").encode("ascii")
    digits = 6 if card.bit_length == 26 else 8  # 24 or 32 data bits
    return f"{payload:0{digits}X}".encode("ascii")


class SerialReaderSimulator:
    def __init__(self, link: str | Path, encoding: Literal["hex", "decimal"] = "hex",
                 terminator: bytes = b"\r\n") -> None:
        if encoding not in ("hex", "decimal"):
            raise ValueError(f"encoding must be 'hex' or 'decimal', got {encoding!r}")
        self.link = Path(link)
        self.encoding = encoding
        self.terminator = terminator
        self.received: list[str] = []  # lines the gateway wrote to the port, without their terminators
        self.on_line: Callable[[str], None] | None = None  # called (in the reader thread) for each received line
        self._master: int | None = None
        self._slave: int | None = None
        self._port: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Plug the device in; returns the link path the gateway opens."""
        self.plug_in()
        return str(self.link)

    def stop(self) -> None:
        self.unplug()

    @property
    def plugged_in(self) -> bool:
        return self._master is not None

    @property
    def port(self) -> str | None:
        """The pty slave the link points at while plugged in (a new one after each plug_in)."""
        return self._port

    def plug_in(self) -> None:
        """A new pty and the symlink to it, as when the USB device enumerates again."""
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # the slave stays open here too, so a gateway reopening is fine
        self._port = os.ttyname(slave)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        staging = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        staging.unlink(missing_ok=True)
        staging.symlink_to(self._port)
        os.replace(staging, self.link)  # atomic: a gateway polling for the link never sees a half-made one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, args=(master, self._stop),
                                        name=f"sim-serial-reader-{self.link.name}", daemon=True)
        self._thread.start()
        log.info("serial reader %s plugged in at %s", self.link, self._port)

    def unplug(self) -> None:
        """The cable pulled: both pty ends close and the link disappears."""
        if self._master is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with self._write_lock:
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
        if self.link.is_symlink():
            self.link.unlink()
        log.info("serial reader %s unplugged (was %s)", self.link, self._port)
        self._port = None

    # -- what the device sends -----------------------------------------------------------

    def present_card(self, card: Card) -> bool:
        """The converter's line for this card. False (nothing sent) while unplugged."""
        return self.send_raw(converter_line(card, self.encoding) + self.terminator)

    def scan(self, code: str) -> bool:
        """A QR / barcode read: its text and the terminator."""
        return self.send_raw(code.encode("utf-8") + self.terminator)

    def key(self, k: str | int) -> bool:
        """A keypad press passed through as one raw byte: "0"-"9", "*" (0x0A), "#" (0x0B), or the value 0-11."""
        if isinstance(k, int):
            if not 0 <= k < len(KEYS):
                raise ValueError(f"keypad value {k} outside 0-{len(KEYS) - 1}")
            value = k
        elif len(k) == 1 and k in KEYS:
            value = KEYS.index(k)
        else:
            raise ValueError(f"key {k!r}: expected one of {KEYS!r}")
        return self.send_raw(bytes([value]))

    def send_raw(self, data: bytes) -> bool:
        """Any bytes onto the line (noise, half a line, a wrong baud rate). False while unplugged.

        Like a UART, the device does not wait for the gateway: what does not fit in the pty's buffer is lost.
        """
        with self._write_lock:
            if self._master is None:
                log.info("serial reader %s unplugged: %d bytes not sent", self.link, len(data))
                return False
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    log.warning("serial reader %s: gateway not reading, %d bytes lost", self.link, len(view))
                    break
                view = view[written:]
            return True

    # -- what the gateway sends ----------------------------------------------------------

    def wait_for_line(self, predicate: Callable[[str], bool] = lambda line: True, timeout: float = 5.0,
                      since: int = 0) -> str | None:
        """The first line in received[since:] matching `predicate`, or None after `timeout` seconds.

        Pass since=len(sim.received) taken before an action to see only what the gateway wrote after it.
        """
        found: list[str] = []

        def match() -> bool:
            found[:] = [line for line in self.received[since:] if predicate(line)][:1]
            return bool(found)

        with self._cond:
            if self._cond.wait_for(match, timeout):
                return found[0]
        return None

    def _read_loop(self, master: int, stop: threading.Event) -> None:
        pending = b""
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], SELECT_S)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # no slave open for a moment: nothing to read
                time.sleep(SELECT_S)  # select would report the hangup at once again; do not spin
                continue
            pending += data
            *lines, pending = _LINE_END.split(pending)
            self._deliver([line.decode("utf-8", "replace") for line in lines if line])

    def _deliver(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._cond:
            self.received.extend(lines)
            self._cond.notify_all()
        if self.on_line is not None:
            for line in lines:
                self.on_line(line)


def main(argv: list[str] | None = None) -> int:
    """Run a converter or scanner on a pty behind LINK and type what it reads, one command per line."""
    parser = argparse.ArgumentParser(prog="python -m simulators.serial_reader", description=main.__doc__)
    parser.add_argument("link", help="symlink to create for the port, e.g. /tmp/serial/by-id/usb-reader-gate")
    parser.add_argument("--decimal", action="store_true", help="print cards in decimal (default: hex)")
    parser.add_argument("--terminator", choices=("crlf", "cr", "lf"), default="crlf")
    args = parser.parse_args(argv)
    terminator = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}[args.terminator]
    sim = SerialReaderSimulator(args.link, "decimal" if args.decimal else "hex", terminator)
    sim.on_line = lambda line: print(f"RECEIVED {line}", flush=True)
    print(sim.start(), flush=True)
    try:
        for raw in sys.stdin:
            command, _, rest = raw.strip().partition(" ")
            rest = rest.strip()
            try:
                if command == "card":
                    sim.present_card(card_from_text(rest))
                elif command == "scan" and rest:
                    sim.scan(rest)
                elif command == "key":
                    sim.key(rest)
                elif command == "garbage":
                    sim.send_raw(b"\x07\x1b[0m\xff\xfe12")  # control bytes, invalid UTF-8, half a line
                elif command == "unplug":
                    sim.unplug()
                elif command == "plugin":
                    sim.plug_in()
                    print(sim.link, flush=True)
                elif command == "quit":
                    break
                elif command:
                    print("commands: card 018,54919 | card 0012345678 | scan TEXT | key 5 | garbage | unplug | "
                          "plugin | quit", file=sys.stderr, flush=True)
            except ValueError as exc:  # CardFormatError included
                print(f"error: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
