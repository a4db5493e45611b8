"""Checking inbound payloads against the JSON Schemas in gateway/schemas.

A payload that fails is counted, logged once per (device, kind of failure) and
dropped; it never raises out of here, so one bad device cannot disturb the rest.
What passes can be stored: the checks the schemas cannot make (a real date, numbers
the database holds, text PostgreSQL and SQLite accept) are made here, so no valid
event can fail at the database and hold up the events behind it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any

import fastjsonschema

from gateway import topics
from gateway.catalogue import EVENT_TABLE
from gateway.events import Event

log = logging.getLogger("campusgw.validation")

# Events are small (a few hundred bytes); a big payload is a bug or an attack, not an event.
MAX_PAYLOAD_BYTES = 64 * 1024
# Python's int is unbounded; SQLite's INTEGER (OverflowError past it), PostgreSQL's bigint and most
# JSON readers stop at a signed 64-bit integer.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An event's time goes into the records and reports as a date: a device clock at year 1 or 9999 is wrong,
# and astimezone() overflows at the edges of datetime's range.
FIRST_YEAR, LAST_YEAR = 2000, 2100
# A \u escape that decodes to a NUL (PostgreSQL text refuses it) or a lone surrogate (no UTF-8 for it:
# SQLite and the bus refuse it). Rare, so the raw text is searched first and only then the strings.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class InvalidEvent(Exception):
    """A payload that is not an acceptable event; `kind` names the failure for counting."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def load_schema(name: str) -> dict[str, Any]:
    """A schema in gateway/schemas by its name: an event type (its `data`), or "envelope"."""
    return _load(f"{name}.json")


def _load(filename: str) -> dict[str, Any]:
    text = resources.files("gateway.schemas").joinpath(filename).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _compile_all() -> dict[str, Any]:
    """A validator per event type of the catalogue: the envelope, with the type's own schema for `data`."""
    envelope = load_schema("envelope")
    validators = {}
    for spec in EVENT_TABLE:
        schema = json.loads(json.dumps(envelope))
        schema["properties"]["type"] = {"const": spec.type}
        schema["properties"]["data"] = _load(spec.schema)
        validators[spec.type] = fastjsonschema.compile(schema)
    return validators


_VALIDATORS = _compile_all()


def _int(text: str) -> int:
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidEvent("out_of_range", f"the integer {text[:40]} does not fit in 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no database column or JSON encoder takes
        raise InvalidEvent("out_of_range", f"the number {text[:40]} is too large for a float")
    return value


def _constant(name: str) -> float:
    raise InvalidEvent("not_json", f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def _check_time(text: str) -> None:
    """The schema's pattern admits 2026-02-30 and +99:00; the records need a real date."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent("bad_time", f"time {text!r} is no real date and time ({exc}); "
                                       "check the device's clock and time format") from None
    if not FIRST_YEAR <= at.year <= LAST_YEAR:
        raise InvalidEvent("bad_time", f"time {text!r} is outside {FIRST_YEAR}-{LAST_YEAR}; "
                                       "is the device's clock set?")


def _texts(value: Any) -> Iterator[str]:
    """Every string in a decoded body, keys included (the schemas keep bodies a few levels deep)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def parse_event(payload: bytes, topic: str | None = None) -> Event:
    """Bytes in, an Event out, or InvalidEvent naming what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidEvent("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
        body = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a 5000-digit number, [[[[... nesting
        raise InvalidEvent("not_json", str(exc)[:200] or type(exc).__name__) from None
    if not isinstance(body, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(body).__name__}")
    event_type = body.get("type")
    validator = _VALIDATORS.get(event_type) if isinstance(event_type, str) else None
    if validator is None:
        raise InvalidEvent("unknown_type", f"type {event_type!r} has no schema")
    try:
        validator(body)
    except fastjsonschema.JsonSchemaException as exc:
        raise InvalidEvent("schema", str(exc)) from None
    if topic is not None and not topic.startswith(body["source"] + "/"):
        raise InvalidEvent("wrong_topic", f"source {body['source']} does not match topic {topic}")
    _check_time(body["time"])
    if _RISKY_ESCAPE.search(text) and any(_UNSTORABLE.search(t) for t in _texts(body)):
        raise InvalidEvent("bad_text", "a string holds a NUL or a lone UTF-16 surrogate (\\u0000, \\ud800), "
                                       "which the database cannot store")
    return Event.from_dict(body)


class InboundChecker:
    """Counts and logs rejected payloads; thread-safe, since paho calls back from its own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected: Counter[tuple[str, str]] = Counter()

    def check(self, topic: str, payload: bytes) -> Event | None:
        try:
            event = parse_event(payload, topic)
        except InvalidEvent as exc:
            parsed = topics.parse(topic)
            device = parsed.device if isinstance(parsed, topics.EventTopic) else topic
            with self._lock:
                first = self.rejected[(device, exc.kind)] == 0
                self.rejected[(device, exc.kind)] += 1
            if first:  # once per device and kind: a chattering device must not flood the log
                log.warning("rejected payload from %s on %s: %s (further ones of this kind only counted)",
                            device, topic, exc)
            return None
        with self._lock:
            self.accepted += 1
        return event

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"accepted": self.accepted,
                    "rejected": {f"{d}:{k}": n for (d, k), n in sorted(self.rejected.items())}}
