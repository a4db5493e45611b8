"""The feedback the OSDP driver sends, read as a reader that follows IEC 60839-11-5 / SIA OSDP 2.2 reads it.

The bytes: the driver's command dicts go through libosdp's own control panel (the binding does not expose its
encoder, so the record is taken off the line) to a reader without secure channel, where osdp_LED / osdp_BUZ travel
in clear; a spy on the line keeps every byte and the record is checked field by field against the standard's
layout. Then the simulated reader's reading of each field: what it SHOWS, not only the colour it was sent.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import osdp
import pytest
import serial

from drivers.osdp_reader.driver import _ControlPanel, _SerialChannel, buzzer_command, led_command
from drivers.osdp_reader.schema import Feedback, Signal
from simulators.osdp_reader import OsdpLine, OsdpReaderSimulator
from tests.support import missing, wait_for

ADDRESS = 101
SOM = 0x53
CMD_LED = 0x69
CMD_BUZ = 0x6A
COLOR_CODES = {"off": 0, "red": 1, "green": 2, "amber": 3, "blue": 4}  # OSDP colour codes
FEEDBACK = Feedback()


def frames(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(address, command or reply code, data block) of each clear-text OSDP frame in `data`."""
    i = 0
    while (i := data.find(bytes([SOM]), i)) >= 0 and i + 6 <= len(data):
        length = data[i + 2] | data[i + 3] << 8
        frame = data[i:i + length]
        ctrl = frame[4] if len(frame) > 4 else 0
        if len(frame) < length or length < 7 or ctrl & 0x08:  # cut short, or with a security block
            i += 1
            continue
        end = length - (2 if ctrl & 0x04 else 1)  # CRC-16 or checksum
        yield frame[1], frame[5], frame[6:end]
        i += length


class Bus:
    """libosdp's control panel (the driver's class, on pyserial as in the driver) and a simulated reader in clear,
    on one line with a spy that keeps every byte the control panel sends."""

    def __init__(self) -> None:
        self.line = OsdpLine()
        self.spy = self.line.tap()
        self.spy.set_powered(True)
        self.reader = OsdpReaderSimulator(ADDRESS, None, line=self.line, log_level=osdp.LogLevel.Error)
        self.reader.start()
        self.port = serial.Serial(self.line.port, 115200, timeout=0, write_timeout=0.5)
        self.cp = _ControlPanel([osdp.PDInfo(ADDRESS, _SerialChannel(self.port), scbk=None, name="r")],
                                log_level=osdp.LogLevel.Error)
        self.cp.start()
        wait_for(lambda: self.cp.is_online(ADDRESS), 10, "the reader online")

    def send(self, command: dict[str, Any], code: int) -> bytes:
        """Submit `command`; the data block of the frame with command `code` the control panel put on the line."""
        self.spy.read(1 << 20)
        since = len(self.reader.commands)
        assert self.cp.submit_command(ADDRESS, command)
        assert self.reader.wait_for_command(lambda c: c["command"] == command["command"], 5, since=since)
        sent = [data for address, cmd, data in frames(self.spy.read(1 << 20)) if address == ADDRESS and cmd == code]
        assert len(sent) == 1, f"expected one frame 0x{code:02x} on the line, saw {len(sent)}"
        return sent[0]

    def close(self) -> None:
        self.cp.stop()
        self.port.close()
        self.reader.stop()
        self.line.close()


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    bus = Bus()
    yield bus
    bus.close()


