"""Rising bollards end to end: the Modbus bollard simulator, the driver in a Gateway, the embedded broker, SQLite.

Each test watches MQTT the way another system would (paho, the retained state and the events) and checks
what reached the simulated PLC: a refused raise must never show up there as a coil write.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from drivers.bollard.schema import BollardConfig
from gateway.bus import Bus
from gateway.commands import CommandClient
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import IngestedEvent
from simulators import bollard as simulated
from simulators.bollard import BollardSimulator
from tests.integration.helpers import Running
from tests.support import TEST_LOGIN, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

SITE = "school-1"
DEVICE = "gate-bollards"
BASE = f"campus/v1/{SITE}/bollard/{DEVICE}"


class Watch:
    """Everything published under the bollard's topics, as another MQTT client sees it."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/#", qos=1)
        self.client.username_pw_set(*TEST_LOGIN)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload), bool(message.retain)))

    def state(self) -> dict[str, Any] | None:
        with self._lock:
            states = [body for topic, body, _ in self.messages if topic == f"{BASE}/state"]
        return states[-1] if states else None

    def retained_state(self) -> dict[str, Any] | None:
        with self._lock:
            states = [body for topic, body, retained in self.messages if topic == f"{BASE}/state" and retained]
        return states[-1] if states else None

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The `data` of each event of one type (state_changed, command, fault), in order."""
        with self._lock:
            return [body["data"] for topic, body, _ in self.messages if topic == f"{BASE}/evt/{kind}"]

    def transitions(self) -> list[tuple[str, str]]:
        return [(d["from"], d["to"]) for d in self.events("state_changed")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Rig:
    sim: BollardSimulator
    running: Running
    watch: Watch
    commands: CommandClient

    def send(self, command: str, issued_by: str) -> dict[str, Any]:
        return self.commands.send("bollard", DEVICE, command, issued_by=issued_by)

    def wait_state(self, state: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            current = self.watch.state()
            if current and current["state"] == state and all(current.get(k) == v for k, v in fields.items()):
                return current
            return None

        try:
            result: dict[str, Any] = wait_for(matches, timeout, f"state {state} {fields or ''}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last state was {self.watch.state()}") from None
        return result

    def saw_transitions(self, *expected: tuple[str, str]) -> None:
        """Wait until the last state_changed events are these (events come through the outbox, after the state)."""
        wait_for(lambda: self.watch.transitions()[-len(expected):] == list(expected), 5,
                 f"transitions {expected}")

    def ready(self) -> None:
        """Lowered, online, and the loops seen clear long enough for a raise."""
        self.wait_state("lowered", online=True, raise_blocked=None)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    sim = BollardSimulator(travel_s=0.4, efo_travel_s=0.2)
    sim.start()
    config = validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [{
            "id": DEVICE, "kind": "bollard", "driver": "modbus_bollard", "zone": "gate", "name": "南门升降柱",
            "connection": {"host": "127.0.0.1", "port": sim.port, "timeout_s": 0.3},
            "poll_ms": 50, "pulse_ms": 200, "travel_timeout_s": 1.5,
        }],
    })
    running = Running(config)
    port = running.gateway.broker_port
    assert port
    watch = Watch(port, "test-watch")
    bus = Bus(config.broker, "test-commands", port=port, name="test", credentials=TEST_LOGIN)
    commands = CommandClient(bus, SITE, config.gateway.command_key())
    bus.start()
    assert bus.wait_connected(10)
    try:
        yield Rig(sim, running, watch, commands)
    finally:
        bus.stop()
        watch.close()
        running.stop()
        sim.stop()
    assert sim.violations == [], "the bollard rose with a vehicle on a loop"


def test_the_simulator_answers_at_the_drivers_default_addresses() -> None:
    cfg = BollardConfig.model_validate({"id": "b", "kind": "bollard", "driver": "modbus_bollard",
                                        "connection": {"host": "127.0.0.1"}})
    sim = BollardSimulator()
    assert (cfg.coils.raise_, cfg.coils.lower, cfg.coils.efo) == (simulated.COIL_RAISE, simulated.COIL_LOWER,
                                                                  simulated.COIL_EFO)
    i = cfg.inputs
    assert (i.up_limit, i.down_limit, i.vehicle_loops, i.fault, i.efo_active, i.fire) == (
        simulated.IN_UP_LIMIT, simulated.IN_DOWN_LIMIT, [2, 3], sim.in_fault, sim.in_efo_active, sim.in_fire)


def test_raise_and_lower_with_the_state_retained_and_who_commanded_it(rig: Rig, tmp_path: Path) -> None:
    rig.ready()
    result = rig.send("raise", "guard-wang")
    assert result["status"] == "ok", result
    rig.wait_state("raised")
    rig.saw_transitions(("lowered", "raising"), ("raising", "raised"))
    assert rig.sim.limits() == (True, False)

    # A client that comes later gets the state from the broker (retained), with who moved it last.
    late = Watch(rig.watch.port, "test-late")
    try:
        retained = wait_for(late.retained_state, 5, "the retained state")
        assert retained["state"] == "raised" and retained["limits"] == {"up": True, "down": False}
        assert retained["vehicle_present"] == [False, False]
        assert retained["last_command"]["command"] == "raise"
        assert retained["last_command"]["issued_by"] == "guard-wang"
    finally:
        late.close()

    assert rig.send("lower", "rule:dismissal-window")["status"] == "ok"
    rig.wait_state("lowered")
    wait_for(lambda: len(rig.watch.events("command")) == 2, 5, "two command events")
    commands = [(c["command"], c["issued_by"], c["accepted"]) for c in rig.watch.events("command")]
    assert commands == [("raise", "guard-wang", True), ("lower", "rule:dismissal-window", True)]
    assert [w.coil for w in rig.sim.writes if w.value] == ["raise", "lower"]

    # The rules service recorded the same events, with who issued each command.
    engine = db.make_engine(rig.running.gateway.config.database_url())
    try:
        def recorded() -> list[tuple[str, str]]:
            with db.make_sessions(engine)() as session:
                rows = session.scalars(select(IngestedEvent).where(IngestedEvent.type == "campus.bollard.command")
                                       .order_by(IngestedEvent.seq)).all()
                return [(r.data["command"], r.data["issued_by"]) for r in rows]

        assert wait_for(lambda: len(recorded()) == 2 and recorded(), 5, "the command events in the database") == [
            ("raise", "guard-wang"), ("lower", "rule:dismissal-window")]
    finally:
        engine.dispose()


def test_raise_is_refused_while_a_vehicle_is_on_the_loop_and_for_a_second_after(rig: Rig) -> None:
    rig.ready()
    arrived = rig.sim.vehicle_arrives(1)
    # the time the driver saw it, in the site's time zone (Asia/Shanghai by default), not the machine's or UTC
    seen = {datetime.fromtimestamp(arrived + dt, ZoneInfo("Asia/Shanghai")).strftime("%H:%M:%S") for dt in (0, 1)}
    for command in ("raise", "efo"):
        refused = rig.send(command, "guard-li")
        assert refused["status"] == "error"
        since = re.fullmatch(r"vehicle on loop 1 \(since (\d\d:\d\d:\d\d)\)", refused["detail"])
        assert since and since.group(1) in seen, refused
    rig.wait_state("lowered", vehicle_present=[True, False])
    assert rig.watch.state()["raise_blocked"].startswith("vehicle on loop 1")  # type: ignore[index]

    rig.sim.vehicle_leaves(1)
    refused = rig.send("raise", "guard-li")
    assert refused["status"] == "error"
    assert re.fullmatch(r"vehicle left loop 1 at \d\d:\d\d:\d\d: raising waits until 1 s after the loop clears",
                        refused["detail"]), refused
    assert rig.sim.coil_writes("raise") == [] and rig.sim.coil_writes("efo") == [], \
        "a refused raise never reached the controller"
    refusals = wait_for(lambda: [c for c in rig.watch.events("command") if not c["accepted"]][2:] and
                        [c for c in rig.watch.events("command") if not c["accepted"]], 5, "the refusal events")
    assert [(c["command"], c["issued_by"]) for c in refusals] == [("raise", "guard-li"), ("efo", "guard-li"),
                                                                  ("raise", "guard-li")]
    assert refusals[0]["reason"].startswith("vehicle on loop 1")

    rig.ready()  # the clear delay has passed
    assert rig.send("raise", "guard-li")["status"] == "ok"
    rig.wait_state("raised")
    assert len(rig.sim.coil_writes("raise")) == 1


def test_travel_timeout_faults_and_reset_clears_it(rig: Rig) -> None:
    rig.ready()
    rig.sim.jam()
    assert rig.send("raise", "guard-zhao")["status"] == "ok"
    fault = rig.wait_state("fault")
    assert re.fullmatch(r"travel timeout: commanded raise 1\.\d s ago, up-limit not reached", fault["fault"])
    faults = wait_for(lambda: rig.watch.events("fault"), 5, "the fault event")
    assert faults == [{"reason": fault["fault"], "active": True, "zone": "gate", "place": "南门升降柱"}]
    rig.saw_transitions(("lowered", "raising"), ("raising", "fault"))

    refused = rig.send("lower", "guard-zhao")
    assert refused["status"] == "error" and refused["detail"].endswith("reset first")

    rig.sim.jam(False)
    assert rig.send("reset", "supervisor-chen")["status"] == "ok"
    wait_for(lambda: len(rig.watch.events("fault")) == 2, 5, "the fault cleared event")
    cleared = rig.watch.events("fault")[-1]
    assert cleared["active"] is False and "travel timeout" in cleared["reason"]
    rig.wait_state("unknown", fault=None)  # stuck midway: neither limit
    assert rig.send("lower", "guard-zhao")["status"] == "ok"
    rig.wait_state("lowered")

    # The controller's own fault input: reset is refused until it goes away.
    rig.sim.fault(True)
    rig.wait_state("fault", fault="fault input active at the controller")
    refused = rig.send("reset", "supervisor-chen")
    assert refused["status"] == "error" and "still reports a fault" in refused["detail"]
    rig.sim.fault(False)
    assert rig.send("reset", "supervisor-chen")["status"] == "ok"
    rig.wait_state("lowered")
    wait_for(lambda: len(rig.watch.events("command")) == 6, 5, "six command events")
    by = [(c["command"], c["issued_by"], c["accepted"]) for c in rig.watch.events("command")]
    assert by == [("raise", "guard-zhao", True), ("lower", "guard-zhao", False), ("reset", "supervisor-chen", True),
                  ("lower", "guard-zhao", True), ("reset", "supervisor-chen", False),
                  ("reset", "supervisor-chen", True)]


def test_fire_input_lowers_and_holds_the_bollard_down(rig: Rig) -> None:
    rig.ready()
    assert rig.send("efo", "rule:panic-linkage")["status"] == "ok"
    rig.wait_state("efo", limits={"up": True, "down": False})
    rig.sim.fire(True)
    rig.wait_state("lowered", fire=True)
    auto = wait_for(lambda: rig.watch.events("command")[1:], 5, "the fire's lower command event")[-1]
    assert (auto["command"], auto["issued_by"], auto["accepted"]) == ("lower", "fire-input", True)
    rig.saw_transitions(("efo", "lowering"), ("lowering", "lowered"))
    refused = rig.send("raise", "guard-wang")
    assert refused["status"] == "error" and refused["detail"] == "fire input active: the bollards are held lowered"
    assert len(rig.sim.coil_writes("raise")) == 0 and len(rig.sim.coil_writes("lower")) == 1


def test_an_unplugged_controller_is_offline_refuses_commands_and_comes_back(rig: Rig) -> None:
    rig.ready()
    rig.sim.unplug()
    gone = rig.wait_state("unknown", online=False)
    assert gone["reason"].startswith("controller not answering")
    refused = rig.send("lower", "guard-wang")
    assert refused["status"] == "error" and "offline" in refused["detail"] and str(rig.sim.port) in refused["detail"]
    rig.sim.plug_in()
    rig.ready()  # online again, and raising waits until the loops have been seen clear for a second
    rig.saw_transitions(("lowered", "unknown"), ("unknown", "lowered"))
    with rig.watch._lock:
        availability = [body["state"] for topic, body, _ in rig.watch.messages if topic == f"{BASE}/availability"]
    assert availability[-2:] == ["offline", "online"]
