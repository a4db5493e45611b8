"""Sending a command to a device over MQTT and waiting for its result (correlation id, timeout)."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from gateway.bus import Bus
from gateway.events import TOPIC_ROOT, device_topic


class CommandTimeout(Exception):
    pass


class CommandClient:
    def __init__(self, bus: Bus, site: str) -> None:
        self.bus = bus
        self.site = site
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        bus.subscribe(f"{TOPIC_ROOT}/{site}/+/+/cmd/+/result", self._on_result)

    def send(self, kind: str, device: str, name: str, args: dict[str, Any] | None = None, *,
             issued_by: str, timeout: float = 10.0) -> dict[str, Any]:
        """Publish the command and wait for its result; raises CommandTimeout if none comes in time."""
        if not self.bus.connected.is_set():  # held and sent minutes later, it could move a bollard unasked
            raise CommandTimeout(f"{device}: the broker cannot be reached, so '{name}' was not sent")
        correlation_id = str(uuid.uuid4())
        done = threading.Event()
        box: list[dict[str, Any]] = []
        with self._lock:
            self._waiting[correlation_id] = (done, box)
        try:
            self.bus.publish_json(f"{device_topic(self.site, kind, device)}/cmd/{name}",
                                  {"correlation_id": correlation_id, "issued_by": issued_by, "args": args or {}})
            if not done.wait(timeout):
                raise CommandTimeout(f"{device}: no result for '{name}' within {timeout:.0f}s "
                                     "(is the gateway that serves it running?)")
            return box[0]
        finally:
            with self._lock:
                self._waiting.pop(correlation_id, None)

    def _on_result(self, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            waiter = self._waiting.get(str(body.get("correlation_id")))
        if waiter:
            waiter[1].append(body)
            waiter[0].set()
