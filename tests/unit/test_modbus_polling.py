"""A module's polls without IO: offline after `offline_after` failures in a row and only then, online again at
the first reading, each change reported once; Modbus TCP transaction ids never shared by two requests
awaiting an answer, and an answer's owner found once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus_di.polling import ModulePolls, Requests


def test_three_silent_polls_take_a_module_offline_and_one_reading_brings_it_back() -> None:
    polls = ModulePolls(offline_after=3)
    assert polls.answered() == "online"
    assert [polls.failed("no answer within 0.5 s") for _ in range(4)] == [None, None, "offline", None]
    assert (polls.online, polls.was_offline, polls.errors, polls.last_error) == (False, True, 4,
                                                                                 "no answer within 0.5 s")
    assert polls.answered() == "online" and polls.failures == 0
    assert polls.answered() is None, "reported once"


def test_a_line_that_cannot_be_opened_takes_a_module_offline_once() -> None:
    polls = ModulePolls(offline_after=3)
    assert polls.went_offline() == "offline" and polls.went_offline() is None
    assert polls.failed("refused") is None, "already offline: nothing new to say"


def test_a_refused_latch_clear_is_counted_and_changes_nothing_else() -> None:
    polls = ModulePolls(offline_after=1)
    polls.answered()
    polls.side_error("clearing latch of input 3: Modbus exception 1")
    assert (polls.online, polls.failures, polls.errors) == (True, 0, 1)


def test_a_read_is_outstanding_until_it_ends() -> None:
    polls = ModulePolls(offline_after=3)
    polls.sent(7)
    assert (polls.pending, polls.polls) == (7, 1)
    polls.failed("no answer")
    assert polls.pending is None
    polls.sent(8)
    polls.answered()
    assert polls.pending is None


@given(st.integers(1, 5), st.lists(st.sampled_from(["ok", "fail", "line_down"]), max_size=60))
def test_polls_follow_the_rule_and_report_each_change_once(offline_after: int, outcomes: list[str]) -> None:
    polls = ModulePolls(offline_after)
    online: bool | None = None
    in_a_row = 0
    ever_offline = False
    for outcome in outcomes:
        before = online
        if outcome == "ok":
            in_a_row, online = 0, True
            change = polls.answered()
        elif outcome == "fail":
            in_a_row += 1
            online = False if in_a_row >= offline_after else online
            change = polls.failed("x")
        else:
            online = False
            change = polls.went_offline()
        ever_offline = ever_offline or online is False
        assert polls.online == online
        assert change == (None if online == before else ("online" if online else "offline"))
    assert polls.errors == outcomes.count("fail")
    assert polls.was_offline == ever_offline


@given(st.lists(st.one_of(st.just("new"), st.integers(0, 70_000)), max_size=300), st.integers(0, 0xFFFF))
def test_a_transaction_id_is_never_shared_by_two_outstanding_requests(steps: list[str | int], start: int) -> None:
    requests: Requests[int] = Requests(last=start)
    outstanding: dict[int, int] = {}
    for n, step in enumerate(steps):
        if step == "new":
            transaction = requests.new(n)
            assert 1 <= transaction <= 0xFFFF and transaction not in outstanding
            outstanding[transaction] = n
        else:
            assert requests.answered(int(step)) == outstanding.pop(int(step), None)
    assert requests.owners == outstanding


def test_ids_go_round_after_65535() -> None:
    requests: Requests[str] = Requests(last=0xFFFE)
    assert [requests.new("a"), requests.new("b"), requests.new("c")] == [0xFFFF, 1, 2]
