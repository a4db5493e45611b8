"""The MJPEG camera simulator: OpenCV reads it as it reads an IP camera, and every scripted event shows in the
following frames where and how it should (what the camera driver's detections will rely on)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from simulators.camera import CameraSimulator
from tests.support import wait_for

W, H = 640, 360
Frame = np.ndarray[Any, Any]


@pytest.fixture
def camera() -> Iterator[CameraSimulator]:
    sim = CameraSimulator(fps=30)  # faster than a real one: every snapshot waits for the next frame
    sim.start()
    yield sim
    sim.stop()


def snapshot(sim: CameraSimulator, timeout: float = 5.0) -> Frame:
    """The first frame drawn after the request: it shows every event called before."""
    with urllib.request.urlopen(sim.snapshot_url, timeout=timeout) as reply:
        frame = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
    assert frame is not None
    return frame


def scene(sim: CameraSimulator, frame: Frame) -> Frame:
    """The frame with the OSD clock blacked out (it changes every frame), as a driver masks it."""
    x, y, w, h = sim.osd_box
    out = frame.copy()
    out[y:y + h + 16, x:x + w + 16] = 0  # and the JPEG blocks it touches
    return out


def grey(frame: Frame) -> Frame:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def changed_box(sim: CameraSimulator, base: Frame, frame: Frame) -> tuple[int, int, int, int] | None:
    """Bounding box (x, y, w, h) of what differs from `base`, JPEG noise left out."""
    diff = cv2.absdiff(grey(scene(sim, base)), grey(scene(sim, frame)))
    mask = cv2.morphologyEx((diff > 30).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if mask.sum() < 50:
        return None
    x, y, w, h = cv2.boundingRect(mask)
    return int(x), int(y), int(w), int(h)


class MjpegReader:
    """A bare HTTP client reading the multipart stream part by part, headers and all (its own buffer: it
    keeps reading after a timeout, which a socket file cannot)."""

    def __init__(self, sim: CameraSimulator, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", sim.port), timeout=timeout)
        self.sock.sendall(b"GET /video.mjpg HTTP/1.1\r\nHost: camera\r\n\r\n")
        self.buffer = bytearray()
        self.status = self._line()
        self.headers = self._headers()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the stream ended")
        self.buffer += chunk

    def _line(self) -> str:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line.decode()

    def _headers(self) -> dict[str, str]:
        headers = {}
        while line := self._line():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers

    def part(self, timeout: float = 5.0) -> tuple[str, dict[str, str], bytes]:
        """(boundary line, part headers, body)."""
        self.sock.settimeout(timeout)
        line = self._line()
        if not line:  # the CRLF that ends the previous part
            line = self._line()
        headers = self._headers()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return line, headers, body

    def close(self) -> None:
        self.sock.close()


# -- the stream ---------------------------------------------------------------------------------------------------

def test_opencv_reads_the_stream_frames_differ_only_in_the_osd_corner(camera: CameraSimulator) -> None:
    cap = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    try:
        assert cap.isOpened()
        frames = []
        for _ in range(6):
            ok, frame = cap.read()
            assert ok
            assert frame.shape == (H, W, 3)
            frames.append(frame)
        assert camera.clients == 1
        first, last = frames[0], frames[-1]
        assert not np.array_equal(first, last), "the OSD clock moves"
        assert np.abs(scene(camera, first).astype(int) - scene(camera, last)).max() <= 2, "nothing else does"
    finally:
        cap.release()
    wait_for(lambda: camera.clients == 0, 5, "the client gone")


def test_snapshot_is_one_jpeg(camera: CameraSimulator) -> None:
    with urllib.request.urlopen(camera.snapshot_url, timeout=5) as reply:
        body = reply.read()
        assert reply.headers["Content-Type"] == "image/jpeg"
        assert int(reply.headers["Content-Length"]) == len(body)
    frame = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert frame is not None and frame.shape == (H, W, 3)


def test_parts_are_framed_as_ip_cameras_do_and_encoded_once_for_all_clients(camera: CameraSimulator) -> None:
    readers = [MjpegReader(camera), MjpegReader(camera)]
    try:
        assert readers[0].status.startswith("HTTP/1.0 200")
        content_type = readers[0].headers["content-type"]
        assert content_type.startswith("multipart/x-mixed-replace; boundary=")
        boundary = content_type.split("boundary=")[1]
        bodies: list[set[bytes]] = [set(), set()]
        for _ in range(5):
            for reader, seen in zip(readers, bodies, strict=True):
                line, headers, body = reader.part()
                assert line == f"--{boundary}"
                assert headers["content-type"] == "image/jpeg"
                assert int(headers["content-length"]) == len(body)
                assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
                seen.add(body)
        wait_for(lambda: camera.clients == 2, 5, "two clients counted")
        assert bodies[0] & bodies[1], "the same encoded frames went to both"
    finally:
        for reader in readers:
            reader.close()


def test_the_background_is_textured_and_the_same_for_the_same_seed() -> None:
    sims = [CameraSimulator(fps=30, seed=seed, osd=False) for seed in (7, 7, 8)]
    for sim in sims:
        sim.start()
    try:
        frames = [snapshot(sim) for sim in sims]
    finally:
        for sim in sims:
            sim.stop()
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    keypoints = cv2.ORB.create(nfeatures=1000).detect(grey(frames[0]), None)
    assert len(keypoints) > 400, "enough corners to match features on"
    assert cv2.Laplacian(grey(frames[0]), cv2.CV_64F).var() > 100, "sharp"


# -- a person --------------------------------------------------------------------------------------------------------

def test_a_person_shows_where_asked_with_a_person_s_size_and_goes(camera: CameraSimulator) -> None:
    base = snapshot(camera)
    camera.person_enter(0.5, 0.9)
    box = changed_box(camera, base, snapshot(camera))
    assert box is not None
    x, y, w, h = box
    assert abs((x + w / 2) - 0.5 * W) < 8, "centred on x"
    assert abs((y + h) - 0.9 * H) < 8, "feet at y"
    assert abs(h - H / 3) < 12, "a third of the frame high"
    assert 0.3 < w / h < 0.5, "about 1:2.5"
    camera.person_leave()
    assert changed_box(camera, base, snapshot(camera)) is None


def test_the_default_hog_people_detector_finds_the_person_and_nothing_else(camera: CameraSimulator) -> None:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(np.array(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
    found, _ = hog.detectMultiScale(snapshot(camera), winStride=(8, 8), padding=(8, 8), scale=1.05)
    assert len(found) == 0
    camera.person_enter(0.3, 0.85)
    found, weights = hog.detectMultiScale(snapshot(camera), winStride=(8, 8), padding=(8, 8), scale=1.05)
    assert len(found) >= 1
    x, y, w, h = found[int(np.argmax(weights))]
    assert x < 0.3 * W < x + w and y < 0.85 * H - H / 6 < y + h


def test_a_person_walks_through_and_moves_to_a_place(camera: CameraSimulator) -> None:
    base = snapshot(camera)

    def centre() -> float | None:
        box = changed_box(camera, base, snapshot(camera))
        return None if box is None else (box[0] + box[2] / 2) / W

    camera.walk_through(0.9, 1.5)
    wait_for(lambda: (c := centre()) is not None and c < 0.45, 3, "the person on the left")
    wait_for(lambda: (c := centre()) is not None and c > 0.55, 3, "the person on the right")
    wait_for(lambda: centre() is None, 3, "the person gone")
    camera.person_enter(0.2, 0.9)
    camera.person_move_to(0.75, 0.85, 0.3)
    wait_for(lambda: (c := centre()) is not None and abs(c - 0.75) < 0.02, 3, "the person arrived")
    box = changed_box(camera, base, snapshot(camera))
    assert box is not None and abs((box[0] + box[2] / 2) / W - 0.75) < 0.02, "and stays"


# -- tampering and the picture -----------------------------------------------------------------------------------

def test_cover_gives_a_dark_low_contrast_frame(camera: CameraSimulator) -> None:
    camera.cover(True)
    covered = grey(snapshot(camera))[40:]  # below the OSD
    assert covered.mean() < 35 and covered.std() < 6
    camera.cover(False)
    uncovered = grey(snapshot(camera))[40:]
    assert uncovered.mean() > 80 and uncovered.std() > 25


def test_blur_lowers_the_laplacian_variance_a_lot(camera: CameraSimulator) -> None:
    def sharpness() -> float:
        return float(cv2.Laplacian(grey(snapshot(camera))[40:], cv2.CV_64F).var())

    sharp = sharpness()
    camera.blur(True)
    blurred = sharpness()
    assert blurred < sharp / 10
    camera.blur(False)
    assert sharpness() > sharp * 0.9


def test_shift_moves_the_scene_by_that_fraction_and_back(camera: CameraSimulator) -> None:
    def view() -> Frame:
        return grey(snapshot(camera))[40:].astype(np.float32)

    base = view()
    window = cv2.createHanningWindow((base.shape[1], base.shape[0]), cv2.CV_32F)
    camera.shift(0.1, -0.05)
    (dx, dy), _ = cv2.phaseCorrelate(base.copy(), view(), window)  # it may write into its inputs
    assert abs(dx - 0.1 * W) < 1 and abs(dy + 0.05 * H) < 1
    camera.rotate(8)
    assert np.abs(view() - base).mean() > 20
    camera.shift(0, 0)
    camera.rotate(0)
    assert np.abs(view() - base).mean() < 1


def test_lights_change_the_whole_frame_s_brightness(camera: CameraSimulator) -> None:
    def frame() -> Frame:
        return snapshot(camera)[40:]

    before = frame().mean()
    camera.lights(0.4)
    assert frame().mean() / before == pytest.approx(0.4, abs=0.03)
    camera.lights(0.5, grey=True)
    night = frame().astype(int)
    assert np.abs(night[:, :, 0] - night[:, :, 2]).mean() < 2, "no colour in IR mode"
    camera.lights(1.0)
    assert frame().mean() == pytest.approx(before, rel=0.02)


# -- the camera failing ----------------------------------------------------------------------------------------------

def test_stall_keeps_the_connection_but_sends_nothing_until_unstalled(camera: CameraSimulator) -> None:
    reader = MjpegReader(camera)
    try:
        reader.part()
        camera.stall(True)
        sent = camera.frames_sent
        late = 0
        with pytest.raises(TimeoutError):
            while True:
                reader.part(timeout=0.5)
                late += 1
        assert late <= 2, "only what was already on its way"
        assert camera.frames_sent == sent
        assert camera.clients == 1, "the connection is still open"
        with pytest.raises(TimeoutError):
            snapshot(camera, timeout=0.3)
        camera.stall(False)
        _, headers, body = reader.part(timeout=5)
        assert int(headers["content-length"]) == len(body) > 0
        assert camera.frames_sent > sent
    finally:
        reader.close()


def test_close_connections_ends_every_stream_and_new_ones_work(camera: CameraSimulator) -> None:
    cap = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    try:
        assert cap.read()[0]
        camera.close_connections()
        wait_for(lambda: not cap.read()[0], 5, "the stream to end")
        wait_for(lambda: camera.clients == 0, 5, "no client left")
    finally:
        cap.release()
    cap = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    try:
        ok, frame = cap.read()
        assert ok and frame.shape == (H, W, 3)
    finally:
        cap.release()


def test_refuse_answers_503_until_turned_off(camera: CameraSimulator) -> None:
    camera.refuse(True)
    for url in (camera.url, camera.snapshot_url):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
    camera.refuse(False)
    assert snapshot(camera).shape == (H, W, 3)


# -- a video file -----------------------------------------------------------------------------------------------------

COLOURS = [(20 * i, 240 - 20 * i, 100) for i in range(10)]  # one plain colour per frame of the file


def clip(tmp_path: Path) -> str:
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    assert writer.isOpened()
    for colour in COLOURS:
        writer.write(np.full((240, 320, 3), colour, np.uint8))
    writer.release()
    return path


def file_frame(sim: CameraSimulator) -> int:
    """Which frame of the clip the camera shows now."""
    frame = snapshot(sim)
    assert frame.shape == (H, W, 3)
    mean = frame[40:].reshape(-1, 3).mean(axis=0)
    distances = [float(np.abs(mean - colour).sum()) for colour in COLOURS]
    assert min(distances) < 15, f"not a frame of the clip: {mean}"
    return int(np.argmin(distances))


def test_play_serves_a_file_looping_then_back_to_the_scene(camera: CameraSimulator, tmp_path: Path) -> None:
    base = snapshot(camera)
    path = clip(tmp_path)
    camera.play(path)
    seen = [file_frame(camera)]

    def looped() -> bool:
        seen.append(file_frame(camera))
        return seen[-1] < seen[-2]

    wait_for(looped, 5, "the clip to loop")
    assert len(set(seen)) > 2, "successive frames of the clip"
    camera.play(path, loop=False)
    wait_for(lambda: file_frame(camera) == len(COLOURS) - 1, 5, "the clip's last frame")
    assert file_frame(camera) == len(COLOURS) - 1, "stays on it"
    camera.play(None)
    assert changed_box(camera, base, snapshot(camera)) is None
    with pytest.raises(ValueError):
        camera.play(str(tmp_path / "missing.avi"))
