"""The safety ledger against the real databases (SQLite and PostgreSQL), with a clock the test moves.

An alarm promoted to an incident (its place, time and camera evidence on the timeline), the checklist, the
deadline alerts raised as alarms once each at the right minute and cleared by the report, hazards through
their lifecycle, inspection tasks and maintenance items made once however often the tick runs, and an audit
entry for every action, refusals included.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.bus import Bus
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.console import auth
from gateway.console.app import create_app
from gateway.events import new_id
from gateway.records import db, ledger, store
from gateway.records.models import (
    Alarm,
    AlarmAttachment,
    AuditEntry,
    Device,
    Hazard,
    Incident,
    IncidentEntry,
    Inspection,
    MaintenanceItem,
)
from gateway.rules.alarms import RaiseAlarm, RefusedAction, raise_condition
from tests.support import broker_config

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=TZ)
CONFIG: Config = validate_config({
    "site": {"id": "s1", "name": "Test School"},
    "incidents": {"categories": {"violence": {"report_h": 2, "written_h": 8, "warn_before_min": 30,
                                             "steps": ["报警110", "保护现场", "通知家长"]}},
                  "term_starts": ["2027-02-20"]},
})


CLOSING = {"cause": "两名校外人员在校门口斗殴", "handling": "保安隔离双方,报警110,民警带离",
           "lessons": "放学时段校门口秩序维护不足", "measures": "放学时段增派两名保安,校门口设隔离栏"}


def _jpeg() -> bytes:
    """A real (tiny) JPEG, as a phone would send."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


