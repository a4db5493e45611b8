"""The DC-09 delivery machine without sockets, database or sleeps: reports and answers in, actions out.

`Desk` plays the link: it keeps the pending reports as the database would, answers each Send from a script
(a receiver), and moves its clock only as the test says (plus the timeout a silent try costs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.police.delivery import (
    ACK,
    DUH,
    MAX_BACKOFF_S,
    Action,
    AllDelivered,
    Answer,
    Delivered,
    Delivery,
    Escalate,
    MarkPath,
    QueuePeriodicTest,
    ReadReports,
    Report,
    Send,
    Settings,
    Wait,
    nak,
    silence,
)

T0 = 1000.0  # the link's monotonic clock at start
AT = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)  # our wall time at T0
TWO = Settings(("primary", "backup"), attempts_per_path=2, ack_timeout_s=0.5, supervision_s=30, periodic_test_h=0)
QUIET = "no answer within 0.5 s"


def wall(now: float) -> datetime:
    return AT + timedelta(seconds=now - T0)


Receiver = Callable[[Send], Answer]
A = TypeVar("A")


def always(answer: Answer) -> Receiver:
    return lambda send: answer


def by_path(**answers: Answer) -> Receiver:
    return lambda send: answers[send.path]


class Script:
    """Each Send gets the next answer; ACK once the script is used up."""

    def __init__(self, *answers: Answer) -> None:
        self.left = list(answers)

    def __call__(self, send: Send) -> Answer:
        return self.left.pop(0) if self.left else ACK


class Desk:
    """The link, faked: the database's pending reports, a receiver, the clock."""

    def __init__(self, reports: Iterable[Report] = (), s: Settings = TWO, up: dict[str, bool | None] | None = None,
                 receiver: Receiver | None = None, tested: bool = True) -> None:
        self.machine = Delivery(s)
        self.settings = s
        self.now = T0
        self.pending = {r.id: r for r in reports}
        self.receiver = receiver or always(ACK)
        self.next_id = max(self.pending, default=0) + 1
        self.details: list[str | None] = []  # what on_answer said to note beside each exchange
        self.heard: list[tuple[Send, Answer]] = []
        self.machine.start(self.now, up if up is not None else {name: True for name in s.paths})
        if tested:  # the first round's link tests out of the way, every path answering
            saved, self.receiver = self.receiver, always(ACK)
            saved_pending, self.pending = self.pending, {}
            self.round()
            self.receiver, self.pending = saved, saved_pending

    def round(self, at: float | None = None, before: Callable[[Action], None] | None = None) -> list[Action]:
        """One round at `at` (default: where the clock is), every action in order, the final Wait too."""
        if at is not None:
            self.now = at
        self.machine.begin_round()
        actions: list[Action] = []
        while True:
            action = self.machine.next_action(self.now)
            actions.append(action)
            if before is not None:
                before(action)
            match action:
                case Wait():
                    return actions
                case ReadReports():
                    self.machine.load(reversed(list(self.pending.values())))  # order is the machine's business
                case Send():
                    answer = self.receiver(action)
                    self.heard.append((action, answer))
                    self.now += self.settings.ack_timeout_s if answer.token == "none" else 0.002
                    self.details.append(self.machine.on_answer(answer, self.now, wall(self.now)))
                case Delivered():
                    del self.pending[action.report.id]
                case Escalate():
                    self.pending[action.report.id] = replace(action.report, attempts=action.attempts,
                                                             due=self.now + action.retry_in_s)
                case MarkPath(up=True, changed=True):
                    self.pending = {i: replace(r, due=None) for i, r in self.pending.items()}
                case QueuePeriodicTest():
                    self.add("periodic_test")

    def add(self, kind: str, **fields: object) -> Report:
        report = Report(self.next_id, kind, **fields)  # type: ignore[arg-type]
        self.pending[report.id] = report
        self.next_id += 1
        return report


