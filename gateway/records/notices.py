"""Notices from the district (下发通知: a heightened alert around schools, a lockdown drill): recorded once as they
come down the bridge, shown on every console page until someone on duty acknowledges them, and their view (when
received, who acknowledged) sent back up, which tells the district to stop sending and who saw it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.records import store
from gateway.records.models import DistrictNotice

LEVELS = ("alert", "drill", "info")  # most urgent first
MAX_ID = 2**31 - 1


class BadNotice(ValueError):
    """A notice from the district this school cannot read (logged, not recorded; the district sends again)."""


def parse(notice_id: int, body: Any) -> DistrictNotice:
    """The notice in a message from the district (pure: raises BadNotice)."""
    if not isinstance(body, dict) or not 0 < notice_id <= MAX_ID:
        raise BadNotice("not a notice")
    level, title, text, by = body.get("level"), body.get("title"), body.get("body"), body.get("by")
    if level not in LEVELS or not isinstance(title, str) or not title.strip() or not isinstance(text, str):
        raise BadNotice("a notice has a level (alert, drill, info), a title and a body")
    try:
        issued_at = datetime.fromisoformat(str(body.get("at")))
    except ValueError:
        raise BadNotice("a notice's time is not ISO 8601") from None
    if issued_at.tzinfo is None:
        raise BadNotice("a notice's time without its zone")
    return DistrictNotice(id=notice_id, level=level, title=title.strip()[:200], body=text.strip()[:4000],
                          issued_at=issued_at, issued_by=str(by or "district")[:64])


def receive(session: Session, notice: DistrictNotice, now: datetime) -> DistrictNotice:
    """Record the notice once (a repeat from the district is the same row); returns the row as held."""
    held = session.get(DistrictNotice, notice.id)
    if held is not None:
        return held
    notice.received_at = now
    session.add(notice)
    store.audit(session, f"district:{notice.issued_by}", "notice.receive", f"notice:{notice.id}", "ok",
                {"level": notice.level}, now)
    return notice


def acknowledge(session: Session, notice_id: int, actor: str, now: datetime, client: str | None = None
                ) -> DistrictNotice | None:
    """Someone on duty has read the notice: once (None when there is no such notice or it was acknowledged)."""
    notice = session.get(DistrictNotice, notice_id) if 0 < notice_id <= MAX_ID else None
    if notice is None or notice.acked_at is not None:
        store.audit(session, actor, "notice.ack", f"notice:{notice_id}", "refused",
                    {"why": "acknowledged" if notice else "no such notice"}, now, client)
        return None
    notice.acked_at, notice.acked_by = now, actor
    store.audit(session, actor, "notice.ack", f"notice:{notice_id}", "ok", {}, now, client)
    return notice


def view(notice: DistrictNotice) -> dict[str, Any]:
    """What the console shows and what goes back up to the district."""
    return {"id": notice.id, "level": notice.level, "title": notice.title, "body": notice.body,
            "issued_at": notice.issued_at.isoformat(), "issued_by": notice.issued_by,
            "received_at": notice.received_at.isoformat(),
            "acked_at": notice.acked_at.isoformat() if notice.acked_at else None, "acked_by": notice.acked_by}


def unacknowledged(session: Session) -> list[dict[str, Any]]:
    """The notices every page shows until acknowledged: alerts first, newest first."""
    rows = session.scalars(select(DistrictNotice).where(DistrictNotice.acked_at.is_(None))).all()
    return [view(n) for n in sorted(rows, key=lambda n: (LEVELS.index(n.level), -n.issued_at.timestamp()))]


def recent(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    return [view(n) for n in session.scalars(select(DistrictNotice).order_by(DistrictNotice.issued_at.desc(),
                                                                              DistrictNotice.id.desc()).limit(limit))]


def received_since(session: Session, since: datetime) -> list[dict[str, Any]]:
    """The notices to send up again after a reconnect (a view in flight when the broker went is not resent)."""
    return [view(n) for n in session.scalars(select(DistrictNotice).where(
        or_(DistrictNotice.received_at >= since, DistrictNotice.acked_at >= since)))]
