"""An OSDP card reader (a peripheral device, PD) on a pty, speaking real OSDP through libosdp.

The gateway's control panel (CP) opens `port` with pyserial as it would open an RS-485 adapter; this side runs a
libosdp PeripheralDevice on the pty's master end. A test or the CLI drives the reader with plain calls:
present_card(card), keys("1234#"), tamper(True), power_failure(True), power_off(), power_on(); and reads back
what the CP told it to do: `commands` (each a libosdp command dict plus `received_at`, time.monotonic()),
last_led_color(), beeps, wait_for_command(predicate, timeout); and what a reader that follows the standard
SHOWS: led_now(at), led_timeline(), buzzer_now(at) (see LedState and BuzzerState for how each field is read).

Secure channel: given `scbk`, the reader insists on it (LibFlag.EnforceSecure), as a commissioned reader does.
Without one it is a reader fresh from the box, in install mode: it accepts the default key SCBK-D and then the
CP's KEYSET; the key set is kept across power_off()/power_on() (a reader keeps it in flash), and from then on the
reader insists on it.

power_off() is the reader losing power: it stops answering and what the CP sends is lost. power_on() is a new
PeripheralDevice, as after a reboot (sequence numbers and secure channel start over, queued events are gone).
libosdp facts worth knowing on the CP side (3.2.9): the CP marks the reader offline about 8 s after the last
answer, then does not try it again for 300 s (disable_pd() then enable_pd() retries at once); and the answer to
the CP's LSTAT command from the Python binding is always "no tamper, power normal", so tamper and power reach the
CP only as the Event.Status this reader sends when they change (see tamper()).

CLI: `python -m simulators.osdp_reader [--address 101] [--scbk HEX]` prints the pty path, then takes lines on
stdin: `card 018,54919`, `card 0012345678`, `keys 1234#`, `tamper on|off`, `powerfail on|off` (supply failing),
`power off|on` (the reader itself), `quit`; it prints
each LED and buzzer command the CP sends ("LED green", "BEEP x1").
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import osdp

from drivers.card_formats import Card, encode
from drivers.osdp_reader.driver import refresh_every
from simulators.serial_reader import card_from_text

log = logging.getLogger("campusgw.sim.osdp_reader")

Command = dict[str, Any]

KEYPAD_KEYS = "0123456789*#"  # OSDP keypad data is these ASCII characters
MAX_KEYS = 64  # libosdp's keypress event buffer (OSDP_EVENT_KEYPRESS_MAX_DATALEN)
LINE_SELECT_S = 0.05  # the line thread's select timeout: how long close() waits for it at most
LED_COLORS = {
    osdp.CommandLEDColor.Black: "off",
    osdp.CommandLEDColor.Red: "red",
    osdp.CommandLEDColor.Green: "green",
    osdp.CommandLEDColor.Amber: "amber",
    osdp.CommandLEDColor.Blue: "blue",
    osdp.CommandLEDColor.Magenta: "magenta",
    osdp.CommandLEDColor.Cyan: "cyan",
    osdp.CommandLEDColor.White: "white",
}
REFRESH_S = 0.002
BUZZER_TONE_ON = 2  # OSDP buzzer tone code: 0 no tone, 1 off, 2 default tone
LED_TEMPORARY_CANCEL = 1  # osdp_LED temporary control code: cancel the temporary state, show the permanent one
LED_TEMPORARY_SET = 2  # set the temporary state and start its timer
LED_PERMANENT_SET = 1  # osdp_LED permanent control code (0 = NOP, leave the permanent state)
TICK_S = 0.1  # OSDP LED and buzzer times are in 100 ms units


@dataclass(frozen=True)
class LedParams:
    """One state of an LED (osdp_LED's temporary or permanent half): on_color for on_count x 100 ms, then
    off_color for off_count x 100 ms, over and over; off_count 0 is steady on_color, on_count 0 steady off_color."""

    on_color: int = osdp.CommandLEDColor.Black
    off_color: int = osdp.CommandLEDColor.Black
    on_count: int = 0
    off_count: int = 0
    since: float = 0.0  # when this state began (the flashing starts with the on phase)

    def color_at(self, at: float) -> int:
        if self.off_count == 0:
            return self.on_color if self.on_count else self.off_color
        if self.on_count == 0:
            return self.off_color
        period = (self.on_count + self.off_count) * TICK_S
        return self.on_color if (at - self.since) % period < self.on_count * TICK_S else self.off_color


@dataclass(frozen=True)
class LedState:
    """An LED as the reader shows it after a command: the permanent state, and a temporary one that wins until
    `until` (its timer, timer_count x 100 ms from when the command came), after which the permanent one shows."""

    at: float
    permanent: LedParams = LedParams()
    temporary: LedParams | None = None
    until: float = 0.0

    def color_at(self, at: float) -> int:
        if self.temporary is not None and at < self.until:
            return self.temporary.color_at(at)
        return self.permanent.color_at(at)


@dataclass(frozen=True)
class BuzzerState:
    """The buzzer after an osdp_BUZ: tone code 2 sounds rep_count cycles (0: until told otherwise) of on_count x
    100 ms tone and off_count x 100 ms silence; tone codes 0 and 1 silence it."""

    at: float
    tone: bool = False
    on_count: int = 0
    off_count: int = 0
    rep_count: int = 0

    def sounding_at(self, at: float) -> bool:
        if not self.tone or self.on_count == 0 or at < self.at:
            return False
        period = (self.on_count + self.off_count) * TICK_S
        elapsed = at - self.at
        if self.rep_count and elapsed >= self.rep_count * period:
            return False
        return elapsed % period < self.on_count * TICK_S


class OsdpLine:
    """An RS-485 line on a pty: the gateway's control panel opens `port`; every byte it sends reaches every reader
    on the line (each answers only what is addressed to it, as on a real bus), and their answers share the line."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)  # the slave stays open here so the pty outlives the CP closing it
        self._taps: list[_Tap] = []
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-osdp-line", daemon=True)
        self._thread.start()

    def tap(self) -> _Tap:
        """A reader's connection to the line."""
        tap = _Tap(self)
        self._taps.append(tap)
        return tap

    def send(self, data: bytes) -> int:
        with self._write_lock:
            try:
                return os.write(self._master, data)
            except OSError:  # the CP side is closed just now
                return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], LINE_SELECT_S)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            for tap in list(self._taps):
                tap.heard(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._master)
        os.close(self._slave)