def sends(actions: list[Action]) -> list[tuple[int | None, str, int]]:
    return [(a.report.id if a.report else None, a.path, a.attempt) for a in actions if isinstance(a, Send)]


def of(kind: type[A], actions: list[Action]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


ALARM = Report(1, "alarm", alarm_id=10, alarm_type="panic", zone=7)


# --- one report ------------------------------------------------------------------------------------------------


def test_an_ack_on_the_primary_delivers_it_and_the_reports_are_read_again() -> None:
    desk = Desk([ALARM])
    actions = desk.round()
    assert actions[:5] == [ReadReports(), Send(ALARM, "primary", 1), MarkPath("primary", True, None, False),
                           Delivered(ALARM, "primary"), ReadReports()]
    assert isinstance(actions[-1], Wait) and len(actions) == 6
    assert desk.pending == {} and desk.details == [None, None, None]  # two link tests, then the report


def test_silence_is_tried_again_on_the_same_path_then_the_backup() -> None:
    desk = Desk([ALARM], receiver=by_path(primary=silence(QUIET), backup=ACK))
    actions = desk.round()
    assert sends(actions) == [(1, "primary", 1), (1, "primary", 2), (1, "backup", 1)]
    assert MarkPath("primary", False, QUIET, True) in actions
    assert actions.index(MarkPath("primary", False, QUIET, True)) < actions.index(Send(ALARM, "backup", 1))
    assert Delivered(ALARM, "backup") in actions
    assert desk.details[-3:] == [QUIET, QUIET, None], "why nothing came is noted beside each silent try"


def test_a_nak_with_the_receivers_time_corrects_our_clock_and_goes_again_at_once() -> None:
    receiver_time = AT + timedelta(minutes=5)
    desk = Desk([ALARM], receiver=Script(nak(receiver_time)))
    actions = desk.round()
    (first, second) = of(Send, actions)
    assert (first.attempt, first.offset_s) == (1, 0.0)
    assert second.path == "primary" and second.attempt == 2, "the same path, the same sequence number"
    offset = second.offset_s
    assert offset == pytest.approx(300, abs=1), "the receiver's clock minus ours when the NAK came"
    assert desk.details[-2] == f"receiver time differs by {offset:+.0f} s; sending again with its time"
    assert Delivered(ALARM, "primary") in actions
    # Every later frame on that path carries the corrected time; the other path's receiver has its own clock.
    later = desk.round(at=T0 + 60)
    assert [(s.path, s.offset_s) for s in of(Send, later)] == [("primary", offset), ("backup", 0.0)]


def test_a_nak_without_a_time_is_just_a_refusal() -> None:
    desk = Desk([ALARM], receiver=by_path(primary=nak(), backup=ACK))
    actions = desk.round()
    assert sends(actions) == [(1, "primary", 1), (1, "primary", 2), (1, "backup", 1)]
    assert MarkPath("primary", False, "answered NAK", True) in actions
    assert desk.machine.path("primary").offset_s == 0.0


def test_a_nak_that_persists_uses_up_the_path_then_the_backup() -> None:
    desk = Desk([ALARM], receiver=by_path(primary=nak(AT - timedelta(hours=1)), backup=ACK))
    actions = desk.round()
    assert sends(actions) == [(1, "primary", 1), (1, "primary", 2), (1, "backup", 1)]
    (down,) = [a for a in of(MarkPath, actions) if not a.up]
    assert down.error is not None and "receiver time differs by -3600 s" in down.error


def test_a_duh_goes_straight_to_the_other_path_and_is_escalated_when_both_say_it() -> None:
    desk = Desk([ALARM], receiver=always(DUH))
    actions = desk.round()
    assert sends(actions) == [(1, "primary", 1), (1, "backup", 1)], "no second try where it is not understood"
    assert of(MarkPath, actions) == [MarkPath("primary", False, "answered DUH", True),
                                     MarkPath("backup", False, "answered DUH", True)]
    (escalate,) = of(Escalate, actions)
    assert escalate == Escalate(ALARM, 1, 2.0, "primary: answered DUH; backup: answered DUH", True)


def test_another_answer_counts_as_a_failed_try() -> None:
    desk = Desk([ALARM], s=replace(TWO, paths=("primary",)), receiver=always(Answer("RSP")))
    (escalate,) = of(Escalate, desk.round())
    assert escalate.error == "primary: answered RSP" and escalate.attempts == 1


@pytest.mark.parametrize(("up", "order"), [
    ({"primary": True, "backup": True}, ["primary", "backup"]),
    ({"primary": None, "backup": None}, ["primary", "backup"]),
    ({"primary": False, "backup": True}, ["backup", "primary"]),
    ({"primary": False, "backup": None}, ["backup", "primary"]),
    ({"primary": False, "backup": False}, ["primary", "backup"]),
])
def test_paths_known_to_be_down_are_tried_last(up: dict[str, bool | None], order: list[str]) -> None:
    desk = Desk([ALARM], up=up, receiver=always(silence(QUIET)), tested=False)  # reports go before link tests
    assert [path for i, path, attempt in sends(desk.round()) if i == 1 and attempt == 1] == order


# --- no path: escalation and backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "wait"), [(0, 2), (1, 4), (2, 8), (3, 16), (4, 32), (5, 60), (9, 60),
                                                  (1023, 60), (10**6, 60)])
