"""The camera worker: one process per camera, so image work never holds the gateway's interpreter lock.

It opens the stream with OpenCV's FFmpeg backend (whose timeouts only apply with that API preference),
grabs every frame as it arrives, so nothing stale queues up, and decodes only the latest one at the
analysis rate. It tells the parent the time of the last frame through a shared value (the parent's
watchdog kills a worker whose reads never return) and sends events and snapshots through a queue.
Any failure ends the worker with a reason; the parent restarts it with backoff.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _open(settings: WorkerSettings) -> Any:
    import cv2

    source: str | int = int(settings.source) if settings.source.isdigit() else settings.source
    if isinstance(source, int) or source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
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

    def save(self, frame: Any, at: float) -> str:
        import cv2

        self._n += 1
        day = time.strftime("%Y%m%d", time.gmtime(at))
        snapshot_id = f"{self.device}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(at))}-{int(at * 1000) % 1000:03d}" \
                      f"-{self._n}"
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            tmp = folder / f".{snapshot_id}.tmp"
            tmp.write_bytes(data.tobytes())
            tmp.replace(folder / f"{snapshot_id}.jpg")  # never a half-written file for the console
        return snapshot_id

    def latest(self, frame: Any) -> None:
        import cv2

        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / ".latest.tmp"
            tmp.write_bytes(data.tobytes())
            tmp.replace(self.root / "latest.jpg")


def run(settings: WorkerSettings, last_frame: Any, out: Any) -> None:
    """The worker's main: runs until the stream fails, then exits with the reason on `out`."""
    import cv2

    cv2.setNumThreads(1)
    try:
        reason = _capture(settings, last_frame, out)
    except Exception as exc:  # the parent logs it and restarts the worker
        reason = f"{type(exc).__name__}: {exc}"
    out.put(("ended", {"reason": reason}))


def _capture(settings: WorkerSettings, last_frame: Any, out: Any) -> str:
    import cv2

    from drivers.camera.pipeline import Pipeline

    cap = _open(settings)
    if not cap.isOpened():
        return f"cannot open {redact(settings.source)}"
    store = SnapshotStore(settings.snapshot_dir, settings.device, settings.jpeg_quality)
    pipeline = Pipeline(settings.analytics, settings.size)
    width, height = settings.size
    period = 1.0 / settings.fps
    next_analysis = 0.0
    next_latest = 0.0
    grabbed = analysed = 0
    out.put(("opened", {"backend": cap.getBackendName()}))
    try:
        while True:
            if not cap.grab():
                if settings.loop_file and grabbed:  # a test or demo file: play it again
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                return "the stream ended or a read timed out"
            now = time.time()
            last_frame.value = now
            grabbed += 1
            if now < next_analysis:
                continue
            next_analysis = max(next_analysis + period, now)  # never catch up on missed analyses
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                continue
            if (frame.shape[1], frame.shape[0]) != (width, height):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            analysed += 1
            for kind, data in pipeline.update(frame, time.monotonic()):  # hold times must not follow clock steps
                data["snapshot_id"] = store.save(frame, now)
                out.put((kind, {**data, "at": now}))
            if now >= next_latest:
                store.latest(frame)
                next_latest = now + settings.snapshot_every_s
                out.put(("stats", {"grabbed": grabbed, "analysed": analysed, "at": now}))
    finally:
        cap.release()


def redact(source: str) -> str:
    """A URL without its password, for logs and events."""
    if "://" in source and "@" in source.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = source.split("://", 1)
        credentials, host = rest.split("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return source
