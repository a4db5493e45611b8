"""IP cameras' low-resolution substreams (RTSP, HTTP MJPEG), video files and local cameras, through OpenCV in
worker processes (the cameras of a `worker` group in one, a thread each)."""

from __future__ import annotations

from drivers.camera.schema import CameraConfig
from drivers.manifest import Manifest

MANIFEST = Manifest(
    name="opencv", kinds=("camera",), schema=CameraConfig, driver="drivers.camera.driver:CameraDriver",
    simulator="simulators.camera",
    events=("campus.camera.motion", "campus.camera.tamper", "campus.camera.loitering", "campus.camera.clip"),
    doctor="drivers.camera.doctor")
