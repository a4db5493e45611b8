"""Camera analytics, sans-IO: motion in zones, camera tamper (covered, defocused, turned away) and loitering.

A camera worker passes each decoded frame (a BGR uint8 array, normally 640x360 from the camera's
substream) and the time (seconds, monotonic; never read here) and gets plain events back. No I/O, no
threads, no windows, so everything is tested with synthetic frames and fuzzed.

Motion and tamper work on a downscaled grey copy (320 px wide; 160 px for the view comparison): motion +
tamper take about 1.2 ms a 640x360 frame, 0.6 % of a core at 5 frames/s (`python -m bench.camera_analytics`).
Loitering runs OpenCV's HOG people detector on the frame 288 px high, about 14 ms a call, at most once a second
and only on motion or while a person is tracked: at most about 1.5 % of a core.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[Any]  # OpenCV's stubs type every array they return as of any dtype
Point = tuple[float, float]
TamperKind = Literal["covered", "defocus", "moved"]
TAMPER_KINDS: tuple[TamperKind, ...] = ("covered", "defocus", "moved")

WORK_WIDTH = 320  # motion and sharpness are measured at this width
VIEW_WIDTH = 160  # the view comparison (phase correlation) and "covered" at this width
GAIN_CELLS = (8, 6)  # the grid of the brightness correction across the frame (x, y)
GLOBAL_RESIDUAL = 0.1  # a global change leaving more than this of the frame changed after correction: re-learn
EPS = 1e-6  # times are sums of frame periods: 0.2 * 5 may come out under 1.0
MAX_GAP_S = 0.5  # a still frame this soon after a moving one does not break a motion run (one dropped frame)
TILES = (8, 6)  # the tamper detector judges contrast and sharpness per tile of this grid (x, y)
COVERED_SHARE = 0.8  # covered: this share of the tiles featureless (OSD text and a light leak may keep some)
DARK_MATCH = 0.4  # a featureless frame matching the learnt view at least this well is night, not covered
MIN_SNR = 5.0  # defocus is judged only where the image's std-dev is this many times the noise
HOLD_GAP_S = 1.0  # a tamper condition missing this long restarts its hold (a hand over the lens moves)


def grey_small(frame: Image, width: int) -> Image | None:
    """`frame` (grey, BGR or BGRA; any dtype, clipped to 0..255) as grey uint8 at most `width` wide, aspect
    kept; None for an empty frame or a shape that is no image."""
    if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
        return None
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        return None
    img = frame if frame.dtype == np.uint8 else np.clip(np.nan_to_num(frame), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        channels = img.shape[2]
        img = img[:, :, 0] if channels == 1 else cv2.cvtColor(
            img, cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY)
    h, w = img.shape
    if w <= width:
        return np.ascontiguousarray(img)
    size = (width, max(1, round(h * width / w)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def polygon_mask(polygon: Sequence[Point], width: int, height: int) -> Image:
    """A 0/255 mask of a polygon given in normalised (0..1) frame coordinates."""
    mask = np.zeros((height, width), np.uint8)
    pts = np.array([[x * width, y * height] for x, y in polygon], np.float64)
    pts = np.clip(np.nan_to_num(pts), -4 * max(width, height), 4 * max(width, height))  # int32 for OpenCV
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def decay(dt: float, tau: float) -> float:
    """The weight of a new sample in a running average with time constant `tau` after `dt` seconds."""
    if dt <= 0 or not math.isfinite(dt):
        return 0.0
    return 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0


def tone_mapped(bg: Image, img: Image, mask: Image) -> Image:
    """`bg` mapped through the tone curve that best turns it into `img` where `mask` is set: the mean of
    `img` per 8-level band of `bg` (on every other pixel), interpolated; a plain gain if too few bands."""
    levels = np.clip(bg, 0, 255).astype(np.uint8)
    sel = mask[::2, ::2] > 0
    src = levels[::2, ::2][sel]
    dst = img[::2, ::2][sel]
    bands = src >> 3
    counts = np.bincount(bands, minlength=32)
    ok = counts >= 8
    if np.count_nonzero(ok) < 2:
        bg_mean = float(src.mean()) if src.size else 0.0
        gain = min(max(float(dst.mean()) / bg_mean, 0.1), 10.0) if bg_mean >= 2.0 else 1.0
        return bg * np.float32(gain)
    centres = np.bincount(bands, weights=src, minlength=32)[ok] / counts[ok]
    means = np.bincount(bands, weights=dst, minlength=32)[ok] / counts[ok]
    # Lights, exposure and gamma never swap darker and brighter: the curve only rises.
    lut = np.interp(np.arange(256), centres, np.maximum.accumulate(means)).astype(np.float32)
    return cv2.LUT(levels, lut)


def shaded(expected: Image, img: Image, mask: Image,
           cells: tuple[int, int] = GAIN_CELLS) -> Image:
    """`expected` times a smooth gain field (a coarse grid of `img`/`expected` over `mask`, interpolated):
    IR illuminators and floodlights light the middle more than the corners."""
    h, w = img.shape
    if w < cells[0] * 4 or h < cells[1] * 4:
        return expected
    m = (mask > 0).astype(np.float32)
    got = cv2.resize(img * m, cells, interpolation=cv2.INTER_AREA)
    want = cv2.resize(expected * m, cells, interpolation=cv2.INTER_AREA)
    share = cv2.resize(m, cells, interpolation=cv2.INTER_AREA)
    gain = np.where((share > 0.2) & (want > 2.0), got / np.maximum(want, 1e-3), 1.0).astype(np.float32)
    gain = np.clip(gain, 0.25, 4.0)
    return expected * cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)


def tile_stats(img: Image, tiles: tuple[int, int] = TILES) -> tuple[Image, Image]:
    """(mean, std-dev) of each tile of a float32 image, as arrays of tiles[1] x tiles[0]."""
    size = (min(tiles[0], img.shape[1]), min(tiles[1], img.shape[0]))
    mean = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    square = cv2.resize(img * img, size, interpolation=cv2.INTER_AREA)
    return mean, np.sqrt(np.maximum(square - mean * mean, 0))


def sharpness(grey: Image, noise: float) -> float | None:
    """How sharp the picture is, whatever its lighting, contrast and noise: per tile, the std-dev of the
    Laplacian less what the sensor noise puts into it (20 sigma^2 for this kernel) over the tile's grey
    std-dev; the median over the tiles with contrast enough for their noise (MIN_SNR). None if under a
    quarter of the tiles have."""
    img = grey.astype(np.float32)
    lap = cv2.Laplacian(img, cv2.CV_32F)
    size = (min(TILES[0], img.shape[1]), min(TILES[1], img.shape[0]))
    lap_var = cv2.resize(lap * lap, size, interpolation=cv2.INTER_AREA)
    std = tile_stats(img)[1]
    usable = std >= MIN_SNR * max(noise, 0.5)
    if np.count_nonzero(usable) < max(1, usable.size // 4):
        return None
    detail = np.sqrt(np.maximum(lap_var - 20 * noise**2, 0)) / np.maximum(std, 1e-3)
    return float(np.median(detail[usable]))


# -- motion --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: Sequence[Point]  # normalised 0..1 of the frame (x right, y down), at least 3 points


@dataclass
class MotionSettings:
    zones: list[Zone] = field(default_factory=list)  # none: the whole frame as zone "all"
    masks: list[Sequence[Point]] = field(default_factory=list)  # polygons ignored everywhere (a tree, a clock)
    min_area: float = 0.002  # fraction of the zone's (unmasked) area that must change
    min_duration_s: float = 1.0  # motion must last this long before it is reported
    clear_after_s: float = 3.0  # no motion this long ends the zone's motion
    max_global: float = 0.5  # more of the unmasked frame changed at once: light/IR/exposure, not motion
    threshold: float = 20.0  # grey levels (0..255) a pixel must differ from the background
    background_s: float = 10.0  # time constant of the background where nothing moves
    foreground_s: float = 30.0  # ... and where something does: what stops somewhere is absorbed in ~1 min
    settle_s: float = 1.0  # after a global change, motion is ignored this long while the background re-learns

    def __post_init__(self) -> None:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique: {names}")
        for polygon in [z.polygon for z in self.zones] + list(self.masks):
            if len(polygon) < 3:
                raise ValueError(f"a polygon needs at least 3 points: {polygon}")
        if not 0 < self.max_global <= 1 or not 0 <= self.min_area <= 1:
            raise ValueError("min_area and max_global are fractions (0..1)")


@dataclass(frozen=True)
class MotionEvent:
    zone: str
    active: bool  # true: motion has lasted min_duration_s; false: still for clear_after_s
    at: float
    area: float  # fraction of the zone changed in the frame that decided it


@dataclass
class _ZoneState:
    name: str
    mask: Image
    area: int
    active: bool = False
    run_since: float | None = None  # first frame of the current run of moving frames
    last_motion: float | None = None
    changed: float = 0.0


class MotionDetector:
    """Motion per zone against an adaptive background (a running average of a blurred grey image, 320 px wide).

    Each frame is compared with the background passed through the frame's tone curve and a smooth shading,
    so lights, exposure and IR illuminators changing the whole picture are not motion. A change over
    `max_global` of the frame that these do not explain (an IR switch, a camera knocked or uncovered) is
    suppressed and the background re-learnt. Changed pixels are counted per zone, masks left out; a zone's
    motion is reported once it has lasted `min_duration_s` and ends after `clear_after_s` without any.
    Pixels that differ learn slowly (`foreground_s`): a person standing still stays foreground for about a
    minute, and one walking leaves no ghost.
    """

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self.changed = 0.0  # fraction of the unmasked frame changed in the last frame (0 while suppressed)
        self.motion_now = False  # any zone over min_area in the last frame
        self.suppressed = False  # the last frame was taken as a global (lighting) change
        self._shape: tuple[int, ...] | None = None
        self._bg: Image | None = None
        self._fg: Image | None = None
        self._valid: Image | None = None
        self._valid_area = 0
        self._zones: list[_ZoneState] = []
        self._last_at: float | None = None
        self._settle_until = -math.inf
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))

    @property
    def foreground(self) -> Image | None:
        """The last frame's changed pixels (0/255, masks applied) at the analysis size, e.g. for finding
        where a loiterer is; None before the first frame."""
        return self._fg

    @property
    def zone_changed(self) -> dict[str, float]:
        """Fraction of each zone changed in the last frame."""
        return {z.name: z.changed for z in self._zones}

    @property
    def active_zones(self) -> list[str]:
        return [z.name for z in self._zones if z.active]

    def _setup(self, grey: Image) -> None:
        h, w = grey.shape
        s = self.settings
        valid = np.full((h, w), 255, np.uint8)
        for polygon in s.masks:
            valid[polygon_mask(polygon, w, h) > 0] = 0
        zones = s.zones or [Zone("all", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))]
        old = {z.name: z for z in self._zones}
        self._zones = []
        for zone in zones:
            mask = cv2.bitwise_and(polygon_mask(zone.polygon, w, h), valid)
            state = _ZoneState(zone.name, mask, cv2.countNonZero(mask))
            if zone.name in old:  # a new frame size keeps what the zone was doing
                prev = old[zone.name]
                state.active, state.last_motion = prev.active, prev.last_motion
            self._zones.append(state)
        self._valid, self._valid_area = valid, cv2.countNonZero(valid)
        self._bg = None
        self._fg = np.zeros((h, w), np.uint8)

    def update(self, frame: Image, at: float) -> list[MotionEvent]:
        """The events this frame decides. `frame`: BGR (or grey, BGRA) uint8, any size; `at`: seconds on a
        clock that does not go back. A new frame size starts the background again."""
        grey = grey_small(frame, WORK_WIDTH)
        if grey is None:
            return []
        if grey.shape != self._shape:
            self._shape = grey.shape
            self._setup(grey)
        assert self._valid is not None and self._fg is not None
        s = self.settings
        dt = 0.0 if self._last_at is None else max(0.0, at - self._last_at)
        self._last_at = at
        img = cv2.GaussianBlur(grey, (5, 5), 0).astype(np.float32)
        if self._bg is None:
            self._bg = img.copy()
            self._fg[:] = 0
            return self._step_zones([], at, observed=False)
        bg = self._bg

        # Compare with the background passed through the scene's current tone curve and a smooth shading
        # across it (IR illuminators and floodlights light the middle more than the corners), so exposure,
        # lights and gamma changing the frame are not motion. Curve and shading are estimated twice, from
        # every pixel and from those the first estimate left unchanged, as a person bends them where it
        # stands; the estimate that explains more of the frame wins.
        valid, area = self._valid, max(self._valid_area, 1)
        raw = self._over(img, shaded(tone_mapped(bg, img, valid), img, valid))
        still = cv2.bitwise_and(valid, cv2.bitwise_not(raw))
        if cv2.countNonZero(still) >= 0.2 * area:
            second = self._over(img, shaded(tone_mapped(bg, img, still), img, still))
            if cv2.countNonZero(second) < cv2.countNonZero(raw):
                raw = second
        fg = cv2.morphologyEx(raw, cv2.MORPH_OPEN, self._kernel)  # drops single noisy pixels
        changed = cv2.countNonZero(fg) / area

        # More than max_global of the frame changed at once (the plain difference) is no person: lights,
        # an IR switch, exposure, a camera knocked or uncovered. If the curve and shading explain it, they
        # carry on while the background catches up; if they leave much changed, that would be "motion" for
        # the next minute, so start the background again from this frame and ignore motion while the
        # exposure settles.
        global_change = cv2.countNonZero(self._over(img, bg)) / area > s.max_global
        if global_change and changed > GLOBAL_RESIDUAL:
            self._bg = img.copy()
            self._fg[:] = 0
            self._settle_until = at + s.settle_s
            self.suppressed = True
            self.changed, self.motion_now = 0.0, False
            for zone in self._zones:
                zone.changed = 0.0
                if not zone.active:
                    zone.run_since = None  # the frames before were the start of the same change
            return self._step_zones([], at, observed=False)

        settling = at < self._settle_until
        fast = decay(dt, 0.3) if settling or global_change else decay(dt, s.background_s)
        slow = decay(dt, 0.3) if settling else decay(dt, s.foreground_s)
        if fast > 0:
            cv2.accumulateWeighted(img, bg, fast, mask=cv2.bitwise_not(raw))
        if slow > 0:
            cv2.accumulateWeighted(img, bg, slow, mask=raw)
        self._fg = fg
        self.suppressed = settling
        if settling:
            self.changed, self.motion_now = 0.0, False
            for zone in self._zones:
                zone.changed = 0.0
            return self._step_zones([], at, observed=False)
        self.changed = changed
        moving = []
        for zone in self._zones:
            zone.changed = cv2.countNonZero(cv2.bitwise_and(fg, zone.mask)) / zone.area if zone.area else 0.0
            if zone.area and zone.changed >= s.min_area and zone.changed > 0:
                moving.append(zone.name)
        self.motion_now = bool(moving)
        return self._step_zones(moving, at, observed=True)

    def _over(self, img: Image, expected: Image) -> Image:
        """0/255 where `img` differs from `expected` by more than the threshold, masks applied."""
        assert self._valid is not None
        over = np.where(cv2.absdiff(img, expected) > self.settings.threshold, np.uint8(255), np.uint8(0))
        return cv2.bitwise_and(over, self._valid)

    def _step_zones(self, moving: list[str], at: float, observed: bool) -> list[MotionEvent]:
        """Advance each zone's run and hold; `observed` False: this frame says nothing about motion."""
        s = self.settings
        events: list[MotionEvent] = []
        for zone in self._zones:
            recent = zone.last_motion is not None and at - zone.last_motion <= MAX_GAP_S
            if observed and zone.name in moving:
                if zone.run_since is None or not recent:
                    zone.run_since = at
                zone.last_motion = at
                if not zone.active and at - zone.run_since >= s.min_duration_s - EPS:
                    zone.active = True
                    events.append(MotionEvent(zone.name, True, at, zone.changed))
            elif zone.active:
                if zone.last_motion is None or at - zone.last_motion >= s.clear_after_s - EPS:
                    zone.active, zone.run_since = False, None
                    events.append(MotionEvent(zone.name, False, at, zone.changed))
            elif not recent:
                zone.run_since = None
        return events


