"""People and visitors against the real databases (SQLite and PostgreSQL), and through the console's HTTP API.

The CSV import, a registration's encrypted and masked numbers, the watch list refusing and alarming, the
supervisors' audited view of full numbers (guards get 403), the purge after the retention period, the
day-end sweep, a visit from registration through the gate readers to the overstay alert and check-out,
and the access log's filters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gateway.bus import Bus
from gateway.cli import main as cli
from gateway.config import AccessConfig
from gateway.config_file import validate_config
from gateway.console import auth
from gateway.console.app import create_app
from gateway.events import make_event
from gateway.personal import PersonalData
from gateway.records import db, people, visits, watchlist
from gateway.records.models import AccessEvent, Alarm, AuditEntry, Credential, Device, Person, Visit, WatchEntry
from gateway.records.visits import VisitError
from gateway.rules_service.access_shell import Gate
from gateway.rules_service.service import RulesService
from tests.support import broker_config, wait_for

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 9, 1, 9, 0, tzinfo=TZ)
KEY = bytes(range(32))
PASSWORD = "correct horse battery"


def resident_id(seq: int = 1234) -> str:
    """A valid 18-character resident ID number (GB 11643 check digit) ending in `seq`'s digits."""
    first17 = f"44010619900101{seq:03d}"[-17:]
    return first17 + visits.resident_id_check_digit(first17)


ID = resident_id(123)  # 440106199001011232-ish, with its real check digit


