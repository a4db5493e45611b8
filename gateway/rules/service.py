"""The rules service: the imperative shell around gateway.rules.alarms.

paho hands messages over from its network thread; one worker thread takes
them in arrival order in batches (one message when idle, up to BATCH under
load), validates them, evaluates the rules, writes everything in one
transaction, and only after the commit acknowledges the MQTT messages
(paho manual ack). A crash anywhere before the commit means the broker
delivers again; the unique event id makes that harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.orm import Session, sessionmaker

from gateway.bus import Bus
from gateway.events import TOPIC_ROOT, Event, rules_topic
from gateway.records import store
from gateway.records.models import Alarm, utcnow
from gateway.rules.alarms import Effect, alarm_key, evaluate
from gateway.validation import InboundChecker

log = logging.getLogger("campusgw.rules")
BATCH = 500


class RulesService:
    def __init__(self, site: str, bus: Bus, sessions: sessionmaker[Session]) -> None:
        self.site = site
        self.bus = bus
        self.sessions = sessions
        self.checker = InboundChecker()
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.processed = 0
        self.duplicates = 0
        self.failed_batches = 0
        self._last_seen: dict[str, datetime] = {}  # what the devices table already says, to skip needless updates

    def start(self) -> None:
        self.bus.subscribe(f"{TOPIC_ROOT}/{self.site}/+/+/evt/#", self._queue.put, qos=1)
        self._thread = threading.Thread(target=self._run, name="rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._process(batch)
                    return
                batch.append(item)
            self._process(batch)

    def _process(self, messages: list[mqtt.MQTTMessage]) -> None:
        try:
            changed = self._commit(messages)
        except Exception:
            # Not acknowledged: the broker redelivers after we reconnect. Drop the connection so it does.
            self.failed_batches += 1
            log.exception("could not record %d events; they stay unacknowledged and will be redelivered",
                          len(messages))
            self.bus.client.reconnect()
            return
        for message in messages:
            self.bus.ack(message.mid, message.qos)
        if changed:
            self._publish_alarms(changed)

    def _commit(self, messages: list[mqtt.MQTTMessage]) -> list[int]:
        events: list[Event] = []
        for message in messages:
            event = self.checker.check(message.topic, bytes(message.payload))
            if event is not None:
                events.append(event)
        if not events:
            return []
        received = utcnow()
        changed: list[int] = []
        with self.sessions.begin() as session:
            seen = store.known_event_ids(session, {e.id for e in events})
            fresh: list[Event] = []
            for event in events:
                if event.id in seen:
                    self.duplicates += 1
                    continue
                seen.add(event.id)
                fresh.append(event)
            rows: list[dict[str, Any]] = []
            last_seen: dict[str, datetime] = {}
            keys = [k for k in map(alarm_key, fresh) if k]
            alarms = store.open_alarms(session, keys) if keys else {}
            for event in fresh:
                at = datetime.fromisoformat(event.time)
                rows.append({"id": event.id, "device_id": event.device, "type": event.type, "device_time": at,
                             "received_at": received, "seq": event.seq, "historical": event.historical,
                             "test": event.test, "data": event.data})
                last_seen[event.device] = max(at, last_seen.get(event.device, at))
                effects: list[Effect] = evaluate(event, alarms, at)
                if effects:
                    changed += store.apply_effects(session, effects)
                    # later events in this batch must see what this one did
                    alarms.update(store.open_alarms(session, [k for k in [alarm_key(event)] if k]))
            # "Last seen" to the second is enough: skip the update when the table is already that fresh.
            stale = {d: at for d, at in last_seen.items()
                     if d not in self._last_seen or (at - self._last_seen[d]).total_seconds() >= 1}
            store.record_event_seen(session, rows, stale)
        self._last_seen.update(stale)
        self.processed += len(fresh)
        return changed

    def _publish_alarms(self, alarm_ids: list[int]) -> None:
        with self.sessions() as session:
            for alarm_id in dict.fromkeys(alarm_ids):
                alarm = session.get(Alarm, alarm_id)
                if alarm is not None:
                    self.bus.publish_json(rules_topic(self.site, "alarms", str(alarm_id)), store.alarm_view(alarm))

    def stats(self) -> dict[str, Any]:
        return {"processed": self.processed, "duplicates": self.duplicates,
                "failed_batches": self.failed_batches, **self.checker.stats()}
