"""What the district console shows, read from the district's records (gateway.district.store): every school
with its figures, one school, one alarm. The ordering and the figures are worked out here, apart from the web
app, so they are tested without a browser.

Worst first: the most urgent open alarm (lowest priority number), then the most urgent one nobody has
acknowledged yet (of two schools with a P1 open, the one where nobody has answered it), then the most
unacknowledged (so far store.schools_overview's order), then a school in a real lockdown, then the one with the
most troubles (gateway offline, bridge down, a police path down, devices offline, silent), then the longest
silent. Button tests are never counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, or_, select

from gateway.district import store

SILENT_AFTER = timedelta(minutes=15)  # a school not heard from this long is shown as silent, in minutes
UNACKED = ("active_unack", "cleared_unack")


def _facts(conn: Connection, site: str | None = None) -> dict[str, dict[str, Any]]:
    """site -> fact -> value (bridge, police, lockdown)."""
    query = select(store.facts.c.site, store.facts.c.fact, store.facts.c.value)
    if site is not None:
        query = query.where(store.facts.c.site == site)
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute(query):
        found.setdefault(row.site, {})[row.fact] = row.value
    return found


def _devices(conn: Connection, site: str | None = None, trouble_only: bool = False
             ) -> dict[str, list[dict[str, Any]]]:
    """Each school's devices; `trouble_only`: its gateways and the devices offline (what a school's line counts;
    a district has hundreds of thousands of devices, read on every poll otherwise)."""
    d = store.devices.c
    query = select(store.devices).order_by(d.kind, d.device)
    if site is not None:
        query = query.where(d.site == site)
    if trouble_only:
        query = query.where(or_(d.online.is_(False), d.kind == "gateway"))
    found: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(query):
        found.setdefault(row.site, []).append(dict(row._mapping))
    return found


def police_state(value: Any) -> dict[str, Any] | None:
    """A school's alarm-centre paths as the console shows them: how many, how many down; None if never said."""
    if not isinstance(value, dict) or not isinstance(value.get("paths"), list):
        return None
    paths = [p for p in value["paths"] if isinstance(p, dict)]
    down = [str(p.get("name")) for p in paths if p.get("up") is not True]
    return {"paths": len(paths), "down": len(down), "down_names": down}


def lockdown_state(value: Any) -> dict[str, Any] | None:
    """A school's lockdown while it lasts (a drill said so); None when none is on or the school never said."""
    if not isinstance(value, dict) or value.get("active") is not True:
        return None
    return {"drill": value.get("drill") is True, "reason": value.get("reason"), "started_at": value.get("started_at"),
            "started_by": value.get("started_by")}


def _worst_unacked(conn: Connection, site: str | None = None) -> dict[str, int]:
    """site -> the most urgent priority among its unacknowledged alarms (tests apart)."""
    a = store.alarms.c
    query = select(a.site, func.min(a.priority)).where(a.state.in_(UNACKED), a.test.is_(False)).group_by(a.site)
    if site is not None:
        query = query.where(a.site == site)
    return {row[0]: int(row[1]) for row in conn.execute(query)}


