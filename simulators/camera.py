"""An IP camera that serves MJPEG over HTTP on loopback, with a synthetic scene and scripted events.

The camera driver's tests need a camera whose picture they control: a person walking in, a covered lens,
a defocused or turned camera, the lights going off, a stream that hangs or a camera that reboots. Real
cameras cannot be scripted, so this one draws its scene: a static, textured background (deterministic from
`seed`, with enough structure for feature matching and sharpness measures), an OSD clock in the top-left
corner (frames differ slightly even when nothing happens, as on a real camera), and whatever the test asked
for. `/video.mjpg` is `multipart/x-mixed-replace` with a Content-Type and Content-Length per part, as IP
cameras send it (FFmpeg's mpjpeg demuxer, so `cv2.VideoCapture(url, cv2.CAP_FFMPEG)`, reads it);
`/snapshot.jpg` is one JPEG, the first frame drawn after the request (so it shows every event called before).

One producer thread draws and encodes each frame once, at `fps`, and every client gets the newest one
(a slow client skips frames, as with a real camera). A test drives it with plain calls from any thread:
person_enter(0.5, 0.9), walk_through(0.9, 3), cover(True), blur(True), shift(0.1, 0), lights(0.4),
stall(True), close_connections(), refuse(True), play("clip.avi").
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import cv2
import numpy as np

log = logging.getLogger("campusgw.sim.camera")

BOUNDARY = "campusgwframe"
SCRIPTS = ("walk", "loiter", "cover", "none")
PERSON_HEIGHT = 1 / 3  # of the frame height
OSD_FONT = cv2.FONT_HERSHEY_SIMPLEX
OSD_SCALE = 0.45
Image = np.ndarray[Any, Any]  # BGR, uint8


@dataclass(frozen=True)
class _Person:
    """Feet position (normalised to the frame) as a linear motion from (x0, y0) at t0, until `until`."""

    x0: float
    y0: float
    t0: float
    vx: float = 0.0
    vy: float = 0.0
    until: float | None = None  # None: keeps going (vx, vy) for ever; else stands at the end point
    leave_at_end: bool = False  # walk_through: gone once it reached the end point

    def at(self, t: float) -> tuple[float, float, bool]:
        """(x, y, walking) at time t."""
        end = t if self.until is None else min(t, self.until)
        dt = max(end - self.t0, 0.0)
        walking = (self.vx != 0 or self.vy != 0) and (self.until is None or t < self.until)
        return self.x0 + self.vx * dt, self.y0 + self.vy * dt, walking

    def gone(self, t: float, margin: float) -> bool:
        if self.leave_at_end and self.until is not None:
            return t >= self.until
        x, _, _ = self.at(t)
        return self.until is None and ((x < -margin and self.vx < 0) or (x > 1 + margin and self.vx > 0))


@dataclass(frozen=True)
class _State:
    """What the next frame shows; replaced whole under the lock, so the producer reads a consistent one."""

    person: _Person | None = None
    cover: bool = False
    blur: float = 0.0  # sigma; 0 = sharp
    dx: float = 0.0
    dy: float = 0.0
    degrees: float = 0.0
    light: float = 1.0
    grey: bool = False


class CameraSimulator:
    name = "camera"

    def __init__(self, port: int = 0, fps: float = 10, size: tuple[int, int] = (640, 360), seed: int = 1,
                 jpeg_quality: int = 80, *, osd: bool = True, host: str = "127.0.0.1") -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.port = port
        self.host = host
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.jpeg_quality = jpeg_quality
        self.osd = osd
        self.frames_sent = 0  # frames produced (encoded and handed to the clients)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._state = _State()
        self._stalled = False
        self._refusing = False
        self._stopping = threading.Event()
        self._generation = 0  # bumped by close_connections(): older connections end
        self._connections: set[socket.socket] = set()
        self._clients = 0
        self._started = 0  # renders begun (numbers the frames)
        self._published = -1  # number of the newest published frame
        self._jpeg = b""
        self._play_request: tuple[Any, str | None, bool] | None = None  # (capture, path, loop) for the producer
        self._player: Any = None
        self._play_path: str | None = None
        self._play_loop = True
        self._play_last: Image | None = None
        self._noise = np.random.default_rng(seed + 1)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        w, h = self.size
        self._canvas = _background(2 * w, 2 * h, seed)  # the world; the view is its middle, unless shifted
        self._dark = _dark_frame(w, h)
        self._osd_box = self._measure_osd()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> int:
        """Start serving; returns the TCP port (chosen by the OS when 0)."""
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = int(self._server.server_address[1])
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="sim-camera-http", daemon=True),
                         threading.Thread(target=self._produce, name="sim-camera-frames", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self.port

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        self.close_connections()
        for thread in self._threads:
            thread.join(10)
        if self._server is not None:
            self._server.server_close()
            self._server = None
        with self._lock:
            for cap in (self._player, self._play_request[0] if self._play_request else None):
                if cap is not None:
                    cap.release()
            self._player = self._play_request = None

    @property
    def url(self) -> str:
        return f"http://{self._url_host}:{self.port}/video.mjpg"

    @property
    def snapshot_url(self) -> str:
        return f"http://{self._url_host}:{self.port}/snapshot.jpg"

    @property
    def _url_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    @property
    def clients(self) -> int:
        """Open MJPEG streams."""
        with self._lock:
            return self._clients

    @property
    def osd_box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the OSD clock, for masking it out when comparing frames."""
        return self._osd_box if self.osd else (0, 0, 0, 0)

    # -- scripted events (any thread) -----------------------------------------------------

    def person_enter(self, x: float, y: float, speed: float = 0.0) -> None:
        """A person appears with the feet at (x, y) (0..1 of the frame), standing, or walking sideways at
        `speed` frame widths a second (negative: leftwards); a walker is gone once off the frame."""
        with self._lock:
            self._set(person=_Person(x, y, time.monotonic(), vx=speed))

    def person_move_to(self, x: float, y: float, seconds: float) -> None:
        """The person walks in a straight line to (x, y), arriving after `seconds`, and stands there."""
        with self._lock:
            person = self._state.person
            if person is None:
                raise RuntimeError("no person in the scene: call person_enter() first")
            now = time.monotonic()
            x0, y0, _ = person.at(now)
            if seconds <= 0:
                self._set(person=_Person(x, y, now))
            else:
                self._set(person=_Person(x0, y0, now, (x - x0) / seconds, (y - y0) / seconds, now + seconds))

    def person_leave(self) -> None:
        with self._lock:
            self._set(person=None)

    def walk_through(self, y: float, seconds: float) -> None:
        """A person enters on the left and leaves on the right, feet at height y, over `seconds`."""
        margin = self._person_margin()
        now = time.monotonic()
        with self._lock:
            self._set(person=_Person(-margin, y, now, (1 + 2 * margin) / max(seconds, 1e-3), 0.0,
                                     now + seconds, leave_at_end=True))

    def cover(self, on: bool = True) -> None:
        """The lens covered by a hand or a cloth: a nearly uniform dark frame with a little sensor noise."""
        with self._lock:
            self._set(cover=on)

    def blur(self, on: bool = True, sigma: float = 6.0) -> None:
        """Defocus: a Gaussian blur of the whole picture (not the OSD, which the camera draws afterwards)."""
        with self._lock:
            self._set(blur=sigma if on else 0.0)

    def shift(self, dx: float, dy: float) -> None:
        """The camera turned: the scene appears moved by dx frame widths right and dy frame heights down
        (up to half a frame stays within the drawn scene); shift(0, 0) puts it back."""
        with self._lock:
            self._set(dx=dx, dy=dy)

    def rotate(self, degrees: float) -> None:
        """The camera rolled about its axis: the scene rotated anticlockwise about the frame centre
        (cv2.getRotationMatrix2D's sense); rotate(0) puts it back."""
        with self._lock:
            self._set(degrees=degrees)

    def lights(self, level: float, grey: bool = False) -> None:
        """Whole-frame brightness times `level` at once (0.4: lights off); grey=True also drops the colour,
        as a camera switching to IR night mode does."""
        with self._lock:
            self._set(light=level, grey=grey)

    def stall(self, on: bool = True) -> None:
        """A hung camera: connections stay open but no frame comes (snapshots hang too). Once this returns,
        no new frame is produced; a client may still get the one frame it was already being sent."""
        with self._lock:
            self._stalled = on

    def close_connections(self) -> None:
        """The camera reboots: every client connection is dropped at once; new connections work."""
        with self._cond:
            self._generation += 1
            connections = list(self._connections)
            self._cond.notify_all()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def refuse(self, on: bool = True) -> None:
        """While on, every new request is answered 503 and closed (a camera still booting)."""
        self._refusing = on

    def play(self, path: str | None, loop: bool = True) -> None:
        """Serve the frames of a video file (read with OpenCV, resized to `size`, one per frame at `fps`)
        instead of the synthetic scene; past its end it loops, or (loop=False) the last frame stays.
        play(None) goes back to the synthetic scene. The events apply to the file's frames too."""
        cap = None
        if path is not None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened() or not cap.read()[0]:
                cap.release()
                raise ValueError(f"cannot read video file {path!r}")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        with self._lock:
            old = self._play_request
            self._play_request = (cap, path, loop)
        if old is not None and old[0] is not None:
            old[0].release()

    def run_script(self, name: str) -> None:
        """Repeat one scenario until stop(), for an installer trying the detections: `walk` a person walks
        through every 30 s, `loiter` one walks in and stands for 60 s every 2 minutes, `cover` the lens is
        covered for 20 s every minute, `none` nothing. The first one starts after 3 s."""
        if name not in SCRIPTS:
            raise ValueError(f"unknown script {name!r}: one of {', '.join(SCRIPTS)}")
        if name != "none":
            thread = threading.Thread(target=self._script, args=(name,), name="sim-camera-script", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _script(self, name: str) -> None:
        period = {"walk": 30.0, "loiter": 120.0, "cover": 60.0}[name]
        wait = self._stopping.wait
        if wait(3.0):
            return
        while True:
            began = time.monotonic()
            if name == "walk":
                log.info("script: a person walks through (7 s)")
                self.walk_through(0.85, 7.0)
            elif name == "cover":
                log.info("script: lens covered for 20 s")
                self.cover(True)
                if wait(20.0):
                    return
                self.cover(False)
                log.info("script: lens uncovered")
            else:
                log.info("script: a person walks in and stands for 60 s")
                self.person_enter(-self._person_margin(), 0.85)
                self.person_move_to(0.45, 0.85, 4.0)
                if wait(4.0 + 60.0):
                    return
                log.info("script: the person walks out")
                self.person_move_to(1 + self._person_margin(), 0.85, 4.0)
                if wait(4.0):
                    return
                self.person_leave()
            if wait(max(began + period - time.monotonic(), 0.0)):
                return

    def _set(self, **changes: Any) -> None:
        self._state = replace(self._state, **changes)  # caller holds the lock

    def _person_margin(self) -> float:
        """Half the person's width, as a fraction of the frame width, plus a little: fully out of view."""
        w, h = self.size
        return PERSON_HEIGHT * h * 0.25 / w + 0.01

    # -- the producer ----------------------------------------------------------------------

    def _produce(self) -> None:
        period = 1.0 / self.fps
        due = time.monotonic()
        while not self._stopping.is_set():
            delay = due - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
                continue
            due += period
            if due < time.monotonic():  # fell behind (a slow machine): no burst to catch up
                due = time.monotonic() + period
            try:
                self._produce_one()
            except Exception:  # one bad frame (e.g. a file that failed to decode) must not kill the camera
                log.exception("camera simulator: frame failed")

    def _produce_one(self) -> None:
        old_player = None
        with self._lock:
            if self._stalled:
                return
            if self._play_request is not None:
                old_player = self._player
                self._player, self._play_path, self._play_loop = self._play_request
                self._play_request = None
                self._play_last = None
            state, number, now = self._state, self._started, time.monotonic()
            self._started += 1
            if state.person is not None and state.person.gone(now, self._person_margin()):
                self._set(person=None)
                state = self._state
            player, loop = self._player, self._play_loop
        if old_player is not None:
            old_player.release()
        frame = self._render(state, now, number, player, loop)
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return
        with self._cond:
            if self._stalled:
                return  # stalled while drawing: stall() promised no new frame
            self._jpeg = encoded.tobytes()
            self._published = number
            self.frames_sent += 1
            self._cond.notify_all()

    def _render(self, state: _State, now: float, number: int, player: Any, loop: bool) -> Image:
        w, h = self.size
        if player is not None:
            world, origin = self._file_frame(player, loop), (0.0, 0.0)
        else:
            world, origin = self._canvas, (w / 2, h / 2)
        # world -> view: translate to the view (plus the shift), then rotate about the frame centre
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), state.degrees, 1.0)
        t = np.array([state.dx * w - origin[0], state.dy * h - origin[1]])
        m = np.hstack([rot[:, :2], (rot[:, 2] + rot[:, :2] @ t)[:, None]])
        view = cv2.warpAffine(world, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if state.person is not None:
            x, y, walking = state.person.at(now)
            height = PERSON_HEIGHT * h
            feet = (origin[0] + x * w, origin[1] + y * h)
            walked = math.hypot(state.person.vx * w, state.person.vy * h) * max(now - state.person.t0, 0.0)
            phase = 2 * math.pi * walked / (0.8 * height)  # one gait cycle: two steps of 0.4 body height
            _draw_person(view, m, feet, height, phase if walking else None, -1 if state.person.vx < 0 else 1)
        if state.light != 1.0:
            view = cv2.convertScaleAbs(view, alpha=state.light)
        if state.grey:
            view = cv2.cvtColor(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if state.blur > 0:
            view = cv2.GaussianBlur(view, (0, 0), state.blur)
        if state.cover:
            noise = self._noise.standard_normal((h, w), dtype=np.float32) * 2.0
            view = np.clip(self._dark + noise[:, :, None], 0, 255).astype(np.uint8)
        if self.osd:
            self._draw_osd(view, number)
        return view

    def _file_frame(self, player: Any, loop: bool) -> Image:
        ok, frame = player.read()
        if not ok and loop:
            player.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = player.read()
        if ok:
            self._play_last = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._play_last is None:
            raise ValueError(f"no frame in video file {self._play_path!r}")
        return self._play_last

    def _measure_osd(self) -> tuple[int, int, int, int]:
        (tw, th), base = cv2.getTextSize("0000-00-00 00:00:00.0 #000000", OSD_FONT, OSD_SCALE, 1)
        return 0, 0, tw + 10, th + base + 8

    def _draw_osd(self, view: Image, number: int) -> None:
        now = time.time()
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now * 10) % 10} #{number % 10**6:06d}"
        _, _, bw, bh = self._osd_box
        cv2.rectangle(view, (0, 0), (bw - 1, bh - 1), (16, 16, 16), -1)
        (_, th), _ = cv2.getTextSize(text, OSD_FONT, OSD_SCALE, 1)
        cv2.putText(view, text, (5, 4 + th), OSD_FONT, OSD_SCALE, (235, 235, 235), 1, cv2.LINE_AA)

    # -- what the HTTP handlers call ----------------------------------------------------------

    def _wait_frame(self, after: int, generation: int) -> tuple[int, bytes] | None:
        """(number, JPEG) of the newest frame numbered above `after`, waiting for it; None once the
        connection must end."""
        with self._cond:
            while self._published <= max(after, -1):  # -1: none drawn yet
                if self._stopping.is_set() or generation != self._generation:
                    return None
                self._cond.wait(1.0)
            if self._stopping.is_set() or generation != self._generation:
                return None
            return self._published, self._jpeg

    def _track(self, conn: socket.socket, on: bool) -> int:
        with self._lock:
            if on:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
            return self._generation


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: CameraSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("camera simulator: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server_version = "CampusgwCameraSim/1.0"

    def do_GET(self) -> None:
        sim = cast(_Server, self.server).sim
        if sim._refusing:
            self.send_error(503, "camera starting")
            return
        generation = sim._track(self.connection, True)
        try:
            path = urlsplit(self.path).path
            if path == "/video.mjpg":
                self._stream(sim, generation)
            elif path == "/snapshot.jpg":
                self._snapshot(sim, generation)
            elif path in ("/", "/index.html"):
                self._reply(b'<!doctype html><title>camera simulator</title><img src="/video.mjpg">',
                            "text/html; charset=utf-8")
            else:
                self.send_error(404)
        except OSError:
            pass  # the client went away, or close_connections() dropped it
        finally:
            sim._track(self.connection, False)

    def _stream(self, sim: CameraSimulator, generation: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        with sim._lock:
            sim._clients += 1
            last = sim._published - 1  # a new client gets the newest frame at once
        try:
            while True:
                frame = sim._wait_frame(last, generation)
                if frame is None:
                    return
                last, jpeg = frame
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
        finally:
            with sim._lock:
                sim._clients -= 1

    def _snapshot(self, sim: CameraSimulator, generation: int) -> None:
        with sim._lock:
            want = sim._started  # the first render begun after this request: it shows every earlier event
        frame = sim._wait_frame(want - 1, generation)
        if frame is not None:
            self._reply(frame[1], "image/jpeg")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("camera simulator: " + format, *args)


# -- drawing ---------------------------------------------------------------------------------

def _background(w: int, h: int, seed: int) -> Image:
    """A static school-yard scene with structure at every scale, the same for the same seed: a building
    (gradient wall, windows, doors, signs with text, posters, a checkerboard) over paved ground (tiles,
    painted lines, kerbs), poles and bushes, and a fine grain. The frame shows its middle (the canvas is
    twice the frame each way, so a turned camera still sees scene)."""
    rng = np.random.default_rng(seed)
    horizon = int(h / 4 + 0.55 * h / 2)  # 55 % down the unshifted view (the middle half of the canvas)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    wall_top, wall_bottom = rng.uniform(150, 215, 3), rng.uniform(110, 170, 3)
    ground_near, ground_far = rng.uniform(70, 110, 3), rng.uniform(110, 150, 3)
    t_wall = np.clip(ys / horizon, 0, 1)[:, :, None]
    t_ground = np.clip((ys - horizon) / max(h - horizon, 1), 0, 1)[:, :, None]
    img = np.where(ys[:, :, None] < horizon, wall_top * (1 - t_wall) + wall_bottom * t_wall,
                   ground_far * (1 - t_ground) + ground_near * t_ground)
    img += 12 * np.sin(xs / w * math.pi * rng.uniform(1, 3))[:, :, None]  # uneven light along the yard
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    unit = h / 20  # about 1/10 of a frame height

    def colour(lo: int = 60, hi: int = 235) -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(lo, hi, 3))  # type: ignore[return-value]

    def text(at: tuple[int, int], scale: float, ink: tuple[int, int, int]) -> None:
        words = ["EXIT", "CLASS 3-2", "GATE A", "LIBRARY", "NO PARKING", "ROOM 101", "CAUTION", "SCHOOL BUS",
                 "OFFICE", "GYM", "WAY OUT", "VISITORS"]
        cv2.putText(canvas, str(rng.choice(words)), at, cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                    1 + int(scale > 0.8), cv2.LINE_AA)

    # the building: floors of windows, with frames and sills; now and then a door, a sign or a poster
    floor_h = int(rng.uniform(2.6, 3.4) * unit)
    window_w = int(rng.uniform(1.6, 2.4) * unit)
    for top in range(horizon - floor_h, -floor_h, -floor_h):
        pitch = int(window_w * rng.uniform(1.5, 2.0))
        x = int(rng.integers(0, pitch))
        while x < w:
            kind = rng.random()
            x0, y0, x1 = x, top + int(0.2 * floor_h), x + window_w
            if top == horizon - floor_h and kind < 0.15:  # a door on the ground floor
                cv2.rectangle(canvas, (x0, top + int(0.1 * floor_h)), (x1, horizon), colour(40, 120), -1)
                cv2.rectangle(canvas, (x0, top + int(0.1 * floor_h)), (x1, horizon), (40, 40, 40), 2)
                cv2.circle(canvas, (x1 - 6, top + int(0.6 * floor_h)), 3, (200, 200, 200), -1, cv2.LINE_AA)
            elif kind < 0.25:  # a sign or a poster
                cv2.rectangle(canvas, (x0, y0), (x1, y0 + int(0.45 * floor_h)), colour(), -1)
                if rng.random() < 0.5:
                    cell = max(int(window_w / 8), 3)
                    for i in range(8):
                        for j in range(int(0.45 * floor_h / cell)):
                            if (i + j) % 2 == 0:
                                corner = (x0 + i * cell, y0 + j * cell)
                                cv2.rectangle(canvas, corner, (corner[0] + cell - 1, corner[1] + cell - 1),
                                              (30, 30, 30), -1)
                else:
                    text((x0 + 3, y0 + int(0.3 * floor_h)), float(rng.uniform(0.35, 0.6)), (20, 20, 20))
            else:
                y1 = top + int(0.75 * floor_h)
                glass = colour(90, 200)
                cv2.rectangle(canvas, (x0, y0), (x1, y1), glass, -1)
                for _ in range(2):  # reflections
                    p = (int(rng.integers(x0, x1)), y0)
                    cv2.line(canvas, p, (p[0] + int(rng.integers(-8, 8)), y1), colour(150, 250), 1, cv2.LINE_AA)
                cv2.rectangle(canvas, (x0, y0), (x1, y1), (235, 235, 230), 2)
                cv2.line(canvas, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), (235, 235, 230), 2)
                cv2.line(canvas, (x0 - 3, y1 + 3), (x1 + 3, y1 + 3), (90, 90, 90), 2)
            x += pitch
        cv2.line(canvas, (0, top), (w, top), (100, 100, 105), 1)
    for _ in range(int(rng.integers(6, 12))):  # big signs with text across the facade
        x, y = int(rng.integers(0, w)), int(rng.integers(0, horizon - int(unit)))
        scale = float(rng.uniform(0.6, 1.3))
        (tw, th), _ = cv2.getTextSize("SCHOOL BUS", cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        cv2.rectangle(canvas, (x - 4, y - th - 6), (x + tw + 4, y + 6), colour(), -1)
        text((x, y), scale, colour(0, 60))
    # the ground: paving tiles, painted lines, kerbs and drains
    tile = int(rng.uniform(0.8, 1.4) * unit)
    for y in range(horizon, h, tile):
        cv2.line(canvas, (0, y), (w, y), (60, 60, 60), 1)
        offset = int(rng.integers(0, tile))
        for x in range(offset, w, tile):
            cv2.line(canvas, (x, y), (x, min(y + tile, h)), (60, 60, 60), 1)
    cv2.rectangle(canvas, (0, horizon), (w, horizon + int(0.25 * unit)), (170, 170, 170), -1)  # the kerb
    for _ in range(int(rng.integers(3, 7))):
        y = int(rng.integers(horizon + int(unit), h))
        x = int(rng.integers(0, w))
        cv2.line(canvas, (x, y), (x + int(rng.integers(3, 10) * unit), y + int(rng.integers(-2, 3) * unit)),
                 colour(180, 250) if rng.random() < 0.5 else (40, 200, 230), int(rng.integers(3, 7)), cv2.LINE_AA)
    for _ in range(int(rng.integers(3, 6))):
        c = (int(rng.integers(0, w)), int(rng.integers(horizon + int(unit), h)))
        cv2.circle(canvas, c, int(0.6 * unit), (70, 70, 75), -1, cv2.LINE_AA)
        for k in range(-2, 3):
            cv2.line(canvas, (c[0] - int(0.5 * unit), c[1] + k * 4), (c[0] + int(0.5 * unit), c[1] + k * 4),
                     (40, 40, 40), 1)
    # poles and bushes in front of the building
    for _ in range(int(rng.integers(4, 9))):
        x, base = int(rng.integers(0, w)), horizon + int(rng.integers(0, int(2 * unit)))
        if rng.random() < 0.5:
            cv2.line(canvas, (x, base), (x, base - int(rng.uniform(4, 9) * unit)), (80, 80, 85), 3, cv2.LINE_AA)
            cv2.circle(canvas, (x, base - int(rng.uniform(4, 9) * unit)), 5, (200, 230, 240), -1, cv2.LINE_AA)
        else:
            for _ in range(12):
                c = (x + int(rng.normal(0, unit)), base - int(abs(rng.normal(0, 0.7 * unit))))
                cv2.circle(canvas, c, int(rng.uniform(0.3, 0.7) * unit), colour(30, 120) * np.array([0.6, 1, 0.6]),
                           -1, cv2.LINE_AA)
    noise = rng.normal(0, 5, (h, w, 1)).astype(np.float32)  # fine grain, the same in every frame
    return np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _dark_frame(w: int, h: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A hand over the lens: dark, warm, a little brighter in the middle where light leaks through."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xs - w / 2) / w, (ys - h / 2) / h)
    base = np.array([14, 16, 22], np.float32)
    return base + (4 * (1 - 2 * r))[:, :, None]


def _draw_person(view: Image, m: np.ndarray[Any, Any], feet: tuple[float, float], height: float,
                 phase: float | None, facing: int) -> None:
    """A person: head, torso, arms, legs, dark clothes, about 1:2.5 wide:high; standing it faces the camera,
    walking (phase: where in the gait cycle) it is seen from the side, facing +1 (right) or -1 (left).
    Points are in world pixels, mapped through m (2x3) into the view, so the person turns with the camera."""
    fx, fy = feet
    u = height
    top = fy - u
    swing = 0.38 * math.sin(phase) if phase is not None else 0.0

    def pts(*points: tuple[float, float]) -> np.ndarray[Any, np.dtype[np.int32]]:
        arr = np.array(points, np.float64)
        mapped = arr @ m[:, :2].T + m[:, 2]
        return np.round(mapped * 16).astype(np.int32)  # 4 bits of sub-pixel precision

    def limb(p1: tuple[float, float], p2: tuple[float, float], w1: float, w2: float,
             colour: tuple[int, int, int]) -> None:
        dx, dy = p2[0] - p1[0], p2[1] - p1[1]
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n, dx / n
        poly = pts((p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2), (p2[0] + nx * w2 / 2, p2[1] + ny * w2 / 2),
                   (p2[0] - nx * w2 / 2, p2[1] - ny * w2 / 2), (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2))
        cv2.fillPoly(view, [poly], colour, cv2.LINE_AA, 4)
        circle((p2[0], p2[1]), w2 / 2, colour)

    def circle(c: tuple[float, float], r: float, colour: tuple[int, int, int]) -> None:
        (cx, cy), = pts(c)
        cv2.circle(view, (int(cx), int(cy)), round(r * 16), colour, -1, cv2.LINE_AA, 4)

    skin, hair = (105, 135, 180), (25, 30, 40)
    jacket, sleeve, back_sleeve, trousers, shoes = (62, 42, 34), (54, 36, 30), (44, 30, 26), (38, 36, 40), (18, 18, 20)
    leg_len, arm_len = 0.45 * u, 0.31 * u
    hip_y, shoulder_y = top + 0.53 * u, top + 0.215 * u
    if phase is None:  # standing, facing the camera: legs a little apart, arms down at the sides
        for side in (-1, 1):
            hip = (fx + side * 0.055 * u, hip_y)
            ankle = (hip[0] + side * 0.03 * u, hip_y + leg_len)
            limb(hip, ankle, 0.11 * u, 0.075 * u, trousers)
            limb((ankle[0], ankle[1] + 0.01 * u), (ankle[0] + side * 0.03 * u, ankle[1] + 0.02 * u),
                 0.05 * u, 0.045 * u, shoes)
        half = (0.11, 0.16, 0.135)  # half-widths at the neck, shoulders and hips
        arms = [(side * 0.14, side * 0.035, 0.0, sleeve) for side in (-1, 1)]
        face = 0.008
    else:  # walking, seen from the side: the legs scissor from one hip, the arms swing against them
        for angle, shade in ((-swing, 0.8), (swing, 1.0)):
            hip = (fx, hip_y)
            ankle = (fx + leg_len * math.sin(angle), hip_y + leg_len * math.cos(angle))
            limb(hip, ankle, 0.11 * u, 0.075 * u, tuple(int(c * shade) for c in trousers))  # type: ignore[arg-type]
            limb((ankle[0] - facing * 0.02 * u, ankle[1] + 0.01 * u), (ankle[0] + facing * 0.07 * u,
                                                                      ankle[1] + 0.02 * u), 0.05 * u, 0.045 * u, shoes)
        half = (0.08, 0.105, 0.095)
        arms = [(0.0, 0.0, swing * 0.8, back_sleeve), (0.0, 0.0, -swing * 0.8, sleeve)]
        face = 0.02
    cx = fx + (facing * 0.01 * u if phase is not None else 0.0)  # leaning a little into the walk
    n, s, w = half
    for offset, out, angle, colour in arms[:1] if phase is not None else []:  # the far arm, behind the body
        shoulder = (cx + offset * u, shoulder_y)
        hand = (shoulder[0] + out * u + arm_len * math.sin(angle), shoulder[1] + arm_len * math.cos(angle))
        limb(shoulder, hand, 0.08 * u, 0.06 * u, colour)
        circle(hand, 0.032 * u, skin)
    cv2.fillPoly(view, [pts((cx - n * u, top + 0.165 * u), (cx + n * u, top + 0.165 * u),
                            (cx + s * u, top + 0.21 * u), (cx + w * u, top + 0.56 * u),
                            (cx - w * u, top + 0.56 * u), (cx - s * u, top + 0.21 * u))],
                 jacket, cv2.LINE_AA, 4)
    for offset, out, angle, colour in arms[1:] if phase is not None else arms:
        shoulder = (cx + offset * u, shoulder_y)
        hand = (shoulder[0] + out * u + arm_len * math.sin(angle), shoulder[1] + arm_len * math.cos(angle))
        limb(shoulder, hand, 0.08 * u, 0.06 * u, colour)
        circle(hand, 0.032 * u, skin)
    limb((cx, top + 0.11 * u), (cx, top + 0.17 * u), 0.055 * u, 0.055 * u, skin)  # neck
    circle((cx - facing * (face - 0.008) * u, top + 0.068 * u), 0.068 * u, hair)
    circle((cx + facing * face * u, top + 0.08 * u), 0.058 * u, skin)
