"""The live alarm board: open alarms by priority then time, pushed over SSE, with ack, note, reset and close.

Alarm changes are announced on MQTT (campus/v1/<site>/rules/alarms/<id>), so the console
can run apart from the rules service; each browser gets a snapshot from the
database on connect, then every change. What is relayed is the alarm as the
database holds it, never the message: a forged message can neither break the
boards nor hide or change a real alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import topics
from gateway.catalogue import ALARMS
from gateway.console import auth, speech
from gateway.console.auth import LoggedIn
from gateway.console.web import (
    PING_S,
    attempt,
    console,
    language_of,
    refuse,
    render,
    require,
    said,
    served_file,
    tr,
)
from gateway.records import lockdowns, notices, roster, store
from gateway.records.models import Alarm, AlarmAttachment, AlarmTransition, Device, utcnow
from gateway.rules.alarms import RefusedAction, note_long_enough

log = logging.getLogger("campusgw.console")
router = APIRouter()
Action = Literal["ack", "reset", "close", "note"]
PERMISSION = {"ack": "alarm.ack", "note": "alarm.note", "reset": "alarm.reset", "close": "alarm.close"}
# Reset and close are open to a guard for the site's guards_finish types (checked in act), so the route asks less.
ROUTE_PERMISSION = {**PERMISSION, "reset": "alarm.ack", "close": "alarm.ack"}
GUARD_NOTE = "A guard who resets or closes an alarm writes what was found (at least 6 characters)."
ALARM_ID = re.compile(r"[1-9][0-9]{0,17}")  # below 2**63, what the database can hold


class Broadcaster:
    """Fans alarm changes out to every connected browser; safe to feed from paho's thread."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ignored = 0  # alarm updates naming no alarm in the database (forged, or not ours)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1000)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._queues.discard(queue)

    def publish(self, data: dict[str, Any] | list[Any], event: str = "alarm") -> None:
        if self._loop is not None:  # serialised once here, not once per browser
            chunk = f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
            self._loop.call_soon_threadsafe(self._fan_out, chunk)

    def _fan_out(self, chunk: str) -> None:
        for queue in list(self._queues):
            if queue.full():  # a stalled browser: drop it; it reconnects and gets a fresh snapshot
                self._queues.discard(queue)
                continue
            queue.put_nowait(chunk)

    def close(self) -> None:
        """End every stream (shutdown): browsers reconnect by themselves when the console is back."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @property
    def clients(self) -> int:
        return len(self._queues)


def attach(app: Any) -> None:
    """Feed the broadcaster from MQTT; called once when the app is made."""
    ctx = app.state.console
    broadcaster = Broadcaster()
    app.state.broadcaster = broadcaster

    def on_alarm(message: mqtt.MQTTMessage) -> None:
        """An alarm changed: relay it as the database holds it (the payload is not even read)."""
        if not broadcaster.clients:
            return
        parsed = topics.parse(message.topic)
        name = parsed.id if isinstance(parsed, topics.RulesTopic) and parsed.id is not None else ""
        with ctx.sessions() as session:
            alarm = session.get(Alarm, int(name)) if ALARM_ID.fullmatch(name) else None
            view = store.alarm_views(session, [alarm])[0] if alarm is not None else None
        if view is not None:
            broadcaster.publish(view)
            return
        broadcaster.ignored += 1
        if broadcaster.ignored % 1000 == 1:  # the first, then every 1000th: a flood does not flood the log
            log.warning("ignored an alarm update for an alarm the database does not hold (%s; %d so far)",
                        message.topic, broadcaster.ignored)

    def on_paths(message: mqtt.MQTTMessage) -> None:
        """The police link's paths changed: relay them as the database holds them."""
        if broadcaster.clients:
            with ctx.sessions() as session:
                broadcaster.publish(store.police_paths(session), "police")

    def on_lockdown(message: mqtt.MQTTMessage) -> None:
        """The campus was locked down or let go: every page's banner follows, as the database has it."""
        if broadcaster.clients:
            with ctx.sessions() as session:
                broadcaster.publish(lockdowns.view(lockdowns.active(session)), "lockdown")

    def on_notice(message: mqtt.MQTTMessage) -> None:
        """A district notice came or was acknowledged: every page's banner shows those still unacknowledged."""
        if broadcaster.clients:
            with ctx.sessions() as session:
                broadcaster.publish(notices.unacknowledged(session), "notices")

    ctx.bus.subscribe(topics.alarms_filter(ctx.site), on_alarm)
    ctx.bus.subscribe(topics.police_paths(ctx.site), on_paths)
    ctx.bus.subscribe(topics.lockdown(ctx.site), on_lockdown)
    ctx.bus.subscribe(topics.notices_filter(ctx.site), on_notice)


