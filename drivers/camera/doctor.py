"""`campusgw doctor camera URL`: opens the stream the way a camera worker does (drivers.camera.capture.open_capture)
and reports how long it took to connect, to open and to the first frame, the codec, the resolution, the frame
rate measured over a few seconds against what the stream claims, the key-frame interval, pauses and decoding
errors, and how much of a CPU core the decoding took, then plain advice.

The advice is made by pure functions from what was measured (camera_advice), tested on their own; the measuring
is thin IO around OpenCV. No password is printed: URLs go through drivers.camera.capture.redact, and FFmpeg's
messages have the password taken out.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from drivers.doctor import Finding, captured_stderr, format_findings, row, usable
from gateway.config import SecretRef

TARGET = "camera"


# ---------------------------------------------------------------------------------------------------------
# Camera: what the advice is measured against (the camera config's defaults: what the gateway analyses)


def _camera_defaults() -> dict[str, float]:
    from drivers.camera.schema import MOVING_FPS, CameraConfig

    fields = CameraConfig.model_fields
    return {"fps": MOVING_FPS, **{name: float(fields[name].default) for name in ("width", "height", "open_timeout_s",
                                                                                 "read_timeout_s")}}


SUBSTREAM_MAX_FPS = 10.0  # more is decoded for nothing: the gateway analyses 5 frames a second by default
MIN_FPS = 2.0  # motion and loitering need a few frames a second
SLOW_FIRST_FRAME_S = 2.5  # a key frame every 1-2 s and a connection: well under this
MAX_KEY_INTERVAL_S = 2.0
DECODER_LIMIT = 0.9  # of one core: decoding cannot keep up
FPS_SHORTFALL = 0.7  # measured / claimed below this: frames are lost on the way or not decoded in time
PAUSE_MIN_S = 0.5  # a gap between frames shorter than this is jitter, not a pause
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
CODECS = {"h264": "H.264", "avc1": "H.264", "hevc": "H.265", "hev1": "H.265", "hvc1": "H.265", "h265": "H.265",
          "MJPG": "MJPEG", "mjpg": "MJPEG", "jpeg": "MJPEG", "mp4v": "MPEG-4", "YUYV": "raw YUYV"}
SUBSTREAM_EXAMPLES = ("e.g. Hikvision rtsp://HOST:554/Streaming/Channels/102, Dahua rtsp://HOST:554/cam/realmonitor"
                      "?channel=1&subtype=1")
# FFmpeg's messages that mean a frame arrived damaged (lost packets)
DECODE_ERROR = re.compile(r"error while decoding|concealing|corrupt|missing picture|missed \d+ packets|"
                          r"Invalid NAL unit|no frame!", re.IGNORECASE)


def codec_name(fourcc: str) -> str:
    """'H.265 (hevc)' for a FOURCC as OpenCV gives it; the FOURCC itself when unknown."""
    name = CODECS.get(fourcc)
    return f"{name} ({fourcc})" if name else (fourcc or "unknown")


def is_h265(fourcc: str) -> bool:
    return CODECS.get(fourcc) == "H.265"


def is_intra_only(fourcc: str) -> bool:
    """Every frame a key frame (no GOP to speak of)."""
    return CODECS.get(fourcc) in ("MJPEG", "raw YUYV")


@dataclass(frozen=True)
class FrameStats:
    frames: int
    fps: float | None  # measured, after the first warm-up (frames queued while opening arrive in a burst)
    key_frames: int
    key_interval_s: float | None  # None: fewer than two key frames seen
    pauses: int  # gaps between frames of more than 3 frame periods (and PAUSE_MIN_S)
    longest_gap_s: float
    dropped: int | None = None  # frames missing against the stream's own rate (None: it does not say)


def frame_stats(times: Sequence[float], keys: Sequence[bool], warmup_s: float = 0.5,
                nominal_fps: float | None = None) -> FrameStats:
    """Frame rate, key-frame interval, pauses and dropped frames from the arrival times of the frames grabbed
    (and whether each held a key frame), against the rate the stream says it has (`nominal_fps`)."""
    key_frames = sum(1 for k in keys if k)
    if len(times) < 2 or times[-1] <= times[0]:
        return FrameStats(len(times), None, key_frames, None, 0, 0.0)
    steady = [t for t in times if t >= times[0] + warmup_s]
    if len(steady) < 3 or steady[-1] <= steady[0]:
        steady = list(times)
    fps = (len(steady) - 1) / (steady[-1] - steady[0])
    dropped = (max(0, round((steady[-1] - steady[0]) * nominal_fps) + 1 - len(steady)) if nominal_fps
               else None)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    pause = max(3.0 / fps, PAUSE_MIN_S)
    key_at = [n for n, k in enumerate(keys) if k]
    key_interval = (statistics.median(b - a for a, b in itertools.pairwise(key_at)) / fps
                    if len(key_at) >= 2 else None)
    return FrameStats(len(times), fps, key_frames, key_interval, sum(1 for g in gaps if g > pause), max(gaps),
                      dropped)


@dataclass
class CameraProbe:
    """What `doctor camera` found; the advice is made from this alone."""

    source: str  # the URL without its password
    scheme: str = ""
    host: str = ""
    port: int | None = None
    user_given: bool = False
    password_in_url: bool = False
    timeout_s: float = 10.0
    seconds: float = 5.0
    transport: str = "tcp"
    connect: str = ""  # "" (not a network address), ok, dns, refused, timeout, unreachable, bad_address
    connect_detail: str = ""
    connect_s: float | None = None
    opened: bool = False
    open_s: float | None = None
    first_frame_s: float | None = None  # from the start of opening
    decoded: bool | None = None  # the first frame came out of the decoder as a picture
    fourcc: str = ""
    width: int = 0
    height: int = 0
    claimed_fps: float | None = None  # what the stream says, when it says something believable
    measured_s: float = 0.0
    stats: FrameStats | None = None
    read_failures: int = 0
    ended: bool = False  # the stream stopped during the measurement
    decode_errors: int = 0
    cpu: float | None = None  # decoding and reading: share of one CPU core
    http_status: int | None = None
    http_type: str = ""
    rtsp_reply: str | None = None  # an RTSP stream that did not open: the first line of the answer to OPTIONS
    messages: list[str] = field(default_factory=list)  # FFmpeg's, the password taken out


def failure_kind(messages: Sequence[str], http_status: int | None = None, http_type: str = "",
                 rtsp_reply: str | None = None) -> str:
    """Why a stream did not open, from FFmpeg's messages and a request of our own: auth, not_found, forbidden,
    busy, timeout, not_video or unknown."""
    text = "\n".join(messages)
    if rtsp_reply is not None and not rtsp_reply.startswith("RTSP/"):
        return "not_video"
    if http_status == 401 or re.search(r"\b401\b|Unauthorized", text):
        return "auth"
    if http_status == 404 or re.search(r"\b404\b|Not Found", text):
        return "not_found"
    if http_status == 403 or re.search(r"\b403\b|Forbidden", text):
        return "forbidden"
    if re.search(r"\b453\b|\b503\b|Not Enough Bandwidth|Service Unavailable", text) or http_status == 503:
        return "busy"
    if http_status == 200 and http_type and not http_type.startswith(("multipart/", "video/", "image/")):
        return "not_video"
    if re.search(r"timed? ?out|timeout", text, re.IGNORECASE):
        return "timeout"
    if re.search(r"Invalid data found|invalid response|unsupported protocol", text, re.IGNORECASE):
        return "not_video"
    return "unknown"


def camera_advice(p: CameraProbe) -> list[Finding]:
    """Plain advice from what `doctor camera` measured."""
    defaults = _camera_defaults()
    where = f"{p.host}:{p.port}" if p.host else p.source
    out: list[Finding] = []
    if p.password_in_url:
        out.append(Finding(False, "the password is in the URL, so it is in the shell history and the process "
                                  "list: give --username and --password-env VAR instead (in the config: "
                                  "username and password_env)"))
    if p.connect == "bad_address":
        return [*out, Finding(True, f"the address is not a valid URL ({p.connect_detail}): e.g. "
                                    "rtsp://192.168.1.64:554/Streaming/Channels/102")]
    if p.connect == "dns":
        return [*out, Finding(True, f"the name {p.host} does not resolve ({p.connect_detail}): check the "
                                    "spelling, or use the camera's IP address")]
    if p.connect == "refused":
        service = "RTSP" if p.scheme.startswith("rtsp") else "HTTP"
        usual = "554" if p.scheme == "rtsp" else str(DEFAULT_PORTS.get(p.scheme, ""))
        return [*out, Finding(True, f"{p.host} answers, but nothing listens on port {p.port}: check the port "
                                    f"({service} is usually {usual}) and that {service} is enabled on the camera")]
    if p.connect in ("timeout", "unreachable"):
        return [*out, Finding(True, f"{where} does not answer ({p.connect_detail}): check the address, that the "
                                    "camera has power and a network link, that it is on this network or routed "
                                    "to it, and that no firewall blocks the port")]
    if not p.opened:
        kind = failure_kind(p.messages, p.http_status, p.http_type, p.rtsp_reply)
        if kind == "auth" and not p.user_given:
            text = ("the camera asks for a user name and password: give --username and --password-env VAR "
                    "(in the config: username and password_env)")
        elif kind == "auth":
            text = ("the camera refused this user name or password: check them on the camera's web page (many "
                    "cameras lock a user out for a while after several wrong passwords)")
        elif kind == "not_found":
            text = ("the camera answers but has no stream at this path: check the path in the URL "
                    f"({SUBSTREAM_EXAMPLES})")
        elif kind == "forbidden":
            text = ("the camera refuses this user the stream: give the user the right to view live video on the "
                    "camera")
        elif kind == "busy":
            text = ("the camera is busy (too many viewers, or not enough bandwidth for another stream): close other "
                    "viewers or use the substream")
        elif kind == "not_video" and p.rtsp_reply:
            text = (f"{where} answers, but not in RTSP (it said {p.rtsp_reply!r}): this is not the camera's RTSP "
                    "port (usually 554), or not a camera")
        elif kind == "not_video":
            what = f" ({p.http_type})" if p.http_type else ""
            text = (f"{where} answers, but not with a video stream{what}: check the URL's scheme and path "
                    f"({SUBSTREAM_EXAMPLES}; MJPEG cameras e.g. http://HOST/video.mjpg)")
        elif kind == "timeout":
            text = (f"the camera accepted the connection but sent no video within {p.timeout_s:g} s: check the "
                    "stream is enabled on the camera; try --rtsp-transport "
                    f"{'udp' if p.transport == 'tcp' else 'tcp'}")
        else:
            said = f" FFmpeg said: {p.messages[-1]}" if p.messages else ""
            text = f"the stream could not be opened; check the URL and the camera's stream settings.{said}"
        return [*out, Finding(True, text)]
    if p.first_frame_s is None:
        return [*out, Finding(True, f"the stream opened but no frame came within {p.timeout_s:g} s: check the stream "
                                    "is enabled and sends video; try --rtsp-transport "
                                    f"{'udp' if p.transport == 'tcp' else 'tcp'}")]
    if p.decoded is False:
        out.append(Finding(True, f"frames arrive but cannot be decoded here ({codec_name(p.fourcc)}): set the "
                                 "stream to H.264"))
    stats = p.stats
    fps = stats.fps if stats and stats.fps else p.claimed_fps
    if stats is None or stats.frames < 2:
        out.append(Finding(True, "the stream stopped after the first frame: check the camera's stream settings and "
                                 "the network"))
    big = p.width > defaults["width"] or p.height > defaults["height"]
    fast = fps is not None and fps > SUBSTREAM_MAX_FPS + 0.5  # 10.2 measured is a 10 fps stream
    if big or fast:
        reasons = []
        if big:
            reasons.append(f"{p.width}x{p.height}")
        if fast and fps is not None:
            reasons.append(f"{fps:.0f} fps")
        out.append(Finding(False, f"{' at '.join(reasons)} is more than the gateway analyses "
                                  f"({defaults['width']:.0f}x{defaults['height']:.0f}, {defaults['fps']:g} frames a "
                                  "second) and costs CPU for nothing: use the camera's substream "
                                  f"({SUBSTREAM_EXAMPLES}) set to {defaults['width']:.0f}x{defaults['height']:.0f} "
                                  f"at 5-{SUBSTREAM_MAX_FPS:.0f} fps"))
    if is_h265(p.fourcc):
        cost = f" (this stream: {p.cpu * 100:.0f} % of one core here)" if p.cpu is not None else ""
        out.append(Finding(False, f"H.265 works, but it costs more CPU to decode than H.264{cost}: with many "
                                  "cameras on a small gateway, set the substream to H.264"))
    if p.cpu is not None and p.cpu >= DECODER_LIMIT and stats is not None and stats.frames >= 2:
        out.append(Finding(True, f"decoding this stream takes a whole CPU core ({p.cpu * 100:.0f} %): the gateway "
                                 "cannot keep up; use the substream at a lower resolution and frame rate"))
    elif (p.claimed_fps and stats is not None and stats.fps is not None
          and stats.fps < FPS_SHORTFALL * p.claimed_fps):
        out.append(Finding(False, f"the stream says {p.claimed_fps:g} fps but only {stats.fps:.1f} arrived: frames "
                                  "are lost on the way (a weak link, a busy uplink) or the camera is overloaded"))
    if stats is not None and stats.fps is not None and stats.fps < MIN_FPS and stats.frames >= 2:
        out.append(Finding(False, f"only {stats.fps:.1f} frames a second arrive: motion and loitering detection need "
                                  f"about {defaults['fps']:g}; set the stream to 5-{SUBSTREAM_MAX_FPS:.0f} fps"))
    if not is_intra_only(p.fourcc):
        slow_first = p.first_frame_s > SLOW_FIRST_FRAME_S
        key_interval = stats.key_interval_s if stats is not None else None
        # one: the first frame's; none at all: this stream's packets do not say (no conclusion then)
        few_keys = (stats is not None and key_interval is None and stats.key_frames == 1
                    and p.measured_s > MAX_KEY_INTERVAL_S)
        long_gop = (key_interval is not None and key_interval > MAX_KEY_INTERVAL_S) or few_keys
        if slow_first or long_gop:
            seen = []
            if slow_first:
                seen.append(f"the first picture took {p.first_frame_s:.1f} s")
            if key_interval is not None and key_interval > MAX_KEY_INTERVAL_S:
                seen.append(f"a key frame comes every {key_interval:.1f} s")
            elif few_keys:
                seen.append(f"no second key frame came in {p.measured_s:.0f} s")
            out.append(Finding(False, f"{' and '.join(seen)}: set the camera's key-frame interval (I-frame interval, "
                                      "GOP) to 1-2 s (at 5 fps: 5-10 frames); after every reconnect the gateway sees "
                                      "nothing until the next key frame"))
    if p.open_s is not None and p.open_s > defaults["open_timeout_s"]:
        out.append(Finding(True, f"opening took {p.open_s:.1f} s, longer than the gateway waits (open_timeout_s, "
                                 f"{defaults['open_timeout_s']:g} s by default): shorten the key-frame interval, or "
                                 "raise open_timeout_s in the camera's config"))
    if p.ended:
        out.append(Finding(True, "the stream stopped during the test: check the camera's stream settings, its power "
                                 "and the network"))
    elif stats is not None and (stats.pauses or p.read_failures):
        out.append(Finding(False, f"the stream paused {stats.pauses + p.read_failures} time(s) (longest "
                                  f"{stats.longest_gap_s:.1f} s): a weak link (Wi-Fi, a long or damaged cable, a "
                                  "busy uplink) or an overloaded camera"))
    if p.decode_errors:
        hint = "use --rtsp-transport tcp (RTP over UDP loses packets), and " if p.transport == "udp" else ""
        out.append(Finding(False, f"{p.decode_errors} damaged frame(s): packets were lost; {hint}check the network"))
    return out


def format_camera(p: CameraProbe, findings: Sequence[Finding], verbose: bool = False) -> str:
    lines = [f"camera {p.source}"]
    if p.connect == "ok" and p.connect_s is not None:
        lines.append(row("address", f"{p.host}:{p.port} answers ({p.connect_s * 1000:.0f} ms)"))
    elif p.connect and p.connect != "ok":
        lines.append(row("address", f"{p.host}:{p.port}: {p.connect_detail}" if p.host else p.connect_detail))
    if p.connect in ("", "ok"):
        if p.opened and p.open_s is not None:
            lines.append(row("opened", f"in {p.open_s:.2f} s"))
        elif p.open_s is not None:
            lines.append(row("opened", f"no (gave up after {p.open_s:.2f} s)"))
    if p.first_frame_s is not None:
        lines.append(row("first frame", f"{p.first_frame_s:.2f} s after connecting"))
    if p.opened:
        lines.append(row("codec", codec_name(p.fourcc)))
        lines.append(row("resolution", f"{p.width}x{p.height}" if p.width else "unknown"))
        stats = p.stats
        claim = f"the stream says {p.claimed_fps:g}" if p.claimed_fps else "the stream does not say"
        if stats is not None and stats.fps is not None:
            lines.append(row("frame rate", f"{stats.fps:.1f} fps measured over {p.measured_s:.1f} s, "
                                            f"{stats.frames} frames ({claim})"))
        else:
            lines.append(row("frame rate", f"not measured ({claim})"))
        if stats is not None and stats.frames >= 2:
            if is_intra_only(p.fourcc):
                keys = "every frame (each frame is a picture of its own)"
            elif stats.key_interval_s is not None:
                keys = f"every {stats.key_interval_s:.1f} s"
            elif not stats.key_frames:
                keys = "not reported by this stream"
            else:
                keys = f"{stats.key_frames} in {p.measured_s:.1f} s"
            lines.append(row("key frames", keys))
            dropped = "not known" if stats.dropped is None else str(stats.dropped)
            lines.append(row("dropped frames", f"{dropped}; {p.decode_errors} damaged"))
            lines.append(row("pauses", f"{stats.pauses} (longest gap {stats.longest_gap_s:.2f} s); "
                                        f"{p.read_failures} read timeout(s)"))
        if p.cpu is not None:
            lines.append(row("decoding", f"{p.cpu * 100:.0f} % of one CPU core"))
    if p.http_status is not None:
        lines.append(row("HTTP", f"{p.http_status} {p.http_type}".rstrip()))
    if p.messages and (verbose or not p.opened):
        lines.append("FFmpeg said:")
        lines += [f"  {m}" for m in (p.messages if verbose else p.messages[-5:])]
    lines += format_findings(findings)
    lines.append(f"result: {'usable' if usable(findings) else 'NOT usable'}")
    return "\n".join(lines)


def camera_source(url: str, username: str | None, password: str | None) -> str:
    """The URL to open, with the user and password put in (as CameraConfig.source does)."""
    parts = urlsplit(url)
    if not username or not parts.scheme or not parts.hostname:
        return url
    user = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def clean_messages(lines: Sequence[str], secrets: Sequence[str]) -> list[str]:
    """FFmpeg's messages for a person: no OpenCV warnings, no object addresses, no password, no repeats."""
    out: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("[ WARN:") or line.startswith("[ INFO:"):
            continue
        line = re.sub(r"^\[(\w+) @ 0x[0-9a-f]+\]\s*", r"\1: ", line)
        for secret in secrets:
            if secret:
                line = line.replace(secret, "***")
        if line not in out:
            out.append(line)
    return out


