"""Home Assistant discovery: every message follows Home Assistant's documented schema for its entity kind,
and every template, rendered as Home Assistant renders it (Jinja2, `value_json`), reads our real payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from jinja2 import Environment

from gateway.config_file import parse_config
from gateway.homeassistant import discovery_messages

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {kind: fastjsonschema.compile(json.loads((Path(__file__).parent / "homeassistant" / f"{kind}.json")
                                                   .read_text()))
           for kind in ("binary_sensor", "sensor")}
TOPIC = re.compile(r"^homeassistant/(binary_sensor|sensor)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")


def example(discovery: bool = True) -> Any:
    text = (ROOT / "config" / "example-site.yaml").read_text(encoding="utf-8")
    return parse_config(text.replace("discovery: false", f"discovery: {str(discovery).lower()}"), "example.yaml")


def render(template: str, payload: dict[str, Any]) -> str:
    return Environment().from_string(template).render(value_json=payload)


def test_every_message_follows_home_assistants_schema_for_its_kind() -> None:
    messages = discovery_messages(example())
    kinds = set()
    for topic, body in messages:
        match = TOPIC.match(topic)
        assert match, f"{topic} is not <prefix>/<component>/<node_id>/<object_id>/config"
        kinds.add(match[1])
        SCHEMAS[match[1]](body)  # raises JsonSchemaException naming the key
    assert kinds == {"binary_sensor", "sensor"}
    unique = [b["unique_id"] for _, b in messages]
    assert len(unique) == len(set(unique)), "unique_id is unique"


def test_what_the_example_site_shows_in_home_assistant() -> None:
    messages = dict(discovery_messages(example()))
    panic = messages["homeassistant/binary_sensor/campusgw_example-school_gate-alarm-box/gatehouse-panic/config"]
    assert panic["device_class"] == "safety" and panic["name"] == "门卫室 一键报警"
    assert panic["state_topic"] == "campus/v1/example-school/alarm_input/gate-alarm-box/state"
    assert [a["topic"] for a in panic["availability"]] == [
        "campus/v1/example-school/alarm_input/gate-alarm-box/availability",
        "campus/v1/example-school/gateway/gw1/availability"] and panic["availability_mode"] == "all"
    assert panic["device"]["suggested_area"] == "正门 Main gate"
    assert panic["device"]["via_device"] == "campusgw_example-school_gw1"
    tamper = messages["homeassistant/binary_sensor/campusgw_example-school_gate-alarm-box/box-tamper/config"]
    assert tamper["device_class"] == "tamper"
    position = messages["homeassistant/sensor/campusgw_example-school_gate-bollard/position/config"]
    assert position["state_topic"].endswith("/bollard/gate-bollard/state")
    assert not [b for b in messages.values() if "command_topic" in b], "Home Assistant cannot move anything"


def test_templates_read_the_gateways_own_payloads() -> None:
    messages = dict(discovery_messages(example()))
    state = {"points": {"gatehouse-panic": True, "gatehouse-duress": False, "box-tamper": False},
             "test_points": []}  # what modbus_di publishes as the device's retained state
    panic = messages["homeassistant/binary_sensor/campusgw_example-school_gate-alarm-box/gatehouse-panic/config"]
    duress = messages["homeassistant/binary_sensor/campusgw_example-school_gate-alarm-box/gatehouse-duress/config"]
    assert render(panic["value_template"], state) == "ON" and render(duress["value_template"], state) == "OFF"
    for availability in panic["availability"]:
        assert render(availability["value_template"], {"state": "offline", "ts": 1.8e9}) == "offline"
    online = messages["homeassistant/binary_sensor/campusgw_example-school_gate-alarm-box/connectivity/config"]
    assert render(online["value_template"], {"state": "online", "ts": 1.8e9}) == online["payload_on"]
    bollard = {"state": "raised", "fault": None, "online": True}
    position = messages["homeassistant/sensor/campusgw_example-school_gate-bollard/position/config"]
    fault = messages["homeassistant/binary_sensor/campusgw_example-school_gate-bollard/fault/config"]
    assert render(position["value_template"], bollard) == "raised"
    assert render(fault["value_template"], bollard) == "OFF"
    assert render(fault["value_template"], {**bollard, "fault": "travel timeout"}) == "ON"
    reader = {"online": True, "address": 1, "port": "/dev/ttyUSB0", "secure": True, "direction": "entry",
              "tamper": True, "power_failure": None}  # what the OSDP driver publishes
    tamper = messages["homeassistant/binary_sensor/campusgw_example-school_gate-reader-in/tamper/config"]
    power = messages["homeassistant/binary_sensor/campusgw_example-school_gate-reader-in/power/config"]
    assert (render(tamper["value_template"], reader), render(power["value_template"], reader)) == ("ON", "OFF")


@pytest.mark.parametrize("bad", [{"unique_id": 5}, {"device_clas": "door"}, {"availability_topic": "x/y"}])
def test_the_schema_would_catch_a_mistake(bad: dict[str, Any]) -> None:
    _, body = discovery_messages(example())[1]
    with pytest.raises(fastjsonschema.JsonSchemaException):
        SCHEMAS["binary_sensor"]({**body, **bad})


def test_discovery_is_off_by_default() -> None:
    assert example(discovery=False).home_assistant.discovery is False
    assert parse_config("site: {id: s, name: S}\n", "min.yaml").home_assistant.discovery is False
