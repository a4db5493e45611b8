"""The camera driver against an RTSP server that is not ours (GStreamer's gst-rtsp-server, H.264 and H.265
at 640x360 @ 5 fps, as a camera's substream), through the whole gateway to the records: first frame, a dead
camera, a stalled stream, the camera back, and a tamper alarm that ends across a restart of the worker.

Times are taken from the events' own device times against the moment the fault was injected, so the loss
target (`video_loss_s` + 1 s) is checked where it is decided, not through the records' polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.camera import CameraSimulator
from tests.integration.gst_rtsp import RtspServer, not_installed
from tests.integration.helpers import Running
from tests.integration.test_camera import Records, site
from tests.support import missing, wait_for

LOSS_S = 3.0  # video_loss_s in these tests
CODECS = [pytest.param("h264", id="H.264"), pytest.param("h265", id="H.265")]


def rtsp_site(tmp_path: Path, url: str, **camera: Any) -> Any:
    return site(tmp_path, url, video_loss_s=LOSS_S, read_timeout_s=2, open_timeout_s=3, **camera)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RtspServer]:
    codec = getattr(request, "param", "h264")
    need_gstreamer(codec)
    rtsp = RtspServer(codec)
    yield rtsp
    rtsp.close()


def need_gstreamer(codec: str) -> None:
    reason = not_installed(codec)
    if reason:
        missing(reason)  # skipped here, a failure on CI (scripts/test installs it)


def health(running: Running) -> dict[str, Any]:
    host = running.gateway.host
    assert host is not None
    worker = host.health()["opencv.cameras"]
    return {"pid": worker["pid"], **worker["cameras"]["gate-cam"]}


def offline_times(records: Records) -> list[float]:
    return [e.device_time.timestamp() for e in records.events("campus.device.offline")]


def online_times(records: Records) -> list[float]:
    return [e.device_time.timestamp() for e in records.events("campus.device.online")]


@pytest.mark.parametrize("server", CODECS, indirect=True)
def test_first_frame_a_dead_camera_and_its_return(tmp_path: Path, server: RtspServer) -> None:
    config = rtsp_site(tmp_path, server.url)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        state = health(running)
        assert state["codec"] == {"h264": "h264", "h265": "hevc"}[server.args[0]]
        assert state["stream_size"] == [640, 360] or state["stream_size"] == (640, 360)
        assert state["first_frame_s"] is not None and state["first_frame_s"] < 3, \
            "the first frame well within open_timeout_s: probing a live stream is bounded"
        wait_for(lambda: 3.5 <= health(running)["fps"] <= 6, 10, "about 5 frames analysed a second")

        server.kill()  # the camera loses power
        killed = time.time()
        wait_for(lambda: offline_times(records), LOSS_S + 5, "video loss")
        lost_after = offline_times(records)[0] - killed
        assert LOSS_S - 0.5 <= lost_after <= LOSS_S + 1, f"video loss after {lost_after:.1f} s"
        wait_for(lambda: records.alarms("device_offline"), 5, "the video-loss alarm")
        # Long enough that the worker's restart backoff has grown past what the camera's return may take.
        wait_for(lambda: health(running)["restarts"] >= 3 and health(running)["port_closed"], 20,
                 "the worker retried with backoff, the camera's port found closed")

        server.start()  # power is back
        back = time.time()
        wait_for(lambda: len(online_times(records)) >= 2, 10, "video back")
        returned_after = online_times(records)[-1] - back
        assert returned_after <= 3, f"video back {returned_after:.1f} s after the camera, not after the backoff"
        wait_for(lambda: records.alarms("device_offline")[0].condition_active is False, 5, "the alarm restored")
        wait_for(lambda: 3.5 <= health(running)["fps"] <= 6, 10, "about 5 frames a second again")
        assert health(running)["fps"] >= 0
    finally:
        running.stop()


@pytest.mark.parametrize("server", CODECS, indirect=True)
def test_a_stall_is_lost_in_time_and_never_after_frames_resume(tmp_path: Path, server: RtspServer) -> None:
    config = rtsp_site(tmp_path, server.url)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        server.stall()  # the connection stays open; nothing arrives
        stalled = time.time()
        wait_for(lambda: offline_times(records), LOSS_S + 5, "video loss")
        lost_after = offline_times(records)[0] - stalled
        assert LOSS_S - 0.5 <= lost_after <= LOSS_S + 1, f"video loss after {lost_after:.1f} s"
        wait_for(lambda: time.time() - stalled >= LOSS_S + 3, LOSS_S + 5, "a stall longer than video_loss_s")
        server.stall(False)
        resumed = time.time()
        wait_for(lambda: len(online_times(records)) >= 2, 70, "video back")
        wait_for(lambda: time.time() - online_times(records)[-1] >= LOSS_S + 1, LOSS_S + 3,
                 "time for a late loss report to show")
        late = [t for t in offline_times(records) if t > resumed]
        assert not late, f"video loss reported {late[0] - resumed:.1f} s after frames resumed"
        assert len(offline_times(records)) == 1
    finally:
        running.stop()


class Covered:
    """Our camera simulator's scene, encoded and served by GStreamer, read by a gateway whose tamper detection
    has learnt the view and has raised "covered": the start of each tamper test."""

    def __init__(self, tmp_path: Path) -> None:
        need_gstreamer("h264")
        self.camera = CameraSimulator(fps=5)
        self.camera.start()
        self.server = RtspServer("h264", self.camera.url)
        self.config = rtsp_site(tmp_path, self.server.url,
                                tamper={"covered_hold_s": 1, "learn_s": 1, "clear_hold_s": 1})
        self.running = Running(self.config)
        self.records = Records(self.config)
        view = tmp_path / "data" / "snapshots" / "gate-cam" / "tamper-view.npz"
        wait_for(view.is_file, 20, "the view learnt")
        self.camera.cover(True)
        (alarm,) = wait_for(lambda: self.records.alarms("tamper"), 10, "the tamper alarm")
        assert alarm.key == "gate-cam:tamper:covered"

    def close(self) -> None:
        self.running.stop()
        self.server.close()
        self.camera.stop()


@pytest.fixture
def covered(tmp_path: Path) -> Iterator[Covered]:
    scene = Covered(tmp_path)
    yield scene
    scene.close()


def test_a_tamper_raised_before_a_restart_of_the_worker_clears_after_it(covered: Covered) -> None:
    """Covered on one reader; the camera dies and returns uncovered; the next reader must end the alarm."""
    records, running = covered.records, covered.running
    restarts = health(running)["restarts"]
    covered.server.kill()
    covered.camera.cover(False)  # somebody took the cover off while the camera was down
    wait_for(lambda: offline_times(records), LOSS_S + 5, "video loss")
    covered.server.start()
    wait_for(lambda: health(running)["restarts"] > restarts and records.online() is True, 15,
             "video back on a new reader")
    wait_for(lambda: records.alarms("tamper")[0].condition_active is False, 10,
             "the covered alarm ended by the new reader")
    assert [e.data["active"] for e in records.events("campus.camera.tamper")] == [True, False]


def test_a_tamper_active_when_the_gateway_stopped_is_ended_after_it_starts_again(covered: Covered) -> None:
    covered.running.stop()
    covered.camera.cover(False)
    covered.running = Running(covered.config)
    wait_for(lambda: covered.records.alarms("tamper")[0].condition_active is False, 20,
             "the covered alarm ended after the restart")
