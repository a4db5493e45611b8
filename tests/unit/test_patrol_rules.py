"""Guard tour rules by the school's clock: the plan, a round's progress with each missed, late and
out-of-order checkpoint named, which round a scan belongs to, the alerts and the key-area count.

Time is an argument everywhere: "at 08:10 on a Monday" is a value, not a sleep.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from gateway.config import Checkpoint, PatrolConfig, PatrolPlanEntry, Route, ShiftTemplate
from gateway.rules.patrol import (
    STALE_ALERT,
    Alert,
    PlannedRound,
    Progress,
    RoundWindow,
    Scan,
    alerts_due,
    key_area_counts,
    progress,
    round_for_scan,
    rounds_for_day,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 11, 30)


def at(local: str) -> datetime:
    """A Shanghai wall-clock time as the aware UTC instant the gateway works in."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


CHECKPOINTS = [Checkpoint(id="gate", name="South gate", tag="018,00001"),
               Checkpoint(id="library", name="Library", tag="018,00002"),
               Checkpoint(id="boiler", name="Boiler room", tag="018,00003", key_area=True),
               Checkpoint(id="dorm", name="Dormitory", reader="cp-dorm", key_area=True)]
MAIN = Route(id="main", name="Main round", checkpoints=["gate", "library", "boiler", "dorm"], expected_min=30,
             tolerance_min=10)
FREE = Route(id="free", name="Any order", checkpoints=["gate", "library", "boiler"], ordered=False)
SHIFTS = [ShiftTemplate.model_validate({"id": "day", "name": "Day", "from": "08:00", "to": "20:00"}),
          ShiftTemplate.model_validate({"id": "night", "name": "Night", "from": "20:00", "to": "08:00"})]
CONFIG = PatrolConfig(checkpoints=CHECKPOINTS, routes=[MAIN, FREE],
                      plan=[PatrolPlanEntry(route="main", shift="day", rounds=2),
                            PatrolPlanEntry(route="main", shift="night", rounds=3),
                            PatrolPlanEntry(route="free", shift="day", rounds=1, days=["sat", "sun"])])
DUE, END = at("2026-11-30 08:00"), at("2026-11-30 14:00")  # Monday's first day round and its window


# -- the plan ----------------------------------------------------------------------------------------------

def test_rounds_are_spread_evenly_over_the_shift_from_its_start() -> None:
    rounds = rounds_for_day(CONFIG, SHIFTS, MONDAY, SHANGHAI)
    assert [(r.route, r.shift, r.number, r.due_at, r.window_end) for r in rounds] == [
        ("main", "day", 1, at("2026-11-30 08:00"), at("2026-11-30 14:00")),
        ("main", "day", 2, at("2026-11-30 14:00"), at("2026-11-30 20:00")),
        # overnight: 20:00 to 08:00 the next morning, in three, all on Monday's plan
        ("main", "night", 1, at("2026-11-30 20:00"), at("2026-12-01 00:00")),
        ("main", "night", 2, at("2026-12-01 00:00"), at("2026-12-01 04:00")),
        ("main", "night", 3, at("2026-12-01 04:00"), at("2026-12-01 08:00")),
    ], "the weekend-only entry is not planned on a Monday"
    assert {r.day for r in rounds} == {"2026-11-30"}, "an overnight shift's rounds belong to the day it starts"
    saturday = rounds_for_day(CONFIG, SHIFTS, date(2026, 12, 5), SHANGHAI)
    assert [(r.route, r.number) for r in saturday if r.route == "free"] == [("free", 1)]
    assert saturday[0].due_at.tzinfo is UTC


def test_random_rounds_fall_in_the_first_half_of_their_share_of_the_shift() -> None:
    """不定时 (R18): each random round of the night (12 h, three rounds: 4 h shares) somewhere in its share's first
    2 h, as drawn; so the next round is at least 2 h after it, and no two bunch up."""
    import secrets

    config = CONFIG.model_copy(update={"plan": [PatrolPlanEntry(route="main", shift="night", rounds=3, random=True)]})
    fixed = rounds_for_day(config, SHIFTS, MONDAY, SHANGHAI, draw=lambda: 0.5)
    assert [(r.due_at, r.window_end, r.random) for r in fixed] == [
        (at("2026-11-30 21:00"), at("2026-12-01 01:00"), True),
        (at("2026-12-01 01:00"), at("2026-12-01 05:00"), True),
        (at("2026-12-01 05:00"), at("2026-12-01 08:00"), True)]
    assert [r.due_at for r in rounds_for_day(config, SHIFTS, MONDAY, SHANGHAI)] == [
        at("2026-11-30 20:00"), at("2026-12-01 00:00"), at("2026-12-01 04:00")], "no draw: the shares' starts"
    draw = secrets.SystemRandom().random
    seen = set()
    for _ in range(200):
        rounds = rounds_for_day(config, SHIFTS, MONDAY, SHANGHAI, draw=draw)
        for i, r in enumerate(rounds):
            share = at("2026-11-30 20:00") + timedelta(hours=4 * i)
            assert share <= r.due_at < share + timedelta(hours=2)
            assert r.window_end - r.due_at >= timedelta(hours=2)
        seen.add(rounds[0].due_at)
    assert len(seen) > 150, "the times differ from one draw to the next"


