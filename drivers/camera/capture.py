"""The camera worker: a process apart from the gateway's (image work never holds its interpreter lock),
reading the cameras of one `worker` group, each in a thread of its own (serve).

A camera's reader opens the stream with OpenCV's FFmpeg backend (whose timeouts only apply with that API
preference) and grabs every frame as it arrives, so nothing stale queues up. FFmpeg decodes inside grab();
for MJPEG the reader asks for the raw packets instead, decodes only the frames it analyses (about 0.7 ms
each at 640x360, against 0.8 ms for every frame the camera sends) and keeps the camera's own JPEGs for its
pictures. H.264/H.265 must be decoded frame by frame: give such cameras a substream of 5-10 fps. Each
reader tells the parent the time of its last frame through a shared value (the parent's watchdog kills a
worker with a read that never returns) and sends events and snapshots through the worker's queue. A
reader that fails ends with a reason; the parent reads its camera again with backoff.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# One thread each: a camera worker must not take every core of a small box.
os.environ.setdefault("OPENCV_FFMPEG_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass(frozen=True)
class WorkerSettings:
    device: str
    source: str  # a URL (rtsp://, http://), a file, or a local device ("0", "/dev/video0")
    fps: float
    size: tuple[int, int]
    open_timeout_s: float
    read_timeout_s: float
    snapshot_dir: str
    snapshot_every_s: float
    jpeg_quality: int
    loop_file: bool = False
    analytics: dict[str, Any] = field(default_factory=dict)
    clip_fps: float = 2.0
    clip_pre_s: float = 30.0
    rtsp_transport: str = "tcp"


# FFmpeg probes a stream until it has read 5 MB or 5 s of it, which a 5 fps substream never reaches: every
# open took the whole open_timeout_s. The SDP already says the codec (and, in its parameter sets, the size),
# and the decoder learns the rest from the first key frame: probe the least FFmpeg allows (first frame
# 0.8 s after the start on loopback, H.264 and H.265; 1.0-1.2 s with 4 kB or 0.1-0.5 s of probing).
# TCP: RTP over UDP is lost through NATs and firewalls, and OpenCV asks for TCP too unless told otherwise.
RTSP_OPTIONS = "rtsp_transport;{transport}|probesize;32|analyzeduration;0"


def open_capture(settings: WorkerSettings) -> Any:
    """The stream opened with the timeouts and probing a live camera needs (cv2.VideoCapture)."""
    import cv2

    source: str | int = int(settings.source) if settings.source.isdigit() else settings.source
    if isinstance(source, int) or source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    if source.lower().startswith(("rtsp://", "rtsps://")) and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
        # Read by OpenCV at each open; a worker (or `campusgw doctor`) is a process of its own.
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = RTSP_OPTIONS.format(transport=settings.rtsp_transport)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.read_timeout_s * 1000)]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


class SnapshotStore:
    """JPEGs under <dir>/<device>/<YYYYMMDD>/<id>.jpg; the id is what events and the console name."""

    def __init__(self, root: str, device: str, quality: int) -> None:
        self.root = Path(root) / device
        self.device = device
        self.quality = quality
        self._n = 0

    def save(self, frame: Any, at: float, snapshot_id: str | None = None, jpeg: bytes | None = None) -> str:
        """`jpeg`: the camera's own picture of this frame, kept as it came (no second loss, no encoding)."""
        self._n += 1
        day = time.strftime("%Y%m%d", time.gmtime(at))
        snapshot_id = snapshot_id or snapshot_name(self.device, at, self._n)
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        data = jpeg or _jpeg(frame, self.quality)
        if data:
            tmp = folder / f".{snapshot_id}.tmp"
            tmp.write_bytes(data)
            tmp.replace(folder / f"{snapshot_id}.jpg")  # never a half-written file for the console
        return snapshot_id

    def watched_until(self) -> float:
        """Until when someone watches this camera live (the console touches `watching` while it streams)."""
        try:
            return (self.root / WATCHING).stat().st_mtime + LIVE_WINDOW_S
        except OSError:
            return 0.0

    def latest(self, frame: Any, jpeg: bytes | None = None) -> None:
        data = jpeg or _jpeg(frame, self.quality)
        if data:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / ".latest.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.root / "latest.jpg")


