"""Today's MQTT topic strings, pinned where they are made: the drivers' supervisor, the command client, the
outbox, the rules service, the command signer and the console's subscriptions, each run against a bus that
only records. Written before topics moved into gateway.topics, so that move changes no byte on the wire."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway import events
from gateway.command_auth import Verifier, sign_topic
from gateway.commands import CommandClient
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.outbox import Outbox
from gateway.rules_service.service import RulesService
from gateway.supervisor import Context, DriverHost

SITE = "s1"
KEY = b"k" * 32

# Every kind of topic the gateway uses, as it is on the wire today.
PINNED = {
    "source": "campus/v1/s1/alarm_input/box-1",
    "event": "campus/v1/s1/alarm_input/box-1/evt/triggered",
    "gateway event": "campus/v1/s1/gateway/gw1/evt/health",
    "police link event": "campus/v1/s1/gateway/gw1-police/evt/health",
    "state": "campus/v1/s1/bollard/gate-1/state",
    "availability": "campus/v1/s1/alarm_input/box-1/availability",
    "gateway availability": "campus/v1/s1/gateway/gw1/availability",
    "command": "campus/v1/s1/bollard/gate-1/cmd/raise",
    "result": "campus/v1/s1/bollard/gate-1/cmd/raise/result",
    "reader feedback": "campus/v1/s1/reader/gate-reader/cmd/feedback",
    "committed": "campus/v1/s1/rules/committed",
    "rules availability": "campus/v1/s1/rules/availability",
    "alarm": "campus/v1/s1/rules/alarms/42",
    "visit": "campus/v1/s1/rules/visits/7",
    "notify": "campus/v1/s1/rules/notify/li-qiang",
    "access events": "campus/v1/s1/rules/access/events",
    "snapshot requests": "campus/v1/s1/rules/snapshot_requests",
    "police alarms": "campus/v1/s1/rules/police/alarms",
    "police paths": "campus/v1/s1/rules/police/paths",
    "police evidence": "campus/v1/s1/rules/police/evidence",
    "events filter": "campus/v1/s1/+/+/evt/#",
    "commands filter": "campus/v1/s1/+/+/cmd/+",
    "results filter": "campus/v1/s1/+/+/cmd/+/result",
    "bollard states filter": "campus/v1/s1/bollard/+/state",
    "alarms filter": "campus/v1/s1/rules/alarms/+",
    "notice": "campus/v1/s1/rules/notices/3",
    "notices filter": "campus/v1/s1/rules/notices/+",
    "district notice": "campus/v1/s1/district/notices/notice-3",
}


def test_an_events_source_is_its_devices_topic_prefix() -> None:
    assert events.make_event(SITE, "alarm_input", "box-1", "campus.alarm_input.triggered", {}, 1, 0.0,
                             UTC).source == PINNED["source"]


class RecordingBus:
    """The part of gateway.bus.Bus the gateway's parts use, recording topics instead of sending."""

    def __init__(self, answer: bool = False) -> None:
        self.subscribed: list[str] = []
        self.handlers: list[tuple[str, Any]] = []
        self.published: list[tuple[str, Any]] = []
        self.connected = threading.Event()
        self.connected.set()
        self.client = SimpleNamespace(on_publish=None)
        self.answer = answer  # answer each command on `answer_on(topic)`, as a driver would

    def subscribe(self, topic_filter: str, handler: Any, qos: int = 1) -> None:
        self.subscribed.append(topic_filter)
        self.handlers.append((topic_filter, handler))

    def deliver(self, topic: str, payload: bytes) -> None:
        message = mqtt.MQTTMessage(topic=topic.encode())
        message.payload = payload
        for topic_filter, handler in self.handlers:
            if mqtt.topic_matches_sub(topic_filter, topic):
                handler(message)

    def publish_json(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> None:
        self.published.append((topic, body))
        if self.answer and "/cmd/" in topic:
            self.deliver(self.answer_on(topic), json.dumps({"correlation_id": body["correlation_id"],
                                                            "status": "ok"}).encode())

    def answer_on(self, topic: str) -> str:
        return topic + "/result"

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))

    def on_connect(self, hook: Any) -> None:
        pass

    def on_disconnect(self, hook: Any) -> None:
        pass

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.published]


