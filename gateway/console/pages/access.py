"""The Access page: who is on site now (staff, students, visitors), and the access log with filters, newest first.

Staff and students on site come from the log (gateway.rules.access.on_site over the granted passages of the
last ON_SITE_WINDOW); visitors from their visits, which the readers and the desk both keep up to date (a
visitor checked out at the desk has no exit passage in the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require, tr
from gateway.records.models import AccessEvent, Device, Person, Visit, utcnow
from gateway.rules import access
from gateway.rules_service.access_shell import access_view

router = APIRouter()
PAGE_SIZE = 50
# Passages this far back count for "on site now": long enough for a night shift that came in yesterday
# evening, short enough that a missed exit read (tailgating out) does not keep someone inside for ever.
ON_SITE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Filters:
    start: date | None = None  # the site's local dates, both days included
    end: date | None = None
    reader: str = ""
    name: str = ""
    result: str = ""  # granted, denied or "" for both
    reason: str = ""
    page: int = 1

    def query(self, **change: Any) -> str:
        values = {"from": self.start.isoformat() if self.start else "", "to": self.end.isoformat() if self.end else "",
                  "reader": self.reader, "name": self.name, "result": self.result, "reason": self.reason,
                  "page": self.page, **change}
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 1)})


def parse_filters(request: Request, start: str | None, end: str | None, reader: str | None, name: str | None,
                  result: str | None, reason: str | None, page: int) -> Filters:
    def day(text: str | None, which: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.") + f" ({which}: {text})") from None

    if result not in (None, "", "granted", "denied"):
        raise HTTPException(422, tr(request, "The result is granted or denied."))
    if reason and reason not in access.REASONS:
        raise HTTPException(422, tr(request, "Unknown reason."))
    return Filters(day(start, "from"), day(end, "to"), (reader or "").strip(), (name or "").strip(), result or "",
                   reason or "", max(1, page))


def _where(query: Select[Any], f: Filters, tz: tzinfo) -> Select[Any]:
    if f.start:
        query = query.where(AccessEvent.at >= datetime.combine(f.start, time(0), tzinfo=tz))
    if f.end:
        query = query.where(AccessEvent.at < datetime.combine(f.end + timedelta(days=1), time(0), tzinfo=tz))
    if f.reader:
        query = query.where(AccessEvent.reader == f.reader)
    if f.name:
        query = query.where(AccessEvent.person_name.icontains(f.name, autoescape=True))
    if f.result:
        query = query.where(AccessEvent.granted.is_(f.result == "granted"))
    if f.reason:
        query = query.where(AccessEvent.reason == f.reason)
    return query


def log_page(session: Session, f: Filters, tz: tzinfo) -> dict[str, Any]:
    total = session.scalar(_where(select(func.count()).select_from(AccessEvent), f, tz)) or 0
    rows = session.scalars(_where(select(AccessEvent), f, tz).order_by(AccessEvent.at.desc(), AccessEvent.id.desc())
                           .offset((f.page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    pages = max(1, -(-total // PAGE_SIZE))
    return {"total": total, "page": f.page, "pages": pages, "events": [access_view(r, tz) for r in rows]}


def on_site_now(session: Session, now: datetime) -> dict[str, Any]:
    """Counts and names by kind: staff and students from the log, visitors from their visits."""
    rows = session.execute(select(AccessEvent.person_id, AccessEvent.person_kind, AccessEvent.direction,
                                  AccessEvent.at).where(
        AccessEvent.granted, AccessEvent.person_id.is_not(None), AccessEvent.direction.is_not(None),
        AccessEvent.person_kind.in_(("student", "staff")), AccessEvent.at >= now - ON_SITE_WINDOW)).all()
    inside = access.on_site(access.Passage(pid, kind, direction, at)  # type: ignore[arg-type]  # filtered above
                            for pid, kind, direction, at in rows)
    ids = sorted(inside["student"] | inside["staff"])
    found: dict[int, Person] = {}
    for start in range(0, len(ids), 500):
        found.update((p.id, p) for p in session.scalars(select(Person).where(Person.id.in_(ids[start:start + 500]))))

    def names(kind: access.PersonKind) -> list[str]:
        people = sorted((found[i] for i in inside[kind] if i in found),
                        key=lambda p: (p.group_name or "", p.name))
        return [p.name + (f" ({p.group_name})" if p.group_name else "") for p in people]

    visitors = session.scalars(select(Visit).where(Visit.state == "on_site").order_by(Visit.name)).all()
    return {"staff": len(inside["staff"]), "students": len(inside["student"]), "visitors": len(visitors),
            "names": {"staff": names("staff"), "students": names("student"),
                      "visitors": [v.name + (f" → {v.host_name}" if v.host_name else "") for v in visitors]},
            "since": (now - ON_SITE_WINDOW).isoformat()}


def readers(session: Session) -> list[str]:
    return list(session.scalars(select(Device.id).where(Device.kind == "reader").order_by(Device.id)))


def _filters(request: Request, start: str | None = Query(None, alias="from"),
             end: str | None = Query(None, alias="to"), reader: str | None = None,
             name: str | None = Query(None, max_length=100), result: str | None = None,
             reason: str | None = None, page: int = Query(1, ge=1, le=100_000)) -> Filters:
    return parse_filters(request, start, end, reader, name, result, reason, page)


@router.get("/access", response_class=HTMLResponse)
async def access_page(request: Request, f: Filters = Depends(_filters),  # noqa: B008
                      user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    ctx = console(request)
    with ctx.sessions() as session:
        log = log_page(session, f, ctx.tz)
        here = on_site_now(session, utcnow())
        known_readers = readers(session)
    if f.reader and f.reader not in known_readers:
        known_readers.append(f.reader)
    return render(request, "access.html", log=log, here=here, f=f, readers=known_readers, reasons=access.REASONS,
                  today=utcnow().astimezone(ctx.tz).date().isoformat())


@router.get("/api/access")
async def access_api(request: Request, f: Filters = Depends(_filters),  # noqa: B008
                     user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """The access log, newest first, PAGE_SIZE a page: `from` and `to` (YYYY-MM-DD, the site's dates, both
    included), `reader`, `name` (part of the person's name), `result` (granted or denied), `reason`, `page`."""
    ctx = console(request)
    with ctx.sessions() as session:
        return log_page(session, f, ctx.tz)


@router.get("/api/access/on-site")
async def on_site_api(request: Request, user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """Who is on site now: staff and students by their last passage, visitors by their visits."""
    with console(request).sessions() as session:
        return on_site_now(session, utcnow())
