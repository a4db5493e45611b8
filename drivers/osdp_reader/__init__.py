"""Card readers on an OSDP bus (IEC 60839-11-5, RS-485), through libosdp's control panel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.manifest import Entity, Manifest
from drivers.osdp_reader.schema import OsdpReaderConfig
from gateway.catalogue import HA_DEVICE_CLASSES

if TYPE_CHECKING:
    from gateway.config import DeviceConfig


def entities(device: DeviceConfig, state: str) -> list[Entity]:
    """The reader's tamper switch and its supply."""
    return [
        ("tamper", {"component": "binary_sensor", "name": "Tamper", "device_class": HA_DEVICE_CLASSES["tamper"],
                    "state_topic": state, "value_template": "{{ 'ON' if value_json.tamper else 'OFF' }}"}),
        ("power", {"component": "binary_sensor", "name": "Power failure", "device_class": HA_DEVICE_CLASSES["ac_loss"],
                   "state_topic": state, "value_template": "{{ 'ON' if value_json.power_failure else 'OFF' }}"}),
    ]


MANIFEST = Manifest(
    name="osdp", kinds=("reader",), schema=OsdpReaderConfig, driver="drivers.osdp_reader.driver:OsdpDriver",
    simulator="simulators.osdp_reader",
    events=("campus.reader.card_read", "campus.reader.code_scanned", "campus.reader.keypad", "campus.reader.tamper",
            "campus.reader.power"),
    entities=entities, doctor="drivers.osdp_reader.doctor")
