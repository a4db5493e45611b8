"""Writing the rules' effects and operators' actions to the records (the I/O side of the rules)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from gateway.records.models import (
    Alarm,
    AlarmAttachment,
    AlarmTransition,
    AuditEntry,
    Device,
    IngestedEvent,
    PoliceMessage,
    PolicePathState,
)
from gateway.rules.alarms import (
    OPEN_STATES,
    Action,
    DeviceStatus,
    Effect,
    OpenAlarm,
    RaiseAlarm,
    RefusedAction,
    State,
    UpdateAlarm,
    closes_while_active,
    operator_transition,
    source_silent,
)

SYSTEM = "system"


def known_event_ids(session: Session, ids: Iterable[str]) -> set[str]:
    ids = list(ids)
    if not ids:
        return set()
    return set(session.scalars(select(IngestedEvent.id).where(IngestedEvent.id.in_(ids))))


def open_alarms(session: Session, keys: Iterable[str], lock: bool = True) -> dict[str, OpenAlarm]:
    """The open alarms with these keys, locked until the transaction ends: the rules decide from this state and
    write their effects in the same transaction, so a person's acknowledgement cannot fall in between (it
    was: an ack between the read and the write of a release put the alarm back to unacknowledged).
    `lock=False` reads again what this transaction has locked (or raised) already."""
    keys = list(set(keys))
    if not keys:
        return {}
    if lock:
        lock_alarms(session, Alarm.key.in_(keys), Alarm.state.in_(OPEN_STATES))
    rows = session.scalars(select(Alarm).where(Alarm.key.in_(keys), Alarm.state.in_(OPEN_STATES))
                           .execution_options(populate_existing=True))
    return {a.key: OpenAlarm(a.id, a.key, a.state, a.latching, a.condition_active, a.priority,  # type: ignore[arg-type]
                             a.last_event_at) for a in rows}


def lock_alarms(session: Session, *where: Any) -> None:
    """Lock these alarm rows for the rest of the transaction before reading them. PostgreSQL: SELECT ... FOR
    UPDATE, in id order, as every caller takes them, so two transactions never wait on each other in a circle.
    SQLite: a no-op UPDATE, which takes the database's write lock (FOR UPDATE does not exist there, and a
    plain read is not part of the transaction that writes)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Alarm.id).where(*where).order_by(Alarm.id).with_for_update())
    else:
        session.execute(update(Alarm).where(*where).values(id=Alarm.id).execution_options(synchronize_session=False))


PLACE_MAX = 200  # alarms.place: a long detail (a health alarm's, a fault's reason) is cut, never refused


def apply_effects(session: Session, effects: list[Effect], raised: list[tuple[RaiseAlarm, int]] | None = None,
                  ) -> list[int]:
    """Write effects; returns the ids of alarms that changed (to tell the console). New alarms are also
    appended to `raised` with their ids (for linkage)."""
    changed: list[int] = []
    for effect in effects:
        if isinstance(effect, RaiseAlarm):
            alarm = Alarm(key=effect.key, device_id=effect.device_id, alarm_type=effect.alarm_type,
                          priority=effect.priority, latching=effect.latching, state="active_unack",
                          zone=effect.zone, place=effect.place[:PLACE_MAX] if effect.place else None,
                          test=effect.test, raised_at=effect.at,
                          raised_event_id=effect.event_id, occurrences=1, last_event_at=effect.at,
                          condition_active=True)
            session.add(alarm)
            session.flush()
            session.add(AlarmTransition(alarm_id=alarm.id, action="raise", from_state=None, to_state="active_unack",
                                        actor=SYSTEM, at=effect.at, event_id=effect.event_id))
            changed.append(alarm.id)
            if raised is not None:
                raised.append((effect, alarm.id))
        elif isinstance(effect, UpdateAlarm):
            values: dict[str, Any] = {"state": effect.to_state, "condition_active": effect.condition_active,
                                      "last_event_at": effect.at}
            if effect.action == "retrigger":
                values["occurrences"] = Alarm.occurrences + 1
                values["silenced_at"] = values["silenced_by"] = None  # pressed again: the sirens sound again
            if effect.priority is not None:
                values["priority"] = effect.priority
            if effect.action == "clear":
                values.update(cleared_at=effect.at, cleared_by=SYSTEM)
                queue_police_restore(session, effect.alarm_id, effect.at)
            session.execute(update(Alarm).where(Alarm.id == effect.alarm_id).values(**values))
            session.add(AlarmTransition(alarm_id=effect.alarm_id, action=effect.action, from_state=effect.from_state,
                                        to_state=effect.to_state, actor=SYSTEM, at=effect.at,
                                        event_id=effect.event_id))
            changed.append(effect.alarm_id)
        elif isinstance(effect, DeviceStatus):
            session.execute(update(Device).where(Device.id == effect.device_id).values(
                online=effect.online, status_changed=effect.at,
                offline_reason=None if effect.online else effect.reason))
    return changed


