"""Held buttons on latching alarm modules, through the real driver and the real simulator over Modbus TCP and
RTU: every press, of any length and on either latch style, gives exactly one trigger and one restore, and the
point hears the next press (issue 14: a button held on a level-latching module made its point deaf)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from drivers.base import Ticker, Tickers
from drivers.modbus_di.driver import ModbusDIDriver
from drivers.modbus_di.schema import ModbusDIConfig
from simulators.modbus_di import LatchStyle, ModbusDISimulator
from simulators.pty_pair import PtyPair
from tests.support import wait_for

LATCH_ADDRESS = 32
STYLES: tuple[LatchStyle, ...] = ("edge", "level")
LENGTHS_S = [0.01, 0.03, 0.1, 0.5, 2.0]  # one input each, pressed in parallel
PRESSES = 3  # in a row on each input
GAPS_S = [0.011, 0.029, 0.043]  # after a restore, before the next press: each press at another poll phase
TRIGGERED, RESTORED = "campus.alarm_input.triggered", "campus.alarm_input.restored"


class Recorder:
    """What of a DriverContext the driver uses; keeps what it emits, per input, in order."""

    log = logging.getLogger("test.held_presses")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, int]] = []  # (event type, input)
        self.online = False
        self.tickers = Tickers()

    def emit(self, device_id: str, event_type: str, data: dict[str, Any], at: float | None = None,
             test: bool | None = None) -> None:
        with self._lock:
            self.events.append((event_type, data["input"]))

    def set_online(self, device_id: str, online: bool, reason: str | None = None) -> None:
        self.online = online

    def set_state(self, device_id: str, state: dict[str, Any]) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def ticker(self, period: float) -> Ticker:
        return self.tickers.of(period)

    def of(self, number: int) -> list[str]:
        with self._lock:
            return [kind for kind, n in self.events if n == number]


class Line:
    """A simulated latching module and the real driver polling it every 50 ms, in an event loop of its own."""

    def __init__(self, transport: str, style: LatchStyle) -> None:
        self.pair = PtyPair() if transport == "rtu" else None
        self.sim = ModbusDISimulator(latch_address=LATCH_ADDRESS, latch_style=style,
                                     serial=self.pair.device_side if self.pair else None)
        self.sim.start()
        connection = ({"type": "rtu", "port": self.pair.driver_side, "baudrate": 115200, "timeout_s": 0.15}
                      if self.pair else {"host": "127.0.0.1", "port": self.sim.port})
        self.cfg = ModbusDIConfig.model_validate({
            "id": f"box-{style}", "kind": "alarm_input", "driver": "modbus_di", "connection": connection,
            "poll_ms": 50, "latch": {"address": LATCH_ADDRESS},
            "points": [{"input": n, "name": f"button-{n}", "type": "panic"} for n in range(1, 9)]})
        self.ctx = Recorder()
        self.driver = ModbusDIDriver([self.cfg], self.ctx)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.driver.start(),), daemon=True)
        self.thread.start()
        wait_for(lambda: self.ctx.online, 10, f"{self.cfg.id} online")

    def press(self, number: int, length: float, times: int) -> None:
        """Presses input `number` for `length` s, `times` times in a row, each once the last one's restore is seen."""
        before = self.ctx.of(number).count(RESTORED)
        for made in range(1, times + 1):
            self.sim.press_for(number, length)
            wait_for(lambda made=made: self.ctx.of(number).count(RESTORED) >= before + made, length + 5,
                     f"{self.cfg.id} input {number}: the restore of press {made} of {length:g} s")
            time.sleep(GAPS_S[made % len(GAPS_S)])  # stimulus, not synchronisation: the next press at another phase

    def settle(self) -> None:
        """A few more polls, for anything late or doubled to show."""
        reads = self.sim.reads
        wait_for(lambda: self.sim.reads >= reads + 5, 5, f"{self.cfg.id}: five more polls")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.driver.stop(), self.loop).result(5)
        self.sim.stop()  # closes the TCP connection, so the driver sees its stop at once
        self.thread.join(10)
        self.loop.close()
        if self.pair:
            self.pair.close()


@pytest.fixture(params=["tcp", "rtu"])
def lines(request: pytest.FixtureRequest) -> Iterator[list[Line]]:
    """An edge-latching and a level-latching module, each on its own line, polled at the same time."""
    opened: list[Line] = []
    try:
        for style in STYLES:
            opened.append(Line(request.param, style))
        yield opened
    finally:
        for line in opened:
            line.close()


def test_held_presses_of_any_length_give_one_trigger_and_one_restore_each(lines: list[Line]) -> None:
    jobs = [(line, number, length) for line in lines for number, length in enumerate(LENGTHS_S, 1)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        for done in [pool.submit(line.press, number, length, PRESSES) for line, number, length in jobs]:
            done.result()
    for line in lines:
        line.settle()
    for line, number, length in jobs:
        assert line.ctx.of(number) == [TRIGGERED, RESTORED] * PRESSES, \
            f"{line.cfg.id} input {number}: {PRESSES} presses of {length:g} s"
        assert not line.sim.latched()[number - 1], f"{line.cfg.id} input {number}: latch left set"


def test_a_refused_latch_clear_is_asked_for_again(lines: list[Line]) -> None:
    """The module refuses the clear at the first press and the one at its release: the driver asks again,
    though its next reading is the same as the last, and the point hears the second press."""
    for line in lines:
        line.sim.refuse_latch_clears(2)
    with ThreadPoolExecutor(len(lines)) as pool:
        for done in [pool.submit(line.press, 1, 0.3, 2) for line in lines]:
            done.result()
    for line in lines:
        line.settle()
        assert line.ctx.of(1) == [TRIGGERED, RESTORED] * 2, line.cfg.id
        health = line.driver.health()["modules"][line.cfg.id]
        assert health["errors"] >= 2 and "clearing latch of input 1" in (health["last_error"] or ""), health

