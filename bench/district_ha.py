"""The district's PostgreSQL failing over under writes, run by hand.

    python -m bench.district_ha [--members 3] [--writers 2] [--batch 50] [--rate 10] [--before 10] [--after 15]
                                [--kills 1] [--rejoin] [--ttl 10 --loop-wait 1 --retry-timeout 4] [--no-strict]
                                [--keep-bouncer] [--order primary-last|primary-first] [--no-callback]
                                [--no-fsync]

tests/district/ha.py on this machine: one etcd, `--members` Patroni members (synchronous mode, strict unless
`--no-strict`), a pgbouncer in front of each. `--writers` writers (each as a district worker writes: one batch of
`--batch` events in one transaction through `store.write`, on the worker's engine with the libpq multi-host URL
through every pgbouncer, `target_session_attrs=read-write`, `pool_pre_ping`), each `--rate` batches a second on a
schedule. After `--before` seconds the primary's server is SIGKILLed (its Patroni, PostgreSQL and, unless
`--keep-bouncer`, pgbouncer); `--order` lists the primary's pgbouncer last in the URL (each new connection
is refused by the standbys' first) or first (libpq reaches the dead server's first after the kill); the
writers go on `--after` seconds after the first commit on the new primary. `--no-callback` runs the members
without docs/district-ha/pgbouncer-role, to see what it is for.
`--rejoin` starts the killed server again and waits until it streams as a standby; `--kills N` does it all N
times (each kill after the rejoin; --rejoin implied).

Figures:
  failover      the kill -> Patroni's new primary answering /primary; the kill -> the first commit after it
                (what the district sees: a worker's writes fail meanwhile and its batches come again)
  lost          ids of batches whose commit returned that are not on the primary at the end (must be 0)
  twice         rows on the primary more than once (must be 0)
  latency       each batch from its time in the schedule to its commit (so batches due while the database was
                away count their wait): p50/p95/p99/max, for the whole run and for the batches committed before
                the first kill (steady state, synchronous replication)
  rejoin        the killed server started again -> streaming as a standby with no lag
"""

from __future__ import annotations

import argparse
import sys
import time

from sqlalchemy import create_engine, func, select

