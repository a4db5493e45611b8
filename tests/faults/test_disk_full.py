"""The disk full under the outbox and the records (a small tmpfs): presses wait in memory, none is lost."""

from __future__ import annotations

from pathlib import Path

from tests.faults import harness
from tests.support import MosquittoBroker


def test_disk_full_then_freed(tmp_path: Path, tmpfs: Path, mosquitto: MosquittoBroker) -> None:
    harness.disk_full(tmp_path, tmpfs, mosquitto).check()
