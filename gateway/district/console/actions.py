"""What a district officer does from the console, each in the caller's transaction with its audit row beside it:
acknowledge one of the district's alerts (an overdue incident report), and a school's incident report
(gateway.district.store.acknowledge_incident; the worker sends it down to the school); issue a notice to the
schools (the workers send it down until each school's view says it came)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, update

from gateway.district import store
from gateway.district.console import users


def acknowledge_alert(conn: Connection, alert_id: int, actor: str, now: datetime, client: str | None = None) -> bool:
    """A duty officer acknowledges a district alert, once (a second is refused: returns False)."""
    if not 0 <= alert_id < 2**63:
        return False
    c = store.alerts.c
    done = conn.execute(update(store.alerts).where(c.id == alert_id, c.acked_at.is_(None))
                        .values(acked_by=actor, acked_at=now).returning(c.site, c.ref)).first()
    if done is not None:
        users.audit(conn, actor, "alert.ack", f"alert:{alert_id}", "ok", {"site": done.site, "ref": done.ref}, now,
                    client)
    return done is not None


def acknowledge_report(conn: Connection, site: str, incident_id: int, actor: str, now: datetime,
                       client: str | None = None) -> bool:
    """A duty officer acknowledges a school's incident report: only a reported one, once."""
    done = store.acknowledge_incident(conn, site, incident_id, actor, now)
    if done:
        users.audit(conn, actor, "report.ack", f"incident:{site}:{incident_id}", "ok", {}, now, client)
    return done


def issue_notice(conn: Connection, level: str, title: str, body: str, sites: list[str] | None, actor: str,
                 now: datetime, client: str | None = None) -> tuple[int, int]:
    """A notice to the schools named (None: all of them), audited; returns (its id, how many schools)."""
    notice_id, schools = store.issue_notice(conn, level, title, body, actor, now, sites)
    users.audit(conn, actor, "notice.issue", f"notice:{notice_id}", "ok",
                {"level": level, "title": title, "schools": schools}, now, client)
    return notice_id, schools
