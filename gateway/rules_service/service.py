"""The rules service: the imperative shell around gateway.rules.alarms.

paho hands messages over from its network thread; one worker thread takes
them in arrival order in batches (one message when idle, up to BATCH under
load), validates them, evaluates the rules, writes everything in one
transaction, and only after the commit acknowledges the MQTT messages
(paho manual ack) and tells the drivers' outboxes which events it has
committed (`rules/committed`), so they can let them go. A crash anywhere
before the commit means they are delivered again; the unique event id makes
that harmless.

Errors are classified. Temporary ones (the database gone or locked, a disk
full) are retried with backoff and nothing is acknowledged. An event that
cannot be accepted or stored is quarantined with its error and acknowledged,
so it never blocks the next; a gateway-health alarm says so once per episode.
The worker runs under a guard (gateway.guard) that restarts it if it fails.

Between batches the same thread runs the periodic jobs (gateway.rules_service.jobs); a gate's reads and
contacts go to access_shell, checkpoint scans to patrol_shell.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from drivers.relay_outputs.schema import SOUNDERS, relay_roles
from gateway import topics
from gateway.bus import Bus
from gateway.clock import ClockGuard, site_time
from gateway.command_auth import sign_topic
from gateway.config import Config
from gateway.events import Event, make_event, new_id
from gateway.guard import Guarded
from gateway.notify.sender import NotificationSender
from gateway.records import ledger, lockdowns, notices, roster, store
from gateway.records.models import Alarm, Notification, PoliceMessage, QuarantinedEvent, utcnow
from gateway.rules.alarms import Effect, RaiseAlarm, alarm_key, evaluate
from gateway.rules.linkage import (
    BollardCommand,
    OpenAlarm,
    OutputPulse,
    Relay,
    SnapshotRequest,
    applies,
    held_relays,
    linked_actions,
    outputs_wanted,
)
from gateway.rules_service.access_shell import READ_TYPES, Gate
from gateway.rules_service.jobs import TICK_S, PeriodicJobs
from gateway.rules_service.patrol_shell import Patrols
from gateway.validation import MAX_PAYLOAD_BYTES, InboundChecker, InvalidEvent, parse_event

log = logging.getLogger("campusgw.rules")
BATCH = 500
HEALTH_DETAIL_MAX = 200  # a health alarm's detail becomes its place, which holds 200 characters
RETRY_MIN_S = 0.2  # a batch that hit a temporary error is tried again after this, doubling
RETRY_MAX_S = 10.0
LOCKDOWN_RAISE_S = 2.0  # a lockdown's bollard that refused to rise is told again this often
OUTPUTS_REFRESH_S = 10.0  # held relays told again this often: a module back from an outage
OUTPUTS_CONFIRM_S = 2.0  # a relay command not answered "ok" within this is sent again (lost, refused, no module)
HELD = {"until_ack": "linkage: {relays} of {device} on until the alarm is acknowledged",
        "until_reset": "linkage: {relays} of {device} on until the alarm is reset"}
POISON_QUIET_S = 600.0  # no quarantined event for this long ends a poison episode (its alarm clears)


def temporary(exc: BaseException) -> bool:
    """An error that says nothing about the events: the database is gone, locked or full. Anything else
    (a value the database refuses, a rule that cannot handle the event) is the event's own."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                            sa_exc.TimeoutError, ConnectionError, TimeoutError))


