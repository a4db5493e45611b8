"""The gate reader simulators, driven from the gateway's side with plain code: a libosdp control panel on the
OSDP reader's pty, pyserial on the serial reader's link. What the drivers' integration tests will rely on:
cards arrive as the same card, keys and status reports arrive, commands come back, and power loss / unplugging
look to the gateway as they do with real hardware."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import osdp
import pytest
import serial

from drivers.card_formats import decode, make_card
from drivers.serial_reader.lines import CardInput, KeyInput, LineReader
from simulators.osdp_reader import OsdpReaderSimulator
from simulators.serial_reader import SerialReaderSimulator, card_from_text, converter_line
from tests.support import ROOT, wait_for

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
ADDRESS = 101
HID_CARD = make_card("wiegand26", 54919, 18)
UID_CARD = make_card("wiegand34_uid", 12345678)


# -- OSDP: a libosdp control panel on the simulator's pty ------------------------------------------------------


class PySerialChannel(osdp.Channel):
    """The gateway's side of the bus, as its driver will open it: pyserial, non-blocking."""

    def __init__(self, port: str) -> None:
        super().__init__()
        self.serial = serial.Serial(port, 115200, timeout=0, write_timeout=0)

    def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(self.serial.read(max_bytes))
        except serial.SerialException:
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return int(self.serial.write(buf) or 0)
        except serial.SerialException:
            return 0

    def flush(self) -> None:
        pass


@contextmanager
def control_panel(port: str, scbk: bytes | None = KEY, enforce_secure: bool = True) -> Iterator[Any]:
    flags = [osdp.LibFlag.EnforceSecure] if scbk is not None and enforce_secure else []
    channel = PySerialChannel(port)
    cp = osdp.ControlPanel([osdp.PDInfo(ADDRESS, channel, scbk=scbk, flags=flags)], log_level=osdp.LogLevel.Warning)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
        channel.serial.close()


@pytest.fixture
def reader() -> Iterator[OsdpReaderSimulator]:
    sim = OsdpReaderSimulator(ADDRESS, KEY)
    sim.start()
    yield sim
    sim.stop()


def next_event(cp: Any, kind: int, timeout: float = 5.0) -> dict[str, Any]:
    """The next event of this kind the CP received (others skipped); fails after `timeout` seconds."""
    while True:
        event = cp.get_event(ADDRESS, timeout=timeout)
        assert event is not None, f"no OSDP event {kind} within {timeout}s"
        if event["event"] == kind:
            return dict(event)


def secure(cp: Any, sim: OsdpReaderSimulator, timeout: float = 10.0) -> None:
    wait_for(lambda: cp.is_sc_active(ADDRESS) and sim.is_sc_active, timeout, "secure channel on both sides")


def test_osdp_cards_and_keys_reach_the_cp_over_the_secure_channel(reader: OsdpReaderSimulator) -> None:
    with control_panel(reader.port) as cp:
        secure(cp, reader)
        assert reader.is_online
        for card in (HID_CARD, UID_CARD):
            assert reader.present_card(card)
            event = next_event(cp, osdp.Event.CardRead)
            assert event["format"] == osdp.CardFormat.Wiegand and event["length"] == card.bit_length
            assert decode(event["data"], event["length"]) == card
        assert reader.present_raw(b"\xff\xff\xff\xc0", 26)  # a misread: bits as they came, parity wrong
        event = next_event(cp, osdp.Event.CardRead)
        assert (event["data"], event["length"]) == (b"\xff\xff\xff\xc0", 26)
        assert reader.keys("1234#")
        assert next_event(cp, osdp.Event.KeyPress)["data"] == b"1234#"