def test_a_weekly_plan_is_a_plan_on_one_day_of_the_week() -> None:
    """R19: a full-campus inspection once a week, Friday's day shift."""
    config = CONFIG.model_copy(update={"plan": [PatrolPlanEntry(route="main", shift="day", rounds=1, days=["fri"])]})
    week = [rounds_for_day(config, SHIFTS, MONDAY + timedelta(days=n), SHANGHAI) for n in range(7)]
    assert [len(day) for day in week] == [0, 0, 0, 0, 1, 0, 0]
    assert week[4][0].due_at == at("2026-12-04 08:00")


def test_uneven_division_is_cut_to_whole_seconds() -> None:
    config = CONFIG.model_copy(update={"plan": [PatrolPlanEntry(route="main", shift="day", rounds=7)]})
    rounds = rounds_for_day(config, SHIFTS, MONDAY, SHANGHAI)
    assert [r.due_at.astimezone(SHANGHAI).strftime("%H:%M:%S") for r in rounds][:3] == [
        "08:00:00", "09:42:51", "11:25:42"]
    assert all(a.window_end == b.due_at for a, b in pairwise(rounds))
    assert rounds[-1].window_end == at("2026-11-30 20:00")


# -- a round's progress ----------------------------------------------------------------------------------

def walk(*steps: tuple[str, int]) -> list[Scan]:
    """Scans at minutes (and seconds, as a fraction) after the round's due time."""
    return [Scan(cp, DUE + timedelta(minutes=m)) for cp, m in steps]


IN_TIME = at("2026-11-30 09:00")  # the round's window is still open
AFTER = END  # the window has closed

CASES = [
    # (name, route, scans, now, state, missed, late, out_of_order)
    ("complete", MAIN, walk(("gate", 0), ("library", 5), ("boiler", 10), ("dorm", 15)), IN_TIME,
     "complete", [], [], []),
    ("skipped one, still open", MAIN, walk(("gate", 0), ("library", 5), ("dorm", 15)), IN_TIME,
     "in_progress", [], [], []),
    ("skipped one, named when the window closes", MAIN, walk(("gate", 0), ("library", 5), ("dorm", 15)), AFTER,
     "incomplete", ["boiler"], [], []),
    ("out of order: boiler before library", MAIN, walk(("gate", 0), ("boiler", 5), ("library", 10), ("dorm", 15)),
     IN_TIME, "complete", [], [], ["boiler"]),
    ("the last first", MAIN, walk(("dorm", 0), ("gate", 5), ("library", 10), ("boiler", 15)), IN_TIME,
     "complete", [], [], ["dorm"]),
    ("late: over 30 + 10 min by boiler and dorm", MAIN,
     walk(("gate", 0), ("library", 10), ("boiler", 41), ("dorm", 45)), IN_TIME, "complete", [], ["boiler", "dorm"], []),
    ("exactly 40 min is not late", MAIN, walk(("gate", 0), ("library", 10), ("boiler", 20), ("dorm", 40)), IN_TIME,
     "complete", [], [], []),
    ("late is from the round's start, not its due time", MAIN,
     walk(("gate", 20), ("library", 30), ("boiler", 40), ("dorm", 55)), IN_TIME, "complete", [], [], []),
    ("not started yet", MAIN, [], IN_TIME, "pending", [], [], []),
    ("never started: expired, every checkpoint missed", MAIN, [], AFTER, "expired",
     ["gate", "library", "boiler", "dorm"], [], []),
    ("a scan after the window does not count", MAIN,
     walk(("gate", 0), ("library", 5), ("boiler", 10), ("dorm", 360)), AFTER, "incomplete", ["dorm"], [], []),
    ("unordered route: any order is fine", FREE, walk(("boiler", 0), ("gate", 5), ("library", 10)), IN_TIME,
     "complete", [], [], []),
    ("repeats count once; another route's checkpoint is ignored", FREE,
     walk(("gate", 0), ("gate", 2), ("dorm", 3), ("library", 4)), AFTER, "incomplete", ["boiler"], [], []),
]


