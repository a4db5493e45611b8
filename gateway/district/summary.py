"""The district's monthly summary across its schools: a row per school with the month's events, alarms (button
tests apart), incidents, incident reports late or missing and its monthly report (submitted or not, when, and
its patrol and hazards figures as submitted), and a summary with the month before beside it. A
gateway.reports.figures.Report, so it renders as the schools' reports do (gateway.reports.render: PDF, XLSX, CSV,
both languages, the embedded font, formula-safe cells).

The month is the district's (its time zone): November in Asia/Shanghai starts at 16:00 UTC on 31 October. The
counts are made in PostgreSQL (GROUP BY site over the month's range: the events' monthly partitions are pruned).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, or_, select

from gateway.district import store
from gateway.reports.figures import Report, Table

SILENT_DAYS = 1  # a school not heard from for longer is counted as silent (as the summary is made)
CHART_MAX_SCHOOLS = 40  # more schools than this: no bar chart (it would not fit on an A4 page)
PATROL = "Patrol rounds complete (%)"  # the submitted report's figures, by their message ids (reports.figures)
HAZARDS = "Hazards open at the end"
COLUMNS = ["School", "Alarms", "Incident count", "Reports late or missing", "Events", "Monthly report",
           "Submitted on", "Patrol (%)", "Hazards open"]
SUBMITTED, NOT_SUBMITTED = "submitted", "not submitted"  # the monthly report column (translated when rendered)
MONTH = re.compile(r"(\d{4})-(\d{2})\Z")


def parse_month(text: str) -> date:
    """'2026-11' -> the month's first day; ValueError for anything else."""
    found = MONTH.match(text.strip())
    if found is None or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 2000:
        raise ValueError(f"a month is written YYYY-MM (got {text!r})")
    return date(int(found.group(1)), int(found.group(2)), 1)


def month_range(month: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The month's [start, end) in the district's zone."""
    following = (month.replace(day=1) + timedelta(days=32)).replace(day=1)
    return (datetime.combine(month.replace(day=1), datetime.min.time(), tz),
            datetime.combine(following, datetime.min.time(), tz))


def last_month(now: datetime, tz: ZoneInfo) -> date:
    """The month before now's, in the district's zone: the summary usually asked for."""
    return (now.astimezone(tz).date().replace(day=1) - timedelta(days=1)).replace(day=1)


def _counts(conn: Connection, query: Any) -> dict[str, int]:
    return {site: int(n) for site, n in conn.execute(query)}


def figures(conn: Connection, month: date, tz: ZoneInfo, now: datetime) -> dict[str, dict[str, Any]]:
    """site -> the month's figures (every school the district knows, and any other the month's records name)."""
    start, end = month_range(month, tz)
    e, a, i, s = store.events.c, store.alarms.c, store.incidents.c, store.submissions.c
    events = _counts(conn, select(e.site, func.count()).where(e.time >= start, e.time < end).group_by(e.site))
    alarms = _counts(conn, select(a.site, func.count()).where(a.raised_at >= start, a.raised_at < end,
                                                              a.test.is_(False)).group_by(a.site))
    in_month = (i.occurred_at >= start, i.occurred_at < end)
    incidents = _counts(conn, select(i.site, func.count()).where(*in_month).group_by(i.site))
    # As the schools' own reports count them ("Late or not reported"), but not one still within its deadline
    late = or_(i.reported_at > i.report_due_at, and_(i.reported_at.is_(None), i.report_due_at < now))
    not_in_time = _counts(conn, select(i.site, func.count()).where(*in_month, late).group_by(i.site))
    submitted = {r.site: r for r in conn.execute(
        select(s.site, s.submitted_at, s.figures).where(s.kind == "monthly", s.period == month.strftime("%Y-%m")))}
    sites = set(conn.scalars(select(store.schools.c.site))) | set(events) | set(alarms) | set(incidents) \
        | set(submitted)
    found: dict[str, dict[str, Any]] = {}
    for site in sorted(sites):
        report = submitted.get(site)
        summary = report.figures.get("summary") if report is not None and isinstance(report.figures, dict) else None
        summary = summary if isinstance(summary, dict) else {}
        found[site] = {"events": events.get(site, 0), "alarms": alarms.get(site, 0),
                       "incidents": incidents.get(site, 0), "late": not_in_time.get(site, 0),
                       "submitted_at": report.submitted_at if report is not None else None,
                       "patrol": summary.get(PATROL), "hazards": summary.get(HAZARDS)}
    return found


def _summary(per_school: dict[str, dict[str, Any]], silent: int | None) -> list[tuple[str, Any]]:
    rows = per_school.values()
    return [("Number of schools", len(per_school)), ("Schools silent for more than a day", silent),
            ("Alarms", sum(r["alarms"] for r in rows)), ("Incident count", sum(r["incidents"] for r in rows)),
            ("Reports late or missing", sum(r["late"] for r in rows)),
            ("Schools without the monthly report", sum(1 for r in rows if r["submitted_at"] is None))]


def collect(conn: Connection, month: date, tz: ZoneInfo, district_name: str, now: datetime) -> Report:
    """The month's summary across the schools, with the month before's figures beside the summary."""
    start, end = month_range(month, tz)
    per_school = figures(conn, month, tz, now)
    silent = conn.scalar(select(func.count()).select_from(store.schools).where(
        store.schools.c.last_contact < now - timedelta(days=SILENT_DAYS))) or 0
    report = Report("district_monthly", district_name, start, end, tz, summary=_summary(per_school, int(silent)))
    before = last_month(start, tz)
    report.previous = dict(_summary(figures(conn, before, tz, now), None))  # silence is now's, not a month's

    def day(at: datetime | None) -> str | None:
        return at.astimezone(tz).date().isoformat() if at is not None else None

    rows = [[site, f["alarms"], f["incidents"], f["late"], f["events"],
             SUBMITTED if f["submitted_at"] is not None else NOT_SUBMITTED, day(f["submitted_at"]), f["patrol"],
             f["hazards"]] for site, f in per_school.items()]
    report.tables.append(Table("district_schools", "Schools in the month", list(COLUMNS), rows,
                               chart=0 < len(rows) <= CHART_MAX_SCHOOLS))
    return report
