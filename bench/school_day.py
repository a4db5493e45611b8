"""A whole school day against a gateway in its own process: its CPU and memory apart from the simulators, the
events it carried, and a button's press-to-console time at the day's peaks.

    python -m bench.school_day [--speed 60] [--until 09:30] [--cameras 8] [--scenario school_day]
                               [--broker embedded|mosquitto] [--press-every 0.5] [--idle-s 10]

The demo school (gateway.demo.school: two alarm boxes, two bollard PLCs, two OSDP readers on one RS-485 line,
QR scanners, a patrol wand, --cameras MJPEG cameras) runs its simulators in this process; the gateway runs as
`python -m gateway.cli run` in a subprocess on the site's clock (CAMPUSGW_SITE_CLOCK, --speed), with SQLite and
the embedded broker (the product's default) or Mosquitto. Its process tree (camera workers included) is
sampled every second: CPU as % of one core, memory as PSS (shared pages counted once). First --idle-s real
seconds before the day's first step with every device connected and nothing happening (the baseline), then the
scenario (gateway/demo/scenarios) played on the site's clock while this script presses the north gate's door
contact every --press-every real seconds (+-50 %) and times the press to its alarm on the console's SSE stream
and to its event on MQTT. Presses inside the scenario's crowds (arrival, dismissal) are the "peak" rows.

At --speed 60 a site hour passes in a real minute, so the day's events come 60 times as densely as at a real
school; the cameras, polling and the presses run in real time. By default the morning is played, up to --until
09:30 (arrival and the panic at 09:15: 2.5 real minutes); --until 19:05 plays the whole day. This process's own
CPU (the simulators: eight MJPEG cameras drawing the yard, the Modbus and OSDP devices) is shown apart. The exit
status is 1 if a press never reached the console within 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import yaml
from sqlalchemy import func, select

from bench.alarm_latency import AlarmSseClient, console_token
from bench.common import NoAliases, percentile, start_mosquitto, wait_matching, wait_until
from gateway.broker import login
from gateway.clock import SiteClock, site_time, use_site_clock
from gateway.config_file import validate_config
from gateway.demo import USERS, demo_users, site_clock_for
from gateway.demo import scenario as sc
from gateway.demo.school import SITE, TIMEZONE, SimulatedSchool, school_day
from gateway.records import db
from gateway.records.models import AccessEvent, Alarm, Device
from tests.support import free_port

KEY_ENV = "CAMPUSGW_BENCH_OSDP_KEY"
PRESS_BOX, PRESS_POINT = "north-gate-box", "door"
START_UP_S = 30.0  # real seconds for start-up and every device online, before the idle baseline


@dataclass
class Sample:
    mono: float
    cpu_s: float  # the tree's user + system CPU seconds so far
    pss_mib: float
    processes: int


@dataclass
class Tree:
    """The gateway process and its children (camera workers), sampled every second in a thread."""

    pid: int
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _gone_cpu: float = 0.0  # CPU of children that have exited
    _last: dict[int, float] = field(default_factory=dict)
    first: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (monotonic, CPU s) when first seen
    pss: dict[int, float] = field(default_factory=dict)  # pid -> the largest PSS seen, MiB
    names: dict[int, str] = field(default_factory=dict)

    def start(self) -> None:
        threading.Thread(target=self._run, name="sampler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._sample())
            except psutil.Error:
                return
            self._stop.wait(1.0)

    def _sample(self) -> Sample:
        root = psutil.Process(self.pid)
        procs = [root, *root.children(recursive=True)]
        cpu: dict[int, float] = {}
        pss = 0.0
        now = time.monotonic()
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
                mine = proc.memory_full_info().pss / 2**20
                if proc.pid not in self.names:
                    self.names[proc.pid] = _role(proc, root)
                    self.first[proc.pid] = (now, cpu[proc.pid])
            except psutil.Error:
                continue
            pss += mine
            self.pss[proc.pid] = max(mine, self.pss.get(proc.pid, 0.0))
        self._gone_cpu += sum(v for pid, v in self._last.items() if pid not in cpu)
        self._last = cpu
        return Sample(time.monotonic(), self._gone_cpu + sum(cpu.values()), pss, len(cpu))

    def by_process(self) -> list[tuple[str, float, float]]:
        """(role, % of one core since first seen, largest PSS MiB) per process, busiest first."""
        now = time.monotonic()
        rows = []
        for pid, (seen, cpu0) in self.first.items():
            if pid in self._last and now - seen > 1:
                rows.append((self.names[pid], (self._last[pid] - cpu0) / (now - seen) * 100, self.pss[pid]))
        return sorted(rows, key=lambda r: -r[1])

    def cpu_percent(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s.mono <= end]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].mono - inside[0].mono) * 100

    def worst_cpu(self, start: float, end: float, window_s: float = 5.0) -> float:
        inside = [s for s in self.samples if start <= s.mono <= end]
        worst = 0.0
        for i, first in enumerate(inside):
            last = next((s for s in inside[i:] if s.mono - first.mono >= window_s), None)
            if last is None:
                break
            worst = max(worst, (last.cpu_s - first.cpu_s) / (last.mono - first.mono) * 100)
        return worst


def _role(proc: psutil.Process, root: psutil.Process) -> str:
    if proc.pid == root.pid:
        return "gateway (drivers, rules, console, broker)"
    line = " ".join(proc.cmdline())
    if "resource_tracker" in line:
        return "multiprocessing resource tracker"
    if "forkserver" in line and proc.ppid() == root.pid:  # the workers are its children, same command line
        return "camera worker fork server"
    return "camera worker (its cameras, a thread each)"


class EventCounter:
    """Every device and gateway event on MQTT, counted by type."""

    def __init__(self, port: int, credentials: tuple[str, str] | None) -> None:
        self.counts: Counter[str] = Counter()
        self.times: queue.Queue[tuple[float, str, str]] = queue.Queue()  # (receive time, type, device)
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-day-{os.getpid()}")
        if credentials:
            self.client.username_pw_set(*credentials)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"campus/v1/{SITE}/+/+/evt/#", 1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        body = json.loads(message.payload)
        self.counts[body["type"]] += 1
        if body["type"].startswith("campus.alarm_input."):
            self.times.put((now, body["type"], body.get("source", "")))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Press:
    peak: bool
    to_console_ms: float | None
    to_mqtt_ms: float | None


def press_all_day(school: SimulatedSchool, sse: AlarmSseClient, events: EventCounter,
                  peaks: list[tuple[float, float]], stop: threading.Event, every_s: float,
                  rng: random.Random) -> list[Press]:
    """Press and release the north gate's door contact until `stop`; each press timed to the console and MQTT."""
    presses: list[Press] = []
    while not stop.wait(every_s * rng.uniform(0.5, 1.5)):
        for q in (sse.alarms, events.times):  # drop what came before this press
            while not q.empty():
                q.get_nowait()
        pressed, wall = time.monotonic(), time.time()
        peak = any(start <= site_time() <= end for start, end in peaks)
        school.press(PRESS_BOX, PRESS_POINT)
        alarm = wait_matching(sse.alarms, lambda item: item[1].get("device_id") == PRESS_BOX and item[1].get(
            "alarm_type") == "door_contact" and bool(item[1].get("condition_active")), 5.0)
        event = wait_matching(events.times, lambda item: item[1] == "campus.alarm_input.triggered", 0.5)
        to_console = (alarm[0] - wall) * 1000 if alarm else None  # the SSE client stamps with time.time()
        to_mqtt = (event[0] - pressed) * 1000 if event else None
        presses.append(Press(peak, to_console, to_mqtt))
        time.sleep(0.2)  # held long enough for a 50 ms poll, even on a busy machine
        school.release(PRESS_BOX, PRESS_POINT)
        wait_matching(sse.alarms, lambda item: item[1].get("device_id") == PRESS_BOX
                      and not item[1].get("condition_active"), 5.0)
    return presses