def test_a_report_no_path_took_backs_off(attempts: int, wait: float) -> None:
    report = replace(ALARM, attempts=attempts)
    desk = Desk([report], receiver=always(silence(QUIET)))
    (escalate,) = of(Escalate, desk.round())
    assert (escalate.attempts, escalate.retry_in_s) == (attempts + 1, wait)
    assert escalate.error == f"primary: {QUIET}; backup: {QUIET}"
    due = desk.now + wait
    assert desk.machine.reports[0].due == pytest.approx(due)
    assert not [s for s in sends(desk.round(at=due - 0.01)) if s[0] == 1], "not before its time"
    assert sends(desk.round(at=due))[0] == (1, "primary", 1), "then a new round of every path"


def test_the_undelivered_alarm_goes_up_once_and_clears_when_nothing_is_pending() -> None:
    desk = Desk([ALARM], receiver=always(silence(QUIET)))
    assert [e.alert for e in of(Escalate, desk.round())] == [True]
    assert [e.alert for e in of(Escalate, desk.round(at=desk.now + 2))] == [False], "raised already"
    desk.receiver = always(ACK)
    actions = desk.round(at=desk.now + 4)
    assert of(Delivered, actions) and of(AllDelivered, actions) == [AllDelivered()]
    assert not of(AllDelivered, desk.round(at=desk.now + 1)), "cleared once"


def test_the_undelivered_alarm_stays_while_another_report_waits_for_its_retry() -> None:
    desk = Desk([ALARM], s=replace(TWO, paths=("primary",)), receiver=always(silence(QUIET)))
    desk.round()
    later = desk.add("restore", alarm_id=10)
    desk.receiver = lambda send: ACK if send.report == later else silence(QUIET)
    actions = desk.round(at=desk.now + 0.5)  # the alarm is not due yet; the restore goes
    assert of(Delivered, actions) == [Delivered(later, "primary")]
    assert not of(AllDelivered, actions), "the alarm is still pending"


def test_a_failed_report_ends_the_rounds_reports_and_the_next_round_takes_the_next() -> None:
    second = Report(2, "alarm")
    desk = Desk([ALARM, second], s=replace(TWO, paths=("primary",)), receiver=always(silence(QUIET)))
    actions = desk.round()
    assert {s[0] for s in sends(actions)} == {1}, "nothing gets through now: the second waits"
    assert {s[0] for s in sends(desk.round(at=desk.now + 0.5))} == {2}, "the first waits for its backoff"


