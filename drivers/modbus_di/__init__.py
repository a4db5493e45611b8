"""Alarm inputs on Modbus digital-input modules (TCP or RTU): one-key buttons, duress, tamper, fire, contacts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.manifest import Entity, Manifest
from drivers.modbus_di.schema import ModbusDIConfig
from gateway.catalogue import HA_DEVICE_CLASSES

if TYPE_CHECKING:
    from gateway.config import DeviceConfig


def entities(device: DeviceConfig, state: str) -> list[Entity]:
    """A binary_sensor per point, its device class from the point's alarm type."""
    return [(point["name"], {
        "component": "binary_sensor", "name": point.get("place") or point["name"],
        "device_class": HA_DEVICE_CLASSES.get(point["type"], "problem"), "state_topic": state,
        "value_template": f"{{{{ 'ON' if value_json.points['{point['name']}'] else 'OFF' }}}}"})
        for point in (device.model_extra or {}).get("points", [])]


MANIFEST = Manifest(
    name="modbus_di", kinds=("alarm_input",), schema=ModbusDIConfig, driver="drivers.modbus_di.driver:ModbusDIDriver",
    simulator="simulators.modbus_di", events=("campus.alarm_input.triggered", "campus.alarm_input.restored"),
    entities=entities)