JPEG = _jpeg()


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def records(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield db.make_sessions(engine)
    engine.dispose()


def raise_alarm(sessions: sessionmaker[Session], alarm_type: str, device: str, at: datetime,
                place: str | None = "南门", kind: str = "alarm_input", test: bool = False,
                key: str | None = None) -> int:
    with sessions.begin() as session:
        if session.get(Device, device) is None:
            session.add(Device(id=device, kind=kind, driver="sim", test_mode=False))
        effects = raise_condition(key or f"{device}:{alarm_type}", device, alarm_type, None, new_id(), at, "gate",
                                  place, test)
        raised: list[tuple[RaiseAlarm, int]] = []
        store.apply_effects(session, effects, raised)
        return raised[0][1]


def tick(sessions: sessionmaker[Session], now: datetime) -> list[int]:
    """What the rules service does every second: the ledger's effects applied, the changed alarms returned."""
    with sessions.begin() as session:
        effects = ledger.tick(session, CONFIG, now)
        return store.apply_effects(session, effects) if effects else []


def test_promote_an_alarm_tick_steps_alerts_at_the_deadlines_and_the_report_clears_them(
        records: sessionmaker[Session]) -> None:
    clock = Clock(T0)
    alarm_id = raise_alarm(records, "panic", "box-1", T0, place="南门 门卫室")
    with records.begin() as session:
        session.add_all([AlarmAttachment(alarm_id=alarm_id, kind="snapshot", camera="cam-gate", ref="snap-1",
                                         state="ready", at=T0 + timedelta(seconds=1)),
                         AlarmAttachment(alarm_id=alarm_id, kind="clip", camera="cam-gate", ref="clip-1",
                                         state="recording", at=T0 + timedelta(seconds=1))])
    confirmed = clock.advance(minutes=5)
    with records.begin() as session:
        incident, changed = ledger.promote_alarm(session, CONFIG.incidents, alarm_id, "super1", confirmed,
                                                 category="violence", title="校门口斗殴", people="两名校外人员")
        incident_id = incident.id
    assert changed == [alarm_id]
    with records() as session:
        row = session.get_one(Incident, incident_id)
        assert (row.category, row.severity, row.place, row.occurred_at, row.confirmed_at, row.alarm_id) == (
            "violence", "serious", "南门 门卫室", T0, confirmed, alarm_id), "a one-key alarm is serious by default"
        assert (row.report_due_at, row.written_due_at) == (confirmed + timedelta(hours=2),
                                                          confirmed + timedelta(hours=8))
        entries = [(e.kind, e.text, e.ref) for e in ledger.timeline(session, incident_id)]
        assert entries == [("alarm", "panic", str(alarm_id)), ("attachment", "snapshot", "cam-gate/snap-1"),
                           ("attachment", "clip", "cam-gate/clip-1"), ("created", "", None)]
        assert session.get_one(Alarm, alarm_id).last_note == f"super1: incident #{incident_id}"
    with records.begin() as session, pytest.raises(RefusedAction, match="already in the incident ledger"):
        ledger.promote_alarm(session, CONFIG.incidents, alarm_id, "super1", confirmed)

    with records.begin() as session:
        ledger.tick_step(session, CONFIG.incidents, incident_id, 1, "guard1", clock.advance(minutes=1))
    with records.begin() as session, pytest.raises(RefusedAction, match="already ticked"):
        ledger.tick_step(session, CONFIG.incidents, incident_id, 1, "guard2", clock.now)
    with records() as session:
        step = ledger.ticked_steps(session, incident_id)["保护现场"]
        assert (step.actor, step.at, step.ref) == ("guard1", clock.now, "1")

    # Tick every 20 s for 3 hours: the 30-minute warning and the deadline, each once, at their minute.
    alerts: list[tuple[str, str]] = []
    while clock.now < confirmed + timedelta(hours=3):
        clock.advance(seconds=20)
        for changed_id in tick(records, clock.now):
            with records() as session:
                alarm = session.get_one(Alarm, changed_id)
                alerts.append((alarm.raised_at.astimezone(TZ).strftime("%H:%M"), alarm.key))
                assert (alarm.alarm_type, alarm.priority, alarm.state) == ("incident_deadline", 2, "active_unack")
    assert alerts == [("10:35", f"incident-{incident_id}:report:before"),
                      ("11:05", f"incident-{incident_id}:report:due")]
    with records() as session:
        assert session.get_one(Incident, incident_id).alerts.keys() == {"report:before", "report:due"}
        place = session.scalar(select(Alarm.place).where(Alarm.key == f"incident-{incident_id}:report:due"))
        assert place == f"incident #{incident_id} (校门口斗殴): report to the centre school overdue (was due at 11:05)"

    phoned = confirmed + timedelta(hours=2, minutes=10)  # recorded later than it was phoned in
    with records.begin() as session:
        incident, cleared = ledger.record_report(session, incident_id, "super1", clock.now, at=phoned,
                                                 note="电话报中心校 李主任")
    assert len(cleared) == 2
    with records() as session:
        states = set(session.scalars(select(Alarm.state).where(Alarm.alarm_type == "incident_deadline")))
        assert states == {"cleared_unack"}, "the deadline alarms clear once the report is made; a person closes them"
        row = session.get_one(Incident, incident_id)
        assert (row.state, row.reported_at, row.reported_by) == ("reported", phoned, "super1")
    with records.begin() as session, pytest.raises(RefusedAction, match="written report before closing"):
        ledger.close_incident(session, incident_id, "super1", clock.now)

    while clock.now < confirmed + timedelta(hours=9):  # the written report's alerts still come
        clock.advance(minutes=1)
        tick(records, clock.now)
    with records() as session:
        keys = sorted(session.scalars(select(Alarm.key).where(Alarm.alarm_type == "incident_deadline")))
        assert keys == sorted(f"incident-{incident_id}:{w}" for w in
                              ("report:before", "report:due", "written:before", "written:due"))
    with records.begin() as session:
        ledger.record_report(session, incident_id, "super1", clock.now, written=True, closing=CLOSING)
        ledger.close_incident(session, incident_id, "super1", clock.advance(minutes=1))
    with records() as session:
        row = session.get_one(Incident, incident_id)
        assert (row.state, row.closed_at) == ("closed", clock.now)
        kinds = [e.kind for e in ledger.timeline(session, incident_id)]
        assert kinds[4:] == ["step", "alert", "alert", "report", "alert", "alert", "written", "closed"], \
            "in time order: the report at when it was phoned in, between the alerts"
        audit = [(a.action, a.result) for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("incident.%")).order_by(AuditEntry.id))]
        assert audit == [("incident.create", "ok"), ("incident.promote", "ok"), ("incident.promote", "refused"),
                         ("incident.step", "ok"), ("incident.step", "refused"), ("incident.report", "ok"),
                         ("incident.close", "refused"), ("incident.written", "ok"), ("incident.close", "ok")]


