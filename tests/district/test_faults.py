"""The district under the faults a district has: its PostgreSQL away mid-run (the workers' writes fail, nothing
is acknowledged, all of it comes again), the node leading the shared consumer killed, and the whole cluster
stopped while the schools keep sending (their Mosquitto bridges queue). Each held against what every school's
Mosquitto acknowledged: nothing missing, nothing twice.

The whole cluster is stopped for CAMPUSGW_DISTRICT_OUTAGE_S seconds (5 in the suite; `python -m bench.district
--stop-cluster 30` runs the long one)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.district.subjects import MQTT_STREAM
from tests.district.harness import LightSchool, NatsCluster, TcpProxy
from tests.district.test_district import (  # noqa: F401 (fixtures)
    RunningWorker,
    all_arrived,
    cluster,
    district_db,
    schools,
    stop_all,
    stored_ids,
)
from tests.support import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.timeout(300)]


def send(every: list[LightSchool], rounds: int) -> None:
    for _ in range(rounds):
        for school in every:
            school.press()


def check_every_acknowledged_event_once(url: str, every: list[LightSchool], expected: int) -> None:
    wait_for(lambda: sum(s.unacked for s in every) == 0, 60, "every publish acknowledged by its Mosquitto")
    wait_for(lambda: all_arrived(url, every), 120, "every acknowledged event in the district's records")
    ids = stored_ids(url)
    acked = set().union(*(s.acked for s in every))
    assert len(acked) == expected and set(ids) == acked and len(ids) == len(set(ids))


def test_the_districts_database_away_mid_run_loses_nothing(tmp_path: Path, cluster: NatsCluster,  # noqa: F811
                                                            district_db: str) -> None:  # noqa: F811
    proxy = TcpProxy(5432)
    worker = RunningWorker(cluster.settings(),
                           district_db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    every = schools(tmp_path, cluster, 2)
    try:
        send(every, 100)
        wait_for(lambda: len(stored_ids(district_db)) >= 50, 60, "the first events stored")
        proxy.cut()  # the database gone for the workers (the test still reads it directly)
        send(every, 200)
        wait_for(lambda: worker.worker.stats.failed_writes >= 3, 60, "the worker failing to write, again and again")
        proxy.restore()
        send(every, 100)
        check_every_acknowledged_event_once(district_db, every, 800)
    finally:
        stop_all(every)
        worker.stop()
        proxy.close()


def test_the_consumers_leader_killed_then_the_whole_cluster_stopped_loses_nothing(
        tmp_path: Path, cluster: NatsCluster, district_db: str) -> None:  # noqa: F811
    worker = RunningWorker(cluster.settings(), district_db)
    every = schools(tmp_path, cluster, 3)
    try:
        send(every, 50)
        wait_for(lambda: len(stored_ids(district_db)) >= 150, 60, "the first events stored")
        leader = cluster.leader_of(MQTT_STREAM, worker.worker.settings.durable)
        assert leader is not None
        cluster.nodes[leader].kill()
        send(every, 50)
        cluster.restart(leader)
        wait_for(lambda: len(stored_ids(district_db)) >= 300, 90, "the events stored under the consumer's new leader")

        cluster.stop()  # every node: the schools' bridges queue what their gateways send meanwhile
        send(every, 50)
        outage = float(os.environ.get("CAMPUSGW_DISTRICT_OUTAGE_S", "5"))
        time.sleep(outage)  # the outage's length (pacing, not waiting for anything)
        back = time.monotonic()
        for index in range(len(cluster.nodes)):
            cluster.restart(index)
        send(every, 50)
        check_every_acknowledged_event_once(district_db, every, 600)
        print(f"whole cluster stopped {outage:.0f} s: every event recorded {time.monotonic() - back:.1f} s after "
              "its restart")
    finally:
        stop_all(every)
        worker.stop()
