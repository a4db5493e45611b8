"""A monthly or term report submitted to the district (逐级上报) from the Reports page: the period's figures, as
the school's own report shows them, and its inspections (隐患排查: monthly, term start), kept as submitted. The
rules service sends it up (gateway.records.ledger.submission_views_since)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.records import store
from gateway.records.models import Inspection, ReportSubmission
from gateway.reports.figures import Kind, collect

SUBMITTED_KINDS = ("monthly", "term")


def period_label(kind: str, start: datetime, end: datetime, tz: tzinfo) -> str:
    first = start.astimezone(tz).date()
    if kind == "monthly":
        return first.strftime("%Y-%m")
    last = end.astimezone(tz).date()
    return f"{first.isoformat()}_{last.isoformat()}"


def figures(session: Session, kind: Kind, start: datetime, end: datetime, tz: tzinfo, site_name: str
            ) -> dict[str, Any]:
    """The report's summary and tables, and the period's inspections, as plain JSON."""
    report = collect(session, kind, start, end, tz, site_name)
    inspections = session.scalars(select(Inspection).where(Inspection.due_at >= start, Inspection.due_at < end)
                                  .order_by(Inspection.due_at)).all()
    found = {"summary": dict(report.summary), "previous": report.previous,
             "tables": [asdict(t) for t in report.tables],
             "inspections": [{"kind": i.kind, "period": i.period, "due_at": i.due_at, "done_at": i.done_at,
                              "done_by": i.done_by, "notes": i.notes} for i in inspections]}
    plain: dict[str, Any] = json.loads(json.dumps(found, default=str, ensure_ascii=False))
    return plain


def submit(session: Session, kind: Kind, start: datetime, end: datetime, tz: tzinfo, site_name: str, actor: str,
           now: datetime, client: str | None = None) -> ReportSubmission:
    if kind not in SUBMITTED_KINDS:
        raise ValueError(f"a {kind} report is not submitted to the district")
    row = ReportSubmission(kind=kind, period=period_label(kind, start, end, tz), starts=start, ends=end,
                           submitted_at=now, submitted_by=actor,
                           figures=figures(session, kind, start, end, tz, site_name))
    session.add(row)
    session.flush()
    store.audit(session, actor, "report.submit", f"report:{kind}:{row.period}", "ok",
                {"submission": row.id, "from": start.isoformat(), "to": end.isoformat()}, now, client)
    return row
