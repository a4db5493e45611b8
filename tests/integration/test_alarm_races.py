"""A person and the rules acting on one alarm at the same moment, on SQLite and PostgreSQL: neither's change is
lost. Seen in the browser tests: an acknowledgement between the rules' read of an alarm and their write of a
release put the alarm back to unacknowledged."""

from __future__ import annotations

import threading
from datetime import timedelta

from gateway.records import db, store
from gateway.records.models import Alarm, utcnow
from gateway.rules.alarms import RaiseAlarm, clear_condition


def test_an_acknowledgement_during_the_rules_transaction_is_kept(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    now = utcnow()
    with sessions.begin() as session:
        raised: list[tuple[RaiseAlarm, int]] = []
        store.apply_effects(session, [RaiseAlarm(key="box:1", device_id="box", alarm_type="panic", priority=1,
                                                 latching=True, zone=None, place=None, test=False, event_id="e1",
                                                 at=now)], raised)
    alarm_id = raised[0][1]
    acked, failed = threading.Event(), []

    def guard_acknowledges() -> None:
        try:
            with sessions.begin() as session:
                store.operator_action(session, alarm_id, "ack", "guard1", utcnow())
            acked.set()
        except Exception as exc:  # reported below: the test must not hang on a failed thread
            failed.append(exc)
            acked.set()

    with sessions.begin() as rules:  # the button is released: the rules read the alarm, then write the release
        current = store.open_alarms(rules, ["box:1"])["box:1"]
        effects = clear_condition(current, "e2", now + timedelta(seconds=1))
        guard = threading.Thread(target=guard_acknowledges)
        guard.start()
        assert not acked.wait(0.5), "the acknowledgement waits for the rules' transaction"
        store.apply_effects(rules, effects)
    guard.join(30)
    assert acked.is_set() and not failed, failed
    with sessions() as session:
        alarm = session.get(Alarm, alarm_id)
        assert alarm is not None
        assert (alarm.state, alarm.acked_by, alarm.condition_active) == ("active_ack", "guard1", False)
    engine.dispose()
