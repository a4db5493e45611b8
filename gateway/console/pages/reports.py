"""The Reports page: the daily duty log, a month or a term, downloaded as PDF, CSV or XLSX in the reader's
language (the same files as `campusgw report`). Every download is audited: reports carry names and times."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from gateway.console.auth import LoggedIn
from gateway.console.web import client_host, console, language_of, render, require, tr
from gateway.records import store
from gateway.records.models import ReportSubmission, utcnow
from gateway.reports.figures import Kind, collect, period
from gateway.reports.render import MEDIA_TYPES, RENDERERS, file_name
from gateway.reports.submit import SUBMITTED_KINDS, submit

router = APIRouter()
NOT_BRIDGED = "This school is not connected to a district (district: in the site config)."


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _page(request, user)


def _page(request: Request, user: LoggedIn, status: int = 200, error: str | None = None) -> HTMLResponse:
    ctx = console(request)
    today = utcnow().astimezone(ctx.tz).date()
    with ctx.sessions() as session:
        submitted = session.scalars(select(ReportSubmission).order_by(ReportSubmission.id.desc()).limit(12)).all()
        rows = [{"kind": s.kind, "period": s.period, "at": s.submitted_at, "by": s.submitted_by} for s in submitted]
    return render(request, "reports.html", status, today=today.isoformat(), month=today.replace(day=1).isoformat(),
                  district=ctx.district, submitted=rows, csrf=user.csrf, error=error, survey=ctx.survey is not None)


@router.get("/reports/survey.{fmt}", response_model=None)
async def survey_form(fmt: str, request: Request,
                      user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    """The district's protection survey form (物防技防基本情况排摸表, R44), from the site config."""
    ctx = console(request)
    if fmt not in RENDERERS or ctx.survey is None:
        raise HTTPException(404)
    language = language_of(request)
    report = ctx.survey()
    body = await asyncio.to_thread(RENDERERS[fmt], report, language)
    with ctx.sessions.begin() as session:
        store.audit(session, user.username, "report.download", "report:survey", "ok", {"format": fmt}, utcnow())
    name = file_name(report, language, fmt)
    return Response(body, media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f"attachment; filename=\"survey.{fmt}\"; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "private, no-store"})


@router.post("/reports/submit", response_model=None)
async def submit_to_district(request: Request,
                             user: LoggedIn = Depends(require("report.submit"))) -> Response:  # noqa: B008
    """A monthly or term report sent to the district (逐级上报): its figures and inspections as they are now;
    the rules service takes it up the bridge. Submitting a period again replaces it there."""
    ctx = console(request)
    if not ctx.district:
        raise HTTPException(409, tr(request, NOT_BRIDGED))
    form = await request.form()
    kind, day, to = (str(form.get(k) or "").strip() for k in ("kind", "day", "to"))
    if kind not in SUBMITTED_KINDS:
        return _page(request, user, 422, tr(request, "Only a monthly or a term report goes to the district."))
    try:
        first = date.fromisoformat(day)
        last = date.fromisoformat(to) if to else None
    except ValueError:
        return _page(request, user, 422, tr(request, "Dates are written YYYY-MM-DD."))
    if kind == "term" and (last is None or last < first):
        return _page(request, user, 422, tr(request, "A term report needs its last day, after its first."))
    start, end = period(kind, datetime.combine(first, datetime.min.time(), ctx.tz), ctx.tz,  # type: ignore[arg-type]
                        datetime.combine(last, datetime.min.time(), ctx.tz) if last else None)
    report_kind: Kind = kind  # type: ignore[assignment]

    def do() -> None:
        with ctx.sessions.begin() as session:
            submit(session, report_kind, start, end, ctx.tz, ctx.site_name, user.username, utcnow(),
                   client=client_host(request))

    await asyncio.to_thread(do)
    return RedirectResponse("/reports#submitted", 303)


@router.get("/reports/download")
async def download(request: Request, kind: str, day: str, to: str | None = None, fmt: str = "pdf",
                   user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    ctx = console(request)
    if kind not in ("daily", "monthly", "term") or fmt not in RENDERERS:
        raise HTTPException(422, tr(request, "Choose a kind of report and a format."))
    try:
        first = date.fromisoformat(day)
        last = date.fromisoformat(to) if to else None
    except ValueError:
        raise HTTPException(422, tr(request, "Dates are written YYYY-MM-DD.")) from None
    if kind == "term" and (last is None or last < first):
        raise HTTPException(422, tr(request, "A term report needs its last day, after its first."))
    start, end = period(kind, datetime.combine(first, datetime.min.time(), ctx.tz), ctx.tz,  # type: ignore[arg-type]
                        datetime.combine(last, datetime.min.time(), ctx.tz) if last else None)
    language = language_of(request)
    report_kind: Kind = kind  # type: ignore[assignment]

    def build() -> tuple[bytes, str]:
        with ctx.sessions() as session:
            report = collect(session, report_kind, start, end, ctx.tz, ctx.site_name)
        return RENDERERS[fmt](report, language), file_name(report, language, fmt)

    body, name = await asyncio.to_thread(build)  # a term's figures take a second or two: not on the event loop
    with ctx.sessions.begin() as session:
        store.audit(session, user.username, "report.download", f"report:{kind}", "ok",
                    {"from": start.date().isoformat(), "to": end.date().isoformat(), "format": fmt}, utcnow())
    # RFC 6266: the readable (Chinese) name for browsers, a plain one for the rest.
    plain = f"{kind}-{start.date().isoformat()}-{language}.{fmt}"
    return Response(body, media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "private, no-store"})