def tcp_check(host: str, port: int, timeout: float) -> tuple[str, str, float | None]:
    """(ok | dns | refused | timeout | unreachable, detail, seconds to connect)."""
    start = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return "dns", exc.strerror or str(exc), None
    last = "no address"
    kind = "unreachable"
    for family, kind_, proto, _, address in infos:
        try:
            with socket.socket(family, kind_, proto) as sock:
                sock.settimeout(max(0.1, timeout - (time.monotonic() - start)))
                sock.connect(address)
                return "ok", "answers", time.monotonic() - start
        except ConnectionRefusedError:
            return "refused", "connection refused", None
        except TimeoutError:
            kind, last = "timeout", f"no answer within {timeout:g} s"
        except OSError as exc:
            kind, last = "unreachable", exc.strerror or str(exc)
    return kind, last, None


def http_check(source: str, timeout: float) -> tuple[int | None, str]:
    """An HTTP camera that did not open: what a plain request for the URL gets (status, Content-Type)."""
    import urllib.error
    import urllib.request

    parts = urlsplit(source)
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    handlers: list[Any] = []
    if parts.username:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, clean, unquote(parts.username), unquote(parts.password or ""))
        handlers += [urllib.request.HTTPDigestAuthHandler(passwords), urllib.request.HTTPBasicAuthHandler(passwords)]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(clean, timeout=timeout) as response:
            return int(response.status), str(response.headers.get("Content-Type", "")).split(";")[0]
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.headers.get("Content-Type", "")).split(";")[0] if exc.headers else ""
    except (urllib.error.URLError, OSError, ValueError):
        return None, ""


