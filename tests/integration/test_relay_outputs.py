"""Relay outputs end to end: the Modbus DO simulator, the driver in a Gateway, the embedded broker, SQLite.

What reached the simulated module is checked, not what the driver says: a siren on means relay 0 on in the
module, with the time it switched.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.bus import Bus
from gateway.commands import CommandClient
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Device, IngestedEvent
from simulators.relay_outputs import RelayOutputSimulator
from tests.integration.helpers import Running
from tests.support import broker_config, missing, wait_for

SITE = "school-1"
SIREN, STROBE, LOCK = 0, 1, 4


def site(tmp_path: Path, port: int, **module: Any) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "gatehouse-relays", "kind": "output", "driver": "modbus_do",
                     "connection": {"host": "127.0.0.1", "port": port}, "poll_ms": 100, "watchdog_s": 2,
                     "relays": [{"name": "siren", "coil": SIREN, "role": "siren"},
                                {"name": "strobe", "coil": STROBE, "role": "strobe"},
                                {"name": "gate-lock", "coil": LOCK, "role": "lock"}], **module}],
    })


@pytest.fixture
def module() -> Iterator[RelayOutputSimulator]:
    sim = RelayOutputSimulator()
    sim.start()
    yield sim
    sim.stop()


class Commands:
    def __init__(self, running: Running) -> None:
        self.bus = Bus(broker_config(running.gateway.broker_port), "installer", name="test")
        self.client = CommandClient(self.bus, SITE, running.gateway.config.gateway.command_key())
        self.bus.start()
        assert self.bus.wait_connected(10)

    def send(self, name: str, args: dict[str, Any], by: str = "guard-wang") -> dict[str, Any]:
        return dict(self.client.send("output", "gatehouse-relays", name, args, issued_by=by, timeout=5))

    def close(self) -> None:
        self.bus.stop()


def events(config: Config) -> list[dict[str, Any]]:
    sessions = db.make_sessions(db.make_engine(config.database_url()))
    with sessions() as session:
        rows = session.scalars(select(IngestedEvent).where(IngestedEvent.type == "campus.output.changed")
                               .order_by(IngestedEvent.device_time)).all()
        return [dict(r.data) for r in rows]


def online(config: Config) -> bool | None:
    sessions = db.make_sessions(db.make_engine(config.database_url()))
    with sessions() as session:
        device = session.get(Device, "gatehouse-relays")
        return device.online if device else None


def test_set_and_pulse_a_relay_with_who_asked(tmp_path: Path, module: RelayOutputSimulator) -> None:
    config = site(tmp_path, module.port)
    running = Running(config)
    commands: Commands | None = None
    try:
        wait_for(lambda: online(config) is True, 10, "the module online")
        assert module.watchdog_s == 2, "the module's watchdog armed at connect"
        commands = Commands(running)
        asked = time.time()
        result = commands.send("set", {"relay": "siren", "on": True, "reason": "drill"})
        assert result["status"] == "ok"
        assert module.relay(SIREN) and module.switched(SIREN, True)[0].at - asked < 0.5
        result = commands.send("set", {"relay": "strobe", "on": True, "for_s": 0.5})
        assert result["status"] == "ok" and module.relay(STROBE)
        wait_for(lambda: not module.relay(STROBE), 2, "the strobe's pulse over")
        pulse = module.switched(STROBE, False)[0].at - module.switched(STROBE, True)[0].at
        assert 0.4 <= pulse <= 0.5 + 0.3, f"pulsed {pulse:.2f} s for 0.5 s (100 ms polls)"
        assert module.relay(SIREN), "the siren stays on"
        refused = commands.send("set", {"relay": "bell", "on": True})
        assert refused["status"] != "ok" and "no relay 'bell'" in refused["detail"]
        commands.send("all_off", {"reason": "drill over"})
        assert module.relays() == [False] * 16
        wait_for(lambda: len([e for e in events(config) if e["relay"] == "siren"]) == 2, 5, "on and off")
        found = [e for e in events(config) if e["relay"] == "siren"]
        assert [(e["on"], e["issued_by"], e["reason"]) for e in found] == [
            (True, "guard-wang", "drill"), (False, "guard-wang", "drill over")]
    finally:
        if commands:
            commands.close()
        running.stop()


def test_the_gateways_stop_leaves_every_relay_off(tmp_path: Path, module: RelayOutputSimulator) -> None:
    config = site(tmp_path, module.port)
    running = Running(config)
    try:
        wait_for(lambda: online(config) is True, 10, "the module online")
        commands = Commands(running)
        commands.send("set", {"relay": "gate-lock", "on": True})
        commands.close()
        assert module.relay(LOCK)
    finally:
        running.stop()
    assert module.relays() == [False] * 16, "the safe state at the stop"
    assert module.switched(LOCK, False)[-1].by == "master", "switched off by the gateway, not by the watchdog"


def test_a_relay_found_otherwise_is_written_again_and_counted(tmp_path: Path, module: RelayOutputSimulator) -> None:
    config = site(tmp_path, module.port)
    running = Running(config)
    try:
        wait_for(lambda: online(config) is True, 10, "the module online")
        commands = Commands(running)
        commands.send("set", {"relay": "strobe", "on": True})
        commands.close()
        module._set(STROBE, [False], "a power blip")  # the module lost it
        wait_for(lambda: module.relay(STROBE), 2, "the strobe written again")
        host = running.gateway.host
        assert host is not None
        assert host.health()["modbus_do.gatehouse-relays"]["rewrites"] >= 1
    finally:
        running.stop()


def test_an_unplugged_module_refuses_commands_and_gets_its_relays_back(tmp_path: Path,
                                                                     module: RelayOutputSimulator) -> None:
    config = site(tmp_path, module.port)
    running = Running(config)
    try:
        wait_for(lambda: online(config) is True, 10, "the module online")
        commands = Commands(running)
        commands.send("set", {"relay": "siren", "on": True})
        module.unplug()
        wait_for(lambda: online(config) is False, 5, "the module offline")
        refused = commands.send("set", {"relay": "strobe", "on": True})
        assert refused["status"] != "ok" and "offline" in refused["detail"]
        module._set(SIREN, [False], "restarted")  # the module restarted with its relays off
        module.plug_in()
        wait_for(lambda: online(config) is True, 5, "back online")
        wait_for(lambda: module.relay(SIREN), 2, "the siren of the open alarm sounding again")
        assert not module.relay(STROBE), "a refused command did nothing"
        commands.close()
    finally:
        running.stop()


def mbpoll(port: int, *args: str) -> dict[str, str]:
    """One run of mbpoll (Debian's Modbus master) against the module on `port`, unit 1, coils (-t 0, references
    1-based); the values it printed by reference ("[1]" -> "1")."""
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-t", "0", *args],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    return {k: v.strip() for k, v in (line.split(":", 1) for line in out.stdout.splitlines() if line.startswith("["))}


def test_mbpoll_reads_and_writes_the_relay_simulators_coils(tmp_path: Path, module: RelayOutputSimulator) -> None:
    """mbpoll, a Modbus master apart from pymodbus, reads the siren the gateway switched on and writes coils the
    simulator reports: one the gateway does not manage stays as written, a managed one the gateway writes back."""
    if not shutil.which("mbpoll"):
        missing("mbpoll is not installed (apt-get install mbpoll)")
    config = site(tmp_path, module.port)
    running = Running(config)
    try:
        wait_for(lambda: online(config) is True, 10, "the module online")
        commands = Commands(running)
        assert commands.send("set", {"relay": "siren", "on": True})["status"] == "ok"
        commands.close()
        assert mbpoll(module.port, "-r", "1", "-c", "5", "-1", "127.0.0.1") == {
            "[1]": "1", "[2]": "0", "[3]": "0", "[4]": "0", "[5]": "0"}, "coil 0 (the siren) on, the rest off"

        written = time.time()
        mbpoll(module.port, "-r", "8", "127.0.0.1", "1")  # coil 7: no relay of the gateway's
        [change] = module.switched(7, True)
        assert module.relay(7) and change.by == "master" and change.at >= written
        mbpoll(module.port, "-r", "2", "127.0.0.1", "1")  # coil 1, the strobe, which the gateway wants off
        assert module.switched(STROBE, True), "the simulator took mbpoll's write"
        wait_for(lambda: module.switched(STROBE, False), 2, "the strobe written off again by the gateway")
        host = running.gateway.host
        assert host is not None and host.health()["modbus_do.gatehouse-relays"]["rewrites"] >= 1
        requests = module.requests
        wait_for(lambda: module.requests >= requests + 5, 5, "half a second of the gateway's polls")
        assert module.relay(7) and module.relay(SIREN) and not module.relay(STROBE)
        assert mbpoll(module.port, "-r", "1", "-c", "8", "-1", "127.0.0.1")["[8]"] == "1"
    finally:
        running.stop()
