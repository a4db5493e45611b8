"""Gate access: who may pass a reader now, wrong-attempt counting, door forced / held open, who is on site.

Pure: the reader, the credential and its person, their last passage, the campus hours and the time in; a
decision out. The service around it looks the card up, loads the last passage, calls `decide`, drives the
lock and the reader's LED, and records the passage. Time is an argument, so a test can say "09:00 on a
school day" without patching the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.config import Window
from gateway.windows import in_windows

PersonKind = Literal["student", "staff", "visitor"]
Direction = Literal["entry", "exit"]
Passback = Literal["off", "soft", "hard"]

SHANGHAI = ZoneInfo("Asia/Shanghai")

FAILURE_THRESHOLD = 5  # GB 50396: alarm after <= 5 consecutive failures

REASONS = ("granted", "unknown_credential", "revoked", "not_yet_valid", "expired", "inactive", "closed_campus",
           "holiday", "no_pass", "watchlist", "anti_passback", "visit_closed", "lockdown")

# Denials that count as wrong attempts at a reader (GB 50396): the card or pass itself is no good. Policy
# denials of a good card (closed campus, holiday, anti-passback) say nothing about someone trying cards and,
# at a busy gate during lessons, would raise the alarm for five different students; they neither count nor
# reset. A watch-listed person has an alarm of their own.
CREDENTIAL_FAILURES = frozenset(
    {"unknown_credential", "revoked", "not_yet_valid", "expired", "inactive", "no_pass", "visit_closed"})


@dataclass(frozen=True)
class Person:
    id: int
    kind: PersonKind
    name: str
    group: str | None = None  # class for students
    active: bool = True
    exit_permit_until: datetime | None = None  # a student's permission to leave during lessons (aware UTC)
    watchlisted: bool = False  # a high-risk person (visitors are matched by ID number upstream)
    responder: bool = False  # let through during a lockdown (lockdown.responders: a staff number or department)


@dataclass(frozen=True)
class Credential:
    value: str
    kind: Literal["card", "qr"]
    person_id: int
    valid_from: datetime | None = None  # aware UTC; a visitor pass's window
    valid_until: datetime | None = None
    revoked: bool = False


@dataclass(frozen=True)
class AccessPoint:
    reader: str
    direction: Direction
    door: str | None = None
    passback: Passback = "soft"


@dataclass(frozen=True)
class CampusHours:
    lessons: list[Window]  # closed campus during these (site's local time)
    holidays: list[str] = field(default_factory=list)  # YYYY-MM-DD: no lessons; students_on_holidays decides entry
    students_on_holidays: bool = False


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: str  # one of REASONS
    detail: str  # an English sentence for the log and exports
    passback_violation: bool = False  # soft anti-passback: granted but logged
    alarm: str | None = None  # "watchlist" when a watch-listed person presents anything
    # What the console shows beside the person, in the guard's language: a msgid with {fields} and its values
    # (times already local, a direction as its code, translated when shown).
    note: str = ""
    params: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def who(person: Person) -> str:
    """'student Li Ming (Class 3-2)', 'visitor Zhang San': how a guard's screen names a person."""
    return f"{person.kind} {person.name}" + (f" ({person.group})" if person.group else "")


def _what(credential: Credential) -> str:
    # a QR payload may be long or a secret token: name the card number only
    return f"card {credential.value}" if credential.kind == "card" else "QR pass"


def _local(at: datetime, tz: tzinfo) -> str:
    return at.astimezone(tz).strftime("%H:%M on %Y-%m-%d")


def _short(at: datetime, tz: tzinfo) -> str:
    """A time for any language: 2026-09-01 16:20."""
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")


