"""Gate access decisions by the school's clock, wrong-attempt counting, doors forced and held, who is on site."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.config import Window
from gateway.rules.access import (
    REASONS,
    AccessPoint,
    CampusHours,
    Credential,
    Decision,
    Direction,
    DoorState,
    Passage,
    Passback,
    Person,
    count_failures,
    decide,
    door_check,
    door_contact,
    door_granted,
    on_site,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
SCHOOL_DAYS = ["mon", "tue", "wed", "thu", "fri"]
HOURS = CampusHours(
    lessons=[Window.model_validate({"days": SCHOOL_DAYS, "from": "08:00", "to": "11:50"}),
             Window.model_validate({"days": SCHOOL_DAYS, "from": "14:00", "to": "17:00"})],
    holidays=["2026-12-02"])


def at(local: str) -> datetime:
    """A Shanghai wall-clock time as the aware UTC instant the gateway works in."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


TIMES = {
    "morning": "2026-11-30 07:50",   # Monday, before lessons
    "lesson": "2026-11-30 09:00",    # Monday, lessons
    "start": "2026-11-30 08:00",     # the first minute of lessons
    "lunch": "2026-11-30 11:50",     # the morning's lessons end: the break begins
    "break": "2026-11-30 12:30",
    "evening": "2026-11-30 19:00",
    "weekend": "2026-12-05 10:00",   # Saturday
    "holiday": "2026-12-02 09:00",   # a Wednesday off
}

LI = Person(1, "student", "Li Ming", group="Class 3-2")
WANG = Person(2, "staff", "Wang Fang")
ZHANG = Person(3, "visitor", "Zhang San")
PERMITTED = Person(4, "student", "Chen Jie", group="Class 1-1", exit_permit_until=at("2026-11-30 09:30"))
LAPSED = Person(5, "student", "Zhou Yu", group="Class 1-1", exit_permit_until=at("2026-11-30 08:30"))
PEOPLE = {p.name: p for p in (LI, WANG, ZHANG, PERMITTED, LAPSED)}
PASS_FROM, PASS_UNTIL = at("2026-11-30 08:30"), at("2026-11-30 11:00")


def card(person: Person, **changes: Any) -> Credential:
    """A staff or student card, or a visitor's QR pass for 08:30-11:00 on Monday."""
    if person.kind == "visitor":
        return replace(Credential("V-8f3a", "qr", person.id, valid_from=PASS_FROM, valid_until=PASS_UNTIL), **changes)
    return replace(Credential(f"018,{person.id:05d}", "card", person.id), **changes)


def gate(direction: Direction, passback: Passback = "soft") -> AccessPoint:
    return AccessPoint("gate-east", direction, passback=passback)


def check(person: Person, direction: Direction, when: str, last: Direction | None = None,
          hours: CampusHours = HOURS, passback: Passback = "soft", **changes: Any) -> Decision:
    return decide(gate(direction, passback), card(person, **changes), person, last, hours, at(when))


@pytest.mark.parametrize(("time", "name", "direction", "granted", "reason"), [
    # lessons on a school day: closed campus
    ("lesson", "Li Ming", "entry", True, "granted"),           # late arrival
    ("lesson", "Li Ming", "exit", False, "closed_campus"),
    ("start", "Li Ming", "exit", False, "closed_campus"),
    ("lesson", "Chen Jie", "exit", True, "granted"),           # exit permission until 09:30
    ("lesson", "Zhou Yu", "exit", False, "closed_campus"),     # the permission ended at 08:30
    ("lesson", "Wang Fang", "exit", True, "granted"),
    ("lesson", "Wang Fang", "entry", True, "granted"),
    ("lesson", "Zhang San", "entry", True, "granted"),         # inside the pass's window
    ("lesson", "Zhang San", "exit", True, "granted"),
    # before lessons, the break, the evening, the weekend
    ("morning", "Li Ming", "entry", True, "granted"),
    ("morning", "Zhang San", "entry", False, "not_yet_valid"),  # the pass starts at 08:30
    ("lunch", "Li Ming", "exit", True, "granted"),
    ("break", "Li Ming", "exit", True, "granted"),
    ("break", "Zhang San", "entry", False, "expired"),         # the pass ended at 11:00
    ("evening", "Li Ming", "exit", True, "granted"),
    ("evening", "Li Ming", "entry", True, "granted"),
    ("evening", "Wang Fang", "entry", True, "granted"),
    ("weekend", "Li Ming", "entry", True, "granted"),
    ("weekend", "Zhou Yu", "exit", True, "granted"),
    ("weekend", "Zhang San", "entry", False, "expired"),
    # a holiday: no lessons; students may leave but not come in
    ("holiday", "Li Ming", "entry", False, "holiday"),
    ("holiday", "Li Ming", "exit", True, "granted"),
    ("holiday", "Wang Fang", "entry", True, "granted"),
])
def test_the_gate_follows_the_school_day(time: str, name: str, direction: Direction, granted: bool,
                                         reason: str) -> None:
    decision = check(PEOPLE[name], direction, TIMES[time])
    assert (decision.granted, decision.reason) == (granted, reason), decision.detail
    assert decision.reason in REASONS and decision.alarm is None and not decision.passback_violation


