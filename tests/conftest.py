"""Shared test fixtures: real brokers (embedded amqtt and a Mosquitto process of our own), real databases.

Nothing here assumes a fixed port: every broker and simulator binds a free one.
Mosquitto or PostgreSQL missing -> those tests are skipped with the reason
printed; with CAMPUSGW_REQUIRE_SERVICES=1 (CI) a missing one is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.modbus_di import ModbusDISimulator
from tests.support import (
    AmqttBroker,
    MosquittoBroker,
    drop_postgres_database,
    missing,
    new_postgres_database,
)


def _started(broker: Any) -> Iterator[Any]:
    if isinstance(broker, MosquittoBroker) and not broker.binary:
        missing("mosquitto is not installed (apt-get install mosquitto)")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    yield from _started(MosquittoBroker(tmp_path))


@pytest.fixture
def amqtt_broker() -> Iterator[AmqttBroker]:
    yield from _started(AmqttBroker())


@pytest.fixture(params=["embedded", "mosquitto"])
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The same test against the embedded broker and against Mosquitto."""
    yield from _started(AmqttBroker() if request.param == "embedded" else MosquittoBroker(tmp_path))


@pytest.fixture
def sim() -> Iterator[ModbusDISimulator]:
    """A simulated 16-input Modbus TCP alarm module on a free port."""
    simulator = ModbusDISimulator(inputs=16)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    url = new_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = new_postgres_database()
    yield url
    drop_postgres_database(url)
