"""The duty roster in the records: assignments to shifts (added, removed, imported from CSV, a week copied),
who is on duty now, and the shift handover log (交接班) with its open items carried over.

Database functions only, no web: the caller owns the transaction (one `sessions.begin()`), so a change and its
audit row commit together. What a supervisor or guard can correct is a RosterError: an English message id
with {params}, which the console translates (as gateway.records.visits.VisitError). The rules (shift times,
who is on duty, staffing, carry-over) are gateway.rules.roster.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.config import DutyConfig, RosterEntry, ShiftTemplate
from gateway.personal import PHONE_ERROR, clean_phone
from gateway.records import store
from gateway.records.errors import FormError
from gateway.records.models import DutyAssignment, DutyLeave, Handover, User
from gateway.rules import roster as rules
from gateway.rules.roster import Duty, OnDuty, StaffingWarning

MAX_CSV_ROWS = 10_000
MAX_NOTES = 4000
MAX_ITEMS = 50
MAX_ITEM = 500


class RosterError(FormError):
    """A roster change or handover that cannot be done as asked."""


def duty_of(row: DutyAssignment) -> Duty:
    return Duty(id=row.id, day=date.fromisoformat(row.day), shift=row.shift, starts_at=row.starts_at,
                ends_at=row.ends_at, role=row.role, name=row.name, username=row.username, phone=row.phone,
                post=row.post, position=row.position)


# -- checking what is given ------------------------------------------------------------------------------

# Schools keep rosters in Chinese spreadsheets: the CSV may say 保安 rather than guard.
ROLE_NAMES = {"guard": "guard", "leader": "leader", "teacher": "teacher", "volunteer": "volunteer",
              "保安": "guard", "保安员": "guard", "门卫": "guard", "带班领导": "leader", "领导": "leader",
              "值班领导": "leader", "值周": "teacher", "值周教师": "teacher", "值班教师": "teacher", "教师": "teacher",
              "志愿者": "volunteer"}
POST_NAMES = {"gate": "gate", "patrol": "patrol", "门岗": "gate", "校门": "gate", "巡逻": "patrol"}


def find_shift(config: DutyConfig, text: str) -> ShiftTemplate:
    """A shift by its id or its name."""
    text = text.strip()
    for shift in config.shifts:
        if text in (shift.id, shift.name):
            return shift
    known = ", ".join(s.id for s in config.shifts)
    if not known:
        raise RosterError("no shifts are set up: add them to the site config (duty.shifts)", "shift")
    raise RosterError("there is no shift '{shift}' (the shifts are: {known})", "shift", shift=text, known=known)


def parse_day(text: str) -> date:
    """YYYY-MM-DD, or as Excel writes dates on a Chinese Windows (2026/12/1)."""
    match = re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text.strip())
    if match:
        try:
            return date(*(int(g) for g in match.groups()))
        except ValueError:
            pass
    raise RosterError("a date is written as YYYY-MM-DD", "day")


def check_role(text: str) -> str:
    role = ROLE_NAMES.get(text.strip().lower())
    if role is None:
        raise RosterError("the role is guard, leader, teacher or volunteer", "role")
    return role


def check_name(text: str) -> str:
    name = " ".join(text.split())
    if not name:
        raise RosterError("enter the name", "name")
    if len(name) > 100:
        raise RosterError("the name is longer than 100 characters", "name")
    return name


def check_phone(text: str | None) -> str | None:
    try:
        return clean_phone(text)
    except ValueError:
        raise RosterError(PHONE_ERROR, "phone") from None


def check_post(text: str | None, shift: ShiftTemplate) -> str | None:
    """The post given, else the shift's (gate or patrol; "any" means none in particular)."""
    if text is None or not text.strip():
        return shift.post if shift.post in rules.POSTS else None
    post = POST_NAMES.get(text.strip().lower())
    if post is None:
        raise RosterError("the post is gate or patrol", "post")
    return post


