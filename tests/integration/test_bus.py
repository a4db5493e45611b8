"""The bus against real brokers: TLS and credentials, the Last Will, commands that time out, port clashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from gateway.app import Gateway
from gateway.broker import BrokerPortTaken, EmbeddedBroker
from gateway.bus import Bus
from gateway.commands import CommandClient, CommandTimeout
from gateway.config import BrokerConfig, ConfigError
from gateway.config_file import validate_config
from tests.support import ROOT, MosquittoBroker, broker_config, free_port, missing, wait_for


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 'localhost', made with the openssl command."""
    if not shutil.which("openssl"):
        missing("openssl is not installed")
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                           "server.pem"))
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=campusgw test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out",
        str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


class SecureMosquitto(MosquittoBroker):
    """Mosquitto with TLS and a password file, as a production site runs it."""

    def __init__(self, workdir: Path, ca: Path, cert: Path, key: Path, passwd: Path) -> None:
        super().__init__(workdir)
        self.tls_files = (ca, cert, key)
        self.passwd = passwd

    def config_text(self) -> str:
        ca, cert, key = self.tls_files
        text = super().config_text().replace("allow_anonymous true", "allow_anonymous false")
        return text + (f"password_file {self.passwd}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                       "tls_version tlsv1.2\n")


def test_tls_and_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("mosquitto_passwd") or not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing("mosquitto (with mosquitto_passwd) is not installed")
    ca, cert, key = make_certs(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "campusgw", "s3cret-pw"], check=True,
                   capture_output=True)
    passwd.chmod(0o600)
    broker = SecureMosquitto(tmp_path, ca, cert, key, passwd)
    broker.start()
    try:
        monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3cret-pw")
        config = BrokerConfig.model_validate({
            "url": f"mqtts://localhost:{broker.port}", "username": "campusgw",
            "password_env": "TEST_MQTT_PASSWORD", "tls": {"ca_file": str(ca)}})
        bus = Bus(config, "tls-client", name="tls")
        got = threading.Event()
        bus.subscribe("campus/v1/s1/#", lambda m: got.set() if m.payload == b"hello" else None)
        bus.start()
        assert bus.wait_connected(10), "connects over TLS with the password from the environment"
        bus.publish("campus/v1/s1/test", b"hello")
        assert got.wait(10), "a message goes round trip over TLS"
        bus.stop()

        monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
        refused = Bus(config, "tls-client-2", name="tls")
        refused.start()
        assert not refused.wait_connected(2), "a wrong password is refused"
        refused.stop()
    finally:
        broker.stop()


