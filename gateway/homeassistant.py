"""Home Assistant MQTT discovery: each device of the site appears in Home Assistant, read only.

Pure: the site config in, (topic, payload) pairs out; the drivers' part publishes them retained when it
connects (`home_assistant.discovery: true`, off by default). Entities read the topics the gateway
publishes anyway (retained state and availability), so Home Assistant adds no load and cannot send
anything: bollard moves and alarm actions stay in the console, with roles and the audit log.

- every alarm point: a binary_sensor (safety, tamper, smoke, door, power, problem) from the device state;
- every bollard: its position (sensor) and fault (binary_sensor, problem);
- every OSDP reader: its tamper switch and power failure (binary_sensor);
- every device, readers and cameras included, and the gateway itself: connectivity (binary_sensor).
Each entity is unavailable while its device or the gateway is offline.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from drivers.manifest import Entity
from drivers.registry import manifests
from gateway import topics
from gateway.config import Config, DeviceConfig

ONLINE = "{{ value_json.state }}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def _version() -> str:
    try:
        return version("campusgw")
    except PackageNotFoundError:
        return "unknown"


def discovery_messages(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """Every discovery config message for the site, in a stable order."""
    ha = config.home_assistant
    site, gw = config.site.id, config.gateway.id
    zones = {z.id: z.name for z in config.zones}
    origin = {"name": "campusgw", "sw_version": _version(), "support_url": "https://pypi.org/project/campusgw/"}
    gateway_id = f"campusgw_{site}_{gw}"
    gateway_availability = {"topic": topics.availability(site, topics.GATEWAY, gw), "value_template": ONLINE}
    messages: list[tuple[str, dict[str, Any]]] = []

    def add(component: str, node: str, object_id: str, body: dict[str, Any]) -> None:
        unique_id = f"{node}_{_slug(object_id)}"
        topic = topics.discovery(ha.prefix, component, node, _slug(object_id))
        messages.append((topic, {"unique_id": unique_id, "origin": origin, "qos": 1, **body}))

    add("binary_sensor", gateway_id, "connectivity", {
        "name": "Gateway", "device_class": "connectivity", "entity_category": "diagnostic",
        "state_topic": topics.availability(site, topics.GATEWAY, gw), "value_template": ONLINE,
        "payload_on": "online", "payload_off": "offline",
        "device": {"identifiers": [gateway_id], "name": f"{config.site.name} gateway {gw}",
                   "manufacturer": "campusgw", "model": "campus safety gateway", "sw_version": _version()}})
    for device in config.devices:
        if not device.enabled:
            continue
        node = f"campusgw_{site}_{_slug(device.id)}"
        available = topics.availability(site, device.kind, device.id)
        availability = [{"topic": available, "value_template": ONLINE}, gateway_availability]
        common: dict[str, Any] = {
            "device": _device(device, node, gateway_id, zones),
            "availability": availability, "availability_mode": "all",
        }
        add("binary_sensor", node, "connectivity", {
            "name": "Online", "device_class": "connectivity", "entity_category": "diagnostic",
            "state_topic": available, "value_template": ONLINE,
            "payload_on": "online", "payload_off": "offline",
            # Its own availability is the gateway's: an offline device is "off", not "unavailable".
            "device": common["device"], "availability": [gateway_availability]})
        for entity, body in _entities(device, topics.state(site, device.kind, device.id)):
            add(body.pop("component"), node, entity, {**body, **common})
    return messages


def _device(device: DeviceConfig, node: str, gateway_id: str, zones: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {"identifiers": [node], "name": device.name or device.id, "manufacturer": "campusgw",
                            "model": f"{device.kind} ({device.driver})", "via_device": gateway_id}
    if device.zone:
        info["suggested_area"] = zones.get(device.zone, device.zone)
    return info


def _entities(device: DeviceConfig, state: str) -> list[Entity]:
    """What the device's driver shows beside connectivity (its manifest's `entities`; serial readers, cameras and
    checkpoints have only their connectivity)."""
    manifest = manifests().get(device.driver)
    return manifest.entities(device, state) if manifest and manifest.entities else []
