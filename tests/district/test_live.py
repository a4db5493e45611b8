"""The alarms' fast path (gateway/district/live.py) through the real parts: a school gateway's rules service on its
own Mosquitto, bridged to three NATS nodes and linked to them over core NATS too; a district worker on
PostgreSQL. The worst node to lose is SIGKILLed: the one the school's bridge is on, leading the stream that keeps
the messages and the one that keeps the MQTT sessions. The bridge can then neither publish nor even connect until
NATS has elected new leaders (it waits 4-9 s for a lost one) and the bridge's backoff lets it try again; the
panic raised meanwhile is at the district within seconds all the same, and the stream brings every event later,
none lost."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import create_engine, select, text

from gateway.config_file import validate_config
from gateway.district import store
from gateway.district.bridge import BridgeSettings, bridge_section, spread
from tests.district.harness import NatsCluster, SchoolBroker
from tests.district.test_district import RunningWorker, cluster, district_db, stored_ids  # noqa: F401 (fixtures)
from tests.integration.helpers import Running, alarm_event
from tests.support import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.timeout(180)]


def test_a_panic_reaches_the_district_while_the_schools_node_is_lost_and_its_streams_elect(
        tmp_path: Path, cluster: NatsCluster, district_db: str) -> None:  # noqa: F811
    worker = RunningWorker(cluster.settings(), district_db)
    site = cluster.site(1)
    broker = SchoolBroker(tmp_path / site, site, cluster.mqtt_addresses)
    broker.start()
    running = Running(validate_config({
        "site": {"id": site, "name": "实验中学"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": f"mqtt://127.0.0.1:{broker.port}"},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
                     "connection": {"host": "127.0.0.1", "port": 1502},
                     "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic"}]}],
        "district": {"addresses": cluster.mqtt_addresses, "live": [u.removeprefix("nats://") for u in cluster.urls]},
    }), parts=("rules",))
    driver = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="driver-like")
    driver.connect("127.0.0.1", broker.port)
    driver.loop_start()
    engine = create_engine(district_db.replace("postgresql://", "postgresql+psycopg://"))

    def alarms_at_the_district() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            if conn.scalar(text("SELECT to_regclass('district_alarms')")) is None:
                return []
            return [(r.alarm_type, r.state) for r in conn.execute(
                select(store.alarms.c.alarm_type, store.alarms.c.state).where(store.alarms.c.site == site))]

    def stored_bridge_up() -> bool:
        with engine.connect() as conn:
            if conn.scalar(text(f"SELECT to_regclass('{store.facts.name}')")) is None:
                return False
            value = conn.scalar(select(store.facts.c.value).where(store.facts.c.site == site,
                                                                   store.facts.c.fact == "bridge"))
            return isinstance(value, dict) and value.get("up") is True

    try:
        wait_for(running.gateway.live_alarms.connected.is_set, 20, "the gateway's fast path to a node")
        node = cluster.mqtt_addresses.index(spread(site, cluster.mqtt_addresses)[0])  # the bridge's first
        wait_for(lambda: stored_bridge_up(), 30, "the school's bridge up at the district")
        for stream in ("$MQTT_msgs", "$MQTT_sess"):
            cluster.lead(stream, node)
        cluster.nodes[node].kill()
        killed = time.monotonic()
        topic, payload, event_id = alarm_event(site, "gate-box", "gatehouse-panic", 1, at=time.time())
        driver.publish(topic, payload, qos=1).wait_for_publish(5)
        live = running.gateway.live_alarms
        wait_for(lambda: alarms_at_the_district() == [("panic", "active_unack")], 3,
                 lambda: f"the panic at the district within 3 s of the node's loss (an election takes 4-9 s): "
                         f"{alarms_at_the_district()} there; the school's fast path sent {live.sent}, again "
                         f"{live.resent}, connected {live.connected.is_set()}; the worker wrote "
                         f"{worker.worker.stats.live} from it")
        took = time.monotonic() - killed
        assert worker.worker.stats.live >= 1, f"by the fast path ({took:.1f} s after the kill)"
        # The stream's copy and the event itself come once NATS has a new leader: nothing lost, nothing twice.
        wait_for(lambda: event_id in stored_ids(district_db), 60, "the press in the district's records by the stream")
        assert alarms_at_the_district() == [("panic", "active_unack")]
    finally:
        driver.loop_stop()
        driver.disconnect()
        running.stop()
        broker.stop()
        worker.stop()
        engine.dispose()


SCHOOL_USERS = """authorization {
  users = [
    {user: district, password: district-pw}
    {user: s1, password: s1-pw, permissions: {publish: ["campus.v1.s1.>"], subscribe: ["campus.v1.s1.district.>"]}}
  ]
}
"""


def test_a_schools_credentials_let_it_speak_for_its_own_site_only(tmp_path: Path) -> None:
    """The users block the README gives the district: a school's user publishes its own site's subjects, by its
    bridge (into the stream) and by the fast path, and nothing of another school's (refused, not delivered)."""
    import asyncio

    from gateway.district.live import LiveAlarms
    from tests.district.harness import LightSchool, NatsNode

    node = NatsNode("n1", tmp_path, stream_replicas=None, more=SCHOOL_USERS)
    node.start([])
    broker = SchoolBroker(tmp_path / "s1", "s1", [f"127.0.0.1:{node.mqtt_port}"])
    broker.bridge = bridge_section(BridgeSettings("s1", "gw1", [f"127.0.0.1:{node.mqtt_port}"], username="s1",
                                                  password="s1-pw"))
    broker.start()
    school = LightSchool(broker)
    school.start()
    school.live = LiveAlarms([node.url], "s1-live", user="s1", password="s1-pw")
    school.live.start()
    seen: list[str] = []

    async def district() -> tuple[int, list[str]]:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await nats.connect(node.url, user="district", password="district-pw")
        refused: list[str] = []
        heard = asyncio.Event()  # the press and the view by both paths, and the refusal

        def check() -> None:
            if refused and seen.count("campus.v1.s1.rules.alarms.7") >= 2 and any(".evt." in x for x in seen):
                heard.set()

        async def keep(message: object) -> None:
            seen.append(message.subject)  # type: ignore[attr-defined]
            check()

        async def error(exc: Exception) -> None:
            refused.append(str(exc))
            check()

        try:
            await nc.subscribe("campus.v1.>", cb=keep)
            js = nc.jetstream(timeout=5)
            for _ in range(30):  # the MQTT streams are made at the bridge's first connection: try again until then
                try:
                    await js.add_consumer("$MQTT_msgs", ConsumerConfig(  # the press and the view, not the bridge's
                        durable_name="d", filter_subjects=["$MQTT.msgs.campus.v1.s1.alarm_input.>",  # own state
                                                           "$MQTT.msgs.campus.v1.s1.rules.alarms.>"],
                        ack_policy=AckPolicy.EXPLICIT))
                    break
                except Exception:
                    await asyncio.sleep(0.5)
            wait_for(school.live.connected.is_set, 10, "the fast path connected with the school's user")
            school.announce(7, 1, "active_unack")
            school.press()
            # The school's user on another school's subject: refused by the server.
            other = await nats.connect(node.url, user="s1", password="s1-pw", error_cb=error)
            await other.publish("campus.v1.s2.rules.alarms.1", b"{}")
            await other.flush()
            await asyncio.wait_for(heard.wait(), 10)
            await other.close()
            info = await js.consumer_info("$MQTT_msgs", "d")
            return info.num_pending, refused
        finally:
            await nc.close()

    try:
        stored, refused = asyncio.run(district())
    finally:
        school.stop()
        broker.stop()
        node.stop()
    assert stored == 2, "the bridge's view and press in the stream"
    assert {"campus.v1.s1.alarm_input.gate-box.evt.triggered", "campus.v1.s1.rules.alarms.7"} <= set(seen)
    assert all(subject.startswith("campus.v1.s1.") for subject in seen), "the school's own subjects only"
    assert seen.count("campus.v1.s1.rules.alarms.7") >= 2, "the view by the bridge and by the fast path"
    assert any('permissions violation for publish to "campus.v1.s2.rules.alarms.1"' in r for r in refused)
