"""The Visitors page: registration at the gatehouse (keyboard only, a scanner types into it), the printed
pass with its QR code, the visitors here now with check-in and check-out, and the watch list (supervisors).

Guards see ID and phone numbers masked; a supervisor's "show" is a POST that is audited
(gateway.records.visits.reveal). A watch-listed ID number refuses the visit and raises the top-priority
alarm, published like the alarm board's own changes. The records side is gateway.records.visits and
gateway.records.watchlist.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import segno
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from gateway import topics
from gateway.console.auth import LoggedIn
from gateway.console.web import Console, console, render, require, served_file, tr
from gateway.personal import PersonalData
from gateway.records import guardians, people, store, visits, watchlist
from gateway.records.models import Alarm, Visit, utcnow
from gateway.records.visits import VisitError

router = APIRouter()
DURATIONS = (30, 60, 120, 240, 480)  # minutes offered in the form; 60 is the default
FIELDS = ("name", "id_type", "id_number", "phone", "host", "purpose", "expected_minutes")
RECENT_DAYS = 7  # walk-outs without check-out listed this far back


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _personal(request: Request) -> PersonalData:
    personal = console(request).personal
    if personal is None:
        raise HTTPException(503, tr(request, "Visitor registration is not set up: the personal data key is missing."))
    return personal


def _error(request: Request, exc: VisitError) -> str:
    params = {k: tr(request, str(v)) if k == "state" else v for k, v in exc.params.items()}  # a state is a msgid
    return tr(request, exc.message).format(**params)


def visit_view(visit: Visit, ctx: Console, now: datetime) -> dict[str, Any]:
    """A visit as guards see it: numbers masked, times in the site's zone, overstay worked out."""
    start = visit.checked_in_at or visit.registered_at
    expected_out = start + timedelta(minutes=visit.expected_minutes)
    return {"id": visit.id, "name": visit.name, "id_type": visit.id_type, "id_number": visit.id_number_masked,
            "phone": visit.phone_masked, "host_id": visit.host_id, "host": visit.host_name, "purpose": visit.purpose,
            "expected_minutes": visit.expected_minutes, "state": visit.state,
            "registered_at": visit.registered_at.isoformat(), "registered_by": visit.registered_by,
            "valid_until": visit.valid_until.isoformat(),
            "checked_in_at": visit.checked_in_at.isoformat() if visit.checked_in_at else None,
            "checked_out_at": visit.checked_out_at.isoformat() if visit.checked_out_at else None,
            "checked_out_by": visit.checked_out_by, "expected_out": expected_out.isoformat(),
            "overstay": visit.state == "on_site" and now > expected_out,
            "pass_expired": visit.state in ("registered", "approved") and now >= visit.valid_until,
            "purged": visit.purged_at is not None, "photo": visit.photo_ref is not None}


def host_labels(session: Session) -> dict[str, int]:
    """'Wang Fang (Maths)' -> person id, for the host field's suggestions; same names get their staff number."""
    staff = people.hosts(session)
    plain = [p.name + (f" ({p.group_name})" if p.group_name else "") for p in staff]
    labels: dict[str, int] = {}
    for person, label in zip(staff, plain, strict=True):
        if plain.count(label) > 1:
            label += f" · {person.external_id or person.id}"
        labels[label] = person.id
    return labels


def resolve_host(session: Session, text: str) -> int | None:
    """The host as typed: a suggestion, a full name, or a part of one name (unique)."""
    text = " ".join(text.split())
    if not text:
        return None
    labels = host_labels(session)
    if text in labels:
        return labels[text]
    staff = people.hosts(session)
    for match in ([p for p in staff if p.name == text], [p for p in staff if text.lower() in p.name.lower()]):
        if len(match) == 1:
            return match[0].id
        if match:
            return None
    return None