# -- tamper --------------------------------------------------------------------------------------------------


@dataclass
class TamperSettings:
    learn_s: float = 10.0  # the sharpness baseline and the reference view come from this much uncovered view
    covered_hold_s: float = 5.0
    defocus_hold_s: float = 10.0
    moved_hold_s: float = 5.0
    clear_hold_s: float = 2.0  # a raised tamper clears once the view has been back this long
    covered_std: float = 8.0  # grey std-dev (0..255) of a tile (1/8 x 1/6 of the frame) below which it is featureless
    defocus_ratio: float = 0.35  # sharpness below this fraction of the learnt baseline is defocus
    moved_min_match: float = 0.15  # phase-correlation peak below which the view is not the reference
    moved_max_shift: float = 0.08  # shift, as a fraction of width or height, beyond which the camera moved
    adapt_s: float = 1800.0  # time constant of the baseline and reference following a normal view


@dataclass(frozen=True)
class TamperEvent:
    kind: TamperKind
    active: bool
    at: float
    detail: str


@dataclass
class _Hold:
    """A condition raised once it has held for `hold_s` (gaps up to HOLD_GAP_S tolerated) and cleared once
    it has been absent for `clear_s` without a break: a flickering tamper stays raised."""

    hold_s: float
    clear_s: float
    active: bool = False
    since: float | None = None  # raising: first frame of the run; active: first frame without the condition
    last: float | None = None  # raising: last frame with the condition

    def update(self, condition: bool, at: float) -> bool | None:
        """The new state when it changes, else None."""
        if not self.active:
            if condition:
                if self.since is None or self.last is None or at - self.last > HOLD_GAP_S:
                    self.since = at
                self.last = at
                if at - self.since >= self.hold_s - EPS:
                    self.active, self.since = True, None
                    return True
            elif self.last is None or at - self.last > HOLD_GAP_S:
                self.since = None
            return None
        if condition:
            self.since = None
            return None
        if self.since is None:
            self.since = at
        if at - self.since >= self.clear_s - EPS:
            self.active, self.since, self.last = False, None, None
            return False
        return None

    def pause(self) -> None:
        """Not evaluated this frame: a pending raise starts over, an active one stays."""
        if not self.active:
            self.since = self.last = None


