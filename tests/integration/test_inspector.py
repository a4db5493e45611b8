"""The inspector's role (督导检查, R43): every record, report and the audit log to read, nothing to change, and
every page they open is itself in the audit log. A guard may not read the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.records.models import AuditEntry
from tests.integration.helpers import CONSOLE_PASSWORD, console_client

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = CONSOLE_PASSWORD
READ = ["/alarms", "/access", "/visitors", "/patrols", "/duty", "/notifications", "/incidents",
        "/incidents/hazards", "/incidents/inspections", "/devices", "/reports", "/audit"]


@pytest.fixture
def console(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    with console_client(tmp_path, amqtt_broker.port, {"guard1": "guard", "insp1": "inspector", "super1": "supervisor"},
                        "zh_CN") as (client, sessions):
        yield {"client": client, "sessions": sessions}


def login(client: TestClient, username: str) -> str:
    client.cookies.clear()
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    page = client.get("/alarms").text
    return page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')


def views(sessions: Any, who: str) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry.target).where(
            AuditEntry.actor == who, AuditEntry.action == "inspector.view").order_by(AuditEntry.id)))


def test_an_inspector_reads_everything_changes_nothing_and_each_view_is_audited(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    csrf = login(client, "insp1")
    before = len(views(sessions, "insp1"))
    for path in READ:
        page = client.get(path)
        assert page.status_code == 200, path
        assert 'id="nav-audit"' in page.text, "the audit log is in an inspector's menu"
    today = datetime.now(TZ).date().isoformat()
    report = client.get(f"/reports/download?kind=daily&day={today}&fmt=csv")
    assert report.status_code == 200
    assert views(sessions, "insp1")[before:] == [*READ, f"/reports/download?kind=daily&day={today}&fmt=csv"]
    refused = [client.post("/incidents/hazards", data={"csrf_token": csrf, "place": "南门", "description": "x",
                                                       "severity": "general", "source": "patrol"}),
               client.post("/api/lockdown", json={"reason": "x"}, headers={"X-CSRF-Token": csrf}),
               client.post("/reports/submit", data={"csrf_token": csrf, "kind": "monthly", "period": "2026-11"})]
    assert [r.status_code for r in refused] == [403, 403, 403]
    audit = client.get("/audit?actor=insp1&result=refused").text
    assert audit.count('class="refused"') == 3, "the refusals are in the audit log, which the inspector reads"


def test_a_guard_may_not_read_the_audit_log_and_is_not_audited_for_reading(console: dict[str, Any]) -> None:
    client, sessions = console["client"], console["sessions"]
    login(client, "guard1")
    page = client.get("/alarms").text
    assert 'id="nav-audit"' not in page
    assert client.get("/audit").status_code == 403
    assert views(sessions, "guard1") == []
    login(client, "super1")
    assert client.get("/audit").status_code == 200
    assert views(sessions, "super1") == []
