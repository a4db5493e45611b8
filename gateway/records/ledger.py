"""The safety ledger (安全台账) in the database: incidents and their timelines, hazards, inspections, maintenance.

The checks are gateway.rules.incidents'; this module reads the rows, calls them and writes what they say.
Every action is audited (gateway.records.store.audit), a refusal too, then RefusedAction goes to the caller,
who should let the transaction commit so the refusal's audit entry is kept. Functions that change alarms
return their ids, for the caller to publish after the commit. `tick` is the rules service's part: deadline
alerts, this month's and the term's inspection tasks, maintenance items for equipment faults.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from gateway.config import Config, IncidentsConfig
from gateway.events import new_id
from gateway.records import store
from gateway.records.models import (
    Alarm,
    AlarmAttachment,
    Device,
    Hazard,
    Incident,
    IncidentEntry,
    Inspection,
    InspectionItem,
    MaintenanceItem,
    ReportSubmission,
)
from gateway.rules.alarms import OPEN_STATES, Effect, RefusedAction, clear_condition, raise_condition
from gateway.rules.incidents import (
    ALARM_CATEGORY,
    ALERTS,
    HAZARD_DUE_STATES,
    MAINTENANCE_TYPES,
    DeadlineAlert,
    FaultAlarm,
    HazardAction,
    HazardAlert,
    HazardDue,
    HazardFacts,
    IncidentAction,
    IncidentFacts,
    check_item,
    check_new_hazard,
    check_new_incident,
    deadlines,
    due_times,
    hazard_alerts,
    hazard_transition,
    incident_action,
    inspections_due,
    maintenance_due,
    overdue,
)

SYSTEM = "system"
DEADLINE_ALARM = "incident_deadline"
OPEN_HAZARD_STATES = ("found", "assigned", "fixed", "escalated")


def _refuse(session: Session, actor: str, action: str, target: str, exc: RefusedAction, now: datetime,
            client: str | None) -> NoReturn:
    store.audit(session, actor, action, target, "refused", {"why": str(exc)}, now, client)
    raise exc


# -- incidents ------------------------------------------------------------------------------------


def facts(incident: Incident) -> IncidentFacts:
    return IncidentFacts(incident.id, incident.state, incident.occurred_at, incident.confirmed_at,
                         incident.report_due_at, incident.reported_at, incident.written_due_at, incident.written_at,
                         dict(incident.alerts or {}), incident.forwarded_at)


def _entry(session: Session, incident_id: int, at: datetime, actor: str, kind: str, text: str,
           ref: str | None = None) -> IncidentEntry:
    entry = IncidentEntry(incident_id=incident_id, at=at, actor=actor, kind=kind, text=text, ref=ref)
    session.add(entry)
    return entry


def create_incident(session: Session, config: IncidentsConfig, *, category: str, severity: str, title: str,
                    occurred_at: datetime, actor: str, now: datetime, confirmed_at: datetime | None = None,
                    place: str | None = None, people: str | None = None, alarm_id: int | None = None,
                    client: str | None = None) -> Incident:
    """An incident entered by hand (or promoted from an alarm): deadlines run from its confirmation."""
    confirmed = confirmed_at or now
    title = " ".join(title.split())[:200]
    try:
        check_new_incident(category, severity, title, occurred_at, confirmed, now)
    except RefusedAction as exc:
        _refuse(session, actor, "incident.create", "incident", exc, now, client)
    report_due, written_due = due_times(config.category(category), confirmed)
    incident = Incident(category=category, severity=severity, title=title, place=(place or "").strip()[:200] or None,
                        people=(people or "").strip() or None, occurred_at=occurred_at, confirmed_at=confirmed,
                        report_due_at=report_due, written_due_at=written_due, state="open", alarm_id=alarm_id,
                        alerts={}, created_at=now, created_by=actor)
    session.add(incident)
    session.flush()
    _entry(session, incident.id, now, actor, "created", "")
    store.audit(session, actor, "incident.create", f"incident:{incident.id}", "ok",
                {"category": category, "severity": severity, "title": title, "alarm_id": alarm_id,
                 "report_due_at": report_due.isoformat()}, now, client)
    return incident


def incident_for_alarm(session: Session, alarm_id: int) -> Incident | None:
    return session.scalars(select(Incident).where(Incident.alarm_id == alarm_id).order_by(Incident.id)).first()


def promote_alarm(session: Session, config: IncidentsConfig, alarm_id: int, actor: str, now: datetime, *,
                  category: str | None = None, severity: str | None = None, title: str | None = None,
                  people: str | None = None, client: str | None = None) -> tuple[Incident, list[int]]:
    """The alarm was real: an incident from it (its place and time, its snapshots and clips on the timeline),
    confirmed now. Returns the incident and the alarm's id (a note in its history), to publish."""
    target = f"alarm:{alarm_id}"
    alarm = session.get(Alarm, alarm_id)
    try:
        if alarm is None:
            raise RefusedAction("there is no such alarm")
        if alarm.test:
            raise RefusedAction("a test alarm cannot become an incident")
        if alarm.alarm_type == DEADLINE_ALARM:
            raise RefusedAction("this alarm is a deadline of an incident already in the ledger")
        if incident_for_alarm(session, alarm_id) is not None:
            raise RefusedAction("this alarm is already in the incident ledger")
    except RefusedAction as exc:
        _refuse(session, actor, "incident.promote", target, exc, now, client)
    assert alarm is not None
    incident = create_incident(
        session, config, category=category or ALARM_CATEGORY.get(alarm.alarm_type, "other"),
        severity=severity or ("serious" if alarm.priority <= 1 else "minor"),
        title=title or f"{alarm.alarm_type}: {alarm.place or alarm.device_id}", occurred_at=alarm.raised_at,
        confirmed_at=now, place=alarm.place or alarm.zone or alarm.device_id, people=people, alarm_id=alarm_id,
        actor=actor, now=now, client=client)
    _entry(session, incident.id, alarm.raised_at, SYSTEM, "alarm", alarm.alarm_type, str(alarm_id))
    for attachment in session.scalars(select(AlarmAttachment).where(AlarmAttachment.alarm_id == alarm_id)
                                      .order_by(AlarmAttachment.id)):
        _entry(session, incident.id, attachment.at, SYSTEM, "attachment", attachment.kind,
               f"{attachment.camera}/{attachment.ref}")
    store.note(session, alarm_id, "incident", "in the incident ledger as incident #{n}", now, actor,
               params={"n": incident.id})
    alarm.last_note = f"{actor}: incident #{incident.id}"
    store.audit(session, actor, "incident.promote", target, "ok", {"incident_id": incident.id}, now, client)
    return incident, [alarm_id]