def test_osdp_led_and_buzzer_commands_are_recorded(reader: OsdpReaderSimulator) -> None:
    with control_panel(reader.port) as cp:
        secure(cp, reader)
        assert reader.last_led_color() is None and reader.beeps == 0
        since = len(reader.commands)
        cp.submit_command(ADDRESS, {
            "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": True, "control_code": 2,
            "on_count": 10, "off_count": 0, "on_color": osdp.CommandLEDColor.Green,
            "off_color": osdp.CommandLEDColor.Black, "timer_count": 30})
        cp.submit_command(ADDRESS, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                                    "on_count": 2, "off_count": 2, "rep_count": 1})
        buzz = reader.wait_for_command(lambda c: c["command"] == osdp.Command.Buzzer, 5, since=since)
        assert buzz is not None and buzz["rep_count"] == 1
        led = reader.wait_for_command(lambda c: c["command"] == osdp.Command.LED, 0, since=since)
        assert led is not None and led["received_at"] <= buzz["received_at"]
        assert reader.last_led_color() == "green" and reader.beeps == 1
        shown = led["received_at"]
        assert reader.led_now(shown + 0.1) == "green" and reader.led_now(shown + 3.1) == "off"  # 30 x 100 ms
        assert reader.buzzer_now(buzz["received_at"] + 0.1) and not reader.buzzer_now(buzz["received_at"] + 0.5)
        since = len(reader.commands)
        cp.submit_command(ADDRESS, {
            "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": False, "control_code": 1,
            "on_count": 1, "off_count": 0, "on_color": osdp.CommandLEDColor.Red,  # steady (0/0 is NAKed)
            "off_color": osdp.CommandLEDColor.Black})
        red = reader.wait_for_command(lambda c: c["command"] == osdp.Command.LED, 5, since=since)
        assert red is not None and reader.last_led_color() == "red"
        assert reader.led_now(red["received_at"] + 10) == "red"  # permanent: no timer
        assert reader.wait_for_command(lambda c: c["command"] == osdp.Command.Text, 0.05) is None


def test_osdp_tamper_and_power_failure_arrive_as_local_status(reader: OsdpReaderSimulator) -> None:
    with control_panel(reader.port) as cp:
        secure(cp, reader)
        steps = [(reader.tamper, True, b"\x01\x00"), (reader.power_failure, True, b"\x01\x01"),
                 (reader.tamper, False, b"\x00\x01"), (reader.power_failure, False, b"\x00\x00")]
        for change, active, report in steps:
            assert change(active)
            event = next_event(cp, osdp.Event.Status)
            assert event["type"] == osdp.StatusReportType.Local
            assert event["report"] == report  # [0] tamper, [1] power failure


def test_osdp_reader_in_install_mode_takes_the_cps_key() -> None:
    sim = OsdpReaderSimulator(ADDRESS, scbk=None, name="fresh")
    sim.start()
    try:
        # our key fails, so libosdp retries with SCBK-D (not with EnforceSecure: that takes the reader offline)
        with control_panel(sim.port, scbk=KEY, enforce_secure=False) as cp:
            secure(cp, sim)
            assert cp.submit_command(ADDRESS, {"command": osdp.Command.Keyset, "type": 1, "data": KEY})
            assert sim.wait_for_command(lambda c: c["command"] == osdp.Command.Keyset, 5) is not None
            assert sim.scbk == KEY
            secure(cp, sim)  # the session starts again, now on the new key
            assert sim.present_card(HID_CARD)
            event = next_event(cp, osdp.Event.CardRead)
            assert decode(event["data"], event["length"]) == HID_CARD
        sim.power_off()
        sim.power_on()  # the key survives a reboot, and is now enforced
        with control_panel(sim.port, scbk=KEY) as cp:
            secure(cp, sim)
    finally:
        sim.stop()


