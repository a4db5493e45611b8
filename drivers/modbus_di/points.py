"""Alarm input points, sans-IO: input bits (and the time) in, point changes out.

Knows normally-open and normally-closed wiring, debounce and modules that
latch their inputs; no sockets, so it is tested with plain lists and fuzzed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gateway.catalogue import PointType  # the types a point may be wired as: the catalogue's point rows


@dataclass(frozen=True)
class Point:
    name: str
    input: int  # 1-based, as printed on the module's terminals
    point_type: PointType
    normally_closed: bool = False
    zone: str | None = None
    place: str | None = None


@dataclass(frozen=True)
class PointChange:
    point: Point
    active: bool
    at: float
    first_read: bool  # true for the first reading after (re)connecting: a baseline, not an edge


def latches_to_clear(points: Sequence[Point], raw: Sequence[bool], latched: Sequence[bool],
                     active: Mapping[str, bool | None], triggered: Collection[str]) -> list[int]:
    """The inputs whose latch bit to clear after a reading of a latching module.

    `raw`: the inputs as read; `latched`: the latch bits that count (`PointTracker.update_latching`);
    `active`: each point's recorded state after the reading; `triggered`: the points it recorded a press of.
    Cleared: a latch whose press was just recorded, so the next press latches again; and a latch still set
    once the input is released: a module that latches on the level sets it again while the button is held,
    and left set it would hold the point active for good. Not before the press is recorded (debounce under
    way): till then the latch is what holds it. Nothing while held: a press costs two clears (and one more
    per clear lost), not one per poll.
    """
    out: list[int] = []
    for point in points:
        i = point.input - 1
        if i < len(latched) and i < len(raw) and latched[i] and (
                point.name in triggered or (active.get(point.name) and not raw[i])):
            out.append(point.input)
    return out


class PointTracker:
    """Turns successive input readings into changes of each configured point.

    A point must read the same for `debounce_s` before a change is reported;
    0 reports on the first differing poll. After `reset()` (a reconnect) the
    next reading is a baseline: points found active are reported (a press made
    while the module was unreachable and latched by it is not lost), inactive
    ones only if they were active before.
    """

    def __init__(self, points: Sequence[Point], debounce_s: float = 0.0) -> None:
        self.points = list(points)
        self.debounce_s = debounce_s
        self._active: dict[str, bool | None] = {p.name: None for p in self.points}
        self._pending: dict[str, tuple[bool, float]] = {}
        self._baseline = {p.name for p in self.points}  # points whose next reading is a baseline
        self._normally_open = {p.input: not p.normally_closed for p in self.points}
        self.readings = 0
        self.short_readings = 0
        self.latched_readings = 0  # a latch bit held a released input: a press shorter than the poll, or its end

    def reset(self) -> None:
        self._baseline = {p.name for p in self.points}
        self._pending.clear()

    def update(self, bits: Sequence[bool], now: float, latched: Sequence[bool] = ()) -> list[PointChange]:
        """`latched`: the module's latch bits, where it has them. On a baseline reading a set latch bit is
        reported even when the point was already known active: the release in between may have gone
        unseen (the link dropped), and a repeat merges into the open alarm, where a miss would lose it."""
        self.readings += 1
        changes: list[PointChange] = []
        for point in self.points:
            index = point.input - 1
            if index >= len(bits):
                self.short_readings += 1
                continue
            active = bool(bits[index]) != point.normally_closed
            known = self._active[point.name]
            if point.name in self._baseline:
                self._baseline.discard(point.name)
                self._pending.pop(point.name, None)
                latch = index < len(latched) and latched[index]
                if ((active or known) and active != known) or (latch and active and known):
                    changes.append(PointChange(point, active, now, first_read=True))
                self._active[point.name] = active
                continue
            if active == known:
                self._pending.pop(point.name, None)
                continue
            since = self._pending.setdefault(point.name, (active, now))
            if since[0] != active:
                since = self._pending[point.name] = (active, now)
            if now - since[1] >= self.debounce_s:
                self._pending.pop(point.name, None)
                self._active[point.name] = active
                changes.append(PointChange(point, active, since[1], first_read=False))
        return changes

    def update_latching(self, raw: Sequence[bool], latch: Sequence[bool],
                        now: float) -> tuple[list[PointChange], list[int]]:
        """A reading of a module that latches its inputs (`latch`: its latch bits, one per input): the changes,
        and the inputs whose latch to clear (`latches_to_clear`).

        The module sets a latch bit when its contact closes. For a normally-closed point that is the return
        to normal, so its latch says nothing about an alarm: it is ignored, neither read nor cleared, and
        such a point is read like one without a latch (a cut shorter than the poll can go unseen)."""
        latched = [i < len(latch) and latch[i] and self._normally_open.get(i + 1, False) for i in range(len(raw))]
        self.latched_readings += sum(1 for on, pressed in zip(latched, raw, strict=True) if on and not pressed)
        changes = self.update([a or b for a, b in zip(raw, latched, strict=True)], now, latched)
        triggered = {c.point.name for c in changes if c.active}
        return changes, latches_to_clear(self.points, raw, latched, self._active, triggered)

    @property
    def settled(self) -> bool:
        """No baseline and no debounce under way: the same reading again would change nothing."""
        return not self._baseline and not self._pending

    def active(self, name: str) -> bool | None:
        return self._active[name]
