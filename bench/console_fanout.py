"""Console fan-out: one alarm update on MQTT -> N guards' browsers on the console's SSE stream.

    python -m bench.console_fanout [--clients 1,10,50] [--alarms 200] [--rate 20]

The console runs as its own process, as a site runs it apart: `campusgw run -c site.yaml --only
console`, against our own Mosquitto (tests.support.MosquittoBroker), with a SQLite database in a
temp dir and a free port. A 'bench' guard and its API token come from the CLI (`campusgw user add`,
`campusgw user token`). For each N in --clients:

  1. open N SSE clients on /api/alarms/stream (raw sockets, one thread each, Bearer token) and wait
     for each one's `event: snapshot`;
  2. warm up: publish alarm 1 until every client has it (the console's subscription is live);
  3. publish --alarms alarm updates (paho, QoS 1) to campus/v1/bench/rules/alarms/<i>, paced at
     --rate per second, each shaped like the console's alarm view; the console re-reads each alarm from
     the database before it relays it (so the alarms are made there first), and every client records
     arrival time - publish time for every `event: alarm`;
  4. report p50/p95/p99/max over all (client, alarm) pairs, received vs N x alarms, the console
     process's CPU over the publishing period (utime + stime from /proc/<pid>/stat, % of one core)
     and its VmRSS with the N clients connected; then close the clients.

Target: p99 <= 200 ms with 50 clients. Exit status 1 if any update did not arrive or the target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from bench.common import SseClient, cpu_of, latency_stats, percentile, rss_mib, start_mosquitto, wait_until
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
SITE = "bench"
USER = "bench-guard"
TARGET_CLIENTS = 50
TARGET_P99_MS = 200.0
DRAIN_S = 5.0  # after the last publish, how long to wait for stragglers


# -- the console process -------------------------------------------------------------------


def cli(args: list[str], stdin: str | None = None) -> str:
    """Run `campusgw ARGS` as a subprocess; its standard output."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"campusgw {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def write_site(tmp: Path, broker_port: int, console_port: int) -> Path:
    site = {
        "site": {"id": SITE, "name": "Bench School", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw1", "data_dir": str(tmp / "data"), "log_level": "warning"},
        "broker": {"url": f"mqtt://127.0.0.1:{broker_port}"},
        "database": {"url": f"sqlite:///{tmp / 'campusgw.db'}"},
        "console": {"host": "127.0.0.1", "port": console_port},
    }
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return path


def make_token(site: Path) -> str:
    cli(["user", "add", USER, "--role", "guard", "-c", str(site), "--password-stdin"],
        stdin=secrets.token_urlsafe(18) + "\n")
    lines = cli(["user", "token", USER, "--name", "bench", "-c", str(site)]).strip().splitlines()
    return lines[-1].strip()


def healthy(url: str) -> bool:
    """GET /healthz answers, and the console is connected to the broker."""
    try:
        with urllib.request.urlopen(url + "healthz", timeout=1) as response:
            return bool(response.status == 200 and json.loads(response.read()).get("broker"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


class Console:
    """`campusgw run -c SITE --only console` as a subprocess; its output goes to a log file."""

    def __init__(self, site: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(site), "--only",
                                      "console"], stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if healthy(self.url):
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"the console exited ({self.proc.returncode}): {self.tail()}")
            return False

        wait_until(ready, timeout, lambda: f"GET /healthz did not answer within {timeout:.0f}s: {self.tail()}", 0.05)

    def tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-2000:].strip() or "(no output)"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the console ends every stream and stops gracefully
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


# -- SSE clients and the publisher ---------------------------------------------------------


class GuardSseClient(SseClient):
    """One guard's browser on /api/alarms/stream: records (arrival time - bench_sent, alarm id) for every
    `event: alarm`."""

    def __init__(self, console_url: str, token: str) -> None:
        self.latencies: list[tuple[float, int]] = []  # (seconds, alarm id)
        self.seen_ids: set[int] = set()
        super().__init__(console_url + "api/alarms/stream", token)

    def on_event(self, event: str, data: str, now: float) -> None:
        if event != "alarm":
            return
        alarm = json.loads(data)
        self.seen_ids.add(alarm["id"])
        sent = SENT.get(alarm["id"])
        if sent is not None and alarm["id"] > WARM_UP:
            self.latencies.append((now - sent, alarm["id"]))


WARM_UP = 1  # the alarm published until every client has it; the measured ones follow
SENT: dict[int, float] = {}  # alarm id -> when it was last published (clients are threads of this process)


def make_alarms(site: Path, count: int) -> None:
    """The alarms the bench announces, in the console's database: it relays only what it finds there."""
    from gateway.config_file import load_config
    from gateway.events import new_id
    from gateway.records import db, store
    from gateway.records.models import Device
    from gateway.rules.alarms import RaiseAlarm

    engine = db.make_engine(load_config(site).database_url())
    db.upgrade(engine)
    with db.make_sessions(engine).begin() as session:
        for i in range(1, count + 1):
            session.add(Device(id=f"bench-box-{i}", kind="alarm_input", driver="modbus_di", test_mode=False))
        session.flush()
        store.apply_effects(session, [RaiseAlarm(f"bench-box-{i}:panic", f"bench-box-{i}", "panic", 1, True, None,
                                                 "bench", False, new_id(), datetime.now(UTC))
                                      for i in range(1, count + 1)])
    engine.dispose()


def alarm_body(alarm_id: int) -> dict[str, Any]:
    """An update shaped like gateway.records.store.alarm_view, as the rules service publishes it."""
    return {
        "id": alarm_id, "key": f"bench-box-{alarm_id}:panic", "device_id": f"bench-box-{alarm_id}",
        "alarm_type": "panic", "priority": 1, "latching": True, "state": "active_unack", "zone": None,
        "place": "bench", "test": False, "raised_at": datetime.now(UTC).isoformat(), "occurrences": 1,
        "condition_active": True, "acked_by": None, "acked_at": None, "last_note": None,
    }


class Publisher:
    """A paho client publishing alarm updates, QoS 1, with TCP_NODELAY as gateway.bus.Bus sets it."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-fanout-pub-{os.getpid()}")
        self.client.on_socket_open = self._nodelay
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("the bench's publisher could not connect to Mosquitto within 10 s")

    @staticmethod
    def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def publish(self, alarm_id: int) -> mqtt.MQTTMessageInfo:
        body = alarm_body(alarm_id)
        SENT[alarm_id] = time.time()
        return self.client.publish(f"campus/v1/{SITE}/rules/alarms/{alarm_id}",
                                   json.dumps(body, separators=(",", ":")), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- one round -----------------------------------------------------------------------------


@dataclass
class Round:
    clients: int
    alarms: int
    latencies_ms: list[float]
    received: int
    publish_s: float
    cpu_pct: float
    rss_mib: float
    mosquitto_cpu_pct: float
    bench_cpu_pct: float

    @property
    def expected(self) -> int:
        return self.clients * self.alarms


def run_round(n: int, alarms: int, rate: float, console: Console, token: str, pub: Publisher,
              mosquitto_pid: int) -> Round:
    clients: list[GuardSseClient] = []
    try:
        for _ in range(n):
            clients.append(GuardSseClient(console.url, token))
        for client in clients:
            if not client.snapshot.wait(15):
                raise RuntimeError(f"no snapshot on the SSE stream within 15 s (HTTP status: "
                                   f"{client.status or 'none'}); console: {console.tail()}")
        # Warm-up (not counted): alarm 0 until every client has it, so the console's MQTT
        # subscription and every stream are live before the clock starts.
        deadline = time.monotonic() + 15
        while not all(WARM_UP in c.seen_ids for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up alarm did not reach every SSE client within 15 s")
            pub.publish(WARM_UP)
            with contextlib.suppress(RuntimeError):
                wait_until(lambda: all(WARM_UP in c.seen_ids for c in clients), 0.5, "the warm-up alarm")
        time.sleep(0.2)

        print(f"  {n} clients: publishing {alarms} alarms at {rate:g}/s ...", file=sys.stderr, flush=True)
        pid = console.proc.pid
        wall0, cpu0, mosq0, own0 = time.monotonic(), cpu_of(pid), cpu_of(mosquitto_pid), time.process_time()
        for i in range(1, alarms + 1):
            delay = wall0 + (i - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pub.publish(WARM_UP + i)
        wall = time.monotonic() - wall0
        cpu = (cpu_of(pid) - cpu0) / wall * 100
        mosq = (cpu_of(mosquitto_pid) - mosq0) / wall * 100
        own = (time.process_time() - own0) / wall * 100
        with contextlib.suppress(RuntimeError):
            wait_until(lambda: all(len(c.latencies) >= alarms for c in clients), DRAIN_S, "the last updates")
        rss = rss_mib(pid)
        latencies = [s * 1000 for c in clients for s, _ in list(c.latencies)]
        return Round(n, alarms, latencies, len(latencies), wall, cpu, rss, mosq, own)
    finally:
        for client in clients:
            client.close()


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_fanout", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,10,50", help="comma-separated numbers of SSE clients, one round each")
    parser.add_argument("--alarms", type=int, default=200, help="alarm updates published per round")
    parser.add_argument("--rate", type=float, default=20.0, help="alarm updates per second")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        parser.error("--clients: expected numbers separated by commas, such as 1,10,50")
    if not counts or min(counts) < 1 or args.alarms < 1 or args.rate <= 0:
        parser.error("--clients, --alarms and --rate must be positive")

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mosquitto = start_mosquitto(tmp)
        if mosquitto is None:
            print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
            return 2
        assert mosquitto.proc is not None
        mosquitto_pid = mosquitto.proc.pid
        console: Console | None = None
        pub: Publisher | None = None
        try:
            console_port = free_port()
            site = write_site(tmp, mosquitto.port, console_port)
            print("creating the guard and its API token with the CLI ...", file=sys.stderr, flush=True)
            token = make_token(site)
            make_alarms(site, args.alarms + WARM_UP)
            console = Console(site, console_port, tmp / "console.log")
            console.wait_ready()
            idle_rss = rss_mib(console.proc.pid)
            pub = Publisher(mosquitto.port)
            for n in counts:
                rounds.append(run_round(n, args.alarms, args.rate, console, token, pub, mosquitto_pid))
                time.sleep(0.5)  # let the console drop the closed streams
        finally:
            if pub:
                pub.close()
            if console:
                code = console.stop()
                if code not in (0, None):
                    print(f"the console exited with {code}: {console.tail()}", file=sys.stderr)
            mosquitto.stop()

    report(args, rounds, idle_rss)
    lost = any(r.received < r.expected for r in rounds)
    target = next((r for r in rounds if r.clients == TARGET_CLIENTS), None)
    missed = target is not None and percentile(target.latencies_ms, 99) > TARGET_P99_MS
    return 1 if lost or missed else 0


def report(args: argparse.Namespace, rounds: list[Round], idle_rss: float) -> None:
    print()
    print(f"console fan-out: {args.alarms} alarm updates per round at {args.rate:g}/s (QoS 1) -> "
          f"`campusgw run --only console` (own process) -> N SSE clients; Mosquitto; SQLite")
    print(f"console RSS before the first round, no client: {idle_rss:.1f} MiB")
    print(f"{'clients':>7}{'received':>16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'console CPU':>13}{'RSS MiB':>9}{'mosquitto':>11}{'bench':>8}")
    for r in rounds:
        stats = latency_stats(r.latencies_ms, 9, float("nan"))
        received = f"{r.received}/{r.expected}"
        print(f"{r.clients:7d}{received:>16}{stats}{r.cpu_pct:11.1f} %{r.rss_mib:9.1f}"
              f"{r.mosquitto_cpu_pct:9.1f} %{r.bench_cpu_pct:6.1f} %")
    print("CPU: % of one core over the publishing period; RSS: the console's VmRSS with the N clients connected")
    target = next((r for r in rounds if r.clients == TARGET_CLIENTS), None)
    if target is None:
        print(f"target: p99 <= {TARGET_P99_MS:.0f} ms with {TARGET_CLIENTS} clients: not measured "
              f"(no round with {TARGET_CLIENTS} clients)")
    else:
        p99 = percentile(target.latencies_ms, 99)
        verdict = "met" if p99 <= TARGET_P99_MS else "MISSED"
        print(f"target: p99 <= {TARGET_P99_MS:.0f} ms with {TARGET_CLIENTS} clients: {p99:.1f} ms, {verdict}")


if __name__ == "__main__":
    sys.exit(main())
