"""The figures of a report, read from the records for a period: what a daily duty log, a monthly report and a
term report show, as plain tables that every format (PDF, CSV, XLSX) renders the same way.

Aggregation happens in the database (GROUP BY over indexed time columns), so a year of a busy school's access log
(millions of rows) is counted without being loaded; only the small tables (alarms, rounds, incidents) are read row
by row, for medians and per-item durations.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from gateway.records.models import (
    AccessEvent,
    Alarm,
    Device,
    DutyAssignment,
    Handover,
    Hazard,
    Incident,
    PatrolRound,
    Visit,
)

Kind = Literal["daily", "monthly", "term"]
# The district's summary across its schools (gateway.district), one incident's written report
# (gateway.reports.closing), the protection survey form (gateway.reports.survey)
ReportKind = Literal[Kind, "district_monthly", "incident", "survey"]
SERIOUS = ("serious", "major")
# 五无 (the "five nos" of the Safe Campus scheme), each from the incident ledger: (key, categories, severities)
FIVE_NOS: list[tuple[str, tuple[str, ...] | None, tuple[str, ...] | None]] = [
    ("no_crime", ("intrusion", "violence"), SERIOUS),
    ("no_mass_incident", None, ("major",)),
    ("no_fire", ("fire",), None),
    ("no_food_poisoning", ("food_safety",), None),
    ("no_serious_accident", ("injury", "traffic", "equipment_fault"), SERIOUS),
]


@dataclass
class Table:
    key: str
    title: str  # a message id (translated when rendered)
    columns: list[str]  # message ids
    rows: list[list[Any]]
    chart: bool = False  # a bar chart of the second column by the first
    translate_first: bool = False  # the first column holds message ids (alarm types, reasons, states)


@dataclass
class Report:
    kind: ReportKind
    site: str
    start: datetime  # aware; the period is [start, end)
    end: datetime
    tz: tzinfo
    summary: list[tuple[str, Any]] = field(default_factory=list)  # (message id, value)
    tables: list[Table] = field(default_factory=list)
    previous: dict[str, Any] = field(default_factory=dict)  # the summary of the period before, by message id

    def value(self, key: str) -> Any:
        return dict(self.summary).get(key)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1)


def previous_period(kind: Kind, start: datetime, end: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The period a report is compared with: the day or the month before, or as many days before a term."""
    if kind == "monthly":
        return period("monthly", start - timedelta(days=1), tz)
    return start - (end - start), start


def collect(session: Session, kind: Kind, start: datetime, end: datetime, tz: tzinfo, site: str,
            progress: Callable[[str], None] = lambda step: None, compare: bool = True) -> Report:
    report = Report(kind, site, start, end, tz)
    if compare:  # the same figures for the period before, for the summary's "compared with"
        before = collect(session, kind, *previous_period(kind, start, end, tz), tz, site, compare=False)
        report.previous = dict(before.summary)
    for name, step in (("alarms", _alarms), ("patrols", _patrols), ("visitors", _visitors), ("access", _access),
                       ("incidents", _incidents), ("hazards", _hazards), ("devices", _uptime),
                       ("five_nos", _five_nos)):
        progress(name)
        step(session, report)
    if kind == "daily":
        progress("duty")
        _duty_log(session, report)
    return report


def _alarms(session: Session, report: Report) -> None:
    rows = session.execute(select(Alarm.alarm_type, Alarm.raised_at, Alarm.acked_at, Alarm.cleared_at, Alarm.cleared_by)
                           .where(Alarm.raised_at >= report.start, Alarm.raised_at < report.end,
                                  Alarm.test.is_(False))).all()
    by_type: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_type[row.alarm_type].append(row)
    table = []
    acks_all: list[float] = []
    for alarm_type, items in sorted(by_type.items(), key=lambda kv: -len(kv[1])):
        acks = [s for r in items if (s := _seconds(r.raised_at, r.acked_at)) is not None]
        resets = [s for r in items if r.cleared_by not in (None, "system")
                  and (s := _seconds(r.raised_at, r.cleared_at)) is not None]
        acks_all += acks
        table.append([alarm_type, len(items), _median(acks), _p90(acks), _median(resets)])
    report.summary += [("Alarms", len(rows)), ("Median time to acknowledge (s)", _median(acks_all))]
    report.tables.append(Table("alarms", "Alarms by kind", ["Kind", "Alarms", "Acknowledged, median s",
                                                            "Acknowledged, p90 s", "Reset, median s"],
                               table, chart=True, translate_first=True))