class _Tap(osdp.Channel):
    """One reader's side of the line; libosdp polls it from refresh() and must never see an exception. While the
    reader is off what arrives is lost, as it is for a reader without power."""

    def __init__(self, line: OsdpLine) -> None:
        super().__init__()
        self.line = line
        self.powered = False
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def heard(self, data: bytes) -> None:
        if self.powered:
            with self._lock:
                self._buffer += data

    def set_powered(self, powered: bool) -> None:
        with self._lock:
            self.powered = powered
            self._buffer.clear()

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            data = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
        return data

    def write(self, buf: bytes) -> int:
        return self.line.send(buf) if self.powered else 0

    def flush(self) -> None:
        pass


class _Device(osdp.PeripheralDevice):
    """libosdp's PeripheralDevice answering within REFRESH_S, as a reader's firmware answers a poll in a few ms
    (the wrapper's 20 ms would be measured as gateway latency)."""

    refresh = staticmethod(refresh_every(REFRESH_S))


class OsdpReaderSimulator:
    def __init__(self, address: int = 101, scbk: bytes | None = None, readers: int = 1, name: str = "reader",
                 log_level: int = osdp.LogLevel.Warning, line: OsdpLine | None = None) -> None:
        if not 0 <= address <= 126:
            raise ValueError(f"OSDP address must be 0-126, got {address}")
        if scbk is not None and len(scbk) != 16:
            raise ValueError(f"scbk must be 16 bytes (an AES-128 key), got {len(scbk)}")
        if not 1 <= readers <= 8:
            raise ValueError(f"readers must be 1-8, got {readers}")
        self.address = address
        self.scbk = scbk  # updated by the CP's KEYSET
        self.readers = readers
        self.name = name
        self.log_level = log_level
        self.commands: list[Command] = []
        self.on_command: Callable[[Command], None] | None = None  # called in libosdp's thread, with its lock held
        # what the reader shows: per (reader, LED number) the states in the order the commands came; per reader
        # the buzzer's. Kept across power_off() (history), though a real reader would go dark meanwhile.
        self.led_states: dict[tuple[int, int], list[LedState]] = {}
        self.buzzer_states: dict[int, list[BuzzerState]] = {}
        self._cond = threading.Condition()
        self._tamper = False
        self._power_failure = False
        self._pd: Any = None
        self._own_line = line is None
        self._line = line or OsdpLine()
        self._channel = self._line.tap()
        self._closed = False

    @property
    def port(self) -> str:
        """The serial device the gateway's control panel opens."""
        return self._line.port

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Power the reader on; returns `port`."""
        self.power_on()
        return self.port

    def stop(self) -> None:
        """Power off and release the pty for good."""
        self.power_off()
        if not self._closed:
            self._closed = True
            if self._own_line:
                self._line.close()

    def power_on(self) -> None:
        """Boot: a new PeripheralDevice with fresh protocol state on the same line."""
        if self._pd is not None:
            return
        if self._closed:
            raise RuntimeError(f"OSDP reader {self.name} was stopped; make a new one")
        self._channel.set_powered(True)
        flags = [osdp.LibFlag.EnforceSecure] if self.scbk is not None else []
        info = osdp.PDInfo(self.address, self._channel, scbk=self.scbk, name=self.name, flags=flags)
        caps = osdp.PDCapabilities([
            (osdp.Capability.LEDControl, 1, 1),  # one on/off LED per reader
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CommunicationSecurity, 1, 0),  # AES-128
            (osdp.Capability.CardDataFormat, 1, 0),  # raw card bits
            (osdp.Capability.ContactStatusMonitoring, 1, 1),  # the tamper switch
            (osdp.Capability.Readers, 0, self.readers),
        ])
        pd = _Device(info, caps, log_level=self.log_level)
        pd.set_command_handler(self._on_command)
        pd.start()
        self._pd = pd
        log.info("OSDP reader %s (address %d) on at %s", self.name, self.address, self.port)

    def power_off(self) -> None:
        """Power lost: the reader stops answering and what the CP sends meanwhile is lost."""
        pd, self._pd = self._pd, None
        if pd is None:
            return
        pd.stop()
        self._channel.set_powered(False)
        log.info("OSDP reader %s off", self.name)

    @property
    def powered(self) -> bool:
        return self._pd is not None

    @property
    def is_online(self) -> bool:
        """The CP is polling this reader (as libosdp's PD sees it)."""
        pd = self._pd
        return pd is not None and bool(pd.is_online())

    @property
    def is_sc_active(self) -> bool:
        pd = self._pd
        return pd is not None and bool(pd.is_sc_active())

    # -- what the reader reports -----------------------------------------------------------

    def present_card(self, card: Card, reader: int = 0) -> bool:
        """A card held to the reader: its raw Wiegand bits, parity included. False if the reader is off."""
        data, bits = encode(card)
        return self.present_raw(data, bits, reader)

    def present_raw(self, data: bytes, bit_length: int, reader: int = 0) -> bool:
        """Raw bits as read (a misread, an unknown format): MSB first, left-aligned in `data`."""
        if len(data) != (bit_length + 7) // 8:
            raise ValueError(f"{bit_length} bits need {(bit_length + 7) // 8} bytes, got {len(data)}")
        return self._submit({"event": osdp.Event.CardRead, "reader_no": self._reader(reader),
                             "format": osdp.CardFormat.Wiegand, "direction": 0, "data": bytes(data),
                             "length": bit_length})

    def keys(self, text: str, reader: int = 0) -> bool:
        """Keys pressed on the reader's keypad, e.g. "1234#", sent as one keypad report."""
        if not text or len(text) > MAX_KEYS or any(k not in KEYPAD_KEYS for k in text):
            raise ValueError(f"keys {text!r}: expected 1-{MAX_KEYS} of {KEYPAD_KEYS!r}")
        return self._submit({"event": osdp.Event.KeyPress, "reader_no": self._reader(reader),
                             "data": text.encode("ascii")})

    def tamper(self, active: bool) -> bool:
        """The tamper switch opens (reader pried off the wall) or closes again: a local status report."""
        self._tamper = active
        return self._submit_local_status()

    def power_failure(self, active: bool) -> bool:
        """The reader's supply is failing (it runs on, e.g. from a backup) or back to normal."""
        self._power_failure = active
        return self._submit_local_status()

    def _submit_local_status(self) -> bool:
        # osdp_LSTATR: report[0] tamper, report[1] power; the CP gets {"event": Event.Status,
        # "type": StatusReportType.Local, "report": b"<tamper><power>"}
        return self._submit({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                             "report": bytes([int(self._tamper), int(self._power_failure)])})

    def _reader(self, reader: int) -> int:
        if not 0 <= reader < self.readers:
            raise ValueError(f"reader {reader}: this device has readers 0-{self.readers - 1}")
        return reader

    def _submit(self, event: dict[str, Any]) -> bool:
        pd = self._pd
        if pd is None:
            log.info("OSDP reader %s is off: event %s lost", self.name, event.get("event"))
            return False
        return bool(pd.submit_event(event))  # never from _on_command: libosdp's lock is held there

    # -- what the CP sends -----------------------------------------------------------------

    def _on_command(self, command: Command) -> tuple[int, Command | None]:
        """libosdp's command callback (inside refresh(), its lock held): record, never submit events here."""
        record = {**command, "received_at": time.monotonic()}
        if command.get("command") == osdp.Command.Keyset and command.get("data"):
            self.scbk = bytes(command["data"])  # kept for the next power_on, as in the reader's flash
        with self._cond:
            if command.get("command") == osdp.Command.LED:
                self._apply_led(record)
            elif command.get("command") == osdp.Command.Buzzer:
                self._apply_buzzer(record)
            self.commands.append(record)
            self._cond.notify_all()
        if self.on_command is not None:
            try:
                self.on_command(record)
            except Exception:  # an exception here would stop libosdp's thread: the reader would go dead
                log.exception("OSDP reader %s: on_command failed", self.name)
        return 0, None

    def _apply_led(self, command: Command) -> None:
        """osdp_LED as a reader that follows the standard reads it. libosdp 3.2's binding hands the PD one half of
        the record: the temporary half when its control code is not 0 (`temporary`: True, with timer_count), else
        the permanent half; both when the temporary code is 0x01 and the permanent one not 0 (`cancel_temporary`
        with the permanent half). A permanent half sent along with a temporary code 0x02 is not passed on."""
        at = float(command["received_at"])
        key = (int(command.get("reader", 0)), int(command.get("led_number", 0)))
        states = self.led_states.setdefault(key, [])
        now = states[-1] if states else LedState(at)
        if now.temporary is not None and at >= now.until:
            now = replace(now, temporary=None, until=0.0)
        code = int(command.get("control_code", 0))
        params = LedParams(int(command.get("on_color", 0)), int(command.get("off_color", 0)),
                           int(command.get("on_count", 0)), int(command.get("off_count", 0)), at)
        if command.get("temporary"):
            if code == LED_TEMPORARY_CANCEL:
                now = replace(now, temporary=None, until=0.0)
            elif code == LED_TEMPORARY_SET:
                now = replace(now, temporary=params, until=at + int(command.get("timer_count", 0)) * TICK_S)
            # 0x00 (NOP) and codes the standard does not define: no change
        else:
            if command.get("cancel_temporary"):
                now = replace(now, temporary=None, until=0.0)
            if code == LED_PERMANENT_SET:
                now = replace(now, permanent=params)
        states.append(replace(now, at=at))

    def _apply_buzzer(self, command: Command) -> None:
        at = float(command["received_at"])
        states = self.buzzer_states.setdefault(int(command.get("reader", 0)), [])
        states.append(BuzzerState(at, int(command.get("control_code", 0)) == BUZZER_TONE_ON,
                                  int(command.get("on_count", 0)), int(command.get("off_count", 0)),
                                  int(command.get("rep_count", 0))))

    def led_now(self, at: float | None = None, reader: int = 0, led: int = 0) -> str:
        """The colour the LED shows at `at` (time.monotonic(); default now): "off" before any command."""
        at = time.monotonic() if at is None else at
        with self._cond:
            states = [s for s in self.led_states.get((reader, led), []) if s.at <= at]
        color = states[-1].color_at(at) if states else osdp.CommandLEDColor.Black
        return LED_COLORS.get(color, f"color {color}")

    def led_timeline(self, reader: int = 0, led: int = 0, step: float = TICK_S) -> list[tuple[float, str]]:
        """(time, colour) at each change the LED shows, from the first command until every timer has run out."""
        with self._cond:
            states = list(self.led_states.get((reader, led), []))
        if not states:
            return []
        end = max(max(s.until for s in states), states[-1].at) + step
        changes: list[tuple[float, str]] = []
        at = states[0].at
        while at <= end:
            color = self.led_now(at, reader, led)
            if not changes or changes[-1][1] != color:
                changes.append((at, color))
            at += step / 10
        return changes

    def buzzer_now(self, at: float | None = None, reader: int = 0) -> bool:
        """Whether the buzzer sounds at `at` (time.monotonic(); default now)."""
        at = time.monotonic() if at is None else at
        with self._cond:
            states = [s for s in self.buzzer_states.get(reader, []) if s.at <= at]
        return bool(states) and states[-1].sounding_at(at)

    def wait_for_command(self, predicate: Callable[[Command], bool], timeout: float = 5.0,
                         since: int = 0) -> Command | None:
        """The first command in commands[since:] matching `predicate`, or None after `timeout` seconds."""
        found: list[Command] = []

        def match() -> bool:
            found[:] = [c for c in self.commands[since:] if predicate(c)][:1]
            return bool(found)

        with self._cond:
            if self._cond.wait_for(match, timeout):
                return found[0]
        return None

    def led_commands(self) -> list[Command]:
        return [c for c in self.commands if c.get("command") == osdp.Command.LED]

    def buzzer_commands(self) -> list[Command]:
        return [c for c in self.commands if c.get("command") == osdp.Command.Buzzer]

    def last_led_color(self, reader: int | None = None) -> str | None:
        """The on colour ("green", "red", ...) recorded in the last LED command, None if none came. That is not
        what the reader shows (a temporary control code 0x01 shows nothing new): see led_now()."""
        leds = [c for c in self.led_commands() if reader is None or c.get("reader") == reader]
        return led_color_name(leds[-1]) if leds else None

    @property
    def beeps(self) -> int:
        """How many buzzer commands sounded the tone."""
        return sum(1 for c in self.buzzer_commands() if c.get("control_code") == BUZZER_TONE_ON)


def led_color_name(command: Command) -> str:
    color = command.get("on_color")
    return LED_COLORS.get(color, f"color {color}") if isinstance(color, int) else "unknown"


def describe(command: Command) -> str:
    """One line per command for the CLI: "LED green", "BEEP x1"."""
    kind = command.get("command")
    if kind == osdp.Command.LED:
        code = command.get("control_code")
        if command.get("temporary"):
            if code == LED_TEMPORARY_SET:
                return f"LED {led_color_name(command)} for {command.get('timer_count', 0) * TICK_S:.1f} s"
            return f"LED temporary code {code}: no new colour shown"
        if code == LED_PERMANENT_SET:
            return f"LED {led_color_name(command)}"
        return f"LED permanent code {code}: no change"
    if kind == osdp.Command.Buzzer:
        if command.get("control_code") != BUZZER_TONE_ON:
            return "BEEP off"
        repeat = command.get("rep_count", 0)
        return f"BEEP x{repeat}" if repeat else "BEEP continuous"
    if kind == osdp.Command.Keyset:
        return "KEYSET (new secure channel key stored)"
    return f"COMMAND {kind}"


def main(argv: list[str] | None = None) -> int:
    """Run an OSDP reader on a pty and type what it reads, one command per line on stdin."""
    parser = argparse.ArgumentParser(prog="python -m simulators.osdp_reader", description=main.__doc__)
    parser.add_argument("--address", type=int, default=101)
    parser.add_argument("--scbk", help="secure channel base key, 32 hex digits (default: install mode)")
    parser.add_argument("--readers", type=int, default=1)
    parser.add_argument("--name", default="reader")
    args = parser.parse_args(argv)
    try:
        scbk = bytes.fromhex(args.scbk) if args.scbk else None
        sim = OsdpReaderSimulator(args.address, scbk, args.readers, args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sim.on_command = lambda command: print(describe(command), flush=True)
    print(sim.start(), flush=True)
    try:
        for raw in sys.stdin:
            command, _, rest = raw.strip().partition(" ")
            rest = rest.strip()
            try:
                if command == "card":
                    sent = sim.present_card(card_from_text(rest))
                elif command == "keys":
                    sent = sim.keys(rest)
                elif command == "tamper" and rest in ("on", "off"):
                    sent = sim.tamper(rest == "on")
                elif command == "power" and rest == "on":
                    sim.power_on()
                    sent = True
                elif command == "power" and rest == "off":
                    sim.power_off()
                    sent = True
                elif command == "powerfail" and rest in ("on", "off"):
                    sent = sim.power_failure(rest == "on")
                elif command == "quit":
                    break
                elif command:
                    print("commands: card 018,54919 | card 0012345678 | keys 1234# | tamper on|off | "
                          "powerfail on|off | power off|on | quit", file=sys.stderr, flush=True)
                    continue
                else:
                    continue
                if not sent:
                    print("reader is off: nothing sent", file=sys.stderr, flush=True)
            except ValueError as exc:  # CardFormatError included
                print(f"error: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
