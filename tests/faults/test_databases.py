"""The database taken away: PostgreSQL backends terminated, the SQLite file locked longer than any timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import harness
from tests.support import MosquittoBroker

EVENTS = 2000
LOCK_S = 40.0  # past SQLite's 30 s busy timeout


@pytest.mark.parametrize("times", [1, 2])
def test_postgres_backends_terminated_mid_burst(tmp_path: Path, mosquitto: MosquittoBroker, pg_url: str,
                                                times: int) -> None:
    harness.postgres_terminated(tmp_path, mosquitto, pg_url, EVENTS, times).check()


def test_sqlite_locked_40s_on_both_brokers(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """A backup tool or a person in the sqlite3 shell holds the records' file: presses wait, none is lost."""
    harness.check_all(harness.sqlite_locked(tmp_path, mosquitto, LOCK_S))
