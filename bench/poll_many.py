"""CPU of polling many Modbus DI modules: N modules, each on its own TCP port (its own driver instance), idle.

    python -m bench.poll_many [--modules 100] [--poll-ms 50] [--seconds 20] [--per-process 25]
                              [--broker mosquitto|embedded] [--py-spy] [--py-spy-seconds 15]

The simulators run in `python -m bench.di_sims --count K` subprocesses (K = --per-process modules each,
one free TCP port per module), so their CPU is not the gateway's. The gateway runs in this process: with
our own Mosquitto (tests.conftest.MosquittoBroker, the default) only its drivers part, as `campusgw run
--only drivers` runs it; with `--broker embedded` every part (drivers, rules, console and amqtt). Each
module has one panic point on input 1 and nothing is pressed.

Once every module is online and a few seconds have passed, the script measures over --seconds:

  - this process's CPU (utime + stime, resource.getrusage) as % of one core, and per thread
    (/proc/self/task/<tid>/stat) so the event loop, paho and the outbox show apart;
  - polls/s from every driver's health counters (gateway.host.health()) against the expected
    modules x 1000 / poll_ms, with the errors over the same window;
  - the CPU of the simulator subprocesses and of Mosquitto, for scale.

Target: <= 10 % of one core for 100 modules at 50 ms. Exit status 1 if it is missed, if polls/s falls
below 95 % of the expected or if a module errors. With --py-spy, a second window of --py-spy-seconds
is profiled afterwards (py-spy from the venv, not during the CPU measurement) and the frames where the
samples fall are printed: own time by file:line, and time below each of our own modules' functions.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config import Config, validate_config
from tests.conftest import MosquittoBroker
from tests.integration.helpers import Running

ROOT = Path(__file__).resolve().parent.parent
SITE = "bench-poll"
TARGET_PCT = 10.0
MIN_RATE = 0.95  # polls/s achieved vs expected below which the run fails
CLK_TCK = os.sysconf("SC_CLK_TCK")


def config_dict(data_dir: Path, ports: list[int], poll_ms: int, broker_url: str) -> dict[str, Any]:
    broker: dict[str, Any] = ({"url": "embedded", "embedded_port": 0} if broker_url == "embedded"
                              else {"url": broker_url})
    devices = [{
        "id": f"di-{i + 1:03d}", "kind": "alarm_input", "driver": "modbus_di", "name": f"DI module {i + 1}",
        "connection": {"host": "127.0.0.1", "port": port, "unit": 1}, "poll_ms": poll_ms,
        "points": [{"input": 1, "name": f"panic-{i + 1:03d}", "type": "panic"}],
    } for i, port in enumerate(ports)]
    return {
        "site": {"id": SITE, "name": "Bench School", "timezone": "Asia/Shanghai"},
        "gateway": {"id": "gw1", "data_dir": str(data_dir), "log_level": "warning"},
        "broker": broker,
        "console": {"host": "127.0.0.1", "port": 0},
        "devices": devices,
    }


def cpu_of(pid: int | str, task: str | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads), from /proc."""
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, by thread name (threads of one kind summed: `asyncio_3` ->
    `asyncio_*`, each paho client's thread -> `paho-mqtt-client-*`)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = collections.defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu = cpu_of("self", tid)
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), f"native {tid}")
        if name.startswith("paho-mqtt-client-"):
            name = "paho-mqtt-client-*"
        elif name.startswith("asyncio_"):
            name = "asyncio_* (to_thread)"
        out[name] += cpu
    return out


def poll_counters(running: Running) -> tuple[int, int, int, int]:
    """(polls, errors, modules online, modules) summed over every modbus_di driver instance."""
    host = running.gateway.host
    assert host is not None
    polls = errors = online = count = 0
    for health in host.health().values():
        for module in health.get("modules", {}).values():
            polls += module["polls"]
            errors += module["errors"]
            online += bool(module["online"])
            count += 1
    return polls, errors, online, count


