"""Campus lockdowns (封校 / 一键锁闭) and their drills in the records: at most one open, each start and end
audited, a drill ended with its record (participants, findings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.records.models import Lockdown
from gateway.records.store import audit
from gateway.rules.alarms import RefusedAction

MIN_NOTE = 6


def active(session: Session) -> Lockdown | None:
    return session.scalar(select(Lockdown).where(Lockdown.ended_at.is_(None)).order_by(Lockdown.id.desc()).limit(1))


def start(session: Session, actor: str, reason: str, drill: bool, at: datetime, *, alarm_id: int | None = None,
          client: str | None = None) -> Lockdown:
    reason = reason.strip()
    why = ("the campus is locked down already" if active(session) is not None
           else "say why (for a drill, its scenario)" if not reason else None)
    if why is not None:
        audit(session, actor, "lockdown.start", "site", "refused", {"why": why, "drill": drill}, at, client)
        raise RefusedAction(why)
    lockdown = Lockdown(drill=drill, reason=reason[:2000], started_at=at, started_by=actor, alarm_id=alarm_id)
    session.add(lockdown)
    session.flush()
    audit(session, actor, "lockdown.start", f"lockdown:{lockdown.id}", "ok",
          {"drill": drill, "reason": reason[:500], **({"alarm": alarm_id} if alarm_id else {})}, at, client)
    return lockdown


def end(session: Session, actor: str, note: str, at: datetime, *, participants: str | None = None,
        findings: str | None = None, client: str | None = None) -> Lockdown:
    """Ended by a person with a note; a drill also with its findings (the seed's drill record)."""
    lockdown = active(session)
    note, findings = note.strip(), (findings or "").strip() or None
    why = ("the campus is not locked down" if lockdown is None
           else f"write what happened (at least {MIN_NOTE} characters)" if len(note) < MIN_NOTE
           else "a drill ends with its findings" if lockdown.drill and not findings else None)
    if why is not None or lockdown is None:
        audit(session, actor, "lockdown.end", "site", "refused", {"why": why}, at, client)
        raise RefusedAction(why or "the campus is not locked down")
    lockdown.ended_at, lockdown.ended_by, lockdown.note = at, actor, note[:4000]
    lockdown.participants = (participants or "").strip()[:4000] or None
    lockdown.findings = findings[:4000] if findings else None
    audit(session, actor, "lockdown.end", f"lockdown:{lockdown.id}", "ok", {"note": note[:500]}, at, client)
    return lockdown


def view(lockdown: Lockdown | None) -> dict[str, Any]:
    """The state every console shows (retained on rules/lockdown)."""
    if lockdown is None:
        return {"active": False}
    if lockdown.ended_at is not None:
        return {"active": False, "id": lockdown.id, "ended_at": lockdown.ended_at.isoformat(),
                "ended_by": lockdown.ended_by}
    return {"active": True, "id": lockdown.id, "drill": lockdown.drill, "reason": lockdown.reason,
            "started_at": lockdown.started_at.isoformat(), "started_by": lockdown.started_by}
