"""The duty roster against the real databases (SQLite and PostgreSQL), and through the console.

Assignments added, ordered, refused and removed with an audit row each; who is on duty at a given time (past
midnight too) and so whom an alarm goes to; a week copied; the CSV import (all or nothing, every wrong line
named, the file setting the shifts it names); the handover log carrying open items over; and the Duty page:
a guard hands over but may not edit the roster (403), a supervisor may; the staffing warnings show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from gateway import i18n
from gateway.bus import Bus
from gateway.config import BrokerConfig, DutyConfig, EscalationConfig, RosterEntry
from gateway.console import auth
from gateway.console.app import create_app
from gateway.console.pages import duty as duty_page
from gateway.records import db, people, roster
from gateway.records.models import AuditEntry, DutyAssignment, Handover
from gateway.records.roster import RosterError
from gateway.rules import roster as rules
from gateway.rules.escalation import Unacknowledged, escalations_due

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
D1, D2 = date(2026, 12, 1), date(2026, 12, 2)  # Tuesday, Wednesday
NOW = datetime(2026, 12, 1, 7, 0, tzinfo=TZ)
PASSWORD = "correct horse battery"
DUTY = DutyConfig.model_validate({"school_size": 2000, "shifts": [
    {"id": "day", "name": "白班", "from": "08:00", "to": "20:00"},
    {"id": "night", "name": "夜班", "from": "20:00", "to": "08:00"},
    {"id": "drop-off", "name": "早高峰", "from": "07:00", "to": "08:30", "post": "gate"}]})


def at(day: date, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes), tzinfo=TZ)


@pytest.fixture
def records(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        users: tuple[tuple[str, auth.Role], ...] = (("guard1", "guard"), ("guard2", "guard"), ("super1", "supervisor"))
        for name, role in users:
            auth.add_user(session, name, role, PASSWORD)
    yield sessions
    engine.dispose()


def put(session: Session, day: date | str, shift: str, role: str, name: str, **more: Any) -> DutyAssignment:
    return roster.assign(session, DUTY, TZ, day=day, shift=shift, role=role, name=name, actor="super1", now=NOW,
                         **more)


def audits(session: Session, action: str) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


# -- assignments ---------------------------------------------------------------------------------------


def test_assign_list_and_remove_with_an_audit_row_each(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        put(session, D1, "day", "guard", "李强", username="guard1", phone="138 0000 0001")
        put(session, D1, "day", "guard", "王刚")
        put(session, D1, "day", "leader", "赵校长", phone="13900000009")
        put(session, D1, "drop-off", "guard", "李强", username="guard1")  # the same guard at the gate as well
        put(session, D1, "night", "guard", "陈明")
    with records() as session:
        rows = roster.day_roster(session, D1)
        assert [(r.shift, r.role, r.name, r.position) for r in rows] == [
            ("drop-off", "guard", "李强", 0), ("day", "guard", "李强", 0), ("day", "guard", "王刚", 1),
            ("day", "leader", "赵校长", 0), ("night", "guard", "陈明", 0)]
        first = rows[1]
        assert (first.starts_at, first.ends_at) == (at(D1, "08:00"), at(D1, "20:00"))
        assert (first.phone, first.username, first.post) == ("13800000001", "guard1", None)
        assert rows[0].post == "gate", "a gate shift's people are at the gate unless said otherwise"
        assert rows[4].ends_at == at(D2, "08:00"), "the night shift ends the next morning"
        assert [a.target for a in audits(session, "roster.assign")] == [f"duty:{r.id}" for r in sorted(
            rows, key=lambda r: r.id)]

    refused = [
        (dict(shift="evening"), "shift", "there is no shift 'evening' (the shifts are: day, night, drop-off)"),
        (dict(role="cook"), "role", "the role is guard, leader, teacher or volunteer"),
        (dict(name="  "), "name", "enter the name"),
        (dict(username="nobody"), "username", "there is no console user 'nobody'"),
        (dict(phone="call me"), "phone", "a phone number has 5 to 20 digits"),
        (dict(post="roof"), "post", "the post is gate or patrol"),
        (dict(name="王刚"), "name", "王刚 is already on this shift"),
        (dict(day="1 Dec"), "day", "a date is written as YYYY-MM-DD"),
    ]
    for change, field, message in refused:
        values: dict[str, Any] = {"day": D1, "shift": "day", "role": "guard", "name": "新人", **change}
        with pytest.raises(RosterError) as caught, records.begin() as session:
            roster.assign(session, DUTY, TZ, actor="super1", now=NOW, **values)
        assert (caught.value.field, str(caught.value)) == (field, message)

    with records.begin() as session:
        put(session, "2026/12/1", "白班", "保安", "新人")  # as a Chinese spreadsheet writes them
        wang = session.scalars(select(DutyAssignment).where(DutyAssignment.name == "王刚")).one()
        roster.remove(session, wang.id, "super1", NOW)
    with records() as session:
        assert [(r.name, r.position) for r in roster.day_roster(session, D1) if r.shift == "day"
                and r.role == "guard"] == [("李强", 0), ("新人", 2)]
        assert audits(session, "roster.remove")[0].detail["name"] == "王刚"
    with pytest.raises(RosterError, match="no such assignment"), records.begin() as session:
        roster.remove(session, wang.id, "super1", NOW)


def test_who_is_on_duty_now_and_whom_an_alarm_goes_to(records: sessionmaker[Session]) -> None:
    fallback = [RosterEntry(id="office", name="School office")]
    with records.begin() as session:
        put(session, D1, "night", "guard", "Chen Ming")
        put(session, D1, "night", "guard", "周杰", username="guard2")
        put(session, D1, "night", "leader", "Vice Principal Zhang", phone="13900000001")
        put(session, D2, "drop-off", "guard", "Li Qiang", username="guard1")
        put(session, D2, "day", "teacher", "Teacher Sun")
    with records() as session:
        at_night = roster.on_duty_now(session, at(D2, "03:00"))
        assert [d.name for d in at_night.guards] == ["Chen Ming", "周杰"]
        assert at_night.leader is not None and at_night.leader.name == "Vice Principal Zhang"
        assert [d.name for d in roster.on_duty_now(session, at(D2, "07:30")).guards] == [
            "Chen Ming", "Li Qiang", "周杰"], "the gate guard joins the night's, by their order in the shift"
        assert not roster.on_duty_now(session, at(D1, "19:00")), "nobody on the roster before the night shift"
        people_now = roster.escalation_people(session, at(D2, "03:00"), fallback)
        assert [(p.id, p.name) for p in people_now] == [
            ("chen-ming", "Chen Ming"), ("guard2", "周杰"), ("vice-principal-zhang", "Vice Principal Zhang")]
        assert roster.escalation_people(session, at(D1, "19:00"), fallback) == fallback
        later = roster.on_duty_now(session, at(D2, "09:00"))
        assert ([d.name for d in later.guards], [d.name for d in later.others]) == ([], ["Teacher Sun"])
        assert roster.escalation_people(session, at(D2, "09:00"), fallback) == fallback

    raised = at(D2, "03:00")  # a panic at 03:00 nobody acknowledges: the night guards, then the leader
    with records() as session:
        steps = []
        for level in range(4):
            alarm = Unacknowledged(1, "panic", raised, level, False)
            when = raised + timedelta(seconds=30 + 60 * level)
            due = escalations_due([alarm], when, EscalationConfig(), roster.escalation_people(session, when, []))
            steps.append([s.person.name for s in due])
    assert steps == [["Chen Ming"], ["周杰"], ["Vice Principal Zhang"], []]


def test_staffing_warnings_from_the_records(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        for i, name in enumerate(("A", "B", "C", "D", "E")):
            put(session, D2, "day", "guard", name, phone=f"1380000000{i}")
        put(session, D2, "night", "guard", "F")
        put(session, D2, "drop-off", "guard", "G")
        put(session, D1, "night", "leader", "Leader 1")
        put(session, D2, "day", "leader", "Leader 2")
    with records() as session:
        assert [str(w) for w in roster.staffing(session, DUTY, TZ, [D2])] == [
            "夜班 2026-12-02: 1 guard, 5 needed for 2,000 people",
            "早高峰 2026-12-02: 1 guard at the gate, 2 needed at drop-off and pick-up",
            "2026-12-02: no leader on duty 20:00-12-03 08:00"]


def test_copy_a_week(records: sessionmaker[Session]) -> None:
    monday = date(2026, 11, 30)
    with records.begin() as session:
        put(session, monday, "day", "guard", "A")
        put(session, monday, "day", "guard", "B")
        put(session, D1, "night", "leader", "L")
        put(session, monday + timedelta(days=7), "day", "guard", "B")  # already there next week
    with records.begin() as session:
        done = roster.copy_week(session, DUTY, TZ, D1, D1 + timedelta(days=8), "super1", NOW)
    assert (done.copied, done.skipped) == (2, 1)
    with records() as session:
        next_monday = roster.day_roster(session, monday + timedelta(days=7))
        assert [(r.name, r.position) for r in next_monday] == [("B", 0), ("A", 1)]
        night = roster.day_roster(session, D1 + timedelta(days=7))[0]
        assert (night.name, night.starts_at) == ("L", at(D1 + timedelta(days=7), "20:00"))
        assert audits(session, "roster.copy_week")[0].detail == {"from": "2026-11-30", "copied": 2, "skipped": 1}
    with pytest.raises(RosterError, match="another week"), records.begin() as session:
        roster.copy_week(session, DUTY, TZ, D1, D2, "super1", NOW)


# -- CSV import ----------------------------------------------------------------------------------------


GOOD = """日期,班次,角色,姓名,用户名,电话
2026-12-01,day,guard,李强,guard1,13800000001
2026-12-01,白班,保安,王刚,,
2026/12/1,day,leader,赵校长,,13900000009
2026-12-01,night,guard,陈明,,
2026-12-02,day,guard,王刚,,
"""


def test_import_a_roster_from_csv(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        put(session, D1, "day", "guard", "旧人")  # on a shift the file sets: goes
        put(session, D1, "drop-off", "guard", "门卫")  # on a shift the file does not name: stays
        result = roster.import_roster(session, DUTY, TZ, people.decode_csv(GOOD.encode("gb18030")), "super1", NOW)
    assert result.ok and (result.shifts, result.added, result.removed, result.unchanged) == (3, 5, 1, 0)
    with records() as session:
        assert [(r.shift, r.role, r.name, r.position) for r in roster.day_roster(session, D1)] == [
            ("drop-off", "guard", "门卫", 0), ("day", "guard", "李强", 0), ("day", "guard", "王刚", 1),
            ("day", "leader", "赵校长", 0), ("night", "guard", "陈明", 0)]
        assert audits(session, "roster.import")[0].detail == {
            "from": "2026-12-01", "to": "2026-12-02", "shifts": 3, "added": 5, "updated": 0, "removed": 1,
            "unchanged": 0}

    swapped = GOOD.replace("李强,guard1,13800000001", "李强,guard1,13800000002").replace(
        "2026-12-01,night,guard,陈明,,\n", "")
    with records.begin() as session:  # a corrected file: the same again is unchanged, not doubled
        again = roster.import_roster(session, DUTY, TZ, swapped, "super1", NOW)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 1, 3, 0), \
        "the night shift is no longer in the file, so it is left as it is"
    with records() as session:
        assert len(roster.day_roster(session, D1)) == 5


def test_a_wrong_file_imports_nothing_and_names_every_wrong_line(records: sessionmaker[Session]) -> None:
    bad = """date,shift,role,name,username,phone
