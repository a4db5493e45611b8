"""CPU of polling many Modbus DI modules: N modules, each on its own TCP port (its own driver instance), idle.

    python -m bench.poll_many [--modules 100] [--poll-ms 50] [--seconds 20] [--per-process 25]
                              [--broker mosquitto|embedded] [--py-spy] [--py-spy-seconds 15]

The simulators run in `python -m bench.di_sims --count K` subprocesses (K = --per-process modules each,
one free TCP port per module), so their CPU is not the gateway's. The gateway runs in this process: with
our own Mosquitto (tests.support.MosquittoBroker, the default) only its drivers part, as `campusgw run
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

from bench.common import cpu_of, gateway_config, start_mosquitto, wait_until
from gateway.config import Config
from gateway.config_file import validate_config
from tests.integration.helpers import Running
from tests.support import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
SITE = "bench-poll"
TARGET_PCT = 10.0
MIN_RATE = 0.95  # polls/s achieved vs expected below which the run fails


def config_dict(data_dir: Path, ports: list[int], poll_ms: int, broker_url: str) -> dict[str, Any]:
    devices = [{
        "id": f"di-{i + 1:03d}", "kind": "alarm_input", "driver": "modbus_di", "name": f"DI module {i + 1}",
        "connection": {"host": "127.0.0.1", "port": port, "unit": 1}, "poll_ms": poll_ms,
        "points": [{"input": 1, "name": f"panic-{i + 1:03d}", "type": "panic"}],
    } for i, port in enumerate(ports)]
    return {**gateway_config(SITE, data_dir, broker_url), "devices": devices}


def own_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def thread_cpu(labels: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) per thread of this process, by name: `labels` (native id -> name) first,
    else the thread's own name, with threads of one kind summed (every paho client's network thread,
    asyncio's to_thread workers)."""
    names = {t.native_id: t.name for t in threading.enumerate()} | labels
    out: dict[str, float] = collections.defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu = cpu_of("self", tid)
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), f"native {tid}")
        if name.startswith("paho-mqtt-client-"):
            name = "paho network threads"
        elif name.startswith("asyncio_"):
            name = "asyncio to_thread workers"
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
    online = 0

    def all_online() -> bool:
        nonlocal online
        _, _, online, count = poll_counters(running)
        return count == modules and online == modules

    wait_until(all_online, timeout, lambda: f"only {online} of {modules} modules came online within {timeout:.0f} s",
               0.1)


def measure(running: Running, seconds: float, others: dict[str, list[int]]) -> dict[str, Any]:
    labels = {running.thread.native_id: "gateway event loop (drivers)"} if running.thread.native_id else {}
    polls0, errors0, _, _ = poll_counters(running)
    threads0 = thread_cpu(labels)
    others0 = {name: sum(cpu_of(pid) for pid in pids) for name, pids in others.items()}
    wall0, (user0, sys0) = time.monotonic(), own_cpu()
    time.sleep(seconds)
    wall, (user1, sys1) = time.monotonic() - wall0, own_cpu()
    polls1, errors1, online, _ = poll_counters(running)
    threads1 = thread_cpu(labels)
    return {
        "wall": wall, "user_pct": (user1 - user0) / wall * 100, "sys_pct": (sys1 - sys0) / wall * 100,
        "polls": polls1 - polls0, "errors": errors1 - errors0, "online": online,
        "threads": {n: (threads1[n] - threads0.get(n, 0.0)) / wall * 100 for n in threads1},
        "others": {name: (sum(cpu_of(pid) for pid in pids) - others0[name]) / wall * 100
                   for name, pids in others.items()},
    }


# -- py-spy --------------------------------------------------------------------------------------------------

PY_SPY_RATE = 200  # samples per second


