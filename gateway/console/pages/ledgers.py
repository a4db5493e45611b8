"""The safety ledger's registers beside the incidents: hazards through their lifecycle (隐患排查: found,
assigned, fixed, signed off, escalated, reopened), the inspection tasks and the maintenance items. Guards find,
fix and inspect ("incident.manage"); supervisors sign off, escalate and reopen ("hazard.supervise"). The
records, with the audit of every action, are gateway.records.ledger; the lifecycle is gateway.rules.incidents.
Included in the incidents pages' router, before /incidents/{incident_id}."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.config import DEFAULT_CHECKLIST
from gateway.console.auth import LoggedIn
from gateway.console.web import (
    client_host,
    console,
    day_start,
    form_action,
    parse_day,
    render,
    require,
    stored_photo,
    tr,
    uploaded_photo,
)
from gateway.records import ledger
from gateway.records.models import Alarm, Hazard, Inspection, InspectionItem, MaintenanceItem, PatrolRound, utcnow
from gateway.rules.alarms import RefusedAction
from gateway.rules.incidents import HAZARD_ACTIONS, HAZARD_SEVERITIES, HAZARD_SOURCES, HazardAction

router = APIRouter()
HAZARD_PERMISSION = {"assign": "incident.manage", "fix": "incident.manage", "sign_off": "hazard.supervise",
                     "escalate": "hazard.supervise", "reopen": "hazard.supervise"}
FIXED_SHOWN_DAYS = 30  # fixed maintenance items and signed-off hazards listed this far back


def hazard_view(hazard: Hazard, now: datetime) -> dict[str, Any]:
    return {"id": hazard.id, "inspection_id": hazard.inspection_id, "source": hazard.source, "place": hazard.place,
            "description": hazard.description, "severity": hazard.severity, "state": hazard.state,
            "found_at": hazard.found_at.isoformat(), "found_by": hazard.found_by, "assigned_to": hazard.assigned_to,
            "measures": hazard.measures, "due_at": hazard.due_at.isoformat() if hazard.due_at else None,
            "fixed_at": hazard.fixed_at.isoformat() if hazard.fixed_at else None, "fixed_by": hazard.fixed_by,
            "signed_off_at": hazard.signed_off_at.isoformat() if hazard.signed_off_at else None,
            "signed_off_by": hazard.signed_off_by, "inspector": hazard.inspector,
            "overdue": hazard.due_at is not None and hazard.state in ("found", "assigned", "escalated")
            and now > hazard.due_at}


def inspection_view(inspection: Inspection, hazards: int, now: datetime) -> dict[str, Any]:
    return {"id": inspection.id, "kind": inspection.kind, "period": inspection.period,
            "due_at": inspection.due_at.isoformat(),
            "done_at": inspection.done_at.isoformat() if inspection.done_at else None, "done_by": inspection.done_by,
            "notes": inspection.notes, "hazards": hazards,
            "overdue": inspection.done_at is None and now > inspection.due_at}


def maintenance_view(item: MaintenanceItem, place: str | None, now: datetime) -> dict[str, Any]:
    return {"id": item.id, "device_id": item.device_id, "alarm_id": item.alarm_id, "fault": item.fault,
            "place": place, "opened_at": item.opened_at.isoformat(), "due_at": item.due_at.isoformat(),
            "fixed_at": item.fixed_at.isoformat() if item.fixed_at else None, "fixed_by": item.fixed_by,
            "state": item.state, "overdue": item.state == "open" and now > item.due_at}


# -- hazards --------------------------------------------------------------------------------------


def _hazards_page(request: Request, user: LoggedIn, status: int = 200, show_all: bool = False,
                  error: str | None = None, form: dict[str, str] | None = None,
                  inspection: int | None = None) -> HTMLResponse:
    ctx = console(request)
    now = utcnow()
    with ctx.sessions() as session:
        if show_all:
            rows = ledger.hazards(session)
        else:  # open ones, and those signed off lately
            recent = ledger.hazards(session, since=now - timedelta(days=FIXED_SHOWN_DAYS))
            rows = ledger.hazards(session, open_only=True)
            rows += [h for h in recent if h.state == "signed_off"]
        hazards = [hazard_view(h, now) for h in rows]
        tasks = [inspection_view(i, 0, now) for i in ledger.inspections(session, 6)]
    form = form or {"severity": "general", "source": "inspection" if inspection else "patrol",
                    "inspection_id": str(inspection or "")}
    return render(request, "hazards.html", status, hazards=hazards, inspections=tasks, error=error, form=form,
                  severities=HAZARD_SEVERITIES, sources=HAZARD_SOURCES, show_all=show_all, csrf=user.csrf,
                  today=now.astimezone(ctx.tz).date().isoformat(), section="hazards")


@router.get("/incidents/hazards", response_class=HTMLResponse)
async def hazards_page(request: Request, all: bool = False, inspection: int | None = None,
                       round_id: int | None = Query(None, alias="round"),
                       user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    form = None
    if round_id is not None:  # "Record a hazard found" on a patrol round (R19): the form filled in from the round
        with console(request).sessions() as session:
            walked = session.get(PatrolRound, round_id)
        if walked is not None:
            name = walked.result.get("route", {}).get("name", walked.route)
            form = {"severity": "general", "source": "patrol", "inspection_id": "",
                    "place": f"{name} ({walked.day} #{walked.number})"[:200]}
    return _hazards_page(request, user, show_all=all, inspection=inspection, form=form)


@router.post("/incidents/hazards", response_model=None)
async def add_hazard_form(request: Request,
                          user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("place", "description", "severity", "source",
                                                           "inspection_id", "inspector")}
    inspection_id = int(values["inspection_id"]) if values["inspection_id"].isdigit() else None

    def do(session: Session) -> None:
        ledger.add_hazard(session, place=values["place"], description=values["description"],
                          severity=values["severity"], source=values["source"], inspection_id=inspection_id,
                          inspector=values["inspector"], actor=user.username, now=utcnow(), client=client_host(request))

    return form_action(request, do, "/incidents/hazards",
                       lambda refused: _hazards_page(request, user, 422, error=refused, form=values))


def _hazard_route(action: HazardAction) -> None:
    async def endpoint(hazard_id: int, request: Request,
                       user: LoggedIn = Depends(require(HAZARD_PERMISSION[action]))) -> Response:  # noqa: B008
        form = await request.form()
        values = {k: str(form.get(k) or "").strip() for k in ("assigned_to", "measures", "due", "reason")}
        ctx = console(request)

        def do(session: Session) -> None:
            due = parse_day(values["due"])
            ledger.hazard_action(
                session, hazard_id, action, user.username, utcnow(), assigned_to=values["assigned_to"],
                measures=values["measures"], reason=values["reason"], client=client_host(request),
                due_at=day_start(ctx, due + timedelta(days=1)) - timedelta(seconds=1) if due else None)

        return form_action(request, do, f"/incidents/hazards#hazard-{hazard_id}",
                           lambda refused: _hazards_page(request, user, 409, error=refused))

    endpoint.__name__ = f"hazard_{action}_form"
    router.post(f"/incidents/hazards/{{hazard_id}}/{action}", response_model=None)(endpoint)


for _action in HAZARD_ACTIONS:
    _hazard_route(_action)


# -- inspections ----------------------------------------------------------------------------------


def item_view(row: InspectionItem) -> dict[str, Any]:
    return {"id": row.id, "passed": row.passed, "note": row.note, "photo": row.photo_type is not None,
            "at": row.at.isoformat(), "by": row.by, "hazard_id": row.hazard_id}


def _inspections_page(request: Request, user: LoggedIn, status: int = 200, error: str | None = None) -> HTMLResponse:
    now = utcnow()
    ctx = console(request)
    checklist = ctx.incidents.checklist
    with ctx.sessions() as session:
        counts = {inspection: n for inspection, n in session.execute(select(Hazard.inspection_id, func.count()).where(
            Hazard.inspection_id.is_not(None)).group_by(Hazard.inspection_id))}
        tasks = ledger.inspections(session)
        rows = [inspection_view(i, counts.get(i.id, 0), now) for i in tasks]
        for row, task in zip(rows, tasks, strict=True):
            done = {(r.group, r.item): item_view(r) for r in ledger.inspection_items(session, task.id)}
            row["checklist"] = [{"group": group, "items": [{"item": item, "result": done.get((group, item))}
                                                           for item in items]} for group, items in checklist.items()]
            row["checked"], row["total"] = len(done), sum(len(items) for items in checklist.values())
    return render(request, "inspections.html", status, inspections=rows, error=error, csrf=user.csrf,
                  section="inspections", known_groups={f"checklist_{g}" for g in DEFAULT_CHECKLIST})


@router.get("/incidents/inspections", response_class=HTMLResponse)
async def inspections_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _inspections_page(request, user)


@router.post("/incidents/inspections/{inspection_id}/done", response_model=None)
async def inspection_done_form(inspection_id: int, request: Request,
                               user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    notes = str((await request.form()).get("notes") or "")

    def do(session: Session) -> None:
        ledger.complete_inspection(session, inspection_id, user.username, utcnow(), notes, client_host(request))

    return form_action(request, do, "/incidents/inspections",
                       lambda refused: _inspections_page(request, user, 409, error=refused))


@router.post("/incidents/inspections/{inspection_id}/items", response_model=None)
async def inspection_item_form(inspection_id: int, request: Request,
                               user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    """A checklist item passed or failed, with a note and a photo (PNG or JPEG, up to 4 MiB)."""
    form = await request.form()
    group, item = str(form.get("group") or ""), str(form.get("item") or "")
    passed, note = form.get("result") == "pass", str(form.get("note") or "")[:2000]
    if form.get("result") not in ("pass", "fail"):
        return _inspections_page(request, user, 422, error=tr(request, "choose passed or failed"))
    try:
        photo, photo_type = await uploaded_photo(form.get("photo"))
    except RefusedAction as exc:
        return _inspections_page(request, user, 422, error=tr(request, str(exc)))
    ctx = console(request)

    def do(session: Session) -> None:
        ledger.record_item(session, ctx.incidents, inspection_id, group, item, passed, user.username, utcnow(),
                           note=note, photo=photo, photo_type=photo_type, client=client_host(request))

    return form_action(request, do, f"/incidents/inspections#inspection-{inspection_id}",
                       lambda refused: _inspections_page(request, user, 409, error=refused))


@router.get("/incidents/inspections/items/{item_id}/photo", response_model=None)
async def inspection_item_photo(item_id: int, request: Request,
                                user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    with console(request).sessions() as session:
        row = session.get(InspectionItem, item_id)
        return stored_photo(row.photo if row else None, row.photo_type if row else None)


# -- maintenance ----------------------------------------------------------------------------------


def _maintenance_page(request: Request, user: LoggedIn, status: int = 200, error: str | None = None) -> HTMLResponse:
    now = utcnow()
    with console(request).sessions() as session:
        rows = ledger.maintenance_items(session, open_only=True)
        rows += [m for m in ledger.maintenance_items(session) if m.state == "fixed" and m.fixed_at is not None
                 and m.fixed_at > now - timedelta(days=FIXED_SHOWN_DAYS)]
        places = {alarm_id: place for alarm_id, place in session.execute(select(Alarm.id, Alarm.place).where(
            Alarm.id.in_([m.alarm_id for m in rows if m.alarm_id is not None])))}
        items = [maintenance_view(m, places.get(m.alarm_id or 0), now) for m in rows]
    items.sort(key=lambda m: (m["state"] != "open", not m["overdue"], m["due_at"]))
    return render(request, "maintenance.html", status, items=items, error=error, csrf=user.csrf,
                  section="maintenance")


@router.get("/incidents/maintenance", response_class=HTMLResponse)
async def maintenance_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _maintenance_page(request, user)


@router.post("/incidents/maintenance/{item_id}/fix", response_model=None)
async def maintenance_fix_form(item_id: int, request: Request,
                               user: LoggedIn = Depends(require("incident.manage"))) -> Response:  # noqa: B008
    note = str((await request.form()).get("note") or "")

    def do(session: Session) -> None:
        ledger.fix_maintenance(session, item_id, user.username, utcnow(), note, client_host(request))

    return form_action(request, do, "/incidents/maintenance",
                       lambda refused: _maintenance_page(request, user, 409, error=refused))
