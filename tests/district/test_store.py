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


def test_a_notice_goes_to_every_school_until_each_has_it_and_who_acknowledged_it_is_kept(engine: Engine) -> None:
    from datetime import timedelta

    now = datetime(2026, 12, 6, 9, tzinfo=UTC)
    store.create_schema(engine, now)
    with engine.begin() as conn:
        store.write(conn, [{**event("e1", now), "site": site} for site in ("s1", "s2", "s3")], [], now)
        notice_id, schools = store.issue_notice(conn, "alert", "加强戒备", "放学时段加强校门警戒", "duty-wang", now)
        assert schools == 3
        with pytest.raises(ValueError):
            store.issue_notice(conn, "urgent", "x", "y", "duty-wang", now)
    with engine.begin() as conn:
        due = store.notices_to_send(conn, now)
        assert [(d["site"], d["notice_id"], d["title"]) for d in due] == [(s, notice_id, "加强戒备")
                                                                          for s in ("s1", "s2", "s3")]
        store.notices_sent(conn, [(d["site"], d["notice_id"]) for d in due], now)
        assert store.notices_to_send(conn, now + timedelta(seconds=5)) == [], "not again before the resend time"
        # s1 has it and acknowledged it (the views may come in either order); s2 has it; s3 nothing yet.
        acked = {"site": "s1", "notice_id": notice_id, "received_at": now, "acked_at": now + timedelta(minutes=2),
                 "acked_by": "guard-li"}
        assert store.write_notice_views(conn, [acked, {**acked, "acked_at": None, "acked_by": None},
                                               {**acked, "site": "s2", "acked_at": None, "acked_by": None},
                                               {**acked, "site": "s9"}]) == 3, "s9 was not sent it: ignored"
    with engine.begin() as conn:
        again = store.notices_to_send(conn, now + timedelta(seconds=store.NOTICE_RESEND_S + 1))
        assert [d["site"] for d in again] == ["s3"], "only the school that has not shown it"
        rows = {r.site: r for r in conn.execute(store.notice_receipts.select())}
    assert (rows["s1"].acked_by, rows["s1"].acked_at) == ("guard-li", now + timedelta(minutes=2))
    assert rows["s2"].received_at == now and rows["s2"].acked_at is None and rows["s1"].sends == 1