def py_spy(seconds: float, out: Path) -> Path | None:
    """Record this process with py-spy for `seconds`: raw collapsed stacks of the thread holding the GIL
    (`--gil`), i.e. where Python code runs. py-spy's idle detection is not reliable here (threads waiting in
    epoll or on a condition come out as busy), so without --gil the samples would not add up to CPU time."""
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    done = subprocess.run([binary, "record", "--pid", str(os.getpid()), "--duration", str(round(seconds)),
                           "--rate", str(PY_SPY_RATE), "--gil", "--threads", "--format", "raw",
                           "--output", str(out)], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        print(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return out


def short_frame(frame: str) -> str:
    """`func (/work/main/drivers/x.py:12)` -> `func (drivers/x.py:12)`; site-packages and stdlib paths alike."""
    for prefix in (str(ROOT) + "/", "site-packages/", f"/python{sys.version_info.major}.{sys.version_info.minor}/"):
        if prefix in frame:
            head, tail = frame.split(prefix, 1)
            return head.rsplit("(", 1)[0] + "(" + tail
    return frame


def frame_package(frame: str) -> str:
    """`func (asyncio/tasks.py:449)` -> `asyncio`; our own code by top-level package."""
    path = frame.rsplit("(", 1)[-1]
    top = path.split("/", 1)[0] if "/" in path else path.split(".py", 1)[0]
    return {"selectors": "selectors (epoll)", "threading": "threading"}.get(top, top)


def summarize_profile(path: Path, seconds: float, top: int = 12) -> list[str]:
    """Where the GIL samples fall, as % of one core: own time by file:line, then time in and below each line
    (inclusive), leaving out the scaffolding every sample passes through (thread start, run_forever)."""
    ticks = PY_SPY_RATE * round(seconds)
    own: collections.Counter[str] = collections.Counter()
    below: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, count_text = line.rsplit(" ", 1)
        count = int(count_text)
        thread, *frames = stack.split(";")
        frames = [short_frame(f) for f in frames]
        if not frames:
            continue
        total += count
        threads[thread.split(": ", 1)[-1]] += count
        own[frames[-1]] += count
        packages[frame_package(frames[-1])] += count
        for frame in set(frames):
            below[frame] += count
    scaffolding = {frame for frame, n in below.items() if n >= 0.8 * total}
    lines = [f"py-spy --gil over {seconds:.0f} s: Python code ran {total / ticks * 100:.1f} % of one core "
             f"({total} samples at {PY_SPY_RATE}/s); by thread:"]
    lines += [f"  {n / ticks * 100:5.1f} %  {name}" for name, n in threads.most_common(5)]
    lines.append("own time by where the line is (% of one core):")
    lines += [f"  {n / ticks * 100:5.1f} %  {name}" for name, n in packages.most_common()]
    lines.append(f"own time, top {top} lines (% of one core):")
    lines += [f"  {n / ticks * 100:5.1f} %  {frame}" for frame, n in own.most_common(top)]
    lines.append(f"in and below, top {2 * top} lines (% of one core; the event loop's own frames left out):")
    lines += [f"  {n / ticks * 100:5.1f} %  {frame}" for frame, n in below.most_common(2 * top + len(scaffolding))
              if frame not in scaffolding][:2 * top]
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
            mosquitto = start_mosquitto(tmp)
            if mosquitto is None:
                print("mosquitto is not installed", file=sys.stderr)
                return 2
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
                        kept = Path(tempfile.gettempdir()) / f"poll_many-{os.getpid()}.pyspy.txt"
                        if py_spy(args.py_spy_seconds, kept):
                            profile = summarize_profile(kept, args.py_spy_seconds)
                            profile.append(f"(raw collapsed stacks kept in {kept})")
                finally:
                    running.stop()
            finally:
                stop_sims(sims)
        finally:
            if mosquitto:
                mosquitto.stop()

    ok = report(args, parts, result)
    if profile:
        print()
    for line in profile:
        print(line)
    return 0 if ok else 1


def report(args: argparse.Namespace, parts: tuple[str, ...], r: dict[str, Any]) -> bool:
    expected = args.modules * 1000 / args.poll_ms
    achieved = r["polls"] / r["wall"]
    cpu = r["user_pct"] + r["sys_pct"]
    broker = "own Mosquitto" if args.broker == "mosquitto" else "embedded amqtt (in this process)"
    met = cpu <= TARGET_PCT
    processes = -(-args.modules // args.per_process)
    print()
    print(f"polling {args.modules} Modbus DI modules (TCP, one port and driver instance each) every {args.poll_ms} ms, "
          f"idle, over {r['wall']:.0f} s")
    print(f"gateway parts: {', '.join(parts)}; broker {broker}; {processes} simulator processes; "
          f"{os.cpu_count()} cores")
    print(f"  {'gateway process CPU, % of one core':48}{cpu:7.1f} %   target <= {TARGET_PCT:.0f} %: "
          f"{'met' if met else 'MISSED'}")
    print(f"  {'  user / system':48}{r['user_pct']:7.1f} / {r['sys_pct']:.1f} %")
    for name, pct in sorted(r["threads"].items(), key=lambda kv: -kv[1]):
        if pct >= 0.05:
            print(f"  {'  thread: ' + name:48}{pct:7.1f} %")
    print(f"  {'polls/s achieved / expected':48}{achieved:7.0f} / {expected:.0f} ({achieved / expected * 100:.1f} %)")
    print(f"  {'CPU per poll':48}{cpu / 100 * r['wall'] / max(r['polls'], 1) * 1e6:7.0f} µs")
    print(f"  {'poll errors in the window':48}{r['errors']:7d}")
    print(f"  {'modules online at the end':48}{r['online']:7d} / {args.modules}")
    for name, pct in r["others"].items():
        print(f"  {name + ' (for scale)':48}{pct:7.1f} %")
    return met and achieved >= expected * MIN_RATE and r["errors"] == 0 and r["online"] == args.modules


if __name__ == "__main__":
    sys.exit(main())