class RulesService(PeriodicJobs):
    def __init__(self, site: str, bus: Bus, sessions: sessionmaker[Session], config: Config | None = None,
                 on_police: Callable[[], None] | None = None,
                 on_failing: Callable[[str, bool, str], None] | None = None,
                 command_key: bytes | None = None) -> None:
        self.site = site
        self.command_key = command_key  # signs the commands linkage, schedules and the gate send
        self.on_police = on_police  # wakes the police link when a report is written
        self.bus = bus
        self.sessions = sessions
        self.config = config
        self.tz = config.site.tz if config else ZoneInfo("Asia/Shanghai")
        # correlation id -> (alarm, what, the topic its result must come on)
        self._pending_commands: dict[str, tuple[int | None, str, str]] = {}
        self._scheduled: dict[int, str] = {}  # schedule index -> the position last commanded
        self._last_tick = 0.0
        self._next_purge = 0.0  # the first tick purges, then every PURGE_EVERY_S
        self._next_run: dict[str, float] = {}  # job -> monotonic time it is next due
        self._upward_after: int | None = None
        self._submissions_after: int | None = None
        self.wall_clock: Callable[[], datetime] = lambda: datetime.fromtimestamp(site_time(), self.tz)  # the guard's
        self._clock: ClockGuard | None = None  # made at the first tick, with the newest record's time
        self._clock_trusted: bool | None = None  # what the clock_jumped alarm says (None: nothing yet)
        self._next_ntp_check = 0.0
        self._health_seq = 0
        self.checker = InboundChecker()
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._guard = Guarded("rules", self._run, on_failing=on_failing)
        self.processed = 0
        self.duplicates = 0
        self.failed_batches = 0
        self.quarantined = 0
        self._retrying: str | None = None  # the temporary error being retried, logged once per episode
        self._last_poison: float | None = None  # monotonic time of the last quarantined event in this episode
        self._last_seen: dict[str, datetime] = {}  # what the devices table already says, to skip needless updates
        self._cameras = {d.id for d in config.devices if d.kind == "camera"} if config else set()
        # Relays linkage holds on while alarms are open, what each was last told, and the sounders among them.
        self._lockdown_relays: set[Relay] = {(o.device, r) for o in config.lockdown.outputs for r in o.relays} \
            if config else set()
        self._held: set[Relay] = (held_relays(config.linkage) | self._lockdown_relays) if config else set()
        self._lockdown_seen: int | None = None  # the lockdown being carried out
        self._lockdown_raise: dict[str, float] = {}  # bollard -> monotonic time to tell it again to rise
        self._lockdown_commands: dict[str, str] = {}  # correlation id -> the bollard told to rise
        self._sounders: set[Relay] = {(d.id, name) for d in (config.devices if config else []) if d.kind == "output"
                                      for name, role in relay_roles(d).items() if role in SOUNDERS}
        self._outputs: dict[Relay, bool] = {}
        self._outputs_lock = threading.Lock()
        self._outputs_refresh = 0.0  # monotonic time to tell every held relay again (a module back from an outage)
        self._outputs_sent: dict[str, tuple[Relay, float]] = {}  # correlation id -> relay, when: not answered ok yet
        self.notifier = NotificationSender(config, sessions, self._raise_health) \
            if config and config.notify.configured() else None
        self.gate = Gate(site, config.access, self.tz, frozenset(config.lockdown.responders)) if config else None
        self.patrols = Patrols(site, config, self.tz) if config and config.patrol.checkpoints else None

    def start(self) -> None:
        self.bus.subscribe(topics.events_filter(self.site), self._queue.put, qos=1)
        # Results of the commands linkage and schedules send; they go into the alarms' history.
        self.bus.subscribe(topics.results_filter(self.site), self._queue.put, qos=1)
        if self._held:  # an acknowledgement, a reset or a silence from the console: the outputs follow
            self.bus.subscribe(topics.alarms_filter(self.site), self._on_alarm_view, qos=1)
        if self.config and (self.config.lockdown.outputs or self.config.lockdown.bollards):
            self.bus.subscribe(topics.lockdown(self.site), self._on_lockdown, qos=1)
        if self.config and self.config.district is not None:
            self.bus.on_connect(self._report_all_again)
            self.bus.subscribe(topics.from_district(self.site), self._on_district, qos=1)
        self._guard.start()
        if self.notifier is not None:
            self.notifier.start()

    def alive(self) -> bool:
        return self._guard.alive()

    def stop(self) -> None:
        self._guard.stopping.set()
        self._queue.put(None)
        self._guard.stop(10)
        if self.notifier is not None:
            self.notifier.stop()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                first = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                self._tick()
                continue
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
            if time.monotonic() - self._last_tick >= TICK_S:
                self._tick()

    def _process(self, messages: list[mqtt.MQTTMessage]) -> None:
        """Record a batch: retried while the error is temporary, split up when it is not, so only the event
        that cannot be stored is quarantined. Acknowledged and confirmed once committed."""
        poison: Exception | None = None
        backoff = RETRY_MIN_S
        while True:
            try:
                if poison is None:
                    changed, ids = self._commit(messages)
                else:
                    changed, ids = self._quarantine(messages[0], poison)
                break
            except Exception as exc:
                if not temporary(exc):
                    if poison is not None:
                        raise  # not even the quarantine takes it: the guard restarts us and the outbox resends
                    if len(messages) > 1:
                        for message in messages:
                            self._process([message])
                        return
                    poison = exc
                    continue
                self.failed_batches += 1
                if self._retrying is None:
                    log.error("could not record %d events (%s: %s); trying again with backoff, nothing is "
                              "acknowledged until they are recorded", len(messages), type(exc).__name__,
                              str(exc).splitlines()[0][:300] if str(exc) else "")
                self._retrying = type(exc).__name__
                if self._guard.stopping.wait(backoff):
                    return  # not acknowledged: delivered again after the restart
                backoff = min(backoff * 2, RETRY_MAX_S)
        if self._retrying is not None:
            log.warning("recording again after %s", self._retrying)
            self._retrying = None
        for message in messages:
            self.bus.ack(message.mid, message.qos)
        if ids:
            self.bus.publish_json(topics.committed(self.site), {"ids": ids})
        if changed:
            try:
                self._publish_alarms(changed)
            except Exception as exc:  # recorded already; the console reads them from the database too
                log.warning("could not publish alarm updates %s: %s", changed, exc)

    def _quarantine(self, message: mqtt.MQTTMessage, error: Exception) -> tuple[list[int], list[str]]:
        """Keep a message that cannot be accepted or stored, with why; returns its event id to confirm."""
        payload = bytes(message.payload)
        event_id = _event_id(payload)
        text = f"{type(error).__name__}: {error}"[:2000]
        with self.sessions.begin() as session:
            known = event_id is not None and session.scalar(
                select(QuarantinedEvent.id).where(QuarantinedEvent.event_id == event_id).limit(1)) is not None
            if not known:
                session.add(QuarantinedEvent(event_id=event_id, topic=message.topic[:300],
                                             payload=payload[:MAX_PAYLOAD_BYTES].decode("utf-8", "replace"),
                                             error=text,
                                             received_at=utcnow()))
        if not known:
            self.quarantined += 1
            log.error("quarantined the event %s on %s: %s", event_id or "(no id)", message.topic, text[:300])
            self._poison_seen(message.topic, text)
        return [], [event_id] if event_id else []

    def _poison_seen(self, topic: str, error: str) -> None:
        first = self._last_poison is None
        self._last_poison = time.monotonic()
        if first:
            self._raise_health("poison_event", True, f"an event was quarantined (see quarantined_events): "
                                                     f"{error[:120]}; later events are recorded")

    def _end_poison_episode(self) -> None:
        if self._last_poison is not None and time.monotonic() - self._last_poison > POISON_QUIET_S:
            self._last_poison = None
            self._raise_health("poison_event", False, f"no event quarantined for {POISON_QUIET_S / 60:.0f} minutes")

    def _commit(self, messages: list[mqtt.MQTTMessage]) -> tuple[list[int], list[str]]:
        """One transaction; returns the alarms it changed and the ids of the events it holds now."""
        events: list[Event] = []
        results: list[tuple[str, dict[str, Any]]] = []
        rejected: list[str] = []  # ids of quarantined payloads, confirmed with the rest
        for message in messages:
            if isinstance(topics.parse(message.topic), topics.ResultTopic):
                result = self._command_result(message)
                if result:
                    results.append(result)
                continue
            event = self.checker.check(message.topic, bytes(message.payload))
            if event is not None:
                events.append(event)
            else:
                rejected += self._quarantine(message, _why_rejected(message))[1]
        changed: list[int] = self._record_results(results) if results else []
        if not events:
            return changed, rejected
        received = utcnow()
        raised: list[tuple[RaiseAlarm, int]] = []
        gate_out: list[tuple[str, dict[str, Any]]] = []
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
            keys = [k for e in fresh for k in self._keys(e)]
            alarms = store.open_alarms(session, keys) if keys else {}
            for event in fresh:
                at = datetime.fromisoformat(event.time)
                rows.append({"id": event.id, "device_id": event.device, "type": event.type, "device_time": at,
                             "received_at": received, "seq": event.seq, "historical": event.historical,
                             "test": event.test, "data": event.data})
                last_seen[event.device] = max(at, last_seen.get(event.device, at))
                effects: list[Effect] = self._evaluate(session, event, alarms, at, gate_out, received)
                if effects:
                    changed += store.apply_effects(session, effects, raised)
                    # later events in this batch must see what this one did
                    alarms.update(store.open_alarms(session, self._keys(event), lock=False))  # locked above
            # "Last seen" to the second is enough: skip the update when the table is already that fresh.
            stale = {d: at for d, at in last_seen.items()
                     if d not in self._last_seen or (at - self._last_seen[d]).total_seconds() >= 1}
            store.record_event_seen(session, rows, stale)
            for event in fresh:
                if event.type == "campus.gateway.command_refused":  # who tried to command what, and why not
                    data = event.data
                    store.audit(session, data["issued_by"][:64], "command.refused",
                                f"{data['kind']}:{data['device']}"[:140], "refused",
                                {"command": data["command"], "reason": data["reason"], "via": "mqtt"},
                                datetime.fromisoformat(event.time))
                if event.type == "campus.camera.clip":
                    changed += store.clip_ready(session, event.data["clip_id"], event.data["frames"],
                                                event.data.get("before"))
            outgoing = gate_out + self._linkage(session, raised, received)
        self._last_seen.update(stale)
        for topic, body in outgoing:  # after the commit: nothing goes out for a batch that rolled back
            self._publish(topic, body)
            if self.on_police is not None and topic == topics.police_alarms(self.site):
                self.on_police()
        if raised and self.notifier is not None:
            self.notifier.wake()  # notify.alarm_types go out now, not at the sender's next look (POLL_S)
        self.processed += len(fresh)
        return changed, [e.id for e in events] + rejected

    def _keys(self, event: Event) -> list[str]:
        """The open alarms an event may touch: its own, and at a gate its reader's or door's."""
        key = alarm_key(event)
        if self.gate is not None:
            if event.type in READ_TYPES and event.kind == "reader":
                return [f"{event.device}:failures", f"{event.device}:watchlist"]
            door = self.gate.door_for_contact(key)
            if door is not None:
                return [f"{door.id}:forced", f"{door.id}:held"]
        return [key] if key else []

    def _evaluate(self, session: Session, event: Event, alarms: dict[str, Any], at: datetime,
                  outgoing: list[tuple[str, dict[str, Any]]], received: datetime) -> list[Effect]:
        if self.patrols is not None and self.patrols.claims(event):  # a checkpoint device's read, or a tag
            return self.patrols.on_scan(session, event, at, received, alarms)
        if self.gate is None:
            return evaluate(event, alarms, at)
        if event.type in READ_TYPES and event.kind == "reader":  # a checkpoint's scan is a patrol's, not access
            effects, sent = self.gate.on_read(session, event, at, alarms)
            outgoing += sent
            if self.patrols is not None and self.patrols.checkpoint_for(event) is not None:  # also a fixed checkpoint
                effects += self.patrols.on_scan(session, event, at, received, alarms)
            return effects
        door = self.gate.door_for_contact(alarm_key(event))
        if door is not None:  # forced / held open, which know about the grants, instead of a plain contact alarm
            return self.gate.on_contact(door, event.type.endswith(".triggered"), event.id, at, alarms)
        return evaluate(event, alarms, at)

    # -- linkage -----------------------------------------------------------------------

    def _linkage(self, session: Session, raised: list[tuple[RaiseAlarm, int]], at: datetime,
                 ) -> list[tuple[str, dict[str, Any]]]:
        """What new alarms set in motion, recorded in their history; returns the messages to send."""
        if not self.config or not (self.config.linkage or self.config.lockdown.alarm_types
                                   or self.config.notify.alarm_types):
            return []
        police = self.config.police
        test_reports = police is not None and police.test_alarms == "test_code"
        outgoing: list[tuple[str, dict[str, Any]]] = []
        for effect, alarm_id in raised:
            for action in linked_actions(effect, self.config.linkage, test_reports):
                if isinstance(action, BollardCommand):
                    topic, body = self._command("bollard", action.device, action.command, alarm_id,
                                                f"linkage:alarm:{alarm_id}")
                    outgoing.append((topic, body))
                    said = ("linkage: '{command}' sent to bollard {device}",
                            {"command": action.command, "device": action.device})
                elif isinstance(action, OutputPulse):
                    outgoing.append(self._command("output", action.device, "set", alarm_id, f"linkage:alarm:{alarm_id}",
                                                  {"relay": action.relay, "on": True, "for_s": action.seconds,
                                                   "reason": f"alarm {alarm_id}"}))
                    said = ("linkage: {relay} of {device} on for {seconds} s",
                            {"relay": action.relay, "device": action.device, "seconds": f"{action.seconds:g}"})
                elif isinstance(action, SnapshotRequest):
                    outgoing.append((topics.snapshot_requests(self.site), {
                        "alarm_id": alarm_id, "camera": action.camera, "pre_s": action.pre_s,
                        "at": at.isoformat()}))
                    if action.camera in self._cameras:  # the camera keeps the snapshot and clip for the alarm
                        outgoing.append(self._command("camera", action.camera, "clip", alarm_id,
                                                      f"linkage:alarm:{alarm_id}",
                                                      {"alarm_id": alarm_id, "pre_s": action.pre_s}))
                    said = ("linkage: snapshot and the {seconds} s before requested from camera {camera}",
                            {"seconds": f"{action.pre_s:g}", "camera": action.camera})
                else:
                    assert police is not None  # config check: police: true needs the police section
                    kind = "test" if action.test else "alarm"
                    code = police.code("manual_test" if action.test else effect.alarm_type)
                    zone = police.zone_number(effect.key, effect.zone)
                    # Written with the alarm: the link sends what the database holds, so nothing is lost.
                    session.add(PoliceMessage(alarm_id=alarm_id, kind=kind, alarm_type=effect.alarm_type, zone=zone,
                                              created_at=at, state="pending", attempts=0))
                    outgoing.append((topics.police_alarms(self.site), {
                        "alarm_id": alarm_id, "kind": kind, "contact_id": code.contact_id,
                        "alarm_type": effect.alarm_type, "zone": effect.zone, "zone_number": zone,
                        "place": effect.place, "at": effect.at.isoformat()}))
                    said = ("linkage: test report to the alarm centre (Contact ID {code}, zone {zone})" if action.test
                            else "linkage: to the alarm centre (Contact ID {code}, zone {zone})",
                            {"code": str(code.contact_id), "zone": str(zone)})
                store.note(session, alarm_id, "linkage", said[0], at, params=said[1])
            if not effect.test and effect.alarm_type in self.config.lockdown.alarm_types \
                    and lockdowns.active(session) is None:
                started = lockdowns.start(session, f"linkage:alarm:{alarm_id}",
                                          f"{effect.alarm_type} alarm {alarm_id}", False, at, alarm_id=alarm_id)
                outgoing.append((topics.lockdown(self.site), lockdowns.view(started)))
                store.note(session, alarm_id, "linkage", "linkage: the campus locked down", at, params={})
            if not effect.test and self.notifier is not None and effect.alarm_type in self.config.notify.alarm_types:
                for person in roster.escalation_people(session, at, self.config.roster):
                    session.add(Notification(alarm_id=alarm_id, person_id=person.id, person_name=person.name,
                                             phone=getattr(person, "phone", None), level=0, created_at=at,
                                             state="pending", attempts=0))
            if not effect.test:  # the relays it holds on: switched by _drive_outputs once it is recorded
                for rule in self.config.linkage:
                    if applies(rule, effect.alarm_type, effect.zone):
                        for out in rule.outputs:
                            if out.mode != "pulse":
                                store.note(session, alarm_id, "linkage", HELD[out.mode], at,
                                           params={"relays": ", ".join(out.relays), "device": out.device})
        return outgoing

    def _on_lockdown(self, message: mqtt.MQTTMessage) -> None:
        """A lockdown began (at the console, or by an alarm's linkage) or ended: its bollards raised once at its
        start, its relays switched with the outputs."""
        try:
            state = json.loads(message.payload)
            if isinstance(state, dict) and state.get("active") and state.get("id") != self._lockdown_seen:
                self._lockdown_seen = state.get("id")
                assert self.config is not None
                self._lockdown_raise = dict.fromkeys(self.config.lockdown.bollards, 0.0)
            elif isinstance(state, dict) and not state.get("active"):
                self._lockdown_seen, self._lockdown_raise = None, {}
            self._raise_for_lockdown()
            self._drive_outputs()
        except ValueError:
            log.warning("an unreadable lockdown state on %s", message.topic)
        finally:
            self.bus.ack(message.mid, message.qos)

    def _report_all_again(self) -> None:
        self._upward_after = self._submissions_after = None

    def _on_district(self, message: mqtt.MQTTMessage) -> None:
        """The district acknowledged an incident's report: a line in its timeline (then its view goes up again,
        which tells the district to stop sending); or it sent a notice down. Anything else from the district is
        logged and let go."""
        try:
            what = message.topic.rsplit("/", 2)
            body = json.loads(message.payload)
            if what[-2] == "notices" and what[-1].startswith("notice-") and what[-1][7:].isdigit():
                self._on_notice(int(what[-1][7:]), body)
                return
            if what[-2] != "acks" or not what[-1].startswith("incident-") or not isinstance(body, dict):
                log.warning("from the district, not understood: %s", message.topic)
                return
            incident_id = int(what[-1].removeprefix("incident-"))
            at = datetime.fromisoformat(str(body["at"]))
            if at.tzinfo is None:
                raise ValueError("a time without its zone")
            with self.sessions.begin() as session:
                if ledger.record_district_ack(session, incident_id, str(body.get("by") or "district")[:48], at,
                                              utcnow(), note=body.get("note") if isinstance(body.get("note"),
                                                                                             str) else None):
                    log.info("the district acknowledged incident %d's report", incident_id)
        except (ValueError, KeyError, TypeError):
            log.warning("an unreadable message from the district on %s", message.topic)
        except sa_exc.SQLAlchemyError as exc:  # the district sends it again until the incident's view shows it
            log.warning("the district's acknowledgement not recorded (%s)", exc)
        finally:
            self.bus.ack(message.mid, message.qos)

    def _on_notice(self, notice_id: int, body: Any) -> None:
        """A notice from the district: recorded once, and its view sent back up at once, every time it comes (a
        repeat means the district has not seen the view yet). The consoles show it from the view's topic."""
        try:
            notice = notices.parse(notice_id, body)
        except notices.BadNotice as exc:
            log.warning("a notice from the district not understood (%s)", exc)
            return
        with self.sessions.begin() as session:
            held = notices.receive(session, notice, utcnow())
            shown = notices.view(held)
        log.info("district notice %d (%s): %s", notice_id, shown["level"], shown["title"])
        self.bus.publish_json(topics.notice(self.site, notice_id), shown, retain=True)

    def _raise_for_lockdown(self) -> None:
        """The lockdown's bollards told to rise until each has: one refused (a car on its loop, the interlock's
        clear delay, the controller offline) is told again every LOCKDOWN_RAISE_S."""
        now = time.monotonic()
        for bollard, due in list(self._lockdown_raise.items()):
            if now >= due:
                self._lockdown_raise[bollard] = now + LOCKDOWN_RAISE_S
                topic, body = self._command("bollard", bollard, "raise", None, f"lockdown:{self._lockdown_seen}")
                self._lockdown_commands[body["correlation_id"]] = bollard
                self._publish(topic, body)

    def _on_alarm_view(self, message: mqtt.MQTTMessage) -> None:
        """An alarm changed (here or at the console): the outputs follow. Acknowledged at once, as this bus
        acknowledges by hand: unacknowledged, the broker stops delivering after its in-flight limit (Mosquitto:
        100), the events with them (found by bench/outputs)."""
        try:
            self._drive_outputs()
        finally:
            self.bus.ack(message.mid, message.qos)

    def _drive_outputs(self) -> None:
        """The held relays made to match the open alarms: on while one holds them, off once none does. Called
        after every alarm change (the rules' own, and the console's as they are announced) and every tick."""
        if not self._held or self.config is None:
            return
        try:
            with self.sessions() as session:
                rows = session.execute(select(Alarm.alarm_type, Alarm.zone, Alarm.state, Alarm.test,
                                              Alarm.silenced_at).where(Alarm.state != "closed")).all()
                locked = self._lockdown_relays and lockdowns.active(session) is not None
        except Exception as exc:  # the database away: the next change or tick tries again
            log.warning("could not read the open alarms for the outputs: %s", exc)
            return
        alarms = [OpenAlarm(t, z, st, bool(test), silenced is not None) for t, z, st, test, silenced in rows]
        wanted = outputs_wanted(alarms, self.config.linkage, self._sounders)
        if locked:
            wanted |= self._lockdown_relays
        with self._outputs_lock:
            now = time.monotonic()
            if now >= self._outputs_refresh:
                self._outputs.clear()
                self._outputs_refresh = now + OUTPUTS_REFRESH_S
            # A command lost (the drivers not subscribed yet after a restart), refused or unanswered (the module
            # not connected yet): told again now, not at the next refresh.
            for correlation_id, (held, sent) in list(self._outputs_sent.items()):
                if now - sent >= OUTPUTS_CONFIRM_S:
                    del self._outputs_sent[correlation_id]
                    self._outputs.pop(held, None)
            for device, relay in sorted(self._held):
                on = (device, relay) in wanted
                if self._outputs.get((device, relay)) == on:
                    continue
                self._outputs[(device, relay)] = on
                reason = "an open alarm holds it" if on else "no open alarm holds it"
                topic, body = self._command("output", device, "set", None, "linkage",
                                            {"relay": relay, "on": on, "reason": reason})
                self._outputs_sent = {c: v for c, v in self._outputs_sent.items() if v[0] != (device, relay)}
                self._outputs_sent[body["correlation_id"]] = ((device, relay), now)
                self._publish(topic, body)

    def _publish(self, topic: str, body: dict[str, Any]) -> None:
        """Publish what the rules decided; a command is signed, so the driver can tell it is ours."""
        if self.command_key is not None and isinstance(topics.parse(topic), topics.CommandTopic):
            body = sign_topic(self.command_key, topic, body)
        self.bus.publish_json(topic, body, retain=topic == topics.lockdown(self.site))

    def _command(self, kind: str, device: str, name: str, alarm_id: int | None, issued_by: str,
                 args: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        correlation_id = new_id()
        topic = topics.command(self.site, kind, device, name)
        self._pending_commands[correlation_id] = (alarm_id, f"{device} {name}",
                                                  topics.result(self.site, kind, device, name))
        return topic, {"correlation_id": correlation_id, "issued_by": issued_by, "args": args or {}}

    def _command_result(self, message: mqtt.MQTTMessage) -> tuple[str, dict[str, Any]] | None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return None
        pending = self._pending_commands.get(str(body.get("correlation_id"))) if isinstance(body, dict) else None
        if pending is None or pending[2] != message.topic:
            return None  # someone else's command (the console's), or an answer from another device: not ours
        return str(body["correlation_id"]), body

    def _record_results(self, results: list[tuple[str, dict[str, Any]]]) -> list[int]:
        changed = []
        with self.sessions.begin() as session:
            for correlation_id, body in results:
                alarm_id, what, _ = self._pending_commands.pop(correlation_id)
                bollard = self._lockdown_commands.pop(correlation_id, None)
                if bollard is not None and body.get("status") == "ok":
                    self._lockdown_raise.pop(bollard, None)  # it rises: the lockdown needs nothing more of it
                device, command = what.split(" ", 1)
                if body.get("status") == "ok":
                    with self._outputs_lock:
                        self._outputs_sent.pop(correlation_id, None)  # the relay is as told
                if alarm_id is not None:
                    if body.get("status") == "ok":
                        store.note(session, alarm_id, "linkage_result", "{device} {command}: done", utcnow(),
                                   params={"device": device, "command": command})
                    else:
                        store.note(session, alarm_id, "linkage_result", "{device} {command}: refused: {reason}",
                                   utcnow(), params={"device": device, "command": command,
                                                     "reason": body.get("detail")})
                    data = body.get("data")
                    if body.get("status") == "ok" and isinstance(data, dict) and what.endswith(" clip"):
                        store.attach_evidence(session, alarm_id, what.split(" ", 1)[0], data, utcnow())
                    changed.append(alarm_id)
                else:
                    store.audit(session, "rules", "schedule.result", what, "ok" if body.get("status") == "ok"
                                else "refused", {"detail": body.get("detail")}, utcnow())
        return changed

    def _raise_health(self, condition: str, active: bool, detail: str) -> None:
        """Raise (active) or clear a gateway-health alarm about the rules service itself, as a
        campus.gateway.health event from campus/v1/<site>/gateway/rules would: one alarm per condition."""
        now = utcnow()
        self._health_seq += 1
        event = make_event(self.site, topics.GATEWAY, "rules", "campus.gateway.health",
                           {"condition": condition, "active": active, "detail": detail[:HEALTH_DETAIL_MAX]},
                           self._health_seq, now.timestamp(), self.tz)
        key = alarm_key(event)
        assert key is not None  # every health event names its alarm
        with self.sessions.begin() as session:
            changed = store.apply_effects(session, evaluate(event, store.open_alarms(session, [key]), now))
        if not changed:
            return
        log.warning("gateway health: %s %s: %s", condition, "raised" if active else "cleared", detail)
        try:
            self._publish_alarms(changed)
        except Exception as exc:  # recorded; the console reads alarms from the database too
            log.warning("could not publish alarm updates %s: %s", changed, exc)

    def _publish_alarms(self, alarm_ids: list[int]) -> None:
        with self.sessions() as session:
            alarms = [a for a in (session.get(Alarm, i) for i in dict.fromkeys(alarm_ids)) if a is not None]
            for view in store.alarm_views(session, alarms):
                self.bus.publish_json(topics.alarm(self.site, view["id"]), view)
        self._drive_outputs()

    def stats(self) -> dict[str, Any]:
        return {"processed": self.processed, "duplicates": self.duplicates, "failed_batches": self.failed_batches,
                "quarantined": self.quarantined, **self._guard.health(), **self.checker.stats()}


def _why_rejected(message: mqtt.MQTTMessage) -> Exception:
    try:
        parse_event(bytes(message.payload), message.topic)
    except InvalidEvent as exc:
        return exc
    return InvalidEvent("rejected", "refused by the checker")


def _event_id(payload: bytes) -> str | None:
    """The id of a payload that may be no valid event at all."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value[:64] if isinstance(value, str) and value else None
