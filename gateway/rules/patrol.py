"""Guard tour (巡更) rules: pure functions of the plan, the scans and the time.

No database and no clock in here: the site's time zone and `now` are arguments, so a test can say "at
08:10 on a Monday" without sleeping. gateway.rules_service.patrol_shell is the shell that loads rows, calls these and
writes what they return.

- A plan entry spreads `rounds` of a route evenly over a shift; the first is due when the shift starts.
  Each round's window runs until the next round of the entry is due (the last one's until the shift
  ends); a round not finished by then is `incomplete` (some checkpoints scanned) or `expired` (none).
- Scans are judged by the device's time (when the guard was there), not by when the gateway heard of
  them: a handheld that uploads later, or an outbox replaying after an outage, still counts where it was.
- Each missed, late and out-of-order checkpoint is named (guard-tour practice, STANDARDS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

from gateway.config import Checkpoint, PatrolConfig, Route, ShiftTemplate
from gateway.windows import DAYS

RoundState = Literal["pending", "in_progress", "complete", "incomplete", "expired"]
ROUND_STATES: tuple[RoundState, ...] = ("pending", "in_progress", "complete", "incomplete", "expired")
OPEN_STATES: tuple[RoundState, ...] = ("pending", "in_progress")
AlertKind = Literal["not_started", "stalled"]
ScanStatus = Literal["ok", "late", "out_of_order", "repeat", "unplanned", "unknown"]
# An alert that fell due this long ago is not raised any more (it came due while the rules service was
# not running): it could no longer help anyone act in time, and a restart must not flood the board. The
# round's record still names what happened.
STALE_ALERT = timedelta(minutes=15)


# -- the plan ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRound:
    route: str
    shift: str
    day: str  # the local date the shift starts on, YYYY-MM-DD (an overnight shift belongs to its first day)
    number: int  # 1st, 2nd ... round of the route in the shift
    due_at: datetime  # UTC
    window_end: datetime  # UTC: the next round's due time, or the shift's end
    random: bool = False  # drawn at random: kept from the guards until due


def _local(day: date, hhmm: str, tz: tzinfo) -> datetime:
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


def shift_bounds(shift: ShiftTemplate, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """(start, end) of a shift that starts on `day`, in UTC. A shift whose end is not after its start runs
    past midnight (22:00-06:00); one from 08:00 to 08:00 lasts 24 h."""
    start = _local(day, shift.start, tz)
    end_day = day if shift.end > shift.start else day + timedelta(days=1)
    return start.astimezone(UTC), _local(end_day, shift.end, tz).astimezone(UTC)


def rounds_for_day(config: PatrolConfig, shifts: Sequence[ShiftTemplate], day: date, tz: tzinfo,
                   draw: Callable[[], float] | None = None) -> list[PlannedRound]:
    """The rounds planned for the shifts that start on `day` (the site's local date), in due order. A random
    entry's round is due at `draw()` (0 <= x < 1, uniform) of the first half of its share of the shift, so rounds
    never bunch up and each leaves the next at least half a share; without `draw`, at the start of its share."""
    by_id = {s.id: s for s in shifts}
    planned: list[PlannedRound] = []
    for entry in config.plan:
        shift = by_id.get(entry.shift)
        if shift is None or DAYS[day.weekday()] not in entry.days:
            continue
        start, end = shift_bounds(shift, day, tz)
        step = (end - start) / entry.rounds
        due = [start + step * i + (step / 2 * draw() if entry.random and draw else timedelta(0))
               for i in range(entry.rounds)]
        # whole seconds: these are shown to guards and compared with scans to the second
        due = [d.replace(microsecond=0) for d in due]
        for i, at in enumerate(due):
            planned.append(PlannedRound(entry.route, entry.shift, day.isoformat(), i + 1, at,
                                        due[i + 1] if i + 1 < len(due) else end, entry.random))
    return sorted(planned, key=lambda r: (r.due_at, r.route, r.shift, r.number))


# -- a round's progress --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scan:
    checkpoint: str
    at: datetime  # the device's time


@dataclass(frozen=True)
class CheckpointResult:
    id: str
    at: datetime | None  # first scan, device time
    late: bool = False  # reached later than expected_min + tolerance_min after the round began
    out_of_order: bool = False  # scanned before an earlier checkpoint of an ordered route
    missed: bool = False  # the round is over and it was never scanned
    skipped: bool = False  # still open, but a later checkpoint of an ordered route has been scanned


@dataclass(frozen=True)
class Progress:
    state: RoundState
    checkpoints: tuple[CheckpointResult, ...]  # in route order
    started_at: datetime | None
    finished_at: datetime | None  # the last checkpoint's scan (complete) or the window's end
    last_scan_at: datetime | None

    @property
    def visited(self) -> list[str]:
        return [c.id for c in self.checkpoints if c.at is not None]

    @property
    def missed(self) -> list[str]:
        return [c.id for c in self.checkpoints if c.missed]

    @property
    def late(self) -> list[str]:
        return [c.id for c in self.checkpoints if c.late]

    @property
    def out_of_order(self) -> list[str]:
        return [c.id for c in self.checkpoints if c.out_of_order]

    def status_of(self, checkpoint: str) -> ScanStatus:
        """The status of the first scan of `checkpoint` in this round (later ones are repeats)."""
        found = next((c for c in self.checkpoints if c.id == checkpoint), None)
        if found is None:
            return "unplanned"
        return "out_of_order" if found.out_of_order else "late" if found.late else "ok"


def progress(route: Route, scans: Iterable[Scan], due_at: datetime, window_end: datetime, now: datetime,
             ) -> Progress:
    """A round of `route` due at `due_at`, given its scans (device time), as it stands at `now`.

    Scans at or after the window's end, and of checkpoints not on the route, do not count."""
    counted = sorted((s for s in scans if s.at < window_end and s.checkpoint in route.checkpoints),
                     key=lambda s: s.at)
    first: dict[str, datetime] = {}
    for scan in counted:
        first.setdefault(scan.checkpoint, scan.at)
    started = counted[0].at if counted else None
    last = counted[-1].at if counted else None
    allowed = timedelta(minutes=route.expected_min + route.tolerance_min)
    complete = all(c in first for c in route.checkpoints)
    over = not complete and now >= window_end
    order = {c: i for i, c in enumerate(route.checkpoints)}
    results = []
    for cp in route.checkpoints:
        at = first.get(cp)
        if at is None:
            later_seen = route.ordered and any(order[o] > order[cp] for o in first)
            results.append(CheckpointResult(cp, None, missed=over, skipped=not over and later_seen))
            continue
        assert started is not None
        # out of order: an earlier checkpoint of the route was reached after this one (a skipped one is
        # named as missed, not every one after it as out of order)
        wrong = route.ordered and any(order[o] < order[cp] and t > at for o, t in first.items())
        results.append(CheckpointResult(cp, at, late=at - started > allowed, out_of_order=wrong))
    state: RoundState
    if complete:
        state, finished = "complete", max(first.values())
    elif over:
        state, finished = ("incomplete" if first else "expired"), window_end
    else:
        state, finished = ("in_progress" if first else "pending"), None
    return Progress(state, tuple(results), started, finished, last)


# -- which round a scan belongs to --------------------------------------------------------------------

@dataclass(frozen=True)
class RoundWindow:
    """A round a scan could belong to: its route, its window, and the checkpoints it has already."""

    id: int
    route: Route
    due_at: datetime
    window_end: datetime
    visited: frozenset[str]


def round_for_scan(rounds: Iterable[RoundWindow], checkpoint: str, at: datetime, early: timedelta,
                   ) -> tuple[int | None, bool]:
    """(round id, whether the checkpoint is new to it) for a scan of `checkpoint` at device time `at`.

    The earliest round of a route through the checkpoint whose window holds `at` (a round may be begun
    up to `early` before it is due) and that still needs the checkpoint; failing that, the earliest one
    that already has it (a repeat). None: a scan outside every round (unplanned)."""
    fits = sorted((r for r in rounds if checkpoint in r.route.checkpoints and r.due_at - early <= at < r.window_end),
                  key=lambda r: (r.due_at, r.id))
    for r in fits:
        if checkpoint not in r.visited:
            return r.id, True
    return (fits[0].id, False) if fits else (None, False)


# -- alerts --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    due: datetime  # when it fell due
    stale: bool  # fell due over STALE_ALERT ago: recorded, not raised


def alerts_due(p: Progress, due_at: datetime, window_end: datetime, alerted: Collection[str], now: datetime,
               start_grace: timedelta, stall: timedelta) -> list[Alert]:
    """Alerts a round owes at `now`, each once (`alerted`: the kinds already given).

    not_started: no scan `start_grace` after the round was due; stalled: begun, not complete, and no
    scan for `stall`. Either falls due at the window's end at the latest, so a short window never
    swallows an alert."""
    kind: AlertKind
    if p.started_at is None:
        kind, due = "not_started", min(due_at + start_grace, window_end)
    elif p.state != "complete" and p.last_scan_at is not None:
        kind, due = "stalled", min(p.last_scan_at + stall, window_end)
    else:
        return []
    if kind in alerted or now < due:
        return []
    return [Alert(kind, due, now - due > STALE_ALERT)]


# -- key areas -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyAreaCount:
    checkpoint: str
    name: str
    rounds: int  # rounds of the day that passed it
    target: int

    @property
    def met(self) -> bool:
        return self.rounds >= self.target


def key_area_counts(checkpoints: Iterable[Checkpoint], visited_by_round: Iterable[Collection[str]], target: int,
                    ) -> list[KeyAreaCount]:
    """For each key-area checkpoint (要害部位), how many rounds of a day passed it, against the target
    (GB/T 29315-2022: >= 5 a day). A checkpoint scanned twice in one round counts once."""
    key_areas = [c for c in checkpoints if c.key_area]
    counts = dict.fromkeys((c.id for c in key_areas), 0)
    for visited in visited_by_round:
        for cp in set(visited):
            if cp in counts:
                counts[cp] += 1
    return [KeyAreaCount(c.id, c.name, counts[c.id], target) for c in key_areas]
