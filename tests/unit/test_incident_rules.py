"""Safety-ledger rules: reporting deadlines and their alerts (minute by minute, with a clock the test moves), the
countdown, what a person may do to an incident, the hazard lifecycle, inspections due and maintenance items."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.config import IncidentCategory, IncidentsConfig
from gateway.rules.alarms import RefusedAction
from gateway.rules.incidents import (
    FaultAlarm,
    HazardDue,
    HazardFacts,
    IncidentFacts,
    InspectionDue,
    MaintenanceDue,
    check_item,
    check_new_hazard,
    check_new_incident,
    countdown,
    deadlines,
    due_times,
    hazard_alerts,
    hazard_transition,
    incident_action,
    inspections_due,
    maintenance_due,
    maintenance_fault,
    overdue,
)

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=TZ)  # the incident is confirmed at 09:00
DEFAULT = IncidentCategory()  # 1 h to report, warned 15 min before
SERIOUS = IncidentCategory(report_h=2, written_h=8, warn_before_min=30)  # local templates: 2 h phone, 8 h written


class Clock:
    """The test's clock: it moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def incident(category: IncidentCategory = DEFAULT, confirmed: datetime = T0, **fields: Any) -> IncidentFacts:
    report_due, written_due = due_times(category, confirmed)
    return replace(IncidentFacts(1, "open", confirmed - timedelta(minutes=5), confirmed, report_due,
                                 written_due_at=written_due), **fields)


def walk(category: IncidentCategory, until: timedelta, step: timedelta = timedelta(seconds=30),
         reported_at: datetime | None = None) -> list[tuple[str, str]]:
    """Tick every `step` from the confirmation, as the rules service does, keeping the alerts given as the ledger
    does; returns (local time, alert) for each alert given."""
    clock, facts, given = Clock(T0), incident(category), []
    while clock.now <= T0 + until:
        if reported_at is not None and clock.now >= reported_at:
            facts = replace(facts, reported_at=reported_at, state="reported")
        for alert in deadlines(facts, category, clock.now):
            given.append((clock.now.strftime("%H:%M:%S"), alert.which))
            facts = replace(facts, alerts={**facts.alerts, alert.which: clock.now.isoformat()})
        clock.advance(seconds=step.total_seconds())
    return given


def test_default_deadline_alerts_fifteen_minutes_before_and_at_the_hour_once_each() -> None:
    assert walk(DEFAULT, timedelta(hours=3)) == [("09:45:00", "report:before"), ("10:00:00", "report:due")]


def test_serious_category_two_hours_by_phone_and_eight_in_writing() -> None:
    assert walk(SERIOUS, timedelta(hours=10), step=timedelta(minutes=1)) == [
        ("10:30:00", "report:before"), ("11:00:00", "report:due"),
        ("16:30:00", "written:before"), ("17:00:00", "written:due")]


def test_a_report_in_time_stops_its_alerts_but_not_the_written_reports() -> None:
    given = walk(SERIOUS, timedelta(hours=10), step=timedelta(minutes=1), reported_at=T0 + timedelta(minutes=100))
    assert given == [("10:30:00", "report:before"), ("16:30:00", "written:before"), ("17:00:00", "written:due")]


@pytest.mark.parametrize(("offset", "given", "expected"), [
    # (time since confirmation, alerts already given) -> the alerts due now
    (timedelta(minutes=44, seconds=59), {}, []),
    (timedelta(minutes=45), {}, ["report:before"]),
    (timedelta(minutes=59, seconds=59), {"report:before": "x"}, []),
    (timedelta(minutes=60), {"report:before": "x"}, ["report:due"]),
    (timedelta(hours=5), {"report:before": "x", "report:due": "x"}, []),
    # the gateway was down across both: only the one that still means something
    (timedelta(minutes=65), {}, ["report:due"]),
])
def test_the_alert_due_at_each_minute(offset: timedelta, given: dict[str, str], expected: list[str]) -> None:
    alerts = deadlines(incident(alerts=given), DEFAULT, T0 + offset)
    assert [a.which for a in alerts] == expected
    assert all(a.key == f"incident-1:{a.which}" and a.due_at == T0 + timedelta(hours=1) for a in alerts)