def note(session: Session, alarm_id: int, action: str, text: str, at: datetime, actor: str = SYSTEM,
         params: dict[str, Any] | None = None) -> None:
    """A line in the alarm's history that changes no state (linkage sent, someone notified, a result). With
    `params`, `text` is an English msgid with {fields}: the history keeps it in English and the console shows it
    in the guard's language."""
    alarm = session.get(Alarm, alarm_id)
    if alarm is not None:
        params = {k: str(v) for k, v in params.items()} if params is not None else None
        session.add(AlarmTransition(alarm_id=alarm_id, action=action, from_state=alarm.state, to_state=alarm.state,
                                    actor=actor, at=at, note=text.format(**params) if params is not None else text,
                                    said={"msg": text, "params": params} if params is not None else None))


def purge_events(session: Session, older_than: datetime, limit: int = 10_000) -> int:
    """Delete ingest-log rows received before `older_than`, at most `limit` at a time (short transactions)."""
    ids = list(session.scalars(select(IngestedEvent.id).where(IngestedEvent.received_at < older_than).limit(limit)))
    if ids:
        session.execute(delete(IngestedEvent).where(IngestedEvent.id.in_(ids)))
    return len(ids)


def newest_received_at(session: Session) -> datetime | None:
    """When the newest event in the ingest log arrived (None: the log is empty)."""
    return session.scalar(select(func.max(IngestedEvent.received_at)))


def record_event_seen(session: Session, rows: list[dict[str, Any]], last_seen: dict[str, datetime]) -> None:
    if rows:  # Core insert: the ORM's bulk path costs several times more per row
        session.execute(insert(cast(Table, IngestedEvent.__table__)), rows)
    for device_id, at in last_seen.items():
        session.execute(update(Device).where(Device.id == device_id,
                                             (Device.last_seen.is_(None)) | (Device.last_seen < at))
                        .values(last_seen=at))


def operator_action(session: Session, alarm_id: int, action: Action | Literal["note"], actor: str, at: datetime,
                    note: str | None = None, client: str | None = None) -> Alarm:
    """A person acts on an alarm: checked, applied, and audited whether it succeeds or is refused.
    A note changes no state and may be added to any alarm, closed ones too. A close of an alarm whose input is
    still active (gateway.rules.alarms.closes_while_active) needs a note and a silent source; its audit entry
    and history line say that the input was still active, and why the source counted as silent."""
    lock_alarms(session, Alarm.id == alarm_id)
    alarm = session.get(Alarm, alarm_id, populate_existing=True)
    if alarm is None:
        audit(session, actor, f"alarm.{action}", f"alarm:{alarm_id}", "refused", {"why": "no such alarm"}, at, client)
        raise RefusedAction("there is no such alarm")
    forced: dict[str, Any] = {}
    if action != "note" and closes_while_active(alarm.state, action,  # type: ignore[arg-type]
                                                latching=alarm.latching, condition_active=alarm.condition_active):
        device = session.get(Device, alarm.device_id)
        online = device.online if device is not None else None
        forced = {"input_active": True, "device_online": online, "last_event_at": alarm.last_event_at.isoformat(),
                  "silent": source_silent(alarm.alarm_type, online, alarm.last_event_at, at)}
    try:
        to_state: State = alarm.state if action == "note" else operator_transition(  # type: ignore[assignment]
            alarm.state, action, latching=alarm.latching,  # type: ignore[arg-type]
            condition_active=alarm.condition_active, note=note, silent=bool(forced.get("silent")))
    except RefusedAction as exc:
        audit(session, actor, f"alarm.{action}", f"alarm:{alarm_id}", "refused",
              {"why": str(exc), **forced, **({"note": note} if note else {})}, at, client)
        raise
    from_state: State = alarm.state  # type: ignore[assignment]
    alarm.state = to_state
    if note:
        alarm.last_note = f"{actor}: {note}"
    if action == "ack":
        alarm.acked_at, alarm.acked_by = at, actor
    elif action == "reset":
        alarm.cleared_at, alarm.cleared_by = at, actor
        queue_police_restore(session, alarm.id, at)
    elif action == "close":
        # Closed with its input still active: cleared_at stays empty (the input never cleared); no restore goes
        # to the alarm centre (the zone is not restored). A later report of the same input raises a new alarm.
        alarm.closed_at, alarm.closed_by = at, actor
    session.add(AlarmTransition(alarm_id=alarm.id, action="close_active" if forced else action,
                                from_state=from_state, to_state=to_state, actor=actor, at=at, note=note))
    audit(session, actor, f"alarm.{action}", f"alarm:{alarm_id}", "ok",
          {"from": from_state, "to": to_state, **({"note": note} if note else {}), **forced}, at, client)
    return alarm


