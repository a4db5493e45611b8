"""The duty roster (值班表) as rules: a shift's times on a date, who is on duty at a moment, whether a day is
staffed as the standards want, whom an unacknowledged alarm goes to, and what a handover carries over.

Pure: the config, the assignments (plain `Duty` values) and the time in; answers out. The records side (the
table, the CSV import, the handover log) is gateway.records.roster.

The numbers are the standards' (../shared/STANDARDS.md, "People and patrols"): guards on duty by the size of
the school (公治〔2015〕168号; GB/T 29315-2022), two at the gate at drop-off and pick-up (Jiangsu, local), and
a leader on duty around the clock (领导带班).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Literal

from gateway.config import ID_PATTERN, DutyConfig, RosterEntry, ShiftTemplate

Role = Literal["guard", "leader", "teacher", "volunteer"]
ROLES: tuple[Role, ...] = ("guard", "leader", "teacher", "volunteer")
POSTS = ("gate", "patrol")
GATE_GUARDS = 2  # at the gate at drop-off and pick-up (Jiangsu, local rule)
# 公治〔2015〕168号 and GB/T 29315-2022: < 100 people: 1 guard; 100-999: 2; 1,000 and more: 3, and one more
# for every further 500.
SMALL_SCHOOL, LARGE_SCHOOL, EXTRA_PER = 100, 1000, 500


@dataclass(frozen=True)
class Duty:
    """Someone on a shift (a row of the roster, as plain data)."""

    id: int
    day: date  # the local date the shift starts on
    shift: str
    starts_at: datetime
    ends_at: datetime
    role: str
    name: str
    username: str | None = None
    phone: str | None = None
    post: str | None = None
    position: int = 0  # order of notification within the shift

    def on_duty(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    @property
    def who(self) -> str:
        """The same person on two rows (a day shift and a gate shift) counts once."""
        return self.username or self.name


# -- shift times ---------------------------------------------------------------------------------------


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def shift_times(shift: ShiftTemplate, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """When a shift starts and ends on a local date. A shift that ends before it starts runs past midnight;
    one that ends when it starts (08:00-08:00) lasts 24 hours (a leader's duty day)."""
    start = datetime.combine(day, _hhmm(shift.start), tzinfo=tz)
    end_day = day if shift.end > shift.start else day + timedelta(days=1)
    return start, datetime.combine(end_day, _hhmm(shift.end), tzinfo=tz)


def duty_window(shifts: Sequence[ShiftTemplate], day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """A duty day: from the first of the day's shifts to the last one's end (08:00 to 08:00 the next morning
    for a day and a night shift); midnight to midnight without shifts."""
    if not shifts:
        start = datetime.combine(day, time(0), tzinfo=tz)
        return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    times = [shift_times(s, day, tz) for s in shifts]
    return min(s for s, _ in times), max(e for _, e in times)


def duty_day(shifts: Sequence[ShiftTemplate], now: datetime, tz: tzinfo) -> date:
    """The duty day `now` is in: at 03:00 that is still yesterday's when the night shift started yesterday."""
    today = now.astimezone(tz).date()
    return today if duty_window(shifts, today, tz)[0] <= now else today - timedelta(days=1)


def week_of(day: date) -> list[date]:
    """Monday to Sunday of the week `day` is in."""
    monday = day - timedelta(days=day.weekday())
    return [monday + timedelta(days=i) for i in range(7)]


# -- who is on duty ------------------------------------------------------------------------------------


def _order(duty: Duty) -> tuple[int, datetime, str, int]:
    return duty.position, duty.starts_at, duty.name, duty.id


def _distinct(duties: Iterable[Duty]) -> list[Duty]:
    seen: set[str] = set()
    kept = []
    for duty in duties:
        if duty.who not in seen:
            seen.add(duty.who)
            kept.append(duty)
    return kept


@dataclass(frozen=True)
class OnDuty:
    guards: list[Duty] = field(default_factory=list)  # in order of notification
    leaders: list[Duty] = field(default_factory=list)  # the leader on duty (领导带班) first
    others: list[Duty] = field(default_factory=list)  # duty teachers (值周) and volunteers

    @property
    def leader(self) -> Duty | None:
        return self.leaders[0] if self.leaders else None

    @property
    def everyone(self) -> list[Duty]:
        return [*self.guards, *self.leaders, *self.others]

    def __bool__(self) -> bool:
        return bool(self.guards or self.leaders or self.others)


def on_duty(assignments: Iterable[Duty], now: datetime) -> OnDuty:
    """Who is on duty at `now`: guards in their order of notification, the leader, the others; someone on two
    rows at once (a day shift and the gate at drop-off) is named once."""
    here = sorted((d for d in assignments if d.on_duty(now)), key=_order)
    return OnDuty(guards=_distinct(d for d in here if d.role == "guard"),
                  leaders=_distinct(d for d in here if d.role == "leader"),
                  others=_distinct(d for d in here if d.role not in ("guard", "leader")))


# -- escalation ----------------------------------------------------------------------------------------


class DutyContact(RosterEntry):
    """A person on duty as a roster entry for escalation (gateway.rules.escalation), with their role and phone
    for whoever acts on the notification."""

    role: str = "guard"
    phone: str | None = None

    def details(self) -> dict[str, str]:
        return {"role": self.role, **({"phone": self.phone} if self.phone else {})}


_ID = re.compile(ID_PATTERN)


def person_id(username: str | None, name: str) -> str:
    """An id for the notify topic (rules/notify/<id>, gateway.topics.notify): the console user name, else a slug
    of the name; a name with no Latin letters or digits (张伟) gets a stable id from its hash."""
    for text in (username, name):
        if text and _ID.fullmatch(text):  # match() would take 'wang\n': '$' matches before a newline
            return text
        slug = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")[:63]
        if slug:
            return slug
    return "duty-" + hashlib.sha256(name.encode()).hexdigest()[:10]


def contact(duty: Duty) -> DutyContact:
    return DutyContact(id=person_id(duty.username, duty.name), name=duty.name, role=duty.role, phone=duty.phone)


def escalation_order(now_on_duty: OnDuty, fallback: Sequence[RosterEntry]) -> list[RosterEntry]:
    """Whom an unacknowledged alarm goes to, one after the other: the guards on duty in their order, then the
    leader on duty. Nobody on the roster now (no roster kept, or a gap in it): the site config's `roster`."""
    people = [contact(d) for d in [*now_on_duty.guards, *now_on_duty.leaders]]
    return list(people) if people else list(fallback)


# -- staffing ------------------------------------------------------------------------------------------


def guards_needed(school_size: int) -> int:
    """Guards on duty for a school of this many people (students and staff)."""
    if school_size < SMALL_SCHOOL:
        return 1
    if school_size < LARGE_SCHOOL:
        return 2
    return 3 + (school_size - LARGE_SCHOOL) // EXTRA_PER


WarningKind = Literal["empty", "guards", "gate", "leader"]


@dataclass(frozen=True)
class StaffingWarning:
    """A shortfall a supervisor can act on: `message` is an English msgid with {params} (the console
    translates it), str() is the English text."""

    day: date
    kind: WarningKind
    message: str
    params: Mapping[str, Any]
    shift: str | None = None

    def text(self, translate: Any = None) -> str:
        return (translate(self.message) if translate else self.message).format(**self.params)

    def __str__(self) -> str:
        return self.text()


def shift_need(shift: ShiftTemplate, school_size: int) -> tuple[int, Literal["size", "setting", "gate"]]:
    """Guards a shift needs, and why: a gate shift (drop-off, pick-up) at least GATE_GUARDS; else the shift's
    own number when set, else the standards' number for the school's size."""
    if shift.post == "gate":
        return max(shift.guards, GATE_GUARDS), "gate"
    if shift.guards:
        return shift.guards, "setting"
    return guards_needed(school_size), "size"


SHORT_MESSAGES = {  # (why, exactly one guard?) -> msgid
    ("size", True): "{shift} {day}: 1 guard, {need} needed for {size} people",
    ("size", False): "{shift} {day}: {have} guards, {need} needed for {size} people",
    ("setting", True): "{shift} {day}: 1 guard, {need} needed",
    ("setting", False): "{shift} {day}: {have} guards, {need} needed",
    ("gate", True): "{shift} {day}: 1 guard at the gate, {need} needed at drop-off and pick-up",
    ("gate", False): "{shift} {day}: {have} guards at the gate, {need} needed at drop-off and pick-up",
}
NO_LEADER = "{day}: no leader on duty {start}-{end}"
EMPTY_DAY = "{day}: nobody is on the roster yet"


def _clock(at: datetime, day: date, tz: tzinfo) -> str:
    local = at.astimezone(tz)
    if local.date() == day:
        return local.strftime("%H:%M")
    if local.date() == day + timedelta(days=1) and local.time() == time(0):
        return "24:00"
    return local.strftime("%m-%d %H:%M")


def gaps(covered: Iterable[tuple[datetime, datetime]], start: datetime, end: datetime,
         ) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) no interval covers."""
    found, at = [], start
    for s, e in sorted(covered):
        if e <= at or s >= end:
            continue
        if s > at:
            found.append((at, s))
        at = max(at, e)
    if at < end:
        found.append((at, end))
    return found


def staffing_warnings(config: DutyConfig, assignments: Sequence[Duty], day: date, tz: tzinfo,
                      ) -> list[StaffingWarning]:
    """A duty day's shortfalls: each shift's guards against what it needs (shift_need), and the times of the
    day (duty_window) with no leader on duty when a leader is required. `assignments` should hold the day's
    rows and the day before's (a leader's night shift from yesterday covers this morning). A day nobody is on
    yet is one warning, not one per shift. No shifts in the config: nothing can be assigned, nothing is checked."""
    if not config.shifts:
        return []
    if not any(d.day == day for d in assignments):
        return [StaffingWarning(day, "empty", EMPTY_DAY, {"day": day.isoformat()})]
    found = []
    for shift in config.shifts:
        need, why = shift_need(shift, config.school_size)
        guards = [d for d in assignments if d.day == day and d.shift == shift.id and d.role == "guard"
                  and (why != "gate" or d.post != "patrol")]
        have = len(_distinct(guards))
        if have < need:
            found.append(StaffingWarning(day, "gate" if why == "gate" else "guards", SHORT_MESSAGES[why, have == 1],
                                         {"shift": shift.name, "day": day.isoformat(), "have": have, "need": need,
                                          "size": f"{config.school_size:,}"}, shift.id))
    if config.leader_required:
        start, end = duty_window(config.shifts, day, tz)
        leaders = [(d.starts_at, d.ends_at) for d in assignments if d.role == "leader"]
        for gap_start, gap_end in gaps(leaders, start, end):
            found.append(StaffingWarning(day, "leader", NO_LEADER, {
                "day": day.isoformat(), "start": _clock(gap_start, day, tz), "end": _clock(gap_end, day, tz)}))
    return found


@dataclass(frozen=True)
class Uncovered:
    """A shift running now short of the guards it needs (a post without a person on it): an alarm to the leader."""

    day: date
    shift: str
    text: str  # the warning in English (the alarm's place)

    @property
    def key(self) -> str:
        return f"post-uncovered:{self.day.isoformat()}:{self.shift}"


def uncovered_now(config: DutyConfig, assignments: Sequence[Duty], now: datetime, tz: tzinfo) -> list[Uncovered]:
    """The shifts running at `now` whose guards fall short (staffing_warnings of their day). A day nobody is on at
    all is the duty page's warning, not an alarm: the roster is not kept for it (a school setting up, or a
    gateway started before its roster is imported). `assignments` should hold today's, yesterday's and the day
    before's rows (an overnight shift began yesterday)."""
    found: list[Uncovered] = []
    today = now.astimezone(tz).date()
    for day in (today - timedelta(days=1), today):
        running = [s for s in config.shifts if shift_times(s, day, tz)[0] <= now < shift_times(s, day, tz)[1]]
        if not running:
            continue
        warnings = staffing_warnings(config, assignments, day, tz)
        for shift in running:
            for w in warnings:
                if w.kind in ("guards", "gate") and w.shift == shift.id:
                    found.append(Uncovered(day, shift.id, f"{shift.name}: {w.text()}"))
                    break
    return found


# -- handover ------------------------------------------------------------------------------------------


def open_items(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The items of a handover still to be done (they go to the next one)."""
    return [dict(i) for i in items if not i.get("done")]


def carry_over(previous: Sequence[Mapping[str, Any]], done: Iterable[int], new: Iterable[str], now: datetime,
               ) -> list[dict[str, Any]]:
    """A handover's items: the previous handover's open items (those whose index in open_items(previous) is
    in `done` are marked done now and stop there), then the new ones (blank lines and repeats dropped). Each
    item keeps `since`, when it was first handed over."""
    closed = set(done)
    items = []
    for index, item in enumerate(open_items(previous)):
        finished = index in closed
        items.append({"text": str(item.get("text", "")), "done": finished,
                      "since": item.get("since") or now.isoformat(),
                      **({"done_at": now.isoformat()} if finished else {})})
    known = {i["text"] for i in items if not i["done"]}
    for text in new:
        text = " ".join(text.split())
        if text and text not in known:
            known.add(text)
            items.append({"text": text, "done": False, "since": now.isoformat()})
    return items