def test_no_warning_when_warn_before_is_zero_and_nothing_once_closed() -> None:
    quiet = IncidentCategory(report_h=1, warn_before_min=0)
    assert walk(quiet, timedelta(hours=2)) == [("10:00:00", "report:due")]
    assert deadlines(incident(state="closed"), DEFAULT, T0 + timedelta(hours=3)) == []


def test_categories_from_the_config_override_the_default() -> None:
    config = IncidentsConfig.model_validate({"categories": {"violence": {"report_h": 2, "written_h": 8,
                                                                        "steps": ["报警110", "保护现场"]}}})
    assert due_times(config.category("violence"), T0) == (T0 + timedelta(hours=2), T0 + timedelta(hours=8))
    assert due_times(config.category("injury"), T0) == (T0 + timedelta(hours=1), None), "the seed's 1 h"
    assert config.category("violence").steps == ["报警110", "保护现场"]


@pytest.mark.parametrize(("now", "done", "text", "state"), [
    (T0, None, "1 h 0 min left", "running"),
    (T0 + timedelta(minutes=20, seconds=30), None, "40 min left", "running"),
    (T0 + timedelta(minutes=59, seconds=30), None, "1 min left", "warning"),  # never claims time that is not there
    (T0 + timedelta(minutes=50), None, "10 min left", "warning"),
    (T0 + timedelta(hours=1), None, "overdue by 0 min", "overdue"),
    (T0 + timedelta(hours=2, minutes=5, seconds=50), None, "overdue by 1 h 5 min", "overdue"),
    (T0 + timedelta(hours=3), T0 + timedelta(minutes=59), "on time", "on_time"),
    (T0 + timedelta(hours=3), T0 + timedelta(minutes=72), "late by 12 min", "late"),
])
def test_countdown(now: datetime, done: datetime | None, text: str, state: str) -> None:
    shown = countdown(T0 + timedelta(hours=1), now, done)
    assert (shown.text(), shown.state) == (text, state)


# -- what a person may do to an incident ------------------------------------------------------------


NOW = T0 + timedelta(minutes=30)


@pytest.mark.parametrize(("facts", "action", "kwargs", "refusal"), [
    (incident(state="closed"), "report", {}, "the incident is closed: only notes can be added"),
    (incident(state="closed"), "step", {"steps": ["a"], "index": 0}, "the incident is closed: only notes can be added"),
    (incident(reported_at=NOW, state="reported"), "report", {},
     "the report to the centre school is already recorded"),
    (incident(), "report", {"at": NOW + timedelta(minutes=1)}, "the report time is in the future"),
    (incident(), "report", {"at": T0 - timedelta(hours=1)}, "the report time is before the incident happened"),
    (incident(written_at=NOW), "written", {}, "the written report is already recorded"),
    (incident(), "written", {"closing": {"cause": "a", "handling": "b", "lessons": "c", "measures": " "}},
     "the written report needs its cause, handling, lessons and corrective measures"),
    (incident(), "written", {}, "the written report needs its cause, handling, lessons and corrective measures"),
    (incident(), "forwarded", {}, "record the report to the centre school first"),
    (incident(reported_at=NOW, state="reported"), "forwarded", {"at": NOW - timedelta(minutes=1)},
     "the centre school passed it on before it was told"),
    (incident(reported_at=NOW, state="reported", forwarded_at=NOW), "forwarded", {},
     "the report to the education bureau is already recorded"),
    (incident(), "step", {"steps": ["a", "b"], "index": 2}, "there is no such step in this category's checklist"),
    (incident(), "step", {"steps": ["a", "b"], "index": 1, "ticked": ["b"]}, "this step is already ticked"),
    (incident(), "close", {}, "record the report to the centre school before closing the incident"),
    (incident(SERIOUS, reported_at=NOW, state="reported"), "close", {},
     "record the written report before closing the incident"),
])
def test_incident_refusals_say_why(facts: IncidentFacts, action: Any, kwargs: dict[str, Any], refusal: str) -> None:
    with pytest.raises(RefusedAction) as refused:
        incident_action(facts, action, NOW, **kwargs)
    assert str(refused.value) == refusal