class ClipRecorder:
    """The seconds before an alarm, kept as JPEGs at a low rate in a bounded ring, and the clips being
    finished: a clip asked for at an alarm gets the ring's frames, then those that follow for post_s."""

    def __init__(self, root: str, device: str, fps: float, pre_s: float) -> None:
        self.root = Path(root) / device / "clips"
        self.period = 1.0 / fps
        self.ring: deque[tuple[float, bytes]] = deque(maxlen=max(1, int(pre_s * fps)))
        self.open: dict[str, dict[str, Any]] = {}
        self._next = 0.0

    def add(self, jpeg: Callable[[], bytes], at: float) -> list[dict[str, Any]]:
        """Keep this frame if it is due (encoding it only then); returns the clips this frame finished."""
        if at < self._next:
            return []
        self._next = max(self._next + self.period, at)
        frame = (at, jpeg())
        self.ring.append(frame)
        done = []
        for clip_id, clip in list(self.open.items()):
            clip["frames"].append(frame)
            if at >= clip["until"]:
                done.append(self._write(clip_id, self.open.pop(clip_id)))
        return done

    def start(self, clip_id: str, alarm_id: int | None, pre_s: float, post_s: float, at: float) -> None:
        frames = [f for f in self.ring if f[0] >= at - pre_s]
        self.open[clip_id] = {"alarm_id": alarm_id, "alarm_at": at, "until": at + post_s, "frames": frames}

    def flush(self) -> list[dict[str, Any]]:
        """The stream ended: clips get what they have."""
        done = [self._write(clip_id, clip) for clip_id, clip in self.open.items()]
        self.open.clear()
        return done

    def _write(self, clip_id: str, clip: dict[str, Any]) -> dict[str, Any]:
        folder = self.root / clip_id
        folder.mkdir(parents=True, exist_ok=True)
        times = []
        for n, (at, data) in enumerate(clip["frames"]):
            (folder / f"{n:04d}.jpg").write_bytes(data)
            times.append(round(at, 3))
        manifest = {"clip_id": clip_id, "alarm_id": clip["alarm_id"], "alarm_at": clip["alarm_at"], "times": times}
        (folder / "clip.json").write_text(json.dumps(manifest))
        before = sum(1 for t in times if t < clip["alarm_at"])
        return {"clip_id": clip_id, "alarm_id": clip["alarm_id"], "frames": len(times), "before": before,
                "first_at": times[0] if times else None, "last_at": times[-1] if times else None}


def snapshot_name(device: str, at: float, n: int) -> str:
    """<device>-<UTC time to the ms>-<n>: unique per camera, sorts by time, names its day folder."""
    return f"{device}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(at))}-{int(at * 1000) % 1000:03d}-{n}"


def run(settings: WorkerSettings, last_frame: Any, out: Any, commands: Any = None) -> None:
    """One camera read until its stream fails, then the reason on `out` as ("ended", {"reason": ...})."""
    import cv2

    cv2.setNumThreads(1)
    try:
        reason = _capture(settings, last_frame, out, commands)
    except Exception as exc:  # the parent logs it and reads the camera again
        reason = f"{type(exc).__name__}: {exc}"
    out.put(("ended", {"reason": reason}))


class _Tagged:
    """A camera's view of the worker's shared queue: what it puts goes out as (device, kind, data)."""

    def __init__(self, out: Any, device: str) -> None:
        self.out, self.device = out, device

    def put(self, item: tuple[str, dict[str, Any]]) -> None:
        self.out.put((self.device, *item))


def serve(last_frames: dict[str, Any], out: Any, commands: Any) -> None:
    """A worker process's main: the cameras of one `worker` group, each read in a thread of its own (OpenCV
    decodes and analyses outside the interpreter lock), so the group has one Python, one OpenCV and one
    set of imported pages instead of one per camera (21-25 MB of each worker was that, bench/school_day).
    ("start", settings) reads a camera (again), ("clip" | "relearn", device, args) goes to its thread; every
    message out is (device, kind, data). Runs until the parent kills it (its watchdog, or the gateway's stop)."""
    import cv2

    cv2.setNumThreads(1)
    inboxes: dict[str, queue.SimpleQueue[tuple[str, dict[str, Any]]]] = {}
    while True:
        message = commands.get()
        if message[0] == "start":
            settings: WorkerSettings = message[1]
            inbox: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
            inboxes[settings.device] = inbox
            threading.Thread(target=run, args=(settings, last_frames[settings.device],
                                               _Tagged(out, settings.device), inbox),
                             name=f"camera-{settings.device}", daemon=True).start()
        elif message[1] in inboxes:
            inboxes[message[1]].put((message[0], message[2]))


