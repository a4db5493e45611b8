"""District notices (上级通知): what the district sent down (a heightened alert around schools, a lockdown drill),
newest first, each acknowledged once by someone on duty. Every page's banner shows the unacknowledged ones (the
alarm layer, fed from rules/notices/+); the acknowledgement goes back up the bridge with the notice's view."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway import topics
from gateway.console.auth import LoggedIn
from gateway.console.web import client_host, console, render, require, tr
from gateway.records import notices
from gateway.records.models import utcnow

router = APIRouter()


@router.get("/notices", response_class=HTMLResponse)
async def notices_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    ctx = console(request)
    with ctx.sessions() as session:
        rows = notices.recent(session)
    return render(request, "notices.html", notices=rows, csrf=user.csrf, district=ctx.district)


@router.post("/notices/{notice_id}/ack", response_model=None)
async def acknowledge(request: Request, notice_id: int,
                      user: LoggedIn = Depends(require("notice.ack"))) -> Response:  # noqa: B008
    """Acknowledged once, audited; its view goes up to the district and clears every page's banner."""
    ctx = console(request)
    with ctx.sessions.begin() as session:
        done = notices.acknowledge(session, notice_id, user.username, utcnow(), client_host(request))
        shown = notices.view(done) if done is not None else None
    if shown is None:
        raise HTTPException(409, tr(request, "This notice was acknowledged already, or there is no such notice."))
    ctx.bus.publish_json(topics.notice(ctx.site, notice_id), shown, retain=True)
    return RedirectResponse(f"/notices#notice-{notice_id}", 303)