def check_username(session: Session, text: str | None) -> str | None:
    """A console user name (so the console knows who on the roster is logged in), or none."""
    if text is None or not text.strip():
        return None
    username = text.strip()
    if session.scalar(select(User.id).where(User.username == username)) is None:
        raise RosterError("there is no console user '{username}'", "username", username=username)
    return username


@dataclass(frozen=True)
class _Wanted:
    day: date
    shift: ShiftTemplate
    role: str
    name: str
    username: str | None
    phone: str | None
    post: str | None


# -- the roster ----------------------------------------------------------------------------------------


def assign(session: Session, config: DutyConfig, tz: tzinfo, *, day: date | str, shift: str, role: str, name: str,
           username: str | None = None, phone: str | None = None, post: str | None = None, actor: str,
           now: datetime, client: str | None = None) -> DutyAssignment:
    """Someone on a shift of a day, last in the shift's order of notification for their role."""
    template = find_shift(config, shift)
    wanted = _Wanted(day if isinstance(day, date) else parse_day(day), template, check_role(role), check_name(name),
                     check_username(session, username), check_phone(phone), check_post(post, template))
    if _same_person(session, wanted) is not None:
        raise RosterError("{name} is already on this shift", "name", name=wanted.name)
    position = session.scalar(select(func.max(DutyAssignment.position)).where(
        DutyAssignment.day == wanted.day.isoformat(), DutyAssignment.shift == template.id,
        DutyAssignment.role == wanted.role))
    row = _add(session, wanted, -1 if position is None else position, tz, actor, now)
    session.flush()
    store.audit(session, actor, "roster.assign", f"duty:{row.id}", "ok", _detail(row), now, client)
    return row


def _add(session: Session, wanted: _Wanted, after: int, tz: tzinfo, actor: str, now: datetime) -> DutyAssignment:
    starts_at, ends_at = rules.shift_times(wanted.shift, wanted.day, tz)
    row = DutyAssignment(day=wanted.day.isoformat(), shift=wanted.shift.id, starts_at=starts_at, ends_at=ends_at,
                         role=wanted.role, name=wanted.name, username=wanted.username, phone=wanted.phone,
                         post=wanted.post, position=after + 1, created_at=now, created_by=actor)
    session.add(row)
    return row


def _same_person(session: Session, wanted: _Wanted) -> DutyAssignment | None:
    return session.scalars(select(DutyAssignment).where(
        DutyAssignment.day == wanted.day.isoformat(), DutyAssignment.shift == wanted.shift.id,
        DutyAssignment.name == wanted.name)).first()


def _detail(row: DutyAssignment) -> dict[str, Any]:
    return {"day": row.day, "shift": row.shift, "role": row.role, "name": row.name, "username": row.username,
            "post": row.post}


def remove(session: Session, assignment_id: int, actor: str, now: datetime, client: str | None = None,
           ) -> DutyAssignment:
    row = session.get(DutyAssignment, assignment_id)
    if row is None:
        raise RosterError("there is no such assignment (someone may have removed it already)")
    session.delete(row)
    store.audit(session, actor, "roster.remove", f"duty:{assignment_id}", "ok", _detail(row), now, client)
    return row


def _ordered(query: Any) -> Any:
    return query.order_by(DutyAssignment.day, DutyAssignment.starts_at, DutyAssignment.shift, DutyAssignment.role,
                          DutyAssignment.position, DutyAssignment.id)


def day_roster(session: Session, day: date) -> list[DutyAssignment]:
    """A day's roster, by shift start, role and order."""
    return list(session.scalars(_ordered(select(DutyAssignment).where(DutyAssignment.day == day.isoformat()))))


def roster_between(session: Session, first: date, last: date) -> list[DutyAssignment]:
    """The rosters of the days from `first` to `last`, both included."""
    return list(session.scalars(_ordered(select(DutyAssignment).where(
        DutyAssignment.day >= first.isoformat(), DutyAssignment.day <= last.isoformat()))))


def on_duty_now(session: Session, now: datetime) -> OnDuty:
    """Who is on duty at `now` (gateway.rules.roster.on_duty over the rows running then)."""
    rows = session.scalars(select(DutyAssignment).where(DutyAssignment.starts_at <= now,
                                                        DutyAssignment.ends_at > now))
    return rules.on_duty([duty_of(r) for r in rows], now)


