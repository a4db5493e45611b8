"""The Modbus DI simulator refuses as real modules do, checked on the wire with frames built by hand and with
a third-party master (mbpoll): a unit id it does not serve gets exception 0x0B on Modbus TCP (or silence, if
so configured) and no answer at all on an RTU line; a read or write past what the module has gets 0x02. Then
the driver against those refusals: the reason it goes offline with names the unit or the addresses, and it
keeps polling at its pace."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shutil
import socket
import struct
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import Any, cast

import pytest

from drivers.base import DriverContext, Ticker, Tickers
from drivers.modbus_di.driver import ModbusDIDriver
from drivers.modbus_di.schema import ModbusDIConfig
from simulators.modbus_di import ModbusDISimulator
from simulators.pty_pair import PtyPair
from tests.support import missing, wait_for

ILLEGAL_ADDRESS, GATEWAY_NO_RESPONSE = 0x02, 0x0B
READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING, READ_INPUT_REGS = 1, 2, 3, 4
DIAGNOSTICS, WRITE_COILS = 8, 15


def read(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def write_coils(address: int, values: list[bool]) -> bytes:
    packed = bytearray((len(values) + 7) // 8)
    for i, on in enumerate(values):
        packed[i // 8] |= on << (i % 8)
    return struct.pack(">BHHB", WRITE_COILS, address, len(values), len(packed)) + bytes(packed)


ECHO = struct.pack(">BHH", DIAGNOSTICS, 0, 0x1234)  # diagnostics, sub-function 0: return query data


# -- Modbus TCP, by hand -----------------------------------------------------------------------------------

class Tcp:
    """One connection to the simulator; MBAP frames built and taken apart here, not by pymodbus."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, transaction: int, unit: int, pdu: bytes) -> None:
        self.sock.sendall(struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu)

    def receive(self) -> tuple[int, int, bytes]:
        """The next response: (transaction id, unit id, PDU); fails after the socket's 5 s timeout."""
        while True:
            if len(self.buffer) >= 7:
                transaction, protocol, length, unit = struct.unpack_from(">HHHB", self.buffer)
                assert protocol == 0, self.buffer.hex(" ")
                if len(self.buffer) >= 6 + length:
                    pdu, self.buffer = self.buffer[7:6 + length], self.buffer[6 + length:]
                    return transaction, unit, pdu
            data = self.sock.recv(260)
            assert data, "the simulator closed the connection"
            self.buffer += data

    def ask(self, transaction: int, unit: int, pdu: bytes) -> bytes:
        self.send(transaction, unit, pdu)
        got_transaction, got_unit, answer = self.receive()
        assert (got_transaction, got_unit) == (transaction, unit), "the MBAP header echoes the request's"
        return answer

    def pending(self) -> bytes:
        """Whatever has arrived and not been taken yet, without waiting."""
        self.sock.setblocking(False)
        try:
            return self.buffer + self.sock.recv(260)
        except BlockingIOError:
            return self.buffer
        finally:
            self.sock.settimeout(5)

    def close(self) -> None:
        self.sock.close()


def assert_exception(pdu: bytes, function: int, code: int) -> None:
    assert len(pdu) == 2, f"an exception response is 2 bytes of PDU, got {pdu.hex(' ')}"
    assert pdu[0] == function | 0x80, f"function {pdu[0]:#04x}, not {function | 0x80:#04x}: {pdu.hex(' ')}"
    assert pdu[1] == code, f"exception {pdu[1]:#04x}, not {code:#04x}"


