"""The camera driver: a worker process per camera (drivers.camera.capture) and a watchdog over it.

The watchdog lives here, outside the reader: no frame for `video_loss_s` -> the camera is offline
(video loss, a device-offline alarm) and its worker is killed, since a read that never returns cannot
be interrupted from inside; the worker is started again with exponential backoff, and the first frame
after that brings the camera back online (the restore). Events the worker finds (motion, tamper) are
emitted with the id of the snapshot taken of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from drivers.base import CommandResult, Driver, DriverContext
from drivers.camera.capture import WorkerSettings, redact, run, snapshot_name
from drivers.camera.schema import CameraConfig
from gateway.config import DeviceConfig

RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
WATCH_S = 0.2
PROBE_S = 0.5  # during a restart backoff, the camera's port is tried this often ...
PROBE_TIMEOUT_S = 0.3  # ... each try given this long
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

def frame_rate(previous: tuple[float, int] | None, at: float, analysed: int, current: float) -> float:
    """Frames analysed per second since the previous report. A worker restarted in between counts from 0
    again: its first report is a new baseline, not a negative rate (which /metrics once showed as -10.4)."""
    if previous is None or at <= previous[0] or analysed < previous[1]:
        return current if previous is not None and analysed >= previous[1] else 0.0
    return (analysed - previous[1]) / (at - previous[0])


@dataclass
class Worker:
    cfg: CameraConfig
    process: Any = None
    last_frame: Any = None
    out: Any = None
    commands: Any = None
    started: float = 0.0
    restart_at: float = 0.0
    backoff: float = RESTART_MIN_S
    online: bool | None = None
    restarts: int = 0
    frames_analysed: int = 0
    fps: float = 0.0
    last_stats: tuple[float, int] | None = None
    events: int = 0
    last_reason: str | None = None
    last_seen: float = 0.0  # wall time of the last frame any worker read
    first_try: float = 0.0
    started_wall: float = 0.0
    next_probe: float = 0.0
    codec: str | None = None  # as the worker's stream reports it: h264, hevc, MJPG
    stream_size: tuple[int, ...] | None = None
    first_frame_s: float | None = None  # the current worker: from its start to its first frame
    port_closed: bool = False  # a probe found the camera's port closed during this backoff


class CameraDriver(Driver):
    name = "opencv"
    config_model = CameraConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        (device,) = devices
        assert isinstance(device, CameraConfig)
        self.worker = Worker(device)
        self._mp = worker_context()
        self._stop = asyncio.Event()
        self._clips = 0
        self.address = network_address(device.url)
        # Conditions (motion, tamper, loitering) the camera has reported active and not yet ended: kept on
        # disk, so a worker started after a crash, a video loss or a gateway restart ends or keeps them.
        self._active_file = ctx.data_dir / "snapshots" / device.id / "active.json"
        self.active: dict[str, dict[str, Any]] = _load_active(self._active_file)

    async def start(self) -> None:
        w = self.worker
        while not self._stop.is_set():
            self.ctx.heartbeat()
            now = time.monotonic()
            if w.process is None and (now >= w.restart_at or await self._back_early(now)):
                self._spawn()
            if w.process is not None:
                self._drain()
            self._watch_loss()
            if w.process is not None:
                self._watch(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WATCH_S)

    async def _back_early(self, now: float) -> bool:
        """During the restart backoff (up to a minute), knock on the camera's port now and then: a port
        that refused and now answers is a camera back from a power cut, read at once rather than at the end
        of the backoff. A port that stayed open (a wrong path, a stalled camera) waits out the backoff."""
        w = self.worker
        if self.address is None or now < w.next_probe:
            return False
        w.next_probe = now + PROBE_S
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.address), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            w.port_closed = True
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if w.port_closed:
            self.ctx.log.info("%s: the camera answers again: reading now", w.cfg.id)
            return True
        return False

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._kill, "stopping")

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        """`clip`: the alarm's snapshot now, and a clip of clip_pre_s before and clip_post_s after, named in
        the result so the alarm can point at them before they are finished."""
        w, cfg = self.worker, self.worker.cfg
        if name == "relearn":  # after the camera was re-aimed or refocused on purpose
            if w.process is None:
                return CommandResult(False, f"{cfg.id} has no video now: nothing to learn from")
            w.commands.put(("relearn", {}))
            self.ctx.log.info("%s: tamper detection learns the view again (%s)", cfg.id, issued_by)
            return CommandResult(True, "tamper detection learns the view again from the next frames")
        if name != "clip":
            return await super().handle_command(device_id, name, args, issued_by)
        if w.process is None or not w.online:
            return CommandResult(False, f"{cfg.id} has no video now: no snapshot or clip")
        at = time.time()
        self._clips += 1
        snapshot_id = snapshot_name(cfg.id, at, 10_000 + self._clips)  # apart from the worker's own numbers
        clip_id = f"{snapshot_id}-clip"
        pre_s = min(float(args.get("pre_s", cfg.clip_pre_s)), cfg.clip_pre_s)
        post_s = min(float(args.get("post_s", cfg.clip_post_s)), cfg.clip_post_s)
        w.commands.put(("clip", {"clip_id": clip_id, "snapshot_id": snapshot_id, "alarm_id": args.get("alarm_id"),
                                 "pre_s": pre_s, "post_s": post_s}))
        return CommandResult(True, f"snapshot, and a clip of {pre_s:g} s before and {post_s:g} s after",
                             data={"snapshot_id": snapshot_id, "clip_id": clip_id})

    def health(self) -> dict[str, Any]:
        w = self.worker
        return {"online": w.online, "restarts": w.restarts, "fps": round(w.fps, 2), "events": w.events,
                "last_reason": w.last_reason, "pid": w.process.pid if w.process is not None else None,
                "codec": w.codec, "stream_size": w.stream_size, "port_closed": w.port_closed,
                "first_frame_s": None if w.first_frame_s is None else round(w.first_frame_s, 2)}

    # -- the worker ------------------------------------------------------------------

    def _spawn(self) -> None:
        w, cfg = self.worker, self.worker.cfg
        settings = WorkerSettings(
            device=cfg.id, source=cfg.source(), fps=cfg.fps, size=(cfg.width, cfg.height),
            open_timeout_s=cfg.open_timeout_s, read_timeout_s=cfg.read_timeout_s,
            snapshot_dir=str(self.ctx.data_dir / "snapshots"), snapshot_every_s=cfg.snapshot_every_s,
            jpeg_quality=cfg.jpeg_quality, loop_file=cfg.loop_file, clip_fps=cfg.clip_fps, clip_pre_s=cfg.clip_pre_s,
            rtsp_transport=cfg.rtsp_transport,
            analytics={"motion": asdict_or_none(cfg.motion), "tamper": asdict_or_none(cfg.tamper),
                       "loitering": asdict_or_none(cfg.loitering), "timezone": str(self.ctx.tz)})
        settings.analytics["carried"] = {"tamper": self._carry_over(cfg)}
        w.last_reason = None
        w.port_closed = False
        w.first_frame_s = None
        w.last_frame = self._mp.Value("d", 0.0, lock=False)
        w.out = self._mp.Queue()
        w.commands = self._mp.Queue()
        w.process = self._mp.Process(target=run, args=(settings, w.last_frame, w.out, w.commands), daemon=True,
                                     name=f"camera-{cfg.id}")
        with _main_left_alone():
            w.process.start()
        w.started, w.started_wall = time.monotonic(), time.time()
        w.first_try = w.first_try or time.time()
        self.ctx.log.info("%s: worker %d reading %s", cfg.id, w.process.pid, redact(cfg.url))

    def _drain(self) -> None:
        w = self.worker
        while True:
            try:
                kind, data = w.out.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            if kind == "ended":
                w.last_reason = data["reason"]
            elif kind == "opened":
                w.codec, w.stream_size = data["codec"], tuple(data["size"])
            elif kind == "stats":
                w.fps = frame_rate(w.last_stats, data["at"], data["analysed"], w.fps)
                w.last_stats = (data["at"], data["analysed"])
                w.frames_analysed = data["analysed"]
                self.ctx.set_state(w.cfg.id, {"online": bool(w.online), "fps": round(w.fps, 2),
                                              "latest": f"{w.cfg.id}/latest.jpg", "at": data["at"]})
            elif kind == "clip":
                at = data.pop("at")
                self.ctx.emit(w.cfg.id, "campus.camera.clip", data, at)
            elif kind in ("motion", "tamper", "loitering"):
                w.events += 1
                at = data.pop("at")
                self._track(kind, data)
                self.ctx.emit(w.cfg.id, f"campus.camera.{kind}", data, at)

    def _track(self, kind: str, data: dict[str, Any]) -> None:
        key = f"{kind}:{data.get('zone') or data.get('kind')}"
        if data["active"]:
            self.active[key] = {k: v for k, v in data.items() if k in ("zone", "kind")}
        elif self.active.pop(key, None) is None:
            return
        _save_active(self._active_file, self.active)

    def _carry_over(self, cfg: CameraConfig) -> list[str]:
        """Before a worker starts: the tamper kinds it must start raised (it ends them once the view is
        normal); motion and loitering, which a new worker must first learn to see, are ended here."""
        carried = []
        for key, data in list(self.active.items()):
            kind = key.split(":", 1)[0]
            if kind == "tamper" and cfg.tamper is not None:
                carried.append(str(data["kind"]))
                continue
            ended = {**data, "active": False}
            if kind == "tamper":
                ended["detail"] = "tamper detection is off in the config"
            self._track(kind, ended)
            self.ctx.emit(cfg.id, f"campus.camera.{kind}", ended, time.time())
        return carried

    def _watch_loss(self) -> None:
        """Video loss is time without a frame, whatever the worker is doing (reading, stuck, or not running
        during its restart backoff): a camera that reboots and is back within `video_loss_s` was never lost."""
        w, cfg = self.worker, self.worker.cfg
        if w.process is not None:
            w.last_seen = max(w.last_seen, w.last_frame.value)
        silent = time.time() - (w.last_seen or w.first_try)
        if silent >= cfg.video_loss_s and w.online is not False:
            w.online = False
            self.ctx.set_online(cfg.id, False, f"video loss: no frame for {silent:.0f} s"
                                + (f" ({w.last_reason})" if w.last_reason else ""))

    def _watch(self, now: float) -> None:
        """A worker that has read nothing for `video_loss_s` since it started or since its last frame is
        stuck (a read that never returns) and is killed; one that ended is restarted with backoff."""
        w, cfg = self.worker, self.worker.cfg
        own = w.last_frame.value
        stuck = time.time() - max(own, w.started_wall)
        alive = w.process.is_alive()
        if alive and stuck < cfg.video_loss_s:
            if own and w.first_frame_s is None:
                w.first_frame_s = own - w.started_wall
            if own and w.online is not True:
                w.online = True
                self.ctx.set_online(cfg.id, True)
                self.ctx.log.info("%s: video", cfg.id)
            if own and now - w.started > RESTART_MAX_S:
                w.backoff = RESTART_MIN_S  # it ran well: the next failure starts the backoff afresh
            return
        self._drain()
        reason = (w.last_reason or "the camera worker stopped") if not alive else f"no frame for {stuck:.0f} s"
        self._kill(reason)
        self.ctx.log.warning("%s: %s; reading again in %.0f s", cfg.id, reason, w.backoff)
        w.restart_at = time.monotonic() + w.backoff
        w.next_probe = 0.0  # is the camera still there? (see _back_early)
        w.backoff = min(w.backoff * 2, RESTART_MAX_S)
        w.restarts += 1

    def _kill(self, why: str) -> None:
        w = self.worker
        process = w.process
        if process is None:
            return
        if process.is_alive():
            process.kill()  # a hung read ignores anything gentler
        process.join(5)
        with contextlib.suppress(Exception):
            w.commands.close()
        with contextlib.suppress(Exception):
            w.out.close()
            w.out.join_thread()
        w.process, w.last_reason = None, w.last_reason or why


def network_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a network camera's URL; None for a file or a local device."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return None


def _load_active(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _save_active(path: Path, active: dict[str, dict[str, Any]]) -> None:
    with contextlib.suppress(OSError):  # a full disk: the events still go out; only a restart forgets them
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".active.tmp")
        tmp.write_text(json.dumps(active))
        tmp.replace(path)


# Loaded once in the fork server, so each worker shares their pages instead of importing them again.
PRELOAD = ["drivers.camera.capture", "drivers.camera.pipeline", "drivers.camera.analytics", "cv2", "numpy"]


def worker_context() -> Any:
    """Workers come from a fork server: a clean process (none of the gateway's threads, sockets or
    locks), started once, with OpenCV and the analytics already imported."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@contextlib.contextmanager
def _main_left_alone() -> Any:
    """Start a worker without it importing the gateway's __main__: multiprocessing re-imports the parent's main
    module in every child (to find the target), which for `python -m gateway.cli` is the whole gateway
    (FastAPI, SQLAlchemy, the drivers): 35-45 MB more in each camera's worker (bench/school_day). The target is
    drivers.camera.capture.run, found without it."""
    main = sys.modules["__main__"]
    spec, path = getattr(main, "__spec__", None), main.__dict__.get("__file__")
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def asdict_or_none(model: BaseModel | None) -> dict[str, Any] | None:
    return model.model_dump() if model is not None else None

