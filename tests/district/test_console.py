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
from gateway.district.config import load_district_config
from gateway.district.console import app as console_app
from gateway.district.console import users, views
from gateway.district.console.app import create_app
from tests.district.console_data import NOW, PANIC, PASSWORD, TZ, district_database


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
