"""DC-09 delivery, sans-IO: which report goes next, on which path, and what each answer means.

No sockets, no database and no clock in here. gateway.police.link reads the pending reports, sends what
`next_action` says, hands every answer to `on_answer`, and writes down what comes out. Every time is the
link's monotonic clock, passed in as `now`; wall time comes in only with an answer, because DC-09 needs it
there: a NAK carries the receiver's clock, which ours is measured against.

The link works in rounds: it looks at the database every poll (or when woken), calls `begin_round`, then
does what `next_action(now)` returns until that is `Wait`. A round is, in this order:

1. reports: the pending ones that are due, alarms first, then oldest first, each to the first path that
   acknowledges it (see `Delivery`). One that reaches no path ends the reports for the round: nothing gets
   through now, and the others would only wait out the same timeouts. After each acknowledgement the
   reports are read again: another process (the rules service, the records layer) may have written one,
   perhaps an alarm that goes before the rest.
2. link tests: a NULL on each path whose test is due, often enough that a broken path is found within
   `supervision_s`; a path that has just acknowledged something needs none for a while.
3. the periodic test report (602) every `periodic_test_h`, queued like any report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

MAX_BACKOFF_S = 60.0  # a report that reached no path waits 2, 4, 8 ... s, then this, between rounds


@dataclass(frozen=True)
class Settings:
    paths: tuple[str, ...]  # path names, primary first
    attempts_per_path: int = 3
    ack_timeout_s: float = 2.0
    supervision_s: float = 90.0
    periodic_test_h: float = 24.0  # 0: no periodic test

    @property
    def test_every_s(self) -> float:
        """Link tests this often, so that one, with all its retries, ends within supervision_s of the last."""
        retries_s = self.attempts_per_path * self.ack_timeout_s
        return max(self.supervision_s - retries_s, self.supervision_s / 2)

    @property
    def quiet_after_ack_s(self) -> float:
        """A path that has just acknowledged something needs no link test for this long."""
        return max(self.supervision_s / 2, 1.0)


@dataclass(frozen=True)
class Report:
    """A pending report, as the database holds it (a PoliceMessage row)."""

    id: int
    kind: str  # alarm, restore, test (a button test), periodic_test
    attempts: int = 0  # rounds over every path so far, none acknowledged
    due: float | None = None  # `now` of its next round; None: at once
    alarm_id: int | None = None
    alarm_type: str = ""
    zone: int = 0


@dataclass(frozen=True)
class Answer:
    """What came back for a Send."""

    token: str  # ACK, NAK, DUH, or whatever else a receiver says (RSP); "none": nothing came
    receiver_time: datetime | None = None  # the answer's timestamp: a NAK's is the receiver's clock
    why: str | None = None  # nothing came: why (no answer in time, the connection closed or was refused)


ACK = Answer("ACK")
DUH = Answer("DUH")


def nak(receiver_time: datetime | None = None) -> Answer:
    return Answer("NAK", receiver_time=receiver_time)


def silence(why: str) -> Answer:
    return Answer("none", why=why)


# -- actions: what the link does next ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadReports:
    """Read the pending reports and `load` them."""


@dataclass(frozen=True)
class Send:
    """Send `report` (None: a NULL link test) on `path`, then call `on_answer`. `attempt` counts from 1 on
    this path: at 1 the path's next sequence number, then the same one again, so that a receiver which did
    get an earlier try (its ACK lost) drops the repeat. The message's timestamp: our wall time + `offset_s`."""

    report: Report | None
    path: str
    attempt: int
    offset_s: float = 0.0


@dataclass(frozen=True)
class MarkPath:
    """Write down the path's state. `changed`: it has just gone up or down, which is news (a health event,
    the retained path states); when it came up, every report waiting for its retry goes now."""

    path: str
    up: bool
    error: str | None
    changed: bool


@dataclass(frozen=True)
class Delivered:
    """The receiver on `path` acknowledged `report`."""

    report: Report
    path: str


@dataclass(frozen=True)
class Escalate:
    """No path acknowledged `report`. It has now had `attempts` rounds and goes again in `retry_in_s`, for as
    long as it takes (a report is never given up). `alert`: the first report left undelivered, so raise the
    gateway-health alarm; it stays up until nothing is pending (AllDelivered)."""

    report: Report
    attempts: int
    retry_in_s: float
    error: str  # "path: what went wrong" for each path, in the order tried
    alert: bool


@dataclass(frozen=True)
class AllDelivered:
    """Nothing is pending any more: clear the undelivered-report alarm."""


