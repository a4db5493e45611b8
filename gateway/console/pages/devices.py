"""The Devices page: every device, offline ones first, with last seen and test mode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require
from gateway.records.models import Device

router = APIRouter()


def device_rows(request: Request) -> list[dict[str, Any]]:
    ctx = console(request)
    with ctx.sessions() as session:
        devices = session.scalars(select(Device)).all()
    # Offline first (the ones to act on), then never heard of, then online; by id within each.
    order = {False: 0, None: 1, True: 2}
    return [{"id": d.id, "kind": d.kind, "name": d.name, "zone": d.zone, "online": d.online,
             "last_seen": d.last_seen.isoformat() if d.last_seen else None,
             "status_changed": d.status_changed.isoformat() if d.status_changed else None,
             "offline_reason": d.offline_reason, "test_mode": d.test_mode}
            for d in sorted(devices, key=lambda d: (order[d.online], d.id))]


@router.get("/devices", response_class=HTMLResponse)
async def devices_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return render(request, "devices.html", devices=device_rows(request))


@router.get("/api/devices")
async def devices_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Every device with its status, offline ones first."""
    return device_rows(request)
