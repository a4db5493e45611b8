"""`campusgw district ...`: the school's bridge section, and the district's workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
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


def command(args: argparse.Namespace) -> int:
    if args.district_command == "bridge":
        return bridge(args.config)
    return worker(args.config, init_only=args.district_command == "init")


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
                              state_durable=w.state_durable, batch=w.batch, fetch_timeout_s=w.fetch_timeout_s,
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
            print(f"district tables and consumers {w.durable}, {w.alarms_durable}, {w.state_durable} "
                  f"{'ready' if done else 'not made (stopped)'}")
            return 0 if done else 1
    finally:
        engine.dispose()
        s = runner.stats
        if not init_only:
            print(f"district worker stopped: {s.stored} stored, {s.duplicates} duplicates, {s.rejected} rejected, "
                  f"{s.failed_writes} failed writes", file=sys.stderr)
    return 0
