"""Store and forward: every event is on disk before it is published, and leaves only once it is recorded.

One SQLite file (WAL). `put` is the durability point for a driver. A publisher
thread hands rows to paho in id order (so per device in order) while the
broker is connected. A row is deleted only when the rules service says it has
committed the event (`campus/v1/<site>/rules/committed`, a list of event ids
it publishes after each transaction), never on a broker's PUBACK: a broker
keeps QoS 1 messages in RAM, and a crash (or a fresh broker without the rules
service's session) loses them. So whatever is unconfirmed is sent again, in
order and marked `historical`: after a reconnect, when the rules service comes
online, and when confirmations stall (with backoff); the rules service drops
the duplicates by event id. The broker's durability no longer matters.

After each (re)connect nothing is sent until the rules service's availability
has been heard on the new connection: its retained `online` or `offline` (a
broker that kept its session, which queues for it), or its `online` once it
has subscribed again. A broker that lost its sessions (the embedded one
restarted, or a Mosquitto replaced) has no subscriber for events until then:
what went before its subscription went to nobody and came again only in the
resend, after later events had reached it, so a device's events reached it
out of order (a replay the rules service joined half-way). For the same
reason paho does not resend what the broker had not acknowledged when the
connection went (gateway.bus.Bus.publish_now): the outbox sends it again, in
order, once the rules service listens.

When the file cannot be written (disk full, I/O error, locked), `put` does not
raise into the driver: events wait in memory (telemetry dropped first past a
bound, alarms never) and are written, and sent, once it can write again.
Alarm-class events among them are also sent at once (when nothing older is
still to be sent), so a guard sees the alarm now; the copy sent later is
dropped by the rules service as a duplicate.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway import topics
from gateway.bus import Bus
from gateway.events import Event
from gateway.guard import Guarded

log = logging.getLogger("campusgw.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    class TEXT NOT NULL,
    payload BLOB NOT NULL,
    event_id TEXT,
    historical INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
# Rows handed to paho and not yet PUBACKed, at most; bounds paho's memory.
WINDOW = 500
REFILL = WINDOW // 4  # hand over rows in chunks at least this big while busy
# Rows sent and not yet confirmed, at most: bounds what one resend costs the broker and the rules service.
MAX_UNCONFIRMED = 20_000
# No confirmation for this long while some are due: send the unconfirmed again (doubling up to the max,
# so a rules service down for an hour does not get thousands of copies).
RESEND_AFTER_S = 10.0
RESEND_MAX_S = 300.0
# Events held in memory while the file cannot be written: past this many, telemetry and then records are
# dropped (counted as shed); alarm-class events are always kept.
MAX_WAITING = 50_000
RETRY_WRITE_S = 1.0


@dataclass
class OutboxStats:
    queued: int  # not yet confirmed by the rules service (on disk and in memory)
    unconfirmed: int  # of those, sent and awaiting confirmation
    waiting_in_memory: int  # not yet on disk (the file could not be written)
    published: int  # confirmed, since start
    resent: int  # sent again, since start
    shed: int
    telemetry_bytes: int
    unwritable: str | None  # why the file cannot be written now


class Outbox:
    def __init__(self, path: Path, *, max_telemetry_bytes: int,
                 on_shed: Callable[[int], None] | None = None,
                 on_unwritable: Callable[[bool, str], None] | None = None,
                 resend_after_s: float = RESEND_AFTER_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_telemetry_bytes = max_telemetry_bytes
        self.on_shed = on_shed
        self.on_unwritable = on_unwritable  # (active, detail): a gateway-health alarm
        self.resend_after_s = resend_after_s
        self._db = self._connect()
        self._migrate()
        self._lock = threading.Lock()  # guards self._db and the producer-side state below
        self._wake = threading.Condition()
        self._seq: dict[str, int] = dict(self._db.execute("SELECT device, seq FROM device_seq").fetchall())
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
                               "WHERE class = 'telemetry'").fetchone()
        self._telemetry_bytes: int = row[0]
        self.shed = 0
        self._shedding = False
        self.published = 0
        self.resent = 0
        self._waiting: deque[tuple[str, Event]] = deque()  # not on disk yet (the file could not be written)
        self._live: list[tuple[str, Event]] = []  # alarms among them, to send before they are on disk
        self.unwritable: str | None = None
        # Publisher-thread state. It never holds our lock while calling paho: paho holds its own lock while
        # calling us back, and taking ours there would deadlock.
        self._in_flight: deque[mqtt.MQTTMessageInfo] = deque()  # handed to paho, not yet PUBACKed
        self._unconfirmed: dict[str, tuple[int, int]] = {}  # event id -> (row id, telemetry bytes)
        self._last_handed = 0  # the next hand-over starts after this row id
        self._handed_max = 0  # the highest row id ever handed: rows above it may be shed
        self._resend_upto = 0  # rows up to this id are resends (marked historical)
        self._stall_s = resend_after_s
        self._last_progress = time.monotonic()
        # Set from paho's thread, taken by the publisher thread (a deque: no lock, so paho's thread never waits
        # on a disk write to hand over a confirmation).
        self._confirmed: deque[str] = deque()
        self._resend_wanted: str | None = None
        self._connected = False
        self._rules_heard = False  # the rules service's availability came on this connection: send
        self._bus: Bus | None = None
        self._guard: Guarded | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def _migrate(self) -> None:
        """An outbox from before end-to-end confirmation (a `sent` column): every row is unconfirmed now."""
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "sent" in columns:
            self._db.executescript("BEGIN; DROP INDEX IF EXISTS outbox_unsent; ALTER TABLE outbox DROP COLUMN sent; "
                                   "UPDATE outbox SET historical = 1; COMMIT;")
        if "event_id" not in columns:
            self._db.executescript("BEGIN; ALTER TABLE outbox ADD COLUMN event_id TEXT; "
                                   "UPDATE outbox SET event_id = json_extract(payload, '$.id'); COMMIT;")

    # -- producer side ---------------------------------------------------------------

    def next_seq(self, source: str) -> int:
        """The next per-device sequence number; `source` is the device's topic (kept across restarts)."""
        with self._lock:
            value = self._seq.get(source, 0) + 1
            self._seq[source] = value
            return value

    def put(self, topic: str, event: Event) -> None:
        """Write one event durably; returns once it is on disk (fsynced for alarm-class events), or, while
        the file cannot be written, once it waits in memory. Never raises for a disk or database error."""
        self.put_many([(topic, event)])

    def put_many(self, items: list[tuple[str, Event]]) -> None:
        if not items:
            return
        # The bus's own flag, not ours: it is cleared before the on-disconnect hooks run and set before the
        # on-connect ones, so an event put once the connection is known to be gone is never taken as live.
        live = self._bus is not None and self._bus.connected.is_set()
        with self._lock:
            if not live:
                items = [(topic, replace(event, historical=True)) for topic, event in items]
            over = False
            if self._waiting:  # keep order: nothing overtakes what is waiting in memory
                self._hold(items)
            else:
                try:
                    self._write(items)
                except sqlite3.Error as exc:
                    self._hold(items)
                    self._became_unwritable(exc)
                else:
                    over = self._telemetry_bytes > self.max_telemetry_bytes
            if self._waiting and self._connected:
                self._live += [(t, e) for t, e in items if e.event_class == "alarm"]
        if over:
            self._shed()
        with self._wake:
            self._wake.notify()

    def _write(self, items: list[tuple[str, Event]]) -> None:
        """One transaction (under self._lock)."""
        rows = [(e.device, topic, e.event_class, e.to_json(), e.id, int(e.historical), time.time())
                for topic, e in items]
        alarm = any(e.event_class == "alarm" for _, e in items)
        db = self._db
        if alarm:  # an alarm must survive a power cut, not only a crash
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN")
            db.executemany("INSERT INTO outbox (device, topic, class, payload, event_id, historical, created) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            seqs = {e.source: e.seq for _, e in items}
            db.executemany("INSERT INTO device_seq (device, seq) VALUES (?, ?) "
                           "ON CONFLICT(device) DO UPDATE SET seq = MAX(seq, excluded.seq)", seqs.items())
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if alarm:
                db.execute("PRAGMA synchronous=NORMAL")
        self._telemetry_bytes += sum(len(r[3]) for r in rows if r[2] == "telemetry")

    def _hold(self, items: list[tuple[str, Event]]) -> None:
        """Keep events in memory (under self._lock); past MAX_WAITING drop the oldest telemetry, then records."""
        self._waiting.extend(items)
        if len(self._waiting) <= MAX_WAITING:
            return
        for victim in ("telemetry", "record"):
            kept = deque(i for i in self._waiting if i[1].event_class != victim)
            dropped = len(self._waiting) - len(kept)
            if dropped:
                self._waiting = kept
                self.shed += dropped
                log.error("outbox cannot write and holds %d events in memory: dropped %d %s events (alarms are "
                          "kept)", len(kept), dropped, victim)
            if len(self._waiting) <= MAX_WAITING:
                return

    def _became_unwritable(self, exc: sqlite3.Error) -> None:
        first = self.unwritable is None
        self.unwritable = f"{self.path}: {exc}"
        if first:
            log.error("the outbox cannot write (%s): events wait in memory until it can", self.unwritable)
            self._report_unwritable(True)

    def _report_unwritable(self, active: bool) -> None:
        if self.on_unwritable is None:
            return
        detail = (f"the outbox cannot be written ({self.unwritable}): events wait in memory; free disk space"
                  if active else "the outbox can be written again: the events held in memory are on disk")
        # Called from a thread of ours, outside our lock: the callback puts an event into this outbox.
        threading.Thread(target=self.on_unwritable, args=(active, detail), daemon=True).start()

    def _write_waiting(self) -> None:
        """Publisher thread: write what waits in memory, in order, once the file takes it."""
        with self._lock:
            if not self._waiting:
                return
            items = list(self._waiting)
            try:
                for start in range(0, len(items), 1000):
                    self._write(items[start:start + 1000])
                    for _ in range(min(1000, len(items) - start)):
                        self._waiting.popleft()
            except sqlite3.Error as exc:
                self.unwritable = f"{self.path}: {exc}"
                return
            log.warning("the outbox can write again: %d events held in memory are on disk", len(items))
            self.unwritable = None
        self._report_unwritable(False)

    def _send_live(self, reader: sqlite3.Connection) -> None:
        """Alarms held in memory go out now, unless older events are still to be sent (order per device)."""
        with self._lock:
            live, self._live = self._live, []
            after, heard = self._last_handed, self._rules_heard
        if not live or self._bus is None or not heard:
            return  # with no rules service listening yet, they go in order once written and it listens
        if (reader.execute("SELECT MAX(id) FROM outbox").fetchone()[0] or 0) > after:
            return  # they go in order once written
        for topic, event in live:
            self._bus.publish_now(topic, event.to_json(), qos=1)

    def _shed(self) -> None:
        """Drop the oldest unsent telemetry until under the bound; alarm-class rows are never touched."""
        with self._lock:
            dropped = 0
            while self._telemetry_bytes > self.max_telemetry_bytes * 0.9:
                rows = self._db.execute(
                    "SELECT id, LENGTH(payload) FROM outbox WHERE class = 'telemetry' AND id > ? "
                    "ORDER BY id LIMIT 500", (self._handed_max,)).fetchall()
                if not rows:
                    break
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
                self._telemetry_bytes -= sum(r[1] for r in rows)
                dropped += len(rows)
            self.shed += dropped
            first = dropped and not self._shedding
            self._shedding = self._shedding or bool(dropped)
        if dropped:
            log.warning("outbox over its bound of %d bytes: shed %d telemetry events (alarms are kept)",
                        self.max_telemetry_bytes, dropped)
        if first and self.on_shed:
            self.on_shed(dropped)

    # -- publisher side --------------------------------------------------------------

    def attach(self, bus: Bus, site: str, on_failing: Callable[[str, bool, str], None] | None = None) -> None:
        """Start publishing through `bus`, and take the confirmations of the rules service of `site`."""
        self._bus = bus
        with self._lock:
            # Whatever is here from a previous run was not published live, or not confirmed.
            self._db.execute("UPDATE outbox SET historical = 1")
        bus.client.on_publish = self._on_publish
        bus.subscribe(topics.committed(site), self._on_committed)
        bus.subscribe(topics.rules_availability(site), self._on_rules_availability)
        bus.on_connect(self._on_connect)
        bus.on_disconnect(self._on_disconnect)
        self._guard = Guarded("outbox-publisher", self._run, on_failing=on_failing)
        self._guard.start()

    def alive(self) -> bool:
        return self._guard is not None and self._guard.alive()

    def health(self) -> dict[str, Any]:
        return self._guard.health() if self._guard else {}

    def _on_connect(self) -> None:
        with self._lock:
            self._connected = True
            self._resend_wanted = "the broker connection was lost"
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self) -> None:
        with self._lock:
            self._connected = False
            self._rules_heard = False  # a broker that restarted may have lost the rules service's session

    def _on_committed(self, message: mqtt.MQTTMessage) -> None:
        try:
            ids = json.loads(message.payload)["ids"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed confirmation on %s", message.topic)
            return
        if not isinstance(ids, list):
            return
        self._confirmed.extend(i for i in ids if isinstance(i, str))
        with self._wake:
            self._wake.notify()

    def _on_rules_availability(self, message: mqtt.MQTTMessage) -> None:
        """The rules service (re)connected: what it has not confirmed may have gone to nobody."""
        try:
            state = json.loads(message.payload).get("state")
        except (ValueError, AttributeError):
            return
        if state not in ("online", "offline"):
            return
        with self._lock:
            # Either says the broker knows the rules service (its session, offline, queues what it is sent);
            # none comes from a broker that lost it, until it has subscribed again and says so.
            self._rules_heard = True
            if state == "online":
                self._resend_wanted = "the rules service came online"
        with self._wake:
            self._wake.notify()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # Wake the publisher only when paho's window needs refilling (waking per PUBACK costs a context switch).
        if len(self._in_flight) >= WINDOW - REFILL:
            with self._wake:
                self._wake.notify()

    def _run(self, stop: threading.Event) -> None:
        reader = self._connect()
        try:
            while not stop.is_set():
                self._apply_confirmations()
                self._send_live(reader)
                self._write_waiting()
                self._drop_acknowledged()
                self._maybe_resend()
                if self._hand_over(reader):
                    continue
                with self._wake:
                    if not stop.is_set() and not self._confirmed:
                        self._wake.wait(0.05 if self._in_flight else RETRY_WRITE_S if self._waiting else 1.0)
        finally:
            reader.close()

    def _apply_confirmations(self) -> None:
        done: dict[str, tuple[int, int]] = {}
        while self._confirmed:
            event_id = self._confirmed.popleft()
            if event_id in self._unconfirmed:
                done[event_id] = self._unconfirmed.pop(event_id)
        if not done:
            return
        rows = list(done.values())
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id, _ in rows])
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._unconfirmed.update(done)  # still unconfirmed here: sent again if the stall goes on
                raise
            self.published += len(rows)
            self._telemetry_bytes -= sum(size for _, size in rows)
            if self._shedding and self._telemetry_bytes < self.max_telemetry_bytes // 2:
                self._shedding = False
        self._last_progress = time.monotonic()
        self._stall_s = self.resend_after_s

    def _drop_acknowledged(self) -> None:
        """Forget what the broker has acknowledged (or what failed to go out: it is resent with the rest)."""
        while self._in_flight:
            info = self._in_flight[0]
            if info.rc == mqtt.MQTT_ERR_SUCCESS and not info.is_published():
                break
            self._in_flight.popleft()

    def _maybe_resend(self) -> None:
        with self._lock:
            why, self._resend_wanted = self._resend_wanted, None
        now = time.monotonic()
        if why is None and self._unconfirmed and now - self._last_progress > self._stall_s:
            why = f"no confirmation from the rules service for {now - self._last_progress:.0f} s"
            self._stall_s = min(self._stall_s * 2, RESEND_MAX_S)
        if why is None:
            return
        # After a reconnect paho holds none of what we handed it (gateway.bus.Bus.publish_now): those never
        # complete, whether or not they are still unconfirmed.
        self._in_flight.clear()
        if not self._unconfirmed:
            return
        log.warning("sending %d unconfirmed events again: %s", len(self._unconfirmed), why)
        self.resent += len(self._unconfirmed)
        self._resend_upto = max(self._resend_upto, self._last_handed)
        with self._lock:
            self._last_handed = 0
        self._unconfirmed.clear()
        self._last_progress = now

    def _hand_over(self, reader: sqlite3.Connection) -> bool:
        """Hand the next rows to paho; True if there may be more to hand right away."""
        room = min(WINDOW - len(self._in_flight), MAX_UNCONFIRMED - len(self._unconfirmed))
        with self._lock:
            connected, after = self._connected and self._rules_heard, self._last_handed
        if not connected or room <= 0 or (room < REFILL and self._in_flight):
            return False
        assert self._bus is not None
        rows = reader.execute("SELECT id, topic, payload, event_id, historical, class FROM outbox WHERE id > ? "
                              "ORDER BY id LIMIT ?", (after, room)).fetchall()
        handed = after
        try:
            for row_id, topic, payload, event_id, historical, event_class in rows:
                if historical or row_id <= self._resend_upto:
                    payload = _mark_historical(payload)
                info = self._bus.publish_now(topic, payload, qos=1)
                if info is None:  # the connection went while handing over: it is all sent again on reconnect
                    return False
                if not self._unconfirmed:
                    self._last_progress = time.monotonic()  # the stall clock runs from the first unconfirmed
                self._in_flight.append(info)
                self._unconfirmed[event_id] = (row_id, len(payload) if event_class == "telemetry" else 0)
                handed = row_id
        finally:
            with self._lock:
                if self._last_handed == after:  # not reset by a resend meanwhile
                    self._last_handed = handed
            self._handed_max = max(self._handed_max, handed)
        return bool(rows)

    def stop(self) -> None:
        if self._guard is not None:
            self._guard.stopping.set()
        with self._wake:
            self._wake.notify()
        if self._guard is not None:
            self._guard.stop(5)

    def stats(self) -> OutboxStats:
        with self._lock:
            on_disk = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            return OutboxStats(queued=on_disk + len(self._waiting), unconfirmed=len(self._unconfirmed),
                               waiting_in_memory=len(self._waiting), published=self.published,
                               resent=self.resent, shed=self.shed, telemetry_bytes=self._telemetry_bytes,
                               unwritable=self.unwritable)

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._db.close()


def _mark_historical(payload: bytes) -> bytes:
    body = json.loads(payload)
    if body.get("historical"):
        return payload
    body["historical"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
