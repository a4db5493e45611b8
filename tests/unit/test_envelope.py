"""The event envelope: what producers build, and what the gateway accepts from the bus."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.events import EVENT_TYPES, Event, event_topic, make_event, new_id
from gateway.validation import MAX_PAYLOAD_BYTES, InboundChecker, InvalidEvent, parse_event

TZ = ZoneInfo("Asia/Shanghai")
AT = 1_717_200_000.123  # 2024-06-01 08:00:00.123 +08:00
TRIGGER = "campus.alarm_input.triggered"
PANIC = {"point": "gatehouse-panic", "input": 1, "point_type": "panic", "zone": "gate", "place": "门卫室"}
TOPIC = event_topic("s1", "alarm_input", "box-1", TRIGGER)

# Minimal valid `data` for each event type, so every schema is exercised.
SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "campus.alarm_input.triggered": PANIC,
    "campus.alarm_input.restored": {"point": "gatehouse-panic", "input": 1, "point_type": "panic"},
    "campus.device.offline": {"reason": "no answer from 192.0.2.10:502"},
    "campus.device.online": {"offline_s": 12.5},
    "campus.device.telemetry": {"metrics": {"rssi": -61, "fw": "1.2", "ok": True, "temp": None}},
    "campus.gateway.health": {"condition": "outbox_shedding", "active": True, "count": 3},
    "campus.bollard.state_changed": {"from": "lowered", "to": "raising", "reason": "raise commanded by guard-wang"},
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
    parsed = parse_event(e.to_json(), event_topic("s1", "alarm_input", "box-1", event_type))
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
        assert exc.kind in {"not_json", "not_object", "unknown_type", "schema", "wrong_topic", "too_large"}


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
