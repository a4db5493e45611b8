"""Relay outputs on a Modbus DO module: sirens, strobes, door locks and releases, the PA trigger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.manifest import Entity, Manifest
from drivers.relay_outputs.schema import RelayOutputConfig

if TYPE_CHECKING:
    from gateway.config import DeviceConfig


def entities(device: DeviceConfig, state: str) -> list[Entity]:
    """A binary sensor per relay (on / off); switching stays with the gateway's rules and console."""
    typed = device if isinstance(device, RelayOutputConfig) else RelayOutputConfig.model_validate(device.model_dump())
    return [(relay.name, {"component": "binary_sensor", "name": relay.label or relay.name, "state_topic": state,
                          "value_template": f"{{{{ 'ON' if value_json.relays['{relay.name}'] else 'OFF' }}}}"})
            for relay in typed.relays]


MANIFEST = Manifest(
    name="modbus_do", kinds=("output",), schema=RelayOutputConfig,
    driver="drivers.relay_outputs.driver:RelayOutputDriver", simulator="simulators.relay_outputs",
    events=("campus.output.changed",), entities=entities)
