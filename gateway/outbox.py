"""Store and forward: every event is on disk before it is published, and leaves only after its PUBACK.

One SQLite file (WAL). `put` is the durability point for a driver. A publisher
thread hands rows to paho in id order (so per device in order) while the
broker is connected; paho's PUBACK callback marks them sent. Rows queued
while the broker was away, or found at start-up, go out marked `historical`.

With the embedded broker (in our process, memory only), sent rows are kept
for `replay_window_s` and sent again after a restart, because that broker
forgets what it had not yet delivered when the process dies; the rules
service drops the duplicates by event id.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.bus import Bus
from gateway.events import Event

log = logging.getLogger("campusgw.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    class TEXT NOT NULL,
    payload BLOB NOT NULL,
    historical INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    sent REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent IS NULL;
CREATE TABLE IF NOT EXISTS device_seq (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
# Rows handed to paho and not yet acknowledged, at most; bounds memory and paho's queue.
WINDOW = 500
REFILL = WINDOW // 4  # hand over rows in chunks at least this big while busy
# Acknowledged rows are marked in batches: one transaction per PUBACK would cap throughput.
ACK_FLUSH_S = 0.05


@dataclass
class OutboxStats:
    queued: int
    in_flight: int
    published: int
    shed: int
    telemetry_bytes: int


class Outbox:
    def __init__(self, path: Path, *, max_telemetry_bytes: int, keep_sent_s: float = 0.0,
                 on_shed: Callable[[int], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_telemetry_bytes = max_telemetry_bytes
        self.keep_sent_s = keep_sent_s
        self.on_shed = on_shed
        self._db = self._connect()
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()  # guards self._db (writers) and the counters below
        self._wake = threading.Condition()
        self._seq: dict[str, int] = dict(self._db.execute("SELECT device, seq FROM device_seq").fetchall())
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
                               "WHERE class = 'telemetry' AND sent IS NULL").fetchone()
        self._telemetry_bytes: int = row[0]
        self.shed = 0
        self._shedding = False
        self.published = 0
        # Handed to paho, not yet acknowledged: (paho's message info, row id, telemetry bytes).
        # Only the publisher thread touches it, and it never holds our lock while calling paho
        # (paho holds its own lock while calling us back: taking ours there would deadlock).
        self._in_flight: list[tuple[Any, int, int]] = []
        self._last_handed = 0
        self._last_flush = 0.0
        self._connected = False
        self._bus: Bus | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- producer side ---------------------------------------------------------------

    def next_seq(self, source: str) -> int:
        """The next per-device sequence number; `source` is the device's topic (kept across restarts)."""
        with self._lock:
            value = self._seq.get(source, 0) + 1
            self._seq[source] = value
            return value

    def put(self, topic: str, event: Event) -> None:
        """Write one event durably; returns once it is on disk (fsynced for alarm-class events)."""
        self.put_many([(topic, event)])

    def put_many(self, items: list[tuple[str, Event]]) -> None:
        if not items:
            return
        now = time.time()
        alarm = any(e.event_class == "alarm" for _, e in items)
        with self._lock:
            historical = not self._connected
            rows = []
            for topic, event in items:
                if historical:
                    event = _as_historical(event)
                rows.append((event.device, topic, event.event_class, event.to_json(), int(historical), now))
            db = self._db
            if alarm:  # an alarm must survive a power cut, not only a crash
                db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN")
            db.executemany("INSERT INTO outbox (device, topic, class, payload, historical, created) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
            seqs = {e.source: e.seq for _, e in items}
            db.executemany("INSERT INTO device_seq (device, seq) VALUES (?, ?) "
                           "ON CONFLICT(device) DO UPDATE SET seq = MAX(seq, excluded.seq)", seqs.items())
            db.execute("COMMIT")
            if alarm:
                db.execute("PRAGMA synchronous=NORMAL")
            self._telemetry_bytes += sum(len(r[3]) for r in rows if r[2] == "telemetry")
            over = self._telemetry_bytes > self.max_telemetry_bytes
        if over:
            self._shed()
        with self._wake:
            self._wake.notify()

    def _shed(self) -> None:
        """Drop the oldest unsent telemetry until under the bound; alarm-class rows are never touched."""
        with self._lock:
            dropped = 0
            while self._telemetry_bytes > self.max_telemetry_bytes * 0.9:
                rows = self._db.execute(
                    "SELECT id, LENGTH(payload) FROM outbox WHERE class = 'telemetry' AND sent IS NULL "
                    "AND id > ? ORDER BY id LIMIT 500", (self._last_handed,)).fetchall()
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

    def attach(self, bus: Bus, *, replay_recent: bool = False) -> None:
        """Start publishing through `bus`. `replay_recent`: resend rows sent within the replay window."""
        self._bus = bus
        with self._lock:
            if replay_recent and self.keep_sent_s > 0:
                cutoff = time.time() - self.keep_sent_s
                n = self._db.execute("UPDATE outbox SET sent = NULL, historical = 1 WHERE sent >= ?",
                                     (cutoff,)).rowcount
                if n:
                    log.info("resending %d events sent in the last %ds (the embedded broker kept none of them)",
                             n, int(self.keep_sent_s))
            # Whatever is still here from a previous run was not published live.
            self._db.execute("UPDATE outbox SET historical = 1 WHERE sent IS NULL")
        bus.client.on_publish = self._on_publish
        bus.on_connect(self._on_connect)
        bus.on_disconnect(self._on_disconnect)
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self._thread.start()

    def _on_connect(self) -> None:
        with self._lock:
            self._connected = True
        with self._wake:
            self._wake.notify()

    def _on_disconnect(self) -> None:
        with self._lock:
            self._connected = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # Wake the publisher only when the window needs refilling; acknowledged rows are
        # flushed every ACK_FLUSH_S anyway (waking per PUBACK costs a context switch each).
        if len(self._in_flight) >= WINDOW - REFILL:
            with self._wake:
                self._wake.notify()

    def _run(self) -> None:
        reader = self._connect()
        while not self._stop.is_set():
            self._flush_acked()
            with self._lock:
                connected, after = self._connected, self._last_handed
            room = WINDOW - len(self._in_flight)
            if connected and (room >= REFILL or not self._in_flight):
                rows = reader.execute(
                    "SELECT id, topic, payload, historical, class FROM outbox WHERE sent IS NULL AND id > ? "
                    "ORDER BY id LIMIT ?", (after, room)).fetchall()
                assert self._bus is not None
                for row_id, topic, payload, historical, event_class in rows:
                    size = len(payload) if event_class == "telemetry" else 0
                    info = self._bus.publish(topic, _mark_historical(payload) if historical else payload, qos=1)
                    self._in_flight.append((info, row_id, size))
                    with self._lock:
                        self._last_handed = row_id
                if rows:
                    continue
            with self._wake:
                self._wake.wait(ACK_FLUSH_S if self._in_flight else 1.0)
        self._flush_acked(force=True)
        reader.close()

    def _flush_acked(self, force: bool = False) -> None:
        if not self._in_flight:
            return
        now = time.time()
        if not force and now - self._last_flush < ACK_FLUSH_S and not self._in_flight[REFILL - 1:REFILL]:
            return  # one transaction per ACK_FLUSH_S, or per REFILL rows under load
        # Brokers acknowledge in order, so take acknowledged rows from the front only: O(acked), not
        # O(window) per wake-up. One acknowledged out of order waits until those before it are.
        done = 0
        for entry in self._in_flight:
            if not entry[0].is_published():
                break
            done += 1
        if not done:
            return
        acked = [(row_id, size) for _, row_id, size in self._in_flight[:done]]
        del self._in_flight[:done]
        self._last_flush = now
        with self._lock:
            self._db.execute("BEGIN")
            if self.keep_sent_s > 0:
                self._db.executemany("UPDATE outbox SET sent = ? WHERE id = ?", [(now, i) for i, _ in acked])
                self._db.execute("DELETE FROM outbox WHERE sent < ?", (now - self.keep_sent_s,))
            else:
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i, _ in acked])
            self._db.execute("COMMIT")
            self.published += len(acked)
            self._telemetry_bytes -= sum(size for _, size in acked)
            if self._shedding and self._telemetry_bytes < self.max_telemetry_bytes // 2:
                self._shedding = False

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread:
            self._thread.join(5)

    def stats(self) -> OutboxStats:
        with self._lock:
            queued = self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0]
            return OutboxStats(queued=queued, in_flight=len(self._in_flight), published=self.published,
                               shed=self.shed, telemetry_bytes=self._telemetry_bytes)

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._db.close()


def _as_historical(event: Event) -> Event:
    return replace(event, historical=True)


def _mark_historical(payload: bytes) -> bytes:
    body = json.loads(payload)
    if body.get("historical"):
        return payload
    body["historical"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

