"""The Duty roster page: this week's roster per day and shift, who is on duty now (and so whom an unacknowledged
alarm goes to), the staffing warnings, and the shift handover (交接班) with its log.

Supervisors ("roster.edit") add and remove assignments, import a CSV and copy a week; any guard hands over
("roster.handover"). Every change is audited by gateway.records.roster, which holds the records side; the
rules (shift times, staffing, carry-over) are gateway.rules.roster.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from gateway.console.auth import LoggedIn, allowed
from gateway.console.web import Console, console, refuse, render, require, tr
from gateway.records import ledger, people, roster
from gateway.records.models import DutyAssignment, Handover, utcnow
from gateway.records.roster import RosterError
from gateway.rules import roster as rules
from gateway.rules.roster import Duty

router = APIRouter()
LOG_SIZE = 20  # handovers shown on the page
FIELDS = ("day", "shift", "role", "name", "username", "phone", "post")
ROLE_LABELS = {"guard": "duty_guard", "leader": "duty_leader", "teacher": "duty_teacher",
               "volunteer": "duty_volunteer"}  # msgids
POST_LABELS = {"gate": "post_gate", "patrol": "post_patrol"}


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _error(request: Request, exc: RosterError) -> str:
    return tr(request, exc.message).format(**exc.params)


def _week(request: Request, text: str | None, ctx: Console, now: datetime) -> list[date]:
    if not text:
        return rules.week_of(rules.duty_day(ctx.duty.shifts, now, ctx.tz))
    try:
        return rules.week_of(date.fromisoformat(text))
    except ValueError:
        raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.") + f" ({text})") from None


def duty_view(duty: Duty, now: datetime) -> dict[str, Any]:
    return {"id": duty.id, "day": duty.day.isoformat(), "shift": duty.shift, "role": duty.role, "name": duty.name,
            "username": duty.username, "phone": duty.phone, "post": duty.post, "position": duty.position,
            "starts_at": duty.starts_at.isoformat(), "ends_at": duty.ends_at.isoformat(), "now": duty.on_duty(now)}


def handover_view(row: Handover) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "shift": row.shift, "from_name": row.from_name,
            "to_name": row.to_name, "notes": row.notes, "items": row.open_items.get("items", []), "by": row.by}


def page_data(request: Request, user: LoggedIn, week: str | None = None) -> dict[str, Any]:
    ctx = console(request)
    now = utcnow()
    days = _week(request, week, ctx, now)
    today = rules.duty_day(ctx.duty.shifts, now, ctx.tz)
    with ctx.sessions() as session:
        rows = [roster.duty_of(r) for r in roster.roster_between(session, days[0] - timedelta(days=1), days[-1])]
        here = roster.on_duty_now(session, now)
        previous, carried = roster.carried_items(session)
        log = [handover_view(h) for h in roster.handovers(session, LOG_SIZE)]
        leave_rows = [{"id": lv.id, "name": lv.name, "reason": lv.reason, "state": lv.state,
                       "replacement": lv.replacement, "at": lv.requested_at.isoformat(), "by": lv.requested_by,
                       "decided_by": lv.decided_by, "assignment": lv.assignment_id}
                      for lv in roster.leaves(session, now - timedelta(days=7))]
        may_decide = roster.may_decide_leave(session, user.username, allowed(user.role, "roster.edit"), now)
        overdue = [{"id": h.id, "place": h.place, "description": h.description, "assigned_to": h.assigned_to,
                    "due": h.due_at.astimezone(ctx.tz).date().isoformat() if h.due_at else ""}
                   for h in ledger.overdue_hazards(session, now)]
    week_rows = [d for d in rows if d.day >= days[0]]
    shifts = [(s.id, s.name, s.start, s.end, s.post) for s in ctx.duty.shifts]
    shifts += [(k, k, "", "", "any") for k in sorted({d.shift for d in week_rows} - {s[0] for s in shifts})]
    grid = {(s[0], day.isoformat()): [duty_view(d, now) for d in week_rows if d.shift == s[0] and d.day == day]
            for s in shifts for day in days}
    checked = [day for day in days if day >= today]
    warnings = [w.text(lambda m: tr(request, m)) for day in checked
                for w in rules.staffing_warnings(ctx.duty, rows, day, ctx.tz)]
    escalation = rules.escalation_order(here, [])
    mine = next((d for d in here.everyone if d.username == user.username), None)
    return {
        "days": [d.isoformat() for d in days], "today": today.isoformat(), "shifts": shifts, "grid": grid,
        "here": {"guards": [duty_view(d, now) for d in here.guards],
                 "leaders": [duty_view(d, now) for d in here.leaders],
                 "others": [duty_view(d, now) for d in here.others]},
        "mine": duty_view(mine, now) if mine else None, "escalation": [p.name for p in escalation],
        "warnings": warnings, "overdue_hazards": overdue, "leaves": leave_rows, "may_decide": may_decide,
        "now_iso": now.isoformat(),
        "previous": previous, "carried": carried, "log": log,
        "roles": [(r, ROLE_LABELS[r]) for r in rules.ROLES], "posts": list(POST_LABELS.items()),
        "shift_names": {s[0]: s[1] for s in shifts}, "role_labels": ROLE_LABELS, "post_labels": POST_LABELS,
        "school_size": ctx.duty.school_size,
        "needed": rules.guards_needed(ctx.duty.school_size),
        "names": sorted({d.name for d in week_rows}), "shift_now": mine.shift if mine else _shift_now(ctx, now),
        "prev_week": (days[0] - timedelta(days=7)).isoformat(), "next_week": (days[0] + timedelta(days=7)).isoformat(),
    }


def _shift_now(ctx: Console, now: datetime) -> str | None:
    """The shift running now that ends first (the one about to be handed over)."""
    running = []
    for shift in ctx.duty.shifts:
        for day in (now.astimezone(ctx.tz).date() - timedelta(days=1), now.astimezone(ctx.tz).date()):
            start, end = rules.shift_times(shift, day, ctx.tz)
            if start <= now < end:
                running.append((end, shift.id))
    return min(running)[1] if running else None


def _page(request: Request, user: LoggedIn, status: int = 200, week: str | None = None,
          **values: Any) -> HTMLResponse:
    values.setdefault("form", {})
    values.setdefault("errors", {})
    values.setdefault("handover", {})
    return render(request, "duty.html", status, csrf=user.csrf, week=week, **page_data(request, user, week),
                  **values)


NOTICES = {
    "assigned": "Added to the roster.",
    "removed": "Removed from the roster.",
    "handed_over": "Handed over.",
    "leave_requested": "Leave requested: stay on the post until it is approved with a replacement.",
    "leave_decided": "Leave request decided.",
}
IMPORTED = "Imported: {shifts} shifts; {added} added, {updated} changed, {removed} removed, {unchanged} unchanged."
COPIED = "Copied: {copied} assignments ({skipped} already there or on a shift no longer set up)."


@router.get("/duty", response_class=HTMLResponse)
async def duty_page(request: Request, week: str | None = None, done: str | None = None,
                    user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    notice = tr(request, NOTICES[done]) if done in NOTICES else None
    return _page(request, user, week=week, notice=notice)


def _back(week: str | None, done: str, anchor: str = "") -> RedirectResponse:
    query = f"week={week}&" if week else ""
    return RedirectResponse(f"/duty?{query}done={done}{anchor}", 303)


@router.post("/duty/assign", response_model=None)
async def assign_form(request: Request, user: LoggedIn = Depends(require("roster.edit"))) -> Response:  # noqa: B008
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in FIELDS}
    week = str(form.get("week") or "") or None
    ctx = console(request)
    try:
        with ctx.sessions.begin() as session:
            roster.assign(session, ctx.duty, ctx.tz, day=values["day"], shift=values["shift"], role=values["role"],
                          name=values["name"], username=values["username"] or None, phone=values["phone"] or None,
                          post=values["post"] or None, actor=user.username, now=utcnow(), client=_client(request))
    except RosterError as exc:
        return _page(request, user, 422, week=week, form=values, errors={exc.field or "form": _error(request, exc)})
    return _back(values["day"], "assigned", "#roster")


@router.post("/duty/{assignment_id}/remove", response_model=None)
async def remove_form(assignment_id: int, request: Request,
                      user: LoggedIn = Depends(require("roster.edit"))) -> Response:  # noqa: B008
    week = str((await request.form()).get("week") or "") or None
    try:
        with console(request).sessions.begin() as session:
            row = roster.remove(session, assignment_id, user.username, utcnow(), _client(request))
            day = row.day
    except RosterError as exc:
        return _page(request, user, 409, week=week, errors={"form": _error(request, exc)})
    return _back(day, "removed", "#roster")


@router.post("/duty/import", response_model=None)
async def import_form(request: Request, user: LoggedIn = Depends(require("roster.edit"))) -> Response:  # noqa: B008
    """A roster from a CSV file (UTF-8 or as Excel saves it on a Chinese Windows); nothing changes if any line
    is wrong, and every wrong line is named."""
    form = await request.form()
    week = str(form.get("week") or "") or None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return _page(request, user, 422, week=week, import_errors=[tr(request, "Choose a CSV file.")])
    data, ctx, client = await upload.read(), console(request), _client(request)

    def run() -> roster.RosterImport:
        with ctx.sessions.begin() as session:
            return roster.import_roster(session, ctx.duty, ctx.tz, people.decode_csv(data), user.username, utcnow(),
                                        client)

    result = await asyncio.to_thread(run)  # a big file takes seconds to check: not on the drivers' event loop
    if not result.ok:
        return _page(request, user, 422, week=week,
                     import_errors=[p.text(lambda m: tr(request, m)) for p in result.errors[:50]],
                     import_more=max(0, len(result.errors) - 50))
    notice = tr(request, IMPORTED).format(**vars(result))
    return _page(request, user, week=week, notice=notice)


@router.post("/duty/copy", response_model=None)
async def copy_form(request: Request, user: LoggedIn = Depends(require("roster.edit"))) -> Response:  # noqa: B008
    """This week's roster onto the next week (people already there stay, and are not doubled)."""
    form = await request.form()
    ctx = console(request)
    try:
        source, target = (date.fromisoformat(str(form.get(k) or "")) for k in ("week", "to"))
    except ValueError:
        raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.")) from None
    try:
        with ctx.sessions.begin() as session:
            copied = roster.copy_week(session, ctx.duty, ctx.tz, source, target, user.username, utcnow(),
                                      _client(request))
    except RosterError as exc:
        return _page(request, user, 409, week=source.isoformat(), errors={"form": _error(request, exc)})
    notice = tr(request, COPIED).format(copied=copied.copied, skipped=copied.skipped)
    return _page(request, user, week=target.isoformat(), notice=notice)


