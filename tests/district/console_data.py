"""Districts as the district's workers leave them in PostgreSQL (store.write_alarms, store.write_state), for the
console's tests: alarm views as a school announces them, devices' availability and the schools' facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine

from gateway.district import store
from gateway.district.console import users
from tests.support import drop_postgres_database, new_postgres_database

PASSWORD = "a long enough password"
TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(UTC)


def view(alarm_id: int, alarm_type: str, priority: int, state: str, raised_at: datetime, test: bool = False,
         **extra: Any) -> dict[str, Any]:
    """An alarm view as a school's rules service announces it (gateway.records.store.alarm_views)."""
    return {"id": alarm_id, "alarm_type": alarm_type, "priority": priority, "state": state, "zone": "south-gate",
            "place": "南门 门卫室", "test": test, "raised_at": raised_at.isoformat(), "device_id": "gate-box",
            "device_name": "南门报警盒", "acked_by": None, "acked_at": None, "last_note": None, "escalation_level": 0,
            "silenced_by": None, "police": None, "attachments": [], "steps": [], "revision": 1, **extra}


def alarm_row(site: str, v: dict[str, Any]) -> dict[str, Any]:
    """The row the district's worker makes of a view (gateway.district.worker.decode_alarms)."""
    return {"site": site, "alarm_id": v["id"], "revision": v["revision"], "state": v["state"],
            "alarm_type": v["alarm_type"], "priority": v["priority"], "place": v["place"], "device": v["device_id"],
            "test": v["test"], "raised_at": datetime.fromisoformat(v["raised_at"]), "received_at": NOW, "view": v}


def device(site: str, kind: str, name: str, online: bool, seq: int) -> dict[str, Any]:
    return {"table": store.devices.name, "site": site, "kind": kind, "device": name, "online": online,
            "since": NOW - timedelta(minutes=5), "seq": seq, "received_at": NOW}


def fact(site: str, name: str, value: dict[str, Any], seq: int) -> dict[str, Any]:
    return {"table": store.facts.name, "site": site, "fact": name, "value": value, "seq": seq, "received_at": NOW}


def paths(*up: bool) -> dict[str, Any]:
    return {"paths": [{"name": f"path-{n}", "up": u, "since": (NOW - timedelta(hours=1)).isoformat(),
                       "last_ack_at": NOW.isoformat() if u else None, "last_error": None if u else "no answer"}
                      for n, u in enumerate(up, 1)]}


PANIC = view(7, "panic", 1, "active_ack", NOW - timedelta(minutes=3), revision=5,
             acked_by="guard1", acked_at=(NOW - timedelta(minutes=2)).isoformat(),
             police={"alarm": {"state": "acked", "acked_at": (NOW - timedelta(minutes=3)).isoformat(),
                               "path": "path-1", "attempts": 1, "error": None}},
             attachments=[{"kind": "snapshot", "camera": "gate-cam", "ref": "s-1", "state": "ready", "frames": None},
                          {"kind": "clip", "camera": "gate-cam", "ref": "c-1", "state": "recording", "frames": 40}],
             steps=[{"n": 1, "at": (NOW - timedelta(minutes=3)).isoformat(), "action": "raise", "from": None,
                     "to": "active_unack", "actor": "system", "note": None, "said": None},
                    {"n": 2, "at": (NOW - timedelta(minutes=3)).isoformat(), "action": "linkage",
                     "from": "active_unack", "to": "active_unack", "actor": "system",
                     "note": "linkage: 'raise' sent to bollard gate-bollards",
                     "said": {"msg": "linkage: '{command}' sent to bollard {device}",
                              "params": {"command": "raise", "device": "gate-bollards"}}},
                    {"n": 5, "at": (NOW - timedelta(minutes=2)).isoformat(), "action": "ack", "from": "active_unack",
                     "to": "active_ack", "actor": "guard1", "note": None, "said": None}])


