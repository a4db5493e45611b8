"""Snapshots and alarm clips are kept for a time, then removed; the camera driver runs this once a day."""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def purge(camera_dir: Path, snapshots_days: int, clips_days: int, now: float | None = None) -> tuple[int, int]:
    """Remove day folders of snapshots older than `snapshots_days` and clips older than `clips_days`
    (by the day in their names, UTC, not file times that a copy or restore changes). Returns (days, clips)."""
    now = time.time() if now is None else now
    snapshot_cutoff = time.strftime("%Y%m%d", time.gmtime(now - snapshots_days * 86400))
    clip_cutoff = time.strftime("%Y%m%d", time.gmtime(now - clips_days * 86400))
    days = clips = 0
    if not camera_dir.is_dir():
        return 0, 0
    for entry in camera_dir.iterdir():
        if entry.is_dir() and len(entry.name) == 8 and entry.name.isdigit() and entry.name < snapshot_cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            days += 1
    clip_root = camera_dir / "clips"
    if clip_root.is_dir():
        for entry in clip_root.iterdir():
            day = entry.name.removeprefix(camera_dir.name + "-")[:8]
            if entry.is_dir() and day.isdigit() and day < clip_cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                clips += 1
    return days, clips
