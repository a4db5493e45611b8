"""Visitors in the records: a visitor's registration (pass, watch-list check), approval, check-in and check-out at
the desk, the day-end sweep, supervisors' views of full numbers, and the purge of personal data after the
retention period.

Database functions only, no web: the caller owns the transaction (one `sessions.begin()`), so a visit, its
pass, its audit row and any alarm commit together or not at all. What a guard can correct is a VisitError:
an English message id with {fields}, which the console translates (as gateway.console.auth.AuthError).
The readers' side of a visit (a pass scanned at an entry or exit reader) is gateway.rules_service.access_shell.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.events import new_id
from gateway.personal import (
    PHONE_ERROR,
    PersonalData,
    PersonalDataError,
    clean_phone,
    mask,
    mask_phone,
    normalise_id,
)
from gateway.records import store
from gateway.records.errors import FormError
from gateway.records.models import Credential, Person, Visit, WatchEntry, utcnow
from gateway.rules.alarms import raise_condition

ID_TYPES = ("resident_id", "passport", "other")
# Visits still going on; the others are the log: left (checked out at a reader or the desk), refused (watch
# list, or the host declined), no_show and no_checkout (found by the day-end sweep).
OPEN_STATES = ("awaiting_approval", "registered", "approved", "on_site")
VISIT_STATES = (*OPEN_STATES, "left", "refused", "no_show", "no_checkout")
PASS_PREFIX = "V1."  # a pass token: V1. + secrets.token_urlsafe(18) (144 random bits)
PASS_TOKEN = re.compile(r"^V1\.[A-Za-z0-9_-]{24}$")
PASS_MARGIN_MIN = 60  # a pass stays valid this long past the expected end (access.visitor_pass_margin_min)
MAX_EXPECTED_MIN = 24 * 60
# GB 11643-1999: the 18th character of a resident ID is a check digit over the first 17.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

Field = Literal["id_number", "phone"]


class VisitError(FormError):
    """A registration or desk action that cannot be done as asked."""


# -- visitors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    visit: Visit
    token: str | None  # the pass (QR payload); None when refused or waiting for the host's approval
    watchlisted: bool  # the ID number is on the watch list: refused, and the caller raises the alarm


def resident_id_check_digit(first17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def check_id_number(id_type: str, id_number: str) -> str:
    """The number as stored (normalised), or VisitError saying what is wrong with it."""
    if id_type not in ID_TYPES:
        raise VisitError("unknown ID type", "id_type")
    number = normalise_id(id_number)
    if not number:
        raise VisitError("enter the ID number", "id_number")
    if id_type == "resident_id":
        if not re.fullmatch(r"\d{17}[\dX]", number):
            raise VisitError("a resident ID number has 18 characters: 17 digits and a digit or X", "id_number")
        if resident_id_check_digit(number[:17]) != number[17]:
            raise VisitError("this resident ID number is not valid (check digit): check it again", "id_number")
    elif id_type == "passport":
        if not re.fullmatch(r"[A-Z0-9]{5,20}", number):
            raise VisitError("a passport number has 5 to 20 letters and digits", "id_number")
    elif not 2 <= len(number) <= 32:
        raise VisitError("an ID number has 2 to 32 characters", "id_number")
    return number


def check_phone(phone: str | None) -> str | None:
    try:
        return clean_phone(phone)
    except ValueError:
        raise VisitError(PHONE_ERROR, "phone") from None


def watch_hit(session: Session, id_hash: str | None) -> WatchEntry | None:
    if id_hash is None:
        return None
    return session.scalars(select(WatchEntry).where(WatchEntry.id_number_hash == id_hash, WatchEntry.active)
                           .order_by(WatchEntry.id)).first()


def register_visit(session: Session, personal: PersonalData, *, name: str, id_type: str, id_number: str,
                   phone: str | None, host_id: int, purpose: str, expected_minutes: int, now: datetime,
                   registered_by: str, approval_needed: bool = False, pass_margin_min: int = PASS_MARGIN_MIN,
                   client: str | None = None) -> Registration:
    """A visitor registered at the gatehouse: a person of kind visitor, the visit with the ID and phone numbers
    encrypted and masked, and a QR pass valid from now to the expected end plus a margin. A watch-listed ID
    number refuses the visit (no pass) and says so: the caller raises the alarm (raise_watchlist_alarm).
    With approval_needed the pass is made when the host approves (approve_visit)."""
    name = " ".join(name.split())
    if not name:
        raise VisitError("enter the visitor's name", "name")
    if len(name) > 100:
        raise VisitError("the name is longer than 100 characters", "name")
    number = check_id_number(id_type, id_number)
    phone_number = check_phone(phone)
    purpose = " ".join(purpose.split())
    if not purpose:
        raise VisitError("enter the purpose of the visit", "purpose")
    if len(purpose) > 200:
        raise VisitError("the purpose is longer than 200 characters", "purpose")
    if not 1 <= expected_minutes <= MAX_EXPECTED_MIN:
        raise VisitError("the expected duration must be between 1 minute and 24 hours", "expected_minutes")
    host = session.get(Person, host_id)
    if host is None or host.kind != "staff" or not host.active:
        raise VisitError("choose the host from the staff list", "host")

    id_hash = personal.id_hash(number)
    hit = watch_hit(session, id_hash)
    person = Person(kind="visitor", name=name, active=hit is None, created_at=now, updated_at=now)
    session.add(person)
    session.flush()
    state = "refused" if hit else "awaiting_approval" if approval_needed else "registered"
    visit = Visit(person_id=person.id, name=name, id_type=id_type, id_number_enc=personal.encrypt(number),
                  id_number_masked=mask(number), id_number_hash=id_hash,
                  phone_enc=personal.encrypt(phone_number) if phone_number else None,
                  phone_masked=mask_phone(phone_number) if phone_number else None,
                  host_id=host.id, host_name=host.name, purpose=purpose, expected_minutes=expected_minutes,
                  state=state, registered_at=now, registered_by=registered_by, valid_from=now,
                  valid_until=now + timedelta(minutes=expected_minutes + pass_margin_min))
    session.add(visit)
    session.flush()
    token = None if state != "registered" else _issue_pass(session, visit, now, pass_margin_min)
    store.audit(session, registered_by, "visitor.register", f"visit:{visit.id}", "refused" if hit else "ok",
                {"name": name, "host": host.name, "state": state, **({"watchlist": hit.id} if hit else {})},
                now, client)
    return Registration(visit, token, hit is not None)


def _issue_pass(session: Session, visit: Visit, now: datetime, pass_margin_min: int) -> str:
    token = PASS_PREFIX + secrets.token_urlsafe(18)
    visit.valid_from = now
    visit.valid_until = now + timedelta(minutes=visit.expected_minutes + pass_margin_min)
    session.add(Credential(value=token, kind="qr", person_id=visit.person_id, visit_id=visit.id,
                           valid_from=visit.valid_from, valid_until=visit.valid_until, revoked=False, created_at=now))
    return token


def raise_watchlist_alarm(session: Session, visit: Visit, now: datetime,
                          where: str = "registering at the gatehouse") -> list[int]:
    """The top-priority alarm for a watch-listed visitor (latching: a person resets it); returns the alarm ids
    that changed, for the caller to publish after the commit."""
    key = f"visit-{visit.id}:watchlist"
    effects = raise_condition(key, f"visit-{visit.id}", "watchlist", store.open_alarms(session, [key]).get(key),
                              new_id(), now, place=f"watch-listed person {visit.name} ({where}), host "
                                                   f"{visit.host_name or '-'}: do not admit, alert the leader on duty")
    return store.apply_effects(session, effects)


def _visit(session: Session, visit_id: int) -> Visit:
    visit = session.get(Visit, visit_id, with_for_update=True)
    if visit is None:
        raise VisitError("there is no such visit")
    return visit


def approve_visit(session: Session, visit_id: int, actor: str, now: datetime, *,
                  pass_margin_min: int = PASS_MARGIN_MIN, client: str | None = None) -> str:
    """The host agreed: the pass is made, valid from now; returns its token."""
    visit = _visit(session, visit_id)
    if visit.state != "awaiting_approval":
        raise VisitError("this visit is not waiting for approval")
    visit.state = "approved"
    token = _issue_pass(session, visit, now, pass_margin_min)
    store.audit(session, actor, "visitor.approve", f"visit:{visit.id}", "ok", {"name": visit.name}, now, client)
    return token


def decline_visit(session: Session, visit_id: int, actor: str, now: datetime, client: str | None = None) -> Visit:
    """The host does not receive the visitor."""
    visit = _visit(session, visit_id)
    if visit.state != "awaiting_approval":
        raise VisitError("this visit is not waiting for approval")
    visit.state = "refused"
    store.audit(session, actor, "visitor.decline", f"visit:{visit.id}", "ok", {"name": visit.name}, now, client)
    return visit


def check_in(session: Session, visit_id: int, actor: str, now: datetime, client: str | None = None,
             ) -> tuple[Visit, list[int]]:
    """A guard lets a registered visitor in by hand (no reader at that gate, or it is down). Checks the watch
    list again (an entry may have been added since): a hit refuses the visit and raises the alarm; returns the
    visit and the alarm ids that changed."""
    visit = _visit(session, visit_id)
    if visit.state not in ("registered", "approved"):
        raise VisitError("this visitor cannot be checked in now ({state})", state=visit.state)
    if watch_hit(session, visit.id_number_hash) is not None:
        close_pass(session, visit, "refused")
        store.audit(session, actor, "visitor.checkin", f"visit:{visit.id}", "refused", {"why": "watchlist"}, now,
                    client)
        return visit, raise_watchlist_alarm(session, visit, now, "checking in at the gatehouse")
    if now >= visit.valid_until:
        raise VisitError("the pass has expired: register the visit again")
    visit.state, visit.checked_in_at = "on_site", now
    store.audit(session, actor, "visitor.checkin", f"visit:{visit.id}", "ok", {"name": visit.name}, now, client)
    return visit, []


def check_out(session: Session, visit_id: int, actor: str, now: datetime, client: str | None = None) -> Visit:
    """The visitor leaves past the desk: the visit ends and the pass is revoked."""
    visit = _visit(session, visit_id)
    if visit.state not in ("registered", "approved", "on_site"):
        raise VisitError("this visitor cannot be checked out ({state})", state=visit.state)
    visit.checked_out_at, visit.checked_out_by = now, actor
    close_pass(session, visit, "left")
    store.audit(session, actor, "visitor.checkout", f"visit:{visit.id}", "ok", {"name": visit.name}, now, client)
    return visit


def check_out_by_pass(session: Session, token: str, actor: str, now: datetime, client: str | None = None) -> Visit:
    """The desk's scanner: the pass as the scanner typed it checks its visitor out."""
    visit = visit_for_pass(session, token) if token.strip() else None
    if visit is None:
        raise VisitError("this is not a visitor pass of this gatehouse")
    if visit.state not in ("registered", "approved", "on_site"):
        raise VisitError("{name} has already left or was refused ({state})", name=visit.name, state=visit.state)
    return check_out(session, visit.id, actor, now, client)