def test_incident_actions_that_apply() -> None:
    earlier = T0 + timedelta(minutes=10)  # phoned at 09:10, written in the ledger at 09:30
    assert incident_action(incident(), "report", NOW, at=earlier) == {"reported_at": earlier, "state": "reported"}
    closing = {"cause": " 校外人员闯入 ", "handling": "保安制止,报警110", "lessons": "门卫登记不严",
               "measures": "增设门禁"}
    assert incident_action(incident(), "written", NOW, closing=closing) == {
        "written_at": NOW, "cause": "校外人员闯入", "handling": "保安制止,报警110", "lessons": "门卫登记不严",
        "measures": "增设门禁"}
    assert incident_action(incident(reported_at=earlier, state="reported"), "forwarded", NOW) == {"forwarded_at": NOW}
    assert incident_action(incident(), "step", NOW, steps=["a", "b"], index=1, ticked=["a"]) == {}
    assert incident_action(incident(state="closed"), "note", NOW) == {}, "a note may come after closing"
    reported = incident(reported_at=earlier, state="reported")
    assert incident_action(reported, "close", NOW) == {"state": "closed", "closed_at": NOW}


@pytest.mark.parametrize(("args", "refusal"), [
    (("brawl", "minor", "x", T0, T0), "choose a category from the list"),
    (("violence", "huge", "x", T0, T0), "choose a severity from the list"),
    (("violence", "minor", "  ", T0, T0), "give the incident a short title"),
    (("violence", "minor", "x", NOW + timedelta(hours=1), NOW + timedelta(hours=1)),
     "the time it happened is in the future"),
    (("violence", "minor", "x", T0, NOW + timedelta(hours=1)), "the time it was confirmed is in the future"),
    (("violence", "minor", "x", T0, T0 - timedelta(minutes=1)), "it cannot have been confirmed before it happened"),
])
def test_a_new_incident_is_checked(args: tuple[Any, ...], refusal: str) -> None:
    with pytest.raises(RefusedAction, match=refusal):
        check_new_incident(*args, NOW)
    check_new_incident("violence", "serious", "校门口斗殴", T0 - timedelta(minutes=5), T0, NOW)


# -- hazards --------------------------------------------------------------------------------------


FOUND = HazardFacts("found", T0)


def test_hazard_lifecycle_found_assigned_fixed_signed_off_with_who_and_when() -> None:
    clock = Clock(T0)
    due = T0 + timedelta(days=3)
    step = hazard_transition(FOUND, "assign", "super1", clock.advance(hours=1), assigned_to=" 后勤 王师傅 ",
                             measures="更换围栏", due_at=due)
    assert step == {"state": "assigned", "assigned_to": "后勤 王师傅", "measures": "更换围栏", "due_at": due}
    assigned = HazardFacts("assigned", T0, "后勤 王师傅", "更换围栏")
    fixed_at = clock.advance(days=1)
    assert hazard_transition(assigned, "fix", "guard1", fixed_at) == {
        "state": "fixed", "fixed_at": fixed_at, "fixed_by": "guard1"}
    fixed = replace(assigned, state="fixed", fixed_by="guard1")
    signed_at = clock.advance(hours=2)
    assert hazard_transition(fixed, "sign_off", "super1", signed_at) == {
        "state": "signed_off", "signed_off_at": signed_at, "signed_off_by": "super1"}
    assert hazard_transition(fixed, "reopen", "super1", signed_at) == {
        "state": "assigned", "fixed_at": None, "fixed_by": None}, "a repair that fails the check goes back"


