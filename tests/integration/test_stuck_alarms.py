"""An alarm whose source went silent while its input was active (issue 16 item 2), on SQLite and PostgreSQL.

A camera's "covered" tamper alarm is raised, then the camera goes offline: no "cleared" can come. A supervisor
closes the alarm through the console with a note (a plain close, a short note or a guard are refused), the
audit log and the alarm's history say the input was still active, a late "cleared" changes nothing, and the
camera reporting "covered" again raises a new alarm. Everything real: the rules service over MQTT, the console
over its HTTP API, the database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import topics
from gateway.bus import Bus
from gateway.console import auth
from gateway.console.app import create_app
from gateway.events import make_event
from gateway.records import db, store
from gateway.records.models import Alarm, AuditEntry, Device
from gateway.reports.figures import collect
from gateway.rules.alarms import RefusedAction, evaluate
from gateway.rules_service.service import RulesService
from tests.support import broker_config, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

SITE = "s1"
TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = "correct horse battery"
NOTE = "摄像头已恢复正常画面，驱动重启后未上报恢复"


class Camera:
    id, kind, driver, name, zone, test_mode = "cam-1", "camera", "camera", "南门摄像头", None, False


class Site:
    """The rules service and the console on one database and one broker, and a publisher posing as the camera."""

    def __init__(self, db_url: str, broker_port: int) -> None:
        self.engine = db.make_engine(db_url)
        db.upgrade(self.engine)
        self.sessions: sessionmaker[Session] = db.make_sessions(self.engine)
        with self.sessions.begin() as session:
            store.register_devices(session, [Camera()])
            for name, role in (("guard1", "guard"), ("super1", "supervisor")):
                auth.add_user(session, name, role, PASSWORD)
        broker = broker_config(broker_port)
        self.rules_bus = Bus(broker, "rules-under-test", manual_ack=True, clean_session=False, name="rules")
        self.rules = RulesService(SITE, self.rules_bus, self.sessions)
        self.rules.start()
        self.rules_bus.start()
        self.publisher = Bus(broker, "camera", name="publisher")
        self.publisher.start()
        self.console_bus = Bus(broker, "console-test", name="console")
        self.console_bus.start()
        assert self.rules_bus.wait_connected(10) and self.publisher.wait_connected(10)
        assert self.console_bus.wait_connected(10)
        self.seq = 0
        self.sent = 0

    def send(self, event_type: str, data: dict[str, Any]) -> None:
        """One event from the camera, now; returns once the rules service has taken it."""
        self.seq += 1
        event = make_event(SITE, "camera", Camera.id, event_type, data, self.seq, time.time(), TZ)
        self.publisher.publish(topics.event(SITE, "camera", Camera.id, event_type), event.to_json())
        self.sent += 1
        wait_for(lambda: self.rules.processed == self.sent, 15, f"the rules service to take {event_type}")

    def tamper(self, active: bool) -> None:
        self.send("campus.camera.tamper", {"kind": "covered", "active": active,
                                           "detail": "view covered" if active else "view back to normal"})

    def alarms(self) -> list[Alarm]:
        with self.sessions() as session:
            return list(session.scalars(select(Alarm).order_by(Alarm.id)))

    def stop(self) -> None:
        for bus in (self.publisher, self.console_bus):
            bus.stop()
        self.rules.stop()
        self.rules_bus.stop()
        self.engine.dispose()


@pytest.fixture
def site(db_url: str, amqtt_broker: Any) -> Iterator[Site]:
    running = Site(db_url, amqtt_broker.port)
    yield running
    running.stop()


def login(client: TestClient, username: str) -> dict[str, str]:
    """Logs in (the cookie stays with the client); returns the headers a change needs."""
    client.cookies.clear()
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/alarms").text
    return {"X-CSRF-Token": page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')}


def test_a_supervisor_closes_an_alarm_whose_silent_source_never_cleared_it(site: Site) -> None:
    site.tamper(True)
    (tamper,) = site.alarms()
    assert (tamper.key, tamper.alarm_type, tamper.state) == ("cam-1:tamper:covered", "tamper", "active_unack")
    site.send("campus.device.offline", {"reason": "video loss: no frame for 30 s"})
    offline = next(a for a in site.alarms() if a.alarm_type == "device_offline")

    app = create_app(SITE, "Test School", TZ, site.sessions, site.console_bus, "en")
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        guard = login(client, "guard1")
        for alarm in (tamper, offline):
            assert client.post(f"/api/alarms/{alarm.id}/ack", headers=guard).status_code == 200
        assert "close-active" in client.get("/alarms").text, "the board offers the close with a note"
        refused = client.post(f"/api/alarms/{tamper.id}/close", json={"note": NOTE}, headers=guard)
        assert refused.status_code == 403, "closing stays a supervisor's (the role rules are unchanged)"

        boss = login(client, "super1")
        reset = client.post(f"/api/alarms/{tamper.id}/reset", json={"note": NOTE}, headers=boss)
        assert reset.status_code == 409 and "close the alarm with a note" in reset.json()["detail"]
        plain = client.post(f"/api/alarms/{tamper.id}/close", headers=boss)
        assert plain.status_code == 409
        assert plain.json()["detail"] == ("the input is still active: to close the alarm anyway, write a note of at "
                                          "least 6 characters saying why")
        short = client.post(f"/api/alarms/{tamper.id}/close", json={"note": " o k "}, headers=boss)
        assert short.status_code == 409 and "6 characters" in short.json()["detail"]
        # The offline alarm is the news that the camera is offline, reported just now: not a silent source.
        news = client.post(f"/api/alarms/{offline.id}/close", json={"note": NOTE}, headers=boss)
        assert news.status_code == 409 and "less than 10 minutes ago" in news.json()["detail"]
        client.post("/lang", data={"lang": "zh_CN", "next": "/alarms", "csrf_token": boss["X-CSRF-Token"]})
        chinese = client.post(f"/api/alarms/{tamper.id}/close", headers=boss).json()["detail"]
        assert chinese == "输入仍处于报警状态：如仍要关闭报警，请填写不少于 6 个字的备注说明原因"
        page = client.get("/alarms").text  # the board's strings are in its script, JSON-escaped
        for text in ("强制关闭（输入仍在报警）", "关闭原因？（必填，不少于 6 个字）"):
            assert json.dumps(text)[1:-1] in page

        closed = client.post(f"/api/alarms/{tamper.id}/close", json={"note": f"  {NOTE} "}, headers=boss)
        assert closed.status_code == 200, closed.text
        assert (closed.json()["state"], closed.json()["condition_active"]) == ("closed", True)
        assert closed.json()["last_note"] == f"super1: {NOTE}"
        history = client.get(f"/api/alarms/{tamper.id}").json()["history"]
        assert [(h["action"], h["actor"]) for h in history] == [("raise", "system"), ("ack", "guard1"),
                                                                 ("close_active", "super1")]
        assert (history[-1]["from"], history[-1]["to"], history[-1]["note"]) == ("active_ack", "closed", NOTE)
        assert tamper.id not in [a["id"] for a in client.get("/api/alarms").json()], "off the board"

    with site.sessions() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.target == f"alarm:{tamper.id}")
                                .order_by(AuditEntry.id)).all()
    assert [(a.actor, a.action, a.result) for a in audit] == [
        ("guard1", "alarm.ack", "ok"), ("super1", "alarm.reset", "refused"), ("super1", "alarm.close", "refused"),
        ("super1", "alarm.close", "refused"), ("super1", "alarm.close", "refused"), ("super1", "alarm.close", "ok")]
    done = audit[-1].detail
    assert (done["from"], done["to"], done["note"]) == ("active_ack", "closed", NOTE)
    assert (done["input_active"], done["device_online"], done["silent"]) == (True, False, True)
    assert audit[2].detail["why"].startswith("the input is still active: to close the alarm anyway")
    assert audit[3].detail["note"] == "o k", "a refused close keeps the note it was given"

    # The camera's late "cleared" finds no open alarm: nothing crashes, nothing reopens.
    site.tamper(False)
    after = {a.id: a for a in site.alarms()}
    assert (after[tamper.id].state, after[tamper.id].cleared_at) == ("closed", None)
    assert len(after) == 2
    # The same input reporting "covered" again is a new alarm, not the closed one.
    site.tamper(True)
    again = [a for a in site.alarms() if a.key == "cam-1:tamper:covered"]
    assert [(a.id, a.state) for a in again] == [(tamper.id, "closed"), (again[1].id, "active_unack")]
    assert again[1].id > offline.id and again[1].occurrences == 1


def test_a_silent_device_offline_alarm_closes_after_10_minutes_and_counts_as_down_until_then(db_url: str) -> None:
    """The time rule in the records: an offline alarm (its device offline is its news) closes with a note only
    once nothing about it has come for 10 minutes; the uptime report then counts the device as down until the
    close, not in every report after it."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    t0 = datetime(2026, 11, 3, 9, 0, tzinfo=TZ)
    offline = make_event(SITE, "camera", Camera.id, "campus.device.offline", {"reason": "video loss"}, 1,
                         t0.timestamp(), TZ)
    with sessions.begin() as session:
        store.register_devices(session, [Camera()])
        (alarm_id,) = store.apply_effects(session, evaluate(offline, {}, t0))
        store.operator_action(session, alarm_id, "ack", "guard1", t0 + timedelta(minutes=1))
    for minutes, allowed in ((5, False), (9.99, False), (60, True)):
        with sessions.begin() as session:
            try:
                store.operator_action(session, alarm_id, "close", "super1", t0 + timedelta(minutes=minutes), NOTE)
            except RefusedAction as exc:
                assert not allowed and "less than 10 minutes ago" in str(exc)
            else:
                assert allowed
    with sessions() as session:
        alarm = session.get(Alarm, alarm_id)
        device = session.get(Device, Camera.id)
        assert alarm is not None and device is not None and device.online is False
        assert (alarm.state, alarm.condition_active, alarm.cleared_at) == ("closed", True, None)
        assert alarm.closed_at == t0 + timedelta(minutes=60)
        results = [a.result for a in session.scalars(select(AuditEntry).where(AuditEntry.action == "alarm.close")
                                                     .order_by(AuditEntry.id))]
        assert results == ["refused", "refused", "ok"]
        for days in (1, 30):  # the day of the close, and a month that runs on past it
            start = t0.replace(hour=0)
            report = collect(session, "daily", start, start + timedelta(days=days), TZ, "实验学校")
            uptime = next(t for t in report.tables if t.key == "devices")
            assert uptime.rows == [[Camera.id, round(100 * (1 - 60 / (days * 1440)), 2), 60.0]]
    engine.dispose()