def test_an_incident_by_hand_default_deadline_and_the_ledgers_filters(records: sessionmaker[Session]) -> None:
    with records.begin() as session:
        first = ledger.create_incident(session, CONFIG.incidents, category="injury", severity="minor",
                                       title="学生摔伤", occurred_at=T0, actor="guard1", now=T0 + timedelta(minutes=3),
                                       place="操场").id
        ledger.create_incident(session, CONFIG.incidents, category="fire", severity="serious", title="配电箱冒烟",
                               occurred_at=T0 + timedelta(days=2), actor="guard1", now=T0 + timedelta(days=2))
        ledger.add_note(session, first, "校医已处理，家长已接回", "guard1", T0 + timedelta(minutes=20))
    with records() as session:
        row = session.get_one(Incident, first)
        assert row.report_due_at == T0 + timedelta(hours=1, minutes=3) and row.written_due_at is None
        assert [i.title for i in ledger.incidents(session)] == ["配电箱冒烟", "学生摔伤"], "newest first"
        assert [i.title for i in ledger.incidents(session, category="injury")] == ["学生摔伤"]
        assert [i.title for i in ledger.incidents(session, since=T0 + timedelta(days=1))] == ["配电箱冒烟"]
        assert [i.title for i in ledger.incidents(session, until=T0 + timedelta(days=1))] == ["学生摔伤"]
        assert ledger.incidents(session, state="closed") == []
    with records.begin() as session, pytest.raises(RefusedAction, match="in the future"):
        ledger.create_incident(session, CONFIG.incidents, category="other", severity="minor", title="x",
                               occurred_at=T0 + timedelta(hours=1), actor="guard1", now=T0)
    with records() as session:
        refused = session.scalars(select(AuditEntry).where(AuditEntry.result == "refused")).one()
        assert (refused.action, refused.detail) == ("incident.create", {"why": "the time it happened is in the future"})


def test_hazard_lifecycle_in_the_ledger(records: sessionmaker[Session]) -> None:
    clock = Clock(T0)
    with records.begin() as session:
        hazard_id = ledger.add_hazard(session, place="教学楼北侧围墙", description="围墙裂缝", severity="major",
                                      source="patrol", actor="guard1", now=clock.now).id
    with records.begin() as session, pytest.raises(RefusedAction, match="assign the hazard first"):
        ledger.hazard_action(session, hazard_id, "fix", "guard1", clock.advance(minutes=5))
    due = T0 + timedelta(days=7)
    with records.begin() as session:
        ledger.hazard_action(session, hazard_id, "assign", "super1", clock.advance(hours=1), assigned_to="后勤 王师傅",
                             measures="加固并设警示", due_at=due)
        ledger.hazard_action(session, hazard_id, "fix", "guard1", clock.advance(days=2))
    with records.begin() as session, pytest.raises(RefusedAction, match="cannot sign it off"):
        ledger.hazard_action(session, hazard_id, "sign_off", "guard1", clock.advance(hours=1))
    with records.begin() as session:
        hazard = ledger.hazard_action(session, hazard_id, "sign_off", "super1", clock.now)
        assert (hazard.state, hazard.assigned_to, hazard.due_at, hazard.fixed_by, hazard.signed_off_by,
                hazard.signed_off_at) == ("signed_off", "后勤 王师傅", due, "guard1", "super1", clock.now)
    with records() as session:
        assert ledger.hazards(session, open_only=True) == []
        audit = [(a.action, a.result) for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("hazard.%")).order_by(AuditEntry.id))]
        assert audit == [("hazard.add", "ok"), ("hazard.fix", "refused"), ("hazard.assign", "ok"),
                         ("hazard.fix", "ok"), ("hazard.sign_off", "refused"), ("hazard.sign_off", "ok")]


