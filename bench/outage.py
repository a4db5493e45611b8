"""Presses during a module outage: with a latching module, none may be lost.

`python -m bench.outage [--outage-s 8] [--presses 8] [--rounds 3]`: a gateway polls a latching DI
simulator (Modbus TCP, 50 ms); the simulator is unplugged, short presses (10 ms, each on its own input)
are made while it is away, it is plugged in again, and the bench counts the alarms that arrive, and how
long after the module answered again the driver was back online.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from sqlalchemy import func, select

from bench.common import percentile, wait_until
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Device, IngestedEvent
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__.split("\n")[0])
    parser.add_argument("--outage-s", type=float, default=8.0)
    parser.add_argument("--presses", type=int, default=8, help="presses per outage, each on its own input")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sim = ModbusDISimulator(inputs=16, latch_address=32)
    sim.start()
    points = [{"input": n, "name": f"button-{n}", "type": "tamper"} for n in range(1, 17)]
    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp:
        config = validate_config({
            "site": {"id": "bench", "name": "Bench"}, "gateway": {"id": "gw1", "data_dir": str(Path(tmp))},
            "broker": {"url": "embedded", "embedded_port": 0},
            "devices": [{"id": "box", "kind": "alarm_input", "driver": "modbus_di", "poll_ms": 50,
                         "connection": {"host": "127.0.0.1", "port": sim.port, "timeout_s": 0.3},
                         "latch": {"address": 32}, "offline_after": 2, "points": points}]})
        running = Running(config)
        engine = db.make_engine(config.database_url())
        sessions = db.make_sessions(engine)

        def online() -> bool:
            with sessions() as session:
                device = session.get(Device, "box")
                return bool(device and device.online)

        def reported_since(seq: int) -> set[int]:
            """Inputs the driver reported pressed in events after `seq`."""
            with sessions() as session:
                rows = session.scalars(select(IngestedEvent).where(
                    IngestedEvent.type == "campus.alarm_input.triggered", IngestedEvent.seq > seq))
                return {row.data["input"] for row in rows}

        def all_reported(pressed: set[int], since: int) -> bool:
            return pressed <= reported_since(since)

        def last_seq() -> int:
            with sessions() as session:
                return int(session.scalar(select(func.max(IngestedEvent.seq))) or 0)

        lost, back_ms = 0, []
        rng = random.Random(1)
        try:
            wait_until(online, 15, "the module online")
            for round_no in range(args.rounds):
                sim.unplug()
                wait_until(lambda: not online(), 10, "the module offline")
                inputs = rng.sample(range(1, 17), args.presses)
                start = time.monotonic()
                for i, number in enumerate(inputs):
                    target = start + (i + 0.5) * args.outage_s / args.presses
                    time.sleep(max(0.0, target - time.monotonic()))  # spread over the outage (bench pacing)
                    sim.press_for(number, 0.01)
                time.sleep(max(0.0, start + args.outage_s - time.monotonic()))
                before = last_seq()
                sim.plug_in()
                answered = time.monotonic()
                wait_until(online, 10, "the module back online")
                back_ms.append((time.monotonic() - answered) * 1000)
                pressed = set(inputs)
                with contextlib.suppress(RuntimeError):  # counted below: a lost press is the figure, not a crash
                    wait_until(partial(all_reported, pressed, before), 5, "the presses of the outage")
                found = len(pressed & reported_since(before))
                lost += args.presses - found
                print(f"round {round_no + 1}: {args.outage_s:g} s outage, {args.presses} presses of 10 ms, "
                      f"{found} found after reconnecting", flush=True)
        finally:
            running.stop()
            engine.dispose()
            sim.stop()
    print(f"\noutage: {args.rounds} rounds x {args.presses} presses of 10 ms during a {args.outage_s:g} s outage of a "
          "latching module (Modbus TCP, 50 ms poll)")
    print(f"  presses lost                         {lost}   target 0: {'met' if lost == 0 else 'MISSED'}")
    print(f"  back online after the module answers p50 {percentile(back_ms, 50):.0f} ms, max {max(back_ms):.0f} ms "
          "(target within 1 s)")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