def silence(session: Session, alarm_id: int, actor: str, at: datetime, client: str | None = None) -> Alarm:
    """A guard silences an alarm's sirens (linkage's sounders) without acknowledging it; audited either way."""
    lock_alarms(session, Alarm.id == alarm_id)
    alarm = session.get(Alarm, alarm_id, populate_existing=True)
    why = ("there is no such alarm" if alarm is None else "the alarm is closed" if alarm.state == "closed"
           else "the alarm is silenced already" if alarm.silenced_at is not None else None)
    if why is not None or alarm is None:
        audit(session, actor, "alarm.silence", f"alarm:{alarm_id}", "refused", {"why": why}, at, client)
        raise RefusedAction(why or "there is no such alarm")
    alarm.silenced_at, alarm.silenced_by = at, actor
    session.add(AlarmTransition(alarm_id=alarm.id, action="silence", from_state=alarm.state, to_state=alarm.state,
                                actor=actor, at=at))
    audit(session, actor, "alarm.silence", f"alarm:{alarm_id}", "ok", {"state": alarm.state}, at, client)
    return alarm


def audit(session: Session, actor: str, action: str, target: str, result: str, detail: dict[str, Any],
          at: datetime, client: str | None = None) -> None:
    session.add(AuditEntry(at=at, actor=actor, action=action, target=target, result=result, detail=detail,
                           client=client))


def register_devices(session: Session, devices: Iterable[Any]) -> None:
    """Make the registry match the config (new devices added, details updated; history kept)."""
    for device in devices:
        row = session.get(Device, device.id)
        if row is None:
            row = Device(id=device.id)
            session.add(row)
        row.kind, row.driver, row.name = device.kind, device.driver, device.name
        row.zone, row.test_mode = device.zone, device.test_mode


def queue_police_restore(session: Session, alarm_id: int, at: datetime) -> None:
    """The alarm centre was told of this alarm: tell it the alarm is over (Contact ID qualifier 3, the SIA
    restore code). Written with the reset, so the link cannot miss it."""
    told = session.scalars(select(PoliceMessage).where(PoliceMessage.alarm_id == alarm_id,
                                                       PoliceMessage.kind == "alarm")).first()
    if told is not None:
        session.add(PoliceMessage(alarm_id=alarm_id, kind="restore", alarm_type=told.alarm_type, zone=told.zone,
                                  created_at=at, state="pending", attempts=0))