@dataclass
class TamperReading:
    """What the last frame measured, for health pages and tuning."""

    std: float = 0.0  # grey std-dev at 160 px wide
    flat: float = 0.0  # share of the picture's tiles with a grey std-dev under covered_std
    sharpness: float | None = None  # see sharpness(); None: too dark or flat to tell
    noise: float = 0.0  # sensor noise, grey levels std-dev at 320 px wide
    shift: tuple[float, float] = (0.0, 0.0)  # of the view against the reference, fractions of width, height
    match: float = 0.0  # phase-correlation peak against the reference (about 1 same view, < 0.1 another)


class TamperDetector:
    """Covered lens, defocus and a camera turned away, each raised after its hold and cleared when the view
    returns.

    - covered: COVERED_SHARE of the picture's tiles featureless (grey std-dev under `covered_std`) and the
      view does not match the reference (a very dark scene that still matches it is night, not a lens covered);
    - defocus: sharpness() (per tile, the Laplacian less sensor noise over the contrast, so lighting and
      noise cancel; the median over the tiles, so the camera's sharp OSD text does not count) under
      `defocus_ratio` of the baseline learnt over the first `learn_s`; not judged where the picture is too
      dark or flat for its noise;
    - moved: phase correlation of the view (160 px wide, windowed) against the reference view averaged over
      the same first `learn_s`: a shift beyond `moved_max_shift` or a peak under `moved_min_match`.

    Baseline and reference follow a normal view slowly (`adapt_s`). Nothing is learnt from a frame that
    looks covered, and defocus and moved are not evaluated on one. Call `relearn()` after the camera was
    re-aimed on purpose: until then "moved" stays raised.
    """

    def __init__(self, settings: TamperSettings | None = None) -> None:
        self.settings = settings or TamperSettings()
        s = self.settings
        self._holds = {"covered": _Hold(s.covered_hold_s, s.clear_hold_s),
                       "defocus": _Hold(s.defocus_hold_s, s.clear_hold_s),
                       "moved": _Hold(s.moved_hold_s, s.clear_hold_s)}
        self.reading = TamperReading()
        self.baseline: float | None = None  # learnt sharpness
        self._shape: tuple[int, ...] | None = None
        self._reference: Image | None = None
        self._window: Image | None = None
        self._learn_since: float | None = None
        self._learn_sharp: list[float] = []
        self._learn_sum: Image | None = None
        self._learn_frames = 0
        self._last_at: float | None = None
        self._prev: Image | None = None
        self._noises: collections.deque[float] = collections.deque(maxlen=15)

    @property
    def learning(self) -> bool:
        return self.baseline is None

    @property
    def active(self) -> list[TamperKind]:
        return [k for k in TAMPER_KINDS if self._holds[k].active]

    def learnt_view(self) -> dict[str, Any] | None:
        """What it has learnt (sharpness baseline, reference view), to carry over a restart of the worker:
        a camera turned or blurred while its stream was down must not become the new normal."""
        if self.baseline is None or self._reference is None or self._shape is None:
            return None
        return {"baseline": self.baseline, "reference": self._reference.copy(), "shape": list(self._shape)}

    def restore_view(self, learnt: dict[str, Any]) -> None:
        """Take a view learnt before (see learnt_view); the same stream size is assumed until a frame says
        otherwise, which then learns again."""
        self._shape = tuple(int(n) for n in learnt["shape"])
        self.baseline = float(learnt["baseline"])
        self._reference = np.asarray(learnt["reference"], dtype=np.float32)
        self._learn_since, self._learn_sharp, self._learn_sum, self._learn_frames = None, [], None, 0

    def carry(self, kinds: list[str]) -> None:
        """Conditions a previous worker had raised start raised here, so this one clears them (after
        clear_hold_s of a normal view) or keeps them, instead of never saying they ended."""
        for kind in kinds:
            if kind in self._holds:
                self._holds[kind].active = True

    def relearn(self) -> None:
        """Forget the baseline and reference view: learn them again from the next `learn_s` of frames."""
        self.baseline = None
        self._reference = None
        self._learn_since = None
        self._learn_sharp = []
        self._learn_sum = None
        self._learn_frames = 0

    def update(self, frame: Image, at: float) -> list[TamperEvent]:
        """The events this frame decides; `frame` and `at` as for MotionDetector.update. A new frame size
        learns the view again."""
        grey = grey_small(frame, WORK_WIDTH)
        if grey is None:
            return []
        if grey.shape != self._shape:  # another stream size: the learnt view no longer applies
            self._shape = grey.shape
            self.relearn()
        s = self.settings
        dt = 0.0 if self._last_at is None else max(0.0, at - self._last_at)
        self._last_at = at
        small = grey_small(grey, VIEW_WIDTH)
        assert small is not None
        view = small.astype(np.float32)
        view -= np.float32(cv2.mean(view)[0])  # phase correlation otherwise locks onto the window's DC
        r = self.reading
        r.std = float(cv2.meanStdDev(small)[1][0, 0])
        r.noise = self._noise(grey)
        # Per tile, so a camera's sharp OSD text over a blurred picture (or a bright patch over a covered
        # lens) is an outlier among the tiles, not the figure.
        tile_std = tile_stats(small.astype(np.float32))[1]
        r.flat = float(np.count_nonzero(tile_std < s.covered_std)) / tile_std.size
        r.sharpness = sharpness(grey, r.noise)
        if self._reference is not None:
            r.shift, r.match = self._compare(view)
        else:
            r.shift, r.match = (0.0, 0.0), 0.0

        featureless = r.flat >= COVERED_SHARE
        # A featureless frame that still matches the learnt view is a dark night; a flat frame's phase
        # correlation peaks at random up to about 0.25, hence the higher bar.
        # Before a view is learnt there is nothing to differ from: a camera started at night on a dark scene
        # is not covered, and learns its view once the picture has features.
        covered = featureless and self._reference is not None and not self._same_view(DARK_MATCH)
        events = self._step("covered", covered, at, f"{100 * r.flat:.0f} % of the picture featureless (grey "
                            f"std-dev under {s.covered_std:g}; covered from {100 * COVERED_SHARE:.0f} %), "
                            f"match with the learnt view {r.match:.2f}")
        if covered or (featureless and self._reference is None):  # not blurred or elsewhere; teaches nothing
            self._holds["defocus"].pause()
            self._holds["moved"].pause()
            return events
        if self.baseline is None or self._reference is None:
            self._learn(view, r.sharpness, at)
            return events
        defocus = r.sharpness is not None and r.sharpness < s.defocus_ratio * self.baseline
        if r.sharpness is not None:
            pct = 100 * r.sharpness / self.baseline
            events += self._step("defocus", defocus, at, f"sharpness {r.sharpness:.3f} = {pct:.0f} % of the learnt "
                                 f"{self.baseline:.3f} (defocus below {100 * s.defocus_ratio:.0f} %)")
        else:  # too dark or too flat for the noise to tell sharp from blurred
            self._holds["defocus"].pause()
        moved = not self._same_view()
        events += self._step("moved", moved, at, f"view shifted {100 * r.shift[0]:+.0f} % x, {100 * r.shift[1]:+.0f} %"
                             f" y, match {r.match:.2f} (moved beyond {100 * s.moved_max_shift:.0f} % or below "
                             f"{s.moved_min_match:g})")
        if not (defocus or moved or featureless or self.active):
            a = decay(dt, s.adapt_s)
            if a > 0:
                cv2.accumulateWeighted(view, self._reference, a)
                if r.sharpness is not None:
                    self.baseline = math.exp((1 - a) * math.log(self.baseline) + a * math.log(max(r.sharpness, 1e-6)))
        return events

    def _same_view(self, min_match: float | None = None) -> bool:
        s, r = self.settings, self.reading
        return (r.match >= (s.moved_min_match if min_match is None else min_match)
                and abs(r.shift[0]) <= s.moved_max_shift and abs(r.shift[1]) <= s.moved_max_shift)

    def _compare(self, view: Image) -> tuple[tuple[float, float], float]:
        assert self._reference is not None
        h, w = view.shape
        if h < 4 or w < 4:  # too small to compare: count it as the same view
            return (0.0, 0.0), 1.0
        if self._window is None or self._window.shape != view.shape:
            self._window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        # Windowed copies: cv2.phaseCorrelate given a window multiplies its inputs by it in place.
        (dx, dy), match = cv2.phaseCorrelate(cv2.multiply(self._reference, self._window),
                                             cv2.multiply(view, self._window))
        if not (math.isfinite(dx) and math.isfinite(dy) and math.isfinite(match)):
            return (0.0, 0.0), 0.0
        return (dx / w, dy / h), float(match)

    def _learn(self, view: Image, sharp: float | None, at: float) -> None:
        if self._learn_since is None:
            self._learn_since = at
        if sharp is not None:
            self._learn_sharp.append(sharp)
        self._learn_sum = view.astype(np.float64) if self._learn_sum is None else self._learn_sum + view
        self._learn_frames += 1
        if at - self._learn_since >= self.settings.learn_s - EPS and len(self._learn_sharp) >= 3:
            self.baseline = max(statistics.median(self._learn_sharp), 1e-6)
            self._reference = (self._learn_sum / self._learn_frames).astype(np.float32)
            self._learn_sharp, self._learn_sum, self._learn_frames = [], None, 0

    def _noise(self, grey: Image) -> float:
        """The sensor noise (grey levels, std-dev) from the Laplacian of the difference to the last frame: the
        median of its magnitude ignores what moved or changed; the median over the last frames ignores a
        light switching. 0 until there are two frames."""
        prev, self._prev = self._prev, grey
        if prev is not None and prev.shape == grey.shape:
            lap = cv2.Laplacian(cv2.subtract(grey, prev, dtype=cv2.CV_16S), cv2.CV_16S)
            counts = np.bincount(np.minimum(np.abs(lap), 4095).ravel())
            half = lap.size / 2
            cum = np.cumsum(counts)
            k = int(np.searchsorted(cum, half))
            below = float(cum[k - 1]) if k else 0.0
            median = (k - 0.5 + (half - below) / counts[k]) if k else 0.5 * half / counts[0]  # within integer bins
            # |x| of a normal variable has median 0.6745 sigma; the Laplacian of a difference of two frames
            # has 2 x 20 times the variance of one pixel's noise.
            self._noises.append(float(median) / 0.6745 / math.sqrt(40))
        return statistics.median(self._noises) if self._noises else 0.0

    def _step(self, kind: TamperKind, condition: bool, at: float, detail: str) -> list[TamperEvent]:
        change = self._holds[kind].update(condition, at)
        if change is None:
            return []
        return [TamperEvent(kind, change, at, detail if change else f"view back: {detail}")]


