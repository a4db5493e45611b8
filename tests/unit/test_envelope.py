"""The event envelope: what producers build, and what the gateway accepts from the bus."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import topics
from gateway.events import EVENT_TYPES, Event, make_event, new_id
from gateway.validation import MAX_PAYLOAD_BYTES, InboundChecker, InvalidEvent, parse_event

TZ = ZoneInfo("Asia/Shanghai")
AT = 1_717_200_000.123  # 2024-06-01 08:00:00.123 +08:00
TRIGGER = "campus.alarm_input.triggered"
PANIC = {"point": "gatehouse-panic", "input": 1, "point_type": "panic", "zone": "gate", "place": "门卫室"}
TOPIC = topics.event("s1", "alarm_input", "box-1", TRIGGER)

# Minimal valid `data` for each event type, so every schema is exercised.
SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "campus.alarm_input.triggered": PANIC,
    "campus.alarm_input.restored": {"point": "gatehouse-panic", "input": 1, "point_type": "panic"},
    "campus.device.offline": {"reason": "no answer from 192.0.2.10:502"},
    "campus.device.online": {"offline_s": 12.5},
    "campus.device.telemetry": {"metrics": {"rssi": -61, "fw": "1.2", "ok": True, "temp": None}},
    "campus.gateway.health": {"condition": "outbox_shedding", "active": True, "count": 3},
    "campus.gateway.command_refused": {"kind": "bollard", "device": "gate-box", "command": "set_test_mode",
                                       "issued_by": "console:wang", "reason": "unsigned command"},
    "campus.bollard.state_changed": {"from": "lowered", "to": "raising", "reason": "raise commanded by guard-wang"},
    "campus.output.changed": {"relay": "siren", "on": True, "issued_by": "linkage:alarm:12",
                              "reason": "an open alarm holds it"},
    "campus.bollard.command": {"command": "raise", "issued_by": "guard-wang", "accepted": False,
                               "reason": "vehicle on loop 1 (since 07:58:12)", "state": "lowered"},
    "campus.bollard.fault": {"reason": "travel timeout: commanded raise 8.0 s ago, up-limit not reached",
                             "active": True, "zone": "gate", "place": "south gate"},
    "campus.camera.motion": {"zone": "perimeter", "active": True, "area": 0.031,
                             "snapshot_id": "gate-cam-20261129T080102-250-3"},
    "campus.camera.tamper": {"kind": "covered", "active": True, "detail": "lens covered for 5 s",
                             "snapshot_id": "gate-cam-20261129T080102-250-4"},
    "campus.camera.loitering": {"zone": "gate", "active": True, "dwell_s": 31.0,
                                "snapshot_id": "gate-cam-20261129T080102-250-5"},
    "campus.camera.clip": {"clip_id": "gate-cam-20261129T080102-250-10001-clip", "alarm_id": 12, "frames": 120,
                           "before": 60, "first_at": 1.8e9, "last_at": 1.8e9 + 60},
    "campus.reader.card_read": {"reader": 0, "credential": "018,54919", "format": "wiegand26", "facility": 18,
                                "number": 54919, "bits": 26, "direction": "entry"},
    "campus.reader.code_scanned": {"reader": 0, "code": "V1.AbC-123", "direction": "exit"},
    "campus.reader.keypad": {"reader": 0, "keys": "1234#"},
    "campus.reader.tamper": {"active": True, "zone": "gate-a", "place": "main gate reader"},
    "campus.reader.power": {"active": False, "zone": None, "place": None},
}
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def event(event_type: str = TRIGGER, data: dict[str, Any] | None = None, seq: int = 7, test: bool = False) -> Event:
    return make_event("s1", "alarm_input", "box-1", event_type, dict(PANIC if data is None else data), seq, AT, TZ,
                      test=test)


def body(**changes: Any) -> dict[str, Any]:
    """A valid event body with some fields changed (a value of ... deletes the field)."""
    out = event().to_dict()
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


def payload(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --- building and round-tripping ------------------------------------------------------------------------------


def test_make_event_fills_the_envelope() -> None:
    e = event()
    assert e.source == "campus/v1/s1/alarm_input/box-1"
    assert (e.device, e.kind, e.event_class) == ("box-1", "alarm_input", "alarm")
    assert e.time == "2024-06-01T08:00:00.123+08:00"  # site offset, milliseconds
    d = e.to_dict()
    assert d["specversion"] == "1.0"
    assert d["datacontenttype"] == "application/json"
    assert "test" not in d  # only present when true


def test_make_event_refuses_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event("campus.alarm_input.exploded")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_round_trips(event_type: str) -> None:
    assert set(SAMPLE_DATA) == set(EVENT_TYPES), "add sample data for the new event type"
    e = event(event_type, SAMPLE_DATA[event_type])
    parsed = parse_event(e.to_json(), topics.event("s1", "alarm_input", "box-1", event_type))
    assert parsed == e


def test_round_trip_keeps_test_flag_seq_and_unicode() -> None:
    e = event(seq=123456, test=True)
    raw = e.to_json()
    assert "门卫室".encode() in raw  # UTF-8, not \\u escapes
    parsed = parse_event(raw, TOPIC)
    assert parsed == e
    assert parsed.test is True
    assert parsed.seq == 123456
    assert parsed.historical is False


def test_topic_is_checked_only_when_given() -> None:
    e = event()
    assert parse_event(e.to_json(), None) == e
    with pytest.raises(InvalidEvent):
        parse_event(e.to_json(), "campus/v1/s1/alarm_input/box-2/evt/triggered")


# --- ids -------------------------------------------------------------------------------------------------------


def test_ids_are_unique_sorted_uuid7() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(20_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "ids must sort in the order they were made"
    for text in (ids[0], ids[len(ids) // 2], ids[-1]):
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    for text in ids:
        assert text[14] == "7", text  # version nibble
        assert text[19] in "89ab", text  # variant bits 10
    # The 48-bit prefix is the Unix time in ms; the counter may run it a little ahead when ids come fast.
    first_ms = uuid.UUID(ids[0]).int >> 80
    last_ms = uuid.UUID(ids[-1]).int >> 80
    assert before_ms <= first_ms <= last_ms <= after_ms + 50


def test_event_ids_pass_the_envelope_schema() -> None:
    events = [event() for _ in range(50)]
    assert len({e.id for e in events}) == 50
    for e in events:
        assert parse_event(e.to_json()).id == e.id


# --- rejections ------------------------------------------------------------------------------------------------

BAD_PAYLOADS = [
    pytest.param(b"{not json", None, "not_json", id="not-json"),
    pytest.param(b"\xff\xfe\x00garbage", None, "not_json", id="not-utf8"),
    pytest.param(b"", None, "not_json", id="empty"),
    pytest.param(payload([body()]), None, "not_object", id="array"),
    pytest.param(b'"campus.alarm_input.triggered"', None, "not_object", id="string"),
    pytest.param(b"null", None, "not_object", id="null"),
    pytest.param(payload(body(seq="7")), None, "schema", id="seq-as-string"),
    pytest.param(payload(body(seq=-1)), None, "schema", id="seq-negative"),
    pytest.param(payload(body(id=...)), None, "schema", id="missing-id"),
    pytest.param(payload(body(id=str(uuid.uuid4()))), None, "schema", id="uuid4-id"),
    pytest.param(payload(body(time="yesterday")), None, "schema", id="bad-time"),
    pytest.param(payload(body(specversion="0.3")), None, "schema", id="bad-specversion"),
    pytest.param(payload(body(envelope_extra=1)), None, "schema", id="extra-envelope-field"),
    pytest.param(payload(body(data={**PANIC, "colour": "red"})), None, "schema", id="extra-data-field"),
    pytest.param(payload(body(data={"point": "p", "input": 1})), None, "schema", id="missing-data-field"),
    pytest.param(payload(body(data={**PANIC, "input": 0})), None, "schema", id="data-out-of-range"),
    pytest.param(payload(body(type="campus.alarm_input.exploded")), None, "unknown_type", id="unknown-type"),
    pytest.param(payload(body(type=...)), None, "unknown_type", id="missing-type"),
    pytest.param(payload(body(type=["campus.device.online"])), None, "unknown_type", id="type-not-string"),
    pytest.param(b" " * (1024 * 1024) + event().to_json(), None, "too_large", id="1MB"),
    pytest.param(event().to_json(), "campus/v1/s1/alarm_input/box-2/evt/triggered", "wrong_topic", id="other-device"),
    pytest.param(event().to_json(), "campus/v1/s1/alarm_input/box-1", "wrong_topic", id="topic-is-source"),
    pytest.param(event().to_json(), "campus/v1/s1/alarm_input/box-10/evt/triggered", "wrong_topic", id="prefix-only"),
]


@pytest.mark.parametrize(("raw", "topic", "kind"), BAD_PAYLOADS)
def test_malformed_payload_is_rejected_with_its_kind(raw: bytes, topic: str | None, kind: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw, topic)
    assert info.value.kind == kind
    assert str(info.value).startswith(f"{kind}: ")


def test_payload_at_the_size_limit_is_not_too_large() -> None:
    raw = event().to_json()
    padded = raw[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert parse_event(padded, TOPIC) == Event.from_dict(json.loads(raw))
    with pytest.raises(InvalidEvent) as info:
        parse_event(padded + b" ", TOPIC)
    assert info.value.kind == "too_large"


def test_huge_integer_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(b'{"seq": ' + b"9" * 5000 + b"}")


def test_deeply_nested_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        parse_event(b"[" * 50_000)


# --- poison: passes a schema's pattern or type, yet cannot be stored -------------------------------------------

KINDS = {"not_json", "not_object", "unknown_type", "schema", "wrong_topic", "too_large", "bad_time", "out_of_range",
         "bad_text"}
METRIC = b"123456789"  # stands in for a number literal in telemetry(), which json.dumps cannot write (1e400)


def telemetry(literal: bytes = METRIC, more: dict[str, Any] | None = None) -> bytes:
    """A telemetry event whose metric `v` is written as the raw JSON `literal`, with `more` metrics."""
    e = make_event("s1", "device", "box-1", "campus.device.telemetry", {"metrics": {"v": 123456789, **(more or {})}},
                   7, AT, TZ)
    return e.to_json().replace(METRIC, literal)


POISON = [
    pytest.param(payload(body(time="2026-02-30T10:00:00+08:00")), "bad_time", id="feb-30"),
    pytest.param(payload(body(time="2026-06-01T24:00:00+08:00")), "bad_time", id="hour-24"),
    pytest.param(payload(body(time="2026-06-01T23:59:60+08:00")), "bad_time", id="leap-second"),
    pytest.param(payload(body(time="2026-06-01T10:00:00+99:00")), "bad_time", id="offset-99h"),
    pytest.param(payload(body(time="2026-06-01T10:00:00")), "schema", id="no-offset"),
    pytest.param(payload(body(time="9999-12-31T23:59:59+08:00")), "bad_time", id="year-9999"),
    pytest.param(payload(body(time="0001-01-01T00:00:00+08:00")), "bad_time", id="year-1"),
    pytest.param(payload(body(time="1999-12-31T23:59:59+08:00")), "bad_time", id="year-1999"),
    pytest.param(payload(body(time="2026-06-01T10:00:00." + "1" * 20 + "+08:00")), "schema", id="fraction-20"),
    pytest.param(payload(body(seq=2**64)), "out_of_range", id="seq-2**64"),
    pytest.param(payload(body(seq=10**30)), "out_of_range", id="seq-10**30"),
    pytest.param(payload(body(seq=2**31)), "schema", id="seq-past-the-column"),
    pytest.param(payload(body(seq=-1)), "schema", id="seq-minus-1"),
    pytest.param(telemetry(b"1" + b"0" * 30), "out_of_range", id="data-int-10**30"),
    pytest.param(telemetry(str(2**63).encode()), "out_of_range", id="data-int-2**63"),
    pytest.param(telemetry(str(-(2**63) - 1).encode()), "out_of_range", id="data-int-below-int64"),
    pytest.param(telemetry(b"1e400"), "out_of_range", id="data-1e400"),
    pytest.param(telemetry(b"-1e400"), "out_of_range", id="data-minus-1e400"),
    pytest.param(telemetry(b"NaN"), "not_json", id="data-NaN"),
    pytest.param(telemetry(b"Infinity"), "not_json", id="data-Infinity"),
    pytest.param(telemetry(b"-Infinity"), "not_json", id="data-minus-Infinity"),
    # json.dumps writes these as the escapes \u0000 and \ud800, as a device would send them
    pytest.param(payload(body(data={**PANIC, "place": "gate\x00"})), "bad_text", id="nul-in-a-string"),
    pytest.param(payload(body(data={**PANIC, "place": "gate\ud800"})), "bad_text", id="lone-surrogate"),
    pytest.param(b'{"x": "\xed\xa0\x80"}', "not_json", id="surrogate-as-utf8-bytes"),
    pytest.param(telemetry(more={"k\x00": 1}), "bad_text", id="nul-in-a-key"),
    pytest.param(payload(body(source="campus/v1/s1/alarm_input/" + "d" * 64)), "schema", id="device-id-64"),
    pytest.param(payload(body(type="campus.camera.clip", data={"clip_id": "cam-20261129T080102-250-1-clip",
                                                               "frames": 2**31})), "schema", id="clip-frames"),
    pytest.param(payload(body(type="campus.camera.clip", data={"clip_id": "cam-20261129T080102-250-1-clip",
                                                               "frames": 1, "first_at": 1e12})), "schema",
                 id="clip-time-year-33658"),
    pytest.param(payload(body(type="campus.gateway.health", data={"condition": "clock_offset", "active": True,
                                                                  "offset_s": 1e300})), "schema",
                 id="clock-offset-1e300"),
]


@pytest.mark.parametrize(("raw", "kind"), POISON)
def test_a_payload_that_cannot_be_stored_is_refused_with_its_kind(raw: bytes, kind: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.kind == kind, info.value


ACCEPTED_EDGES = [
    pytest.param(payload(body(time="2000-01-01T00:00:00Z")), id="year-2000-utc"),
    pytest.param(payload(body(time="2100-12-31T23:59:59.123456789-05:00")), id="year-2100-nanoseconds"),
    pytest.param(payload(body(time="2024-02-29T10:00:00+08:00")), id="leap-day"),
    pytest.param(payload(body(seq=2**31 - 1)), id="seq-at-the-column"),
    pytest.param(telemetry(str(2**63 - 1).encode()), id="data-int64-max"),
    pytest.param(telemetry(str(-(2**63)).encode()), id="data-int64-min"),
    pytest.param(telemetry(b"1.7976931348623157e308"), id="data-float-max"),
    pytest.param(payload(body(data={**PANIC, "place": "\U0001F600"})), id="surrogate-pair-escape"),
    pytest.param(payload(body(data={**PANIC, "place": "C:\\u0000"})), id="escaped-backslash-then-u0000"),
    pytest.param(payload(body(source="campus/v1/s1/alarm_input/" + "d" * 63)), id="device-id-63"),
]


@pytest.mark.parametrize("raw", ACCEPTED_EDGES)
def test_the_edges_of_what_can_be_stored_are_accepted(raw: bytes) -> None:
    assert_storable(parse_event(raw))


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_events_the_gateway_makes_now_pass(event_type: str) -> None:
    """As the outbox (seq from 1) and the police link (seq = Unix seconds, which fits until 2038) make them."""
    for seq in (1, int(time.time())):
        made = make_event("s1", "gateway", "gw-1", event_type, SAMPLE_DATA[event_type], seq, time.time(), TZ)
        assert parse_event(made.to_json()) == made


def assert_storable(e: Event) -> None:
    """What the rules service does with an accepted event (gateway.rules_service.service._commit, UtcDateTime) works,
    and a database takes it."""
    at = datetime.fromisoformat(e.time)
    assert at.tzinfo is not None
    assert 1999 <= at.astimezone(UTC).year <= 2101
    assert 0 <= e.seq <= 2**31 - 1  # events.seq: INTEGER, 32 bits on PostgreSQL
    for value in _leaves(e.data):
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, int):
            assert -(2**63) <= value < 2**63
        elif isinstance(value, str):
            assert "\x00" not in value
    text = json.dumps(e.data, ensure_ascii=False, allow_nan=False)
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE events (id TEXT, seq INTEGER, device_time TEXT, data TEXT)")
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (e.id, e.seq, at.astimezone(UTC).isoformat(), text))
    assert e.to_json()  # and it can be published again (UTF-8)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (k, *_leaves(v))]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


RISKY_TEXT = st.sampled_from(["gate", "门卫室", "\x00", "a\x00b", "\ud800", "x\udfff", "\U0001F600", "\\u0000"])


@st.composite
def rfc3339ish(draw: st.DrawFn) -> str:
    """Strings the schema's time pattern admits: real dates in 2000-2100, and others (year 1, Feb 30, +99:99)."""
    if draw(st.booleans()):
        at = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 12, 31)))
        return at.strftime("%Y-%m-%dT%H:%M:%S") + draw(st.sampled_from(["", ".5", ".123456789"])) + "+08:00"
    year = draw(st.integers(0, 9999))
    fields = [draw(st.integers(0, n)) for n in (13, 32, 25, 61, 61)]
    fraction = draw(st.sampled_from(["", ".1", ".123", ".123456789"]))
    offset = draw(st.sampled_from(["Z", "+08:00", "-05:30", "+23:59", "+24:00", "-99:99"]))
    return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(year, *fields) + fraction + offset