def publish(request: Request, alarm_ids: list[int], visit_ids: list[int]) -> None:
    """After the commit: changed alarms to the board (as the rules service does) and visits for other consumers."""
    ctx = console(request)
    now = utcnow()
    with ctx.sessions() as session:
        alarms = [a for a in (session.get(Alarm, i) for i in dict.fromkeys(alarm_ids)) if a is not None]
        for view in store.alarm_views(session, alarms):
            ctx.bus.publish_json(topics.alarm(ctx.site, view["id"]), view)
        for visit_id in visit_ids:
            visit = session.get(Visit, visit_id)
            if visit is not None:
                ctx.bus.publish_json(topics.visit(ctx.site, visit.id), visit_view(visit, ctx, now))


def page_data(request: Request) -> dict[str, Any]:
    ctx = console(request)
    now = utcnow()
    with ctx.sessions() as session:
        current = [visit_view(v, ctx, now) for v in visits.current_visits(session)]
        walked = [visit_view(v, ctx, now) for v in visits.recent_visits(
            session, now - timedelta(days=RECENT_DAYS), ["no_checkout"])]
        hosts = list(host_labels(session))
    order = {"on_site": 0, "awaiting_approval": 1, "approved": 2, "registered": 2}
    current.sort(key=lambda v: (not v["overstay"], order.get(v["state"], 3), v["registered_at"]))
    return {"visits": current, "walked_out": walked, "hosts": hosts, "durations": DURATIONS,
            "id_types": visits.ID_TYPES, "approval": ctx.access.visitor_approval,
            "on_site": sum(1 for v in current if v["state"] == "on_site")}


