"""The broker (Mosquitto, the shipped config) SIGKILLed: every event generated is recorded exactly once."""

from __future__ import annotations

from pathlib import Path

from tests.faults import harness
from tests.support import MosquittoBroker

EVENTS = 2000


def test_broker_killed_mid_burst(tmp_path: Path, mosquitto: MosquittoBroker, sqlite_url: str) -> None:
    harness.broker_killed(tmp_path, mosquitto, sqlite_url, EVENTS, drained=False).check()


def test_broker_killed_after_the_outbox_drained(tmp_path: Path, mosquitto: MosquittoBroker, sqlite_url: str) -> None:
    """Every event PUBACKed by the broker, none committed by the rules service (stopped) when the broker dies."""
    harness.broker_killed(tmp_path, mosquitto, sqlite_url, EVENTS, drained=True).check()


def test_broker_restarted_without_the_rules_session(tmp_path: Path, mosquitto: MosquittoBroker,
                                                    sqlite_url: str) -> None:
    """Events generated while a fresh broker has nobody subscribed are held, and recorded once the rules service
    is subscribed again."""
    harness.broker_restarted_without_session(tmp_path, mosquitto, sqlite_url, EVENTS).check()
