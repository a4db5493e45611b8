"""Ingest throughput: events through outbox -> broker -> rules service -> database.

    python -m bench.ingest [--events 20000] [--db sqlite|postgresql|both] [--broker mosquitto|embedded]
                           [--presses]

First a baseline through the same broker: plain paho clients, a publisher and a subscriber, the
same number of QoS 1 messages of the same size (the same payloads), timed from the first publish
to the last message received. Then the pipeline as gateway/app.py wires it: an Outbox attached to
a Bus (as for the drivers), a RulesService on its own Bus (clean_session=False, manual_ack=True),
and a database from gateway.records.db (make_engine + upgrade + make_sessions). N
campus.device.telemetry events from several devices are put as fast as possible, with
outbox.put_many in batches of 100 and, in a second run, with put() one by one; the time is from
the first put to the moment SELECT COUNT(*) FROM events (polled every 50 ms) reaches N. Each run
has its own database, outbox file and client ids. Loss check: the ids in the database are exactly
the ids put (so no event is lost and none is stored twice).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, text

from bench.common import start_mosquitto, wait_until
from gateway import topics
from gateway.bus import Bus
from gateway.config import BrokerConfig
from gateway.events import Event, make_event
from gateway.outbox import Outbox
from gateway.records import db
from gateway.rules_service.service import RulesService
from tests.support import PG_ADMIN_URL, TEST_LOGIN, AmqttBroker, broker_config

SITE = "bench-school"
KIND = "reader"
TZ = ZoneInfo("Asia/Shanghai")
POLL_S = 0.05
STALL_S = 20.0  # no progress for this long: give up and report what arrived


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    received: int
    put_s: float | None = None
    sent_s: float | None = None
    lost: int = 0
    extra: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


def telemetry(n: int, devices: int, seq: Any) -> list[tuple[str, Event]]:
    """N telemetry events, round robin over `devices` devices; `seq(source)` numbers them per device."""
    items = []
    now = time.time()
    for i in range(n):
        device = f"reader-{i % devices + 1:02d}"
        data = {"metrics": {"temperature_c": 21.5 + (i % 7) / 10, "rssi_dbm": -61 - i % 5, "uptime_s": 86_400 + i,
                            "supply_v": 12.1, "door_closed": True}}
        event = make_event(SITE, KIND, device, "campus.device.telemetry", data,
                           seq(topics.source(SITE, KIND, device)), now + i / 1e4, TZ)
        items.append((topics.event(SITE, KIND, device, "campus.device.telemetry"), event))
    return items


def presses(n: int, devices: int, seq: Any) -> list[tuple[str, Event]]:
    """N alarm button events, round robin over `devices` alarm boxes: each button pressed, then released, as
    the DI driver reports them. Each changes an alarm (raise, clear, retrigger), the rules' costliest path."""
    items = []
    now = time.time()
    for i in range(n):
        device = f"box-{i % devices + 1:02d}"
        kind = "campus.alarm_input.triggered" if (i // devices) % 2 == 0 else "campus.alarm_input.restored"
        data = {"point": "panic", "input": 1, "point_type": "panic", "zone": "gate", "place": "gatehouse"}
        event = make_event(SITE, "alarm_input", device, kind, data,
                           seq(topics.source(SITE, "alarm_input", device)), now + i / 1e4, TZ)
        items.append((topics.event(SITE, "alarm_input", device, kind), event))
    return items


# -- brokers and databases ---------------------------------------------------------------


@contextlib.contextmanager
def broker(kind: str, workdir: Path) -> Iterator[int]:
    if kind == "embedded":
        embedded = AmqttBroker()  # it lets nobody in anonymously: every client here logs in as TEST_LOGIN
        embedded.start()
        try:
            yield embedded.port
        finally:
            embedded.stop()
        return
    mosquitto = start_mosquitto(workdir)
    if mosquitto is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto), or use --broker embedded")
    try:
        yield mosquitto.port
    finally:
        mosquitto.stop()


