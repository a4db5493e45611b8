"""The watch list in the records: people who must not be let in, by the hash of their ID number (the number
itself encrypted), added and deactivated by supervisors with a reason. A hit refuses a visit and raises the
top-priority alarm (gateway.records.visits.raise_watchlist_alarm).

Database functions only, no web: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.personal import (
    PersonalData,
    mask,
    normalise_id,
)
from gateway.records import store
from gateway.records.models import Visit, WatchEntry
from gateway.records.visits import OPEN_STATES, VisitError, close_pass, watch_hit


def add_watch_entry(session: Session, personal: PersonalData, *, id_number: str, name: str, reason: str, actor: str,
                    now: datetime, client: str | None = None) -> tuple[WatchEntry, list[Visit]]:
    """A high-risk person (高危人员) by ID number. Visits with the same number not yet in are refused (their
    pass revoked); one on site stays on site (the reader stops them on the way out). Returns the entry and
    every such visit going on now: the caller raises the alarm for each (raise_watchlist_alarm)."""
    number = normalise_id(id_number)
    if not 4 <= len(number) <= 32:
        raise VisitError("an ID number has 4 to 32 characters", "id_number")
    name, reason = " ".join(name.split()), reason.strip()
    if not name:
        raise VisitError("enter the person's name", "name")
    if len(name) > 100:
        raise VisitError("the name is longer than 100 characters", "name")
    if not reason:
        raise VisitError("enter the reason", "reason")
    id_hash = personal.id_hash(number)
    if (known := watch_hit(session, id_hash)) is not None:
        raise VisitError("this ID number is already on the watch list (entry {id})", "id_number", id=known.id)
    entry = WatchEntry(id_number_hash=id_hash, id_number_enc=personal.encrypt(number), id_number_masked=mask(number),
                       name=name, reason=reason[:2000], added_by=actor, added_at=now, active=True)
    session.add(entry)
    session.flush()
    store.audit(session, actor, "watchlist.add", f"watchlist:{entry.id}", "ok",
                {"name": name, "id_number": entry.id_number_masked}, now, client)
    current = list(session.scalars(select(Visit).where(Visit.id_number_hash == id_hash, Visit.state.in_(OPEN_STATES))))
    for visit in current:
        if visit.state != "on_site":
            close_pass(session, visit, "refused")
    return entry, current


def deactivate_watch_entry(session: Session, entry_id: int, actor: str, now: datetime,
                           client: str | None = None) -> WatchEntry:
    entry = session.get(WatchEntry, entry_id)
    if entry is None:
        raise VisitError("there is no such watch-list entry")
    if not entry.active:
        raise VisitError("this watch-list entry is already inactive")
    entry.active = False
    store.audit(session, actor, "watchlist.deactivate", f"watchlist:{entry.id}", "ok", {"name": entry.name}, now,
                client)
    return entry


def watch_entries(session: Session, include_inactive: bool = False) -> list[WatchEntry]:
    query = select(WatchEntry).order_by(WatchEntry.active.desc(), WatchEntry.added_at.desc())
    if not include_inactive:
        query = query.where(WatchEntry.active)
    return list(session.scalars(query))

