"""The analytics a camera's config asks for, run on each analysed frame; events out as (kind, data)."""

from __future__ import annotations

from typing import Any


class Pipeline:
    def __init__(self, settings: dict[str, Any], size: tuple[int, int]) -> None:
        self.size = size
        motion, tamper, loitering = settings.get("motion"), settings.get("tamper"), settings.get("loitering")
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

    def update(self, frame: Any, at: float) -> list[tuple[str, dict[str, Any]]]:
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