def test_a_path_that_comes_back_sends_what_waits_at_once() -> None:
    desk = Desk([replace(ALARM, attempts=5)], s=replace(TWO, paths=("primary",)), receiver=always(silence(QUIET)))
    (escalate,) = of(Escalate, desk.round())
    assert escalate.retry_in_s == 60
    desk.receiver = always(ACK)
    test_at = T0 + TWO.quiet_after_ack_s + 0.01  # the primary's next link test, long before the retry
    actions = desk.round(at=test_at)
    assert sends(actions) == [(None, "primary", 1)] and MarkPath("primary", True, None, True) in actions
    assert desk.machine.reports[0].due is None
    assert sends(desk.round(at=test_at + 0.5)) == [(1, "primary", 1)], "the next round sends it, no backoff"


# --- order ------------------------------------------------------------------------------------------------------


def test_alarms_go_first_then_the_oldest() -> None:
    reports = [Report(1, "restore"), Report(2, "periodic_test"), Report(3, "alarm"), Report(4, "test"),
               Report(5, "alarm")]
    desk = Desk(reports)
    assert [s[0] for s in sends(desk.round())] == [3, 5, 1, 2, 4]


def test_an_alarm_written_during_a_delivery_goes_before_older_reports() -> None:
    desk = Desk([Report(1, "restore"), Report(2, "restore")])
    written = False

    def meanwhile(action: Action) -> None:
        nonlocal written
        if isinstance(action, Send) and not written:
            written = True
            desk.add("alarm")  # the rules service, while the first restore is on the wire

    assert [s[0] for s in sends(desk.round(before=meanwhile))] == [1, 3, 2]


def test_a_delivered_report_is_never_sent_again_even_unread() -> None:
    desk = Desk([ALARM])
    desk.round()
    desk.machine.begin_round()
    assert desk.machine.next_action(desk.now) == ReadReports()
    assert isinstance(desk.machine.next_action(desk.now), Wait), "not in the machine's list any more"


# --- link tests and the periodic test ---------------------------------------------------------------------------


def test_the_first_round_tests_every_path_and_then_as_often_as_supervision_needs() -> None:
    desk = Desk(tested=False)
    actions = desk.round()
    assert sends(actions) == [(None, "primary", 1), (None, "backup", 1)]
    assert of(MarkPath, actions) == [MarkPath("primary", True, None, False), MarkPath("backup", True, None, False)]
    quiet = TWO.quiet_after_ack_s
    assert quiet == 15 and TWO.test_every_s == 29  # max(30 - 2 * 0.5, 15)
    assert not sends(desk.round(at=T0 + quiet - 0.1))
    assert [s[1] for s in sends(desk.round(at=T0 + quiet + 0.1))] == ["primary", "backup"]


def test_a_failed_link_test_marks_the_path_down_and_recovery_up() -> None:
    desk = Desk(receiver=by_path(primary=silence(QUIET), backup=ACK))
    actions = desk.round(at=T0 + 16)
    assert sends(actions) == [(None, "primary", 1), (None, "primary", 2), (None, "backup", 1)]
    assert MarkPath("primary", False, QUIET, True) in actions and not of(Escalate, actions)
    next_test = desk.machine.path("primary").next_test
    assert next_test == pytest.approx(T0 + 16 + TWO.test_every_s)
    # Found within supervision_s: a test with all its tries ends that long after the last one began.
    assert TWO.test_every_s + TWO.attempts_per_path * TWO.ack_timeout_s <= TWO.supervision_s
    desk.receiver = always(ACK)
    assert MarkPath("primary", True, None, True) in desk.round(at=next_test)


def test_an_acknowledged_report_puts_off_the_paths_link_test() -> None:
    desk = Desk()
    desk.add("alarm")
    desk.round(at=T0 + 10)
    assert desk.machine.path("primary").next_test == pytest.approx(T0 + 10.002 + TWO.quiet_after_ack_s)
    assert desk.machine.path("backup").next_test == pytest.approx(T0 + 0.004 + TWO.quiet_after_ack_s)


