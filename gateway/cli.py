"""`campusgw`: check-config, db upgrade, user, people import, run, demo, sim, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from gateway.broker import BrokerPortTaken
from gateway.config import ConfigError
from gateway.config_file import load_config, summary, warnings_of
from gateway.logs import setup_logging

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"
log = logging.getLogger("campusgw")


# Reader simulators have a command line of their own (card / keys / tamper / unplug typed on stdin).
READER_SIMULATORS = {"osdp-reader": "simulators.osdp_reader", "serial-reader": "simulators.serial_reader"}


def main(argv: list[str] | None = None) -> int:
    # Whatever the gateway writes (records, outbox, secrets, backups, reports) holds personal data and
    # tokens: readable by its own user only (the systemd unit says UMask=0077 too).
    os.umask(0o077)
    args_in = list(sys.argv[1:] if argv is None else argv)
    if len(args_in) >= 2 and args_in[0] in ("simulate", "sim") and args_in[1] in READER_SIMULATORS:
        from importlib import import_module

        run: Any = import_module(READER_SIMULATORS[args_in[1]]).main
        return int(run(args_in[2:]))
    parser = argparse.ArgumentParser(prog="campusgw", description="Campus safety gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a site config and print a summary")
    p.add_argument("file", type=Path)

    p = sub.add_parser("status", help="is the site healthy: broker, database, outbox, devices, clock")
    p.add_argument("-c", "--config", type=Path, required=True)

    p = sub.add_parser("backup", help="a consistent copy of the records and the outbox, while running")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--to", type=Path, required=True, help="a new folder for the backup")

    p = sub.add_parser("restore", help="put a backup back (stop the gateway first)")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--from", dest="source", type=Path, required=True)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade", "current"])
    p.add_argument("-c", "--config", type=Path, required=True)

    p = sub.add_parser("user", help="console users: add, passwd, list, token, revoke (tokens), disable, enable")
    p.add_argument("action", choices=["add", "passwd", "list", "token", "revoke", "disable", "enable"])
    p.add_argument("username", nargs="?")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--role", choices=["inspector", "guard", "supervisor", "admin"], default="guard")
    p.add_argument("--name", help="display name (add), or the token's name (token; revoke: only that token)")
    p.add_argument("--language", choices=["zh_CN", "en"])
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    p = sub.add_parser("people", help="students and staff, or the students' parents and guardians: import from CSV")
    p.add_argument("action", choices=["import", "import-guardians"])
    p.add_argument("file", type=Path, help="CSV with a header: kind (student|staff), external_id, name, group, card; "
                   "for guardians: student, name, relation, phone, may_collect")
    p.add_argument("-c", "--config", type=Path, required=True)

    p = sub.add_parser("report", help="the daily duty log, a monthly or a term report, or the protection survey "
                       "form (survey: from the site config) as PDF, CSV and XLSX")
    p.add_argument("kind", choices=["daily", "monthly", "term", "survey"])
    p.add_argument("--date", help="YYYY-MM-DD (site time): the day, a day of the month, or the term's first day "
                   "(default: today)")
    p.add_argument("--to", help="term reports: the term's last day, YYYY-MM-DD")
    p.add_argument("--format", default="pdf,csv,xlsx", help="comma-separated: pdf, csv, xlsx")
    p.add_argument("--language", choices=["zh_CN", "en"], help="default: the console's language")
    p.add_argument("-o", "--out", type=Path, default=Path("reports"))
    p.add_argument("-c", "--config", type=Path, required=True)

    p = sub.add_parser("run", help="run the gateway for a site")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--only", choices=["drivers", "rules", "console"], help="run one part only")

    p = sub.add_parser("demo", help="run a whole simulated school (every device kind, its people and a school "
                       "day played on the site's clock), or --school small: one alarm box")
    p.add_argument("--school", choices=["large", "small"], default="large",
                   help="large (default): the whole school; small: one simulated alarm box, pressed now and then")
    p.add_argument("--scenario", default="school_day", help="what happens during the day (gateway/demo/scenarios)")
    p.add_argument("--speed", type=float, default=60.0, help="how much faster than real time the school's day "
                   "runs (default 60: an hour a minute; 1: real time)")
    p.add_argument("--data-dir", type=Path, default=Path("data/demo"), help="the demo's records (emptied at "
                   "every start of the large school)")
    p.add_argument("--console-port", type=int, default=8080, help="0 picks a free port (default 8080, "
                   "or a free one if 8080 is taken)")
    p.add_argument("--press-every", type=float, default=20.0, help="small: seconds between button presses")
    p.add_argument("--config", type=Path, default=REPO_CONFIG / "demo.yaml", help="small: the site config")

    p = sub.add_parser("simulate", aliases=["sim"], help="run a device simulator on its own (wiring, config, "
                       "third-party tools such as mbpoll); osdp-reader and serial-reader take --help of their own")
    p.add_argument("device", choices=["modbus-di", "bollard", "camera", *READER_SIMULATORS])
    p.add_argument("--port", type=int, help="TCP port (default 5020, camera 8081; 0: a free one)")
    p.add_argument("--rtu", action="store_true", help="modbus-di: Modbus RTU on a new pty pair instead of TCP")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--units", default="1", help="modbus-di: unit ids on the line, e.g. 1,2,3")
    p.add_argument("--latch-address", type=int, help="modbus-di: latch inputs, readable from this address")
    p.add_argument("--press-every", type=float, default=0, help="modbus-di: press input 1 every N s (0: never)")
    p.add_argument("--travel-s", type=float, default=2.0, help="bollard: travel time")
    p.add_argument("--fps", type=float, default=10.0, help="camera: frames a second")
    p.add_argument("--script", choices=["walk", "loiter", "cover", "none"], default="none",
                   help="camera: walk = a person walks through every 30 s, loiter = one stands 60 s every 2 min, "
                   "cover = the lens covered 20 s every minute")

    from gateway.district.cli import add_arguments as add_district
    from gateway.doctor import add_arguments as add_doctor

    add_doctor(sub)
    add_district(sub)

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.file)
        if args.command in ("backup", "restore"):
            from gateway.backup import BackupError
            from gateway.backup import backup as take_backup
            from gateway.backup import restore as put_back

            config = load_config(args.config)
            try:
                if args.command == "backup":
                    manifest = take_backup(config, args.to)
                    print(f"backup of '{config.site.id}' in {args.to}: {', '.join(manifest['files'])}")  # type: ignore[arg-type]
                else:
                    print("restored: " + ", ".join(put_back(config, args.source)))
            except (BackupError, FileExistsError, FileNotFoundError) as exc:
                print(f"campusgw {args.command}: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "status":
            return status(args.config)
        if args.command == "db":
            return db_command(args.action, args.config)
        if args.command == "user":
            return user_command(args)
        if args.command == "people":
            if args.action == "import-guardians":
                return guardians_command(args.file, args.config)
            return people_command(args.file, args.config)
        if args.command == "report":
            return report_command(args)
        if args.command == "run":
            config = load_config(args.config)
            setup_logging(config.gateway.log_level, config.gateway.log_format, config.site.timezone)
            parts = (args.only,) if args.only else ("drivers", "rules", "console")
            from gateway.app import serve

            return serve(config, parts)
        if args.command == "demo":
            from gateway.demo import demo

            return demo(args)
        if args.command in ("simulate", "sim"):
            return simulate(args)
        if args.command == "doctor":
            from gateway.doctor import command as doctor

            return doctor(args)
        if args.command == "district":
            from gateway.district.cli import command as district

            return district(args)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except BrokerPortTaken as exc:
        print(exc, file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"the database cannot be reached: {exc.orig} (check database.url / database.url_env, and that "
              "the server is running)", file=sys.stderr)
        return 2
    return 1


def check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    for warning in warnings_of(config):
        print(f"  warning: {warning}")
    print(summary(config))
    return 0


def status(path: Path) -> int:
    """What an IT person checks first (gateway.health); exit 1 when something needs attention."""
    from gateway.health import status_rows

    rows = status_rows(load_config(path))
    width = max(len(name) for name, _, _ in rows)
    for name, ok, text in rows:
        print(f"{name:<{width}}  {'ok     ' if ok else 'PROBLEM'}  {text}")
    return 0 if all(ok for _, ok, _ in rows) else 1


def db_command(action: str, path: Path) -> int:
    from gateway.records import db

    config = load_config(path)
    engine = db.make_engine(config.database_url())
    if action == "upgrade":
        db.upgrade(engine)
    print(f"database at revision {db.current_revision(engine)}")
    return 0


def user_command(args: argparse.Namespace) -> int:
    import getpass

    from gateway.console import auth
    from gateway.records import db, store
    from gateway.records.models import User, utcnow

    config = load_config(args.config)
    engine = db.make_engine(config.database_url())
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    if args.action == "list":
        from sqlalchemy import select

        with sessions() as session:
            for user in session.scalars(select(User).order_by(User.username)):
                state = "disabled" if user.disabled else ("locked" if user.locked_until and
                                                          user.locked_until > utcnow() else "active")
                print(f"{user.username:<20} {user.role:<11} {state:<8} {user.display_name}")
        return 0
    if not args.username:
        print(f"campusgw user {args.action}: give a user name", file=sys.stderr)
        return 2

    def new_password() -> tuple[str, bool]:
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n"), False
        if sys.stdin.isatty():
            first = getpass.getpass(f"New password for {args.username}: ")
            if first != getpass.getpass("Again: "):
                raise auth.AuthError("the two passwords differ")
            return first, False
        return auth.generate_password(), True

    try:
        with sessions.begin() as session:
            if args.action == "token":
                secret = auth.add_token(session, args.username, args.name or "api", utcnow())
                store.audit(session, "cli", "token.add", f"user:{args.username}", "ok", {"name": args.name}, utcnow())
                until = (utcnow() + auth.TOKEN_LIFETIME).date().isoformat()
                print(f"API token for {args.username} (shown once, valid until {until}; send as "
                      f"'Authorization: Bearer ...'):\n{secret}")
                return 0
            if args.action == "revoke":
                count = auth.revoke_tokens(session, args.username, args.name)
                store.audit(session, "cli", "token.revoke", f"user:{args.username}", "ok",
                            {"name": args.name, "count": count}, utcnow())
                print(f"user {args.username}: {count} API token(s) revoked")
                return 0
            if args.action in ("disable", "enable"):
                auth.set_disabled(session, args.username, args.action == "disable")
                store.audit(session, "cli", f"user.{args.action}", f"user:{args.username}", "ok", {}, utcnow())
                print(f"user {args.username}: {args.action}d" + (" (logged out everywhere)" if args.action == "disable"
                                                                 else ""))
                return 0
            password, generated = new_password()
            if args.action == "add":
                auth.add_user(session, args.username, args.role, password, display_name=args.name,
                              language=args.language)
                store.audit(session, "cli", "user.add", f"user:{args.username}", "ok", {"role": args.role}, utcnow())
            else:
                auth.set_password(session, args.username, password)
                store.audit(session, "cli", "user.passwd", f"user:{args.username}", "ok", {}, utcnow())
    except auth.AuthError as exc:
        print(f"campusgw user {args.action}: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.username}: {'added' if args.action == 'add' else 'password changed'}"
          + (f"; password (shown once): {password}" if generated else ""))
    return 0


def report_command(args: argparse.Namespace) -> int:
    """A report with a progress bar on stderr; the files' paths on stdout."""
    from datetime import date, datetime

    from gateway.clock import site_time
    from gateway.records import db
    from gateway.reports import STEPS, generate
    from gateway.reports.figures import period

    config = load_config(args.config)
    tz = config.site.tz
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in ("pdf", "csv", "xlsx")]
    try:
        day = date.fromisoformat(args.date) if args.date else datetime.fromtimestamp(site_time(), tz).date()
        last = date.fromisoformat(args.to) if args.to else None
    except ValueError as exc:
        print(f"campusgw report: {exc} (dates are YYYY-MM-DD)", file=sys.stderr)
        return 2
    if unknown or not formats:
        print(f"campusgw report: --format takes pdf, csv, xlsx (got {args.format})", file=sys.stderr)
        return 2
    if args.kind == "term" and last is None:
        print("campusgw report term: give the term's last day with --to YYYY-MM-DD", file=sys.stderr)
        return 2
    if args.kind == "survey":  # the site config's inventory, no records to read
        from gateway.reports.render import RENDERERS, file_name
        from gateway.reports.survey import survey

        report = survey(config, datetime.combine(day, datetime.min.time(), tz))
        args.out.mkdir(parents=True, exist_ok=True)
        language = args.language or config.console.language
        for fmt in formats:
            path = args.out / file_name(report, language, fmt)
            path.write_bytes(RENDERERS[fmt](report, language))
            print(path)
        return 0
    start, end = period(args.kind, datetime.combine(day, datetime.min.time(), tz), tz,
                        datetime.combine(last, datetime.min.time(), tz) if last else None)
    steps = [*STEPS[:-1], *(["duty"] if args.kind == "daily" else []), *formats]
    done: list[str] = []

    def progress(step: str) -> None:
        done.append(step)
        filled = round(30 * len(done) / len(steps))
        print(f"\r[{'#' * filled}{' ' * (30 - filled)}] {len(done)}/{len(steps)} {step:<10}", end="",
              file=sys.stderr, flush=True)

    engine = db.make_engine(config.database_url())
    try:
        files = generate(db.make_sessions(engine), args.kind, start, end, config.site.name, formats,
                         args.language or config.console.language, args.out, progress)
    finally:
        engine.dispose()
    print(file=sys.stderr)
    for path in files:
        print(path)
    return 0