def summarise(overview: dict[str, Any], facts: dict[str, Any], devices: list[dict[str, Any]],
              worst_unacked: int | None, now: datetime) -> dict[str, Any]:
    """One school's line: store.schools_overview's figures and what its devices and facts say."""
    gateways = [d for d in devices if d["kind"] == "gateway"]
    bridge = facts.get("bridge")
    silent = now - overview["last_contact"]
    row = {**overview, "worst_unacked": worst_unacked,
           "devices_offline": sum(1 for d in devices if d["kind"] != "gateway" and not d["online"]),
           "gateway": None if not gateways else "online" if all(d["online"] for d in gateways) else "offline",
           "bridge": None if not isinstance(bridge, dict) else "up" if bridge.get("up") is True else "down",
           "police": police_state(facts.get("police")),
           "lockdown": lockdown_state(facts.get("lockdown")),
           "silent_min": int(silent.total_seconds() // 60) if silent >= SILENT_AFTER else None}
    row["troubles"] = sum((row["gateway"] == "offline", row["bridge"] == "down",
                           bool(row["police"] and row["police"]["down"]), row["devices_offline"] > 0,
                           row["silent_min"] is not None))
    return row


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(s: dict[str, Any]) -> tuple[Any, ...]:
        real_lockdown = bool(s["lockdown"] and not s["lockdown"]["drill"])
        return (s["worst_priority"] is None, s["worst_priority"] or 0, s["worst_unacked"] is None,
                s["worst_unacked"] or 0, -s["unacked"], not real_lockdown, -s["troubles"], s["last_contact"])

    return sorted(rows, key=key)


def schools(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Every school the district has heard from, worst first."""
    facts, devices, unacked = _facts(conn), _devices(conn, trouble_only=True), _worst_unacked(conn)
    return worst_first([summarise(o, facts.get(o["site"], {}), devices.get(o["site"], []), unacked.get(o["site"]),
                                  now) for o in store.schools_overview(conn)])


def _alarm_order() -> tuple[Any, ...]:
    a = store.alarms.c
    return (a.test, a.priority, case((a.state.in_(UNACKED), 0), else_=1), a.raised_at, a.alarm_id)


def school(conn: Connection, site: str, now: datetime) -> dict[str, Any] | None:
    """One school: its line, its open alarms (worst first, button tests last), its devices offline, its police
    paths; None for a school the district has never heard from."""
    overview = next((o for o in store.schools_overview(conn) if o["site"] == site), None)
    if overview is None:
        return None
    facts, devices = _facts(conn, site).get(site, {}), _devices(conn, site).get(site, [])
    a = store.alarms.c
    open_alarms = [dict(r._mapping) for r in conn.execute(
        select(store.alarms).where(a.site == site, a.state.in_(store.OPEN)).order_by(*_alarm_order()))]
    worst_unacked = _worst_unacked(conn, site).get(site)
    return {**summarise(overview, facts, devices, worst_unacked, now), "alarms": open_alarms,
            "offline": [d for d in devices if not d["online"]], "paths": _paths(facts.get("police"))}


def _paths(police: Any) -> list[dict[str, Any]]:
    if not isinstance(police, dict) or not isinstance(police.get("paths"), list):
        return []
    return [p for p in police["paths"] if isinstance(p, dict)]


def police_paths(conn: Connection, site: str) -> list[dict[str, Any]]:
    """A school's alarm-centre paths as it last reported them (name, up, since, last_ack_at, last_error)."""
    return _paths(_facts(conn, site).get(site, {}).get("police"))


def alarm(conn: Connection, site: str, alarm_id: int) -> dict[str, Any] | None:
    """One alarm as the school last announced it, open or closed; None if the district has no such alarm."""
    if not 0 <= alarm_id < 2**63:  # beyond what the column holds: no such alarm, not a database error
        return None
    a = store.alarms.c
    row = conn.execute(select(store.alarms).where(a.site == site, a.alarm_id == alarm_id)).first()
    return dict(row._mapping) if row is not None else None


# The Reports page: the district's own alerts, the schools' incident reports and their submitted reports.
INCIDENTS_SHOWN = 200  # the newest this many incidents on the page
ALERTS_DONE_SHOWN = 50  # alerts no longer open (cleared and acknowledged): the newest this many, below the open


def _alert_open() -> Any:
    """An alert is open until its cause is gone (the report came) and a duty officer acknowledged it."""
    c = store.alerts.c
    return (c.acked_at.is_(None)) | (c.cleared_at.is_(None))


def alert_counts(conn: Connection) -> dict[str, int]:
    """How many of the district's alerts are open, and how many of those nobody acknowledged yet."""
    c = store.alerts.c
    row = conn.execute(select(func.count(), func.count().filter(c.acked_at.is_(None)))
                       .where(_alert_open())).one()
    return {"open": int(row[0]), "unacked": int(row[1])}


def alerts(conn: Connection) -> list[dict[str, Any]]:
    """The open alerts (not acknowledged first, then the oldest), then the newest of those done."""
    c = store.alerts.c
    open_ = conn.execute(select(store.alerts).where(_alert_open())
                         .order_by(c.acked_at.is_not(None), c.raised_at, c.id)).all()
    done = conn.execute(select(store.alerts).where(~_alert_open()).order_by(c.raised_at.desc(), c.id.desc())
                        .limit(ALERTS_DONE_SHOWN)).all()
    found = []
    for row in [*open_, *done]:
        detail = row.detail if isinstance(row.detail, dict) else {}
        found.append({**row._mapping, "open": row.acked_at is None or row.cleared_at is None,
                      "title": str(detail.get("title") or ""), "incident_id": detail.get("incident_id"),
                      "report_due_at": detail.get("report_due_at")})
    return found


def report_state(incident: dict[str, Any], now: datetime) -> str:
    """closed, on_time, late, overdue (not reported, past its deadline) or open (not reported, still in time)."""
    if incident["reported_at"] is not None:
        return "on_time" if incident["reported_at"] <= incident["report_due_at"] else "late"
    if incident["state"] == "closed":
        return "closed"
    return "overdue" if incident["report_due_at"] < now else "open"


def incidents(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """The schools' incidents, the newest first, each with its reporting state."""
    i = store.incidents.c
    rows = conn.execute(select(store.incidents).order_by(i.occurred_at.desc(), i.site, i.incident_id.desc())
                        .limit(INCIDENTS_SHOWN)).all()
    return [{**r._mapping, "report": report_state(dict(r._mapping), now)} for r in rows]


def incident(conn: Connection, site: str, incident_id: int) -> dict[str, Any] | None:
    if not 0 <= incident_id < 2**63:
        return None
    i = store.incidents.c
    row = conn.execute(select(store.incidents).where(i.site == site, i.incident_id == incident_id)).first()
    return dict(row._mapping) if row is not None else None


SUMMARY_FIGURES = ("Alarms", "Incidents", "Patrol rounds complete (%)", "Hazards open at the end")


def submissions(conn: Connection) -> list[dict[str, Any]]:
    """The reports the schools submitted, by school, the newest period first, with their main figures."""
    s = store.submissions.c
    rows = conn.execute(select(s.site, s.kind, s.period, s.starts, s.submitted_at, s.submitted_by, s.figures)
                        .order_by(s.site, s.starts.desc(), s.kind)).all()
    found = []
    for row in rows:
        summary = row.figures.get("summary") if isinstance(row.figures, dict) else None
        summary = summary if isinstance(summary, dict) else {}
        found.append({"site": row.site, "kind": row.kind, "period": row.period, "submitted_at": row.submitted_at,
                      "submitted_by": row.submitted_by, "figures": [summary.get(k) for k in SUMMARY_FIGURES]})
    return found


# The order a school's report lists its summary in (gateway.reports.figures.collect); PostgreSQL's JSONB keeps an
# object's keys in its own order, so the submitted summary is put back in this one (any other key after).
SUMMARY_ORDER = ("Alarms", "Median time to acknowledge (s)", "Patrol rounds complete (%)", "Checkpoints missed",
                 "Visitors registered", "Visitors refused (watch list)", "Access decisions", "Access denied",
                 "Incidents", "Hazards open at the end", "Hazards past their due date at the end",
                 "Lowest device uptime (%)")


def in_report_order(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    known = [(k, summary[k]) for k in SUMMARY_ORDER if k in summary]
    return known + [(k, v) for k, v in summary.items() if k not in SUMMARY_ORDER]


def submission(conn: Connection, site: str, kind: str, period: str) -> dict[str, Any] | None:
    s = store.submissions.c
    row = conn.execute(select(store.submissions).where(s.site == site, s.kind == kind, s.period == period)).first()
    return dict(row._mapping) if row is not None else None


def notices(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The district's notices, newest first, each with how many schools it went to, got it and acknowledged it."""
    r = store.notice_receipts.c
    counts = (select(r.notice_id, func.count().label("schools"),
                     func.count(r.received_at).label("received"), func.count(r.acked_at).label("acked"))
              .group_by(r.notice_id).subquery())
    n = store.notices.c
    rows = conn.execute(select(store.notices, counts.c.schools, counts.c.received, counts.c.acked)
                        .join(counts, counts.c.notice_id == n.id, isouter=True)
                        .order_by(n.issued_at.desc(), n.id.desc()).limit(limit)).all()
    return [{**dict(row._mapping), "schools": row.schools or 0, "received": row.received or 0,
             "acked": row.acked or 0} for row in rows]


def notice(conn: Connection, notice_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One notice and each school's receipt: not acknowledged first (not even received before those)."""
    if not 0 < notice_id < 2**63:
        return None
    found = conn.execute(select(store.notices).where(store.notices.c.id == notice_id)).first()
    if found is None:
        return None
    r = store.notice_receipts.c
    receipts = [dict(row._mapping) for row in conn.execute(select(store.notice_receipts)
                                                           .where(r.notice_id == notice_id))]
    receipts.sort(key=lambda x: (x["acked_at"] is not None, x["received_at"] is not None, x["site"]))
    return dict(found._mapping), receipts
