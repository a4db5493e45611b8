"""The analytics a camera's config asks for, run on each analysed frame; events out as (kind, data)."""

from __future__ import annotations

from typing import Any


class Pipeline:
    def __init__(self, settings: dict[str, Any], size: tuple[int, int]) -> None:
        self.size = size
        motion, tamper = settings.get("motion"), settings.get("tamper")
        self.motion = self.tamper = None
        if motion is None and tamper is None:
            return
        from drivers.camera import analytics

        self.motion = None if motion is None else analytics.MotionDetector(analytics.MotionSettings(
            zones=[analytics.Zone(z["name"], [tuple(p) for p in z["polygon"]]) for z in motion["zones"]],
            masks=[[tuple(p) for p in mask] for mask in motion["masks"]],
            **{k: v for k, v in motion.items() if k not in ("zones", "masks")}))
        self.tamper = None if tamper is None else analytics.TamperDetector(analytics.TamperSettings(**tamper))

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
        return found