def start_sims(modules: int, per_process: int) -> tuple[list[subprocess.Popen[str]], list[int]]:
    procs: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    try:
        for first in range(0, modules, per_process):
            count = min(per_process, modules - first)
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.di_sims", "--count", str(count)],
                                          cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"simulator subprocess {proc.pid} ended before it listened")
            ports += json.loads(line)["ports"]
    except BaseException:
        stop_sims(procs)
        raise
    return procs, ports


def stop_sims(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.stdin:
            proc.stdin.close()  # the helper stops when its stdin closes
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_online(running: Running, modules: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    online = 0
    while time.monotonic() < deadline:
        _, _, online, count = poll_counters(running)
        if count == modules and online == modules:
            return
        time.sleep(0.1)
    raise RuntimeError(f"only {online} of {modules} modules came online within {timeout:.0f} s")


def measure(running: Running, seconds: float, others: dict[str, list[int]]) -> dict[str, Any]:
    polls0, errors0, _, _ = poll_counters(running)
    threads0 = thread_cpu()
    others0 = {name: sum(cpu_of(pid) for pid in pids) for name, pids in others.items()}
    wall0, cpu0 = time.monotonic(), own_cpu()
    time.sleep(seconds)
    wall, cpu = time.monotonic() - wall0, own_cpu() - cpu0
    polls1, errors1, online, _ = poll_counters(running)
    threads1 = thread_cpu()
    return {
        "wall": wall, "cpu_pct": cpu / wall * 100, "polls": polls1 - polls0, "errors": errors1 - errors0,
        "online": online,
        "threads": {n: (threads1[n] - threads0.get(n, 0.0)) / wall * 100 for n in threads1},
        "others": {name: (sum(cpu_of(pid) for pid in pids) - others0[name]) / wall * 100
                   for name, pids in others.items()},
    }


# -- py-spy --------------------------------------------------------------------------------------------------


def py_spy(seconds: float, out_dir: Path) -> tuple[Path, int] | None:
    """Record this process with py-spy for `seconds` (raw collapsed stacks); (file, samples) or None."""
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    out = out_dir / "poll_many.pyspy.txt"
    done = subprocess.run([binary, "record", "--pid", str(os.getpid()), "--duration", str(int(seconds)),
                           "--rate", "200", "--format", "raw", "--output", str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        print(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    samples = sum(int(line.rsplit(" ", 1)[1]) for line in out.read_text().splitlines() if line.strip())
    return out, samples


def short_frame(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file path relative to the repo or site-packages:12)`."""
    for marker in (str(ROOT) + "/", "site-packages/", "/lib/python3.11/"):
        if marker in frame:
            head, tail = frame.split(marker, 1)
            return head + ("" if marker.startswith(str(ROOT)) else "") + tail
    return frame


def summarize_profile(path: Path, samples: int, top: int = 15) -> list[str]:
    """Own time by frame (file:line), and the inclusive time of our own code's frames, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, count_text = line.rsplit(" ", 1)
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";")[1:]]  # the first one is the thread
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            if any(f"({pkg}/" in frame for pkg in ("drivers", "gateway", "simulators")):
                ours[frame] += count
    lines = [f"own time, top {top} frames (% of {samples} samples of busy threads):"]
    lines += [f"  {n / samples * 100:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append(f"time in and below our own code, top {top} frames:")
    lines += [f"  {n / samples * 100:5.1f} %  {frame}" for frame, n in ours.most_common(top)]
    return lines


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_many", description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=int, default=100)
    parser.add_argument("--poll-ms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the CPU measurement")
    parser.add_argument("--per-process", type=int, default=25, help="simulated modules per subprocess")
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    parser.add_argument("--settle-s", type=float, default=3.0, help="wait after every module is online")
    parser.add_argument("--py-spy", action="store_true", help="then profile a second window with py-spy")
    parser.add_argument("--py-spy-seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mosquitto: MosquittoBroker | None = None
        broker_url = "embedded"
        others: dict[str, list[int]] = {}
        if args.broker == "mosquitto":
            (tmp / "mosquitto").mkdir()
            mosquitto = MosquittoBroker(tmp / "mosquitto")
            if not mosquitto.binary:
                print("mosquitto is not installed", file=sys.stderr)
                return 2
            mosquitto.start()
            assert mosquitto.proc is not None
            broker_url = f"mqtt://127.0.0.1:{mosquitto.port}"
        profile: list[str] = []
        try:
            print(f"starting {args.modules} simulated modules ...", file=sys.stderr, flush=True)
            sims, ports = start_sims(args.modules, args.per_process)
            others["simulators"] = [p.pid for p in sims]
            if mosquitto is not None and mosquitto.proc is not None:
                others["mosquitto"] = [mosquitto.proc.pid]
            try:
                config: Config = validate_config(config_dict(tmp / "gw", ports, args.poll_ms, broker_url))
                parts = ("drivers",) if mosquitto else ("drivers", "rules", "console")
                running = Running(config, parts)
                try:
                    wait_online(running, args.modules)
                    time.sleep(args.settle_s)
                    print(f"measuring {args.seconds:.0f} s of idle polling ...", file=sys.stderr, flush=True)
                    result = measure(running, args.seconds, others)
                    if args.py_spy:
                        print(f"profiling {args.py_spy_seconds:.0f} s with py-spy ...", file=sys.stderr, flush=True)
                        recorded = py_spy(args.py_spy_seconds, tmp)
                        if recorded:
                            profile = summarize_profile(*recorded)
                            kept = Path(tempfile.gettempdir()) / "poll_many.pyspy.txt"
                            shutil.copy(recorded[0], kept)
                            profile.append(f"(raw collapsed stacks kept in {kept})")
                finally:
                    running.stop()
            finally:
                stop_sims(sims)
        finally:
            if mosquitto:
                mosquitto.stop()

    ok = report(args, parts, result)
    for line in profile:
        print(line)
    return 0 if ok else 1


def report(args: argparse.Namespace, parts: tuple[str, ...], r: dict[str, Any]) -> bool:
    expected = args.modules * 1000 / args.poll_ms
    achieved = r["polls"] / r["wall"]
    broker = "own Mosquitto" if args.broker == "mosquitto" else "embedded amqtt (in this process)"
    met = r["cpu_pct"] <= TARGET_PCT
    print()
    print(f"polling {args.modules} Modbus DI modules (TCP, one port and driver instance each) every "
          f"{args.poll_ms} ms, idle, over {r['wall']:.0f} s; gateway parts: {', '.join(parts)}; broker {broker}; "
          f"{os.cpu_count()} cores")
    print(f"  {'gateway process CPU, % of one core':52}{r['cpu_pct']:7.1f} %   target <= {TARGET_PCT:.0f} %: "
          f"{'met' if met else 'MISSED'}")
    for name, pct in sorted(r["threads"].items(), key=lambda kv: -kv[1]):
        if pct >= 0.05:
            print(f"    {'thread ' + name:50}{pct:7.1f} %")
    print(f"  {'polls/s achieved / expected':52}{achieved:7.0f} / {expected:.0f} ({achieved / expected * 100:.1f} %)")
    print(f"  {'CPU per poll':52}{r['cpu_pct'] / 100 * r['wall'] / max(r['polls'], 1) * 1e6:7.0f} µs")
    print(f"  {'poll errors in the window':52}{r['errors']:7d}")
    print(f"  {'modules online at the end':52}{r['online']:7d} / {args.modules}")
    for name, pct in r["others"].items():
        label = f"{name} ({args.modules // args.per_process + bool(args.modules % args.per_process)} processes)" \
            if name == "simulators" else name
        print(f"  {label + ', for scale':52}{pct:7.1f} %")
    return met and achieved >= expected * MIN_RATE and r["errors"] == 0 and r["online"] == args.modules


if __name__ == "__main__":
    sys.exit(main())
