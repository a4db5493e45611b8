"""The police link: delivers PoliceMessage rows to the alarm receiving centre over SIA DC-09.

The rules service writes a row in the same transaction as the alarm (and the records layer one for a
restore when the alarm is reset), so the link only has to send what the database holds. One thread, in
rounds: pending messages (alarms first, each to the first path that acknowledges it, retried with backoff
for as long as it takes), a NULL link test on each path often enough that a broken path is found within
`supervision_s`, and the 602 periodic test report every `periodic_test_h`.

What goes when and on which path, and what each answer means (NAK, DUH, silence), is decided by
gateway.police.delivery, a machine without I/O, where the reasons are written. This module is its hands:
the sockets, the rows, the health events, and one clock. Every frame sent and every answer (or silence) is
a PoliceExchange row.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import func, update
from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session, sessionmaker

from gateway import topics
from gateway.bus import Bus
from gateway.config import Config, PoliceConfig, PolicePath
from gateway.events import make_event
from gateway.guard import Guarded
from gateway.police import dc09, delivery
from gateway.police.delivery import Delivery, Report
from gateway.police.evidence import EvidenceSender
from gateway.records import store
from gateway.records.models import Alarm, PoliceExchange, PoliceMessage, PolicePathState, utcnow

log = logging.getLogger("campusgw.police")
POLL_S = 0.5  # restores and retries written by other processes are found this often


@dataclass(frozen=True)
class Clock:
    """The link's one clock. `monotonic` times every wait (the machine's `now`, the sockets' deadlines);
    `wall` is what gets written down: rows, DC-09 timestamps, events. A test skews the wall time, or drives
    both from one fake."""

    wall: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic


class Transport:
    """One receiver address; TCP keeps its connection between messages. Blocking, with timeouts."""

    def __init__(self, path: PolicePath, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._monotonic = monotonic
        self._sock: socket.socket | None = None
        self._reader = dc09.FrameReader()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self, timeout: float) -> socket.socket:
        if self._sock is not None and self.path.protocol == "tcp" and _closed_by_peer(self._sock):
            self.close()
        if self._sock is None:
            if self.path.protocol == "tcp":
                sock = socket.create_connection((self.path.host, self.path.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = socket.socket(socket.AF_INET6 if ":" in self.path.host else socket.AF_INET,
                                     socket.SOCK_DGRAM)
                sock.connect((self.path.host, self.path.port))
            self._sock, self._reader = sock, dc09.FrameReader()
        return self._sock

    def exchange(self, frame: bytes, seq: int, key: bytes | None, timeout: float) -> dc09.Message | str:
        """Send a frame; the answer to it, or why there is none (a string)."""
        deadline = self._monotonic() + timeout
        try:
            sock = self._socket(timeout)
            sock.sendall(frame) if self.path.protocol == "tcp" else sock.send(frame)
            while (left := deadline - self._monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    break  # the connection may be fine: a late answer is told apart by its sequence number
                if not data:
                    self.close()
                    return "the receiver closed the connection"
                for raw in self._reader.feed(data):
                    answer = self._read(raw, key)
                    if answer is not None and (answer.token == "NAK" or answer.seq == seq):
                        return answer
                    # an answer to an earlier try of another message: not ours, keep listening
            return f"no answer within {timeout:g} s"
        except OSError as exc:
            self.close()
            return f"{type(exc).__name__}: {exc.strerror or exc}"


    def _read(self, raw: bytes, key: bytes | None) -> dc09.Message | None:
        """An answer, encrypted with our key or (a receiver's NAK to an encrypted message, say) not."""
        for attempt in (key, None) if key is not None else (None,):
            try:
                return dc09.decode(raw, attempt)
            except dc09.FrameError as exc:
                if exc.reason != "key" or attempt is None:
                    log.warning("%s: an answer we cannot read (%s)", self.path.name, exc)
                    return None
        return None


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@dataclass
class PathRuntime:
    """One path: its configuration and socket here, its state in the machine (read it, do not write it)."""

    config: PolicePath
    transport: Transport
    key: bytes | None
    status: delivery.PathStatus

    @property
    def offset_s(self) -> float:
        """The receiver's clock minus ours, learnt from a NAK."""
        return self.status.offset_s


class PoliceLink:
    def __init__(self, config: Config, sessions: sessionmaker[Session], bus: Bus,
                 clock: Clock | Callable[[], datetime] = utcnow) -> None:
        assert config.police is not None
        self.config = config
        self.police: PoliceConfig = config.police
        self.sessions = sessions
        self.bus = bus
        self.clock = clock if isinstance(clock, Clock) else Clock(wall=clock)  # a wall clock alone: skewed
        self.site = config.site.id
        self.source = f"{config.gateway.id}-police"  # the gateway-health events' device
        police = self.police
        self.machine = Delivery(delivery.Settings(tuple(p.name for p in police.paths), police.attempts_per_path,
                                                  police.ack_timeout_s, police.supervision_s, police.periodic_test_h))
        self.paths = [PathRuntime(p, Transport(p, self.clock.monotonic), p.key(), self.machine.path(p.name))
                      for p in police.paths]
        self._paths = {p.config.name: p for p in self.paths}
        self.evidence = EvidenceSender(police.evidence, bus, self.site, sessions) if police.evidence else None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._guard = Guarded("police-link", self._run)
        self._event_seq = int(self.clock.wall().timestamp())
        self._seq = 0  # the sequence number of the frame on the wire; a retry sends it again
        self._answered_at = self.clock.wall()  # when the last answer came: an ACK's time
        self.sent = 0
        self.acked = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        known: dict[str, bool | None] = {}
        with self.sessions.begin() as session:
            for path in self.paths:
                row = session.get(PolicePathState, path.config.name)
                if row is None:
                    session.add(PolicePathState(name=path.config.name, seq=0))
                else:
                    known[path.config.name] = row.up
        self.machine.start(self.clock.monotonic(), known)
        self.publish_paths()
        self._guard.start()

    def wake(self) -> None:
        self._wake.set()

    def alive(self) -> bool:
        return self._guard.alive()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._guard.stop(10)
        for path in self.paths:
            path.transport.close()
        if self.evidence is not None:
            self.evidence.stop()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set() and not self._stopping.is_set():
            try:
                self._round()
            except Exception:
                log.exception("police link: unexpected error; going on in %.1f s", POLL_S)
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _round(self) -> None:
        """One look at the database: what the machine says, until it says wait."""
        self.machine.begin_round()
        while True:
            if self._stopping.is_set():
                self.machine.stop()
            action = self.machine.next_action(self.clock.monotonic())
            match action:
                case delivery.Wait():
                    return
                case delivery.ReadReports():
                    self.machine.load(self._pending())
                case delivery.Send():
                    self._send(action)
                case delivery.MarkPath():
                    self._path_state(action)
                case delivery.Delivered():
                    self._acknowledged(action.report, self._paths[action.path])
                case delivery.Escalate():
                    self._escalate(action)
                case delivery.AllDelivered():
                    self._health("police_undelivered", False, None, "every report has reached the alarm centre")
                case delivery.QueuePeriodicTest():
                    self._queue_periodic_test()
                case _:
                    assert_never(action)

    # -- messages -----------------------------------------------------------------------

    def _pending(self) -> list[Report]:
        """Every pending report; a retry's time, kept as wall time across restarts, on the machine's clock."""
        with self.sessions() as session:
            rows = list(session.scalars(sql_select(PoliceMessage).where(PoliceMessage.state == "pending")
                                        .order_by(PoliceMessage.id)))
        wall, now = self.clock.wall(), self.clock.monotonic()
        return [Report(r.id, r.kind, r.attempts,
                       None if r.next_try_at is None else now + (r.next_try_at - wall).total_seconds(),
                       r.alarm_id, r.alarm_type, r.zone) for r in rows]

    def _send(self, send: delivery.Send) -> None:
        path = self._paths[send.path]
        if send.attempt == 1:
            self._seq = self._next_seq(path)
        sent_at = self.clock.wall()
        out = self._message(send.report, self._seq, sent_at + timedelta(seconds=send.offset_s))
        answer = path.transport.exchange(dc09.encode(out, path.key), self._seq, path.key, self.police.ack_timeout_s)
        answered_at = self._answered_at = self.clock.wall()
        heard = (delivery.Answer(answer.token, answer.timestamp) if isinstance(answer, dc09.Message)
                 else delivery.silence(answer))
        detail = self.machine.on_answer(heard, self.clock.monotonic(), answered_at)
        self._record(path, send.report, out, sent_at, heard.token, answered_at, detail)
        self.sent += 1
        if heard.token == "ACK":
            self.acked += 1

    def _escalate(self, escalate: delivery.Escalate) -> None:
        message, attempts, wait, error = escalate.report, escalate.attempts, escalate.retry_in_s, escalate.error
        with self.sessions.begin() as session:
            session.execute(update(PoliceMessage).where(PoliceMessage.id == message.id).values(
                attempts=attempts, next_try_at=self.clock.wall() + timedelta(seconds=wait), last_error=error))
            if message.alarm_id is not None and attempts == 1:
                store.note(session, message.alarm_id, "police", "the alarm centre has not acknowledged ({error}); "
                           "trying again", self.clock.wall(), params={"error": error})
        log.error("police link: %s message %d not acknowledged on any path (%s); again in %.0f s",
                  message.kind, message.id, error, wait)
        if escalate.alert:
            self._health("police_undelivered", True, None,
                         f"a report ({message.kind}) has not reached the alarm centre: {error}")
        if message.alarm_id is not None and attempts == 1:
            self._publish_alarm(message.alarm_id)

    def _message(self, message: Report | None, seq: int, at: datetime) -> dc09.Message:
        police = self.police
        stamp = at.replace(microsecond=0)
        common: dict[str, Any] = {"seq": seq, "line": police.line, "receiver": police.receiver,
                                  "account": police.account, "timestamp": stamp}
        if message is None:
            return dc09.Message("NULL", **common)
        code = police.code({"test": "manual_test", "periodic_test": "periodic_test"}.get(message.kind,
                                                                                          message.alarm_type))
        restore = message.kind == "restore"
        if police.format == "ADM-CID":
            data = dc09.contact_id(police.account, restore, code.contact_id, police.partition, message.zone)
        else:
            data = dc09.sia_dcs(police.account, code.sia_restore if restore else code.sia, police.partition,
                                message.zone)
        return dc09.Message(police.format, data=data, **common)

    def _next_seq(self, path: PathRuntime) -> int:
        """0001-9999 then 0001 again, per path, kept across restarts (receivers drop repeats)."""
        with self.sessions.begin() as session:
            row = session.get(PolicePathState, path.config.name, with_for_update=True)
            assert row is not None
            row.seq = row.seq % 9999 + 1
            return row.seq

    def _record(self, path: PathRuntime, message: Report | None, out: dc09.Message, sent_at: datetime,
                token: str, answered_at: datetime, detail: str | None) -> None:
        sent = dc09.encode(out)[9:-1].decode("ascii")  # the plain text, even when it went encrypted
        with self.sessions.begin() as session:
            session.add(PoliceExchange(message_id=message.id if message else None, path=path.config.name,
                                       token=out.token, seq=out.seq, sent=sent, sent_at=sent_at, answer=token,
                                       answered_at=answered_at if token != "none" else None, detail=detail))

    def _acknowledged(self, message: Report, path: PathRuntime) -> None:
        at = self._answered_at
        with self.sessions.begin() as session:
            session.execute(update(PoliceMessage).where(PoliceMessage.id == message.id).values(
                state="acked", acked_at=at, acked_path=path.config.name, attempts=message.attempts + 1))
            if message.alarm_id is not None:
                text = {"alarm": "the alarm centre acknowledged the alarm ({path})",
                        "restore": "the alarm centre acknowledged the restore ({path})",
                        "test": "the alarm centre acknowledged the test report ({path})"}[message.kind]
                store.note(session, message.alarm_id, "police", text, at, params={"path": path.config.name})
        log.info("police link: %s message %d acknowledged on %s", message.kind, message.id, path.config.name)
        if message.alarm_id is not None:
            self._publish_alarm(message.alarm_id)
            if message.kind == "alarm" and self.evidence is not None:
                self.evidence.send(message.alarm_id, path.config.name, at)

    def _queue_periodic_test(self) -> None:
        with self.sessions.begin() as session:
            session.add(PoliceMessage(alarm_id=None, kind="periodic_test", alarm_type="periodic_test", zone=0,
                                      created_at=self.clock.wall(), state="pending", attempts=0))

    # -- paths and health ---------------------------------------------------------------

    def _path_state(self, mark: delivery.MarkPath) -> None:
        path, up, error = self._paths[mark.path], mark.up, mark.error
        at = self._answered_at if up else self.clock.wall()  # up: the ACK's time
        with self.sessions.begin() as session:
            values: dict[str, Any] = {"up": up, "last_error": error}
            if up:
                values["last_ack_at"] = at
            if mark.changed:
                values["since"] = at
            session.execute(update(PolicePathState).where(PolicePathState.name == path.config.name)
                            .values(**values))
        if not mark.changed:
            return
        if up:
            log.info("police link: path %s is up", path.config.name)
            with self.sessions.begin() as session:  # what waits for a retry goes now, not after its backoff
                session.execute(update(PoliceMessage).where(PoliceMessage.state == "pending").values(next_try_at=None))
        else:
            log.error("police link: path %s is down: %s", path.config.name, error)
        self._health("police_path_down", not up, path.config.name,
                     f"alarm centre path {path.config.name} ({path.config.host}:{path.config.port}) is down: {error}"
                     if not up else f"alarm centre path {path.config.name} answers again")
        self.publish_paths()

    def _health(self, condition: str, active: bool, path: str | None, detail: str) -> None:
        self._event_seq += 1
        data: dict[str, Any] = {"condition": condition, "active": active, "detail": detail[:1000]}
        if path is not None:
            data["path"] = path
        event = make_event(self.site, "gateway", self.source, "campus.gateway.health", data, self._event_seq,
                           self.clock.wall().timestamp(), self.config.site.tz)
        self.bus.publish(topics.event(self.site, topics.GATEWAY, self.source, event.type), event.to_json())

    def publish_paths(self) -> None:
        """Each path's state, retained, for the console and anyone watching."""
        with self.sessions() as session:
            self.bus.publish_json(topics.police_paths(self.site),
                                  {"paths": store.police_paths(session)}, retain=True)

    def _publish_alarm(self, alarm_id: int) -> None:
        with self.sessions() as session:
            alarm = session.get(Alarm, alarm_id)
            if alarm is not None:
                view = store.alarm_views(session, [alarm])[0]
                self.bus.publish_json(topics.alarm(self.site, alarm_id), view)

    def _pending_count(self) -> int:
        with self.sessions() as session:
            return session.scalar(sql_select(func.count()).select_from(PoliceMessage)
                                  .where(PoliceMessage.state == "pending")) or 0

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent, "acked": self.acked, "pending": self._pending_count(),
                "paths_up": {p.config.name: bool(p.status.up) for p in self.paths}}
