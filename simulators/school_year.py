"""A school's records over a stretch of days, written straight into the database: people, the access log at the
gate, visitors, alarms with their response times, patrol rounds, incidents, hazards and device outages. For the
reports' tests (the figures must equal what was written: `Totals`) and the report benchmark (a year of a
2,000-student school).

Deterministic for a seed; rows go in with bulk inserts in chunks, so a year (about a million access-log rows)
takes seconds on SQLite.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from gateway.events import new_id
from gateway.records.models import (
    AccessEvent,
    Alarm,
    Device,
    Hazard,
    Incident,
    PatrolRound,
    Person,
    Visit,
)

CHUNK = 20_000
DENIAL_REASONS = ("closed_campus", "unknown_credential", "expired", "anti_passback")
ALARM_TYPES = ("panic", "tamper", "door_forced", "device_offline", "access_failures", "fire")
CATEGORIES = ("intrusion", "injury", "equipment_fault", "traffic", "other")


@dataclass
class Totals:
    """What was written, counted as the reports count it (tests compare the figures with these)."""

    access: int = 0
    denied: Counter[str] = field(default_factory=Counter)
    visits: int = 0
    alarms: Counter[str] = field(default_factory=Counter)
    rounds: Counter[str] = field(default_factory=Counter)
    missed: int = 0
    incidents: Counter[str] = field(default_factory=Counter)
    hazards_found: int = 0
    hazards_signed_off: int = 0


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def write_year(sessions: sessionmaker[Session], first_day: date, days: int, tz: tzinfo, *, students: int = 2000,
               staff: int = 150, visitors_per_day: int = 15, seed: int = 1,
               progress: Callable[[str], None] = lambda step: None) -> Totals:
    rng = random.Random(seed)
    totals = Totals()
    now = datetime.now(tz)
    school_days = [first_day + timedelta(days=i) for i in range(days)
                   if (first_day + timedelta(days=i)).weekday() < 5]

    def at(day: date, hh: int, mm: int, spread_s: int = 0) -> datetime:
        return datetime.combine(day, time(hh, mm), tz) + timedelta(seconds=rng.randrange(spread_s + 1))

    progress("people")
    with sessions.begin() as session:
        session.execute(insert(Person), [
            {"kind": "student" if i < students else "staff", "name": f"P{i:05d}", "group_name": f"{1 + i % 6}-{i % 8}",
             "external_id": f"X{i:06d}", "active": True, "created_at": now, "updated_at": now}
            for i in range(students + staff)])
        session.execute(insert(Device), [{"id": f"dev-{i:02d}", "kind": "reader", "driver": "osdp", "test_mode": False}
                                         for i in range(30)])

    progress("access")

    def passages() -> Iterator[dict[str, Any]]:
        for day in school_days:
            for person in range(1, students + staff + 1):
                kind = "student" if person <= students else "staff"
                for direction, hh, mm in (("entry", 7, 20), ("exit", 16, 40)):
                    denied = rng.random() < 0.01
                    reason = rng.choice(DENIAL_REASONS) if denied else "granted"
                    totals.access += 1
                    if denied:
                        totals.denied[reason] += 1
                    yield {"id": new_id(), "at": at(day, hh, mm, 3600), "reader": f"gate-{direction}",
                           "direction": direction, "credential": f"{person:010d}", "person_id": person,
                           "person_name": f"P{person:05d}", "person_kind": kind, "visit_id": None,
                           "granted": not denied, "reason": reason, "detail": "", "passback": False}

    for batch in _chunks(passages()):
        with sessions.begin() as session:
            session.execute(insert(AccessEvent), batch)

    progress("visitors")
    visits = []
    for day in school_days:
        for _ in range(visitors_per_day):
            start = at(day, 8, 0, 8 * 3600)
            state = rng.choice(("left", "left", "left", "no_checkout", "refused"))
            visits.append({"person_id": 1, "name": "访客", "id_type": "resident_id", "host_id": None,
                           "host_name": "host", "purpose": "visit", "expected_minutes": 60, "state": state,
                           "registered_at": start, "registered_by": "guard", "valid_from": start,
                           "valid_until": start + timedelta(hours=2),
                           "checked_in_at": start if state != "refused" else None,
                           "checked_out_at": start + timedelta(minutes=50) if state == "left" else None,
                           "overstay_alerted_at": None})
    totals.visits = len(visits)
    for batch in _chunks(iter(visits)):
        with sessions.begin() as session:
            session.execute(insert(Visit), batch)

    progress("alarms")
    alarms: list[dict[str, Any]] = []
    for day in school_days:
        for _ in range(rng.randrange(4)):
            kind = rng.choice(ALARM_TYPES)
            raised = at(day, 0, 0, 86_399)
            acked = raised + timedelta(seconds=rng.randrange(5, 120))
            cleared = acked + timedelta(seconds=rng.randrange(30, 1800))
            totals.alarms[kind] += 1
            alarms.append({"key": f"{kind}-{len(alarms)}", "device_id": f"dev-{rng.randrange(30):02d}",
                           "alarm_type": kind, "priority": 2, "latching": False, "state": "closed", "zone": None,
                           "place": "gate", "test": False, "raised_at": raised, "raised_event_id": new_id(),
                           "occurrences": 1, "last_event_at": raised, "condition_active": False,
                           "acked_at": acked, "acked_by": "guard", "cleared_at": cleared, "cleared_by": "guard",
                           "closed_at": cleared, "closed_by": "guard", "escalation_level": 0})
    with sessions.begin() as session:
        if alarms:
            session.execute(insert(Alarm), alarms)

    progress("patrols")
    rounds = []
    for i in range(days):
        day = first_day + timedelta(days=i)
        for number, hh in enumerate((9, 14, 20, 2), 1):
            state = rng.choice(("complete", "complete", "complete", "incomplete", "expired"))
            missed = ["cp-03"] if state == "incomplete" else []
            totals.rounds[state] += 1
            totals.missed += len(missed)
            rounds.append({"route": "main", "shift": "day" if hh < 20 else "night", "day": day.isoformat(),
                           "number": number, "due_at": at(day, hh, 0), "state": state,
                           "started_at": None, "finished_at": None, "guard": "guard",
                           "result": {"missed": missed, "late": [], "out_of_order": []}})
    with sessions.begin() as session:
        session.execute(insert(PatrolRound), rounds)

    progress("ledgers")
    incidents: list[dict[str, Any]] = []
    hazards: list[dict[str, Any]] = []
    for day in school_days:
        if rng.random() < 0.1:
            category = rng.choice(CATEGORIES)
            occurred = at(day, 8, 0, 8 * 3600)
            totals.incidents[category] += 1
            incidents.append({"category": category, "severity": rng.choice(("minor", "minor", "serious")),
                              "title": "incident", "place": "campus", "people": None, "occurred_at": occurred,
                              "confirmed_at": occurred, "report_due_at": occurred + timedelta(hours=1),
                              "reported_at": occurred + timedelta(minutes=rng.randrange(10, 90)),
                              "reported_by": "leader", "written_due_at": None, "written_at": None,
                              "state": "closed", "alarm_id": None, "alerts": {}, "created_at": occurred,
                              "created_by": "guard", "closed_at": occurred + timedelta(days=1)})
        if rng.random() < 0.3:
            found = at(day, 10, 0, 3600)
            signed = found + timedelta(days=rng.randrange(1, 10)) if rng.random() < 0.7 else None
            totals.hazards_found += 1
            hazards.append({"inspection_id": None, "source": "inspection", "place": "campus", "description": "hazard",
                            "severity": "minor", "found_at": found, "found_by": "guard", "assigned_to": None,
                            "measures": None, "due_at": None, "fixed_at": signed, "fixed_by": None,
                            "signed_off_at": signed, "signed_off_by": "leader" if signed else None,
                            "state": "signed_off" if signed else "found"})
    with sessions.begin() as session:
        if incidents:
            session.execute(insert(Incident), incidents)
        if hazards:
            session.execute(insert(Hazard), hazards)
    totals.hazards_signed_off = sum(1 for h in hazards if h["signed_off_at"] is not None)
    return totals