def fill(engine: Engine) -> None:
    """Five schools; the order they should come in: north-primary (a P1 panic), east-middle (a P2 tamper
    waiting), lock-school (locked down), dark-school (gateway and bridge gone, silent), calm-school (all well;
    its button test counts for nothing)."""
    with engine.begin() as conn:
        store.write_alarms(conn, [
            alarm_row("north-primary", PANIC),
            alarm_row("north-primary", view(8, "tamper", 2, "active_unack", NOW - timedelta(minutes=1))),
            alarm_row("north-primary", view(3, "fault", 3, "closed", NOW - timedelta(days=1))),
            alarm_row("east-middle", view(1, "tamper", 2, "active_unack", NOW - timedelta(minutes=9))),
            alarm_row("calm-school", view(4, "panic", 1, "active_unack", NOW - timedelta(minutes=1), test=True)),
        ], [], NOW)
        store.write_state(conn, [
            device("north-primary", "gateway", "gw1", True, 1), device("north-primary", "camera", "yard-cam", False, 2),
            device("north-primary", "alarm_input", "gate-box", True, 3),
            fact("north-primary", "bridge", {"up": True}, 4), fact("north-primary", "police", paths(True, False), 5),
            device("east-middle", "gateway", "gw1", True, 6), fact("east-middle", "bridge", {"up": True}, 7),
            device("lock-school", "gateway", "gw1", True, 8), fact("lock-school", "bridge", {"up": True}, 9),
            fact("lock-school", "lockdown", {"active": True, "drill": False, "reason": "intruder",
                                             "started_at": NOW.isoformat(), "started_by": "super1"}, 10),
            device("calm-school", "gateway", "gw1", True, 11), fact("calm-school", "bridge", {"up": True}, 12),
            fact("calm-school", "police", paths(True, True), 13),
            fact("calm-school", "lockdown", {"active": False}, 14),
        ], [], NOW)
        store.write_state(conn, [device("dark-school", "gateway", "gw1", False, 15),
                                 fact("dark-school", "bridge", {"up": False}, 16)], [], NOW - timedelta(minutes=40))
        for name, role in (("duty1", "duty_officer"), ("police1", "police_liaison"), ("inspector1", "inspector")):
            users.add_user(conn, name, role, PASSWORD, NOW, language="zh_CN" if name != "police1" else "en")


@contextmanager
def district_database() -> Iterator[Engine]:
    """A fresh PostgreSQL database with the district's tables and the console's, filled by fill()."""
    url = new_postgres_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        store.create_schema(engine)
        users.create_tables(engine)
        fill(engine)
        yield engine
    finally:
        engine.dispose()
        drop_postgres_database(url)


# Upward reporting (逐级上报) for the Reports page and the monthly summary: incidents, the district's alerts,
# submitted reports and a month's events, all in MONTH (two months before now: nothing of fill()'s is in it).
def _month_two_back() -> datetime:
    first = NOW.astimezone(TZ).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    back = (first - timedelta(days=1)).replace(day=1)
    return (back - timedelta(days=1)).replace(day=1)


MONTH_START = _month_two_back()
MONTH = MONTH_START.strftime("%Y-%m")