@router.post("/duty/handover", response_model=None)
async def handover_form(request: Request,
                        user: LoggedIn = Depends(require("roster.handover"))) -> Response:  # noqa: B008
    form = await request.form()
    values = {k: str(form.get(k) or "") for k in ("shift", "from_name", "to_name", "notes", "items", "previous")}
    done = [int(str(v)) for v in form.getlist("done") if str(v).isdigit()]
    previous = int(values["previous"]) if values["previous"].isdigit() else None
    ctx = console(request)
    try:
        with ctx.sessions.begin() as session:
            roster.hand_over(session, ctx.duty, shift=values["shift"], from_name=values["from_name"],
                             to_name=values["to_name"], notes=values["notes"], done=done,
                             new_items=values["items"].splitlines(), previous=previous, actor=user.username,
                             now=utcnow(), client=_client(request))
    except RosterError as exc:
        return _page(request, user, 422, handover=values,
                     errors={"handover_" + (exc.field or "form"): _error(request, exc)})
    return _back(None, "handed_over", "#handovers")


@router.get("/api/duty/now")
async def on_duty_api(request: Request, user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """Who is on duty now (guards in order of notification, the leader, others) and the staffing warnings of
    today's duty day (English)."""
    ctx = console(request)
    now = utcnow()
    today = rules.duty_day(ctx.duty.shifts, now, ctx.tz)
    with ctx.sessions() as session:
        here = roster.on_duty_now(session, now)
        warnings = roster.staffing(session, ctx.duty, ctx.tz, [today])
    return {"at": now.isoformat(), "guards": [duty_view(d, now) for d in here.guards],
            "leaders": [duty_view(d, now) for d in here.leaders], "others": [duty_view(d, now) for d in here.others],
            "escalation": [p.name for p in rules.escalation_order(here, [])],
            "warnings": [str(w) for w in warnings]}


# -- leave (请假, R05) ----------------------------------------------------------------------------------


@router.post("/duty/{assignment_id}/leave", response_model=None)
async def leave_form(assignment_id: int, request: Request,
                     user: LoggedIn = Depends(require("roster.handover"))) -> Response:  # noqa: B008
    """A guard asks to leave their own assignment (a supervisor may ask for anyone's)."""
    form = await request.form()
    ctx = console(request)
    try:
        with ctx.sessions.begin() as session:
            row = session.get(DutyAssignment, assignment_id)
            if row is not None and row.username != user.username and not allowed(user.role, "roster.edit"):
                raise RosterError("only the person on the assignment, or a supervisor, asks for its leave")
            roster.request_leave(session, assignment_id, str(form.get("reason") or "")[:4000], user.username,
                                 utcnow(), _client(request))
            day = row.day if row else None
    except RosterError as exc:
        return _page(request, user, 409, errors={"leave": _error(request, exc)})
    return _back(day or "", "leave_requested", "#leaves")


def _decide(approve: bool) -> None:
    async def endpoint(leave_id: int, request: Request,
                       user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
        form = await request.form()
        ctx = console(request)
        now = utcnow()
        with ctx.sessions() as session:
            may = roster.may_decide_leave(session, user.username, allowed(user.role, "roster.edit"), now)
        if not may:
            refuse(request, user, "role.refused", {"permission": "leave.decide", "role": user.role},
                   "Only the leader on duty or a supervisor decides a leave request.")
        try:
            with ctx.sessions.begin() as session:
                roster.decide_leave(session, leave_id, approve, user.username, now,
                                    replacement=str(form.get("replacement") or ""), client=_client(request))
        except RosterError as exc:
            return _page(request, user, 409, errors={"leave": _error(request, exc)})
        return RedirectResponse("/duty?done=leave_decided#leaves", 303)

    endpoint.__name__ = f"leave_{'approve' if approve else 'refuse'}_form"
    router.post(f"/duty/leaves/{{leave_id}}/{'approve' if approve else 'refuse'}", response_model=None)(endpoint)


_decide(True)
_decide(False)