2026-12-01,day,guard,李强,guard1,
2026-13-01,day,guard,王刚,,
2026-12-01,evening,cook,,,
2026-12-01,day,guard,李强,,
2026-12-01,day,guard,张三,ghost,abc
2026-12-01,day,guard,赵六,,,extra
"""
    with records.begin() as session:
        result = roster.import_roster(session, DUTY, TZ, bad, "super1", NOW)
    assert [str(p) for p in result.errors] == [
        "line 3, column 'date': a date is written as YYYY-MM-DD",
        "line 4, column 'shift': there is no shift 'evening' (the shifts are: day, night, drop-off)",
        "line 4, column 'role': the role is guard, leader, teacher or volunteer",
        "line 4, column 'name': enter the name",
        "line 5, column 'name': 李强 is already on line 2 for this shift",
        "line 6, column 'phone': a phone number has 5 to 20 digits",
        "line 6, column 'username': there is no console user 'ghost'",
        "line 7: 7 fields, but the header has 6 columns"]
    with records() as session:
        assert roster.day_roster(session, D1) == [] and audits(session, "roster.import") == []

    for text, expected in [
        ("", ["line 1: the file is empty (expected a header: date, shift, role, name, username, phone, post)"]),
        ("date,shift,name,name,colour\n", [
            "line 1: unknown column 'colour' (expected: date, shift, role, name, username, phone, post)",
            "line 1: missing column 'role' (expected: date, shift, role, name, username, phone, post)",
            "line 1: column 'name' is there twice"]),
    ]:
        with records.begin() as session:
            assert [str(p) for p in roster.import_roster(session, DUTY, TZ, text, "super1", NOW).errors] == expected


# -- handover ------------------------------------------------------------------------------------------


def test_the_handover_log_carries_open_items_over(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        assert roster.carried_items(session) == (None, [])
        first = roster.hand_over(session, DUTY, shift="night", from_name="陈明", to_name="李强",
                                 notes="夜间无异常", new_items=["2号门锁坏了", "", "3号摄像头离线"], previous=None,
                                 actor="guard2", now=at(D2, "08:00"))
    with records.begin() as session:
        previous, carried = roster.carried_items(session)
        assert (previous, [i["text"] for i in carried]) == (first.id, ["2号门锁坏了", "3号摄像头离线"])
        second = roster.hand_over(session, DUTY, shift="day", from_name="李强", to_name="陈明", notes="",
                                  done=[1], new_items=["快递待领"], previous=first.id, actor="guard1",
                                  now=at(D2, "20:00"))
    with records() as session:
        items = session.get_one(Handover, second.id).open_items["items"]
        assert [(i["text"], i["done"]) for i in items] == [("2号门锁坏了", False), ("3号摄像头离线", True),
                                                           ("快递待领", False)]
        assert items[0]["since"] == at(D2, "08:00").isoformat(), "an item keeps when it was first handed over"
        assert [i["text"] for i in roster.carried_items(session)[1]] == ["2号门锁坏了", "快递待领"]
        assert [h.id for h in roster.handovers(session)] == [second.id, first.id]
        assert audits(session, "roster.handover")[1].detail == {
            "shift": "day", "from": "李强", "to": "陈明", "open": 2, "closed": 1}

    changes: list[tuple[dict[str, Any], str]] = [
        (dict(previous=first.id), "someone else handed over meanwhile"),  # the form showed the older items
        (dict(to_name=" "), "enter who takes over"),
        (dict(to_name="李强"), "a shift is handed over to someone else"),
        (dict(shift="lunch"), "there is no shift 'lunch'"),
        (dict(notes="x" * 4001), "the notes are longer than 4000 characters"),
    ]
    for change, message in changes:
        values: dict[str, Any] = {"shift": "night", "from_name": "李强", "to_name": "王刚", "notes": "",
                                  "previous": second.id, **change}
        with pytest.raises(RosterError, match=message), records.begin() as session:
            roster.hand_over(session, DUTY, actor="guard1", now=at(D2, "21:00"), **values)


# -- the console ---------------------------------------------------------------------------------------


CONSOLE_NOW = at(D1, "21:00")  # the page's clock: the night shift of the 1st


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    engine: Engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD, display_name="陈明")
        auth.add_user(session, "super1", "supervisor", PASSWORD)
        put(session, D1, "night", "guard", "陈明", username="guard1")
        put(session, D1, "night", "leader", "张副校长", phone="13900000001")
        for name in "ABCDE":
            put(session, D1, "day", "guard", name)
        put(session, D1, "day", "leader", "赵校长")
    monkeypatch.setattr(duty_page, "utcnow", lambda: CONSOLE_NOW)
    bus = Bus(BrokerConfig(url="mqtt://127.0.0.1:1"), "roster-test", name="console")  # not started: not needed
    app = create_app("s1", "Test School", TZ, sessions, bus, "en", duty=DUTY)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield {"client": client, "sessions": sessions}
    engine.dispose()


def login(client: TestClient, username: str) -> str:
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/alarms").text
    return page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')


def test_a_guard_sees_who_is_on_duty_and_the_warnings_and_hands_over(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "guard1")
    page = client.get("/duty")
    assert page.status_code == 200 and 'id="nav-duty"' in page.text
    text = page.text
    assert re.search(r'<li class="on">陈明', text) and re.search(r'<li class="on">张副校长 · 13900000001', text)
    assert 'id="mine"' in text, "the guard is told they are on duty"
    assert "陈明 → 张副校长" in text, "whom an alarm goes to, in turn"
    assert "夜班 2026-12-01: 1 guard, 5 needed for 2,000 people" in text
    assert "早高峰 2026-12-01: 0 guards at the gate, 2 needed at drop-off and pick-up" in text
    assert "2026-11-30" in text and "2026-12-06" in text, "this week, Monday to Sunday"
    assert 'action="/duty/assign"' not in text and 'class="remove"' not in text, "no editing offered to a guard"

    assert client.post("/duty/assign", data={"csrf_token": csrf, "day": "2026-12-02", "shift": "day",
                                             "role": "guard", "name": "X"}).status_code == 403
    assert client.post("/duty/1/remove", data={"csrf_token": csrf}).status_code == 403
    assert client.post("/duty/import", data={"csrf_token": csrf},
                       files={"file": ("r.csv", GOOD.encode(), "text/csv")}).status_code == 403
    assert client.post("/duty/copy", data={"csrf_token": csrf, "week": "2026-11-30",
                                           "to": "2026-12-07"}).status_code == 403

    form = {"csrf_token": csrf, "shift": "night", "from_name": "陈明", "to_name": "李强", "notes": "一切正常",
            "items": "2号门锁坏了\n", "previous": ""}
    assert 'name="from_name" id="h-from" required maxlength="100" value="陈明"' in text
    assert 'value="night" selected' in text.split('id="h-shift"')[1], "the shift being handed over is chosen"
    done = client.post("/duty/handover", data=form)
    assert done.status_code == 303 and done.headers["location"] == "/duty?done=handed_over#handovers"
    log = client.get(done.headers["location"]).text
    assert "Handed over." in log and "一切正常" in log and "2号门锁坏了" in log
    again = client.post("/duty/handover", data=form)  # the form of before: the items shown are no longer the latest
    assert again.status_code == 422 and "someone else handed over meanwhile" in again.text
    assert client.post("/duty/handover", data={**form, "csrf_token": "forged"}).status_code == 403
    with sessions() as session:
        assert [(a.actor, a.action) for a in audits(session, "roster.handover")] == [("guard1", "roster.handover")]
        assert roster.day_roster(session, D2) == []

    api = client.get("/api/duty/now").json()
    assert [g["name"] for g in api["guards"]] == ["陈明"] and api["escalation"] == ["陈明", "张副校长"]


def test_a_supervisor_edits_the_roster(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "super1")
    text = client.get("/duty").text
    assert 'action="/duty/assign"' in text and 'class="remove"' in text

    added = client.post("/duty/assign", data={"csrf_token": csrf, "day": "2026-12-01", "shift": "night",
                                              "role": "guard", "name": "周杰", "phone": "13800000002"})
    assert added.status_code == 303 and added.headers["location"].startswith("/duty?week=2026-12-01")
    assert "Added to the roster." in client.get(added.headers["location"]).text
    wrong = client.post("/duty/assign", data={"csrf_token": csrf, "day": "2026-12-01", "shift": "night",
                                              "role": "guard", "name": "周杰"})
    assert wrong.status_code == 422 and "周杰 is already on this shift" in wrong.text and 'value="周杰"' in wrong.text
    assert "夜班 2026-12-01: 2 guards, 5 needed" in wrong.text

    with sessions() as session:
        zhou = session.scalars(select(DutyAssignment).where(DutyAssignment.name == "周杰")).one()
    removed = client.post(f"/duty/{zhou.id}/remove", data={"csrf_token": csrf})
    assert removed.status_code == 303

    bad = client.post("/duty/import", data={"csrf_token": csrf},
                      files={"file": ("r.csv", b"date,shift,role,name\n2026-12-02,day,cook,X\n", "text/csv")})
    assert bad.status_code == 422 and "Nothing was imported" in bad.text
    assert "line 2, column &#39;role&#39;: the role is guard, leader, teacher or volunteer" in bad.text
    good = client.post("/duty/import", data={"csrf_token": csrf},
                       files={"file": ("r.csv", GOOD.encode("gb18030"), "text/csv")})
    assert good.status_code == 200 and "Imported: 3 shifts; 3 added, 2 changed, 6 removed, 0 unchanged." in good.text
    assert client.post("/duty/import", files={"file": ("r.csv", GOOD.encode(), "text/csv")}).status_code == 403, \
        "an upload needs the CSRF token too"

    copied = client.post("/duty/copy", data={"csrf_token": csrf, "week": "2026-11-30", "to": "2026-12-07"})
    assert copied.status_code == 200 and "Copied: 5 assignments" in copied.text and "2026-12-13" in copied.text
    with sessions() as session:
        actions = [a.action for a in session.scalars(select(AuditEntry).where(AuditEntry.action.like("roster.%"))
                                                     .order_by(AuditEntry.id))]
    assert actions[-4:] == ["roster.assign", "roster.remove", "roster.import", "roster.copy_week"]


def test_the_page_in_chinese(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    client.post("/lang", data={"lang": "zh_CN", "next": "/duty", "csrf_token": csrf})
    text = client.get("/duty").text
    assert "值班表" in text and "夜班 2026-12-01：保安 1 人，按 2,000 人规模需 5 人" in text and "带班领导" in text


def test_every_roster_message_is_in_both_catalogues() -> None:
    """Messages the page fills in (warnings, errors, notices) are not found by test_i18n's scan of literals."""
    source = (Path(roster.__file__)).read_text(encoding="utf-8")
    messages = set(re.findall(r'RosterError\(\s*"([^"]+)"', source))
    messages |= set(re.findall(r'CsvProblem\([^,]+,\s*[^,]+,\s*"([^"]+)"', source))
    messages |= {"line {line}", "line {line}, column '{column}'", rules.NO_LEADER, rules.EMPTY_DAY,
                 duty_page.IMPORTED, duty_page.COPIED, *rules.SHORT_MESSAGES.values(), *duty_page.NOTICES.values(),
                 *duty_page.ROLE_LABELS.values(), *duty_page.POST_LABELS.values()}
    assert len(messages) > 40
    for language in i18n.LANGUAGES:
        assert not messages - i18n.catalogue_ids(language), language
