"""An alarm sounds the gatehouse's siren and strobe (声光报警): linkage through the whole gateway to a simulated
Modbus relay module, a guard silencing the siren from the console, the reset ending the strobe, and a button
test that sounds nothing. What reached the module is checked, with its times."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from gateway import topics
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Alarm, AlarmTransition, AuditEntry
from simulators.modbus_di import ModbusDISimulator
from simulators.relay_outputs import RelayOutputSimulator
from tests.integration.helpers import Running, logged_in
from tests.support import ROOT, TEST_LOGIN, MosquittoBroker, broker_section, missing, wait_for

SITE = "school-1"
SIREN, STROBE, BELL = 0, 1, 2


@pytest.fixture
def relays() -> Iterator[RelayOutputSimulator]:
    module = RelayOutputSimulator()
    module.start()
    yield module
    module.stop()


def site(tmp_path: Path, sim: ModbusDISimulator, relays: RelayOutputSimulator) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [
            {"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": sim.port}, "poll_ms": 50,
             "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic"},
                        {"input": 3, "name": "test-button", "type": "panic", "test_mode": True}]},
            {"id": "gatehouse-relays", "kind": "output", "driver": "modbus_do", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": relays.port}, "poll_ms": 100,
             "relays": [{"name": "siren", "coil": SIREN, "role": "siren"},
                        {"name": "strobe", "coil": STROBE, "role": "strobe"},
                        {"name": "bell", "coil": BELL, "role": "other"}]},
        ],
        "linkage": [{"when": {"alarm_type": ["panic"], "zone": ["gate"]}, "outputs": [
            {"device": "gatehouse-relays", "relays": ["siren", "strobe"], "mode": "until_reset"},
            {"device": "gatehouse-relays", "relays": ["bell"], "mode": "pulse", "pulse_s": 0.5}]}],
    })


def panic(cfg: Config) -> Alarm | None:
    engine = db.make_engine(cfg.database_url())
    try:
        with db.make_sessions(engine)() as session:
            return session.scalars(select(Alarm).where(Alarm.alarm_type == "panic", Alarm.test.is_(False))).first()
    finally:
        engine.dispose()


def rows(cfg: Config, model: Any, *where: Any) -> list[Any]:
    engine = db.make_engine(cfg.database_url())
    try:
        with db.make_sessions(engine)() as session:
            return list(session.scalars(select(model).where(*where)))
    finally:
        engine.dispose()


def test_a_panic_sounds_the_siren_and_strobe_a_guard_silences_the_siren_and_the_reset_ends_it(
        tmp_path: Path, sim: ModbusDISimulator, relays: RelayOutputSimulator) -> None:
    cfg = site(tmp_path, sim, relays)
    running = Running(cfg)
    try:
        wait_for(lambda: relays.watchdog_s > 0, 10, "the relay module connected")
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        pressed = sim.press(1)
        wait_for(lambda: relays.relay(SIREN) and relays.relay(STROBE), 2, "the siren and the strobe")
        for relay in (SIREN, STROBE):
            assert relays.switched(relay, True)[0].at - pressed < 1.0, "within 1 s of the press"
        wait_for(lambda: relays.switched(BELL, False), 3, "the bell's pulse over")
        assert relays.switched(BELL, True) and relays.switched(BELL, False)[0].by == "master"

        alarm = wait_for(lambda: panic(cfg), 5, "the panic recorded")
        url = running.gateway.console_url
        assert url and running.gateway.first_admin_password
        client = logged_in(url, "admin", running.gateway.first_admin_password)
        headers = {"x-csrf-token": client.csrf}  # type: ignore[attr-defined]
        silenced = client.post(f"/api/alarms/{alarm.id}/silence", headers=headers)
        assert silenced.status_code == 200 and silenced.json()["silenced_by"] == "admin"
        assert silenced.json()["state"] == "active_unack", "silenced, not acknowledged"
        wait_for(lambda: not relays.relay(SIREN), 2, "the siren silenced")
        assert relays.relay(STROBE), "the strobe keeps flashing until the reset"
        shown = 'data-relay="siren" data-on="off"', 'data-relay="strobe" data-on="on"'
        wait_for(lambda: all(s in client.get("/devices").text for s in shown), 5, "the outputs on the devices page")
        again = client.post(f"/api/alarms/{alarm.id}/silence", headers=headers)
        assert again.status_code == 409
        assert [e.result for e in rows(cfg, AuditEntry, AuditEntry.action == "alarm.silence")] == ["ok", "refused"]

        for action in ("ack", "reset"):
            assert client.post(f"/api/alarms/{alarm.id}/{action}", headers=headers, json={}).status_code == 200
        wait_for(lambda: not relays.relay(STROBE), 2, "the strobe off at the reset")
        assert not relays.relay(SIREN)
        said = [t.said["msg"] for t in rows(cfg, AlarmTransition, AlarmTransition.alarm_id == alarm.id)
                if t.said]
        assert "linkage: {relays} of {device} on until the alarm is reset" in said
        assert "linkage: {relay} of {device} on for {seconds} s" in said
        assert [t.actor for t in rows(cfg, AlarmTransition, AlarmTransition.action == "silence")] == ["admin"]
    finally:
        running.stop()


def test_a_button_test_sounds_nothing(tmp_path: Path, sim: ModbusDISimulator, relays: RelayOutputSimulator) -> None:
    cfg = site(tmp_path, sim, relays)
    running = Running(cfg)
    try:
        wait_for(lambda: relays.watchdog_s > 0, 10, "the relay module connected")
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        sim.press(3)
        wait_for(lambda: rows(cfg, Alarm, Alarm.test.is_(True)), 5, "the test alarm recorded")
        requests = relays.requests
        wait_for(lambda: relays.requests >= requests + 10, 5, "a second of the module's polls")
        assert not any(c.on for c in relays.changes), "no relay switched on for a test"
    finally:
        running.stop()


def test_the_outputs_follow_a_rules_restart(tmp_path: Path, sim: ModbusDISimulator,
                                            relays: RelayOutputSimulator) -> None:
    """The siren of a panic still open sounds after the gateway restarts (the relays were off at its stop)."""
    cfg = site(tmp_path, sim, relays)
    running = Running(cfg)
    try:
        wait_for(lambda: relays.watchdog_s > 0, 10, "the relay module connected")
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        sim.press(1)
        wait_for(lambda: relays.relay(SIREN), 2, "the siren")
    finally:
        running.stop()
    assert not relays.relay(SIREN), "off at the stop"
    started = time.time()
    running = Running(cfg)
    try:
        # 20 s, not 10: a fresh-clone run once took longer; why is not found yet (the session note of 2026-12-06).
        wait_for(lambda: relays.relay(SIREN) and relays.relay(STROBE), 20, "sounding again for the open panic")
        assert relays.switched(SIREN, True)[-1].at > started
    finally:
        running.stop()


def test_alarm_views_do_not_stall_the_rules_service_on_mosquitto(tmp_path: Path, sim: ModbusDISimulator,
                                                                  relays: RelayOutputSimulator) -> None:
    """The rules service acknowledges by hand; the alarm views it follows for the outputs must be acknowledged
    too, or Mosquitto stops delivering to it once its in-flight window is full, events and all."""
    broker = MosquittoBroker(tmp_path / "mosquitto")
    if broker.binary is None:
        missing("mosquitto is not installed")
    (tmp_path / "mosquitto").mkdir()
    broker.start()
    try:
        cfg = validate_config({**site(tmp_path, sim, relays).model_dump(mode="json", exclude_unset=True),
                               "broker": broker_section(broker.port)})
        running = Running(cfg)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="console-like")
        client.username_pw_set(*TEST_LOGIN)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            wait_for(lambda: relays.watchdog_s > 0, 10, "the relay module connected")
            wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
            for n in range(300):  # views announced by a console: far more than any in-flight window
                client.publish(topics.alarm(SITE, 9000 + n), json.dumps({"id": 9000 + n}), qos=1).wait_for_publish(5)
            sim.press(1)
            wait_for(lambda: relays.relay(SIREN), 5, "the siren for a press after 300 alarm views")
        finally:
            client.loop_stop()
            client.disconnect()
            running.stop()
    finally:
        broker.stop()


def test_a_gateway_killed_while_the_siren_sounds_leaves_it_to_the_modules_watchdog(
        tmp_path: Path, sim: ModbusDISimulator, relays: RelayOutputSimulator) -> None:
    """SIGKILL: nothing in the gateway can switch the siren off; the module's watchdog (armed by the driver at
    connect, 2 s here) drops every relay once the gateway has gone quiet."""
    import signal
    import subprocess
    import sys

    import yaml

    site_file = tmp_path / "site.yaml"
    body = site(tmp_path, sim, relays).model_dump(mode="json", exclude_unset=True)
    body["devices"][1]["watchdog_s"] = 2
    body["console"] = {"port": 0}  # never a fixed port
    site_file.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(site_file)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: relays.watchdog_s == 2, 30, "the relay module connected, its watchdog armed")
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        sim.press(1)
        wait_for(lambda: relays.relay(SIREN), 5, "the siren")
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait(10)
        wait_for(lambda: not relays.relay(SIREN), 5, "the watchdog dropping the siren")
        dropped = relays.switched(SIREN, False)[-1]
        assert dropped.by == "watchdog" and dropped.at - killed <= 2 + 1.0
        assert not any(relays.relays()), "every relay dropped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