def _incident(session: Session, incident_id: int, actor: str, action: str, now: datetime,
              client: str | None) -> Incident:
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        _refuse(session, actor, action, f"incident:{incident_id}", RefusedAction("there is no such incident"), now,
                client)
    return incident


def _act(session: Session, incident: Incident, action: IncidentAction, actor: str, now: datetime,
         client: str | None, **kwargs: Any) -> dict[str, Any]:
    try:
        changes = incident_action(facts(incident), action, now, **kwargs)
    except RefusedAction as exc:
        _refuse(session, actor, f"incident.{action}", f"incident:{incident.id}", exc, now, client)
    for name, value in changes.items():
        setattr(incident, name, value)
    return changes


def add_note(session: Session, incident_id: int, text: str, actor: str, now: datetime,
             client: str | None = None) -> IncidentEntry:
    incident = _incident(session, incident_id, actor, "incident.note", now, client)
    text = text.strip()
    if not text:
        _refuse(session, actor, "incident.note", f"incident:{incident_id}", RefusedAction("write the note first"),
                now, client)
    _act(session, incident, "note", actor, now, client)
    entry = _entry(session, incident.id, now, actor, "note", text)
    store.audit(session, actor, "incident.note", f"incident:{incident.id}", "ok", {"text": text}, now, client)
    return entry


def ticked_steps(session: Session, incident_id: int) -> dict[str, IncidentEntry]:
    """The checklist steps ticked, by their text (a step renamed in the config later stays ticked as it was)."""
    rows = session.scalars(select(IncidentEntry).where(IncidentEntry.incident_id == incident_id,
                                                       IncidentEntry.kind == "step").order_by(IncidentEntry.id))
    return {row.text: row for row in rows}


