"""Alarms that set things in motion: a panic at the gate raises the bollards (EFO), a fire lowers them,
an alarm nobody acknowledges goes to the roster. Real simulators, real gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db, store
from gateway.records.models import Alarm, AlarmTransition
from simulators.bollard import BollardSimulator
from simulators.camera import CameraSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import TEST_LOGIN, free_port, missing, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

SITE = "school-1"


@pytest.fixture
def camera() -> Iterator[CameraSimulator]:
    simulator = CameraSimulator(fps=10)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def bollard() -> Iterator[BollardSimulator]:
    simulator = BollardSimulator(travel_s=0.5, efo_travel_s=0.3)
    simulator.start()
    yield simulator
    simulator.stop()


def site(tmp_path: Path, sim: ModbusDISimulator, bollard: BollardSimulator, camera: CameraSimulator,
         **extra: Any) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [
            {"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": sim.port},
             "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic"},
                        {"input": 2, "name": "kitchen-fire", "type": "fire"}]},
            {"id": "gate-bollard", "kind": "bollard", "driver": "modbus_bollard", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": bollard.port}, "travel_timeout_s": 3},
            {"id": "gate-cam", "kind": "camera", "driver": "opencv", "url": camera.url, "tamper": None,
             "clip_pre_s": 3, "clip_post_s": 1},
        ],
        "linkage": [
            {"when": {"alarm_type": ["panic"], "zone": ["gate"]},
             "bollards": {"devices": ["gate-bollard"], "command": "efo"}, "cameras": ["gate-cam"], "police": True},
            {"when": {"alarm_type": ["fire"]}, "bollards": {"devices": ["gate-bollard"], "command": "lower"}},
        ],
        # The link itself is tested in test_police_link.py; here only what linkage hands it.
        "police": {"account": "1234", "paths": [{"name": "primary", "host": "127.0.0.1", "port": free_port()}],
                   "zones": {"gate": 3}},
        **extra,
    })


class Watcher:
    """Collects what the rules service publishes for others (police link, cameras, notifications)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = self._on_message
        self.client.username_pw_set(*TEST_LOGIN)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(f"campus/v1/{SITE}/rules/#", 1), (f"campus/v1/{SITE}/bollard/+/state", 1)])
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for topic, body in self.messages if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()


def evidence(cfg: Config) -> list[dict[str, Any]]:
    engine = db.make_engine(cfg.database_url())
    try:
        with db.make_sessions(engine)() as session:
            alarm = session.scalars(select(Alarm).where(Alarm.alarm_type == "panic")).first()
            return store.alarm_views(session, [alarm])[0]["attachments"] if alarm else []
    finally:
        engine.dispose()


def history(cfg: Config, alarm_type: str) -> list[AlarmTransition]:
    engine = db.make_engine(cfg.database_url())
    try:
        with db.make_sessions(engine)() as session:
            alarm = session.scalars(select(Alarm).where(Alarm.alarm_type == alarm_type)).first()
            if alarm is None:
                return []
            return list(session.scalars(select(AlarmTransition).where(AlarmTransition.alarm_id == alarm.id)
                                        .order_by(AlarmTransition.id)))
    finally:
        engine.dispose()