def visit_for_pass(session: Session, token: str) -> Visit | None:
    """The visit a scanned pass belongs to (the token as the scanner typed it)."""
    credential = session.scalar(select(Credential).where(Credential.value == token.strip(), Credential.kind == "qr"))
    if credential is None or credential.visit_id is None:
        return None
    return session.get(Visit, credential.visit_id)


def pass_token(session: Session, visit_id: int) -> str | None:
    """The pass of a visit, to print it again (None once revoked)."""
    return session.scalar(select(Credential.value).where(Credential.visit_id == visit_id, Credential.kind == "qr",
                                                         Credential.revoked.is_(False)))


def close_pass(session: Session, visit: Visit, state: str) -> None:
    visit.state = state
    session.execute(update(Credential).where(Credential.visit_id == visit.id).values(revoked=True))


def visitors_on_site(session: Session) -> list[Visit]:
    return list(session.scalars(select(Visit).where(Visit.state == "on_site").order_by(Visit.checked_in_at)))


def current_visits(session: Session) -> list[Visit]:
    """Visits not over yet: waiting for approval, registered (pass valid, not yet in), on site."""
    return list(session.scalars(select(Visit).where(Visit.state.in_(OPEN_STATES)).order_by(Visit.registered_at)))


def recent_visits(session: Session, since: datetime, states: Sequence[str]) -> list[Visit]:
    return list(session.scalars(select(Visit).where(Visit.state.in_(states), Visit.registered_at >= since)
                                .order_by(Visit.registered_at.desc()).limit(200)))


