"""The MQTT bus: a small wrapper around paho-mqtt 2.

What it adds to paho: QoS 1 by default, the gateway's availability as the Last
Will, subscriptions restored on every reconnect, reconnect with exponential
backoff (paho's own, bounded by config), TLS and credentials from the secrets
store, and a clear log line for each connect and loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from gateway.config import BrokerConfig

Handler = Callable[[mqtt.MQTTMessage], None]
ConnectHook = Callable[[], object]


MAX_HELD = 10_000  # alarm views and health events while the broker is away; device events wait in the outbox
OWNER_RESENDS_KEPT = 4096  # publish_now's messages remembered before the acknowledged ones are forgotten


def match_topic(topic_filter: str, topic: str) -> bool:
    return mqtt.topic_matches_sub(topic_filter, topic)


READ_CHUNK = 64 * 1024


class _BufferedClient(mqtt.Client):
    """paho with one recv() per chunk instead of three or four per packet (the command byte, each length
    byte, the body): under a burst the network thread spent most of its time in recv calls (py-spy).
    paho waits on the raw socket with select(), which cannot see what is already buffered here, so every
    readable wake-up reads until the buffer is empty."""

    _rbuf = b""
    _rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(READ_CHUNK)  # BlockingIOError when there is nothing: paho's "again"
            if not data:
                return data  # closed by the broker
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # nothing of an old connection is read on the next one
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf) and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc


class Bus:
    def __init__(self, config: BrokerConfig, client_id: str, *, port: int | None = None,
                 will: tuple[str, bytes] | None = None, manual_ack: bool = False,
                 clean_session: bool = True, name: str = "bus",
                 credentials: tuple[str, str] | None = None) -> None:
        """`credentials` (username, password) override the config's (the embedded broker's own users)."""
        self.config = config
        self.log = logging.getLogger(f"campusgw.bus.{name}")
        self.host, default_port, self.tls = config.host_port()
        self.port = port if port is not None else default_port
        self.connected = threading.Event()
        self._handlers: list[tuple[str, int, Handler]] = []
        self._by_topic: dict[str, list[Handler]] = {}  # topic -> matching handlers (matching is costly in paho)
        self._on_connect_hooks: list[ConnectHook] = []
        self._on_disconnect_hooks: list[ConnectHook] = []
        self._lock = threading.Lock()
        # What other threads publish while we are not connected waits here: paho would write it to a
        # socket it has just opened, before its CONNECT, and the broker drops such a connection.
        self._publish_lock = threading.Lock()
        self._held: list[tuple[str, bytes | str, int, bool]] = []
        # publish_now's messages by mid (its MQTTMessageInfo, to tell a reused mid apart): not resent by paho
        self._owner_resends: dict[int, mqtt.MQTTMessageInfo] = {}
        self._stopping = False
        self._ever_connected = False
        self._suback_mid: int | None = None
        self.client = _BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, manual_ack=manual_ack,
                                  protocol=mqtt.MQTTv311)
        # Our outbox limits what is handed over; paho's own queue only holds what is in flight.
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        username, password = credentials or config.credentials(name)
        if username:
            self.client.username_pw_set(username, password)
        if self.tls or config.tls:
            tls = config.tls
            self.client.tls_set(
                ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                keyfile=str(tls.key_file) if tls and tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls and tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_socket_open = self._on_socket_open
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho retries with backoff until it gets through."""
        self.client.connect_async(self.host, self.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, final: tuple[str, bytes] | None = None) -> None:
        """Disconnect cleanly; `final` (topic, payload) is published retained first (e.g. 'offline')."""
        self._stopping = True
        if final and self.connected.is_set():
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            deadline = time.monotonic() + 2
            while not info.is_published() and time.monotonic() < deadline and self.connected.is_set():
                time.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        # paho closes its wake-up socket pair only when the client is collected; callbacks and web routes that
        # hold the bus can keep it alive for the life of the process (a test run starts hundreds of gateways).
        self.client._reset_sockets()

    # -- hooks -----------------------------------------------------------------------

    def on_connect(self, hook: ConnectHook) -> None:
        self._on_connect_hooks.append(hook)
        if self.connected.is_set():
            hook()

    def on_disconnect(self, hook: ConnectHook) -> None:
        self._on_disconnect_hooks.append(hook)

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        with self._lock:
            self._handlers.append((topic_filter, qos, handler))
            self._by_topic.clear()
        if self.connected.is_set():
            self.client.subscribe(topic_filter, qos=qos)

    # -- publishing ------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish now, or once connected (in order). The outbox only publishes while connected, so it
        always gets paho's own MQTTMessageInfo back."""
        with self._publish_lock:
            if self.connected.is_set():
                return self.client.publish(topic, payload, qos=qos, retain=retain)
            if len(self._held) >= MAX_HELD:
                self.log.warning("not connected: dropping the oldest of %d held messages", len(self._held))
                del self._held[0]
            self._held.append((topic, payload, qos, retain))
            info = mqtt.MQTTMessageInfo(0)
            info.rc = mqtt.MQTT_ERR_NO_CONN
            return info

    def publish_now(self, topic: str, payload: bytes | str, *, qos: int = 1) -> mqtt.MQTTMessageInfo | None:
        """Publish only if connected now (None otherwise): for the outbox, which sends again what did not go.
        What the broker has not acknowledged when the connection goes is not resent by paho after the
        reconnect (_drop_owner_resends): the outbox sends it again itself, in order, once the rules service
        listens."""
        with self._publish_lock:
            if not self.connected.is_set():
                return None
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS and qos > 0:
                self._owner_resends[info.mid] = info
                if len(self._owner_resends) > OWNER_RESENDS_KEPT:  # forget the acknowledged, now and then
                    self._owner_resends = {m: i for m, i in self._owner_resends.items() if not i.is_published()}
        return info if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def _drop_owner_resends(self) -> None:
        """On CONNACK, before paho resends what was unacknowledged on the last connection: leave out publish_now's.
        paho would send them right away, ahead of the outbox's ordered replay and before anyone may have
        subscribed on a broker that lost its sessions; part of them reaching the rules service before the
        older events of the replay put a device's events out of order."""
        with self._publish_lock:
            owned, self._owner_resends = self._owner_resends, {}
            client: Any = self.client
            mutex, out = getattr(client, "_out_message_mutex", None), getattr(client, "_out_messages", None)
            if mutex is None or out is None:  # another paho: resends may come early; never fail the connect
                self.log.warning("paho has no _out_messages: unacknowledged events may be resent out of order")
                return
            with mutex:  # paho's own lock over its queue of outgoing messages
                for mid in [mid for mid, m in out.items() if owned.get(mid) is m.info]:
                    del out[mid]

    def publish_json(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.publish(topic, json.dumps(body, ensure_ascii=False, separators=(",", ":")), retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    # -- paho callbacks (paho's network thread) --------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Without this, Nagle's algorithm holds a small publish that follows a PUBACK until the broker's
        # delayed ACK (about 40 ms on Linux): measured as 80 -> 40 ms p50 from button to console.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._drop_owner_resends()  # paho calls this before it resends (paho 2's _handle_connack)
        if reason.is_failure:
            self.log.error("broker %s:%s refused the connection: %s", self.host, self.port, reason)
            return
        self.log.info("connected to broker %s:%s%s", self.host, self.port,
                      " (again)" if self._ever_connected else "")
        self._ever_connected = True
        with self._lock:
            subscriptions = [(f, q) for f, q, _ in self._handlers]
        if subscriptions:  # ready only once the broker confirms them: what comes before would be missed
            _, self._suback_mid = client.subscribe(subscriptions)
        else:
            self._ready()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid == self._suback_mid:
            self._suback_mid = None
            self._ready()

    def _ready(self) -> None:
        with self._publish_lock:
            for topic, payload, qos, retain in self._held:
                self.client.publish(topic, payload, qos=qos, retain=retain)
            self._held.clear()
            self.connected.set()
        for hook in list(self._on_connect_hooks):
            try:
                hook()
            except Exception:
                self.log.exception("on-connect hook failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if not self._stopping and was:
            self.log.warning("lost the broker %s:%s (%s); reconnecting with backoff", self.host, self.port, reason)
        for hook in list(self._on_disconnect_hooks):
            try:
                hook()
            except Exception:
                self.log.exception("on-disconnect hook failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        handlers = self._by_topic.get(topic)
        if handlers is None:
            with self._lock:
                handlers = [h for f, _, h in self._handlers if mqtt.topic_matches_sub(f, topic)]
                if len(self._by_topic) > 10_000:  # topics are per device, so this bound is generous
                    self._by_topic.clear()
                self._by_topic[topic] = handlers
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                self.log.exception("handler for %s failed", message.topic)
