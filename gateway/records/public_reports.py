"""Reports from the public page (R38, 畅通师生、家长和社会的举报渠道): received unconfirmed, confirmed by the safety
officer into a hazard (source public) or set aside, each with an answer the reporter reads by the reference they
were given. The page's own defences (proof of work, rate limits) are gateway.console.pages.public_report's."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.records import ledger, store
from gateway.records.models import PublicReport
from gateway.rules.alarms import RefusedAction

KINDS = ("hazard", "concern")
STATES = ("unconfirmed", "confirmed", "set_aside")
REF_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out over the phone


class ReportError(RefusedAction):
    """A report or a decision that cannot be taken as given (a msgid the console translates)."""


def new_ref() -> str:
    return "".join(secrets.choice(REF_ALPHABET) for _ in range(10))


def receive(session: Session, kind: str, place: str, text: str, contact_enc: str | None, photo: bytes | None,
            photo_type: str | None, now: datetime) -> PublicReport:
    if kind not in KINDS:
        raise ReportError("choose a hazard or a concern")
    text = text.strip()
    if not 5 <= len(text) <= 4000:
        raise ReportError("say what you saw, in 5 to 4000 characters")
    row = PublicReport(ref=new_ref(), kind=kind, place=place.strip()[:200] or None, text=text,
                       contact_enc=contact_enc, photo=photo, photo_type=photo_type if photo else None,
                       received_at=now, state="unconfirmed")
    session.add(row)
    session.flush()
    store.audit(session, "public", "public_report.receive", f"public_report:{row.id}", "ok",
                {"kind": kind, "photo": photo is not None, "contact": contact_enc is not None}, now)
    return row


def by_ref(session: Session, ref: str) -> PublicReport | None:
    ref = ref.strip().upper()
    if not ref or len(ref) > 16:
        return None
    return session.scalar(select(PublicReport).where(PublicReport.ref == ref))


def decide(session: Session, report_id: int, confirm: bool, answer: str, actor: str, now: datetime,
           client: str | None = None) -> PublicReport:
    """Confirmed: a hazard of the ledger (source public, the report's place and text); or set aside. Either way
    with an answer for the reporter."""
    row = session.get(PublicReport, report_id, with_for_update=True)
    if row is None:
        raise ReportError("there is no such report")
    if row.state != "unconfirmed":
        raise ReportError("this report is already handled")
    answer = answer.strip()
    if not answer:
        raise ReportError("write the answer the reporter will read")
    if confirm:
        hazard = ledger.add_hazard(session, place=row.place or "-", description=row.text, severity="general",
                                   source="public", actor=actor, now=now, client=client)
        row.hazard_id = hazard.id
    row.state = "confirmed" if confirm else "set_aside"
    row.answer, row.handled_by, row.handled_at = answer[:2000], actor, now
    store.audit(session, actor, f"public_report.{row.state}", f"public_report:{row.id}", "ok",
                {"answer": row.answer, **({"hazard": row.hazard_id} if row.hazard_id else {})}, now, client)
    return row


def inbox(session: Session, limit: int = 200) -> list[PublicReport]:
    """The unconfirmed first, oldest first; then the handled, newest first."""
    waiting = list(session.scalars(select(PublicReport).where(PublicReport.state == "unconfirmed")
                                   .order_by(PublicReport.id)))
    handled = list(session.scalars(select(PublicReport).where(PublicReport.state != "unconfirmed")
                                   .order_by(PublicReport.id.desc()).limit(limit)))
    return waiting + handled