def tick_step(session: Session, config: IncidentsConfig, incident_id: int, index: int, actor: str, now: datetime,
              client: str | None = None) -> IncidentEntry:
    """A step of the category's procedure done, with who and when."""
    incident = _incident(session, incident_id, actor, "incident.step", now, client)
    steps = config.category(incident.category).steps
    _act(session, incident, "step", actor, now, client, steps=steps, index=index,
         ticked=ticked_steps(session, incident.id))
    entry = _entry(session, incident.id, now, actor, "step", steps[index], str(index))
    store.audit(session, actor, "incident.step", f"incident:{incident.id}", "ok", {"step": steps[index]}, now,
                client)
    return entry


def record_report(session: Session, incident_id: int, actor: str, now: datetime, *, at: datetime | None = None,
                  note: str | None = None, written: bool = False, closing: dict[str, str] | None = None,
                  client: str | None = None) -> tuple[Incident, list[int]]:
    """The incident was reported to the centre school (or, `written`, the written report with `closing`'s cause,
    handling, lessons and measures was sent) at `at` (default now); its deadline alarms clear. Returns the
    incident and the alarms that changed."""
    action: IncidentAction = "written" if written else "report"
    incident = _incident(session, incident_id, actor, f"incident.{action}", now, client)
    changes = _act(session, incident, action, actor, now, client, at=at, closing=closing)
    when = changes["written_at" if written else "reported_at"]
    if not written:
        incident.reported_by = actor
    _entry(session, incident.id, when, actor, action, (note or "").strip())
    store.audit(session, actor, f"incident.{action}", f"incident:{incident.id}", "ok",
                {"at": when.isoformat(), **({"note": note.strip()} if note and note.strip() else {})}, now, client)
    return incident, _clear_deadline_alarms(session, incident.id, action, now)


def record_forwarded(session: Session, incident_id: int, actor: str, now: datetime, *, at: datetime | None = None,
                     note: str | None = None, client: str | None = None) -> Incident:
    """The centre school passed the report on to the education bureau at `at` (default now): the next step of
    the chain (逐级上报: school -> centre school -> bureau), on the timeline with its time."""
    incident = _incident(session, incident_id, actor, "incident.forwarded", now, client)
    when = _act(session, incident, "forwarded", actor, now, client, at=at)["forwarded_at"]
    _entry(session, incident.id, when, actor, "forwarded", (note or "").strip())
    store.audit(session, actor, "incident.forwarded", f"incident:{incident.id}", "ok",
                {"at": when.isoformat(), **({"note": note.strip()} if note and note.strip() else {})}, now, client)
    return incident


def close_incident(session: Session, incident_id: int, actor: str, now: datetime, note: str | None = None,
                   client: str | None = None) -> tuple[Incident, list[int]]:
    incident = _incident(session, incident_id, actor, "incident.close", now, client)
    _act(session, incident, "close", actor, now, client)
    _entry(session, incident.id, now, actor, "closed", (note or "").strip())
    store.audit(session, actor, "incident.close", f"incident:{incident.id}", "ok", {}, now, client)
    return incident, _clear_deadline_alarms(session, incident.id, None, now)


# -- upward: the incident as the district sees it, and the district's acknowledgement ----------------------

DISTRICT_ACK = "district_ack"


def district_view(incident: Incident, revision: int, ack: IncidentEntry | None) -> dict[str, Any]:
    """What goes up to the district (逐级上报): the incident's facts and deadlines, not the people involved
    (personal data stays at the school). `revision` is its newest timeline line: the district keeps the newest."""
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {"id": incident.id, "revision": revision, "category": incident.category, "severity": incident.severity,
            "title": incident.title, "place": incident.place, "state": incident.state,
            "occurred_at": iso(incident.occurred_at), "confirmed_at": iso(incident.confirmed_at),
            "report_due_at": iso(incident.report_due_at), "reported_at": iso(incident.reported_at),
            "reported_by": incident.reported_by, "written_due_at": iso(incident.written_due_at),
            "written_at": iso(incident.written_at), "closed_at": iso(incident.closed_at),
            "alarm_id": incident.alarm_id,
            "district_ack": {"by": ack.actor.removeprefix("district:"), "at": iso(ack.at)} if ack else None}