# -- loitering -----------------------------------------------------------------------------------------------

# OpenCV's default people detector (Dalal-Triggs HOG + linear SVM) slides a 64x128 window over a pyramid of the
# image; a person fills about the middle 96 px of its height, so the smallest person it finds is about 96 px
# high in the image it is given. At HOG_HEIGHT (0.8 of a 360-px substream) a person a third of the frame high
# or taller is found; smaller ones less often (the camera simulator's person standing, sensor noise 3: 100 % at
# 1/3 of the frame, 92 % at 0.28, 71 % at 0.25, 0 at 0.2; at scale 1.25, 100 % at 0.25 for 1.7x the CPU).
HOG_HEIGHT = 288  # the frame is resized to this height times LoiterSettings.scale before the people detector
HOG_WINDOW = (64, 128)  # the default people detector's window (width, height)
HOG_STRIDE = (8, 8)  # the window's step: one HOG cell
HOG_PADDING = (16, 16)  # windows reach this far past the edges: finds a person whose feet are near the bottom
HOG_PYRAMID = 1.1  # the step between pyramid levels (OpenCV's 1.05 costs twice as much, for little more found)
NMS_OVERLAP = 0.6  # a box sharing more than this of its area with a stronger one is the same person
FEET_MARGIN = 16 / 128  # the window leaves 16 of its 128 px below the person's feet
MAX_ASPECT = 8.0  # a frame more than this many times as wide as high (or as high as wide) is no camera picture
# A picture that has not changed since the detector last looked gets its last answer instead of another run
# (about 16 ms): compared at GLANCE_WIDTH px wide (sensor noise averages out), a pixel changed by GLANCE_LEVELS
# grey levels counts, and GLANCE_SHARE of the pixels is a change (a person a third of the frame high is about
# 2 % of it; an OSD clock's ticking digits well under 0.5 %). It looks again anyway every
# GLANCE_RECHECK_S, for what the comparison cannot see (a slow change of light, a person it missed).
GLANCE_WIDTH = 80
GLANCE_LEVELS = 12
GLANCE_SHARE = 0.005
GLANCE_RECHECK_S = 5.0


