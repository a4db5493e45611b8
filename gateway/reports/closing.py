"""An incident's written report (事故书面报告, R34): what the seed asks the school to send the centre school once
an accident is handled (事发原因、处理情况、应从中吸取教训及整改措施), with the incident's facts, the reporting chain
with its times (school -> centre school -> education bureau) and the timeline, as a Report that
gateway.reports.render prints (PDF, XLSX, CSV) in either language, with the sign-off lines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo

from gateway.records.models import Incident, IncidentEntry
from gateway.reports.figures import Report, Table
from gateway.rules.incidents import ALERT_LABELS, ENTRY_LABELS

WRITTEN = (("cause", "Cause"), ("handling", "Handling"), ("lessons", "Lessons learnt"),
           ("measures", "Corrective measures"))


def incident_report(incident: Incident, timeline: Sequence[IncidentEntry], site: str, tz: tzinfo) -> Report:
    def when(at: datetime | None) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M") if at else "-"

    end = incident.closed_at or incident.written_at or incident.occurred_at + timedelta(minutes=1)
    report = Report("incident", site, incident.occurred_at, max(end, incident.occurred_at + timedelta(minutes=1)), tz)
    report.tables.append(Table("incident_facts", "The incident", ["Item", "Details"], [
        ["Incident", f"#{incident.id} {incident.title}"], ["Category", f"category_{incident.category}"],
        ["Severity", f"severity_{incident.severity}"], ["Place", incident.place or "-"],
        ["Happened at", when(incident.occurred_at)], ["Confirmed at", when(incident.confirmed_at)],
        ["Closed at", when(incident.closed_at)]], translate_first=True))
    report.tables.append(Table("incident_chain", "Reported up the chain", ["Step", "Due", "Done", "By"], [
        ["Report to the centre school", when(incident.report_due_at), when(incident.reported_at),
         incident.reported_by or "-"],
        ["Written report", when(incident.written_due_at), when(incident.written_at), "-"],
        ["Passed on to the education bureau", "-", when(incident.forwarded_at), "-"]], translate_first=True))
    report.tables.append(Table("incident_written", "Written report", ["Item", "Details"],
                               [[label, getattr(incident, name) or "-"] for name, label in WRITTEN],
                               translate_first=True))
    report.tables.append(Table("incident_timeline", "Timeline", ["Time", "By", "What", "Note"], [
        [when(e.at), e.actor, (ALERT_LABELS.get(e.text) if e.kind == "alert" else ENTRY_LABELS.get(e.kind)) or "-",
         "" if e.kind == "alert" else e.text] for e in timeline]))
    return report
