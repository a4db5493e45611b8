"""The duty roster's rules: shift times past midnight, who is on duty at a given time, the staffing check against
the standards' numbers, whom an unacknowledged alarm goes to, and the open items a handover carries over."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from gateway.config import DutyConfig, EscalationConfig, RosterEntry, ShiftTemplate
from gateway.rules.escalation import Unacknowledged, escalations_due
from gateway.rules.roster import (
    Duty,
    DutyContact,
    carry_over,
    duty_day,
    duty_window,
    escalation_order,
    gaps,
    guards_needed,
    on_duty,
    open_items,
    person_id,
    shift_need,
    shift_times,
    staffing_warnings,
    week_of,
)

TZ = ZoneInfo("Asia/Shanghai")
D1, D2 = date(2026, 12, 1), date(2026, 12, 2)  # a Tuesday and a Wednesday
SHIFTS = [{"id": "day", "name": "Day", "from": "08:00", "to": "20:00"},
          {"id": "night", "name": "Night", "from": "20:00", "to": "08:00"},
          {"id": "drop-off", "name": "Drop-off", "from": "07:00", "to": "08:30", "post": "gate"}]
DUTY = DutyConfig.model_validate({"school_size": 2000, "shifts": SHIFTS})
BY_ID = {s.id: s for s in DUTY.shifts}
_ids = count(1)


def at(day: date, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes), tzinfo=TZ)


def duty(name: str, shift: str = "day", day: date = D1, role: str = "guard", position: int = 0,
         username: str | None = None, post: str | None = None, phone: str | None = None) -> Duty:
    start, end = shift_times(BY_ID[shift], day, TZ)
    return Duty(next(_ids), day, shift, start, end, role, name, username, phone, post, position)


def shift(start: str, end: str, **more: object) -> ShiftTemplate:
    return ShiftTemplate.model_validate({"id": "s", "name": "S", "from": start, "to": end, **more})


# -- times ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("08:00", "20:00", (at(D1, "08:00"), at(D1, "20:00"))),
    ("20:00", "08:00", (at(D1, "20:00"), at(D2, "08:00"))),  # overnight: ends the next morning
    ("00:00", "08:00", (at(D1, "00:00"), at(D1, "08:00"))),
    ("22:30", "00:00", (at(D1, "22:30"), at(D2, "00:00"))),  # to midnight
    ("08:00", "08:00", (at(D1, "08:00"), at(D2, "08:00"))),  # round the clock
])
def test_shift_times_on_a_date(start: str, end: str, expected: tuple[datetime, datetime]) -> None:
    assert shift_times(shift(start, end), D1, TZ) == expected


def test_shift_times_across_a_clock_change_are_local() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-10-25 03:00 CEST -> 02:00 CET: the night is 13 hours long
    start, end = shift_times(shift("19:00", "07:00"), date(2026, 10, 24), berlin)
    assert (start.hour, end.hour, end.astimezone(UTC) - start.astimezone(UTC)) == (19, 7, timedelta(hours=13))


@pytest.mark.parametrize(("now", "expected"), [
    (at(D2, "03:00"), D1),  # the night shift that started yesterday evening
    (at(D2, "06:59"), D1),
    (at(D2, "07:00"), D2),  # the drop-off shift opens the new duty day
    (at(D2, "23:00"), D2),
])
def test_the_duty_day_starts_with_the_first_shift(now: datetime, expected: date) -> None:
    assert duty_day(DUTY.shifts, now, TZ) == expected


def test_a_duty_day_spans_its_shifts_and_a_week_starts_on_monday() -> None:
    assert duty_window(DUTY.shifts, D1, TZ) == (at(D1, "07:00"), at(D2, "08:00"))
    assert duty_window([], D1, TZ) == (at(D1, "00:00"), at(D2, "00:00"))
    assert week_of(D1)[0] == date(2026, 11, 30) and week_of(D1)[-1] == date(2026, 12, 6)
    assert week_of(date(2026, 11, 30)) == week_of(date(2026, 12, 6))


# -- who is on duty ------------------------------------------------------------------------------------


ROSTER = [
    duty("Wang", position=1, username="wang"), duty("Li", position=0, username="li"),
    duty("Principal Zhao", role="leader", phone="13800000001"), duty("Teacher Sun", role="teacher"),
    duty("Chen", "night"), duty("Zhou", "night", position=1), duty("Vice Zhang", "night", role="leader"),
    duty("Li", "drop-off", D2, username="li", post="gate"), duty("Wu", "drop-off", D2, position=1, post="gate"),
    duty("Chen", "night", D2),
]


@pytest.mark.parametrize(("now", "guards", "leader", "others"), [
    (at(D1, "07:59"), [], None, []),  # before the first shift: nobody
    (at(D1, "08:00"), ["Li", "Wang"], "Principal Zhao", ["Teacher Sun"]),  # starts inclusive, guards in order
    (at(D1, "19:59"), ["Li", "Wang"], "Principal Zhao", ["Teacher Sun"]),
    (at(D1, "20:00"), ["Chen", "Zhou"], "Vice Zhang", []),  # ends exclusive: the night shift has taken over
    (at(D2, "03:00"), ["Chen", "Zhou"], "Vice Zhang", []),  # past midnight: yesterday's night shift
    (at(D2, "07:30"), ["Chen", "Li", "Zhou", "Wu"], "Vice Zhang", []),  # the drop-off guards join the night's
    (at(D2, "08:15"), ["Li", "Wu"], None, []),  # the day shift of the 2nd has nobody: only the gate
    (at(D2, "21:00"), ["Chen"], None, []),
])
def test_who_is_on_duty_at_a_given_time(now: datetime, guards: list[str], leader: str | None,
                                        others: list[str]) -> None:
    here = on_duty(ROSTER, now)
    assert [d.name for d in here.guards] == guards
    assert (here.leader.name if here.leader else None) == leader
    assert [d.name for d in here.others] == others
    assert bool(here) == bool(guards or leader or others)


def test_someone_on_two_rows_at_once_is_named_once() -> None:
    rows = [duty("Li", username="li"), duty("Li", "drop-off", username="li", post="gate"), duty("Wu", "drop-off")]
    assert [d.name for d in on_duty(rows, at(D1, "08:10")).guards] == ["Li", "Wu"]


# -- escalation ----------------------------------------------------------------------------------------


FALLBACK = [RosterEntry(id="office", name="School office")]


def test_escalation_goes_to_the_guards_on_duty_then_the_leader() -> None:
    people = escalation_order(on_duty(ROSTER, at(D1, "09:00")), FALLBACK)
    assert [(p.id, p.name) for p in people] == [("li", "Li"), ("wang", "Wang"), ("principal-zhao", "Principal Zhao")]
    assert isinstance(people[2], DutyContact) and people[2].details() == {"role": "leader", "phone": "13800000001"}
    assert people[0].details() == {"role": "guard"}  # type: ignore[attr-defined]


def test_nobody_on_the_roster_now_falls_back_to_the_configured_roster() -> None:
    assert escalation_order(on_duty(ROSTER, at(D1, "07:00")), FALLBACK) == FALLBACK
    assert escalation_order(on_duty([], at(D1, "09:00")), []) == []
    only_teacher = [duty("Teacher Sun", role="teacher")]
    assert escalation_order(on_duty(only_teacher, at(D1, "09:00")), FALLBACK) == FALLBACK, \
        "a duty teacher is not called for alarms"


def test_escalation_steps_through_who_is_on_duty() -> None:
    people = escalation_order(on_duty(ROSTER, at(D1, "09:00")), FALLBACK)
    raised = at(D1, "09:00").astimezone(UTC)
    policy = EscalationConfig(after_s={"panic": 30}, repeat_s=60)
    steps = [escalations_due([Unacknowledged(7, "panic", raised, level, False)],
                             raised + timedelta(seconds=seconds), policy, people)
             for level, seconds in ((0, 30), (1, 90), (2, 150), (3, 9999))]
    assert [[s.person.name for s in step] for step in steps] == [["Li"], ["Wang"], ["Principal Zhao"], []]


@pytest.mark.parametrize(("username", "name", "expected"), [
    ("guard1", "张伟", "guard1"),
    ("Guard_1", "张伟", "guard-1"),  # not a valid topic id as it is: slugged
    (None, "Wang Fang", "wang-fang"),
    ("", "Li  Lei (day)", "li-lei-day"),
    (None, "张伟", "duty-" + hashlib.sha256("张伟".encode()).hexdigest()[:10]),  # stable per name
])
def test_the_notify_id_is_the_user_name_or_a_slug_of_the_name(username: str | None, name: str,
                                                              expected: str) -> None:
    assert person_id(username, name) == expected
    RosterEntry(id=expected, name=name)  # a valid roster id


# -- staffing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "guards"), [
    (0, 1), (99, 1), (100, 2), (999, 2), (1000, 3), (1499, 3), (1500, 4), (1999, 4), (2000, 5), (2500, 6),
])
def test_guards_needed_by_school_size(size: int, guards: int) -> None:
    assert guards_needed(size) == guards


@pytest.mark.parametrize(("guards", "post", "expected"), [
    (0, "any", (5, "size")),
    (3, "any", (3, "setting")),
    (0, "patrol", (5, "size")),
    (0, "gate", (2, "gate")),  # two at the gate at drop-off and pick-up
    (1, "gate", (2, "gate")),  # the standard is a floor
    (3, "gate", (3, "gate")),
])
def test_what_a_shift_needs(guards: int, post: str, expected: tuple[int, str]) -> None:
    assert shift_need(shift("07:00", "08:30", guards=guards, post=post), 2000) == expected


def full_day(day: date) -> list[Duty]:
    return [*(duty(n, "day", day, position=i) for i, n in enumerate("ABCDE")),
            *(duty(n, "night", day, position=i) for i, n in enumerate("FGHIJ")),
            duty("K", "drop-off", day, post="gate"), duty("L", "drop-off", day, position=1, post="gate"),
            duty("Leader 1", "day", day, role="leader"), duty("Leader 2", "night", day, role="leader")]


def texts(rows: list[Duty], config: DutyConfig = DUTY, day: date = D2) -> list[str]:
    return [str(w) for w in staffing_warnings(config, rows, day, TZ)]


def test_a_fully_staffed_day_has_no_warnings() -> None:
    assert texts(full_day(D1) + full_day(D2)) == []


def without(rows: list[Duty], *names: str, day: date = D2) -> list[Duty]:
    return [d for d in rows if not (d.day == day and d.name in names)]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda rows: without(rows, "G", "H", "I", "J"), ["Night 2026-12-02: 1 guard, 5 needed for 2,000 people"]),
    (lambda rows: without(rows, "A", "B", "C"), ["Day 2026-12-02: 2 guards, 5 needed for 2,000 people"]),
    (lambda rows: without(rows, *"ABCDE"), ["Day 2026-12-02: 0 guards, 5 needed for 2,000 people"]),
    (lambda rows: without(rows, "L"), ["Drop-off 2026-12-02: 1 guard at the gate, 2 needed at drop-off and pick-up"]),
    (lambda rows: [*without(rows, "L"), duty("L", "drop-off", D2, post="patrol")],  # not at the gate
     ["Drop-off 2026-12-02: 1 guard at the gate, 2 needed at drop-off and pick-up"]),
    (lambda rows: [*without(rows, "B"), duty("A", "day", D2, position=9)],  # the same guard twice counts once
     ["Day 2026-12-02: 4 guards, 5 needed for 2,000 people"]),
    (lambda rows: without(rows, "Leader 1"), ["2026-12-02: no leader on duty 08:00-20:00"]),
    (lambda rows: without(rows, "Leader 2"), ["2026-12-02: no leader on duty 20:00-12-03 08:00"]),
    (lambda rows: without(rows, "Leader 2", day=D1), ["2026-12-02: no leader on duty 07:00-08:00"]),  # yesterday's
    (lambda rows: [d for d in rows if d.day != D1],  # nothing on the 1st: nobody covers the morning of the 2nd
     ["2026-12-02: no leader on duty 07:00-08:00"]),
    (lambda rows: [d for d in rows if d.role != "leader"], ["2026-12-02: no leader on duty 07:00-12-03 08:00"]),
    (lambda rows: [d for d in rows if d.day != D2], ["2026-12-02: nobody is on the roster yet"]),  # one, not 4
])
def test_staffing_warnings(change: object, expected: list[str]) -> None:
    assert texts(change(full_day(D1) + full_day(D2))) == expected  # type: ignore[operator]


def test_staffing_follows_the_config() -> None:
    rows = without(full_day(D1) + full_day(D2), "Leader 1", "C", "D", "E")
    small = DutyConfig.model_validate({"school_size": 150, "leader_required": False, "shifts": SHIFTS})
    assert texts(rows, small) == [], "150 people: 2 guards a shift; no leader required"
    fixed = DutyConfig.model_validate({"school_size": 150, "shifts": [{**SHIFTS[0], "guards": 3}, *SHIFTS[1:]]})
    assert texts(rows, fixed) == ["Day 2026-12-02: 2 guards, 3 needed", "2026-12-02: no leader on duty 08:00-20:00"]
    assert texts([], DutyConfig(school_size=2000)) == [], "no shifts: nothing can be assigned, nothing is checked"
    warning = staffing_warnings(fixed, rows, D2, TZ)[0]
    assert (warning.kind, warning.shift, warning.params["have"]) == ("guards", "day", 2)
    assert warning.text(lambda m: m.upper().replace("{SHIFT}", "{shift}").replace("{DAY}", "{day}")
                        .replace("{HAVE}", "{have}").replace("{NEED}", "{need}")) == \
        "Day 2026-12-02: 2 GUARDS, 3 NEEDED", "the console translates the message, then fills it in"


def test_gaps() -> None:
    t = [at(D1, f"{h:02d}:00") for h in range(24)]
    assert gaps([], t[8], t[20]) == [(t[8], t[20])]
    assert gaps([(t[7], t[10]), (t[12], t[14]), (t[13], t[21])], t[8], t[20]) == [(t[10], t[12])]
    assert gaps([(t[9], t[10]), (t[8], t[9])], t[8], t[10]) == []


# -- handover ------------------------------------------------------------------------------------------


NOW = at(D1, "08:00")
EARLIER = at(D1, "00:00").isoformat()
PREVIOUS = [{"text": "Gate 2 lock broken", "done": False, "since": EARLIER},
            {"text": "Parcel for Mr Wang", "done": True, "since": EARLIER},
            {"text": "Camera 3 offline", "done": False, "since": EARLIER}]


@pytest.mark.parametrize(("done", "new", "expected"), [
    ((), (), [("Gate 2 lock broken", False), ("Camera 3 offline", False)]),  # open items carried, done ones not
    ((1,), (), [("Gate 2 lock broken", False), ("Camera 3 offline", True)]),  # index among the open items
    ((0, 1), ("  Visitor badge  lost ", "", "Camera 3 offline"),
     [("Gate 2 lock broken", True), ("Camera 3 offline", True), ("Visitor badge lost", False),
      ("Camera 3 offline", False)]),  # closed and raised again
    ((), ("Gate 2 lock broken", "New", "New"), [("Gate 2 lock broken", False), ("Camera 3 offline", False),
                                               ("New", False)]),  # repeats dropped
])
def test_a_handover_carries_the_open_items_over(done: tuple[int, ...], new: tuple[str, ...],
                                               expected: list[tuple[str, bool]]) -> None:
    items = carry_over(PREVIOUS, done, new, NOW)
    assert [(i["text"], i["done"]) for i in items] == expected
    carried = [i for i in items if i["text"] in ("Gate 2 lock broken", "Camera 3 offline")][:2]
    assert all(i["since"] == EARLIER for i in carried), "an item keeps when it was first handed over"
    assert all(("done_at" in i) == i["done"] for i in items)
    assert [i["text"] for i in open_items(items)] == [t for t, d in expected if not d]
