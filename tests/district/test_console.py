"""The district console over a real PostgreSQL filled as the workers fill it (store.write_alarms, write_state):
logins and roles, an inspector's every view audited, every school worst first with its figures, the JSON the
page polls, a school's page, an alarm's page with its steps and evidence, 404s, both languages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway import i18n
from gateway.cli import main
from gateway.console.auth import AuthError
from gateway.district import store
from gateway.district.config import load_district_config
from gateway.district.console import app as console_app
from gateway.district.console import users, views
from gateway.district.console.app import create_app
from tests.district.console_data import (
    MONTH,
    MONTH_START,
    NOW,
    PANIC,
    PASSWORD,
    TZ,
    district_database,
    fill_reports,
    incident,
    on,
)


@pytest.fixture(scope="module")
def district() -> Iterator[dict[str, Any]]:
    with district_database() as engine:
        yield {"engine": engine, "app": create_app("d1", "Test District", TZ, engine, "zh_CN")}


def client(app: FastAPI, username: str | None = None) -> TestClient:
    made = TestClient(app, base_url="http://testserver", follow_redirects=False)
    if username:
        assert made.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    return made


def order(page: str) -> list[str]:
    return re.findall(r'<tr data-site="([^"]+)"', page)


@pytest.mark.postgres
def test_every_page_needs_a_login_and_a_wrong_password_is_refused(district: dict[str, Any]) -> None:
    anonymous = client(district["app"])
    assert anonymous.get("/").headers["location"] == "/login?next=/"
    assert anonymous.get("/schools/north-primary").status_code == 303
    assert anonymous.get("/api/schools").status_code == 401
    assert anonymous.get("/healthz").json() == {"ok": True, "database": True}
    refused = anonymous.post("/login", data={"username": "duty1", "password": "not the password"})
    assert refused.status_code == 401 and "用户名或密码错误" in refused.text
    logged = client(district["app"], "duty1")
    assert logged.get("/").status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', logged.get("/").text)
    assert csrf is not None
    assert logged.post("/logout", data={"csrf_token": "forged"}).status_code == 403, "CSRF as the school console"
    assert logged.post("/logout", data={"csrf_token": csrf.group(1)}).status_code == 303
    assert logged.get("/").status_code == 303, "the session ended"


@pytest.mark.postgres
def test_roles_an_unknown_one_refused_and_an_inspectors_every_view_audited(district: dict[str, Any]) -> None:
    engine = district["engine"]
    with engine.begin() as conn, pytest.raises(AuthError, match="unknown role 'admin'"):
        users.add_user(conn, "boss", "admin", PASSWORD, NOW)
    assert users.allowed("duty_officer", "view") and users.allowed("inspector", "view")
    assert not users.allowed("inspector", "report.ack"), "an action not granted is refused to every role"

    inspector = client(district["app"], "inspector1")
    for path in ("/", "/schools/north-primary", "/schools/north-primary/alarms/7", "/api/schools", "/api/schools"):
        assert inspector.get(path).status_code == 200
    client(district["app"], "duty1").get("/schools/east-middle")
    with engine.connect() as conn:
        seen = conn.execute(select(users.audit_log.c.username, users.audit_log.c.target, users.audit_log.c.at)
                            .where(users.audit_log.c.action == "view").order_by(users.audit_log.c.id)).all()
    assert [(r.username, r.target) for r in seen] == [
        ("inspector1", "/"), ("inspector1", "/schools/north-primary"),
        ("inspector1", "/schools/north-primary/alarms/7"), ("inspector1", "/api/schools")], \
        "every page an inspector opens, the polled API once; a duty officer's views are not audited"
    assert all(abs(r.at - datetime.now(UTC)) < timedelta(minutes=1) for r in seen)


@pytest.mark.postgres
def test_the_schools_worst_first_with_their_figures_and_the_json_the_page_polls(district: dict[str, Any]) -> None:
    duty = client(district["app"], "duty1")
    page = duty.get("/").text
    expected = ["north-primary", "east-middle", "lock-school", "dark-school", "calm-school"]
    assert order(page) == expected
    north = page.split('<tr data-site="north-primary"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'class="open">2<', north) and re.search(r'class="unacked bad">1<', north)
    assert 'class="worst">P1<' in north and re.search(r'class="offline warn">1<', north)
    assert "2 条中 1 条中断" in north and ">在线<" in north
    dark = page.split('<tr data-site="dark-school"', 1)[1].split("</tr>", 1)[0]
    assert ">离线<" in dark and ">中断<" in dark and "已 40 分钟无消息" in dark
    lock = page.split('<tr data-site="lock-school"', 1)[1].split("</tr>", 1)[0]
    assert "封校中" in lock
    calm = page.split('<tr data-site="calm-school"', 1)[1].split("</tr>", 1)[0]
    assert 'class="open">0<' in calm and "全部正常（2 条）" in calm, "a button test is no open alarm"
    assert "时间均为 Asia/Shanghai (UTC+08:00) 时间" in page
    assert NOW.astimezone(TZ).strftime("%Y-%m-%d %H:%M") in calm, "the district's time, +08:00 of the stored UTC"

    data = duty.get("/api/schools").json()
    assert data["timezone"] == "Asia/Shanghai"
    assert [s["site"] for s in data["schools"]] == expected
    first = data["schools"][0]
    assert {k: first[k] for k in ("open", "unacked", "worst_priority", "devices_offline", "gateway", "bridge")} == {
        "open": 2, "unacked": 1, "worst_priority": 1, "devices_offline": 1, "gateway": "online", "bridge": "up"}
    assert first["police"] == {"paths": 2, "down": 1, "down_names": ["path-2"]}
    assert data["schools"][3]["silent_min"] == 40 and data["schools"][4]["silent_min"] is None


@pytest.mark.postgres
def test_a_school_page_and_404s(district: dict[str, Any]) -> None:
    duty = client(district["app"], "duty1")
    page = duty.get("/schools/north-primary").text
    alarms = page.split('id="alarms"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<tr data-id="(\d+)"', alarms) == ["7", "8"], "open ones, worst first; the closed fault not"
    assert "一键报警" in alarms and "防拆报警" in alarms and "南门报警盒" in alarms and "guard1" in alarms
    assert "yard-cam" in page.split('id="offline"', 1)[1].split("</table>", 1)[0]
    police = page.split('id="paths"', 1)[1].split("</table>", 1)[0]
    assert "path-2" in police and "no answer" in police
    quiet = duty.get("/schools/east-middle").text
    assert 'id="no-offline"' in quiet and 'id="no-paths"' in quiet, "what would fill them, said"
    assert "该校上报的设备均在线" in quiet

    assert duty.get("/schools/nowhere").status_code == 404
    assert "区平台没有收到过该编号学校的任何消息" in duty.get("/schools/nowhere").text
    assert duty.get("/schools/north-primary/alarms/99").status_code == 404
    assert duty.get("/schools/east-middle/alarms/7").status_code == 404, "an alarm of another school"
    assert duty.get(f"/schools/north-primary/alarms/{2**63}").status_code == 404
    assert duty.get("/schools/north-primary/alarms/x").status_code == 422


@pytest.mark.postgres
def test_an_alarm_page_with_its_steps_evidence_and_police_in_both_languages(district: dict[str, Any]) -> None:
    zh = client(district["app"], "duty1").get("/schools/north-primary/alarms/7").text
    assert "一键报警" in zh and "报警中，已确认" in zh
    steps = zh.split('id="steps"', 1)[1].split("</table>", 1)[0]
    assert steps.count("<tr>") == 4  # the header and three lines
    assert "联动：已向升降柱 gate-bollards 发送“升起”" in steps, "a step's note in the reader's language"
    assert "guard1" in steps and "系统" in steps
    raised_at = datetime.fromisoformat(PANIC["steps"][0]["at"]).astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")
    assert raised_at in steps, "the school's times in the district's zone"
    evidence = zh.split('id="evidence"', 1)[1].split("</table>", 1)[0]
    assert "gate-cam" in evidence and "抓拍" in evidence and "录像" in evidence and "录制中" in evidence
    assert "图片和录像保存在学校" in zh
    assert "已确认" in zh.split('id="police"', 1)[1].split("</table>", 1)[0]

    en = client(district["app"], "police1").get("/schools/north-primary/alarms/7").text  # police1 reads English
    assert "One-key alarm" in en and "linkage: &#39;raise&#39; sent to bollard gate-bollards" in en
    assert "The pictures and clips stay at the school" in en and "police liaison" in en
    empty = client(district["app"], "police1").get("/schools/east-middle/alarms/1").text
    assert 'id="no-steps"' in empty and 'id="no-evidence"' in empty and 'id="no-police"' in empty
    assert "No evidence." in empty

    switched = client(district["app"], "duty1")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', switched.get("/").text)
    assert csrf is not None
    assert switched.post("/lang", data={"lang": "en", "next": "/", "csrf_token": csrf.group(1)}).status_code == 303
    assert "Worst first" in switched.get("/").text and "Schools" in switched.get("/").text
    assert switched.post("/lang", data={"lang": "zh_CN", "next": "/", "csrf_token": csrf.group(1)}).status_code == 303


def template_messages() -> set[str]:
    found: set[str] = set()
    folder = Path(console_app.__file__).parent
    for template in (folder / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        found |= set(re.findall(r'_\(\s*"([^"]+)"\s*\)', text)) | set(re.findall(r"_\(\s*'([^']+)'\s*\)", text))
        for prefix, codes in re.findall(r'_\("(\w+_)" ~ \w+(?:\.\w+)?\) if [\w.]+ in \(([^)]*)\)', text):
            found |= {prefix + code for code in re.findall(r'"(\w+)"', codes)}
    found |= set(re.findall(r'tr\(\s*request,\s*"([^"]+)"', (folder / "app.py").read_text(encoding="utf-8")))
    return found | set(console_app.WORDS.values()) | set(console_app.ACTIONS.values()) | set(users.ROLES)


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_every_string_of_the_district_console_is_in_the_catalogue(language: str) -> None:
    messages = template_messages()
    assert {"police_state_acked", "evidence_recording", "Schools", "inspector"} <= messages
    missing = messages - i18n.catalogue_ids(language)
    assert not missing, f"add these to gateway/console/locale/{language}/LC_MESSAGES/campusgw.po: {sorted(missing)}"


@pytest.mark.postgres
def test_users_from_the_command_line(district: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "district.yaml"
    url = district["engine"].url.render_as_string(hide_password=False)
    config.write_text(f"district: {{id: d1, name: 测试区}}\nnats: {{servers: ['nats://127.0.0.1:4222']}}\n"
                      f"database: {{url: '{url}'}}\nconsole: {{port: 9090}}\n")
    assert load_district_config(config).console.port == 9090
    monkeypatch.setenv("NEW_PASSWORD", PASSWORD)
    add = ["district", "user", "add", "wang", "-c", str(config), "--password-env", "NEW_PASSWORD"]
    assert main([*add, "--role", "admin"]) == 1
    assert "unknown role 'admin', expected one of: duty_officer, police_liaison, inspector" in capsys.readouterr().err
    assert main(add) == 2, "a role is required"
    assert main([*add, "--role", "police_liaison"]) == 0
    assert main(["district", "user", "list", "-c", str(config)]) == 0
    assert re.search(r"wang\s+police_liaison\s+active", capsys.readouterr().out)
    assert client(district["app"], "wang").get("/schools/calm-school").status_code == 200


def test_worst_first_an_unanswered_alarm_then_a_real_lockdown_then_troubles() -> None:
    at = NOW - timedelta(minutes=1)

    def school(site: str, worst: int | None = None, worst_unacked: int | None = None, unacked: int = 0,
               **state: Any) -> dict[str, Any]:
        facts = {"lockdown": state["lockdown"]} if "lockdown" in state else {}
        devices = [{"kind": "gateway", "device": "gw", "online": state.get("gateway", True)}]
        return views.summarise({"site": site, "last_contact": state.get("contact", at), "events": 0,
                                "open": unacked, "unacked": unacked, "worst_priority": worst}, facts, devices,
                               worst_unacked, NOW)

    rows = [school("calm"), school("drill", lockdown={"active": True, "drill": True}),
            school("dark", gateway=False, contact=NOW - timedelta(hours=2)),
            school("locked", lockdown={"active": True, "drill": False}), school("p2", 2, 2, 3),
            school("p1-handled", 1, 2, 1), school("p1-unanswered", 1, 1, 1)]
    ranked = [r["site"] for r in views.worst_first(rows)]
    assert ranked[:5] == ["p1-unanswered", "p1-handled", "p2", "locked", "dark"]
    assert set(ranked[5:]) == {"calm", "drill"}, "a drill is no trouble"
    dark = next(r for r in rows if r["site"] == "dark")
    assert (dark["gateway"], dark["silent_min"], dark["troubles"]) == ("offline", 120, 2)


# The Reports page, acknowledgements and the month's summary (逐级上报), over a district filled by fill_reports.
@pytest.fixture(scope="module")
def reporting() -> Iterator[dict[str, Any]]:
    with district_database() as engine:
        fill_reports(engine)
        yield {"engine": engine, "app": create_app("d1", "测试区教育局", TZ, engine, "zh_CN")}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def section(page: str, table_id: str) -> str:
    return page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]


def audited(engine: Any, action: str) -> list[Any]:
    a = users.audit_log.c
    with engine.connect() as conn:
        return list(conn.execute(select(a.username, a.target, a.result, a.detail).where(a.action == action)
                                 .order_by(a.id)))


@pytest.mark.postgres
def test_empty_reports_say_what_would_fill_them_and_no_banner(district: dict[str, Any]) -> None:
    duty = client(district["app"], "duty1")
    page = duty.get("/reports").text
    assert 'id="no-alerts"' in page and 'id="no-incidents"' in page and 'id="no-submissions"' in page
    assert "暂无区级告警" in page and 'id="nav-reports" class="here"' in page
    assert re.search(r'id="alert-banner"\s+hidden', duty.get("/").text), "no alert: the banner hidden"
    assert duty.get("/api/schools").json()["alerts"] == {"open": 0, "unacked": 0}
    assert "No district alerts." in client(district["app"], "police1").get("/reports").text


@pytest.mark.postgres
def test_the_reports_page_lists_the_alerts_the_incident_reports_and_the_submissions(
        reporting: dict[str, Any]) -> None:
    duty = client(reporting["app"], "duty1")
    banner = duty.get("/").text.split('id="alert-banner"', 1)[1].split("</p>", 1)[0]
    assert "hidden" not in banner.split(">", 1)[0] and 'href="/reports#alerts"' in banner
    assert "区级告警未结束：2 条（2 条未确认）" in banner
    assert duty.get("/api/schools").json()["alerts"] == {"open": 2, "unacked": 2}

    page = duty.get("/reports").text
    alerts = section(page, "alerts-table")
    east = alerts.split("实验室冒烟", 1)[1].split("</tr>", 1)[0]
    north = alerts.split("学生摔伤", 1)[1].split("</tr>", 1)[0]
    assert "未到，报告仍缺" in east and "已到，告警已消除" in north and "incident" not in east
    assert alerts.count('class="ack-alert"') == 2 and on(10, 15).strftime("%Y-%m-%d %H:%M:%S") in east

    incidents = section(page, "incidents-table")
    assert re.findall(r'data-site="([\w-]+)" data-id="(\d+)"', incidents) == [
        ("calm-school", "2"), ("east-middle", "5"), ("east-middle", "4"), ("north-primary", "12"),
        ("north-primary", "11")], "the newest first"
    states = dict(re.findall(r'data-id="(\d+)">.*?<td class="report[^"]*">([^<]+)</td>', incidents, re.S))
    assert states == {"2": "尚未报告（未超时）", "5": "已关闭，未报告", "4": "逾期未报", "12": "迟报", "11": "按时报告"}
    assert incidents.count('class="ack-report"') == 2, "only a reported incident has a report to acknowledge"
    assert "非法闯入" in incidents and "较大" in incidents, "category and severity in words"

    submitted = section(page, "submissions-table")
    assert re.findall(r'<tr data-site="([\w-]+)" data-period="([\w-]+)"', submitted) == [
        ("calm-school", MONTH), ("calm-school", f"{MONTH}-01_{MONTH}-20"), ("north-primary", MONTH)]
    north_row = submitted.split('data-site="north-primary"', 1)[1]
    assert re.findall(r'class="figure">([^<]+)<', north_row) == ["2", "2", "96.5", "1"]
    assert f'href="/reports/submissions/north-primary/monthly/{MONTH}"' in north_row


@pytest.mark.postgres
def test_a_duty_officer_acknowledges_a_report_and_the_alerts(reporting: dict[str, Any]) -> None:
    engine = reporting["engine"]
    duty = client(reporting["app"], "duty1")
    token = csrf_of(duty.get("/reports").text)
    assert duty.post("/reports/incidents/north-primary/11/ack", data={"csrf_token": "forged"}).status_code == 403
    done = duty.post("/reports/incidents/north-primary/11/ack", data={"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == "/reports#incident-north-primary-11"
    with engine.connect() as conn:
        row = conn.execute(select(store.incidents).where(store.incidents.c.incident_id == 11)).one()
    assert row.acked_by == "duty1" and abs(row.acked_at - datetime.now(UTC)) < timedelta(minutes=1)
    line = duty.get("/reports").text.split('id="incident-north-primary-11"', 1)[1].split("</tr>", 1)[0]
    assert f"duty1 于 {row.acked_at.astimezone(TZ).strftime('%Y-%m-%d %H:%M:%S')} 确认" in line
    assert "学校尚未收到（发送中）" in line and "ack-report" not in line

    again = duty.post("/reports/incidents/north-primary/11/ack", data={"csrf_token": token})
    assert again.status_code == 409 and "该报告已被确认" in again.text
    assert duty.post("/reports/incidents/east-middle/4/ack", data={"csrf_token": token}).status_code == 409
    assert duty.post("/reports/incidents/east-middle/999/ack", data={"csrf_token": token}).status_code == 404
    assert [(r.username, r.target, r.result) for r in audited(engine, "report.ack")] == [
        ("duty1", "incident:north-primary:11", "ok"), ("duty1", "incident:north-primary:11", "refused"),
        ("duty1", "incident:east-middle:4", "refused")]

    with engine.begin() as conn:  # the school's next view shows the acknowledgement recorded
        store.write_reports(conn, [incident("north-primary", 11, 4, "校外人员翻墙", on(2, 9), category="intrusion",
                                            severity="serious", reported=on(2, 9, 30), saw_ack=NOW)], [], NOW)
    assert "学校已收到" in duty.get("/reports").text.split('id="incident-north-primary-11"', 1)[1].split("</tr>")[0]

    with engine.connect() as conn:
        ids = {r.ref: r.id for r in conn.execute(select(store.alerts))}
    east, north = ids["incident:4"], ids["incident:12"]
    assert duty.post(f"/reports/alerts/{east}/ack", data={"csrf_token": token}).status_code == 303
    assert duty.get("/api/schools").json()["alerts"] == {"open": 2, "unacked": 1}, "east's report is still missing"
    assert duty.post(f"/reports/alerts/{north}/ack", data={"csrf_token": token}).status_code == 303
    assert duty.get("/api/schools").json()["alerts"] == {"open": 1, "unacked": 0}, "north's: cleared and acknowledged"
    assert duty.post(f"/reports/alerts/{north}/ack", data={"csrf_token": token}).status_code == 409
    with engine.connect() as conn:
        acked = {r.id: r.acked_by for r in conn.execute(select(store.alerts))}
    assert acked == {east: "duty1", north: "duty1"}
    assert [(r.target, r.result, r.detail.get("site")) for r in audited(engine, "alert.ack")] == [
        (f"alert:{east}", "ok", "east-middle"), (f"alert:{north}", "ok", "north-primary"),
        (f"alert:{north}", "refused", None)]
    alerts = section(duty.get("/reports").text, "alerts-table")
    assert "ack-alert" not in alerts and alerts.count("duty1 于") == 2
    assert "区级告警未结束：1 条（0 条未确认）" in duty.get("/").text


@pytest.mark.postgres
def test_an_inspector_and_a_police_liaison_see_the_reports_but_cannot_act(reporting: dict[str, Any]) -> None:
    engine = reporting["engine"]
    police = client(reporting["app"], "police1")  # reads English
    page = police.get("/reports").text
    assert "District alerts" in page and "Incident reports from the schools" in page and "Reported late" in page
    assert "ack-alert" not in page and "ack-report" not in page, "no buttons for a role that may not act"
    inspector = client(reporting["app"], "inspector1")
    token = csrf_of(inspector.get("/reports").text)
    assert inspector.post("/reports/alerts/1/ack", data={"csrf_token": token}).status_code == 403
    refused = inspector.post("/reports/incidents/north-primary/12/ack", data={"csrf_token": token})
    assert refused.status_code == 403 and "您的角色无权执行此操作" in refused.text
    assert police.post("/reports/incidents/north-primary/12/ack",
                       data={"csrf_token": csrf_of(page)}).status_code == 403
    assert [(r.username, r.target, r.detail["permission"]) for r in audited(engine, "role.refused")] == [
        ("inspector1", "POST /reports/alerts/1/ack", "alert.ack"),
        ("inspector1", "POST /reports/incidents/north-primary/12/ack", "report.ack"),
        ("police1", "POST /reports/incidents/north-primary/12/ack", "report.ack")]
    assert ("inspector1", "/reports", "ok") in [(r.username, r.target, r.result) for r in audited(engine, "view")]
    with engine.connect() as conn:
        assert conn.scalar(select(store.incidents.c.acked_at).where(store.incidents.c.incident_id == 12)) is None


@pytest.mark.postgres
def test_a_submitted_report_with_its_figures_and_inspections(reporting: dict[str, Any]) -> None:
    duty = client(reporting["app"], "duty1")
    page = duty.get(f"/reports/submissions/north-primary/monthly/{MONTH}").text
    summary = section(page, "summary-table")
    assert "巡逻完成率(%)" in summary and "96.5" in summary and "报警" in summary
    assert re.search(r"报警</td><td class=\"value\">2</td><td>4</td>", summary), "this month and the one before"
    assert "报警(按类型)" in page and "一键报警" in page and "无火灾事故" in page and "达成" in page, \
        "the tables' titles and codes in words"
    inspections = section(page, "inspections-table")
    assert "月度排查" in inspections and "super1" in inspections and "消防通道畅通" in inspections
    assert "开学排查" in inspections and "未完成" in inspections
    assert f"{MONTH}-01 – " in page
    assert "One-key alarm" in client(reporting["app"], "police1").get(
        f"/reports/submissions/north-primary/monthly/{MONTH}").text
    assert duty.get(f"/reports/submissions/east-middle/monthly/{MONTH}").status_code == 404


def summary_rows(book: Any, sheet: str) -> dict[str, list[Any]]:
    rows = list(book[sheet].iter_rows(values_only=True))
    return {row[0]: list(row[1:]) for row in rows[1:]}


NOTHING = ["not submitted", "-", "-", "-"]
EXPECTED = {  # alarms, incidents, late or missing, events, monthly report, its date, patrol %, hazards open
    "north-primary": [2, 2, 1, 3, "submitted", None, 96.5, 1], "east-middle": [1, 2, 2, 1, *NOTHING],
    "calm-school": [0, 0, 0, 0, "submitted", None, 100, 0], "lock-school": [0, 0, 0, 0, *NOTHING],
    "dark-school": [0, 0, 0, 0, *NOTHING]}


@pytest.mark.postgres
def test_the_months_summary_across_the_schools_from_the_console_and_the_command_line(
        reporting: dict[str, Any], tmp_path: Path) -> None:
    import io

    from openpyxl import load_workbook
    from pypdf import PdfReader

    engine = reporting["engine"]
    pdf = client(reporting["app"], "duty1").get(f"/reports/summary?month={MONTH}&fmt=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    assert f'filename="district-summary-{MONTH}-zh_CN.pdf"' in pdf.headers["content-disposition"]
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    for words in ("测试区教育局", "各校月度安全汇总", "各校本月情况", "迟报或未报", "未报送", "单位盖章",
                  "north-primary", "dark-school"):
        assert words in text, words
    assert "学校盖章" not in text, "the district's seal, not a school's"

    xlsx = client(reporting["app"], "police1").get(f"/reports/summary?month={MONTH}&fmt=xlsx")
    book = load_workbook(io.BytesIO(xlsx.content))
    rows = summary_rows(book, "Schools in the month")
    submitted = {"north-primary": (MONTH_START + timedelta(days=32)).replace(day=3).date().isoformat(),
                 "calm-school": (MONTH_START + timedelta(days=32)).replace(day=2).date().isoformat()}
    expected = {site: [submitted.get(site, v) if v is None else v for v in values] for site, values in EXPECTED.items()}
    assert rows == expected
    figures = {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=4, values_only=True) if row and row[0]}
    assert {k: figures[k] for k in ("Number of schools", "Schools silent for more than a day (now)", "Alarms",
                                    "Incidents", "Reports late or missing", "Schools without the monthly report")} \
        == {"Number of schools": 5, "Schools silent for more than a day (now)": 1, "Alarms": 3, "Incidents": 4,
            "Reports late or missing": 3, "Schools without the monthly report": 3}
    assert client(reporting["app"], "duty1").get("/reports/summary?month=2026-13&fmt=pdf").status_code == 422
    assert client(reporting["app"], "duty1").get(f"/reports/summary?month={MONTH}&fmt=doc").status_code == 422
    assert [(r.username, r.target, r.detail["format"]) for r in audited(engine, "summary.download")] == [
        ("duty1", f"summary:{MONTH}", "pdf"), ("police1", f"summary:{MONTH}", "xlsx")]

    config = tmp_path / "district.yaml"
    url = engine.url.render_as_string(hide_password=False)
    config.write_text(f"district: {{id: d1, name: 测试区教育局, timezone: Asia/Shanghai}}\n"
                      f"nats: {{servers: ['nats://127.0.0.1:4222']}}\ndatabase: {{url: '{url}'}}\n")
    out = tmp_path / "summary.xlsx"
    assert main(["district", "report", "--month", MONTH, "--format", "xlsx", "--language", "zh_CN", "-o", str(out),
                 "-c", str(config)]) == 0
    zh = summary_rows(load_workbook(out), "各校本月情况")
    assert zh["east-middle"] == [1, 2, 2, 1, "未报送", "-", "-", "-"]
    assert zh["north-primary"][:5] == [2, 2, 1, 3, "已报送"]
    assert main(["district", "report", "--month", "11-2026", "-c", str(config)]) == 2
    pdf_out = tmp_path / "summary.pdf"
    assert main(["district", "report", "--month", MONTH, "-o", str(pdf_out), "-c", str(config)]) == 0
    assert "测试区教育局" in PdfReader(pdf_out).pages[0].extract_text(), "zh_CN: the console's default language"
    assert audited(engine, "summary.download")[-1].username == "cli"


@pytest.mark.parametrize("language", sorted(i18n.LANGUAGES))
def test_every_word_of_the_districts_summary_is_in_the_catalogue(language: str) -> None:
    from datetime import date

    from gateway.district import summary
    from gateway.reports import render

    empty = {"alarms": 0, "incidents": 0, "late": 0, "submitted_at": None}
    used = {*summary.COLUMNS, "Schools in the month", summary.SUBMITTED, summary.NOT_SUBMITTED, render.DISTRICT_SEAL,
            render.KIND_TITLES["district_monthly"], *(key for key, _ in summary._summary({"s": empty}, 0))}
    missing = used - i18n.catalogue_ids(language)
    assert not missing, f"add these to gateway/console/locale/{language}/LC_MESSAGES/campusgw.po: {sorted(missing)}"
    assert summary.parse_month("2026-11") == date(2026, 11, 1)
    for wrong in ("2026-13", "2026-1", "11-2026", "1999-01"):
        with pytest.raises(ValueError):
            summary.parse_month(wrong)
    assert summary.month_range(date(2026, 11, 1), TZ)[0].isoformat() == "2026-11-01T00:00:00+08:00"


def test_a_submitted_summary_is_shown_in_the_order_of_the_schools_report(tmp_path: Path) -> None:
    """JSONB loses the order of a summary's keys: the page puts them back in the order collect() makes them."""
    from gateway.records import db
    from gateway.reports.figures import collect

    engine = db.make_engine(f"sqlite:///{tmp_path / 'records.db'}")
    db.upgrade(engine)
    start = NOW.astimezone(TZ).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with db.make_sessions(engine)() as session:
        report = collect(session, "monthly", start, start + timedelta(days=30), TZ, "s", compare=False)
    engine.dispose()
    assert tuple(key for key, _ in report.summary) == views.SUMMARY_ORDER
    assert views.in_report_order({"zzz": 1, "Incidents": 2, "Alarms": 3}) == [("Alarms", 3), ("Incidents", 2),
                                                                              ("zzz", 1)]


