"""What the alarm's page plays besides the board: the alarm spoken by the gateway (espeak-ng, Debian's), and a
camera's frames live as MJPEG, which the worker writes often only while someone watches."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from gateway.config_file import validate_config
from gateway.console import auth
from simulators.camera import CameraSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, logged_in
from tests.support import missing, wait_for

PASSWORD = "a long enough password"


def start(tmp_path: Path, sim: ModbusDISimulator, camera_url: str | None = None) -> Running:
    devices = [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "south-gate",
                "connection": {"host": "127.0.0.1", "port": sim.port, "unit": 1},
                "points": [{"input": 1, "name": "panic", "type": "panic", "place": "门卫室"}]}]
    if camera_url:
        devices.append({"id": "gate-cam", "kind": "camera", "driver": "opencv", "zone": "south-gate",
                        "url": camera_url, "fps": 5, "tamper": None})
    running = Running(validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "south-gate", "name": "南门"}],
        "devices": devices}))
    with running.gateway.sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
    return running


def test_an_alarm_is_spoken_in_the_users_language(tmp_path: Path, sim: ModbusDISimulator) -> None:
    if shutil.which("espeak-ng") is None:
        missing("espeak-ng is not installed (scripts/test installs it when run as root)")
    running = start(tmp_path, sim)
    try:
        client = logged_in(running.gateway.console_url, "guard1", PASSWORD)
        sim.press(1)
        alarm = wait_for(lambda: client.get("/api/alarms").json(), 5, "the alarm")[0]
        spoken = client.get(f"/api/alarms/{alarm['id']}/speech")
        assert spoken.status_code == 200 and spoken.headers["content-type"] == "audio/wav"
        assert spoken.content[:4] == b"RIFF" and len(spoken.content) > 20_000, "a second or more of speech"
        assert client.get("/api/alarms/999/speech").status_code == 404
    finally:
        running.stop()


@pytest.mark.timeout(90)
def test_a_camera_plays_live_while_watched(tmp_path: Path, sim: ModbusDISimulator) -> None:
    camera = CameraSimulator(fps=10)
    camera.start()
    running = start(tmp_path, sim, camera.url)
    latest = tmp_path / "data" / "snapshots" / "gate-cam" / "latest.jpg"
    try:
        wait_for(latest.exists, 30, "the camera's first view")
        client = logged_in(running.gateway.console_url, "guard1", PASSWORD)
        frames: list[bytes] = []
        began = time.monotonic()
        with client.stream("GET", "/cameras/gate-cam/live.mjpg") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
            buffer = b""
            for chunk in response.iter_bytes():
                buffer += chunk
                while b"\xff\xd9" in buffer and b"\xff\xd8" in buffer:  # one whole JPEG
                    start_at = buffer.index(b"\xff\xd8")
                    end_at = buffer.index(b"\xff\xd9", start_at) + 2
                    frames.append(buffer[start_at:end_at])
                    buffer = buffer[end_at:]
                if len(frames) >= 6 or time.monotonic() - began > 20:
                    break
        took = time.monotonic() - began
        assert len(frames) >= 6, f"{len(frames)} frames in {took:.1f} s"
        assert len(set(frames)) >= 5, "new pictures, not the same one again"
        assert took < 10, f"six frames took {took:.1f} s: the worker did not write every frame while watched"
        assert client.get("/cameras/nope/live.mjpg").status_code == 404
    finally:
        running.stop()
        camera.stop()
