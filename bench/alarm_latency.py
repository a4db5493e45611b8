"""Alarm latency: a button press on a simulated Modbus DI module -> MQTT event -> guard console (SSE).

    python -m bench.alarm_latency [--presses 200] [--poll-ms 50] [--broker embedded|mosquitto]
                                  [--transport tcp|rtu] [--baudrate 115200]

Everything runs here: a ModbusDISimulator, a full Gateway (drivers, rules, console; SQLite in a
temp dir; console on a free port), a plain paho subscriber on campus/v1/<site>/+/+/evt/# and an
SSE client on /api/alarms/stream. One panic point on input 1: each press raises (first) or
retriggers its latched alarm, each release marks its condition restored. The module is reached over
Modbus TCP (default) or, with --transport rtu, over Modbus RTU at --baudrate on a pty pair
(simulators.pty_pair: the simulator on one end, the driver on the other). A pty does not pace bytes
at the baud rate, so RTU figures leave out the time on a real wire. For each press:

  input -> driver        the event's own `time` (when the poll saw the change; millisecond resolution)
  input -> MQTT event    the subscriber's receive time
  input -> console       arrival of the `event: alarm` with condition_active true on the SSE stream

A random wait of 0-100 ms before each press and release spreads them over the poll phase.
If the console asks for a login (gateway.console.auth), the SSE client uses an API token of a
'bench' guard user that the script writes into the gateway's database.
Then idle CPU: the gateway with nothing happening for --idle-s, first with the simulator in this
process, then (restarted) with the simulator as a `campusgw sim` subprocess (RTU: `python -m bench.di_sims --rtu`,
which holds the pty pair too), measured apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.common import (
    SseClient,
    cpu_of,
    gateway_config,
    print_latency_table,
    start_mosquitto,
    wait_matching,
    wait_until,
)
from gateway.app import Gateway, bind_socket
from gateway.config import Config
from gateway.config_file import validate_config
from simulators.modbus_di import ModbusDISimulator
from simulators.pty_pair import PtyPair
from tests.support import MosquittoBroker, free_port

SITE = "bench-school"
DEVICE = "gate-alarm-box"
WAIT_S = 5.0  # longest wait for one update before counting it as missed


def tcp_connection(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "unit": 1}


def rtu_connection(path: str, baudrate: int) -> dict[str, Any]:
    return {"type": "rtu", "port": path, "baudrate": baudrate, "unit": 1}


def link_name(args: argparse.Namespace) -> str:
    """The transport as the report shows it beside the figures."""
    return "TCP" if args.transport == "tcp" else f"RTU {args.baudrate} Bd"


def config_dict(data_dir: Path, connection: dict[str, Any], poll_ms: int, broker_url: str) -> dict[str, Any]:
    return {
        **gateway_config(SITE, data_dir, broker_url),
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [{
            "id": DEVICE, "kind": "alarm_input", "driver": "modbus_di", "name": "Gatehouse alarm module",
            "zone": "gate", "connection": connection,
            "poll_ms": poll_ms,
            "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "Gatehouse"}],
        }],
    }


class GatewayThread:
    """A Gateway with all parts, on its own event loop in a thread, as `campusgw demo` runs it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def start(self) -> Gateway:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the gateway did not start within 30 s")
        if self._error:
            raise self._error
        assert self.gateway is not None
        return self.gateway

    def _run(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            sock = bind_socket("127.0.0.1", 0, "console")
            self.gateway = Gateway(self.config, console_socket=sock)
            await self.gateway.run(self._stop, lambda gw: self._ready.set())

        try:
            asyncio.run(go())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class EventSubscriber:
    """A plain paho client on the device events and on the rules' alarm updates, with receive times.

    events: (receive time, event type, event time); alarms: (receive time, alarm as published by the rules).
    """

    def __init__(self, port: int, login: tuple[str, str] | None = None) -> None:
        """`login`: the read-only reader's (the embedded broker lets nobody in anonymously)."""
        self.events: queue.Queue[tuple[float, str, float]] = queue.Queue()
        self.alarms: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
        if login:
            self.client.username_pw_set(*login)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"campus/v1/{SITE}/+/+/evt/#", 1), (f"campus/v1/{SITE}/rules/alarms/+", 1)])
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        body = json.loads(message.payload)
        if "/rules/alarms/" in message.topic:
            self.alarms.put((now, body))
        else:
            self.events.put((now, body["type"], datetime.fromisoformat(body["time"]).timestamp()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AlarmSseClient(SseClient):
    """The console's SSE stream: (arrival time, alarm) per `event: alarm`."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.alarms: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        super().__init__(url, token)

    def on_event(self, event: str, data: str, now: float) -> None:
        if event == "alarm":
            self.alarms.put((now, json.loads(data)))


def console_token(config: Config) -> str | None:
    """A Bearer token for the console, when it asks for a login (gateway.console.auth): a 'bench' guard
    with an API token, written straight into the gateway's database. None for a console without logins."""
    try:
        from gateway.console import auth
    except ImportError:
        return None
    from gateway.records import db
    from gateway.records.models import utcnow

    engine = db.make_engine(config.database_url())
    try:
        with db.make_sessions(engine).begin() as session:
            auth.add_user(session, "bench", "guard", auth.generate_password())
            token: str = auth.add_token(session, "bench", "bench", utcnow())
            return token
    finally:
        engine.dispose()


def measure_idle(seconds: float, others: dict[str, int]) -> dict[str, float]:
    """% of one core used over `seconds` by this process and by each of `others` (name -> pid)."""
    wall0, own0 = time.monotonic(), time.process_time()
    start = {name: cpu_of(pid) for name, pid in others.items()}
    time.sleep(seconds)
    wall = time.monotonic() - wall0
    out = {"this process": (time.process_time() - own0) / wall * 100}
    for name, pid in others.items():
        out[name] = (cpu_of(pid) - start[name]) / wall * 100
    return out


def wait_device_online(gw: Gateway, timeout: float = 15.0) -> None:
    def online() -> bool:
        health = gw.host.health() if gw.host is not None else {}
        modules = [m for h in health.values() for m in h.get("modules", {}).values()]
        return bool(modules) and all(m["online"] for m in modules)

    wait_until(online, timeout, lambda: f"the alarm module did not come online within {timeout:.0f}s", 0.05)


def wait_listening(port: int, timeout: float = 15.0) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(listening, timeout, lambda: f"nothing listens on port {port} after {timeout:.0f}s", 0.05)


def run_presses(presses: int, rng: random.Random, sim: ModbusDISimulator, sub: EventSubscriber,
                sse: AlarmSseClient) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"driver": [], "mqtt": [], "rules": [], "sse": [], "missed_mqtt": [],
                                   "missed_rules": [], "missed_sse": []}
    for i in range(presses):
        time.sleep(rng.uniform(0, 0.1))
        pressed = sim.press(1)
        got = wait_matching(sub.events, lambda e: e[1] == "campus.alarm_input.triggered", WAIT_S)
        if got is None:
            out["missed_mqtt"].append(i)
        else:
            out["mqtt"].append((got[0] - pressed) * 1000)
            out["driver"].append((got[2] - pressed) * 1000)
        update = wait_matching(sub.alarms, lambda a: a[1]["condition_active"], WAIT_S)
        if update is None:
            out["missed_rules"].append(i)
        else:
            out["rules"].append((update[0] - pressed) * 1000)
        alarm = wait_matching(sse.alarms, lambda a: a[1]["condition_active"], WAIT_S)
        if alarm is None:
            out["missed_sse"].append(i)
        else:
            out["sse"].append((alarm[0] - pressed) * 1000)
        time.sleep(rng.uniform(0, 0.1))
        sim.release(1)
        wait_matching(sub.events, lambda e: e[1] == "campus.alarm_input.restored", WAIT_S)
        wait_matching(sub.alarms, lambda a: not a[1]["condition_active"], WAIT_S)
        wait_matching(sse.alarms, lambda a: not a[1]["condition_active"], WAIT_S)
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{presses} presses", file=sys.stderr, flush=True)
    return out


def start_sim_subprocess(args: argparse.Namespace) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The simulator in a subprocess, and the connection the driver uses to reach it.

    TCP: `campusgw sim modbus-di` on a free port. RTU: `python -m bench.di_sims --rtu`, which makes the pty
    pair itself (so the bridge thread's CPU counts with the simulator's) and prints the driver's end.
    """
    if args.transport == "tcp":
        port = free_port()
        sim = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "modbus-di", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        try:
            wait_listening(port)
        except BaseException:
            stop_subprocess(sim)
            raise
        return sim, tcp_connection(port)
    sim = subprocess.Popen([sys.executable, "-m", "bench.di_sims", "--rtu", "--baudrate", str(args.baudrate)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    line = sim.stdout.readline()
    if not line:
        stop_subprocess(sim)
        raise RuntimeError("the RTU simulator subprocess ended before it was ready")
    return sim, rtu_connection(json.loads(line)["serial"], args.baudrate)


def stop_subprocess(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdin:
        proc.stdin.close()
    if proc.stdout:
        proc.stdout.close()


def idle_with_sim_subprocess(tmp: Path, args: argparse.Namespace, broker_url: str,
                             mosquitto_pid: int | None) -> dict[str, float]:
    """A fresh gateway whose simulator runs in a subprocess, so its CPU is counted apart."""
    sim, connection = start_sim_subprocess(args)
    try:
        config = validate_config(config_dict(tmp / "idle", connection, args.poll_ms, broker_url))
        runner = GatewayThread(config)
        gw = runner.start()
        try:
            wait_device_online(gw)
            time.sleep(2)  # let start-up work (migrations, first events) settle
            others = {"simulator subprocess": sim.pid}
            if mosquitto_pid:
                others["mosquitto"] = mosquitto_pid
            return measure_idle(args.idle_s, others)
        finally:
            runner.stop()
    finally:
        stop_subprocess(sim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alarm_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--poll-ms", type=int, default=50)
    parser.add_argument("--broker", choices=["embedded", "mosquitto"], default="embedded")
    parser.add_argument("--transport", choices=["tcp", "rtu"], default="tcp",
                        help="Modbus TCP, or Modbus RTU on a pty pair")
    parser.add_argument("--baudrate", type=int, default=115200, help="RTU line speed (both ends)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle per CPU measurement")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random waits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mosquitto: MosquittoBroker | None = None
        broker_url = "embedded"
        if args.broker == "mosquitto":
            mosquitto = start_mosquitto(tmp)
            if mosquitto is None:
                print("mosquitto is not installed", file=sys.stderr)
                return 2
            broker_url = f"mqtt://127.0.0.1:{mosquitto.port}"
        mosquitto_pid = mosquitto.proc.pid if mosquitto and mosquitto.proc else None
        try:
            pair: PtyPair | None = None
            if args.transport == "rtu":
                pair = PtyPair()
                sim = ModbusDISimulator(inputs=16, serial=pair.device_side, baudrate=args.baudrate)
                sim.start()
                connection = rtu_connection(pair.driver_side, args.baudrate)
            else:
                sim = ModbusDISimulator(inputs=16)
                connection = tcp_connection(sim.start())
            config = validate_config(config_dict(tmp / "gw", connection, args.poll_ms, broker_url))
            runner = GatewayThread(config)
            gw = runner.start()
            try:
                broker_port = gw.broker_port if mosquitto is None else mosquitto.port
                assert broker_port and gw.console_url
                sub = EventSubscriber(broker_port, gw.mqtt_login("reader") if mosquitto is None else None)
                sse = AlarmSseClient(gw.console_url + "api/alarms/stream", console_token(config))
                if not sub.subscribed.wait(10):
                    raise RuntimeError("the bench's MQTT subscriber got no SUBACK within 10 s")
                if not sse.snapshot.wait(10):
                    raise RuntimeError(f"no snapshot on the console's SSE stream within 10 s (HTTP status: "
                                       f"{sse.status or 'none'})")
                wait_device_online(gw)
                time.sleep(0.5)
                print(f"pressing input 1 {args.presses} times ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                result = run_presses(args.presses, rng, sim, sub, sse)
                took = time.monotonic() - started
                sub.close()
                sse.close()
                time.sleep(1)
                print(f"idle {args.idle_s:.0f} s with the simulator in this process ...", file=sys.stderr, flush=True)
                idle_inproc = measure_idle(args.idle_s, {"mosquitto": mosquitto_pid} if mosquitto_pid else {})
                polls = gw.host.health() if gw.host else {}
            finally:
                runner.stop()
                sim.stop()
                if pair is not None:
                    pair.close()
            print(f"idle {args.idle_s:.0f} s with the simulator in a subprocess ...", file=sys.stderr, flush=True)
            idle_apart = idle_with_sim_subprocess(tmp, args, broker_url, mosquitto_pid)
        finally:
            if mosquitto:
                mosquitto.stop()

    report(args, result, took, idle_inproc, idle_apart, polls)
    missed = result["missed_mqtt"] or result["missed_rules"] or result["missed_sse"]
    return 1 if missed else 0


def report(args: argparse.Namespace, result: dict[str, list[float]], took: float, idle_inproc: dict[str, float],
           idle_apart: dict[str, float], polls: dict[str, Any]) -> None:
    broker = "embedded amqtt (in the gateway process)" if args.broker == "embedded" else "Mosquitto (own process)"
    print()
    link = link_name(args)
    transport = "Modbus TCP (loopback)" if args.transport == "tcp" else \
        f"Modbus RTU at {args.baudrate} baud on a pty pair (not paced at the baud rate)"
    print(f"alarm latency: {args.presses} presses of one panic point in {took:.0f} s; poll {args.poll_ms} ms; "
          f"broker {broker}; SQLite; drivers + rules + console in one process")
    print(f"transport: {transport}")
    print_latency_table([("input -> driver saw it (evt time)", result["driver"]),
                         ("input -> MQTT event (subscriber)", result["mqtt"]),
                         ("input -> rules' alarm update (MQTT)", result["rules"]),
                         ("input -> console SSE alarm", result["sse"])], args.poll_ms, link)
    print(f"missed (no update within {WAIT_S:.0f} s): MQTT event {len(result['missed_mqtt'])}, "
          f"rules' update {len(result['missed_rules'])}, console {len(result['missed_sse'])}")
    for name, health in polls.items():
        modules = health.get("modules", {}).values()
        print(f"driver {name}: {sum(m['polls'] for m in modules)} polls, {sum(m['errors'] for m in modules)} "
              f"errors, {sum(m['changes'] for m in modules)} changes, {health.get('restarts')} restarts")
    print()
    print(f"idle CPU, % of one core, over {args.idle_s:.0f} s with nothing pressed (poll {args.poll_ms} ms, {link}):")
    inproc = "gateway + simulator (same process" + (", + embedded broker)" if args.broker == "embedded" else ")")
    print(f"  {inproc:64}{idle_inproc['this process']:6.1f} %")
    gateway_only = "gateway alone" + (" (+ embedded broker)" if args.broker == "embedded" else "")
    print(f"  {gateway_only + ', simulator in a subprocess':64}{idle_apart['this process']:6.1f} %")
    print(f"  {'  the simulator subprocess':64}{idle_apart['simulator subprocess']:6.1f} %")
    if "mosquitto" in idle_apart:
        print(f"  {'  mosquitto':64}{idle_apart['mosquitto']:6.1f} %")


if __name__ == "__main__":
    sys.exit(main())