def probe_camera(url: str, username: str | None = None, password: str | None = None, *, seconds: float = 5.0,
                 timeout: float = 10.0, transport: str = "tcp") -> CameraProbe:
    """Open the camera as a worker would, grab for `seconds`, and measure."""
    from drivers.camera.capture import redact

    source = camera_source(url, username, password)
    parts = urlsplit(source)
    secrets = [s for s in {parts.password or "", unquote(parts.password or "")} if s]
    p = CameraProbe(source=redact(source), scheme=parts.scheme.lower(), user_given=bool(parts.username),
                    password_in_url=bool(urlsplit(url).password), timeout_s=timeout, seconds=seconds,
                    transport=transport)
    if p.scheme in DEFAULT_PORTS:
        try:
            p.host, p.port = parts.hostname or "", parts.port or DEFAULT_PORTS[p.scheme]
        except ValueError as exc:
            p.connect, p.connect_detail = "bad_address", str(exc)
            return p
        if not p.host:
            p.connect, p.connect_detail = "bad_address", "no host in it"
            return p
        p.connect, p.connect_detail, p.connect_s = tcp_check(p.host, p.port, timeout)
        if p.connect != "ok":
            return p
    with captured_stderr() as said:
        _open_and_measure(p, source, seconds, timeout, transport)
    p.messages = clean_messages(said, secrets)
    p.decode_errors = sum(1 for m in p.messages if DECODE_ERROR.search(m))
    if not p.opened and p.scheme in ("http", "https"):
        p.http_status, p.http_type = http_check(source, timeout)
    elif not p.opened and p.scheme == "rtsp" and failure_kind(p.messages) == "unknown":
        p.rtsp_reply = rtsp_check(p.host, p.port or DEFAULT_PORTS["rtsp"], source, timeout)
    return p