def escalation_people(session: Session, now: datetime, fallback: Sequence[RosterEntry]) -> list[RosterEntry]:
    """Whom an unacknowledged alarm goes to now: the guards on duty, then the leader; else `fallback`."""
    return rules.escalation_order(on_duty_now(session, now), fallback)


def staffing(session: Session, config: DutyConfig, tz: tzinfo, days: Sequence[date]) -> list[StaffingWarning]:
    """The staffing warnings of these days, in order (each day checked with the day before's rows too)."""
    if not days or not config.shifts:
        return []
    rows = [duty_of(r) for r in roster_between(session, min(days) - timedelta(days=1), max(days))]
    return [w for day in sorted(days) for w in rules.staffing_warnings(config, rows, day, tz)]


@dataclass(frozen=True)
class Copied:
    copied: int
    skipped: int  # already there, or their shift is no longer in the config


def copy_week(session: Session, config: DutyConfig, tz: tzinfo, source: date, target: date, actor: str,
              now: datetime, client: str | None = None) -> Copied:
    """The roster of the week with `source` in it onto the week with `target` in it, day by day (Monday to
    Monday), in the same order; people already on the target's shift, and shifts no longer in the config,
    are skipped. The target's own assignments stay."""
    source_days, target_days = rules.week_of(source), rules.week_of(target)
    if source_days[0] == target_days[0]:
        raise RosterError("choose another week to copy to")
    shifts = {s.id: s for s in config.shifts}
    offset = target_days[0] - source_days[0]
    copied = skipped = 0
    last: dict[tuple[date, str, str], int] = {}
    for row in roster_between(session, source_days[0], source_days[-1]):
        shift = shifts.get(row.shift)
        if shift is None:
            skipped += 1
            continue
        wanted = _Wanted(date.fromisoformat(row.day) + offset, shift, row.role, row.name, row.username, row.phone,
                         row.post)
        if _same_person(session, wanted) is not None:
            skipped += 1
            continue
        key = (wanted.day, shift.id, wanted.role)
        if key not in last:
            position = session.scalar(select(func.max(DutyAssignment.position)).where(
                DutyAssignment.day == wanted.day.isoformat(), DutyAssignment.shift == shift.id,
                DutyAssignment.role == wanted.role))
            last[key] = -1 if position is None else position
        last[key] = _add(session, wanted, last[key], tz, actor, now).position
        session.flush()
        copied += 1
    store.audit(session, actor, "roster.copy_week", f"week:{target_days[0].isoformat()}", "ok",
                {"from": source_days[0].isoformat(), "copied": copied, "skipped": skipped}, now, client)
    return Copied(copied, skipped)


# -- CSV import ----------------------------------------------------------------------------------------


COLUMNS = ("date", "shift", "role", "name", "username", "phone", "post")
REQUIRED_COLUMNS = ("date", "shift", "role", "name")
COLUMN_NAMES = {**{c: c for c in COLUMNS}, "day": "date", "日期": "date", "班次": "shift", "角色": "role",
                "姓名": "name", "用户名": "username", "账号": "username", "电话": "phone", "手机": "phone",
                "岗位": "post"}


@dataclass(frozen=True)
class CsvProblem:
    """What is wrong where in a file: `message` is a msgid with {params} (the console translates it)."""

    line: int
    column: str | None
    message: str
    params: dict[str, Any] = field(default_factory=dict)

    def text(self, translate: Any = None) -> str:
        tr = translate or (lambda m: m)
        where = (tr("line {line}, column '{column}'") if self.column else tr("line {line}")).format(
            line=self.line, column=self.column)
        return f"{where}: {tr(self.message).format(**self.params)}"

    def __str__(self) -> str:
        return self.text()