def test_a_holiday_can_let_students_in() -> None:
    open_day = CampusHours(lessons=HOURS.lessons, holidays=HOURS.holidays, students_on_holidays=True)
    assert check(LI, "entry", TIMES["holiday"], hours=open_day).granted


def test_a_guard_reads_why() -> None:
    assert check(LI, "exit", TIMES["lesson"]).detail == \
        "student Li Ming (Class 3-2) may not leave during lessons without an exit permission"
    assert check(LAPSED, "exit", TIMES["lesson"]).detail == \
        "student Zhou Yu (Class 1-1) may not leave during lessons: the exit permission ended at 08:30 on 2026-11-30"
    assert check(PERMITTED, "exit", TIMES["lesson"]).detail == \
        "student Chen Jie (Class 1-1) may leave with an exit permission until 09:30 on 2026-11-30"
    assert check(ZHANG, "entry", TIMES["break"]).detail == "QR pass of visitor Zhang San expired at 11:00 on 2026-11-30"
    assert check(LI, "entry", TIMES["holiday"]).detail == "student Li Ming (Class 3-2) may not enter on a holiday " \
                                                          "(2026-12-02)"


def test_the_edges_of_windows() -> None:
    assert check(PERMITTED, "exit", "2026-11-30 09:30").granted, "a permission until 09:30 holds at 09:30"
    assert check(ZHANG, "entry", "2026-11-30 08:30").granted, "a pass is valid from its first instant"
    assert check(ZHANG, "entry", "2026-11-30 11:00").reason == "expired", "and not at its end"


def test_the_site_time_zone_decides_lessons() -> None:
    now = at(TIMES["lesson"])  # 09:00 in Shanghai is 01:00 UTC: outside lessons there
    assert not decide(gate("exit"), card(LI), LI, None, HOURS, now).granted
    assert decide(gate("exit"), card(LI), LI, None, HOURS, now, tz=UTC).granted


def visitor_card(valid_from: datetime | None = None, valid_until: datetime | None = None) -> Credential:
    return Credential("0012345678", "card", ZHANG.id, valid_from=valid_from, valid_until=valid_until)


LESSON = at(TIMES["lesson"])
EXPIRED = {"valid_until": at("2026-11-30 08:00")}


@pytest.mark.parametrize(("credential", "person", "reason", "alarm"), [
    (None, None, "unknown_credential", None),
    (card(LI), None, "unknown_credential", None),                           # a card nobody holds any more
    (card(LI), WANG, "unknown_credential", None),                           # the lookup returned someone else
    (card(LI, revoked=True), LI, "revoked", None),
    (card(LI), Person(1, "student", "Li Ming", active=False), "inactive", None),
    (card(LI, revoked=True), Person(1, "student", "Li Ming", active=False), "revoked", None),  # revoked first
    (card(WANG), Person(2, "staff", "Wang Fang", watchlisted=True), "watchlist", "watchlist"),
    (card(WANG, revoked=True), Person(2, "staff", "Wang Fang", watchlisted=True), "revoked", "watchlist"),
    (card(ZHANG), Person(3, "visitor", "Zhang San", watchlisted=True), "watchlist", "watchlist"),
    (card(WANG, **EXPIRED), WANG, "expired", None),                         # any card can have an end
    (visitor_card(), ZHANG, "no_pass", None),                               # a visitor card without a window
    (visitor_card(valid_until=PASS_UNTIL), ZHANG, "no_pass", None),         # or with half of one
    (visitor_card(valid_from=PASS_FROM, valid_until=PASS_UNTIL), ZHANG, "granted", None),
])
def test_the_credential_and_the_person_come_first(credential: Credential | None, person: Person | None, reason: str,
                                                  alarm: str | None) -> None:
    decision = decide(gate("entry"), credential, person, None, HOURS, LESSON)
    assert (decision.granted, decision.reason, decision.alarm) == (reason == "granted", reason, alarm), \
        decision.detail


@pytest.mark.parametrize(("passback", "last", "direction", "granted", "reason", "violation"), [
    ("off", "entry", "entry", True, "granted", False),
    ("soft", "entry", "entry", True, "granted", True),      # let through, logged
    ("hard", "entry", "entry", False, "anti_passback", False),
    ("hard", "exit", "exit", False, "anti_passback", False),
    ("hard", "exit", "entry", True, "granted", False),
    ("hard", None, "entry", True, "granted", False),        # unknown last passage: never a violation
    ("soft", None, "exit", True, "granted", False),
])
def test_anti_passback(passback: Passback, last: Direction | None, direction: Direction, granted: bool, reason: str,
                       violation: bool) -> None:
    decision = check(WANG, direction, TIMES["lesson"], last=last, passback=passback)
    assert (decision.granted, decision.reason, decision.passback_violation) == (granted, reason, violation)


