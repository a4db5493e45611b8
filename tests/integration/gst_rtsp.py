"""An IP camera's RTSP substream from an implementation that is not ours: GStreamer's RTSP server, run by
Debian's python3 in its own process, so a test can kill it (the camera dies), stop it (the stream stalls
with the connection open) and start it again on the same port (the camera is back)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).with_name("gst_rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"


def not_installed(codec: str = "h264") -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists() or shutil.which("gst-inspect-1.0") is None:
        return f"GStreamer is not installed (apt-get install python3-gi gstreamer1.0-tools {PACKAGES})"
    check = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer")
    if subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True).returncode:
        return "GStreamer's RTSP server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0)"
    encoder = {"h264": "x264enc", "h265": "x265enc"}[codec]
    if subprocess.run(["gst-inspect-1.0", encoder], capture_output=True).returncode:
        return f"GStreamer's {encoder} is not installed (apt-get install {PACKAGES})"
    return None


class RtspServer:
    """`url` is the substream; `source` "test" (a moving ball) or an MJPEG URL to re-encode; `login`
    "user:password" to serve it only to that user (Digest), as a camera does."""

    def __init__(self, codec: str = "h264", source: str = "test", size: str = "640x360", fps: int = 5,
                 gop: int | None = None, login: str | None = None) -> None:
        self.args = [codec, source, size, str(fps), str(gop or fps)]
        self.login = login
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/sub"

    def start(self) -> None:
        """Start serving (again on the same port, once it has one)."""
        assert self.process is None or self.process.poll() is not None
        env = {**os.environ, "CAMPUSGW_TEST_RTSP_LOGIN": self.login} if self.login else None  # not in `ps`
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.port), *self.args],
                                        stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.wait(5)
            raise RuntimeError(f"GStreamer's RTSP server did not start: {line!r}")
        self.port = int(line)

    def kill(self) -> None:
        """The camera loses power: the connection drops, the port refuses."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)

    def stall(self, stalled: bool = True) -> None:
        """The stream stops with the connection open (a hung encoder, a link that drops packets)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP if stalled else signal.SIGCONT)

    def close(self) -> None:
        self.kill()
