"""Report generation over a year of a busy school: time and peak memory of `campusgw report term`.

    python -m bench.report_year [--students 2000] [--days 365] [--database sqlite|postgresql|both]

simulators.school_year writes a year of records for a school of --students students and 150 staff: every school day
each person passes the gate in and out (about a million access-log rows, 1 % refused), 15 visitors, 0-3 alarms, 4
patrol rounds, now and then an incident and a hazard. Then `campusgw report term` runs as a child process for the
whole year, writing PDF, CSV and XLSX; the bench prints its wall time and its peak resident memory (ru_maxrss of
the child). PostgreSQL is the local server (127.0.0.1:5432, trust auth), in a database made and dropped here.
Target: <= 10 s and <= 500 MB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.records import db
from simulators.school_year import write_year
from tests.support import drop_postgres_database, new_postgres_database

TZ = ZoneInfo("Asia/Shanghai")
FIRST = date(2025, 9, 1)
CLI = "import sys; from gateway.cli import main; sys.exit(main())"  # `campusgw`, with this interpreter


def run(url: str, workdir: Path, args: argparse.Namespace) -> tuple[float, float, float, int]:
    engine = db.make_engine(url)
    db.upgrade(engine)
    started = time.perf_counter()
    totals = write_year(db.make_sessions(engine), FIRST, args.days, TZ, students=args.students)
    written = time.perf_counter() - started
    engine.dispose()
    site = workdir / "site.yaml"
    site.write_text(f"site: {{id: bench, name: 第一实验学校}}\ngateway: {{data_dir: {workdir}}}\n"
                    f"database: {{url: '{url}'}}\n")
    last = FIRST + timedelta(days=args.days - 1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "report", "term", "--date", FIRST.isoformat(), "--to",
                    last.isoformat(), "-c", str(site), "-o", str(workdir / "out")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return written, elapsed, max(peak, before) / 1024, totals.access


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args(argv)
    rows = []
    for kind in (["sqlite", "postgresql"] if args.database == "both" else [args.database]):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            url = f"sqlite:///{workdir / 'records.db'}" if kind == "sqlite" else new_postgres_database()
            try:
                rows.append((kind, *run(url, workdir, args)))
            finally:
                if kind == "postgresql":
                    drop_postgres_database(url)
    print(f"term report over {args.days} days, {args.students} students + 150 staff; PDF + CSV + XLSX")
    print(f"{'database':12}{'access rows':>13}{'data written, s':>17}{'report, s':>11}{'peak RSS, MB':>14}")
    for kind, written, elapsed, peak, access in rows:
        print(f"{kind:12}{access:>13,}{written:>17.1f}{elapsed:>11.2f}{peak:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