def on(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in MONTH, in the district's zone."""
    return MONTH_START.replace(day=day, hour=hour, minute=minute)


def incident(site: str, incident_id: int, revision: int, title: str, occurred: datetime, *, category: str = "injury",
             severity: str = "minor", reported: datetime | None = None, state: str | None = None,
             closed: datetime | None = None, saw_ack: datetime | None = None) -> dict[str, Any]:
    """An incident's row as the district's worker makes it of the school's view (worker.decode_reports)."""
    due = occurred + timedelta(hours=1)
    state = state or ("reported" if reported else "open")
    iso = {k: v.isoformat() if v else None for k, v in (("occurred_at", occurred), ("report_due_at", due),
                                                         ("reported_at", reported), ("closed_at", closed))}
    view = {"id": incident_id, "revision": revision, "category": category, "severity": severity, "title": title,
            "place": "教学楼", "state": state, **iso,
            "district_ack": {"by": "duty1", "at": saw_ack.isoformat()} if saw_ack else None}
    return {"table": store.incidents.name, "site": site, "incident_id": incident_id, "revision": revision,
            "state": state, "category": category, "severity": severity, "title": title, "place": "教学楼",
            "occurred_at": occurred, "report_due_at": due, "reported_at": reported, "closed_at": closed,
            "school_saw_ack_at": saw_ack, "view": view, "received_at": NOW}


def submission(site: str, kind: str, period: str, starts: datetime, ends: datetime, submitted: datetime,
               patrol: float, hazards: int) -> dict[str, Any]:
    """A submitted report's row (worker.decode_reports), its figures as gateway.reports.submit makes them."""
    figures = {
        "summary": {"Alarms": 2, "Median time to acknowledge (s)": 31.5, "Patrol rounds complete (%)": patrol,
                    "Checkpoints missed": 3, "Incidents": 2, "Hazards open at the end": hazards},
        "previous": {"Alarms": 4, "Incidents": 1},
        "tables": [{"key": "alarms", "title": "Alarms by kind", "columns": ["Kind", "Alarms",
                    "Acknowledged, median s", "Acknowledged, p90 s", "Reset, median s"],
                    "rows": [["panic", 2, 31.5, 40.0, None]], "chart": True, "translate_first": True},
                   {"key": "five_nos", "title": "The five nos", "columns": ["Goal", "Status", "Incidents"],
                    "rows": [["no_fire", "met", 0]], "chart": False, "translate_first": True}],
        "inspections": [{"kind": "monthly", "period": period, "due_at": (ends - timedelta(days=1)).isoformat(),
                         "done_at": (ends - timedelta(days=3)).isoformat(), "done_by": "super1",
                         "notes": "消防通道畅通"},
                        {"kind": "term_start", "period": "2026-09", "due_at": (ends - timedelta(days=1)).isoformat(),
                         "done_at": None, "done_by": None, "notes": None}]}
    return {"table": store.submissions.name, "site": site, "kind": kind, "period": period, "submission_id": 1,
            "starts": starts, "ends": ends, "submitted_at": submitted, "submitted_by": "super1", "figures": figures,
            "received_at": NOW}


def event(site: str, n: int, at: datetime) -> dict[str, Any]:
    return {"id": f"{site}-{n}", "time": at, "site": site, "kind": "alarm_input", "device": "gate-box",
            "type": "campus.alarm_input.triggered", "class": "alarm", "test": False, "historical": False,
            "received_at": NOW, "data": {}}


def fill_reports(engine: Engine) -> None:
    """In MONTH: north-primary has 3 events, 2 alarms (and a button test), an incident reported on time (#11) and
    one reported late (#12: its alert raised, then cleared by the report), and its monthly report submitted;
    east-middle 1 event, 1 alarm, an incident never reported (#4: its alert still on) and one closed without a
    report (#5), no monthly report; calm-school its monthly report only (and a term report). dark-school has
    been silent for two days. Now: calm-school's incident #2, still within its deadline."""
    end = (MONTH_START + timedelta(days=32)).replace(day=1)
    with engine.begin() as conn:
        store.write(conn, [event("north-primary", n, on(3 + n, 10)) for n in range(3)]
                    + [event("east-middle", 1, on(9, 10)), event("north-primary", 9, NOW)], [], NOW)
        store.write_alarms(conn, [
            alarm_row("north-primary", view(101, "panic", 1, "closed", on(3, 8))),
            alarm_row("north-primary", view(102, "tamper", 2, "closed", on(20, 23, 59))),
            alarm_row("north-primary", view(103, "panic", 1, "closed", on(4, 8), test=True)),
            alarm_row("east-middle", view(104, "fault", 3, "closed", on(9, 10)))], [], NOW)
        store.write_reports(conn, [
            incident("north-primary", 11, 3, "校外人员翻墙", on(2, 9), category="intrusion", severity="serious",
                     reported=on(2, 9, 30)),
            incident("north-primary", 12, 1, "学生摔伤", on(5, 8)),
            incident("east-middle", 4, 2, "实验室冒烟", on(10, 14), category="fire", severity="serious"),
            incident("east-middle", 5, 2, "误报", on(12, 9), state="closed", closed=on(12, 9, 20)),
            incident("calm-school", 2, 1, "走廊积水", NOW - timedelta(minutes=10)),
            submission("north-primary", "monthly", MONTH, MONTH_START, end, end + timedelta(days=2, hours=3), 96.5, 1),
            submission("calm-school", "monthly", MONTH, MONTH_START, end, end + timedelta(days=1), 100.0, 0),
            submission("calm-school", "term", f"{MONTH}-01_{MONTH}-20", MONTH_START, on(21, 0),
                       on(21, 10), 98.0, 0)], [], NOW)
        store.check_deadlines(conn, NOW)  # #12 and #4 overdue: the district's alerts
        store.write_reports(conn, [incident("north-primary", 12, 2, "学生摔伤", on(5, 8), reported=on(5, 11))],
                            [], NOW)
        store.check_deadlines(conn, NOW)  # #12's report came: its alert cleared, still to acknowledge
        conn.execute(store.schools.update().where(store.schools.c.site == "dark-school")
                     .values(last_contact=NOW - timedelta(days=2)))