def district_views_since(session: Session, after: int) -> tuple[list[dict[str, Any]], int]:
    """The views of the incidents whose timeline grew after entry `after`, and the newest entry's id (the next
    call's `after`). Cheap when nothing changed: one look at the entries' primary key."""
    newest = session.scalar(select(func.max(IncidentEntry.id))) or 0
    if newest <= after:
        return [], after
    ids = set(session.scalars(select(IncidentEntry.incident_id).where(IncidentEntry.id > after)))
    revisions = dict(session.execute(select(IncidentEntry.incident_id, func.max(IncidentEntry.id))
                                     .where(IncidentEntry.incident_id.in_(ids))
                                     .group_by(IncidentEntry.incident_id)).all())
    acks = {e.incident_id: e for e in session.scalars(select(IncidentEntry).where(
        IncidentEntry.incident_id.in_(ids), IncidentEntry.kind == DISTRICT_ACK).order_by(IncidentEntry.id))}
    views = [district_view(i, revisions[i.id], acks.get(i.id))
             for i in session.scalars(select(Incident).where(Incident.id.in_(ids)).order_by(Incident.id))]
    return views, newest


def district_start(session: Session, since: datetime) -> int:
    """Where district_views_since starts after a (re)connect: the newest timeline line older than `since`."""
    return session.scalar(select(func.max(IncidentEntry.id)).where(IncidentEntry.at < since)) or 0


def submissions_since(session: Session, after: int | None, since: datetime) -> tuple[list[dict[str, Any]], int]:
    """Reports submitted to the district after submission `after` (None: those submitted since `since`), as
    they go up, and the newest's id."""
    query = select(ReportSubmission).order_by(ReportSubmission.id)
    query = query.where(ReportSubmission.submitted_at >= since) if after is None else \
        query.where(ReportSubmission.id > after)
    rows = session.scalars(query).all()
    views = [{"id": r.id, "kind": r.kind, "period": r.period, "starts": r.starts.isoformat(),
              "ends": r.ends.isoformat(), "submitted_at": r.submitted_at.isoformat(), "submitted_by": r.submitted_by,
              "figures": r.figures} for r in rows]
    newest = rows[-1].id if rows else (after if after is not None else
                                       session.scalar(select(func.max(ReportSubmission.id))) or 0)
    return views, newest


