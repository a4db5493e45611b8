"""Gate reader latency: a card presented at a simulated reader -> the reader receives its feedback.

    python -m bench.reader_feedback [--reads 200] [--broker embedded|mosquitto] [--seed N]

A full Gateway (drivers, rules; SQLite in a temp dir) with an OSDP reader (libosdp peripheral device on a
pty, secure channel, 115200 baud) and a serial line reader (Wiegand-to-ASCII converter on a pty, with a
feedback line configured). Half the cards are known staff cards (granted), half unknown (denied), in random
order. For each read the bench takes the time just before the simulator puts the card on the line and the
time the simulator receives the LED command (OSDP) or the feedback line (serial); the path between is the
whole product: the driver decodes the card, writes the event to the outbox, publishes it, the rules service
decides and logs it in a transaction, publishes `feedback`, the driver writes the LED and buzzer commands.
Reads are 50-150 ms apart (a queue at the gate is slower). Target: p99 <= 150 ms; the standard allows 2 s.
Exit status 1 if any feedback is missing or has the wrong colour.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import gateway_config, print_latency_table, start_mosquitto, wait_until
from drivers.card_formats import Card, make_card
from gateway.config_file import validate_config
from gateway.records.models import AccessEvent, Credential, Device, Person
from simulators.osdp_reader import OsdpReaderSimulator
from simulators.serial_reader import SerialReaderSimulator
from tests.integration.helpers import Running

SITE = "bench-school"
KEY = "000102030405060708090a0b0c0d0e0f"
WAIT_S = 2.0


def seed(running: Running, cards: list[Card]) -> None:
    now = datetime.now(UTC)
    with running.gateway.sessions.begin() as s:
        for i, card in enumerate(cards):
            person = Person(kind="staff", name=f"Staff {i}", external_id=f"T{i:04d}", active=True, created_at=now,
                            updated_at=now)
            s.add(person)
            s.flush()
            s.add(Credential(value=card.credential, kind="card", person_id=person.id, revoked=False, created_at=now))


def online(running: Running, device: str) -> bool:
    with running.gateway.sessions() as s:
        row = s.get(Device, device)
        return bool(row and row.online)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=200, help="reads per reader kind")
    parser.add_argument("--broker", choices=["embedded", "mosquitto"], default="embedded")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    os.environ["BENCH_READER_KEY"] = KEY
    known = [make_card("wiegand26", 1000 + i, 18) for i in range(50)]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mosquitto = start_mosquitto(workdir) if args.broker == "mosquitto" else None
        broker_url = f"mqtt://127.0.0.1:{mosquitto.port}" if mosquitto else "embedded"
        osdp_sim = OsdpReaderSimulator(address=1, scbk=bytes.fromhex(KEY))
        osdp_sim.start()
        serial_sim = SerialReaderSimulator(workdir / "scanner")
        serial_sim.start()
        config = validate_config({
            **gateway_config(SITE, workdir / "data", broker_url),
            "zones": [{"id": "gate", "name": "Main gate"}],
            "devices": [
                {"id": "gate-in", "kind": "reader", "driver": "osdp", "zone": "gate",
                 "bus": {"port": osdp_sim.port, "baudrate": 115200}, "address": 1, "key_env": "BENCH_READER_KEY",
                 "direction": "entry"},
                {"id": "gate-out", "kind": "reader", "driver": "serial_reader", "zone": "gate",
                 "port": str(workdir / "scanner"), "direction": "exit",
                 "feedback_lines": {"granted": "@OK", "denied": "@NO"}},
            ],
        })
        running = Running(config)
        failures = 0
        rows: list[tuple[str, list[float]]] = []
        try:
            seed(running, known)
            wait_until(lambda: online(running, "gate-in") and online(running, "gate-out"), 20, "readers online")
            for kind in ("osdp", "serial"):
                times: list[float] = []
                for i in range(args.reads):
                    grant = rng.random() < 0.5
                    card = rng.choice(known) if grant else make_card("wiegand26", 5000 + i, 77)
                    time.sleep(rng.uniform(0.05, 0.15))
                    if kind == "osdp":
                        seen = len(osdp_sim.commands)
                        start = time.monotonic()
                        osdp_sim.present_card(card)
                        led = osdp_sim.wait_for_command(lambda c: "on_color" in c, WAIT_S, since=seen)
                        ok = led is not None and osdp_sim.last_led_color() == ("green" if grant else "red")
                        end = led["received_at"] if led else 0.0
                    else:
                        want = "@OK" if grant else "@NO"
                        seen = len(serial_sim.received)
                        start = time.monotonic()
                        serial_sim.present_card(card)
                        ok = serial_sim.wait_for_line(lambda line, w=want: line == w, WAIT_S, since=seen)  # type: ignore[misc]
                        end = time.monotonic()
                    if not ok:
                        failures += 1
                        continue
                    times.append((end - start) * 1000)
                rows.append((f"card -> feedback ({kind})", times))
            with running.gateway.sessions() as s:
                logged = s.query(AccessEvent).count()
        finally:
            running.stop()
            serial_sim.stop()
            osdp_sim.stop()
            if mosquitto:
                mosquitto.stop()
    print(f"gate readers: {args.reads} reads per kind, half known cards, broker {args.broker}, SQLite, "
          f"{os.cpu_count()} cores")
    print_latency_table(rows, poll_ms=0)
    print(f"access log lines: {logged} (expected {2 * args.reads - failures}); missing or wrong feedback: {failures}")
    return 1 if failures or logged != 2 * args.reads - failures else 0


if __name__ == "__main__":
    sys.exit(main())