def test_an_escalated_hazard_keeps_why_and_can_still_be_fixed() -> None:
    step = hazard_transition(FOUND, "escalate", "super1", NOW, reason="围墙倒塌风险，已报教育局")
    assert step == {"state": "escalated", "measures": "[super1] 围墙倒塌风险，已报教育局"}
    escalated = HazardFacts("escalated", T0, measures=step["measures"])
    assert hazard_transition(escalated, "fix", "guard1", NOW)["state"] == "fixed"
    assert hazard_transition(escalated, "assign", "super1", NOW, assigned_to="施工队")["measures"] == step["measures"]


@pytest.mark.parametrize(("hazard", "action", "actor", "kwargs", "refusal"), [
    (FOUND, "fix", "guard1", {}, "assign the hazard first: who fixes it, and by when"),
    (FOUND, "sign_off", "super1", {}, "the hazard is not fixed yet: it is signed off once fixed"),
    (HazardFacts("assigned", T0, "王"), "sign_off", "super1", {},
     "the hazard is not fixed yet: it is signed off once fixed"),
    (HazardFacts("fixed", T0, "王", fixed_by="super1"), "sign_off", "super1", {},
     "the person who fixed the hazard cannot sign it off: someone else checks the repair"),
    (HazardFacts("fixed", T0, "王", fixed_by="guard1"), "fix", "guard1", {}, "the hazard is already fixed"),
    (HazardFacts("fixed", T0, "王", fixed_by="guard1"), "assign", "super1", {"assigned_to": "李"},
     "the hazard is already fixed: sign it off, or reopen it if the repair is not good"),
    (HazardFacts("fixed", T0, "王", fixed_by="guard1"), "escalate", "super1", {"reason": "x"},
     "the hazard is already fixed"),
    (HazardFacts("signed_off", T0), "reopen", "super1", {}, "the hazard is signed off: nothing more to do"),
    (FOUND, "reopen", "super1", {}, "only a fixed hazard can be reopened"),
    (FOUND, "assign", "super1", {"assigned_to": "  "}, "name who fixes the hazard"),
    (FOUND, "assign", "super1", {"assigned_to": "王", "due_at": T0 - timedelta(days=1)},
     "the due date is before the hazard was found"),
    (FOUND, "escalate", "super1", {}, "say to whom and why the hazard is escalated"),
    (HazardFacts("escalated", T0), "escalate", "super1", {"reason": "x"}, "the hazard is already escalated"),
])
def test_hazard_refusals_say_why(hazard: HazardFacts, action: Any, actor: str, kwargs: dict[str, Any],
                                 refusal: str) -> None:
    with pytest.raises(RefusedAction) as refused:
        hazard_transition(hazard, action, actor, NOW, **kwargs)
    assert str(refused.value) == refusal


@pytest.mark.parametrize(("args", "refusal"), [
    (("", "x", "general", "patrol"), "say where the hazard is"),
    (("教学楼", " ", "general", "patrol"), "describe the hazard"),
    (("教学楼", "x", "huge", "patrol"), "choose a severity from the list"),
    (("教学楼", "x", "major", "neighbour"), "choose where the hazard was reported from the list"),
])
def test_a_new_hazard_is_checked(args: tuple[str, str, str, str], refusal: str) -> None:
    with pytest.raises(RefusedAction, match=refusal):
        check_new_hazard(*args)


# -- inspections ----------------------------------------------------------------------------------


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