def police_status(session: Session, alarm_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per alarm, whether the alarm centre has acknowledged it (and its restore), when and on which path."""
    found: dict[int, dict[str, Any]] = {}
    if not alarm_ids:
        return found
    rows = session.scalars(select(PoliceMessage).where(PoliceMessage.alarm_id.in_(alarm_ids))
                           .order_by(PoliceMessage.id))
    for row in rows:
        assert row.alarm_id is not None
        found.setdefault(row.alarm_id, {})[row.kind] = {
            "state": row.state, "acked_at": row.acked_at.isoformat() if row.acked_at else None,
            "path": row.acked_path, "attempts": row.attempts, "error": row.last_error}
    return found


def police_paths(session: Session) -> list[dict[str, Any]]:
    """Each alarm-centre path: up or down since when, its last acknowledgement and error."""
    rows = session.scalars(select(PolicePathState).order_by(PolicePathState.name))
    return [{"name": r.name, "up": r.up, "since": r.since.isoformat() if r.since else None,
             "last_ack_at": r.last_ack_at.isoformat() if r.last_ack_at else None, "last_error": r.last_error}
            for r in rows]


def attach_evidence(session: Session, alarm_id: int, camera: str, data: dict[str, Any], at: datetime) -> None:
    """A camera's answer to an alarm: its snapshot now, its clip once recorded."""
    if data.get("snapshot_id"):
        session.add(AlarmAttachment(alarm_id=alarm_id, kind="snapshot", camera=camera, ref=data["snapshot_id"],
                                    state="ready", at=at))
    if data.get("clip_id"):
        session.add(AlarmAttachment(alarm_id=alarm_id, kind="clip", camera=camera, ref=data["clip_id"],
                                    state="recording", at=at))


def clip_ready(session: Session, clip_id: str, frames: int, before: int | None) -> list[int]:
    """The camera finished a clip; returns the alarms it belongs to."""
    rows = session.scalars(select(AlarmAttachment).where(AlarmAttachment.ref == clip_id,
                                                         AlarmAttachment.kind == "clip")).all()
    for row in rows:
        row.state, row.frames, row.before = "ready", frames, before
    return [row.alarm_id for row in rows]


def attachments(session: Session, alarm_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    if not alarm_ids:
        return found
    rows = session.scalars(select(AlarmAttachment).where(AlarmAttachment.alarm_id.in_(alarm_ids))
                           .order_by(AlarmAttachment.id))
    for row in rows:
        found.setdefault(row.alarm_id, []).append({"kind": row.kind, "camera": row.camera, "ref": row.ref,
                                                   "state": row.state, "frames": row.frames, "before": row.before})
    return found


def alarm_views(session: Session, alarms: Iterable[Alarm]) -> list[dict[str, Any]]:
    alarms = list(alarms)
    ids = [a.id for a in alarms]
    police, evidence = police_status(session, ids), attachments(session, ids)
    steps = recent_steps(session, ids)
    names = dict(session.execute(select(Device.id, Device.name).where(
        Device.id.in_({a.device_id for a in alarms}))).all()) if alarms else {}
    return [{**_alarm_view(a), "revision": steps[a.id][-1]["n"] if steps.get(a.id) else 0,
             "device_name": names.get(a.device_id), "police": police.get(a.id), "attachments": evidence.get(a.id, []),
             "steps": steps.get(a.id, [])} for a in alarms]


STEPS_IN_VIEW = 30  # an alarm's newest history lines in its view: what the district sees of its handling


def recent_steps(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each alarm's newest history lines, oldest first. The newest line's number is the alarm's revision: it
    grows with every change, so a console (or the district) that receives two views of one alarm out of order
    keeps the newer."""
    if not ids:
        return {}
    newest = func.row_number().over(partition_by=AlarmTransition.alarm_id,
                                    order_by=AlarmTransition.id.desc()).label("newest")
    lines = select(AlarmTransition, newest).where(AlarmTransition.alarm_id.in_(ids)).subquery()
    row = aliased(AlarmTransition, lines)
    found: dict[int, list[dict[str, Any]]] = {}
    for line in session.scalars(select(row).where(lines.c.newest <= STEPS_IN_VIEW).order_by(row.id)):
        found.setdefault(line.alarm_id, []).append({
            "n": line.id, "at": line.at.isoformat(), "action": line.action, "from": line.from_state,
            "to": line.to_state, "actor": line.actor, "note": line.note, "said": line.said})
    return found


def _alarm_view(alarm: Alarm) -> dict[str, Any]:
    """What the console and other consumers see of an alarm."""
    return {
        "id": alarm.id, "key": alarm.key, "device_id": alarm.device_id, "alarm_type": alarm.alarm_type,
        "priority": alarm.priority, "latching": alarm.latching, "state": alarm.state, "zone": alarm.zone,
        "place": alarm.place, "test": alarm.test, "raised_at": alarm.raised_at.isoformat(),
        "last_event_at": alarm.last_event_at.isoformat() if alarm.last_event_at else None,
        "occurrences": alarm.occurrences, "condition_active": alarm.condition_active,
        "acked_by": alarm.acked_by, "acked_at": alarm.acked_at.isoformat() if alarm.acked_at else None,
        "last_note": alarm.last_note, "escalation_level": alarm.escalation_level,
        "silenced_by": alarm.silenced_by, "silenced_at": alarm.silenced_at.isoformat() if alarm.silenced_at else None,
    }


def open_alarm_views(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Alarm).where(Alarm.state.in_(OPEN_STATES))
                           .order_by(Alarm.priority, Alarm.raised_at))
    return alarm_views(session, rows)