def start_of_day(now: datetime, tz: tzinfo) -> datetime:
    return datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)


def sweep_day_end(session: Session, now: datetime, tz: tzinfo) -> dict[str, int]:
    """Visits from before today (the site's day) that never ended: on site -> no_checkout (walked out without
    checking out, or still inside: the guard finds out), registered but never came in -> no_show. Their passes
    are revoked. Safe to run any number of times (the rules service runs it hourly)."""
    today = start_of_day(now, tz)
    found = {"no_checkout": 0, "no_show": 0}
    rows = session.scalars(select(Visit).where(Visit.state.in_(OPEN_STATES), Visit.registered_at < today)).all()
    for visit in rows:
        if visit.state == "on_site":
            if (visit.checked_in_at or visit.registered_at) >= today:
                continue
            close_pass(session, visit, "no_checkout")
            found["no_checkout"] += 1
        else:
            close_pass(session, visit, "no_show")
            found["no_show"] += 1
    return found


# -- personal data ------------------------------------------------------------------------------


def reveal(session: Session, personal: PersonalData, visit_id: int, field: Field, actor: str,
           now: datetime | None = None, client: str | None = None) -> str:
    """The full ID or phone number of a visit, for a supervisor (the caller checks the role); every view is
    audited (personal_data.view) with who, when and which field."""
    now = now or utcnow()
    visit = session.get(Visit, visit_id)
    if visit is None:
        raise VisitError("there is no such visit")
    if field not in ("id_number", "phone"):
        raise VisitError("unknown field")
    if visit.purged_at is not None:
        raise VisitError("the personal data of this visit was deleted after the retention period")
    token = visit.id_number_enc if field == "id_number" else visit.phone_enc
    if token is None:
        raise VisitError("no phone number was given" if field == "phone" else "no ID number was given")
    try:
        value = personal.decrypt(token)
    except PersonalDataError as exc:
        raise VisitError("this number cannot be decrypted with the gateway's key ({why})", why=str(exc)) from exc
    store.audit(session, actor, "personal_data.view", f"visit:{visit.id}", "ok", {"field": field}, now, client)
    return value


