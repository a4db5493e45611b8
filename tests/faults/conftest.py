"""Fixtures of the fault suite; the faults themselves are in tests/faults/harness.py (shared with bench/faults.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import CannotMount, small_disk


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'records.db'}"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted in teardown; skipped with the reason where it cannot be mounted."""
    try:
        with small_disk(tmp_path / "small") as path:
            yield path
    except CannotMount as exc:
        pytest.skip(str(exc))
