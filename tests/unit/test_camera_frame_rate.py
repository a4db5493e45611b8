"""The camera's frame rate in /metrics and its state (issue 16, item 3: -10.4 after a worker restart)."""

from __future__ import annotations

import pytest

from drivers.camera.driver import frame_rate


@pytest.mark.parametrize(("previous", "at", "analysed", "current", "expected"), [
    (None, 100.0, 50, 0.0, 0.0),  # the first report: a baseline
    ((100.0, 50), 110.0, 100, 0.0, 5.0),  # 50 frames in 10 s
    ((100.0, 500), 110.0, 12, 5.0, 0.0),  # a new worker counts from 0 again: a new baseline, never negative
    ((100.0, 50), 100.0, 50, 5.0, 5.0),  # a report with no time passed changes nothing
])
def test_frame_rate(previous: tuple[float, int] | None, at: float, analysed: int, current: float,
                    expected: float) -> None:
    assert frame_rate(previous, at, analysed, current) == expected