def test_a_hazards_due_date_alerts_before_and_at_it_lists_it_overdue_and_clears_once_fixed(
        records: sessionmaker[Session]) -> None:
    """整改时限 (R29): an alert hazard_warn_days (2) before the due date and one at it, each once however often the
    tick runs; overdue on the duty page's list and in the month's report; both alarms cleared once it is fixed.
    An outside inspector's hazard names the inspector (R32)."""
    from gateway.reports.figures import collect, period

    clock = Clock(T0)
    with records.begin() as session, pytest.raises(RefusedAction, match="name the inspector"):
        ledger.add_hazard(session, place="南门", description="门前无减速带", severity="major", source="police",
                          actor="super1", now=clock.now)
    with records.begin() as session:
        hazard = ledger.add_hazard(session, place="南门", description="门前无减速带", severity="major",
                                   source="police", inspector="城关派出所 李警官", actor="super1", now=clock.now)
        hazard_id = hazard.id
        ledger.hazard_action(session, hazard_id, "assign", "super1", clock.now, assigned_to="后勤 王师傅",
                             due_at=T0 + timedelta(days=5))
    assert tick(records, clock.advance(days=2)) == [], "three days before: nothing yet"

    def alarms() -> list[tuple[str, str, bool]]:
        with records() as session:
            return [(a.key, a.state, a.condition_active) for a in session.scalars(
                select(Alarm).where(Alarm.alarm_type == "hazard_due").order_by(Alarm.id))]

    for _ in range(3):
        tick(records, clock.advance(hours=8))  # from two days before on (T0 + 2 days 16 h, 3 days, 3 days 8 h)
    assert alarms() == [(f"hazard-{hazard_id}:before", "active_unack", True)]
    with records() as session:
        assert ledger.overdue_hazards(session, clock.now) == [], "not overdue before its due date"
    for _ in range(3):
        tick(records, clock.advance(days=1))  # past the due date
    assert [k for k, _, _ in alarms()] == [f"hazard-{hazard_id}:before", f"hazard-{hazard_id}:due"]
    with records() as session:
        assert [h.id for h in ledger.overdue_hazards(session, clock.now)] == [hazard_id]
        report = collect(session, "monthly", *period("monthly", clock.now, TZ), TZ, "s1")
        assert dict(report.summary)["Hazards past their due date at the end"] == 1
        late = next(t for t in report.tables if t.key == "hazards_overdue")
        assert late.rows == [[f"#{hazard_id}", "南门", "source_police", "2026-11-08", "", "后勤 王师傅"]]
    with records.begin() as session:
        ledger.hazard_action(session, hazard_id, "fix", "guard1", clock.advance(hours=1))
    changed = tick(records, clock.advance(seconds=1))
    assert len(changed) == 2 and all(not active for _, _, active in alarms()), "both cleared once it is fixed"
    with records() as session:
        assert ledger.overdue_hazards(session, clock.now) == []
        report = collect(session, "monthly", *period("monthly", clock.now, TZ), TZ, "s1")
        assert dict(report.summary)["Hazards past their due date at the end"] == 0
        late = next(t for t in report.tables if t.key == "hazards_overdue")
        assert late.rows[0][4] == clock.now.astimezone(TZ).date().isoformat(), "fixed late: still in the month's list"
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "hazard.add",
                                                         AuditEntry.result == "ok")).one()
        assert audit.detail["inspector"] == "城关派出所 李警官"


def test_inspections_once_each_however_often_the_tick_runs(records: sessionmaker[Session]) -> None:
    clock = Clock(datetime(2027, 2, 10, 8, 0, tzinfo=TZ))
    for _ in range(3):
        tick(records, clock.now)
    clock.advance(days=3)  # 13 February: a week before term starts on the 20th
    for _ in range(3):
        tick(records, clock.now)
    clock.advance(days=20)  # March
    tick(records, clock.now)
    with records() as session:
        rows = [(i.kind, i.period, i.due_at.astimezone(TZ).strftime("%Y-%m-%d %H:%M"))
                for i in session.scalars(select(Inspection).order_by(Inspection.id))]
        assert rows == [("monthly", "2027-02", "2027-02-28 23:59"),
                        ("term_start", "term-2027-02-20", "2027-03-05 23:59"),
                        ("monthly", "2027-03", "2027-03-31 23:59")]
        term = session.scalars(select(Inspection).where(Inspection.kind == "term_start")).one()
    with records.begin() as session:
        hazard = ledger.add_hazard(session, place="食堂", description="灭火器过期", severity="general",
                                   source="inspection", inspection_id=term.id, actor="super1", now=clock.now)
        done = ledger.complete_inspection(session, term.id, "super1", clock.now, "发现1处隐患")
        assert (done.done_by, done.notes, hazard.inspection_id) == ("super1", "发现1处隐患", term.id)
    with records.begin() as session, pytest.raises(RefusedAction, match="already recorded as done"):
        ledger.complete_inspection(session, term.id, "super1", clock.now)


