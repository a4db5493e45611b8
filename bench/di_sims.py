"""Simulated Modbus DI modules in a process of their own, so the benches can count their CPU apart.

    python -m bench.di_sims [--count 25] [--inputs 16]           # N modules, each on its own free TCP port
    python -m bench.di_sims --rtu [--baudrate 115200] [--units 1] # one RTU line on a pty pair made here

Prints one JSON line on stdout once everything listens, then runs until SIGINT / SIGTERM or until stdin
closes (so a bench that dies does not leave it behind):

    {"pid": 123, "ports": [40001, 40002, ...]}                           (TCP)
    {"pid": 123, "serial": "/dev/pts/7", "baudrate": 115200, "units": [1]}  (RTU: the driver's side of the pty)

With --rtu the pty pair's bridge thread (simulators.pty_pair, standing in for the cable) runs here too, so
its CPU counts with the simulator's, not the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from types import FrameType

from simulators.modbus_di import ModbusDISimulator
from simulators.pty_pair import PtyPair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.di_sims", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=25, help="TCP: how many modules, one port each")
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--rtu", action="store_true", help="one RTU line on a pty pair instead of TCP ports")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--units", default="1", help="RTU: comma-separated unit ids on the line")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, name="stdin-eof", daemon=True).start()

    sims: list[ModbusDISimulator] = []
    pair: PtyPair | None = None
    try:
        if args.rtu:
            pair = PtyPair()
            units = [int(u) for u in args.units.split(",")]
            sim = ModbusDISimulator(args.inputs, units=units, serial=pair.device_side, baudrate=args.baudrate)
            sim.start()
            sims.append(sim)
            info: dict[str, object] = {"pid": os.getpid(), "serial": pair.driver_side, "baudrate": args.baudrate,
                                       "units": units}
        else:
            for _ in range(args.count):
                sim = ModbusDISimulator(args.inputs)
                sim.start()
                sims.append(sim)
            info = {"pid": os.getpid(), "ports": [s.port for s in sims]}
        print(json.dumps(info), flush=True)
        stop.wait()
    finally:
        for sim in sims:
            sim.stop()
        if pair is not None:
            pair.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
