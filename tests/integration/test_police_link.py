"""The police link end to end: a button pressed at the simulated alarm box reaches an independent DC-09
receiver (pysiaalarm), in both formats, encrypted and not, over TCP and UDP; retries, the backup path,
supervision, test mode and the restore after a reset."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateway.cli import status
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.metrics import GatewayCollector, render
from gateway.police.link import PoliceLink
from gateway.records import db, store
from gateway.records.models import Alarm, PoliceExchange, PoliceMessage, PolicePathState, utcnow
from simulators.modbus_di import ModbusDISimulator
from tests.integration.dc09_receiver import Centre, Relay, path
from tests.integration.helpers import Running
from tests.support import wait_for

SITE = "school-1"
KEY_TEXT = "0123456789ABCDEF"  # pysiaalarm takes a key as its characters


def site(tmp_path: Path, sim_port: int, police: dict[str, Any], **device: Any) -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
                     "connection": {"host": "127.0.0.1", "port": sim_port}, "poll_ms": 20,
                     "points": [{"input": 1, "name": "panic", "type": "panic", "place": "门卫室"}], **device}],
        "zones": [{"id": "gate", "name": "Gate"}],
        "linkage": [{"when": {"alarm_type": ["panic"]}, "police": True}],
        "police": {"account": "1234", "line": "1", "receiver": "2", "ack_timeout_s": 0.5, "attempts_per_path": 2,
                   "supervision_s": 30, "periodic_test_h": 0, "zones": {"gate-box:panic": 7}, **police},
    })


class Ledger:
    def __init__(self, running: Running) -> None:
        self.sessions = running.gateway.sessions

    def messages(self) -> list[PoliceMessage]:
        with self.sessions() as session:
            return list(session.scalars(select(PoliceMessage).order_by(PoliceMessage.id)))

    def exchanges(self, message_id: int | None = None) -> list[PoliceExchange]:
        with self.sessions() as session:
            query = select(PoliceExchange).order_by(PoliceExchange.id)
            if message_id is not None:
                query = query.where(PoliceExchange.message_id == message_id)
            return list(session.scalars(query))

    def alarms(self, alarm_type: str) -> list[Alarm]:
        with self.sessions() as session:
            return list(session.scalars(select(Alarm).where(Alarm.alarm_type == alarm_type).order_by(Alarm.id)))

    def acked(self, kind: str = "alarm") -> PoliceMessage | None:
        return next((m for m in self.messages() if m.kind == kind and m.state == "acked"), None)

    def act(self, alarm_id: int, *actions: str) -> None:
        for action in actions:
            with self.sessions.begin() as session:
                store.operator_action(session, alarm_id, action, "super1", utcnow())  # type: ignore[arg-type]


@pytest.fixture
def started() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Running):
            thing.stop()
        else:
            (thing.stop if hasattr(thing, "stop") else thing.close)()


class Evidence(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Evidence.received.append((self.headers.get("Authorization", ""), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("fmt", "key", "protocol"), [("ADM-CID", None, "tcp"), ("ADM-CID", KEY_TEXT, "tcp"),
                                                      ("SIA-DCS", KEY_TEXT, "udp"), ("SIA-DCS", None, "udp")])
def test_a_panic_reaches_the_centre_and_the_reset_sends_the_restore(
        tmp_path: Path, sim: ModbusDISimulator, started: list[Any], monkeypatch: pytest.MonkeyPatch,
        fmt: str, key: str | None, protocol: str) -> None:
    centre = Centre(key=key, protocol=protocol)
    started.append(centre)
    http = HTTPServer(("127.0.0.1", 0), Evidence)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    started.append(type("Stop", (), {"stop": lambda self: (http.shutdown(), http.server_close())})())
    Evidence.received = []
    monkeypatch.setenv("DC09_KEY", key or "")
    monkeypatch.setenv("EVIDENCE_TOKEN", "t0ken")
    secret = {"key_env": "DC09_KEY", "key_encoding": "text"} if key else {}
    running = Running(site(tmp_path, sim.port, {
        "format": fmt, "paths": [path("primary", centre.port, protocol, **secret)],
        "evidence": {"url": f"http://127.0.0.1:{http.server_port}/evidence", "token_env": "EVIDENCE_TOKEN",
                     "topic": True}}))
    started.append(running)
    ledger = Ledger(running)

    pressed = time.monotonic()
    sim.press(1)
    (event,) = wait_for(centre.alarms, what="the panic at the receiver")
    print(f"press -> receiver: {1000 * (time.monotonic() - pressed):.0f} ms")
    assert (event.code, event.account) == ("PA", "1234"), "a panic is Contact ID 120 / SIA PA"
    assert event.ri in ("007", "1"), "zone 7 (ADM-CID) / partition 1 (SIA)"
    if fmt == "SIA-DCS":
        assert event.message == "007", "the zone number the centre knows for this button"
    assert event.encrypted == bool(key)
    message = wait_for(ledger.acked, what="the acknowledgement recorded")
    (alarm,) = ledger.alarms("panic")
    assert message.alarm_id == alarm.id and message.acked_path == "primary"
    (exchange,) = ledger.exchanges(message.id)
    assert exchange.answer == "ACK" and exchange.answered_at is not None and exchange.token == fmt
    assert exchange.sent.startswith(f'"{fmt}"') and "#1234[" in exchange.sent, "the plain text is kept"
    with ledger.sessions() as session:
        view = store.alarm_views(session, [session.get(Alarm, alarm.id)])[0]  # what the console shows
    assert view["police"]["alarm"]["state"] == "acked" and view["police"]["alarm"]["path"] == "primary"

    (auth, document), = wait_for(lambda: Evidence.received, what="the evidence upload")
    assert auth == "Bearer t0ken" and document["alarm_id"] == alarm.id and document["place"] == "门卫室"
    assert document["dc09"]["path"] == "primary"

    sim.release(1)
    ledger.act(alarm.id, "ack", "reset")
    wait_for(lambda: ledger.acked("restore"), what="the restore acknowledged")
    assert [e.code for e in centre.alarms()] == ["PA", "PH"], "the restore is Contact ID 3120 / SIA PH"


def test_no_answer_goes_again_then_to_the_backup_path(tmp_path: Path, sim: ModbusDISimulator,
                                                     started: list[Any]) -> None:
    first, centre = Centre(), Centre()
    relay = Relay(first.port)
    started += [first, relay, centre]
    running = Running(site(tmp_path, sim.port, {"paths": [path("primary", relay.port),
                                                          path("backup", centre.port)]}))
    started.append(running)
    ledger = Ledger(running)
    wait_for(lambda: first.link_tests() >= 1, what="the primary path up")
    relay.mute()  # the primary receiver hangs: connected, and never answers
    sim.press(1)
    message = wait_for(ledger.acked, what="the alarm acknowledged on the backup path")
    assert message.acked_path == "backup"
    tries = [(e.path, e.answer, e.seq) for e in ledger.exchanges(message.id)]
    assert [t[:2] for t in tries] == [("primary", "none"), ("primary", "none"), ("backup", "ACK")]
    assert tries[0][2] == tries[1][2], "a retry keeps its sequence number"
    assert relay.swallowed.count(b"ADM-CID") == 2, "the hung primary did get both tries"
    assert [e.code for e in centre.alarms()] == ["PA"]
    # The failed path is a gateway-health alarm on the console.
    health = wait_for(lambda: [a for a in ledger.alarms("gateway_health") if "police_path_down:primary" in a.key],
                      what="the path-down alarm")
    assert "primary" in (health[0].place or "")


def test_a_nak_for_our_clock_is_corrected_and_one_that_persists_goes_to_the_backup(
        tmp_path: Path, sim: ModbusDISimulator, started: list[Any]) -> None:
    stubborn, centre = Centre(), Centre()
    started += [stubborn, centre]
    running = Running(site(tmp_path, sim.port, {"paths": [path("primary", stubborn.port),
                                                          path("backup", centre.port)]}))
    started.append(running)
    ledger = Ledger(running)
    wait_for(lambda: stubborn.link_tests() >= 1, what="the primary path up")
    stubborn.refuse_every_time()
    sim.press(1)
    message = wait_for(ledger.acked, what="the alarm acknowledged on the backup path")
    assert [(e.path, e.answer) for e in ledger.exchanges(message.id)] == [
        ("primary", "NAK"), ("primary", "NAK"), ("backup", "ACK")]
    assert "receiver time" in (ledger.exchanges(message.id)[0].detail or "")


def test_a_skewed_clock_is_corrected_from_the_nak(tmp_path: Path, started: list[Any]) -> None:
    centre = Centre()
    started.append(centre)
    config = site(tmp_path, 1, {"paths": [path("primary", centre.port)], "supervision_s": 3600})
    engine = db.make_engine(config.database_url())
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        session.add(PoliceMessage(kind="periodic_test", alarm_type="periodic_test", zone=0, created_at=utcnow(),
                                  state="pending", attempts=0))

    class NoBus:
        def publish(self, *args: Any, **kwargs: Any) -> None:
            pass

        def publish_json(self, *args: Any, **kwargs: Any) -> None:
            pass

    link = PoliceLink(config, sessions, NoBus(), clock=lambda: utcnow() - timedelta(minutes=5))  # type: ignore[arg-type]
    link.start()
    started.append(link)
    def acked() -> bool:
        with sessions() as session:
            return session.scalar(select(PoliceMessage.state)) == "acked"

    wait_for(acked, what="the test report acknowledged")
    with sessions() as session:
        answers = [e.answer for e in session.scalars(select(PoliceExchange).where(
            PoliceExchange.message_id.is_not(None)).order_by(PoliceExchange.id))]
    assert answers == ["NAK", "ACK"], "five minutes slow: NAK with the receiver's time, then accepted"
    assert abs(link.paths[0].offset_s - 300) < 5
    assert [e.code for e in centre.alarms()] == ["RP"], "the periodic test report (602)"


@pytest.mark.parametrize("test_alarms", ["test_code", "none"])
def test_a_button_test_never_sends_a_panic(tmp_path: Path, sim: ModbusDISimulator, started: list[Any],
                                          test_alarms: str) -> None:
    centre = Centre()
    started.append(centre)
    running = Running(site(tmp_path, sim.port, {"paths": [path("primary", centre.port)],
                                                "test_alarms": test_alarms}, test_mode=True))
    started.append(running)
    ledger = Ledger(running)
    sim.press(1)
    (alarm,) = wait_for(lambda: ledger.alarms("panic"), what="the test alarm recorded")
    assert alarm.test
    if test_alarms == "test_code":
        wait_for(lambda: ledger.acked("test"), what="the test report acknowledged")
        assert [e.code for e in centre.alarms()] == ["RX"], "601 manual test, not 120"
        assert centre.alarms()[0].ri == "007"
    else:
        wait_for(lambda: centre.link_tests() >= 1, what="the link up")
        with ledger.sessions() as session:
            assert not list(session.scalars(select(PoliceMessage))), "nothing is queued for the centre"
        assert centre.alarms() == []
    sim.release(1)
    ledger.act(alarm.id, "ack", "reset")  # a restore would be written in this transaction
    assert all(m.kind != "restore" for m in ledger.messages())


def test_supervision_finds_a_dead_path_within_one_interval_and_its_recovery(
        tmp_path: Path, sim: ModbusDISimulator, started: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    centre = Centre()
    relay = Relay(centre.port)
    started += [centre, relay]
    interval = 2.0
    running = Running(site(tmp_path, sim.port, {"paths": [path("primary", relay.port)], "supervision_s": interval,
                                                "ack_timeout_s": 0.3}))
    started.append(running)
    ledger = Ledger(running)
    wait_for(lambda: centre.link_tests() >= 1, what="the first link test")
    with ledger.sessions() as session:
        assert session.get(PolicePathState, "primary").up is True

    relay.cut()
    cut = time.monotonic()
    (alarm,) = wait_for(lambda: [a for a in ledger.alarms("gateway_health") if "police_path_down" in a.key],
                        timeout=interval * 3, what="the path-down alarm")
    found = time.monotonic() - cut
    assert found <= interval + 0.5, f"found after {found:.1f} s; supervision is every {interval} s"
    assert alarm.state == "active_unack"
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(running.gateway.config.model_dump(mode="json", by_alias=True,
                                                                          exclude_none=True)))
    assert status(site_file) == 1, "campusgw status says something needs attention"
    assert re.search(r"police primary\s+PROBLEM\s+DOWN since", capsys.readouterr().out)
    text = render(GatewayCollector(ledger.sessions, running.gateway.parts_state)).decode()
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("campusgw_police_path_up", (("path", "primary"),))] == 0.0, "/metrics shows the path down"
    assert samples[("campusgw_part_up", (("part", "police"),))] == 1.0

    relay.mend()
    wait_for(lambda: not ledger.alarms("gateway_health")[0].condition_active, timeout=interval * 3,
             what="the path-down alarm cleared on recovery")
    with ledger.sessions() as session:
        state = session.get(PolicePathState, "primary")
        assert state.up is True and state.last_ack_at is not None


def test_while_no_path_answers_the_alarm_waits_and_goes_as_soon_as_one_does(
        tmp_path: Path, sim: ModbusDISimulator, started: list[Any]) -> None:
    centre = Centre()
    relay = Relay(centre.port)
    started += [centre, relay]
    running = Running(site(tmp_path, sim.port, {"paths": [path("primary", relay.port)], "supervision_s": 2,
                                                "ack_timeout_s": 0.3}))
    started.append(running)
    ledger = Ledger(running)
    wait_for(lambda: centre.link_tests() >= 1, what="the link up")
    relay.cut()
    sim.press(1)
    undelivered = wait_for(lambda: [a for a in ledger.alarms("gateway_health") if "police_undelivered" in a.key],
                           what="the undelivered-report alarm")
    assert "has not reached the alarm centre" in (undelivered[0].place or "")
    (message,) = ledger.messages()
    assert message.state == "pending" and message.attempts >= 1
    relay.mend()
    wait_for(ledger.acked, timeout=10, what="the alarm delivered once the path is back")
    assert [e.code for e in centre.alarms()] == ["PA"], "sent once it could be, and only once"
    wait_for(lambda: not [a for a in ledger.alarms("gateway_health")
                          if "police_undelivered" in a.key and a.condition_active], what="the alarm cleared")


def test_a_duh_is_not_sent_again_on_that_path(tmp_path: Path, sim: ModbusDISimulator, started: list[Any]) -> None:
    first, second = Centre(), Centre()
    started += [first, second]
    unknown = {"panic": {"contact_id": 120, "sia": "AQ", "sia_restore": "AQ"}}  # a code pysiaalarm does not know
    running = Running(site(tmp_path, sim.port, {"format": "SIA-DCS", "codes": unknown,
                                                "paths": [path("primary", first.port), path("backup", second.port)]}))
    started.append(running)
    ledger = Ledger(running)
    sim.press(1)
    wait_for(lambda: ledger.messages() and ledger.messages()[0].attempts >= 1, what="the first round over")
    (message,) = ledger.messages()
    assert message.state == "pending", "not acknowledged: it stays to be sent again later"
    assert [(e.path, e.answer) for e in ledger.exchanges(message.id)][:2] == [("primary", "DUH"), ("backup", "DUH")]
    assert "answered DUH" in (message.last_error or "")
