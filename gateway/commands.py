"""Sending a command to a device over MQTT and waiting for its result (correlation id, timeout).

Commands are signed with the command key (gateway.command_auth), so the drivers obey them; a result is
taken only from the topic of the command it answers.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from gateway import topics
from gateway.bus import Bus
from gateway.command_auth import sign


class CommandTimeout(Exception):
    pass


class CommandClient:
    def __init__(self, bus: Bus, site: str, key: bytes) -> None:
        self.bus = bus
        self.site = site
        self.key = key
        # correlation id -> (done, the result, the topic it must come on)
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]], str]] = {}
        self._lock = threading.Lock()
        bus.subscribe(topics.results_filter(site), self._on_result)

    def send(self, kind: str, device: str, name: str, args: dict[str, Any] | None = None, *,
             issued_by: str, timeout: float = 10.0) -> dict[str, Any]:
        """Publish the command and wait for its result; raises CommandTimeout if none comes in time."""
        if not self.bus.connected.is_set():  # held and sent minutes later, it could move a bollard unasked
            raise CommandTimeout(f"{device}: the broker cannot be reached, so '{name}' was not sent")
        correlation_id = str(uuid.uuid4())
        done = threading.Event()
        box: list[dict[str, Any]] = []
        topic = topics.command(self.site, kind, device, name)
        with self._lock:
            self._waiting[correlation_id] = (done, box, topics.result(self.site, kind, device, name))
        try:
            body = {"correlation_id": correlation_id, "issued_by": issued_by, "args": args or {}}
            self.bus.publish_json(topic, sign(self.key, self.site, kind, device, name, body))
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
        if not isinstance(body, dict):
            return
        with self._lock:
            waiter = self._waiting.get(str(body.get("correlation_id")))
        if waiter and waiter[2] == message.topic:  # not another device's (or a forger's) answer
            waiter[1].append(body)
            waiter[0].set()