def test_osdp_power_off_goes_quiet_and_power_on_is_a_fresh_reader(reader: OsdpReaderSimulator) -> None:
    with control_panel(reader.port) as cp:
        secure(cp, reader)
        reader.power_off()
        assert not reader.powered and not reader.is_online and not reader.is_sc_active
        assert not reader.present_card(HID_CARD)  # nobody there to read it
        wait_for(lambda: not cp.is_online(ADDRESS), 15, "the CP to give up on the reader (libosdp: ~8 s)")
        reader.power_on()
        assert not reader.is_online  # a rebooted reader: no session until the CP starts one
        # libosdp's CP waits 300 s before trying an offline reader again; disabling and enabling it retries now
        assert cp.disable_pd(ADDRESS)
        wait_for(lambda: not cp.is_pd_enabled(ADDRESS), 5, "the CP to disable the reader")
        assert cp.enable_pd(ADDRESS)
        secure(cp, reader)
        assert reader.present_card(UID_CARD)
        event = next_event(cp, osdp.Event.CardRead)
        assert decode(event["data"], event["length"]) == UID_CARD


def test_osdp_refuses_what_a_reader_cannot_send(reader: OsdpReaderSimulator) -> None:
    with pytest.raises(ValueError, match="keys"):
        reader.keys("12a")
    with pytest.raises(ValueError, match="reader 1"):
        reader.present_card(HID_CARD, reader=1)
    with pytest.raises(ValueError, match="bytes"):
        reader.present_raw(b"\x00", 26)


# -- serial: pyserial on the converter's link ---------------------------------------------------------------------


@pytest.fixture
def converter(tmp_path: Path) -> Iterator[SerialReaderSimulator]:
    sim = SerialReaderSimulator(tmp_path / "serial" / "by-id" / "usb-Wiegand_Converter-if00")
    sim.start()
    yield sim
    sim.stop()


def open_port(sim: SerialReaderSimulator) -> serial.Serial:
    return serial.Serial(str(sim.link), 9600, timeout=5)


def test_converter_lines_are_what_the_line_reader_expects() -> None:
    assert converter_line(HID_CARD) == b"12D687"  # 18 << 16 | 54919, 24 data bits
    assert converter_line(UID_CARD) == b"00BC614E"
    assert converter_line(make_card("wiegand34", 513, 300)) == b"012C0201"
    assert converter_line(HID_CARD, "decimal") == b"1234567"
    assert converter_line(UID_CARD, "decimal") == b"0012345678"  # 10 digits, as W34 readers print a UID
    assert card_from_text("18-54919") == HID_CARD
    assert card_from_text("12345678") == UID_CARD
    assert card_from_text("300,513") == make_card("wiegand34", 513, 300)  # facility too big for 26 bits


def test_serial_cards_codes_and_keys_arrive_as_lines(converter: SerialReaderSimulator) -> None:
    with open_port(converter) as port:
        assert os.path.realpath(converter.link) == converter.port
        assert converter.present_card(HID_CARD)
        assert port.read_until(b"\r\n") == b"12D687\r\n"
        assert converter.present_card(UID_CARD)
        assert port.read_until(b"\r\n") == b"00BC614E\r\n"
        assert converter.scan("VISITOR-42 Müller")
        assert port.read_until(b"\r\n") == "VISITOR-42 Müller\r\n".encode()
        assert converter.key("#") and converter.key(5)
        assert port.read(2) == b"\x0b\x05"
        assert converter.send_raw(b"\x07AB")
        assert port.read(3) == b"\x07AB"


def test_serial_stream_parses_back_to_the_same_cards(tmp_path: Path) -> None:
    sim = SerialReaderSimulator(tmp_path / "reader", encoding="decimal", terminator=b"\r")
    sim.start()
    try:
        with open_port(sim) as port:
            sim.present_card(HID_CARD)
            sim.present_card(UID_CARD)
            sim.key("#")  # not "*" here: 0x0A straight after a CR reads as the second half of a CRLF
            line_reader = LineReader("wiegand", "decimal")
            wanted = [CardInput(HID_CARD, "1234567"), CardInput(UID_CARD, "0012345678"), KeyInput("#")]
            got: list[Any] = []
            while len(got) < len(wanted):
                data = port.read(1)
                assert data, f"stream ended after {got}"
                got += line_reader.feed(data)
            assert got == wanted
    finally:
        sim.stop()