@pytest.mark.parametrize(("now", "terms", "expected"), [
    ("2026-11-03 09:00", [], [("monthly", "2026-11", "2026-11-30 23:59:59")]),
    ("2026-12-31 23:59", [], [("monthly", "2026-12", "2026-12-31 23:59:59")]),
    ("2027-01-01 00:00", [], [("monthly", "2027-01", "2027-01-31 23:59:59")]),
    ("2027-02-12 23:59", ["2027-02-20"], [("monthly", "2027-02", "2027-02-28 23:59:59")]),  # more than a week before
    ("2027-02-13 00:00", ["2027-02-20"], [("monthly", "2027-02", "2027-02-28 23:59:59"),
                                          ("term_start", "term-2027-02-20", "2027-03-05 23:59:59")]),
    ("2027-03-05 23:59", ["2026-09-01", "2027-02-20"], [("monthly", "2027-03", "2027-03-31 23:59:59"),
                                                        ("term_start", "term-2027-02-20", "2027-03-05 23:59:59")]),
    ("2027-03-06 00:00", ["2027-02-20"], [("monthly", "2027-03", "2027-03-31 23:59:59")]),
])
def test_inspections_due_monthly_and_within_two_weeks_of_term_start(now: str, terms: list[str],
                                                                   expected: list[tuple[str, str, str]]) -> None:
    due = inspections_due(local(now), TZ, terms)
    assert due == [InspectionDue(kind, period, local(at)) for kind, period, at in expected]


@pytest.mark.parametrize(("now", "kinds"), [
    # the spring term: 2027-02-20 to 2027-07-10, its middle 2027-05-01
    ("2027-02-12 23:59", []),
    ("2027-02-13 00:00", [("term_start", "term-2027-02-20", "2027-03-05 23:59:59")]),
    ("2027-04-23 23:59", []),
    ("2027-04-24 00:00", [("term_middle", "term-2027-02-20-mid", "2027-05-08 23:59:59")]),
    ("2027-05-08 23:59", [("term_middle", "term-2027-02-20-mid", "2027-05-08 23:59:59")]),
    ("2027-05-09 00:00", []),
    ("2027-06-26 00:00", [("term_end", "term-2027-02-20-end", "2027-07-10 23:59:59")]),
    ("2027-07-11 00:00", []),
])
def test_inspections_at_the_start_middle_and_end_of_a_term(now: str, kinds: list[tuple[str, str, str]]) -> None:
    """学期前、学期中、学期结束 (R27): with the term's end known, one in its middle and one in its last two weeks."""
    due = inspections_due(local(now), TZ, [], [("2027-02-20", "2027-07-10")])
    assert [(d.kind, d.period, d.due_at) for d in due[1:]] == [(k, p, local(at)) for k, p, at in kinds]
    assert due[0].kind == "monthly"


def test_a_term_start_given_twice_is_one_inspection() -> None:
    due = inspections_due(local("2027-02-15 08:00"), TZ, ["2027-02-20"], [("2027-02-20", "2027-07-10")])
    assert [d.period for d in due] == ["2027-02", "term-2027-02-20"]


@pytest.mark.parametrize(("group", "item", "passed", "note", "refusal"), [
    ("fire", "灭火器在有效期内", True, "", None),
    ("fire", "灭火器在有效期内", False, "食堂2具过期", None),
    ("fire", "灭火器在有效期内", False, "  ", "say what is wrong: a failed item opens a hazard"),
    ("fire", "围墙完好", True, "", "there is no such item in the inspection checklist"),  # another group's
    ("nothing", "x", True, "", "there is no such item in the inspection checklist"),
])
def test_a_checklist_item(group: str, item: str, passed: bool, note: str, refusal: str | None) -> None:
    from gateway.config import DEFAULT_CHECKLIST

    if refusal is None:
        check_item(DEFAULT_CHECKLIST, group, item, passed, note)
    else:
        with pytest.raises(RefusedAction, match=refusal):
            check_item(DEFAULT_CHECKLIST, group, item, passed, note)


def test_the_default_checklist_holds_what_the_seed_names() -> None:
    """R30/R31: guard force, the seed's guard equipment, rules, installations, fire equipment, walls and exits."""
    from gateway.config import DEFAULT_CHECKLIST

    assert set(DEFAULT_CHECKLIST) == {"guard_force", "guard_equipment", "rules", "installations", "fire",
                                      "walls_exits"}
    assert {"防刺手套", "辣椒水", "防暴钢叉", "橡胶警棍"} <= set(DEFAULT_CHECKLIST["guard_equipment"])
    assert any("疏散" in item for item in DEFAULT_CHECKLIST["walls_exits"])