@dataclass
class RosterImport:
    added: int = 0
    removed: int = 0  # on a shift the file names, but not in the file
    unchanged: int = 0
    updated: int = 0  # same person, new user name, phone, post or order
    shifts: int = 0  # (day, shift) pairs the file sets
    errors: list[CsvProblem] = field(default_factory=list)  # nothing imported if any

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class _Line:
    line: int
    wanted: _Wanted


def import_roster(session: Session, config: DutyConfig, tz: tzinfo, text: str, actor: str, now: datetime,
                  client: str | None = None) -> RosterImport:
    """A roster from CSV (header: date, shift, role, name, and optionally username, phone, post; the Chinese
    column names 日期, 班次, 角色, 姓名, 用户名, 电话, 岗位 too). The file sets the shifts it names: for each
    (date, shift) in it, the people on that shift become exactly those of the file, in the file's order;
    other shifts stay as they are. Every line is checked first; a file with any error imports nothing and
    says, for each, the line and column."""
    result = RosterImport()
    lines = _parse(session, config, text, result.errors)
    if result.errors:
        return result
    by_shift: dict[tuple[date, str], list[_Wanted]] = {}
    for item in lines:
        by_shift.setdefault((item.wanted.day, item.wanted.shift.id), []).append(item.wanted)
    result.shifts = len(by_shift)
    for (day, shift_id), wanted in by_shift.items():
        existing = {r.name: r for r in session.scalars(select(DutyAssignment).where(
            DutyAssignment.day == day.isoformat(), DutyAssignment.shift == shift_id))}
        positions: dict[str, int] = {}
        for w in wanted:
            position = positions[w.role] = positions.get(w.role, -1) + 1
            row = existing.pop(w.name, None)
            if row is None:
                _add(session, w, position - 1, tz, actor, now)
                result.added += 1
                continue
            values = (w.role, w.username, w.phone, w.post, position)
            if (row.role, row.username, row.phone, row.post, row.position) == values:
                result.unchanged += 1
            else:
                row.role, row.username, row.phone, row.post, row.position = values
                result.updated += 1
        for row in existing.values():
            session.delete(row)
            result.removed += 1
    session.flush()
    days = sorted({day for day, _ in by_shift})
    store.audit(session, actor, "roster.import", "roster", "ok", {
        "from": days[0].isoformat() if days else None, "to": days[-1].isoformat() if days else None,
        "shifts": result.shifts, "added": result.added, "updated": result.updated, "removed": result.removed,
        "unchanged": result.unchanged}, now, client)
    return result


def _parse(session: Session, config: DutyConfig, text: str, errors: list[CsvProblem]) -> list[_Line]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    expected = {"columns": ", ".join(COLUMNS)}
    try:
        header = next(reader)
    except StopIteration:
        errors.append(CsvProblem(1, None, "the file is empty (expected a header: {columns})", expected))
        return []
    except csv.Error as exc:
        errors.append(CsvProblem(1, None, "not a CSV file ({why})", {"why": str(exc)}))
        return []
    names = []
    for cell in header:
        name = COLUMN_NAMES.get(cell.strip().lower())
        if name is None:
            errors.append(CsvProblem(1, None, "unknown column '{name}' (expected: {columns})",
                                     {"name": cell.strip(), **expected}))
        names.append(name or cell.strip())
    for name in REQUIRED_COLUMNS:
        if name not in names:
            errors.append(CsvProblem(1, None, "missing column '{name}' (expected: {columns})",
                                     {"name": name, **expected}))
    for name in sorted(set(names)):
        if names.count(name) > 1:
            errors.append(CsvProblem(1, None, "column '{name}' is there twice", {"name": name}))
    if errors:
        return []
    users = set(session.scalars(select(User.username)))
    lines: list[_Line] = []
    first: dict[tuple[date, str, str], int] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(CsvProblem(reader.line_num, None, "not a CSV file ({why})", {"why": str(exc)}))
            break
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(lines) >= MAX_CSV_ROWS:
            errors.append(CsvProblem(line, None, "more than {n} rows in one file: split it", {"n": MAX_CSV_ROWS}))
            break
        if len(cells) > len(names):
            errors.append(CsvProblem(line, None, "{fields} fields, but the header has {columns} columns",
                                     {"fields": len(cells), "columns": len(names)}))
            continue
        value = {n: (cells[i].strip() if i < len(cells) else "") for i, n in enumerate(names)}
        wanted = _check_line(value, config, users, line, errors)
        if wanted is None:
            continue
        key = (wanted.day, wanted.shift.id, wanted.name)
        if key in first:
            errors.append(CsvProblem(line, "name", "{name} is already on line {other} for this shift",
                                     {"name": wanted.name, "other": first[key]}))
            continue
        first[key] = line
        lines.append(_Line(line, wanted))
    return lines