def record_district_ack(session: Session, incident_id: int, by: str, at: datetime, now: datetime,
                        note: str | None = None) -> bool:
    """The district acknowledged the incident's report: a timeline line, once (the district sends again until
    it sees it in the incident's view). Returns whether it was new."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        store.audit(session, f"district:{by}", "incident.district_ack", f"incident:{incident_id}", "refused",
                    {"why": "there is no such incident"}, now)
        return False
    if session.scalar(select(IncidentEntry.id).where(IncidentEntry.incident_id == incident_id,
                                                     IncidentEntry.kind == DISTRICT_ACK)) is not None:
        return False
    _entry(session, incident_id, at, f"district:{by}"[:64], DISTRICT_ACK, (note or "").strip()[:2000])
    store.audit(session, f"district:{by}", "incident.district_ack", f"incident:{incident_id}", "ok",
                {"at": at.isoformat()}, now)
    return True


def _clear_deadline_alarms(session: Session, incident_id: int, deadline: str | None, now: datetime) -> list[int]:
    """What the deadline alarms were about is done: they clear (a person still closes them on the board)."""
    keys = [f"incident-{incident_id}:{which}" for which in ALERTS
            if deadline is None or which.startswith(f"{deadline}:")]
    effects: list[Effect] = []
    for current in store.open_alarms(session, keys).values():
        effects += clear_condition(current, new_id(), now)
    return store.apply_effects(session, effects) if effects else []


def incidents(session: Session, *, category: str | None = None, state: str | None = None,
              since: datetime | None = None, until: datetime | None = None, limit: int = 500) -> list[Incident]:
    """The ledger, newest first; `since`/`until` bound when the incidents happened."""
    query = select(Incident)
    if category:
        query = query.where(Incident.category == category)
    if state:
        query = query.where(Incident.state == state)
    if since is not None:
        query = query.where(Incident.occurred_at >= since)
    if until is not None:
        query = query.where(Incident.occurred_at < until)
    return list(session.scalars(query.order_by(Incident.occurred_at.desc(), Incident.id.desc()).limit(limit)))


def timeline(session: Session, incident_id: int) -> list[IncidentEntry]:
    return list(session.scalars(select(IncidentEntry).where(IncidentEntry.incident_id == incident_id)
                                .order_by(IncidentEntry.at, IncidentEntry.id)))


# -- hazards --------------------------------------------------------------------------------------


def add_hazard(session: Session, *, place: str, description: str, severity: str, source: str, actor: str,
               now: datetime, found_at: datetime | None = None, inspection_id: int | None = None,
               inspector: str | None = None, client: str | None = None) -> Hazard:
    """A hazard found; `inspector` names who found it for an outside inspection (police, education bureau, fire
    department: their name and unit), as the record of that inspection wants."""
    inspector = (inspector or "").strip()[:100] or None
    try:
        check_new_hazard(place, description, severity, source)
        if source in OUTSIDE_SOURCES and inspector is None:
            raise RefusedAction("name the inspector who found it (name and unit)")
        if found_at is not None and found_at > now:
            raise RefusedAction("the time it was found is in the future")
        if inspection_id is not None and session.get(Inspection, inspection_id) is None:
            raise RefusedAction("there is no such inspection")
    except RefusedAction as exc:
        _refuse(session, actor, "hazard.add", "hazard", exc, now, client)
    hazard = Hazard(inspection_id=inspection_id, source=source, place=place.strip()[:200],
                    description=description.strip(), severity=severity, found_at=found_at or now, found_by=actor,
                    state="found", inspector=inspector)
    session.add(hazard)
    session.flush()
    store.audit(session, actor, "hazard.add", f"hazard:{hazard.id}", "ok",
                {"place": hazard.place, "severity": severity, "source": source,
                 **({"inspector": inspector} if inspector else {})}, now, client)
    return hazard


def hazard_action(session: Session, hazard_id: int, action: HazardAction, actor: str, now: datetime, *,
                  assigned_to: str | None = None, measures: str | None = None, due_at: datetime | None = None,
                  reason: str | None = None, client: str | None = None) -> Hazard:
    """A step of the hazard's lifecycle (gateway.rules.incidents.hazard_transition), with who and when."""
    target = f"hazard:{hazard_id}"
    hazard = session.get(Hazard, hazard_id, with_for_update=True)
    try:
        if hazard is None:
            raise RefusedAction("there is no such hazard")
        changes = hazard_transition(HazardFacts(hazard.state, hazard.found_at, hazard.assigned_to, hazard.measures,
                                                hazard.fixed_by), action, actor, now, assigned_to=assigned_to,
                                    measures=measures, due_at=due_at, reason=reason)
    except RefusedAction as exc:
        _refuse(session, actor, f"hazard.{action}", target, exc, now, client)
    assert hazard is not None
    before = hazard.state
    for name, value in changes.items():
        setattr(hazard, name, value)
    detail = {"from": before, "to": hazard.state,
              **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()
                 if k in ("assigned_to", "due_at") and v is not None},
              **({"reason": reason.strip()} if reason and reason.strip() else {})}
    store.audit(session, actor, f"hazard.{action}", target, "ok", detail, now, client)
    return hazard


def overdue_hazards(session: Session, now: datetime) -> list[Hazard]:
    """Hazards past their due date and not fixed yet, the longest overdue first: the duty page's and reports'."""
    return list(session.scalars(select(Hazard).where(Hazard.due_at < now, Hazard.state.in_(HAZARD_DUE_STATES))
                                .order_by(Hazard.due_at, Hazard.id)))


