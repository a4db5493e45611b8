"""`campusgw doctor`'s advice, from what it measured: frame statistics, why a stream did not open, the camera and
reader advice tables, the ID report's fields, and the small parsers. The measuring itself is tested against real
cameras' and readers' stand-ins in tests/integration/test_doctor.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from drivers.camera.doctor import (
    CameraProbe,
    FrameStats,
    camera_advice,
    camera_source,
    clean_messages,
    codec_name,
    failure_kind,
    format_camera,
    frame_stats,
)
from drivers.doctor import usable
from drivers.osdp_reader.doctor import (
    BusProbe,
    ReaderId,
    ReaderProbe,
    addresses_of,
    bus_advice,
    describe_capabilities,
    reader_advice,
)

# -- frame statistics ------------------------------------------------------------------------------------


def test_frame_stats_of_a_steady_5_fps_stream_with_a_key_frame_a_second() -> None:
    times = [n * 0.2 for n in range(26)]
    stats = frame_stats(times, [n % 5 == 0 for n in range(26)])
    assert stats.fps == pytest.approx(5.0)
    assert stats.key_frames == 6 and stats.key_interval_s == pytest.approx(1.0)
    assert (stats.pauses, stats.longest_gap_s) == (0, pytest.approx(0.2))


def test_dropped_frames_are_counted_against_the_streams_own_rate() -> None:
    times = [n * 0.2 for n in range(26) if n not in (10, 11, 12)]  # three of 26 lost
    assert frame_stats(times, [False] * len(times), nominal_fps=5.0).dropped == 3
    assert frame_stats(times, [False] * len(times)).dropped is None  # the stream does not say its rate
    burst = [0.0, 0.001, 0.002] + [0.2 + n * 0.2 for n in range(20)]
    assert frame_stats(burst, [False] * len(burst), nominal_fps=5.0).dropped == 0


def test_frames_queued_while_opening_do_not_raise_the_rate() -> None:
    burst = [0.0, 0.001, 0.002, 0.003]  # arrived together after the open
    times = burst + [0.2 + n * 0.2 for n in range(15)]
    assert frame_stats(times, [True] + [False] * 18).fps == pytest.approx(5.0)


def test_a_pause_is_counted_and_jitter_is_not() -> None:
    times = [0.0, 0.1, 0.25, 0.3, 0.4, 1.6, 1.7, 1.8, 1.9, 2.0]
    stats = frame_stats(times, [False] * len(times))
    assert stats.pauses == 1 and stats.longest_gap_s == pytest.approx(1.2)
    assert stats.key_frames == 0 and stats.key_interval_s is None


@pytest.mark.parametrize("times", [[], [1.0], [1.0, 1.0]])
def test_too_few_frames_give_no_rate(times: list[float]) -> None:
    assert frame_stats(times, [True] * len(times)).fps is None


# -- why a stream did not open ---------------------------------------------------------------------------


@pytest.mark.parametrize("messages, status, content, reply, kind", [
    (["rtsp: method DESCRIBE failed: 401 (Unauthorized)"], None, "", None, "auth"),
    (["rtsp: method DESCRIBE failed: 404 (Not Found)"], None, "", None, "not_found"),
    (["rtsp: method DESCRIBE failed: 403 (Forbidden)"], None, "", None, "forbidden"),
    (["rtsp: method SETUP failed: 453 (Not Enough Bandwidth)"], None, "", None, "busy"),
    (["tcp: Connection to tcp://10.0.0.9:554?timeout=0 failed: Connection timed out"], None, "", None, "timeout"),
    (["rtsp: Invalid data found when processing input"], None, "", None, "not_video"),
    ([], 401, "text/html", None, "auth"),
    ([], 404, "text/html", None, "not_found"),
    ([], 200, "text/html", None, "not_video"),
    ([], 200, "multipart/x-mixed-replace", None, "unknown"),
    ([], None, "", "HTTP/1.1 400 Bad Request", "not_video"),
    ([], None, "", "RTSP/1.0 200 OK", "unknown"),
    ([], None, "", None, "unknown"),
])
def test_failure_kind(messages: list[str], status: int | None, content: str, reply: str | None, kind: str) -> None:
    assert failure_kind(messages, status, content, reply) == kind


# -- camera advice ---------------------------------------------------------------------------------------

STATS = FrameStats(frames=26, fps=5.0, key_frames=5, key_interval_s=1.0, pauses=0, longest_gap_s=0.21)
GOOD = CameraProbe(source="rtsp://127.0.0.1:554/sub", scheme="rtsp", host="127.0.0.1", port=554, connect="ok",
                   connect_s=0.001, opened=True, open_s=0.8, first_frame_s=0.81, decoded=True, fourcc="h264",
                   width=640, height=360, claimed_fps=5.0, measured_s=5.0,
                   stats=STATS,
                   cpu=0.05)
NOT_OPENED = replace(GOOD, opened=False, first_frame_s=None, decoded=None, fourcc="", width=0, height=0,
                     claimed_fps=None, measured_s=0.0, stats=None, cpu=None)


def test_a_good_substream_gets_no_advice() -> None:
    assert camera_advice(GOOD) == []
    assert "result: usable" in format_camera(GOOD, [])


# (what changed from GOOD, whether the camera is still usable, words the advice must hold)
CAMERA_CASES = [
    ({"connect": "refused", "connect_s": None}, False, ["nothing listens on port 554", "RTSP is enabled"]),
    ({"connect": "timeout", "connect_detail": "no answer within 10 s"}, False, ["does not answer", "power"]),
    ({"connect": "dns", "host": "cam.example", "connect_detail": "Name or service not known"}, False,
     ["cam.example does not resolve"]),
    ({"width": 1920, "height": 1080}, True, ["1920x1080", "substream", "/Streaming/Channels/102", "subtype=1"]),
    ({"claimed_fps": 25.0, "stats": replace(STATS, fps=25.0)}, True, ["25 fps", "substream"]),
    ({"claimed_fps": 10.0, "stats": replace(STATS, fps=10.2)}, True, []),  # 10 fps is still fine
    ({"fourcc": "hevc"}, True, ["H.265 works", "more CPU", "5 % of one core"]),
    ({"first_frame_s": 4.0}, True, ["first picture took 4.0 s", "key-frame interval", "1-2 s"]),
    ({"stats": replace(STATS, key_interval_s=4.0)}, True, ["every 4.0 s", "1-2 s"]),
    ({"stats": replace(STATS, key_frames=1, key_interval_s=None)}, True, ["no second key frame came in 5 s"]),
    ({"stats": replace(STATS, key_frames=0, key_interval_s=None)}, True, []),  # the stream does not say
    ({"open_s": 7.0, "first_frame_s": 7.1}, False, ["opening took 7.0 s", "open_timeout_s"]),
    ({"cpu": 0.97}, False, ["whole CPU core"]),
    ({"stats": replace(STATS, fps=2.5)}, True, ["says 5 fps but only 2.5 arrived"]),
    ({"claimed_fps": None, "stats": replace(STATS, fps=1.0)}, True, ["only 1.0 frames a second"]),
    ({"stats": replace(STATS, pauses=2, longest_gap_s=1.4)}, True, ["paused 2 time(s)", "longest 1.4 s"]),
    ({"ended": True}, False, ["stopped during the test"]),
    ({"decode_errors": 3, "transport": "udp"}, True, ["3 damaged frame(s)", "--rtsp-transport tcp"]),
    ({"decoded": False}, False, ["cannot be decoded"]),
    ({"first_frame_s": None, "stats": None}, False, ["no frame came within"]),
    ({"stats": FrameStats(1, None, 1, None, 0, 0.0)}, False, ["stopped after the first frame"]),
    ({"password_in_url": True}, True, ["--password-env"]),
    ({"fourcc": "MJPG", "stats": replace(STATS, key_frames=26, key_interval_s=0.2), "first_frame_s": 3.0},
     True, []),  # MJPEG: every frame is a picture, no GOP advice
]


@pytest.mark.parametrize("change, still_usable, words", CAMERA_CASES)
def test_camera_advice(change: dict[str, object], still_usable: bool, words: list[str]) -> None:
    findings = camera_advice(replace(GOOD, **change))  # type: ignore[arg-type]
    assert usable(findings) == still_usable, findings
    text = "\n".join(f.text for f in findings)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    if not words:
        assert findings == []


NOT_OPENED_CASES = [
    ({"messages": ["rtsp: method DESCRIBE failed: 401 (Unauthorized)"]}, ["asks for a user name and password",
                                                                          "--password-env"]),
    ({"messages": ["rtsp: method DESCRIBE failed: 401 (Unauthorized)"], "user_given": True},
     ["refused this user name or password"]),
    ({"messages": ["rtsp: method DESCRIBE failed: 404 (Not Found)"]}, ["no stream at this path",
                                                                       "/Streaming/Channels/102"]),
    ({"scheme": "http", "http_status": 200, "http_type": "text/html"}, ["not with a video stream (text/html)"]),
    ({"rtsp_reply": "HTTP/1.1 400 Bad Request"}, ["not in RTSP", "HTTP/1.1 400 Bad Request"]),
    ({"messages": ["rtsp: something new"]}, ["could not be opened", "FFmpeg said: rtsp: something new"]),
]


@pytest.mark.parametrize("change, words", NOT_OPENED_CASES)
def test_advice_for_a_stream_that_did_not_open(change: dict[str, object], words: list[str]) -> None:
    findings = camera_advice(replace(NOT_OPENED, **change))  # type: ignore[arg-type]
    assert not usable(findings) and len(findings) == 1
    for word in words:
        assert word in findings[0].text


def test_camera_source_puts_the_login_in_and_the_report_never_shows_the_password() -> None:
    assert camera_source("rtsp://cam:554/sub", "ad min", "p@ss:w/rd") == "rtsp://ad%20min:p%40ss%3Aw%2Frd@cam:554/sub"
    assert camera_source("rtsp://old:pw@cam/sub", "admin", "new") == "rtsp://admin:new@cam/sub"
    assert camera_source("rtsp://cam/sub", None, None) == "rtsp://cam/sub"
    assert camera_source("/dev/video0", "admin", "pw") == "/dev/video0"


def test_ffmpeg_messages_are_cleaned_for_a_person() -> None:
    said = ["[rtsp @ 0x55d0c3a1c0] method DESCRIBE failed: 401 (Unauthorized)",
            "[ WARN:0@0.011] global cap.cpp:212 open VIDEOIO(FFMPEG): backend is generally available but ...",
            "[tcp @ 0x5559bab220c0] Connection to rtsp://admin:s3cret@cam failed", "",
            "[rtsp @ 0x55d0c3a1c0] method DESCRIBE failed: 401 (Unauthorized)"]
    assert clean_messages(said, ["s3cret"]) == ["rtsp: method DESCRIBE failed: 401 (Unauthorized)",
                                                "tcp: Connection to rtsp://admin:***@cam failed"]


@pytest.mark.parametrize("fourcc, name", [("h264", "H.264 (h264)"), ("hevc", "H.265 (hevc)"),
                                          ("MJPG", "MJPEG (MJPG)"), ("XVID", "XVID"), ("", "unknown")])
def test_codec_name(fourcc: str, name: str) -> None:
    assert codec_name(fourcc) == name


# -- OSDP readers ----------------------------------------------------------------------------------------


def test_the_id_report_as_osdp_sends_it() -> None:
    # HID's OUI 00-06-8E arrives as the octets 00 06 8E: libosdp puts the first in the low byte.
    ident = ReaderId(vendor_code=0x8E0600, model=3, version=2, serial_number=0x12345678, firmware=0x010203)
    assert (ident.oui, ident.firmware_text, ident.empty) == ("00-06-8E", "1.2.3", False)
    assert ReaderId(0, 0, 0, 0, 0).empty


SIMULATOR_CAPS = {"LEDControl": (1, 1), "AudibleControl": (1, 1), "CommunicationSecurity": (1, 0),
                  "CardDataFormat": (1, 0), "ContactStatusMonitoring": (1, 1), "Readers": (0, 2),
                  "CheckCharacter": (1, 0), "ReceiveBufferSize": (0, 1)}


def test_capabilities_in_words() -> None:
    assert describe_capabilities(SIMULATOR_CAPS) == [
        "readers: 2 attached", "LEDs: 1 per reader, on/off", "buzzer: 1, on/off", "card data: raw bits (Wiegand)",
        "secure channel: AES-128", "inputs (contact or tamper status): 1", "check character: CRC-16",
        "receive buffer: 256 bytes"]
    lines = describe_capabilities({"LEDControl": (4, 2), "AudibleControl": (2, 1), "CommunicationSecurity": (1, 1),
                                   "TextOutput": (2, 1), "OutputControl": (1, 2)})
    assert "LEDs: 2 per reader, timed, three colours" in lines and "buzzer: 1, timed" in lines
    assert "secure channel: AES-128, accepts the default install key (SCBK-D)" in lines
    assert "text display: 1 (2x16)" in lines and "outputs: 2" in lines and "check character: checksum only" in lines
    assert "secure channel: not supported" in describe_capabilities({})


IDENT = ReaderId(0xFEBABE, 1, 1, 0xDEADBEAF, 0xADDEAD)


def reader(**kwargs: object) -> ReaderProbe:
    return ReaderProbe(**{"address": 101, "ident": IDENT, "capabilities": dict(SIMULATOR_CAPS), **kwargs})  # type: ignore[arg-type]


KEYED = BusProbe(port="/dev/ttyUSB0", baudrate=9600, key="environment variable K", bytes_in=300, bytes_out=300)
PLAIN = replace(KEYED, key=None)

# (bus, reader, usable, words)
READER_CASES = [
    (KEYED, reader(online=True, secure=True), True, []),
    (KEYED, reader(dropped=True, plain="refused"), False, ["not this one", "factory defaults"]),
    (KEYED, reader(dropped=True, plain="accepted"), False, ["install mode", "install_mode: true"]),
    (KEYED, reader(dropped=True, plain="silent"), False, ["different key", "install mode"]),
    (KEYED, reader(capabilities={"LEDControl": (1, 1), "AudibleControl": (1, 1)}), False,
     ["does not support the secure channel", "secure: false"]),
    (PLAIN, reader(online=True), True, ["in clear", "supports the secure channel", "--key-env"]),
    (PLAIN, reader(online=True, capabilities={"LEDControl": (1, 1), "AudibleControl": (1, 1)}), True,
     ["has no secure channel", "secure: false"]),
    (PLAIN, reader(dropped=True), False, ["refuses to talk without the secure channel", "--key-env"]),
    (PLAIN, reader(), False, ["does not stay online"]),
    (KEYED, reader(online=True, secure=True, capabilities={"CommunicationSecurity": (1, 0)}), True,
     ["no LED control", "no buzzer"]),
]


@pytest.mark.parametrize("bus, probe, still_usable, words", READER_CASES)
def test_reader_advice(bus: BusProbe, probe: ReaderProbe, still_usable: bool, words: list[str]) -> None:
    findings = reader_advice(replace(bus, readers=[probe]), probe)
    assert usable(findings) == still_usable, findings
    text = "\n".join(f.text for f in findings)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    if not words:
        assert findings == []


def test_a_silent_reader_among_answering_ones_is_named() -> None:
    silent = ReaderProbe(address=3)
    bus = replace(KEYED, readers=[reader(online=True, secure=True), silent])
    assert bus_advice(bus) == []
    assert "other readers on the line answer" in reader_advice(bus, silent)[0].text


@pytest.mark.parametrize("change, words", [
    ({"bytes_in": 0}, ["no answer at all", "A/B", "baud", "terminator"]),
    ({"bytes_in": 40, "echo": True}, ["echoes"]),
    ({"bytes_in": 40}, ["no valid answer", "baud rate", "try 9600"]),
    ({"error": "there is no serial port /dev/ttyUSB0: check"}, ["no serial port"]),
])
def test_bus_advice_when_no_reader_answers(change: dict[str, object], words: list[str]) -> None:
    bus = replace(KEYED, readers=[ReaderProbe(address=0)], **change)  # type: ignore[arg-type]
    findings = bus_advice(bus)
    assert len(findings) == 1 and findings[0].problem
    for word in words:
        assert word in findings[0].text


@pytest.mark.parametrize("values, addresses", [(["0"], [0]), (["1", "2"], [1, 2]), (["1,2", "2,3"], [1, 2, 3]),
                                               (["126"], [126])])
def test_addresses_of(values: list[str], addresses: list[int]) -> None:
    assert addresses_of(values) == addresses


@pytest.mark.parametrize("values", [["127"], ["-1"], ["a"], [","]])
def test_addresses_of_refuses(values: list[str]) -> None:
    with pytest.raises(ValueError):
        addresses_of(values)