@pytest.mark.parametrize(("name", "route", "scans", "now", "state", "missed", "late", "out_of_order"), CASES,
                         ids=[c[0] for c in CASES])
def test_progress(name: str, route: Route, scans: list[Scan], now: datetime, state: str, missed: list[str],
                  late: list[str], out_of_order: list[str]) -> None:
    p = progress(route, scans, DUE, END, now)
    assert (p.state, p.missed, p.late, p.out_of_order) == (state, missed, late, out_of_order)


def test_progress_times_and_per_checkpoint_detail() -> None:
    scans = walk(("gate", 0), ("dorm", 15), ("library", 20))
    p = progress(MAIN, scans, DUE, END, IN_TIME)
    assert (p.started_at, p.last_scan_at, p.finished_at) == (DUE, DUE + timedelta(minutes=20), None)
    detail = {c.id: c for c in p.checkpoints}
    assert detail["boiler"].skipped and not detail["boiler"].missed, "passed over, and the round is still open"
    assert detail["library"].at == DUE + timedelta(minutes=20) and detail["dorm"].out_of_order
    assert [p.status_of(c) for c in ("gate", "library", "dorm", "elsewhere")] == [
        "ok", "ok", "out_of_order", "unplanned"]
    done = progress(MAIN, [*scans, Scan("boiler", DUE + timedelta(minutes=50))], DUE, END, IN_TIME)
    assert done.state == "complete" and done.finished_at == DUE + timedelta(minutes=50)
    assert done.status_of("boiler") == "late"
    over = progress(MAIN, scans, DUE, END, AFTER)
    assert over.finished_at == END and over.missed == ["boiler"]


def test_an_overnight_round_across_midnight() -> None:
    night = next(r for r in rounds_for_day(CONFIG, SHIFTS, MONDAY, SHANGHAI) if r.shift == "night")
    scans = [Scan("gate", at("2026-11-30 23:45")), Scan("library", at("2026-11-30 23:55")),
             Scan("boiler", at("2026-12-01 00:05")), Scan("dorm", at("2026-12-01 00:10"))]
    late_start = progress(MAIN, scans, night.due_at, night.window_end, at("2026-12-01 00:30"))
    assert late_start.state == "incomplete" and late_start.missed == ["boiler", "dorm"], (
        "its window ends at midnight, when the next round falls due")
    on_time = [Scan(s.checkpoint, s.at - timedelta(hours=3)) for s in scans]
    assert progress(MAIN, on_time, night.due_at, night.window_end, at("2026-12-01 00:30")).state == "complete"


# -- which round a scan belongs to ---------------------------------------------------------------------

def window(round_id: int, due: str, end: str, visited: tuple[str, ...] = (), route: Route = MAIN) -> RoundWindow:
    return RoundWindow(round_id, route, at(due), at(end), frozenset(visited))


ROUNDS = [window(1, "2026-11-30 08:00", "2026-11-30 14:00", ("gate", "library")),
          window(2, "2026-11-30 14:00", "2026-11-30 20:00"),
          window(3, "2026-11-30 08:00", "2026-11-30 20:00", ("boiler",), route=FREE)]
EARLY = timedelta(minutes=10)


@pytest.mark.parametrize(("checkpoint", "when", "expected"), [
    ("boiler", "2026-11-30 09:00", (1, True)),        # the earliest round still needing it (the main round)
    ("gate", "2026-11-30 09:00", (3, True)),          # main has it already: the other route's round takes it
    ("dorm", "2026-11-30 13:55", (1, True)),
    ("gate", "2026-11-30 13:55", (3, True)),          # the other route's round is older than round 2
    ("dorm", "2026-11-30 14:00", (2, True)),          # round 1's window is over
    ("library", "2026-11-30 13:00", (3, True)),
    ("gate", "2026-11-30 07:55", (3, True)),          # begun five minutes early: within the grace
    ("gate", "2026-11-30 07:49", (None, False)),      # before any round (more than the grace early)
    ("dorm", "2026-11-30 21:00", (None, False)),      # after every window: unplanned
    ("nowhere", "2026-11-30 09:00", (None, False)),
])
def test_round_for_scan(checkpoint: str, when: str, expected: tuple[int | None, bool]) -> None:
    assert round_for_scan(ROUNDS, checkpoint, at(when), EARLY) == expected