def test_gateway_last_will_reports_it_offline_when_killed(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("site: {id: s1, name: Test}\n"
                      f"gateway: {{id: gw9, data_dir: {tmp_path / 'data'}}}\n"
                      f"broker: {{url: 'mqtt://127.0.0.1:{mosquitto.port}', keepalive_s: 5}}\n")
    states: list[str] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = lambda c, u, m: states.append(json.loads(m.payload)["state"])
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe("campus/v1/s1/gateway/gw9/availability", qos=1)
    watcher.loop_start()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(config), "--only", "drivers"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: states and states[-1] == "online", 20, "the gateway to announce itself online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: states[-1] == "offline", 15, "the broker to publish the Last Will")
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.loop_stop()


def test_a_command_nobody_answers_times_out(amqtt_broker: Any) -> None:
    bus = Bus(broker_config(amqtt_broker.port), "commander", name="test")
    commands = CommandClient(bus, "s1", b"test-key")
    bus.start()
    try:
        assert bus.wait_connected(10)
        with pytest.raises(CommandTimeout, match="no result for 'raise' within 1s"):
            commands.send("bollard", "gate-1", "raise", issued_by="guard-li", timeout=1)
    finally:
        bus.stop()


def test_a_command_is_not_sent_while_the_broker_is_away_but_alarm_updates_wait(amqtt_broker: Any) -> None:
    """A command held and sent minutes later could move a bollard nobody asked to move now; an alarm
    update published before the bus is connected is sent once it is, in order."""
    bus = Bus(broker_config(amqtt_broker.port), "early-publisher", name="test")
    commands = CommandClient(bus, "s1", b"test-key")
    with pytest.raises(CommandTimeout, match="the broker cannot be reached, so 'raise' was not sent"):
        commands.send("bollard", "gate-1", "raise", issued_by="guard-li", timeout=1)
    got: list[bytes] = []
    watcher = Bus(broker_config(amqtt_broker.port), "watcher", name="test")
    watcher.subscribe("s1/#", lambda m: got.append(m.payload))
    watcher.start()
    try:
        assert watcher.wait_connected(10)
        for n in range(3):
            bus.publish("s1/rules/alarms/1", f"update {n}".encode())
        bus.start()
        wait_for(lambda: len(got) == 3, what="the held updates")
        assert got == [b"update 0", b"update 1", b"update 2"]
    finally:
        bus.stop()
        watcher.stop()


def test_embedded_broker_on_a_taken_port_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(BrokerPortTaken, match="port is taken") as info:
            EmbeddedBroker("127.0.0.1", port, users={}).start()
    assert "embedded_port" in str(info.value) and "url: mqtt://" in str(info.value)


async def test_parts_apart_need_a_real_broker(tmp_path: Path) -> None:
    import asyncio

    config = validate_config({"site": {"id": "s1", "name": "Test"},
                              "gateway": {"data_dir": str(tmp_path)}, "broker": "embedded"})
    with pytest.raises(ConfigError, match="give every part the URL of a real broker"):
        await Gateway(config, ("rules",)).run(asyncio.Event())


def test_run_says_what_to_do_when_the_embedded_port_is_taken_or_the_database_is_down(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        site = tmp_path / "site.yaml"
        site.write_text(f"site: {{id: s1, name: T}}\ngateway: {{data_dir: {tmp_path}}}\n"
                        f"broker: {{url: embedded, embedded_port: {taken.getsockname()[1]}}}\n")
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "-c", str(site)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "port is taken" in out.stderr and "Traceback" not in out.stderr
    site.write_text(f"site: {{id: s1, name: T}}\ngateway: {{data_dir: {tmp_path}}}\n"
                    "broker: {url: 'mqtt://127.0.0.1:1'}\ndatabase: {url: 'postgresql://nobody@127.0.0.1:1/x'}\n")
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "-c", str(site), "--only", "rules"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "the database cannot be reached" in out.stderr and "Traceback" not in out.stderr


class AclMosquitto(MosquittoBroker):
    """Mosquitto with the shipped ACL and a password file: each part of the gateway its own user."""

    USERS = ("campusgw-drivers", "campusgw-rules", "campusgw-console", "campusgw-reader")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.passwd = workdir / "passwd"
        for i, user in enumerate(self.USERS):
            subprocess.run(["mosquitto_passwd", "-b", *([] if i else ["-c"]), str(self.passwd), user, f"{user}-pw"],
                           check=True, capture_output=True)
        self.passwd.chmod(0o600)

    def config_text(self) -> str:
        text = super().config_text().replace("allow_anonymous true", "allow_anonymous false")
        return text + f"password_file {self.passwd}\nacl_file {ROOT / 'config' / 'mosquitto.acl'}\n"


def test_the_shipped_acl_gives_each_part_only_its_topics(tmp_path: Path, sim: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import select

    from gateway.records import db
    from gateway.records.models import Alarm, IngestedEvent
    from tests.integration.helpers import Running, alarm_event

    if not shutil.which("mosquitto_passwd"):
        missing("mosquitto (with mosquitto_passwd) is not installed")
    broker = AclMosquitto(tmp_path)
    broker.start()
    for part in ("drivers", "rules", "console"):
        monkeypatch.setenv(f"PW_{part.upper()}", f"campusgw-{part}-pw")
    config = validate_config({
        "site": {"id": "s1", "name": "Test"}, "gateway": {"data_dir": str(tmp_path / "data")},
        "broker": {"url": f"mqtt://127.0.0.1:{broker.port}", "users": {
            part: {"username": f"campusgw-{part}", "password_env": f"PW_{part.upper()}"}
            for part in ("drivers", "rules", "console")}},
        "devices": [{"id": "box", "kind": "alarm_input", "driver": "modbus_di",
                     "connection": {"host": "127.0.0.1", "port": sim.port},
                     "points": [{"input": 1, "name": "panic-1", "type": "panic"}]}]})
    running = Running(config)
    seen: list[str] = []
    payloads: list[bytes] = []
    reader = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reader")
    reader.username_pw_set("campusgw-reader", "campusgw-reader-pw")
    reader.on_message = lambda c, u, m: (seen.append(m.topic), payloads.append(bytes(m.payload)))
    reader.connect("127.0.0.1", broker.port)
    reader.subscribe("campus/v1/#", qos=1)
    reader.loop_start()
    intruders: list[mqtt.Client] = []

    def client_as(user: str) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{len(intruders)}")
        client.username_pw_set(user, f"{user}-pw")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        wait_for(client.is_connected, 5, f"{user} connected")
        intruders.append(client)
        return client

    try:
        sim.press(1)
        wait_for(lambda: "campus/v1/s1/rules/alarms/1" in seen, 10, "the alarm, through each part's own user")
        # Denied publishes are dropped (Mosquitto may also close the connection): send each on its own client.
        client_as("campusgw-drivers").publish("campus/v1/s1/bollard/gate/cmd/lower", b'{"correlation_id": "x"}',
                                              qos=1)
        topic, forged, forged_id = alarm_event("s1", "box", "panic-2", 99)
        client_as("campusgw-console").publish(topic, forged, qos=1)
        client_as("campusgw-drivers").publish("campus/v1/s1/alarm_input/box/state", b"{}", qos=1).wait_for_publish(5)
        client_as("campusgw-console").publish("campus/v1/s1/rules/alarms/0", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: {"campus/v1/s1/alarm_input/box/state", "campus/v1/s1/rules/alarms/0"} <= set(seen), 5,
                 "the allowed messages")
        assert "campus/v1/s1/bollard/gate/cmd/lower" not in seen, "drivers cannot command other devices"
        assert forged not in payloads, "the console's user cannot write device events"
        engine = db.make_engine(config.database_url())
        with db.make_sessions(engine)() as session:
            assert session.get(IngestedEvent, forged_id) is None
            assert len(session.scalars(select(Alarm)).all()) == 1
        engine.dispose()
        # The rules service's confirmations reach the drivers through the ACL: the outbox lets the events go.
        outbox = running.gateway.outbox
        assert outbox is not None
        wait_for(lambda: outbox.stats().queued == 0, 10, "the outbox emptied by the rules service's confirmations")
        # The console's user may publish bollard commands, but an unsigned one is not obeyed.
        client_as("campusgw-console").publish("campus/v1/s1/bollard/box/cmd/set_test_mode",
                                              b'{"correlation_id": "c", "issued_by": "admin", "args": {}}', qos=1)
        wait_for(lambda: any(b'"refused: ' in p for p in payloads), 5, "the refusal")
    finally:
        for client in intruders:
            client.loop_stop()
        reader.loop_stop()
        running.stop()
        broker.stop()


def test_status_reports_a_stopped_broker(tmp_path: Path, mosquitto: MosquittoBroker,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: s1, name: T}}\ngateway: {{data_dir: {tmp_path}}}\n"
                    f"broker: {{url: 'mqtt://127.0.0.1:{mosquitto.port}'}}\n")
    assert main(["db", "upgrade", "-c", str(site)]) == 0
    capsys.readouterr()
    healthy = main(["status", "-c", str(site)])
    out = capsys.readouterr().out
    assert "broker    ok" in out and "database  ok" in out and "0 devices, 0 open alarms" in out
    assert "0 visits hold ID and phone numbers; deleted 180 days after a visit" in out
    assert "0 decisions in the log" in out
    assert healthy == 0 or "clock     PROBLEM" in out  # a machine without NTP is flagged, rightly
    mosquitto.stop()
    assert main(["status", "-c", str(site)]) == 1
    assert "does not answer (is Mosquitto running?)" in capsys.readouterr().out


class GatehouseWithOptions(MosquittoBroker):
    """The shipped config with its optional TLS listener switched on as an installer would (on a free port, our
    test certificates), and the district bridge `campusgw district bridge` makes from a site config (to
    `district`, with its CA and password)."""

    def __init__(self, workdir: Path, ca: Path, cert: Path, key: Path, district_port: int, password: str) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        self.values = {"#listener 8883 0.0.0.0": f"listener {self.tls_port} 127.0.0.1",
                       "#cafile ": f"cafile {ca}", "#certfile ": f"certfile {cert}", "#keyfile ": f"keyfile {key}"}
        os.environ["CAMPUSGW_TEST_DISTRICT_PASSWORD"] = password
        site = workdir / "site.yaml"
        site.write_text(yaml.safe_dump({
            "site": {"id": "s1", "name": "School 1"}, "gateway": {"id": "gatehouse-1"},
            "district": {"addresses": [f"localhost:{district_port}"], "username": "school-example",
                         "password_env": "CAMPUSGW_TEST_DISTRICT_PASSWORD", "cafile": str(ca)}}))
        made = subprocess.run([sys.executable, "-m", "gateway.cli", "district", "bridge", "-c", str(site)],
                              capture_output=True, text=True, check=True)
        self.bridge = made.stdout

    def config_text(self) -> str:
        lines = []
        for line in super().config_text().splitlines():
            if line.startswith("#") and not line.startswith("# ") and line != "#":
                line = next((v for k, v in self.values.items() if line.startswith(k)), line[1:])
            lines.append(line)
        return "\n".join(lines) + "\n" + self.bridge


def test_the_shipped_tls_listener_and_district_bridge_work_when_switched_on(tmp_path: Path) -> None:
    if not shutil.which("mosquitto_passwd"):
        missing("mosquitto (with mosquitto_passwd) is not installed")
    ca, cert, key = make_certs(tmp_path)
    (tmp_path / "district").mkdir()
    passwd = tmp_path / "district" / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "school-example", "district-pw"], check=True,
                   capture_output=True)
    passwd.chmod(0o600)
    district = SecureMosquitto(tmp_path / "district", ca, cert, key, passwd)
    district.start()
    (tmp_path / "gatehouse").mkdir()
    gatehouse = GatehouseWithOptions(tmp_path / "gatehouse", ca, cert, key, district.port, "district-pw")
    bridge = gatehouse.bridge
    assert "connection district-s1" in bridge and "remote_username school-example" in bridge
    assert "remote_clientid campusgw-s1-gatehouse-1" in bridge and "try_private false" in bridge
    assert "notification_topic campus/v1/s1/bridge/district" in bridge and "cleansession false" in bridge
    assert [line for line in bridge.splitlines() if line.startswith("topic ")] == [
        "topic campus/v1/s1/+/+/evt/# out 1", "topic campus/v1/s1/+/+/availability out 1",
        "topic campus/v1/s1/rules/alarms/# out 1", "topic campus/v1/s1/rules/lockdown out 1",
        "topic campus/v1/s1/rules/police/paths out 1", "topic campus/v1/s1/rules/incidents/# out 1",
        "topic campus/v1/s1/rules/reports/# out 1",
        "topic campus/v1/s1/rules/notices/# out 1", "topic campus/v1/s1/district/# in 1"], "its own topics only"
    gatehouse.start()
    clients: list[mqtt.Client] = []

    def client(port: int, tls: bool = False, user: str | None = None) -> tuple[mqtt.Client, list[str]]:
        seen: list[str] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{port}-{len(clients)}")
        if tls:
            c.tls_set(ca_certs=str(ca))
        if user:
            c.username_pw_set(user, "district-pw")
        c.on_message = lambda _c, _u, m: seen.append(m.topic)
        c.connect("localhost", port)
        c.loop_start()
        wait_for(c.is_connected, 10, f"connected to {port}")
        clients.append(c)
        return c, seen

    try:
        platform, at_district = client(district.port, tls=True, user="school-example")
        platform.subscribe("campus/v1/#", qos=1)
        remote, at_school = client(gatehouse.tls_port, tls=True)  # a console on another machine, over TLS
        remote.subscribe("campus/v1/#", qos=1)
        local, _ = client(gatehouse.port)
        event = "campus/v1/s1/alarm_input/box/evt/triggered"
        sent_at = [0.0]

        def arrived() -> bool:
            if time.monotonic() - sent_at[0] > 0.5:  # again, until the bridge and the subscriptions are up
                local.publish(event, b"{}", qos=1)
                sent_at[0] = time.monotonic()
            return event in at_district and event in at_school

        wait_for(arrived, 15, "an event up the bridge to the district, and over the TLS listener")
        platform.publish("campus/v1/s1/bollard/gate/cmd/lower", b"{}", qos=1).wait_for_publish(5)
        platform.publish("campus/v1/s1/rules/alarms/1", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: "campus/v1/s1/rules/alarms/1" in at_district, 5, "the district routed its own messages")
        local.publish("campus/v1/s1/alarm_input/box/availability", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: "campus/v1/s1/alarm_input/box/availability" in at_district, 10, "the marker up the bridge")
        assert not [t for t in at_school if "/cmd/" in t or "/rules/alarms/1" in t], "nothing comes down the bridge"
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        gatehouse.stop()
        district.stop()
