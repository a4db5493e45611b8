"""Snapshots and clips past their retention are removed by the day in their names; newer ones stay."""

from __future__ import annotations

import calendar
from pathlib import Path

from drivers.camera.retention import purge

NOW = calendar.timegm((2026, 11, 29, 8, 0, 0))


def test_old_days_and_clips_go_and_the_rest_stays(tmp_path: Path) -> None:
    camera = tmp_path / "gate-cam"
    for day in ("20260801", "20260901", "20261129"):
        (camera / day).mkdir(parents=True)
        (camera / day / f"gate-cam-{day}T080000-000-1.jpg").write_bytes(b"jpeg")
    for day in ("20251101", "20261128"):
        (camera / "clips" / f"gate-cam-{day}T080000-000-10001-clip").mkdir(parents=True)
    (camera / "latest.jpg").write_bytes(b"jpeg")
    assert purge(camera, snapshots_days=90, clips_days=365, now=NOW) == (1, 1)
    assert sorted(p.name for p in camera.iterdir() if p.name.isdigit()) == ["20260901", "20261129"]
    assert [p.name for p in (camera / "clips").iterdir()] == ["gate-cam-20261128T080000-000-10001-clip"]
    assert (camera / "latest.jpg").exists()
    assert purge(tmp_path / "no-such-camera", 1, 1, NOW) == (0, 0)