PHOTO_DIR = "visitors"  # under the snapshot directory: visit-<id>.jpg


def photo_path(snapshot_dir: Path, visit_id: int) -> Path:
    return snapshot_dir / PHOTO_DIR / f"visit-{visit_id}.jpg"


def keep_photo(session: Session, snapshot_dir: Path, camera: str, visit_id: int) -> bool:
    """The gate camera's current view becomes the visitor's photo (readable by the gateway's user only)."""
    latest = snapshot_dir / camera / "latest.jpg"
    try:
        data = latest.read_bytes()
    except OSError:
        return False  # the camera has no picture now: the visit goes ahead without one
    path = photo_path(snapshot_dir, visit_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    session.execute(update(Visit).where(Visit.id == visit_id).values(photo_ref=f"visit-{visit_id}"))
    return True


def purge_personal_data(session: Session, older_than: datetime, now: datetime | None = None,
                        snapshot_dir: Path | None = None) -> int:
    """Visits that ended before `older_than` lose their ID and phone numbers (encrypted, masked, hashed) and
    photo; name, host, purpose and times stay in the visitor log. Returns how many visits were purged."""
    ended = func.coalesce(Visit.checked_out_at, Visit.valid_until)
    if snapshot_dir is not None:
        for visit_id in session.scalars(select(Visit.id).where(
                Visit.purged_at.is_(None), Visit.state.not_in(OPEN_STATES), ended < older_than,
                Visit.photo_ref.is_not(None))):
            photo_path(snapshot_dir, visit_id).unlink(missing_ok=True)
    result = session.execute(
        update(Visit)
        .where(Visit.purged_at.is_(None), Visit.state.not_in(OPEN_STATES), ended < older_than)
        .values(id_number_enc=None, id_number_masked=None, id_number_hash=None, phone_enc=None, phone_masked=None,
                photo_ref=None, purged_at=now or utcnow())
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


