"""The guard console (minimal for now): open alarms, live over SSE, with acknowledge.

The console learns of alarm changes from MQTT (campus/v1/<site>/rules/alarms/+),
so it can run in another process than the rules service. Each browser gets a
snapshot from the database on connect, then every change as it happens.
Login, roles and the other pages come with the console issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from gateway.bus import Bus
from gateway.events import rules_topic
from gateway.records import store
from gateway.records.models import utcnow
from gateway.rules.alarms import RefusedAction

log = logging.getLogger("campusgw.console")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PING_S = 15.0  # keeps proxies from closing an idle stream, and lets the page notice a dead one


class Broadcaster:
    """Fans alarm changes out to every connected browser; safe to feed from paho's thread."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
        self._queues.add(queue)
        return queue

    def close(self) -> None:
        """End every stream (shutdown): browsers reconnect by themselves when the gateway is back."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(queue)

    def publish(self, alarm: dict[str, Any]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._fan_out, alarm)

    def _fan_out(self, alarm: dict[str, Any]) -> None:
        for queue in list(self._queues):
            if queue.full():  # a stalled browser: drop it; it reconnects and gets a fresh snapshot
                self._queues.discard(queue)
                continue
            queue.put_nowait(alarm)


def create_app(site: str, site_name: str, tz: ZoneInfo, sessions: sessionmaker[Session], bus: Bus) -> FastAPI:
    app = FastAPI(title="campusgw console", docs_url=None, redoc_url=None, openapi_url=None)
    broadcaster = Broadcaster()
    app.state.broadcaster = broadcaster

    def on_alarm(message: mqtt.MQTTMessage) -> None:
        try:
            broadcaster.publish(json.loads(message.payload))
        except ValueError:
            log.warning("ignored a malformed alarm update on %s", message.topic)

    bus.subscribe(rules_topic(site, "alarms", "+"), on_alarm)

    def local(ts: str | None) -> str:
        return datetime.fromisoformat(ts).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if ts else ""

    @app.get("/", response_class=HTMLResponse)
    async def alarms_page(request: Request) -> HTMLResponse:
        with sessions() as session:
            alarms = store.open_alarm_views(session)
        return TEMPLATES.TemplateResponse(request, "alarms.html", {
            "site_name": site_name, "alarms": alarms, "local": local, "tz": str(tz)})

    @app.get("/api/alarms")
    async def open_alarms() -> JSONResponse:
        with sessions() as session:
            return JSONResponse(store.open_alarm_views(session))

    @app.get("/api/alarms/stream")
    async def alarm_stream(request: Request) -> StreamingResponse:
        broadcaster.bind(asyncio.get_running_loop())
        queue = broadcaster.subscribe()  # before the snapshot, so nothing falls between the two

        async def events() -> AsyncIterator[str]:
            try:
                with sessions() as session:
                    snapshot = store.open_alarm_views(session)
                yield f"retry: 2000\nevent: snapshot\ndata: {json.dumps(snapshot, ensure_ascii=False)}\n\n"
                while True:
                    try:
                        alarm = await asyncio.wait_for(queue.get(), PING_S)
                    except TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if alarm is None:
                        return
                    yield f"event: alarm\ndata: {json.dumps(alarm, ensure_ascii=False)}\n\n"
            finally:
                broadcaster.unsubscribe(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/api/alarms/{alarm_id}/ack")
    async def acknowledge(alarm_id: int, request: Request) -> JSONResponse:
        client = request.client.host if request.client else None
        with sessions.begin() as session:
            try:
                alarm = store.operator_action(session, alarm_id, "ack", "console", utcnow(), client=client)
            except RefusedAction as exc:  # caught inside the transaction so the refusal's audit entry commits
                refused = str(exc)
            else:
                refused, view = "", store.alarm_view(alarm)
        if refused:
            raise HTTPException(409, refused)
        bus.publish_json(rules_topic(site, "alarms", str(alarm_id)), view)
        return JSONResponse(view)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "broker": bus.connected.is_set()}

    return app