@contextlib.contextmanager
def database(kind: str, workdir: Path, name: str) -> Iterator[Engine]:
    """A fresh, migrated database: a SQLite file in `workdir`, or a new PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        engine = db.make_engine(f"sqlite:///{workdir / f'{name}.db'}")
        try:
            db.upgrade(engine)
            yield engine
        finally:
            engine.dispose()
        return
    import psycopg

    dbname = f"cgw_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    engine = db.make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}")
    try:
        db.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


# -- the baseline: plain paho ------------------------------------------------------------


def baseline(port: int, items: list[tuple[str, Event]]) -> Result:
    payloads = [(topic, event.to_json()) for topic, event in items]
    n = len(payloads)
    done = threading.Event()
    subscribed = threading.Event()
    received = [0]
    last = [0.0]

    def on_message(client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] == n:
            last[0] = time.perf_counter()
            done.set()

    tag = uuid.uuid4().hex[:8]
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-base-sub-{tag}")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"campus/v1/{SITE}/+/+/evt/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    sub.on_message = on_message
    sub.username_pw_set(*TEST_LOGIN)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-base-pub-{tag}")
    pub.max_inflight_messages_set(200)  # as gateway.bus.Bus sets it
    pub.max_queued_messages_set(0)
    pub.username_pw_set(*TEST_LOGIN)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        wait_until(subscribed.is_set, 10, "the baseline subscriber")
        wait_until(pub.is_connected, 10, "the baseline publisher")
        first = time.perf_counter()
        for topic, payload in payloads:
            pub.publish(topic, payload, qos=1)
        published = time.perf_counter() - first
        seen, stalled = 0, time.monotonic()
        while not done.wait(POLL_S):
            if received[0] != seen:
                seen, stalled = received[0], time.monotonic()
            elif time.monotonic() - stalled > STALL_S:
                break
        end = last[0] if done.is_set() else time.perf_counter()
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
    size = sum(len(p) for _, p in payloads) / n
    result = Result("paho pub -> sub (baseline)", n, end - first, received[0], put_s=published,
                    lost=n - received[0], notes=[f"{size:.0f} B payloads"])
    return result


# -- the pipeline ------------------------------------------------------------------------


def make_rules_bus(config: BrokerConfig, client_id: str) -> Bus:
    """The rules service's bus as gateway/app.py makes it: its availability is what lets the outboxes send."""
    availability = topics.rules_availability(SITE)
    bus = Bus(config, client_id, name="rules", clean_session=False, manual_ack=True,
              will=(availability, b'{"state":"offline"}'))
    bus.on_connect(lambda: bus.publish_json(availability, {"state": "online", "ts": time.time()}, retain=True))
    return bus


def rules_process(port: int, db_url: str, tag: str, ready: Any, stop: Any, stats: Any) -> None:
    """The rules service in a process of its own, as `campusgw run --only rules` runs it."""
    engine = db.make_engine(db_url)
    rules_bus = make_rules_bus(broker_config(port), f"bench-rules-{tag}")
    rules_bus.on_connect(ready.set)  # a Bus is connected once its subscriptions are confirmed
    rules = RulesService(SITE, rules_bus, db.make_sessions(engine))
    rules.start()
    rules_bus.start()
    stop.wait()
    rules.stop()
    rules_bus.stop()
    stats.put(rules.stats())
    engine.dispose()


def pipeline(port: int, engine: Engine, workdir: Path, events: int, devices: int, batch: int | None,
             db_kind: str, split: bool = False, make: Any = telemetry) -> Result:
    tag = uuid.uuid4().hex[:8]
    config = broker_config(port)
    sessions = db.make_sessions(engine)

    spawn = multiprocessing.get_context("spawn")
    if split:
        subscribed, stop_rules, stats_queue = spawn.Event(), spawn.Event(), spawn.Queue()
        worker = spawn.Process(target=rules_process, args=(
            port, engine.url.render_as_string(hide_password=False), tag, subscribed, stop_rules, stats_queue))
        worker.start()
    else:
        rules_bus = make_rules_bus(config, f"bench-rules-{tag}")
        subscribed = threading.Event()  # type: ignore[assignment]
        rules_bus.on_connect(subscribed.set)  # a Bus is connected once its subscriptions are confirmed
        rules = RulesService(SITE, rules_bus, sessions)
        rules.start()
        rules_bus.start()

    outbox = Outbox(workdir / f"outbox-{tag}.db", max_telemetry_bytes=256 * 1024 * 1024)
    drivers_bus = Bus(config, f"bench-drivers-{tag}", name="drivers")
    outbox.attach(drivers_bus, SITE)
    outbox_live = threading.Event()
    drivers_bus.on_connect(outbox_live.set)  # runs after the outbox's own hook: it now publishes live
    drivers_bus.start()
    try:
        wait_until(subscribed.is_set, 30, "the rules service's subscription")
        wait_until(outbox_live.is_set, 10, "the outbox's connection")
        items = make(events, devices, outbox.next_seq)
        ids = {event.id for _, event in items}

        first, cpu = time.perf_counter(), time.process_time()
        if batch:
            for i in range(0, len(items), batch):
                outbox.put_many(items[i:i + batch])
        else:
            for topic, event in items:
                outbox.put(topic, event)
        put_s = time.perf_counter() - first
        count, seconds, sent_s, seen, stalled = 0, 0.0, None, -1, time.monotonic()
        while True:
            with engine.connect() as conn:
                count = conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
            now = time.perf_counter()
            if sent_s is None and outbox.published >= events:
                sent_s = now - first
            if count >= events and not seconds:
                seconds = now - first
            if seconds and (sent_s is not None or now - first > seconds + 5):
                break  # all stored, and the outbox saw every PUBACK (or never will)
            if count != seen:
                seen, stalled = count, time.monotonic()
            elif time.monotonic() - stalled > STALL_S and not seconds:
                seconds = now - first
                break
            time.sleep(POLL_S)
        cpu = time.process_time() - cpu
        with engine.connect() as conn:
            stored = list(conn.execute(text("SELECT id FROM events")).scalars())
    finally:
        outbox.close()
        drivers_bus.stop()
        if split:
            stop_rules.set()
            stats = stats_queue.get(timeout=30)
            worker.join(30)
        else:
            rules.stop()
            rules_bus.stop()
            stats = rules.stats()
        forget_session(port, f"bench-rules-{tag}")
    stored_ids = set(stored)
    how = f"put_many({batch})" if batch else "put() one by one"
    name = f"outbox {how} -> {db_kind}{' (rules apart)' if split else ''}"
    result = Result(name, events, seconds, count, put_s=put_s, sent_s=sent_s, lost=len(ids - stored_ids),
                    extra=len(stored) - len(stored_ids) + len(stored_ids - ids))
    if not split:
        result.notes.append(f"CPU of this process (outbox, broker if embedded, rules): "
                            f"{cpu / max(count, 1) * 1000:.2f} ms an event")
    if stats["rejected"] or stats["failed_batches"]:
        result.notes.append(f"rejected {stats['rejected']}, failed batches {stats['failed_batches']}")
    return result