def test_equipment_faults_become_maintenance_items_once_due_in_24_h(records: sessionmaker[Session]) -> None:
    clock = Clock(T0)
    offline = raise_alarm(records, "device_offline", "cam-east", T0, kind="camera")
    tamper = raise_alarm(records, "tamper", "cam-west", T0, kind="camera", key="cam-west:tamper:covered")
    moved = raise_alarm(records, "tamper", "cam-west", T0, kind="camera", key="cam-west:tamper:moved")  # one repair
    raise_alarm(records, "tamper", "reader-gate", T0, kind="reader")  # a break-in attempt, not a repair
    raise_alarm(records, "panic", "box-1", T0)
    raise_alarm(records, "bollard_fault", "bollard-1", T0, kind="bollard", test=True)  # a test: no item
    for _ in range(3):
        tick(records, clock.advance(seconds=1))
    with records() as session:
        items = [(m.device_id, m.fault, m.alarm_id, m.due_at, m.state)
                 for m in session.scalars(select(MaintenanceItem).order_by(MaintenanceItem.alarm_id))]
    assert items == [("cam-east", "device_offline", offline, T0 + timedelta(hours=24), "open"),
                     ("cam-west", "camera_tamper", tamper, T0 + timedelta(hours=24), "open")]

    with records() as session:
        assert ledger.overdue_maintenance(session, T0 + timedelta(hours=24)) == []
        late = ledger.overdue_maintenance(session, T0 + timedelta(hours=25))
        assert [m.device_id for m in late] == ["cam-east", "cam-west"]
        item_id = late[0].id
    with records.begin() as session:
        ledger.fix_maintenance(session, item_id, "guard1", T0 + timedelta(hours=25), "重新接线")
    with records.begin() as session, pytest.raises(RefusedAction, match="already fixed"):
        ledger.fix_maintenance(session, item_id, "guard1", T0 + timedelta(hours=25))
    with records() as session:
        fixed = session.get_one(MaintenanceItem, item_id)
        assert (fixed.state, fixed.fixed_by) == ("fixed", "guard1")
        west = session.scalars(select(MaintenanceItem).where(MaintenanceItem.device_id == "cam-west")).one()
    with records.begin() as session:
        ledger.fix_maintenance(session, west.id, "guard1", T0 + timedelta(hours=26))
    tick(records, T0 + timedelta(hours=26))
    with records() as session:
        again = session.scalars(select(MaintenanceItem).where(MaintenanceItem.state == "open")).one()
        assert (again.alarm_id, again.fault) == (moved, "camera_tamper"), "still moved after the cover was removed"
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "maintenance.fix",
                                                         AuditEntry.target == f"maintenance:{item_id}",
                                                         AuditEntry.result == "ok")).one()
        assert entry.detail == {"late": True, "note": "重新接线"}
        assert session.scalar(select(func.count()).select_from(IncidentEntry)) == 0


# -- the console ----------------------------------------------------------------------------------

PASSWORD = "correct horse battery"


