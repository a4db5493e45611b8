"""The Notifications page: every message to a person about an alarm (an escalation step, or an alarm type sent
at the raise), newest first, with its state, the channel that delivered it and its receipt or last failure; and
who silenced which alarm's sirens. Each try is also a line in the alarm's history (gateway.notify.sender)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from gateway.console.auth import LoggedIn
from gateway.console.web import Console, RefusedAction, console, day_start, parse_day, render, require, tr
from gateway.personal import mask_phone
from gateway.records.models import Alarm, AlarmTransition, Notification

router = APIRouter()
PAGE_SIZE = 50
STATES = ("pending", "sent", "failed")
SILENCES_SHOWN = 50
Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True)
class Filters:
    start: date | None = None  # the site's local dates, both days included
    end: date | None = None
    state: str = ""
    person: str = ""
    page: int = 1

    def query(self, **change: Any) -> str:
        values = {"from": self.start.isoformat() if self.start else "", "to": self.end.isoformat() if self.end else "",
                  "state": self.state, "person": self.person, "page": self.page, **change}
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 1)})


def parse_filters(request: Request, start: str | None, end: str | None, state: str | None, person: str | None,
                  page: int) -> Filters:
    try:
        first, last = parse_day(start), parse_day(end)
    except RefusedAction:
        raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.")) from None
    if state not in (None, "", *STATES):
        raise HTTPException(422, tr(request, "The state is pending, sent or failed."))
    return Filters(first, last, state or "", (person or "").strip(), max(1, page))


def _window(query: Q, column: Any, f: Filters, ctx: Console) -> Q:
    if f.start:
        query = query.where(column >= day_start(ctx, f.start))
    if f.end:
        query = query.where(column < day_start(ctx, f.end + timedelta(days=1)))
    return query


def _where(query: Q, f: Filters, ctx: Console) -> Q:
    query = _window(query, Notification.created_at, f, ctx)
    if f.state:
        query = query.where(Notification.state == f.state)
    if f.person:
        query = query.where(Notification.person_name.icontains(f.person, autoescape=True))
    return query


def notification_view(n: Notification, alarm: Alarm | None) -> dict[str, Any]:
    """One notification as the page and the API show it: the phone number masked."""
    return {"id": n.id, "alarm_id": n.alarm_id, "alarm_type": alarm.alarm_type if alarm else None,
            "place": alarm.place if alarm else None, "person_id": n.person_id, "person": n.person_name,
            "phone": mask_phone(n.phone) if n.phone else None, "level": n.level, "state": n.state,
            "attempts": n.attempts, "channel": n.channel, "detail": n.detail,
            "created_at": n.created_at.isoformat(), "done_at": n.done_at.isoformat() if n.done_at else None,
            "next_try_at": n.next_try_at.isoformat() if n.next_try_at and n.state == "pending" else None}


def notifications_page(session: Session, f: Filters, ctx: Console) -> dict[str, Any]:
    total = session.scalar(_where(select(func.count()).select_from(Notification), f, ctx)) or 0
    rows = session.execute(_where(select(Notification, Alarm).join(Alarm, Alarm.id == Notification.alarm_id,
                                                                   isouter=True), f, ctx)
                           .order_by(Notification.created_at.desc(), Notification.id.desc())
                           .offset((f.page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    counts: dict[str, int] = {state: n for state, n in session.execute(
        _where(select(Notification.state, func.count()), f, ctx).group_by(Notification.state))}
    return {"total": total, "page": f.page, "pages": max(1, -(-total // PAGE_SIZE)),
            "counts": {s: counts.get(s, 0) for s in STATES},
            "notifications": [notification_view(n, a) for n, a in rows]}


def silences(session: Session, f: Filters, ctx: Console) -> list[dict[str, Any]]:
    """Who silenced which alarm's sirens, newest first (the same days as the notifications)."""
    rows = session.execute(_window(select(AlarmTransition, Alarm).join(Alarm, Alarm.id == AlarmTransition.alarm_id)
                                   .where(AlarmTransition.action == "silence"), AlarmTransition.at, f, ctx)
                           .order_by(AlarmTransition.at.desc()).limit(SILENCES_SHOWN)).all()
    return [{"alarm_id": a.id, "alarm_type": a.alarm_type, "place": a.place, "by": t.actor, "at": t.at.isoformat(),
             "state": t.from_state} for t, a in rows]


@router.get("/notifications", response_class=HTMLResponse)
async def page(request: Request, start: str | None = Query(None, alias="from"),
               end: str | None = Query(None, alias="to"), state: str | None = None,
               person: str | None = None, page: int = 1,
               user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    ctx = console(request)
    f = parse_filters(request, start, end, state, person, page)
    with ctx.sessions() as session:
        found = notifications_page(session, f, ctx)
        silenced = silences(session, f, ctx)
    return render(request, "notifications.html", f=f, states=STATES, silences=silenced, **found)


@router.get("/api/notifications")
async def api(request: Request, start: str | None = Query(None, alias="from"),
              end: str | None = Query(None, alias="to"), state: str | None = None,
              person: str | None = None, page: int = 1,
              user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """Notifications newest first, PAGE_SIZE a page, with the counts by state, and the silences of those days."""
    ctx = console(request)
    f = parse_filters(request, start, end, state, person, page)
    with ctx.sessions() as session:
        return {**notifications_page(session, f, ctx), "silences": silences(session, f, ctx)}