def _patrols(session: Session, report: Report) -> None:
    rounds = session.execute(select(PatrolRound.state, PatrolRound.result).where(
        PatrolRound.due_at >= report.start, PatrolRound.due_at < report.end)).all()
    states = Counter(r.state for r in rounds)
    missed = sum(len((r.result or {}).get("missed", [])) for r in rounds)
    finished = sum(n for s, n in states.items() if s != "pending" and s != "in_progress")
    compliance = round(100 * states["complete"] / finished, 1) if finished else None
    report.summary += [("Patrol rounds complete (%)", compliance), ("Checkpoints missed", missed)]
    report.tables.append(Table("patrols", "Patrol rounds", ["State", "Rounds"],
                               [[s, states[s]] for s in ("complete", "incomplete", "expired", "in_progress",
                                                         "pending") if states[s]],
                               chart=True, translate_first=True))


def _visitors(session: Session, report: Report) -> None:
    in_period = (Visit.registered_at >= report.start, Visit.registered_at < report.end)
    states = dict(session.execute(select(Visit.state, func.count()).where(*in_period).group_by(Visit.state)).all())
    overstays = session.scalar(select(func.count()).select_from(Visit).where(
        *in_period, Visit.overstay_alerted_at.is_not(None))) or 0
    total = sum(states.values())
    report.summary += [("Visitors registered", total), ("Visitors refused (watch list)", states.get("refused", 0))]
    report.tables.append(Table("visitors", "Visitors", ["State", "Visits"],
                               [[s, n] for s, n in sorted(states.items())] + [["overstay", overstays]],
                               translate_first=True))


def _access(session: Session, report: Report) -> None:
    in_period = (AccessEvent.at >= report.start, AccessEvent.at < report.end)
    by_reason = session.execute(select(AccessEvent.reason, func.count()).where(
        *in_period, AccessEvent.granted.is_(False)).group_by(AccessEvent.reason)).all()
    total = session.scalar(select(func.count()).select_from(AccessEvent).where(*in_period)) or 0
    denied = sum(n for _, n in by_reason)
    report.summary += [("Access decisions", total), ("Access denied", denied)]
    report.tables.append(Table("access", "Access denials by reason", ["Reason", "Denials"],
                               [[r, n] for r, n in sorted(by_reason, key=lambda x: -x[1])], chart=True,
                               translate_first=True))


def _incidents(session: Session, report: Report) -> None:
    rows = session.execute(select(Incident.category, Incident.severity, Incident.confirmed_at, Incident.reported_at,
                                  Incident.report_due_at).where(Incident.occurred_at >= report.start,
                                                                Incident.occurred_at < report.end)).all()
    by_category: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_category[row.category].append(row)
    table = []
    for category, items in sorted(by_category.items()):
        minutes = [s / 60 for r in items if (s := _seconds(r.confirmed_at, r.reported_at)) is not None]
        on_time = sum(1 for r in items if r.reported_at is not None and r.reported_at <= r.report_due_at)
        table.append([f"category_{category}", len(items), sum(1 for r in items if r.severity in SERIOUS), on_time,
                      len(items) - on_time, _median(minutes)])
    report.summary.append(("Incidents", len(rows)))
    report.tables.append(Table("incidents", "Incidents and their reporting", [
        "Category", "Incidents", "Serious", "Reported in time", "Late or not reported", "Minutes to report, median"],
        table, translate_first=True))


def _hazards(session: Session, report: Report) -> None:
    found = session.scalar(select(func.count()).select_from(Hazard).where(
        Hazard.found_at >= report.start, Hazard.found_at < report.end)) or 0
    closed = session.scalar(select(func.count()).select_from(Hazard).where(
        Hazard.signed_off_at >= report.start, Hazard.signed_off_at < report.end)) or 0
    still_open = session.scalar(select(func.count()).select_from(Hazard).where(
        Hazard.found_at < report.end, or_(Hazard.signed_off_at.is_(None), Hazard.signed_off_at >= report.end))) or 0
    # Overdue in the period: due before its end, not fixed by the due date, and not fixed before the period.
    overdue = session.scalars(select(Hazard).where(
        Hazard.due_at < report.end, or_(Hazard.fixed_at.is_(None), Hazard.fixed_at > Hazard.due_at),
        or_(Hazard.fixed_at.is_(None), Hazard.fixed_at >= report.start)).order_by(Hazard.due_at, Hazard.id)).all()
    late_open = [h for h in overdue if h.fixed_at is None or h.fixed_at >= report.end]
    report.summary.append(("Hazards open at the end", still_open))
    report.summary.append(("Hazards past their due date at the end", len(late_open)))
    report.tables.append(Table("hazards", "Hazards", ["Hazards", "Number"],
                               [["found", found], ["signed_off", closed], ["open", still_open],
                                ["overdue", len(late_open)]], translate_first=True))
    if overdue:
        tz = report.tz
        report.tables.append(Table("hazards_overdue", "Hazards past their due date",
                                   ["Hazard", "Place", "Source", "Due", "Fixed", "Assigned to"],
                                   [[f"#{h.id}", h.place, f"source_{h.source}", _day(h.due_at, tz),
                                     _day(h.fixed_at, tz), h.assigned_to or ""] for h in overdue]))


