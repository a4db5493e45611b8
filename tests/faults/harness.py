"""The fault suite's shared pieces, and the faults themselves as scenarios the tests and bench/faults.py run.

Counting is independent of the gateway: "generated" is what the scenario made itself (event ids once
`put_many` returned, or presses it made on the Modbus simulator); "recorded" is read straight from the
database (`events`, `alarms.occurrences`, `alarm_transitions`), never from the gateway's own counters.
Every fault is real: a SIGKILL, a terminated PostgreSQL backend, a SQLite lock held by another process,
a full tmpfs, a poison message on the real broker. Each scenario returns an Outcome (generated, recorded,
duplicates, recovery time); `Outcome.check()` is the suite's assertion.

    python -m tests.faults.harness -c site.yaml --ids FILE --events N [--rate R]

runs the drivers part with the event generator in a process of its own (so it can be SIGKILLed): it appends
the ids of each batch to FILE (flushed and fsynced) once put_many returned, and exits once its outbox is
drained; `--events 0` only drains the outbox left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import psycopg
import yaml
from sqlalchemy import Engine, create_engine, func, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from gateway import topics
from gateway.broker import login
from gateway.config import Config
from gateway.config_file import load_config, validate_config
from gateway.events import Event, make_event
from gateway.outbox import Outbox
from gateway.records.db import normalise_url
from gateway.records.models import Alarm, AlarmTransition, Device, IngestedEvent
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import PG_ADMIN_URL, ROOT, MosquittoBroker, free_port, wait_for

SITE = "fault-school"
TZ = ZoneInfo("Asia/Shanghai")
TRIGGERED = "campus.alarm_input.triggered"
GEN = "gen-"  # generated events come from devices gen-00 ... gen-09
GEN_DEVICES = 10
BATCH = 100  # events per put_many
RECOVERY_S = 45.0  # how long a scenario waits for everything to be recorded once the fault is over (the bench
                   # raises it for its bigger bursts)
OUTAGE_S = 3.0  # a killed broker or process is started again this long after
INPUTS = 64  # buttons on the simulated module: presses on distinct inputs stay distinct
PRESS_S = 0.01  # a 10 ms press (the driver's latch handling of longer ones is tests/faults/test_held_presses.py)
BOX = "box"


# -- the outcome -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    broker: str
    db: str
    generated: int
    recorded: int  # of the generated, found in the records
    duplicates: int  # recorded more than once (alarm occurrences or transitions of one event)
    recovery_s: float | None  # from the end of the fault until all was recorded; None: never
    problems: list[str] = field(default_factory=list)  # anything else wrong: the check fails
    notes: list[str] = field(default_factory=list)  # what the fault met (e.g. how far the burst had got)

    @property
    def lost(self) -> int:
        return self.generated - self.recorded

    def summary(self) -> str:
        recovery = "never" if self.recovery_s is None else f"{self.recovery_s:.1f} s"
        text = (f"{self.fault} ({self.broker}, {self.db}): generated {self.generated}, recorded {self.recorded}, "
                f"lost {self.lost}, duplicates {self.duplicates}; recovery {recovery}")
        return text + "".join(f"\n  {n}" for n in self.notes) + "".join(f"\n  problem: {p}" for p in self.problems)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and not self.problems

    def check(self) -> None:
        check_all([self])


def check_all(outcomes: list[Outcome]) -> None:
    """The suite's assertion: 0 lost, 0 duplicated, nothing else wrong; prints every outcome and its recovery
    time first (visible with -s)."""
    for outcome in outcomes:
        print(outcome.summary())
        if outcome.recovery_s is not None:
            print(f"recovery {outcome.recovery_s:.1f} s")
    assert all(o.ok for o in outcomes), "\n".join(o.summary() for o in outcomes if not o.ok)


def time_until(condition: Callable[[], Any], timeout: float | None = None) -> float | None:
    """Seconds until `condition` holds, or None if it does not within `timeout` (default RECOVERY_S)."""
    start = time.monotonic()
    try:
        wait_for(condition, RECOVERY_S if timeout is None else timeout, "")
    except AssertionError:
        return None
    return time.monotonic() - start


# -- the site and its processes ----------------------------------------------------------------------------


class Site:
    """A site config file (YAML) for the gateway's processes: one broker, one database, optional devices."""

    def __init__(self, workdir: Path, broker_url: str, db_url: str, devices: list[dict[str, Any]] | None = None,
                 data_dir: Path | None = None, busy_timeout_s: float | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.broker_url = broker_url
        self.db_url = db_url
        self.devices = devices or []
        self.data_dir = data_dir or workdir / "data"
        self.busy_timeout_s = busy_timeout_s
        # A fixed port, so the all-in-one gateway's embedded broker keeps it across restarts.
        self.broker_port = free_port() if broker_url == "embedded" else int(broker_url.rsplit(":", 1)[1])
        self.path = workdir / "site.yaml"
        self.path.write_text(yaml.safe_dump(self.document(), allow_unicode=True))

    def document(self) -> dict[str, Any]:
        broker = ({"url": "embedded", "embedded_port": self.broker_port} if self.broker_url == "embedded"
                  else {"url": self.broker_url})
        return {"site": {"id": SITE, "name": "Fault School"},
                "gateway": {"id": "gw1", "data_dir": str(self.data_dir)},
                "broker": broker, "database": {"url": self.db_url, **(
                    {"sqlite_busy_timeout_s": self.busy_timeout_s} if self.busy_timeout_s else {})},
                "console": {"host": "127.0.0.1", "port": 0}, "devices": self.devices}

    def config(self) -> Config:
        return validate_config(self.document())

    def login(self) -> tuple[str, str] | None:
        """A device driver's MQTT login: on the embedded broker the drivers' user, whose password the gateway
        makes at its first start (so wait for it to listen); Mosquitto lets anyone in here."""
        if self.broker_kind != "embedded":
            return None
        wait_for(lambda: listening(self.broker_port), 30, f"the embedded broker on port {self.broker_port}")
        return login("drivers", self.data_dir)

    @property
    def broker_kind(self) -> str:
        return "embedded" if self.broker_url == "embedded" else "mosquitto"

    @property
    def db_kind(self) -> str:
        return "sqlite" if self.db_url.startswith("sqlite") else "postgresql"


class Part:
    """`campusgw run -c site.yaml [--only PART]` in a process of its own; its log goes to a file."""

    def __init__(self, site: Site, only: str | None = None) -> None:
        self.site = site
        self.only = only
        self.log_path = site.workdir / f"{only or 'gateway'}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Part:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Part:
        command = [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.site.path)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command + (["--only", self.only] if self.only else []), cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        """True while it runs; AssertionError with its last log lines if it exited by itself."""
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.log_path.stem} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return True

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a paused process would not see SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def mosquitto_url(broker: MosquittoBroker) -> str:
    return f"mqtt://127.0.0.1:{broker.port}"