def rtsp_check(host: str, port: int, source: str, timeout: float) -> str | None:
    """The first line of the answer to an RTSP OPTIONS request ("RTSP/1.0 200 OK"; anything else is not an RTSP
    server), None without an answer. OPTIONS needs no login, so none is sent."""
    parts = urlsplit(source)
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"OPTIONS {clean} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: campusgw-doctor\r\n\r\n".encode())
            answer = sock.recv(512)
    except OSError:
        return None
    return answer.decode("latin-1").split("\r\n", 1)[0].strip() or None


def _open_and_measure(p: CameraProbe, source: str, seconds: float, timeout: float, transport: str) -> None:
    import cv2

    from drivers.camera.capture import WorkerSettings, open_capture

    defaults = _camera_defaults()
    settings = WorkerSettings(device="doctor", source=source, fps=defaults["fps"],
                              size=(int(defaults["width"]), int(defaults["height"])), open_timeout_s=timeout,
                              read_timeout_s=timeout, snapshot_dir=tempfile.gettempdir(), snapshot_every_s=60.0,
                              jpeg_quality=80, rtsp_transport=transport)
    start = time.monotonic()
    with _env_restored("OPENCV_FFMPEG_CAPTURE_OPTIONS"):
        cap = open_capture(settings)
    p.open_s = time.monotonic() - start
    try:
        p.opened = bool(cap.isOpened())
        if not p.opened:
            return
        p.fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ")
        claimed = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # An MJPEG stream over HTTP carries no frame rate: FFmpeg's 25 is its own default, not the camera's.
        if 0 < claimed <= 120 and not (is_intra_only(p.fourcc) and p.scheme.startswith("http")):
            p.claimed_fps = claimed
        p.width, p.height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if not cap.grab():
            return
        first = time.monotonic()
        p.first_frame_s = first - start
        ok, frame = cap.retrieve()
        p.decoded = bool(ok and frame is not None)
        if p.decoded:
            p.height, p.width = int(frame.shape[0]), int(frame.shape[1])
        times, keys = [first], [bool(cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME))]
        cpu = time.thread_time()  # FFmpeg reads and decodes in this thread (one decoder thread, as the worker)
        failed_in_a_row = 0
        while time.monotonic() - first < seconds:
            if cap.grab():
                times.append(time.monotonic())
                keys.append(bool(cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME)))
                failed_in_a_row = 0
                continue
            p.read_failures += 1
            failed_in_a_row += 1
            if failed_in_a_row >= 3:
                p.ended = True
                break
        p.measured_s = time.monotonic() - first
        p.cpu = (time.thread_time() - cpu) / p.measured_s if p.measured_s > 0 else None
        p.stats = frame_stats(times, keys, nominal_fps=p.claimed_fps)
    finally:
        cap.release()


