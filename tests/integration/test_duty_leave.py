"""Leave and uncovered posts (R05, 「因事请假,须得到批准,待安排好人员后方可离岗」): a guard asks for leave from
their shift; only the leader on duty (or a supervisor) approves it, and only once a replacement is named, who
then takes the assignment; a shift running short of its guards is a post_uncovered alarm until it is covered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.config_file import validate_config
from gateway.records import roster
from gateway.records.models import Alarm, AuditEntry, DutyAssignment, utcnow
from gateway.rules_service.service import RulesService
from tests.integration.helpers import CONSOLE_PASSWORD, console_client

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = CONSOLE_PASSWORD
CONFIG = validate_config({
    "site": {"id": "s1", "name": "Test School"},
    "duty": {"shifts": [{"id": "all", "name": "全天", "from": "00:00", "to": "00:00", "guards": 1}],
             "leader_required": False},
})


@pytest.fixture
def school(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    users = {"guard1": "guard", "guard2": "guard", "lead1": "guard", "super1": "supervisor"}
    with console_client(tmp_path, amqtt_broker.port, users, "en", duty=CONFIG.duty) as (client, sessions):
        yield {"client": client, "sessions": sessions, "bus": client.app.state.console.bus}


def login(client: TestClient, username: str) -> str:
    client.cookies.clear()
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/duty").text
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def assign(sessions: Any, name: str, role: str, username: str | None) -> int:
    today = datetime.now(TZ).date()
    with sessions.begin() as session:
        return roster.assign(session, CONFIG.duty, TZ, day=today, shift="all", role=role, name=name,
                             username=username, actor="super1", now=utcnow()).id


def test_leave_is_approved_by_the_leader_on_duty_only_with_a_replacement(school: dict[str, Any]) -> None:
    client, sessions = school["client"], school["sessions"]
    mine = assign(sessions, "张保安", "guard", "guard1")
    other = assign(sessions, "李保安", "guard", "guard2")
    assign(sessions, "王校长", "leader", "lead1")
    csrf = login(client, "guard1")
    assert client.post(f"/duty/{other}/leave", data={"csrf_token": csrf, "reason": "家里有事"}).status_code == 409, \
        "a guard asks for their own shift's leave only"
    assert client.post(f"/duty/{mine}/leave", data={"csrf_token": csrf, "reason": " "}).status_code == 409
    assert client.post(f"/duty/{mine}/leave", data={"csrf_token": csrf, "reason": "家里有事"}).status_code == 303
    with sessions() as session:
        (leave,) = roster.leaves(session, utcnow())
    assert client.post(f"/duty/leaves/{leave.id}/approve",
                       data={"csrf_token": csrf, "replacement": "赵师傅"}).status_code == 403, "not their own"
    csrf = login(client, "guard2")
    assert client.post(f"/duty/leaves/{leave.id}/approve",
                       data={"csrf_token": csrf, "replacement": "赵师傅"}).status_code == 403
    csrf = login(client, "lead1")  # the leader on duty, by the roster
    page = client.get("/duty").text
    assert f'action="/duty/leaves/{leave.id}/approve"' in page
    empty = client.post(f"/duty/leaves/{leave.id}/approve", data={"csrf_token": csrf, "replacement": ""})
    assert empty.status_code == 409 and "name the replacement first" in empty.text
    assert client.post(f"/duty/leaves/{leave.id}/approve",
                       data={"csrf_token": csrf, "replacement": "赵师傅"}).status_code == 303
    with sessions() as session:
        row = session.get_one(DutyAssignment, mine)
        assert (row.name, row.username) == ("赵师傅", None), "the replacement takes the assignment"
        audit = [(a.actor, a.action, a.result) for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("roster.leave%") | (AuditEntry.action == "role.refused")).order_by(AuditEntry.id))]
    assert audit == [("guard1", "roster.leave", "ok"), ("guard1", "role.refused", "refused"),
                     ("guard2", "role.refused", "refused"), ("lead1", "roster.leave_approved", "ok")]
    assert client.post(f"/duty/leaves/{leave.id}/refuse", data={"csrf_token": csrf}).status_code == 409


def test_a_shift_short_of_its_guards_is_an_alarm_until_it_is_covered(school: dict[str, Any]) -> None:
    sessions, bus = school["sessions"], school["bus"]
    rules = RulesService("s1", bus, sessions, CONFIG)

    def alarms() -> list[tuple[str, bool]]:
        with sessions() as session:
            return [(a.alarm_type, a.condition_active) for a in session.scalars(select(Alarm).order_by(Alarm.id))]

    rules._watch_posts()
    assert alarms() == [], "nobody on the roster today: the duty page's warning, not an alarm (no roster kept)"
    assign(sessions, "王校长", "leader", "lead1")  # the roster is kept today, and the shift has no guard
    rules._watch_posts()
    assert alarms() == [("post_uncovered", True)], "a post without a guard while its shift runs"
    rules._watch_posts()
    assert alarms() == [("post_uncovered", True)], "once"
    assign(sessions, "张保安", "guard", "guard1")
    rules._watch_posts()
    assert alarms() == [("post_uncovered", False)], "covered: cleared"
    with sessions() as session:
        place = session.scalars(select(Alarm.place)).one()
    assert place and "全天" in place
