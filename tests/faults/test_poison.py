"""Poison events (valid by the JSON Schemas, but no database can hold them as they are) between good ones."""

from __future__ import annotations

from pathlib import Path

from tests.faults import harness
from tests.support import MosquittoBroker


def test_poison_on_mosquitto(tmp_path: Path, mosquitto: MosquittoBroker, db_url: str) -> None:
    harness.poison(tmp_path, mosquitto, db_url).check()


def test_poison_on_the_embedded_broker(tmp_path: Path, sqlite_url: str) -> None:
    harness.poison(tmp_path, None, sqlite_url).check()
