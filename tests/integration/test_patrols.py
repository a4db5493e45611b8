"""Patrols (the shell) against the real databases (SQLite and PostgreSQL), fed real reader events, with a
clock the test sets: rounds planned once, scans kept with device and server time, each missed, late and
out-of-order checkpoint named, a round not started or stalled raising an alarm once, which escalates.

Patrols is driven as the rules service drives it: on_scan for each read inside a transaction, tick with
the open alarms its keys() name, and the effects written with gateway.records.store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.bus import Bus
from gateway.config import Config, EscalationConfig, RosterEntry
from gateway.config_file import validate_config
from gateway.console import auth
from gateway.console.app import create_app
from gateway.events import Event, make_event
from gateway.records import db, store
from gateway.records.models import Alarm, Credential, DutyAssignment, PatrolRound, PatrolScan, Person
from gateway.rules.escalation import Unacknowledged, escalations_due
from gateway.rules_service.patrol_shell import Patrols, alarm_key
from tests.support import broker_config

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
SITE = "s1"
TAGS = {"gate": "CP-GATE", "library": "CP-LIB", "boiler": "CP-BOILER"}
STAFF_CARD = "018,00077"


def at(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=TZ).astimezone(UTC)


def site_config() -> Config:
    return validate_config({
        "site": {"id": SITE, "name": "Test School"},
        "devices": [
            {"id": "tour-1", "kind": "checkpoint", "driver": "serial_reader", "port": "/dev/null", "mode": "qr"},
            {"id": "cp-dorm", "kind": "checkpoint", "driver": "serial_reader", "port": "/dev/null"},
            {"id": "gate-in", "kind": "reader", "driver": "serial_reader", "port": "/dev/null"},
        ],
        "duty": {"shifts": [{"id": "day", "name": "Day", "from": "08:00", "to": "20:00"},
                            {"id": "night", "name": "Night", "from": "20:00", "to": "08:00"}]},
        "patrol": {
            "checkpoints": [{"id": "gate", "name": "South gate", "tag": TAGS["gate"]},
                            {"id": "library", "name": "Library", "tag": TAGS["library"]},
                            {"id": "boiler", "name": "Boiler room", "tag": TAGS["boiler"], "key_area": True},
                            {"id": "dorm", "name": "Dormitory", "reader": "cp-dorm", "key_area": True}],
            "routes": [{"id": "main", "name": "Main round", "checkpoints": ["gate", "library", "boiler", "dorm"],
                        "expected_min": 30, "tolerance_min": 10}],
            "plan": [{"route": "main", "shift": "day", "rounds": 2}, {"route": "main", "shift": "night", "rounds": 3}],
            "start_grace_min": 10, "stall_min": 15,
        },
    })


class Tour:
    """Patrols with a database and a clock of the test's own."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.config = site_config()
        self.patrols = Patrols(SITE, self.config, TZ)
        self.seq = 0

    def read(self, device_time: datetime, *, tag: str | None = None, card: str | None = None,
             device: str = "tour-1", kind: str = "checkpoint") -> Event:
        self.seq += 1
        if card is not None:
            data: dict[str, Any] = {"reader": 0, "credential": card, "format": "wiegand26", "number": 77, "bits": 26}
            return make_event(SITE, kind, device, "campus.reader.card_read", data, self.seq, device_time.timestamp(),
                              TZ)
        return make_event(SITE, kind, device, "campus.reader.code_scanned", {"reader": 0, "code": tag}, self.seq,
                          device_time.timestamp(), TZ)

    def scan(self, checkpoint: str, device_time: datetime, received: datetime | None = None, **kw: Any) -> Event:
        """A scan of a checkpoint's tag (or, for the dormitory, a card at its fixed reader)."""
        if checkpoint == "dorm":
            kw.setdefault("card", STAFF_CARD)
            kw.setdefault("device", "cp-dorm")
        event = self.read(device_time, tag=TAGS.get(checkpoint, checkpoint), **kw)
        self.deliver(event, received or device_time + timedelta(seconds=2))
        return event

    def deliver(self, event: Event, received: datetime) -> None:
        with self.sessions.begin() as session:
            device_time = datetime.fromisoformat(event.time)
            effects = self.patrols.on_scan(session, event, device_time, received, {})
            store.apply_effects(session, effects)

    def tick(self, now: datetime) -> None:
        with self.sessions.begin() as session:
            alarms = store.open_alarms(session, self.patrols.keys(session))
            effects = self.patrols.tick(session, now, alarms)
            store.apply_effects(session, effects)

    def round(self, shift: str = "day", number: int = 1, day: str = "2026-11-30") -> PatrolRound:
        with self.sessions() as session:
            return session.scalars(select(PatrolRound).where(
                PatrolRound.shift == shift, PatrolRound.number == number, PatrolRound.day == day)).one()

    def scans(self, round_id: int | None = None) -> list[PatrolScan]:
        with self.sessions() as session:
            query = select(PatrolScan).order_by(PatrolScan.device_time)
            if round_id is not None:
                query = query.where(PatrolScan.round_id == round_id)
            return list(session.scalars(query))

    def alarms(self) -> list[Alarm]:
        with self.sessions() as session:
            return list(session.scalars(select(Alarm).order_by(Alarm.id)))