@dataclass
class LoiterSettings:
    zones: list[Zone] = field(default_factory=list)  # none: the whole frame as zone "all"
    dwell_s: float = 30.0  # a person staying in a zone longer than this is loitering
    grace_s: float = 5.0  # missed detections shorter than this do not reset the dwell; this long unseen: gone
    detect_every_s: float = 1.0  # the people detector runs at most this often, and only on motion or while tracking
    scale: float = 1.0  # the detector sees the frame HOG_HEIGHT * scale px high; 2 finds people half as tall, at 4x
    hit_threshold: float = 0.8  # SVM score a box needs (the simulator's person: 2 typical; its scenes: up to 0.73)
    min_height: float = 0.15  # fraction of the frame height; smaller detection boxes are ignored

    def __post_init__(self) -> None:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique: {names}")
        for polygon in [z.polygon for z in self.zones]:
            if len(polygon) < 3:
                raise ValueError(f"a polygon needs at least 3 points: {polygon}")
        if not (self.dwell_s >= 0 and self.detect_every_s >= 0 and 0 < self.scale <= 4 and 0 <= self.min_height <= 1):
            raise ValueError("dwell_s and detect_every_s must be >= 0, scale in (0, 4], min_height a fraction (0..1)")
        if not self.grace_s > self.detect_every_s:
            # A person is looked for every detect_every_s at best: a shorter grace would end every stay.
            raise ValueError(f"grace_s ({self.grace_s:g}) must be longer than detect_every_s ({self.detect_every_s:g})")