def test_a_panic_at_the_gate_raises_the_bollards_and_calls_police_and_cameras(
        tmp_path: Path, sim: ModbusDISimulator, bollard: BollardSimulator, camera: CameraSimulator) -> None:
    cfg = site(tmp_path, sim, bollard, camera)
    running = Running(cfg)
    assert running.gateway.broker_port
    watcher = Watcher(running.gateway.broker_port)
    try:
        ready = lambda: [m for m in watcher.on("/gate-bollard/state")  # noqa: E731
                         if m.get("online") and m.get("state") == "lowered" and m.get("raise_blocked") is None]
        wait_for(ready, 10, "the bollard driver ready (loops read clear)")
        sim.press(1)
        wait_for(lambda: bollard.coil_writes("efo"), 5, "the EFO command at the bollard PLC")
        wait_for(lambda: bollard.limits()[0], 5, "the bollard up")
        police = wait_for(lambda: watcher.on("/rules/police/alarms"), 5, "the police link's message")[0]
        assert police["contact_id"] == 120 and police["alarm_type"] == "panic" and police["zone_number"] == 3
        snapshot = wait_for(lambda: watcher.on("/rules/snapshot_requests"), 5, "the camera request")[0]
        assert snapshot["camera"] == "gate-cam" and snapshot["pre_s"] == 30
        steps = wait_for(lambda: (n := [s.note for s in history(cfg, "panic") if s.action == "linkage_result"])
                         and len(n) >= 2 and n, 10, "the bollard's and the camera's answers in the alarm's history")
        assert sorted(steps) == ["gate-bollard efo: done", "gate-cam clip: done"]
        snapshot, clip = wait_for(lambda: evidence(cfg), 5, "the snapshot and clip named on the alarm")
        assert snapshot["kind"] == "snapshot" and snapshot["camera"] == "gate-cam"
        shot = tmp_path / "data" / "snapshots" / "gate-cam" / snapshot["ref"][9:17] / f"{snapshot['ref']}.jpg"
        wait_for(shot.is_file, 5, "the alarm's snapshot on disk")
        (clip,) = wait_for(lambda: [e for e in evidence(cfg) if e["kind"] == "clip" and e["state"] == "ready"],
                           10, "the clip finished (1 s after the alarm)")
        assert clip["before"] >= 4, "the clip holds the seconds before the alarm (3 s at 2 frames a second)"
        assert clip["frames"] > clip["before"], "and after it"
        notes = [s.note for s in history(cfg, "panic") if s.action == "linkage"]
        assert notes == ["linkage: 'efo' sent to bollard gate-bollard",
                         "linkage: snapshot and the 30 s before requested from camera gate-cam",
                         "linkage: to the alarm centre (Contact ID 120, zone 3)"]
    finally:
        watcher.close()
        running.stop()


def test_a_fire_alarm_lowers_the_bollards(tmp_path: Path, sim: ModbusDISimulator, camera: CameraSimulator) -> None:
    raised = BollardSimulator(travel_s=0.5, start_raised=True)
    raised.start()
    running = Running(site(tmp_path, sim, raised, camera))
    try:
        wait_for(lambda: raised.limits() == (True, False), 5, "the bollard up at the start")
        sim.press(2)
        wait_for(lambda: raised.limits() == (False, True), 5, "the bollard lowered for the fire brigade")
        assert raised.coil_writes("lower")
    finally:
        running.stop()
        raised.stop()


def test_an_unacknowledged_alarm_goes_to_the_roster_in_turn(tmp_path: Path, sim: ModbusDISimulator,
                                                            camera: CameraSimulator,
                                                            bollard: BollardSimulator) -> None:
    cfg = site(tmp_path, sim, bollard, camera, roster=[{"id": "li", "name": "Li"}, {"id": "wang", "name": "Wang"}],
               escalation={"after_s": {"panic": 1}, "repeat_s": 1}, linkage=[])
    running = Running(cfg)
    assert running.gateway.broker_port
    watcher = Watcher(running.gateway.broker_port)
    try:
        sim.press(1)
        first = wait_for(lambda: watcher.on("/rules/notify/li"), 5, "Li notified after 1 s")[0]
        second = wait_for(lambda: watcher.on("/rules/notify/wang"), 5, "then Wang")[0]
        assert (first["level"], second["level"]) == (1, 2) and first["alarm_id"] == second["alarm_id"]
        notes = [s.note for s in history(cfg, "panic") if s.action == "escalate"]
        assert notes == ["not acknowledged: notified Li (step 1)", "not acknowledged: notified Wang (step 2)"]
        wait_for(lambda: [m for m in watcher.on(f"/rules/alarms/{first['alarm_id']}") if m["escalation_level"] == 2],
                 5, "the console learning the alarm's escalation level")
    finally:
        watcher.close()
        running.stop()


def test_mbpoll_reads_the_bollard_simulator(bollard: BollardSimulator) -> None:
    if not shutil.which("mbpoll"):
        missing("mbpoll is not installed (apt-get install mbpoll)")
    bollard.vehicle_arrives(1)
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(bollard.port), "-a", "1", "-t", "1", "-r", "1", "-c", "3",
                          "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    values = {k: v.strip() for k, v in (line.split(":", 1) for line in out.stdout.splitlines() if line.startswith("["))}
    assert values == {"[1]": "0", "[2]": "1", "[3]": "1"}, "down limit on, vehicle on loop 1"
