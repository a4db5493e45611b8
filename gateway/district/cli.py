"""`campusgw district ...`: the school's bridge section, the district's workers, its console and its users."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, SecretRef


def add_arguments(sub: Any) -> None:
    p = sub.add_parser("district", help="the district centre: a school's bridge up to it, the district's workers")
    what = p.add_subparsers(dest="district_command", required=True)
    b = what.add_parser("bridge", help="print the Mosquitto bridge section for this site (its own topics only), "
                        "e.g. > /etc/mosquitto/conf.d/district.conf")
    b.add_argument("-c", "--config", type=Path, required=True, help="the school's site config, with a district: "
                   "section")
    i = what.add_parser("init", help="make the district's tables and the consumer the workers share; run it "
                        "once before any school is bridged (the cluster keeps nothing nobody consumes)")
    i.add_argument("-c", "--config", type=Path, required=True, help="district.yaml")
    w = what.add_parser("worker", help="run a district worker: the schools' events from the NATS cluster into "
                        "PostgreSQL (run several; they share the work)")
    w.add_argument("-c", "--config", type=Path, required=True, help="district.yaml")
    c = what.add_parser("console", help="serve the district's console: every school worst first, live (host and "
                        "port from district.yaml's console: section, default 127.0.0.1:8090)")
    c.add_argument("-c", "--config", type=Path, required=True, help="district.yaml")
    r = what.add_parser("report", help="the month's safety summary across the schools (a row per school: alarms, "
                        "incidents, reports late or missing, events, its monthly report) as PDF, XLSX or CSV")
    r.add_argument("--month", help="YYYY-MM in the district's time zone (default: last month)")
    r.add_argument("--format", choices=["pdf", "xlsx", "csv"], default="pdf")
    r.add_argument("--language", choices=["zh_CN", "en"], help="default: the console's (district.yaml)")
    r.add_argument("-o", "--out", type=Path, help="the file to write (default: its readable name, here)")
    r.add_argument("-c", "--config", type=Path, required=True, help="district.yaml")
    u = what.add_parser("user", help="the district console's users: add, passwd, list, disable, enable")
    u.add_argument("action", choices=["add", "passwd", "list", "disable", "enable"])
    u.add_argument("username", nargs="?")
    u.add_argument("-c", "--config", type=Path, required=True, help="district.yaml")
    u.add_argument("--role", help="duty_officer, police_liaison or inspector (read-only, every page it opens "
                   "audited)")
    u.add_argument("--name", help="the name shown (default: the user name)")
    u.add_argument("--language", choices=["zh_CN", "en"])
    u.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable "
                   "instead of a prompt")


def command(args: argparse.Namespace) -> int:
    if args.district_command == "bridge":
        return bridge(args.config)
    if args.district_command == "console":
        return console(args.config)
    if args.district_command == "user":
        return user(args)
    if args.district_command == "report":
        return report(args)
    if args.district_command == "init":
        console_tables(args.config)
    return worker(args.config, init_only=args.district_command == "init")


def _engine(path: Path) -> Any:
    from sqlalchemy import create_engine

    from gateway.district.config import load_district_config

    return create_engine(load_district_config(path).database.resolved(), pool_pre_ping=True)


def console_tables(path: Path) -> None:
    """The console's users, sessions and audit tables (`district init` makes them with the records' tables)."""
    from gateway.district.console import users

    engine = _engine(path)
    try:
        users.create_tables(engine)
    finally:
        engine.dispose()


def console(path: Path) -> int:
    """Serve the district console until SIGINT or SIGTERM (uvicorn handles both)."""
    import uvicorn
    from sqlalchemy import create_engine

    from gateway.district import store
    from gateway.district.config import load_district_config
    from gateway.district.console import users
    from gateway.district.console.app import create_app

    config = load_district_config(path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = create_engine(config.database.resolved(), pool_pre_ping=True)
    store.create_schema(engine)  # the console opens on an empty district too, before any worker ran
    users.create_tables(engine)
    with engine.connect() as conn:
        if not users.list_users(conn):
            print(f"no district console user yet: campusgw district user add NAME --role duty_officer -c {path}",
                  file=sys.stderr)
    c = config.console
    app = create_app(config.district.id, config.district.name, config.district.tz, engine, c.language,
                     c.secure_cookies)
    print(f"district console on http://{c.host}:{c.port}/", file=sys.stderr)
    try:
        uvicorn.run(app, host=c.host, port=c.port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=2,
                    # the school console's protections: headers in 10 s (slowloris), 16 KiB of headers at most
                    http="gateway.console.server:HeaderDeadlineProtocol", timeout_keep_alive=5,
                    limit_concurrency=1000, h11_max_incomplete_event_size=16 * 1024,
                    proxy_headers="FORWARDED_ALLOW_IPS" in os.environ)
    finally:
        engine.dispose()
    return 0


def report(args: argparse.Namespace) -> int:
    """The month's summary across the schools into a file; its path on stdout. Audited as `cli`."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine

    from gateway.district import summary
    from gateway.district.config import load_district_config
    from gateway.district.console import users
    from gateway.reports.render import RENDERERS, file_name

    config = load_district_config(args.config)
    tz, now = config.district.tz, datetime.now(UTC)
    try:
        month = summary.parse_month(args.month) if args.month else summary.last_month(now, tz)
    except ValueError as exc:
        print(f"campusgw district report: {exc}", file=sys.stderr)
        return 2
    language = args.language or config.console.language
    engine = create_engine(config.database.resolved(), pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            made = summary.collect(conn, month, tz, config.district.name, now)
        body = RENDERERS[args.format](made, language)
        out: Path = args.out or Path(file_name(made, language, args.format))
        try:
            out.write_bytes(body)
        except OSError as exc:
            print(f"campusgw district report: cannot write {out}: {exc.strerror}", file=sys.stderr)
            return 1
        users.create_tables(engine)
        with engine.begin() as conn:
            users.audit(conn, "cli", "summary.download", f"summary:{month.strftime('%Y-%m')}", "ok",
                        {"format": args.format, "language": language, "file": str(out)}, now)
    finally:
        engine.dispose()
    print(out)
    return 0


def user(args: argparse.Namespace) -> int:
    """Add, list, disable and enable the console's users, and set a password; each change audited as `cli`."""
    import getpass
    from datetime import UTC, datetime

    from gateway.console.auth import AuthError, generate_password
    from gateway.district.console import users

    engine = _engine(args.config)
    users.create_tables(engine)
    now = datetime.now(UTC)
    try:
        if args.action == "list":
            with engine.connect() as conn:
                for u in users.list_users(conn):
                    print(f"{u['username']:<20} {u['role']:<15} {'disabled' if u['disabled'] else 'active':<8} "
                          f"{u['display_name']}")
            return 0
        if not args.username:
            print(f"campusgw district user {args.action}: give a user name", file=sys.stderr)
            return 2
        if args.action == "add" and not args.role:
            print("campusgw district user add: give --role (duty_officer, police_liaison or inspector)",
                  file=sys.stderr)
            return 2
        password, generated = "", False
        if args.action in ("add", "passwd"):
            if args.password_env:
                if args.password_env not in os.environ:
                    print(f"campusgw district user {args.action}: the environment variable {args.password_env} is "
                          "not set", file=sys.stderr)
                    return 2
                password = os.environ[args.password_env]
            elif sys.stdin.isatty():
                password = getpass.getpass(f"New password for {args.username}: ")
                if password != getpass.getpass("Again: "):
                    print(f"campusgw district user {args.action}: the two passwords differ", file=sys.stderr)
                    return 1
            else:
                password, generated = generate_password(), True
        with engine.begin() as conn:
            if args.action == "add":
                users.add_user(conn, args.username, args.role, password, now, display_name=args.name,
                               language=args.language)
                detail = {"role": args.role}
            elif args.action == "passwd":
                users.set_password(conn, args.username, password)
                detail = {}
            else:
                users.set_disabled(conn, args.username, args.action == "disable")
                detail = {}
            users.audit(conn, "cli", f"user.{args.action}", f"user:{args.username}", "ok", detail, now)
    except AuthError as exc:
        print(f"campusgw district user {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    done = {"add": "added", "passwd": "password changed", "disable": "disabled (logged out everywhere)",
            "enable": "enabled"}[args.action]
    print(f"district user {args.username}: {done}" + (f"; password (shown once): {password}" if generated else ""))
    return 0


def bridge(path: Path) -> int:
    from gateway.config_file import load_config
    from gateway.district.bridge import BridgeSettings, bridge_section

    config = load_config(path)
    link = config.district
    if link is None:
        raise ConfigError([f"{path}: district: is not set: add its addresses (host:port of each node's MQTT "
                           "listener), and the credentials the district gave this school"])
    password = SecretRef(env=link.password_env, file=link.password_file).resolve()
    print(bridge_section(BridgeSettings(config.site.id, config.gateway.id, list(link.addresses),
                                        username=link.username or config.site.id, password=password,
                                        cafile=str(link.cafile) if link.cafile else None,
                                        police_evidence=bool(config.police and config.police.evidence
                                                             and config.police.evidence.topic))), end="")
    return 0


def worker(path: Path, init_only: bool = False) -> int:
    from sqlalchemy import create_engine

    from gateway.district.config import load_district_config
    from gateway.district.worker import DistrictWorker, WorkerSettings

    config = load_district_config(path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = create_engine(config.database.resolved(), pool_pre_ping=True)
    w = config.worker
    settings = WorkerSettings(list(config.nats.servers), durable=w.durable, alarms_durable=w.alarms_durable,
                              state_durable=w.state_durable, reports_durable=w.reports_durable,
                              mqtt=list(config.nats.mqtt), batch=w.batch, fetch_timeout_s=w.fetch_timeout_s,
                              ack_wait_s=w.ack_wait_s,
                              user=config.nats.username, password=config.nats.password(),
                              retention_months=config.retention_months)
    runner = DistrictWorker(settings, engine)

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if init_only:
            return await runner.init(stop)
        await runner.run(stop)
        return True

    try:
        done = asyncio.run(main())
        if init_only:
            print(f"district tables and consumers {w.durable}, {w.alarms_durable}, {w.state_durable}, "
                  f"{w.reports_durable} "
                  f"{'ready' if done else 'not made (stopped)'}")
            for warning in runner.warnings:
                print(f"warning: {warning}: a lost node stops the district until it is back; set "
                      "mqtt { stream_replicas: 3 } on every node (README, the district centre)", file=sys.stderr)
            return 0 if done else 1
    finally:
        engine.dispose()
        s = runner.stats
        if not init_only:
            print(f"district worker stopped: {s.stored} stored, {s.duplicates} duplicates, {s.rejected} rejected, "
                  f"{s.failed_writes} failed writes, {s.live} alarm views by the fast path", file=sys.stderr)
    return 0
