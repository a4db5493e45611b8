"""The district's records on PostgreSQL: month partitions made ahead, a far-off month's rows moved out of the
default partition when its month comes, whole months dropped past retention, and duplicates absorbed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, text

from gateway.district import store
from tests.support import drop_postgres_database, new_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine() -> Iterator[Engine]:
    url = new_postgres_database()
    made = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        yield made
    finally:
        made.dispose()
        drop_postgres_database(url)


def event(event_id: str, at: datetime) -> dict[str, object]:
    return {"id": event_id, "time": at, "site": "s1", "kind": "alarm_input", "device": "gate-box",
            "type": "campus.alarm_input.triggered", "class": "alarm", "test": False, "historical": False,
            "received_at": at, "data": {"point": "panic"}}


def where(engine: Engine, event_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(text("SELECT tableoid::regclass::text FROM district_events WHERE id = :id"),
                               {"id": event_id}))


def test_months_come_and_go_and_nothing_is_lost_between(engine: Engine) -> None:
    december = datetime(2026, 12, 15, tzinfo=UTC)
    store.create_schema(engine, december)
    far = datetime(2027, 6, 1, tzinfo=UTC)  # a school whose clock is half a year ahead
    with engine.begin() as conn:
        written = store.write(conn, [event("now", december), event("ahead", far), event("now", december)], [],
                              december)
    assert (written.stored, written.duplicates) == (2, 1)
    assert where(engine, "now") == "district_events_2026_12" and where(engine, "ahead") == store.OTHER

    # April 2027: June's partition is made, and the row waiting in the default partition moves into it.
    assert store.maintain(engine, retention_months=36, now=datetime(2027, 4, 1, tzinfo=UTC)) == []
    assert where(engine, "ahead") == "district_events_2027_06"

    # March 2028, keeping 13 months: December 2026 and every month before February 2027 go, June 2027 stays.
    dropped = store.maintain(engine, retention_months=13, now=datetime(2028, 3, 10, tzinfo=UTC))
    assert "district_events_2026_12" in dropped and "district_events_2027_01" in dropped
    assert all(name < "district_events_2027_02" for name in dropped)
    with engine.connect() as conn:
        assert list(conn.scalars(text("SELECT id FROM district_events"))) == ["ahead"]


def test_an_index_added_since_the_tables_were_made_is_made_at_the_next_start(engine: Engine) -> None:
    store.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX district_devices_trouble"))  # as a district made before the index was
    store.create_schema(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT to_regclass('district_devices_trouble')")) is not None
