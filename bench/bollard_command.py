"""Bollard command latency: a raise / lower command on MQTT -> its result, and -> the bollard's state `raising`.

    python -m bench.bollard_command [--commands 50] [--poll-ms 100] [--travel-s 0.5] [--pulse-ms 200]
                                    [--broker embedded|mosquitto] [--seed N]

A BollardSimulator (Modbus TCP PLC with a physical model; full stroke in --travel-s) and a full Gateway
(drivers, rules, console; SQLite in a temp dir) with one `modbus_bollard` device polled every --poll-ms.
The bench sends raise and lower alternately through gateway.commands.CommandClient on its own Bus
(issued_by "bench"), and a plain paho client watches campus/v1/<site>/bollard/<id>/state, the state the
driver publishes retained. For each command:

  command -> result      from just before CommandClient.send() publishes to when it returns the result
  command -> raising     from the same moment to when the watcher receives the state `raising` (raise) or
                         `lowering` (lower)
  command -> end state   to `raised` / `lowered`: the travel time plus up to one poll (for scale)

Before each command the bench waits for the end state of the previous one, then a random 0 to one poll
period, so commands fall at random points of the poll cycle. The travel time does not enter the first two
rows: the driver reports `raising` as soon as the controller took the coil write. --travel-s 2 gives the
travel of a real bollard at the cost of a longer run. At the end a fresh client checks that the broker
retained the last state. The exit status is 1 if a command failed or an update did not arrive in 5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.common import gateway_config, print_latency_table, start_mosquitto, wait_matching
from gateway.bus import Bus
from gateway.commands import CommandClient, CommandTimeout
from gateway.config import Config
from gateway.config_file import validate_config
from simulators.bollard import BollardSimulator
from tests.integration.helpers import Running
from tests.support import TEST_LOGIN, MosquittoBroker

SITE = "bench-school"
DEVICE = "gate-bollards"
STATE_TOPIC = f"campus/v1/{SITE}/bollard/{DEVICE}/state"
WAIT_S = 5.0  # longest wait for one update before counting it as missed
MOVING = {"raise": "raising", "lower": "lowering"}
SETTLED = {"raise": "raised", "lower": "lowered"}


def config_dict(data_dir: Path, sim_port: int, args: argparse.Namespace, broker_url: str) -> dict[str, Any]:
    return {
        **gateway_config(SITE, data_dir, broker_url),
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [{
            "id": DEVICE, "kind": "bollard", "driver": "modbus_bollard", "zone": "gate", "name": "Main gate bollards",
            "connection": {"host": "127.0.0.1", "port": sim_port}, "poll_ms": args.poll_ms,
            "pulse_ms": args.pulse_ms, "travel_timeout_s": max(8.0, args.travel_s * 3),
        }],
    }


class StateWatcher:
    """A plain paho client on the bollard's state topic: (receive time, state) for every message."""

    def __init__(self, port: int, client_id: str) -> None:
        self.states: queue.Queue[tuple[float, dict[str, Any], bool]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(*TEST_LOGIN)  # the embedded broker lets nobody in anonymously
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(STATE_TOPIC, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.states.put((time.time(), json.loads(message.payload), bool(message.retain)))

    def wait_state(self, state: str, since: float, timeout: float = WAIT_S, **fields: Any) -> float | None:
        """Receive time of the first message with this state received at or after `since`; None on timeout."""
        got = wait_matching(self.states, lambda m: m[0] >= since and m[1].get("state") == state
                            and all(m[1].get(k) == v for k, v in fields.items()), timeout)
        return got[0] if got else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_state(port: int) -> dict[str, Any] | None:
    """The state a client that connects now gets from the broker (retained), or None."""
    watcher = StateWatcher(port, f"bench-late-{os.getpid()}")
    try:
        _, body, retained = watcher.states.get(timeout=WAIT_S)
        return body if retained else None
    except queue.Empty:
        return None
    finally:
        watcher.close()


def send_first(commands: CommandClient) -> None:
    """A `read_state` until one is answered: the result subscription is live before anything is timed."""
    deadline = time.monotonic() + 20
    while True:
        try:
            commands.send("bollard", DEVICE, "read_state", issued_by="bench", timeout=2)
            return
        except CommandTimeout:
            if time.monotonic() > deadline:
                raise


def run_commands(count: int, poll_s: float, rng: random.Random, commands: CommandClient,
                 watcher: StateWatcher) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"result": [], "moving": [], "settled": [], "failed": [], "missed": []}
    for i in range(count):
        name = "raise" if i % 2 == 0 else "lower"
        time.sleep(rng.uniform(0, poll_s))
        sent = time.time()
        try:
            result = commands.send("bollard", DEVICE, name, issued_by="bench", timeout=WAIT_S)
        except CommandTimeout:
            out["failed"].append((i, name, "no result"))
            continue
        got = time.time()
        if result["status"] != "ok":
            out["failed"].append((i, name, result.get("detail")))
            continue
        out["result"].append((got - sent) * 1000)
        moving = watcher.wait_state(MOVING[name], sent)
        if moving is None:
            out["missed"].append((i, MOVING[name]))
        else:
            out["moving"].append((moving - sent) * 1000)
        # The next raise also needs the loops seen clear (raise_blocked null): they are, as no car comes.
        settled = watcher.wait_state(SETTLED[name], sent, raise_blocked=None)
        if settled is None:
            out["missed"].append((i, SETTLED[name]))
            break  # the bollard did not arrive: the next command would not measure the same thing
        out["settled"].append((settled - sent) * 1000)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{count} commands", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bollard_command", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--poll-ms", type=int, default=100, help="the driver's poll period (its default: 100)")
    parser.add_argument("--travel-s", type=float, default=0.5, help="the simulated bollard's full stroke")
    parser.add_argument("--pulse-ms", type=int, default=200, help="how long the driver holds a coil on")
    parser.add_argument("--broker", choices=["embedded", "mosquitto"], default="embedded")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random waits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="campusgw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mosquitto: MosquittoBroker | None = None
        broker_url = "embedded"
        if args.broker == "mosquitto":
            mosquitto = start_mosquitto(tmp)
            if mosquitto is None:
                print("mosquitto is not installed", file=sys.stderr)
                return 2
            broker_url = f"mqtt://127.0.0.1:{mosquitto.port}"
        sim = BollardSimulator(travel_s=args.travel_s, efo_travel_s=args.travel_s / 2)
        try:
            sim_port = sim.start()
            config: Config = validate_config(config_dict(tmp / "gw", sim_port, args, broker_url))
            running = Running(config)
            try:
                broker_port = running.gateway.broker_port if mosquitto is None else mosquitto.port
                assert broker_port
                watcher = StateWatcher(broker_port, f"bench-watch-{os.getpid()}")
                bus = Bus(config.broker, f"bench-commands-{os.getpid()}", port=broker_port, name="bench",
                          credentials=TEST_LOGIN)
                commands = CommandClient(bus, SITE, config.gateway.command_key())
                bus.start()
                try:
                    if not bus.wait_connected(10) or not watcher.subscribed.wait(10):
                        raise RuntimeError("the bench's MQTT clients did not connect within 10 s")
                    send_first(commands)
                    if watcher.wait_state("lowered", 0, timeout=15, online=True, raise_blocked=None) is None:
                        raise RuntimeError("the bollard was not reported lowered, online and clear within 15 s")
                    print(f"sending {args.commands} commands ...", file=sys.stderr, flush=True)
                    started = time.monotonic()
                    result = run_commands(args.commands, args.poll_ms / 1000, rng, commands, watcher)
                    took = time.monotonic() - started
                    final = retained_state(broker_port)
                    host = running.gateway.host
                    health = host.health() if host else {}
                finally:
                    bus.stop()
                    watcher.close()
            finally:
                running.stop()
        finally:
            sim.stop()
            if mosquitto:
                mosquitto.stop()

    report(args, result, took, final, health, sim)
    bad = result["failed"] or result["missed"] or sim.violations
    return 1 if bad else 0


def report(args: argparse.Namespace, result: dict[str, list[Any]], took: float, final: dict[str, Any] | None,
           health: dict[str, Any], sim: BollardSimulator) -> None:
    broker = "embedded amqtt (in the gateway process)" if args.broker == "embedded" else "Mosquitto (own process)"
    print()
    print(f"bollard commands: {args.commands} raise/lower alternately in {took:.0f} s; driver poll {args.poll_ms} ms; "
          f"coil pulse {args.pulse_ms} ms; simulated travel {args.travel_s:g} s; broker {broker}; "
          "drivers + rules + console in one process")
    print_latency_table([("command -> result (CommandClient)", result["result"]),
                         ("command -> state raising/lowering", result["moving"]),
                         ("command -> raised/lowered", result["settled"])], args.poll_ms)
    print(f"failed commands: {len(result['failed'])}; state updates missed (none within {WAIT_S:.0f} s): "
          f"{len(result['missed'])}")
    for failure in result["failed"][:5] + result["missed"][:5]:
        print(f"  {failure}")
    state = final.get("state") if final else None
    print(f"retained state for a client connecting at the end: {state or 'none'}")
    for name, h in health.items():
        print(f"driver {name}: {h.get('polls')} polls, {h.get('errors')} errors, {h.get('commands')} commands "
              f"({h.get('refused')} refused), {h.get('coil_writes')} coil writes, {h.get('restarts')} restarts")
    print(f"simulator: {len(sim.coil_writes('raise'))} raise and {len(sim.coil_writes('lower'))} lower coil pulses; "
          f"{len(sim.violations)} raises with a vehicle on a loop")


if __name__ == "__main__":
    sys.exit(main())
