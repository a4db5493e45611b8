"""The bollard panel: each bollard's state and loops, and commands with a confirmation step.

States come from the drivers' retained state topics; commands go to the driver over MQTT with
who issued them, and every command (accepted, refused or unanswered) is audited.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Literal

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select

from gateway import topics
from gateway.commands import CommandClient, CommandTimeout
from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require, tr
from gateway.records import store
from gateway.records.models import Device, utcnow

log = logging.getLogger("campusgw.console")
router = APIRouter()
Command = Literal["raise", "lower", "efo", "reset"]
# EFO (emergency fast raise) is for whoever sees the threat; lowering and clearing a fault are supervisors'.
PERMISSION = {"raise": "bollard.raise", "efo": "bollard.raise", "lower": "bollard.lower", "reset": "bollard.reset"}
COMMAND_TIMEOUT_S = 10.0


class LastCommand(BaseModel):
    command: str
    issued_by: str
    accepted: bool
    reason: str
    at: float


class BollardState(BaseModel):
    """What the panel shows of a bollard driver's retained state (drivers.bollard.driver); other keys are dropped."""

    state: Literal["lowered", "raising", "raised", "lowering", "fault", "efo", "unknown"]
    reason: str | None = None
    online: bool | None = None
    vehicle_present: list[bool] | None = None
    limits: dict[str, bool | None] | None = None
    fault: str | bool | None = None
    efo: bool | None = None
    fire: bool | None = None
    raise_blocked: str | None = None
    last_command: LastCommand | None = None


class States:
    """The latest retained state of every bollard, as the drivers publish it. A state that is not what a
    driver publishes (not an object, a wrong type) is ignored and counted: it cannot break the pages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_device: dict[str, dict[str, Any]] = {}
        self.rejected = 0

    def on_state(self, message: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        if not isinstance(parsed, topics.StateTopic):  # the subscription lets only states through
            return
        device = parsed.device
        try:
            state = BollardState.model_validate_json(message.payload).model_dump(exclude_unset=True)
        except ValidationError as exc:
            self.rejected += 1
            if self.rejected % 1000 == 1:  # the first, then every 1000th: a flood does not flood the log
                first = exc.errors()[0]
                log.warning("ignored a bollard state that is not what a driver publishes on %s (%d so far): %s: %s",
                            message.topic, self.rejected, ".".join(map(str, first["loc"])) or "the message",
                            first["msg"])
            return
        with self._lock:
            self.by_device[device] = state

    def get(self, device: str) -> dict[str, Any] | None:
        with self._lock:
            return self.by_device.get(device)


def attach(app: Any) -> None:
    ctx = app.state.console
    states = States()
    app.state.bollard_states = states
    app.state.commands = CommandClient(ctx.bus, ctx.site, ctx.command_key)
    ctx.bus.subscribe(topics.states_filter(ctx.site, "bollard"), states.on_state)


def bollards(request: Request) -> list[dict[str, Any]]:
    ctx = console(request)
    states: States = request.app.state.bollard_states
    with ctx.sessions() as session:
        devices = session.scalars(select(Device).where(Device.kind == "bollard").order_by(Device.id)).all()
    return [{"id": d.id, "name": d.name, "zone": d.zone, "online": d.online, **(states.get(d.id) or {}),
             "device_online": d.online} for d in devices]


@router.get("/bollards", response_class=HTMLResponse)
async def bollards_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return render(request, "bollards.html", bollards=bollards(request), csrf=user.csrf)


@router.get("/api/bollards")
async def bollards_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Every bollard with its last reported state (position, loops, limits, fault, last command and who)."""
    return bollards(request)


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: bool = False  # the confirmation step: a command is sent only when the person confirmed it


async def command(request: Request, device: str, name: Command, user: LoggedIn, body: CommandBody) -> dict[str, Any]:
    ctx = console(request)
    if not body.confirm:
        raise HTTPException(422, tr(request, "Confirm the command first."))
    with ctx.sessions() as session:
        known = session.get(Device, device)
    if known is None or known.kind != "bollard":
        raise HTTPException(404, tr(request, "There is no such bollard."))
    client = request.client.host if request.client else None
    commands: CommandClient = request.app.state.commands
    try:
        result = await asyncio.to_thread(commands.send, "bollard", device, name, {}, issued_by=user.username,
                                         timeout=COMMAND_TIMEOUT_S)
    except CommandTimeout as exc:
        result = {"status": "error", "detail": str(exc)}
    ok = result.get("status") == "ok"
    with ctx.sessions.begin() as session:
        store.audit(session, user.username, f"bollard.{name}", f"bollard:{device}", "ok" if ok else "refused",
                    {"detail": result.get("detail")}, utcnow(), client)
    if not ok:
        raise HTTPException(409, str(result.get("detail") or tr(request, "The bollard refused the command.")))
    return {"device": device, "command": name, "detail": result.get("detail"), "state": result.get("data")}


def _route(name: Command) -> None:
    async def endpoint(device: str, request: Request, body: CommandBody | None = None,
                       user: LoggedIn = Depends(require(PERMISSION[name]))) -> dict[str, Any]:  # noqa: B008
        return await command(request, device, name, user, body or CommandBody())

    endpoint.__name__ = f"bollard_{name}"
    endpoint.__doc__ = {"raise": "Raise a bollard (guard and up); refused while a vehicle is on a loop.",
                        "efo": "Emergency fast raise (guard and up); refused while a vehicle is on a loop.",
                        "lower": "Lower a bollard (supervisor and up).",
                        "reset": "Clear a bollard's fault or EFO state (supervisor and up)."}[name]
    router.post(f"/api/bollards/{{device}}/{name}")(endpoint)


for _name in ("raise", "lower", "efo", "reset"):
    _route(_name)
