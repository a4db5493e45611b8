"""Rising bollards (anti-ramming) on a Modbus TCP PLC, with the vehicle-loop interlock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.bollard.schema import BollardConfig
from drivers.manifest import Entity, Manifest
from gateway.catalogue import HA_DEVICE_CLASSES

if TYPE_CHECKING:
    from gateway.config import DeviceConfig


def entities(device: DeviceConfig, state: str) -> list[Entity]:
    """Its position and its fault."""
    return [
        ("position", {"component": "sensor", "name": "Position", "icon": "mdi:boom-gate",
                      "state_topic": state, "value_template": "{{ value_json.state }}"}),
        ("fault", {"component": "binary_sensor", "name": "Fault", "device_class": HA_DEVICE_CLASSES["bollard_fault"],
                   "state_topic": state, "value_template": "{{ 'ON' if value_json.fault else 'OFF' }}"}),
    ]


MANIFEST = Manifest(
    name="modbus_bollard", kinds=("bollard",), schema=BollardConfig, driver="drivers.bollard.driver:BollardDriver",
    simulator="simulators.bollard",
    events=("campus.bollard.state_changed", "campus.bollard.fault", "campus.bollard.command"), entities=entities)