def test_serial_feedback_lines_reach_received(converter: SerialReaderSimulator) -> None:
    with open_port(converter) as port:
        port.write(b"GRANTED\r\n")
        assert converter.wait_for_line(lambda line: line == "GRANTED") == "GRANTED"
        since = len(converter.received)
        port.write(b"DEN")
        port.write(b"IED\n\nALERT\r")
        assert converter.wait_for_line(lambda line: line == "ALERT", since=since) == "ALERT"
        assert converter.received == ["GRANTED", "DENIED", "ALERT"]
        assert converter.wait_for_line(lambda line: line == "GRANTED", 0.05, since=since) is None


def test_serial_unplug_fails_the_open_port_and_plug_in_comes_back(converter: SerialReaderSimulator) -> None:
    port = open_port(converter)
    try:
        converter.unplug()
        assert not converter.plugged_in and not os.path.lexists(converter.link)
        with pytest.raises(serial.SerialException):
            port.read(1)
        with pytest.raises(serial.SerialException):
            port.write(b"GRANTED\r\n")
    finally:
        port.close()
    with pytest.raises(serial.SerialException):
        open_port(converter)
    assert not converter.present_card(HID_CARD)  # unplugged: nothing sent
    converter.plug_in()
    with open_port(converter) as port:
        converter.present_card(HID_CARD)
        assert port.read_until(b"\r\n") == b"12D687\r\n"  # nothing left over from before


# -- the command lines ----------------------------------------------------------------------------------------


class Cli:
    """A simulator's CLI in a subprocess: lines in on stdin, lines out of stdout, read by a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def quit(self) -> int:
        self.send("quit")
        return self.process.wait(10)


def test_osdp_cli_reads_cards_and_shows_commands() -> None:
    cli = Cli("simulators.osdp_reader", "--scbk", KEY.hex())
    try:
        port = cli.line()
        with control_panel(port) as cp:
            wait_for(lambda: cp.is_sc_active(ADDRESS), 10, "secure channel with the CLI's reader")
            cli.send("card 018,54919")
            event = next_event(cp, osdp.Event.CardRead)
            assert decode(event["data"], event["length"]) == HID_CARD
            cli.send("keys 12#")
            assert next_event(cp, osdp.Event.KeyPress)["data"] == b"12#"
            cli.send("tamper on")
            assert next_event(cp, osdp.Event.Status)["report"] == b"\x01\x00"
            cp.submit_command(ADDRESS, {
                "command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": False, "control_code": 1,
                "on_count": 1, "off_count": 0, "on_color": osdp.CommandLEDColor.Amber,
                "off_color": osdp.CommandLEDColor.Black})
            cp.submit_command(ADDRESS, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                                        "on_count": 1, "off_count": 1, "rep_count": 2})
            assert cli.line() == "LED amber"
            assert cli.line() == "BEEP x2"
        assert cli.quit() == 0
    finally:
        cli.process.kill()


def test_serial_cli_prints_cards_and_unplugs(tmp_path: Path) -> None:
    link = tmp_path / "by-id" / "usb-reader"
    cli = Cli("simulators.serial_reader", str(link))
    try:
        assert cli.line() == str(link)
        with serial.Serial(str(link), 9600, timeout=5) as port:
            cli.send("card 018,54919")
            assert port.read_until(b"\r\n") == b"12D687\r\n"
            cli.send("scan PASS-7")
            assert port.read_until(b"\r\n") == b"PASS-7\r\n"
            cli.send("key 5")
            assert port.read(1) == b"\x05"
            port.write(b"BEEP\r\n")
            assert cli.line() == "RECEIVED BEEP"
            cli.send("unplug")
            wait_for(lambda: not os.path.lexists(link), 5, "the link to go")
        cli.send("plugin")
        assert cli.line() == str(link)
        assert cli.quit() == 0
        assert not os.path.lexists(link)
    finally:
        cli.process.kill()
