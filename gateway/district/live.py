"""The alarms' fast path to the district: each alarm view the school announces, also published straight to the
cluster over core NATS, besides Mosquitto's bridge.

Why two paths: the bridge lands in JetStream, which keeps every message, but NATS's MQTT listener keeps its
sessions and messages in JetStream too, so while a lost node's streams elect a leader (NATS waits 4-9 s for a
lost leader) the bridges can neither publish nor even connect: a panic reached the district 8-14 s late through a
node failure (bench/district). Core NATS needs no leader: a client whose node died is on another within a
second, and a district worker in the `district-alarms-live` queue group writes the view as it comes. Core NATS
is at most once, so a view lost on the way is the bridge's to bring; the district keeps the newest revision of
each alarm whichever path brings it first, so the two never disagree.

The subject is the one NATS maps the view's MQTT topic to (`campus/v1/s1/rules/alarms/7` ->
`campus.v1.s1.rules.alarms.7`): the district's NATS users let a school publish its own site's subjects only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

log = logging.getLogger("campusgw.district.live")
PENDING_LIMIT = 2000  # views waiting while no node is reachable; past it the oldest go (the bridge has them)
# Each view sent again this long after, unless a newer one of the alarm went meanwhile: core NATS delivers only to
# whoever listens at that instant, and a district worker whose node just died listens again a moment later.
RESEND_AFTER_S = (0.5, 1.5)


def subject_of(topic: str) -> str:
    """The core NATS subject of an MQTT topic, as NATS's MQTT listener maps it."""
    return topic.replace("/", ".")


class LiveAlarms:
    """One core NATS connection (to any node, moving on when it dies) in a thread of its own; `offer` is safe from
    any thread (the bus's callbacks) and never blocks."""

    def __init__(self, servers: list[str], name: str, user: str | None = None,
                 password: str | None = None) -> None:
        self.servers, self.name = servers, name
        self.user, self.password = user, password
        self.sent = 0
        self.resent = 0
        self.dropped = 0
        self._latest: dict[str, bytes] = {}  # subject -> the newest view sent on it
        self._resends: set[asyncio.Task[None]] = set()
        self.connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, bytes]] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="district-live", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def offer(self, topic: str, payload: bytes) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._put, queue, subject_of(topic), payload)

    def _put(self, queue: asyncio.Queue[tuple[str, bytes]], subject: str, payload: bytes) -> None:
        if queue.qsize() >= PENDING_LIMIT:
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait((subject, payload))

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._put_stop)
        if self._thread is not None:
            self._thread.join(10)

    def _put_stop(self) -> None:
        self._stop.set()
        if self._queue is not None:
            self._queue.put_nowait(("", b""))

    def _resend(self, nc: Any, subject: str, payload: bytes) -> None:
        if self._latest.get(subject) is not payload or self._stop.is_set():
            return  # a newer view of the alarm went since: that one counts

        async def again() -> None:
            try:
                await nc.publish(subject, payload)
                self.resent += 1
            except Exception as exc:
                log.debug("district live link: %s not sent again (%s)", subject, exc)

        task = asyncio.ensure_future(again())
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import nats

        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._started.set()

        async def up() -> None:
            self.connected.set()

        async def down() -> None:
            self.connected.clear()

        async def error(exc: Exception) -> None:
            log.debug("district live link: %s", exc)

        nc: Any = None
        while nc is None:  # the first connect: nats-py gives up at once when no server answers, so try again here
            try:
                nc = await nats.connect(self.servers, name=self.name, user=self.user, password=self.password,
                                        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                        connect_timeout=2, ping_interval=5, max_outstanding_pings=2,
                                        reconnected_cb=up, disconnected_cb=down, error_cb=error)
                self.connected.set()
            except Exception as exc:
                log.warning("district live link: no node answers (%s); again in 2 s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)
                if self._stop.is_set():
                    return
        try:
            while True:
                subject, payload = await self._queue.get()
                if not subject:
                    break
                try:
                    await nc.publish(subject, payload)  # buffered by nats-py while it reconnects
                    self.sent += 1
                except Exception as exc:
                    self.dropped += 1
                    log.debug("district live link: %s not sent (%s)", subject, exc)
                    continue
                self._latest[subject] = payload
                if len(self._latest) > PENDING_LIMIT:
                    self._latest.pop(next(iter(self._latest)))
                for delay in RESEND_AFTER_S:
                    self._loop.call_later(delay, self._resend, nc, subject, payload)
        finally:
            try:
                await asyncio.wait_for(nc.drain(), 5)
            except Exception as exc:
                log.debug("district live link: drain: %s", exc)