def forget_session(port: int, client_id: str) -> None:
    """Drop the rules client's persistent session, or the broker queues every later run's events for it."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.username_pw_set(*TEST_LOGIN)
    client.connect("127.0.0.1", port)
    client.loop_start()
    with contextlib.suppress(RuntimeError):
        wait_until(client.is_connected, 5, "the broker")
    client.disconnect()
    client.loop_stop()


# -- report ------------------------------------------------------------------------------


def report(args: argparse.Namespace, base: Result, runs: list[Result]) -> None:
    broker_name = "Mosquitto (own process)" if args.broker == "mosquitto" else "embedded amqtt (in this process)"
    print()
    what = "alarm button presses and releases" if args.presses else "campus.device.telemetry events"
    print(f"ingest: {args.events} {what} from {args.devices} devices, QoS 1, "
          f"broker {broker_name}; {os.cpu_count()} cores")
    print(f"{'run':50}{'events/s':>9}{'x paho':>8}{'total s':>9}{'put s':>7}{'sent s':>8}{'stored':>8}"
          f"{'lost':>6}{'dup':>5}")
    for r in [base, *runs]:
        ratio = r.rate / base.rate if base.rate else 0.0
        sent = f"{r.sent_s:8.2f}" if r.sent_s is not None else f"{'-':>8}"
        put = f"{r.put_s:7.2f}" if r.put_s is not None else f"{'-':>7}"
        print(f"{r.name:50}{r.rate:9.0f}{ratio:8.2f}{r.seconds:9.2f}{put}{sent}{r.received:8d}{r.lost:6d}{r.extra:5d}")
    print("put s: until the last put returned (baseline: until the last publish() returned); sent s: until the "
          "broker acknowledged every event to the outbox; total s: until the database held all of them "
          "(baseline: until the subscriber had all). lost/dup: ids put but not stored / stored twice or unknown.")
    for r in [base, *runs]:
        if r.notes:
            print(f"  {r.name}: {'; '.join(r.notes)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="events per put_many() call")
    parser.add_argument("--no-single", action="store_true", help="skip the put()-one-by-one runs")
    parser.add_argument("--split", action="store_true",
                        help="also run with the rules service in a process of its own (campusgw run --only rules)")
    parser.add_argument("--presses", action="store_true",
                        help="alarm button presses and releases instead of telemetry: each changes an alarm")
    args = parser.parse_args(argv)
    make = presses if args.presses else telemetry
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    db_kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    modes: list[int | None] = [args.batch] if args.no_single else [args.batch, None]

    runs: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp_name, broker(args.broker, Path(tmp_name)) as port:
        workdir = Path(tmp_name)
        print(f"baseline: {args.events} messages through plain paho ...", file=sys.stderr, flush=True)
        seqs: dict[str, int] = {}

        def seq(source: str) -> int:
            seqs[source] = seqs.get(source, 0) + 1
            return seqs[source]

        base = baseline(port, make(args.events, args.devices, seq))
        for db_kind in db_kinds:
            for batch in modes:
                how = f"put_many({batch})" if batch else "put() one by one"
                print(f"pipeline: {db_kind}, {how} ...", file=sys.stderr, flush=True)
                for split in ([False, True] if args.split else [False]):
                    with database(db_kind, workdir, f"records-{len(runs)}") as engine:
                        runs.append(pipeline(port, engine, workdir, args.events, args.devices, batch, db_kind,
                                             split, make))
    report(args, base, runs)
    return 0 if all(r.lost == 0 and r.extra == 0 and r.received == r.events for r in [base, *runs]) else 1


if __name__ == "__main__":
    sys.exit(main())
