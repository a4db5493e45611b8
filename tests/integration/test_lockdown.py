"""Campus lockdown (封校 / 一键锁闭) through the whole gateway: a supervisor locks the campus down at the console,
the OSDP reader refuses a student's card and lets a responder through, the door lock relay locks, the PA plays,
the bollard rises; the lockdown ends only with a note, and a drill only with its findings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.config_file import validate_config
from gateway.records.models import AccessEvent, AuditEntry, Credential, Lockdown, Person, utcnow
from simulators.bollard import BollardSimulator
from simulators.modbus_di import ModbusDISimulator
from simulators.osdp_reader import OsdpReaderSimulator
from simulators.relay_outputs import RelayOutputSimulator
from tests.integration.helpers import Running, logged_in
from tests.integration.test_readers import KEY, STAFF_CARD, STUDENT_CARD
from tests.support import wait_for

SITE = "school-1"
LOCK, PA = 3, 2


@dataclass
class School:
    reader: OsdpReaderSimulator
    relays: RelayOutputSimulator
    bollard: BollardSimulator
    running: Running

    def log(self) -> list[AccessEvent]:
        with self.running.gateway.sessions() as s:
            return list(s.scalars(select(AccessEvent).order_by(AccessEvent.at, AccessEvent.id)))

    def rows(self, model: Any) -> list[Any]:
        with self.running.gateway.sessions() as s:
            return list(s.scalars(select(model).order_by(model.id)))

    def console(self) -> Any:
        url, password = self.running.gateway.console_url, self.running.gateway.first_admin_password
        assert url and password
        client = logged_in(url, "admin", password)
        client.headers["x-csrf-token"] = client.csrf
        return client

    def present(self, card: Any) -> AccessEvent:
        """A card at the reader: its line in the access log, once the reader has shown the answer."""
        seen, commands = len(self.log()), len(self.reader.commands)
        self.reader.present_card(card)
        # 5 s: the first read after the gateway started once took over 2 s (the reader's feedback time is
        # bench/reader_feedback's to measure, not this test's).
        assert self.reader.wait_for_command(lambda c: "on_color" in c, 5.0, since=commands), "no LED answer"
        return wait_for(lambda: self.log()[seen:], 5, "the read decided")[0]


@pytest.fixture
def school(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[School]:
    monkeypatch.setenv("TEST_READER_KEY", KEY)
    reader = OsdpReaderSimulator(address=101, scbk=bytes.fromhex(KEY))
    relays = RelayOutputSimulator()
    bollard = BollardSimulator(travel_s=0.5)
    for sim in (reader, relays, bollard):
        sim.start()
    config = validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "devices": [
            {"id": "gate-in", "kind": "reader", "driver": "osdp", "zone": "gate", "name": "Main gate in",
             "bus": {"port": reader.port, "baudrate": 115200}, "address": 101, "key_env": "TEST_READER_KEY",
             "direction": "entry"},
            {"id": "gatehouse-relays", "kind": "output", "driver": "modbus_do", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": relays.port}, "poll_ms": 100,
             "relays": [{"name": "siren", "coil": 0, "role": "siren"}, {"name": "pa", "coil": PA, "role": "pa"},
                        {"name": "side-gate-lock", "coil": LOCK, "role": "lock"}]},
            {"id": "gate-bollard", "kind": "bollard", "driver": "modbus_bollard", "zone": "gate",
             "connection": {"host": "127.0.0.1", "port": bollard.port}},
        ],
        "lockdown": {"responders": ["T001"], "bollards": ["gate-bollard"],
                     "outputs": [{"device": "gatehouse-relays", "relays": ["side-gate-lock", "pa"]}]},
    })
    running = Running(config)
    now = utcnow()
    with running.gateway.sessions.begin() as s:
        staff = Person(kind="staff", name="王老师", group_name="保卫处", external_id="T001", active=True,
                       created_at=now, updated_at=now)
        student = Person(kind="student", name="李明", group_name="3-2", external_id="S001", active=True,
                         created_at=now, updated_at=now)
        s.add_all([staff, student])
        s.flush()
        for person, card in ((staff, STAFF_CARD), (student, STUDENT_CARD)):
            s.add(Credential(value=card.credential, kind="card", person_id=person.id, revoked=False, created_at=now))
    try:
        yield School(reader, relays, bollard, running)
    finally:
        running.stop()
        for sim in (bollard, relays, reader):
            sim.stop()


def test_a_lockdown_refuses_students_locks_the_door_raises_the_bollard_and_ends_with_a_note(school: School) -> None:
    wait_for(lambda: school.reader.is_sc_active, 15, "the OSDP reader online")
    wait_for(lambda: school.relays.watchdog_s > 0, 10, "the relay module connected")
    assert school.present(STUDENT_CARD).granted, "before the lockdown the student enters"
    console = school.console()

    started = console.post("/api/lockdown", json={"reason": "可疑人员翻墙 Intruder over the north wall"})
    assert started.status_code == 200 and started.json()["active"] and not started.json()["drill"]
    assert console.get("/api/lockdown").json()["started_by"] == "admin"
    wait_for(lambda: school.relays.relay(LOCK) and school.relays.relay(PA), 2, "the door locked and the PA on")
    wait_for(lambda: school.bollard.coil_writes("raise"), 5, "the bollard told to rise")
    refused = school.present(STUDENT_CARD)
    assert (refused.granted, refused.reason) == (False, "lockdown")
    assert school.reader.last_led_color() == "red"
    responder = school.present(STAFF_CARD)
    assert responder.granted, "a responder (staff T001) passes"
    assert console.post("/api/lockdown", json={"reason": "again"}).status_code == 409, "one at a time"

    assert console.post("/api/lockdown/end", json={"note": "ok"}).status_code == 409, "a note of 6 characters"
    ended = console.post("/api/lockdown/end", json={"note": "派出所已带走可疑人员 Police took him away"})
    assert ended.status_code == 200 and not ended.json()["active"]
    wait_for(lambda: not school.relays.relay(LOCK) and not school.relays.relay(PA), 2, "unlocked, the PA off")
    assert school.present(STUDENT_CARD).granted, "after the lockdown the student enters again"
    (record,) = school.rows(Lockdown)
    assert (record.started_by, record.ended_by, record.drill) == ("admin", "admin", False)
    assert record.note == "派出所已带走可疑人员 Police took him away"
    audit = [(a.action, a.result) for a in school.rows(AuditEntry) if a.action.startswith("lockdown.")]
    assert audit == [("lockdown.start", "ok"), ("lockdown.start", "refused"), ("lockdown.end", "refused"),
                     ("lockdown.end", "ok")]


def test_a_drill_does_it_all_and_ends_with_its_record(school: School) -> None:
    wait_for(lambda: school.reader.is_sc_active, 15, "the OSDP reader online")
    console = school.console()
    started = console.post("/api/lockdown", json={"reason": "防暴演练：歹徒持刀闯入", "drill": True})
    assert started.status_code == 200 and started.json()["drill"]
    assert not school.present(STUDENT_CARD).granted, "a drill refuses students too"
    refused = console.post("/api/lockdown/end", json={"note": "演练结束 drill over"})
    assert refused.status_code == 409 and refused.json()["detail"] == "演练结束须填写发现的问题", "with its findings"
    ended = console.post("/api/lockdown/end", json={"note": "演练结束 drill over", "participants": "保安3人，教师12人",
                                                    "findings": "北门广播听不清 the PA is too quiet at the north gate"})
    assert ended.status_code == 200
    (record,) = school.rows(Lockdown)
    assert record.drill and record.participants == "保安3人，教师12人" and "PA is too quiet" in (record.findings or "")


def test_only_a_supervisor_locks_the_campus_down(school: School) -> None:
    from gateway.console import auth

    assert auth.PERMISSIONS["lockdown.manage"] == "supervisor"
    assert not auth.allowed("guard", "lockdown.manage") and auth.allowed("supervisor", "lockdown.manage")


def test_an_alarm_of_a_chosen_type_locks_the_campus_down(tmp_path: Path, sim: ModbusDISimulator) -> None:
    relays = RelayOutputSimulator()
    relays.start()
    config = validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [
            {"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di",
             "connection": {"host": "127.0.0.1", "port": sim.port}, "poll_ms": 50,
             "points": [{"input": 1, "name": "intruder-button", "type": "duress"}]},
            {"id": "gatehouse-relays", "kind": "output", "driver": "modbus_do",
             "connection": {"host": "127.0.0.1", "port": relays.port}, "poll_ms": 100,
             "relays": [{"name": "side-gate-lock", "coil": LOCK, "role": "lock"}]}],
        "lockdown": {"alarm_types": ["duress"],
                     "outputs": [{"device": "gatehouse-relays", "relays": ["side-gate-lock"]}]},
    })
    running = Running(config)
    try:
        wait_for(lambda: relays.watchdog_s > 0 and sim.reads >= 2, 10, "the devices connected")
        sim.press(1)
        wait_for(lambda: relays.relay(LOCK), 3, "the door locked by the alarm's lockdown")
        with running.gateway.sessions() as s:
            (record,) = s.scalars(select(Lockdown)).all()
            assert record.started_by.startswith("linkage:alarm:") and record.alarm_id is not None
    finally:
        running.stop()
        relays.stop()
