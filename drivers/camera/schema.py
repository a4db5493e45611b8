"""The site-file schema of a camera (kind camera, driver opencv): light, so check-config loads no OpenCV."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config import DeviceConfig, SecretRef, Window

Point = tuple[float, float]  # a corner as fractions of the frame, 0..1 from top left
MOVING_FPS = 5.0  # frames analysed a second by default where motion or loitering is watched
STILL_FPS = 2.0  # ... and for tamper alone


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    polygon: list[Point] = Field(min_length=3)  # corners as fractions of the frame, 0..1 from top left


class Scheduled(_Strict):
    # When the analytic reports (the site's time); none: always. Overnight windows run past midnight
    # ({days: [mon], from: "18:00", to: "06:00"}); on holidays every window is open all day.
    schedule: list[Window] | None = None
    holidays: list[str] = []


class MotionConfig(Scheduled):
    zones: list[ZoneConfig] = []  # none: the whole frame
    masks: list[list[Point]] = []  # areas never looked at (a tree, the camera's clock)
    min_area: float = Field(default=0.002, gt=0, le=1)
    min_duration_s: float = Field(default=1.0, ge=0)
    clear_after_s: float = Field(default=3.0, gt=0)
    max_global: float = Field(default=0.5, gt=0, le=1)  # more than this changes at once: lights, not motion


class TamperConfig(Scheduled):
    covered_hold_s: float = Field(default=5.0, ge=0)  # each must hold this long before it is raised
    defocus_hold_s: float = Field(default=10.0, ge=0)
    moved_hold_s: float = Field(default=5.0, ge=0)
    clear_hold_s: float = Field(default=2.0, ge=0)  # ... and the view be back this long before it clears
    learn_s: float = Field(default=10.0, gt=0)  # the sharpness and the reference view are learnt this long


class LoiterConfig(Scheduled):
    zones: list[ZoneConfig] = []  # none: the whole frame
    dwell_s: float = Field(default=30.0, ge=0)  # a person staying in a zone longer than this is loitering
    grace_s: float = Field(default=5.0, gt=0)  # unseen shorter than this: still there; this long: gone
    detect_every_s: float = Field(default=1.0, gt=0)  # the people detector runs at most this often (~14 ms a run)
    scale: float = Field(default=1.0, gt=0, le=4)  # 1: people from ~0.28 of the frame high; 2: half that, 4x the CPU
    hit_threshold: float = Field(default=0.8, ge=0)  # the detector's score (SVM margin) a person needs
    min_height: float = Field(default=0.15, ge=0, le=1)  # detections smaller than this share of the height ignored

    @model_validator(mode="after")
    def _check(self) -> LoiterConfig:
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique: {names}")
        if self.grace_s <= self.detect_every_s:
            raise ValueError("grace_s must be longer than detect_every_s: a person is looked for every "
                             "detect_every_s at best, so a shorter grace would end every stay")
        return self


class CameraConfig(DeviceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["camera"]
    driver: Literal["opencv"]
    # rtsp://host/substream, http://host/video.mjpg, a video file, or a local device (0, /dev/video0).
    # A password never goes in the URL: give username and password_env / password_file.
    url: str = Field(min_length=1)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    # Frames analysed a second; by default 5 where motion or loitering is watched, and 2 for tamper alone (its
    # holds are seconds long): a yard's overview camera then costs half as much (bench/school_day).
    fps: float | None = Field(default=None, gt=0, le=30)
    width: int = Field(default=640, ge=64, le=1920)  # the substream, or what the frame is scaled to
    height: int = Field(default=360, ge=48, le=1080)
    # Cameras with the same worker share one worker process (a thread each): one Python and one OpenCV for the
    # group instead of one per camera. A camera whose read hangs gets its worker restarted, and the group's
    # other cameras with it (read again at once, within their video_loss_s): give a doubtful camera its own.
    worker: str = Field(default="cameras", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"  # RTP over TCP passes NATs and firewalls; UDP only on a clean LAN
    open_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=5.0, gt=0, le=60)
    video_loss_s: float = Field(default=10.0, gt=0, le=600)
    snapshot_every_s: float = Field(default=10.0, gt=0)  # the console's live-ish tile
    jpeg_quality: int = Field(default=80, ge=30, le=95)
    # Alarm clips: the seconds before an alarm kept in memory at clip_fps (60 JPEGs, about 2 MB by default).
    clip_fps: float = Field(default=2.0, gt=0, le=10)
    clip_pre_s: float = Field(default=30.0, ge=0, le=120)
    clip_post_s: float = Field(default=30.0, ge=0, le=300)
    loop_file: bool = False  # a video file plays again at its end (demos, tests)
    motion: MotionConfig | None = None  # off unless configured
    tamper: TamperConfig | None = TamperConfig()
    loitering: LoiterConfig | None = None  # off unless configured; with motion, the detector runs only on motion

    @model_validator(mode="after")
    def _no_password_in_url(self) -> CameraConfig:
        if urlsplit(self.url).password:
            raise ValueError("the url holds a password: give 'username' and 'password_env' (or "
                             "'password_file') instead")
        return self

    def analysis_fps(self) -> float:
        if self.fps is not None:
            return self.fps
        return MOVING_FPS if self.motion is not None or self.loitering is not None else STILL_FPS

    def source(self) -> str:
        """The URL to open, with the credentials from the secrets store."""
        parts = urlsplit(self.url)
        if not self.username or not parts.scheme or not parts.hostname:
            return self.url
        password = SecretRef(env=self.password_env, file=self.password_file).resolve()
        user = quote(self.username, safe="") + (":" + quote(password, safe="") if password else "")
        return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc}"))