def test_the_next_round_may_be_begun_early_while_the_last_still_lacks_a_checkpoint() -> None:
    rounds = [window(1, "2026-11-30 08:00", "2026-11-30 14:00", ("gate", "library", "boiler")),
              window(2, "2026-11-30 14:00", "2026-11-30 20:00")]
    assert round_for_scan(rounds, "gate", at("2026-11-30 13:52"), EARLY) == (2, True)
    assert round_for_scan(rounds, "dorm", at("2026-11-30 13:55"), EARLY) == (1, True), "round 1 still needs it"
    assert round_for_scan(rounds, "gate", at("2026-11-30 13:49"), EARLY) == (1, False), "too early: a repeat"


def test_a_checkpoint_every_round_has_is_a_repeat_of_the_earliest() -> None:
    rounds = [window(1, "2026-11-30 08:00", "2026-11-30 14:00", ("gate",)),
              window(3, "2026-11-30 08:00", "2026-11-30 20:00", ("gate",), route=FREE)]
    assert round_for_scan(rounds, "gate", at("2026-11-30 09:00"), EARLY) == (1, False)


def test_device_time_decides_the_round_not_arrival() -> None:
    """A scan made at 13:50 (device time) and uploaded at 15:10 belongs to round 1, whose window it was in."""
    device, server = at("2026-11-30 13:50"), at("2026-11-30 15:10")
    assert round_for_scan(ROUNDS, "dorm", device, EARLY) == (1, True)
    assert round_for_scan(ROUNDS, "dorm", server, EARLY) == (2, True)


# -- alerts -------------------------------------------------------------------------------------------

GRACE, STALL = timedelta(minutes=10), timedelta(minutes=15)


def alerts(scans: list[Scan], now: str, alerted: tuple[str, ...] = (), due: datetime = DUE,
           end: datetime = END) -> list[Alert]:
    p: Progress = progress(MAIN, scans, due, end, at(now))
    return alerts_due(p, due, end, alerted, at(now), GRACE, STALL)


def test_not_started_alerts_at_the_minute_the_grace_ends() -> None:
    assert alerts([], "2026-11-30 08:09:59") == []
    assert alerts([], "2026-11-30 08:10:00") == [Alert("not_started", at("2026-11-30 08:10"), False)]
    assert alerts([], "2026-11-30 08:10:00", alerted=("not_started",)) == [], "once"
    assert alerts(walk(("gate", 9)), "2026-11-30 08:10:00") == [], "started within the grace"


def test_stalled_alerts_after_stall_min_without_a_scan() -> None:
    scans = walk(("gate", 0), ("library", 5))
    assert alerts(scans, "2026-11-30 08:19:59") == []
    assert alerts(scans, "2026-11-30 08:20:00") == [Alert("stalled", at("2026-11-30 08:20"), False)]
    assert alerts(scans, "2026-11-30 08:25", alerted=("stalled",)) == []
    assert alerts([*scans, *walk(("boiler", 18))], "2026-11-30 08:25") == [], "a scan since"
    done = walk(("gate", 0), ("library", 5), ("boiler", 6), ("dorm", 7))
    assert alerts(done, "2026-11-30 13:00") == [], "a complete round owes nothing"
    # Stalled after a not-started alert: the other kind is still owed.
    assert [a.kind for a in alerts(scans, "2026-11-30 08:20", alerted=("not_started",))] == ["stalled"]


def test_a_short_window_does_not_swallow_the_alert() -> None:
    end = DUE + timedelta(minutes=5)  # rounds every five minutes, grace ten
    assert alerts([], "2026-11-30 08:05", end=end) == [Alert("not_started", end, False)]
    assert alerts(walk(("gate", 1)), "2026-11-30 08:05", end=end)[0].kind == "stalled"


def test_an_alert_long_overdue_is_recorded_as_stale() -> None:
    """After the gateway was down, what fell due then is not raised now."""
    later = (DUE + GRACE + STALE_ALERT + timedelta(seconds=1)).astimezone(SHANGHAI)
    (alert,) = alerts([], later.strftime("%Y-%m-%d %H:%M:%S"))
    assert alert.stale and alert.kind == "not_started"


# -- key areas ----------------------------------------------------------------------------------------

def test_key_area_rounds_of_a_day_against_the_target() -> None:
    rounds = [["gate", "boiler", "dorm"], ["boiler", "boiler"], ["dorm"], [], ["boiler"], ["boiler"], ["boiler"]]
    counts = key_area_counts(CHECKPOINTS, rounds, 5)
    assert [(k.checkpoint, k.name, k.rounds, k.met) for k in counts] == [
        ("boiler", "Boiler room", 5, True), ("dorm", "Dormitory", 2, False)]


def test_planned_round_is_plain_data() -> None:
    r = PlannedRound("main", "day", "2026-11-30", 1, DUE, END)
    assert r == PlannedRound("main", "day", "2026-11-30", 1, DUE, END)