def hazards(session: Session, *, open_only: bool = False, since: datetime | None = None,
            limit: int = 500) -> list[Hazard]:
    query = select(Hazard)
    if open_only:
        query = query.where(Hazard.state.in_(OPEN_HAZARD_STATES))
    if since is not None:
        query = query.where(Hazard.found_at >= since)
    return list(session.scalars(query.order_by(Hazard.found_at.desc(), Hazard.id.desc()).limit(limit)))


# -- inspections ----------------------------------------------------------------------------------


def ensure_inspections(session: Session, config: Config, now: datetime) -> list[Inspection]:
    """This month's inspection task and the term-start one, made once each (by `period`)."""
    due = inspections_due(now, config.site.tz, config.incidents.term_starts,
                          [(t.start.isoformat(), t.end.isoformat()) for t in config.incidents.terms])
    have = set(session.scalars(select(Inspection.period).where(Inspection.period.in_([d.period for d in due]))))
    made = []
    for task in due:
        if task.period not in have:
            row = Inspection(kind=task.kind, period=task.period, due_at=task.due_at)
            session.add(row)
            made.append(row)
    if made:
        session.flush()
        for row in made:
            store.audit(session, SYSTEM, "inspection.create", f"inspection:{row.id}", "ok",
                        {"kind": row.kind, "period": row.period, "due_at": row.due_at.isoformat()}, now)
    return made


def _open_inspection(session: Session, inspection_id: int) -> Inspection:
    """The inspection, locked, if it is still to be done; else RefusedAction saying why."""
    inspection = session.get(Inspection, inspection_id, with_for_update=True)
    if inspection is None:
        raise RefusedAction("there is no such inspection")
    if inspection.done_at is not None:
        raise RefusedAction("the inspection is already recorded as done")
    return inspection


def complete_inspection(session: Session, inspection_id: int, actor: str, now: datetime, notes: str | None = None,
                        client: str | None = None) -> Inspection:
    target = f"inspection:{inspection_id}"
    try:
        inspection = _open_inspection(session, inspection_id)
    except RefusedAction as exc:
        _refuse(session, actor, "inspection.done", target, exc, now, client)
    inspection.done_at, inspection.done_by = now, actor
    inspection.notes = (notes or "").strip() or None
    found = session.scalars(select(Hazard.id).where(Hazard.inspection_id == inspection_id)).all()
    store.audit(session, actor, "inspection.done", target, "ok", {"period": inspection.period,
                                                                  "hazards": len(found)}, now, client)
    return inspection


def record_item(session: Session, config: IncidentsConfig, inspection_id: int, group: str, item: str,
                passed: bool, actor: str, now: datetime, *, note: str = "", photo: bytes | None = None,
                photo_type: str | None = None, client: str | None = None) -> InspectionItem:
    """A checklist item of an open inspection, passed or failed, with a note and a photo, once; a failed one opens
    a hazard (source inspection, found by `actor`, the note as its description) linked to the inspection."""
    target = f"inspection:{inspection_id}"
    try:
        _open_inspection(session, inspection_id)
        check_item(config.checklist, group, item, passed, note)
        if session.scalar(select(InspectionItem.id).where(InspectionItem.inspection_id == inspection_id,
                                                          InspectionItem.group == group, InspectionItem.item == item)):
            raise RefusedAction("this item is already recorded for this inspection")
    except RefusedAction as exc:
        _refuse(session, actor, "inspection.item", target, exc, now, client)
    note = note.strip()
    row = InspectionItem(inspection_id=inspection_id, group=group, item=item, passed=passed, note=note or None,
                         photo=photo, photo_type=photo_type if photo else None, at=now, by=actor)
    if not passed:
        hazard = add_hazard(session, place=item, description=note, severity="general", source="inspection",
                            actor=actor, now=now, inspection_id=inspection_id, client=client)
        row.hazard_id = hazard.id
    session.add(row)
    session.flush()
    store.audit(session, actor, "inspection.item", target, "ok",
                {"group": group, "item": item, "passed": passed, "photo": photo is not None,
                 **({"hazard": row.hazard_id} if row.hazard_id else {})}, now, client)
    return row


