"""A district worker: one of several processes sharing one durable pull consumer on the `$MQTT_msgs` stream,
filtered on the schools' event subjects. Each fetched batch is decoded, written in one transaction, and only
then acknowledged, so a worker that dies or a database that is away loses nothing: what was not acknowledged
comes again (after `ack_wait_s`, or at once after a failed write), and the events' key absorbs the repeat.

Fetches wait up to `fetch_timeout_s` (>= 5 s): short fetch timeouts stalled the consumer for 10-85 s under
load when the issue was tried."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from gateway import topics
from gateway.district import store
from gateway.district.downward import Downward
from gateway.district.subjects import (
    ALARMS_FILTER,
    EVENTS_FILTER,
    INCIDENTS_FILTER,
    LIVE_ALARMS,
    MQTT_PREFIX,
    MQTT_STREAM,
    NOTICES_FILTER,
    STATE_FILTERS,
    SUBMISSIONS_FILTER,
    parse_alarm_subject,
    parse_incident_subject,
    parse_notice_subject,
    parse_state_subject,
    parse_subject,
    parse_submission_subject,
)
from gateway.validation import InvalidEvent, parse_event

log = logging.getLogger(__name__)
PARTITIONS_EVERY_S = 3600.0  # the months' partitions made ahead and retention applied, again this often
DEADLINES_EVERY_S = 15.0  # incident reports overdue: district alarms (a report is due within the hour)
DOWNWARD_EVERY_S = 2.0  # acknowledgements waiting to go down to the schools
MORE_WITHIN_S = 0.05  # after a batch's first message, how long the rest may take to come
LIVE_REMEMBERED = 100_000  # alarms whose newest live-written revision a worker remembers (then it starts over)
LIVE_QUEUE = "district-alarms-live"  # the workers' queue group on the alarms' fast path: one of them writes each


@dataclass
class WorkerSettings:
    servers: list[str]
    durable: str = "district-events"  # the events' consumer, shared by every worker
    alarms_durable: str = "district-alarms"  # the alarm views' consumer
    reports_durable: str = "district-reports"  # the schools' incidents and submitted reports
    state_durable: str = "district-state"  # the devices' availability and the schools' facts
    batch: int = 500
    fetch_timeout_s: float = 5.0
    ack_wait_s: float = 30.0
    retention_months: int = 36  # whole months older than this are dropped
    user: str | None = None
    password: str | None = None
    mqtt: list[str] = field(default_factory=list)  # the cluster's MQTT listeners (host:port): acks sent down


@dataclass
class WorkerStats:
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed_writes: int = 0
    batches: int = 0
    acks_sent: int = 0
    notices_sent: int = 0
    live: int = 0  # alarm views written from the fast path (core NATS) before, or instead of, the stream's copy
    by_reason: dict[str, int] = field(default_factory=dict)


def decode(messages: list[Any], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for the events table and for the rejected one, from fetched messages (anything with `subject` and
    `data`). A message that is no valid event of the topic it came on is rejected, with why."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for message in messages:
        stored = parse_subject(message.subject)
        try:
            if stored is None:
                raise InvalidEvent("not_an_event_subject", message.subject[:200])
            event = parse_event(bytes(message.data), stored.topic)
        except InvalidEvent as exc:
            bad.append({"received_at": now, "subject": message.subject[:500], "reason": str(exc)[:500],
                        "payload": bytes(message.data[:4000]).decode("utf-8", "replace").replace("\x00", "\\0")})
            continue
        rows.append({"id": event.id, "time": datetime.fromisoformat(event.time), "site": stored.site,
                     "kind": stored.kind, "device": stored.device, "type": event.type,
                     "class": event.event_class, "test": event.test, "historical": event.historical,
                     "received_at": now, "data": event.data})
    return rows, bad


ALARM_STATES = ("active_unack", "active_ack", "cleared_unack", "cleared_ack", "closed")


def decode_alarms(messages: list[Any], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for the alarms table from fetched alarm views (gateway.records.store.alarm_views, as the school's rules
    service announces them), and the rejected ones with why."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for message in messages:
        where = parse_alarm_subject(message.subject)
        try:
            if where is None:
                raise ValueError("not an alarm view subject")
            view = json.loads(bytes(message.data))
            if not isinstance(view, dict) or view.get("id") != where[1]:
                raise ValueError("not the view of the alarm its topic names")
            revision, state, priority = view.get("revision"), view.get("state"), view.get("priority")
            if not isinstance(revision, int) or state not in ALARM_STATES or not isinstance(priority, int):
                raise ValueError("revision, state or priority missing or wrong")
            raised = datetime.fromisoformat(str(view.get("raised_at")))
            if raised.tzinfo is None:
                raise ValueError("raised_at without a time zone")
            rows.append({"site": where[0], "alarm_id": where[1], "revision": revision, "state": state,
                         "alarm_type": str(view.get("alarm_type"))[:64], "priority": priority,
                         "place": _text(view.get("place")), "device": _text(view.get("device_id")),
                         "test": view.get("test") is True, "raised_at": raised, "received_at": now, "view": view})
        except (ValueError, TypeError, RecursionError) as exc:
            bad.append({"received_at": now, "subject": message.subject[:500], "reason": f"alarm_view: {exc}"[:500],
                        "payload": bytes(message.data[:4000]).decode("utf-8", "replace").replace("\x00", "\\0")})
    return rows, bad


INCIDENT_STATES = ("open", "reported", "closed")


def decode_incidents(messages: list[Any], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for the incidents table from fetched incident views (gateway.records.ledger.district_view)."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for message in messages:
        where = parse_incident_subject(message.subject)
        try:
            if where is None:
                raise ValueError("not an incident view subject")
            view = json.loads(bytes(message.data))
            if not isinstance(view, dict) or view.get("id") != where[1]:
                raise ValueError("not the view of the incident its topic names")
            revision, state = view.get("revision"), view.get("state")
            if not isinstance(revision, int) or state not in INCIDENT_STATES:
                raise ValueError("revision or state missing or wrong")
            ack = view.get("district_ack")
            rows.append({"site": where[0], "incident_id": where[1], "revision": revision, "state": state,
                         "category": str(view.get("category"))[:64], "severity": str(view.get("severity"))[:16],
                         "title": str(view.get("title") or "")[:200], "place": _text(view.get("place")),
                         "occurred_at": _when(view, "occurred_at", required=True),
                         "report_due_at": _when(view, "report_due_at", required=True),
                         "reported_at": _when(view, "reported_at"), "closed_at": _when(view, "closed_at"),
                         "school_saw_ack_at": _when(ack, "at") if isinstance(ack, dict) else None,
                         "view": view, "received_at": now})
        except (ValueError, TypeError, RecursionError) as exc:
            bad.append({"received_at": now, "subject": message.subject[:500], "reason": f"incident: {exc}"[:500],
                        "payload": bytes(message.data[:4000]).decode("utf-8", "replace").replace("\x00", "\\0")})
    return rows, bad


def decode_reports(messages: list[Any], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (each marked with its `table`) from fetched incident views, submitted reports and the schools' views
    of the district's notices."""
    incident_messages = [m for m in messages if parse_submission_subject(m.subject) is None
                         and parse_notice_subject(m.subject) is None]
    rows, bad = decode_incidents(incident_messages, now)
    rows = [{**r, "table": store.incidents.name} for r in rows]
    for message in messages:
        notice = parse_notice_subject(message.subject)
        if notice is not None:
            try:
                rows.append(decode_notice_view(notice, bytes(message.data)))
            except (ValueError, TypeError, RecursionError) as exc:
                bad.append({"received_at": now, "subject": message.subject[:500], "reason": f"notice: {exc}"[:500],
                            "payload": bytes(message.data[:4000]).decode("utf-8", "replace").replace("\x00", "\\0")})
            continue
        where = parse_submission_subject(message.subject)
        if where is None:
            continue
        try:
            view = json.loads(bytes(message.data))
            if not isinstance(view, dict) or (view.get("kind"), view.get("period")) != where[1:]:
                raise ValueError("not the report its topic names")
            if not isinstance(view.get("id"), int) or not isinstance(view.get("figures"), dict):
                raise ValueError("id or figures missing")
            rows.append({"table": store.submissions.name, "site": where[0], "kind": where[1], "period": where[2],
                         "submission_id": view["id"], "starts": _when(view, "starts", required=True),
                         "ends": _when(view, "ends", required=True),
                         "submitted_at": _when(view, "submitted_at", required=True),
                         "submitted_by": str(view.get("submitted_by"))[:64], "figures": view["figures"],
                         "received_at": now})
        except (ValueError, TypeError, RecursionError) as exc:
            bad.append({"received_at": now, "subject": message.subject[:500], "reason": f"report: {exc}"[:500],
                        "payload": bytes(message.data[:4000]).decode("utf-8", "replace").replace("\x00", "\\0")})
    return rows, bad


