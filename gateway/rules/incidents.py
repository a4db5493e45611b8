"""The safety ledger's rules (安全台账): incident deadlines, the hazard lifecycle, inspections due and maintenance.

Pure: state and the time in, what to write out (field changes, alerts due, tasks due), or RefusedAction
with a sentence the person at the console reads. gateway.records.ledger does the I/O around these.

Deadlines (STANDARDS.md, "Incidents and ledgers"): a confirmed incident is reported to the centre school
within 1 h by default; per category (config `incidents.categories`) e.g. 2 h by phone and 8 h in writing for
serious ones. Each deadline gives an alert `warn_before_min` before it and one at it, once each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from gateway.catalogue import ALARM_TABLE
from gateway.config import INCIDENT_CATEGORIES, IncidentCategory
from gateway.rules.alarms import RefusedAction

SEVERITIES = ("minor", "serious", "major")
INCIDENT_STATES = ("open", "reported", "closed")
HAZARD_STATES = ("found", "assigned", "fixed", "signed_off", "escalated")
HAZARD_SEVERITIES = ("general", "major")  # 一般隐患, 重大隐患
HAZARD_SOURCES = ("inspection", "patrol", "police", "education", "fire", "public", "other")  # public: R38's page
DEADLINES = ("report", "written")  # to the centre school (by phone), and in writing
ALERTS = ("report:before", "report:due", "written:before", "written:due")
# Within two weeks of term start (STANDARDS.md); the task appears a week before, when schools prepare.
TERM_INSPECTION_DAYS = 14
TERM_INSPECTION_LEAD_DAYS = 7
# The category a promoted alarm starts with (the supervisor may choose another on the form): the catalogue's.
ALARM_CATEGORY = {a.name: a.incident_category for a in ALARM_TABLE if a.incident_category}
# Alarm types that are equipment faults (device health): each becomes a maintenance item. A camera's tamper
# (covered, moved, out of focus) needs someone at the camera; a reader's tamper is a break-in attempt, not this.
MAINTENANCE_TYPES = tuple(a.name for a in ALARM_TABLE if a.maintenance)
MAINTENANCE_FAULTS = (*MAINTENANCE_TYPES, "camera_tamper")
INSPECTION_KINDS = ("monthly", "term_start", "term_middle", "term_end")
TERM_MIDDLE_DAYS = 7  # the mid-term inspection: from a week before the term's middle to a week after
TERM_END_LEAD_DAYS = 14  # the end-of-term inspection: in the term's last two weeks
COUNTDOWN_MESSAGES = ("{h} h {m} min left", "{m} min left", "overdue by {h} h {m} min", "overdue by {m} min",
                      "on time", "late by {h} h {m} min", "late by {m} min")  # msgids

# -- incidents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentFacts:
    """What the incident rules need of an incident (gateway.records.models.Incident holds it)."""

    id: int
    state: str
    occurred_at: datetime
    confirmed_at: datetime
    report_due_at: datetime
    reported_at: datetime | None = None
    written_due_at: datetime | None = None
    written_at: datetime | None = None
    alerts: Mapping[str, str] = field(default_factory=dict)  # alerts already given: which -> when (ISO)
    forwarded_at: datetime | None = None  # the centre school passed it on to the education bureau (逐级上报)


# Timeline lines the system writes: a msgid per kind (or per alert), shown before the entry's own text.
ENTRY_LABELS = {"created": "Incident recorded", "alarm": "Promoted from alarm", "attachment": "Camera evidence",
                "step": "Step done:", "report": "Reported to the centre school", "written": "Written report sent",
                "forwarded": "Passed on to the education bureau by the centre school",
                "closed": "Incident closed", "note": "", "district_ack": "Acknowledged by the district:"}
ALERT_LABELS = {"report:before": "Alert: the report to the centre school is due soon",
                "report:due": "Alert: the deadline to report to the centre school has passed",
                "written:before": "Alert: the written report is due soon",
                "written:due": "Alert: the deadline for the written report has passed"}
CLOSING_FIELDS = ("cause", "handling", "lessons", "measures")  # the seed's 事发原因、处理情况、吸取教训、整改措施


@dataclass(frozen=True)
class DeadlineAlert:
    incident_id: int
    which: str  # one of ALERTS
    due_at: datetime  # the deadline it is about

    @property
    def key(self) -> str:
        """The alarm's key: one alarm per incident and alert."""
        return f"incident-{self.incident_id}:{self.which}"

    @property
    def deadline(self) -> str:
        return self.which.split(":", 1)[0]