def test_the_periodic_test_report_is_queued_every_period() -> None:
    desk = Desk(s=replace(TWO, periodic_test_h=24, supervision_s=86400))
    day = 24 * 3600
    assert not of(QueuePeriodicTest, desk.round(at=T0 + day - 1))
    actions = desk.round(at=T0 + day)
    assert of(QueuePeriodicTest, actions) == [QueuePeriodicTest()]
    assert desk.pending and next(iter(desk.pending.values())).kind == "periodic_test"
    assert of(Delivered, desk.round(at=T0 + day + 0.5)), "delivered like any report"
    assert isinstance(desk.round()[-1], Wait) and desk.machine.next_periodic == pytest.approx(T0 + 2 * day)


def test_no_periodic_test_when_the_period_is_zero() -> None:
    desk = Desk()
    assert not of(QueuePeriodicTest, desk.round(at=T0 + 10 * 86400))


def test_wait_names_the_earliest_timer() -> None:
    desk = Desk(s=replace(TWO, periodic_test_h=1))
    (wait,) = of(Wait, desk.round())
    assert wait == Wait(desk.machine.path("primary").next_test), "the next link test"
    desk.add("alarm")
    desk.receiver = always(silence(QUIET))
    (wait,) = of(Wait, desk.round())
    due = desk.machine.reports[0].due
    assert due is not None and wait == Wait(due) and due < desk.machine.path("primary").next_test, "the retry"
    quiet = Desk(s=replace(TWO, periodic_test_h=1, supervision_s=86400))
    assert of(Wait, quiet.round()) == [Wait(T0 + 3600)], "the periodic test"


# --- stopping, and the link's mistakes --------------------------------------------------------------------------


def test_stopping_ends_the_tries_and_escalates_the_report_as_the_link_always_did() -> None:
    desk = Desk([ALARM], receiver=always(silence(QUIET)))
    desk.machine.begin_round()
    assert desk.machine.next_action(desk.now) == ReadReports()
    desk.machine.load(desk.pending.values())
    assert desk.machine.next_action(desk.now) == Send(ALARM, "primary", 1)
    desk.machine.on_answer(silence(QUIET), desk.now, AT)
    desk.machine.stop()
    assert desk.machine.next_action(desk.now) == Escalate(ALARM, 1, 2.0, "primary: stopping; backup: stopping", True)
    assert isinstance(desk.machine.next_action(desk.now), Wait), "no link test starts while stopping"


def test_a_duh_just_before_stopping_still_marks_the_path_down() -> None:
    desk = Desk([ALARM], receiver=always(DUH))
    desk.machine.begin_round()
    desk.machine.next_action(desk.now)
    desk.machine.load(desk.pending.values())
    desk.machine.next_action(desk.now)
    desk.machine.on_answer(DUH, desk.now, AT)
    desk.machine.stop()
    assert desk.machine.next_action(desk.now) == MarkPath("primary", False, "answered DUH", True)
    escalate = desk.machine.next_action(desk.now)
    assert isinstance(escalate, Escalate) and escalate.error == "primary: answered DUH; backup: stopping"


def test_a_send_must_be_answered_and_only_a_send() -> None:
    desk = Desk([ALARM])
    with pytest.raises(RuntimeError):
        desk.machine.on_answer(ACK, desk.now, AT)
    desk.machine.begin_round()
    desk.machine.next_action(desk.now)
    desk.machine.load(desk.pending.values())
    assert isinstance(desk.machine.next_action(desk.now), Send)
    with pytest.raises(RuntimeError):
        desk.machine.next_action(desk.now)


def test_a_round_cut_short_by_an_error_is_dropped_and_the_next_starts_afresh() -> None:
    desk = Desk([ALARM])
    desk.machine.begin_round()
    desk.machine.next_action(desk.now)
    desk.machine.load(desk.pending.values())
    assert isinstance(desk.machine.next_action(desk.now), Send)  # ... and the link raised before an answer
    actions = desk.round(at=desk.now + 0.5)
    assert sends(actions) == [(1, "primary", 1)] and of(Delivered, actions)


