"""The rules service writing records, on SQLite and on PostgreSQL: alarm lifecycle, idempotence, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway import topics
from gateway.bus import Bus
from gateway.cli import main
from gateway.events import make_event
from gateway.records import db, store
from gateway.records.models import Alarm, AlarmTransition, AuditEntry, Device, IngestedEvent, utcnow
from gateway.rules.alarms import RaiseAlarm, RefusedAction
from gateway.rules_service.service import RulesService
from tests.integration.helpers import TZ, alarm_event
from tests.support import broker_config, wait_for

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

SITE = "s1"


class Dev:
    id, kind, driver, name, zone, test_mode = "box-1", "alarm_input", "modbus_di", "Gate box", None, False


def test_migrations_apply_and_are_repeatable(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    db.upgrade(engine)  # every start runs it: the second time must be a no-op
    assert db.current_revision(engine) == db.head_revision()
    assert db.has_tables(engine)
    assert db.schema_drift(engine) == [], "a model changed without a migration"
    engine.dispose()


def test_db_upgrade_command(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: s1, name: Test}}\ndatabase: {{url: '{db_url}'}}\n")
    assert main(["db", "upgrade", "-c", str(site)]) == 0
    assert f"database at revision {db.head_revision()}" in capsys.readouterr().out


def test_rules_keep_alarm_records_once_and_audit_operators(db_url: str, amqtt_broker: Any) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        store.register_devices(session, [Dev()])
    broker = broker_config(amqtt_broker.port)
    rules_bus = Bus(broker, "rules-under-test", manual_ack=True, clean_session=False, name="rules")
    rules = RulesService(SITE, rules_bus, sessions)
    rules.start()
    rules_bus.start()
    publisher = Bus(broker, "publisher", name="publisher")
    publisher.start()
    try:
        assert rules_bus.wait_connected(10) and publisher.wait_connected(10)
        first = alarm_event(SITE, "box-1", "panic-1", 1)
        offline = make_event(SITE, "alarm_input", "box-1", "campus.device.offline", {"reason": "unplugged"}, 4,
                             1.8e9 + 4, TZ)
        online = make_event(SITE, "alarm_input", "box-1", "campus.device.online", {"offline_s": 3.0}, 5,
                            1.8e9 + 7, TZ)
        messages = [
            first[:2],
            alarm_event(SITE, "box-1", "panic-1", 2, restored=True, at=1.8e9 + 1)[:2],
            alarm_event(SITE, "box-1", "panic-1", 3, at=1.8e9 + 2)[:2],  # pressed again
            first[:2],  # the same event delivered twice (a replay): recorded once
            (topics.event(SITE, "alarm_input", "box-1", "campus.device.offline"), offline.to_json()),
            (topics.event(SITE, "alarm_input", "box-1", "campus.device.online"), online.to_json()),
            (topics.event(SITE, "alarm_input", "box-1", "campus.device.online"), b'{"not": "an event"}'),
        ]
        for topic, payload in messages:
            publisher.publish(topic, payload)
        wait_for(lambda: rules.processed + rules.duplicates + sum(rules.checker.rejected.values()) == 7, 15,
                 "the rules service to take all seven messages")
    finally:
        publisher.stop()
        rules.stop()
        rules_bus.stop()

    assert rules.processed == 5 and rules.duplicates == 1
    assert sum(rules.checker.rejected.values()) == 1, "the malformed payload is counted, not recorded"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(IngestedEvent)) == 5
        panic = session.scalars(select(Alarm).where(Alarm.alarm_type == "panic")).one()
        assert panic.state == "active_unack", "a panic alarm latches: the button's release does not clear it"
        assert panic.occurrences == 2 and panic.condition_active
        offline_alarm = session.scalars(select(Alarm).where(Alarm.alarm_type == "device_offline")).one()
        assert offline_alarm.state == "cleared_unack", "back online clears the offline alarm; a person closes it"
        device = session.get(Device, "box-1")
        assert device is not None and device.online is True and device.last_seen is not None
        assert device.last_seen.timestamp() == 1.8e9 + 7

    # A person acts: each step audited with who, refusals too.
    revisions = []
    with sessions.begin() as session:
        revisions.append(store.alarm_views(session, [store.operator_action(session, panic.id, "ack", "guard-li",
                                                                           utcnow())])[0]["revision"])
    with sessions.begin() as session:
        try:
            store.operator_action(session, panic.id, "close", "guard-li", utcnow())
            raise AssertionError("closing an active latched alarm must be refused")
        except RefusedAction as exc:
            assert "reset" in str(exc)
    with sessions.begin() as session:
        for action in ("reset", "close"):
            alarm = store.operator_action(session, panic.id, action, "supervisor-wang", utcnow(),
                                          note="false alarm, tested" if action == "reset" else None)
            revisions.append(store.alarm_views(session, [alarm])[0]["revision"])
    assert revisions == sorted(set(revisions)), "every change a newer revision, so consoles keep the newest view"
    with sessions() as session:
        view = store.alarm_views(session, [session.get(Alarm, panic.id)])[0]
    steps = [(s["action"], s["actor"], s["to"]) for s in view["steps"]]
    assert steps[-3:] == [("ack", "guard-li", "active_ack"), ("reset", "supervisor-wang", "cleared_ack"),
                          ("close", "supervisor-wang", "closed")], "its handling goes with the view (the district)"
    assert view["steps"][-2]["note"] == "false alarm, tested" and view["steps"][-1]["n"] == view["revision"]
    with sessions() as session:
        alarm = session.get(Alarm, panic.id)
        assert alarm is not None and alarm.state == "closed"
        assert (alarm.acked_by, alarm.cleared_by, alarm.closed_by) == ("guard-li", "supervisor-wang",
                                                                       "supervisor-wang")
        steps = session.scalars(select(AlarmTransition).where(AlarmTransition.alarm_id == panic.id)
                                .order_by(AlarmTransition.id)).all()
        assert [(s.action, s.actor) for s in steps] == [
            ("raise", "system"), ("condition_restored", "system"), ("retrigger", "system"),
            ("ack", "guard-li"), ("reset", "supervisor-wang"), ("close", "supervisor-wang")]
        audit = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.action, a.result) for a in audit] == [
            ("alarm.ack", "ok"), ("alarm.close", "refused"), ("alarm.reset", "ok"), ("alarm.close", "ok")]
        assert json.dumps(audit[2].detail, ensure_ascii=False).count("false alarm") == 1
    engine.dispose()


def test_raw_events_past_the_retention_are_purged_and_alarms_kept(db_url: str) -> None:
    from datetime import timedelta

    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    now = utcnow()
    with sessions.begin() as session:
        for i, age in enumerate((200, 181, 179, 1)):  # days
            at = now - timedelta(days=age)
            session.add(IngestedEvent(id=f"00000000-0000-7000-8000-00000000000{i}", device_id="box",
                                      type="campus.device.telemetry", device_time=at, received_at=at, seq=i,
                                      historical=False, test=False, data={}))
        store.apply_effects(session, [RaiseAlarm("box:p", "box", "panic", 1, True, None, None, False,
                                                 "e", now - timedelta(days=400))])
    with sessions.begin() as session:
        assert store.purge_events(session, now - timedelta(days=180)) == 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(IngestedEvent)) == 2
        assert session.scalar(select(func.count()).select_from(Alarm)) == 1, "alarm records are kept"
    engine.dispose()