def due_times(category: IncidentCategory, confirmed_at: datetime) -> tuple[datetime, datetime | None]:
    """(report deadline, written-report deadline or None), both running from the confirmation."""
    written = confirmed_at + timedelta(hours=category.written_h) if category.written_h else None
    return confirmed_at + timedelta(hours=category.report_h), written


def deadlines(incident: IncidentFacts, category: IncidentCategory, now: datetime) -> list[DeadlineAlert]:
    """The deadline alerts due now and not given yet: `warn_before_min` before a deadline, and at it.

    Nothing once the thing is done (reported, written) or the incident is closed. A tick that comes late (the
    gateway was down) gives only the alert that still means something: past the deadline, "due" and not
    "before" as well."""
    if incident.state == "closed":
        return []
    due: list[DeadlineAlert] = []
    for name, deadline, done in (("report", incident.report_due_at, incident.reported_at),
                                 ("written", incident.written_due_at, incident.written_at)):
        if deadline is None or done is not None:
            continue
        warn_at = deadline - timedelta(minutes=category.warn_before_min)
        if now >= deadline:
            which = f"{name}:due"
        elif now >= warn_at and category.warn_before_min > 0:
            which = f"{name}:before"
        else:
            continue
        if which not in incident.alerts:
            due.append(DeadlineAlert(incident.id, which, deadline))
    return due


HAZARD_DUE_STATES = ("assigned", "escalated")  # being put right: a fixed one waits for its sign-off, not a date


@dataclass(frozen=True)
class HazardDue:
    id: int
    state: str
    due_at: datetime | None
    alerts: Mapping[str, str] = field(default_factory=dict)  # alerts already given: before/due -> when (ISO)


@dataclass(frozen=True)
class HazardAlert:
    hazard_id: int
    which: Literal["before", "due"]
    due_at: datetime

    @property
    def key(self) -> str:
        """The alarm's key: one alarm per hazard and alert."""
        return f"hazard-{self.hazard_id}:{self.which}"


def hazard_alerts(hazard: HazardDue, now: datetime, warn_before: timedelta) -> list[HazardAlert]:
    """The due-date alert of a hazard due now and not given yet (整改时限): `warn_before` ahead of its due date,
    and at it. Nothing without a due date or once fixed; a late tick gives only "due", not "before" as well."""
    if hazard.due_at is None or hazard.state not in HAZARD_DUE_STATES:
        return []
    which: Literal["before", "due"]
    if now >= hazard.due_at:
        which = "due"
    elif now >= hazard.due_at - warn_before and warn_before > timedelta(0):
        which = "before"
    else:
        return []
    return [] if which in hazard.alerts else [HazardAlert(hazard.id, which, hazard.due_at)]


@dataclass(frozen=True)
class Countdown:
    """A deadline as a person reads it: `message` is a msgid, `params` fill it in after translation."""

    seconds: int  # left until the deadline; negative once past it
    message: str
    params: Mapping[str, int]
    state: Literal["running", "warning", "overdue", "on_time", "late"]

    def text(self) -> str:
        return self.message.format(**self.params)


