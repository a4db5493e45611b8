"""Runs the drivers: one asyncio task per driver instance, each supervised on its own.

A driver whose start() raises or returns, or that stops calling heartbeat()
for its hang timeout, is cancelled, its devices are reported offline (MQTT and,
through the rules service, the database), and it is restarted with backoff.
No driver's failure touches another. Commands arriving on MQTT are routed to
the driver that owns the device, with a result published for each, once the
command is shown to be authorised (gateway.command_auth); a refusal is
answered with its reason and sent to the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from drivers.base import CommandResult, Driver, Ticker, Tickers
from drivers.registry import driver_class
from gateway import topics
from gateway.bus import Bus
from gateway.clock import site_time
from gateway.command_auth import Verifier
from gateway.config import Config, DeviceConfig
from gateway.events import make_event
from gateway.outbox import Outbox

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a driver that ran this long starts its backoff afresh
COMMAND_TIMEOUT_S = 10.0
REFUSALS_AUDITED_PER_MIN = 60  # refused commands sent to the audit log per minute; a flood beyond is counted


class Context:
    """The DriverContext of one driver instance."""

    def __init__(self, host: DriverHost, name: str, devices: list[DeviceConfig]) -> None:
        self.host = host
        self.site = host.config.site.id
        self.tz: tzinfo = host.tz
        self.data_dir: Path = host.config.gateway.data_dir
        self.log = logging.getLogger(f"campusgw.driver.{name}")
        self.devices = {d.id: d for d in devices}
        self.last_heartbeat = time.monotonic()

    def emit(self, device_id: str, event_type: str, data: dict[str, Any], at: float | None = None,
             test: bool | None = None) -> None:
        self.host.emit(self.devices[device_id], event_type, data, at, test)

    def set_online(self, device_id: str, online: bool, reason: str | None = None) -> None:
        self.host.set_online(self.devices[device_id], online, reason)

    def set_state(self, device_id: str, state: dict[str, Any]) -> None:
        device = self.devices[device_id]
        self.host.bus.publish_json(topics.state(self.site, device.kind, device.id), state, retain=True)

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def ticker(self, period: float) -> Ticker:
        return self.host.tickers.of(period)


@dataclass
class Slot:
    """One supervised driver instance and its history."""

    name: str
    cls: type[Driver]
    devices: list[DeviceConfig]
    driver: Driver | None = None
    restarts: int = 0
    last_failure: str | None = None
    task: asyncio.Task[None] | None = None
    context: Context | None = field(default=None, repr=False)


class DriverHost:
    def __init__(self, config: Config, bus: Bus, outbox: Outbox, command_key: bytes) -> None:
        self.config = config
        self.bus = bus
        self.outbox = outbox
        self.log = logging.getLogger("campusgw.supervisor")
        self.tz = config.site.tz
        self.tickers = Tickers()  # shared poll timers of the drivers (drivers.base.Ticker)
        self._availability: dict[str, tuple[bool, float]] = {}
        self._availability_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.slots: list[Slot] = []
        groups: dict[tuple[str, str], list[DeviceConfig]] = {}
        for device in config.devices:
            if not device.enabled:
                continue
            cls = driver_class(device.driver)
            if cls is None:
                raise ValueError(f"device {device.id}: unknown driver {device.driver}")
            typed = cls.config_model.model_validate(device.model_dump())
            groups.setdefault((device.driver, cls.group_key(typed)), []).append(typed)
        for (driver_name, key), devices in groups.items():
            cls = driver_class(driver_name)
            assert cls is not None
            self.slots.append(Slot(f"{driver_name}.{key}", cls, devices))
        self._owner = {d.id: slot for slot in self.slots for d in slot.devices}
        self.commands = Verifier(command_key, config.site.id, {d.id: d.kind for d in config.devices})
        self._refusals = [0.0, 0]  # the minute's start (monotonic), refusals in it
        self.refused_unaudited = 0

    # -- events and availability (called from drivers) ---------------------------------

    def emit(self, device: DeviceConfig, event_type: str, data: dict[str, Any], at: float | None = None,
             test: bool | None = None) -> None:
        seq = self.outbox.next_seq(topics.source(self.config.site.id, device.kind, device.id))
        event = make_event(self.config.site.id, device.kind, device.id, event_type, data, seq,
                           site_time(at), self.tz,
                           test=device.test_mode if test is None else test)
        self.outbox.put(topics.event(self.config.site.id, device.kind, device.id, event_type), event)

    def emit_gateway(self, event_type: str, data: dict[str, Any]) -> None:
        """An event about the gateway itself (outbox shedding), from campus/v1/<site>/gateway/<id>."""
        site, gw = self.config.site.id, self.config.gateway.id
        seq = self.outbox.next_seq(topics.source(site, topics.GATEWAY, gw))
        event = make_event(site, topics.GATEWAY, gw, event_type, data, seq, site_time(), self.tz)
        self.outbox.put(topics.event(site, topics.GATEWAY, gw, event_type), event)

    def set_online(self, device: DeviceConfig, online: bool, reason: str | None = None) -> None:
        now = time.time()  # real: emit and the availability message turn it into the site's time
        with self._availability_lock:
            before = self._availability.get(device.id)
            if before is not None and before[0] == online:
                return
            self._availability[device.id] = (online, now)
        if online:
            offline_s = round(site_time(now) - site_time(before[1]), 3) if before else None
            self.emit(device, "campus.device.online", {"offline_s": offline_s}, now)
        else:
            self.emit(device, "campus.device.offline",
                      {"reason": (reason or "unknown")[:500], "zone": device.zone, "place": device.name}, now)
        self._publish_availability(device, online, now)

    def _publish_availability(self, device: DeviceConfig, online: bool, at: float) -> None:
        self.bus.publish_json(topics.availability(self.config.site.id, device.kind, device.id),
                              {"state": "online" if online else "offline", "ts": site_time(at)}, retain=True)

    def _republish_availability(self) -> None:
        """After a reconnect: retained availability may have been missed while the broker was away."""
        with self._availability_lock:
            known = dict(self._availability)
        for device_id, (online, at) in known.items():
            self._publish_availability(self._device(device_id), online, at)

    def _device(self, device_id: str) -> DeviceConfig:
        return next(d for d in self._owner[device_id].devices if d.id == device_id)

    # -- supervision -------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.bus.on_connect(self._republish_availability)
        self.bus.subscribe(topics.commands_filter(self.config.site.id), self._on_command)
        tasks = [asyncio.create_task(self._supervise(slot), name=f"supervise-{slot.name}") for slot in self.slots]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, slot: Slot) -> None:
        backoff = RESTART_MIN_S
        while not self._stopping:
            slot.context = Context(self, slot.name, slot.devices)
            slot.driver = slot.cls(slot.devices, slot.context)
            started = time.monotonic()
            slot.task = asyncio.create_task(slot.driver.start(), name=f"driver-{slot.name}")
            failure = await self._watch(slot)
            if self._stopping:
                return
            slot.restarts += 1
            slot.last_failure = failure
            self.log.error("driver %s failed: %s; restarting in %.1fs (restart %d)",
                           slot.name, failure, backoff, slot.restarts)
            for device in slot.devices:
                self.set_online(device, False, f"driver {slot.name} failed: {failure}")
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = RESTART_MIN_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _watch(self, slot: Slot) -> str:
        """Wait until the driver fails; returns why."""
        assert slot.task is not None and slot.context is not None and slot.driver is not None
        hang = slot.driver.hang_timeout_s
        while True:
            done, _ = await asyncio.wait({slot.task}, timeout=min(1.0, hang / 4))
            if done:
                if slot.task.cancelled():
                    return "cancelled"
                exc = slot.task.exception()
                return f"{type(exc).__name__}: {exc}" if exc else "start() returned while it should run"
            if self._stopping:
                return "stopping"
            silent = time.monotonic() - slot.context.last_heartbeat
            if silent > hang:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(slot.task, 5)
                return f"no heartbeat for {silent:.1f}s (hung)"

    async def stop(self) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.driver is not None:
                try:
                    await asyncio.wait_for(slot.driver.stop(), 5)
                except Exception:
                    self.log.exception("driver %s did not stop cleanly", slot.name)
        for slot in self.slots:
            if slot.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(slot.task, 5)

    def health(self) -> dict[str, Any]:
        out = {}
        for slot in self.slots:
            out[slot.name] = {"restarts": slot.restarts, "last_failure": slot.last_failure,
                              **(slot.driver.health() if slot.driver else {})}
        return out

    # -- commands ----------------------------------------------------------------------

    def _on_command(self, message: mqtt.MQTTMessage) -> None:
        command = topics.parse(message.topic)
        if not isinstance(command, topics.CommandTopic):
            return
        kind, device_id, name = command.kind, command.device, command.name
        result_topic = command.result.topic
        try:
            body = json.loads(message.payload)
            correlation_id = str(body["correlation_id"])
            args = body.get("args") or {}
            issued_by = str(body.get("issued_by", "?"))
            if not isinstance(args, dict):
                raise TypeError("args")
        except (ValueError, KeyError, TypeError, AttributeError):
            self.bus.publish_json(result_topic, {"correlation_id": None, "status": "error",
                                                 "detail": "malformed command: expected JSON with correlation_id"})
            return
        refusal = self.commands.refusal(kind, device_id, name, body, time.time())
        if refusal is not None:
            self._refuse(kind, device_id, name, issued_by, correlation_id, refusal, result_topic)
            return
        slot = self._owner.get(device_id)
        if slot is None or slot.driver is None or self._loop is None:
            self.bus.publish_json(result_topic, {"correlation_id": correlation_id, "status": "error",
                                                 "detail": f"device {device_id} is not served by this gateway"})
            return
        self.log.info("command %s for %s from %s (%s)", name, device_id, issued_by, correlation_id)
        future = asyncio.run_coroutine_threadsafe(
            self._run_command(slot.driver, device_id, name, args, issued_by), self._loop)

        def publish(done: Any) -> None:
            try:
                result: CommandResult = done.result()
            except Exception as exc:
                result = CommandResult(False, f"{type(exc).__name__}: {exc}")
            self.bus.publish_json(result_topic, {"correlation_id": correlation_id,
                                                 "status": "ok" if result.ok else "error",
                                                 "detail": result.detail, "data": result.data})

        future.add_done_callback(publish)

    def _refuse(self, kind: str, device_id: str, name: str, issued_by: str, correlation_id: str, reason: str,
                result_topic: str) -> None:
        """Not obeyed: answered with why, logged, and recorded (the rules service writes it to the audit log)."""
        self.bus.publish_json(result_topic, {"correlation_id": correlation_id, "status": "error",
                                             "detail": f"refused: {reason}"})
        now = time.monotonic()
        if now - self._refusals[0] > 60:
            self._refusals = [now, 0]
        self._refusals[1] += 1
        if self._refusals[1] > REFUSALS_AUDITED_PER_MIN:  # a flood is counted, not written row by row
            if self._refusals[1] == REFUSALS_AUDITED_PER_MIN + 1:
                self.log.warning("more than %d refused commands this minute: the rest are only counted",
                                 REFUSALS_AUDITED_PER_MIN)
            self.refused_unaudited += 1
            return
        self.log.warning("refused command %s for %s/%s (says it is from %s): %s", name, kind, device_id, issued_by,
                         reason)
        self.emit_gateway("campus.gateway.command_refused", {
            "kind": kind[:32], "device": device_id[:64], "command": name[:64], "issued_by": issued_by[:120],
            "reason": reason[:300]})

    async def _run_command(self, driver: Driver, device_id: str, name: str, args: dict[str, Any],
                           issued_by: str) -> CommandResult:
        try:
            return await asyncio.wait_for(driver.handle_command(device_id, name, args, issued_by),
                                          COMMAND_TIMEOUT_S)
        except TimeoutError:
            return CommandResult(False, f"the device did not complete '{name}' within {COMMAND_TIMEOUT_S:.0f}s")
