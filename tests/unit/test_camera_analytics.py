"""Camera analytics on synthetic frames: motion in zones, tamper and loitering, both sides of each, time passed in.

The scene is a seeded texture (rectangles, lines, grain) cropped from a larger canvas, so a camera that
turns sees new content; a dark figure stands in for a person. Frames come at 5 per second (0.2 s apart)
with sensor noise (std-dev 3) unless a test says otherwise. The people detector needs a person, not a
figure: the loitering tests draw the camera simulator's scene and person (simulators.camera), without its
HTTP server, at the tests' own times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from drivers.camera.analytics import (
    LoiterDetector,
    LoiterEvent,
    LoiterSettings,
    MotionDetector,
    MotionEvent,
    MotionSettings,
    TamperDetector,
    TamperEvent,
    TamperSettings,
    Zone,
)
from drivers.camera.pipeline import Pipeline
from drivers.camera.schema import LoiterConfig, MotionConfig, ZoneConfig
from simulators.camera import CameraSimulator, _Person, _State

W, H = 640, 360
DT = 0.2  # 5 frames/s
Frame = np.ndarray
FrameAt = Callable[[int], Frame]  # the frame at index i (time i * DT)


def canvas(seed: int, detail: float = 1.0) -> Frame:
    """A textured scene half again as large as a frame each way, so a panned view shows new content."""
    rng = np.random.default_rng(seed)
    cw, ch = W + W // 2, H + H // 2
    img = np.empty((ch, cw, 3), np.uint8)
    img[:] = rng.integers(60, 180, 3)
    for _ in range(int(120 * detail)):
        x, y = int(rng.integers(-50, cw)), int(rng.integers(-50, ch))
        w, h = int(rng.integers(10, 150)), int(rng.integers(10, 100))
        cv2.rectangle(img, (x, y), (x + w, y + h), [int(v) for v in rng.integers(0, 256, 3)], -1)
    for _ in range(int(80 * detail)):
        p1 = (int(rng.integers(0, cw)), int(rng.integers(0, ch)))
        p2 = (int(rng.integers(0, cw)), int(rng.integers(0, ch)))
        cv2.line(img, p1, p2, [int(v) for v in rng.integers(0, 256, 3)], int(rng.integers(1, 4)))
    grain = rng.normal(0, 12 * detail, (ch, cw, 1))
    return cv2.GaussianBlur(np.clip(img + grain, 0, 255).astype(np.uint8), (3, 3), 0.7)


CANVAS = canvas(1)


def view(dx: int = 0, dy: int = 0, source: Frame = CANVAS) -> Frame:
    """The camera's view: the middle of the canvas, moved by (dx, dy) pixels."""
    x, y = W // 4 + dx, H // 4 + dy
    return np.ascontiguousarray(source[y:y + H, x:x + W])


SCENE = view()
SOFT = cv2.GaussianBlur(SCENE, (0, 0), 2.5)  # a naturally soft picture (an old lens, a hazy view)
_NOISE = [np.random.default_rng(100 + i).normal(0, 3, (H, W, 3)).astype(np.int16) for i in range(9)]


def noisy(img: Frame, i: int) -> Frame:
    return cv2.add(img, _NOISE[i % len(_NOISE)], dtype=cv2.CV_8U)


