"""Starting and stopping the parts of a gateway: broker, drivers, rules service, console.

`campusgw run` starts every part in one process; `--only` starts one, so a
site can move the rules service or the console to another machine. Shutdown
runs in reverse and waits for each part, so Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from gateway import topics
from gateway.broker import EmbeddedBroker, login, users_of
from gateway.broker import passwords as broker_passwords
from gateway.bus import Bus
from gateway.clock import Measurement, NtpError, measure
from gateway.config import Config, ConfigError, DistrictLink, SecretRef
from gateway.config_file import warnings_of
from gateway.guard import keep_running
from gateway.outbox import Outbox
from gateway.records import db, store
from gateway.supervisor import DriverHost
from gateway.systemd import Notifier, clock_synchronised

log = logging.getLogger("campusgw")
PARTS = ("drivers", "rules", "console")
CLOCK_CHECK_S = 3600.0


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the gateway handles signals for every part
        yield


def private(data_dir: Path) -> None:
    """The data folder and the files in it (records, outbox, their WAL) for the gateway's user only: they hold
    pass tokens, card and phone numbers and password hashes. Files made later are private by the umask."""
    with contextlib.suppress(OSError):  # not ours to change (another owner): leave it as the installer set it
        data_dir.chmod(0o700)
        for path in data_dir.iterdir():
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)


def bind_socket(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError([f"{what}: cannot listen on {host}:{port}: {exc.strerror} (set another port in the "
                           "config, or 0 for any free port)"]) from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


@dataclass
class Gateway:
    config: Config
    parts: tuple[str, ...] = PARTS
    console_socket: socket.socket | None = None
    broker_port: int | None = None
    console_url: str | None = None
    host: DriverHost | None = None
    outbox: Outbox | None = None
    rules: Any = None
    police: Any = None
    live_alarms: Any = None  # the alarm views' fast path to the district (district.live)
    clock_offset_s: float | None = None  # the last measurement against clock.ntp_server
    sessions: Any = None
    first_admin_password: str | None = None  # set on the very first start: shown once, then forgotten
    # A client with every right on the embedded broker, for tests and benchmarks in the same process; a site
    # config cannot ask for one.
    trusted_login: tuple[str, str] | None = None
    _cleanup: list[Callable[[], Any]] = field(default_factory=list)
    _tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event, on_ready: Callable[[Gateway], None] | None = None) -> None:
        notifier = Notifier()
        watchdog: asyncio.Task[None] | None = None
        try:
            await self._start()
            for warning in warnings_of(self.config):
                log.warning("%s", warning)
            notifier.ready(f"running: {', '.join(self.parts)}")
            if notifier.watchdog_interval:
                watchdog = asyncio.create_task(self._watchdog(notifier, notifier.watchdog_interval))
            if on_ready:
                on_ready(self)
            await stop.wait()
        finally:
            notifier.stopping()
            if watchdog is not None:
                watchdog.cancel()
            await self._stop()

    def parts_state(self) -> dict[str, Any]:
        """What /metrics shows of the parts running in this process."""
        state: dict[str, Any] = {"up": {}}
        if "drivers" in self._tasks:
            state["up"]["drivers"] = not self._tasks["drivers"].done()
        if self.rules is not None:
            state["up"]["rules"] = self.rules.alive()
            state["rules"] = self.rules.stats()
        if self.police is not None:
            state["up"]["police"] = self.police.alive()
            state["police"] = self.police.stats()
        if "console" in self._tasks:
            state["up"]["console"] = not self._tasks["console"].done()
        if self.outbox is not None:
            state["up"]["outbox"] = self.outbox.alive()
            state["outbox"] = self.outbox.stats()
        if self.host is not None:
            state["drivers"] = self.host.health()
        return state

    def problems(self) -> list[str]:
        """Parts that have stopped working; empty while the gateway is healthy."""
        found = []
        if self._tasks.get("drivers") is not None and self._tasks["drivers"].done():
            found.append("the drivers' supervisor has stopped")
        if self.outbox is not None and not self.outbox.alive():
            found.append("the outbox publisher has stopped or keeps failing")
        if self.rules is not None and not self.rules.alive():
            found.append("the rules service has stopped or keeps failing")
        if self.police is not None and not self.police.alive():
            found.append("the police link has stopped")
        if self._tasks.get("console") is not None and self._tasks["console"].done():
            found.append("the console has stopped")
        return found

    async def watch_clock(self, check: Callable[[], bool | None] = clock_synchronised,
                          every_s: float = CLOCK_CHECK_S) -> None:
        """Raise a gateway-health alarm while the clock is not synchronised, and clear it when it is."""
        raised = False
        while True:
            synced = await asyncio.to_thread(check)
            if self.host is not None and synced is not None and synced == raised:  # a change to report
                raised = not synced
                self.host.emit_gateway("campus.gateway.health", {
                    "condition": "clock_unsynchronised", "active": raised,
                    "detail": "the clock is not synchronised (NTP): records may carry wrong times" if raised
                    else "the clock is synchronised again"})
            await asyncio.sleep(every_s)

    async def watch_clock_offset(self, measure: Callable[[], Measurement], max_offset_s: float,
                                 every_s: float) -> None:
        """Measure the clock against the configured time server; a gateway-health alarm while it is off by
        more than `max_offset_s`. An unreachable server is logged, not alarmed: the clock may be fine."""
        raised = False
        while True:
            try:
                measured = await asyncio.to_thread(measure)
            except (OSError, NtpError) as exc:
                log.warning("clock: the time server did not answer usefully (%s); trying again in %.0f s",
                            exc, every_s)
            else:
                self.clock_offset_s = measured.offset_s
                off = abs(measured.offset_s) > max_offset_s
                if self.host is not None and off != raised:
                    raised = off
                    ahead = "behind" if measured.offset_s > 0 else "ahead of"
                    self.host.emit_gateway("campus.gateway.health", {
                        "condition": "clock_offset", "active": raised, "offset_s": round(measured.offset_s, 3),
                        "detail": f"the clock is {abs(measured.offset_s):.1f} s {ahead} the time server "
                                  f"(more than {max_offset_s:g} s): records carry wrong times" if raised
                        else f"the clock is within {max_offset_s:g} s of the time server again"})
            await asyncio.sleep(every_s)

    async def purge_snapshots(self, every_s: float = 86400.0) -> None:
        """Camera snapshots and alarm clips past their retention (retention.snapshots_days / clips_days)."""
        from drivers.camera.retention import purge

        root = self.config.gateway.data_dir / "snapshots"
        retention = self.config.retention
        while True:
            cameras = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
            for camera in cameras:
                days, clips = await asyncio.to_thread(purge, camera, retention.snapshots_days, retention.clips_days)
                if days or clips:
                    log.info("retention: removed %d days of snapshots and %d clips of camera %s", days, clips,
                             camera.name)
            await asyncio.sleep(every_s)

    async def _watchdog(self, notifier: Notifier, interval: float) -> None:
        """Ping systemd while every part is healthy. This runs on the drivers' event loop, so a driver that
        blocks the loop stops the pings too, and systemd restarts the gateway."""
        reported: list[str] = []
        while True:
            problems = self.problems()
            if not problems:
                notifier.watchdog()
            elif problems != reported:
                log.error("not pinging the systemd watchdog: %s", "; ".join(problems))
            reported = problems
            await asyncio.sleep(interval)

    async def _start(self) -> None:
        cfg = self.config
        site, gw = cfg.site.id, cfg.gateway.id
        cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
        private(cfg.gateway.data_dir)
        if cfg.broker.embedded:
            if set(self.parts) != set(PARTS):
                raise ConfigError(["broker.url is 'embedded': that broker lives inside a full 'campusgw run'. "
                                   "To run parts apart (--only), give every part the URL of a real broker."])
            users = users_of(broker_passwords(cfg.gateway.data_dir))
            rules = None
            if self.trusted_login is not None:
                users[self.trusted_login[0]] = self.trusted_login[1]
                rules = {self.trusted_login[0]: [("readwrite", "#")]}
            broker = EmbeddedBroker(cfg.broker.embedded_host, cfg.broker.embedded_port, users=users,
                                    extra_rules=rules)
            self.broker_port = await asyncio.to_thread(broker.start)
            self._cleanup.append(broker.stop)
        if "rules" in self.parts or "console" in self.parts:
            engine = db.make_engine(cfg.database_url(), cfg.database.sqlite_busy_timeout_s)
            await asyncio.to_thread(db.upgrade, engine)
            sessions = self.sessions = db.make_sessions(engine)
            with sessions.begin() as session:
                store.register_devices(session, cfg.devices)
            self._cleanup.append(engine.dispose)
        if "rules" in self.parts:
            from gateway.rules_service.service import RulesService

            # A persistent session: the broker keeps what arrives while the rules service is down. Its
            # availability tells the drivers' outboxes to send again what it has not confirmed.
            rules_availability = topics.rules_availability(site)
            rules_bus = self._bus(f"campusgw-{site}-rules", "rules", clean_session=False, manual_ack=True,
                                  will=(rules_availability, b'{"state":"offline"}'))
            rules_bus.on_connect(lambda: rules_bus.publish_json(
                rules_availability, {"state": "online", "ts": time.time()}, retain=True))
            if cfg.police is not None:
                from gateway.police.link import PoliceLink

                # Beside the rules service, which writes its reports in the same transaction as the alarm.
                self.police = PoliceLink(cfg, sessions, rules_bus)
            self.rules = RulesService(site, rules_bus, sessions, cfg,
                                      on_police=self.police.wake if self.police else None,
                                      on_failing=self._on_part_failing, command_key=cfg.gateway.command_key())
            self.rules.start()
            rules_bus.start()
            self._cleanup += [rules_bus.stop, self.rules.stop]
            if self.police is not None:
                self.police.start()
                self._cleanup.append(self.police.stop)
            if cfg.district is not None and cfg.district.live:
                self._start_live_alarms(cfg.district, site)
        if "drivers" in self.parts:
            availability = topics.availability(site, topics.GATEWAY, gw)
            drivers_bus = self._bus(f"campusgw-{site}-{gw}-drivers", "drivers",
                            will=(availability, b'{"state":"offline"}'))
            drivers_bus.on_connect(lambda: drivers_bus.publish_json(
                availability, {"state": "online", "ts": time.time()}, retain=True))
            if cfg.home_assistant.discovery:
                from gateway.homeassistant import discovery_messages

                discovery = discovery_messages(cfg)
                drivers_bus.on_connect(lambda: [drivers_bus.publish_json(t, b, retain=True) for t, b in discovery])
            self.outbox = Outbox(cfg.gateway.data_dir / "outbox.db",
                                 max_telemetry_bytes=cfg.outbox.max_telemetry_bytes,
                                 on_shed=self._on_shed, on_unwritable=self._on_unwritable)
            self.outbox.attach(drivers_bus, site, on_failing=self._on_part_failing)
            self.host = DriverHost(cfg, drivers_bus, self.outbox, cfg.gateway.command_key())
            drivers_bus.start()
            task = self._tasks["drivers"] = asyncio.create_task(self.host.run(), name="drivers")
            self._tasks["clock"] = asyncio.create_task(keep_running("clock check", self.watch_clock), name="clock")
            if any(d.kind == "camera" for d in cfg.devices):
                self._tasks["snapshots"] = asyncio.create_task(
                    keep_running("snapshot retention", self.purge_snapshots), name="snapshot-retention")
            clock = cfg.clock
            if clock.ntp_server:
                ntp_host = clock.ntp_server
                self._tasks["clock_offset"] = asyncio.create_task(keep_running("clock offset", lambda: (
                    self.watch_clock_offset(lambda: measure(ntp_host, clock.ntp_port), clock.max_offset_s,
                                            clock.check_every_s))), name="clock-offset")
            outbox, host = self.outbox, self.host

            async def stop_drivers() -> None:
                self._tasks["clock"].cancel()
                for name in ("clock_offset", "snapshots"):
                    if name in self._tasks:
                        self._tasks[name].cancel()
                await host.stop()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await asyncio.to_thread(outbox.close)
                await asyncio.to_thread(drivers_bus.stop, (availability, b'{"state":"offline"}'))

            self._cleanup.append(stop_drivers)
        if "console" in self.parts:
            from gateway.console.app import create_app, ensure_first_admin
            from gateway.records.models import utcnow
            from gateway.reports.survey import survey

            console_bus = self._bus(f"campusgw-{site}-console-{os.getpid()}", "console")
            from gateway.personal import PersonalData

            personal = PersonalData.from_config(cfg.access.personal_data_key_env, cfg.access.personal_data_key_file,
                                                cfg.gateway.data_dir)
            app = create_app(site, cfg.site.name, cfg.site.tz, sessions, console_bus, cfg.console.language,
                             cfg.console.secure_cookies, self.parts_state, cfg.gateway.data_dir / "snapshots",
                             access=cfg.access, personal=personal, duty=cfg.duty, incidents=cfg.incidents,
                             patrol=cfg.patrol, command_key=cfg.gateway.command_key(),
                             zones={zone.id: zone.name for zone in cfg.zones},
                             guards_finish=frozenset(cfg.console.guards_finish),
                             procedures={name: list(steps) for name, steps in cfg.procedures.items()},
                             district=cfg.district is not None,
                             survey=lambda: survey(cfg, utcnow()))
            self.first_admin_password = ensure_first_admin(sessions)
            console_bus.start()
            sock = self.console_socket or bind_socket(cfg.console.host, cfg.console.port, "console")
            listen_host, listen_port = sock.getsockname()[:2]
            self.console_url = f"http://{listen_host}:{listen_port}/"
            server = _Uvicorn(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                             timeout_graceful_shutdown=2,
                                             # headers in 10 s (slowloris), idle keep-alive 5 s, at most
                                             # 1000 connections (503 beyond), 16 KiB of headers
                                             http="gateway.console.server:HeaderDeadlineProtocol",
                                             timeout_keep_alive=5, limit_concurrency=1000,
                                             h11_max_incomplete_event_size=16 * 1024,
                                             # X-Forwarded-For only from the proxies a site names (uvicorn's
                                             # FORWARDED_ALLOW_IPS): a local process could claim any address
                                             # and so escape the login throttle
                                             proxy_headers="FORWARDED_ALLOW_IPS" in os.environ))
            serve = self._tasks["console"] = asyncio.create_task(server.serve(sockets=[sock]), name="console")

            async def stop_console() -> None:
                app.state.broadcaster.close()  # ends every live stream, so the server can stop gracefully
                server.should_exit = True
                try:
                    await asyncio.wait_for(asyncio.shield(serve), 3)
                except TimeoutError:
                    server.force_exit = True
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(serve, 3)
                sock.close()
                await asyncio.to_thread(console_bus.stop)

            self._cleanup.append(stop_console)
            while not server.started and not serve.done():
                await asyncio.sleep(0.01)
            if serve.done():
                serve.result()

    def _start_live_alarms(self, link: DistrictLink, site: str) -> None:
        """The alarm views straight to the district's NATS nodes too (gateway/district/live.py), read from the
        broker like every other consumer of them: the rules service's and the console's alike."""
        from gateway.district.live import LiveAlarms

        live = LiveAlarms([f"nats://{a}" for a in link.live], f"campusgw-{site}-live",
                          user=link.username or site,
                          password=SecretRef(env=link.password_env, file=link.password_file).resolve())
        live.start()
        self.live_alarms = live
        live_bus = self._bus(f"campusgw-{site}-district-live", "rules")
        live_bus.subscribe(topics.alarms_filter(site), lambda m: live.offer(m.topic, bytes(m.payload)), qos=1)
        live_bus.start()
        self._cleanup += [live.stop, live_bus.stop]

    def _bus(self, client_id: str, name: str, **kwargs: Any) -> Bus:
        credentials = self.mqtt_login(name) if self.config.broker.embedded else None
        return Bus(self.config.broker, client_id, port=self.broker_port, name=name, credentials=credentials,
                   **kwargs)

    def mqtt_login(self, part: str) -> tuple[str, str]:
        """(username, password) of a part, or of 'reader', on the embedded broker."""
        return login(part, self.config.gateway.data_dir)

    def _on_shed(self, count: int) -> None:
        if self.host is not None:
            self.host.emit_gateway("campus.gateway.health", {
                "condition": "outbox_shedding", "active": True, "count": count,
                "detail": "the outbox is over its disk bound: telemetry is being dropped (alarms are kept)"})

    def _on_unwritable(self, active: bool, detail: str) -> None:
        if self.host is not None:
            self.host.emit_gateway("campus.gateway.health", {
                "condition": "outbox_unwritable", "active": active, "detail": detail[:1000]})

    def _on_part_failing(self, part: str, failing: bool, detail: str) -> None:
        """A thread that keeps failing: an alarm on the board (the watchdog then lets systemd restart us)."""
        if self.host is not None:
            self.host.emit_gateway("campus.gateway.health", {
                "condition": "part_failing", "part": part, "active": failing, "detail": detail[:1000]})

    async def _stop(self) -> None:
        for step in reversed(self._cleanup):
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("a part did not stop cleanly")
        self._cleanup.clear()


def serve(config: Config, parts: tuple[str, ...], on_ready: Any = None, extra: Any = None,
           console_socket: Any = None) -> int:
    """Run until SIGINT/SIGTERM; `extra(gateway, stop)` is an optional coroutine run beside (the demo's presser)."""
    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gateway = Gateway(config, parts, console_socket=console_socket)
        side: list[asyncio.Task[Any]] = []

        def ready(gw: Gateway) -> None:
            if gw.first_admin_password and not on_ready:  # the demo makes and prints its own users
                print(f"First start: created console user 'admin' with password {gw.first_admin_password}\n"
                      "  Write it down: it is not shown again. Change it with 'campusgw user passwd admin -c FILE'.",
                      flush=True)
            if on_ready:
                on_ready(gw)
            else:
                log.info("gateway running: %s%s", ", ".join(parts),
                         f"; console {gw.console_url}" if gw.console_url else "")
            if extra:
                side.append(asyncio.create_task(extra(gw, stop)))

        try:
            await gateway.run(stop, ready)
        finally:
            for task in side:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(go())
    return 0