def open_alarms(request: Request) -> list[dict[str, Any]]:
    with console(request).sessions() as session:
        return store.open_alarm_views(session)


@router.get("/alarms", response_class=HTMLResponse)
async def alarms_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return render(request, "alarms.html", alarms=open_alarms(request), csrf=user.csrf,
                  finish=may_finish(request, user))


def may_finish(request: Request, user: LoggedIn) -> bool | list[str]:
    """Which alarms this user may reset and close: all (True), or these types (a guard, with a note)."""
    if auth.allowed(user.role, "alarm.reset") and auth.allowed(user.role, "alarm.close"):
        return True
    return sorted(console(request).guards_finish) if auth.allowed(user.role, "alarm.ack") else []


@router.get("/api/alarms")
async def alarms_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Open alarms, most urgent first."""
    return open_alarms(request)


@router.get("/api/alarms/stream")
async def alarm_stream(request: Request, user: LoggedIn = Depends(require("view"))) -> StreamingResponse:  # noqa: B008
    """Server-sent events: `snapshot` (all open alarms) on connect, then `alarm` for every change."""
    broadcaster: Broadcaster = request.app.state.broadcaster
    broadcaster.bind(asyncio.get_running_loop())
    queue = broadcaster.subscribe()  # before the snapshot, so nothing falls between the two
    snapshot = open_alarms(request)
    with console(request).sessions() as session:
        paths = store.police_paths(session)
        locked = lockdowns.view(lockdowns.active(session))
        unread = notices.unacknowledged(session)

    def clock() -> str:  # the site's time: the pages count alarm ages on it, and its silence means a hung gateway
        return f"event: clock\ndata: {json.dumps({'now': utcnow().isoformat()})}\n\n"

    async def events() -> AsyncIterator[str]:
        try:
            yield clock()  # first: the ages the snapshot is drawn with go by the site's clock
            yield f"retry: 2000\nevent: snapshot\ndata: {json.dumps(snapshot, ensure_ascii=False)}\n\n"
            if paths:
                yield f"event: police\ndata: {json.dumps(paths, ensure_ascii=False)}\n\n"
            yield f"event: lockdown\ndata: {json.dumps(locked, ensure_ascii=False)}\n\n"
            yield f"event: notices\ndata: {json.dumps(unread, ensure_ascii=False)}\n\n"
            while True:
                try:
                    async with asyncio.timeout(PING_S):  # not wait_for, which makes a task per message per browser
                        chunk = await queue.get()
                except TimeoutError:
                    yield clock()
                    continue
                if chunk is None:
                    return
                yield chunk
        finally:
            broadcaster.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/api/alarms/{alarm_id}")
async def alarm_detail(alarm_id: int, request: Request,
                       user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """One alarm with its whole history: every transition and note, with who and when."""
    with console(request).sessions() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None:
            raise HTTPException(404, tr(request, "There is no such alarm."))
        steps = session.scalars(select(AlarmTransition).where(AlarmTransition.alarm_id == alarm_id)
                                .order_by(AlarmTransition.id)).all()
        language = language_of(request)
        names = {d: n for d, n in session.execute(select(Device.id, Device.name)) if n}
        return {**store.alarm_views(session, [alarm])[0], "history": [
            {"action": s.action, "from": s.from_state, "to": s.to_state, "actor": s.actor, "at": s.at.isoformat(),
             "note": s.note, "text": said(language, s.said, names) if s.said else s.note} for s in steps]}


@router.get("/alarms/{alarm_id}", response_class=HTMLResponse)
async def alarm_page(alarm_id: int, request: Request,
                     user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    """One alarm, handled to the end: its cameras live, its evidence in place, what the linkage did, the steps
    to take, who is on duty, and its history (the page's script keeps it live)."""
    ctx = console(request)
    with ctx.sessions() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None:
            raise HTTPException(404, tr(request, "There is no such alarm."))
        alarm_type, zone = alarm.alarm_type, alarm.zone
        linked = list(session.scalars(select(AlarmAttachment.camera).where(AlarmAttachment.alarm_id == alarm_id)))
        near = list(session.scalars(select(Device.id).where(Device.kind == "camera", Device.zone == zone))) \
            if zone else []
        names = dict(session.execute(select(Device.id, Device.name).where(Device.kind == "camera")).all())
        on_duty = roster.on_duty_now(session, utcnow())
    cameras = [{"id": c, "name": names.get(c) or c} for c in dict.fromkeys([*linked, *near]) if c in names]
    contacts = [{"name": d.name, "role": tr(request, d.role), "phone": d.phone} for d in on_duty.everyone]
    steps = ctx.procedures.get(alarm_type) or list(ALARMS[alarm_type].procedure if alarm_type in ALARMS else ())
    return render(request, "alarm.html", alarm_id=alarm_id, cameras=cameras, contacts=contacts,
                  steps=[tr(request, step) for step in steps], csrf=user.csrf, finish=may_finish(request, user))


@router.get("/api/alarms/{alarm_id}/clips/{camera}/{clip_id}")
async def alarm_clip(alarm_id: int, camera: str, clip_id: str, request: Request,
                     user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """A kept clip's frame times and the alarm's moment, to play it in place on the alarm's page."""
    ctx = console(request)
    with ctx.sessions() as session:
        kept = session.scalar(select(AlarmAttachment.id).where(
            AlarmAttachment.alarm_id == alarm_id, AlarmAttachment.camera == camera, AlarmAttachment.ref == clip_id,
            AlarmAttachment.kind == "clip"))
    root = ctx.snapshot_dir
    manifest = served_file(root, root / camera / "clips" / clip_id / "clip.json") if kept and root else None
    if manifest is None:
        raise HTTPException(404, tr(request, "The clip is still being recorded."))
    clip = json.loads(manifest.read_text())
    return {"times": clip["times"], "alarm_at": clip["alarm_at"]}


class StepBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: str = Field(min_length=1, max_length=200)


@router.post("/api/alarms/{alarm_id}/steps/{index}")
async def alarm_step(alarm_id: int, index: int, body: StepBody, request: Request,
                     user: LoggedIn = Depends(require("alarm.ack"))) -> dict[str, Any]:  # noqa: B008
    """A step of the alarm's procedure done: a line in its history with who and when (the state is unchanged)."""
    ctx = console(request)
    if not 0 <= index < 50:
        raise HTTPException(404, tr(request, "There is no such step."))
    with ctx.sessions.begin() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None:
            raise HTTPException(404, tr(request, "There is no such alarm."))
        now = utcnow()
        store.note(session, alarm_id, "step", f"{index + 1}. {body.step}", now, user.username)
        store.audit(session, user.username, "alarm.step", f"alarm:{alarm_id}", "ok",
                    {"step": index + 1, "text": body.step}, now, request.client.host if request.client else None)
        session.flush()
        view = store.alarm_views(session, [alarm])[0]
    ctx.bus.publish_json(topics.alarm(ctx.site, alarm_id), view)
    return view


@router.get("/api/alarms/{alarm_id}/speech")
async def alarm_speech(alarm_id: int, request: Request,
                       user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    """The alarm spoken in the user's language ("南门 门卫室 一键报警"), as WAV; 404 without a speech engine."""
    ctx = console(request)
    if not ctx.speech:
        raise HTTPException(404, tr(request, "No speech engine is installed (apt-get install espeak-ng)."))
    with ctx.sessions() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None:
            raise HTTPException(404, tr(request, "There is no such alarm."))
        text = speech.line(tr(request, alarm.alarm_type), ctx.zones.get(alarm.zone or "", alarm.zone), alarm.place)
    try:
        audio = await asyncio.to_thread(speech.wav, text, language_of(request))
    except RuntimeError as exc:
        log.warning("could not speak alarm %s: %s", alarm_id, exc)
        raise HTTPException(503, tr(request, "The speech engine failed.")) from None
    return Response(audio, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=1000)


async def act(request: Request, alarm_id: int, action: Action, user: LoggedIn, body: ActionBody) -> dict[str, Any]:
    ctx = console(request)
    note = (body.note or "").strip() or None
    if action == "note" and not note:
        raise HTTPException(422, tr(request, "Write a note first."))
    client = request.client.host if request.client else None

    if action in ("reset", "close") and not auth.allowed(user.role, PERMISSION[action]):
        with ctx.sessions() as session:
            alarm_type = session.scalar(select(Alarm.alarm_type).where(Alarm.id == alarm_id))
        if alarm_type is None:
            raise HTTPException(404, tr(request, "There is no such alarm."))
        if alarm_type not in ctx.guards_finish:
            refuse(request, user, "role.refused", {"permission": PERMISSION[action], "role": user.role,
                                                   "alarm": alarm_id, "alarm_type": alarm_type},
                   "Your role may not do this for this type of alarm (console.guards_finish).")
        if not note_long_enough(note):
            raise HTTPException(422, tr(request, GUARD_NOTE))

    def do(session: Session) -> dict[str, Any]:
        alarm = store.operator_action(session, alarm_id, action, user.username, utcnow(), note, client)
        return store.alarm_views(session, [alarm])[0]

    view = attempt(request, do)
    if isinstance(view, RefusedAction):
        raise HTTPException(404 if str(view) == "there is no such alarm" else 409, tr(request, str(view)))
    ctx.bus.publish_json(topics.alarm(ctx.site, alarm_id), view)
    return view


class ManyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(min_length=1, max_length=500)


@router.post("/api/alarms/ack")
async def alarm_ack_many(request: Request, body: ManyBody,
                         user: LoggedIn = Depends(require("alarm.ack"))) -> dict[str, Any]:  # noqa: B008
    """Acknowledge several alarms at once (a first start's flood, a zone's alarms): each is acknowledged and
    audited on its own; those that cannot be (already acknowledged, closed, unknown) are listed with why."""
    ctx = console(request)
    client = request.client.host if request.client else None

    def do(session: Session) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        done, refused = [], []
        for alarm_id in sorted(set(body.ids)):  # in id order, as every transaction locks alarms
            try:
                done.append(store.operator_action(session, alarm_id, "ack", user.username, utcnow(), None, client))
            except RefusedAction as exc:
                refused.append({"id": alarm_id, "why": tr(request, str(exc))})
        return store.alarm_views(session, done), refused

    result = attempt(request, do)
    assert not isinstance(result, RefusedAction)  # each refusal is caught above
    views, refused = result
    for view in views:
        ctx.bus.publish_json(topics.alarm(ctx.site, view["id"]), view)
    return {"alarms": views, "refused": refused}


def _route(action: Action) -> None:
    async def endpoint(alarm_id: int, request: Request, body: ActionBody | None = None,
                       user: LoggedIn = Depends(require(ROUTE_PERMISSION[action]))) -> dict[str, Any]:  # noqa: B008
        return await act(request, alarm_id, action, user, body or ActionBody())

    endpoint.__name__ = f"alarm_{action}"
    endpoint.__doc__ = {"ack": "Acknowledge an alarm (guard and up).",
                        "note": "Add a note to an alarm's history (guard and up).",
                        "reset": "Reset an acknowledged alarm once the cause is dealt with (supervisor and up; a "
                                 "guard for the types in console.guards_finish, with a note).",
                        "close": "Close a cleared, acknowledged alarm (supervisor and up; a guard for the types in "
                                 "console.guards_finish, with a note). An acknowledged alarm "
                                 "whose input is still active closes only with a note (at least 6 characters), "
                                 "once its device is offline or has sent nothing about it for 10 minutes."}[action]
    router.post(f"/api/alarms/{{alarm_id}}/{action}")(endpoint)


for _action in ("ack", "note", "reset", "close"):
    _route(_action)


@router.post("/api/alarms/{alarm_id}/silence")
async def alarm_silence(request: Request, alarm_id: int,
                        user: LoggedIn = Depends(require("alarm.ack"))) -> dict[str, Any]:  # noqa: B008
    """Silence an alarm's sirens (linkage's sounders; strobes keep flashing) without acknowledging it (guard and
    up); audited. The rules service switches the relays; a new press sounds them again."""
    ctx = console(request)
    client = request.client.host if request.client else None

    def do(session: Session) -> dict[str, Any]:
        alarm = store.silence(session, alarm_id, user.username, utcnow(), client)
        return store.alarm_views(session, [alarm])[0]

    view = attempt(request, do)
    if isinstance(view, RefusedAction):
        raise HTTPException(404 if str(view) == "there is no such alarm" else 409, tr(request, str(view)))
    ctx.bus.publish_json(topics.alarm(ctx.site, alarm_id), view)
    return view


# -- campus lockdown (封校 / 一键锁闭): started and ended at the alarm centre --------------------------------------


class LockdownStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)  # for a drill, its scenario
    drill: bool = False


class LockdownEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(max_length=4000)
    participants: str | None = Field(default=None, max_length=4000)  # a drill's record
    findings: str | None = Field(default=None, max_length=4000)


@router.get("/api/lockdown")
async def lockdown_state(request: Request, user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """Whether the campus is locked down (or in a lockdown drill), since when and by whom."""
    with console(request).sessions() as session:
        return lockdowns.view(lockdowns.active(session))


def _lockdown(request: Request, do: Callable[[Session], Any]) -> dict[str, Any]:
    ctx = console(request)
    done = attempt(request, lambda session: lockdowns.view(do(session)))
    if isinstance(done, RefusedAction):
        raise HTTPException(409, tr(request, str(done)))
    ctx.bus.publish_json(topics.lockdown(ctx.site), done, retain=True)  # every console, the rules, the district
    return dict(done)


@router.post("/api/lockdown")
async def lockdown_start(request: Request, body: LockdownStart,
                         user: LoggedIn = Depends(require("lockdown.manage"))) -> dict[str, Any]:  # noqa: B008
    """Lock the campus down (supervisor and up; audited): every reader refuses everyone but the responders,
    the lockdown's relays lock the doors and play the PA, its bollards rise. `drill`: all of it, as a drill."""
    client = request.client.host if request.client else None
    return _lockdown(request, lambda session: lockdowns.start(session, user.username, body.reason, body.drill,
                                                              utcnow(), client=client))


@router.post("/api/lockdown/end")
async def lockdown_end(request: Request, body: LockdownEnd,
                       user: LoggedIn = Depends(require("lockdown.manage"))) -> dict[str, Any]:  # noqa: B008
    """End the lockdown with a note (supervisor and up; audited); a drill also with its findings."""
    client = request.client.host if request.client else None
    return _lockdown(request, lambda session: lockdowns.end(session, user.username, body.note, utcnow(),
                                                            participants=body.participants, findings=body.findings,
                                                            client=client))
