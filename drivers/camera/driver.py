"""The camera driver: the cameras of one `worker` group read in one worker process (a thread each, in
drivers.camera.capture.serve), and a watchdog over each camera.

The watchdog lives here, outside the reader: no frame for `video_loss_s` -> the camera is offline (video
loss, a device-offline alarm). A camera whose stream ended is read again with exponential backoff; one
whose read never returns (it cannot be interrupted from inside) gets its worker process killed, and the
other cameras of the group are read again at once, well within their own video_loss_s. The first frame
after that brings a camera back online (the restore). Events a camera finds (motion, tamper) are emitted
with the id of the snapshot taken of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from drivers.base import CommandResult, Driver, DriverContext
from drivers.camera.capture import WorkerSettings, redact, serve, snapshot_name
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
class Camera:
    cfg: CameraConfig
    active_file: Path
    # Conditions (motion, tamper, loitering) the camera has reported active and not yet ended: kept on disk,
    # so a reader started after a crash, a video loss or a gateway restart ends or keeps them.
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    address: tuple[str, int] | None = None
    reading: bool = False  # a thread of the worker process reads it
    last_frame: Any = None  # wall time of its last frame, shared with the worker process
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
    last_seen: float = 0.0  # wall time of the last frame any reader of it read
    first_try: float = 0.0
    started_wall: float = 0.0
    next_probe: float = 0.0
    codec: str | None = None  # as the stream reports it: h264, hevc, MJPG
    stream_size: tuple[int, ...] | None = None
    first_frame_s: float | None = None  # the current reader: from its start to its first frame
    port_closed: bool = False  # a probe found the camera's port closed during this backoff


class CameraDriver(Driver):
    name = "opencv"
    config_model = CameraConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self.cameras: dict[str, Camera] = {}
        for device in devices:
            assert isinstance(device, CameraConfig)
            active_file = ctx.data_dir / "snapshots" / device.id / "active.json"
            self.cameras[device.id] = Camera(device, active_file, _load_active(active_file),
                                             network_address(device.url))
        self.group = next(iter(self.cameras.values())).cfg.worker
        self._mp = worker_context()
        self._stop = asyncio.Event()
        self._clips = 0
        self._process: Any = None
        self._out: Any = None
        self._commands: Any = None
        self.process_starts = 0

    @classmethod
    def group_key(cls, device: DeviceConfig) -> str:
        assert isinstance(device, CameraConfig)
        return device.worker

    async def start(self) -> None:
        while not self._stop.is_set():
            self.ctx.heartbeat()
            now = time.monotonic()
            for cam in self.cameras.values():
                if not cam.reading and (now >= cam.restart_at or await self._back_early(cam, now)):
                    self._read(cam)
            self._drain()
            for cam in self.cameras.values():
                self._watch_loss(cam)
            if self._process is not None:
                self._watch(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WATCH_S)

    async def _back_early(self, cam: Camera, now: float) -> bool:
        """During the restart backoff (up to a minute), knock on the camera's port now and then: a port
        that refused and now answers is a camera back from a power cut, read at once rather than at the end
        of the backoff. A port that stayed open (a wrong path, a stalled camera) waits out the backoff."""
        if cam.address is None or now < cam.next_probe:
            return False
        cam.next_probe = now + PROBE_S
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*cam.address), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            cam.port_closed = True
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        if cam.port_closed:
            self.ctx.log.info("%s: the camera answers again: reading now", cam.cfg.id)
            return True
        return False

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._kill)

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        """`clip`: the alarm's snapshot now, and a clip of clip_pre_s before and clip_post_s after, named in
        the result so the alarm can point at them before they are finished."""
        cam = self.cameras.get(device_id)
        if cam is None:
            return await super().handle_command(device_id, name, args, issued_by)
        cfg = cam.cfg
        if name == "relearn":  # after the camera was re-aimed or refocused on purpose
            if not cam.reading:
                return CommandResult(False, f"{cfg.id} has no video now: nothing to learn from")
            self._commands.put(("relearn", cfg.id, {}))
            self.ctx.log.info("%s: tamper detection learns the view again (%s)", cfg.id, issued_by)
            return CommandResult(True, "tamper detection learns the view again from the next frames")
        if name != "clip":
            return await super().handle_command(device_id, name, args, issued_by)
        if not cam.reading or not cam.online:
            return CommandResult(False, f"{cfg.id} has no video now: no snapshot or clip")
        at = time.time()
        self._clips += 1
        snapshot_id = snapshot_name(cfg.id, at, 10_000 + self._clips)  # apart from the worker's own numbers
        clip_id = f"{snapshot_id}-clip"
        pre_s = min(float(args.get("pre_s", cfg.clip_pre_s)), cfg.clip_pre_s)
        post_s = min(float(args.get("post_s", cfg.clip_post_s)), cfg.clip_post_s)
        self._commands.put(("clip", cfg.id, {"clip_id": clip_id, "snapshot_id": snapshot_id,
                                             "alarm_id": args.get("alarm_id"), "pre_s": pre_s, "post_s": post_s}))
        return CommandResult(True, f"snapshot, and a clip of {pre_s:g} s before and {post_s:g} s after",
                             data={"snapshot_id": snapshot_id, "clip_id": clip_id})

    def health(self) -> dict[str, Any]:
        return {"pid": self._process.pid if self._process is not None else None,
                "worker_starts": self.process_starts, "cameras": {
                    cam.cfg.id: {"online": cam.online, "restarts": cam.restarts, "fps": round(cam.fps, 2),
                                 "events": cam.events, "last_reason": cam.last_reason, "codec": cam.codec,
                                 "stream_size": cam.stream_size, "port_closed": cam.port_closed,
                                 "first_frame_s": None if cam.first_frame_s is None else round(cam.first_frame_s, 2)}
                    for cam in self.cameras.values()}}

    # -- the worker process and its cameras ------------------------------------------

    def _spawn(self) -> None:
        """The group's worker process, with a frame clock for each of its cameras."""
        last_frames = {cid: self._mp.Value("d", 0.0, lock=False) for cid in self.cameras}
        for cid, cam in self.cameras.items():
            cam.last_frame = last_frames[cid]
        self._out = self._mp.Queue()
        self._commands = self._mp.Queue()
        self._process = self._mp.Process(target=serve, args=(last_frames, self._out, self._commands), daemon=True,
                                         name=f"cameras-{self.group}")
        with _main_left_alone():
            self._process.start()
        self.process_starts += 1
        self.ctx.log.info("camera worker %d for %s", self._process.pid, ", ".join(self.cameras))

    def _read(self, cam: Camera) -> None:
        """Start (again) reading one camera in the worker process."""
        if self._process is None:
            self._spawn()
        cfg = cam.cfg
        settings = WorkerSettings(
            device=cfg.id, source=cfg.source(), fps=cfg.analysis_fps(), size=(cfg.width, cfg.height),
            open_timeout_s=cfg.open_timeout_s, read_timeout_s=cfg.read_timeout_s,
            snapshot_dir=str(self.ctx.data_dir / "snapshots"), snapshot_every_s=cfg.snapshot_every_s,
            jpeg_quality=cfg.jpeg_quality, loop_file=cfg.loop_file, clip_fps=cfg.clip_fps, clip_pre_s=cfg.clip_pre_s,
            rtsp_transport=cfg.rtsp_transport,
            analytics={"motion": asdict_or_none(cfg.motion), "tamper": asdict_or_none(cfg.tamper),
                       "loitering": asdict_or_none(cfg.loitering), "timezone": str(self.ctx.tz)})
        settings.analytics["carried"] = {"tamper": self._carry_over(cam)}
        cam.last_reason = None
        cam.port_closed = False
        cam.first_frame_s = None
        cam.last_frame.value = 0.0  # its previous reader ended: this clock is the new one's
        self._commands.put(("start", settings))
        cam.reading = True
        cam.started, cam.started_wall = time.monotonic(), time.time()
        cam.first_try = cam.first_try or time.time()
        self.ctx.log.info("%s: worker %d reading %s", cfg.id, self._process.pid, redact(cfg.url))

    def _drain(self) -> None:
        while self._out is not None:
            try:
                device, kind, data = self._out.get_nowait()
            except (queue.Empty, EOFError, OSError, ValueError):
                return
            cam = self.cameras.get(device)
            if cam is not None:
                self._handle(cam, kind, data)

    def _handle(self, cam: Camera, kind: str, data: dict[str, Any]) -> None:
        if kind == "ended":
            self._failed(cam, data["reason"])
        elif kind == "opened":
            cam.codec, cam.stream_size = data["codec"], tuple(data["size"])
        elif kind == "stats":
            cam.fps = frame_rate(cam.last_stats, data["at"], data["analysed"], cam.fps)
            cam.last_stats = (data["at"], data["analysed"])
            cam.frames_analysed = data["analysed"]
            self.ctx.set_state(cam.cfg.id, {"online": bool(cam.online), "fps": round(cam.fps, 2),
                                            "latest": f"{cam.cfg.id}/latest.jpg", "at": data["at"]})
        elif kind == "clip":
            at = data.pop("at")
            self.ctx.emit(cam.cfg.id, "campus.camera.clip", data, at)
        elif kind in ("motion", "tamper", "loitering"):
            cam.events += 1
            at = data.pop("at")
            self._track(cam, kind, data)
            self.ctx.emit(cam.cfg.id, f"campus.camera.{kind}", data, at)

    def _failed(self, cam: Camera, reason: str) -> None:
        """Its reader ended or was killed: read it again after the backoff."""
        if not cam.reading:
            return
        cam.reading = False
        cam.last_reason = cam.last_reason or reason
        self.ctx.log.warning("%s: %s; reading again in %.0f s", cam.cfg.id, reason, cam.backoff)
        cam.restart_at = time.monotonic() + cam.backoff
        cam.next_probe = 0.0  # is the camera still there? (see _back_early)
        cam.backoff = min(cam.backoff * 2, RESTART_MAX_S)
        cam.restarts += 1

    def _track(self, cam: Camera, kind: str, data: dict[str, Any]) -> None:
        key = f"{kind}:{data.get('zone') or data.get('kind')}"
        if data["active"]:
            cam.active[key] = {k: v for k, v in data.items() if k in ("zone", "kind")}
        elif cam.active.pop(key, None) is None:
            return
        _save_active(cam.active_file, cam.active)

    def _carry_over(self, cam: Camera) -> list[str]:
        """Before a reader starts: the tamper kinds it must start raised (it ends them once the view is
        normal); motion and loitering, which a new reader must first learn to see, are ended here."""
        cfg = cam.cfg
        carried = []
        for key, data in list(cam.active.items()):
            kind = key.split(":", 1)[0]
            if kind == "tamper" and cfg.tamper is not None:
                carried.append(str(data["kind"]))
                continue
            ended = {**data, "active": False}
            if kind == "tamper":
                ended["detail"] = "tamper detection is off in the config"
            self._track(cam, kind, ended)
            self.ctx.emit(cfg.id, f"campus.camera.{kind}", ended, time.time())
        return carried

    def _watch_loss(self, cam: Camera) -> None:
        """Video loss is time without a frame, whatever its reader is doing (reading, stuck, or not running
        during its restart backoff): a camera that reboots and is back within `video_loss_s` was never lost."""
        cfg = cam.cfg
        if cam.last_frame is not None:
            cam.last_seen = max(cam.last_seen, cam.last_frame.value)
        silent = time.time() - (cam.last_seen or cam.first_try)
        if silent >= cfg.video_loss_s and cam.online is not False:
            cam.online = False
            self.ctx.set_online(cfg.id, False, f"video loss: no frame for {silent:.0f} s"
                                + (f" ({cam.last_reason})" if cam.last_reason else ""))

    def _watch(self, now: float) -> None:
        """A camera that has read nothing for `video_loss_s` since its reader started or since its last frame
        is stuck in a read that never returns: the worker process is killed for it, and its other cameras
        are read again at once. A worker that died takes its cameras' readers with it (backoff for each)."""
        if not self._process.is_alive():
            self._drain()
            self._kill()
            for cam in self.cameras.values():
                self._failed(cam, "the camera worker stopped")
            return
        stuck_cams = []
        for cam in self.cameras.values():
            if not cam.reading:
                continue
            own = cam.last_frame.value
            stuck = time.time() - max(own, cam.started_wall)
            if stuck >= cam.cfg.video_loss_s:
                stuck_cams.append((cam, f"no frame for {stuck:.0f} s"))
                continue
            if own and cam.first_frame_s is None:
                cam.first_frame_s = own - cam.started_wall
            if own and cam.online is not True:
                cam.online = True
                self.ctx.set_online(cam.cfg.id, True)
                self.ctx.log.info("%s: video", cam.cfg.id)
            if own and now - cam.started > RESTART_MAX_S:
                cam.backoff = RESTART_MIN_S  # it ran well: the next failure starts the backoff afresh
        if not stuck_cams:
            return
        self._drain()
        self._kill()
        stuck_ids = {cam.cfg.id for cam, _ in stuck_cams}
        for cam, reason in stuck_cams:
            self._failed(cam, reason)
        for cam in self.cameras.values():
            if cam.reading and cam.cfg.id not in stuck_ids:  # read again now, in the new worker
                cam.reading = False
                cam.restarts += 1
                cam.restart_at = 0.0
                self.ctx.log.info("%s: reading again: its worker was restarted for %s", cam.cfg.id,
                                  ", ".join(sorted(stuck_ids)))

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.is_alive():
            process.kill()  # a hung read ignores anything gentler
        process.join(5)
        for channel in (self._commands, self._out):
            with contextlib.suppress(Exception):
                channel.close()
        with contextlib.suppress(Exception):
            self._out.join_thread()
        self._process = self._out = self._commands = None


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
    drivers.camera.capture.serve, found without it."""
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