def assert_bits(pdu: bytes, function: int, count: int) -> list[bool]:
    assert pdu[0] == function, f"expected a normal answer to function {function}, got {pdu.hex(' ')}"
    assert pdu[1] == (count + 7) // 8 == len(pdu) - 2, pdu.hex(" ")
    return [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Simulators, pty pairs and connections a test opens, closed after it whatever happens."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        if isinstance(thing, ModbusDISimulator):
            thing.stop()
        else:
            thing.close()


def simulator(started: list[Any], **kw: Any) -> ModbusDISimulator:
    sim = ModbusDISimulator(**kw)
    sim.start()
    started.append(sim)
    return sim


def connect(started: list[Any], sim: ModbusDISimulator) -> Tcp:
    conn = Tcp(sim.port)
    started.append(conn)
    return conn


@pytest.mark.parametrize("pdu", [read(READ_DISCRETE_INPUTS, 0, 1), read(READ_COILS, 0, 8),
                                 read(READ_HOLDING, 0, 1), read(READ_INPUT_REGS, 0, 1),
                                 write_coils(32, [False]), ECHO],
                         ids=["read-inputs", "read-coils", "read-holding", "read-input-regs", "write-coils", "diag"])
def test_tcp_an_unknown_unit_gets_0x0b_for_every_function(started: list[Any], pdu: bytes) -> None:
    sim = simulator(started, units=[1, 2], latch_address=32)
    conn = connect(started, sim)
    for transaction, unit in enumerate((0, 3, 9, 247, 255), 1):
        assert_exception(conn.ask(transaction, unit, pdu), pdu[0], GATEWAY_NO_RESPONSE)
    wait_for(lambda: sim.unserved == 5, 5, "five requests counted as for units not served")
    # the same connection still serves the units that are there (a gateway keeps its connection)
    sim.press(3, unit=2)
    assert assert_bits(conn.ask(10, 2, read(READ_DISCRETE_INPUTS, 0, 16)), READ_DISCRETE_INPUTS, 16)[2]
    assert not any(assert_bits(conn.ask(11, 1, read(READ_DISCRETE_INPUTS, 0, 16)), READ_DISCRETE_INPUTS, 16))


def test_tcp_an_unknown_unit_is_ignored_when_configured_so(started: list[Any]) -> None:
    sim = simulator(started, unknown_units="ignore")
    conn = connect(started, sim)
    conn.send(1, 9, read(READ_DISCRETE_INPUTS, 0, 1))
    wait_for(lambda: sim.unserved == 1, 5, "the simulator to have taken the request for unit 9")
    # An answer to it would be on the wire before the answer to the next request on this connection.
    conn.send(2, 1, read(READ_DISCRETE_INPUTS, 0, 16))
    transaction, unit, pdu = conn.receive()
    assert (transaction, unit) == (2, 1), "unit 9 was answered"
    assert_bits(pdu, READ_DISCRETE_INPUTS, 16)
    assert conn.pending() == b""


@pytest.mark.parametrize(("kw", "bits"), [({"inputs": 16}, 16), ({"inputs": 8}, 8), ({"inputs": 12}, 12),
                                          ({"inputs": 8, "latch_address": 16}, 24),
                                          ({"inputs": 16, "latch_address": 32}, 48)],
                         ids=["16", "8", "12", "8-latch16", "16-latch32"])
def test_tcp_past_the_module_is_illegal_data_address(started: list[Any], kw: dict[str, Any], bits: int) -> None:
    sim = simulator(started, **kw)
    assert sim.bits == bits
    conn = connect(started, sim)
    t = iter(range(1, 1000))
    for function in (READ_DISCRETE_INPUTS, READ_COILS):
        assert_bits(conn.ask(next(t), 1, read(function, 0, bits)), function, bits)  # all of it, gap included
        assert_bits(conn.ask(next(t), 1, read(function, bits - 1, 1)), function, 1)  # the last one
        for address, count in ((0, bits + 1), (bits, 1), (bits - 1, 2), (bits + 16, 1), (1000, 8)):
            assert_exception(conn.ask(next(t), 1, read(function, address, count)), function, ILLEGAL_ADDRESS)
    for function in (READ_HOLDING, READ_INPUT_REGS):
        assert conn.ask(next(t), 1, read(function, 0, 1)) == bytes([function, 2, 0, 0])
        for address, count in ((0, 2), (1, 1)):
            assert_exception(conn.ask(next(t), 1, read(function, address, count)), function, ILLEGAL_ADDRESS)
    assert_exception(conn.ask(next(t), 1, write_coils(bits - 1, [False, False])), WRITE_COILS, ILLEGAL_ADDRESS)
    assert_exception(conn.ask(next(t), 1, write_coils(bits, [False])), WRITE_COILS, ILLEGAL_ADDRESS)


def test_tcp_latched_reads_in_range_still_work(started: list[Any]) -> None:
    sim = simulator(started, inputs=8, latch_address=16, latch_style="edge")
    conn = connect(started, sim)
    sim.press(2)
    sim.release(2)
    bits = assert_bits(conn.ask(1, 1, read(READ_DISCRETE_INPUTS, 0, 24)), READ_DISCRETE_INPUTS, 24)
    assert bits == [False] * 17 + [True] + [False] * 6, "input 2 is released and its latch (bit 17) set"
    assert conn.ask(2, 1, write_coils(17, [False])) == struct.pack(">BHH", WRITE_COILS, 17, 1)
    assert sim.latched() == [False] * 8
    assert_exception(conn.ask(3, 1, read(READ_DISCRETE_INPUTS, 16, 9)), READ_DISCRETE_INPUTS, ILLEGAL_ADDRESS)


# -- mbpoll, an independent master (libmodbus) ---------------------------------------------------------------

def mbpoll(port: int, unit: int, table: int, ref: int, count: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """mbpoll's -t: 0 coils, 1 discrete inputs, 3 input registers, 4 holding registers; -r is 1-based."""
    if not shutil.which("mbpoll"):
        missing("mbpoll is not installed (apt-get install mbpoll)")
    return subprocess.run(["mbpoll", "-m", "tcp", "-a", str(unit), "-t", str(table), "-r", str(ref), "-c", str(count),
                           "-1", *extra, "-p", str(port), "127.0.0.1"], capture_output=True, text=True, timeout=20)


def test_mbpoll_sees_0x0b_for_an_unknown_unit_and_0x02_past_the_inputs(started: list[Any]) -> None:
    sim = simulator(started, inputs=8)
    unknown = mbpoll(sim.port, 9, 1, 1, 1)
    assert unknown.returncode != 0 and "Target device failed to respond" in unknown.stderr, unknown
    for table in (1, 0):  # discrete inputs, coils: all 8 read, a 9th refused
        assert mbpoll(sim.port, 1, table, 1, 8).returncode == 0
        past = mbpoll(sim.port, 1, table, 1, 9)
        assert past.returncode != 0 and "Illegal data address" in past.stderr, past
        past = mbpoll(sim.port, 1, table, 9, 1)
        assert past.returncode != 0 and "Illegal data address" in past.stderr, past
    past = mbpoll(sim.port, 1, 4, 2, 1)
    assert past.returncode != 0 and "Illegal data address" in past.stderr, past
    wait_for(lambda: sim.unserved == 1, 5, "the request for unit 9 counted")


def test_mbpoll_times_out_on_an_ignored_unit(started: list[Any]) -> None:
    sim = simulator(started, unknown_units="ignore")
    out = mbpoll(sim.port, 9, 1, 1, 1, "-o", "0.3")
    assert out.returncode != 0 and "timed out" in out.stderr, out
    wait_for(lambda: sim.unserved == 1, 5, "the request for unit 9 counted")
    assert mbpoll(sim.port, 1, 1, 1, 16).returncode == 0


# -- Modbus RTU on a pty, by hand ----------------------------------------------------------------------------

def crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


class Rtu:
    """The master's end of the line, raw: frames with their CRC built here."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def send(self, unit: int, pdu: bytes) -> None:
        frame = bytes([unit]) + pdu
        os.write(self.fd, frame + crc16(frame))

    def receive(self, size: int, timeout: float = 5.0) -> bytes:
        """Exactly `size` bytes, or fails after `timeout`."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < size:
            left = deadline - time.monotonic()
            assert left > 0, f"got {data.hex(' ')} of {size} bytes"
            if select.select([self.fd], [], [], left)[0]:
                data += os.read(self.fd, size - len(data))
        return data

    def pending(self) -> bytes:
        return os.read(self.fd, 256) if select.select([self.fd], [], [], 0)[0] else b""

    def close(self) -> None:
        os.close(self.fd)


def test_rtu_an_unknown_unit_gets_no_answer_and_past_the_inputs_gets_0x02(started: list[Any]) -> None:
    pair = PtyPair()
    started.append(pair)
    sim = simulator(started, units=[1, 2], inputs=8, serial=pair.device_side)
    line = Rtu(pair.driver_side)
    started.append(line)
    for number, (unit, pdu) in enumerate([(9, read(READ_DISCRETE_INPUTS, 0, 1)), (0, read(READ_DISCRETE_INPUTS, 0, 1)),
                                          (3, ECHO), (247, write_coils(0, [False]))], 1):
        line.send(unit, pdu)
        wait_for(lambda: sim.unserved == number, 5, f"the simulator to have taken request {number}")  # noqa: B023
    # Anything said to those would be on the line before the answer to this.
    sim.press(8, unit=2)
    line.send(2, read(READ_DISCRETE_INPUTS, 0, 8))
    answer = line.receive(6)
    assert answer[:4] == bytes([2, READ_DISCRETE_INPUTS, 1, 0x80]) and answer[4:] == crc16(answer[:4]), answer.hex(" ")
    assert line.pending() == b""
    line.send(1, read(READ_DISCRETE_INPUTS, 0, 9))
    refused = line.receive(5)
    assert refused[:3] == bytes([1, READ_DISCRETE_INPUTS | 0x80, ILLEGAL_ADDRESS]), refused.hex(" ")
    assert refused[3:] == crc16(refused[:3])
    line.send(1, read(READ_COILS, 8, 1))
    refused = line.receive(5)
    assert refused[:3] == bytes([1, READ_COILS | 0x80, ILLEGAL_ADDRESS]) and refused[3:] == crc16(refused[:3])


# -- the driver against these refusals -----------------------------------------------------------------------

class Offline:
    """What of a DriverContext the driver uses; keeps the offline reasons."""

    log = logging.getLogger("test.modbus_sim_exceptions")

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.online: bool | None = None
        self.tickers = Tickers()

    def emit(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_online(self, device_id: str, online: bool, reason: str | None = None) -> None:
        self.online = online
        if not online:
            self.reasons.append(reason or "")

    def set_state(self, device_id: str, state: dict[str, Any]) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def ticker(self, period: float) -> Ticker:
        return self.tickers.of(period)


class DriverRun:
    """The real driver polling one module every 50 ms, in an event loop of its own."""

    def __init__(self, connection: dict[str, Any], **extra: Any) -> None:
        self.cfg = ModbusDIConfig.model_validate({
            "id": "box", "kind": "alarm_input", "driver": "modbus_di", "connection": connection, "poll_ms": 50,
            "offline_after": 2, "points": [{"input": 1, "name": "gate-panic", "type": "panic"}], **extra})
        self.ctx = Offline()
        self.driver = ModbusDIDriver([self.cfg], cast(DriverContext, self.ctx))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task = asyncio.run_coroutine_threadsafe(self.driver.start(), self.loop)

    def health(self) -> dict[str, Any]:
        return dict(asyncio.run_coroutine_threadsafe(self._health(), self.loop).result(5))

    async def _health(self) -> dict[str, Any]:
        return dict(self.driver.health()["modules"]["box"])

    def reason(self) -> str:
        wait_for(lambda: self.ctx.online is False, 10, "the module offline")
        assert len(self.ctx.reasons) == 1, self.ctx.reasons
        return self.ctx.reasons[0]

    def keeps_its_pace(self) -> None:
        """Ten more polls, no faster than the poll period allows (no spinning), and the driver still running."""
        before, began = self.health()["polls"], time.monotonic()
        wait_for(lambda: self.health()["polls"] >= before + 10, 10, "ten more polls")
        assert time.monotonic() - began >= 9 * 0.05 * 0.8, "the driver polls faster than its period"
        assert not self.task.done(), self.task.result()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.driver.stop(), self.loop).result(5)
        self.task.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def driver(started: list[Any], connection: dict[str, Any], **extra: Any) -> DriverRun:
    run = DriverRun(connection, **extra)
    started.append(run)
    return run


def test_driver_a_tcp_unit_answering_0x0b_is_offline_naming_the_unit(started: list[Any]) -> None:
    sim = simulator(started)
    run = driver(started, {"host": "127.0.0.1", "port": sim.port, "unit": 9})
    reason = run.reason()
    assert reason.startswith(f"tcp://127.0.0.1:{sim.port}: no module answers at unit 9:"), reason
    assert "Modbus exception 11" in reason and "check the unit id" in reason, reason
    run.keeps_its_pace()
    assert sim.unserved >= 10


def test_driver_reading_past_the_module_is_a_configuration_error_naming_the_addresses(started: list[Any]) -> None:
    sim = simulator(started, inputs=16, latch_address=16)  # the module latches at 16; configured at 32
    run = driver(started, {"host": "127.0.0.1", "port": sim.port}, latch={"address": 32})
    reason = run.reason()
    assert reason == (f"tcp://127.0.0.1:{sim.port}: configuration error: unit 1 has no discrete inputs 0-47 "
                      "(inputs 0-15, latch bits 32-47): Modbus exception 2: illegal data address "
                      "(check first_address, inputs, latch.address)"), reason
    run.keeps_its_pace()


def test_driver_rtu_past_the_inputs_and_an_absent_unit(started: list[Any]) -> None:
    pair = PtyPair()
    started.append(pair)
    sim = simulator(started, inputs=8, serial=pair.device_side)
    rtu = {"type": "rtu", "port": pair.driver_side, "baudrate": 115200, "timeout_s": 0.1}
    run = driver(started, {**rtu, "unit": 1})  # 16 inputs configured, the module has 8
    reason = run.reason()
    assert reason == (f"rtu:{pair.driver_side}: configuration error: unit 1 has no discrete inputs 0-15: "
                      "Modbus exception 2: illegal data address (check first_address, inputs, latch.address)"), reason
    run.keeps_its_pace()
    run.close()
    started.remove(run)
    absent = driver(started, {**rtu, "unit": 9}, inputs=8)
    reason = absent.reason()
    assert reason.startswith(f"rtu:{pair.driver_side} unit 9 stopped answering:"), reason
    absent.keeps_its_pace()
    assert sim.unserved >= 10
