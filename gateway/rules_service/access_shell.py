"""The gate: the imperative shell around gateway.rules.access, run by the rules service inside its
transaction.

A card or QR read becomes a decision (logged with who, what, where, which way, the result and why), a
`feedback` command back to the reader (LED and beeps), and where it applies an alarm: 5 consecutive
failures at one reader, a watch-listed person, a door forced or held open. A visitor's pass checks them
in and out. Doors are watched through their contact (an alarm input of type door_contact): the plain
door_contact alarm is replaced by forced / held open, which know about the grants.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import topics
from gateway.config import AccessConfig, Door
from gateway.events import Event, new_id
from gateway.records import lockdowns
from gateway.records.models import AccessEvent, Credential, Person, Visit, WatchEntry
from gateway.rules import access
from gateway.rules.alarms import Effect, OpenAlarm, clear_condition, raise_condition

READ_TYPES = ("campus.reader.card_read", "campus.reader.code_scanned")
Outgoing = list[tuple[str, dict[str, Any]]]


class Gate:
    def __init__(self, site: str, cfg: AccessConfig, tz: tzinfo, responders: frozenset[str] = frozenset()) -> None:
        self.site = site
        self.cfg = cfg
        self.tz = tz
        self.responders = responders  # staff numbers and departments let through during a lockdown
        self.hours = access.CampusHours(cfg.lessons, cfg.holidays, cfg.students_on_holidays)
        self.failures: dict[str, int] = {}  # reader -> consecutive failed reads
        self.doors: dict[str, access.DoorState] = {d.id: access.DoorState() for d in cfg.doors}
        self._door_by_reader = {r: d for d in cfg.doors for r in d.readers}
        self._door_by_contact = {d.contact: d for d in cfg.doors}
        self.decisions = 0

    def door_for_contact(self, key: str | None) -> Door | None:
        return self._door_by_contact.get(key) if key else None

    # -- reads ---------------------------------------------------------------------------

    def on_read(self, session: Session, event: Event, at: datetime, alarms: dict[str, OpenAlarm],
                ) -> tuple[list[Effect], Outgoing]:
        """Decide on one read; returns alarm effects and the messages to send after the commit (the reader's
        feedback, the log line for the console)."""
        data = event.data
        reader = event.device
        direction: access.Direction = "exit" if data.get("direction") == "exit" else "entry"
        value = data["credential"] if event.type == "campus.reader.card_read" else data["code"]
        row = session.scalar(select(Credential).where(Credential.value == value))
        person_row = session.get(Person, row.person_id) if row is not None else None
        visit = session.get(Visit, row.visit_id) if row is not None and row.visit_id is not None else None
        watchlisted = visit is not None and visit.id_number_hash is not None and session.scalar(
            select(WatchEntry.id).where(WatchEntry.id_number_hash == visit.id_number_hash, WatchEntry.active)
        ) is not None
        credential = person = None
        if row is not None and person_row is not None:
            credential = access.Credential(value=row.value, kind="qr" if row.kind == "qr" else "card",
                                           person_id=row.person_id, valid_from=row.valid_from,
                                           valid_until=row.valid_until, revoked=row.revoked)
            person = access.Person(id=person_row.id, kind=person_row.kind, name=person_row.name,  # type: ignore[arg-type]
                                   group=person_row.group_name, active=person_row.active,
                                   exit_permit_until=person_row.exit_permit_until, watchlisted=watchlisted,
                                   responder=person_row.kind == "staff" and bool(
                                       {person_row.external_id, person_row.group_name} & self.responders))
        last = None
        if person is not None:
            last = session.scalar(select(AccessEvent.direction).where(
                AccessEvent.person_id == person.id, AccessEvent.granted).order_by(AccessEvent.at.desc()).limit(1))
        point = access.AccessPoint(reader=reader, direction=direction, passback=self.cfg.anti_passback)
        decision = access.decide(point, credential, person, "exit" if last == "exit" else "entry" if last else None,
                                 self.hours, at, tz=self.tz, lockdown=lockdowns.active(session) is not None)
        self.decisions += 1

        shown = value if event.type == "campus.reader.card_read" else None  # a pass token is a secret
        logged = AccessEvent(id=event.id, at=at.replace(microsecond=0), reader=reader, direction=direction,
                             credential=shown, person_id=person.id if person else None,
                             person_name=person.name if person else None,
                             person_kind=person.kind if person else None,
                             visit_id=visit.id if visit else None, granted=decision.granted,
                             reason=decision.reason, detail=decision.detail,
                             note={"msg": decision.note, "params": decision.params} if decision.note else None,
                             passback=decision.passback_violation)
        session.add(logged)
        if visit is not None and decision.granted:
            self._visit_passed(session, visit, direction, reader, at)

        effects: list[Effect] = []
        count, alarm = access.count_failures(self.failures.get(reader, 0), decision,
                                             threshold=self.cfg.failure_threshold)
        self.failures[reader] = count
        if alarm:
            key = f"{reader}:failures"
            effects += raise_condition(key, reader, "access_failures", alarms.get(key), event.id, at,
                                       place=f"{count} failed attempts in a row at {reader}")
        if decision.alarm == "watchlist":
            key = f"{reader}:watchlist"
            name = person.name if person else "?"
            effects += raise_condition(key, reader, "watchlist", alarms.get(key), event.id, at,
                                       place=f"watch-listed person {name} at {reader}")
        door = self._door_by_reader.get(reader)
        if door is not None and decision.granted:
            self.doors[door.id] = access.door_granted(self.doors[door.id], at)

        result = "alert" if decision.alarm else "granted" if decision.granted else "denied"
        outgoing: Outgoing = [(topics.command(self.site, "reader", reader, "feedback"),
                               {"correlation_id": new_id(), "issued_by": "rules:access", "args": {"result": result}})]
        outgoing.append((topics.access_events(self.site), access_view(logged, self.tz)))
        return effects, outgoing

    def _visit_passed(self, session: Session, visit: Visit, direction: str, reader: str, at: datetime) -> None:
        if direction == "entry" and visit.state in ("registered", "approved"):
            visit.state, visit.checked_in_at = "on_site", at
        elif direction == "exit" and visit.state == "on_site":
            visit.state, visit.checked_out_at, visit.checked_out_by = "left", at, reader
            session.execute(update(Credential).where(Credential.visit_id == visit.id).values(revoked=True))

    # -- doors ---------------------------------------------------------------------------

    def on_contact(self, door: Door, is_open: bool, event_id: str, at: datetime, alarms: dict[str, OpenAlarm],
                   ) -> list[Effect]:
        state, found = access.door_contact(self.doors[door.id], is_open, at, grant_window_s=door.grant_window_s)
        self.doors[door.id] = state
        return self._door_alarms(door, found, event_id, at, alarms)

    def check_doors(self, now: datetime, alarms: dict[str, OpenAlarm]) -> list[Effect]:
        effects: list[Effect] = []
        for door in self.cfg.doors:
            state, found = access.door_check(self.doors[door.id], now, permitted_open_s=door.permitted_open_s)
            self.doors[door.id] = state
            effects += self._door_alarms(door, found, new_id(), now, alarms)
        return effects

    def door_keys(self) -> list[str]:
        return [f"{d.id}:{k}" for d in self.cfg.doors for k in ("forced", "held")]

    def _door_alarms(self, door: Door, found: list[access.DoorAlarm], event_id: str, at: datetime,
                     alarms: dict[str, OpenAlarm]) -> list[Effect]:
        effects: list[Effect] = []
        for alarm in found:
            key = f"{door.id}:{alarm.kind}"
            if alarm.active:
                effects += raise_condition(key, door.id, f"door_{alarm.kind}", alarms.get(key), event_id, at,
                                           place=f"{door.name or door.id}: {alarm.detail}")
            else:
                effects += clear_condition(alarms.get(key), event_id, at)
        return effects

    # -- visitors ------------------------------------------------------------------------

    def overstays(self, session: Session, now: datetime, alarms: dict[str, OpenAlarm]) -> list[Effect]:
        """Visitors still on site past their expected time plus the grace: one alert each."""
        grace = timedelta(minutes=self.cfg.overstay_grace_min)
        effects: list[Effect] = []
        for visit in session.scalars(select(Visit).where(Visit.state == "on_site",
                                                         Visit.overstay_alerted_at.is_(None))):
            start = visit.checked_in_at or visit.registered_at
            due = start + timedelta(minutes=visit.expected_minutes) + grace
            if now < due:
                continue
            visit.overstay_alerted_at = now
            key = f"visit-{visit.id}:overstay"
            host = f", host {visit.host_name}" if visit.host_name else ""
            effects += raise_condition(key, f"visit-{visit.id}", "visitor_overstay", alarms.get(key), new_id(), now,
                                       place=f"visitor {visit.name} still on site, expected out by "
                                             f"{due.astimezone(self.tz):%H:%M}{host}")
        return effects


def visit_keys(session: Session) -> list[str]:
    ids = session.scalars(select(Visit.id).where(Visit.state == "on_site", Visit.overstay_alerted_at.is_(None)))
    return [f"visit-{i}:overstay" for i in ids]


def access_view(row: AccessEvent, tz: tzinfo) -> dict[str, Any]:
    """One line of the access log as the console shows it (local time, to the second)."""
    return {"id": row.id, "at": row.at.astimezone(tz).isoformat(timespec="seconds"), "reader": row.reader,
            "direction": row.direction, "credential": row.credential, "person_id": row.person_id,
            "person": row.person_name, "kind": row.person_kind, "visit_id": row.visit_id, "granted": row.granted,
            "reason": row.reason, "detail": row.detail, "note": row.note, "passback": row.passback}