class RecordingOutbox:
    def __init__(self) -> None:
        self.seq_keys: list[str] = []
        self.put_topics: list[str] = []

    def next_seq(self, key: str) -> int:
        self.seq_keys.append(key)
        return len(self.seq_keys)

    def put(self, topic: str, event: Any) -> None:
        self.put_topics.append(topic)


def site_config(tmp_path: Path) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "T"}, "gateway": {"data_dir": str(tmp_path)},
        "devices": [{"id": "box-1", "kind": "alarm_input", "driver": "modbus_di",
                     "connection": {"host": "127.0.0.1", "port": 1502},
                     "points": [{"input": 1, "name": "panic-1", "type": "panic"}]}]})


def drivers_host(tmp_path: Path) -> tuple[DriverHost, RecordingBus, RecordingOutbox]:
    bus, outbox = RecordingBus(), RecordingOutbox()
    host = DriverHost(site_config(tmp_path), bus, outbox, KEY)  # type: ignore[arg-type]  # what it calls only
    return host, bus, outbox


def test_the_supervisor_emits_and_publishes_on_todays_topics(tmp_path: Path) -> None:
    host, bus, outbox = drivers_host(tmp_path)
    device = host.config.devices[0]
    host.emit(device, "campus.alarm_input.triggered", {"point": "panic-1"})
    host.emit_gateway("campus.gateway.health", {"condition": "x", "active": True, "detail": ""})
    host.set_online(device, False, "gone")
    Context(host, "modbus_di.x", [device]).set_state("box-1", {"points": {}})
    assert outbox.seq_keys[:2] == [PINNED["source"], "campus/v1/s1/gateway/gw1"]
    assert outbox.put_topics == [PINNED["event"], PINNED["gateway event"],
                                 "campus/v1/s1/alarm_input/box-1/evt/offline"]
    assert bus.topics() == [PINNED["availability"], "campus/v1/s1/alarm_input/box-1/state"]


def test_the_supervisor_subscribes_to_commands_and_answers_on_the_result_topic(tmp_path: Path) -> None:
    host, bus, outbox = drivers_host(tmp_path)
    host.slots = []  # nothing to supervise: run() subscribes and returns
    asyncio.run(host.run())
    assert bus.subscribed == [PINNED["commands filter"]]
    bus.deliver(PINNED["command"], b"not json")
    bus.deliver(PINNED["command"], json.dumps({"correlation_id": "c1", "issued_by": "x", "args": {}}).encode())
    assert bus.topics() == [PINNED["result"], PINNED["result"]]
    assert bus.published[1][1]["detail"].startswith("refused: unsigned command")
    assert outbox.put_topics == ["campus/v1/s1/gateway/gw1/evt/command_refused"], "the refusal is audited"
    # What the filter cannot match, the handler ignores as before: a result, a command on a longer topic.
    host._on_command(bus_message(PINNED["result"], b"{}"))
    host._on_command(bus_message("campus/v1/s1/bollard/gate-1/cmd/raise/x/y", b"{}"))
    assert len(bus.published) == 2
    # A command with an empty level (the filter's '+' matches one) is answered and audited as before.
    bus.deliver("campus/v1/s1/bollard//cmd/raise", json.dumps({"correlation_id": "c2"}).encode())
    assert bus.topics()[-1] == "campus/v1/s1/bollard//cmd/raise/result"
    assert outbox.put_topics[-1] == "campus/v1/s1/gateway/gw1/evt/command_refused"


def bus_message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload
    return message


def test_the_command_client_sends_on_the_command_topic_and_takes_only_its_result_topic() -> None:
    bus = RecordingBus(answer=True)
    client = CommandClient(bus, SITE, KEY)  # type: ignore[arg-type]
    assert bus.subscribed == [PINNED["results filter"]]
    assert client.send("bollard", "gate-1", "raise", issued_by="admin", timeout=2)["status"] == "ok"
    assert bus.topics() == [PINNED["command"]]
    bus.answer_on = lambda topic: topic.replace("gate-1", "gate-2") + "/result"  # type: ignore[method-assign]
    with pytest.raises(Exception, match="no result"):
        client.send("bollard", "gate-1", "raise", issued_by="admin", timeout=0.2)


