"""Camera analytics on a scripted scene: CPU per frame, and detections and false alarms against the script.

    python -m bench.camera_analytics [--fps 5] [--noise 3] [--threads 1] [--seed 1]

The script renders 2 minutes of a gatehouse camera's substream (640x360 BGR) at --fps, frame by frame:
a seeded textured scene with a clock overlay and a swaying tree (both masked), sensor noise (std-dev
--noise per channel, fresh each frame), and these phases:

    0-15 s idle (the tamper detector learns)     72-75 s day again, idle
    15-25 s person A walks through                75-84 s lens covered (black)
    25-30 s idle                                  84-88 s idle
    30-38 s tube lights flicker on and off, dim   88-103 s defocused (blur std-dev 4 px)
    38-44 s lights flicker back to full           103-106 s idle
    44-62 s person B walks in, stands 8 s, leaves 106-116 s camera turned 25 % (160 px) right
    62-72 s night (IR switch); person C at 64-70  116-120 s idle

On the same frames, in the same run, it times each analytic frame by frame (wall: time.perf_counter; CPU:
time.process_time, which counts every OpenCV thread) and scores:

  - MotionDetector (drivers.camera.analytics), zone "gate" (below the skyline), clock and tree masked;
  - a plain frame-differencing baseline: grey 640x360, absdiff with the previous frame > 25, the changed
    fraction of the same zone and masks >= min_area, through the same min_duration_s / clear_after_s
    hold as the detector, so the two are scored alike;
  - TamperDetector (drivers.camera.analytics), default settings.

Motion is scored by person: detected if a motion event starts while the person is in view (or motion
is still active from before at their first frame), with the delay from their first frame, and the share
of their time in view during which motion was active (a person standing still must stay detected). Any
motion event that starts while no person is in view is a false alarm, listed by phase; those during a
tamper phase (the view itself changed) are shown apart.
Tamper is scored by phase: each kind must be raised in its phase (after its hold) and nowhere else.

Loitering (LoiterDetector, zone "gate", defaults: dwell_s 30, grace_s 5, detect_every_s 1) runs on the
same frames, fed the motion detector's motion_now, so its people detector (HOG) runs at most once a second
and only on motion or while it tracks a person; the script's figures are no people to HOG, so this only
times it. It is scored on a second script, drawn by the camera simulator (simulators.camera, its scene,
clock and person, the person 1/3 of the frame high) with the same sensor noise, 90 s at --fps:

    0-10 s idle                                   20-24 s a loiterer walks in, stands at x 0.45 until 64 s
    10-16 s a walker passes through (6 s)         64-68 s the loiterer walks out; 68-90 s idle

Loitering must be raised once while the loiterer stands (dwell_s after they are first seen) and cleared
grace_s after they are last seen, and never for the walker. The HOG row gives ms per call; the worst case (a person
always in view) is one call per detect_every_s: its CPU / (fps x detect_every_s) per frame.

Target: motion + tamper <= 3 % of one core at 5 fps at 640x360 (about 6 ms a frame). The exit status
is 1 if the target is missed, or the detectors miss a person or a tamper or raise a false alarm
outside the tamper phases, or loitering is not as scripted.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from bench.common import percentile
from drivers.camera.analytics import (
    HOG_HEIGHT,
    MAX_GAP_S,
    Image,
    LoiterDetector,
    LoiterSettings,
    MotionDetector,
    MotionSettings,
    TamperDetector,
    Zone,
    polygon_mask,
)
from simulators.camera import CameraSimulator, _Person, _State

W, H = 640, 360
SECONDS = 120.0
TARGET_PCT = 3.0
DIFF_THRESHOLD = 25  # grey levels, the baseline's per-pixel change
GATE = Zone("gate", [(0.0, 0.35), (1.0, 0.35), (1.0, 1.0), (0.0, 1.0)])
TREE = [(0.72, 0.0), (1.0, 0.0), (1.0, 0.5), (0.72, 0.5)]
CLOCK = [(0.0, 0.0), (0.3, 0.0), (0.3, 0.09), (0.0, 0.09)]
MOTION = MotionSettings(zones=[GATE], masks=[TREE, CLOCK])
TAMPER_PHASES = {"covered": "covered", "defocus": "blurred", "moved": "turned"}
LOITER = LoiterSettings(zones=[GATE])  # dwell_s 30, grace_s 5, detect_every_s 1
LOITER_SECONDS = 90.0
STAND = (20.0, 64.0)  # the loiterer in view from 20 s, standing from 24 s, walking out from 64 s



@dataclass(frozen=True)
class Phase:
    start: float
    end: float
    name: str


PHASES = [
    Phase(0, 15, "idle"), Phase(15, 25, "person A"), Phase(25, 30, "idle"), Phase(30, 44, "lights"),
    Phase(44, 62, "person B"), Phase(62, 72, "night"), Phase(72, 75, "idle"), Phase(75, 84, "covered"),
    Phase(84, 88, "idle"), Phase(88, 103, "blurred"), Phase(103, 106, "idle"), Phase(106, 116, "turned"),
    Phase(116, 120, "idle"),
]


@dataclass(frozen=True)
class Walk:
    """A person in view from `start` to `end`: walking from x0 to x1, or standing at x1 in between."""

    name: str
    start: float
    end: float
    x0: float
    x1: float
    stand: tuple[float, float] | None = None  # (from, to): standing still at the middle of the walk

    def x(self, t: float) -> float:
        if self.stand is None:
            return self.x0 + (self.x1 - self.x0) * (t - self.start) / (self.end - self.start)
        mid = (self.x0 + self.x1) / 2
        if t < self.stand[0]:
            return self.x0 + (mid - self.x0) * (t - self.start) / (self.stand[0] - self.start)
        if t < self.stand[1]:
            return mid + float(np.sin(t * 3))  # sways a little, as people do
        return mid + (self.x1 - mid) * (t - self.stand[1]) / (self.end - self.stand[1])


WALKS = [
    Walk("person A", 15, 25, -30, 670),
    Walk("person B", 44, 62, 670, -30, stand=(49, 57)),
    Walk("person C (night)", 64, 70, -30, 670),
]


def phase_at(t: float) -> str:
    return next((p.name for p in PHASES if p.start <= t < p.end), "idle")


# -- the scene ----------------------------------------------------------------------------------------------


def canvas(seed: int) -> Image:
    """A textured scene wider than the view, so a camera turned 25 % sees new content."""
    rng = np.random.default_rng(seed)
    cw, ch = W + W // 2, H
    img = np.empty((ch, cw, 3), np.uint8)
    img[:] = (150, 140, 120)
    img[: int(0.35 * H)] = (200, 170, 140)  # sky above the skyline
    for _ in range(160):
        x, y = int(rng.integers(-50, cw)), int(rng.integers(int(0.2 * H), ch))
        w, h = int(rng.integers(10, 150)), int(rng.integers(10, 100))
        cv2.rectangle(img, (x, y), (x + w, y + h), [int(v) for v in rng.integers(0, 256, 3)], -1)
    for _ in range(80):
        p1 = (int(rng.integers(0, cw)), int(rng.integers(0, ch)))
        p2 = (int(rng.integers(0, cw)), int(rng.integers(0, ch)))
        cv2.line(img, p1, p2, [int(v) for v in rng.integers(0, 256, 3)], int(rng.integers(1, 4)))
    grain = rng.normal(0, 10, (ch, cw, 1))
    return cv2.GaussianBlur(np.clip(img + grain, 0, 255).astype(np.uint8), (3, 3), 0.7)


def infrared(img: Image) -> Image:
    """Night: no IR-cut filter (brightness by near-IR reflectance, no colour), the illuminator's falloff."""
    b, g, r = (c.astype(np.float32) for c in cv2.split(img))
    yy, xx = np.mgrid[0:H, 0:W]
    falloff = 1.3 - 1.5 * np.sqrt(((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2)
    grey = np.clip((0.05 * b + 0.15 * g + 0.8 * r) * falloff, 0, 255).astype(np.uint8)
    return cv2.merge([grey, grey, grey])


def figure(img: Image, x: float, colour: tuple[int, int, int], y: int = 240, height: int = 110) -> Image:
    out = img.copy()
    cx, w = round(x), height // 4
    cv2.ellipse(out, (cx, y - height // 2 + w // 2), (w // 2, w // 2 + 2), 0, 0, 360, (60, 50, 45), -1)
    cv2.rectangle(out, (cx - w // 2 - 2, y - height // 2 + w), (cx + w // 2 + 2, y + height // 6), colour, -1)
    cv2.rectangle(out, (cx - w // 2, y + height // 6), (cx + w // 2, y + height // 2), (30, 30, 30), -1)
    return out


def lights(t: float) -> float:
    """Brightness of the tube lights: flickering down to 40 % from 30 s, flickering back up from 38 s."""
    if 30 <= t < 38:
        return 0.4 if t >= 31.5 or int(t * 5) % 2 else 1.0
    if 38 <= t < 44:
        return 1.0 if t >= 39.5 or int(t * 5) % 2 else 0.4
    return 1.0


class Script:
    def __init__(self, seed: int, noise: float) -> None:
        self.canvas = canvas(seed)
        self.day = self.view(0)
        self.night = infrared(self.day)
        self.noise = noise
        self.rng = np.random.default_rng(seed + 1)
        self._noise = np.empty((H, W, 3), np.int16)
        self._tree = np.random.default_rng(seed + 2).integers(20, 120, (int(0.5 * H) + 8, int(0.28 * W) + 8, 3),
                                                              dtype=np.uint8)

    def view(self, dx: int) -> Image:
        x = W // 4 + dx
        return np.ascontiguousarray(self.canvas[:, x:x + W])

    def person_in_view(self, t: float) -> str | None:
        for walk in WALKS:
            if walk.start <= t < walk.end and -15 < walk.x(t) < W + 15:
                return walk.name
        return None

    def frame(self, t: float) -> Image:
        phase = phase_at(t)
        img: Image
        if phase == "covered":
            img = np.full((H, W, 3), 4, np.uint8)
        else:
            if phase == "night":
                img = self.night.copy()
            elif phase == "turned":
                img = self.view(W // 4)
            else:
                img = self.day.copy()
            for walk, colour in zip(WALKS, [(60, 50, 90), (40, 60, 40), (70, 70, 70)], strict=True):
                if walk.start <= t < walk.end:
                    img = figure(img, walk.x(t), colour)
            # the tree in the masked corner sways by a few pixels
            sway = round(3 * float(np.sin(t * 2.1)))
            x0 = int(0.72 * W)
            img[: int(0.5 * H), x0:] = self._tree[4:4 + int(0.5 * H), 4 + sway:4 + sway + W - x0]
            if phase == "blurred":
                img = cv2.GaussianBlur(img, (0, 0), 4)
            gain = lights(t)
            if gain != 1.0:
                img = cv2.convertScaleAbs(img, alpha=gain)
            clock = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1_780_000_000 + int(t)))
            cv2.putText(img, clock, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.randn(self._noise, np.zeros(3), np.full(3, self.noise))  # per channel: a bare number fills only B
        return cv2.add(img, self._noise, dtype=cv2.CV_8U)


# -- the baseline --------------------------------------------------------------------------------------------


@dataclass
class Hold:
    """The detector's min_duration_s / clear_after_s hold, for the baseline's per-frame answers."""

    min_duration_s: float
    clear_after_s: float
    active: bool = False
    run_since: float | None = None
    last: float | None = None

    def update(self, moving: bool, at: float) -> bool | None:
        recent = self.last is not None and at - self.last <= MAX_GAP_S
        if moving:
            if self.run_since is None or not recent:
                self.run_since = at
            self.last = at
            if not self.active and at - self.run_since >= self.min_duration_s - 1e-6:
                self.active = True
                return True
        elif self.active:
            if self.last is not None and at - self.last >= self.clear_after_s - 1e-6:
                self.active, self.run_since = False, None
                return False
        elif not recent:
            self.run_since = None
        return None


class FrameDifference:
    """absdiff of consecutive grey frames > DIFF_THRESHOLD, the changed fraction of the zone >= min_area."""

    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        valid = np.full((H, W), 255, np.uint8)
        for polygon in settings.masks:
            valid[polygon_mask(polygon, W, H) > 0] = 0
        self.zone = cv2.bitwise_and(polygon_mask(settings.zones[0].polygon, W, H), valid)
        self.area = cv2.countNonZero(self.zone)
        self.prev: Image | None = None
        self.hold = Hold(settings.min_duration_s, settings.clear_after_s)

    def update(self, frame: Image, at: float) -> bool | None:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        prev, self.prev = self.prev, grey
        if prev is None:
            return None
        _, changed = cv2.threshold(cv2.absdiff(grey, prev), DIFF_THRESHOLD, 255, cv2.THRESH_BINARY)
        fraction = cv2.countNonZero(cv2.bitwise_and(changed, self.zone)) / self.area
        return self.hold.update(fraction >= self.settings.min_area, at)


# -- the run ------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall and CPU (this process, every thread) ms per frame of one analytic."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: tuple[float, float], cpu: tuple[float, float]) -> None:
        self.wall.append((wall[1] - wall[0]) * 1000)
        self.cpu.append((cpu[1] - cpu[0]) * 1000)

    def __add__(self, other: Timing) -> Timing:
        return Timing([a + b for a, b in zip(self.wall, other.wall, strict=True)],
                      [a + b for a, b in zip(self.cpu, other.cpu, strict=True)])

    def pct(self, fps: float) -> float:
        """% of one core at `fps` frames a second."""
        return sum(self.cpu) / len(self.cpu) * fps / 10

    def row(self, name: str, fps: float) -> str:
        w = self.wall
        return (f"  {name:34}{percentile(w, 50):8.2f}{percentile(w, 99):8.2f}{max(w):8.2f}"
                f"{sum(self.cpu) / len(self.cpu):10.2f}{self.pct(fps):10.2f} %")


@dataclass
class Scored:
    """One motion analytic's events."""

    starts: list[float] = field(default_factory=list)  # motion became active
    active_frames: set[int] = field(default_factory=set)
    active: bool = False

    def add(self, change: bool | None, at: float, index: int) -> None:
        if change is True:
            self.starts.append(at)
        if change is not None:
            self.active = change
        if self.active:
            self.active_frames.add(index)


@dataclass
class Run:
    ours: Scored = field(default_factory=Scored)
    plain: Scored = field(default_factory=Scored)
    motion_time: Timing = field(default_factory=Timing)
    tamper_time: Timing = field(default_factory=Timing)
    plain_time: Timing = field(default_factory=Timing)
    loiter_time: Timing = field(default_factory=Timing)  # every frame, HOG or not
    hog_time: Timing = field(default_factory=Timing)  # the frames the people detector ran on
    tamper_events: list[tuple[str, bool, float]] = field(default_factory=list)


def run(args: argparse.Namespace, script: Script) -> Run:
    motion, tamper, baseline = MotionDetector(MOTION), TamperDetector(), FrameDifference(MOTION)
    loiter = LoiterDetector(LOITER)
    r = Run()
    wall, cpu = time.perf_counter, time.process_time
    for i in range(int(SECONDS * args.fps)):
        t = i / args.fps
        frame = script.frame(t)  # rendering is not timed
        w0, c0 = wall(), cpu()
        motions = motion.update(frame, t)
        w1, c1 = wall(), cpu()
        tampers = tamper.update(frame, t)
        w2, c2 = wall(), cpu()
        plain_change = baseline.update(frame, t)
        w3, c3 = wall(), cpu()
        runs = loiter.hog_runs
        loiter.update(frame, t, motion.motion_now)
        w4, c4 = wall(), cpu()
        r.motion_time.add((w0, w1), (c0, c1))
        r.tamper_time.add((w1, w2), (c1, c2))
        r.plain_time.add((w2, w3), (c2, c3))
        r.loiter_time.add((w3, w4), (c3, c4))
        if loiter.hog_runs > runs:
            r.hog_time.add((w3, w4), (c3, c4))
        r.ours.add(motions[-1].active if motions else None, t, i)
        r.plain.add(plain_change, t, i)
        r.tamper_events += [(e.kind, e.active, e.at) for e in tampers]
    return r


# -- loitering, on the camera simulator's person -----------------------------------------------------------


class LoiterScript:
    """The camera simulator's scene and person (drawn by its renderer at the script's times, no HTTP), with
    sensor noise: a walker passes through; a loiterer walks in, stands and walks out (see the module doc)."""

    def __init__(self, seed: int, noise: float) -> None:
        self.sim = CameraSimulator(size=(W, H), seed=seed)
        self.margin = self.sim._person_margin()
        m = self.margin
        self.through = _Person(-m, 0.85, 10.0, vx=(1 + 2 * m) / 6, until=16.0, leave_at_end=True)
        self.walk_in = _Person(-m, 0.85, STAND[0], vx=(0.45 + m) / 4, until=STAND[0] + 4)
        self.walk_out = _Person(0.45, 0.85, STAND[1], vx=(0.55 + m) / 4, until=STAND[1] + 4, leave_at_end=True)
        self.noise = noise
        self._noise = np.empty((H, W, 3), np.int16)

    def person(self, t: float) -> _Person | None:
        for p, start in ((self.through, 10.0), (self.walk_in, STAND[0]), (self.walk_out, STAND[1])):
            if start <= t and not p.gone(t, self.margin) and (p is not self.walk_in or t < STAND[1]):
                return p
        return None

    def frame(self, t: float, number: int) -> Image:
        img = self.sim._render(_State(person=self.person(t)), t, number, None, False)
        cv2.randn(self._noise, np.zeros(3), np.full(3, self.noise))
        return cv2.add(img, self._noise, dtype=cv2.CV_8U)


@dataclass
class LoiterRun:
    time: Timing = field(default_factory=Timing)
    hog_time: Timing = field(default_factory=Timing)
    events: list[tuple[bool, float, float]] = field(default_factory=list)  # (active, at, dwell_s)
    seen: list[float] = field(default_factory=list)  # times of the people detector's runs that found somebody
    hog_runs: int = 0


def run_loiter(args: argparse.Namespace, script: LoiterScript) -> LoiterRun:
    motion, loiter = MotionDetector(MotionSettings(zones=[GATE])), LoiterDetector(LOITER)
    r = LoiterRun()
    wall, cpu = time.perf_counter, time.process_time
    for i in range(int(LOITER_SECONDS * args.fps)):
        t = i / args.fps
        frame = script.frame(t, i)
        motion.update(frame, t)  # its cost is in the first table
        runs = loiter.hog_runs
        w0, c0 = wall(), cpu()
        events = loiter.update(frame, t, motion.motion_now)
        w1, c1 = wall(), cpu()
        r.time.add((w0, w1), (c0, c1))
        if loiter.hog_runs > runs:
            r.hog_time.add((w0, w1), (c0, c1))
            if loiter.people:
                r.seen.append(t)
        r.events += [(e.active, e.at, e.dwell_s) for e in events]
    r.hog_runs = loiter.hog_runs
    return r


def score_loiter(r: LoiterRun) -> tuple[list[str], bool]:
    """Rows, and whether loitering was raised once for the loiterer (and cleared) and never for the walker."""
    s = LOITER
    raised = [(at, d) for a, at, d in r.events if a]
    cleared = [(at, d) for a, at, d in r.events if not a]
    first = min((t for t in r.seen if t >= STAND[0]), default=None)
    last = max((t for t in r.seen if STAND[0] <= t < STAND[1] + 4), default=None)
    through = [t for t in r.seen if 10.0 <= t < 16.0]
    ok = (len(raised) == 1 and len(cleared) == 1 and first is not None and last is not None
          and abs(raised[0][0] - (first + s.dwell_s)) <= s.detect_every_s + 1e-6
          and abs(cleared[0][0] - (last + s.grace_s)) <= s.detect_every_s + 1e-6)
    rows = [f"  {'a walker passes through (10-16 s)':44}seen at {', '.join(f'{t:.0f}' for t in through) or '-'} s; "
            f"loitering {'none' if not [a for a in raised if 10 <= a[0] < 20] else 'RAISED'}"]
    if raised:
        at, dwell = raised[0]
        rows.append(f"  {'a loiterer (in view 20-68 s, stands 24-64)':44}first seen {first:.1f} s, raised {at:.1f} s "
                    f"(dwell {dwell:.1f} s), last seen {last:.1f} s")
    else:
        rows.append(f"  {'a loiterer (in view 20-68 s, stands 24-64)':44}NOT raised")
    if cleared:
        at, dwell = cleared[0]
        rows.append(f"  {'':44}cleared {at:.1f} s (last seen + grace_s {s.grace_s:g} s; in the zone {dwell:.1f} s)")
    seen_share = len(r.seen) / max(r.hog_runs, 1)
    rows.append(f"  {'people detector runs':44}{r.hog_runs} in {LOITER_SECONDS:.0f} s, {100 * seen_share:.0f} % "
                f"of them found somebody")
    return rows, ok


def score_motion(name: str, scored: Scored, script: Script, fps: float) -> tuple[str, int, int]:
    """A table row; (row, persons missed, false alarms outside the tamper phases)."""
    found, delays, covered = 0, [], []
    for walk in WALKS:
        frames = [i for i in range(int(SECONDS * fps)) if script.person_in_view(i / fps) == walk.name]
        first, last = frames[0] / fps, frames[-1] / fps
        starts = [s for s in scored.starts if first <= s <= last]
        active_before = any(i in scored.active_frames for i in frames[:1])
        if starts or active_before:
            found += 1
            delays.append((starts[0] if starts else first) - first)
        covered.append(len([i for i in frames if i in scored.active_frames]) / len(frames))
    false_by: dict[str, int] = {}
    for s in scored.starts:
        if script.person_in_view(s) is None:
            false_by[phase_at(s)] = false_by.get(phase_at(s), 0) + 1
    tamper_false = sum(n for p, n in false_by.items() if p in TAMPER_PHASES.values())
    real_false = sum(false_by.values()) - tamper_false
    listed = ", ".join(f"{p} {n}" for p, n in false_by.items() if p not in TAMPER_PHASES.values()) or "-"
    in_tamper = ", ".join(f"{p} {n}" for p, n in false_by.items() if p in TAMPER_PHASES.values()) or "-"
    delay = f"{max(delays):.1f}" if delays else "-"
    row = (f"  {name:34}{found:>3}/{len(WALKS)}{delay:>9}   {' / '.join(f'{100 * c:.0f}' for c in covered):>12}"
           f"{real_false:>8}  ({listed}){'':2}{in_tamper}")
    return row, len(WALKS) - found, real_false


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.camera_analytics", description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, default=5.0, help="frames analysed per second")
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise, std-dev per channel")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads, as a camera worker should")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    script = Script(args.seed, args.noise)
    r = run(args, script)
    frames = len(r.motion_time.wall)

    print(f"camera analytics: {frames} frames ({SECONDS:.0f} s at {args.fps:g} fps), {W}x{H} BGR, sensor noise "
          f"std-dev {args.noise:g}; OpenCV {cv2.__version__}, {cv2.getNumThreads()} thread(s)")
    print(f"  {'ms per frame':34}{'p50':>8}{'p99':>8}{'max':>8}{'CPU mean':>10}{f'core @{args.fps:g}fps':>12}")
    both = r.motion_time + r.tamper_time
    print(r.motion_time.row("MotionDetector", args.fps))
    print(r.tamper_time.row("TamperDetector", args.fps))
    print(both.row("motion + tamper", args.fps))
    print(r.plain_time.row("frame differencing (baseline)", args.fps))
    print(r.loiter_time.row("LoiterDetector (HOG on motion)", args.fps))
    pct = both.pct(args.fps)
    target_met = pct <= TARGET_PCT

    print()
    print(f"  {'motion, zone gate':34}{'persons':>7}{'delay s':>9}   {'% in view':>12}{'false':>8}  (by phase)  "
          "in tamper phases")
    row, missed, false = score_motion("MotionDetector", r.ours, script, args.fps)
    print(row)
    row_plain, _, _ = score_motion("frame differencing (baseline)", r.plain, script, args.fps)
    print(row_plain)

    print()
    print(f"  {'tamper':34}{'raised at (phase start)':>28}{'cleared at':>12}   elsewhere")
    tamper_ok = True
    for kind, phase_name in TAMPER_PHASES.items():
        phase = next(p for p in PHASES if p.name == phase_name)
        raised = [at for k, a, at in r.tamper_events if k == kind and a]
        cleared = [at for k, a, at in r.tamper_events if k == kind and not a]
        inside = [at for at in raised if phase.start <= at < phase.end]
        outside = [at for at in raised if not phase.start <= at < phase.end]
        tamper_ok = tamper_ok and len(inside) == 1 and not outside
        at = f"{inside[0]:.1f} s ({phase.start:g} s)" if inside else "not raised"
        print(f"  {kind + ' (' + phase_name + ')':34}{at:>28}{', '.join(f'{c:.1f}' for c in cleared) or '-':>12}"
              f"   {', '.join(f'{a:.1f} s ({phase_at(a)})' for a in outside) or '-'}")

    lr = run_loiter(args, LoiterScript(args.seed, args.noise))
    hog = Timing(r.hog_time.wall + lr.hog_time.wall, r.hog_time.cpu + lr.hog_time.cpu)
    per_call = sum(hog.cpu) / len(hog.cpu)
    every = LOITER.detect_every_s
    print()
    print(f"  loitering, {LOITER_SECONDS:.0f} s of the simulator's person (1/3 of the frame high); dwell_s "
          f"{LOITER.dwell_s:g}, grace_s {LOITER.grace_s:g}; HOG at {W * HOG_HEIGHT // H}x{HOG_HEIGHT}")
    rows, loiter_ok = score_loiter(lr)
    for line in rows:
        print(line)
    print(f"  {'ms per people-detector run':34}{'p50':>8}{'p99':>8}{'max':>8}{'CPU mean':>10}{'core @1/s':>12}")
    print(hog.row(f"HOG call (n={len(hog.cpu)})", 1 / every))
    print(lr.time.row("LoiterDetector, loitering script", args.fps))
    worst = per_call / (args.fps * every)
    worst_pct = per_call / every / 10
    print(f"  worst case (HOG every {every:g} s): {worst:.2f} ms a frame on average at {args.fps:g} fps, "
          f"{worst_pct:.2f} % of a core; with motion + tamper {both.pct(args.fps) + worst_pct:.2f} %")

    ok = target_met and missed == 0 and false == 0 and tamper_ok and loiter_ok
    print()
    print(f"target: motion + tamper <= {TARGET_PCT:g} % of one core at {args.fps:g} fps: {pct:.2f} %, "
          f"{'met' if target_met else 'MISSED'}; persons missed {missed}, false motion alarms {false}, tamper "
          f"{'as scripted' if tamper_ok else 'NOT as scripted'}, loitering "
          f"{'as scripted' if loiter_ok else 'NOT as scripted'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