@pytest.fixture
def records(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield db.make_sessions(engine)
    engine.dispose()


@pytest.fixture
def personal() -> PersonalData:
    return PersonalData(KEY)


def add_staff(sessions: sessionmaker[Session], name: str = "王芳", group: str | None = "语文组",
              external_id: str = "T001") -> int:
    with sessions.begin() as session:
        person = Person(kind="staff", name=name, group_name=group, external_id=external_id, active=True,
                        created_at=NOW, updated_at=NOW)
        session.add(person)
        session.flush()
        return person.id


def register(sessions: sessionmaker[Session], personal: PersonalData, host: int, *, number: str = ID,
             phone: str | None = "13812345678", now: datetime = NOW, minutes: int = 60,
             name: str = "张三") -> visits.Registration:
    with sessions.begin() as session:
        return visits.register_visit(session, personal, name=name, id_type="resident_id", id_number=number,
                                     phone=phone, host_id=host, purpose="家长来访", expected_minutes=minutes,
                                     now=now, registered_by="guard1")


# -- CSV -------------------------------------------------------------------------------------------

GOOD = """kind,external_id,name,group,card
student,S1001,李明,三年级二班,"18,54919"
student,S1002,王小红,三年级二班,0001234567
staff,T001,王芳,语文组,
"""


def test_csv_import_upserts_and_a_bad_file_imports_nothing(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        first = people.import_people(session, GOOD, NOW)
    assert (first.ok, first.created, first.updated, first.cards) == (True, 3, 0, 2)
    with records() as session:
        cards = {c.value: session.get_one(Person, c.person_id).external_id for c in session.scalars(select(Credential))}
    assert cards == {"018,54919": "S1001", "0001234567": "S1002"}, "cards normalised as the readers print them"

    # Again, with a new class for one student and the two cards swapped between them.
    again = (GOOD.replace("三年级二班,\"18,54919\"", "四年级一班,1234567")
             .replace("三年级二班,0001234567", "三年级二班,018-54919"))
    with records.begin() as session:
        second = people.import_people(session, again, NOW)
    assert (second.ok, second.created, second.updated, second.unchanged, second.cards) == (True, 0, 1, 2, 2)
    with records() as session:
        active = {c.value: session.get_one(Person, c.person_id).external_id
                  for c in session.scalars(select(Credential).where(Credential.revoked.is_(False)))}
        assert active == {"0001234567": "S1001", "018,54919": "S1002"}
        assert session.scalar(select(Person.group_name).where(Person.external_id == "S1001")) == "四年级一班"

    bad = ("kind,external_id,name,group,card\n"
           "student,S2001,新同学,一班,\n"
           "teacher,T009,赵老师,,\n"              # line 3: kind
           "staff,,钱老师,,\n"                    # line 4: external_id empty
           "student,S2001,重复,一班,\n"            # line 5: the same number again
           "student,S2002,孙同学,一班,not-a-card\n"  # line 6: card
           "student,S2003,周同学,一班,1234567\n")    # line 7: S1001's card, and S1001 is not in this file
    with records.begin() as session:
        refused = people.import_people(session, bad, NOW)
    assert not refused.ok and (refused.created, refused.updated) == (0, 0)
    assert refused.errors[:4] == [
        "line 3, column 'kind': expected student or staff, got 'teacher'",
        "line 4, column 'external_id': empty (a student or staff number is needed to update the person later)",
        "line 5, column 'external_id': S2001 is already on line 2",
        "line 6, column 'card': credential 'not-a-card': expected facility,number as printed on the card "
        "(e.g. 018,54919) or the card number alone (up to 10 digits)",
    ]
    with records.begin() as session:  # the card check needs the database, so it comes once the lines are good
        owned = people.import_people(session, "kind,external_id,name,card\nstudent,S2003,周同学,1234567\n", NOW)
    assert owned.errors == ["line 2, column 'card': card 0001234567 belongs to 李明 (S1001); take it from them "
                            "first (give them another card in this file)"]
    with records() as session:
        assert session.scalar(select(func.count()).select_from(Person)) == 3, "nothing of a bad file is imported"

    with records.begin() as session:
        header = people.import_people(session, "kind,id,name\nstudent,1,x\n", NOW)
    assert header.errors == ["line 1: unknown column 'id' (expected: kind, external_id, name, group, card)",
                             "line 1: missing column 'external_id' (expected: kind, external_id, name, group, card)"]


def test_people_import_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: s1, name: Test}}\ndatabase: {{url: 'sqlite:///{tmp_path / 'r.db'}'}}\n")
    good = tmp_path / "people.csv"
    good.write_bytes(GOOD.encode("gb18030"))  # as Excel on a Chinese Windows saves it
    assert cli(["people", "import", str(good), "-c", str(site)]) == 0
    assert "3 added, 0 updated, 0 unchanged; 2 cards assigned" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,external_id,name\nparent,P1,x\n", encoding="utf-8-sig")
    assert cli(["people", "import", str(bad), "-c", str(site)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s); nothing was imported" in err and "line 2, column 'kind'" in err


# -- registration, watch list, reveal ----------------------------------------------------------------------


def test_a_registration_keeps_the_numbers_encrypted_and_masked(records: sessionmaker[Session],
                                                               personal: PersonalData) -> None:
    host = add_staff(records)
    done = register(records, personal, host)
    assert done.token is not None and visits.PASS_TOKEN.match(done.token) and not done.watchlisted
    with records() as session:
        visit = session.get_one(Visit, done.visit.id)
        assert visit.state == "registered" and visit.host_name == "王芳"
        assert visit.id_number_masked == ID[:4] + "*" * 10 + ID[-4:]
        assert visit.phone_masked == "138****5678"
        assert visit.id_number_hash == personal.id_hash(ID)
        credential = session.scalars(select(Credential).where(Credential.visit_id == visit.id)).one()
        assert (credential.kind, credential.value) == ("qr", done.token)
        assert credential.valid_from == NOW and credential.valid_until == NOW + timedelta(minutes=60 + 60)
        # Nothing in the row holds the numbers in clear (nor their middle digits).
        row = session.execute(text("SELECT * FROM visits WHERE id = :id"), {"id": visit.id}).mappings().one()
        for column, value in row.items():
            assert ID not in str(value) and ID[6:14] not in str(value), column
            assert "13812345678" not in str(value) and "1234567" not in str(value), column
        assert personal.decrypt(visit.id_number_enc or "") == ID
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "visitor.register")).one()
        assert audit.actor == "guard1" and ID not in json.dumps(audit.detail, ensure_ascii=False)