def inspection_items(session: Session, inspection_id: int) -> list[InspectionItem]:
    return list(session.scalars(select(InspectionItem).where(InspectionItem.inspection_id == inspection_id)
                                .order_by(InspectionItem.id)))


def inspections(session: Session, limit: int = 36) -> list[Inspection]:
    return list(session.scalars(select(Inspection).order_by(Inspection.due_at.desc(), Inspection.id.desc())
                                .limit(limit)))


# -- maintenance ----------------------------------------------------------------------------------


def open_maintenance(session: Session, config: IncidentsConfig, now: datetime) -> list[MaintenanceItem]:
    """A maintenance item for each equipment fault still present (its alarm open, the condition active) that has
    none (the alarm's id is unique on the items, so this is idempotent), due `repair_h` after the fault began."""
    rows = session.execute(
        select(Alarm, Device.kind).outerjoin(Device, Device.id == Alarm.device_id).where(
            Alarm.state.in_(OPEN_STATES), Alarm.test.is_(False), Alarm.condition_active.is_(True),
            Alarm.alarm_type.in_([*MAINTENANCE_TYPES, "tamper"]),
            ~exists().where(MaintenanceItem.alarm_id == Alarm.id)).order_by(Alarm.id)).all()
    if not rows:
        return []
    alarms = [FaultAlarm(a.id, a.device_id, a.alarm_type, a.raised_at, a.test, kind) for a, kind in rows]
    places = {a.id: a.place for a, _ in rows}
    open_faults = session.execute(select(MaintenanceItem.device_id, MaintenanceItem.fault)
                                  .where(MaintenanceItem.state == "open")).all()
    made = []
    for due in maintenance_due(alarms, [(d, f) for d, f in open_faults], config.repair_h):
        item = MaintenanceItem(device_id=due.device_id, alarm_id=due.alarm_id, fault=due.fault,
                               opened_at=due.opened_at, due_at=due.due_at, state="open")
        session.add(item)
        made.append(item)
    if made:
        session.flush()
        for item in made:
            store.audit(session, SYSTEM, "maintenance.open", f"maintenance:{item.id}", "ok",
                        {"device": item.device_id, "fault": item.fault, "alarm_id": item.alarm_id,
                         "place": places.get(item.alarm_id or 0), "due_at": item.due_at.isoformat()}, now)
    return made


def fix_maintenance(session: Session, item_id: int, actor: str, now: datetime, note: str | None = None,
                    client: str | None = None) -> MaintenanceItem:
    target = f"maintenance:{item_id}"
    item = session.get(MaintenanceItem, item_id, with_for_update=True)
    try:
        if item is None:
            raise RefusedAction("there is no such maintenance item")
        if item.state == "fixed":
            raise RefusedAction("this item is already fixed")
    except RefusedAction as exc:
        _refuse(session, actor, "maintenance.fix", target, exc, now, client)
    assert item is not None
    item.state, item.fixed_at, item.fixed_by = "fixed", now, actor
    store.audit(session, actor, "maintenance.fix", target, "ok",
                {"late": now > item.due_at, **({"note": note.strip()} if note and note.strip() else {})}, now,
                client)
    return item


def overdue_maintenance(session: Session, now: datetime) -> list[MaintenanceItem]:
    """Open items past the repair target, most overdue first."""
    return overdue(sorted(maintenance_items(session, open_only=True), key=lambda m: m.id), now)


def maintenance_items(session: Session, *, open_only: bool = False, limit: int = 500) -> list[MaintenanceItem]:
    query = select(MaintenanceItem)
    if open_only:
        query = query.where(MaintenanceItem.state == "open")
    return list(session.scalars(query.order_by(MaintenanceItem.opened_at.desc(), MaintenanceItem.id.desc())
                                .limit(limit)))


# -- the rules service's tick ---------------------------------------------------------------------


def _alert_place(incident: Incident, alert: DeadlineAlert, config: Config) -> str:
    due = alert.due_at.astimezone(config.site.tz).strftime("%H:%M")
    what = "report to the centre school" if alert.deadline == "report" else "written report"
    when = f"due at {due}" if alert.which.endswith(":before") else f"overdue (was due at {due})"
    return f"incident #{incident.id} ({incident.title[:60]}): {what} {when}"[:200]


