"""Serial line readers: Wiegand-to-ASCII converters and QR / barcode scanners in serial mode (USB-CDC or
RS-232), one device per port.

The port is opened exclusively (a second program reading it would steal half the cards). Lines are parsed
by drivers.serial_reader.lines (sans-IO): a card -> `campus.reader.card_read`, a QR code -> `.code_scanned`, keypad
keys -> `.keypad`; a garbled line is counted and skipped. A port that fails (the scanner unplugged) puts
the reader offline; it is reopened with backoff (at most 1 s apart), so it is back within a second of
being plugged in again. Prefer a stable path (/dev/serial/by-id/...) to /dev/ttyUSB0, which can change.

Feedback: most converters and scanners take no commands; where one does (a beep, a relay), the line for
each result is configured in `feedback_lines` and written to the port.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import serial

from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from drivers.reader_common import FEEDBACK_RESULTS, card_event, code_event
from drivers.serial_reader.lines import CardInput, CodeInput, Garbled, KeyInput, LineReader, ReaderInput
from drivers.serial_reader.schema import SerialReaderConfig
from gateway.config import DeviceConfig

READ_CHUNK = 4096




class SerialReaderDriver(Driver):
    name = "serial_reader"
    config_model = SerialReaderConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        (device,) = devices
        assert isinstance(device, SerialReaderConfig)
        self.cfg = device
        self._stop = asyncio.Event()
        self._port: serial.Serial | None = None
        self._failed: asyncio.Event = asyncio.Event()
        self._parser = self._new_parser()
        self._online: bool | None = None
        self.counters = {"lines": 0, "cards": 0, "codes": 0, "keys": 0, "garbled": 0, "bytes": 0,
                         "reconnects": 0, "errors": 0, "feedback": 0}
        self.last_error: str | None = None
        self.last_garbled: str | None = None

    def _new_parser(self) -> LineReader:
        return LineReader(mode=self.cfg.mode, encoding=self.cfg.encoding, card_format=self.cfg.card_format)

    async def start(self) -> None:
        await run_with_reconnect(self.ctx, self._stop, self._connect, self._run, self._close)

    async def _connect(self) -> bool:
        try:
            self._port = serial.Serial(self.cfg.port, self.cfg.baudrate, timeout=0, write_timeout=0.5,
                                       exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.counters["errors"] += 1
            self.last_error = f"cannot open {self.cfg.port}: {exc}"
            self._set_online(False, self.last_error)
            return False
        self._parser = self._new_parser()  # a line cut by the unplug is not glued to the next one
        self._failed.clear()
        asyncio.get_running_loop().add_reader(self._port.fileno(), self._readable)
        self.counters["reconnects"] += 1
        self._set_online(True)
        return True

    def _readable(self) -> None:
        port = self._port
        if port is None:
            return
        try:
            data = port.read(READ_CHUNK)
            if not data:  # readable but nothing to read: the other end is gone
                raise serial.SerialException("device reports readiness to read but returned no data")
        except (serial.SerialException, OSError) as exc:
            self.counters["errors"] += 1
            self.last_error = f"{self.cfg.port} failed: {exc}"
            self._failed.set()
            return
        self.counters["bytes"] += len(data)
        for item in self._parser.feed(data):
            self._handle(item)

    async def _run(self) -> None:
        while not self._stop.is_set() and not self._failed.is_set():
            self.ctx.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._failed.wait(), 1.0)
        if self._failed.is_set():
            self._set_online(False, self.last_error)

    def _handle(self, item: ReaderInput) -> None:
        cfg = self.cfg
        if isinstance(item, Garbled):
            self.counters["garbled"] += 1
            if self.last_garbled is None:
                self.ctx.log.warning("%s: skipped a line it could not read (%s); check mode/encoding/card_format "
                                     "(logged once; counted in health)", cfg.id, item.reason)
            self.last_garbled = item.reason
            return
        self.counters["lines"] += 1
        if isinstance(item, CardInput):
            self.counters["cards"] += 1
            self.ctx.emit(cfg.id, "campus.reader.card_read", card_event(item.card, 0, cfg.direction))
        elif isinstance(item, CodeInput):
            self.counters["codes"] += 1
            self.ctx.emit(cfg.id, "campus.reader.code_scanned", code_event(item.code, 0, cfg.direction))
        elif isinstance(item, KeyInput):
            self.counters["keys"] += 1
            self.ctx.emit(cfg.id, "campus.reader.keypad", {"reader": 0, "keys": item.key})

    def _set_online(self, online: bool, reason: str | None = None) -> None:
        if self._online == online:
            return
        self._online = online
        if online:
            self.ctx.log.info("%s online on %s", self.cfg.id, self.cfg.port)
        else:
            self.ctx.log.warning("%s offline: %s", self.cfg.id, reason)
        self.ctx.set_online(self.cfg.id, online, reason)
        self.ctx.set_state(self.cfg.id, {"online": online, "port": self.cfg.port, "mode": self.cfg.mode,
                                         "direction": self.cfg.direction})

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()
        for item in self._parser.flush():
            self._handle(item)

    async def stop(self) -> None:
        self._stop.set()

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        if name != "feedback":
            return await super().handle_command(device_id, name, args, issued_by)
        result = args.get("result")
        if result not in FEEDBACK_RESULTS:
            return CommandResult(False, f"feedback needs result: one of {', '.join(FEEDBACK_RESULTS)}")
        line = getattr(self.cfg.feedback_lines, str(result))
        if line is None:
            return CommandResult(True, "this reader takes no feedback (none configured)")
        if self._port is None or not self._online:
            return CommandResult(False, f"reader {self.cfg.id} is offline ({self.cfg.port})")
        try:
            self._port.write(line.encode() + b"\r\n")
        except (serial.SerialException, OSError) as exc:
            return CommandResult(False, f"could not write to {self.cfg.port}: {exc}")
        self.counters["feedback"] += 1
        return CommandResult(True, f"{result} sent")

    def health(self) -> dict[str, Any]:
        return {"online": bool(self._online), **self.counters, "last_error": self.last_error,
                "last_garbled": self.last_garbled}