@pytest.mark.parametrize("result", ["granted", "denied", "alert"])
def test_the_led_record_sets_the_temporary_state_with_its_timer_and_leaves_the_permanent_one(
        bus: Bus, result: str) -> None:
    signal: Signal = getattr(FEEDBACK, result)
    ticks = signal.on_ms // 100
    data = bus.send(led_command(signal), CMD_LED)
    assert len(data) == 14, data.hex(" ")
    reader, led, t_code, t_on, t_off, t_on_color, t_off_color, timer_lsb, timer_msb = data[:9]
    p_code, p_on, p_off, p_on_color, p_off_color = data[9:]
    assert (reader, led) == (0, 0)
    assert t_code == 0x02, "temporary control code: 0x02 sets the temporary state and starts the timer"
    assert (t_on, t_off) == (ticks, 0), "steady on for the whole time, in 100 ms units"
    assert (t_on_color, t_off_color) == (COLOR_CODES[signal.color], COLOR_CODES["off"])
    assert timer_lsb | timer_msb << 8 == ticks, "the temporary state lasts on_ms (16-bit LE, 100 ms units)"
    assert p_code == 0x00, "permanent control code 0x00: NOP, the permanent state is left alone"
    assert (p_on, p_off, p_on_color, p_off_color) == (0, 0, 0, 0)


@pytest.mark.parametrize("result", ["granted", "denied", "alert"])
def test_the_buzzer_record_sounds_the_default_tone_once_per_beep(bus: Bus, result: str) -> None:
    signal: Signal = getattr(FEEDBACK, result)
    command = buzzer_command(signal)
    assert command is not None
    reader, tone, on, off, count = bus.send(command, CMD_BUZ)
    assert (reader, tone, on, off, count) == (0, 0x02, 1, 1, signal.beeps)  # 100 ms on, 100 ms off, N cycles


