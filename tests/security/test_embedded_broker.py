"""The embedded broker: nobody on the box gets in without a part's password, and each part only where the
shipped ACL lets it (issue 15, finding 1: an anonymous client faked a panic and lowered a bollard)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Alarm, IngestedEvent
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, alarm_event
from tests.support import wait_for

SITE = "s1"


def site(tmp_path: Path, sim_port: int) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test"}, "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "box", "kind": "alarm_input", "driver": "modbus_di",
                     "connection": {"host": "127.0.0.1", "port": sim_port, "timeout_s": 0.3},
                     "points": [{"input": 1, "name": "panic-1", "type": "panic"}]}]})


@pytest.fixture
def gateway(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    running = Running(site(tmp_path, sim.port))
    yield running
    running.stop()


class Client:
    """A paho client that records how its CONNECT was answered and what it receives."""

    def __init__(self, port: int, login: tuple[str, str] | None) -> None:
        self.answer: Any = None
        self.answered = threading.Event()
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{id(self)}")
        if login:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.answered.wait(10), "the broker answers the CONNECT"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.answer = reason
        self.answered.set()

    @property
    def accepted(self) -> bool:
        return not self.answer.is_failure

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def recorded(running: Running) -> tuple[set[str], list[Alarm]]:
    engine = db.make_engine(running.gateway.config.database_url())
    with db.make_sessions(engine)() as session:
        ids = set(session.scalars(select(IngestedEvent.id)))
        alarms = list(session.scalars(select(Alarm)))
    engine.dispose()
    return ids, alarms


def test_anonymous_and_wrong_passwords_are_refused(gateway: Running) -> None:
    port = gateway.gateway.broker_port
    assert port
    for login in (None, ("campusgw-drivers", "guess"), ("admin", "admin"), ("campusgw-reader", "")):
        client = Client(port, login)
        try:
            assert not client.accepted, f"{login} must not get in"
        finally:
            client.close()
    user, password = gateway.gateway.mqtt_login("reader")
    reader = Client(port, (user, password))
    try:
        assert reader.accepted, "the reader's password from the secrets folder works"
    finally:
        reader.close()
    secret = Path(gateway.gateway.config.gateway.data_dir) / "secrets" / "broker-drivers.password"
    assert secret.stat().st_mode & 0o077 == 0, "the passwords are readable by the gateway's user only"


def test_a_part_cannot_fake_what_is_not_its_own(gateway: Running, sim: ModbusDISimulator) -> None:
    """The reader and the console cannot publish a device's panic; the drivers cannot publish an alarm view
    nor a bollard command. The real press that follows is recorded, the forgeries are not."""
    gw = gateway.gateway
    assert gw.broker_port
    forged: list[str] = []
    clients = {part: Client(gw.broker_port, gw.mqtt_login(part)) for part in ("reader", "console", "drivers")}
    watcher = clients["reader"]
    watcher.client.subscribe(f"campus/v1/{SITE}/#", qos=1)
    try:
        assert all(c.accepted for c in clients.values())
        assert watcher.subscribed.wait(5)
        for part in ("reader", "console"):
            topic, payload, event_id = alarm_event(SITE, "box", "panic-1", 10_000 + len(forged))
            clients[part].publish(topic, payload)
            forged.append(event_id)
        clients["drivers"].publish(f"campus/v1/{SITE}/rules/alarms/777777", b'{"id":777777,"state":"closed"}')
        clients["drivers"].publish(f"campus/v1/{SITE}/bollard/gate/cmd/lower",
                                   json.dumps({"correlation_id": "x", "issued_by": "admin"}).encode())
        clients["reader"].publish(f"campus/v1/{SITE}/bollard/gate/cmd/lower",
                                  json.dumps({"correlation_id": "y", "issued_by": "admin"}).encode())
        sim.press(1)
        wait_for(lambda: recorded(gateway)[1], 10, "the real press recorded")
        ids, alarms = recorded(gateway)
        assert not set(forged) & ids, "no forged event is recorded"
        assert len(alarms) == 1 and alarms[0].occurrences == 1, "one alarm, from the real press"
        topics = {m.topic for m in watcher.messages}
        assert f"campus/v1/{SITE}/rules/alarms/777777" not in topics, "the forged alarm view went nowhere"
        assert not any("/cmd/lower" in t for t in topics), "the forged commands went nowhere"
    finally:
        for client in clients.values():
            client.close()