def _hm(seconds: int) -> dict[str, int]:
    minutes = seconds // 60
    return {"h": minutes // 60, "m": minutes % 60}


def countdown(due_at: datetime, now: datetime, done_at: datetime | None = None,
              warn_before_min: int = 15) -> Countdown:
    """"1 h 20 min left", "overdue by 5 min", or once done "on time" / "late by 12 min". Time left is rounded
    up (30 s left reads "1 min left"), time overdue down, so neither claims more time than there is."""
    if done_at is not None:
        late = int((done_at - due_at).total_seconds())
        if late <= 0:
            return Countdown(-late, "on time", {}, "on_time")
        params = _hm(late)
        return Countdown(-late, "late by {h} h {m} min" if params["h"] else "late by {m} min", params, "late")
    left = int((due_at - now).total_seconds())
    if left <= 0:
        params = _hm(-left)
        return Countdown(left, "overdue by {h} h {m} min" if params["h"] else "overdue by {m} min", params,
                         "overdue")
    params = _hm(left + 59)
    state: Literal["running", "warning"] = "warning" if left <= warn_before_min * 60 else "running"
    return Countdown(left, "{h} h {m} min left" if params["h"] else "{m} min left", params, state)


def check_new_incident(category: str, severity: str, title: str, occurred_at: datetime, confirmed_at: datetime,
                       now: datetime) -> None:
    """Refuses an incident that cannot be right as entered."""
    if category not in INCIDENT_CATEGORIES:
        raise RefusedAction("choose a category from the list")
    if severity not in SEVERITIES:
        raise RefusedAction("choose a severity from the list")
    if not title.strip():
        raise RefusedAction("give the incident a short title")
    if occurred_at > now:
        raise RefusedAction("the time it happened is in the future")
    if confirmed_at > now:
        raise RefusedAction("the time it was confirmed is in the future")
    if confirmed_at < occurred_at:
        raise RefusedAction("it cannot have been confirmed before it happened")


IncidentAction = Literal["note", "step", "report", "written", "forwarded", "close"]


def incident_action(incident: IncidentFacts, action: IncidentAction, now: datetime, *,
                    at: datetime | None = None, steps: Sequence[str] = (), index: int | None = None,
                    ticked: Iterable[str] = (), closing: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a person's action changes on the incident (field -> value), or RefusedAction saying why not.

    `at` is when a report was made (it may be recorded later than it was phoned in); `steps` the category's
    checklist, `index` the step ticked, `ticked` the steps already ticked (by their text); `closing` the written
    report's cause, handling, lessons and corrective measures (CLOSING_FIELDS), each required (R34)."""
    if action == "note":
        return {}  # a late word on a closed incident is still worth keeping
    if incident.state == "closed":
        raise RefusedAction("the incident is closed: only notes can be added")
    if action == "step":
        if index is None or not 0 <= index < len(steps):
            raise RefusedAction("there is no such step in this category's checklist")
        if steps[index] in set(ticked):
            raise RefusedAction("this step is already ticked")
        return {}
    if action in ("report", "written", "forwarded"):
        when = at or now
        if when > now:
            raise RefusedAction("the report time is in the future")
        if when < incident.occurred_at:
            raise RefusedAction("the report time is before the incident happened")
        if action == "report":
            if incident.reported_at is not None:
                raise RefusedAction("the report to the centre school is already recorded")
            return {"reported_at": when, "state": "reported"}
        if action == "forwarded":
            if incident.reported_at is None:
                raise RefusedAction("record the report to the centre school first")
            if when < incident.reported_at:
                raise RefusedAction("the centre school passed it on before it was told")
            if incident.forwarded_at is not None:
                raise RefusedAction("the report to the education bureau is already recorded")
            return {"forwarded_at": when}
        if incident.written_at is not None:
            raise RefusedAction("the written report is already recorded")
        texts = {name: (closing or {}).get(name, "").strip() for name in CLOSING_FIELDS}
        if not all(texts.values()):
            raise RefusedAction("the written report needs its cause, handling, lessons and corrective measures")
        return {"written_at": when, **{name: text[:4000] for name, text in texts.items()}}
    if action == "close":
        if incident.reported_at is None:
            raise RefusedAction("record the report to the centre school before closing the incident")
        if incident.written_due_at is not None and incident.written_at is None:
            raise RefusedAction("record the written report before closing the incident")
        return {"state": "closed", "closed_at": now}
    raise RefusedAction(f"unknown action {action!r}")


# -- hazards --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HazardFacts:
    state: str
    found_at: datetime
    assigned_to: str | None = None
    measures: str | None = None
    fixed_by: str | None = None


HazardAction = Literal["assign", "fix", "sign_off", "escalate", "reopen"]
HAZARD_ACTIONS: tuple[HazardAction, ...] = ("assign", "fix", "sign_off", "escalate", "reopen")


def check_new_hazard(place: str, description: str, severity: str, source: str) -> None:
    if not place.strip():
        raise RefusedAction("say where the hazard is")
    if not description.strip():
        raise RefusedAction("describe the hazard")
    if severity not in HAZARD_SEVERITIES:
        raise RefusedAction("choose a severity from the list")
    if source not in HAZARD_SOURCES:
        raise RefusedAction("choose where the hazard was reported from the list")


def hazard_transition(hazard: HazardFacts, action: HazardAction, actor: str, now: datetime, *,
                      assigned_to: str | None = None, measures: str | None = None, due_at: datetime | None = None,
                      reason: str | None = None) -> dict[str, Any]:
    """found -> assigned -> fixed -> signed_off, or escalated (beyond the school: reported to the education
    bureau, police or fire service) on the way; the field changes with who and when, or RefusedAction.

    The sign-off is a check of the repair, so the person who fixed a hazard does not sign it off; a repair
    that fails the check is reopened (back to assigned)."""
    state = hazard.state
    if state == "signed_off":
        raise RefusedAction("the hazard is signed off: nothing more to do")
    if action == "assign":
        if state == "fixed":
            raise RefusedAction("the hazard is already fixed: sign it off, or reopen it if the repair is not good")
        who = (assigned_to or "").strip()
        if not who:
            raise RefusedAction("name who fixes the hazard")
        if due_at is not None and due_at < hazard.found_at:
            raise RefusedAction("the due date is before the hazard was found")
        return {"state": "assigned", "assigned_to": who, "measures": (measures or "").strip() or hazard.measures,
                "due_at": due_at}
    if action == "fix":
        if state == "fixed":
            raise RefusedAction("the hazard is already fixed")
        if state == "found":
            raise RefusedAction("assign the hazard first: who fixes it, and by when")
        return {"state": "fixed", "fixed_at": now, "fixed_by": actor}
    if action == "sign_off":
        if state != "fixed":
            raise RefusedAction("the hazard is not fixed yet: it is signed off once fixed")
        if actor == hazard.fixed_by:
            raise RefusedAction("the person who fixed the hazard cannot sign it off: someone else checks the repair")
        return {"state": "signed_off", "signed_off_at": now, "signed_off_by": actor}
    if action == "escalate":
        if state == "escalated":
            raise RefusedAction("the hazard is already escalated")
        if state == "fixed":
            raise RefusedAction("the hazard is already fixed")
        why = (reason or "").strip()
        if not why:
            raise RefusedAction("say to whom and why the hazard is escalated")
        text = f"{hazard.measures}\n" if hazard.measures else ""
        return {"state": "escalated", "measures": f"{text}[{actor}] {why}"}
    if action == "reopen":
        if state != "fixed":
            raise RefusedAction("only a fixed hazard can be reopened")
        return {"state": "assigned", "fixed_at": None, "fixed_by": None}
    raise RefusedAction(f"unknown action {action!r}")


class Due(Protocol):
    @property
    def due_at(self) -> datetime | None: ...


T = TypeVar("T", bound=Due)


def overdue(items: Iterable[T], now: datetime) -> list[T]:
    """Those past their due time (the caller passes only the ones not done yet), most overdue first."""
    late = [i for i in items if i.due_at is not None and now > i.due_at]
    return sorted(late, key=lambda i: i.due_at or now)


# -- inspections ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InspectionDue:
    kind: str  # monthly, term_start, term_middle, term_end
    period: str  # "2026-11", "term-2027-02-20": one task each
    due_at: datetime  # the last second it may be done in


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def inspections_due(now: datetime, tz: ZoneInfo, term_starts: Iterable[str],
                    terms: Iterable[tuple[str, str]] = ()) -> list[InspectionDue]:
    """The inspection tasks that should exist now: this month's (due by its end); a term-start one (due within
    TERM_INSPECTION_DAYS of the term's first day) from a week before the term until it is due; and for a term
    whose end is known (`terms`: (first day, last day)), one in its middle (a week either side) and one in its
    last two weeks (学期前、学期中、学期结束)."""
    local = now.astimezone(tz)
    first = local.date().replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    due = [InspectionDue("monthly", f"{first:%Y-%m}", _local_midnight(next_month, tz) - timedelta(seconds=1))]
    windows: list[tuple[str, str, date, date]] = []  # kind, period, first day open, last day
    starts = [*term_starts, *(start for start, _ in terms)]
    for text in dict.fromkeys(starts):
        start = date.fromisoformat(text)
        windows.append(("term_start", f"term-{start:%Y-%m-%d}", start - timedelta(days=TERM_INSPECTION_LEAD_DAYS),
                        start + timedelta(days=TERM_INSPECTION_DAYS - 1)))
    for first_day, last_day in terms:
        start, end = date.fromisoformat(first_day), date.fromisoformat(last_day)
        middle = start + (end - start) / 2
        windows.append(("term_middle", f"term-{start:%Y-%m-%d}-mid", middle - timedelta(days=TERM_MIDDLE_DAYS),
                        middle + timedelta(days=TERM_MIDDLE_DAYS)))
        windows.append(("term_end", f"term-{start:%Y-%m-%d}-end", end - timedelta(days=TERM_END_LEAD_DAYS), end))
    for kind, period, opens, last in windows:
        ends = _local_midnight(last + timedelta(days=1), tz) - timedelta(seconds=1)
        if _local_midnight(opens, tz) <= now <= ends:
            due.append(InspectionDue(kind, period, ends))
    return due


def check_item(checklist: Mapping[str, Sequence[str]], group: str, item: str, passed: bool,
               note: str) -> None:
    """An inspection's checklist item as recorded: one of the checklist's, and a failed one says what is wrong
    (it opens a hazard with that as its description). RefusedAction otherwise."""
    if item not in checklist.get(group, ()):
        raise RefusedAction("there is no such item in the inspection checklist")
    if not passed and not note.strip():
        raise RefusedAction("say what is wrong: a failed item opens a hazard")


# -- maintenance ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultAlarm:
    id: int
    device_id: str
    alarm_type: str
    raised_at: datetime
    test: bool = False
    device_kind: str | None = None  # from the device registry


@dataclass(frozen=True)
class MaintenanceDue:
    alarm_id: int
    device_id: str
    fault: str  # one of MAINTENANCE_FAULTS
    opened_at: datetime
    due_at: datetime


def maintenance_fault(alarm: FaultAlarm) -> str | None:
    """The equipment fault an alarm stands for, or None when it is not one (or is a button test)."""
    if alarm.test:
        return None
    if alarm.alarm_type in MAINTENANCE_TYPES:
        return alarm.alarm_type
    if alarm.alarm_type == "tamper" and alarm.device_kind == "camera":
        return "camera_tamper"
    return None


def maintenance_due(alarms: Iterable[FaultAlarm], open_faults: Iterable[tuple[str, str]], repair_h: float,
                    ) -> list[MaintenanceDue]:
    """A maintenance item per fault alarm, due `repair_h` after the fault began; none while the same device
    already has an open item for the same fault (a device that drops off and back many times is one repair)."""
    have = set(open_faults)
    items = []
    for alarm in sorted(alarms, key=lambda a: a.raised_at):
        fault = maintenance_fault(alarm)
        if fault is None or (alarm.device_id, fault) in have:
            continue
        have.add((alarm.device_id, fault))
        items.append(MaintenanceDue(alarm.id, alarm.device_id, fault, alarm.raised_at,
                                    alarm.raised_at + timedelta(hours=repair_h)))
    return items