def people_command(path: Path, config_path: Path) -> int:
    """Upsert students and staff from a CSV (UTF-8 or GB18030 as Excel saves it); a bad file imports nothing."""
    from gateway.records import db, people, store
    from gateway.records.models import utcnow

    config = load_config(config_path)
    try:
        text = people.decode_csv(path.read_bytes())
    except OSError as exc:
        print(f"campusgw people import: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"campusgw people import: {path} is not text in UTF-8 or GBK (save it from Excel as CSV)",
              file=sys.stderr)
        return 2
    engine = db.make_engine(config.database_url())
    db.upgrade(engine)
    with db.make_sessions(engine).begin() as session:
        result = people.import_people(session, text, utcnow())
        if result.ok:
            store.audit(session, "cli", "people.import", f"file:{path.name}", "ok",
                        {"created": result.created, "updated": result.updated, "cards": result.cards}, utcnow())
    engine.dispose()
    if not result.ok:
        print(f"{path}: {len(result.errors)} problem(s); nothing was imported", file=sys.stderr)
        for problem in result.errors:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: {result.created} added, {result.updated} updated, {result.unchanged} unchanged; "
          f"{result.cards} cards assigned")
    return 0


def guardians_command(path: Path, config_path: Path) -> int:
    """The students' parents and guardians, and who may collect them, from a CSV; a bad file imports nothing."""
    from gateway.personal import PersonalData
    from gateway.records import db, guardians, people
    from gateway.records.models import utcnow

    config = load_config(config_path)
    try:
        text = people.decode_csv(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        print(f"campusgw people import-guardians: {path}: {exc}", file=sys.stderr)
        return 2
    access = config.access
    personal = PersonalData.from_config(access.personal_data_key_env, access.personal_data_key_file,
                                        config.gateway.data_dir)
    engine = db.make_engine(config.database_url())
    db.upgrade(engine)
    with db.make_sessions(engine).begin() as session:
        result = guardians.import_guardians(session, personal, text, "cli", utcnow())
    engine.dispose()
    if result.errors:
        print(f"{path}: {len(result.errors)} problem(s); nothing was imported", file=sys.stderr)
        for problem in result.errors:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: {result.guardians} guardians of {result.students} students")
    return 0


def simulate(args: argparse.Namespace) -> int:
    """A simulator on its own, until Ctrl-C: for installers testing wiring and config, and for mbpoll."""
    setup_logging("info")
    closers: list[Any] = []
    press: Any = None
    if args.port is None:
        args.port = 8081 if args.device == "camera" else 5020
    if args.device == "camera":
        from simulators.camera import CameraSimulator

        camera = CameraSimulator(port=args.port, fps=args.fps)
        try:
            camera.start()
        except OSError as exc:
            print(f"campusgw simulate camera: cannot listen on port {args.port}: {exc.strerror} (--port 0 picks a "
                  "free one)", file=sys.stderr)
            return 2
        camera.run_script(args.script)
        print(f"camera simulator (MJPEG over HTTP, {camera.size[0]}x{camera.size[1]} at {args.fps:g} fps, script "
              f"{args.script}): {camera.url} (snapshot {camera.snapshot_url}). Ctrl-C stops.", flush=True)
        closers.append(camera.stop)
    elif args.device == "bollard":
        from simulators.bollard import BollardSimulator

        bollard = BollardSimulator(port=args.port, travel_s=args.travel_s)
        print(f"bollard PLC simulator (Modbus TCP, unit 1) on 127.0.0.1:{bollard.start()}; coils raise=0 lower=1 "
              "efo=2; inputs up=0 down=1 loops=2,3 fault=4 efo_active=5 fire=6. Ctrl-C stops.", flush=True)
        closers.append(bollard.stop)
    else:
        from simulators.modbus_di import ModbusDISimulator
        from simulators.pty_pair import PtyPair

        units = [int(u) for u in args.units.split(",")]
        if args.rtu:
            pair = PtyPair()
            closers.append(pair.close)
            sim = ModbusDISimulator(units=units, serial=pair.device_side, baudrate=args.baudrate,
                                    latch_address=args.latch_address)
            sim.start()
            where = f"Modbus RTU at {args.baudrate} baud: open {pair.driver_side} (connection: {{type: rtu, port: " \
                    f"{pair.driver_side}, baudrate: {args.baudrate}}})"
        else:
            sim = ModbusDISimulator(units=units, port=args.port, latch_address=args.latch_address)
            where = f"Modbus TCP on 127.0.0.1:{sim.start()}"
        closers.insert(0, sim.stop)
        latch = f", latch bits from address {args.latch_address}" if args.latch_address is not None else ""
        print(f"DI module simulator, units {units}, 16 inputs each{latch}: {where}. Ctrl-C stops.", flush=True)
        press = sim

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.press_every or None)
            if press is not None and args.press_every and not stop.is_set():
                press.press_for(1, 1.0)
                print("pressed input 1 for 1 s", flush=True)

    try:
        asyncio.run(go())
    finally:
        for close in closers:
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