def _day(at: datetime | None, tz: tzinfo) -> str:
    return at.astimezone(tz).date().isoformat() if at else ""


def _uptime(session: Session, report: Report) -> None:
    period = (report.end - report.start).total_seconds()
    down: dict[str, float] = defaultdict(float)
    # Offline until the alarm cleared, or until a person closed it while the device was still silent (then
    # nothing more is known: it must not count as down in every report after)
    ended = func.coalesce(Alarm.cleared_at, Alarm.closed_at)
    for device_id, raised, cleared in session.execute(
            select(Alarm.device_id, Alarm.raised_at, ended).where(
                Alarm.alarm_type == "device_offline", Alarm.raised_at < report.end,
                or_(ended.is_(None), ended >= report.start))):
        begin, until = max(raised, report.start), min(cleared or report.end, report.end)
        down[device_id] += max(0.0, (until - begin).total_seconds())
    devices = session.scalars(select(Device.id).order_by(Device.id)).all()
    uptime = {d: round(100 * (1 - down.get(d, 0.0) / period), 2) for d in devices}
    rows: list[list[Any]] = [[d, uptime[d], round(down.get(d, 0.0) / 60, 1)] for d in devices]
    worst = min(uptime.values(), default=None)
    report.summary.append(("Lowest device uptime (%)", worst))
    report.tables.append(Table("devices", "Device uptime", ["Device", "Uptime %", "Offline, minutes"], rows))


def _five_nos(session: Session, report: Report) -> None:
    rows = []
    for key, categories, severities in FIVE_NOS:
        query = select(func.count()).select_from(Incident).where(Incident.occurred_at >= report.start,
                                                                 Incident.occurred_at < report.end)
        if categories:
            query = query.where(Incident.category.in_(categories))
        if severities:
            query = query.where(Incident.severity.in_(severities))
        count = session.scalar(query) or 0
        rows.append([key, "met" if count == 0 else "not_met", count])
    report.tables.append(Table("five_nos", "The five nos", ["Goal", "Status", "Incidents"], rows,
                               translate_first=True))


def _duty_log(session: Session, report: Report) -> None:
    """The daily duty log: who was on duty, the alarms one by one, the rounds, the handovers."""
    local = report.tz

    def hhmm(at: datetime | None) -> str:
        return at.astimezone(local).strftime("%H:%M:%S") if at else ""

    duty = session.scalars(select(DutyAssignment).where(DutyAssignment.starts_at < report.end,
                                                        DutyAssignment.ends_at > report.start)
                           .order_by(DutyAssignment.starts_at, DutyAssignment.position)).all()
    report.tables.append(Table("duty", "On duty", ["Shift", "Role", "Name", "From", "To"],
                               [[d.shift, d.role, d.name, hhmm(d.starts_at), hhmm(d.ends_at)] for d in duty]))
    alarms = session.scalars(select(Alarm).where(Alarm.raised_at >= report.start, Alarm.raised_at < report.end)
                             .order_by(Alarm.raised_at)).all()
    report.tables.append(Table("alarm_list", "Alarms of the day", [
        "Time", "Kind", "Place", "Acknowledged", "By", "Reset", "State"],
        [[hhmm(a.raised_at), a.alarm_type, a.place or a.device_id, hhmm(a.acked_at), a.acked_by or "",
          hhmm(a.cleared_at), a.state] for a in alarms]))
    rounds = session.scalars(select(PatrolRound).where(PatrolRound.due_at >= report.start,
                                                       PatrolRound.due_at < report.end)
                             .order_by(PatrolRound.due_at)).all()
    report.tables.append(Table("round_list", "Patrol rounds of the day", [
        "Due", "Route", "State", "Guard", "Missed"],
        [[hhmm(r.due_at), r.route, r.state, r.guard or "", ", ".join((r.result or {}).get("missed", []))]
         for r in rounds]))
    handovers = session.scalars(select(Handover).where(Handover.at >= report.start, Handover.at < report.end)
                                .order_by(Handover.at)).all()
    report.tables.append(Table("handovers", "Handovers", ["Time", "From", "To", "Notes"],
                               [[hhmm(h.at), h.from_name, h.to_name, h.notes] for h in handovers]))


def period(kind: Kind, day: datetime, tz: tzinfo, end: datetime | None = None) -> tuple[datetime, datetime]:
    """The default period of a report kind around a local day: that day, its month, or [day, end)."""
    local = day.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        return local, local + timedelta(days=1)
    if kind == "monthly":
        first = local.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return first, following
    if end is None:
        raise ValueError("a term report needs its end date")
    return local, end.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