def _page(request: Request, user: LoggedIn, status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("form", {"id_type": "resident_id", "expected_minutes": "60"})
    values.setdefault("errors", {})
    if values.pop("scan_focus", False):
        values["focus"] = "scan"
    else:  # the field to correct, else the first field for the next visitor
        values["focus"] = next((f for f in FIELDS if f in values["errors"]), "name")
    return render(request, "visitors.html", status, csrf=user.csrf, **page_data(request), **values)


# -- pages ------------------------------------------------------------------------------------------


MESSAGES: dict[str, Callable[[Request], str]] = {
    "checked_out": lambda request: tr(request, "Checked out:"),
    "checked_in": lambda request: tr(request, "Checked in:"),
    "declined": lambda request: tr(request, "Visit declined:"),
}


@router.get("/visitors", response_class=HTMLResponse)
async def visitors_page(request: Request, done: str | None = None, visit: int | None = None,
                        user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    notice = None
    if done in MESSAGES and visit is not None:
        with console(request).sessions() as session:
            row = session.get(Visit, visit)
        if row is not None:
            notice = f"{MESSAGES[done](request)} {row.name}"
    return _page(request, user, notice=notice, scan_focus=done == "checked_out")


@router.post("/visitors", response_model=None)
async def register_form(request: Request,
                        user: LoggedIn = Depends(require("visitor.register"))) -> Response:  # noqa: B008
    """The registration form (a browser's POST); the pass page follows."""
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in FIELDS}
    try:
        minutes = int(values["expected_minutes"] or 0)
    except ValueError:
        minutes = 0
    try:
        visit_id, alarms = _register(request, user, values, minutes)
    except VisitError as exc:
        return _page(request, user, 422, form=values, errors={exc.field or "form": _error(request, exc)})
    publish(request, alarms, [visit_id])
    return RedirectResponse(f"/visitors/{visit_id}/pass", 303)


def _register(request: Request, user: LoggedIn, values: dict[str, str], minutes: int,
              host_id: int | None = None) -> tuple[int, list[int]]:
    ctx = console(request)
    personal = _personal(request)
    now = utcnow()
    with ctx.sessions.begin() as session:  # a VisitError rolls everything back
        if host_id is None:
            host_id = resolve_host(session, values["host"])
        if host_id is None:
            raise VisitError("choose the host from the staff list", "host")
        registration = visits.register_visit(
            session, personal, name=values["name"], id_type=values["id_type"], id_number=values["id_number"],
            phone=values["phone"] or None, host_id=host_id, purpose=values["purpose"], expected_minutes=minutes,
            now=now, registered_by=user.username, approval_needed=ctx.access.visitor_approval,
            pass_margin_min=ctx.access.visitor_pass_margin_min, client=_client(request))
        alarms = visits.raise_watchlist_alarm(session, registration.visit, now) if registration.watchlisted else []
        if ctx.access.visitor_camera and ctx.snapshot_dir is not None:
            visits.keep_photo(session, ctx.snapshot_dir, ctx.access.visitor_camera, registration.visit.id)
        return registration.visit.id, alarms


@router.get("/visitors/{visit_id}/photo.jpg")
async def photo(visit_id: int, request: Request,
                user: LoggedIn = Depends(require("view"))) -> FileResponse:  # noqa: B008
    """The visitor's photo from the gate camera at registration (until the personal data is purged)."""
    ctx = console(request)
    with ctx.sessions() as session:
        visit = session.get(Visit, visit_id)
    if visit is None or visit.photo_ref is None or ctx.snapshot_dir is None:
        raise HTTPException(404, tr(request, "There is no photo of this visitor."))
    path = served_file(ctx.snapshot_dir, visits.photo_path(ctx.snapshot_dir, visit_id))
    if path is None:
        raise HTTPException(404, tr(request, "There is no photo of this visitor."))
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get("/visitors/{visit_id}/pass", response_class=HTMLResponse)
async def pass_page(visit_id: int, request: Request,
                    user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    """The pass to print on a label (62 mm), or why there is none (refused, waiting for approval, over)."""
    ctx = console(request)
    with ctx.sessions() as session:
        visit = session.get(Visit, visit_id)
        if visit is None:
            raise HTTPException(404, tr(request, "There is no such visit."))
        token = visits.pass_token(session, visit_id)
        view = visit_view(visit, ctx, utcnow())
    qr = None
    if token is not None and visit.state in ("registered", "approved", "on_site"):
        # The token alone: a scanner in keyboard mode types it into a reader or the desk's check-out field.
        code = segno.make(token, error="m")
        qr = Markup(code.svg_inline(border=2, omitsize=True, svgclass="qr", title=tr(request, "Visitor pass")))
    return render(request, "visitor_pass.html", visit=view, qr=qr, csrf=user.csrf)


@router.post("/visitors/checkout", response_model=None)
async def checkout_scan_form(request: Request,
                             user: LoggedIn = Depends(require("visitor.register"))) -> Response:  # noqa: B008
    """The desk's scanner field: a pass scanned (the token and Enter) checks its visitor out."""
    token = str((await request.form()).get("token") or "").strip()
    try:
        visit_id = _checkout_by_token(request, user, token)
    except VisitError as exc:
        return _page(request, user, 409, scan_error=_error(request, exc), scan_focus=True)
    publish(request, [], [visit_id])
    return RedirectResponse(f"/visitors?done=checked_out&visit={visit_id}", 303)


def _checkout_by_token(request: Request, user: LoggedIn, token: str) -> int:
    with console(request).sessions.begin() as session:
        return visits.check_out_by_pass(session, token, user.username, utcnow(), _client(request)).id


Action = Literal["checkin", "checkout", "approve", "decline"]
ACTIONS: tuple[Action, ...] = ("checkin", "checkout", "approve", "decline")


def _act(request: Request, user: LoggedIn, visit_id: int, action: Action) -> tuple[Visit, list[int]]:
    ctx = console(request)
    now, client = utcnow(), _client(request)
    with ctx.sessions.begin() as session:
        alarms: list[int] = []
        if action == "checkin":
            visit, alarms = visits.check_in(session, visit_id, user.username, now, client)
        elif action == "checkout":
            visit = visits.check_out(session, visit_id, user.username, now, client)
        elif action == "approve":
            visits.approve_visit(session, visit_id, user.username, now,
                                 pass_margin_min=ctx.access.visitor_pass_margin_min, client=client)
            visit = session.get_one(Visit, visit_id)
        else:
            visit = visits.decline_visit(session, visit_id, user.username, now, client)
        return visit, alarms


def _form_route(action: Action) -> None:
    async def endpoint(visit_id: int, request: Request,
                       user: LoggedIn = Depends(require("visitor.register"))) -> Response:  # noqa: B008
        try:
            visit, alarms = _act(request, user, visit_id, action)
        except VisitError as exc:
            return _page(request, user, 409, notice_error=_error(request, exc))
        publish(request, alarms, [visit_id])
        if action == "approve" or (visit.state == "refused" and action == "checkin"):
            return RedirectResponse(f"/visitors/{visit_id}/pass", 303)
        done = {"checkin": "checked_in", "checkout": "checked_out", "decline": "declined"}[action]
        return RedirectResponse(f"/visitors?done={done}&visit={visit_id}", 303)

    endpoint.__name__ = f"visit_{action}_form"
    router.post(f"/visitors/{{visit_id}}/{action}", response_model=None)(endpoint)


for _action in ACTIONS:
    _form_route(_action)


# -- watch list (supervisors) ---------------------------------------------------------------------


def _watch_page(request: Request, user: LoggedIn, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = console(request)
    with ctx.sessions() as session:
        entries = [_entry_view(e) for e in watchlist.watch_entries(session, include_inactive=True)]
    values.setdefault("form", {})
    values.setdefault("errors", {})
    return render(request, "watchlist.html", status, entries=entries, csrf=user.csrf, **values)


def _entry_view(entry: Any) -> dict[str, Any]:
    return {"id": entry.id, "name": entry.name, "id_number": entry.id_number_masked, "reason": entry.reason,
            "added_by": entry.added_by, "added_at": entry.added_at.isoformat(), "active": entry.active}


@router.get("/visitors/watchlist", response_class=HTMLResponse)
async def watchlist_page(request: Request,
                         user: LoggedIn = Depends(require("watchlist.manage"))) -> HTMLResponse:  # noqa: B008
    return _watch_page(request, user)


def _add_watch(request: Request, user: LoggedIn, id_number: str, name: str, reason: str) -> tuple[int, list[int]]:
    ctx = console(request)
    personal = _personal(request)
    now = utcnow()
    with ctx.sessions.begin() as session:
        entry, current = watchlist.add_watch_entry(session, personal, id_number=id_number, name=name, reason=reason,
                                                actor=user.username, now=now, client=_client(request))
        alarms: list[int] = []
        for visit in current:  # here now, or expected (their pass is already refused): tell the guard
            alarms += visits.raise_watchlist_alarm(session, visit, now, "just added to the watch list")
        return entry.id, alarms


@router.post("/visitors/watchlist", response_model=None)
async def watchlist_add_form(request: Request,
                             user: LoggedIn = Depends(require("watchlist.manage"))) -> Response:  # noqa: B008
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("id_number", "name", "reason")}
    try:
        _, alarms = _add_watch(request, user, values["id_number"], values["name"], values["reason"])
    except VisitError as exc:
        return _watch_page(request, user, 422, form=values, errors={exc.field or "form": _error(request, exc)})
    publish(request, alarms, [])
    return RedirectResponse("/visitors/watchlist", 303)


@router.post("/visitors/watchlist/{entry_id}/deactivate", response_model=None)
async def watchlist_deactivate_form(entry_id: int, request: Request,
                                    user: LoggedIn = Depends(require("watchlist.manage"))) -> Response:  # noqa: B008
    try:
        with console(request).sessions.begin() as session:
            watchlist.deactivate_watch_entry(session, entry_id, user.username, utcnow(), _client(request))
    except VisitError as exc:
        return _watch_page(request, user, 409, errors={"form": _error(request, exc)})
    return RedirectResponse("/visitors/watchlist", 303)


# -- JSON API ------------------------------------------------------------------------------------------


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    id_type: Literal["resident_id", "passport", "other"] = "resident_id"
    id_number: str = Field(max_length=64)
    phone: str | None = Field(default=None, max_length=32)
    host_id: int
    purpose: str = Field(max_length=400)
    expected_minutes: int = 60


class RevealBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: Literal["id_number", "phone"]


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=128)


class WatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_number: str = Field(max_length=64)
    name: str = Field(max_length=200)
    reason: str = Field(max_length=2000)


def _one(request: Request, visit_id: int) -> dict[str, Any]:
    ctx = console(request)
    with ctx.sessions() as session:
        visit = session.get(Visit, visit_id)
        if visit is None:
            raise HTTPException(404, tr(request, "There is no such visit."))
        return visit_view(visit, ctx, utcnow())


@router.get("/api/visitors")
async def visitors_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Visits going on now (waiting for approval, expected, on site), ID and phone numbers masked."""
    return list(page_data(request)["visits"])


@router.get("/api/visitors/hosts")
async def hosts_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Staff who may receive visitors: id and the label the form suggests."""
    with console(request).sessions() as session:
        return [{"id": i, "label": label} for label, i in host_labels(session).items()]


@router.post("/api/visitors", status_code=201)
async def register_api(body: RegisterBody, request: Request,
                       user: LoggedIn = Depends(require("visitor.register"))) -> dict[str, Any]:  # noqa: B008
    """Register a visitor; returns the visit (masked), its pass token (the QR payload) and whether the watch
    list refused it (then an alarm is raised and there is no pass)."""
    values = body.model_dump()
    values.update(phone=body.phone or "", host="")
    try:
        visit_id, alarms = _register(request, user, {k: str(v) for k, v in values.items()}, body.expected_minutes,
                                     host_id=body.host_id)
    except VisitError as exc:
        raise HTTPException(422, _error(request, exc)) from None
    publish(request, alarms, [visit_id])
    with console(request).sessions() as session:
        token = visits.pass_token(session, visit_id)
    view = _one(request, visit_id)
    return {"visit": view, "pass": token, "watchlisted": view["state"] == "refused", "alarms": alarms}


@router.get("/api/visitors/{visit_id}")
async def visit_api(visit_id: int, request: Request,
                    user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    return _one(request, visit_id)


@router.post("/api/visitors/{visit_id}/reveal")
async def reveal_api(visit_id: int, body: RevealBody, request: Request,
                     user: LoggedIn = Depends(require("personal_data.full"))) -> dict[str, Any]:  # noqa: B008
    """The full ID or phone number (supervisor and up); every view is written to the audit log."""
    ctx = console(request)
    personal = _personal(request)
    try:
        with ctx.sessions.begin() as session:
            value = visits.reveal(session, personal, visit_id, body.field, user.username, utcnow(), _client(request))
    except VisitError as exc:
        raise HTTPException(404 if exc.message == "there is no such visit" else 409, _error(request, exc)) from None
    return {"visit_id": visit_id, "field": body.field, "value": value}


@router.post("/api/visitors/checkout")
async def checkout_scan_api(body: TokenBody, request: Request,
                            user: LoggedIn = Depends(require("visitor.register"))) -> dict[str, Any]:  # noqa: B008
    """Check out the visitor whose pass was scanned at the desk."""
    try:
        visit_id = _checkout_by_token(request, user, body.token)
    except VisitError as exc:
        raise HTTPException(409, _error(request, exc)) from None
    publish(request, [], [visit_id])
    return _one(request, visit_id)


def _api_route(action: Action) -> None:
    async def endpoint(visit_id: int, request: Request,
                       user: LoggedIn = Depends(require("visitor.register"))) -> dict[str, Any]:  # noqa: B008
        try:
            _, alarms = _act(request, user, visit_id, action)
        except VisitError as exc:
            raise HTTPException(404 if exc.message == "there is no such visit" else 409,
                                _error(request, exc)) from None
        publish(request, alarms, [visit_id])
        return _one(request, visit_id)

    endpoint.__name__ = f"visit_{action}"
    endpoint.__doc__ = {"checkin": "Let a registered visitor in by hand (the watch list is checked again).",
                        "checkout": "Check a visitor out at the desk; the pass is revoked.",
                        "approve": "The host approved the visit: the pass is made.",
                        "decline": "The host declined the visit."}[action]
    router.post(f"/api/visitors/{{visit_id}}/{action}")(endpoint)


for _action in ACTIONS:
    _api_route(_action)


@router.get("/api/watchlist")
async def watchlist_api(request: Request,
                        user: LoggedIn = Depends(require("watchlist.manage"))) -> list[dict[str, Any]]:  # noqa: B008
    """The watch list, ID numbers masked (supervisor and up)."""
    with console(request).sessions() as session:
        return [_entry_view(e) for e in watchlist.watch_entries(session, include_inactive=True)]


@router.post("/api/watchlist", status_code=201)
async def watchlist_add_api(body: WatchBody, request: Request,
                            user: LoggedIn = Depends(require("watchlist.manage"))) -> dict[str, Any]:  # noqa: B008
    """Add a high-risk person by ID number; a visit of theirs going on now is refused and alarmed."""
    try:
        entry_id, alarms = _add_watch(request, user, body.id_number, body.name, body.reason)
    except VisitError as exc:
        raise HTTPException(422, _error(request, exc)) from None
    publish(request, alarms, [])
    return {"id": entry_id, "alarms": alarms}


@router.post("/api/watchlist/{entry_id}/deactivate")
async def watchlist_deactivate_api(entry_id: int, request: Request,
                                   user: LoggedIn = Depends(require("watchlist.manage"))) -> dict[str, Any]:  # noqa: B008
    try:
        with console(request).sessions.begin() as session:
            entry = watchlist.deactivate_watch_entry(session, entry_id, user.username, utcnow(), _client(request))
            return _entry_view(entry)
    except VisitError as exc:
        raise HTTPException(409, _error(request, exc)) from None



# -- collecting a child at dismissal (接送, R42) ------------------------------------------------------------


def _pickup_page(request: Request, user: LoggedIn, status: int = 200, check: Any = None,
                 error: str | None = None, form: dict[str, str] | None = None) -> HTMLResponse:
    ctx = console(request)
    now = utcnow()
    start = now.astimezone(ctx.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    with ctx.sessions() as session:
        today = [{"at": p.at.isoformat(), "student": f"{s.name} ({s.group_name or '-'})", "collector": p.collector,
                  "authorised": p.authorised, "by": p.by} for p, s in guardians.pickups_since(session, start)]
    return render(request, "pickup.html", status, csrf=user.csrf, check=check, error=error, form=form or {},
                  today=today, relations=guardians.RELATIONS)


@router.get("/visitors/pickup", response_class=HTMLResponse)
async def pickup_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _pickup_page(request, user)


@router.post("/visitors/pickup", response_model=None)
async def pickup_form(request: Request,
                      user: LoggedIn = Depends(require("visitor.register"))) -> Response:  # noqa: B008
    """Who collects a child at the gate desk: authorised or not, recorded either way with the guard."""
    form = await request.form()
    values = {k: str(form.get(k) or "").strip()[:100] for k in ("student", "collector")}
    try:
        with console(request).sessions.begin() as session:
            check = guardians.check_pickup(session, values["student"], values["collector"], user.username, utcnow(),
                                           _client(request))
    except guardians.PickupError as exc:
        return _pickup_page(request, user, 422, error=tr(request, exc.message).format(**exc.params), form=values)
    return _pickup_page(request, user, check=check, form={"student": values["student"]})
