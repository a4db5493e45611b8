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
