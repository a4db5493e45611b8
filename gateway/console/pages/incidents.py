"""The Incidents pages: the safety ledger (安全台账) with its filters, an incident (timeline, procedure checklist,
countdown to the reporting deadlines, "reported" buttons), the new-incident form and the alarm board's "promote
to incident". Hazards, inspections and maintenance are the ledger's other registers (pages.ledgers).

Guards ("incident.manage") enter incidents, notes, checklist ticks and reports; supervisors promote alarms
("incident.promote") and close incidents ("incident.close"). The records side, with the audit of every action,
is gateway.records.ledger; the rules (deadlines, lifecycle, refusals) are gateway.rules.incidents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from gateway import i18n, topics
from gateway.config import DEFAULT_CHECKLIST, INCIDENT_CATEGORIES
from gateway.console.auth import LoggedIn
from gateway.console.pages import ledgers, public_report
from gateway.console.web import (
    Console,
    attempt,
    client_host,
    console,
    day_start,
    form_action,
    language_of,
    parse_day,
    render,
    require,
    tr,
)
from gateway.records import ledger, store
from gateway.records.models import Alarm, Incident, IncidentEntry, utcnow
from gateway.rules.alarms import RefusedAction
from gateway.rules.incidents import (
    ALARM_CATEGORY,
    ALERT_LABELS,
    CLOSING_FIELDS,
    COUNTDOWN_MESSAGES,
    ENTRY_LABELS,
    HAZARD_SEVERITIES,
    HAZARD_SOURCES,
    HAZARD_STATES,
    INCIDENT_STATES,
    INSPECTION_KINDS,
    MAINTENANCE_FAULTS,
    SEVERITIES,
    countdown,
)

router = APIRouter()

# Every msgid the templates make from a code ("category_" ~ c ...) and the labels above: tests/unit/test_i18n.py
# checks that the catalogues hold them.
MSGIDS = frozenset({
    *(f"category_{c}" for c in INCIDENT_CATEGORIES), *(f"severity_{s}" for s in SEVERITIES),
    *(f"incident_{s}" for s in INCIDENT_STATES), *(f"hazard_{s}" for s in HAZARD_SEVERITIES),
    *(f"hazard_state_{s}" for s in HAZARD_STATES), *(f"source_{s}" for s in HAZARD_SOURCES),
    *(f"inspection_{k}" for k in INSPECTION_KINDS), *(f"fault_{f}" for f in MAINTENANCE_FAULTS),
    "maintenance_open", "maintenance_fixed", *COUNTDOWN_MESSAGES, *(f"checklist_{g}" for g in DEFAULT_CHECKLIST),
    *(label for label in (*ENTRY_LABELS.values(), *ALERT_LABELS.values()) if label)})


def _refused(request: Request, exc: RefusedAction) -> str:
    return tr(request, str(exc))


def _local_input(ctx: Console, value: datetime | None) -> str:
    """A time as a datetime-local field shows it (the site's zone, to the minute)."""
    return value.astimezone(ctx.tz).strftime("%Y-%m-%dT%H:%M") if value else ""


def _parse_local(ctx: Console, text: str | None) -> datetime | None:
    """A datetime-local field (YYYY-MM-DDTHH:MM, the site's zone); empty -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RefusedAction("a time is written as YYYY-MM-DD HH:MM") from None
    return value.replace(tzinfo=ctx.tz) if value.tzinfo is None else value


def publish(request: Request, alarm_ids: list[int]) -> None:
    """After the commit: the alarms an action changed go to the board (as the rules service sends them)."""
    if not alarm_ids:
        return
    ctx = console(request)
    with ctx.sessions() as session:
        alarms = [a for a in (session.get(Alarm, i) for i in dict.fromkeys(alarm_ids)) if a is not None]
        for view in store.alarm_views(session, alarms):
            ctx.bus.publish_json(topics.alarm(ctx.site, view["id"]), view)


# -- views ----------------------------------------------------------------------------------------


def _countdown(request: Request, due: datetime | None, now: datetime, done: datetime | None,
               warn: int) -> dict[str, Any] | None:
    if due is None:
        return None
    shown = countdown(due, now, done, warn)
    return {"text": tr(request, shown.message).format(**shown.params), "state": shown.state,
            "due_at": due.isoformat(), "done_at": done.isoformat() if done else None}


def incident_view(request: Request, incident: Incident, now: datetime) -> dict[str, Any]:
    category = console(request).incidents.category(incident.category)

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": incident.id, "category": incident.category, "severity": incident.severity, "title": incident.title,
            "place": incident.place, "people": incident.people, "state": incident.state,
            "occurred_at": iso(incident.occurred_at), "confirmed_at": iso(incident.confirmed_at),
            "report_due_at": iso(incident.report_due_at), "reported_at": iso(incident.reported_at),
            "reported_by": incident.reported_by, "written_due_at": iso(incident.written_due_at),
            "written_at": iso(incident.written_at), "alarm_id": incident.alarm_id, "created_by": incident.created_by,
            "created_at": iso(incident.created_at), "closed_at": iso(incident.closed_at),
            "forwarded_at": iso(incident.forwarded_at),
            "closing": {name: getattr(incident, name) for name in CLOSING_FIELDS} if incident.written_at else None,
            "report": _countdown(request, incident.report_due_at, now, incident.reported_at,
                                 category.warn_before_min),
            "written": _countdown(request, incident.written_due_at, now, incident.written_at,
                                  category.warn_before_min)}


def entry_view(entry: IncidentEntry) -> dict[str, Any]:
    label = ALERT_LABELS.get(entry.text, "") if entry.kind == "alert" else ENTRY_LABELS.get(entry.kind, "")
    view: dict[str, Any] = {"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor, "kind": entry.kind,
                            "label": label, "text": "" if entry.kind == "alert" else entry.text, "ref": entry.ref}
    if entry.kind == "attachment" and entry.ref and "/" in entry.ref:
        camera, ref = entry.ref.split("/", 1)
        view["href"] = f"/snapshots/{camera}/{ref}.jpg" if entry.text == "snapshot" else f"/clips/{camera}/{ref}"
    if entry.kind == "alarm":
        view["href"] = f"/api/alarms/{entry.ref}"
    return view


# -- the ledger -----------------------------------------------------------------------------------


def _filters(request: Request, category: str | None, state: str | None, start: str | None,
             end: str | None) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """(query arguments for ledger.incidents, the filters as typed, an error to show)."""
    ctx = console(request)
    typed = {"category": category or "", "state": state or "", "from": start or "", "to": end or ""}
    query: dict[str, Any] = {"category": category if category in INCIDENT_CATEGORIES else None,
                             "state": state if state in INCIDENT_STATES else None}
    try:
        first, last = parse_day(start), parse_day(end)
    except RefusedAction as exc:
        return query, typed, _refused(request, exc)
    if first is not None:
        query["since"] = day_start(ctx, first)
    if last is not None:
        query["until"] = day_start(ctx, last + timedelta(days=1))
    return query, typed, None


@router.get("/incidents", response_class=HTMLResponse)
async def ledger_page(request: Request, category: str | None = None, state: str | None = None,
                      start: str | None = None, end: str | None = None,
                      user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    query, typed, error = _filters(request, category, state, start, end)
    now = utcnow()
    with console(request).sessions() as session:
        rows = [incident_view(request, i, now) for i in ledger.incidents(session, **query)]
        counts = {"open_hazards": len(ledger.hazards(session, open_only=True)),
                  "open_maintenance": len(ledger.maintenance_items(session, open_only=True)),
                  "overdue_maintenance": len(ledger.overdue_maintenance(session, now))}
    return render(request, "incidents.html", 422 if error else 200, incidents=rows, filters=typed,
                  error=error, categories=INCIDENT_CATEGORIES, states=INCIDENT_STATES, counts=counts,
                  csrf=user.csrf, section="ledger")


@router.get("/api/incidents")
async def ledger_api(request: Request, category: str | None = None, state: str | None = None,
                     start: str | None = None, end: str | None = None,
                     user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """The incident ledger, newest first; `start`/`end` (YYYY-MM-DD, the site's days) bound when they happened."""
    query, _, error = _filters(request, category, state, start, end)
    if error:
        raise HTTPException(422, error)
    now = utcnow()
    with console(request).sessions() as session:
        return [incident_view(request, i, now) for i in ledger.incidents(session, **query)]


# -- a new incident, by hand or from an alarm ---------------------------------------------------------


def _form_page(request: Request, user: LoggedIn, status: int = 200, alarm: Alarm | None = None,
               form: dict[str, str] | None = None, error: str | None = None) -> HTMLResponse:
    ctx = console(request)
    now = utcnow()
    if form is None:
        form = {"category": "other", "severity": "minor", "occurred_at": _local_input(ctx, now)}
        if alarm is not None:
            form = {"category": ALARM_CATEGORY.get(alarm.alarm_type, "other"),
                    "severity": "serious" if alarm.priority <= 1 else "minor",
                    "title": f"{tr(request, alarm.alarm_type)}: {alarm.place or alarm.device_id}",
                    "occurred_at": _local_input(ctx, alarm.raised_at), "place": alarm.place or alarm.zone or ""}
    alarm_view = None
    if alarm is not None:
        with ctx.sessions() as session:
            alarm_view = store.alarm_views(session, [alarm])[0]
    deadlines = {name: (ctx.incidents.category(name).report_h, ctx.incidents.category(name).written_h)
                 for name in INCIDENT_CATEGORIES}
    return render(request, "incident_new.html", status, form=form, error=error, alarm=alarm_view,
                  categories=INCIDENT_CATEGORIES, severities=SEVERITIES, deadlines=deadlines,
                  csrf=user.csrf, section="promote" if alarm else "new")


@router.get("/incidents/new", response_class=HTMLResponse)
async def new_page(request: Request, user: LoggedIn = Depends(require("incident.manage"))) -> HTMLResponse:  # noqa: B008
    return _form_page(request, user)


NEW_FIELDS = ("category", "severity", "title", "place", "people", "occurred_at", "confirmed_at")


@router.post("/incidents", response_model=None)
async def create_form(request: Request, user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in NEW_FIELDS}
    ctx = console(request)
    now = utcnow()

    def do(session: Session) -> int:
        return ledger.create_incident(
            session, ctx.incidents, category=values["category"], severity=values["severity"],
            title=values["title"], place=values["place"], people=values["people"],
            occurred_at=_parse_local(ctx, values["occurred_at"]) or now,
            confirmed_at=_parse_local(ctx, values["confirmed_at"]), actor=user.username, now=now,
            client=client_host(request)).id

    return form_action(request, do, lambda incident_id: f"/incidents/{incident_id}",
                       lambda refused: _form_page(request, user, 422, form=values, error=refused))


def _alarm(request: Request, alarm_id: int) -> Alarm:
    with console(request).sessions() as session:
        alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise HTTPException(404, tr(request, "There is no such alarm."))
    return alarm


@router.get("/alarms/{alarm_id}/promote", response_model=None)
async def promote_page(alarm_id: int, request: Request,
                       user: LoggedIn = Depends(require("incident.promote"))) -> Response:  # noqa: B008
    """The form to confirm an alarm as an incident: category, severity, title and people, filled in from it."""
    alarm = _alarm(request, alarm_id)
    with console(request).sessions() as session:
        existing = ledger.incident_for_alarm(session, alarm_id)
    if existing is not None:
        return RedirectResponse(f"/incidents/{existing.id}", 303)
    return _form_page(request, user, alarm=alarm)


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = Field(default=None, max_length=32)
    severity: str | None = Field(default=None, max_length=16)
    title: str | None = Field(default=None, max_length=200)
    people: str | None = Field(default=None, max_length=2000)


@router.post("/alarms/{alarm_id}/promote", response_model=None)
async def promote(alarm_id: int, request: Request,
                  user: LoggedIn = Depends(require("incident.promote"))) -> Response:  # noqa: B008
    """Promote an alarm to an incident (supervisor and up): a form's POST goes on to the incident; a JSON body
    (category, severity, title, people: all optional) gets the incident back (201)."""
    as_json = request.headers.get("content-type", "").startswith("application/json")
    if as_json:
        try:
            body = PromoteBody.model_validate(await request.json())
        except (ValidationError, ValueError):
            raise HTTPException(422, tr(request, "The request is not valid.")) from None
        values = {k: str(v or "").strip() for k, v in body.model_dump().items()}
    else:
        form = await request.form()
        values = {k: str(form.get(k) or "").strip() for k in ("category", "severity", "title", "people")}
    ctx = console(request)
    now = utcnow()
    with ctx.sessions.begin() as session:
        try:
            incident, changed = ledger.promote_alarm(
                session, ctx.incidents, alarm_id, user.username, now, category=values["category"] or None,
                severity=values["severity"] or None, title=values["title"] or None, people=values["people"] or None,
                client=client_host(request))
        except RefusedAction as exc:
            refused: RefusedAction | None = exc
            existing = ledger.incident_for_alarm(session, alarm_id)
        else:
            refused, incident_id = None, incident.id
    if refused is not None:
        message = _refused(request, refused)
        if str(refused) == "there is no such alarm":
            raise HTTPException(404, message)
        if as_json:
            detail: dict[str, Any] = {"detail": message}
            if existing is not None:
                detail["incident_id"] = existing.id
            return JSONResponse(detail, 409)
        if existing is not None:  # promoted meanwhile (from another console): show that incident
            return RedirectResponse(f"/incidents/{existing.id}", 303)
        alarm = _alarm(request, alarm_id)
        return _form_page(request, user, 409, alarm=alarm, form=values, error=message)
    publish(request, changed)
    if as_json:
        with ctx.sessions() as session:
            view = incident_view(request, session.get_one(Incident, incident_id), utcnow())
        return JSONResponse({"incident": view, "url": f"/incidents/{incident_id}"}, 201)
    return RedirectResponse(f"/incidents/{incident_id}", 303)


# -- hazards, inspections, maintenance (pages.ledgers): before /incidents/{incident_id}, which would take
# their paths for an incident's id

router.include_router(ledgers.router)
router.include_router(public_report.router)  # the public page and its inbox (/incidents/reports) likewise



# -- one incident ---------------------------------------------------------------------------------


def _detail(request: Request, incident_id: int) -> dict[str, Any]:
    ctx = console(request)
    now = utcnow()
    with ctx.sessions() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise HTTPException(404, tr(request, "There is no such incident."))
        entries = ledger.timeline(session, incident_id)
        ticked = ledger.ticked_steps(session, incident_id)
        view = incident_view(request, incident, now)
        evidence = store.attachments(session, [incident.alarm_id]).get(incident.alarm_id, []) \
            if incident.alarm_id else []
    kept = {e.ref for e in entries if e.kind == "attachment"}
    steps = [{"index": i, "text": text, "done_by": ticked[text].actor if text in ticked else None,
              "done_at": ticked[text].at.isoformat() if text in ticked else None}
             for i, text in enumerate(ctx.incidents.category(view["category"]).steps)]
    # Evidence the camera finished after the promotion (a clip still recording then) is shown from the alarm.
    later = [{"kind": e["kind"], "camera": e["camera"], "ref": e["ref"], "state": e["state"]} for e in evidence
             if f"{e['camera']}/{e['ref']}" not in kept]
    return {**view, "timeline": [entry_view(e) for e in entries], "steps": steps, "more_evidence": later,
            "warn_before_min": ctx.incidents.category(view["category"]).warn_before_min}


def _incident_page(request: Request, user: LoggedIn, incident_id: int, status: int = 200,
                   error: str | None = None) -> HTMLResponse:
    ctx = console(request)
    detail = _detail(request, incident_id)
    return render(request, "incident.html", status, incident=detail, error=error, csrf=user.csrf,
                  now_input=_local_input(ctx, utcnow()), warn_before_min=detail["warn_before_min"], section="incident")


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(incident_id: int, request: Request,
                        user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _incident_page(request, user, incident_id)


@router.get("/api/incidents/{incident_id}")
async def incident_api(incident_id: int, request: Request,
                       user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """An incident with its timeline, its checklist (who ticked each step, when) and its deadlines."""
    return _detail(request, incident_id)


def _incident_action(request: Request, user: LoggedIn, incident_id: int,
                     do: Callable[[Session], list[int]]) -> Response:
    """Run one action in a transaction that commits even when refused (the refusal is audited), then show the
    incident again, with the refusal if there was one. `do` returns the alarms it changed."""
    result = attempt(request, do)
    if isinstance(result, RefusedAction):
        if str(result) == "there is no such incident":
            raise HTTPException(404, _refused(request, result))
        return _incident_page(request, user, incident_id, 409, error=_refused(request, result))
    publish(request, result)
    return RedirectResponse(f"/incidents/{incident_id}", 303)


@router.post("/incidents/{incident_id}/note", response_model=None)
async def note_form(incident_id: int, request: Request,
                    user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    text = str((await request.form()).get("text") or "")[:4000]

    def do(session: Session) -> list[int]:
        ledger.add_note(session, incident_id, text, user.username, utcnow(), client_host(request))
        return []

    return _incident_action(request, user, incident_id, do)


@router.post("/incidents/{incident_id}/steps/{index}", response_model=None)
async def step_form(incident_id: int, index: int, request: Request,
                    user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    ctx = console(request)

    def do(session: Session) -> list[int]:
        ledger.tick_step(session, ctx.incidents, incident_id, index, user.username, utcnow(), client_host(request))
        return []

    return _incident_action(request, user, incident_id, do)


def _report_route(name: str, written: bool) -> None:
    async def endpoint(incident_id: int, request: Request,
                       user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
        form = await request.form()
        ctx = console(request)

        def do(session: Session) -> list[int]:
            at = _parse_local(ctx, str(form.get("at") or ""))
            closing = {name: str(form.get(name) or "") for name in CLOSING_FIELDS} if written else None
            _, changed = ledger.record_report(session, incident_id, user.username, utcnow(), at=at,
                                              note=str(form.get("note") or "")[:2000], written=written,
                                              closing=closing, client=client_host(request))
            return changed

        return _incident_action(request, user, incident_id, do)

    endpoint.__name__ = f"incident_{name}_form"
    router.post(f"/incidents/{{incident_id}}/{name}", response_model=None)(endpoint)


_report_route("report", False)
_report_route("written", True)


@router.post("/incidents/{incident_id}/forwarded", response_model=None)
async def forwarded_form(incident_id: int, request: Request,
                         user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    """The centre school passed the report on to the education bureau (逐级上报), when it said so."""
    form = await request.form()
    ctx = console(request)

    def do(session: Session) -> list[int]:
        ledger.record_forwarded(session, incident_id, user.username, utcnow(),
                                at=_parse_local(ctx, str(form.get("at") or "")),
                                note=str(form.get("note") or "")[:2000], client=client_host(request))
        return []

    return _incident_action(request, user, incident_id, do)


@router.get("/incidents/{incident_id}/report.{fmt}", response_model=None)
async def closing_report(incident_id: int, fmt: str, request: Request, language: str | None = None,
                         user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    """The incident's written report (事故书面报告, R34) to print and sign: its facts, the reporting chain with
    times, the cause, handling, lessons and corrective measures, and the timeline. PDF, XLSX or CSV."""
    from gateway.reports.closing import incident_report
    from gateway.reports.render import MEDIA_TYPES, RENDERERS, file_name

    ctx = console(request)
    if fmt not in RENDERERS:
        raise HTTPException(404)
    chosen = language if language in i18n.LANGUAGES else language_of(request)
    with ctx.sessions() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise HTTPException(404, tr(request, "There is no such incident."))
        report = incident_report(incident, ledger.timeline(session, incident_id), ctx.site_name, ctx.tz)
    body = await asyncio.to_thread(RENDERERS[fmt], report, chosen)
    name = file_name(report, chosen, fmt)
    with ctx.sessions.begin() as session:
        store.audit(session, user.username, "report.download", f"incident:{incident_id}", "ok",
                    {"format": fmt, "language": chosen}, utcnow(), client_host(request))
    return Response(body, media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f"attachment; filename=\"incident-{incident_id}.{fmt}\"; "
                               f"filename*=UTF-8''{quote(name)}", "Cache-Control": "private, no-store"})


@router.post("/incidents/{incident_id}/close", response_model=None)
async def close_form(incident_id: int, request: Request,
                     user: LoggedIn = Depends(require("incident.close"))) -> Response:  # noqa: B008
    note = str((await request.form()).get("note") or "")[:2000]

    def do(session: Session) -> list[int]:
        _, changed = ledger.close_incident(session, incident_id, user.username, utcnow(), note, client_host(request))
        return changed

    return _incident_action(request, user, incident_id, do)
