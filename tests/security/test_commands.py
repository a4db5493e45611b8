"""Commands over MQTT are obeyed only when the console or the rules service made them (issue 15, findings 1,
2 and 10): unsigned, mis-kinded, replayed and stale commands are refused with a reason, and audited."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.bus import Bus
from gateway.command_auth import sign
from gateway.commands import CommandClient
from gateway.records import db
from gateway.records.models import AuditEntry
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.security.test_embedded_broker import SITE, site
from tests.support import TEST_LOGIN, wait_for

TOPIC = f"campus/v1/{SITE}/alarm_input/box/cmd/read_inputs"


@pytest.fixture
def rig(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[tuple[Running, Bus, list[dict[str, Any]]]]:
    running = Running(site(tmp_path, sim.port))
    bus = Bus(running.gateway.config.broker, "attacker", port=running.gateway.broker_port, name="test",
              credentials=TEST_LOGIN)  # every right on the broker: only the signature is missing
    results: list[dict[str, Any]] = []
    bus.subscribe(f"campus/v1/{SITE}/+/+/cmd/+/result", lambda m: results.append(json.loads(m.payload)))
    bus.start()
    assert bus.wait_connected(10)
    yield running, bus, results
    bus.stop()
    running.stop()


def answer(results: list[dict[str, Any]], correlation_id: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(lambda: next((r for r in results if r["correlation_id"] == correlation_id),
                                                  None), 5, f"the answer to {correlation_id}")
    return found


def audited(running: Running) -> list[AuditEntry]:
    engine = db.make_engine(running.gateway.config.database_url())
    with db.make_sessions(engine)() as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "command.refused")))
    engine.dispose()
    return rows


def test_unsigned_miskinded_replayed_and_stale_commands_are_refused_and_audited(rig: Any) -> None:
    running, bus, results = rig
    key = running.gateway.config.gateway.command_key()
    plain = {"correlation_id": "unsigned", "issued_by": "supervisor-wang", "args": {}}
    bus.publish_json(TOPIC, plain)
    assert "refused: unsigned" in answer(results, "unsigned")["detail"]

    # Signed properly, but under a kind that is not the device's own (the console may write bollard commands).
    wrong = sign(key, SITE, "bollard", "box", "set_test_mode", {"correlation_id": "kind", "issued_by": "x",
                                                                 "args": {"point": "panic-1", "on": True}})
    bus.publish_json(f"campus/v1/{SITE}/bollard/box/cmd/set_test_mode", wrong)
    assert "is a alarm_input, not a bollard" in answer(results, "kind")["detail"]

    good = sign(key, SITE, "alarm_input", "box", "read_inputs", {"correlation_id": "once", "issued_by": "t",
                                                                  "args": {}})
    bus.publish_json(TOPIC, good)
    assert answer(results, "once")["status"] == "ok"
    results.clear()
    bus.publish_json(TOPIC, good)  # the same message again
    assert "replayed" in answer(results, "once")["detail"]

    old = sign(key, SITE, "alarm_input", "box", "read_inputs", {"correlation_id": "old", "issued_by": "t",
                                                                 "args": {}}, now=time.time() - 120)
    bus.publish_json(TOPIC, old)
    assert "stale" in answer(results, "old")["detail"]

    rows = wait_for(lambda: len(audited(running)) >= 4 and audited(running), 10, "the refusals in the audit log")
    assert {r.actor for r in rows} >= {"supervisor-wang", "x", "t"}
    assert all(r.result == "refused" and r.detail["reason"] for r in rows)


def test_the_test_mode_was_not_set_by_the_miskinded_command(rig: Any, sim: ModbusDISimulator) -> None:
    """Finding 2: the next real panic must still be a real one, not a test."""
    running, bus, results = rig
    key = running.gateway.config.gateway.command_key()
    wrong = sign(key, SITE, "bollard", "box", "set_test_mode", {"correlation_id": "kind", "issued_by": "x",
                                                                 "args": {"point": "panic-1", "on": True}})
    bus.publish_json(f"campus/v1/{SITE}/bollard/box/cmd/set_test_mode", wrong)
    answer(results, "kind")
    commands = CommandClient(bus, SITE, key)
    state = commands.send("alarm_input", "box", "read_inputs", issued_by="t")
    assert state["status"] == "ok" and state["data"]["test_points"] == []


def test_a_result_is_taken_only_from_its_own_device(amqtt_broker: Any) -> None:
    """Finding 9: the guard saw 'raised' while the bollard was in EFO. An answer with the right correlation id
    on another device's (or command's) result topic is not the answer."""
    import threading

    from gateway.commands import CommandTimeout
    from tests.support import broker_config

    bus = Bus(broker_config(amqtt_broker.port), "console", name="console")
    forger = Bus(broker_config(amqtt_broker.port), "forger", name="forger")
    commands = CommandClient(bus, SITE, b"k" * 32)
    sent = threading.Event()

    def forge(message: Any) -> None:
        body = json.loads(message.payload)
        forger.publish_json(f"campus/v1/{SITE}/bollard/other-bollard/cmd/raise/result",
                            {"correlation_id": body["correlation_id"], "status": "ok", "detail": "raised"})
        sent.set()

    forger.subscribe(f"campus/v1/{SITE}/bollard/gate-bollard/cmd/raise", forge)
    for b in (bus, forger):
        b.start()
        assert b.wait_connected(10)
    try:
        with pytest.raises(CommandTimeout):
            commands.send("bollard", "gate-bollard", "raise", issued_by="wang", timeout=2)
        assert sent.is_set(), "the forged answer was sent"
    finally:
        bus.stop()
        forger.stop()


def test_a_flood_of_forged_commands_is_counted_not_written_row_by_row(rig: Any) -> None:
    from gateway.supervisor import REFUSALS_AUDITED_PER_MIN

    running, bus, results = rig
    total = REFUSALS_AUDITED_PER_MIN + 20
    for n in range(total):
        bus.publish_json(TOPIC, {"correlation_id": f"flood-{n}", "issued_by": "x", "args": {}})
    wait_for(lambda: len(results) >= total, 10, "every forged command answered")
    assert all("refused: unsigned" in r["detail"] for r in results)
    wait_for(lambda: len(audited(running)) == REFUSALS_AUDITED_PER_MIN, 10, "a minute's worth in the audit log")
    assert running.gateway.host is not None and running.gateway.host.refused_unaudited == 20