def _capture(settings: WorkerSettings, last_frame: Any, out: Any, commands: Any) -> str:
    import cv2

    from drivers.camera.pipeline import Pipeline

    cap = open_capture(settings)
    if not cap.isOpened():
        return (f"cannot open {redact(settings.source)}: check the address and port, the user and password, "
                "and that the substream is enabled on the camera")
    store = SnapshotStore(settings.snapshot_dir, settings.device, settings.jpeg_quality)
    clips = ClipRecorder(settings.snapshot_dir, settings.device, settings.clip_fps, settings.clip_pre_s)
    pipeline = Pipeline(settings.analytics, settings.size)
    view_file = Path(settings.snapshot_dir) / settings.device / "tamper-view.npz"
    if pipeline.tamper is not None:
        _restore_view(pipeline.tamper, view_file)
    next_view_save = 0.0
    width, height = settings.size
    period = 1.0 / settings.fps
    next_analysis = 0.0
    next_latest = next_watch_check = live_until = 0.0
    grabbed = analysed = 0
    # A file is read as fast as it decodes: play it at its own rate instead, as a camera would send it.
    is_file = "://" not in settings.source and not settings.source.isdigit() and \
        not settings.source.startswith("/dev/video")
    file_period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 25.0) if is_file else 0.0
    timed = "://" in settings.source  # FFmpeg's read timeout applies to network streams only
    next_grab = time.monotonic()
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    raw = fourcc == b"MJPG" and cap.set(cv2.CAP_PROP_FORMAT, -1)  # JPEG packets out of grab(), undecoded
    out.put(("opened", {"backend": cap.getBackendName(), "codec": fourcc.decode("ascii", "replace").strip("\x00 "),
                        "size": (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))),
                        "decode_on_demand": raw}))
    try:
        while True:
            if file_period:
                next_grab += file_period
                time.sleep(max(0.0, next_grab - time.monotonic()))
            began = time.monotonic()
            if not cap.grab():
                if settings.loop_file and grabbed:  # a test or demo file: play it again
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                return "the stream ended or a read timed out"
            if timed and time.monotonic() - began >= settings.read_timeout_s - TIMEOUT_SLACK_S:
                # OpenCV's grab() answers True once or twice after its read timeout interrupted FFmpeg (frames
                # the decoder still held): no frame arrived, so the stream is stalled, not alive.
                return f"no frame for {settings.read_timeout_s:g} s (read timeout)"
            now = time.time()
            last_frame.value = now
            grabbed += 1
            if now < next_analysis:
                continue
            next_analysis = max(next_analysis + period, now)  # never catch up on missed analyses
            ok, frame = cap.retrieve()
            packet: bytes | None = None  # the camera's own JPEG of this frame (MJPEG), kept for pictures
            if raw and ok and frame is not None:
                packet = frame.tobytes()
                frame = cv2.imdecode(frame, cv2.IMREAD_COLOR)
            if not ok or frame is None:
                continue
            if (frame.shape[1], frame.shape[0]) != (width, height):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                packet = None  # pictures at the configured size, as the substream would send them
            analysed += 1
            for kind, data in pipeline.update(frame, time.monotonic(), now):  # holds: monotonic; schedules: wall
                data["snapshot_id"] = store.save(frame, now, jpeg=packet)
                out.put((kind, {**data, "at": now}))
            for clip in clips.add(partial(_jpeg, frame, settings.jpeg_quality, packet), now):
                out.put(("clip", {**clip, "at": now}))
            while commands is not None and not commands.empty():
                name, args = commands.get_nowait()
                if name == "clip":  # the alarm's picture now, and its clip when post_s has passed
                    clips.start(args["clip_id"], args.get("alarm_id"), args["pre_s"], args["post_s"], now)
                    store.save(frame, now, args["snapshot_id"], jpeg=packet)
                elif name == "relearn" and pipeline.tamper is not None:  # re-aimed on purpose
                    pipeline.tamper.relearn()
                    view_file.unlink(missing_ok=True)
                    next_view_save = 0.0
            if pipeline.tamper is not None and now >= next_view_save and not pipeline.tamper.active:
                next_view_save = now + VIEW_SAVE_S if _save_view(pipeline.tamper, view_file) else now + 1
            if now >= next_watch_check:  # someone watching live: every analysed frame, else one now and then
                live_until, next_watch_check = store.watched_until(), now + 1.0
            if now >= next_latest or now < live_until:
                store.latest(frame, packet)
            if now >= next_latest:
                next_latest = now + settings.snapshot_every_s
                out.put(("stats", {"grabbed": grabbed, "analysed": analysed, "at": now}))
    finally:
        cap.release()
        for clip in clips.flush():
            out.put(("clip", {**clip, "at": time.time()}))


VIEW_SAVE_S = 60.0
WATCHING = "watching"  # touched by the console while it streams this camera live (gateway.console.pages.cameras)
LIVE_WINDOW_S = 5.0  # a touch keeps every analysed frame coming this long
TIMEOUT_SLACK_S = 0.05  # a grab that lasted the read timeout (less scheduling jitter) was interrupted


def _save_view(tamper: Any, path: Path) -> bool:
    """Keep what tamper detection has learnt of the view, so a restarted worker compares against it rather
    than learning whatever the camera shows after an outage. False while it is still learning."""
    import numpy as np

    learnt = tamper.learnt_view()
    if learnt is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tamper-view.tmp.npz")
    np.savez(tmp, reference=learnt["reference"], baseline=learnt["baseline"], shape=np.array(learnt["shape"]))
    tmp.replace(path)
    return True


def _restore_view(tamper: Any, path: Path) -> None:
    import numpy as np

    try:
        with np.load(path) as data:
            tamper.restore_view({"reference": data["reference"], "baseline": float(data["baseline"]),
                                 "shape": data["shape"].tolist()})
    except (OSError, KeyError, ValueError):
        pass  # none yet, or unreadable: learn the view afresh


def _jpeg(frame: Any, quality: int, packet: bytes | None = None) -> bytes:
    """The frame as a JPEG: the camera's own (`packet`) if there is one, else encoded here."""
    if packet:
        return packet
    import cv2

    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def redact(source: str) -> str:
    """A URL without its password, for logs and events."""
    parts = urlsplit(source)
    if not parts.password:
        return source
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rsplit('@', 1)[1]}"))