def independent_osdp() -> Any:
    """osdp-python (github.com/ryanhz/osdp-python, Apache-2.0), an OSDP control panel written apart from libosdp,
    from the standard's tables. scripts/test installs it beside the venv (its import name is libosdp's)."""
    root = Path(sys.prefix) / "independent" / "osdp"
    if "osdp_python" in sys.modules:
        return sys.modules["osdp_python"]
    if not (root / "__init__.py").is_file():
        missing(f"osdp-python is not installed: pip install --no-deps --target {root.parent} osdp==1.6")
    spec = importlib.util.spec_from_file_location("osdp_python", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["osdp_python"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("result", ["granted", "denied", "alert"])
def test_the_records_on_the_line_are_what_another_osdp_implementation_builds(bus: Bus, result: str) -> None:
    """The same intent (the temporary state in a colour for its time, the permanent state left alone; N beeps
    of the default tone) built by osdp-python's record encoders is, byte for byte, what our driver put on the
    line through libosdp."""
    other = independent_osdp()
    signal: Signal = getattr(FEEDBACK, result)
    ticks = signal.on_ms // 100
    color = other.LedColor[{"off": "Black"}.get(signal.color, signal.color.capitalize())]
    theirs = other.ReaderLedControls([other.ReaderLedControl(
        0, 0, other.TemporaryReaderControlCode.SetTemporaryAndStartTimer, ticks, 0, color, other.LedColor.Black,
        ticks, other.PermanentReaderControlCode.Nop, 0, 0, other.LedColor.Black, other.LedColor.Black)]).build_data()
    assert bus.send(led_command(signal), CMD_LED) == theirs
    command = buzzer_command(signal)
    if command is not None:
        buzzer = other.ReaderBuzzerControl(0, other.ToneCode.DefaultTone, 1, 1, signal.beeps).build_data()
        assert bus.send(command, CMD_BUZ) == buzzer


def test_no_beeps_send_no_buzzer_record() -> None:
    assert buzzer_command(Signal(color="green", beeps=0)) is None  # a count of 0 would mean "sound for ever"


def test_the_reader_shows_the_feedback_colour_for_its_time_then_its_permanent_state(bus: Bus) -> None:
    sim = bus.reader
    since = len(sim.commands)
    bus.send(led_command(FEEDBACK.granted), CMD_LED)
    record = sim.led_commands()[-1]
    assert sim.commands.index(record) >= since
    at = record["received_at"]
    assert sim.led_now(at + 0.05) == "green" and sim.led_now(at + 1.45) == "green"
    assert sim.led_now(at + 1.55) == "off"


# -- the simulated reader's reading of each field, command by command (no control panel needed) ----------------


def led(code: int, color: int, temporary: bool = True, on: int = 10, off: int = 0, timer: int = 20,
        **extra: Any) -> dict[str, Any]:
    command = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": temporary,
               "control_code": code, "on_count": on, "off_count": off, "on_color": color,
               "off_color": osdp.CommandLEDColor.Black, **extra}
    if temporary:
        command["timer_count"] = timer
    return command


@pytest.fixture
def sim() -> Iterator[OsdpReaderSimulator]:
    reader = OsdpReaderSimulator(ADDRESS, None)  # never powered: its command handler is called directly
    yield reader
    reader.stop()


def received(sim: OsdpReaderSimulator, command: dict[str, Any]) -> float:
    sim._on_command(command)
    return float(sim.commands[-1]["received_at"])


def test_temporary_code_0x01_with_a_colour_shows_nothing_new(sim: OsdpReaderSimulator) -> None:
    at = received(sim, led(0x01, osdp.CommandLEDColor.Green))
    assert sim.last_led_color() == "green"  # what was sent...
    assert [sim.led_now(at + dt) for dt in (0, 0.5, 1.9, 3)] == ["off"] * 4  # ...is not what a reader shows


def test_temporary_code_0x02_shows_the_colour_for_the_timer_then_the_permanent_state(
        sim: OsdpReaderSimulator) -> None:
    received(sim, led(0x01, osdp.CommandLEDColor.Blue, temporary=False))  # permanent blue
    at = received(sim, led(0x02, osdp.CommandLEDColor.Red, timer=20))
    assert sim.led_now(at + 0.01) == "red" and sim.led_now(at + 1.99) == "red"
    assert sim.led_now(at + 2.01) == "blue"
    timeline = sim.led_timeline()
    assert [color for _, color in timeline] == ["blue", "red", "blue"]
    assert timeline[2][0] - timeline[1][0] == pytest.approx(2.0, abs=0.02)


def test_a_temporary_state_flashes_and_code_0x01_cancels_it(sim: OsdpReaderSimulator) -> None:
    at = received(sim, led(0x02, osdp.CommandLEDColor.Amber, on=2, off=3, timer=50))
    assert [sim.led_now(at + dt) for dt in (0.1, 0.3, 0.45, 0.55)] == ["amber", "off", "off", "amber"]
    cancel = received(sim, led(0x01, osdp.CommandLEDColor.Green))
    assert sim.led_now(cancel + 0.01) == "off" and sim.led_now(at + 4) == "off"


def test_permanent_nop_leaves_the_permanent_state_and_0x01_sets_it(sim: OsdpReaderSimulator) -> None:
    at = received(sim, led(0x00, osdp.CommandLEDColor.Green, temporary=False))
    assert sim.led_now(at + 1) == "off"
    at = received(sim, led(0x01, osdp.CommandLEDColor.Green, temporary=False, on=1, off=0))
    assert sim.led_now(at + 1) == "green"
    at = received(sim, led(0x01, osdp.CommandLEDColor.Red, temporary=False, cancel_temporary=True))
    assert sim.led_now(at + 1) == "red"


def test_the_buzzer_sounds_count_cycles_and_tone_codes_0_and_1_silence_it(sim: OsdpReaderSimulator) -> None:
    buz = {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2, "on_count": 1, "off_count": 1,
           "rep_count": 3}
    at = received(sim, buz)
    assert [sim.buzzer_now(at + 0.05 + 0.1 * i) for i in range(7)] == [True, False] * 3 + [False]
    at = received(sim, {**buz, "rep_count": 0})  # continuous
    assert sim.buzzer_now(at + 10.05)
    at = received(sim, {**buz, "control_code": 1})
    assert not sim.buzzer_now(at + 0.05)
    at = received(sim, {**buz, "control_code": 0})
    assert not sim.buzzer_now(at + 0.05)
    assert sim.beeps == 2  # commands that sounded the tone