def test_the_outbox_takes_the_rules_services_confirmations_and_availability(tmp_path: Path) -> None:
    bus = RecordingBus()
    outbox = Outbox(tmp_path / "outbox.db", max_telemetry_bytes=10**6)
    try:
        outbox.attach(bus, SITE)  # type: ignore[arg-type]
        assert bus.subscribed == [PINNED["committed"], PINNED["rules availability"]]
    finally:
        outbox.close()


def test_the_rules_service_subscribes_commands_and_signs_on_todays_topics() -> None:
    bus = RecordingBus()
    rules = RulesService(SITE, bus, None, command_key=KEY)  # type: ignore[arg-type]
    rules.start()
    try:
        assert bus.subscribed == [PINNED["events filter"], PINNED["results filter"]]
    finally:
        rules.stop()
    topic, body = rules._command("bollard", "gate-1", "raise", 42, "linkage:alarm:42")
    assert topic == PINNED["command"]
    assert rules._pending_commands[body["correlation_id"]] == (42, "gate-1 raise", PINNED["result"])
    answer = json.dumps({"correlation_id": body["correlation_id"], "status": "ok"}).encode()
    assert rules._command_result(bus_message(PINNED["result"], answer)) is not None
    assert rules._command_result(bus_message(PINNED["result"].replace("gate-1", "gate-2"), answer)) is None
    rules._publish(topic, body)
    rules._publish(PINNED["access events"], {"x": 1})
    rules._publish(PINNED["reader feedback"], {"correlation_id": "c", "issued_by": "rules:access", "args": {}})
    assert bus.topics() == [PINNED["command"], PINNED["access events"], PINNED["reader feedback"]]
    signed, plain, feedback = (b for _, b in bus.published)
    assert "mac" in signed and "mac" not in plain and "mac" in feedback, "commands are signed, nothing else"
    verifier = Verifier(KEY, SITE, {})
    assert verifier.refusal("bollard", "gate-1", "raise", signed, time.time()) is None
    assert verifier.refusal("reader", "gate-reader", "feedback", feedback, time.time()) is None


def test_a_command_is_signed_for_what_its_topic_names() -> None:
    body = sign_topic(KEY, PINNED["command"], {"correlation_id": "c", "issued_by": "x", "args": {}})
    verifier = Verifier(KEY, SITE, {})
    assert verifier.refusal("bollard", "gate-1", "raise", body, time.time()) is None
    assert verifier.refusal("bollard", "gate-2", "raise", body, time.time()) is not None
    with pytest.raises(ValueError):
        sign_topic(KEY, PINNED["result"], {})


def test_the_console_subscribes_to_alarms_paths_states_and_results(tmp_path: Path) -> None:
    from gateway.console.pages import alarms, bollards

    bus = RecordingBus()
    app = SimpleNamespace(state=SimpleNamespace(console=SimpleNamespace(bus=bus, site=SITE, command_key=KEY,
                                                                        sessions=None)))
    alarms.attach(app)
    bollards.attach(app)
    assert bus.subscribed == [PINNED["alarms filter"], PINNED["police paths"], "campus/v1/s1/rules/lockdown",
                              PINNED["notices filter"], PINNED["results filter"], PINNED["bollard states filter"]]
    bus.deliver(PINNED["state"], json.dumps({"state": "raised"}).encode())
    bus.deliver("campus/v1/s1/bollard//state", json.dumps({"state": "lowered"}).encode())
    assert app.state.bollard_states.by_device == {"gate-1": {"state": "raised"}, "": {"state": "lowered"}}


def test_a_district_notice_comes_down_and_the_schools_view_of_it_goes_up_where_the_district_reads_it() -> None:
    from gateway import topics
    from gateway.district.subjects import NOTICES_FILTER, parse_notice_subject, subject_of

    assert topics.district_notice(SITE, 3) == PINNED["district notice"]
    assert topics.district_notice(SITE, 3).startswith(topics.from_district(SITE)[:-1])  # the bridge's `in` topic
    assert (topics.notice(SITE, 3), topics.notices_filter(SITE)) == (PINNED["notice"], PINNED["notices filter"])
    assert topics.parse(PINNED["notice"]) == topics.RulesTopic(SITE, "notices", "3")
    assert parse_notice_subject(subject_of(PINNED["notice"])) == (SITE, 3)
    assert parse_notice_subject(subject_of(PINNED["alarm"])) is None
    assert NOTICES_FILTER == "$MQTT.msgs.campus.v1.*.rules.notices.*"
