"""A part of the gateway SIGKILLed: the rules service, the drivers' process, the all-in-one gateway."""

from __future__ import annotations

from pathlib import Path

from tests.faults import harness
from tests.support import MosquittoBroker

EVENTS = 2000


def test_rules_service_killed_mid_burst(tmp_path: Path, mosquitto: MosquittoBroker, db_url: str) -> None:
    harness.rules_killed(tmp_path, mosquitto, db_url, EVENTS).check()


def test_drivers_outbox_process_killed_mid_burst(tmp_path: Path, mosquitto: MosquittoBroker, sqlite_url: str) -> None:
    """The process holding the drivers' outbox SIGKILLed while it puts events; restarted on the same outbox file."""
    harness.generator_killed(tmp_path, mosquitto, sqlite_url, EVENTS).check()


def test_drivers_part_killed_while_buttons_are_pressed(tmp_path: Path, mosquitto: MosquittoBroker,
                                                       sqlite_url: str) -> None:
    harness.killed_while_pressing(tmp_path, mosquitto, sqlite_url).check()


def test_all_in_one_gateway_killed_on_the_embedded_broker(tmp_path: Path, sqlite_url: str) -> None:
    harness.killed_while_pressing(tmp_path, None, sqlite_url).check()
