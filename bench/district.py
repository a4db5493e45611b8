"""The district centre under load, with a node killed mid-run.

    python -m bench.district [--schools 100] [--events 10000] [--workers 2]
                             [--kill bridges|leader|follower|worst|none] [--rate 0] [--no-live]

Everything on this machine (tests/district/harness.py): three nats-server nodes (JetStream, MQTT listeners,
one cluster), `--schools` schools each with its own Mosquitto bridged up by the section `campusgw district
bridge` makes and a light school publishing alarm button events into it at QoS 1, `--workers` district worker
processes (`campusgw district worker`) on one PostgreSQL database. The events are spread over the schools,
as fast as they go (or `--rate` a second); when a third is sent, one node is SIGKILLed (`bridges`: the first
node, which a third of the bridges connect to first; `leader`: the `$MQTT_msgs` stream's leader; `follower`: a
node leading neither that stream nor the cluster's metadata; `worst`: the first node, made leader of the streams
keeping the messages and the MQTT sessions first), and restarted when two thirds are. A leader's loss stops the
stream's writes until a follower campaigns: NATS's Raft waits 4-9 s for a lost leader
(minElectionTimeoutDefault..maxElectionTimeoutDefault in server/raft.go), so events sent meanwhile wait in the
schools' Mosquitto that long, and bridges on the lost node cannot connect elsewhere until the sessions' stream
has a leader again.

Every `--alarm-every`th event is also a new alarm: the school announces its view (retained, up the bridge) and,
unless `--no-live`, over core NATS too, as a gateway with `district.live` does (gateway/district/live.py).

Figures, all from outside the district's own bookkeeping:
  events/s      acknowledged events over the time from the first publish to the last of them in the records
  missing       ids a school's Mosquitto acknowledged that are not in the records (must be 0)
  duplicates    deliveries the workers absorbed (their `duplicates`, from each worker's exit line)
  latency       a record's received_at minus the moment its school sent it: the school -> district records path
  alarm latency an alarm's first received_at in district_alarms minus the moment its school announced it (the
                district console polls that table every second: add up to 1 s for the console)
  longest gap   the longest time no new record arrived after the kill (the recovery)
  node memory   the largest RSS of each nats-server process during the run
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from bench.common import latency_stats, rss_mib, wait_until
from gateway.district.live import LiveAlarms
from tests.district.harness import LightSchool, NatsCluster, Pump, SchoolBroker
from tests.support import drop_postgres_database, new_postgres_database


@dataclass
class Row:
    id: str
    received: float  # wall time the district stored it
    sent: float  # wall time its school handed it to paho


def cpu_by_group() -> dict[str, float]:
    """CPU seconds (user + system) each kind of process has used so far: where a run's time goes."""
    import psutil

    groups: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            times = proc.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        if times is None:
            continue
        name = proc.info["name"] or ""
        group = ("nats-server" if "nats-server" in name else "mosquitto" if "mosquitto" in name
                 else "postgres" if "postgres" in name else "workers" if "district worker" in cmd
                 else "bench (schools' publishers)" if "bench.district" in cmd else None)
        if group:
            groups[group] = groups.get(group, 0.0) + times.user + times.system
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.district", description=__doc__.split("\n")[0])
    parser.add_argument("--schools", type=int, default=100)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill", choices=["bridges", "leader", "follower", "worst", "none"], default="bridges")
    parser.add_argument("--alarm-every", type=int, default=50, help="every Nth event is also a new alarm's view")
    parser.add_argument("--no-live", action="store_true", help="alarm views by the bridge only")
    parser.add_argument("--stream-replicas", type=int, default=3, help="mqtt.stream_replicas (0: as NATS chooses, "
                        "which was 2 here: a node lost then stops the streams it held until it is back)")
    parser.add_argument("--rate", type=float, default=0.0, help="events a second in all (0: as fast as it goes)")
    parser.add_argument("--timeline", action="store_true", help="records and sends a second, from the kill on")
    parser.add_argument("--graceful", action="store_true", help="stop the node in lame duck mode (its leaderships "
                        "handed over first, then its clients moved) instead of SIGKILL: a planned restart")
    args = parser.parse_args(argv)

    url = new_postgres_database()
    tmp = Path(tempfile.mkdtemp(prefix="campusgw-bench-district-"))
    cluster = NatsCluster(tmp / "nats", stream_replicas=args.stream_replicas or None)
    schools: list[LightSchool] = []
    pump = Pump()  # one thread reads every school's connection (not a paho thread each)
    workers: list[subprocess.Popen[bytes]] = []
    peak: dict[str, float] = {}
    sampling = threading.Event()
    try:
        cluster.start()
        config = tmp / "district.yaml"
        config.write_text(yaml.safe_dump({"district": {"id": "bench", "name": "bench"},
                                          "nats": {"servers": cluster.urls}, "database": {"url": url}}))
        cli = [sys.executable, "-m", "gateway.cli", "district"]
        subprocess.run([*cli, "init", "-c", str(config)], check=True, capture_output=True)
        workers = [subprocess.Popen([*cli, "worker", "-c", str(config)], stderr=(tmp / f"worker-{n}.log").open("wb"),
                                    stdout=subprocess.DEVNULL) for n in range(args.workers)]
        started = time.monotonic()
        for n in range(args.schools):
            broker = SchoolBroker(tmp / f"school-{n + 1}", f"school-{n + 1}", cluster.mqtt_addresses)
            broker.start()
            school = LightSchool(broker)
            school.start(pump)
            if not args.no_live:
                school.live = LiveAlarms(cluster.urls, f"bench-{broker.site}")
                school.live.start()
            schools.append(school)
        print(f"{args.schools} schools up in {time.monotonic() - started:.1f} s", file=sys.stderr)

        def sample() -> None:
            while not sampling.wait(0.5):
                for node in cluster.nodes:
                    if node.proc is not None:
                        peak[node.name] = max(peak.get(node.name, 0.0), rss_mib(node.proc.pid))

        threading.Thread(target=sample, daemon=True).start()
        if not args.no_live:
            wait_until(lambda: all(s.live.connected.is_set() for s in schools), 60, "every school's fast path")
        if args.kill == "worst":
            for stream in ("$MQTT_msgs", "$MQTT_sess"):
                cluster.lead(stream, 0)
        announced: dict[tuple[str, int], float] = {}
        cpu_before = cpu_by_group()
        killed = index = None
        kill_at = restart_at = None
        leaving: threading.Thread | None = None
        # The events made first, so the sending loop only sends: one Python process plays every school here.
        prepared = [schools[i % len(schools)].prepare(device=f"box-{i % 7}", restored=bool((i // len(schools)) % 2))
                    for i in range(args.events)]
        first = time.time()
        for i in range(args.events):
            school = schools[i % len(schools)]
            school.send(*prepared[i])
            if i % args.alarm_every == 0:
                announced[(school.site, i)] = time.time()
                school.announce(i, 1, "active_unack")
            if args.rate:
                time.sleep(max(0.0, first + (i + 1) / args.rate - time.time()))
            if args.kill != "none" and i == args.events // 3:
                index = {"bridges": lambda: 0, "worst": lambda: 0, "leader": lambda: cluster.leader_of("$MQTT_msgs"),
                         "follower": lambda: cluster.follower("$MQTT_msgs")}[args.kill]()
                assert index is not None
                kill_at = time.time()
                node = cluster.nodes[index]
                if args.graceful:  # in the background: the node takes lame_duck_duration to leave
                    leaving = threading.Thread(target=node.lame_duck, daemon=True)
                    leaving.start()
                else:
                    node.kill()
                killed = cluster.nodes[index].name
            if index is not None and i >= 2 * args.events // 3 and restart_at is None and not (
                    leaving is not None and leaving.is_alive()):  # a node in lame duck mode takes 30 s to leave
                cluster.restart(index)
                restart_at = time.time()
            while sum(s.unacked for s in schools) > 20 * len(schools):  # a school's Mosquitto is a queue, not a sink
                time.sleep(0.001)
        sent_s = time.time() - first
        wait_until(lambda: sum(s.unacked for s in schools) == 0, 300, "every publish acknowledged")
        acked = set().union(*(s.acked for s in schools))
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.scalar(text("SELECT count(*) FROM district_events")) or 0)

        wait_until(lambda: stored() >= len(acked), 600, "every acknowledged event in the records")

        def alarms_in() -> int:
            with engine.connect() as conn:
                return int(conn.scalar(text("SELECT count(*) FROM district_alarms")) or 0)

        wait_until(lambda: alarms_in() >= len(announced), 120, "every alarm in the district's records")
        with engine.connect() as conn:
            stored_rows = conn.execute(text("SELECT id, extract(epoch FROM received_at) AS received "
                                            "FROM district_events")).all()
            alarm_rows = conn.execute(text("SELECT site, alarm_id, extract(epoch FROM received_at) AS received "
                                           "FROM district_alarms")).all()
        sent_at = {k: v for s in schools for k, v in s.sent_at.items()}
        rows = [Row(r.id, float(r.received), sent_at.get(r.id, float("nan"))) for r in stored_rows]
        engine.dispose()
        sampling.set()
        cpu_after = cpu_by_group()
    finally:
        pump.stop()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        for school in schools:
            school.stop()
            school.broker.stop()
        cluster.stop()
        drop_postgres_database(url)

    ids = {r.id for r in rows}
    last = max(float(r.received) for r in rows)
    latencies = [(float(r.received) - float(r.sent)) * 1000 for r in rows]
    during = [(float(r.received) - float(r.sent)) * 1000 for r in rows
              if kill_at is not None and kill_at <= float(r.sent) <= (restart_at or kill_at) + 10]
    alarm_sent = {(r.site, r.alarm_id): announced[(r.site, r.alarm_id)] for r in alarm_rows}
    alarm_latencies = [(float(r.received) - alarm_sent[(r.site, r.alarm_id)]) * 1000 for r in alarm_rows]
    down_until = (restart_at or kill_at or 0.0) + 10
    alarm_during = [(float(r.received) - alarm_sent[(r.site, r.alarm_id)]) * 1000 for r in alarm_rows
                    if kill_at is not None and kill_at <= alarm_sent[(r.site, r.alarm_id)] <= down_until]
    live_written = 0
    for n in range(len(workers)):
        found = re.search(r"(\d+) alarm views by the fast path", (tmp / f"worker-{n}.log").read_text())
        live_written += int(found.group(1)) if found else 0
    arrivals = sorted(float(r.received) for r in rows)
    gap = max((b - a for a, b in itertools.pairwise(arrivals) if kill_at and a >= kill_at - 1), default=0.0)
    duplicates = 0
    for n in range(len(workers)):
        found = re.search(r"(\d+) duplicates", (tmp / f"worker-{n}.log").read_text())
        duplicates += int(found.group(1)) if found else 0
    print(f"district: {args.schools} schools, {len(acked)} events acknowledged by their Mosquitto, "
          f"{args.workers} workers, 3 nats-server nodes; {datetime.now():%Y-%m-%d}")
    how = "stopped in lame duck mode" if args.graceful else "killed (SIGKILL)"
    print(f"  {how} {killed or 'no node'}" + (f" ({args.kill}) at a third, restarted at two thirds" if killed else ""))
    print(f"  sent in {sent_s:.1f} s; in the records {last - first:.1f} s after the first publish: "
          f"{len(acked) / (last - first):.0f} events/s")
    print(f"  missing {len(acked - ids)}, not sent but stored {len(ids - acked)}, duplicates absorbed {duplicates}")
    print(f"  longest gap between records after the kill: {gap:.2f} s")
    print(f"{'latency, event time -> record, ms':34}{'n':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    print(f"  {'all':32}{len(latencies):6d}{latency_stats(latencies)}")
    if during:
        print(f"  {'sent while a node was down':32}{len(during):6d}{latency_stats(during)}")
    how_alarms = "by the bridge only" if args.no_live else f"bridge and core NATS, {live_written} by the fast path"
    print(f"{'alarm view -> district_alarms, ms':34}{'n':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  ({how_alarms})")
    print(f"  {'all':32}{len(alarm_latencies):6d}{latency_stats(alarm_latencies)}")
    if alarm_during:
        print(f"  {'announced while a node was down':32}{len(alarm_during):6d}{latency_stats(alarm_during)}")
    spent = {g: cpu_after.get(g, 0.0) - cpu_before.get(g, 0.0) for g in cpu_after}
    print("  CPU seconds over the run: " + ", ".join(f"{g} {v:.1f}" for g, v in sorted(spent.items(),
                                                                                    key=lambda kv: -kv[1])))
    print("  node memory, largest RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items())))
    if kill_at is not None and args.timeline:
        print("  records a second from the kill (s: received, sent):")
        for second in range(-2, int(last - kill_at) + 1):
            got = sum(1 for r in rows if kill_at + second <= float(r.received) < kill_at + second + 1)
            sent = sum(1 for r in rows if kill_at + second <= float(r.sent) < kill_at + second + 1)
            print(f"    {second:+4d} {got:6d} {sent:6d}")
    return 0 if not acked - ids else 1


if __name__ == "__main__":
    sys.exit(main())