numbers = (st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**63, -(2**63) - 1, 10**30])
           | st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def poison_prone(draw: st.DrawFn) -> bytes:
    """A telemetry or alarm event with a time, seq, numbers and text drawn near and past what can be stored."""
    if draw(st.booleans()):
        metrics = draw(st.dictionaries(RISKY_TEXT, numbers | RISKY_TEXT, max_size=4))
        data: dict[str, Any] = {"metrics": {**metrics, "v": 123456789}}  # the literal swapped below
        out = make_event("s1", "device", "box-1", "campus.device.telemetry", data, 1, AT, TZ).to_dict()
    else:
        out = event(data={**PANIC, "place": draw(RISKY_TEXT)}).to_dict()
    out["time"] = draw(rfc3339ish())
    out["seq"] = draw(st.integers(0, 2**31 + 3) | st.integers(-1, 2**70))
    raw = json.dumps(out, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return raw.replace(METRIC, draw(st.sampled_from([METRIC, b"1e400", b"-1e999", b"1e308"])))


@FUZZ
@given(raw=poison_prone())
def test_whatever_parse_event_accepts_can_be_stored(raw: bytes) -> None:
    try:
        e = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.kind in KINDS
        return
    assert_storable(e)


# --- InboundChecker --------------------------------------------------------------------------------------------


def test_checker_counts_rejections_and_keeps_accepting(caplog: pytest.LogCaptureFixture) -> None:
    checker = InboundChecker()
    caplog.set_level(logging.WARNING, logger="campusgw.validation")
    good = event().to_json()
    box2 = "campus/v1/s1/alarm_input/box-2/evt/triggered"

    assert checker.check(TOPIC, good) == Event.from_dict(json.loads(good))
    for _ in range(5):
        assert checker.check(TOPIC, b"{oops") is None
    for _ in range(3):
        assert checker.check(TOPIC, payload(body(seq="x"))) is None
    assert checker.check(box2, b"{oops") is None
    assert checker.check(TOPIC, good) is not None

    assert checker.stats() == {
        "accepted": 2,
        "rejected": {"box-1:not_json": 5, "box-1:schema": 3, "box-2:not_json": 1},
    }
    warnings = [r for r in caplog.records if r.name == "campusgw.validation" and r.levelno == logging.WARNING]
    assert len(warnings) == 3, [r.getMessage() for r in warnings]  # once per (device, kind), not per payload
    messages = " | ".join(r.getMessage() for r in warnings)
    assert "box-1" in messages
    assert "box-2" in messages
    assert "not_json" in messages
    assert "schema" in messages


def test_checker_on_a_short_topic_does_not_crash() -> None:
    checker = InboundChecker()
    assert checker.check("junk", b"[]") is None
    assert checker.stats()["rejected"] == {"junk:not_object": 1}


# --- fuzzing ---------------------------------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=2048), topic=st.none() | st.text(max_size=80))
def test_parse_event_on_arbitrary_bytes_raises_only_invalid_event(raw: bytes, topic: str | None) -> None:
    try:
        parse_event(raw, topic)
    except InvalidEvent as exc:
        assert exc.kind in KINDS


json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
ENVELOPE_KEYS = ["specversion", "id", "source", "type", "time", "datacontenttype", "seq", "historical", "test", "data"]


@st.composite
def event_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body of any type, with some fields deleted or replaced by arbitrary JSON and extra keys added."""
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    out = event(event_type, SAMPLE_DATA[event_type], seq=draw(st.integers(0, 2**40)),
                test=draw(st.booleans())).to_dict()
    for key in draw(st.lists(st.sampled_from(ENVELOPE_KEYS), max_size=3)):
        if draw(st.booleans()):
            out.pop(key, None)
        else:
            out[key] = draw(json_values)
    if draw(st.booleans()) and isinstance(out.get("data"), dict):
        data = dict(out["data"])
        for key in draw(st.lists(st.sampled_from([*data, "extra"]), max_size=2)):
            data[key] = draw(json_values)
        out["data"] = data
    out.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return out


@FUZZ
@given(obj=event_like() | json_values, with_topic=st.booleans())
def test_parse_event_on_json_ish_values_raises_only_invalid_event(obj: Any, with_topic: bool) -> None:
    raw = json.dumps(obj).encode()
    try:
        parsed = parse_event(raw, TOPIC if with_topic else None)
    except InvalidEvent:
        return
    # Whatever is accepted is a well-formed event that survives another trip (compared as bytes: NaN != NaN).
    assert parse_event(parsed.to_json()).to_json() == parsed.to_json()
