"""One-key alarm inputs over Modbus TCP and RTU against the simulator, through the whole gateway to the records."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from sqlalchemy import select

from gateway.bus import Bus
from gateway.commands import CommandClient
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Alarm, Device, IngestedEvent
from simulators.modbus_di import ModbusDISimulator
from simulators.pty_pair import PtyPair
from tests.integration.helpers import Running
from tests.support import TEST_LOGIN, missing, wait_for

SITE = "school-1"
POINTS = [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "门卫室"},
          {"input": 2, "name": "box-tamper", "type": "tamper"}]


def config(tmp_path: Path, devices: list[dict[str, Any]]) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": devices,
    })


def di_device(device_id: str, connection: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "kind": "alarm_input", "driver": "modbus_di", "connection": connection,
            "poll_ms": 50, "offline_after": 2, "points": POINTS, **extra}


class Records:
    def __init__(self, cfg: Config) -> None:
        self.engine = db.make_engine(cfg.database_url())
        self.sessions = db.make_sessions(self.engine)

    def alarms(self, alarm_type: str | None = None, device: str | None = None) -> list[Alarm]:
        with self.sessions() as session:
            query = select(Alarm).order_by(Alarm.id)
            if alarm_type:
                query = query.where(Alarm.alarm_type == alarm_type)
            if device:
                query = query.where(Alarm.device_id == device)
            return list(session.scalars(query))

    def events(self, event_type: str, device: str | None = None) -> list[IngestedEvent]:
        with self.sessions() as session:
            query = select(IngestedEvent).where(IngestedEvent.type == event_type).order_by(IngestedEvent.seq)
            if device:
                query = query.where(IngestedEvent.device_id == device)
            return list(session.scalars(query))

    def online(self, device: str) -> bool | None:
        with self.sessions() as session:
            row = session.get(Device, device)
            return row.online if row else None


@pytest.fixture
def gateway_for() -> Iterator[Any]:
    started: list[tuple[Running, Records]] = []

    def start(cfg: Config) -> tuple[Running, Records]:
        running = Running(cfg)
        started.append((running, Records(cfg)))
        return started[-1]

    yield start
    for running, records in started:
        running.stop()
        records.engine.dispose()


def test_a_100ms_press_is_caught_at_a_50ms_poll_and_the_alarm_latches(tmp_path: Path, sim: ModbusDISimulator,
                                                                       gateway_for: Any) -> None:
    _, records = gateway_for(config(tmp_path, [di_device("box", {"host": "127.0.0.1", "port": sim.port})]))
    wait_for(lambda: records.online("box"), 10, "the module online")
    for n in range(1, 4):  # pressed three times: one alarm, counted three times
        sim.press_for(1, 0.1)
        wait_for(lambda n=n: len(records.events("campus.alarm_input.restored")) == n, 5, f"press {n} and release")
    assert len(records.events("campus.alarm_input.triggered")) == 3, "every 100 ms press is caught"
    alarm = wait_for(lambda: records.alarms("panic"), 5, "the panic alarm")[0]
    assert len(records.alarms("panic")) == 1
    assert alarm.state == "active_unack", "released, but a panic alarm stays until a person resets it"
    assert alarm.occurrences == 3 and not alarm.condition_active


def test_a_press_shorter_than_the_poll_is_caught_by_the_latch(tmp_path: Path, gateway_for: Any) -> None:
    latching = ModbusDISimulator(latch_address=32)
    latching.start()
    try:
        cfg = config(tmp_path, [di_device("box", {"host": "127.0.0.1", "port": latching.port}, latch={"address": 32},
                                          poll_ms=200)])
        _, records = gateway_for(cfg)
        wait_for(lambda: records.online("box"), 10, "the module online")
        latching.press_for(1, 0.01)  # 10 ms against a 200 ms poll
        wait_for(lambda: records.alarms("panic"), 5, "the alarm from a 10 ms press")
        wait_for(lambda: not any(latching.latched()), 5, "the driver to clear the latch")
    finally:
        latching.stop()


def test_module_outage_gives_offline_and_a_fault_alarm_and_latched_presses_are_not_lost(
        tmp_path: Path, gateway_for: Any) -> None:
    latching = ModbusDISimulator(latch_address=32)
    latching.start()
    try:
        cfg = config(tmp_path, [di_device("box", {"host": "127.0.0.1", "port": latching.port, "timeout_s": 0.2},
                                          latch={"address": 32})])
        _, records = gateway_for(cfg)
        wait_for(lambda: records.online("box"), 10, "the module online")
        latching.unplug()
        wait_for(lambda: records.online("box") is False, 5, "the module offline in the records")
        offline = wait_for(lambda: records.alarms("device_offline"), 5, "the offline alarm")[0]
        assert offline.state == "active_unack"
        latching.press_for(1, 0.05)  # pressed and released while nobody could poll
        latching.press_for(2, 0.05)
        assert not records.alarms("panic")
        latching.plug_in()
        wait_for(lambda: records.online("box"), 5, "back online within about a second")
        panic = wait_for(lambda: records.alarms("panic"), 5, "the press made during the outage")[0]
        assert panic.state == "active_unack"
        wait_for(lambda: records.alarms("tamper"), 5, "the other input pressed during the outage")
        wait_for(lambda: not any(latching.latched()), 5, "every latch cleared once its press is recorded")
        # A second outage, the same buttons again: found again (latches cleared one request at a time).
        latching.unplug()
        wait_for(lambda: records.online("box") is False, 5, "offline again")
        latching.press_for(1, 0.05)
        latching.press_for(2, 0.05)
        latching.plug_in()
        wait_for(lambda: len(records.events("campus.alarm_input.triggered")) == 4, 5,
                 "both presses of the second outage")
        found = records.events("campus.alarm_input.triggered")[0]
        assert found.data.get("found_after_outage") is True, "the alarm notes it was found after the outage"
        assert records.alarms("device_offline")[0].state == "cleared_unack"
    finally:
        latching.stop()


def test_rtu_modules_on_one_line_garbage_and_a_silent_module(tmp_path: Path, gateway_for: Any) -> None:
    pair = PtyPair()
    line = ModbusDISimulator(units=[1, 2], serial=pair.device_side)
    line.start()
    try:
        rtu = {"type": "rtu", "port": pair.driver_side, "baudrate": 115200, "timeout_s": 0.15}
        cfg = config(tmp_path, [di_device("box-1", {**rtu, "unit": 1}), di_device("box-2", {**rtu, "unit": 2}),
                                di_device("box-9", {**rtu, "unit": 9})])  # unit 9 is not on the line
        running, records = gateway_for(cfg)
        wait_for(lambda: records.online("box-1") and records.online("box-2"), 10, "both RTU modules online")
        wait_for(lambda: records.online("box-9") is False, 10, "the silent module offline")
        line.press(1, unit=2)
        alarm = wait_for(lambda: records.alarms("panic"), 5, "the alarm from unit 2")[0]
        assert alarm.device_id == "box-2"
        for _ in range(5):
            pair.inject(b"\x02\xff\x00garbage\x13\x37" * 3)
        line.press(2, unit=1)
        wait_for(lambda: records.alarms("tamper", device="box-1"), 5, "an alarm after the garbage")
        assert records.online("box-1") and records.online("box-2"), "garbage does not take the modules offline"
        line.unit_fails_with(1, ExcCodes.DEVICE_FAILURE)  # one module answers only with Modbus exceptions
        wait_for(lambda: records.online("box-1") is False, 5, "the failing module offline")
        line.press(2, unit=2)
        wait_for(lambda: records.alarms("tamper", device="box-2"), 5, "the other module on the line still reporting")
        line.unit_fails_with(1, None)
        wait_for(lambda: records.online("box-1"), 5, "the failing module back")
        assert running.gateway.host is not None
        health = next(v for k, v in running.gateway.host.health().items() if k.startswith("modbus_di.rtu:"))
        assert health["restarts"] == 0
        assert health["modules"]["box-9"]["errors"] > 0
    finally:
        line.stop()
        pair.close()


def test_test_mode_marks_events_and_alarms_as_tests(tmp_path: Path, sim: ModbusDISimulator, gateway_for: Any) -> None:
    cfg = config(tmp_path, [di_device("box", {"host": "127.0.0.1", "port": sim.port})])
    running, records = gateway_for(cfg)
    wait_for(lambda: records.online("box"), 10, "the module online")
    bus = Bus(cfg.broker, "tester", port=running.gateway.broker_port, name="test", credentials=TEST_LOGIN)
    commands = CommandClient(bus, SITE, cfg.gateway.command_key())
    bus.start()
    try:
        assert bus.wait_connected(10)
        result = commands.send("alarm_input", "box", "set_test_mode", {"on": True, "points": ["gatehouse-panic"]},
                               issued_by="supervisor-wang")
        assert result["status"] == "ok" and result["data"]["test_points"] == ["gatehouse-panic"]
        refused = commands.send("alarm_input", "box", "set_test_mode", {"points": ["nope"]}, issued_by="x")
        assert refused["status"] == "error" and "unknown points: nope" in refused["detail"]
        sim.press(1)
        sim.press(2)
        wait_for(lambda: len(records.alarms()) == 2, 5, "both alarms")
    finally:
        bus.stop()
    by_type = {a.alarm_type: a for a in records.alarms()}
    assert by_type["panic"].test and not by_type["tamper"].test, "only the point under test is a test"


def test_mbpoll_reads_the_simulator(sim: ModbusDISimulator) -> None:
    """A standard third-party Modbus master (Debian's mbpoll) talks to the simulator."""
    if not shutil.which("mbpoll"):
        missing("mbpoll is not installed (apt-get install mbpoll)")
    sim.press(3)
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(sim.port), "-a", "1", "-t", "1", "-r", "1", "-c", "4",
                          "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    values = dict(line.strip().split(":", 1) for line in out.stdout.splitlines() if line.startswith("["))
    assert {k: v.strip() for k, v in values.items()} == {"[1]": "0", "[2]": "0", "[3]": "1", "[4]": "0"}