def deadline_alerts(session: Session, config: Config, now: datetime) -> list[Effect]:
    """Alarms for the reporting deadlines due now, each once (the incident's `alerts` keeps which were given)."""
    rows = session.scalars(select(Incident).where(
        Incident.state != "closed",
        Incident.reported_at.is_(None) | (Incident.written_due_at.is_not(None) & Incident.written_at.is_(None))))
    due: list[tuple[Incident, DeadlineAlert]] = []
    for incident in rows:
        due += [(incident, a) for a in deadlines(facts(incident), config.incidents.category(incident.category), now)]
    if not due:
        return []
    current = store.open_alarms(session, [a.key for _, a in due])
    effects: list[Effect] = []
    for incident, alert in due:
        effects += raise_condition(alert.key, f"incident-{incident.id}", DEADLINE_ALARM, current.get(alert.key),
                                   new_id(), now, place=_alert_place(incident, alert, config))
        incident.alerts = {**(incident.alerts or {}), alert.which: now.isoformat()}  # a new dict: JSON is not tracked
        _entry(session, incident.id, now, SYSTEM, "alert", alert.which)
    return effects


HAZARD_ALARM = "hazard_due"
OUTSIDE_SOURCES = ("police", "education", "fire")  # inspections from outside the school: the inspector is named


def _hazard_place(hazard: Hazard, alert: HazardAlert, config: Config) -> str:
    due = alert.due_at.astimezone(config.site.tz).strftime("%Y-%m-%d")
    when = f"due on {due}" if alert.which == "before" else f"overdue (was due on {due})"
    return f"hazard #{hazard.id} ({hazard.place[:60]}): {when}"[:200]


def hazard_due_alerts(session: Session, config: Config, now: datetime) -> list[Effect]:
    """Alarms for hazards whose due date is near (incidents.hazard_warn_days) or past, each once (the hazard's
    `alerts` keeps which were given); and those alarms cleared once their hazard is fixed or signed off."""
    warn = timedelta(days=config.incidents.hazard_warn_days)
    rows = session.scalars(select(Hazard).where(Hazard.due_at.is_not(None), Hazard.state.in_(HAZARD_DUE_STATES),
                                                Hazard.due_at <= now + warn))
    due = [(h, a) for h in rows for a in hazard_alerts(HazardDue(h.id, h.state, h.due_at, h.alerts or {}), now, warn)]
    effects: list[Effect] = []
    if due:
        current = store.open_alarms(session, [a.key for _, a in due])
        for hazard, alert in due:
            effects += raise_condition(alert.key, f"hazard-{hazard.id}", HAZARD_ALARM, current.get(alert.key),
                                       new_id(), now, place=_hazard_place(hazard, alert, config))
            hazard.alerts = {**(hazard.alerts or {}), alert.which: now.isoformat()}  # a new dict: JSON not tracked
    raised = session.execute(select(Alarm.key, Alarm.device_id).where(
        Alarm.alarm_type == HAZARD_ALARM, Alarm.condition_active.is_(True), Alarm.state.in_(OPEN_STATES))).all()
    ids = {int(device.removeprefix("hazard-")) for _, device in raised if device.removeprefix("hazard-").isdigit()}
    states = {i: st for i, st in session.execute(select(Hazard.id, Hazard.state).where(Hazard.id.in_(ids)))} \
        if ids else {}
    done = [key for key, device in raised if states.get(int(device.removeprefix("hazard-") or 0), "gone")
            not in HAZARD_DUE_STATES]
    for alarm in store.open_alarms(session, done).values():
        effects += clear_condition(alarm, new_id(), now)
    return effects


def tick(session: Session, config: Config, now: datetime) -> list[Effect]:
    """The ledgers' part of the rules service's tick: returns the alarm effects for the deadline alerts (the
    caller applies and publishes them), and makes the inspection tasks and maintenance items due."""
    effects = deadline_alerts(session, config, now) + hazard_due_alerts(session, config, now)
    ensure_inspections(session, config, now)
    open_maintenance(session, config.incidents, now)
    return effects