def test_the_month_is_the_schools_not_utcs() -> None:
    """00:30 on 1 December in Shanghai is still November in UTC: the task is December's."""
    assert inspections_due(local("2026-12-01 00:30"), TZ, [])[0].period == "2026-12"


# -- maintenance ----------------------------------------------------------------------------------


def fault(alarm_id: int, alarm_type: str, device: str = "cam-1", kind: str | None = "camera",
          raised: datetime = T0, test: bool = False) -> FaultAlarm:
    return FaultAlarm(alarm_id, device, alarm_type, raised, test, kind)


@pytest.mark.parametrize(("alarm", "expected"), [
    (fault(1, "device_offline"), "device_offline"),
    (fault(1, "fault", "box-1", "alarm_input"), "fault"),
    (fault(1, "bollard_fault", "bollard-1", "bollard"), "bollard_fault"),
    (fault(1, "tamper"), "camera_tamper"),
    (fault(1, "tamper", "reader-1", "reader"), None),  # a reader's tamper is a break-in, not a repair
    (fault(1, "panic", "box-1", "alarm_input"), None),
    (fault(1, "device_offline", test=True), None),  # a scheduled button test
])
def test_which_alarms_are_equipment_faults(alarm: FaultAlarm, expected: str | None) -> None:
    assert maintenance_fault(alarm) == expected


def test_maintenance_items_are_due_in_the_repair_target_one_per_device_and_fault() -> None:
    alarms = [fault(3, "device_offline", raised=T0 + timedelta(hours=2)), fault(2, "device_offline"),
              fault(4, "tamper"), fault(5, "bollard_fault", "bollard-1", "bollard"),
              fault(6, "device_offline", "cam-2")]
    items = maintenance_due(alarms, [("cam-2", "device_offline")], 24)
    assert items == [MaintenanceDue(2, "cam-1", "device_offline", T0, T0 + timedelta(hours=24)),
                     MaintenanceDue(4, "cam-1", "camera_tamper", T0, T0 + timedelta(hours=24)),
                     MaintenanceDue(5, "bollard-1", "bollard_fault", T0, T0 + timedelta(hours=24))]


def test_overdue_lists_the_late_ones_most_overdue_first() -> None:
    items = [MaintenanceDue(i, "cam-1", "fault", T0, T0 + timedelta(hours=h)) for i, h in ((1, 30), (2, 20), (3, 10))]
    assert [i.alarm_id for i in overdue(items, T0 + timedelta(hours=25))] == [3, 2]
    assert overdue(items, T0 + timedelta(hours=10)) == [], "due at 19:00 is not overdue at 19:00"


@pytest.mark.parametrize(("state", "offset_h", "given", "expected"), [
    ("assigned", -49, {}, []),  # more than two days before: nothing
    ("assigned", -47, {}, ["before"]),
    ("assigned", -47, {"before": "x"}, []),  # given once
    ("assigned", 1, {}, ["due"]),  # past it
    ("assigned", 1, {"before": "x"}, ["due"]),
    ("assigned", 1, {"due": "x"}, []),
    ("escalated", 1, {}, ["due"]),  # escalated is still being put right
    ("fixed", 1, {}, []),  # fixed: its sign-off is not due by a date
    ("signed_off", 1, {}, []),
    ("found", 1, {}, []),  # no due date without an assignment (and none given here)
])
def test_a_hazards_due_date_alerts(state: str, offset_h: int, given: dict[str, str], expected: list[str]) -> None:
    due = T0 + timedelta(days=5)
    hazard = HazardDue(7, state, None if state == "found" else due, given)
    alerts = hazard_alerts(hazard, due + timedelta(hours=offset_h), timedelta(days=2))
    assert [a.which for a in alerts] == expected
    assert all(a.key == f"hazard-7:{a.which}" and a.due_at == due for a in alerts)


def test_no_early_alert_when_warn_days_is_zero() -> None:
    due = T0 + timedelta(days=5)
    assert hazard_alerts(HazardDue(1, "assigned", due), due - timedelta(minutes=1), timedelta(0)) == []
