"""The database taken away: PostgreSQL backends terminated, the SQLite file locked longer than any timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import harness
from tests.support import MosquittoBroker

EVENTS = 2000
BUSY_TIMEOUT_S = 2.0  # database.sqlite_busy_timeout_s (30 s by default): the suite's time
LOCK_S = 5.0  # past it, more than twice


@pytest.mark.parametrize("times", [1, 2])
def test_postgres_backends_terminated_mid_burst(tmp_path: Path, mosquitto: MosquittoBroker, pg_url: str,
                                                times: int) -> None:
    harness.postgres_terminated(tmp_path, mosquitto, pg_url, EVENTS, times).check()


def test_sqlite_locked_past_the_busy_timeout_on_both_brokers(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """A backup tool or a person in the sqlite3 shell holds the records' file past the time a write waits for it:
    presses wait, none is lost."""
    harness.check_all(harness.sqlite_locked(tmp_path, mosquitto, LOCK_S, busy_timeout_s=BUSY_TIMEOUT_S))