def decide(point: AccessPoint, credential: Credential | None, person: Person | None,
           last_direction: Direction | None, hours: CampusHours, now: datetime, *,
           tz: tzinfo = SHANGHAI, lockdown: bool = False) -> Decision:
    """Whether to open for this credential at this reader now, and why, in a fixed order: the credential and
    the person first (unknown, revoked, inactive, watch list, pass window), then the passage (anti-passback),
    then the campus (closed during lessons, holidays). The first denial wins, so a guard sees the reason that
    matters most. A watch-listed person sets the alarm whatever the reason. `now` is aware; lessons are
    checked in the site's time zone `tz`, pass windows as instants (valid_from <= now < valid_until). During a
    `lockdown` only responders pass, whatever else would let a card through."""
    _require_aware("now", now)
    if credential is None:
        return Decision(False, "unknown_credential", "card or code not registered",
                        note="card or code not registered")
    if person is None or person.id != credential.person_id:
        return Decision(False, "unknown_credential", f"{_what(credential)} is not assigned to anyone",
                        note="not assigned to anyone")
    for name in ("valid_from", "valid_until"):
        _require_aware(f"credential {credential.value!r} {name}", getattr(credential, name))
    _require_aware(f"person {person.id} exit_permit_until", person.exit_permit_until)

    alarm = "watchlist" if person.watchlisted else None

    def deny(reason: str, detail: str, note: str, **params: str) -> Decision:
        return Decision(False, reason, detail, alarm=alarm, note=note, params=params)

    if credential.revoked:
        return deny("revoked", f"{_what(credential)} of {who(person)} has been revoked", "the card has been revoked")
    if not person.active:
        return deny("inactive", f"{who(person)} is no longer active", "no longer active")
    if person.watchlisted:
        return deny("watchlist", f"{who(person)} is on the watch list: do not admit, alert the leader on duty",
                    "on the watch list: do not admit, alert the leader on duty")
    if credential.valid_from is not None and now < credential.valid_from:
        at = _local(credential.valid_from, tz)
        return deny("not_yet_valid", f"{_what(credential)} of {who(person)} is valid from {at}", "valid from {at}",
                    at=_short(credential.valid_from, tz))
    if credential.valid_until is not None and now >= credential.valid_until:
        at = _local(credential.valid_until, tz)
        return deny("expired", f"{_what(credential)} of {who(person)} expired at {at}", "expired at {at}",
                    at=_short(credential.valid_until, tz))
    if lockdown and not person.responder:
        return deny("lockdown", f"the campus is locked down: only responders pass ({who(person)} is not one)",
                    "the campus is locked down: only responders pass")
    if person.kind == "visitor":
        if credential.valid_from is None or credential.valid_until is None:
            return deny("no_pass", f"{who(person)} has no visitor pass with a visit window: register the visit "
                                   f"at the gatehouse", "no visitor pass with a visit window: register the visit")
        if point.direction == "entry" and last_direction == "exit":
            return deny("visit_closed", f"{who(person)} has already left: the visit is closed, register a new one",
                        "already left: the visit is closed, register a new one")

    violation = point.passback != "off" and last_direction == point.direction
    if violation and point.passback == "hard":
        return deny("anti_passback", f"{who(person)}'s last passage was also an {point.direction} (anti-passback)",
                    "the last passage was also an {direction} (anti-passback)", direction=point.direction)
    note = f"; last passage was also an {point.direction} (logged)" if violation else ""
    verb = "enter" if point.direction == "entry" else "leave"

    def grant(detail: str = "", said: str = "", **params: str) -> Decision:
        # a soft anti-passback violation is its own mark in the log (passback_violation), not part of the note
        return Decision(True, "granted", f"{who(person)} may {verb}{detail}{note}", passback_violation=violation,
                        note=said, params=params)

    if person.kind != "student":
        return grant()  # staff always; visitors per their pass (checked above)
    local = now.astimezone(tz)
    day = local.date().isoformat()
    if day in hours.holidays:
        if point.direction == "entry" and not hours.students_on_holidays:
            return Decision(False, "holiday", f"{who(person)} may not enter on a holiday ({day})",
                            passback_violation=violation, note="may not enter on a holiday ({day})",
                            params={"day": day})
        return grant()
    if not in_windows(hours.lessons, local):
        return grant()
    if point.direction == "entry":
        return grant(" (late arrival during lessons)", "late arrival during lessons")
    permit = person.exit_permit_until
    if permit is not None and permit >= now:
        return grant(f" with an exit permission until {_local(permit, tz)}", "with an exit permission until {at}",
                     at=_short(permit, tz))
    if permit is None:
        return Decision(False, "closed_campus", f"{who(person)} may not leave during lessons without an exit "
                        "permission", passback_violation=violation,
                        note="may not leave during lessons without an exit permission")
    return Decision(False, "closed_campus", f"{who(person)} may not leave during lessons: the exit permission ended "
                    f"at {_local(permit, tz)}", passback_violation=violation,
                    note="may not leave during lessons: the exit permission ended at {at}",
                    params={"at": _short(permit, tz)})