from bench.common import latency_stats
from gateway.district import store
from tests.district.ha import PatroniCluster, Writer, district_engine, missing_tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.district_ha", description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, choices=[2, 3], default=3)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="events a batch (a worker's fetch)")
    parser.add_argument("--rate", type=float, default=10.0, help="batches a second, each writer")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of writes before the kill")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of writes after the failover")
    parser.add_argument("--kills", type=int, default=1)
    parser.add_argument("--rejoin", action="store_true", help="start the killed server again")
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--loop-wait", type=int, default=1)
    parser.add_argument("--retry-timeout", type=int, default=4)
    parser.add_argument("--no-strict", action="store_true", help="synchronous_mode_strict off")
    parser.add_argument("--keep-bouncer", action="store_true", help="kill the primary's Patroni and PostgreSQL "
                        "only: its pgbouncer stays up")
    parser.add_argument("--order", choices=["primary-last", "primary-first"], default="primary-last",
                        help="where the first primary's pgbouncer is in the URL's hosts")
    parser.add_argument("--no-callback", action="store_true", help="without the pgbouncer-role callback")
    parser.add_argument("--no-fsync", action="store_true", help="fsync off in PostgreSQL (faster, not for real)")
    args = parser.parse_args(argv)
    reason = missing_tools()
    if reason:
        print(f"bench.district_ha: {reason}", file=sys.stderr)
        return 2
    if args.members == 2 and not args.no_strict:
        print("bench.district_ha: two members need --no-strict (strict, the one left would hold every commit)",
              file=sys.stderr)
        return 2
    rejoin = args.rejoin or args.kills > 1
    ha = PatroniCluster(args.members, ttl=args.ttl, loop_wait=args.loop_wait, retry_timeout=args.retry_timeout,
                        strict=not args.no_strict, fsync=not args.no_fsync, callback=not args.no_callback)
    writers: list[Writer] = []
    try:
        began = time.monotonic()
        ha.start()
        print(f"{args.members} members up in {time.monotonic() - began:.1f} s: {ha.describe()}", file=sys.stderr)
        primary = ha.primary()
        assert primary is not None
        others = [m.name for m in ha.members if m.name != primary]
        url = ha.url(order=[*others, primary] if args.order == "primary-last" else [primary, *others])
        engine = district_engine(url)  # the tables, as a worker makes them at its start
        store.create_schema(engine)
        engine.dispose()
        writers = [Writer(url, batch=args.batch, rate=args.rate, site=f"writer-{n + 1}")
                   for n in range(args.writers)]
        for writer in writers:
            writer.start()
        time.sleep(args.before)
        first_kill = time.monotonic()
        rows = []
        for k in range(args.kills):
            old = ha.kill_primary(with_bouncer=not args.keep_bouncer)
            killed = time.monotonic()
            new = ha.wait_for_new_primary(old, 120)
            promoted = time.monotonic()
            while not all(w.recovered_after(killed) for w in writers):
                if time.monotonic() - killed > 120:
                    seen = {e: n for w in writers for e, n in w.errors.items()}
                    raise AssertionError(f"no commit 120 s after the kill: {ha.describe()}; the writers' errors: "
                                         f"{seen}")
                time.sleep(0.01)
            firsts = [w.recovered_after(killed) or 0.0 for w in writers]
            line = (f"kill {k + 1}: {old} killed; {new} primary after {promoted - killed:.1f} s (Patroni); first "
                    f"commit after {min(firsts) - killed:.1f} s, every writer's after {max(firsts) - killed:.1f} s")
            if rejoin:
                back = time.monotonic()
                ha.restart(old)
                deadline = back + 120
                while not ha.caught_up(old):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{old} not back as a standby: {ha.describe()}")
                    time.sleep(0.05)
                line += f"; {old} streaming again {time.monotonic() - back:.1f} s after its restart"
            rows.append(line)
            print(line, file=sys.stderr)
        time.sleep(args.after)
        for writer in writers:
            writer.close()

        final = ha.primary()
        assert final is not None
        engine = create_engine(ha.direct_url(final).replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            ids = set(conn.scalars(select(store.events.c.id)))
            total = conn.scalar(select(func.count()).select_from(store.events))
        engine.dispose()
        acknowledged = set().union(*(w.acknowledged for w in writers))
        lost = len(acknowledged - ids)
        twice = (total or 0) - len(ids)
        latencies = [latency * 1000 for w in writers for _, _, latency in w.commits]
        steady = [latency * 1000 for w in writers for _, at, latency in w.commits if at < first_kill]
        failures = sum(len(w.failures) for w in writers)
        errors: dict[str, int] = {}
        for w in writers:
            for reason_, n in w.errors.items():
                errors[reason_] = errors.get(reason_, 0) + n
        mode = "strict" if not args.no_strict else "not strict"
        print(f"\n{args.members} members, synchronous mode {mode}, ttl {args.ttl} loop_wait {args.loop_wait} "
              f"retry_timeout {args.retry_timeout}; {args.writers} writers x {args.rate:g} batches/s x "
              f"{args.batch} events; fsync {'off' if args.no_fsync else 'on'}; the primary's pgbouncer "
              f"{'kept' if args.keep_bouncer else 'killed too'}, listed {args.order.split('-')[1]}"
              f"{'; no pgbouncer-role callback' if args.no_callback else ''}")
        for line in rows:
            print(line)
        print(f"acknowledged {len(acknowledged)} events in {sum(len(w.commits) for w in writers)} batches; "
              f"lost {lost}; twice {twice}; failed attempts {failures}")
        print(f"{'latency, ms':28}{'n':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
        print(f"{'whole run (through failover)':28}{len(latencies):7d}{latency_stats(latencies)}")
        print(f"{'committed before the kill':28}{len(steady):7d}{latency_stats(steady)}")
        for reason_, n in sorted(errors.items(), key=lambda e: -e[1])[:6]:
            print(f"  {n:5d} x {reason_}")
        return 0 if lost == 0 and twice == 0 else 1
    finally:
        for writer in writers:
            writer.stop.set()
        ha.stop()
        left = ha.processes()
        if left:
            print(f"left running: {left}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