# -- counting what was recorded ----------------------------------------------------------------------------


def _chunks(values: Collection[str], size: int = 500) -> Iterator[list[str]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Records:
    """The database as it is, each query on a fresh connection: a terminated backend, a locked SQLite file
    or a full disk must not break the count. Polling helpers return nothing while the tables are missing."""

    def __init__(self, db_url: str) -> None:
        self.engine: Engine = create_engine(normalise_url(db_url), poolclass=NullPool)

    def _quiet(self, query: Callable[[], Any], default: Any) -> Any:
        try:
            return query()
        except SQLAlchemyError:
            return default

    def count(self, device_prefix: str = GEN) -> int:
        """Events from devices whose id starts with `device_prefix` (cheap enough to poll)."""
        def query() -> int:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(IngestedEvent).where(
                    IngestedEvent.device_id.startswith(device_prefix))).scalar_one())
        return int(self._quiet(query, 0))

    def found(self, ids: Collection[str]) -> set[str]:
        """Which of `ids` are in the events table."""
        with self.engine.connect() as conn:
            return {row[0] for chunk in _chunks(ids)
                    for row in conn.execute(select(IngestedEvent.id).where(IngestedEvent.id.in_(chunk)))}

    def all_found(self, ids: Collection[str]) -> bool:
        return bool(self._quiet(lambda: len(self.found(ids)) == len(set(ids)), False))

    def duplicates(self, ids: Collection[str]) -> int:
        """Events of `ids` whose effect was recorded more than once: extra transitions carrying the event's id,
        or extra occurrences of the alarm it raised (each generated event has an alarm point of its own)."""
        transitions = occurrences = 0
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                counts = conn.execute(select(func.count()).select_from(AlarmTransition).where(
                    AlarmTransition.event_id.in_(chunk)).group_by(AlarmTransition.event_id)).scalars()
                transitions += sum(n - 1 for n in counts)
                occurrences += sum(n - 1 for n in conn.execute(select(Alarm.occurrences).where(
                    Alarm.raised_event_id.in_(chunk))).scalars())
        return max(transitions, occurrences)

    def triggered(self, device: str = BOX) -> Counter[int]:
        """Triggered events of `device`, per input."""
        def query() -> Counter[int]:
            with self.engine.connect() as conn:
                rows = conn.execute(select(IngestedEvent.data).where(
                    IngestedEvent.device_id == device, IngestedEvent.type == TRIGGERED)).scalars()
                return Counter(int(data["input"]) for data in rows)
        result: Counter[int] = self._quiet(query, Counter())
        return result

    def occurrences(self, device: str = BOX) -> Counter[int]:
        """Occurrences counted on `device`'s button alarms (key "<device>:button-<n>"), per input."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Alarm.key, func.sum(Alarm.occurrences)).where(
                Alarm.device_id == device, Alarm.key.like(f"{device}:button-%")).group_by(Alarm.key)).all()
        return Counter({int(key.rsplit("-", 1)[1]): int(n) for key, n in rows})

    def online(self, device: str = BOX) -> bool:
        def query() -> bool:
            with self.engine.connect() as conn:
                return bool(conn.execute(select(Device.online).where(Device.id == device)).scalar())
        return bool(self._quiet(query, False))

    def raised_at(self, alarm_type: str) -> list[datetime]:
        """When each alarm of `alarm_type` was raised."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(Alarm.raised_at).where(Alarm.alarm_type == alarm_type)).scalars())

    def received_at(self, ids: Collection[str]) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            return {row[0]: row[1] for chunk in _chunks(ids) for row in conn.execute(
                select(IngestedEvent.id, IngestedEvent.received_at).where(IngestedEvent.id.in_(chunk)))}

    def stored(self, ids: Collection[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """(seq, data) of those of `ids` in the events table."""
        with self.engine.connect() as conn:
            return {row[0]: (row[1], row[2]) for chunk in _chunks(ids) for row in conn.execute(
                select(IngestedEvent.id, IngestedEvent.seq, IngestedEvent.data).where(IngestedEvent.id.in_(chunk)))}

    def quarantined(self) -> set[str]:
        """Event ids in quarantined_events (none while that table does not exist)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("quarantined_events"):
                return set()
            return {str(row[0]) for row in conn.exec_driver_sql("SELECT event_id FROM quarantined_events")}

    def close(self) -> None:
        self.engine.dispose()


def press_outcome(fault: str, site: Site, pressed: Counter[int], records: Records,
                  recovery_s: float | None, notes: list[str] | None = None,
                  in_flight: Collection[int] = ()) -> Outcome:
    """Presses made against triggered events recorded and the occurrences counted on each button's alarm.
    `in_flight`: inputs whose press was recorded but whose latch was still set when the driver was killed; the
    restarted driver reports that latch once more (it cannot tell it from a press made while it was down, and
    a miss would lose a press), so one extra event there is the design, said in a note, not a duplicate."""
    triggered = records.triggered()
    occurrences = records.occurrences()
    inputs = set(pressed) | set(triggered)
    recorded = sum(min(pressed[n], triggered[n]) for n in inputs)
    again = sum(1 for n in in_flight if triggered[n] > pressed[n])
    duplicates = sum(max(0, triggered[n] - pressed[n] - (n in in_flight)) + max(0, occurrences[n] - triggered[n])
                     for n in inputs)
    if again:
        notes = [*(notes or []), f"reported again after the restart: {again} press(es) recorded just before the "
                                 "kill whose latch was not yet cleared"]
    return Outcome(fault, site.broker_kind, site.db_kind, sum(pressed.values()), recorded, duplicates, recovery_s,
                   notes=notes or [])


def all_pressed_recorded(records: Records, pressed: Callable[[], Counter[int]]) -> Callable[[], bool]:
    def check() -> bool:
        triggered = records.triggered()
        return all(triggered[n] >= k for n, k in pressed().items())
    return check


def at_least(records: Records, n: int) -> Callable[[], bool]:
    return lambda: records.count() >= n


# -- generated events --------------------------------------------------------------------------------------


def generated_events(outbox: Outbox, first: int, n: int, telemetry: bool = False) -> list[tuple[str, Event]]:
    """`n` events over GEN_DEVICES devices, numbered from `first`: alarm-class triggered events, each on an
    alarm point of its own (so each raises one alarm, and a duplicate shows as a second occurrence), or
    telemetry."""
    items = []
    now = time.time()
    for i in range(first, first + n):
        device = f"{GEN}{i % GEN_DEVICES:02d}"
        data: dict[str, Any]
        if telemetry:
            event_type, data = "campus.device.telemetry", {"metrics": {"i": i, "temperature_c": 21.5}}
        else:
            event_type, data = TRIGGERED, {"point": f"p{i}", "input": i % 256 + 1, "point_type": "panic",
                                           "zone": None, "place": None}
        seq = outbox.next_seq(topics.source(SITE, "alarm_input", device))
        event = make_event(SITE, "alarm_input", device, event_type, data, seq, now, TZ)
        items.append((topics.event(SITE, "alarm_input", device, event_type), event))
    return items


class Generator:
    """The drivers part as gateway/app.py wires it (outbox, bus, confirmations), in this process and without
    devices (with `parts` ("drivers", "rules"): the rules service too): events go into its outbox with
    put_many, as a driver's emit puts them."""

    def __init__(self, config: Config, parts: tuple[str, ...] = ("drivers",)) -> None:
        self.running = Running(config, parts=parts)
        outbox = self.running.gateway.outbox
        assert outbox is not None
        self.outbox = outbox
        self.ids: list[str] = []  # generated: appended once their put_many returned
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, n: int, rate: float | None = None, telemetry: bool = False,
            on_batch: Callable[[list[str]], None] | None = None) -> None:
        """`n` events in batches of BATCH, paced to `rate` a second (None: as fast as possible)."""
        started = time.monotonic()
        for done in range(0, n, BATCH):
            if rate:
                time.sleep(max(0.0, started + done / rate - time.monotonic()))  # pacing, not synchronisation
            items = generated_events(self.outbox, len(self.ids), min(BATCH, n - done), telemetry)
            self.outbox.put_many(items)
            batch = [event.id for _, event in items]
            self.ids.extend(batch)
            if on_batch:
                on_batch(batch)

    def burst(self, n: int, rate: float | None = None) -> None:
        """put() in a thread of its own; join() waits for it and raises what it raised."""
        def run() -> None:
            try:
                self.put(n, rate)
            except BaseException as exc:
                self.error = exc
        self._thread = threading.Thread(target=run, name="burst", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(120)
        if self.error is not None:
            raise self.error

    def connected(self) -> bool:
        host = self.running.gateway.host
        return host is not None and host.bus.connected.is_set()

    def handed_over(self) -> bool:
        """Everything put has been sent to the broker (and is at most awaiting confirmation)."""
        stats = self.outbox.stats()
        return stats.queued - getattr(stats, "unconfirmed", 0) - getattr(stats, "waiting_in_memory", 0) == 0

    def drained(self) -> bool:
        """Nothing left in the outbox: every event sent and, with end-to-end confirmation, confirmed."""
        stats = self.outbox.stats()
        return stats.queued == 0 and getattr(stats, "unconfirmed", 0) == 0

    def close(self) -> None:
        self.running.stop()


def read_ids(path: Path) -> list[str]:
    """Ids a generator process wrote; a line cut short by a SIGKILL is not an id."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n") if len(line) == 36]


class GeneratorProcess:
    """The generator with its outbox in a process of its own (`python -m tests.faults.harness`), so it can be
    SIGKILLed; `events` 0 only delivers what the outbox holds, then exits."""

    def __init__(self, site: Site, ids: Path, events: int, rate: float | None) -> None:
        self.command = [sys.executable, "-m", "tests.faults.harness", "-c", str(site.path), "--ids", str(ids),
                        "--events", str(events)] + (["--rate", str(rate)] if rate else [])
        self.log_path = site.workdir / "generator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GeneratorProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def exited(self) -> bool:
        """It ended by itself, its outbox drained; AssertionError if it failed."""
        assert self.proc is not None
        code = self.proc.poll()
        if code not in (None, 0):
            raise AssertionError(f"the generator exited with {code}:\n{self.log_path.read_text()[-3000:]}")
        return code == 0


def generated_outcome(fault: str, site: Site, ids: list[str], records: Records, recovery_s: float | None,
                      drained: Callable[[], bool], notes: list[str] | None = None) -> Outcome:
    """Generated ids against the records; once all are there, the outbox must drain (nothing left to resend)."""
    problems = []
    if recovery_s is not None and time_until(drained, 30) is None:
        problems.append("the outbox did not drain within 30 s of everything being recorded")
    found = records.found(ids)
    return Outcome(fault, site.broker_kind, site.db_kind, len(ids), len(found), records.duplicates(found),
                   recovery_s, problems, notes or [])


# -- a plain MQTT client: probes and poison ----------------------------------------------------------------


class Publisher:
    """A plain paho client publishing QoS 1 straight to the broker, bypassing any outbox."""

    def __init__(self, port: int, login: tuple[str, str] | None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fault-publisher-{os.getpid()}")
        if login:
            self.client.username_pw_set(*login)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port)  # retried until the broker listens (a gateway starting)
        self.client.loop_start()
        wait_for(self.client.is_connected, 30, f"the broker on port {port}")
        self.seq: Counter[str] = Counter()

    def event(self, device: str, point: str, **changes: Any) -> tuple[str, bytes, str]:
        """(topic, payload, id) of a triggered event of `device` (its own seq), with envelope fields changed."""
        self.seq[device] += 1
        event = make_event(SITE, "alarm_input", device, TRIGGERED,
                           {"point": point, "input": 1, "point_type": "panic", "zone": None, "place": None},
                           self.seq[device], time.time(), TZ)
        body = {**event.to_dict(), **changes}
        return topics.event(SITE, "alarm_input", device, TRIGGERED), json.dumps(body).encode(), event.id

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_rules_ready(site: Site, records: Records, part: Part, timeout: float = 30) -> None:
    """Publish probe events until one is recorded: from then on the rules service is subscribed (and on
    Mosquitto its session exists). Probes published before that went nowhere; they are not counted."""
    publisher = Publisher(site.broker_port, site.login())
    last = [0.0]

    def probe() -> bool:
        part.running()
        if time.monotonic() - last[0] > 0.25:
            last[0] = time.monotonic()
            topic, payload, _ = publisher.event("probe", f"probe-{publisher.seq['probe'] + 1}")
            publisher.client.publish(topic, payload, qos=1)
        return records.count("probe") > 0

    try:
        wait_for(probe, timeout, "the rules service to record a probe event")
    finally:
        publisher.close()


# -- button presses ----------------------------------------------------------------------------------------


def button_sim() -> ModbusDISimulator:
    """A latching module (as real alarm modules latch): a press made while nobody polls is still there."""
    sim = ModbusDISimulator(inputs=INPUTS, latch_address=INPUTS)
    sim.start()
    return sim


def button_box(sim: ModbusDISimulator) -> dict[str, Any]:
    """The site config's device entry for the simulated module: a panic button on every input."""
    return {"id": BOX, "kind": "alarm_input", "driver": "modbus_di", "poll_ms": 50,
            "connection": {"host": "127.0.0.1", "port": sim.port, "timeout_s": 0.3},
            "inputs": INPUTS, "latch": {"address": INPUTS}, "offline_after": 2,
            "points": [{"input": n, "name": f"button-{n}", "type": "panic"} for n in range(1, INPUTS + 1)]}


def module_online(part: Part, records: Records) -> Callable[[], bool]:
    return lambda: part.running() and records.online()


class Presser:
    """Presses the simulator's buttons at a steady rate, 10 ms each, counting every press itself.

    An input is pressed again only when the module will report it as a new press: released, its latch
    clear, and read twice since (so the driver has seen the release). While the driver is away each input
    can therefore be pressed once, and its latch keeps the press until the driver is back."""

    def __init__(self, sim: ModbusDISimulator, rate: float) -> None:
        self.sim = sim
        self.rate = rate
        self._pressed: Counter[int] = Counter()
        self._lock = threading.Lock()  # the presses are counted in the presser's thread, read in others
        self._waiting: set[int] = set()  # pressed, latch not yet seen clear
        self._ready_at: dict[int, int] = {}  # input -> the read count from which it may be pressed again
        self._next = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presser", daemon=True)

    def __enter__(self) -> Presser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)

    def counts(self) -> Counter[int]:
        with self._lock:
            return Counter(self._pressed)

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def _run(self) -> None:
        while not self._stop.wait(1 / self.rate):  # the pace of the presses, not synchronisation
            self._press_one()

    def _press_one(self) -> None:
        module = self.sim.modules[self.sim.default_unit]
        latched = self.sim.latched()
        reads = self.sim.reads
        for number in [n for n in self._waiting if not latched[n - 1]]:
            self._waiting.discard(number)
            self._ready_at[number] = reads + 2
        for k in range(INPUTS):
            number = (self._next + k) % INPUTS + 1
            if (number in self._waiting or latched[number - 1] or module.bits[number - 1]
                    or reads < self._ready_at.get(number, 0)):
                continue
            self.sim.press_for(number, PRESS_S)
            with self._lock:
                self._pressed[number] += 1
            self._waiting.add(number)
            self._next = number % INPUTS
            return


def flowing(presser: Presser, records: Records) -> Callable[[], bool]:
    """Presses are being made and every one so far is recorded."""
    recorded = all_pressed_recorded(records, presser.counts)
    return lambda: presser.total >= 5 and recorded()


# -- scenarios: events through the drivers' outbox ---------------------------------------------------------


@contextlib.contextmanager
def rules_and_generator(workdir: Path, broker: MosquittoBroker, db_url: str
                        ) -> Iterator[tuple[Site, Part, Generator, Records]]:
    """The rules service in its own process (ready: it has recorded a probe) and a generator in this one."""
    site = Site(workdir, mosquitto_url(broker), db_url)
    with contextlib.ExitStack() as stack:
        records = Records(db_url)
        stack.callback(records.close)
        rules = stack.enter_context(Part(site, "rules"))
        wait_rules_ready(site, records, rules)
        generator = Generator(site.config())
        stack.callback(generator.close)
        wait_for(generator.connected, 10, "the generator's outbox connected")
        yield site, rules, generator, records


def all_generated_recorded(records: Records, generator: Generator, events: int) -> Callable[[], bool]:
    return lambda: records.count() >= events and records.all_found(generator.ids)


def broker_killed(workdir: Path, broker: MosquittoBroker, db_url: str, events: int, *, drained: bool,
                  rate: float | None = None) -> Outcome:
    """Mosquitto SIGKILLed and started again OUTAGE_S later: mid-burst (put faster than the rules service
    records, so the broker holds a backlog for it), or once the outbox had handed every event to the broker
    (PUBACKed) while the rules service, stopped (SIGSTOP) at that moment, had committed none of them."""
    fault = "broker SIGKILL, outbox drained" if drained else "broker SIGKILL mid-burst"
    with rules_and_generator(workdir, broker, db_url) as (site, rules, generator, records):
        if drained:
            rules.pause()
            generator.put(events)
            wait_for(generator.handed_over, 30, "every event handed to the broker")
        else:
            generator.burst(events, rate)
            wait_for(at_least(records, events // 5), 30, "a fifth of the burst recorded")
        at_fault = f"at the kill: {len(generator.ids)} generated, {records.count()} recorded"
        broker.kill()
        time.sleep(OUTAGE_S)  # the outage
        broker.start()
        if drained:
            rules.resume()
        recovery = time_until(all_generated_recorded(records, generator, events))
        generator.join()
        return generated_outcome(fault, site, generator.ids, records, recovery, generator.drained, [at_fault])


def broker_restarted_without_session(workdir: Path, broker: MosquittoBroker, db_url: str, events: int) -> Outcome:
    """Mosquitto SIGKILLed and started again without its persistence file (no rules session, no retained
    availability) while the rules service is stopped (SIGSTOP); nobody is subscribed to events on that broker
    until the rules service is back, so the outbox holds what is generated meanwhile (it sends only once the
    rules service's availability is heard: events sent to nobody came again only by the resend, after later
    ones, out of order) and sends it once the rules service is subscribed again and says so."""
    with rules_and_generator(workdir, broker, db_url) as (site, rules, generator, records):
        rules.pause()
        broker.kill()
        time.sleep(OUTAGE_S)  # the outage
        broker.start(fresh=True)
        wait_for(generator.connected, 30, "the generator reconnected")
        generator.put(events)
        stats = generator.outbox.stats()
        held = f"held while nobody was subscribed: {stats.queued - stats.unconfirmed} of {stats.queued} queued"
        rules.resume()
        recovery = time_until(all_generated_recorded(records, generator, events))
        return generated_outcome("broker restarted without the rules session", site, generator.ids, records,
                                 recovery, generator.drained, [held])


def rules_killed(workdir: Path, broker: MosquittoBroker, db_url: str, events: int,
                 rate: float | None = 1000.0) -> Outcome:
    """The rules service SIGKILLed mid-burst and started again OUTAGE_S later."""
    with rules_and_generator(workdir, broker, db_url) as (site, rules, generator, records):
        generator.burst(events, rate)
        wait_for(at_least(records, events // 4), 30, "a quarter of the burst recorded")
        at_fault = f"at the kill: {len(generator.ids)} generated, {records.count()} recorded"
        rules.kill()
        time.sleep(OUTAGE_S)  # the outage
        rules.start()
        recovery = time_until(all_generated_recorded(records, generator, events))
        generator.join()
        return generated_outcome("rules SIGKILL mid-burst", site, generator.ids, records, recovery,
                                 generator.drained, [at_fault])


def postgres_terminated(workdir: Path, broker: MosquittoBroker, db_url: str, events: int, times: int,
                        rate: float | None = 1000.0) -> Outcome:
    """Every backend of the rules service's database terminated mid-burst, `times` times (after each, the
    recording must have moved on before the next)."""
    name = db_url.rsplit("/", 1)[1]
    with rules_and_generator(workdir, broker, db_url) as (site, rules, generator, records):
        generator.burst(events, rate)
        notes, problems = [], []
        for n in range(times):
            if time_until(at_least(records, records.count() + events // (times + 3)), 30) is None:
                problems.append(f"the recording did not move on within 30 s after termination {n}")
                break
            notes.append(f"terminated at {records.count()} recorded")
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        recovery = time_until(all_generated_recorded(records, generator, events))
        rules.running()
        generator.join()
        fault = f"PostgreSQL backends terminated x{times}"
        outcome = generated_outcome(fault, site, generator.ids, records, recovery, generator.drained, notes)
        outcome.problems += problems
        return outcome


def generator_killed(workdir: Path, broker: MosquittoBroker, db_url: str, events: int,
                     rate: float | None = 5000.0) -> Outcome:
    """The drivers' process (the generator with its outbox) SIGKILLed mid-burst, faster than the rules service
    records (so its outbox holds events not yet delivered), started again OUTAGE_S later on the same outbox
    file to deliver them."""
    site = Site(workdir, mosquitto_url(broker), db_url)
    ids_path = workdir / "generated.ids"
    with contextlib.ExitStack() as stack:
        records = Records(db_url)
        stack.callback(records.close)
        rules = stack.enter_context(Part(site, "rules"))
        wait_rules_ready(site, records, rules)
        generator = stack.enter_context(GeneratorProcess(site, ids_path, events, rate))
        wait_for(lambda: len(read_ids(ids_path)) >= events * 2 // 5, 60, "two fifths of the events generated")
        generator.kill()
        ids = read_ids(ids_path)
        at_fault = f"at the kill: {len(ids)} generated, {records.count()} recorded"
        time.sleep(OUTAGE_S)  # the outage
        drain = stack.enter_context(GeneratorProcess(site, ids_path, 0, None))  # delivers what its outbox holds
        recovery = time_until(lambda: records.count() >= len(ids) and records.all_found(ids))
        return generated_outcome("drivers (generator) SIGKILL mid-burst", site, ids, records, recovery,
                                 drain.exited, [at_fault])


# -- scenarios: button presses through the real drivers part -----------------------------------------------


def recover_while_pressing(pairs: list[tuple[Records, Presser]], after_s: float = 2.0) -> list[float | None]:
    """At the end of a fault: for each (records, presser), the seconds until every press made so far is
    recorded (None: not within RECOVERY_S), while the presses go on; then `after_s` more of pressing, and
    the wait until every press is recorded."""
    started = time.monotonic()
    checks = [all_pressed_recorded(records, snapshot(presser.counts())) for records, presser in pairs]
    times: list[float | None] = [None] * len(pairs)

    def recovered() -> bool:
        for i, check in enumerate(checks):
            if times[i] is None and check():
                times[i] = time.monotonic() - started
        return None not in times

    time_until(recovered)
    time.sleep(after_s)  # presses after the fault
    for _, presser in pairs:
        presser.stop()
    time_until(lambda: all(all_pressed_recorded(r, p.counts)() for r, p in pairs), 10 if None in times else 30)
    return times


def snapshot(counts: Counter[int]) -> Callable[[], Counter[int]]:
    return lambda: counts


def killed_while_pressing(workdir: Path, broker: MosquittoBroker | None, db_url: str, press_s: float = 2.0,
                          rate: float = 20.0) -> Outcome:
    """The part polling a latching module SIGKILLed while buttons are pressed, started again OUTAGE_S later:
    the drivers part (`--only drivers`, the rules service apart, Mosquitto) or, with `broker` None, the
    all-in-one gateway on its embedded broker (its outbox is its own, so presses are the generated count).
    Presses made while it is dead wait in the module's latches."""
    sim = button_sim()
    site = Site(workdir, mosquitto_url(broker) if broker else "embedded", db_url, devices=[button_box(sim)])
    with contextlib.ExitStack() as stack:
        stack.callback(sim.stop)
        records = Records(db_url)
        stack.callback(records.close)
        if broker is not None:
            rules = stack.enter_context(Part(site, "rules"))
            wait_rules_ready(site, records, rules)
        victim = stack.enter_context(Part(site, "drivers" if broker else None))
        wait_for(module_online(victim, records), 30, "the module online in the records")
        presser = stack.enter_context(Presser(sim, rate))
        time.sleep(press_s)  # presses while all is well
        at_fault = f"at the kill: {presser.total} pressed, {sum(records.triggered().values())} recorded"
        victim.kill()
        latched, done, made = sim.latched(), records.triggered(), presser.counts()
        in_flight = {n for n in made if latched[n - 1] and done[n] >= made[n]}
        time.sleep(OUTAGE_S)  # the outage; presses go on
        victim.start()
        [recovery] = recover_while_pressing([(records, presser)], press_s)
        fault = "drivers part SIGKILL" if broker else "all-in-one SIGKILL"
        return press_outcome(fault, site, presser.counts(), records, recovery, [at_fault], in_flight)


LOCK_SCRIPT = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def sqlite_locked(workdir: Path, broker: MosquittoBroker, lock_s: float = 40.0, rate: float = 10.0,
                  busy_timeout_s: float | None = None) -> list[Outcome]:
    """The records' SQLite file locked (BEGIN EXCLUSIVE in another process) for `lock_s` while buttons are
    pressed, on an all-in-one gateway with the embedded broker and one with Mosquitto, side by side (one
    lock period covers both); the gateways' `database.sqlite_busy_timeout_s` as given (default 30 s)."""
    with contextlib.ExitStack() as stack:
        sites, pairs = [], []
        for broker_url in ("embedded", mosquitto_url(broker)):
            sim = button_sim()
            stack.callback(sim.stop)
            name = "embedded" if broker_url == "embedded" else "mosquitto"
            site = Site(workdir / name, broker_url, f"sqlite:///{workdir / name / 'records.db'}",
                        devices=[button_box(sim)], busy_timeout_s=busy_timeout_s)
            records = Records(site.db_url)
            stack.callback(records.close)
            gateway = stack.enter_context(Part(site))
            sites.append((site, gateway))
            pairs.append((records, Presser(sim, rate)))
        for (_, gateway), (records, presser) in zip(sites, pairs, strict=True):
            wait_for(module_online(gateway, records), 30, "the module online in the records")
            stack.enter_context(presser)
        for records, presser in pairs:
            wait_for(flowing(presser, records), 30, "presses flowing into the records")
        lockers = []
        for site, _ in sites:
            locker = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, site.db_url.split("///", 1)[1],
                                       str(lock_s)], stdout=subprocess.PIPE, text=True)
            stack.callback(locker.kill)
            lockers.append(locker)
        for locker in lockers:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        for locker in lockers:
            locker.wait(lock_s + 30)  # the fault lasts as long as the lock is held
        notes = [[f"at the release: {presser.total} pressed, {sum(records.triggered().values())} recorded"]
                 for records, presser in pairs]
        times = recover_while_pressing(pairs)
        return [press_outcome(f"SQLite locked {lock_s:.0f} s", site, presser.counts(), records, recovery, note)
                for (site, _), (records, presser), recovery, note in zip(sites, pairs, times, notes, strict=True)]


class CannotMount(Exception):
    pass


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted afterwards; CannotMount (with mount's reason) where that is not
    allowed (not root, no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotMount(f"cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    with path.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)


def disk_full(workdir: Path, disk: Path, broker: MosquittoBroker, full_s: float = 6.0, rate: float = 10.0
              ) -> Outcome:
    """The gateway's data_dir (outbox) and the SQLite records on a small tmpfs, filled while buttons are
    pressed (drivers and rules parts apart, Mosquitto), freed `full_s` later: every press recorded once, and
    a gateway-health alarm raised while the disk was full."""
    sim = button_sim()
    site = Site(workdir, mosquitto_url(broker), f"sqlite:///{disk / 'records.db'}", devices=[button_box(sim)],
                data_dir=disk / "data")
    filler = disk / "filler"
    with contextlib.ExitStack() as stack:
        stack.callback(sim.stop)
        records = Records(site.db_url)
        stack.callback(records.close)
        rules = stack.enter_context(Part(site, "rules"))
        wait_rules_ready(site, records, rules)
        drivers = stack.enter_context(Part(site, "drivers"))
        wait_for(module_online(drivers, records), 30, "the module online in the records")
        presser = stack.enter_context(Presser(sim, rate))
        wait_for(flowing(presser, records), 30, "presses flowing into the records")
        filled_at = time.time()
        fill(filler)
        time.sleep(full_s)  # the disk stays full this long; presses go on
        at_fault = f"when freed: {presser.total} pressed, {sum(records.triggered().values())} recorded"
        filler.unlink()
        freed_at = time.time()
        [recovery] = recover_while_pressing([(records, presser)])
        outcome = press_outcome("disk full", site, presser.counts(), records, recovery, [at_fault])
        if not any(filled_at - 1 <= at.timestamp() <= freed_at + 1 for at in records.raised_at("gateway_health")):
            outcome.problems.append("no gateway-health alarm raised while the disk was full")
        return outcome


# -- scenario: poison events -------------------------------------------------------------------------------


GOOD_LATENCY_S = 2.0  # a good event published beside poison must still be recorded this soon
MAX_FAILURE_LINES = 5  # "could not record" lines in the log: more is a retry storm
GOOD_BETWEEN = 3  # good events published before each poison one


def poison_events(publisher: Publisher) -> list[tuple[str, bytes, str, bool]]:
    """(topic, payload, id, may be stored) of events that pass the JSON Schemas but a database cannot hold
    as they are: a date that does not exist and a seq past 64 bits must never be stored; a seq past 31 bits
    (fine for SQLite, not PostgreSQL's integer) and a 10^30 integer in the data may be, if kept intact."""
    bad_date = publisher.event("poison-date", "x", time="2026-02-30T10:00:00+08:00")
    huge_seq = publisher.event("poison-seq", "x", seq=2**64)
    big_seq = publisher.event("poison-seq31", "x", seq=2**31)
    big = make_event(SITE, "alarm_input", "poison-big", "campus.device.telemetry", {"metrics": {"n": 10**30}}, 1,
                     time.time(), TZ)
    big_number = (topics.event(SITE, "alarm_input", "poison-big", "campus.device.telemetry"), big.to_json(), big.id)
    return [(*bad_date, False), (*huge_seq, False), (*big_seq, True), (*big_number, True)]


def poison(workdir: Path, broker: MosquittoBroker | None, db_url: str, rounds: int = 2) -> Outcome:
    """Poison events published straight to the broker on the rules service's topics, between good ones: the
    good ones are recorded within GOOD_LATENCY_S, the poison never blocks them nor loops, and a good event
    after them is recorded as promptly. With `broker` None: the all-in-one gateway on its embedded broker."""
    site = Site(workdir, mosquitto_url(broker) if broker else "embedded", db_url)
    with contextlib.ExitStack() as stack:
        records = Records(db_url)
        stack.callback(records.close)
        part = stack.enter_context(Part(site, "rules" if broker else None))
        wait_rules_ready(site, records, part)
        publisher = Publisher(site.broker_port, site.login())
        stack.callback(publisher.close)
        published: dict[str, float] = {}
        poison_sent: list[tuple[str, bool, bytes]] = []
        for _ in range(rounds):
            for topic, payload, event_id, may_store in poison_events(publisher):
                for _ in range(GOOD_BETWEEN):
                    good_topic, good_payload, good_id = publisher.event("good-box", f"g{len(published)}")
                    published[good_id] = time.time()
                    publisher.publish(good_topic, good_payload)
                publisher.publish(topic, payload)
                poison_sent.append((event_id, may_store, payload))
        time_until(lambda: records.all_found(published), 10)
        topic, payload, later = publisher.event("good-box", "later")
        published[later] = time.time()
        publisher.publish(topic, payload)
        recovery = time_until(lambda: records.all_found([later]), 10)
        found = records.found(published)
        stored = records.stored([i for i, _, _ in poison_sent])
        quarantined = records.quarantined() & {i for i, _, _ in poison_sent}
        outcome = Outcome("poison events", site.broker_kind, site.db_kind, len(published), len(found),
                          records.duplicates(found), recovery,
                          notes=[f"{len(poison_sent)} poison sent: {len(stored)} stored, {len(quarantined)} "
                                 f"quarantined, {len(poison_sent) - len(stored) - len(quarantined)} rejected"])
        late = [at.timestamp() - published[i] for i, at in records.received_at(found).items()
                if at.timestamp() - published[i] > GOOD_LATENCY_S]
        if late:
            outcome.problems.append(f"{len(late)} good events recorded later than {GOOD_LATENCY_S:g} s after "
                                    f"publishing (worst {max(late):.1f} s)")
        for event_id, may_store, payload in poison_sent:
            sent = json.loads(payload)
            if event_id in stored and not may_store:
                outcome.problems.append(f"poison stored: {payload[:160]!r}")
            elif event_id in stored and stored[event_id] != (sent["seq"], sent["data"]):
                outcome.problems.append(f"stored altered: {stored[event_id]} for {payload[:160]!r}")
        failures = part.log().count("could not record")
        if failures >= MAX_FAILURE_LINES:
            outcome.problems.append(f"{failures} 'could not record' lines in the log (a retry storm)")
        part.running()
        return outcome


# -- the generator as a process of its own -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.harness", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True, help="append the ids generated here")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--rate", type=float, help="events a second (default: as fast as possible)")
    args = parser.parse_args(argv)
    generator = Generator(load_config(args.config))
    try:
        wait_for(generator.connected, 30, "the broker")
        with args.ids.open("a") as out:
            def write(ids: list[str]) -> None:
                out.write("".join(f"{i}\n" for i in ids))
                out.flush()
                os.fsync(out.fileno())
            generator.put(args.events, args.rate, on_batch=write)
        wait_for(generator.drained, 3600, "the outbox to drain")
    finally:
        generator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