def count_failures(previous: int, decision: Decision, *, threshold: int = FAILURE_THRESHOLD) -> tuple[int, bool]:
    """Consecutive wrong attempts at one reader: (new count, raise the alarm). The alarm fires once, when the
    count reaches the threshold; a grant resets the count. Denials of a good card for policy (closed campus,
    holiday, anti-passback, watch list) leave it as it was: see CREDENTIAL_FAILURES."""
    if decision.granted:
        return 0, False
    if decision.reason not in CREDENTIAL_FAILURES:
        return previous, False
    count = previous + 1
    return count, previous < threshold <= count


@dataclass(frozen=True)
class DoorState:
    open: bool = False
    opened_at: datetime | None = None
    granted_at: datetime | None = None  # the last grant not yet used by an opening
    forced: bool = False
    held: bool = False


@dataclass(frozen=True)
class DoorAlarm:
    kind: Literal["forced", "held"]
    active: bool
    detail: str


def door_granted(state: DoorState, at: datetime) -> DoorState:
    """A grant at the door's reader: the next opening within the grant window is not forced."""
    return replace(state, granted_at=at)


def door_contact(state: DoorState, is_open: bool, at: datetime, *,
                 grant_window_s: float = 10.0) -> tuple[DoorState, list[DoorAlarm]]:
    """The door contact changed (or repeated itself, which changes nothing). Opening with no grant within
    grant_window_s is forced (either side of the opening: the reader and the contact are stamped by different
    devices). One grant lets the door open once. Closing clears forced and held."""
    if is_open == state.open:
        return state, []
    if is_open:
        window = timedelta(seconds=grant_window_s)
        granted = state.granted_at is not None and abs(at - state.granted_at) <= window
        opened = DoorState(open=True, opened_at=at, granted_at=None, forced=not granted)
        if granted:
            return opened, []
        since = ("no grant before it" if state.granted_at is None else
                 f"last grant {(at - state.granted_at).total_seconds():.0f} s before, more than {grant_window_s:g} s")
        return opened, [DoorAlarm("forced", True, f"door forced open: {since}")]
    alarms = []
    if state.forced:
        alarms.append(DoorAlarm("forced", False, "door closed after being forced open"))
    if state.held:
        alarms.append(DoorAlarm("held", False, "door closed after being held open"))
    return DoorState(granted_at=state.granted_at), alarms


def door_check(state: DoorState, now: datetime, *, permitted_open_s: float) -> tuple[DoorState, list[DoorAlarm]]:
    """Called on a tick: a door open longer than its permitted time is held open, raised once until it closes."""
    if not state.open or state.held or state.opened_at is None:
        return state, []
    open_s = (now - state.opened_at).total_seconds()
    if open_s <= permitted_open_s:
        return state, []
    return replace(state, held=True), [
        DoorAlarm("held", True, f"door held open {open_s:.0f} s (permitted {permitted_open_s:g} s)")]


@dataclass(frozen=True)
class Passage:
    person_id: int
    kind: PersonKind
    direction: Direction
    at: datetime


def on_site(passages: Iterable[Passage]) -> dict[PersonKind, set[int]]:
    """Who is inside now, by kind: those whose latest passage is an entry (for a roll call or an evacuation).
    Passages may come in any order; of two at the same instant the later one in the input wins."""
    latest: dict[int, Passage] = {}
    for passage in passages:
        seen = latest.get(passage.person_id)
        if seen is None or passage.at >= seen.at:
            latest[passage.person_id] = passage
    inside: dict[PersonKind, set[int]] = {"student": set(), "staff": set(), "visitor": set()}
    for passage in latest.values():
        if passage.direction == "entry":
            inside[passage.kind].add(passage.person_id)
    return inside