@pytest.mark.postgres
def test_a_duty_officer_sends_a_notice_to_every_school_and_sees_who_has_it_and_who_acknowledged_it() -> None:
    with district_database() as engine:
        app = create_app("d1", "测试区教育局", TZ, engine, "zh_CN")
        duty = client(app, "duty1")
        page = duty.get("/notices").text
        assert "向学校下发通知" in page and "尚未下发通知。" in page
        form = {"csrf_token": csrf_of(page), "level": "drill", "title": "全区防暴演练",
                "body": "周五下午三点各校开展防暴演练，演练后填报记录。", "sites": ""}
        refused = duty.post("/notices", data={**form, "title": " "})
        assert refused.status_code == 422 and "通知需要类别、标题和正文。" in refused.text
        assert "周五下午三点" in refused.text, "what was typed is kept"
        assert duty.post("/notices", data={**form, "sites": "north-primary, Bad/Id"}).status_code == 422
        sent = duty.post("/notices", data=form)
        assert sent.status_code == 303
        notice_id = int(sent.headers["location"].rsplit("/", 1)[1])
        with engine.begin() as conn:
            schools = list(conn.scalars(select(store.schools.c.site).order_by(store.schools.c.site)))
            store.write_notice_views(conn, [{"site": "north-primary", "notice_id": notice_id, "received_at": NOW,
                                             "acked_at": NOW, "acked_by": "guard-li"}])
        listed = section(duty.get("/notices").text, "notices-table")
        assert "全区防暴演练" in listed and f"<td>{len(schools)}</td>" in listed
        one = duty.get(f"/notices/{notice_id}").text
        assert re.findall(r'<tr data-site="([^"]+)"', one)[-1] == "north-primary", "those who have it last"
        assert "guard-li" in one and one.count("尚未确认") == len(schools) - 1
        assert [(r.username, r.result, r.detail["schools"]) for r in audited(engine, "notice.issue")] == [
            ("duty1", "ok", len(schools))]
        inspector = client(app, "inspector1")
        listing = inspector.get("/notices").text
        assert "notice-form" not in listing, "an inspector reads, and sends nothing"
        assert inspector.post("/notices", data={**form, "csrf_token": csrf_of(listing)}).status_code == 403
        assert duty.get("/notices/999999").status_code == 404