@dataclass(frozen=True)
class QueuePeriodicTest:
    """Write a periodic test report (602); it is then delivered like any report."""


@dataclass(frozen=True)
class Wait:
    """Nothing more this round. `until`: when the earliest timer falls due (a link test, the periodic test, a
    report's retry; `now` if one is overdue and waits for the next round). Reports written by other
    processes may come sooner: the link looks again at its poll whatever this says."""

    until: float


Action = ReadReports | Send | MarkPath | Delivered | Escalate | AllDelivered | QueuePeriodicTest | Wait


# -- the machine ---------------------------------------------------------------------------------------------


@dataclass
class PathStatus:
    name: str
    up: bool | None = None  # None: not tried since the database first knew it
    offset_s: float = 0.0  # the receiver's clock minus ours, from its last NAK with a time
    next_test: float = float("-inf")  # `now` of its next link test; never tested: at once


@dataclass
class _Job:
    """One report, or one link test, going over its paths."""

    report: Report | None  # None: a link test, on one path
    paths: tuple[PathStatus, ...]
    index: int = 0  # the path being tried
    tries: int = 0  # frames sent on it
    done: bool = False  # it answered DUH: no more tries there
    outcome: str = "not tried"  # what went wrong there last
    reasons: list[str] = field(default_factory=list)  # "path: outcome" for each path given up

    @property
    def path(self) -> PathStatus:
        return self.paths[self.index]


Stage = Literal["reports", "tests", "periodic", "done"]


