"""Home Assistant discovery through a real broker: what Home Assistant would find on connecting (retained
configs), and that the state an entity reads turns ON when the button is pressed."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from jinja2 import Environment

from gateway.config_file import validate_config
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import TEST_LOGIN, MosquittoBroker, wait_for


class Retained:
    """A client that, like Home Assistant, subscribes and keeps the last payload per topic."""

    def __init__(self, port: int, *filters: str) -> None:
        self.last: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-assistant")
        self.client.on_connect = lambda c, *a: [c.subscribe(f, qos=1) for f in filters]
        self.client.on_message = self._on_message
        self.client.username_pw_set(*TEST_LOGIN)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.last[message.topic] = json.loads(message.payload) if message.payload else None

    def get(self, topic: str) -> Any:
        with self._lock:
            return self.last.get(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_home_assistant_finds_the_devices_and_reads_a_press(tmp_path: Path, sim: ModbusDISimulator,
                                                            mosquitto: MosquittoBroker) -> None:
    config = validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": f"mqtt://127.0.0.1:{mosquitto.port}"},
        "database": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
        "home_assistant": {"discovery": True},
        "devices": [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "poll_ms": 20,
                     "connection": {"host": "127.0.0.1", "port": sim.port},
                     "points": [{"input": 1, "name": "panic", "type": "panic", "place": "门卫室"}]}],
    })
    running = Running(config, ("drivers",))
    try:
        ha = Retained(mosquitto.port, "homeassistant/#", "campus/v1/#")  # joins after the gateway: retained
        topic = "homeassistant/binary_sensor/campusgw_school-1_gate-box/panic/config"
        entity = wait_for(lambda: ha.get(topic), what="the panic button's discovery config")
        assert entity["device_class"] == "safety" and entity["unique_id"] == "campusgw_school-1_gate-box_panic"
        template = Environment().from_string(entity["value_template"])
        wait_for(lambda: all((ha.get(a["topic"]) or {}).get("state") == "online" for a in entity["availability"]),
                 what="the entity available (device and gateway online)")
        sim.press(1)
        wait_for(lambda: template.render(value_json=ha.get(entity["state_topic"]) or {"points": {"panic": 0}})
                 == "ON", what="the entity ON after the press")
        sim.release(1)
        wait_for(lambda: template.render(value_json=ha.get(entity["state_topic"])) == "OFF", what="OFF again")
        ha.close()
    finally:
        running.stop()
