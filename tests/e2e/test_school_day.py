"""A whole school day through every part at once: the demo school's simulators (alarm boxes, bollards, two OSDP
readers on one bus, QR scanners, a patrol wand, two cameras), the gateway (drivers, rules, console) and the
day's scenario played on the site's clock at 300x; then the records read as an auditor reads them, each figure
counted from what the scenario did, not from the gateway's own bookkeeping. Once on the embedded broker and
SQLite, once on Mosquitto and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from gateway.clock import SiteClock, use_site_clock
from gateway.config_file import validate_config
from gateway.demo import USERS, demo_users, fresh_data_dir, site_clock_for
from gateway.demo import scenario as sc
from gateway.demo.school import OSDP_READERS, SCANNERS, TIMEZONE, SimulatedSchool, school_day
from gateway.records.models import AccessEvent, Alarm, AlarmTransition, Device, PatrolRound, Visit
from gateway.reports.figures import collect, period
from tests.integration.helpers import Running, logged_in
from tests.support import MosquittoBroker, broker_section, drop_postgres_database, new_postgres_database, wait_for

SPEED = 300.0
TZ = ZoneInfo(TIMEZONE)
KEY_ENV = "CAMPUSGW_TEST_DEMO_OSDP_KEY"


@dataclass
class Day:
    school: SimulatedSchool
    running: Running
    clock: SiteClock
    actions: list[sc.Action]
    plan: sc.Scenario
    guard: httpx.Client
    acked_by_guard: list[int]

    def records(self, model: Any, *where: Any) -> list[Any]:
        with self.running.gateway.sessions() as session:
            return list(session.scalars(select(model).where(*where)))


def play_the_day(school: SimulatedSchool, running: Running, clock: SiteClock, actions: list[sc.Action],
                 guard: httpx.Client) -> list[int]:
    """The scenario in a thread; meanwhile the guard acknowledges the panic from the console as it comes in,
    as the guard on duty would. Returns the alarms the guard acknowledged."""
    stop = threading.Event()
    done: list[int] = []
    player = threading.Thread(target=lambda: done.append(sc.play(actions, clock, school, stop, lambda line: None)))
    player.start()
    acked: list[int] = []
    try:
        panic = wait_for(lambda: next((a for a in guard.get("/api/alarms").json() if a["alarm_type"] == "panic"),
                                      None), 150, "the panic on the guard's console")
        reply = guard.post(f"/api/alarms/{panic['id']}/ack", json={}, headers={"X-CSRF-Token": guard.csrf})
        assert reply.status_code == 200, reply.text
        acked.append(panic["id"])
        player.join(300)
        assert not player.is_alive() and done == [len(actions)], "every action of the day was carried out"
    finally:
        stop.set()
        player.join(10)
    return acked


@pytest.fixture(params=["embedded-sqlite", "mosquitto-postgresql"])
def day(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Day]:
    broker: dict[str, Any] | None = None
    database: dict[str, Any] | None = None
    mosquitto: MosquittoBroker | None = None
    pg_url: str | None = None
    if request.param == "mosquitto-postgresql":
        mosquitto = MosquittoBroker(tmp_path)
        mosquitto.start()
        broker = broker_section(mosquitto.port)
        pg_url = new_postgres_database()
        monkeypatch.setenv("CAMPUSGW_TEST_DEMO_DB", pg_url)
        database = {"url_env": "CAMPUSGW_TEST_DEMO_DB"}
    plan = sc.load("school_day")
    date = school_day(datetime.now(TZ).date())
    actions = sc.expand(plan, date, TZ, SPEED)
    data_dir = tmp_path / "school"
    fresh_data_dir(data_dir)
    school = SimulatedSchool(data_dir, TZ)
    running: Running | None = None
    try:
        school.start()
        monkeypatch.setenv(KEY_ENV, school.osdp_key)
        config = validate_config(school.config(broker=broker, database=database, key_env=KEY_ENV))
        clock = site_clock_for(sc.at_time(date, plan.start, TZ), SPEED)
        use_site_clock(clock)
        running = Running(config)
        logins = dict(demo_users(running.gateway.sessions))
        school.seed(running.gateway.sessions, config, date, dict(USERS))
        assert running.gateway.console_url
        guard = logged_in(running.gateway.console_url, "guard", logins["guard"])
        wait_for(lambda: all(r.is_online and r.is_sc_active for r in school.osdp.values()), 30,
                 "both OSDP readers online with the secure channel")
        acked = play_the_day(school, running, clock, actions, guard)
        # Let the rules' periodic jobs (every real second: 5 site minutes) judge the day's last rounds.
        wait_for(lambda: time.time() > clock.real(sc.at_time(date, plan.end, TZ).timestamp()) + 3, 30, "the day's end")
        yield Day(school, running, clock, actions, plan, guard, acked)
    finally:
        if running is not None:
            running.stop()
        school.stop()
        use_site_clock(None)
        if mosquitto is not None:
            mosquitto.stop()
        if pg_url is not None:
            drop_postgres_database(pg_url)


def site(at: datetime) -> str:
    return at.astimezone(TZ).strftime("%H:%M")


@pytest.mark.timeout(420)
def test_a_school_day_is_in_the_records_as_it_happened(day: Day) -> None:
    cards = [a for a in day.actions if a.verb == "card"]
    scans = [a for a in day.actions if a.verb == "visitor"]

    # Every device of the school is in the records and online at the day's end, on its own protocol.
    devices = {d.id: d.online for d in day.records(Device)}
    assert set(devices) >= {*OSDP_READERS, *SCANNERS, "south-gate-box", "north-gate-box", "yard-cam"}
    assert all(devices.values()), [d for d, up in devices.items() if not up]

    # Every passage in the access log with its decision: one row per card shown and per pass scanned.
    log = day.records(AccessEvent)
    readers = Counter(e.reader for e in log)
    expected = Counter(a.args[0] for a in cards) + Counter(a.args[0] for a in scans)
    assert readers == expected, "one decision per card and pass, at the reader it was shown at"
    morning = [e for e in log if e.reader == "south-gate-reader-in"]
    assert all(e.granted for e in morning), [(e.reason, site(e.at)) for e in morning if not e.granted]
    assert min(site(e.at) for e in morning) >= "07:25", "stamped with the site's time"
    refused = [e for e in log if not e.granted]
    assert [(e.reader, site(e.at)) for e in refused] == [("south-gate-reader-out", "08:20")], \
        "the one student leaving during lessons is refused, nobody else"
    evening = [e for e in log if e.reader == "south-gate-reader-out" and e.granted]
    assert len(evening) == 35 and min(site(e.at) for e in evening) >= "16:25"

    # The panic: raised at 09:15, its linkage (both bollards EFO, the camera's clip) in its history, and
    # acknowledged by the guard on duty.
    (panic,) = day.records(Alarm, Alarm.alarm_type == "panic")
    assert site(panic.raised_at) == "09:15" and panic.device_id == "south-gate-box"
    assert panic.acked_by == "guard" and panic.id in day.acked_by_guard
    history = day.records(AlarmTransition, AlarmTransition.alarm_id == panic.id)
    linked = " ".join(t.note or "" for t in history)
    for bollard in ("south-gate-bollard-east", "south-gate-bollard-west"):
        assert f"'efo' sent to bollard {bollard}" in linked, linked
    assert "camera south-gate-cam" in linked, linked

    # The covered camera and the reader without power: alarms, and they cleared when it was over.
    (covered,) = day.records(Alarm, Alarm.alarm_type == "tamper", Alarm.device_id == "yard-cam")
    assert "11:00" <= site(covered.raised_at) < "12:00" and covered.cleared_at is not None
    offline = day.records(Alarm, Alarm.alarm_type == "device_offline", Alarm.device_id == "south-gate-reader-out")
    assert len(offline) == 1 and "12:10" <= site(offline[0].raised_at) < "13:40"
    assert offline[0].cleared_at is not None and site(offline[0].cleared_at) >= "13:40", "back after power returned"
    others = day.records(Alarm, Alarm.alarm_type.not_in(["panic", "tamper", "device_offline", "patrol_overdue"]))
    assert others == [], [(a.alarm_type, a.device_id) for a in others]

    # The visitor: in at 10:00 and out at 10:40 by the pass, nobody left on site.
    (visit,) = day.records(Visit)
    assert visit.state == "left" and site(visit.checked_in_at) == "10:00" and site(visit.checked_out_at) == "10:40"

    # Two rounds: the morning's complete, the afternoon's with CP-04 named as missed.
    rounds = sorted(day.records(PatrolRound), key=lambda r: r.due_at)
    assert [(site(r.due_at), r.state) for r in rounds] == [("07:00", "complete"), ("13:00", "incomplete")]
    assert rounds[1].result["missed"] == ["cp-04"]
    (overdue,) = day.records(Alarm, Alarm.alarm_type == "patrol_overdue")
    assert site(overdue.raised_at) >= "13:00", "the round with a missed checkpoint is an alarm for the leader"

    # The daily duty log report says the same figures.
    start, end = period("daily", sc.at_time(day.actions[0].at.date(), "12:00", TZ), TZ)
    with day.running.gateway.sessions() as session:
        report = collect(session, "daily", start, end, TZ, "demo-school")
    summary = dict(report.summary)
    assert summary["Access decisions"] == len(cards) + len(scans)
    assert summary["Access denied"] == 1
    assert summary["Alarms"] == 4
    assert summary["Visitors registered"] == 1
    assert summary["Checkpoints missed"] == 1
    assert summary["Patrol rounds complete (%)"] == 50.0