@dataclass(frozen=True)
class LoiterEvent:
    zone: str
    active: bool  # true: a person has been in the zone dwell_s; false: nobody seen in it for grace_s
    at: float
    dwell_s: float  # how long the person had been in the zone (false: from the first to the last sighting)


@dataclass(frozen=True)
class Person:
    """A person the detector found: the box as fractions of the frame (x, y, width, height) and its SVM score."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def feet(self) -> Point:
        """Where the person stands: the middle of the box, FEET_MARGIN of its height above its bottom, in the
        frame (a box may reach past the frame's edges)."""
        x, y, w, h = self.box
        return min(max(x + w / 2, 0.0), 1.0), min(max(y + h * (1 - FEET_MARGIN), 0.0), 1.0)


@dataclass
class _Stay:
    name: str
    contour: Image  # the zone's polygon, float32 (n, 1, 2), normalised
    active: bool = False
    since: float | None = None  # first sighting of the current stay
    last_seen: float | None = None

    def contains(self, point: Point) -> bool:
        return cv2.pointPolygonTest(self.contour, point, False) >= 0


class LoiterDetector:
    """A person staying in a zone: OpenCV's HOG people detector, its boxes' feet points tested against zones.

    The detector is costly (about 14 ms a 640x360 frame, see HOG_HEIGHT), so it runs at most every
    `detect_every_s`, and only on a frame the motion detector saw motion in (`motion`) or while a person is
    being tracked (seen in a zone within `grace_s`); a still, empty scene costs nothing. A picture that has
    not changed since it last ran gets the same answer without running it (see GLANCE_WIDTH), which keeps
    a scene's light or a person standing still cheap too. The boxes (score at
    least `hit_threshold`, at least `min_height` of the frame high) are thinned by non-maximum suppression, and
    each box's feet point (bottom centre, less the window's margin below the feet) puts the person in the zones
    it falls in. One stay per zone, not per person: a zone with anybody in it for `dwell_s` (sightings less than
    `grace_s` apart) is loitering; once nobody has been seen in it for `grace_s`, it ends.
    """

    def __init__(self, settings: LoiterSettings | None = None) -> None:
        self.settings = settings or LoiterSettings()
        self.hog_runs = 0  # times the people detector ran
        self.looks = 0  # times it was due: it ran, or the picture had not changed since it last ran
        self.people: list[Person] = []  # what its last run found
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        zones = self.settings.zones or [Zone("all", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))]
        self._stays = [_Stay(z.name, np.nan_to_num(np.array(z.polygon, np.float32)).reshape(-1, 1, 2))
                       for z in zones]
        self._last_run: float | None = None
        self._glanced: Image | None = None  # the picture the detector last ran on, GLANCE_WIDTH wide
        self._glanced_at = 0.0

    @property
    def tracking(self) -> bool:
        """A person was seen in a zone within grace_s: the detector keeps running, motion or not."""
        return any(z.last_seen is not None for z in self._stays)

    @property
    def active_zones(self) -> list[str]:
        return [z.name for z in self._stays if z.active]

    def update(self, frame: Image, at: float, motion: bool) -> list[LoiterEvent]:
        """The events this frame decides. `frame` and `at` as for MotionDetector.update; `motion`: the motion
        detector saw motion in this frame (pass True without one: the people detector then runs every
        detect_every_s). Stays start and end only on frames the people detector runs on: while it tracks a
        person that is every detect_every_s, so an end is reported at most detect_every_s late."""
        s = self.settings
        due = self._last_run is None or at - self._last_run >= s.detect_every_s - EPS or at < self._last_run
        if not due or not (motion or self.tracking):
            return []
        glance = grey_small(frame, GLANCE_WIDTH) if frame.ndim in (2, 3) else None
        if glance is not None and self._unchanged(glance) and 0 <= at - self._glanced_at < GLANCE_RECHECK_S - EPS:
            self._last_run = at
            self.looks += 1
            return self._step(self.people, at)  # the same picture: the same people
        people = self._detect(frame)
        if people is None:
            return []
        self._last_run = self._glanced_at = at
        self._glanced = glance
        self.looks += 1
        self.people = people
        return self._step(people, at)

    def _unchanged(self, glance: Image) -> bool:
        """The picture looks as it did when the detector last ran."""
        last = self._glanced
        if last is None or last.shape != glance.shape:
            return False
        changed = np.count_nonzero(np.abs(glance.astype(np.int16) - last) > GLANCE_LEVELS)
        return bool(changed < GLANCE_SHARE * glance.size)

    def _detect(self, frame: Image) -> list[Person] | None:
        """The people in the frame, strongest first; None if it is no image."""
        if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
            return None
        grey = grey_small(frame, frame.shape[1])
        if grey is None:
            return None
        s = self.settings
        h, w = grey.shape
        height = max(1, round(HOG_HEIGHT * s.scale))
        width = max(1, round(w * height / h))
        if width < HOG_WINDOW[0] or width > MAX_ASPECT * height or height > MAX_ASPECT * width:
            return None
        img = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA if height < h else cv2.INTER_LINEAR)
        self.hog_runs += 1
        rects, weights = self._hog.detectMultiScale(img, hitThreshold=s.hit_threshold, winStride=HOG_STRIDE,
                                                    padding=HOG_PADDING, scale=HOG_PYRAMID, groupThreshold=0)
        boxes = np.asarray(rects, np.float64).reshape(-1, 4)
        scores = np.asarray(weights, np.float64).reshape(-1)
        people: list[Person] = []
        kept: list[Image] = []
        for i in np.argsort(-scores, kind="stable"):
            box = boxes[i]
            if box[3] < s.min_height * height or scores[i] < s.hit_threshold:
                continue
            if any(_overlap(box, other) > NMS_OVERLAP for other in kept):
                continue
            kept.append(box)
            people.append(Person((float(box[0] / width), float(box[1] / height), float(box[2] / width),
                                  float(box[3] / height)), float(scores[i])))
        return people

    def _step(self, people: list[Person], at: float) -> list[LoiterEvent]:
        s = self.settings
        events: list[LoiterEvent] = []
        feet = [p.feet for p in people]
        for zone in self._stays:
            if zone.last_seen is not None and at - zone.last_seen >= s.grace_s - EPS:  # nobody for grace_s: gone
                if zone.active:
                    assert zone.since is not None
                    events.append(LoiterEvent(zone.name, False, at, zone.last_seen - zone.since))
                zone.active, zone.since, zone.last_seen = False, None, None
            if any(zone.contains(p) for p in feet):
                if zone.since is None:
                    zone.since = at
                zone.last_seen = at
                if not zone.active and at - zone.since >= s.dwell_s - EPS:
                    zone.active = True
                    events.append(LoiterEvent(zone.name, True, at, at - zone.since))
        return events


def _overlap(a: Image, b: Image) -> float:
    """The intersection of two (x, y, width, height) boxes over the smaller one's area: the same person found
    at two pyramid levels gives a box inside a larger one, whose intersection over union is only about 0.4."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return float(iw * ih) / max(float(min(a[2] * a[3], b[2] * b[3])), 1e-9)
