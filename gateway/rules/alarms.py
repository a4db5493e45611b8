"""Alarm rules: pure functions from (event or action, current state, time) to effects.

States (DESIGN.md): active_unack -> active_ack -> cleared_unack / cleared_ack -> closed.
An emergency alarm (panic, duress, fire) latches: it stays active until a
person resets it, whatever the input does (GB 50394 5.2.3-5.2.4). Other alarms
clear when their condition returns to normal, but a person still acknowledges
and closes them. Tamper, fault and offline alarms are raised whether or not
anything is armed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gateway.catalogue import ALARM_TABLE, RAISED_BY_EVENT
from gateway.events import Event

State = Literal["active_unack", "active_ack", "cleared_unack", "cleared_ack", "closed"]
Action = Literal["ack", "reset", "close"]
OPEN_STATES: tuple[State, ...] = ("active_unack", "active_ack", "cleared_unack", "cleared_ack")

# From the catalogue (gateway.catalogue): 1 is the most urgent; the console orders by this, then by time. A
# latching alarm stays active until a person resets it.
LATCHING = frozenset(a.name for a in ALARM_TABLE if a.latching)
PRIORITY = {a.name: a.priority for a in ALARM_TABLE}


class RefusedAction(Exception):
    """An operator action that does not apply to the alarm as it is now; the message says why."""


@dataclass(frozen=True)
class OpenAlarm:
    id: int
    key: str
    state: State
    latching: bool
    condition_active: bool
    priority: int = 3
    last_event_at: datetime | None = None


@dataclass(frozen=True)
class RaiseAlarm:
    key: str
    device_id: str
    alarm_type: str
    priority: int
    latching: bool
    zone: str | None
    place: str | None
    test: bool
    event_id: str
    at: datetime


@dataclass(frozen=True)
class UpdateAlarm:
    alarm_id: int
    action: str  # retrigger | condition_restored | clear
    from_state: State
    to_state: State
    condition_active: bool
    event_id: str
    at: datetime
    priority: int | None = None  # a repeated press raises the alarm's level


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    online: bool
    reason: str | None
    at: datetime


Effect = RaiseAlarm | UpdateAlarm | DeviceStatus


KEY_MAX = 140  # alarms.key; cut the same way every time, so the same condition finds its open alarm


def alarm_key(event: Event) -> str | None:
    """Which alarm an event speaks about: one open alarm per input point, one per offline device."""
    if event.type.startswith("campus.alarm_input."):
        return f"{event.device}:{event.data['point']}"
    if event.type in ("campus.device.offline", "campus.device.online"):
        return f"{event.device}:offline"
    if event.type == "campus.gateway.health":  # one alarm per condition (and per alarm-centre path or part)
        path = event.data.get("path") or event.data.get("part")
        return (f"{event.device}:{event.data['condition']}" + (f":{path}" if path else ""))[:KEY_MAX]
    if event.type == "campus.bollard.fault":
        return f"{event.device}:fault"
    if event.type == "campus.camera.tamper":
        return f"{event.device}:tamper:{event.data['kind']}"
    if event.type == "campus.reader.tamper":
        return f"{event.device}:tamper"
    if event.type == "campus.reader.power":
        return f"{event.device}:power"
    return None


def evaluate(event: Event, open_alarms: Mapping[str, OpenAlarm], at: datetime) -> list[Effect]:
    """Effects of one event, given the open alarms by key. `at` is when the event happened."""
    key = alarm_key(event)
    if key is None:
        return []
    current = open_alarms.get(key)
    data = event.data
    # The alarm type its active report raises (gateway.catalogue): an alarm input's is its point's type.
    kind = data["point_type"] if event.type == "campus.alarm_input.triggered" else RAISED_BY_EVENT.get(event.type, "")
    if event.type == "campus.alarm_input.triggered":
        return _activate(event, key, current, kind, data.get("zone"), data.get("place"), at)
    if event.type == "campus.alarm_input.restored":
        return _restore(event, current, at)
    if event.type == "campus.device.offline":
        status = DeviceStatus(event.device, False, data.get("reason"), at)
        return [status, *_activate(event, key, current, kind, data.get("zone"), data.get("place"), at)]
    if event.type == "campus.device.online":
        return [DeviceStatus(event.device, True, None, at), *_restore(event, current, at)]
    if event.type == "campus.gateway.health":
        if data["active"]:
            return _activate(event, key, current, kind, None, data.get("detail"), at)
        return _restore(event, current, at)
    if event.type == "campus.camera.tamper":
        if data["active"]:  # the detector's reasoning ("92 % of the picture featureless ...") is no place for a
            # guard to read: the board names the camera, and its page shows it live (the reason stays in the event)
            return _activate(event, key, current, kind, data.get("zone"), None, at)
        return _restore(event, current, at)
    if event.type in ("campus.reader.tamper", "campus.reader.power"):
        if data["active"]:
            return _activate(event, key, current, kind, data.get("zone"), data.get("place"), at)
        return _restore(event, current, at)
    if event.type == "campus.bollard.fault":
        if data.get("active", True):
            return _activate(event, key, current, kind, data.get("zone"), data.get("reason"), at)
        return _restore(event, current, at)
    return []


def _activate(event: Event, key: str, current: OpenAlarm | None, kind: str, zone: str | None,
              place: str | None, at: datetime) -> list[Effect]:
    return raise_condition(key, event.device, kind, current, event.id, at, zone, place, event.test)


def raise_condition(key: str, device_id: str, kind: str, current: OpenAlarm | None, event_id: str, at: datetime,
                    zone: str | None = None, place: str | None = None, test: bool = False) -> list[Effect]:
    """An alarm for a condition the rules found (a door forced, a watch-list hit), or its retrigger."""
    if current is None:
        return [RaiseAlarm(key=key, device_id=device_id, alarm_type=kind, priority=PRIORITY.get(kind, 3),
                           latching=kind in LATCHING, zone=zone, place=place, test=test, event_id=event_id, at=at)]
    # The same point again while its alarm is open: one alarm, counted again, one level more urgent (a button
    # pressed again and again means it matters), and waiting for a person again even if it was acknowledged:
    # a new press is news, so every console sounds until someone acknowledges it (issue 19).
    to_state: State = "active_unack"
    return [UpdateAlarm(current.id, "retrigger", current.state, to_state, True, event_id, at,
                        priority=max(1, current.priority - 1))]


def _restore(event: Event, current: OpenAlarm | None, at: datetime) -> list[Effect]:
    return clear_condition(current, event.id, at)


def clear_condition(current: OpenAlarm | None, event_id: str, at: datetime) -> list[Effect]:
    """The condition behind an open alarm is over: a latching alarm waits for a person, the others clear."""
    if current is None or not current.condition_active:
        return []
    if current.last_event_at is not None and at < current.last_event_at:
        return []  # older than what the alarm already knows (delivered out of order): it must not clear it
    if current.latching:  # stays active until a person resets it
        return [UpdateAlarm(current.id, "condition_restored", current.state, current.state, False, event_id, at)]
    to_state: State = {"active_unack": "cleared_unack", "active_ack": "cleared_ack"}.get(  # type: ignore[assignment]
        current.state, current.state)
    return [UpdateAlarm(current.id, "clear", current.state, to_state, False, event_id, at)]


# Closing by hand an alarm whose input is still active (issue 16): a stuck alarm must never be stuck for good,
# but a condition that is news must not be waved away. Its source has gone silent when its device is offline
# (nothing it could say would reach us), or nothing about the input has come for SILENT_AFTER: the drivers
# report a change within seconds (a camera's tamper clears 2 s after the view is back), so ten minutes without
# a word on an alarm still marked active means its "cleared" was most likely lost, and ten minutes give the guard
# sent to look the time to report first. Closing it is a supervisor's decision, with a note, audited.
SILENT_AFTER = timedelta(minutes=10)  # the refusal below says "10 minutes": change both together
NOTE_MIN = 6  # characters, spaces not counted: "摄像头已修复" or "camera ok", not "ok" or "x"


def source_silent(alarm_type: str, device_online: bool | None, last_event_at: datetime | None,
                  now: datetime) -> bool:
    """Whether the source of an alarm has gone silent: its device is offline (`device_online` False; None
    is a device the registry does not know, or has never heard from, which is not the same), or the newest
    event about the alarm's input is SILENT_AFTER old or more. A device-offline alarm is the news that the
    device is offline, so for it only the time counts."""
    if device_online is False and alarm_type != "device_offline":
        return True
    return last_event_at is None or now - last_event_at >= SILENT_AFTER


def note_long_enough(note: str | None) -> bool:
    return len("".join((note or "").split())) >= NOTE_MIN


def closes_while_active(state: State, action: str, *, latching: bool, condition_active: bool) -> bool:
    """Whether this is the close of an acknowledged alarm whose input is still active (a non-latching alarm
    that never cleared): allowed with a note, once its source has gone silent (operator_transition)."""
    return action == "close" and state == "active_ack" and condition_active and not latching


def operator_transition(state: State, action: Action, *, latching: bool, condition_active: bool,
                        note: str | None = None, silent: bool = False) -> State:
    """The state after a person's action, or RefusedAction saying why not. `note` is the person's note,
    `silent` whether the alarm's source has gone silent (source_silent): together they let a supervisor
    close an acknowledged alarm whose input is still active and will never report normal again."""
    if state == "closed":
        raise RefusedAction("the alarm is already closed")
    if action == "ack":
        if state in ("active_ack", "cleared_ack"):
            raise RefusedAction("the alarm is already acknowledged")
        return "active_ack" if state == "active_unack" else "cleared_ack"
    if action == "reset":
        if state == "active_unack":
            raise RefusedAction("acknowledge the alarm before resetting it")
        if state != "active_ack":
            raise RefusedAction("the alarm is not active; close it instead")
        if condition_active and not latching:
            raise RefusedAction("the input is still active: it clears by itself when the input returns to normal, "
                                "or, if its device has gone silent, close the alarm with a note")
        return "cleared_ack"
    if action == "close":
        if state == "cleared_ack":
            return "closed"
        if state == "cleared_unack":
            raise RefusedAction("acknowledge the alarm before closing it")
        if latching:
            raise RefusedAction("reset the alarm before closing it")
        if not condition_active:
            raise RefusedAction("the alarm is still active: it can be closed once it has cleared")
        if state == "active_unack":
            raise RefusedAction("the input is still active: acknowledge the alarm before closing it")
        if not silent:
            raise RefusedAction("the input is still active and was reported less than 10 minutes ago: wait for it "
                                "to clear, or close the alarm with a note once its device is offline or has been "
                                "silent for 10 minutes")
        if not note_long_enough(note):
            raise RefusedAction("the input is still active: to close the alarm anyway, write a note of at least "
                                "6 characters saying why")
        return "closed"
    raise RefusedAction(f"unknown action {action!r}")