def crowd_windows(plan: sc.Scenario, day: Any, tz: Any, until: str = "24:00") -> list[tuple[float, float]]:
    """The scenario's crowds (site time, Unix seconds): its arrival and dismissal peaks."""
    return [(sc.at_time(day, step.at, tz).timestamp(), sc.at_time(day, step.until, tz).timestamp())
            for step in plan.steps if isinstance(step, sc.Crowd) and step.at <= until]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.school_day", description=__doc__.split("\n")[0])
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--until", default="09:30", help="play the scenario up to this site time (HH:MM)")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--scenario", default="school_day")
    parser.add_argument("--broker", choices=["embedded", "mosquitto"], default="embedded")
    parser.add_argument("--press-every", type=float, default=0.5, help="real seconds between presses (mean)")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(TIMEZONE)
    plan = sc.load(args.scenario)
    day = school_day(datetime.now(tz).date())
    start, until = sc.at_time(day, plan.start, tz), sc.at_time(day, args.until, tz)
    actions = [a for a in sc.expand(plan, day, tz, args.speed) if a.at <= until]
    tmp = Path(tempfile.mkdtemp(prefix="cgw-bench-day-"))
    school = SimulatedSchool(tmp / "data", tz, camera_count=args.cameras)
    mosquitto = start_mosquitto(tmp) if args.broker == "mosquitto" else None
    if args.broker == "mosquitto" and mosquitto is None:
        print("Mosquitto is not installed", file=sys.stderr)
        return 2
    gateway: subprocess.Popen[bytes] | None = None
    stop_pressing, stop_playing = threading.Event(), threading.Event()
    sse = counter = None
    tree: Tree | None = None
    try:
        school.start()
        os.environ[KEY_ENV] = school.osdp_key
        broker_port = mosquitto.port if mosquitto else free_port()
        console_port = free_port()
        data = school.config(broker={"url": f"mqtt://127.0.0.1:{broker_port}"} if mosquitto
                             else {"url": "embedded", "embedded_port": broker_port}, key_env=KEY_ENV)
        data["gateway"]["log_level"] = "warning"
        data["console"] = {"host": "127.0.0.1", "port": console_port}
        config = validate_config(data, "bench school")
        (tmp / "site.yaml").write_text(yaml.dump(data, Dumper=NoAliases, allow_unicode=True), encoding="utf-8")
        clock: SiteClock = site_clock_for(start, args.speed, time.monotonic() + START_UP_S + args.idle_s - 8.0)
        use_site_clock(clock)  # seeded on the site's clock, and the gateway inherits it (CAMPUSGW_SITE_CLOCK)

        engine = db.make_engine(config.database_url())
        db.upgrade(engine)
        sessions = db.make_sessions(engine)
        demo_users(sessions)
        school.seed(sessions, config, day, dict(USERS))
        token = console_token(config)

        log = (tmp / "gateway.log").open("wb")
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(tmp / "site.yaml")],
                                   stdout=log, stderr=subprocess.STDOUT)
        tree = Tree(gateway.pid)
        tree.start()
        url = f"http://127.0.0.1:{console_port}"

        def all_online() -> bool:
            with sessions() as session:
                return session.scalar(select(func.count()).where(Device.online.is_(True))) == len(config.devices)

        def offline() -> str:
            with sessions() as session:
                names = session.scalars(select(Device.id).where(Device.online.is_not(True))).all()
            return f"timed out waiting for every device online; not yet: {', '.join(names)}; " \
                   f"the gateway's log: {(tmp / 'gateway.log').read_text(errors='replace')[-2000:]}"

        wait_until(all_online, 45, offline)
        sse = AlarmSseClient(url + "/api/alarms/stream", token)
        sse.snapshot.wait(10)
        counter = EventCounter(broker_port, None if mosquitto else login("reader", config.gateway.data_dir))
        counter.subscribed.wait(10)
        online_at = time.monotonic()
        idle_end = clock.mono(start.timestamp())
        if idle_end - online_at < args.idle_s:
            print(f"note: only {idle_end - online_at:.1f} s of idle baseline before the day (start-up was slow)")
        time.sleep(max(0.0, idle_end - time.monotonic()))

        presses: list[Press] = []
        presser = threading.Thread(target=lambda: presses.extend(press_all_day(
            school, sse, counter, crowd_windows(plan, day, tz, args.until), stop_pressing, args.press_every,
            random.Random(args.seed))), name="presser", daemon=True)
        said: list[str] = []
        day_start, own_cpu = time.monotonic(), time.process_time()
        presser.start()
        done = sc.play(actions, clock, school, stop_playing, said.append)
        day_end = time.monotonic()
        simulators_cpu = (time.process_time() - own_cpu) / (day_end - day_start) * 100
        stop_pressing.set()
        presser.join(15)
        time.sleep(2)  # the last events through
        tree.stop()

        with sessions() as session:
            access = session.scalar(select(func.count()).select_from(AccessEvent))
            alarms = session.scalar(select(func.count()).select_from(Alarm))
        report(args, tree, (max(online_at, idle_end - args.idle_s), idle_end), (day_start, day_end),
               crowd_windows(plan, day, tz, args.until), clock, tz, simulators_cpu, presses, counter.counts, done,
               len(actions), access, alarms)
        engine.dispose()
        return 0 if all(p.to_console_ms is not None for p in presses) else 1
    finally:
        stop_playing.set()
        stop_pressing.set()
        if tree is not None:
            tree.stop()
        for client in (sse, counter):
            if client is not None:
                client.close()
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()
        school.stop()
        if mosquitto is not None:
            mosquitto.stop()
        use_site_clock(None)
        os.environ.pop(KEY_ENV, None)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, tree: Tree, idle: tuple[float, float], whole: tuple[float, float],
           peaks: list[tuple[float, float]], clock: SiteClock, tz: Any, simulators_cpu: float,
           presses: list[Press],
           counts: Counter[str], done: int, planned: int, access: int | None, alarms: int | None) -> None:
    real_peaks = [(clock.mono(a), clock.mono(b)) for a, b in peaks]
    peak_cpu = [tree.cpu_percent(a, b) for a, b in real_peaks]
    day_samples = [s for s in tree.samples if whole[0] <= s.mono <= whole[1]]
    print(f"school day '{args.scenario}' to {args.until} at {args.speed:g}x: {whole[1] - whole[0]:.0f} s real, "
          f"{done}/{planned} steps; {args.cameras} cameras, broker {args.broker}, SQLite; gateway in its own process "
          f"({max((s.processes for s in day_samples), default=0)} processes with its camera workers)")
    print(f"{'gateway CPU, % of one core':40}{'mean':>8}{'worst 5 s':>11}")
    print(f"{'  idle baseline (all online, nothing on)':40}{tree.cpu_percent(*idle):8.1f}{tree.worst_cpu(*idle):11.1f}")
    print(f"{'  the whole day':40}{tree.cpu_percent(*whole):8.1f}{tree.worst_cpu(*whole):11.1f}")
    for (a, b), cpu in zip(real_peaks, peak_cpu, strict=True):
        begin, end = (datetime.fromtimestamp(clock.at(x), tz) for x in (a, b))
        label = f"  crowd {begin:%H:%M}-{end:%H:%M}"
        print(f"{label:40}{cpu:8.1f}{tree.worst_cpu(a, b):11.1f}")
    print(f"{'  (the simulators, this process: apart)':40}{simulators_cpu:8.1f}")
    pss = [s.pss_mib for s in day_samples]
    if pss:
        print(f"gateway memory (PSS, MiB): start of day {pss[0]:.0f}, max {max(pss):.0f}, end {pss[-1]:.0f}")
    print("by process (the whole run): % of one core, largest PSS MiB")
    for role, cpu, mib in tree.by_process():
        print(f"  {role:44}{cpu:6.1f} %{mib:8.0f} MiB")
    print(f"{'press -> console (SSE), ms':36}{'n':>5}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'lost':>6}")
    for name, chosen in (("  at the crowds", [p for p in presses if p.peak]),
                         ("  the rest of the day", [p for p in presses if not p.peak]),
                         ("  all", presses)):
        values = [p.to_console_ms for p in chosen if p.to_console_ms is not None]
        lost = len(chosen) - len(values)
        print(f"{name:36}{len(chosen):5d}" + "".join(f"{percentile(values, q):8.1f}" for q in (50, 95, 99))
              + f"{max(values, default=float('nan')):8.1f}{lost:6d}")
    mqtt_ms = [p.to_mqtt_ms for p in presses if p.to_mqtt_ms is not None]
    print(f"{'press -> MQTT event, ms (all)':36}{len(mqtt_ms):5d}"
          + "".join(f"{percentile(mqtt_ms, q):8.1f}" for q in (50, 95, 99))
          + f"{max(mqtt_ms, default=float('nan')):8.1f}")
    total = sum(counts.values())
    print(f"events on MQTT: {total} ({total / max(1e-9, whole[1] - whole[0]):.1f}/s real); "
          + ", ".join(f"{name.removeprefix('campus.')} {n}" for name, n in counts.most_common(8)))
    print(f"records: {access} access events, {alarms} alarms")


if __name__ == "__main__":
    raise SystemExit(main())
