"""The walking skeleton: a Modbus button press reaches the console live; a driver that fails is restarted.

Everything real: the pymodbus simulator, the driver polling it, the embedded
broker, the outbox, the rules service, SQLite, and the console over HTTP/SSE.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import paho.mqtt.client as mqtt
import pytest
from pydantic import ConfigDict
from sqlalchemy import select

from drivers import registry
from drivers.base import CommandResult, Driver
from gateway.bus import Bus
from gateway.commands import CommandClient
from gateway.config import Config, DeviceConfig
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import AuditEntry, Device
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, SseReader, logged_in
from tests.support import TEST_LOGIN, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

SITE = "school-1"


class FlakyConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["test"]
    driver: Literal["flaky"]


class FlakyDriver(Driver):
    """A driver that fails on command: 'crash' makes start() raise, 'hang' stops its heartbeat."""

    name = "flaky"
    config_model = FlakyConfig
    hang_timeout_s = 1.0
    starts: ClassVar[int] = 0

    def __init__(self, devices: list[DeviceConfig], ctx: Any) -> None:
        super().__init__(devices, ctx)
        self._fail: asyncio.Future[str] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        FlakyDriver.starts += 1
        self._fail = asyncio.get_running_loop().create_future()
        self.ctx.set_online(self.devices[0].id, True)
        while not self._stop.is_set():
            self.ctx.heartbeat()
            done, _ = await asyncio.wait({self._fail}, timeout=0.1)
            if done and self._fail.result() == "crash":
                raise RuntimeError("simulated driver crash")
            if done:  # hang: stay busy without heartbeats until cancelled
                await asyncio.Event().wait()

    async def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        return {"starts": FlakyDriver.starts}

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        assert self._fail is not None
        self._fail.set_result(name)
        return CommandResult(True, f"will {name}")


def site_config(tmp_path: Path, sim_port: int, extra_devices: list[dict[str, Any]] | None = None) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [{
            "id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
            "connection": {"host": "127.0.0.1", "port": sim_port, "unit": 1, "timeout_s": 0.3},
            "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "门卫室"}],
        }, *(extra_devices or [])],
    })


def test_button_press_reaches_the_console_live_and_can_be_acknowledged(tmp_path: Path,
                                                                        sim: ModbusDISimulator) -> None:
    running = Running(site_config(tmp_path, sim.port))
    gateway = running.gateway
    url = gateway.console_url
    assert url and gateway.first_admin_password, "the first start makes an admin with a one-time password"
    client = logged_in(url, "admin", gateway.first_admin_password)
    stream = SseReader(url + "api/alarms/stream", client.cookies)
    try:
        wait_for(lambda: any(name == "snapshot" for name, *_ in stream.events), 10, "the stream's snapshot")
        sim.press(1)
        raised = wait_for(lambda: [a for a in stream.alarms() if a["state"] == "active_unack"], 5,
                          "the alarm on the live stream")[0]
        assert raised["alarm_type"] == "panic" and raised["place"] == "门卫室" and raised["latching"]
        sim.release(1)
        wait_for(lambda: any(not a["condition_active"] for a in stream.alarms()), 5, "the release")

        page = client.get("/alarms").text
        assert "gate-box" in page and "门卫室" in page, "the page lists the open alarm"
        headers = {"X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
        response = client.post(f"/api/alarms/{raised['id']}/ack", headers=headers)
        assert response.status_code == 200 and response.json()["state"] == "active_ack"
        wait_for(lambda: any(a["state"] == "active_ack" for a in stream.alarms()), 5, "the ack on the stream")
        again = client.post(f"/api/alarms/{raised['id']}/ack", headers=headers)
        assert again.status_code == 409 and again.json()["detail"] == "该报警已确认", "refusals in the user's language"

        # A command travels MQTT to the driver and its result comes back.
        assert gateway.broker_port
        bus = Bus(gateway.config.broker, "test-commands", port=gateway.broker_port, name="test", credentials=TEST_LOGIN)
        commands = CommandClient(bus, SITE, gateway.config.gateway.command_key())
        bus.start()
        assert bus.wait_connected(10)
        result = commands.send("alarm_input", "gate-box", "read_inputs", issued_by="test")
        assert result["status"] == "ok" and result["data"] == {"points": {"gatehouse-panic": False}, "test_points": []}
        refused = commands.send("alarm_input", "gate-box", "explode", issued_by="test")
        assert refused["status"] == "error" and "no command 'explode'" in refused["detail"]
        bus.stop()
    finally:
        stream.close()
        running.stop()

    engine = db.make_engine(gateway.config.database_url())
    with db.make_sessions(engine)() as session:
        audit = session.scalars(select(AuditEntry)).all()
        assert [(a.action, a.result, a.actor) for a in audit][-2:] == [("alarm.ack", "ok", "admin"),
                                                                       ("alarm.ack", "refused", "admin")]
    engine.dispose()


def test_a_failing_driver_is_restarted_and_the_others_keep_working(tmp_path: Path,
                                                                   sim: ModbusDISimulator) -> None:
    registry.register(FlakyDriver)
    FlakyDriver.starts = 0
    config = site_config(tmp_path, sim.port, [{"id": "flaky-1", "kind": "test", "driver": "flaky"}])
    running = Running(config)
    gateway = running.gateway
    assert gateway.broker_port
    availability: list[str] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = lambda c, u, m: availability.append(json.loads(m.payload)["state"])
    watcher.username_pw_set(*TEST_LOGIN)
    watcher.connect("127.0.0.1", gateway.broker_port)
    watcher.subscribe(f"campus/v1/{SITE}/test/flaky-1/availability", qos=1)
    watcher.loop_start()
    engine = db.make_engine(config.database_url())
    sessions = db.make_sessions(engine)

    def online_in_db() -> bool | None:
        with sessions() as session:
            device = session.get(Device, "flaky-1")
            return device.online if device else None

    bus = Bus(config.broker, "test-commands", port=gateway.broker_port, name="test", credentials=TEST_LOGIN)
    commands = CommandClient(bus, SITE, gateway.config.gateway.command_key())
    bus.start()
    assert gateway.console_url and gateway.first_admin_password
    client = logged_in(gateway.console_url, "admin", gateway.first_admin_password)
    stream = SseReader(gateway.console_url + "api/alarms/stream", client.cookies)
    try:
        assert bus.wait_connected(10)
        wait_for(lambda: online_in_db() is True, 10, "flaky-1 online in the database")
        for failure in ("crash", "hang"):
            starts = FlakyDriver.starts
            assert commands.send("test", "flaky-1", failure, issued_by="test")["status"] == "ok"
            wait_for(lambda: online_in_db() is False, 10, f"flaky-1 offline in the database after a {failure}")
            wait_for(lambda: availability and availability[-1] == "offline", 5, "offline on MQTT")
            # The other driver keeps working while this one is down.
            sim.press(1)
            wait_for(lambda: any(a["alarm_type"] == "panic" and a["condition_active"] for a in stream.alarms()),
                     5, f"the panic alarm during the {failure}")
            sim.release(1)
            wait_for(lambda: FlakyDriver.starts > starts, 10, f"a restart after the {failure}")  # noqa: B023
            wait_for(lambda: online_in_db() is True, 10, f"flaky-1 back online in the database after a {failure}")
            wait_for(lambda: availability[-1] == "online", 5, "online again on MQTT")
        health = gateway.host.health() if gateway.host else {}
        assert health["flaky.flaky-1"]["restarts"] == 2
        assert "hung" in health["flaky.flaky-1"]["last_failure"]
        assert next(v for k, v in health.items() if k.startswith("modbus_di."))["restarts"] == 0
    finally:
        stream.close()
        bus.stop()
        watcher.loop_stop()
        running.stop()
        engine.dispose()


def test_metrics_for_prometheus(tmp_path: Path, sim: ModbusDISimulator) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    running = Running(site_config(tmp_path, sim.port))
    gateway = running.gateway
    try:
        assert gateway.console_url and gateway.first_admin_password
        client = logged_in(gateway.console_url, "admin", gateway.first_admin_password)
        sim.press(1)
        wait_for(lambda: "campusgw_open_alarms" in client.get("/metrics").text
                 and 'state="active_unack"' in client.get("/metrics").text, 10, "the alarm in the metrics")
        text = client.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}  # parses as Prometheus text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert samples[("campusgw_part_up", (("part", "rules"),))] == 1.0
        assert samples[("campusgw_device_online", (("device", "gate-box"), ("kind", "alarm_input")))] == 1.0
        assert samples[("campusgw_rules_events_total", (("result", "recorded"),))] >= 2
        assert samples[("campusgw_outbox_queued", ())] == 0
        assert samples[("campusgw_open_alarms", (("priority", "1"), ("state", "active_unack")))] == 1.0
        assert samples[("campusgw_alarm_ack_seconds_count", ())] == 0
        alarm_id = client.get("/api/alarms").json()[0]["id"]
        assert client.post(f"/api/alarms/{alarm_id}/ack", json={},
                           headers={"X-CSRF-Token": client.csrf}).status_code == 200  # type: ignore[attr-defined]
        text = client.get("/metrics").text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("campusgw_alarm_ack_seconds_count", ())] == 1, "the response time in the histogram"
        assert samples[("campusgw_alarm_ack_seconds_bucket", (("le", "+Inf"),))] == 1
        assert 0 < samples[("campusgw_alarm_ack_seconds_sum", ())] < 60
        import httpx

        assert httpx.get(gateway.console_url + "metrics").status_code == 303, "not without a login or a token"
    finally:
        running.stop()
