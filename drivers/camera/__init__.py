"""IP cameras' low-resolution substreams (RTSP, HTTP MJPEG), video files and local cameras, through OpenCV in a
worker process per camera."""

from __future__ import annotations

from drivers.camera.schema import CameraConfig
from drivers.manifest import Manifest

MANIFEST = Manifest(
    name="opencv", kinds=("camera",), schema=CameraConfig, driver="drivers.camera.driver:CameraDriver",
    simulator="simulators.camera",
    events=("campus.camera.motion", "campus.camera.tamper", "campus.camera.loitering", "campus.camera.clip"),
    doctor="drivers.camera.doctor")
