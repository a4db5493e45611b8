"""Checking inbound payloads against the JSON Schemas in gateway/schemas.

A payload that fails is counted, logged once per (device, kind of failure) and
dropped; it never raises out of here, so one bad device cannot disturb the rest.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from importlib import resources
from typing import Any

import fastjsonschema

from gateway.events import EVENT_TYPES, Event

log = logging.getLogger("campusgw.validation")

# Events are small (a few hundred bytes); a big payload is a bug or an attack, not an event.
MAX_PAYLOAD_BYTES = 64 * 1024


class InvalidEvent(Exception):
    """A payload that is not an acceptable event; `kind` names the failure for counting."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("gateway.schemas").joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _compile_all() -> dict[str, Any]:
    envelope = load_schema("envelope")
    validators = {}
    for event_type in EVENT_TYPES:
        schema = json.loads(json.dumps(envelope))
        schema["properties"]["type"] = {"const": event_type}
        schema["properties"]["data"] = load_schema(event_type)
        validators[event_type] = fastjsonschema.compile(schema)
    return validators


_VALIDATORS = _compile_all()


def parse_event(payload: bytes, topic: str | None = None) -> Event:
    """Bytes in, an Event out, or InvalidEvent naming what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidEvent("too_large", f"{len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(payload)
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
            device = topic.split("/")[4] if topic.count("/") >= 4 else topic
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