def seed(sessions: sessionmaker[Session]) -> None:
    """A guard with a card of their own, and Monday's day shift on the roster."""
    now = at("2026-11-30 07:00")
    with sessions.begin() as session:
        wang = Person(kind="staff", name="王保安", external_id="G001", active=True, created_at=now, updated_at=now)
        session.add(wang)
        session.flush()
        session.add(Credential(value=STAFF_CARD, kind="card", person_id=wang.id, created_at=now))
        session.add(DutyAssignment(day="2026-11-30", shift="day", starts_at=at("2026-11-30 08:00"),
                                   ends_at=at("2026-11-30 20:00"), role="guard", name="李巡逻", post="patrol",
                                   position=0, created_at=now, created_by="super1"))


@pytest.fixture
def tour(db_url: str) -> Iterator[Tour]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    seed(sessions)
    yield Tour(sessions)
    engine.dispose()


def test_rounds_are_planned_once_each_with_the_route_as_it_was(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.tick(at("2026-11-30 07:59:01"))  # again: nothing planned twice
    with tour.sessions() as session:
        rows = session.execute(select(PatrolRound.day, PatrolRound.shift, PatrolRound.number, PatrolRound.due_at,
                                      PatrolRound.state).order_by(PatrolRound.due_at)).all()
    assert [tuple(r) for r in rows] == [
        # Sunday's night shift is still on until 08:00: its last round is planned too
        ("2026-11-29", "night", 3, at("2026-11-30 04:00"), "pending"),
        ("2026-11-30", "day", 1, at("2026-11-30 08:00"), "pending"),
        ("2026-11-30", "day", 2, at("2026-11-30 14:00"), "pending"),
        ("2026-11-30", "night", 1, at("2026-11-30 20:00"), "pending"),
        ("2026-11-30", "night", 2, at("2026-12-01 00:00"), "pending"),
        ("2026-11-30", "night", 3, at("2026-12-01 04:00"), "pending"),
    ]
    result = tour.round().result
    assert result["route"]["names"] == {"gate": "South gate", "library": "Library", "boiler": "Boiler room",
                                        "dorm": "Dormitory"}
    assert result["route"]["key_areas"] == ["boiler", "dorm"]
    assert result["window_end"] == at("2026-11-30 14:00").isoformat()


def test_a_complete_round_keeps_device_and_server_time(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    device = [at("2026-11-30 08:01"), at("2026-11-30 08:06"), at("2026-11-30 08:12"), at("2026-11-30 08:20")]
    for checkpoint, when in zip(("gate", "library", "boiler", "dorm"), device, strict=True):
        tour.scan(checkpoint, when, received=when + timedelta(seconds=7))  # the server hears 7 s later
        if checkpoint == "gate":
            assert tour.round().guard == "李巡逻", "the guard on duty: a tag at a handheld does not say who carries it"
    row = tour.round()
    assert (row.state, row.started_at, row.finished_at) == ("complete", device[0], device[3])
    assert (row.guard, row.result["guard_by"]) == ("王保安", "card"), "their own card at the dormitory says who"
    assert (row.result["missed"], row.result["late"], row.result["out_of_order"]) == ([], [], [])
    assert row.result["visited"] == ["gate", "library", "boiler", "dorm"]
    scans = tour.scans(row.id)
    assert [(s.checkpoint, s.status, s.device_time, s.server_time) for s in scans] == [
        (cp, "ok", t, t + timedelta(seconds=7)) for cp, t in zip(("gate", "library", "boiler", "dorm"), device,
                                                                   strict=True)]
    assert [s.reader for s in scans] == ["tour-1", "tour-1", "tour-1", "cp-dorm"]
    first = row.result["checkpoints"][0]
    assert (first["at"], first["server_at"]) == (device[0].isoformat(), (device[0] + timedelta(seconds=7)).isoformat())
    tour.tick(at("2026-11-30 13:00"))
    tour.tick(at("2026-11-30 14:00"))
    assert tour.round().state == "complete" and tour.alarms() == [], "a complete round raises nothing"


def test_a_skipped_checkpoint_is_named_and_the_guard_by_their_card(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.scan("dorm", at("2026-11-30 08:03"))  # the staff card swiped at the dormitory's fixed reader
    tour.scan("gate", at("2026-11-30 08:05"))
    tour.scan("library", at("2026-11-30 08:10"))
    tour.scan("gate", at("2026-11-30 08:11"))  # the same tag again
    row = tour.round()
    assert row.state == "in_progress" and row.guard == "王保安"
    assert [c["skipped"] for c in row.result["checkpoints"]] == [False, False, True, False]
    assert row.result["out_of_order"] == ["dorm"], "the dormitory was scanned before the three before it"
    tour.tick(at("2026-11-30 14:00"))  # the window ends when round 2 is due
    row = tour.round()
    assert row.state == "incomplete" and row.finished_at == at("2026-11-30 14:00")
    assert row.result["missed"] == ["boiler"]
    assert [c["id"] for c in row.result["checkpoints"] if c["missed"]] == ["boiler"]
    assert [s.status for s in tour.scans(row.id)] == ["out_of_order", "ok", "ok", "repeat"]


def test_out_of_order_and_late_checkpoints_are_named(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.scan("gate", at("2026-11-30 08:00"))
    tour.scan("boiler", at("2026-11-30 08:10"))
    tour.scan("library", at("2026-11-30 08:14"))
    tour.scan("dorm", at("2026-11-30 08:45"))  # 45 min into a round of 30 + 10
    row = tour.round()
    assert row.state == "complete"
    assert (row.result["out_of_order"], row.result["late"]) == (["boiler"], ["dorm"])
    assert [s.status for s in tour.scans(row.id)] == ["ok", "out_of_order", "ok", "late"]


def test_a_round_not_started_alarms_at_the_minute_once_and_escalates(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.tick(at("2026-11-30 08:09:59"))
    assert tour.alarms() == []
    tour.tick(at("2026-11-30 08:10:00"))  # due 08:00, 10 min of grace
    (alarm,) = tour.alarms()
    row = tour.round()
    assert (alarm.alarm_type, alarm.key, alarm.device_id) == ("patrol_overdue", alarm_key(row.id), "patrol-main")
    assert (alarm.state, alarm.priority, alarm.latching, alarm.raised_at) == (
        "active_unack", 4, True, at("2026-11-30 08:10"))
    assert alarm.place == "patrol round 1 of Main round (Day, 2026-11-30) due 08:00 not started; guard on duty: 李巡逻"
    assert row.alerted_at == at("2026-11-30 08:10") and row.result["alerts"]["not_started"]["raised"] is True
    tour.tick(at("2026-11-30 08:10:01"))
    tour.tick(at("2026-11-30 08:11"))
    (alarm,) = tour.alarms()
    assert alarm.occurrences == 1, "once"
    assert tour.round().alarm_id == alarm.id

    # Nobody acknowledges: it escalates as any alarm does (the first person after 120 s).
    roster = [RosterEntry(id="leader", name="张校长")]
    waiting = [Unacknowledged(alarm.id, alarm.alarm_type, alarm.raised_at, 0, alarm.test)]
    assert escalations_due(waiting, at("2026-11-30 08:11:59"), EscalationConfig(), roster) == []
    (step,) = escalations_due(waiting, at("2026-11-30 08:12"), EscalationConfig(), roster)
    assert (step.alarm_id, step.person.name) == (alarm.id, "张校长")

    # The guard sets off: the condition is over, the alarm waits for a person.
    tour.scan("gate", at("2026-11-30 08:14"))
    (alarm,) = tour.alarms()
    assert (alarm.state, alarm.condition_active) == ("active_unack", False)
    assert tour.round().state == "in_progress"

    # ...and stops after the first checkpoint: stalled, 15 min after the last scan; the same alarm again.
    tour.tick(at("2026-11-30 08:28:59"))
    assert tour.alarms()[0].occurrences == 1
    tour.tick(at("2026-11-30 08:29"))
    (alarm,) = tour.alarms()
    assert (alarm.occurrences, alarm.condition_active, alarm.priority) == (2, True, 3)
    assert tour.round().result["alerts"].keys() == {"not_started", "stalled"}
    tour.tick(at("2026-11-30 08:40"))
    assert tour.alarms()[0].occurrences == 2


def test_a_stalled_round_alarms_with_what_is_left(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.scan("gate", at("2026-11-30 08:02"))
    tour.scan("library", at("2026-11-30 08:05"))
    tour.tick(at("2026-11-30 08:19:59"))
    assert tour.alarms() == []
    tour.tick(at("2026-11-30 08:20"))
    (alarm,) = tour.alarms()
    assert alarm.place == ("patrol round 1 of Main round (Day, 2026-11-30) stalled: no scan since 08:05; "
                           "still to visit: Boiler room, Dormitory; guard on duty: 李巡逻")


def test_device_time_decides_even_when_the_scan_arrives_after_the_window(tour: Tour) -> None:
    """A handheld uploads its last scan (made at 13:50) at 14:30, after round 1's window closed: it still
    completes round 1, and both times are kept."""
    tour.tick(at("2026-11-30 07:59"))
    for checkpoint, when in (("gate", "08:00"), ("library", "08:10"), ("boiler", "08:20")):
        tour.scan(checkpoint, at(f"2026-11-30 {when}"))
    tour.tick(at("2026-11-30 14:00"))
    assert tour.round().state == "incomplete"
    late_upload = tour.read(at("2026-11-30 13:50"), card=STAFF_CARD, device="cp-dorm")
    tour.deliver(late_upload, at("2026-11-30 14:30"))
    row = tour.round()
    assert (row.state, row.result["missed"], row.result["late"]) == ("complete", [], ["dorm"])
    (scan,) = [s for s in tour.scans(row.id) if s.checkpoint == "dorm"]
    assert (scan.device_time, scan.server_time) == (at("2026-11-30 13:50"), at("2026-11-30 14:30"))
    assert tour.round(number=2).state == "pending", "not round 2, although it was open when the scan arrived"


def test_unknown_tags_and_scans_outside_every_round(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    tour.deliver(tour.read(at("2026-11-30 09:00"), tag="NOT-A-CHECKPOINT"), at("2026-11-30 09:00"))
    tour.scan("gate", at("2026-11-30 07:30"))  # Sunday night's round 3 (04:00-08:00) takes it
    tour.scan("gate", at("2026-11-30 07:45"))  # ... as a repeat
    tour.scan("gate", at("2026-11-20 09:05"), received=at("2026-11-30 09:05"))  # replayed from a day not planned
    scans = tour.scans()
    assert [(s.checkpoint, s.tag, s.status, s.round_id is None) for s in scans] == [
        ("gate", "CP-GATE", "unplanned", True), ("gate", "CP-GATE", "ok", False),
        ("gate", "CP-GATE", "repeat", False), (None, "NOT-A-CHECKPOINT", "unknown", True)]
    assert tour.round("night", 3, "2026-11-29").state == "in_progress"


def test_an_overnight_round_after_midnight(tour: Tour) -> None:
    tour.tick(at("2026-11-30 19:59"))
    tour.scan("gate", at("2026-12-01 00:05"))
    tour.scan("library", at("2026-12-01 00:12"))
    tour.scan("boiler", at("2026-12-01 00:20"))
    tour.scan("dorm", at("2026-12-01 00:31"))
    tour.tick(at("2026-12-01 04:00"))
    row = tour.round("night", 2)
    assert (row.day, row.state, row.due_at) == ("2026-11-30", "complete", at("2026-12-01 00:00"))
    assert tour.round("night", 1).state == "expired"
    assert tour.round("night", 1).result["missed"] == ["gate", "library", "boiler", "dorm"]
    assert tour.round("night", 2).guard == "王保安", "no guard on the roster at night: the card at the dormitory says"


def test_which_reads_are_checkpoint_scans(tour: Tour) -> None:
    patrols, t = tour.patrols, at("2026-11-30 09:00")
    assert patrols.checkpoint_for(tour.read(t, tag="CP-LIB")) == "library"
    assert patrols.checkpoint_for(tour.read(t, tag="CP-LIB", device="gate-in", kind="reader")) == "library", (
        "a tag counts at any reader")
    assert patrols.checkpoint_for(tour.read(t, card="018,12345", device="cp-dorm")) == "dorm", "any card at a fixed one"
    assert patrols.checkpoint_for(tour.read(t, tag="CP-BOILER", device="cp-dorm")) == "boiler", "the tag says where"
    assert patrols.checkpoint_for(tour.read(t, card="018,12345", device="gate-in", kind="reader")) is None
    assert patrols.checkpoint_for(make_event(SITE, "checkpoint", "cp-dorm", "campus.device.offline", {}, 1,
                                             t.timestamp(), TZ)) is None
    # which reads the patrol takes alone (no access decision), and which a gate reader also decides on
    assert patrols.claims(tour.read(t, tag="NOT-A-CHECKPOINT")), "anything read at a checkpoint device"
    assert patrols.claims(tour.read(t, tag="CP-LIB", device="gate-in", kind="reader")), "a tag is no credential"
    assert not patrols.claims(tour.read(t, card="018,12345", device="gate-in", kind="reader"))
    assert not patrols.claims(make_event(SITE, "checkpoint", "cp-dorm", "campus.device.offline", {}, 1,
                                         t.timestamp(), TZ))


def test_replayed_scan_is_recorded_once(tour: Tour) -> None:
    tour.tick(at("2026-11-30 07:59"))
    event = tour.scan("gate", at("2026-11-30 08:00"))
    tour.deliver(event, at("2026-11-30 08:05"))
    with tour.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PatrolScan)) == 1


# -- the Patrols page --------------------------------------------------------------------------------------

PASSWORD = "correct horse battery"


@pytest.fixture
def page(tmp_path: Path, amqtt_broker: Any) -> Iterator[tuple[TestClient, Tour]]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
    seed(sessions)
    bus = Bus(broker_config(amqtt_broker.port), "patrols-test", name="console")
    bus.start()
    bus.wait_connected(5)
    app = create_app(SITE, "Test School", TZ, sessions, bus, "en")
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        assert client.post("/login", data={"username": "guard1", "password": PASSWORD}).status_code == 303
        yield client, Tour(sessions)
    bus.stop()
    engine.dispose()


def test_the_page_names_the_missed_checkpoint(page: tuple[TestClient, Tour]) -> None:
    client, tour = page
    tour.tick(at("2026-11-30 07:59"))
    tour.scan("gate", at("2026-11-30 08:01:07"), received=at("2026-11-30 08:01:09"))
    tour.scan("dorm", at("2026-11-30 08:06"))
    tour.scan("library", at("2026-11-30 08:20"))
    tour.scan("boiler", at("2026-11-30 14:10"))  # round 2
    tour.tick(at("2026-11-30 14:00:30"))

    html = client.get("/patrols", params={"day": "2026-11-30"}).text
    first = html.split('data-id="', 1)[1].split("</tr>", 1)[0]
    assert 'data-state="incomplete"' in first
    missed = first.split('class="cp missed" data-checkpoint="boiler">', 1)[1].split("</li>", 1)[0]
    assert "Boiler room" in missed and "missed" in missed
    assert "✓ 08:01:07" in first and "Server time 08:01:09" in first, "device time shown, the server's on hover"
    assert 'class="flag out_of_order">out of order' in first, "the dormitory came before the library"
    assert "王保安" in first and "Round 1" in first
    # the key areas: the boiler room in 1 round, the dormitory in 1, of 5 wanted (the default target)
    assert '<li class="short" data-checkpoint="boiler">Boiler room: <b>1</b> / 5</li>' in html

    board = client.get("/patrols/board", params={"day": "2026-11-30"})
    assert board.status_code == 200 and "<html" not in board.text and "Boiler room" in board.text
    data = client.get("/api/patrols", params={"day": "2026-11-30"}).json()
    (r1, r2) = [r for r in data["rounds"] if r["shift"] == "day"]
    assert (r1["state"], r1["missed"], r1["out_of_order"]) == ("incomplete", ["Boiler room"], ["Dormitory"])
    assert [c["status"] for c in r1["checkpoints"]] == ["visited", "visited", "missed", "visited"]
    assert r2["state"] == "in_progress" and r2["checkpoints"][2]["at"] == "14:10:00"

    # Given the site's patrol section, every key area shows, with the configured target.
    client.app.state.console.patrol = tour.config.patrol.model_copy(update={"key_area_rounds_per_day": 1})  # type: ignore[attr-defined]
    html = client.get("/patrols", params={"day": "2026-11-30"}).text
    assert '<li class="" data-checkpoint="boiler">Boiler room: <b>1</b> / 1</li>' in html

    csrf = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    chinese = client.post("/lang", data={"lang": "zh_CN", "next": "/patrols?day=2026-11-30", "csrf_token": csrf})
    assert chinese.status_code == 303
    html = client.get("/patrols", params={"day": "2026-11-30"}).text
    assert "漏巡" in html and "要害部位" in html and "未完成" in html
    assert client.get("/patrols", params={"day": "30/11/2026"}).status_code == 422


def test_an_empty_day(page: tuple[TestClient, Tour]) -> None:
    client, _ = page
    html = client.get("/patrols").text
    assert 'id="empty"' in html and 'id="nav-patrols"' in html


def test_a_round_at_a_random_time_is_shown_to_nobody_before_it_is_due(page: tuple[TestClient, Tour]) -> None:
    """不定时 (R18): the guard's page and the API say only how many random rounds are still to come."""
    client, tour = page
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.astimezone(TZ).date().isoformat()
    with tour.sessions.begin() as session:
        fixed = PatrolRound(route="main", shift="day", day=today, number=1, due_at=now - timedelta(minutes=5),
                            state="pending", result={"route": {"name": "Main round"}, "window_end": now.isoformat()})
        secret = PatrolRound(route="main", shift="night", day=today, number=1, due_at=now + timedelta(hours=1),
                             state="pending", result={"route": {"name": "Main round"}, "random": True,
                                                      "window_end": (now + timedelta(hours=3)).isoformat()})
        session.add_all([fixed, secret])
        session.flush()
        secret_id = secret.id
    data = client.get("/api/patrols").json()
    assert [r["shift"] for r in data["rounds"]] == ["day"] and data["random_to_come"] == 1
    html = client.get("/patrols").text
    assert f'data-id="{secret_id}"' not in html and 'id="random-to-come"' in html
    with tour.sessions.begin() as session:
        session.get(PatrolRound, secret_id).due_at = now - timedelta(seconds=1)  # type: ignore[union-attr]
    data = client.get("/api/patrols").json()
    assert sorted(r["shift"] for r in data["rounds"]) == ["day", "night"] and data["random_to_come"] == 0
