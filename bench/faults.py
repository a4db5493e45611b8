"""The fault matrix with big bursts, the ingest rate with end-to-end confirmation, and a soak.

    python -m bench.faults [--events 20000] [--soak-minutes 10] [--only TEXT]

Runs every fault of tests/faults (the scenarios are tests/faults/harness.py's, with `--events` events per
burst instead of 2,000) and prints one table: fault, broker, db, generated, recorded, duplicates, recovery
seconds. Then the ingest rate with end-to-end confirmation: `--events` telemetry events put with
put_many(100) as fast as possible into the drivers' outbox, with the rules service in its own process
(`campusgw run --only rules`) and with drivers and rules in one process, through Mosquitto; the time is
until the database holds them all, and until the outbox has every confirmation. Then a soak: the
all-in-one gateway (embedded broker, SQLite) in its own process while buttons are pressed at a steady
rate, its RSS and open file descriptors sampled every 10 s. `--only` runs the rows whose name contains
TEXT ("ingest" and "soak" name the last two). The exit status is 1 if anything was lost, doubled or wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import rss_mib, start_mosquitto
from tests.faults import harness
from tests.faults.harness import Outcome
from tests.support import PG_ADMIN_URL, MosquittoBroker, wait_for

SAMPLE_S = 10.0  # soak: RSS and descriptors this often
SOAK_RATE = 2.0  # soak: presses a second


@dataclass
class Row:
    name: str
    broker: str  # "mosquitto": the scenario gets a Mosquitto of its own; "embedded": none (or both, as it says)
    db: str
    run: Callable[[Path, MosquittoBroker | None, str], list[Outcome]]


def matrix(events: int, press_s: float) -> list[Row]:
    def one(scenario: Callable[..., Outcome], *args: object, **kwargs: object) -> Callable[..., list[Outcome]]:
        return lambda workdir, broker, db_url: [scenario(workdir, broker, db_url, *args, **kwargs)]

    return [
        Row("broker SIGKILL mid-burst", "mosquitto", "sqlite", one(harness.broker_killed, events, drained=False)),
        Row("broker SIGKILL, outbox drained", "mosquitto", "sqlite",
            one(harness.broker_killed, events, drained=True)),
        Row("broker restarted without the rules session", "mosquitto", "sqlite",
            one(harness.broker_restarted_without_session, events)),
        Row("rules SIGKILL mid-burst", "mosquitto", "sqlite", one(harness.rules_killed, events)),
        Row("rules SIGKILL mid-burst", "mosquitto", "postgresql", one(harness.rules_killed, events)),
        Row("drivers (generator) SIGKILL mid-burst", "mosquitto", "sqlite", one(harness.generator_killed, events)),
        Row("drivers part SIGKILL", "mosquitto", "sqlite", one(harness.killed_while_pressing, press_s=press_s)),
        Row("all-in-one SIGKILL", "embedded", "sqlite",
            lambda workdir, broker, db_url: [harness.killed_while_pressing(workdir, None, db_url, press_s)]),
        Row("PostgreSQL backends terminated x1", "mosquitto", "postgresql",
            one(harness.postgres_terminated, events, 1)),
        Row("PostgreSQL backends terminated x2", "mosquitto", "postgresql",
            one(harness.postgres_terminated, events, 2)),
        Row("SQLite locked 40 s", "mosquitto", "sqlite",  # both brokers at once: an embedded one and this one
            lambda workdir, broker, db_url: harness.sqlite_locked(workdir, _real(broker))),
        Row("disk full", "mosquitto", "sqlite", disk_full),
        Row("poison events", "mosquitto", "sqlite", one(harness.poison)),
        Row("poison events", "mosquitto", "postgresql", one(harness.poison)),
        Row("poison events", "embedded", "sqlite",
            lambda workdir, broker, db_url: [harness.poison(workdir, None, db_url)]),
    ]


def _real(broker: MosquittoBroker | None) -> MosquittoBroker:
    assert broker is not None
    return broker


def disk_full(workdir: Path, broker: MosquittoBroker | None, db_url: str) -> list[Outcome]:
    with harness.small_disk(workdir / "small") as disk:
        return [harness.disk_full(workdir, disk, _real(broker))]


# -- what each row gets: a folder, a broker, a database -------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A SQLite file in `workdir`, or a new PostgreSQL database (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'records.db'}"
        return
    name = f"cgw_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def mosquitto(kind: str, workdir: Path) -> Iterator[MosquittoBroker | None]:
    if kind != "mosquitto":
        yield None
        return
    broker = start_mosquitto(workdir)
    if broker is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    try:
        yield broker
    finally:
        broker.stop()


def run_row(row: Row) -> list[Outcome]:
    print(f"{row.name} ({row.broker}, {row.db}) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="campusgw-faults-") as tmp:
        workdir = Path(tmp)
        try:
            with mosquitto(row.broker, workdir) as broker, database(row.db, workdir) as db_url:
                return row.run(workdir / "site", broker, db_url)
        except Exception as exc:  # one row failing to set up must not end the bench
            traceback.print_exc()
            return [Outcome(row.name, row.broker, row.db, 0, 0, 0, None, [f"{type(exc).__name__}: {exc}"])]


# -- ingest rate with end-to-end confirmation ----------------------------------------------------------


@dataclass
class Rate:
    name: str
    events: int
    recorded_s: float | None
    confirmed_s: float | None
    lost: int

    @property
    def per_s(self) -> float:
        return self.events / self.recorded_s if self.recorded_s else 0.0


def ingest(name: str, events: int, db_kind: str, apart: bool) -> Rate:
    """`events` telemetry events put as fast as possible; seconds until recorded, and until all confirmed."""
    print(f"ingest: {name} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="campusgw-faults-") as tmp, \
            mosquitto("mosquitto", Path(tmp)) as broker, database(db_kind, Path(tmp)) as db_url:
        site = harness.Site(Path(tmp) / "site", harness.mosquitto_url(_real(broker)), db_url)
        records = harness.Records(db_url)
        with contextlib.ExitStack() as stack:
            stack.callback(records.close)
            if apart:
                rules = stack.enter_context(harness.Part(site, "rules"))
                harness.wait_rules_ready(site, records, rules)
            generator = harness.Generator(site.config(), ("drivers",) if apart else ("drivers", "rules"))
            stack.callback(generator.close)
            wait_for(generator.connected, 30, "the generator's outbox connected")
            started = time.monotonic()
            generator.put(events, telemetry=True)
            recorded = since(started, lambda: records.count() >= events and records.all_found(generator.ids))
            confirmed = since(started, generator.drained)
            lost = events - len(records.found(generator.ids))
    return Rate(name, events, recorded, confirmed, lost)


def since(started: float, condition: Callable[[], object]) -> float | None:
    """Seconds from `started` (monotonic) until `condition` holds; None if it does not in RECOVERY_S."""
    return None if harness.time_until(condition) is None else time.monotonic() - started


# -- the soak ------------------------------------------------------------------------------------------


def soak(minutes: float) -> tuple[Outcome, list[tuple[float, float, int]]]:
    """The all-in-one gateway pressed at SOAK_RATE for `minutes`: the presses' outcome, and (minute, RSS MiB,
    open descriptors) sampled every SAMPLE_S."""
    print(f"soak: {minutes:g} minutes ...", file=sys.stderr, flush=True)
    samples: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="campusgw-faults-") as tmp, contextlib.ExitStack() as stack:
        sim = harness.button_sim()
        stack.callback(sim.stop)
        site = harness.Site(Path(tmp), "embedded", f"sqlite:///{Path(tmp) / 'records.db'}",
                            devices=[harness.button_box(sim)])
        records = harness.Records(site.db_url)
        stack.callback(records.close)
        gateway = stack.enter_context(harness.Part(site))
        wait_for(harness.module_online(gateway, records), 30, "the module online in the records")
        presser = stack.enter_context(harness.Presser(sim, SOAK_RATE))
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            gateway.running()
            samples.append(((time.monotonic() - started) / 60, rss_mib(gateway.pid),
                            len(os.listdir(f"/proc/{gateway.pid}/fd"))))
            time.sleep(SAMPLE_S)  # the sampling period
        presser.stop()
        recovery = harness.time_until(harness.all_pressed_recorded(records, presser.counts), 30)
        outcome = harness.press_outcome(f"soak {minutes:g} min", site, presser.counts(), records, recovery)
    return outcome, samples


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


# -- report --------------------------------------------------------------------------------------------


def print_outcomes(outcomes: list[Outcome], events: int) -> None:
    print(f"\nfaults: bursts of {events} alarm events through the drivers' outbox, or buttons pressed on a latching "
          f"Modbus module (presses); {os.cpu_count()} cores")
    print(f"{'fault':44}{'broker':>10}{'db':>12}{'generated':>11}{'recorded':>10}{'duplicates':>12}{'recovery s':>12}")
    for o in outcomes:
        recovery = f"{o.recovery_s:12.1f}" if o.recovery_s is not None else f"{'never':>12}"
        print(f"{o.fault:44}{o.broker:>10}{o.db:>12}{o.generated:11d}{o.recorded:10d}{o.duplicates:12d}{recovery}")
    for o in outcomes:
        for line in o.notes + [f"PROBLEM: {p}" for p in o.problems]:
            print(f"  {o.fault} ({o.broker}, {o.db}): {line}")


def print_rates(rates: list[Rate]) -> None:
    print("\ningest with end-to-end confirmation: telemetry events, put_many(100) as fast as possible, Mosquitto")
    print(f"{'run':40}{'events':>8}{'events/s':>10}{'recorded s':>12}{'confirmed s':>13}{'lost':>6}")
    for r in rates:
        recorded = f"{r.recorded_s:12.2f}" if r.recorded_s is not None else f"{'never':>12}"
        confirmed = f"{r.confirmed_s:13.2f}" if r.confirmed_s is not None else f"{'never':>13}"
        print(f"{r.name:40}{r.events:8d}{r.per_s:10.0f}{recorded}{confirmed}{r.lost:6d}")


def print_soak(outcome: Outcome, samples: list[tuple[float, float, int]]) -> None:
    rss = [(m, r) for m, r, _ in samples]
    fds = [f for _, _, f in samples]
    print(f"\nsoak: all-in-one gateway (embedded broker, SQLite), {SOAK_RATE:g} presses/s, sampled every "
          f"{SAMPLE_S:g} s")
    print(f"  {outcome.summary()}")
    if samples:
        print(f"  RSS {rss[0][1]:.1f} -> {rss[-1][1]:.1f} MiB (max {max(r for _, r in rss):.1f}), "
              f"slope {slope(rss):+.2f} MiB/min; open descriptors {fds[0]} -> {fds[-1]} (max {max(fds)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per burst and for the ingest rate")
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="0: no soak")
    parser.add_argument("--press-s", type=float, default=5.0, help="seconds of presses before and after a kill")
    parser.add_argument("--only", default="", help="only the rows whose name contains this")
    args = parser.parse_args(argv)
    harness.RECOVERY_S = max(harness.RECOVERY_S, args.events / 100)  # a 20,000 burst may take minutes to resend

    outcomes = [o for row in matrix(args.events, args.press_s) if args.only in row.name for o in run_row(row)]
    rates = [ingest(f"rules apart, {db}", args.events, db, apart=True) for db in ("sqlite", "postgresql")
             if args.only in "ingest"]
    rates += [ingest(f"all in one process, {db}", args.events, db, apart=False) for db in ("sqlite", "postgresql")
              if args.only in "ingest"]
    soaked = soak(args.soak_minutes) if args.soak_minutes and args.only in "soak" else None

    if outcomes:
        print_outcomes(outcomes, args.events)
    if rates:
        print_rates(rates)
    if soaked:
        print_soak(*soaked)
    failed = [o for o in outcomes + ([soaked[0]] if soaked else []) if not o.ok] + [r for r in rates if r.lost]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
