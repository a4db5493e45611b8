"""Store and forward: nothing lost while the broker is away, replayed in order, marked historical; a row leaves
the outbox only once the rules service (here a test client playing it) confirms it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest

from gateway import topics
from gateway.bus import Bus
from gateway.events import make_event
from gateway.outbox import Outbox
from tests.support import TEST_LOGIN, MosquittoBroker, broker_config, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
SITE = "s1"


class Subscriber:
    """A plain paho client playing the rules service: collects every event, confirms it on
    rules/committed (unless `confirm` is off), announces itself online (unless `announce` is off, until
    announce_online()), re-subscribes after each reconnect."""

    def __init__(self, port: int, confirm: bool = True) -> None:
        self.received: list[dict[str, Any]] = []
        self.confirm = confirm
        self.announce = True
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber",
                                  clean_session=False)
        self.client.username_pw_set(*TEST_LOGIN)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"campus/v1/{SITE}/+/+/evt/#", qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda c, u, f, rc, p: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        if self.announce:
            self.announce_online()
        self.subscribed.set()

    def announce_online(self) -> None:
        self.announce = True
        self.client.publish(f"campus/v1/{SITE}/rules/availability", '{"state":"online"}', qos=1, retain=True)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        with self._lock:
            self.received.append(body)
        if self.confirm:
            client.publish(f"campus/v1/{SITE}/rules/committed", json.dumps({"ids": [body["id"]]}), qos=1)

    def count(self) -> int:
        """Distinct events received (a resend may bring one twice; the rules service drops those)."""
        with self._lock:
            return len({e["id"] for e in self.received})

    def first_arrivals(self) -> list[dict[str, Any]]:
        with self._lock:
            seen: dict[str, dict[str, Any]] = {}
            for event in self.received:
                seen.setdefault(event["id"], event)
            return list(seen.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def produce(outbox: Outbox, device: str, n: int, event_type: str = "campus.device.telemetry") -> list[str]:
    ids = []
    for i in range(n):
        source = f"campus/v1/{SITE}/alarm_input/{device}"
        data = {"metrics": {"i": i}} if event_type == "campus.device.telemetry" else {"reason": f"r{i}"}
        event = make_event(SITE, "alarm_input", device, event_type, data, outbox.next_seq(source),
                           1.7e9 + i, TZ)
        outbox.put(topics.event(SITE, "alarm_input", device, event_type), event)
        ids.append(event.id)
    return ids


def test_broker_outage_loses_nothing_and_replays_in_order(any_broker: Any, tmp_path: Path) -> None:
    subscriber = Subscriber(any_broker.port)
    wait_for(subscriber.subscribed.is_set, 10, "the test subscriber")
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000)
    bus = Bus(broker_config(any_broker.port), "producer", name="producer")
    outbox.attach(bus, SITE)
    bus.start()
    try:
        assert bus.wait_connected(10)
        live = produce(outbox, "box-a", 10) + produce(outbox, "box-b", 10)
        wait_for(lambda: subscriber.count() == 20, 10, "the live events")
        wait_for(lambda: outbox.stats().queued == 0, 5, "the outbox to empty")

        any_broker.stop()
        wait_for(lambda: not bus.connected.is_set(), 10, "the producer to notice the broker is gone")
        queued = []
        for _ in range(5):
            queued += produce(outbox, "box-a", 6) + produce(outbox, "box-b", 4)
        queued += produce(outbox, "box-a", 2, "campus.device.offline")  # alarm-class too
        assert outbox.stats().queued == len(queued)

        any_broker.start()
        wait_for(lambda: subscriber.count() >= len(live) + len(queued), 30, "the replay")
        wait_for(lambda: outbox.stats().queued == 0, 5, "the outbox to empty after the replay")
    finally:
        bus.stop()
        outbox.close()
        subscriber.close()

    got = subscriber.first_arrivals()
    ids = [e["id"] for e in got]
    assert sorted(ids) == sorted(live + queued), "every event arrives"
    for device in ("box-a", "box-b"):
        seqs = [e["seq"] for e in got if e["source"].endswith(device)]
        assert seqs == sorted(seqs), f"{device}: events arrive in order"
    by_id = {e["id"]: e for e in got}
    assert not any(by_id[i]["historical"] for i in live), "live events are not historical"
    assert all(by_id[i]["historical"] for i in queued), "replayed events are marked historical"


def test_a_broker_that_lost_its_sessions_gets_nothing_before_the_rules_service_listens(
        mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """A broker that lost its sessions (the embedded one restarted, a Mosquitto replaced) has nobody subscribed
    to events until the rules service has subscribed again. Whatever went out before that went to nobody and
    came again only with the resend, after later events: a replay the rules service joined half-way reached it
    out of order (box-a's seq 12 before 11). So after a reconnect nothing goes out, neither the outbox's replay
    nor paho's own resend of what the broker had not acknowledged, until the rules service's availability is
    heard; then all of it goes, in order."""
    rules = Subscriber(mosquitto.port)  # reconnects after 1 s
    wait_for(rules.subscribed.is_set, 10, "the rules service")
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000)
    # The producer reconnects after 2 s: the rules service is subscribed again by then, so anything sent
    # before it says it is online would reach it.
    config = broker_config(mosquitto.port).model_copy(update={"reconnect_min_s": 2})
    bus = Bus(config, "producer", name="producer")
    outbox.attach(bus, SITE)
    bus.start()
    try:
        assert bus.wait_connected(10)
        before = produce(outbox, "box-a", 3, "campus.device.offline")
        wait_for(lambda: outbox.stats().queued == 0, 10, "the first events confirmed")
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the broker hangs: what is sent now is never acknowledged
        unacked = produce(outbox, "box-a", 3, "campus.device.offline")
        wait_for(lambda: outbox.stats().unconfirmed == 3, 5, "the events handed to paho")
        rules.announce = False  # back, it subscribes but says nothing until told
        mosquitto.proc.kill()
        mosquitto.proc.wait(10)
        wait_for(lambda: not rules.subscribed.is_set() and not bus.connected.is_set(), 10, "both to see it gone")
        mosquitto.start(fresh=True)  # no session, no retained message: nobody is subscribed to events
        wait_for(rules.subscribed.is_set, 10, "the rules service subscribed again, not yet saying so")
        wait_for(bus.connected.is_set, 10, "the producer back")
        later = produce(outbox, "box-a", 3, "campus.device.offline")
        time.sleep(0.5)  # not a wait for a condition: the rules service's moment between subscribing and saying so
        assert rules.count() == len(before), "nothing goes out before the rules service says it listens"
        rules.announce_online()
        wait_for(lambda: outbox.stats().queued == 0, 15, "every event confirmed")
    finally:
        bus.stop()
        outbox.close()
        rules.close()
    got = rules.first_arrivals()
    assert [e["id"] for e in got] == before + unacked + later, "every event, once, in order"
    assert [e["seq"] for e in got] == list(range(1, 10))


def test_events_queued_before_a_restart_are_sent_after_it(amqtt_broker: Any, tmp_path: Path) -> None:
    first = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000)
    ids = produce(first, "box-a", 5, "campus.device.offline")
    first.close()  # the gateway stops before the broker was ever reached

    subscriber = Subscriber(amqtt_broker.port)
    wait_for(subscriber.subscribed.is_set, 10, "the test subscriber")
    again = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000)
    bus = Bus(broker_config(amqtt_broker.port), "producer", name="producer")
    again.attach(bus, SITE)
    bus.start()
    try:
        wait_for(lambda: subscriber.count() == 5, 10, "the events from before the restart")
        more = produce(again, "box-a", 1, "campus.device.offline")
        wait_for(lambda: subscriber.count() == 6, 10, "a new event")
    finally:
        bus.stop()
        again.close()
        subscriber.close()
    got = subscriber.first_arrivals()
    assert [e["id"] for e in got] == ids + more
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6], "seq continues across restarts"
    assert all(e["historical"] for e in got[:5])


def test_telemetry_is_shed_past_the_bound_and_alarms_never_are(tmp_path: Path) -> None:
    shed_reports: list[int] = []
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=20_000, on_shed=shed_reports.append)
    try:
        alarms = produce(outbox, "box-a", 50, "campus.device.offline")
        produce(outbox, "box-a", 500)  # about 150 KB of telemetry against a 20 KB bound
        alarms += produce(outbox, "box-a", 50, "campus.device.offline")
        stats = outbox.stats()
        assert stats.shed > 0
        assert stats.telemetry_bytes <= 20_000
        kept = {row[0] for row in outbox._db.execute("SELECT payload FROM outbox WHERE class = 'alarm'")}
        assert len(kept) == 100, "every alarm-class event is kept"
        assert len(shed_reports) == 1, "shedding is reported once per episode, not per event"
    finally:
        outbox.close()


def test_only_confirmed_events_leave_and_the_rest_are_sent_again(mosquitto: Any, tmp_path: Path) -> None:
    """The broker acknowledging an event is not enough: unconfirmed events stay on disk and go out again
    (marked historical) when the rules service comes online, until it confirms them."""
    deaf = Subscriber(mosquitto.port, confirm=False)
    wait_for(deaf.subscribed.is_set, 10, "a rules service that records nothing")
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000, resend_after_s=60)
    bus = Bus(broker_config(mosquitto.port), "producer", name="producer")
    outbox.attach(bus, SITE)
    bus.start()
    confirming: Subscriber | None = None
    try:
        assert bus.wait_connected(10)
        ids = produce(outbox, "box-a", 30, "campus.device.offline")
        wait_for(lambda: deaf.count() == 30 and outbox.stats().unconfirmed == 30, 10, "all sent, none confirmed")
        assert outbox.stats().queued == 30, "nothing leaves on the broker's acknowledgement alone"
        deaf.close()
        confirming = Subscriber(mosquitto.port)  # the rules service back, announcing itself online
        wait_for(lambda: outbox.stats().queued == 0, 15, "the resend, confirmed")
        stats = outbox.stats()
        assert stats.unconfirmed == 0 and stats.published == 30 and stats.resent >= 30
    finally:
        bus.stop()
        outbox.close()
        if confirming:
            confirming.close()
    assert confirming is not None
    again = {e["id"]: e for e in confirming.first_arrivals()}
    assert set(ids) <= set(again), "every unconfirmed event is sent again"
    assert all(again[i]["historical"] for i in ids), "a resend is marked historical"


def test_an_unwritable_outbox_holds_events_in_memory_and_writes_them_later(mosquitto: Any, tmp_path: Path) -> None:
    """The driver's put never raises for a database error: the events wait in memory (in order) with a
    health report, alarms among them are sent at once, and all are on disk, sent and confirmed once the file
    can be written again."""
    reports: list[tuple[bool, str]] = []
    subscriber = Subscriber(mosquitto.port, confirm=False)
    wait_for(subscriber.subscribed.is_set, 10, "the test subscriber")
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10_000_000,
                    on_unwritable=lambda active, detail: reports.append((active, detail)))
    bus = Bus(broker_config(mosquitto.port), "producer", name="producer")
    outbox.attach(bus, SITE)
    bus.start()
    locker = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    try:
        assert bus.wait_connected(10)
        first = produce(outbox, "box-a", 3, "campus.device.offline")
        wait_for(lambda: subscriber.count() == 3, 10, "the first events")
        outbox._db.execute("PRAGMA busy_timeout=100")  # a locked file fails fast here, as a full disk does
        locker.execute("BEGIN EXCLUSIVE")
        held = produce(outbox, "box-a", 5, "campus.device.offline")  # must not raise
        assert outbox.stats().waiting_in_memory == 5 and outbox.stats().unwritable
        wait_for(lambda: reports[:1] and reports[0][0] is True, 5, "the unwritable report")
        wait_for(lambda: subscriber.count() == 8, 10, "the held alarms, sent before they are on disk")
        assert outbox.stats().waiting_in_memory == 5
        locker.execute("ROLLBACK")
        wait_for(lambda: outbox.stats().waiting_in_memory == 0, 10, "the held events written")
        wait_for(lambda: len(reports) == 2 and reports[1][0] is False, 5, "the writable-again report")
        on_disk = [json.loads(r[0])["id"] for r in outbox._db.execute("SELECT payload FROM outbox ORDER BY id")]
        assert on_disk == first + held, "every event on disk, in order, until the rules service confirms it"
    finally:
        locker.close()
        bus.stop()
        outbox.close()
        subscriber.close()