def _check_line(value: dict[str, str], config: DutyConfig, users: set[str], line: int,
                errors: list[CsvProblem]) -> _Wanted | None:
    found: dict[str, Any] = {}
    checks: list[tuple[str, Any]] = [
        ("date", lambda: parse_day(value["date"])), ("shift", lambda: find_shift(config, value["shift"])),
        ("role", lambda: check_role(value["role"])), ("name", lambda: check_name(value["name"])),
        ("phone", lambda: check_phone(value.get("phone")))]
    before = len(errors)
    for column, check in checks:
        try:
            found[column] = check()
        except RosterError as exc:
            errors.append(CsvProblem(line, column, exc.message, dict(exc.params)))
    username = value.get("username") or None
    if username is not None and username not in users:
        errors.append(CsvProblem(line, "username", "there is no console user '{username}'", {"username": username}))
    if "shift" in found:
        try:
            found["post"] = check_post(value.get("post"), found["shift"])
        except RosterError as exc:
            errors.append(CsvProblem(line, "post", exc.message, dict(exc.params)))
    if len(errors) > before:
        return None
    return _Wanted(found["date"], found["shift"], found["role"], found["name"], username, found["phone"],
                   found["post"])


# -- handover ------------------------------------------------------------------------------------------


def latest_handover(session: Session) -> Handover | None:
    return session.scalars(select(Handover).order_by(Handover.at.desc(), Handover.id.desc())).first()


def handovers(session: Session, limit: int = 30, before: datetime | None = None) -> list[Handover]:
    """The handover log, newest first."""
    query = select(Handover)
    if before is not None:
        query = query.where(Handover.at < before)
    return list(session.scalars(query.order_by(Handover.at.desc(), Handover.id.desc()).limit(limit)))


def carried_items(session: Session) -> tuple[int | None, list[dict[str, Any]]]:
    """The last handover's id and its items still open: what the next handover takes over."""
    last = latest_handover(session)
    if last is None:
        return None, []
    return last.id, rules.open_items(last.open_items.get("items", []))


def hand_over(session: Session, config: DutyConfig, *, shift: str, from_name: str, to_name: str, notes: str,
              done: Sequence[int] = (), new_items: Sequence[str] = (), previous: int | None, actor: str,
              now: datetime, client: str | None = None) -> Handover:
    """A shift handed over (交接班): who to whom, notes, and the open items: the last handover's undone ones
    (those at the indexes in `done` now marked done) and the new ones. `previous` is the handover the person
    saw (its id, or None for none): if someone handed over since, the open items shown were not the latest,
    so this one is refused and the form shown again."""
    template = find_shift(config, shift)
    from_name, to_name = " ".join(from_name.split()), " ".join(to_name.split())
    if not from_name:
        raise RosterError("enter who hands over", "from_name")
    if not to_name:
        raise RosterError("enter who takes over", "to_name")
    for key, name in (("from_name", from_name), ("to_name", to_name)):
        if len(name) > 100:
            raise RosterError("the name is longer than 100 characters", key)
    if to_name == from_name:
        raise RosterError("a shift is handed over to someone else", "to_name")
    notes = notes.strip()
    if len(notes) > MAX_NOTES:
        raise RosterError("the notes are longer than {n} characters", "notes", n=MAX_NOTES)
    texts = [t for t in (" ".join(t.split()) for t in new_items) if t]
    if any(len(t) > MAX_ITEM for t in texts):
        raise RosterError("an open item is longer than {n} characters", "items", n=MAX_ITEM)
    last_id, carried = carried_items(session)
    if last_id != previous:
        raise RosterError("someone else handed over meanwhile: check the open items and hand over again")
    items = rules.carry_over(carried, done, texts, now)
    if sum(1 for i in items if not i["done"]) > MAX_ITEMS:
        raise RosterError("more than {n} open items: close some first", "items", n=MAX_ITEMS)
    row = Handover(at=now, shift=template.id, from_name=from_name, to_name=to_name, notes=notes,
                   open_items={"items": items}, by=actor)
    session.add(row)
    session.flush()
    store.audit(session, actor, "roster.handover", f"handover:{row.id}", "ok", {
        "shift": template.id, "from": from_name, "to": to_name, "open": sum(1 for i in items if not i["done"]),
        "closed": sum(1 for i in items if i["done"])}, now, client)
    return row



