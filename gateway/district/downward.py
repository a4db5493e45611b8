"""What the district sends down to a school: an MQTT client of the cluster's own MQTT listeners (the path the
schools' bridges already subscribe through, `campus/v1/<site>/district/#`). A QoS 1 PUBACK from NATS means the
message is in the replicated `$MQTT_msgs` stream, kept for the school's bridge session while it is away."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger("campusgw.district.down")
PUBACK_TIMEOUT_S = 10.0


class Downward:
    """One connection, made when first needed, to the first node that answers; blocking (call from a thread)."""

    def __init__(self, addresses: list[str], user: str | None = None, password: str | None = None) -> None:
        self.addresses = addresses
        self.user, self.password = user, password
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()

    def _connect(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                             client_id=f"campusgw-district-down-{socket.gethostname()}-{os.getpid()}")
        client.max_inflight_messages_set(200)  # a notice to every school goes out at once (NATS allows 1,024)
        if self.user:
            client.username_pw_set(self.user, self.password)
        client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        errors = []
        for address in self.addresses:
            host, _, port = address.rpartition(":")
            try:
                client.connect(host, int(port), keepalive=30)
            except OSError as exc:
                errors.append(f"{address}: {exc}")
                continue
            client.loop_start()
            if self._connected.wait(PUBACK_TIMEOUT_S):
                return client
            client.loop_stop()
            client.disconnect()
            errors.append(f"{address}: no CONNACK")
        raise ConnectionError("no node of the cluster took the connection (" + "; ".join(errors) + ")")

    def send(self, topic: str, body: dict[str, Any]) -> None:
        """Publish at QoS 1 and wait for the cluster's PUBACK; raises if it does not come."""
        self.send_many([(topic, body)])

    def send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish each at QoS 1, then wait for all the PUBACKs (a notice to 2,000 schools is not 2,000 round
        trips one after the other); raises if one does not come, and the caller sends them all again later."""
        with self._lock:
            if self._client is None or not self._connected.is_set():
                self.close_locked()
                self._client = self._connect()
            client = self._client
            try:
                sent = [(topic, client.publish(topic, json.dumps(body, ensure_ascii=False).encode(), qos=1))
                        for topic, body in messages]
                deadline = time.monotonic() + PUBACK_TIMEOUT_S
                for topic, info in sent:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                    if not info.is_published():
                        raise ConnectionError(f"no PUBACK for {topic} within {PUBACK_TIMEOUT_S:.0f} s")
            except (RuntimeError, ValueError) as exc:  # paho: not connected, or its queue full
                self.close_locked()
                raise ConnectionError(f"not sent: {exc}") from exc
            except ConnectionError:
                self.close_locked()
                raise

    def close_locked(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
            self._connected.clear()

    def close(self) -> None:
        with self._lock:
            self.close_locked()
