"""The camera driver's whole-process cost: CPU and memory of each camera worker, and the gateway's own CPU.

    python -m bench.camera_workers [--cameras 1,2,4] [--camera-fps 10] [--seconds 30] [--warmup-s 10]
                                   [--breakdown] [--breakdown-s 20] [--breakdown-fps 10,25]

For each number of cameras N in --cameras and each camera frame rate F in --camera-fps (every combination,
each a fresh round), the script:

  1. starts N camera simulators, each in a process of its own (`python -m gateway.cli simulate camera --port 0
     --fps F --script walk`: MJPEG over HTTP on loopback, 640x360, a person walks through for 7 s every 30 s),
     so their drawing and JPEG encoding is not counted anywhere else;
  2. writes a site config with N cameras (driver opencv, 640x360, fps 5 analysed, motion with one zone "gate"
     over the lower 65 % of the frame, tamper with its defaults, everything else as shipped) and runs the
     gateway as production does, `campusgw run -c site.yaml` (the venv's console script; drivers + rules +
     console in one process, embedded amqtt, SQLite, log level info) in a subprocess. Each camera worker is then
     a `multiprocessing` spawn child of that process, importing what it imports in production (spawn re-runs
     the parent's main script, here the `campusgw` script, in every worker);
  3. finds each camera's worker pid in the gateway's log ("cam-i: worker <pid> reading ...") and the embedded
     broker's port ("embedded broker listening on ..."), and subscribes to the cameras' retained state
     (campus/v1/<site>/camera/+/state, which the driver publishes with every stats message of the worker,
     every snapshot_every_s = 10 s, with the analysed fps over those 10 s);
  4. waits until every camera is online and analysing (state fps between 4 and 6), then --warmup-s more;
  5. measures over --seconds: utime + stime from /proc/<pid>/stat (every thread of the process, FFmpeg's
     and OpenCV's included) of each worker, of the gateway process, of the gateway's other children (the
     multiprocessing resource tracker) and of the simulators, as % of one core; the analysed fps is the mean
     of the state messages stamped within the window;
  6. at the end of the window reads each process's memory: VmRSS (/proc/<pid>/status); from
     /proc/<pid>/smaps_rollup the kernel's PSS (each shared page divided among every process mapping it) and
     USS (private pages only: what one more worker adds at least); and "PSS gw", the PSS counting only the
     sharing among the gateway and its children, from the page frames in /proc/<pid>/pagemap (needs root;
     "-" otherwise). The kernel's PSS also divides OpenCV's and NumPy's pages with the simulator processes,
     which a gateway with real cameras does not run, so it flatters the workers; PSS gw is what the box pays
     per worker. A worker restarted during the window is flagged.

Targets (the camera issue): motion + tamper on a 640x360, 5 fps stream <= 3 % of one core, decoding included,
judged per worker process; <= 60 MB per camera worker, judged on PSS gw (the kernel's PSS without root).
Run by hand; it asserts nothing (exit status 0 unless a round could not be set up).

With --breakdown, a last step shows where a worker's time goes: for each --breakdown-fps (default the
--camera-fps values) one simulator, and drivers.camera.capture.run itself in a spawned process (settings from
a CameraConfig like the rounds' cameras), its steps timed in place by wrapping them: the capture's grab() and
retrieve(), Pipeline.update, the clip ring's JPEG encoding and the snapshot store, in thread CPU time
(time.thread_time) over --breakdown-s after --warmup-s, beside the process's whole CPU. OpenCV's FFmpeg
backend demuxes and decodes every frame in grab(); retrieve() only converts the decoded frame to BGR.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import mmap
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
import yaml

from bench.common import NoAliases, cpu_of, gateway_config, rss_mib, wait_until
from gateway import topics
from gateway.broker import login

ROOT = Path(__file__).resolve().parent.parent
SITE = "bench-cam"
WIDTH, HEIGHT = 640, 360
ANALYSIS_FPS = 5.0
TARGET_CPU_PCT = 3.0
TARGET_MB = 60.0
MIB = 1024 * 1024
PAGE = mmap.PAGESIZE
ZERO_PAGE = [0]  # set in main()
GATE = {"name": "gate", "polygon": [[0.0, 0.35], [1.0, 0.35], [1.0, 1.0], [0.0, 1.0]]}
WORKER_LINE = re.compile(r"\b(cam-\d+): worker (\d+) reading ")
BROKER_LINE = re.compile(r"embedded broker listening on [^:\s]+:(\d+)")


# -- processes ----------------------------------------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of a process in MiB, NaN where unreadable (PSS and USS without
    smaps_rollup, everything once the process is gone); "pss_gw" NaN, for pss_among() to fill in."""
    out = {"rss": math.nan, "pss": math.nan, "uss": math.nan, "pss_gw": math.nan}
    with contextlib.suppress(OSError):
        out["rss"] = rss_mib(pid)
    with contextlib.suppress(OSError):
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
        if "Pss" in fields:
            out["pss"] = fields["Pss"] / 1024
            out["uss"] = (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024
    return out


def mapped_pages(pid: int) -> npt.NDArray[np.uint64]:
    """The physical page frames a process maps (present pages, /proc/<pid>/pagemap), unique, sorted; empty if the
    kernel hides frame numbers (reading them needs CAP_SYS_ADMIN)."""
    frames: list[npt.NDArray[np.uint64]] = []
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            with contextlib.suppress(OSError, ValueError):
                pagemap.seek(lo // PAGE * 8)
                entries = np.frombuffer(pagemap.read((hi - lo) // PAGE * 8), dtype=np.uint64)
                present = (entries >> np.uint64(63)) == 1
                frames.append(entries[present] & np.uint64((1 << 55) - 1))
    found = np.unique(np.concatenate(frames)) if frames else np.empty(0, np.uint64)
    return found[(found != 0) & (found != ZERO_PAGE[0])]


def pss_among(pids: list[int]) -> dict[int, float]:
    """PSS in MiB of each process counting only the sharing among `pids`: a page mapped by k of them counts
    1/k to each. The kernel's PSS also divides by processes outside the set (here the simulators, which load
    the same OpenCV and NumPy), which a gateway with real cameras does not run. NaN without frame numbers."""
    pages = {pid: mapped_pages(pid) for pid in pids}
    if not pages or not any(len(p) for p in pages.values()):
        return {pid: math.nan for pid in pids}
    frames, counts = np.unique(np.concatenate(list(pages.values())), return_counts=True)
    return {pid: float(np.sum(1.0 / counts[np.searchsorted(frames, p)])) * PAGE / MIB for pid, p in pages.items()}


def find_zero_page() -> int:
    """The frame of the kernel's shared zero page (an untouched anonymous page, read), left out of the counts:
    smaps leaves it out of RSS."""
    with contextlib.suppress(OSError, ValueError), mmap.mmap(-1, PAGE) as area:
        _ = area[0]
        buf = ctypes.c_char.from_buffer(area)
        address = ctypes.addressof(buf)
        del buf
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(address // PAGE * 8)
            return int.from_bytes(pagemap.read(8), "little") & ((1 << 55) - 1)
    return 0


def cpu_or_nan(pid: int) -> float:
    """CPU seconds of a process (bench.common.cpu_of); NaN once it is gone (a worker restarted meanwhile)."""
    try:
        return cpu_of(pid)
    except OSError:
        return math.nan


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM (the gateway and the simulators stop cleanly on it), then SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_simulators(count: int, fps: float) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """`count` camera simulators, each its own process on a free port; (processes, stream URLs)."""
    procs: list[subprocess.Popen[str]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "simulate", "camera", "--port", "0", "--fps", f"{fps:g}",
                 "--script", "walk"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.search(r"(http://\S+/video\.mjpg)", line)
            if not found:
                raise RuntimeError(f"camera simulator {proc.pid} did not start: {line!r}")
            urls.append(found.group(1))
    except BaseException:
        for proc in procs:
            stop_process(proc)
        raise
    return procs, urls


def site_config(data_dir: Path, urls: list[str]) -> dict[str, Any]:
    config = gateway_config(SITE, data_dir, "embedded")
    config["gateway"]["log_level"] = "info"  # the shipped default; the worker pids come from the log
    config["devices"] = [{
        "id": f"cam-{i + 1}", "name": f"Camera {i + 1}", "kind": "camera", "driver": "opencv", "url": url,
        "fps": ANALYSIS_FPS, "width": WIDTH, "height": HEIGHT, "motion": {"zones": [GATE]},
        "worker": f"cam-{i + 1}",  # a worker process each, so a worker's figures are its camera's
    } for i, url in enumerate(urls)]  # tamper: the default TamperConfig
    return config


class GatewayProcess:
    """`campusgw run -c <workdir>/site.yaml` in a subprocess, its log in <workdir>/gateway.log."""

    def __init__(self, workdir: Path, urls: list[str]) -> None:
        path = workdir / "site.yaml"
        path.write_text(yaml.dump(site_config(workdir / "data", urls), Dumper=NoAliases, sort_keys=False))
        script = Path(sys.executable).parent / "campusgw"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
        self.log_path = workdir / "gateway.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen([*command, "run", "-c", str(path)], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def broker_port(self) -> int | None:
        found = BROKER_LINE.search(self.log())
        return int(found.group(1)) if found else None

    def workers(self) -> dict[str, list[int]]:
        """Every worker pid each camera has had, in order."""
        out: dict[str, list[int]] = {}
        for camera, pid in WORKER_LINE.findall(self.log()):
            out.setdefault(camera, []).append(int(pid))
        return out

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log().splitlines()[-20:])
            raise RuntimeError(f"the gateway exited with status {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        pids = [p for ps in self.workers().values() for p in ps] + children_of(self.pid) \
            if self.proc.poll() is None else []
        stop_process(self.proc, 30)
        for pid in pids:  # the gateway kills its workers on the way out; make sure none outlives it
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == "1":  # orphaned
                    os.kill(pid, signal.SIGKILL)


class StateWatcher:
    """Every retained state message of the site's cameras, as (camera, payload) with the payload's `at`."""

    def __init__(self, port: int, login: tuple[str, str]) -> None:
        self.states: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-camera-{os.getpid()}")
        self.client.username_pw_set(*login)  # the gateway's read-only MQTT user
        topic = topics.states_filter(SITE, "camera")
        self.client.on_connect = lambda client, userdata, flags, rc, props: client.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        camera = message.topic.split("/")[4]
        with contextlib.suppress(ValueError):
            payload = json.loads(message.payload)
            with self._lock:
                self.states.setdefault(camera, []).append(payload)

    def latest(self, camera: str) -> dict[str, Any] | None:
        with self._lock:
            states = self.states.get(camera)
            return states[-1] if states else None

    def fps_between(self, camera: str, start: float, end: float) -> float:
        """Mean analysed fps of the state messages stamped in (start, end] (wall time); NaN if none."""
        with self._lock:
            values = [s["fps"] for s in self.states.get(camera, []) if start < s.get("at", 0) <= end]
        return sum(values) / len(values) if values else math.nan

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- a round ------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    cpu_pct: float
    memory: dict[str, float]
    fps: float = math.nan
    note: str = ""


@dataclass
class Round:
    cameras: int
    camera_fps: float
    seconds: float
    workers: list[Row] = field(default_factory=list)
    gateway: Row | None = None
    others: list[Row] = field(default_factory=list)  # the gateway's other children
    simulators_pct: float = 0.0


def run_round(cameras: int, camera_fps: float, seconds: float, warmup_s: float) -> Round:
    result = Round(cameras, camera_fps, seconds)
    with tempfile.TemporaryDirectory(prefix="cgw-bench-cam-") as tmp:
        sims, urls = start_simulators(cameras, camera_fps)
        try:
            gateway = GatewayProcess(Path(tmp), urls)
            watcher: StateWatcher | None = None
            try:
                names = [f"cam-{i + 1}" for i in range(cameras)]

                def port() -> int | None:
                    gateway.check_alive()
                    return gateway.broker_port()

                wait_until(port, 60, "the gateway's embedded broker", 0.2)
                watcher = StateWatcher(port() or 0, login("reader", Path(tmp) / "data"))

                def analysing(camera: str) -> bool:
                    state = watcher.latest(camera) if watcher else None
                    return bool(state and state.get("online") and 4.0 <= state.get("fps", 0) <= 6.0)

                def all_analysing() -> bool:
                    gateway.check_alive()
                    return all(analysing(c) for c in names)

                wait_until(all_analysing, 90, lambda: "cameras not analysing at about 5 fps within 90 s: "
                           + ", ".join(f"{c} {watcher.latest(c) if watcher else None}" for c in names
                                       if not analysing(c)), 0.5)
                time.sleep(warmup_s)
                gateway.check_alive()
                workers_before = gateway.workers()
                pids = {c: workers_before[c][-1] for c in names}
                others = [p for p in children_of(gateway.pid) if p not in pids.values()]
                sim_pids = [s.pid for s in sims]
                watched = [gateway.pid, *pids.values(), *others, *sim_pids]
                cpu0 = {p: cpu_or_nan(p) for p in watched}
                wall0, mono0 = time.time(), time.monotonic()
                time.sleep(seconds)
                cpu1 = {p: cpu_or_nan(p) for p in watched}
                wall1, elapsed = time.time(), time.monotonic() - mono0
                workers_after = gateway.workers()

                def pct(pid: int) -> float:
                    return 100 * (cpu1[pid] - cpu0[pid]) / elapsed

                for camera in names:
                    pid = pids[camera]
                    restarted = workers_after[camera][-1] != pid
                    result.workers.append(Row(f"worker {camera}", pct(pid), memory_mib(pid),
                                              note="RESTARTED in the window" if restarted else ""))
                result.gateway = Row("gateway (campusgw run)", pct(gateway.pid), memory_mib(gateway.pid))
                for pid in others:
                    line = cmdline(pid)
                    label = "mp resource tracker" if "resource_tracker" in line else \
                        "mp fork server" if "forkserver" in line else f"child {pid}"
                    result.others.append(Row(label, pct(pid), memory_mib(pid)))
                result.simulators_pct = sum(pct(p) for p in sim_pids)
                among = pss_among([gateway.pid, *pids.values(), *others])
                for row, pid in zip([*result.workers, result.gateway, *result.others],
                                    [*pids.values(), gateway.pid, *others], strict=True):
                    row.memory["pss_gw"] = among[pid]
                time.sleep(1.0)  # a state message stamped just before the end of the window may still be on its way
                for camera, row in zip(names, result.workers, strict=True):
                    row.fps = watcher.fps_between(camera, wall0, wall1)
            finally:
                if watcher is not None:
                    watcher.stop()
                gateway.stop()
        finally:
            for sim in sims:
                stop_process(sim)
    return result


# -- the breakdown: where a worker's time goes ----------------------------------------------------


STEPS = ("grab", "retrieve", "analysis", "clip ring JPEG", "latest.jpg", "event snapshots")


def timed_worker(url: str, warmup_s: float, seconds: float, snapshot_dir: str, report: Any) -> None:
    """drivers.camera.capture.run itself, on `url`, with its steps timed in place: the capture's grab() and
    retrieve(), Pipeline.update, the clip ring's JPEG encoding and the snapshot store, each in thread CPU time
    (time.thread_time) and calls, over `seconds` after `warmup_s`; the grab after that ends the stream. The
    totals go to `report`. Runs in a spawned process, as a worker does."""
    import collections

    from drivers.camera import capture, pipeline
    from drivers.camera.driver import asdict_or_none
    from drivers.camera.schema import CameraConfig

    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    began = time.monotonic()
    window: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - t
                calls[name] += 1
        return wrapper

    class TimedCapture:
        def __init__(self, cap: Any) -> None:
            self.cap = cap

        def grab(self) -> bool:
            now = time.monotonic()
            if not window and now - began >= warmup_s:  # the window starts: forget the warm-up
                spent.clear()
                calls.clear()
                window.update(wall=now, cpu=time.process_time())
            if window and now - window["wall"] >= seconds:
                window.update(elapsed=now - window["wall"], process=time.process_time() - window["cpu"])
                return False
            return bool(timed("grab", self.cap.grab)())

        def retrieve(self) -> Any:
            return timed("retrieve", self.cap.retrieve)()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cap, name)

    real_open = capture._open
    capture._open = lambda settings: TimedCapture(real_open(settings))
    pipeline.Pipeline.update = timed("analysis", pipeline.Pipeline.update)  # type: ignore[method-assign]
    capture._jpeg = timed("clip ring JPEG", capture._jpeg)
    capture.SnapshotStore.latest = timed("latest.jpg", capture.SnapshotStore.latest)  # type: ignore[method-assign]
    capture.SnapshotStore.save = timed("event snapshots", capture.SnapshotStore.save)  # type: ignore[method-assign]

    cfg = CameraConfig.model_validate({"id": "cam-x", "kind": "camera", "driver": "opencv", "url": url,
                                       "fps": ANALYSIS_FPS, "width": WIDTH, "height": HEIGHT,
                                       "motion": {"zones": [GATE]}})
    analytics = {name: asdict_or_none(getattr(cfg, name)) for name in ("motion", "tamper", "loitering")
                 if hasattr(cfg, name)}
    clip = {name: getattr(cfg, name) for name in ("clip_fps", "clip_pre_s") if hasattr(cfg, name)}
    settings = capture.WorkerSettings(
        device=cfg.id, source=url, fps=cfg.fps, size=(cfg.width, cfg.height), open_timeout_s=cfg.open_timeout_s,
        read_timeout_s=cfg.read_timeout_s, snapshot_dir=snapshot_dir, snapshot_every_s=cfg.snapshot_every_s,
        jpeg_quality=cfg.jpeg_quality, analytics=analytics, **clip)
    ended: list[Any] = []

    class Out:
        def put(self, item: Any) -> None:
            ended.append(item)

    last_frame = multiprocessing.get_context("spawn").Value("d", 0.0, lock=False)
    capture.run(settings, last_frame, Out())
    report.put({"spent": dict(spent), "calls": dict(calls), **window,
                "ended": [data for kind, data in ended if kind == "ended"]})


def breakdown(camera_fps: float, warmup_s: float, seconds: float) -> dict[str, Any]:
    sims, (url,) = start_simulators(1, camera_fps)
    try:
        with tempfile.TemporaryDirectory(prefix="cgw-bench-cam-") as tmp:
            ctx = multiprocessing.get_context("spawn")
            report = ctx.Queue()
            proc = ctx.Process(target=timed_worker, args=(url, warmup_s, seconds, tmp, report),
                               name="camera-breakdown")
            proc.start()
            result: dict[str, Any] = report.get(timeout=warmup_s + seconds + 60)
            proc.join(10)
            return result
    finally:
        stop_process(sims[0])


def print_breakdown(fps: float, b: dict[str, Any]) -> None:
    elapsed = b.get("elapsed", math.nan)
    grabbed = b["calls"].get("grab", 0)
    print(f"camera sending {fps:g} fps: {grabbed / elapsed:.1f} frames grabbed/s, "
          f"{b['calls'].get('analysis', 0) / elapsed:.2f} analysed/s over {elapsed:.0f} s; worker process "
          f"{100 * b['process'] / elapsed:.2f} % of one core")
    accounted = 0.0
    for step in STEPS:
        n, t = b["calls"].get(step, 0), b["spent"].get(step, 0.0)
        accounted += t
        if n:
            print(f"  {step:18}{n / elapsed:8.2f}/s {1000 * t / n:8.2f} ms each {100 * t / elapsed:8.2f} %")
    print(f"  {'the rest':18}{'':10} {'':8}{'':8}{100 * (b['process'] - accounted) / elapsed:8.2f} %  "
          "(the loop, the queue's feeder thread, ...)")


# -- report -------------------------------------------------------------------------------------


def judged_mib(row: Row) -> float:
    """The memory the target is judged on: PSS among the gateway's processes, else the kernel's PSS."""
    return row.memory["pss_gw"] if math.isfinite(row.memory.get("pss_gw", math.nan)) else row.memory["pss"]


def mem(value: float) -> str:
    return f"{value:8.1f}" if math.isfinite(value) else f"{'-':>8}"


def print_round(r: Round, header: bool) -> None:
    if header:
        print(f"{'cams':>4} {'cam fps':>7}  {'process':24}{'CPU %':>7}  {'<= 3 %':7}{'fps':>6}"
              f"{'RSS':>8}{'PSS':>8}{'USS':>8}{'PSS gw':>8}  {'<= 60 MB':9}  (memory in MiB)")
    lead = f"{r.cameras:4d} {r.camera_fps:7g}  "
    for row in r.workers:
        cpu_ok = "met" if row.cpu_pct <= TARGET_CPU_PCT else "MISSED"
        judged_mb = judged_mib(row) * MIB / 1e6
        mem_ok = "-" if not math.isfinite(judged_mb) else "met" if judged_mb <= TARGET_MB else "MISSED"
        print(f"{lead}{row.name:24}{row.cpu_pct:7.2f}  {cpu_ok:7}{row.fps:6.2f}{mem(row.memory['rss'])}"
              f"{mem(row.memory['pss'])}{mem(row.memory['uss'])}{mem(row.memory['pss_gw'])}  {mem_ok:9}"
              f"{row.note}".rstrip())
    rows = ([r.gateway] if r.gateway else []) + r.others
    for row in rows:
        print(f"{lead}{row.name:24}{row.cpu_pct:7.2f}  {'':7}{'':6}{mem(row.memory['rss'])}"
              f"{mem(row.memory['pss'])}{mem(row.memory['uss'])}{mem(row.memory['pss_gw'])}")
    print(f"{lead}{'simulators (for scale)':24}{r.simulators_pct:7.2f}")


def summary(rounds: list[Round]) -> None:
    workers = [(r, w) for r in rounds for w in r.workers]
    if not workers:
        return
    print()
    for fps in sorted({r.camera_fps for r in rounds}):
        cpus = [w.cpu_pct for r, w in workers if r.camera_fps == fps]
        worst = max(cpus)
        verdict = "met" if worst <= TARGET_CPU_PCT else f"MISSED by {worst - TARGET_CPU_PCT:.2f} points " \
                                                        f"({worst / TARGET_CPU_PCT:.2f}x)"
        print(f"target: motion + tamper, 640x360 at 5 fps, <= {TARGET_CPU_PCT:g} % of one core per worker incl. "
              f"decoding; camera sending {fps:g} fps: {min(cpus):.2f}-{worst:.2f} %: {verdict}")
    for count in sorted({r.cameras for r in rounds if r.workers}):
        rows = [w for r, w in workers if r.cameras == count]
        judged = [judged_mib(w) * MIB / 1e6 for w in rows]
        span = {k: (min(w.memory[k] for w in rows) * MIB / 1e6, max(w.memory[k] for w in rows) * MIB / 1e6)
                for k in ("rss", "pss", "uss")}
        what = "PSS among the gateway's processes" if all(math.isfinite(w.memory["pss_gw"]) for w in rows) \
            else "PSS"
        verdict = "-" if not all(math.isfinite(v) for v in judged) else "met" if max(judged) <= TARGET_MB \
            else f"MISSED by {max(judged) - TARGET_MB:.1f} MB"
        print(f"target: <= {TARGET_MB:g} MB per camera worker, {count} camera(s), {what}: {max(judged):.1f} MB: "
              f"{verdict} (" + ", ".join(f"{k.upper()} {lo:.1f}-{hi:.1f}" for k, (lo, hi) in span.items())
              + " MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.camera_workers", description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", default="1,2,4", help="numbers of cameras, one round each (0: the gateway alone)")
    parser.add_argument("--camera-fps", default="10", help="frames a second each camera sends (comma-separated: "
                        "every combination with --cameras)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="the measuring window (the fps column needs >= 10 s: the state comes every 10 s)")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="after every camera analyses at ~5 fps")
    parser.add_argument("--breakdown", action="store_true", help="then time grab / retrieve / analysis apart")
    parser.add_argument("--breakdown-s", type=float, default=20.0)
    parser.add_argument("--breakdown-fps", help="camera frame rates for --breakdown (default: --camera-fps)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.cameras.split(",")]
    ZERO_PAGE[0] = find_zero_page()
    rates = [float(f) for f in args.camera_fps.split(",")]

    print(f"camera workers: {WIDTH}x{HEIGHT}, {ANALYSIS_FPS:g} fps analysed, motion (1 zone) + tamper (defaults); "
          f"MJPEG over HTTP on loopback, a simulator process per camera (a person walks through 7 s every 30 s)")
    print(f"gateway: campusgw run (drivers + rules + console, embedded amqtt, SQLite, log level info); CPU over "
          f"{args.seconds:g} s after a {args.warmup_s:g} s warm-up, % of one core; memory at the end; "
          f"{os.cpu_count()} cores")
    rounds = []
    for fps in rates:
        for count in counts:
            rounds.append(run_round(count, fps, args.seconds, args.warmup_s))
            print_round(rounds[-1], header=len(rounds) == 1)
            sys.stdout.flush()
    summary(rounds)

    if args.breakdown:
        print(f"\nwhere a worker's time goes: drivers.camera.capture.run in a spawned process, its steps timed in "
              f"place (thread CPU time) over {args.breakdown_s:g} s after {args.warmup_s:g} s; grab() demuxes "
              "and decodes, retrieve() converts to BGR")
        for fps in [float(f) for f in args.breakdown_fps.split(",")] if args.breakdown_fps else rates:
            print_breakdown(fps, breakdown(fps, args.warmup_s, args.breakdown_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
