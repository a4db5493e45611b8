"""The site plan: each plan (the site, or a floor) with its devices where they are, live; an alarm blinks at its
device and opens its page. An admin uploads plans and places devices by dragging them; the placement exports
as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require, tr
from gateway.records import plans
from gateway.records.models import Device, SitePlan, utcnow

router = APIRouter()


def page_data(request: Request) -> dict[str, Any]:
    with console(request).sessions() as session:
        devices = [{"id": d.id, "name": d.name or d.id, "kind": d.kind, "zone": d.zone, "online": d.online}
                   for d in session.scalars(select(Device).order_by(Device.id))]
        return {"plans": plans.plans(session), "devices": devices}


@router.get("/plan", response_class=HTMLResponse)
async def plan_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return render(request, "plan.html", **page_data(request), csrf=user.csrf, error=None)


@router.post("/plan", response_model=None)
async def upload(request: Request, name: str = Form(max_length=100), image: UploadFile = File(),  # noqa: B008
                 user: LoggedIn = Depends(require("config.manage"))) -> Response:  # noqa: B008
    data = await image.read(plans.MAX_IMAGE + 1)
    try:
        with console(request).sessions.begin() as session:
            plan = plans.add_plan(session, name, data, user.username, utcnow())
            plan_id = plan.id
    except plans.PlanError as exc:
        return render(request, "plan.html", 422, **page_data(request), csrf=user.csrf, error=said(request, exc))
    return RedirectResponse(f"/plan?show={plan_id}", 303)


@router.get("/plans/{plan_id}/image")
async def plan_image(plan_id: int, request: Request, user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    with console(request).sessions() as session:
        plan = session.get(SitePlan, plan_id)
        if plan is None:
            raise HTTPException(404, tr(request, "There is no such plan."))
        return Response(plan.image, media_type=plan.media_type, headers={"Cache-Control": "private, max-age=300"})


@router.get("/api/plans")
async def plans_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Every plan with its devices' places (fractions of the image's width and height): the export."""
    with console(request).sessions() as session:
        return plans.plans(session)


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(min_length=1, max_length=64)
    x: float = Field(ge=0, le=1)
    y: float = Field(ge=0, le=1)


@router.post("/api/plans/{plan_id}/devices")
async def place_device(plan_id: int, body: Place, request: Request,
                       user: LoggedIn = Depends(require("config.manage"))) -> dict[str, Any]:  # noqa: B008
    """Put a device on a plan (moving it from where it was); audited."""
    try:
        with console(request).sessions.begin() as session:
            plans.place(session, plan_id, body.device_id, body.x, body.y, user.username, utcnow())
    except plans.PlanError as exc:
        raise HTTPException(404 if "no such" in exc.message else 422, said(request, exc)) from None
    return {"plan_id": plan_id, "device_id": body.device_id, "x": body.x, "y": body.y}


@router.delete("/api/plans/devices/{device_id}")
async def unplace_device(device_id: str, request: Request,
                         user: LoggedIn = Depends(require("config.manage"))) -> dict[str, Any]:  # noqa: B008
    with console(request).sessions.begin() as session:
        plans.unplace(session, device_id, user.username, utcnow())
    return {"device_id": device_id}


@router.post("/plans/{plan_id}/delete", response_model=None)
async def delete_plan(plan_id: int, request: Request,
                      user: LoggedIn = Depends(require("config.manage"))) -> Response:  # noqa: B008
    try:
        with console(request).sessions.begin() as session:
            plans.delete_plan(session, plan_id, user.username, utcnow())
    except plans.PlanError as exc:
        raise HTTPException(404, said(request, exc)) from None
    return RedirectResponse("/plan", 303)


def said(request: Request, exc: plans.PlanError) -> str:
    return tr(request, exc.message).format(**exc.params)
