"""The audit log (R43, 督导检查): every command and operator action, refusals and inspectors' views included,
newest first, filtered by day, person, action and result. For inspectors, supervisors and admins ("audit.view");
a guard's role may not read it. Read only: nothing here changes a record."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from gateway.console.auth import LoggedIn
from gateway.console.web import RefusedAction, console, day_start, parse_day, render, require, tr
from gateway.records.models import AuditEntry

router = APIRouter()
PAGE_SIZE = 100
RESULTS = ("ok", "refused", "failed")


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, start: str | None = Query(None, alias="from"),
                     end: str | None = Query(None, alias="to"), actor: str | None = None,
                     action: str | None = None, result: str | None = None, page: int = 1,
                     user: LoggedIn = Depends(require("audit.view"))) -> HTMLResponse:  # noqa: B008
    ctx = console(request)
    try:
        first, last = parse_day(start), parse_day(end)
    except RefusedAction:
        raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.")) from None
    if result not in (None, "", *RESULTS):
        raise HTTPException(422, tr(request, "The result is ok, refused or failed."))
    page = max(1, page)
    query = select(AuditEntry)
    if first:
        query = query.where(AuditEntry.at >= day_start(ctx, first))
    if last:
        query = query.where(AuditEntry.at < day_start(ctx, last + timedelta(days=1)))
    if actor and actor.strip():
        query = query.where(AuditEntry.actor == actor.strip())
    if action and action.strip():
        query = query.where(AuditEntry.action.startswith(action.strip(), autoescape=True))
    if result:
        query = query.where(AuditEntry.result == result)
    with ctx.sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                               .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    entries: list[dict[str, Any]] = [
        {"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
         "result": r.result, "detail": ", ".join(f"{k}: {v}" for k, v in (r.detail or {}).items())[:300],
         "client": r.client or ""} for r in rows]
    filters = {"from": start or "", "to": end or "", "actor": actor or "", "action": action or "",
               "result": result or ""}

    def link(to_page: int) -> str:
        return "/audit?" + urlencode({k: v for k, v in {**filters, "page": to_page}.items() if v not in ("", 1)})

    return render(request, "audit.html", entries=entries, filters=filters, results=RESULTS, total=total, page=page,
                  previous=link(page - 1) if page > 1 else None,
                  next=link(page + 1) if page * PAGE_SIZE < total else None)