# -- leave (请假, R05) ----------------------------------------------------------------------------------


def request_leave(session: Session, assignment_id: int, reason: str, actor: str, now: datetime,
                  client: str | None = None) -> DutyLeave:
    """A guard asks to leave an assignment not over yet, saying why; they stay on the post until it is approved."""
    row = session.get(DutyAssignment, assignment_id)
    if row is None:
        raise RosterError("there is no such assignment")
    if row.ends_at <= now:
        raise RosterError("that shift is over")
    reason = reason.strip()
    if not reason:
        raise RosterError("say why you ask for leave", "reason")
    if session.scalar(select(DutyLeave.id).where(DutyLeave.assignment_id == assignment_id,
                                                 DutyLeave.state == "requested")):
        raise RosterError("a leave request for this assignment is already waiting")
    leave = DutyLeave(assignment_id=assignment_id, name=row.name, reason=reason[:MAX_NOTES], requested_at=now,
                      requested_by=actor, state="requested")
    session.add(leave)
    session.flush()
    store.audit(session, actor, "roster.leave", f"leave:{leave.id}", "ok",
                {"assignment": assignment_id, "name": row.name, "reason": leave.reason}, now, client)
    return leave


def may_decide_leave(session: Session, username: str, supervisor: bool, now: datetime) -> bool:
    """The leader on duty decides a leave (带班领导), or a supervisor."""
    return supervisor or any(d.username == username for d in on_duty_now(session, now).leaders)


def decide_leave(session: Session, leave_id: int, approve: bool, actor: str, now: datetime, *,
                 replacement: str = "", client: str | None = None) -> DutyLeave:
    """Approved only once a replacement is named, who takes the assignment (and its place in the escalation
    order); or refused. The caller checks who may decide (may_decide_leave)."""
    leave = session.get(DutyLeave, leave_id, with_for_update=True)
    if leave is None:
        raise RosterError("there is no such leave request")
    if leave.state != "requested":
        raise RosterError("this leave request is already decided")
    assignment = session.get_one(DutyAssignment, leave.assignment_id)
    replacement = " ".join(replacement.split())
    if approve:
        if not replacement:
            raise RosterError("name the replacement first: the post is never left empty", "replacement")
        if len(replacement) > 100:
            raise RosterError("the name is longer than 100 characters", "replacement")
        if replacement == assignment.name:
            raise RosterError("the replacement is someone else", "replacement")
        assignment.name, assignment.username, assignment.phone = replacement, None, None
    leave.state = "approved" if approve else "refused"
    leave.replacement = replacement or None
    leave.decided_at, leave.decided_by = now, actor
    store.audit(session, actor, f"roster.leave_{leave.state}", f"leave:{leave.id}", "ok",
                {"assignment": assignment.id, "name": leave.name,
                 **({"replacement": replacement} if approve else {})}, now, client)
    return leave


def leaves(session: Session, since: datetime) -> list[DutyLeave]:
    """Leave requests waiting, and those decided since `since`, newest first."""
    return list(session.scalars(select(DutyLeave).where(
        (DutyLeave.state == "requested") | (DutyLeave.requested_at >= since)).order_by(DutyLeave.id.desc())))