def decode_notice_view(where: tuple[str, int], data: bytes) -> dict[str, Any]:
    """A school's view of a district notice (gateway.records.notices.view): received when, acknowledged by whom."""
    view = json.loads(data)
    if not isinstance(view, dict) or view.get("id") != where[1]:
        raise ValueError("not the view of the notice its topic names")
    acked_by = view.get("acked_by")
    return {"table": store.notice_receipts.name, "site": where[0], "notice_id": where[1],
            "received_at": _when(view, "received_at", required=True), "acked_at": _when(view, "acked_at"),
            "acked_by": str(acked_by)[:64] if acked_by is not None else None}


def _when(view: dict[str, Any], key: str, required: bool = False) -> datetime | None:
    value = view.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key} missing")
        return None
    at = datetime.fromisoformat(str(value))
    if at.tzinfo is None:
        raise ValueError(f"{key} without a time zone")
    return at


def decode_state(messages: list[Any], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for the devices and facts tables (each marked with its `table`) from fetched state messages
    (STATE_FILTERS), ordered by the stream's sequence; an empty payload (a retained message cleared) is skipped."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for message in messages:
        where = parse_state_subject(message.subject)
        data = bytes(message.data)
        try:
            if where is None:
                raise ValueError("not a state subject")
            if not data:
                continue
            seq = message.metadata.sequence.stream
            if where.fact == "bridge":
                if data not in (b"0", b"1"):
                    raise ValueError("a bridge state is 0 or 1")
                rows.append({"table": store.facts.name, "site": where.site, "fact": "bridge",
                             "value": {"up": data == b"1"}, "seq": seq, "received_at": now})
                continue
            value = json.loads(data)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            if where.fact == "availability":
                if value.get("state") not in ("online", "offline"):
                    raise ValueError("state is neither online nor offline")
                ts = value.get("ts")
                since = datetime.fromtimestamp(ts, UTC) if isinstance(ts, int | float) else None
                rows.append({"table": store.devices.name, "site": where.site, "kind": where.kind,
                             "device": where.device, "online": value["state"] == "online", "since": since,
                             "seq": seq, "received_at": now})
            else:
                rows.append({"table": store.facts.name, "site": where.site, "fact": where.fact, "value": value,
                             "seq": seq, "received_at": now})
        except (ValueError, TypeError, OverflowError, OSError, RecursionError) as exc:
            bad.append({"received_at": now, "subject": message.subject[:500], "reason": f"state: {exc}"[:500],
                        "payload": data[:4000].decode("utf-8", "replace").replace("\x00", "\\0")})
    return rows, bad


def _text(value: Any) -> str | None:
    return str(value)[:500] if value is not None else None


class DistrictWorker:
    def __init__(self, settings: WorkerSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = WorkerStats()
        self.connected = asyncio.Event()
        self.warnings: list[str] = []  # what init found wrong with the cluster, for its report
        self._next_partitions = 0.0
        self._live_written: dict[tuple[str, int], int] = {}  # (site, alarm id) -> newest revision written live

    async def _connect(self) -> Any:
        import nats

        s = self.settings
        return await nats.connect(s.servers, user=s.user, password=s.password, max_reconnect_attempts=-1,
                                  reconnect_time_wait=1.0, connect_timeout=5, allow_reconnect=True,
                                  name=f"campusgw-district-worker-{s.durable}")

    def _consumers(self) -> list[tuple[str, tuple[str, ...], Any, Any]]:
        """(durable name, filter, decode, write) of each consumer a worker reads."""
        s = self.settings
        return [(s.durable, (EVENTS_FILTER,), decode, store.write),
                (s.alarms_durable, (ALARMS_FILTER,), decode_alarms, store.write_alarms),
                (s.state_durable, STATE_FILTERS, decode_state, store.write_state),
                (s.reports_durable, (INCIDENTS_FILTER, SUBMISSIONS_FILTER, NOTICES_FILTER), decode_reports,
                 store.write_reports)]

    async def init(self, stop: asyncio.Event) -> bool:
        """The tables and the shared consumers, made before any school sends: the `$MQTT_msgs` stream keeps a
        message only while a consumer is interested in it, so what a school sends before the consumer exists is
        acknowledged to it and kept by nobody. Returns whether the consumers are there."""
        await asyncio.to_thread(store.create_schema, self.engine)
        nc = await self._connect()
        try:
            js = nc.jetstream(timeout=10)
            for durable, subject, _, _ in self._consumers():
                if await self._subscribe(js, stop, durable, subject) is None:
                    return False
            await self._check_replicas(js)
            return True
        finally:
            await nc.close()

    async def _check_replicas(self, js: Any) -> None:
        """Say so when the MQTT streams have fewer than 3 replicas: NATS makes them with the nodes it knows when
        the first MQTT listener starts (two, in a cluster starting up), and an R2 stream stops with either node."""
        for stream in (MQTT_STREAM, "$MQTT_sess"):
            try:
                replicas = (await js.stream_info(stream)).config.num_replicas or 1
            except Exception as exc:
                log.warning("could not read %s's replicas (%s)", stream, exc)
                continue
            if replicas < 3:
                log.warning("%s has %d replica(s): a lost node stops the district until it is back. Set "
                            "mqtt { stream_replicas: 3 } on every node, or: nats stream edit %s --replicas 3",
                            stream, replicas, stream)
                self.warnings.append(f"{stream} has {replicas} replica(s), not 3")

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(store.create_schema, self.engine)
        self._next_partitions = time.monotonic() + PARTITIONS_EVERY_S
        nc = await self._connect()
        try:
            js = nc.jetstream(timeout=10)
            subs = []
            for durable, subject, decoder, writer in self._consumers():
                sub = await self._subscribe(js, stop, durable, subject)
                if sub is None:
                    return
                subs.append((sub, decoder, writer))
            await self._check_replicas(js)
            live: asyncio.Queue[Any] = asyncio.Queue()

            async def seen(message: Any) -> None:
                live.put_nowait(message)

            await nc.subscribe(LIVE_ALARMS, queue=LIVE_QUEUE, cb=seen)
            log.info("fetching the schools' events, alarm views and state from %s", MQTT_STREAM)
            self.connected.set()
            await asyncio.gather(*(self._fetch(sub, decoder, writer, stop) for sub, decoder, writer in subs),
                                 self._live(live, stop), self._housekeeping(stop))
        finally:
            await nc.close()

    async def _fetch(self, sub: Any, decoder: Any, writer: Any, stop: asyncio.Event) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        s = self.settings
        while not stop.is_set():
            try:
                # Wait for work with one message: nats-py's fetch of a whole batch, once its first message has
                # come on a waiting request, waits for the rest until its timeout, so a lone panic press sat up
                # to fetch_timeout_s in the worker (measured: max 5.0 s in bench/district).
                messages = await sub.fetch(1, timeout=s.fetch_timeout_s)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as exc:  # the cluster electing a leader, a node away: fetch again
                log.warning("fetch failed (%s); again in 1 s", exc)
                await _wait(stop, 1.0)
                continue
            if s.batch > 1:
                with contextlib.suppress(Exception):  # then what else is there now, without waiting for more
                    messages += await sub.fetch(s.batch - 1, timeout=MORE_WITHIN_S)
            await self._handle(messages, decoder, writer)

    async def _live(self, live: asyncio.Queue[Any], stop: asyncio.Event) -> None:
        """The alarm views' fast path: what came on core NATS, written as it comes (what else came meanwhile with
        it). Nothing to acknowledge and nothing to retry: the stream brings every view too, and a wrong one is
        recorded from there, once."""
        while not stop.is_set():
            try:
                first = await asyncio.wait_for(live.get(), 1.0)
            except TimeoutError:
                continue
            messages = [first]
            while not live.empty() and len(messages) < self.settings.batch:
                messages.append(live.get_nowait())
            now = datetime.now(UTC)
            rows, _ = decode_alarms([_Seen(MQTT_PREFIX + m.subject, m.data) for m in messages], now)
            # A school sends each view again 0.5 s and 1.5 s later (live.py): one this worker has written is
            # not written again (three of every four writes, each a transaction).
            rows = [r for r in rows if r["revision"] > self._live_written.get((r["site"], r["alarm_id"]), -1)]
            if not rows:
                continue
            try:
                await asyncio.to_thread(self._write, store.write_alarms, rows, [], now)
                self.stats.live += len(rows)
            except Exception as exc:
                log.warning("alarm views from the fast path not written (%s); the stream brings them", exc)
                continue
            if len(self._live_written) > LIVE_REMEMBERED:
                self._live_written.clear()
            for r in rows:
                key = (r["site"], r["alarm_id"])
                self._live_written[key] = max(r["revision"], self._live_written.get(key, -1))

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Besides the fetching: the district's deadline alarms, its acknowledgements sent down, the months'
        partitions and retention. Each step's failure (the database away) is logged and tried again."""
        s = self.settings
        down = Downward(s.mqtt, s.user, s.password) if s.mqtt else None
        if down is None:
            log.info("acknowledgements are not sent down to the schools: nats.mqtt is not set")
        next_deadlines = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                try:
                    if now >= next_deadlines:
                        next_deadlines = now + DEADLINES_EVERY_S
                        for alert in await asyncio.to_thread(self._check_deadlines):
                            log.warning("district alarm: %s's report of %s is overdue", alert["site"], alert["ref"])
                    if down is not None:
                        await asyncio.to_thread(self._send_down, down)
                    if now >= self._next_partitions:
                        self._next_partitions = now + PARTITIONS_EVERY_S
                        dropped = await asyncio.to_thread(store.maintain, self.engine, s.retention_months)
                        if dropped:
                            log.info("retention (%d months): dropped %s", s.retention_months, ", ".join(dropped))
                except Exception as exc:
                    log.warning("housekeeping failed (%s); again in %.0f s", exc, DOWNWARD_EVERY_S)
                await _wait(stop, DOWNWARD_EVERY_S)
        finally:
            if down is not None:
                await asyncio.to_thread(down.close)

    def _check_deadlines(self) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('campusgw district deadlines'))")):
                return []  # another worker is at it
            return store.check_deadlines(conn, datetime.now(UTC))

    def _send_down(self, down: Downward) -> None:
        """Each acknowledgement the school has not shown yet, sent (again after store.ACK_RESEND_S); then each
        notice a school has not shown yet (again after store.NOTICE_RESEND_S). One worker at a time (the others
        skip the pass), so a notice to 2,000 schools goes down once a round, not once a worker."""
        with self.engine.begin() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('campusgw district downward'))")):
                return
            due = store.acks_to_send(conn, datetime.now(UTC))
            for ack in due:
                down.send(topics.district_ack(ack["site"], ack["incident_id"]),
                          {"by": ack["by"], "at": ack["at"].isoformat()})
                store.ack_sent(conn, ack["site"], ack["incident_id"], datetime.now(UTC))
                self.stats.acks_sent += 1
            waiting = store.notices_to_send(conn, datetime.now(UTC))
            if waiting:
                down.send_many([(topics.district_notice(n["site"], n["notice_id"]),
                                 {"level": n["level"], "title": n["title"], "body": n["body"], "by": n["by"],
                                  "at": n["at"].isoformat()}) for n in waiting])
                store.notices_sent(conn, [(n["site"], n["notice_id"]) for n in waiting], datetime.now(UTC))
                self.stats.notices_sent += len(waiting)

    async def _subscribe(self, js: Any, stop: asyncio.Event, durable: str, subjects: tuple[str, ...]) -> Any:
        """A shared durable consumer, made if it is not there yet. The `$MQTT_msgs` stream exists once the
        cluster's MQTT listener has started: until then, try again."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        s = self.settings
        one = len(subjects) == 1
        config = ConsumerConfig(durable_name=durable, filter_subject=subjects[0] if one else None,
                                filter_subjects=None if one else list(subjects), ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=s.ack_wait_s, deliver_policy=DeliverPolicy.ALL, max_ack_pending=20_000,
                                max_deliver=-1)
        delay = 1.0
        while not stop.is_set():
            try:
                try:
                    held = (await js.consumer_info(MQTT_STREAM, durable)).config
                except Exception:
                    await js.add_consumer(MQTT_STREAM, config)
                else:  # made by an older release with fewer subjects: the same consumer, its filter widened
                    if {held.filter_subject, *(held.filter_subjects or ())} - {None} != set(subjects):
                        log.info("consumer %s now filters %s", durable, ", ".join(subjects))
                        await js.add_consumer(MQTT_STREAM, config)
                return await js.pull_subscribe_bind(durable, MQTT_STREAM)
            except Exception as exc:
                log.warning("no consumer on %s yet (%s): has the cluster's MQTT listener started? again in %.0f s",
                            MQTT_STREAM, exc, delay)
                await _wait(stop, delay)
                delay = min(delay * 2, 30.0)
        return None

    async def _handle(self, messages: list[Any], decoder: Any = decode, writer: Any = store.write) -> None:
        now = datetime.now(UTC)
        rows, bad = decoder(messages, now)
        try:
            written = await asyncio.to_thread(self._write, writer, rows, bad, now)
        except Exception as exc:  # the database away: nothing acknowledged, all of it comes again
            self.stats.failed_writes += 1
            log.warning("could not write %d events (%s); they come again", len(rows), exc)
            for message in messages:
                await _quietly(message.nak(delay=2.0))
            return
        for message in messages:
            await _quietly(message.ack())
        self.stats.fetched += len(messages)
        self.stats.stored += written.stored
        self.stats.duplicates += written.duplicates
        self.stats.rejected += written.rejected
        self.stats.batches += 1
        for row in bad:
            reason = row["reason"].split(":", 1)[0]
            self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1

    def _write(self, writer: Any, rows: list[dict[str, Any]], bad: list[dict[str, Any]],
               now: datetime) -> store.Written:
        with self.engine.begin() as conn:
            written: store.Written = writer(conn, rows, bad, now)
            return written


@dataclass(frozen=True)
class _Seen:
    """A core NATS message under the stream subject its MQTT copy has, for the stream's decoders."""
    subject: str
    data: bytes


async def _quietly(coro: Any) -> None:
    """An ack or nak that fails (the connection gone) is redelivered later: nothing to do about it here."""
    try:
        await coro
    except Exception as exc:
        log.debug("ack/nak not sent: %s", exc)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
