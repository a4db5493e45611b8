"""Patrols (guard tour, 巡更): the imperative shell around gateway.rules.patrol, run by the rules service
inside its transaction.

Every checkpoint scan is kept with the device's time and the server's. Rounds are planned from the
config a day at a time (idempotently, so a restart plans nothing twice) and judged by gateway.rules.patrol;
a round's `result` names its missed, late and out-of-order checkpoints one by one and carries the route as
it was planned, so the record still reads right after the route is changed. A round due and not started,
or stalled midway, raises a `patrol_overdue` alarm (once per kind), which escalates like any alarm; the
guard's next scan marks its condition over.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from gateway.config import Config, Route
from gateway.events import Event, new_id
from gateway.records import store
from gateway.records.models import Alarm, Credential, DutyAssignment, PatrolRound, PatrolScan, Person
from gateway.rules import patrol
from gateway.rules.alarms import Effect, OpenAlarm, clear_condition, raise_condition
from gateway.rules_service.access_shell import READ_TYPES

# Random rounds' times come from the system's CSPRNG: a guard who knew the seed would know the rounds. Drawn once,
# when a round is planned (stored with it), so a restart does not draw again.
DRAW = secrets.SystemRandom().random


def alarm_key(round_id: int) -> str:
    return f"patrol-{round_id}:overdue"


class Patrols:
    def __init__(self, site: str, config: Config, tz: tzinfo) -> None:
        self.site = site
        self.cfg = config.patrol
        self.shifts = config.duty.shifts
        self.tz = tz
        self.routes = {r.id: r for r in self.cfg.routes}
        self.checkpoints = {c.id: c for c in self.cfg.checkpoints}
        self._by_tag = {c.tag: c.id for c in self.cfg.checkpoints if c.tag}
        self._by_reader = {c.reader: c.id for c in self.cfg.checkpoints if c.reader}
        self._routes_through = {c: [r.id for r in self.cfg.routes if c in r.checkpoints] for c in self.checkpoints}
        self.early = timedelta(minutes=self.cfg.start_grace_min)  # a round may be begun this long before it is due
        self._awaiting_alarm: set[int] = set()  # rounds whose alarm was raised this tick: its id comes next tick
        self.scans = 0

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.checkpoints)

    # -- scans ---------------------------------------------------------------------------

    def checkpoint_for(self, event: Event) -> str | None:
        """The checkpoint a read stands for: its card or code is a checkpoint's tag, or it came from a
        checkpoint's fixed reader (any scan there counts). A tag wins over the reader it was scanned at."""
        value = self._value(event)
        if value is None:
            return None
        return self._by_tag.get(value) or self._by_reader.get(event.device)

    def claims(self, event: Event) -> bool:
        """Whether a read is the patrol's alone: it came from a checkpoint device (a guard's handheld, a
        checkpoint reader), or it is a checkpoint's tag, which is no one's access credential. A card at a
        gate reader that is also a checkpoint's fixed reader is both an access decision and a scan."""
        value = self._value(event)
        return value is not None and (event.kind == "checkpoint" or value in self._by_tag)

    @staticmethod
    def _value(event: Event) -> str | None:
        if event.type not in READ_TYPES:
            return None
        value = event.data.get("credential" if event.type == "campus.reader.card_read" else "code")
        return value if isinstance(value, str) else None

    def on_scan(self, session: Session, event: Event, at: datetime, received: datetime,
                alarms: dict[str, OpenAlarm]) -> list[Effect]:
        """Record one scan (`at`: the device's time, `received`: the server's) and bring its round up to
        date. A read that is no checkpoint is kept as `unknown`, one outside every round as `unplanned`."""
        if session.get(PatrolScan, event.id) is not None:
            return []  # already recorded (the service drops replays; this keeps the shell safe on its own)
        self.scans += 1
        value = self._value(event)
        checkpoint = self.checkpoint_for(event)
        scan = PatrolScan(id=event.id, checkpoint=checkpoint, reader=event.device,
                          tag=value[:128] if value else None, device_time=at, server_time=received, round_id=None,
                          status="unknown")
        session.add(scan)
        if checkpoint is None:
            return []
        self.plan(session, received)
        row = self._round_for(session, checkpoint, at)
        if row is None:
            scan.status = "unplanned"
            return []
        scan.round_id = row.id
        session.flush()
        card = value if event.device in self._by_reader and value not in self._by_tag else None
        if row.guard is None or (card is not None and row.result.get("guard_by") != "card"):
            name, how = self._guard(session, card, at)
            if name is not None and (row.guard is None or how == "card"):
                row.guard, row.result = name, {**row.result, "guard_by": how}
        self._update(session, row, received)
        key = alarm_key(row.id)
        current = alarms[key] if key in alarms else store.open_alarms(session, [key]).get(key)
        # The guard is walking: the alarm's condition is over (a person still acknowledges and resets it).
        return clear_condition(current, event.id, received)

    def _round_for(self, session: Session, checkpoint: str, at: datetime) -> PatrolRound | None:
        routes = self._routes_through.get(checkpoint, [])
        if not routes:
            return None
        local = at.astimezone(self.tz).date()
        days = [(local - timedelta(days=1)).isoformat(), local.isoformat()]
        rows = {r.id: r for r in session.scalars(select(PatrolRound).where(
            PatrolRound.route.in_(routes), PatrolRound.day.in_(days)))}
        windows = [patrol.RoundWindow(r.id, _route(r), r.due_at, _window_end(r), frozenset(r.result.get("visited", [])))
                   for r in rows.values()]
        round_id, _ = patrol.round_for_scan(windows, checkpoint, at, self.early)
        return rows.get(round_id) if round_id is not None else None

    def _update(self, session: Session, row: PatrolRound, now: datetime) -> patrol.Progress:
        """Judge the round again from all its scans; write its state, times, result and each scan's status."""
        scans = session.scalars(select(PatrolScan).where(PatrolScan.round_id == row.id)
                                .order_by(PatrolScan.device_time, PatrolScan.id)).all()
        route = _route(row)
        p = patrol.progress(route, [patrol.Scan(s.checkpoint or "", s.device_time) for s in scans], row.due_at,
                            _window_end(row), now)
        seen: set[str] = set()
        server_at: dict[str, datetime] = {}
        for s in scans:
            cp = s.checkpoint or ""
            s.status = "repeat" if cp in seen else p.status_of(cp)
            if cp not in seen:
                server_at[cp] = s.server_time
            seen.add(cp)
        self._write(row, p, server_at)
        return p

    def _write(self, row: PatrolRound, p: patrol.Progress, server_at: dict[str, datetime] | None = None,
               alerts: dict[str, Any] | None = None) -> None:
        result = dict(row.result)  # a new dict: SQLAlchemy does not see changes made inside a JSON value
        old = {c["id"]: c for c in result.get("checkpoints", [])}
        result["checkpoints"] = [{
            "id": c.id, "at": _iso(c.at),
            "server_at": _iso(server_at[c.id]) if server_at and c.id in server_at else old.get(c.id, {}).get(
                "server_at"),
            "late": c.late, "out_of_order": c.out_of_order, "missed": c.missed, "skipped": c.skipped,
        } for c in p.checkpoints]
        result.update(visited=p.visited, missed=p.missed, late=p.late, out_of_order=p.out_of_order)
        if alerts is not None:
            result["alerts"] = alerts
        row.result = result
        row.state, row.started_at, row.finished_at = p.state, p.started_at, p.finished_at

    def _guard(self, session: Session, card: str | None, at: datetime) -> tuple[str | None, str]:
        """Who walks the round, and how we know: the staff member whose own card was swiped at a fixed
        checkpoint reader ("card"), else the guard on duty then, patrol post first ("roster")."""
        if card is not None:
            name = session.scalar(select(Person.name).join(Credential, Credential.person_id == Person.id).where(
                Credential.value == card, Person.kind == "staff", Credential.revoked.is_(False)))
            if name:
                return name, "card"
        return session.scalar(select(DutyAssignment.name).where(
            DutyAssignment.role == "guard", DutyAssignment.starts_at <= at, DutyAssignment.ends_at > at,
        ).order_by(case((DutyAssignment.post == "patrol", 0), else_=1), DutyAssignment.position).limit(1)), "roster"

    # -- the plan and the clock (every tick) ------------------------------------------------

    def plan(self, session: Session, now: datetime) -> int:
        """Create the rounds of the shifts starting yesterday and today that are not over yet, once each
        (by route, shift, day and number). A round whose window ended before it could be planned (the
        gateway was not running) is not made up afterwards. Returns how many were created."""
        if not self.cfg.plan:
            return 0
        today = now.astimezone(self.tz).date()
        days = [today - timedelta(days=1), today]
        existing = {tuple(r) for r in session.execute(select(
            PatrolRound.day, PatrolRound.route, PatrolRound.shift, PatrolRound.number).where(
            PatrolRound.day.in_([d.isoformat() for d in days])))}
        created = 0
        for day in days:
            for planned in patrol.rounds_for_day(self.cfg, self.shifts, day, self.tz, draw=DRAW):
                if (planned.day, planned.route, planned.shift, planned.number) in existing or planned.window_end <= now:
                    continue
                session.add(PatrolRound(route=planned.route, shift=planned.shift, day=planned.day,
                                        number=planned.number, due_at=planned.due_at, state="pending",
                                        result=self._fresh(planned, now)))
                created += 1
        if created:
            session.flush()
        return created

    def _fresh(self, planned: patrol.PlannedRound, now: datetime) -> dict[str, Any]:
        route = self.routes[planned.route]
        names = {c: self.checkpoints[c].name for c in route.checkpoints}
        shift = next((s.name for s in self.shifts if s.id == planned.shift), planned.shift)
        return {
            "route": {"id": route.id, "name": route.name, "checkpoints": list(route.checkpoints),
                      "expected_min": route.expected_min, "tolerance_min": route.tolerance_min,
                      "ordered": route.ordered, "names": names,
                      "key_areas": [c for c in route.checkpoints if self.checkpoints[c].key_area]},
            "shift_name": shift, "window_end": _iso(planned.window_end), "planned_at": _iso(now),
            "random": planned.random,
            "checkpoints": [{"id": c, "at": None, "server_at": None, "late": False, "out_of_order": False,
                             "missed": False, "skipped": False} for c in route.checkpoints],
            "visited": [], "missed": [], "late": [], "out_of_order": [], "alerts": {},
        }

    def tick(self, session: Session, now: datetime, alarms: dict[str, OpenAlarm]) -> list[Effect]:
        """Plan, then close rounds whose window has ended and raise the alerts that have fallen due."""
        if not self.enabled:
            return []
        self.plan(session, now)
        self._note_alarm_ids(session)
        rows = session.scalars(select(PatrolRound).where(
            (PatrolRound.state == "in_progress") | ((PatrolRound.state == "pending") & (PatrolRound.due_at <= now)),
        ).order_by(PatrolRound.due_at, PatrolRound.id)).all()
        scans: dict[int, list[patrol.Scan]] = {r.id: [] for r in rows}
        started = [r.id for r in rows if r.state == "in_progress"]
        if started:
            for s in session.scalars(select(PatrolScan).where(PatrolScan.round_id.in_(started))):
                scans[s.round_id or 0].append(patrol.Scan(s.checkpoint or "", s.device_time))
        grace, stall = timedelta(minutes=self.cfg.start_grace_min), timedelta(minutes=self.cfg.stall_min)
        effects: list[Effect] = []
        for row in rows:
            window_end = _window_end(row)
            p = patrol.progress(_route(row), scans[row.id], row.due_at, window_end, now)
            alerted = dict(row.result.get("alerts", {}))
            due = patrol.alerts_due(p, row.due_at, window_end, alerted, now, grace, stall)
            for alert in due:
                alerted[alert.kind] = {"due": _iso(alert.due), "at": _iso(now), "raised": not alert.stale}
                if alert.stale:
                    continue
                key = alarm_key(row.id)
                current = alarms[key] if key in alarms else store.open_alarms(session, [key]).get(key)
                effects += raise_condition(key, f"patrol-{row.route}", "patrol_overdue", current, new_id(), now,
                                           place=self._describe(session, row, p, alert.kind))
                row.alerted_at = row.alerted_at or now
                row.alarm_id = None  # filled in on the next tick, once the service has written the alarm
                self._awaiting_alarm.add(row.id)
            if due or p.state != row.state:
                self._write(row, p, alerts=alerted)
        return effects

    def _note_alarm_ids(self, session: Session) -> None:
        for round_id in list(self._awaiting_alarm):
            alarm_id = session.scalar(select(Alarm.id).where(Alarm.key == alarm_key(round_id))
                                      .order_by(Alarm.id.desc()).limit(1))
            row = session.get(PatrolRound, round_id)
            if alarm_id is not None and row is not None:
                row.alarm_id = alarm_id
            self._awaiting_alarm.discard(round_id)

    def _describe(self, session: Session, row: PatrolRound, p: patrol.Progress, kind: str) -> str:
        """The alarm's place line, for the guard and whoever it escalates to."""
        result = row.result
        route = result.get("route", {}).get("name", row.route)
        names = result.get("route", {}).get("names", {})
        due = row.due_at.astimezone(self.tz)
        what = f"round {row.number} of {route} ({result.get('shift_name', row.shift)}, {row.day})"
        if kind == "not_started":
            text = f"patrol {what} due {due:%H:%M} not started"
        else:
            last = p.last_scan_at.astimezone(self.tz) if p.last_scan_at else due
            todo = [names.get(c.id, c.id) for c in p.checkpoints if c.at is None]
            text = (f"patrol {what} stalled: no scan since {last:%H:%M}; still to visit: {', '.join(todo)}"
                    if p.state == "in_progress" else f"patrol {what} ended incomplete: missed {', '.join(todo)}")
        guard = row.guard or self._guard(session, None, row.due_at)[0]
        return f"{text}; guard on duty: {guard}" if guard else text

    def keys(self, session: Session) -> list[str]:
        """The alarms tick() may touch: those of the rounds still open."""
        if not self.enabled:
            return []
        ids = session.scalars(select(PatrolRound.id).where(PatrolRound.state.in_(patrol.OPEN_STATES)))
        return [alarm_key(i) for i in ids]


def _route(row: PatrolRound) -> Route:
    """The route as it was when the round was planned (kept in the round's result)."""
    snap = row.result.get("route", {})
    return Route(id=snap.get("id", row.route), name=snap.get("name", row.route),
                 checkpoints=snap.get("checkpoints") or ["?"], expected_min=snap.get("expected_min", 30),
                 tolerance_min=snap.get("tolerance_min", 10), ordered=snap.get("ordered", True))


def _window_end(row: PatrolRound) -> datetime:
    text = row.result.get("window_end")
    return datetime.fromisoformat(text) if text else row.due_at + timedelta(hours=1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