# --- properties -------------------------------------------------------------------------------------------------

ANSWERS = st.sampled_from([ACK, DUH, nak(), nak(AT + timedelta(seconds=90)), silence(QUIET), Answer("RSP")])
KINDS = st.sampled_from(["alarm", "restore", "test", "periodic_test"])


@settings(max_examples=300, deadline=None, database=None)
@given(kinds=st.lists(KINDS, min_size=1, max_size=5), answers=st.lists(ANSWERS, max_size=60),
       paths=st.sampled_from([("primary",), ("primary", "backup")]), tries=st.integers(1, 3),
       up=st.sampled_from([None, True, False]), gaps=st.lists(st.floats(0.5, 70), max_size=30))
def test_every_report_ends_acknowledged_once_and_nothing_goes_after_its_ack(
        kinds: list[str], answers: list[Answer], paths: tuple[str, ...], tries: int, up: bool | None,
        gaps: list[float]) -> None:
    s = Settings(paths, attempts_per_path=tries, ack_timeout_s=0.5, supervision_s=30, periodic_test_h=0)
    receiver = Script(*answers)
    desk = Desk([Report(i + 1, kind) for i, kind in enumerate(kinds)], s=s, up=dict.fromkeys(paths, up),
                receiver=receiver, tested=False)
    delivered: list[int] = []
    undelivered = False

    def one_round() -> None:
        nonlocal undelivered
        for action in desk.round():
            match action:
                case Send(report=Report(id=i)):
                    assert i not in delivered, "sent after its ACK"
                case Delivered(report=Report(id=i)):
                    delivered.append(i)
                case Escalate(alert=alert):
                    assert alert is not undelivered, "the undelivered alarm is raised once"
                    undelivered = True
                case AllDelivered():
                    assert undelivered and not desk.pending
                    undelivered = False
                case Wait(until=until):
                    assert until >= desk.now

    for gap in gaps:
        one_round()
        desk.now += gap
    while receiver.left:  # each round takes an answer at least (a link test is due every 29 s)
        one_round()
        desk.now += MAX_BACKOFF_S
    for _ in range(3):  # every receiver acknowledges everything now
        one_round()
        desk.now += MAX_BACKOFF_S
    assert sorted(delivered) == [r + 1 for r in range(len(kinds))], "each report acknowledged, once"
    assert not undelivered, "and the undelivered alarm cleared"


@settings(max_examples=300, deadline=None, database=None)
@given(answers=st.lists(ANSWERS, max_size=40), tries=st.integers(1, 4))
def test_a_report_uses_every_try_of_every_path_before_it_is_escalated(answers: list[Answer], tries: int) -> None:
    s = Settings(("primary", "backup"), attempts_per_path=tries, ack_timeout_s=0.5, supervision_s=30,
                 periodic_test_h=0)
    desk = Desk([ALARM], s=s, receiver=Script(*answers))
    while desk.pending:
        desk.heard.clear()
        actions = desk.round()
        runs: dict[str, list[tuple[int, str]]] = {}  # path: (attempt, answer) of each try of the report
        for send, answer in desk.heard:
            if send.report is not None:
                runs.setdefault(send.path, []).append((send.attempt, answer.token))
        for run in runs.values():
            assert [attempt for attempt, _ in run] == list(range(1, len(run) + 1)), "1, 2, ...: one number"
            assert len(run) <= tries
            assert all(token not in ("ACK", "DUH") for _, token in run[:-1]), "an ACK or a DUH ends the path"
            assert len(run) == tries or run[-1][1] in ("ACK", "DUH")
        if of(Escalate, actions):
            assert sorted(runs) == ["backup", "primary"] and all(run[-1][1] != "ACK" for run in runs.values())
        else:
            assert of(Delivered, actions) and [run[-1][1] for run in runs.values()][-1] == "ACK"
        desk.now += MAX_BACKOFF_S