@pytest.mark.parametrize(("id_type", "number", "message"), [
    ("resident_id", ID[:-1] + ("0" if ID[-1] != "0" else "1"), "this resident ID number is not valid (check digit)"),
    ("resident_id", "44010619900101", "a resident ID number has 18 characters"),
    ("passport", "E1", "a passport number has 5 to 20 letters and digits"),
])
def test_a_wrong_id_number_is_refused_before_anything_is_written(records: sessionmaker[Session],
                                                                 personal: PersonalData, id_type: str, number: str,
                                                                 message: str) -> None:
    host = add_staff(records)
    with pytest.raises(VisitError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught, \
            records.begin() as session:
        visits.register_visit(session, personal, name="张三", id_type=id_type, id_number=number, phone=None,
                              host_id=host, purpose="开会", expected_minutes=30, now=NOW, registered_by="guard1")
    assert caught.value.field == "id_number"
    with records() as session:
        assert session.scalar(select(func.count()).select_from(Visit)) == 0


def test_a_watch_list_hit_refuses_the_visit_and_raises_the_top_alarm(records: sessionmaker[Session],
                                                                     personal: PersonalData) -> None:
    host = add_staff(records)
    with records.begin() as session:
        entry, current = watchlist.add_watch_entry(session, personal, id_number=ID, name="某某", reason="公安通报",
                                                actor="super1", now=NOW)
    assert current == [] and entry.id_number_masked.startswith(ID[:4])
    spaced = f"{ID[:6]} {ID[6:14]} {ID[14:]}".lower()  # typed with spaces, a lower-case x: the same number
    with records.begin() as session:
        done = visits.register_visit(session, personal, name="李四", id_type="resident_id", id_number=spaced,
                                     phone=None, host_id=host, purpose="找人", expected_minutes=30, now=NOW,
                                     registered_by="guard1")
        assert done.watchlisted and done.token is None
        changed = visits.raise_watchlist_alarm(session, done.visit, NOW)
    with records() as session:
        visit = session.get_one(Visit, done.visit.id)
        assert visit.state == "refused"
        assert session.scalars(select(Credential).where(Credential.visit_id == visit.id)).all() == []
        alarm = session.get_one(Alarm, changed[0])
        assert (alarm.alarm_type, alarm.priority, alarm.latching, alarm.key) == (
            "watchlist", 1, True, f"visit-{visit.id}:watchlist")
        assert "李四" in (alarm.place or "") and ID not in (alarm.place or "")
        refused = session.scalars(select(AuditEntry).where(AuditEntry.action == "visitor.register")).one()
        assert refused.result == "refused"


def test_a_person_added_to_the_watch_list_while_expected_is_refused(records: sessionmaker[Session],
                                                                   personal: PersonalData) -> None:
    host = add_staff(records)
    expected = register(records, personal, host)
    with records.begin() as session:
        _, current = watchlist.add_watch_entry(session, personal, id_number=ID, name="张三", reason="通报",
                                            actor="super1", now=NOW + timedelta(minutes=5))
        assert [v.id for v in current] == [expected.visit.id]
    with records() as session:
        assert session.get_one(Visit, expected.visit.id).state == "refused"
        assert session.scalars(select(Credential.revoked).where(Credential.visit_id == expected.visit.id)).one()


def test_reveal_gives_the_full_number_and_audits_it(records: sessionmaker[Session], personal: PersonalData) -> None:
    host = add_staff(records)
    done = register(records, personal, host)
    with records.begin() as session:
        assert visits.reveal(session, personal, done.visit.id, "id_number", "super1", NOW) == ID
        assert visits.reveal(session, personal, done.visit.id, "phone", "super1", NOW) == "13812345678"
    with records() as session:
        views = session.scalars(select(AuditEntry).where(AuditEntry.action == "personal_data.view")
                                .order_by(AuditEntry.id)).all()
    assert [(a.actor, a.target, a.detail) for a in views] == [
        ("super1", f"visit:{done.visit.id}", {"field": "id_number"}),
        ("super1", f"visit:{done.visit.id}", {"field": "phone"})]


def test_host_approval_and_the_desk_check_in_look_at_the_watch_list_again(records: sessionmaker[Session],
                                                                         personal: PersonalData) -> None:
    host = add_staff(records)
    with records.begin() as session:
        waiting = visits.register_visit(session, personal, name="张三", id_type="passport", id_number="e1234567",
                                        phone=None, host_id=host, purpose="开会", expected_minutes=30, now=NOW,
                                        registered_by="guard1", approval_needed=True)
    assert (waiting.visit.state, waiting.token) == ("awaiting_approval", None), "no pass before the host agrees"
    later = NOW + timedelta(minutes=10)
    with records.begin() as session:
        token = visits.approve_visit(session, waiting.visit.id, "guard1", later)
    with records() as session:
        visit = session.get_one(Visit, waiting.visit.id)
        assert visit.state == "approved" and visit.valid_from == later
        assert visit.valid_until == later + timedelta(minutes=30 + visits.PASS_MARGIN_MIN)
        assert visits.pass_token(session, visit.id) == token
    with pytest.raises(VisitError, match="not waiting for approval"), records.begin() as session:
        visits.approve_visit(session, waiting.visit.id, "guard1", later)

    with records.begin() as session:  # listed between the approval and the visitor walking in
        session.add(WatchEntry(id_number_hash=personal.id_hash("E1234567"), id_number_enc="-", id_number_masked="-",
                               name="张三", reason="通报", added_by="super1", added_at=later, active=True))
    with records.begin() as session:
        visit, alarms = visits.check_in(session, waiting.visit.id, "guard1", later + timedelta(minutes=1))
        assert visit.state == "refused" and len(alarms) == 1
    with records() as session:
        assert visits.pass_token(session, waiting.visit.id) is None, "the pass is revoked"


# -- retention and the day's end ---------------------------------------------------------------------------


def test_purge_removes_expired_personal_data_and_keeps_recent(records: sessionmaker[Session],
                                                              personal: PersonalData, tmp_path: Path) -> None:
    host = add_staff(records)
    old = register(records, personal, host, now=NOW - timedelta(days=200), number=resident_id(1))
    recent = register(records, personal, host, now=NOW - timedelta(days=10), number=resident_id(2))
    still_here = register(records, personal, host, now=NOW - timedelta(days=200), number=resident_id(3))
    (tmp_path / "gate-cam").mkdir()
    (tmp_path / "gate-cam" / "latest.jpg").write_bytes(b"\xff\xd8 a jpeg")
    with records.begin() as session:
        for visit in (old, recent):
            assert visits.keep_photo(session, tmp_path, "gate-cam", visit.visit.id)
    with records.begin() as session:
        visits.check_out(session, old.visit.id, "guard1", NOW - timedelta(days=200) + timedelta(hours=1))
        visits.check_out(session, recent.visit.id, "guard1", NOW - timedelta(days=10) + timedelta(hours=1))
        session.get_one(Visit, still_here.visit.id).state = "on_site"  # not over: never purged while it lasts
    with records.begin() as session:
        assert visits.purge_personal_data(session, NOW - timedelta(days=180), NOW, tmp_path) == 1
        assert visits.purge_personal_data(session, NOW - timedelta(days=180), NOW, tmp_path) == 0, "once"
    assert not visits.photo_path(tmp_path, old.visit.id).exists(), "the photo file is deleted with the numbers"
    assert visits.photo_path(tmp_path, recent.visit.id).exists()
    with records() as session:
        gone = session.get_one(Visit, old.visit.id)
        assert (gone.id_number_enc, gone.id_number_masked, gone.id_number_hash, gone.phone_enc, gone.phone_masked,
                gone.photo_ref) == (None,) * 6
        assert gone.purged_at == NOW and gone.name == "张三" and gone.host_name == "王芳", "the log itself stays"
        kept = session.get_one(Visit, recent.visit.id)
        assert kept.id_number_enc and kept.phone_masked == "138****5678" and kept.purged_at is None
        assert session.get_one(Visit, still_here.visit.id).id_number_enc is not None
    with pytest.raises(VisitError, match="deleted after the retention period"), records.begin() as session:
        visits.reveal(session, personal, old.visit.id, "id_number", "super1", NOW)


def test_the_rules_service_purges_hourly_with_the_configured_retention(records: sessionmaker[Session],
                                                                       personal: PersonalData) -> None:
    host = add_staff(records)
    now = datetime.now(TZ)
    old = register(records, personal, host, now=now - timedelta(days=40), number=resident_id(1))
    with records.begin() as session:
        visits.check_out(session, old.visit.id, "guard1", now - timedelta(days=40) + timedelta(hours=1))
    config = validate_config({"site": {"id": "s1", "name": "T"}, "access": {"personal_data_days": 30}})
    service = RulesService("s1", None, records, config)  # type: ignore[arg-type]  # _purge publishes nothing
    service._purge()
    with records() as session:
        assert session.get_one(Visit, old.visit.id).purged_at is not None


def test_the_day_end_sweep_finds_walk_outs_and_no_shows(records: sessionmaker[Session],
                                                        personal: PersonalData) -> None:
    host = add_staff(records)
    yesterday = NOW - timedelta(days=1)
    walked = register(records, personal, host, now=yesterday, number=resident_id(1))
    never_came = register(records, personal, host, now=yesterday, number=resident_id(2))
    today = register(records, personal, host, now=NOW.replace(hour=0, minute=5), number=resident_id(3))
    with records.begin() as session:
        visits.check_in(session, walked.visit.id, "guard1", yesterday + timedelta(minutes=2))
        visits.check_in(session, today.visit.id, "guard1", NOW.replace(hour=0, minute=6))
    with records.begin() as session:
        assert visits.sweep_day_end(session, NOW, TZ) == {"no_checkout": 1, "no_show": 1}
        assert visits.sweep_day_end(session, NOW, TZ) == {"no_checkout": 0, "no_show": 0}
    with records() as session:
        states = {v.id: v.state for v in session.scalars(select(Visit))}
        assert states == {walked.visit.id: "no_checkout", never_came.visit.id: "no_show", today.visit.id: "on_site"}
        revoked = {v: r for v, r in session.execute(select(Credential.visit_id, Credential.revoked))}
        assert revoked == {walked.visit.id: True, never_came.visit.id: True, today.visit.id: False}


def test_a_visit_through_the_gate_readers_overstays_and_leaves(records: sessionmaker[Session],
                                                               personal: PersonalData) -> None:
    """Registration here, the passages and the overstay alert by the rules service's gate."""
    host = add_staff(records)
    done = register(records, personal, host, minutes=30)
    assert done.token is not None
    gate = Gate("s1", AccessConfig(overstay_grace_min=15), TZ)

    def scan(direction: str, at: datetime) -> None:
        event = make_event("s1", "reader", "gate-qr", "campus.reader.code_scanned",
                           {"reader": 0, "code": done.token, "direction": direction}, 1, at.timestamp(), TZ)
        with records.begin() as session:
            gate.on_read(session, event, at, {})

    scan("entry", NOW + timedelta(minutes=1))
    with records.begin() as session:
        assert [v.id for v in visits.visitors_on_site(session)] == [done.visit.id]
        assert gate.overstays(session, NOW + timedelta(minutes=40), {}) == [], "within the grace"
        late = gate.overstays(session, NOW + timedelta(minutes=47), {})
        assert [e.alarm_type for e in late] == ["visitor_overstay"]  # type: ignore[union-attr]
    scan("exit", NOW + timedelta(minutes=50))
    with records() as session:
        visit = session.get_one(Visit, done.visit.id)
        assert (visit.state, visit.checked_out_by) == ("left", "gate-qr")
        assert [e.granted for e in session.scalars(select(AccessEvent).order_by(AccessEvent.at))] == [True, True]
    with pytest.raises(VisitError, match="has already left"), records.begin() as session:
        visits.check_out_by_pass(session, done.token, "guard1", NOW + timedelta(minutes=51))


# -- the console -------------------------------------------------------------------------------------------


@pytest.fixture
def console(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    engine: Engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        for name, role in (("guard1", "guard"), ("super1", "supervisor")):
            auth.add_user(session, name, role, PASSWORD)
        session.add(Device(id="gate-qr", kind="reader", driver="serial_reader", test_mode=False))
    host = add_staff(sessions)
    bus = Bus(broker_config(amqtt_broker.port), "visitors-test", name="console")
    bus.start()
    bus.wait_connected(5)
    app = create_app("s1", "Test School", TZ, sessions, bus, "en", personal=PersonalData(KEY))
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield {"client": client, "sessions": sessions, "host": host, "bus": bus}
    bus.stop()
    engine.dispose()


def login(client: TestClient, username: str) -> str:
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/alarms").text
    return page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')


def form(csrf: str, **values: str) -> dict[str, str]:
    return {"csrf_token": csrf, "name": "张三", "id_type": "resident_id", "id_number": ID, "phone": "13812345678",
            "host": "王芳 (语文组)", "purpose": "家长来访", "expected_minutes": "60", **values}


def test_a_guard_registers_prints_and_checks_out_by_scanning(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "guard1")
    page = client.get("/visitors")
    assert page.status_code == 200 and 'id="name"' in page.text and "autofocus" in page.text
    assert '<option value="王芳 (语文组)">' in page.text, "the host field suggests the staff"

    wrong = client.post("/visitors", data=form(csrf, host="没有这个人"))
    assert wrong.status_code == 422 and "choose the host from the staff list" in wrong.text
    assert 'value="张三"' in wrong.text, "what was typed is kept"

    done = client.post("/visitors", data=form(csrf, host="王芳"))  # a full name is enough
    assert done.status_code == 303 and done.headers["location"].endswith("/pass")
    printed = client.get(done.headers["location"]).text
    assert 'class="qr"' in printed and "<svg" in printed and "王芳" in printed and "@page { size: 62mm" in printed
    with sessions() as session:
        visit = session.scalars(select(Visit)).one()
        token = visits.pass_token(session, visit.id)
    assert token is not None

    listing = client.get("/visitors").text
    assert ID not in listing and ID[:4] + "*" * 10 + ID[-4:] in listing and "138****5678" in listing
    assert 'class="reveal"' not in listing, "a guard is offered no full numbers"
    api = client.get("/api/visitors").json()
    assert [(v["name"], v["id_number"], v["phone"]) for v in api] == [
        ("张三", ID[:4] + "*" * 10 + ID[-4:], "138****5678")]

    out = client.post("/visitors/checkout", data={"csrf_token": csrf, "token": token})
    assert out.status_code == 303
    assert "Checked out: 张三" in client.get(out.headers["location"]).text
    again = client.post("/visitors/checkout", data={"csrf_token": csrf, "token": token})
    assert again.status_code == 409 and "has already left" in again.text
    with sessions() as session:
        visit = session.get_one(Visit, visit.id)
        assert (visit.state, visit.checked_out_by) == ("left", "guard1")
    assert client.post("/visitors/checkout", data={"token": token}).status_code == 403, "CSRF"


def test_guards_see_masks_and_supervisors_reveal_with_an_audit_row(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "guard1")
    body = {"name": "张三", "id_type": "resident_id", "id_number": ID, "phone": "138 1234 5678",
            "host_id": console["host"], "purpose": "送教材", "expected_minutes": 30}
    made = client.post("/api/visitors", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    visit_id = made.json()["visit"]["id"]
    assert visits.PASS_TOKEN.match(made.json()["pass"])
    refused = client.post(f"/api/visitors/{visit_id}/reveal", json={"field": "id_number"},
                          headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and refused.json()["detail"] == "Your role may not do this."
    assert client.get("/visitors/watchlist").status_code == 403
    assert client.get("/api/watchlist").status_code == 403

    csrf = login(client, "super1")
    assert 'class="reveal"' in client.get("/visitors").text
    shown = client.post(f"/api/visitors/{visit_id}/reveal", json={"field": "id_number"},
                        headers={"X-CSRF-Token": csrf})
    assert shown.status_code == 200 and shown.json()["value"] == ID
    assert client.post(f"/api/visitors/{visit_id}/reveal", json={"field": "phone"},
                       headers={"X-CSRF-Token": csrf}).json()["value"] == "13812345678"
    assert client.post(f"/api/visitors/{visit_id}/reveal", json={"field": "phone"}).status_code == 403, "CSRF"
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "personal_data.view")).all()
    assert [(a.actor, a.target, a.detail["field"]) for a in rows] == [
        ("super1", f"visit:{visit_id}", "id_number"), ("super1", f"visit:{visit_id}", "phone")]


def test_the_watch_list_page_refuses_a_registration_and_the_alarm_is_published(console: dict[str, Any]) -> None:
    client, sessions, bus = console["client"], console["sessions"], console["bus"]
    seen: list[dict[str, Any]] = []
    got = threading.Event()

    def on_alarm(message: Any) -> None:
        seen.append(json.loads(message.payload))
        got.set()

    bus.subscribe("campus/v1/s1/rules/alarms/+", on_alarm)
    csrf = login(client, "super1")
    added = client.post("/visitors/watchlist", data={"csrf_token": csrf, "id_number": ID, "name": "某某",
                                                     "reason": "公安机关通报"})
    assert added.status_code == 303
    listed = client.get("/visitors/watchlist").text
    assert "某某" in listed and ID not in listed and ID[:4] + "*" * 10 + ID[-4:] in listed
    twice = client.post("/visitors/watchlist", data={"csrf_token": csrf, "id_number": ID, "name": "某某",
                                                     "reason": "again"})
    assert twice.status_code == 422 and "already on the watch list" in twice.text

    csrf = login(client, "guard1")
    hit = client.post("/visitors", data=form(csrf))
    assert hit.status_code == 303
    page = client.get(hit.headers["location"]).text
    assert 'id="refused"' in page and '<svg' not in page, "no pass for a watch-listed person"
    wait_for(got.is_set, 5, "the watch-list alarm on MQTT")
    assert seen[0]["alarm_type"] == "watchlist" and seen[0]["priority"] == 1
    with sessions() as session:
        visit = session.scalars(select(Visit)).one()
        assert visit.state == "refused"
        assert session.scalar(select(func.count()).select_from(WatchEntry)) == 1


def test_the_access_log_filters_by_local_date_reader_name_and_result(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    with sessions.begin() as session:
        session.add_all([Person(id=900, kind="student", name="李明", group_name="三年级二班", active=True,
                                created_at=NOW, updated_at=NOW)])
        now = datetime.now(TZ).replace(microsecond=0)
        rows = [  # (at, reader, person, kind, direction, granted, reason)
            (datetime(2026, 3, 1, 23, 30, tzinfo=TZ), "gate-qr", 900, "student", "entry", True, "granted"),
            (datetime(2026, 3, 2, 0, 30, tzinfo=TZ), "gate-qr", 900, "student", "exit", False, "closed_campus"),
            (now - timedelta(hours=2), "gate-card", 900, "student", "entry", True, "granted"),
            (now - timedelta(hours=1), "gate-card", console["host"], "staff", "entry", True, "granted"),
            (now - timedelta(minutes=30), "gate-card", None, None, "entry", False, "unknown_credential"),
        ]
        for n, (at, reader, person, kind, direction, granted, reason) in enumerate(rows):
            name = {900: "李明", console["host"]: "王芳"}.get(person or 0)
            session.add(AccessEvent(id=f"00000000-0000-7000-8000-{n:012d}", at=at, reader=reader,
                                    direction=direction, credential=None, person_id=person, person_name=name,
                                    person_kind=kind, granted=granted, reason=reason, detail="...", passback=False))
    login(client, "guard1")
    everything = client.get("/api/access").json()
    assert everything["total"] == 5 and everything["events"][0]["reason"] == "unknown_credential", "newest first"
    day = client.get("/api/access", params={"from": "2026-03-01", "to": "2026-03-01"}).json()
    assert [e["at"] for e in day["events"]] == ["2026-03-01T23:30:00+08:00"], "the site's day, not UTC's"
    assert client.get("/api/access", params={"reader": "gate-card", "result": "denied"}).json()["total"] == 1
    assert client.get("/api/access", params={"name": "李", "result": "granted"}).json()["total"] == 2
    assert client.get("/api/access", params={"reason": "closed_campus"}).json()["total"] == 1
    assert client.get("/api/access", params={"from": "1 March"}).status_code == 422
    here = client.get("/api/access/on-site").json()
    assert (here["staff"], here["students"], here["visitors"]) == (1, 1, 0)
    assert here["names"]["students"] == ["李明 (三年级二班)"]
    page = client.get("/access", params={"result": "denied"}).text
    assert "Closed campus (lessons)" in page and "Unknown card or code" in page and 'id="here-staff"' in page
