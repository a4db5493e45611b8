"""The district's PostgreSQL failing over under a running district: three Patroni members (synchronous mode,
strict) on one etcd with a pgbouncer each (tests/district/ha.py), the district worker connecting with a libpq
multi-host URL through the pgbouncers (`target_session_attrs=read-write`), schools sending through their
Mosquitto bridges and the NATS cluster, and the primary's server SIGKILLed mid-run (its Patroni, PostgreSQL and
pgbouncer). Every event a school's Mosquitto acknowledged is on the new primary once, and so is every batch a
writer saw committed (what a worker acknowledges to NATS after).

`python -m bench.district_ha` runs the long one: the failover time, writes lost and the write latency through it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from gateway.district import store
from tests.district.ha import PatroniCluster, Writer, district_engine, missing_tools
from tests.district.harness import NatsCluster
from tests.district.test_district import RunningWorker, cluster, schools, stop_all  # noqa: F401 (the fixture)
from tests.support import missing, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.timeout(240)]


def test_the_districts_database_url_may_name_every_pgbouncer_for_libpq_to_find_the_primary() -> None:
    """district.yaml's database.url as libpq's multi-host form, in both spellings SQLAlchemy reads: the hosts
    reach libpq as host=h1,h2,h3 port=p1,p2,p3 with target_session_attrs (no service needed)."""
    for url in ("postgresql://district@/district?host=10.0.0.1:6432&host=10.0.0.2:6432&host=10.0.0.3:6432"
                "&target_session_attrs=read-write&connect_timeout=3",
                "postgresql://district@/district?host=10.0.0.1,10.0.0.2,10.0.0.3&port=6432,6432,6432"
                "&target_session_attrs=read-write&connect_timeout=3"):
        engine = district_engine(url)
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # psycopg's adapters, SQLAlchemy's own
        assert params == {"user": "district", "dbname": "district", "host": "10.0.0.1,10.0.0.2,10.0.0.3",
                          "port": "6432,6432,6432", "target_session_attrs": "read-write", "connect_timeout": "3"}


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[PatroniCluster]:
    reason = missing_tools()
    if reason:
        missing(reason)
    postgres = PatroniCluster(3)
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop(keep=tmp_path / "ha-logs")


def ids_on(url: str) -> list[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(store.events.c.id)))
    finally:
        engine.dispose()


def test_the_primary_killed_mid_run_loses_no_acknowledged_event(tmp_path: Path, ha: PatroniCluster,
                                                                cluster: NatsCluster) -> None:  # noqa: F811
    old = ha.primary()
    assert old is not None and ha.sync_standby() is not None
    # The primary last: each new connection is refused by both standbys' pgbouncers before it finds it.
    url = ha.url(order=[*(m.name for m in ha.members if m.name != old), old])
    worker = RunningWorker(cluster.settings(batch=100), url, engine=district_engine(url))
    writer = Writer(url)
    writer.start()
    every = schools(tmp_path, cluster, 2)
    sending = threading.Event()

    def send() -> None:
        while not sending.is_set():
            for school in every:
                school.press()
            sending.wait(0.02)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_for(lambda: worker.worker.stats.stored >= 50 and len(writer.commits) >= 20, 60,
                 "the worker and the writer committing on the first primary")
        killed_at = time.monotonic()
        assert ha.kill_primary() == old
        new = ha.wait_for_new_primary(old, 60)
        promoted_at = time.monotonic()
        wait_for(lambda: writer.recovered_after(killed_at), 60, "a commit on the new primary")
        stored_then = worker.worker.stats.stored
        wait_for(lambda: worker.worker.stats.stored > stored_then + 50, 60, "the worker storing on the new primary")
        sending.set()
        sender.join(10)
        writer.close()
        wait_for(lambda: sum(s.unacked for s in every) == 0, 60, "every publish acknowledged by its Mosquitto")
        acked = set().union(*(s.acked for s in every))
        on_new = ha.direct_url(new)
        wait_for(lambda: acked | writer.acknowledged <= set(ids_on(on_new)), 90,
                 "every acknowledged event on the new primary")

        ids = ids_on(on_new)
        assert len(ids) == len(set(ids)), "an event twice on the new primary"
        assert acked | writer.acknowledged <= set(ids)
        assert writer.failures, "no write was in the way of the failover"
        # Only the new primary's pgbouncer lets the district in. The old primary's server back: Patroni rejoins it
        # as a standby of the new timeline (rewound if it must be), its pgbouncer closed, with every row.
        others = [m.name for m in ha.members if m.name not in (old, new)]
        assert ha.bouncer_open(new) is True and all(ha.bouncer_open(n) is False for n in others)
        back = time.monotonic()
        ha.restart(old)
        wait_for(lambda: ha.caught_up(old) and ha.bouncer_open(old) is False, 60,
                 "the old primary streaming from the new one, its pgbouncer closed")
        rejoined = time.monotonic() - back
        assert set(ids_on(ha.direct_url(old))) == set(ids_on(on_new))
        first = writer.recovered_after(killed_at)
        assert first is not None
        latencies = sorted(latency for _, _, latency in writer.commits)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print(f"primary {old} killed: {new} primary {promoted_at - killed_at:.1f} s later (Patroni), the first "
              f"commit {first - killed_at:.1f} s after the kill; {len(acked)} school events and "
              f"{len(writer.acknowledged)} written rows acknowledged, 0 lost; the worker's failed writes "
              f"{worker.worker.stats.failed_writes}, duplicates absorbed {worker.worker.stats.duplicates}; "
              f"writer p99 {p99 * 1000:.0f} ms, max {latencies[-1]:.1f} s; {old} back as a standby in "
              f"{rejoined:.1f} s")
    finally:
        sending.set()
        writer.close()
        stop_all(every)
        worker.stop()

    ha.stop()
    assert not ha.processes()
    shown = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    assert str(ha.dir) not in shown, f"left running:\n{shown}"