@contextlib.contextmanager
def _env_restored(name: str) -> Iterator[None]:
    """open_capture sets OPENCV_FFMPEG_CAPTURE_OPTIONS for the process (a worker opens one camera); the doctor
    may run inside a longer-lived process (tests) whose later camera workers must not inherit its choice."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def add_arguments(targets: Any) -> None:
    d = targets.add_parser(TARGET, help="open a camera's stream: time to first frame, codec, resolution, "
                           "frame rate, key frames")
    d.add_argument("url", help="rtsp://HOST:554/PATH or http://HOST/video.mjpg (no password in it: use "
                   "--username and --password-env)")
    d.add_argument("--username")
    password = d.add_mutually_exclusive_group()
    password.add_argument("--password-env", metavar="VAR", help="the environment variable holding the password")
    password.add_argument("--password-file", type=Path, metavar="FILE", help="a file holding the password")
    d.add_argument("--seconds", type=float, default=5.0, help="how long to measure the frame rate (default 5)")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the camera to answer, open "
                   "and send a frame (default 10)")
    d.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp")
    d.add_argument("-v", "--verbose", action="store_true", help="also print FFmpeg's own messages")


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.timeout <= 0:
        print("campusgw doctor camera: --seconds and --timeout must be more than 0", file=sys.stderr)
        return 2
    password = SecretRef(env=args.password_env, file=args.password_file).resolve()
    if password and not args.username:
        print("campusgw doctor camera: a password needs --username", file=sys.stderr)
        return 2
    probe = probe_camera(args.url, args.username, password, seconds=args.seconds, timeout=args.timeout,
                         transport=args.rtsp_transport)
    findings = camera_advice(probe)
    print(format_camera(probe, findings, args.verbose), flush=True)
    return 0 if usable(findings) else 1