class Delivery:
    """The delivery of reports to the alarm receiving centre, and the watch on its paths.

    One report goes to the first path that acknowledges it, paths known to be down last:

    - up to `attempts_per_path` tries on a path, `Send.attempt` telling the link when a new sequence number
      is due; silence (no answer within ack_timeout_s, a closed or refused connection) is tried again there;
    - a NAK with the receiver's time: the message was outside its time window, so our clock is off for that
      path; the offset is kept for every later timestamp there, and the next try (still one of the path's
      tries) goes at once with the corrected time. A NAK that persists uses up the path's tries;
    - a DUH: the receiver cannot handle this message, and will not on a second try: the next path;
    - an ACK: delivered; the path is up and needs no link test for a while.

    A report no path acknowledged is escalated (`Escalate`) and goes again after min(60, 2^attempts) s; a
    path that comes back up makes every waiting report due at once. A failed path is `MarkPath` down (a
    health alarm), an answer from it `MarkPath` up (the alarm cleared).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = [PathStatus(name) for name in settings.paths]
        self.reports: list[Report] = []  # pending, as last read and updated since
        self.undelivered = False  # a report reached no path, and something is still pending
        self.next_periodic = float("inf")
        self.stopping = False
        self._stage: Stage = "done"
        self._tested = 0  # paths looked at for a link test this round
        self._read = False  # the reports are to be read before the next is picked
        self._job: _Job | None = None
        self._sent = False  # a Send is out: on_answer comes next
        self._todo: deque[Action] = deque()

    def path(self, name: str) -> PathStatus:
        return next(p for p in self.paths if p.name == name)

    def start(self, now: float, up: Mapping[str, bool | None] | None = None) -> None:
        """The link starts: each path as last written down (`up`); the periodic test one period from now."""
        for path in self.paths:
            path.up = (up or {}).get(path.name)
        hours = self.settings.periodic_test_h
        self.next_periodic = now + hours * 3600 if hours else float("inf")

    def begin_round(self) -> None:
        """The link looks again (its poll, or woken for a new report). Whatever a round cut short by an error
        left undone is dropped: the reports are read afresh."""
        self._stage, self._tested, self._read = "reports", 0, True
        self._job, self._sent = None, False
        self._todo.clear()

    def load(self, reports: Iterable[Report]) -> None:
        """Every pending report (the answer to ReadReports), in any order."""
        self.reports = list(reports)

    def stop(self) -> None:
        """The link is stopping: no new report or link test starts, and no more tries of the one under way.
        Its remaining paths count as 'stopping' and it is escalated like a report that got nowhere: as the
        link did before this machine existed, kept so. (It costs that report a backoff after the restart.)"""
        self.stopping = True

    def next_action(self, now: float) -> Action:
        """What the link does next; after a Send, `on_answer` first."""
        if self._sent:
            raise RuntimeError("a Send is out: on_answer comes first")
        while True:
            if self._todo:
                return self._todo.popleft()
            action = self._step(self._job, now) if self._job is not None else self._next_in_round(now)
            if action is not None:
                return action

    def on_answer(self, answer: Answer, now: float, at: datetime) -> str | None:
        """The answer to the last Send, given at `now`, our wall time `at`. Returns what to note beside the
        exchange: why nothing came, or the clock correction a NAK brought."""
        job = self._job
        if not self._sent or job is None:
            raise RuntimeError("no Send is out")
        self._sent = False
        path = job.path
        detail = answer.why
        if answer.token == "NAK" and answer.receiver_time is not None:
            path.offset_s = (answer.receiver_time - at).total_seconds()
            detail = f"receiver time differs by {path.offset_s:+.0f} s; sending again with its time"
        if answer.token != "ACK":
            job.outcome = detail or f"answered {answer.token}"
            job.done = answer.token == "DUH"
            return detail
        self._job = None
        self._todo.append(self._mark(path, True, None))
        path.next_test = now + self.settings.quiet_after_ack_s
        if job.report is not None:
            done = job.report.id
            self.reports = [r for r in self.reports if r.id != done]
            self._todo.append(Delivered(job.report, path.name))
            self._read = True
        return detail

    # -- inside ----------------------------------------------------------------------------------------------

    def _next_in_round(self, now: float) -> Action | None:
        """The round's next step; None when it only moved on (the caller asks again)."""
        if self._stage == "reports":
            if self.stopping:
                self._stage = "tests"
            elif self._read:
                self._read = False
                return ReadReports()
            elif (report := self._first_due(now)) is not None:
                # Stable: primary before backup, unless the primary is known to be down.
                self._job = _Job(report, tuple(sorted(self.paths, key=lambda p: p.up is False)))
            else:
                self._stage = "tests"
                if self.undelivered and not self.reports:  # not merely waiting for a retry
                    self.undelivered = False
                    return AllDelivered()
            return None
        if self._stage == "tests":
            if self._tested == len(self.paths):
                self._stage = "periodic"
                return None
            path = self.paths[self._tested]
            self._tested += 1
            if now >= path.next_test and not self.stopping:
                path.next_test = now + self.settings.test_every_s
                self._job = _Job(None, (path,))
            return None
        if self._stage == "periodic":
            self._stage = "done"
            if now >= self.next_periodic:
                self.next_periodic = now + self.settings.periodic_test_h * 3600
                return QueuePeriodicTest()
            return None
        return Wait(self._earliest(now))

    def _step(self, job: _Job, now: float) -> Action | None:
        """The job's next try, or the end of its path (MarkPath down), or of the job."""
        if job.index == len(job.paths):  # a report, every path given up
            assert job.report is not None
            self._job = None
            return self._escalate(job.report, job.reasons, now)
        path = job.path
        mark = None
        if job.tries < self.settings.attempts_per_path and not job.done:
            if not self.stopping:
                job.tries += 1
                self._sent = True
                return Send(job.report, path.name, job.tries, path.offset_s)
            job.outcome = "stopping"  # not the path's fault: its state stays as it was
        else:
            mark = self._mark(path, False, job.outcome)
        job.reasons.append(f"{path.name}: {job.outcome}")
        job.index, job.tries, job.done, job.outcome = job.index + 1, 0, False, "not tried"
        if job.report is None:
            self._job = None
        return mark

    def _mark(self, path: PathStatus, up: bool, error: str | None) -> MarkPath:
        changed = path.up is not up
        path.up = up
        if up and changed:
            self.reports = [replace(r, due=None) for r in self.reports]
        return MarkPath(path.name, up, error, changed)

    def _escalate(self, report: Report, reasons: list[str], now: float) -> Escalate:
        attempts = report.attempts + 1
        wait = min(MAX_BACKOFF_S, 2.0 ** min(attempts, 16))  # 2.0 ** 1024 (17 h of outage) would overflow
        self.reports = [replace(r, attempts=attempts, due=now + wait) if r.id == report.id else r
                        for r in self.reports]
        alert = not self.undelivered
        self.undelivered = True
        self._stage = "tests"
        return Escalate(report, attempts, wait, "; ".join(reasons), alert)

    def _first_due(self, now: float) -> Report | None:
        due = [r for r in self.reports if r.due is None or r.due <= now]
        return min(due, key=lambda r: (r.kind != "alarm", r.id), default=None)

    def _earliest(self, now: float) -> float:
        times = [p.next_test for p in self.paths] + [self.next_periodic]
        times += [now if r.due is None else r.due for r in self.reports]
        return max(now, min(times))
