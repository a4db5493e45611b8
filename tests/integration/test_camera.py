"""The camera driver against the MJPEG camera simulator, through the whole gateway to the records:
video, video loss (a stalled stream, a hung read killed), recovery, a camera reboot that is not a loss,
and tamper raised as an alarm with its snapshot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateway.bus import Bus
from gateway.commands import CommandClient
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Alarm, Device, IngestedEvent
from simulators.camera import CameraSimulator
from tests.integration.helpers import Running, logged_in
from tests.support import broker_config, wait_for


def site(tmp_path: Path, url: str, **camera: Any) -> Config:
    return validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "gate-cam", "kind": "camera", "driver": "opencv", "url": url, "fps": 5,
                     "video_loss_s": 2, "read_timeout_s": 30, "snapshot_every_s": 1, "tamper": None, **camera}],
    })


def camera_health(host: Any, camera: str = "gate-cam") -> dict[str, Any]:
    """A camera's state as its driver reports it, with its worker process's pid."""
    worker = host.health()["opencv.cameras"]
    return {"pid": worker["pid"], **worker["cameras"][camera]}


class Records:
    def __init__(self, config: Config) -> None:
        self.sessions = db.make_sessions(db.make_engine(config.database_url()))

    def online(self) -> bool | None:
        with self.sessions() as session:
            device = session.get(Device, "gate-cam")
            return device.online if device else None

    def alarms(self, alarm_type: str) -> list[Alarm]:
        with self.sessions() as session:
            return list(session.scalars(select(Alarm).where(Alarm.alarm_type == alarm_type).order_by(Alarm.id)))

    def events(self, event_type: str) -> list[IngestedEvent]:
        with self.sessions() as session:
            return list(session.scalars(select(IngestedEvent).where(IngestedEvent.type == event_type)
                                        .order_by(IngestedEvent.device_time)))


@pytest.fixture
def camera() -> Iterator[CameraSimulator]:
    sim = CameraSimulator(fps=10)
    sim.start()
    yield sim
    sim.stop()


def test_a_camera_comes_online_with_a_live_snapshot(tmp_path: Path, camera: CameraSimulator) -> None:
    config = site(tmp_path, camera.url)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        latest = tmp_path / "data" / "snapshots" / "gate-cam" / "latest.jpg"
        wait_for(latest.exists, 5, "the live snapshot on disk")
        assert latest.read_bytes()[:2] == b"\xff\xd8", "a JPEG"
        host = running.gateway.host
        assert host is not None
        wait_for(lambda: 3.5 <= camera_health(host)["fps"] <= 6, 10, "about 5 frames analysed a second")

        url = running.gateway.console_url
        assert url and running.gateway.first_admin_password
        assert httpx.get(url + "snapshots/gate-cam/latest.jpg").status_code == 303, "not without a login"
        client = logged_in(url, "admin", running.gateway.first_admin_password)
        tile = client.get("/snapshots/gate-cam/latest.jpg")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
        assert "no-store" in tile.headers["cache-control"]
        for bad in ("/snapshots/gate-cam/..%2F..%2Fcampusgw.db", "/snapshots/gate-cam/latest.png",
                    "/snapshots/other-cam/gate-cam-20261129T080000-000-1.jpg"):
            assert client.get(bad).status_code == 404, bad
        page = client.get("/cameras").text
        assert 'data-id="gate-cam"' in page and "/snapshots/gate-cam/latest.jpg" in page
        fps = [s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
               if s.name == "campusgw_camera_fps" and s.labels == {"camera": "gate-cam"}]
        assert fps and 3.5 <= fps[0] <= 6, "/metrics has the camera's analysis rate"
    finally:
        running.stop()


def test_a_stalled_stream_is_video_loss_the_hung_read_is_killed_and_video_comes_back(
        tmp_path: Path, camera: CameraSimulator) -> None:
    config = site(tmp_path, camera.url)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        host = running.gateway.host
        assert host is not None
        pid = camera_health(host)["pid"]
        camera.stall(True)  # the connection stays open and FFmpeg's read (30 s timeout) never returns
        stalled = time.monotonic()
        wait_for(lambda: records.online() is False, 6, "video loss")
        assert time.monotonic() - stalled < 2 + 1.5, "within video_loss_s (2 s) and the watchdog's tick"
        wait_for(lambda: records.alarms("device_offline"), 5, "the video-loss alarm")
        (offline,) = records.events("campus.device.offline")
        assert offline.data["reason"].startswith("video loss: no frame for")
        assert camera_health(host)["pid"] != pid, "the hung worker was killed"
        camera.stall(False)
        wait_for(lambda: records.online() is True, 10, "video back (the restore)")
        wait_for(lambda: records.alarms("device_offline")[0].condition_active is False, 5, "the alarm restored")
    finally:
        running.stop()


def test_cameras_share_a_worker_and_one_hung_read_does_not_lose_the_others(tmp_path: Path,
                                                                          camera: CameraSimulator) -> None:
    """The group's cameras are read in one process; a read that never returns on one gets the process
    killed, and the other camera is read again at once: no video loss for it, its frames keep coming."""
    yard = CameraSimulator(fps=10)
    yard.start()
    config = validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "gate-cam", "kind": "camera", "driver": "opencv", "url": camera.url, "video_loss_s": 2,
                     "read_timeout_s": 30, "tamper": None},
                    {"id": "yard-cam", "kind": "camera", "driver": "opencv", "url": yard.url, "video_loss_s": 5,
                     "read_timeout_s": 30, "tamper": None}]})
    running = Running(config)
    records = Records(config)
    try:
        host = running.gateway.host
        assert host is not None
        wait_for(lambda: all(camera_health(host, c)["online"] for c in ("gate-cam", "yard-cam")), 15,
                 "both cameras online")
        pid = camera_health(host)["pid"]
        assert camera_health(host, "yard-cam")["pid"] == pid, "one worker process for both"
        camera.stall(True)  # gate-cam's read never returns (30 s timeout)
        wait_for(lambda: records.online() is False, 6, "gate-cam's video loss")
        wait_for(lambda: camera_health(host)["pid"] not in (None, pid), 5, "the worker with the hung read killed")
        sent = yard.frames_sent
        wait_for(lambda: camera_health(host, "yard-cam")["restarts"] >= 1 and yard.clients >= 1, 5,
                 "yard-cam read again in the new worker")
        wait_for(lambda: yard.frames_sent >= sent + 20, 5, "yard-cam's frames")
        camera.stall(False)
        wait_for(lambda: records.online() is True, 10, "gate-cam's video back")
        with records.sessions() as session:
            yard_device = session.get(Device, "yard-cam")
            assert yard_device is not None and yard_device.online is True
        offline = [e.device_id for e in records.events("campus.device.offline")]
        assert offline and set(offline) == {"gate-cam"}, "yard-cam was never lost"
    finally:
        running.stop()
        yard.stop()


def test_a_camera_that_reboots_quickly_is_not_lost(tmp_path: Path, camera: CameraSimulator) -> None:
    config = site(tmp_path, camera.url, video_loss_s=5)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        host = running.gateway.host
        assert host is not None
        camera.close_connections()
        wait_for(lambda: camera_health(host)["restarts"] >= 1, 5, "the worker reading again")
        wait_for(lambda: camera.clients >= 1, 5, "reconnected")
        assert records.online() is True and not records.alarms("device_offline")
    finally:
        running.stop()


def test_a_covered_lens_is_a_tamper_alarm_with_its_snapshot_and_clears_when_uncovered(
        tmp_path: Path, camera: CameraSimulator) -> None:
    config = site(tmp_path, camera.url, tamper={"covered_hold_s": 1, "learn_s": 1, "clear_hold_s": 1})
    running = Running(config)
    records = Records(config)
    try:
        view = tmp_path / "data" / "snapshots" / "gate-cam" / "tamper-view.npz"
        wait_for(view.is_file, 15, "the view learnt (covered is judged against it)")
        camera.cover(True)
        covered = time.monotonic()
        (alarm,) = wait_for(lambda: records.alarms("tamper"), 10, "the tamper alarm")
        assert time.monotonic() - covered < 1 + 2, "after its hold time (1 s), not long after"
        assert alarm.key == "gate-cam:tamper:covered" and alarm.state == "active_unack"
        (event,) = records.events("campus.camera.tamper")
        snapshot = tmp_path / "data" / "snapshots" / "gate-cam" / event.data["snapshot_id"][9:17] \
            / f"{event.data['snapshot_id']}.jpg"
        assert snapshot.is_file(), "the event's snapshot is kept"
        camera.cover(False)
        wait_for(lambda: records.alarms("tamper")[0].condition_active is False, 10, "cleared when uncovered")
        assert not [e for e in records.events("campus.camera.tamper") if e.data["kind"] != "covered"], \
            "a covered lens is not also called blurred or moved"
    finally:
        running.stop()


def test_a_person_walking_is_motion_and_the_lights_switching_is_not(tmp_path: Path,
                                                                    camera: CameraSimulator) -> None:
    x, y, w, h = camera.osd_box
    clock = [((x) / 640, (y) / 360), ((x + w + 16) / 640, y / 360), ((x + w + 16) / 640, (y + h + 16) / 360),
             (x / 640, (y + h + 16) / 360)]
    config = site(tmp_path, camera.url, motion={"zones": [{"name": "yard", "polygon": [[0, 0.4], [1, 0.4], [1, 1],
                                                                                           [0, 1]]}],
                                                "masks": [clock], "min_duration_s": 0.6, "clear_after_s": 1.5})
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        camera.lights(0.4)  # the lights go off: the whole frame changes at once
        switched = camera.frames_sent
        wait_for(lambda: camera.frames_sent >= switched + 25, 10, "2.5 s of frames after the switch")
        assert records.events("campus.camera.motion") == [], "the lights switching is not motion"
        camera.walk_through(0.9, 3)
        (start,) = wait_for(lambda: [e for e in records.events("campus.camera.motion") if e.data["active"]], 10,
                            "motion in the yard")
        assert start.data["zone"] == "yard" and start.data["snapshot_id"].startswith("gate-cam-")
        wait_for(lambda: [e for e in records.events("campus.camera.motion") if not e.data["active"]], 10,
                 "the motion over once the person has gone")
    finally:
        running.stop()


def test_a_camera_turned_while_its_stream_was_down_is_still_moved(tmp_path: Path, camera: CameraSimulator) -> None:
    """The view learnt before an outage is kept: a restarted worker compares against it instead of taking
    whatever the camera shows afterwards as normal. A deliberate re-aim is learnt with the relearn command."""
    config = site(tmp_path, camera.url, tamper={"moved_hold_s": 1, "learn_s": 1, "clear_hold_s": 1})
    running = Running(config)
    records = Records(config)
    view = tmp_path / "data" / "snapshots" / "gate-cam" / "tamper-view.npz"
    try:
        wait_for(lambda: records.online() is True, 15, "the camera online")
        wait_for(view.exists, 10, "the learnt view kept on disk")
        camera.stall(True)
        wait_for(lambda: records.online() is False, 6, "video loss")
        camera.shift(0.3, 0)  # turned during the outage
        camera.stall(False)
        (alarm,) = wait_for(lambda: records.alarms("tamper"), 15, "moved, against the view from before")
        assert alarm.key == "gate-cam:tamper:moved"
        bus = Bus(broker_config(running.gateway.broker_port), "installer", name="test")
        commands = CommandClient(bus, "school-1", running.gateway.config.gateway.command_key())
        bus.start()
        assert bus.wait_connected(10)
        result = commands.send("camera", "gate-cam", "relearn", issued_by="installer-li", timeout=5)
        bus.stop()
        assert result["status"] == "ok"
        wait_for(lambda: records.alarms("tamper")[0].condition_active is False, 15, "the new view accepted")
    finally:
        running.stop()


def test_a_video_file_is_a_camera_too(tmp_path: Path) -> None:
    """A recorded clip (an installer trying a config, a demo) plays through the same worker."""
    import cv2
    import numpy as np

    path = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(30):
        frame = np.full((180, 320, 3), 60, np.uint8)
        cv2.rectangle(frame, (10 + i * 5, 60), (40 + i * 5, 150), (20, 20, 20), -1)
        writer.write(frame)
    writer.release()
    config = site(tmp_path, str(path), loop_file=True, video_loss_s=5)
    running = Running(config)
    records = Records(config)
    try:
        wait_for(lambda: records.online() is True, 15, "the file's video")
        latest = tmp_path / "data" / "snapshots" / "gate-cam" / "latest.jpg"
        wait_for(latest.exists, 5, "its frames analysed")
        assert cv2.imread(str(latest)).shape == (360, 640, 3), "scaled to the analysis size"
    finally:
        running.stop()
