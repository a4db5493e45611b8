"""The Devices page: every device, offline ones first, with last seen and test mode; and every relay of the
output modules, on or off as the module has it (their retained state)."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from gateway import topics
from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require
from gateway.records.models import Device

router = APIRouter()


class OutputStates:
    """The relay modules' retained states: {device: {relay: on}} and each relay's role. A state that is not
    what the driver publishes is ignored: it cannot break the page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.relays: dict[str, dict[str, bool]] = {}
        self.roles: dict[str, dict[str, str]] = {}

    def on_state(self, message: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        try:
            state = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(parsed, topics.StateTopic) or not isinstance(state, dict):
            return
        relays, roles = state.get("relays"), state.get("roles") or {}
        if not isinstance(relays, dict) or not isinstance(roles, dict):
            return
        with self._lock:
            self.relays[parsed.device] = {str(k): v is True for k, v in relays.items()}
            self.roles[parsed.device] = {str(k): str(v) for k, v in roles.items()}

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"device": device, "relay": relay, "on": on, "role": self.roles.get(device, {}).get(relay, "")}
                    for device, relays in sorted(self.relays.items()) for relay, on in relays.items()]


def attach(app: Any) -> None:
    ctx = app.state.console
    app.state.output_states = OutputStates()
    ctx.bus.subscribe(topics.states_filter(ctx.site, "output"), app.state.output_states.on_state)


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
    return render(request, "devices.html", devices=device_rows(request), outputs=request.app.state.output_states.rows())


@router.get("/api/devices")
async def devices_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Every device with its status, offline ones first."""
    return device_rows(request)
