"""The analytics a camera's config asks for, run on each analysed frame; events out as (kind, data)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import site_time
from gateway.config import Window
from gateway.windows import in_windows

UNSCHEDULED = ("schedule", "holidays")


class Pipeline:
    def __init__(self, settings: dict[str, Any], size: tuple[int, int]) -> None:
        self.size = size
        self.tz = ZoneInfo(settings.get("timezone") or "Asia/Shanghai")
        # Each analytic runs all the time (its background and baselines stay learnt) and reports only
        # within its schedule; an event that began inside it is also ended inside or after it.
        self.schedules: dict[str, tuple[list[Window], list[str]] | None] = {}
        for kind in ("motion", "tamper", "loitering"):
            part = settings.get(kind) or {}
            windows = part.get("schedule")
            self.schedules[kind] = None if windows is None else \
                ([Window.model_validate(w) for w in windows], list(part.get("holidays") or []))
        self._reported: set[tuple[str, str]] = set()
        motion, tamper, loitering = (_analytic(settings.get(k)) for k in ("motion", "tamper", "loitering"))
        self.motion = self.tamper = None
        self.loitering = None
        if motion is None and tamper is None and loitering is None:
            return
        from drivers.camera import analytics

        self.motion = None if motion is None else analytics.MotionDetector(analytics.MotionSettings(
            zones=[analytics.Zone(z["name"], [tuple(p) for p in z["polygon"]]) for z in motion["zones"]],
            masks=[[tuple(p) for p in mask] for mask in motion["masks"]],
            **{k: v for k, v in motion.items() if k not in ("zones", "masks")}))
        self.tamper = None if tamper is None else analytics.TamperDetector(analytics.TamperSettings(**tamper))
        self.loitering = None if loitering is None else analytics.LoiterDetector(analytics.LoiterSettings(
            zones=[analytics.Zone(z["name"], [tuple(p) for p in z["polygon"]]) for z in loitering["zones"]],
            **{k: v for k, v in loitering.items() if k != "zones"}))
        carried = [str(k) for k in (settings.get("carried") or {}).get("tamper", [])]
        if self.tamper is not None and carried:
            self.tamper.carry(carried)
            self._reported.update(("tamper", k) for k in carried)  # its end is reported, whatever the schedule

    def update(self, frame: Any, at: float, wall: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Events of this frame; `at` is monotonic (hold times), `wall` the time for schedules (None: now)."""
        found = self._analyse(frame, at)
        if not any(s is not None for s in self.schedules.values()):
            return found
        local = datetime.fromtimestamp(site_time(wall), self.tz)  # schedules go by the site's clock
        kept = []
        for kind, data in found:
            key = (kind, str(data.get("zone") or data.get("kind")))
            schedule = self.schedules.get(kind)
            if data["active"]:
                if schedule is not None and not in_windows(schedule[0], local, schedule[1]):
                    continue
                self._reported.add(key)
            elif schedule is not None:
                if key not in self._reported:
                    continue  # its beginning was outside the schedule: nobody was told
                self._reported.discard(key)
            kept.append((kind, data))
        return kept

    def _analyse(self, frame: Any, at: float) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        if self.tamper is not None:
            for t in self.tamper.update(frame, at):
                found.append(("tamper", {"kind": t.kind, "active": t.active, "detail": t.detail}))
        tampered = self.tamper is not None and bool(self.tamper.active)
        if self.motion is not None:
            # A covered or turned camera changes the whole view: that is the tamper, not motion.
            for m in self.motion.update(frame, at):
                if tampered and m.active:
                    continue
                found.append(("motion", {"zone": m.zone, "active": m.active, "area": round(float(m.area), 4)}))
        if self.loitering is not None:
            # The people detector runs on frames with motion (or while it tracks a person); without a motion
            # detector, every detect_every_s.
            moving = self.motion.motion_now if self.motion is not None else True
            for e in self.loitering.update(frame, at, moving):
                if tampered and e.active:  # nor is a person "found" in a view that is not the camera's
                    continue
                found.append(("loitering", {"zone": e.zone, "active": e.active, "dwell_s": round(float(e.dwell_s), 1)}))
        return found


def _analytic(part: dict[str, Any] | None) -> dict[str, Any] | None:
    """An analytic's own settings, without its schedule."""
    return None if part is None else {k: v for k, v in part.items() if k not in UNSCHEDULED}
