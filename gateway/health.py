"""The gateway's health from outside a running process: what `campusgw status` prints and what /metrics reads
of the records, from one set of queries so the two never disagree.

`status_rows` is what an IT person checks first (each row: name, ok, what was found); the record queries
(devices, open alarms, response times, the police link) serve /metrics too (gateway.metrics).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.bus import Bus
from gateway.clock import NtpError, measure
from gateway.config import Config
from gateway.records import db, store
from gateway.records.models import AccessEvent, Alarm, Device, IngestedEvent, PoliceMessage, Visit, utcnow
from gateway.rules.alarms import OPEN_STATES
from gateway.systemd import clock_synchronised

Row = tuple[str, bool, str]  # (what, ok, what was found)
OUTBOX_BACKLOG_LIMIT = 1000  # events not yet recorded: more than this, or ...
OUTBOX_AGE_LIMIT_S = 60.0  # ... the oldest older than this, needs attention


@dataclass(frozen=True)
class DeviceHealth:
    id: str
    kind: str
    online: bool | None  # None: not heard from yet


def devices(session: Session) -> list[DeviceHealth]:
    return [DeviceHealth(d.id, d.kind, d.online) for d in session.scalars(select(Device).order_by(Device.id))]


def open_alarms(session: Session) -> dict[tuple[str, int], int]:
    """(state, priority) -> how many alarms are open so."""
    rows = session.execute(select(Alarm.state, Alarm.priority, func.count()).where(Alarm.state.in_(OPEN_STATES))
                           .group_by(Alarm.state, Alarm.priority))
    return {(state, priority): count for state, priority, count in rows}


def response_times(session: Session) -> tuple[list[float], list[float]]:
    """Seconds from each real alarm to a person's acknowledgement, and to a person's reset."""
    times = session.execute(select(Alarm.raised_at, Alarm.acked_at, Alarm.cleared_at, Alarm.cleared_by)
                            .where(Alarm.test.is_(False), Alarm.acked_at.is_not(None))).all()
    acked = [(a - r).total_seconds() for r, a, _, _ in times if a]
    reset = [(c - r).total_seconds() for r, _, c, by in times if c is not None and by != "system"]
    return acked, reset


def outbox_backlog(data_dir: Path) -> tuple[int, float | None] | None:
    """Events in the drivers' outbox file not yet recorded by the rules service, and the oldest one's age in
    seconds; None when there is no outbox file (the drivers never ran here)."""
    path = data_dir / "outbox.db"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        queued, oldest = conn.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
    return queued, (time.time() - oldest if oldest else None)


def police_rows(session: Session, names: list[str]) -> list[Row]:
    """The alarm-centre link as the running gateway last saw it: each path, and reports not yet acknowledged."""
    paths = {p["name"]: p for p in store.police_paths(session)}
    pending = session.scalar(select(func.count()).select_from(PoliceMessage)
                             .where(PoliceMessage.state == "pending")) or 0
    rows: list[Row] = []
    for name in names:
        p = paths.get(name)
        if p is None or p["up"] is None:
            rows.append((f"police {name}", True, "not tried yet (is the gateway running?)"))
        elif p["up"]:
            rows.append((f"police {name}", True, f"answers; last acknowledgement {p['last_ack_at']}"))
        else:
            rows.append((f"police {name}", False, f"DOWN since {p['since']}: {p['last_error']}"))
    rows.append(("police", pending == 0, f"{pending} reports waiting for the alarm centre's acknowledgement"))
    return rows


def _days_ago(at: datetime | None) -> str:
    return f"{(utcnow() - at).days} days" if at else ""


def broker_row(config: Config) -> Row:
    if config.broker.embedded:
        return ("broker", True, "embedded: runs inside 'campusgw run'")
    bus = Bus(config.broker, f"campusgw-status-{os.getpid()}", name="drivers")
    bus.start()
    up = bus.wait_connected(5)
    bus.stop()
    host, port, _ = config.broker.host_port()
    return ("broker", up, f"{host}:{port} {'answers' if up else 'does not answer (is Mosquitto running?)'}")


def records_rows(config: Config) -> list[Row]:
    try:
        engine = db.make_engine(config.database_url())
        if not db.has_tables(engine):
            return [("database", False, "has no tables yet: run 'campusgw db upgrade -c FILE' (or start the "
                                        "gateway)")]
        with db.make_sessions(engine)() as session:
            found = devices(session)
            opened = sum(open_alarms(session).values())
            events, oldest = session.execute(select(func.count(), func.min(IngestedEvent.received_at))).one()
            on_site = session.scalar(select(func.count()).select_from(Visit).where(Visit.state == "on_site"))
            holding, first = session.execute(select(func.count(), func.min(Visit.registered_at)).where(
                Visit.purged_at.is_(None), Visit.id_number_enc.is_not(None))).one()
            passages, since = session.execute(select(func.count(), func.min(AccessEvent.at))).one()
            police = police_rows(session, [p.name for p in config.police.paths]) if config.police else []
        engine.dispose()
    except OperationalError as exc:
        return [("database", False, f"cannot be reached: {exc.orig}")]
    offline = [d.id for d in found if d.online is False]
    kept = f"{events} raw events" + (f", oldest {_days_ago(oldest)}" if oldest else "")
    held = f"{holding} visits hold ID and phone numbers" + (f" (oldest {_days_ago(first)})" if first else "")
    first_day = f" since {since.astimezone(config.site.tz):%Y-%m-%d}" if since else ""
    return [
        ("database", True, f"{len(found)} devices, {opened} open alarms, {kept} (kept {config.retention.events_days} "
                           "days)"),
        ("devices", not offline, f"{len(found) - len(offline)} of {len(found)} online"
         + (f"; offline: {', '.join(offline)}" if offline else "")),
        ("visitors", True, f"{on_site} on site; {held}; deleted {config.access.personal_data_days} days after a visit"),
        ("access", True, f"{passages} decisions in the log{first_day}"),
        *police,
    ]


def outbox_rows(config: Config) -> list[Row]:
    backlog = outbox_backlog(config.gateway.data_dir)
    if backlog is None:
        return []
    queued, age = backlog
    return [("outbox", queued < OUTBOX_BACKLOG_LIMIT and (age or 0.0) < OUTBOX_AGE_LIMIT_S,
             f"{queued} events not yet recorded by the rules service" + (f", oldest {age:.0f} s old" if age else ""))]


def clock_rows(config: Config) -> list[Row]:
    synced = clock_synchronised()
    rows: list[Row] = [("clock", synced is not False, {
        True: "synchronised (NTP)", None: "cannot tell (no timedatectl)",
        False: "NOT synchronised: records may carry wrong times (GB 50396 allows < 5 s a day)"}[synced])]
    if config.clock.ntp_server:
        limit = config.clock.max_offset_s
        try:
            measured = measure(config.clock.ntp_server, config.clock.ntp_port)
            rows.append(("clock offset", abs(measured.offset_s) <= limit,
                         f"{measured.offset_s:+.3f} s against {config.clock.ntp_server} (allowed {limit:g} s)"))
        except (OSError, NtpError) as exc:
            rows.append(("clock offset", False, f"{config.clock.ntp_server} gives no time: {exc}"))
    return rows


def status_rows(config: Config) -> list[Row]:
    """Everything `campusgw status` checks, in the order it prints them."""
    return [broker_row(config), *records_rows(config), *outbox_rows(config), *clock_rows(config)]
