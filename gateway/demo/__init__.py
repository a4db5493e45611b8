"""`campusgw demo`: the whole simulated school (gateway.demo.school) with a school day played on the site's clock
(gateway.demo.scenario), on the embedded broker and SQLite; or `--school small`, one alarm box pressed now and
then. Ctrl-C stops the gateway and every simulator, leaving no process or pty behind."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from gateway.app import bind_socket, serve
from gateway.clock import SiteClock, use_site_clock
from gateway.config import Config, ConfigError
from gateway.config_file import validate_config
from gateway.logs import setup_logging

log = logging.getLogger("campusgw.demo")
MARKER = ".campusgw-demo"  # a data directory the demo made, and may empty
STARTUP_S = 8.0  # real seconds the gateway is given to start before the scenario's first minute
OSDP_KEY_ENV = "CAMPUSGW_DEMO_OSDP_KEY"
USERS = (("guard", "guard"), ("supervisor", "supervisor"), ("admin", "admin"))


def demo(args: argparse.Namespace) -> int:
    if args.school == "small":
        return run_small(args.config, args.data_dir, args.console_port, args.press_every)
    if args.speed <= 0:
        raise ConfigError([f"--speed {args.speed:g}: it must be above 0 (1 is real time)"])
    return run_school(args.data_dir, args.console_port, args.scenario, args.speed)


def fresh_data_dir(path: Path) -> None:
    """An empty data directory for a new day: one the demo made before is emptied; any other that holds files
    is refused, so a mistyped --data-dir never empties a real site's records."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise ConfigError([f"--data-dir {path}: it holds files the demo did not make; give an empty or new "
                               "directory"])
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by campusgw demo: emptied at its next start\n")


def site_clock_for(start: datetime, speed: float, now: float | None = None) -> SiteClock:
    """The site's clock for a day starting at `start`: that moment comes STARTUP_S real seconds from now
    (`now`: a time.monotonic() reading)."""
    now = time.monotonic() if now is None else now
    return SiteClock(start.timestamp() - STARTUP_S * speed, now, speed)


def run_school(data_dir: Path, console_port: int, scenario_name: str, speed: float) -> int:
    from gateway.demo import scenario
    from gateway.demo.school import TIMEZONE, SimulatedSchool, school_day

    tz = ZoneInfo(TIMEZONE)
    setup_logging("warning", "text", TIMEZONE)  # the terminal tells the day; warnings still show
    plan = scenario.load(scenario_name)
    day = school_day(datetime.now(tz).date())
    actions = scenario.expand(plan, day, tz, speed)
    fresh_data_dir(data_dir)
    school = SimulatedSchool(data_dir, tz)
    stop_playing = threading.Event()
    try:
        school.start()
        os.environ[OSDP_KEY_ENV] = school.osdp_key
        config = validate_config(school.config(key_env=OSDP_KEY_ENV), "the demo school")
        start = scenario.at_time(day, plan.start, tz)
        clock = site_clock_for(start, speed)
        use_site_clock(clock)
        sock = _console_socket(config, console_port)

        def ready(gw: Any) -> None:
            logins = demo_users(gw.sessions)
            school.seed(gw.sessions, config, day, dict(USERS))
            _banner(gw, config, logins, data_dir)
            print(f"  The day: {day:%A %Y-%m-%d}, {plan.start}-{plan.end} at {speed:g}x "
                  f"({_duration(plan, speed)} of real time): {plan.description}.", flush=True)
            print("  Ctrl-C stops the demo.\n", flush=True)

        async def player(gw: Any, stop: asyncio.Event) -> None:
            try:
                done = await asyncio.to_thread(scenario.play, actions, clock, school, stop_playing,
                                               lambda line: print(line, flush=True))
            finally:  # cancelled at Ctrl-C: the thread must stop too, or the process waits for the day's end
                stop_playing.set()
            if done == len(actions):
                print(f"{plan.end} the day is over. The console stays up with the day's records; Ctrl-C stops.",
                      flush=True)

        try:
            return serve(config, ("drivers", "rules", "console"), ready, player, console_socket=sock)
        finally:
            stop_playing.set()
    finally:
        school.stop()
        use_site_clock(None)
        os.environ.pop(OSDP_KEY_ENV, None)
        print("campusgw demo stopped.", flush=True)