@pytest.fixture
def console(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        for name, role in (("guard1", "guard"), ("super1", "supervisor")):
            auth.add_user(session, name, role, PASSWORD)
    bus = Bus(broker_config(amqtt_broker.port), "ledger-test", name="console")
    bus.start()
    bus.wait_connected(5)
    app = create_app("s1", "Test School", TZ, sessions, bus, "en", incidents=CONFIG.incidents)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield {"client": client, "sessions": sessions}
    bus.stop()
    engine.dispose()


def login(client: TestClient, username: str) -> str:
    """Logs in (the cookie stays with the client) and returns the session's CSRF token."""
    client.cookies.clear()
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/alarms").text
    return page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')


def test_console_promote_an_alarm_tick_a_step_record_the_report_and_only_a_supervisor_closes(
        console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    now = datetime.now(TZ).replace(microsecond=0)
    alarm_id = raise_alarm(sessions, "panic", "box-1", now - timedelta(minutes=3), place="南门 门卫室")
    with sessions.begin() as session:
        session.add(AlarmAttachment(alarm_id=alarm_id, kind="snapshot", camera="cam-gate", ref="cam-gate-snap1",
                                    state="ready", at=now))

    csrf = login(client, "guard1")
    assert "promote: false" in client.get("/alarms").text, "no promote button for a guard"
    assert client.get(f"/alarms/{alarm_id}/promote").status_code == 403
    assert client.post(f"/alarms/{alarm_id}/promote", data={"csrf_token": csrf}).status_code == 403

    csrf = login(client, "super1")
    assert "promote: true" in client.get("/alarms").text
    form = client.get(f"/alarms/{alarm_id}/promote")
    assert form.status_code == 200 and 'value="violence" selected' in form.text, "a one-key alarm: violence"
    made = client.post(f"/alarms/{alarm_id}/promote", data={"csrf_token": csrf, "category": "violence",
                                                            "severity": "serious", "title": "校门口斗殴",
                                                            "people": "两名校外人员"})
    assert made.status_code == 303
    url = made.headers["location"]
    incident_id = int(url.rsplit("/", 1)[1])
    again = client.post(f"/alarms/{alarm_id}/promote", json={}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409 and again.json() == {"detail": "this alarm is already in the incident ledger",
                                                          "incident_id": incident_id}
    page = client.get(url).text
    assert "校门口斗殴" in page and "/snapshots/cam-gate/cam-gate-snap1.jpg" in page, "the alarm's snapshot kept"
    assert 'class="countdown running"' in page, "2 h to report a violent incident, counting down"
    assert "2 h 0 min left" in page or "1 h 59 min left" in page

    csrf = login(client, "guard1")
    assert client.post(f"{url}/steps/0", data={"csrf_token": csrf}).status_code == 303
    twice = client.post(f"{url}/steps/0", data={"csrf_token": csrf})
    assert twice.status_code == 409 and "this step is already ticked" in twice.text
    assert client.post(f"{url}/note", data={"csrf_token": csrf, "text": "已报110，民警到场"}).status_code == 303
    assert client.post(f"{url}/report", data={"csrf_token": csrf, "note": "电话报中心校 李主任"}).status_code == 303
    page = client.get(url).text
    assert "✓ <small>guard1" in page and "已报110，民警到场" in page and 'id="close-form"' not in page
    refused = client.post(f"{url}/close", data={"csrf_token": csrf})
    assert refused.status_code == 403, "a guard cannot close an incident"

    csrf = login(client, "super1")
    early = client.post(f"{url}/close", data={"csrf_token": csrf})
    assert early.status_code == 409 and "record the written report before closing the incident" in early.text
    without = client.post(f"{url}/written", data={"csrf_token": csrf, "cause": "校外人员斗殴"})
    assert without.status_code == 409 and "needs its cause, handling, lessons and corrective measures" in without.text
    assert client.post(f"{url}/written", data={"csrf_token": csrf, **CLOSING}).status_code == 303
    assert client.post(f"{url}/forwarded", data={"csrf_token": csrf, "note": "中心校 李主任"}).status_code == 303
    assert client.post(f"{url}/close", data={"csrf_token": csrf, "note": "已处置完毕"}).status_code == 303
    page = client.get(url).text
    assert CLOSING["lessons"] in page.split('id="closing"', 1)[1] and 'id="forwarded"' in page

    detail = client.get(f"/api/incidents/{incident_id}").json()
    assert (detail["state"], detail["reported_by"], detail["report"]["state"]) == ("closed", "guard1", "on_time")
    assert detail["steps"][0]["done_by"] == "guard1" and detail["steps"][1]["done_by"] is None
    assert [e["kind"] for e in detail["timeline"]][-5:] == ["note", "report", "written", "forwarded", "closed"]
    with sessions() as session:
        audit = [(a.actor, a.action, a.result) for a in session.scalars(
            select(AuditEntry).where(AuditEntry.action.like("incident.%")).order_by(AuditEntry.id))]
    assert audit == [("super1", "incident.create", "ok"), ("super1", "incident.promote", "ok"),
                     ("super1", "incident.promote", "refused"), ("guard1", "incident.step", "ok"),
                     ("guard1", "incident.step", "refused"), ("guard1", "incident.note", "ok"),
                     ("guard1", "incident.report", "ok"), ("super1", "incident.close", "refused"),
                     ("super1", "incident.written", "refused"), ("super1", "incident.written", "ok"),
                     ("super1", "incident.forwarded", "ok"), ("super1", "incident.close", "ok")]

    # The written report to print and sign (R34), in either language, with the chain's times.
    from io import BytesIO

    from pypdf import PdfReader

    for language, words in (("zh_CN", ["事故书面报告", "事发原因", "整改措施", "逐级上报", "已上报教育局",
                                       "中心学校已上报教育局", "书面报告"]),
                            ("en", ["Incident written report", "Cause", "Corrective measures",
                                    "Passed on to the education bureau"])):
        pdf = client.get(f"{url}/report.pdf", params={"language": language})
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = "".join(page.extract_text() for page in PdfReader(BytesIO(pdf.content)).pages)
        for word in [*words, CLOSING["cause"], CLOSING["measures"]]:
            assert word in text.replace("\n", ""), f"{word} in the {language} PDF"
    sheet = client.get(f"{url}/report.xlsx")
    assert sheet.status_code == 200 and sheet.content[:2] == b"PK"
    assert client.get("/incidents/99999/report.pdf").status_code == 404

    ledger_page = client.get("/incidents?category=violence&state=closed")
    assert ledger_page.status_code == 200 and f'data-id="{incident_id}"' in ledger_page.text
    assert f'data-id="{incident_id}"' not in client.get("/incidents?category=fire").text
    bad = client.get("/incidents?start=tomorrow")
    assert bad.status_code == 422 and "a date is written as YYYY-MM-DD" in bad.text


def test_console_incident_by_hand_hazards_inspections_and_maintenance(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "guard1")
    assert client.get("/incidents/new").status_code == 200
    wrong = client.post("/incidents", data={"csrf_token": csrf, "category": "injury", "severity": "minor",
                                            "title": " ", "occurred_at": ""})
    assert wrong.status_code == 422 and "give the incident a short title" in wrong.text
    made = client.post("/incidents", data={"csrf_token": csrf, "category": "injury", "severity": "minor",
                                           "title": "学生摔伤", "place": "操场", "occurred_at": "2026-11-03T08:40"})
    assert made.status_code == 303
    assert "学生摔伤" in client.get("/incidents").text

    assert client.post("/incidents/hazards", data={"csrf_token": csrf, "place": "教学楼北侧", "description": "围墙裂缝",
                                                   "severity": "major", "source": "patrol"}).status_code == 303
    with sessions() as session:
        hazard_id = ledger.hazards(session)[0].id
    base = f"/incidents/hazards/{hazard_id}"
    assert client.post(f"{base}/assign", data={"csrf_token": csrf, "assigned_to": "后勤 王师傅",
                                               "due": "2099-01-31"}).status_code == 303
    assert client.post(f"{base}/fix", data={"csrf_token": csrf}).status_code == 303
    assert client.post(f"{base}/sign_off", data={"csrf_token": csrf}).status_code == 403, "a supervisor signs off"
    csrf = login(client, "super1")
    assert client.post(f"{base}/sign_off", data={"csrf_token": csrf}).status_code == 303
    page = client.get("/incidents/hazards").text
    assert f'data-id="{hazard_id}" data-state="signed_off"' in page and "2099-01-31" in page

    now = datetime.now(TZ)
    raise_alarm(sessions, "device_offline", "cam-east", now, kind="camera")
    tick(sessions, now)
    inspections = client.get("/incidents/inspections").text
    assert f'data-period="{now:%Y-%m}"' in inspections
    with sessions() as session:
        inspection_id = session.scalars(select(Inspection.id)).one()
        item_id = session.scalars(select(MaintenanceItem.id)).one()
    assert client.post(f"/incidents/inspections/{inspection_id}/done",
                       data={"csrf_token": csrf, "notes": "全校排查"}).status_code == 303
    assert "全校排查" in client.get("/incidents/inspections").text
    assert 'data-state="open"' in client.get("/incidents/maintenance").text
    assert client.post(f"/incidents/maintenance/{item_id}/fix", data={"csrf_token": csrf}).status_code == 303
    again = client.post(f"/incidents/maintenance/{item_id}/fix", data={"csrf_token": csrf})
    assert again.status_code == 409 and "this item is already fixed" in again.text

    client.post("/lang", data={"lang": "zh_CN", "next": "/incidents", "csrf_token": csrf})
    chinese = client.get("/incidents").text
    assert "安全台账" in chinese and "伤害事故" in chinese


def test_console_a_police_inspectors_hazard_and_the_overdue_ones_on_the_duty_page(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "super1")
    assert 'id="overdue-hazards"' not in client.get("/duty").text
    refused = client.post("/incidents/hazards", data={"csrf_token": csrf, "place": "南门", "description": "无减速带",
                                                      "severity": "major", "source": "police"})
    assert refused.status_code == 422 and "name the inspector" in refused.text
    made = client.post("/incidents/hazards", data={"csrf_token": csrf, "place": "南门", "description": "无减速带",
                                                   "severity": "major", "source": "police",
                                                   "inspector": "城关派出所 李警官"})
    assert made.status_code == 303
    page = client.get("/incidents/hazards").text
    assert "城关派出所 李警官" in page
    now = datetime.now(TZ)
    with sessions.begin() as session:  # found a week ago, due yesterday
        hazard = ledger.add_hazard(session, place="北墙", description="围墙裂缝", severity="major", source="patrol",
                                   actor="guard1", now=now, found_at=now - timedelta(days=7))
        ledger.hazard_action(session, hazard.id, "assign", "super1", now, assigned_to="后勤 王师傅",
                             due_at=now - timedelta(days=1))
    yesterday = (now - timedelta(days=1)).date().isoformat()
    duty = client.get("/duty").text
    assert 'id="overdue-hazards"' in duty and f'href="/incidents/hazards#hazard-{hazard.id}"' in duty
    assert yesterday in duty.split('id="overdue-hazard-list"', 1)[1].split("</ul>", 1)[0]


def test_an_inspection_goes_through_its_checklist_and_a_failed_item_opens_a_hazard(
        records: sessionmaker[Session]) -> None:
    """R30, R31: each item passed or failed, with a note and a photo; a failed one opens a hazard of the
    inspection; an item once; nothing more once the inspection is done."""
    clock = Clock(datetime(2027, 2, 15, 8, 0, tzinfo=TZ))
    tick(records, clock.now)
    with records() as session:
        term = session.scalars(select(Inspection).where(Inspection.kind == "term_start")).one()
    photo = JPEG
    with records.begin() as session:
        ledger.record_item(session, CONFIG.incidents, term.id, "fire", "灭火器在有效期内", False, "guard1",
                           clock.advance(minutes=5), note="食堂2具灭火器过期", photo=photo, photo_type="image/jpeg")
        ledger.record_item(session, CONFIG.incidents, term.id, "walls_exits", "安全出口畅通", True, "guard1",
                           clock.advance(minutes=5))
    for args, refusal in (((term.id, "fire", "灭火器在有效期内", True), "already recorded"),
                          ((term.id, "fire", "不存在的项目", True), "no such item"),
                          ((term.id, "walls_exits", "围墙完好", False), "say what is wrong")):
        with records.begin() as session, pytest.raises(RefusedAction, match=refusal):
            ledger.record_item(session, CONFIG.incidents, *args, "guard1", clock.now)  # type: ignore[arg-type]
    with records() as session:
        items = ledger.inspection_items(session, term.id)
        assert [(i.group, i.item, i.passed, i.photo == photo) for i in items] == [
            ("fire", "灭火器在有效期内", False, True), ("walls_exits", "安全出口畅通", True, False)]
        hazard = session.get_one(Hazard, items[0].hazard_id)
        assert (hazard.inspection_id, hazard.source, hazard.description, hazard.found_by) == (
            term.id, "inspection", "食堂2具灭火器过期", "guard1")
    with records.begin() as session:
        ledger.complete_inspection(session, term.id, "super1", clock.advance(hours=1))
    with records.begin() as session, pytest.raises(RefusedAction, match="already recorded as done"):
        ledger.record_item(session, CONFIG.incidents, term.id, "fire", "消防栓和消防通道完好", True, "guard1",
                           clock.now)
    with records() as session:
        audit = [(a.action, a.result) for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action == "inspection.item").order_by(AuditEntry.id))]
        assert audit == [("inspection.item", "ok")] * 2 + [("inspection.item", "refused")] * 4


def test_console_a_checklist_item_with_its_photo(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    with sessions.begin() as session:
        ledger.ensure_inspections(session, CONFIG, datetime.now(TZ))
        monthly = session.scalars(select(Inspection).where(Inspection.kind == "monthly")).one()
    csrf = login(client, "guard1")
    page = client.get("/incidents/inspections").text
    assert f'id="inspection-{monthly.id}"' in page and "防刺手套" in page
    form = {"csrf_token": csrf, "group": "guard_equipment", "item": "防刺手套", "result": "fail",
            "note": "只有2副,应配4副"}
    refused = client.post(f"/incidents/inspections/{monthly.id}/items", data=form,
                          files={"photo": ("x.jpg", b"not an image", "image/jpeg")})
    assert refused.status_code == 422 and "PNG or JPEG" in refused.text
    done = client.post(f"/incidents/inspections/{monthly.id}/items", data=form,
                       files={"photo": ("gloves.jpg", JPEG, "image/jpeg")})
    assert done.status_code == 303
    with sessions() as session:
        item = ledger.inspection_items(session, monthly.id)[0]
    photo = client.get(f"/incidents/inspections/items/{item.id}/photo")
    assert photo.status_code == 200 and photo.content == JPEG and photo.headers["content-type"] == "image/jpeg"
    page = client.get("/incidents/inspections").text
    assert f'href="/incidents/hazards#hazard-{item.hazard_id}"' in page and "只有2副,应配4副" in page
