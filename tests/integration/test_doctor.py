"""`campusgw doctor` against real devices' stand-ins: our MJPEG camera simulator, GStreamer's RTSP server (H.264,
H.265, a main stream, a long key-frame interval, a login), a closed port; and our libosdp reader simulator on a
pty (the right key, a wrong one, a reader fresh from the box, no key, no reader, a line of two).

What an installer relies on: the numbers are the stream's (codec, size, rate, key frames), the ID report is the
reader's own, the advice names the fault, the exit status says usable or not, no password is ever printed, and
the doctor never changes a reader (it gives no key)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import osdp
import pytest

from drivers.camera.doctor import CameraProbe, camera_advice, format_camera, probe_camera
from drivers.doctor import Finding, usable
from drivers.osdp_reader.doctor import probe_osdp, reader_advice
from simulators.camera import CameraSimulator
from simulators.osdp_reader import OsdpLine, OsdpReaderSimulator
from tests.integration.gst_rtsp import RtspServer, not_installed
from tests.support import missing

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

ROOT = Path(__file__).resolve().parent.parent.parent
KEY = "00112233445566778899aabbccddeeff"
WRONG_KEY = "ffeeddccbbaa99887766554433221100"
PASSWORD = "Gate-Cam-Pw-7731"


def doctor(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`campusgw doctor ...` as an installer runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def calm(findings: list[Finding]) -> list[Finding]:
    """The advice a loaded test machine cannot cause: without "the stream paused" (a CI hiccup of 0.5 s)."""
    return [f for f in findings if "paused" not in f.text]


def advice_text(probe: CameraProbe) -> str:
    return "\n".join(f.text for f in camera_advice(probe))


def closed_port() -> int:
    """A port nothing listens on: bound and released (nothing else here takes it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_gstreamer(codec: str = "h264") -> None:
    reason = not_installed(codec)
    if reason:
        missing(reason)  # skipped here, a failure on CI (scripts/test installs it)


def rtsp(codec: str = "h264", **kwargs: object) -> RtspServer:
    need_gstreamer(codec)
    return RtspServer(codec, **kwargs)  # type: ignore[arg-type]


# -- cameras ---------------------------------------------------------------------------------------------


@pytest.fixture
def mjpeg_camera() -> Iterator[CameraSimulator]:
    camera = CameraSimulator(fps=5)
    camera.start()
    yield camera
    camera.stop()


def test_the_mjpeg_simulator_is_measured_as_it_is_made_and_is_usable(mjpeg_camera: CameraSimulator) -> None:
    probe = probe_camera(mjpeg_camera.url, seconds=2, timeout=5)
    assert probe.connect == "ok" and probe.opened and probe.decoded
    assert (probe.fourcc, probe.width, probe.height) == ("MJPG", 640, 360)
    assert probe.claimed_fps is None, "MJPEG over HTTP carries no frame rate: FFmpeg's 25 is not the camera's"
    assert probe.stats is not None and probe.stats.fps is not None
    assert 4.0 <= probe.stats.fps <= 6.0, probe.stats
    assert probe.stats.dropped is None, "no rate to count dropped frames against"
    assert probe.first_frame_s is not None and probe.first_frame_s < 2.0
    assert probe.read_failures == 0 and not probe.ended
    assert calm(camera_advice(probe)) == []
    report = format_camera(probe, [])
    assert "MJPEG (MJPG)" in report and "640x360" in report and "result: usable" in report


def test_a_fast_mjpeg_camera_is_told_to_use_its_substream() -> None:
    camera = CameraSimulator(fps=20)
    camera.start()
    try:
        probe = probe_camera(camera.url, seconds=2, timeout=5)
    finally:
        camera.stop()
    assert probe.stats is not None and probe.stats.fps is not None and probe.stats.fps > 15
    findings = camera_advice(probe)
    assert usable(findings), "too many frames is advice, not a fault"
    assert any("substream" in f.text and "20 fps" in f.text for f in findings), findings


@pytest.mark.parametrize("codec, fourcc", [("h264", "h264"), ("h265", "hevc")], ids=["H.264", "H.265"])
def test_an_rtsp_substream_reports_its_codec_size_rate_and_key_frames(codec: str, fourcc: str) -> None:
    server = rtsp(codec)  # 640x360, 5 fps, a key frame every second
    try:
        probe = probe_camera(server.url, seconds=2.5, timeout=10)
    finally:
        server.close()
    assert probe.opened and probe.decoded
    assert (probe.fourcc, probe.width, probe.height, probe.claimed_fps) == (fourcc, 640, 360, 5.0)
    stats = probe.stats
    assert stats is not None and stats.fps is not None and 4.0 <= stats.fps <= 6.0, stats
    assert stats.key_interval_s is not None and 0.7 <= stats.key_interval_s <= 1.3, stats
    assert stats.dropped is not None and stats.dropped <= 2, stats  # counted against the stream's own 5 fps
    assert probe.first_frame_s is not None and probe.first_frame_s < 2.5
    findings = camera_advice(probe)
    assert usable(findings)
    if codec == "h265":
        assert [f.text for f in findings if "H.265" in f.text], findings
        assert "more CPU" in advice_text(probe)
    else:
        assert calm(findings) == [], findings


def test_a_main_stream_is_told_to_use_the_substream() -> None:
    server = rtsp("h264", size="1280x720", fps=15)
    try:
        probe = probe_camera(server.url, seconds=2, timeout=10)
    finally:
        server.close()
    assert (probe.width, probe.height) == (1280, 720)
    text = advice_text(probe)
    assert "1280x720" in text and "15 fps" in text and "substream" in text, text
    assert "/Streaming/Channels/102" in text and "subtype=1" in text
    assert usable(camera_advice(probe))


def test_a_long_key_frame_interval_is_told_to_be_1_to_2_s() -> None:
    server = rtsp("h264", gop=25)  # 5 s at 5 fps
    try:
        probe = probe_camera(server.url, seconds=3, timeout=10)
    finally:
        server.close()
    assert probe.stats is not None and probe.stats.key_frames == 1, probe.stats
    text = advice_text(probe)
    assert "key-frame interval" in text and "1-2 s" in text, text


def test_a_closed_port_exits_non_zero_with_the_connection_advice() -> None:
    port = closed_port()
    result = doctor("camera", f"rtsp://127.0.0.1:{port}/Streaming/Channels/102", "--timeout", "3")
    assert result.returncode == 1, result
    assert f"nothing listens on port {port}" in result.stdout
    assert "RTSP is enabled on the camera" in result.stdout and "result: NOT usable" in result.stdout


def test_a_password_in_the_url_is_never_printed() -> None:
    result = doctor("camera", f"rtsp://admin:{PASSWORD}@127.0.0.1:{closed_port()}/sub", "--timeout", "3")
    assert result.returncode == 1
    assert PASSWORD not in result.stdout + result.stderr
    assert "admin:***@" in result.stdout and "--password-env" in result.stdout


def test_a_camera_that_wants_a_login_no_login_a_wrong_one_and_the_right_one() -> None:
    need_gstreamer()
    server = RtspServer(login=f"admin:{PASSWORD}")  # Digest, as a camera asks
    try:
        none = probe_camera(server.url, timeout=5)
        wrong = probe_camera(server.url, "admin", "not-it", timeout=5)
        missing_path = probe_camera(server.url.replace("/sub", "/Streaming/Channels/102"), "admin", PASSWORD,
                                    timeout=5)
        right = doctor("camera", server.url, "--username", "admin", "--password-env", "CAM_PASSWORD",
                       "--seconds", "2", env={"CAM_PASSWORD": PASSWORD})
    finally:
        server.close()
    assert not none.opened and "asks for a user name and password" in advice_text(none)
    assert not wrong.opened and "refused this user name or password" in advice_text(wrong)
    assert "not-it" not in format_camera(wrong, camera_advice(wrong), verbose=True)
    assert "no stream at this path" in advice_text(missing_path)
    assert right.returncode == 0, right.stdout + right.stderr
    assert "H.264 (h264)" in right.stdout and "result: usable" in right.stdout
    assert PASSWORD not in right.stdout + right.stderr and "admin:***@" in right.stdout


# -- OSDP readers ----------------------------------------------------------------------------------------

# What the simulator declares: libosdp's default ID (the simulator gives none of its own) and these capabilities.
DEFAULT_ID = osdp.PDInfo(0, None).id


def test_the_default_id_the_simulator_declares_is_what_the_expectations_below_are_made_of() -> None:
    assert (DEFAULT_ID.vendor_code, DEFAULT_ID.model, DEFAULT_ID.version, DEFAULT_ID.serial_number,
            DEFAULT_ID.firmware_version) == (0xCAFEBABE, 1, 1, 0xDEADBEAF, 0xDEADDEAD)


@pytest.fixture
def reader() -> Iterator[OsdpReaderSimulator]:
    sim = OsdpReaderSimulator(address=101, scbk=bytes.fromhex(KEY), readers=2)
    sim.start()
    yield sim
    sim.stop()


def test_a_reader_with_its_key_reports_its_id_and_capabilities(reader: OsdpReaderSimulator) -> None:
    result = doctor("osdp", reader.port, "--address", "101", "--baud", "115200", "--key-env", "READER_KEY",
                    env={"READER_KEY": KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "online          yes, secure channel active" in out
    # OSDP sends the vendor code as 3 octets (0xCAFEBABE -> BE BA FE), the firmware as major.minor.build
    # (0xDEADDEAD -> AD DE AD), the serial number as 4.
    for line in ("vendor (OUI)    BE-BA-FE", "model           1, version 1", "serial number   DEADBEAF",
                 "firmware        173.222.173", "readers: 2 attached", "LEDs: 1 per reader, on/off",
                 "buzzer: 1, on/off", "card data: raw bits (Wiegand)", "secure channel: AES-128",
                 "inputs (contact or tamper status): 1", "result: usable"):
        assert line in out, f"{line!r} not in\n{out}"
    assert KEY not in out + result.stderr


def test_the_id_report_in_detail_and_the_key_left_as_it_was(reader: OsdpReaderSimulator) -> None:
    bus = probe_osdp(reader.port, [101], 115200, bytes.fromhex(KEY), "a test", timeout=10)
    r = bus.readers[0]
    assert r.online and r.secure and r.plain is None
    assert r.ident is not None
    assert (r.ident.vendor_code, r.ident.model, r.ident.version, r.ident.serial_number, r.ident.firmware) == \
        (DEFAULT_ID.vendor_code & 0xFFFFFF, 1, 1, DEFAULT_ID.serial_number, DEFAULT_ID.firmware_version & 0xFFFFFF)
    assert r.capabilities["LEDControl"] == (1, 1) and r.capabilities["AudibleControl"] == (1, 1)
    assert r.capabilities["CommunicationSecurity"] == (1, 0) and r.capabilities["Readers"] == (0, 2)
    assert r.capabilities["CardDataFormat"] == (1, 0) and r.capabilities["ContactStatusMonitoring"] == (1, 1)
    assert reader_advice(bus, r) == []
    assert not any(c.get("command") == osdp.Command.Keyset for c in reader.commands)


def test_a_wrong_key_is_named_as_such(reader: OsdpReaderSimulator) -> None:
    result = doctor("osdp", reader.port, "--address", "101", "--key-env", "READER_KEY", "--timeout", "5",
                    env={"READER_KEY": WRONG_KEY})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "online          no (refused the key)" in result.stdout
    assert "has a secure channel key, and it is not this one" in result.stdout
    assert "vendor (OUI)    BE-BA-FE" in result.stdout, "the ID report comes before the secure channel"
    assert reader.scbk == bytes.fromhex(KEY)
    assert WRONG_KEY not in result.stdout + result.stderr


def test_a_reader_fresh_from_the_box_is_told_apart_and_not_given_the_key() -> None:
    sim = OsdpReaderSimulator(address=101, scbk=None)  # install mode: no key yet
    sim.start()
    try:
        bus = probe_osdp(sim.port, [101], key=bytes.fromhex(KEY), key_source="a test", timeout=5)
    finally:
        sim.stop()
    r = bus.readers[0]
    assert r.answered and not r.online and r.plain == "accepted"
    text = "\n".join(f.text for f in reader_advice(bus, r))
    assert "install mode" in text and "install_mode: true" in text, text
    assert sim.scbk is None, "the doctor gave the reader a key: that is install mode's job"
    assert not any(c.get("command") == osdp.Command.Keyset for c in sim.commands)


def test_no_key_for_a_reader_that_insists_on_one(reader: OsdpReaderSimulator) -> None:
    bus = probe_osdp(reader.port, [101], timeout=5)
    r = bus.readers[0]
    assert r.answered and not r.online and r.dropped
    findings = reader_advice(bus, r)
    assert not usable(findings)
    assert "refuses to talk without the secure channel" in findings[0].text


def test_no_reader_on_the_line_gets_the_wiring_advice() -> None:
    sim = OsdpReaderSimulator(address=101, scbk=bytes.fromhex(KEY))  # never powered on
    try:
        result = doctor("osdp", sim.port, "--address", "101", "--timeout", "2")
    finally:
        sim.stop()
    assert result.returncode == 1
    assert "no answer at all" in result.stdout and "A/B" in result.stdout and "baud" in result.stdout
    assert "terminator" in result.stdout


def test_a_line_of_readers_each_reported_and_a_missing_one_named() -> None:
    line = OsdpLine()
    readers = [OsdpReaderSimulator(address=a, scbk=bytes.fromhex(KEY), line=line) for a in (1, 2)]
    for sim in readers:
        sim.start()
    try:
        bus = probe_osdp(line.port, [1, 2, 3], key=bytes.fromhex(KEY), key_source="a test", timeout=3)
    finally:
        for sim in readers:
            sim.stop()
        line.close()
    assert [(r.address, r.online, r.secure) for r in bus.readers] == [(1, True, True), (2, True, True),
                                                                       (3, False, False)]
    assert reader_advice(bus, bus.readers[0]) == []
    missing_one = reader_advice(bus, bus.readers[2])
    assert "other readers on the line answer" in missing_one[0].text