def _duration(plan: Any, speed: float) -> str:
    hours, minutes = (int(x) for x in plan.start.split(":"))
    end_h, end_m = (int(x) for x in plan.end.split(":"))
    seconds = ((end_h - hours) * 60 + end_m - minutes) * 60 / speed
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _console_socket(config: Config, port: int) -> Any:
    try:
        return bind_socket(config.console.host, port, "console")
    except ConfigError:
        if port == 0:
            raise
        return bind_socket(config.console.host, 0, "console")


def _banner(gw: Any, config: Config, logins: list[tuple[str, str]], data_dir: Path) -> None:
    print(f"campusgw demo is running for '{config.site.name}'.", flush=True)
    print(f"  Console: {gw.console_url}", flush=True)
    for username, password in logins:
        print(f"  Login:   {username:<11} / {password}", flush=True)
    user, password = gw.mqtt_login("reader")
    print(f"  MQTT:    mqtt://{config.broker.embedded_host}:{gw.broker_port} (embedded broker, read only: "
          f"mosquitto_sub -p {gw.broker_port} -u {user} -P {password} -t 'campus/#' -v)", flush=True)
    print(f"  Data:    {data_dir.resolve()}", flush=True)


def run_small(config_path: Path, data_dir: Path, console_port: int, press_every: float) -> int:
    """The quick look: embedded broker, SQLite, one simulated alarm box whose button is pressed now and then."""
    from simulators.modbus_di import ModbusDISimulator

    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    setup_logging("info", "text", data["site"].get("timezone", "Asia/Shanghai"))
    sim = ModbusDISimulator(inputs=16)
    sim_port = sim.start()
    data.setdefault("gateway", {})["data_dir"] = str(data_dir)
    data["broker"] = {"url": "embedded", "embedded_port": 0}  # any free port: 1883/1884 may be taken
    for device in data["devices"]:
        if device["driver"] == "modbus_di":
            device["connection"]["port"] = sim_port
    config = validate_config(data, str(config_path))
    sock = _console_socket(config, console_port)

    def ready(gw: Any) -> None:
        _banner(gw, config, demo_users(gw.sessions), data_dir)
        print(f"  The gatehouse one-key alarm (simulated, input 1) is pressed every {press_every:.0f} s. "
              "Ctrl-C stops.", flush=True)

    async def presser(gw: Any, stop: asyncio.Event) -> None:
        await asyncio.sleep(min(3.0, press_every))
        while not stop.is_set():
            sim.press(1)
            log.info("demo: pressed the simulated one-key alarm button (input 1)")
            await asyncio.sleep(1.0)
            sim.release(1)
            await asyncio.sleep(max(press_every - 1.0, 0.5))

    try:
        return serve(config, ("drivers", "rules", "console"), ready, presser, console_socket=sock)
    finally:
        sim.stop()
        print("campusgw demo stopped.", flush=True)


def demo_users(sessions: Any) -> list[tuple[str, str]]:
    """The demo's three users, with fresh passwords at every start (printed; a demo has no secrets)."""
    from sqlalchemy import select

    from gateway.console import auth
    from gateway.records.models import User

    logins = []
    with sessions.begin() as session:
        for username, role in USERS:
            password = auth.generate_password()
            if session.scalar(select(User).where(User.username == username)) is None:
                auth.add_user(session, username, role, password)  # type: ignore[arg-type]
            else:
                auth.set_password(session, username, password)
            logins.append((username, password))
    return logins