def figure(img: Frame, x: int, y: int = 230, height: int = 110) -> Frame:
    """`img` with a dark standing figure (head, coat, legs) centred at x, its middle at y."""
    out = img.copy()
    w = height // 4
    cv2.ellipse(out, (x, y - height // 2 + w // 2), (w // 2, w // 2 + 2), 0, 0, 360, (40, 35, 30), -1)
    cv2.rectangle(out, (x - w // 2 - 2, y - height // 2 + w), (x + w // 2 + 2, y + height // 6), (50, 40, 35), -1)
    cv2.rectangle(out, (x - w // 2, y + height // 6), (x + w // 2, y + height // 2), (30, 30, 30), -1)
    return out


def square(img: Frame, x: int, y: int, side: int, colour: int) -> Frame:
    out = img.copy()
    cv2.rectangle(out, (x, y), (x + side - 1, y + side - 1), (colour, colour, colour), -1)
    return out


def lit(img: Frame, gain: float) -> Frame:
    return np.clip(img * gain, 0, 255).astype(np.uint8)


def infrared(img: Frame) -> Frame:
    """Day to night: the IR-cut filter out (materials change brightness by how they reflect near-IR, colour
    gone) and the IR illuminator lighting the middle more than the corners."""
    b, g, r = (c.astype(np.float32) for c in cv2.split(img))
    yy, xx = np.mgrid[0:H, 0:W]
    falloff = 1.3 - 1.5 * np.sqrt(((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2)
    grey = np.clip((0.05 * b + 0.15 * g + 0.8 * r) * falloff, 0, 255).astype(np.uint8)
    return cv2.merge([grey, grey, grey])


IR = infrared(SCENE)


E = TypeVar("E")


class Detector(Protocol[E]):
    def update(self, frame: Frame, at: float) -> list[E]: ...


def with_osd(img: Frame, i: int) -> Frame:
    """The camera's clock overlay, drawn after the lens: sharp and legible whatever the picture."""
    out = img.copy()
    text = f"2026-11-29 08:{i // 300 % 60:02d}:{i // 5 % 60:02d}  GATE-CAM-1"
    cv2.putText(out, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def play(detector: Detector[E], frame_at: FrameAt, frames: int, first: int = 0, osd: bool = False) -> list[E]:
    """Feed frames first..first+frames-1, at i * DT, with noise (and the OSD clock); all the events."""
    events: list[E] = []
    for i in range(first, first + frames):
        frame = noisy(frame_at(i), i)
        events += detector.update(with_osd(frame, i) if osd else frame, i * DT)
    return events


# -- motion -------------------------------------------------------------------------------------------------

GATE = Zone("gate", [(0.0, 0.3), (0.5, 0.3), (0.5, 1.0), (0.0, 1.0)])  # the left half, below the skyline
RIGHT = [(0.55, 0.0), (1.0, 0.0), (1.0, 1.0), (0.55, 1.0)]


def walking(x0: int, speed: int, start: int = 20, base: Frame = SCENE) -> FrameAt:
    """A figure appearing at x0 at frame `start`, walking `speed` px a frame."""
    return lambda i: figure(base, x0 + speed * (i - start)) if i >= start else base


def during(first: int, last: int, then: Frame, otherwise: Frame = SCENE) -> FrameAt:
    return lambda i: then if first <= i <= last else otherwise


def ramp(i: int) -> Frame:
    """Lights dimming to 40 % over 2 s from frame 20, back up over 2 s from frame 70."""
    gain = 1.0 - 0.06 * min(max(i - 20, 0), 10) + 0.06 * min(max(i - 70, 0), 10)
    return lit(SCENE, gain)


MOTION_CASES = [
    # (what, settings, frames, how many frames, zones that become active)
    ("a figure walking through the zone", MotionSettings(zones=[GATE]), walking(60, 10), 60, {"gate"}),
    ("a figure walking outside the zone", MotionSettings(zones=[GATE]), walking(400, 4), 60, set()),
    ("the same walk, whole frame", MotionSettings(), walking(400, 4), 60, {"all"}),
    ("the same walk inside a mask", MotionSettings(masks=[RIGHT]), walking(400, 4), 60, set()),
    ("a thing of 0.7 % of the frame", MotionSettings(), during(20, 40, square(SCENE, 300, 200, 40, 20)), 60,
     {"all"}),
    ("a thing of 0.08 % of the frame", MotionSettings(), during(20, 40, square(SCENE, 300, 200, 14, 20)), 60,
     set()),
    ("a flash of 1.6 s", MotionSettings(), during(20, 27, square(SCENE, 300, 150, 60, 250)), 60, {"all"}),
    ("a flicker of 0.4 s", MotionSettings(), during(20, 21, square(SCENE, 300, 150, 60, 250)), 60, set()),
    ("lights to 40 % at once", MotionSettings(), during(20, 70, lit(SCENE, 0.4)), 100, set()),
    ("lights dimming over 2 s and back", MotionSettings(), ramp, 100, set()),
    ("day to night (IR switch)", MotionSettings(), during(20, 200, IR), 60, set()),
    ("a still scene with sensor noise, 60 s", MotionSettings(), lambda i: SCENE, 300, set()),
]


@pytest.mark.parametrize(("what", "motion", "frame_at", "frames", "zones"), MOTION_CASES,
                         ids=[c[0] for c in MOTION_CASES])
def test_motion(what: str, motion: MotionSettings, frame_at: FrameAt, frames: int, zones: set[str]) -> None:
    events = play(MotionDetector(motion), frame_at, frames)
    assert all(isinstance(e, MotionEvent) for e in events)
    assert {e.zone for e in events if e.active} == zones, events
    if not zones:
        assert events == []


def test_motion_is_reported_after_min_duration_and_ends_after_clear_after() -> None:
    detector = MotionDetector(MotionSettings(zones=[GATE]))
    # The figure appears at x=60 (frame 20, 4.0 s) and walks right 10 px a frame; its back (x - 15) leaves
    # the zone (x = 320) at frame 48.
    events = play(detector, walking(60, 10), 90)
    assert [(e.zone, e.active) for e in events] == [("gate", True), ("gate", False)]
    started, ended = events
    assert started.at == pytest.approx(4.0 + 1.0)  # the first frame with the figure, plus min_duration_s
    assert 0.002 < started.area < 0.1
    assert ended.at == pytest.approx(47 * DT + 3.0, abs=2 * DT)  # the last frame in the zone, plus clear_after_s


def test_motion_now_and_the_changed_fraction_follow_each_frame() -> None:
    detector = MotionDetector()
    for i in range(20):
        detector.update(noisy(SCENE, i), i * DT)
    assert not detector.motion_now and detector.changed < 0.002
    detector.update(noisy(figure(SCENE, 300), 20), 20 * DT)
    assert detector.motion_now and 0.005 < detector.changed < 0.05
    assert detector.zone_changed["all"] == pytest.approx(detector.changed)
    fg = detector.foreground
    assert fg is not None and fg.shape == (180, 320)  # analysed at 320 px wide
    xs = np.nonzero(fg)[1]
    assert abs(xs.mean() - 150) < 10  # where the figure is (x 300 of 640)
    for i, gain in [(21, 0.8), (22, 0.4), (23, 0.4)]:  # auto-exposure 20 % darker, then the lights go down
        detector.update(noisy(lit(figure(SCENE, 300), gain), i), i * DT)
        assert not detector.suppressed  # the tone curve explains it: no need to go blind and re-learn
        assert detector.motion_now  # the figure is still seen, the darkening is not
        assert detector.changed < 0.05


def test_a_global_change_is_suppressed_and_the_background_learnt_again() -> None:
    detector = MotionDetector()
    play(detector, lambda i: SCENE, 20)
    detector.update(noisy(IR, 20), 20 * DT)
    assert detector.suppressed and not detector.motion_now
    # Once it has settled, the night view is the background: a figure walking in it is motion.
    events = play(detector, walking(100, 8, start=30, base=IR), 40, first=21)
    assert [(e.zone, e.active, e.at) for e in events] == [
        ("all", True, pytest.approx(30 * DT + 1.0))]


def test_motion_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unique"):
        MotionSettings(zones=[GATE, GATE])
    with pytest.raises(ValueError, match="3 points"):
        MotionSettings(masks=[[(0.0, 0.0), (1.0, 1.0)]])


# -- tamper -------------------------------------------------------------------------------------------------

LEARNT = 60  # frames: 12 s, past learn_s (10 s)


def learnt(scene: Frame = SCENE, tamper: TamperSettings | None = None) -> TamperDetector:
    detector = TamperDetector(tamper)
    assert play(detector, lambda i: scene, LEARNT) == []
    assert not detector.learning
    return detector


def kinds(events: list[TamperEvent]) -> list[tuple[str, bool, float]]:
    return [(e.kind, e.active, round(e.at, 6)) for e in events]


def hand() -> Frame:
    """A hand over the lens: dark, warm, brighter in the middle where light leaks between the fingers."""
    yy, xx = np.mgrid[0:H, 0:W]
    glow = 70 - 60 * np.sqrt(((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2)
    return np.clip(np.dstack([glow * 0.6, glow * 0.8, glow]), 0, 255).astype(np.uint8)


COVERS = [("black (a cap, a dead sensor)", np.full((H, W, 3), 6, np.uint8)),
          ("a hand, light leaking through", hand()),
          ("painted over", np.full((H, W, 3), 200, np.uint8))]


@pytest.mark.parametrize("osd", [False, True], ids=["", "with the OSD clock"])
@pytest.mark.parametrize("cover", [c[1] for c in COVERS], ids=[c[0] for c in COVERS])
def test_covered_is_raised_after_its_hold_and_cleared_when_uncovered(cover: Frame, osd: bool) -> None:
    detector = TamperDetector()
    assert play(detector, lambda i: SCENE, LEARNT, osd=osd) == []
    # covered from frame 60 (12 s) to 99 (19.8 s), uncovered from frame 100 (20 s)
    events = play(detector, during(60, 99, cover), 40, first=LEARNT, osd=osd)
    assert kinds(events) == [("covered", True, 17.0)]  # 12 s + covered_hold_s, nothing before
    assert "featureless" in events[0].detail
    events = play(detector, lambda i: SCENE, 20, first=100, osd=osd)
    assert kinds(events) == [("covered", False, 22.0)]  # 20 s + clear_hold_s
    assert detector.active == []


def test_a_black_picture_before_any_view_was_learnt_is_not_covered_and_teaches_nothing() -> None:
    """A camera started on a dark scene at night (or on a black test picture) has no view to differ from:
    calling it covered would also silence its motion detection all night."""
    detector = TamperDetector()
    events = play(detector, lambda i: np.zeros((H, W, 3), np.uint8), 60)
    assert events == []
    assert detector.learning  # still: nothing was learnt from the black frames
    events = play(detector, lambda i: SCENE, 70, first=60)
    assert events == []
    assert not detector.learning  # learnt from the first learn_s of a picture with features
    assert detector.baseline == pytest.approx(detector.reading.sharpness, rel=0.1)


@pytest.mark.parametrize("scene", [
    cv2.circle(cv2.circle(lit(SCENE, 0.25), (100, 60), 12, (255, 255, 255), -1), (500, 80), 12, (255, 255, 240), -1),
    lit(SCENE, 0.1),
], ids=["night with street lights", "nearly black, but the learnt view still shows"])
def test_a_dark_scene_is_not_covered(scene: Frame) -> None:
    detector = learnt()
    assert play(detector, lambda i: scene, 100, first=LEARNT) == []


@pytest.mark.parametrize("osd", [False, True], ids=["", "with the OSD clock"])
def test_defocus_is_raised_after_its_hold_and_cleared_when_sharp_again(osd: bool) -> None:
    detector = TamperDetector()
    assert play(detector, lambda i: SCENE, LEARNT, osd=osd) == []
    blurred = cv2.GaussianBlur(SCENE, (0, 0), 4)  # the OSD stays sharp: the camera draws it after the lens
    events = play(detector, during(60, 119, blurred), 80, first=LEARNT, osd=osd)  # blurred 12 s .. 23.8 s
    assert kinds(events) == [("defocus", True, 22.0), ("defocus", False, 26.0)]  # +10 s; sharp at 24 s, +2 s
    assert "% of the learnt" in events[0].detail


def test_the_sharpness_baseline_is_learnt() -> None:
    # A soft picture is judged against itself: not defocused ...
    soft = learnt(SOFT)
    assert play(soft, lambda i: SOFT, 100, first=LEARNT) == []
    # ... though against the sharp scene's baseline it would be.
    sharp = learnt(SCENE)
    assert kinds(play(sharp, lambda i: SOFT, 60, first=LEARNT)) == [("defocus", True, 22.0)]
    # And a soft picture blurred further is defocused.
    blurred = cv2.GaussianBlur(SCENE, (0, 0), 6)
    assert kinds(play(soft, lambda i: blurred, 60, first=LEARNT + 100)) == [("defocus", True, 42.0)]


@pytest.mark.parametrize(("dx", "dy"), [(160, 0), (-160, 0), (0, 90), (120, 60)])
def test_a_camera_turned_away_is_moved_after_its_hold(dx: int, dy: int) -> None:
    detector = learnt()
    events = play(detector, during(60, 99, view(dx, dy)), 60, first=LEARNT)  # turned 12 s .. 19.8 s
    assert kinds(events) == [("moved", True, 17.0), ("moved", False, 22.0)]


def test_a_camera_facing_somewhere_else_entirely_is_moved() -> None:
    detector = learnt()
    elsewhere = view(source=canvas(7))
    assert kinds(play(detector, lambda i: elsewhere, 30, first=LEARNT)) == [("moved", True, 17.0)]


def test_relearn_takes_a_deliberately_reaimed_view() -> None:
    detector = learnt()
    aimed = view(160, 0)
    assert kinds(play(detector, lambda i: aimed, 30, first=LEARNT)) == [("moved", True, 17.0)]
    detector.relearn()
    # learn_s (10 s) of the new view from 18 s, then clear_hold_s
    assert kinds(play(detector, lambda i: aimed, 80, first=90)) == [("moved", False, 30.2)]


def jitter(i: int) -> Frame:
    """The mast sways: the view 1-2 px off in a random direction every frame."""
    rng = np.random.default_rng(i)
    return view(int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))


QUIET_CASES = [
    ("sensor noise", lambda i: SCENE),
    ("a figure walking through", walking(20, 6, start=LEARNT)),
    ("a figure right in front", during(70, 90, figure(SCENE, 320, 200, 300))),
    ("jitter of 1-2 px", jitter),
    ("lights to 40 % and back", during(70, 120, lit(SCENE, 0.4))),
    ("lights dimming over 2 s and back", lambda i: ramp(i - 40)),
    ("day to night (IR switch)", during(70, 200, IR)),
]


@pytest.mark.parametrize(("what", "frame_at"), QUIET_CASES, ids=[c[0] for c in QUIET_CASES])
def test_no_tamper(what: str, frame_at: FrameAt) -> None:
    detector = learnt()
    assert play(detector, frame_at, 150, first=LEARNT) == []  # 30 s


def test_covered_stops_defocus_and_moved_from_being_judged() -> None:
    detector = learnt(tamper=TamperSettings(covered_hold_s=20.0))
    black = np.zeros((H, W, 3), np.uint8)
    # 15 s covered, under its (raised) hold: a black frame is neither blurred nor another view
    assert play(detector, lambda i: black, 75, first=LEARNT) == []


# -- loitering ----------------------------------------------------------------------------------------------

STREET = CameraSimulator(osd=False)  # its scene and person, drawn by _render at the given time; never started
MARGIN = STREET._person_margin()  # off the frame by this much (a fraction of its width), a person is out of view
DOOR = Zone("door", [(0.25, 0.6), (0.75, 0.6), (0.75, 1.0), (0.25, 1.0)])  # the ground in front of the middle
QUICK = LoiterSettings(zones=[DOOR], dwell_s=3.0)  # grace_s 5, detect_every_s 1
Who = Callable[[float], "_Person | None"]  # the person in view at time t, if any


def street(who: Who) -> FrameAt:
    """The simulator's frame at i * DT with `who`'s person in it."""
    return lambda i: STREET._render(_State(person=who(i * DT)), i * DT, i, None, False)


def standing(x: float = 0.5, y: float = 0.85) -> Who:
    return lambda t: _Person(x, y, 0.0)


WALKS_IN = _Person(0.1, 0.85, 0.0, vx=0.2, until=2.0)  # from x 0.1 (outside the door zone) to 0.5, standing from 2 s
THROUGH = _Person(-MARGIN, 0.85, 0.0, vx=(1 + 2 * MARGIN) / 2.5, until=2.5, leave_at_end=True)  # in view 2.5 s


def walks_in(t: float) -> _Person:
    return WALKS_IN


def walks_through(t: float) -> _Person | None:
    return None if THROUGH.gone(t, MARGIN) else THROUGH


def hidden(first: int, last: int, who: Who) -> Who:
    """`who`, but nobody in view in frames first..last (behind a bus, missed by the detector)."""
    return lambda t: None if first * DT - 1e-9 <= t <= last * DT + 1e-9 else who(t)


Loitering = list[tuple[str, bool, float, float]]


def loiter(detector: LoiterDetector, frame_at: FrameAt, frames: int, first: int = 0,
           motion: Callable[[int], bool] = lambda i: True) -> tuple[Loitering, list[float]]:
    """Feed frames first..first+frames-1 at i * DT with noise: (zone, active, at, dwell_s) of every event, and
    the times the people detector looked (ran, or had its answer for an unchanged picture) and found somebody."""
    events: list[LoiterEvent] = []
    seen: list[float] = []
    for i in range(first, first + frames):
        looks = detector.looks
        events += detector.update(noisy(frame_at(i), i), i * DT, motion(i))
        if detector.looks > looks and detector.people:
            seen.append(round(i * DT, 6))
    return [(e.zone, e.active, round(e.at, 6), round(e.dwell_s, 6)) for e in events], seen


@pytest.mark.parametrize(("what", "x", "y", "walking"), [
    ("standing in the middle", 0.5, 0.85, False),
    ("standing further back", 0.2, 0.7, False),
    ("standing near the bottom edge", 0.8, 0.95, False),
    ("walking", 0.4, 0.85, True),
    ("walking, mid-stride", 0.62, 0.8, True),
])
def test_the_simulators_person_is_found_where_it_stands(what: str, x: float, y: float, walking: bool) -> None:
    detector = LoiterDetector(QUICK)
    person = _Person(x - 0.3, y, 0.0, vx=0.3) if walking else _Person(x, y, 0.0)  # at (x, y) at 1 s
    frame = STREET._render(_State(person=person), 1.0, 0, None, False)
    detector.update(noisy(frame, 0), 0.0, True)
    assert detector.hog_runs == 1
    (found,) = detector.people  # one box for one person, after non-maximum suppression
    assert found.score > QUICK.hit_threshold + 0.5  # 1.5-3.3 here; the simulator's empty scenes score under 0.75
    assert found.feet == (pytest.approx(x, abs=0.03), pytest.approx(y, abs=0.06))
    assert 0.4 < found.box[3] < 0.6  # the person is 1/3 of the frame high, the box a third more


def test_an_empty_scene_has_nobody_in_it() -> None:
    detector = LoiterDetector(QUICK)
    assert loiter(detector, street(lambda t: None), 25) == ([], [])
    assert detector.looks == 5  # motion in every frame: once a second
    assert detector.hog_runs == 1  # the same still picture each time: its answer is kept


def test_a_person_who_walks_in_and_stands_is_loitering_after_dwell_s() -> None:
    detector = LoiterDetector(QUICK)
    events, seen = loiter(detector, street(walks_in), 40)
    # Seen at 0 s outside the zone (x 0.1), first in it at 1 s (x 0.3): loitering at 1 + dwell_s.
    assert events == [("door", True, 4.0, 3.0)]
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert detector.active_zones == ["door"] and detector.tracking


@pytest.mark.parametrize("settings_", [QUICK, LoiterSettings(dwell_s=3.0)], ids=["door zone", "whole frame"])
def test_a_person_walking_through_is_not_loitering(settings_: LoiterSettings) -> None:
    detector = LoiterDetector(settings_)
    events, seen = loiter(detector, street(walks_through), 40)
    assert events == []
    assert seen == [1.0, 2.0]  # found while in view (2.5 s, under dwell_s)
    assert not detector.tracking


def test_a_person_standing_outside_the_zone_is_not_loitering() -> None:
    detector = LoiterDetector(QUICK)
    events, seen = loiter(detector, street(standing(0.12)), 60)
    assert events == []
    assert len(seen) == 12  # found every time, but outside the door zone
    assert not detector.tracking


@pytest.mark.parametrize(("last", "events"), [
    (14, [("door", True, 3.0, 3.0)]),  # hidden 0.2-2.8 s: missed at 1 and 2 s, under grace_s: the dwell runs on
    (29, [("door", True, 9.0, 3.0)]),  # hidden 0.2-5.8 s: unseen 5 s (grace_s) at 5 s, a new stay from 6 s
], ids=["hidden under grace_s", "hidden for grace_s"])
def test_missed_detections_under_grace_s_do_not_reset_the_dwell(last: int, events: Loitering) -> None:
    detector = LoiterDetector(QUICK)
    assert loiter(detector, street(hidden(1, last, standing())), 60)[0] == events


def test_loitering_ends_grace_s_after_the_person_is_last_seen() -> None:
    detector = LoiterDetector(QUICK)
    gone_from = 40  # 8 s: last seen at 7 s
    events, _ = loiter(detector, street(hidden(gone_from, 10**6, standing())), 80, motion=lambda i: i < 5)
    # Motion only in the first second: the detector keeps running because it tracks the person.
    assert events == [("door", True, 3.0, 3.0), ("door", False, 12.0, 7.0)]  # 7 s + grace_s; in the zone 0-7 s
    assert detector.active_zones == [] and not detector.tracking
    assert detector.looks == 13  # at 0, 1, ... 12 s; then neither motion nor a person to track
    assert detector.hog_runs == 3  # at 0, at 5 (GLANCE_RECHECK_S) and at 8 s (gone): the rest, the same picture


@pytest.mark.parametrize("every", [1.0, 0.5, 2.5])
def test_the_people_detector_runs_at_most_every_detect_every_s(every: float) -> None:
    detector = LoiterDetector(LoiterSettings(zones=[DOOR], detect_every_s=every))
    rng = np.random.default_rng(3)
    at, runs = 0.0, []
    frame = noisy(street(standing())(0), 0)
    while at < 12.0:  # frames 0.1-0.35 s apart, as a busy worker delivers them
        before = detector.looks
        detector.update(frame, at, True)
        if detector.looks > before:
            runs.append(at)
        at += float(rng.uniform(0.1, 0.35))
    assert min(np.diff(runs)) >= every - 1e-9
    assert len(runs) >= 12.0 / (every + 0.35)


def test_the_people_detector_runs_again_only_on_a_changed_picture_or_after_glance_recheck_s() -> None:
    detector = LoiterDetector(QUICK)
    events, seen = loiter(detector, street(standing()), 70)  # motion in every frame, a person standing still
    assert events == [("door", True, 3.0, 3.0)]
    assert seen == [float(t) for t in range(14)]  # looked at once a second, found every time
    assert detector.hog_runs == 3  # run at 0, 5 and 10 s; the rest, the same picture: the same answer
    # The person walks off: the picture changed, so the detector runs at its next look (14.2 s) and nobody is
    # found; then once more at 19.2 s (GLANCE_RECHECK_S).
    events, seen = loiter(detector, street(hidden(71, 10**6, standing())), 40, first=71)
    assert detector.hog_runs == 5 and seen == []
    assert events == [("door", False, 18.2, 13.0)]  # last seen at 13 s: gone at the first look grace_s after


def test_the_people_detector_runs_only_on_motion_or_while_tracking() -> None:
    detector = LoiterDetector(QUICK)
    # A person already standing in the zone, but the motion detector sees nothing: not looked at.
    assert loiter(detector, street(standing()), 25, motion=lambda i: False) == ([], [])
    assert detector.looks == 0
    # Motion in one frame (2 s in): found, and tracked from then on without motion.
    events, seen = loiter(detector, street(standing()), 40, first=10, motion=lambda i: i == 10)
    assert events == [("door", True, 5.0, 3.0)]
    assert seen == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    # Motion with nobody in the zone: one look per detect_every_s while it lasts, and nothing after.
    detector = LoiterDetector(QUICK)
    assert loiter(detector, street(standing(0.12)), 50, motion=lambda i: 10 <= i < 20) == ([], [2.0, 3.0])
    assert detector.looks == 2


def test_the_pipeline_reports_loitering_but_not_while_tampered() -> None:
    class Tampered:
        active = ("covered",)

        def update(self, frame: Frame, at: float) -> list[TamperEvent]:
            return []

    config = LoiterConfig(zones=[ZoneConfig(name="door", polygon=list(DOOR.polygon))], dwell_s=3.0)
    found: list[tuple[str, dict[str, object]]] = []
    pipeline = Pipeline({"loitering": config.model_dump()}, (W, H))
    assert pipeline.motion is None and pipeline.tamper is None and pipeline.loitering is not None
    frame_at = street(walks_in)
    for i in range(30):  # without a motion detector, the people detector runs every detect_every_s
        found += pipeline.update(noisy(frame_at(i), i), i * DT)
    assert found == [("loitering", {"zone": "door", "active": True, "dwell_s": 3.0})]
    tampered = Pipeline({"loitering": config.model_dump()}, (W, H))
    tampered.tamper = Tampered()  # type: ignore[assignment]
    assert [tampered.update(noisy(frame_at(i), i), i * DT) for i in range(30)] == [[]] * 30

    # With motion configured, the people detector waits for motion: a still scene, then the person walks in.
    pipeline = Pipeline({"motion": MotionConfig().model_dump(), "loitering": config.model_dump()}, (W, H))
    later = street(lambda t: None if t < 2.0 else _Person(0.1, 0.85, 2.0, vx=0.2, until=4.0))
    found = [kind for i in range(10) for kind in pipeline.update(noisy(later(i), i), i * DT)]
    assert found == [] and pipeline.loitering is not None and pipeline.loitering.hog_runs == 0
    found = [event for i in range(10, 40) for event in pipeline.update(noisy(later(i), i), i * DT)]
    assert ("loitering", {"zone": "door", "active": True, "dwell_s": 3.0}) in found


def test_loiter_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unique"):
        LoiterSettings(zones=[DOOR, DOOR])
    with pytest.raises(ValueError, match="3 points"):
        LoiterSettings(zones=[Zone("line", [(0.0, 0.0), (1.0, 1.0)])])
    with pytest.raises(ValueError, match="longer than detect_every_s"):
        LoiterSettings(grace_s=1.0, detect_every_s=1.0)
    with pytest.raises(ValueError, match="longer than detect_every_s"):
        LoiterConfig(grace_s=2.0, detect_every_s=3.0)


# -- fuzz ---------------------------------------------------------------------------------------------------

FAST = TamperSettings(learn_s=0.4, covered_hold_s=0.4, defocus_hold_s=0.4, moved_hold_s=0.4, clear_hold_s=0.2)
ZONED = MotionSettings(zones=[GATE, Zone("sliver", [(0.0, 0.0), (0.01, 0.0), (0.0, 0.01)])], masks=[RIGHT],
                       min_duration_s=0.2, clear_after_s=0.4)


@st.composite
def any_frame(draw: st.DrawFn) -> np.ndarray:
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 72))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4)]))
    return draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))


@given(st.lists(st.tuples(any_frame(), st.floats(0.0, 2.0)), min_size=1, max_size=12))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_frames_never_crash_either_detector(frames: list[tuple[np.ndarray, float]]) -> None:
    motion, tamper = MotionDetector(ZONED), TamperDetector(FAST)
    at = 0.0
    for frame, step in frames:
        at += step
        for _ in range(3):  # the same frame again: learning ends, holds run
            assert all(isinstance(e, MotionEvent) for e in motion.update(frame, at))
            assert all(isinstance(e, TamperEvent) for e in tamper.update(frame, at))
            at += 0.25


def test_random_full_size_frames_never_crash_either_detector() -> None:
    rng = np.random.default_rng(5)
    motion, tamper = MotionDetector(ZONED), TamperDetector(FAST)
    for i in range(60):
        kind = i % 4
        if kind == 0:
            frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # pure noise
        elif kind == 1:
            frame = np.full((H, W, 3), int(rng.integers(0, 256)), np.uint8)  # flat
        elif kind == 2:
            frame = rng.integers(0, 256, (int(rng.integers(1, 400)), int(rng.integers(1, 700)), 3), dtype=np.uint8)
        else:
            frame = noisy(SCENE, i)
        motion.update(frame, i * DT)
        tamper.update(frame, i * DT)
    sharpness = tamper.reading.sharpness
    assert np.isfinite(motion.changed) and (sharpness is None or np.isfinite(sharpness))
    for odd in [np.zeros((0, 8, 3), np.uint8), np.zeros((8, 8, 2), np.uint8), np.zeros(8, np.uint8)]:
        assert motion.update(odd, 99.0) == [] and tamper.update(odd, 99.0) == []  # not an image: ignored
    for other in [np.full((8, 8), np.nan), np.full((8, 8, 3), 1e9), np.ones((8, 8), bool)]:
        motion.update(other, 100.0)  # another dtype: clipped to 0..255
        tamper.update(other, 100.0)


@given(st.lists(st.tuples(any_frame(), st.floats(0.0, 2.0)), min_size=1, max_size=6))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_frames_never_crash_the_loiter_detector(frames: list[tuple[np.ndarray, float]]) -> None:
    detector = LoiterDetector(LoiterSettings(zones=[DOOR], dwell_s=0.5, grace_s=1.0, detect_every_s=0.0))
    at = 0.0
    for frame, step in frames:
        at += step
        assert all(isinstance(e, LoiterEvent) for e in detector.update(frame, at, True))


def test_odd_frames_never_crash_the_loiter_detector() -> None:
    detector = LoiterDetector(LoiterSettings(detect_every_s=0.0))
    for odd in [np.zeros((0, 8, 3), np.uint8), np.zeros((8, 8, 2), np.uint8), np.zeros(8, np.uint8),
                np.zeros((1, 700, 3), np.uint8), np.zeros((700, 1), np.uint8)]:
        assert detector.update(odd, 1.0, True) == []  # no image, or no camera's: not looked at
    assert detector.hog_runs == 0
    for other in [np.full((8, 8), np.nan), np.full((40, 30, 3), 1e9), np.ones((30, 40), bool),
                  np.random.default_rng(1).integers(0, 256, (H, W, 4), dtype=np.uint8)]:
        assert detector.update(other, 2.0, True) == []  # another dtype: clipped to 0..255
    assert detector.hog_runs == 4


def test_motion_is_reported_only_within_its_schedule() -> None:
    """The detector runs all day; a person after hours is reported, the same walk in school hours is not,
    and a motion that began after hours is ended even once the schedule is over."""
    motion = MotionConfig.model_validate({
        "zones": [{"name": "gate", "polygon": [[0, 0.3], [0.5, 0.3], [0.5, 1], [0, 1]]}], "min_duration_s": 1.0,
        "clear_after_s": 1.0, "schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "18:00",
                                            "to": "06:30"}]})
    pipeline = Pipeline({"motion": motion.model_dump(), "timezone": "Asia/Shanghai"}, (640, 360))
    school_hours = 1_796_104_800.0  # Monday 2026-12-07 14:00 in Shanghai
    after_hours = school_hours + 5 * 3600  # 19:00
    walk = walking(20, 6)

    def run(wall0: float) -> list[tuple[str, bool]]:
        found = []
        for i in range(80):
            found += [(d["zone"], d["active"]) for _, d in pipeline.update(noisy(walk(i), i), 100 + i * 0.2,
                                                                           wall0 + i * 0.2)]
        return found

    assert run(school_hours) == [], "in school hours the gate's motion is nobody's business"
    assert run(after_hours) == [("gate", True), ("gate", False)]