def test_anti_passback_comes_before_the_closed_campus() -> None:
    assert check(LI, "exit", TIMES["lesson"], last="exit", passback="hard").reason == "anti_passback"
    soft = check(LI, "exit", TIMES["lesson"], last="exit", passback="soft")
    assert (soft.reason, soft.passback_violation) == ("closed_campus", True), "the violation is still logged"


def test_a_visit_closes_when_the_visitor_leaves() -> None:
    assert check(ZHANG, "entry", TIMES["lesson"], last="exit").reason == "visit_closed"
    assert check(ZHANG, "exit", TIMES["lesson"], last="entry").granted


def test_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        decide(gate("entry"), card(LI), LI, None, HOURS, datetime(2026, 11, 30, 9, 0))


UNKNOWN = Decision(False, "unknown_credential", "card or code not registered")
GRANTED = Decision(True, "granted", "staff Wang Fang may enter")
CLOSED = Decision(False, "closed_campus", "student Li Ming may not leave during lessons")


def test_five_wrong_attempts_raise_the_alarm_once() -> None:
    count, alarms = 0, []
    for _ in range(6):
        count, alarm = count_failures(count, UNKNOWN)
        alarms.append(alarm)
    assert (count, alarms) == (6, [False, False, False, False, True, False]), "the 5th, not the 4th nor the 6th"
    assert count_failures(count, GRANTED) == (0, False), "a grant resets"
    assert count_failures(4, UNKNOWN) == (5, True), "and the alarm can fire again"
    assert count_failures(2, UNKNOWN, threshold=3) == (3, True)


def test_a_good_card_refused_by_policy_is_not_a_wrong_attempt() -> None:
    assert count_failures(4, CLOSED) == (4, False)
    assert count_failures(4, Decision(False, "anti_passback", "")) == (4, False)
    assert count_failures(4, Decision(False, "revoked", "")) == (5, True)


T0 = datetime(2026, 11, 30, 1, 0, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_door_opened_without_a_grant_is_forced_until_it_closes() -> None:
    state, alarms = door_contact(DoorState(), True, s(0))
    assert state.forced and [(a.kind, a.active) for a in alarms] == [("forced", True)]
    assert door_contact(state, True, s(1)) == (state, []), "a repeated report changes nothing"
    state, alarms = door_contact(state, False, s(5))
    assert state == DoorState() and [(a.kind, a.active) for a in alarms] == [("forced", False)]


def test_a_granted_door_is_not_forced_and_the_grant_is_used_once() -> None:
    state = door_granted(DoorState(), s(0))
    state, alarms = door_contact(state, True, s(3))
    assert alarms == [] and not state.forced
    state, alarms = door_contact(state, False, s(6))
    assert alarms == []
    state, alarms = door_contact(state, True, s(8))
    assert [a.kind for a in alarms] == ["forced"], "opening again needs a new grant"


def test_a_grant_too_long_ago_does_not_cover_the_opening() -> None:
    state = door_granted(DoorState(), s(0))
    assert door_contact(state, True, s(10))[1] == []
    _, alarms = door_contact(state, True, s(11))
    assert [a.detail for a in alarms] == ["door forced open: last grant 11 s before, more than 10 s"]
    assert door_contact(state, True, s(11), grant_window_s=15)[1] == []


def test_a_door_held_open_alarms_once_and_clears_on_closing() -> None:
    state, _ = door_contact(door_granted(DoorState(), s(0)), True, s(1))
    assert door_check(state, s(31), permitted_open_s=30) == (state, [])
    state, alarms = door_check(state, s(32), permitted_open_s=30)
    assert state.held and [(a.kind, a.active, a.detail) for a in alarms] == \
        [("held", True, "door held open 31 s (permitted 30 s)")]
    assert door_check(state, s(90), permitted_open_s=30) == (state, []), "once"
    state, alarms = door_contact(state, False, s(95))
    assert not state.open and [(a.kind, a.active) for a in alarms] == [("held", False)]
    assert door_check(state, s(200), permitted_open_s=30) == (state, []), "a closed door is never held"


def test_who_is_on_site() -> None:
    passages = [
        Passage(1, "student", "entry", s(0)),
        Passage(2, "staff", "entry", s(10)),
        Passage(3, "visitor", "entry", s(20)),
        Passage(1, "student", "exit", s(100)),
        Passage(3, "visitor", "exit", s(90)),
        Passage(3, "visitor", "entry", s(30)),     # out of order: the exit at 90 s is still the latest
        Passage(4, "student", "exit", s(5)),
        Passage(4, "student", "entry", s(50)),
    ]
    assert on_site(passages) == {"student": {4}, "staff": {2}, "visitor": set()}
    assert on_site([]) == {"student": set(), "staff": set(), "visitor": set()}
