"""The event envelope (CloudEvents 1.0, structured JSON) and ids. Topics are made in gateway.topics.

Everything on the bus is built here and checked by gateway.validation, so a
consumer (the rules service, a district platform, Node-RED) sees one format.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from gateway import topics
from gateway.catalogue import EVENT_TABLE, EventClass

SPEC_VERSION = "1.0"

# Each event type and its class (alarm-class events are never dropped or shed; telemetry may be shed past the
# outbox bound), from the catalogue; its JSON Schema is gateway/schemas/<type>.json.
EVENT_TYPES: dict[str, EventClass] = {e.type: e.event_class for e in EVENT_TABLE}


class _Uuid7:
    """RFC 9562 UUIDv7 with a 12-bit counter after the millisecond (method 1), so ids made
    in the same millisecond still sort in the order they were made, without running ahead of the clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
            else:  # same ms, or the clock stepped back: keep order by counting on
                self._counter += 1
                if self._counter > 0xFFF:
                    self._last_ms, self._counter = self._last_ms + 1, 0
                ms = self._last_ms
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
        return str(uuid.UUID(int=value))


new_id = _Uuid7()


def iso(ts: float, tz: tzinfo) -> str:
    """RFC 3339 with the site's offset and milliseconds: what a person and a machine both read."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Event:
    """One event as it travels: the envelope fields a consumer needs, plus `data`."""

    id: str
    source: str
    type: str
    time: str
    data: dict[str, Any]
    seq: int
    historical: bool = False
    test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.source.rsplit("/", 1)[-1]

    @property
    def kind(self) -> str:
        return self.source.rsplit("/", 2)[-2]

    @property
    def event_class(self) -> EventClass:
        return EVENT_TYPES.get(self.type, "record")

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": "application/json",
            "seq": self.seq,
            "historical": self.historical,
        }
        if self.test:
            body["test"] = True
        body["data"] = self.data
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=body["id"], source=body["source"], type=body["type"], time=body["time"],
            data=body["data"], seq=body["seq"], historical=body.get("historical", False),
            test=body.get("test", False),
        )


def make_event(site: str, kind: str, device: str, event_type: str, data: dict[str, Any], seq: int,
               at: float, tz: tzinfo, test: bool = False) -> Event:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; add it to the catalogue's EVENT_TABLE "
                         "and gateway/schemas/")
    return Event(id=new_id(), source=topics.source(site, kind, device), type=event_type,
                 time=iso(at, tz), data=data, seq=seq, test=test)
