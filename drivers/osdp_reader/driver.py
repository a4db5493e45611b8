"""Card readers on an OSDP bus (IEC 60839-11-5, RS-485), through libosdp's control panel.

The readers that share one serial port are one driver instance (one libosdp ControlPanel); each is a
device with its own address and secure-channel key (SCBK, 16 bytes as 32 hex digits, from `key_env` or
`key_file`). A new reader ships in install mode: start it once with `install_mode: true` and the key it
should get; the control panel, failing with that key, opens the secure channel with the default key
(SCBK-D), sends the reader its key (osdp_KEYSET) and reconnects with it. Then set `install_mode: false`:
a control panel left in install mode would hand a key to anything on the wire.

Card reads (raw Wiegand bits) are decoded by the reader's `card_format` (drivers.card_formats) and
emitted as `campus.reader.card_read`; ASCII card data (a QR reader) as `campus.reader.code_scanned`;
keypad input as `campus.reader.keypad`; the reader's tamper and power status as `campus.reader.tamper`
/ `.power`. The rules service answers a read with a `feedback` command (granted / denied / alert), which
becomes an LED colour and beeps on the reader.

libosdp takes a reader that misses polls offline after ~8 s and then waits 300 s before it tries again
(also after a failed handshake or any NAK); a reader that lost power and came back must be back within
seconds, so an offline reader is disabled and, once libosdp says it is, enabled again (which restarts its
connection) every `retry_s`. A port that fails (USB adapter unplugged) takes the bus
offline and is reopened with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import osdp
import serial

from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from drivers.card_formats import CardFormatError, decode
from drivers.osdp_reader.schema import OsdpReaderConfig, Signal
from drivers.reader_common import FEEDBACK_RESULTS, card_event, code_event
from gateway.config import DeviceConfig

REFRESH_S = 0.005  # libosdp's own loop sleeps 20 ms between refreshes; this is a quarter of the latency
CHECK_S = 0.1  # online status and kicks
# A reader not yet online since the control panel started is given this long for its handshake (the secure
# channel takes a few exchanges per reader on a shared bus) before it is reported offline: a start-up is not
# an outage, and a board full of start-up blips hides the real alarms.
STARTUP_GRACE_S = 5.0
COLORS = {"off": osdp.CommandLEDColor.Black, "red": osdp.CommandLEDColor.Red,
          "green": osdp.CommandLEDColor.Green, "amber": osdp.CommandLEDColor.Amber,
          "blue": osdp.CommandLEDColor.Blue}


# osdp_LED (IEC 60839-11-5 / SIA OSDP 2.2): a temporary and a permanent state per LED; times in 100 ms units.
LED_TEMPORARY_NOP = 0x00
LED_TEMPORARY_CANCEL = 0x01  # drop any temporary state and show the permanent one (shows nothing new)
LED_TEMPORARY_SET = 0x02  # show the temporary state given and start its timer; the permanent state after it
LED_PERMANENT_NOP = 0x00
LED_PERMANENT_SET = 0x01
# osdp_BUZ tone codes: 0x00 no tone, 0x01 off, 0x02 the default tone; count 0 = sound until told otherwise.
BUZZER_OFF = 0x01
BUZZER_DEFAULT_TONE = 0x02
BEEP_ON_TICKS = 1  # 100 ms tone, 100 ms silence per beep
BEEP_OFF_TICKS = 1


class _SerialChannel(osdp.Channel):
    """libosdp's byte pipe over pyserial. libosdp calls it from its refresh thread; an error marks the port
    failed (the driver reopens it) instead of escaping into C."""

    def __init__(self, port: serial.Serial) -> None:
        super().__init__()
        self.port = port
        self.error: str | None = None
        self.bytes_in = 0

    def read(self, max_bytes: int) -> bytes:
        if self.error:
            return b""
        try:
            data: bytes = self.port.read(max_bytes)
        except (serial.SerialException, OSError) as exc:
            self.error = str(exc) or type(exc).__name__
            return b""
        self.bytes_in += len(data)
        return data

    def write(self, buf: bytes) -> int:
        if self.error:
            return 0
        try:
            return int(self.port.write(buf) or 0)
        except (serial.SerialException, OSError) as exc:
            self.error = str(exc) or type(exc).__name__
            return 0

    def flush(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.flush()


def refresh_every(period_s: float) -> Callable[[threading.Event, threading.Lock, Any], None]:
    """A loop for libosdp's ControlPanel / PeripheralDevice thread (its `refresh`): the Python wrapper's own
    sleeps 20 ms between turns, which would add up to 20 ms to every exchange."""

    def refresh(event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                ctx.refresh()
            time.sleep(period_s)

    return refresh


class _ControlPanel(osdp.ControlPanel):
    """libosdp's ControlPanel refreshing every REFRESH_S, and without its per-reader event queues (nobody
    reads them here; they would grow for ever)."""

    refresh = staticmethod(refresh_every(REFRESH_S))

    def _internal_event_handler(self, pd: int, event: dict[str, Any]) -> int:
        if self.user_event_handler:
            return int(self.user_event_handler(pd, event) or 0)
        return 0


class OsdpDriver(Driver):
    name = "osdp"
    config_model = OsdpReaderConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self.readers: list[OsdpReaderConfig] = []
        for device in devices:
            assert isinstance(device, OsdpReaderConfig)
            self.readers.append(device)
        self.bus = self.readers[0].bus
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self._port: serial.Serial | None = None
        self._channel: _SerialChannel | None = None
        self._cp: _ControlPanel | None = None
        self._online: dict[str, bool] = {}
        self._cp_started = 0.0
        self._last_kick: dict[str, float] = {}
        self._disabled: set[str] = set()  # kicked: disabled, to be enabled once libosdp has done so
        self._keyed: set[str] = set()  # install mode: the key was given on this connection
        self._status: dict[str, dict[str, Any]] = {r.id: {"tamper": None, "power_failure": None}
                                                   for r in self.readers}
        self.counters = {"cards": 0, "codes": 0, "keys": 0, "unreadable": 0, "status": 0, "feedback": 0,
                         "reconnects": 0, "kicks": 0, "errors": 0}
        self.last_error: str | None = None

    @classmethod
    def group_key(cls, device: DeviceConfig) -> str:
        assert isinstance(device, OsdpReaderConfig)
        return f"osdp:{device.bus.port}"

    def _where(self, reader: OsdpReaderConfig) -> str:
        return f"OSDP address {reader.address} on {self.bus.port}"

    # -- connection --------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for reader in self.readers:
            if reader.install_mode:
                self.ctx.log.warning("%s: install mode is on: the key is given to the reader at %s; turn it off "
                                     "once the reader is online", reader.id, self._where(reader))
        await run_with_reconnect(self.ctx, self._stop, self._connect, self._run, self._close)

    async def _connect(self) -> bool:
        try:
            self._port = serial.Serial(self.bus.port, self.bus.baudrate, timeout=0, write_timeout=0.5,
                                       exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.counters["errors"] += 1
            self.last_error = f"cannot open {self.bus.port}: {exc}"
            for reader in self.readers:
                self._set_online(reader, False, self.last_error)
            return False
        self._channel = _SerialChannel(self._port)
        infos = []
        for reader in self.readers:
            # In install mode the secure channel may first come up on the default key: not enforced then.
            flags = [osdp.LibFlag.EnforceSecure] if reader.secure and not reader.install_mode else []
            infos.append(osdp.PDInfo(reader.address, self._channel, scbk=reader.scbk(), name=reader.id,
                                     flags=flags))
        self._disabled.clear()
        self._keyed.clear()
        self._cp = _ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=self._on_event)
        self._cp.start()
        self._cp_started = time.monotonic()
        self.counters["reconnects"] += 1
        return True

    def _on_event(self, pd: int, event: dict[str, Any]) -> int:
        """libosdp's callback, in its refresh thread with the bus locked: hand the event to the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (pd, event))
        return 0

    async def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            self.ctx.heartbeat()
            try:
                pd, event = await asyncio.wait_for(self._events.get(), CHECK_S)
            except TimeoutError:
                pass
            else:
                self._handle(self.readers[pd], event)
            if self._channel is not None and self._channel.error:
                self.counters["errors"] += 1
                self.last_error = f"{self.bus.port} failed: {self._channel.error}"
                for reader in self.readers:
                    self._set_online(reader, False, self.last_error)
                return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + CHECK_S
                self._check_online(now)

    def _check_online(self, now: float) -> None:
        cp = self._cp
        if cp is None:
            return
        online_bits, sc_bits = cp.status(), cp.sc_status()
        for index, reader in enumerate(self.readers):
            if reader.id in self._disabled:
                if not cp.is_pd_enabled(reader.address) and cp.enable_pd(reader.address):
                    self._disabled.discard(reader.id)
                continue
            secure = bool(sc_bits & (1 << index))
            up = bool(online_bits & (1 << index)) and (not reader.secure or secure)
            if up:
                if reader.install_mode and reader.id not in self._keyed:
                    self._give_key(cp, reader)
                self._set_online(reader, True)
                continue
            if reader.id not in self._online and now - self._cp_started < STARTUP_GRACE_S:
                continue  # still starting: neither reported offline nor kicked yet
            self._set_online(reader, False, f"no answer from {self._where(reader)} (check the A/B wiring, the "
                                            f"address, {self.bus.baudrate} baud and the reader's key)")
            # libosdp would wait 300 s before trying again: restart the reader's connection instead.
            if now - self._last_kick.get(reader.id, 0.0) >= reader.retry_s:
                self._last_kick[reader.id] = now
                self.counters["kicks"] += 1
                cp.disable_pd(reader.address)
                self._disabled.add(reader.id)

    def _give_key(self, cp: _ControlPanel, reader: OsdpReaderConfig) -> None:
        """Install mode: the reader gets its key (it then restarts the secure channel with it)."""
        key = reader.scbk()
        if key is not None and cp.submit_command(reader.address, {"command": osdp.Command.Keyset, "type": 1,
                                                                  "data": key}):
            self._keyed.add(reader.id)
            self.ctx.log.warning("%s: the secure channel key was given to the reader at %s; set install_mode: "
                                 "false now", reader.id, self._where(reader))

    def _set_online(self, reader: OsdpReaderConfig, online: bool, reason: str | None = None) -> None:
        if self._online.get(reader.id) == online:
            return
        self._online[reader.id] = online
        if online:
            self.ctx.log.info("%s online at %s", reader.id, self._where(reader))
        else:
            self.ctx.log.warning("%s offline: %s", reader.id, reason)
        self.ctx.set_online(reader.id, online, reason)
        self._publish_state(reader)

    def _close(self) -> None:
        if self._cp is not None:
            with contextlib.suppress(RuntimeError):
                self._cp.stop()
            self._cp = None
        if self._port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.close()
            self._port = None
        self._channel = None

    async def stop(self) -> None:
        self._stop.set()

    # -- events ------------------------------------------------------------------------

    def _handle(self, reader: OsdpReaderConfig, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == osdp.Event.CardRead:
            self._card(reader, event)
        elif kind == osdp.Event.KeyPress:
            keys = bytes(event.get("data") or b"").decode("ascii", "replace")
            keys = "".join(k for k in keys if k in "0123456789*#")[:64]
            if keys:
                self.counters["keys"] += 1
                self.ctx.emit(reader.id, "campus.reader.keypad", {"reader": int(event.get("reader_no", 0)),
                                                                  "keys": keys})
        elif kind == osdp.Event.Status:
            self._local_status(reader, event)

    def _card(self, reader: OsdpReaderConfig, event: dict[str, Any]) -> None:
        number = int(event.get("reader_no", 0))
        data = bytes(event.get("data") or b"")
        if event.get("format") == osdp.CardFormat.ASCII:
            code = data.decode("utf-8", "replace").strip()
            if code:
                self.counters["codes"] += 1
                self.ctx.emit(reader.id, "campus.reader.code_scanned", code_event(code, number, reader.direction))
            return
        try:
            card = decode(data, int(event.get("length", 0)), reader.card_format)
        except CardFormatError as exc:
            # Not a card this site can know: refuse at once rather than leave the person waiting.
            self.counters["unreadable"] += 1
            self.ctx.log.warning("%s: unreadable card: %s", reader.id, exc)
            self._signal(reader, reader.feedback.denied)
            return
        self.counters["cards"] += 1
        self.ctx.emit(reader.id, "campus.reader.card_read", card_event(card, number, reader.direction))

    def _local_status(self, reader: OsdpReaderConfig, event: dict[str, Any]) -> None:
        if event.get("type") != osdp.StatusReportType.Local:
            return
        report = list(event.get("report") or [])
        self.counters["status"] += 1
        status = self._status[reader.id]
        for name, index, event_type in (("tamper", 0, "campus.reader.tamper"),
                                        ("power_failure", 1, "campus.reader.power")):
            if index >= len(report):
                continue
            active = bool(report[index])
            if status[name] == active or (status[name] is None and not active):
                status[name] = active
                continue
            status[name] = active
            self.ctx.emit(reader.id, event_type, {"active": active, "zone": reader.zone, "place": reader.name})
        self._publish_state(reader)

    # -- commands ----------------------------------------------------------------------

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        reader = next(r for r in self.readers if r.id == device_id)
        if name == "read_state":
            return CommandResult(True, data=self.state(reader))
        if name != "feedback":
            return await super().handle_command(device_id, name, args, issued_by)
        result = args.get("result")
        if result not in FEEDBACK_RESULTS:
            return CommandResult(False, f"feedback needs result: one of {', '.join(FEEDBACK_RESULTS)}")
        if not self._online.get(reader.id) or self._cp is None:
            return CommandResult(False, f"reader {reader.id} is offline ({self._where(reader)})")
        if not self._signal(reader, getattr(reader.feedback, str(result))):
            return CommandResult(False, f"the OSDP bus on {self.bus.port} did not take the command")
        return CommandResult(True, f"{result} shown")

    def _signal(self, reader: OsdpReaderConfig, signal: Signal) -> bool:
        cp = self._cp
        if cp is None:
            return False
        ok = bool(cp.submit_command(reader.address, led_command(signal)))
        buzzer = buzzer_command(signal)
        if buzzer is not None:
            ok = bool(cp.submit_command(reader.address, buzzer)) and ok
        self.counters["feedback"] += 1
        return ok

    # -- state -------------------------------------------------------------------------

    def state(self, reader: OsdpReaderConfig) -> dict[str, Any]:
        status = self._status[reader.id]
        return {"online": bool(self._online.get(reader.id)), "address": reader.address, "port": self.bus.port,
                "secure": reader.secure, "direction": reader.direction, "tamper": status["tamper"],
                "power_failure": status["power_failure"]}

    def _publish_state(self, reader: OsdpReaderConfig) -> None:
        self.ctx.set_state(reader.id, self.state(reader))

    def health(self) -> dict[str, Any]:
        return {"online": {r.id: bool(self._online.get(r.id)) for r in self.readers}, **self.counters,
                "bytes_in": self._channel.bytes_in if self._channel else 0, "last_error": self.last_error}


def led_command(signal: Signal) -> dict[str, Any]:
    """The osdp_LED command (libosdp's dict) for a feedback signal: the temporary state in the signal's colour,
    steady (on_count = the whole time, off_count 0) for on_ms, its timer started (control code 0x02); the
    permanent state untouched. libosdp 3.2's binding fills the record's temporary half from a dict with
    `"temporary": True` and leaves the permanent half zero: control code 0x00, NOP."""
    ticks = signal.on_ms // 100  # 1..255: Signal bounds on_ms to 100..25 500
    return {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": True,
            "control_code": LED_TEMPORARY_SET, "on_count": ticks, "off_count": 0,
            "on_color": COLORS[signal.color], "off_color": COLORS["off"], "timer_count": ticks}


def buzzer_command(signal: Signal) -> dict[str, Any] | None:
    """The osdp_BUZ command for a feedback signal's beeps (None for none: a count of 0 would sound for ever)."""
    if not signal.beeps:
        return None
    return {"command": osdp.Command.Buzzer, "reader": 0, "control_code": BUZZER_DEFAULT_TONE,
            "on_count": BEEP_ON_TICKS, "off_count": BEEP_OFF_TICKS, "rep_count": signal.beeps}
