"""Console security: no route without login, CSRF, roles, lock-out, escaping, tokens, limits, languages.

The app runs for real (FastAPI + SQLite + an MQTT broker); only the HTTP
transport is Starlette's in-process test client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.bus import Bus
from gateway.console import auth, throttle
from gateway.console.app import PUBLIC_PATHS, create_app, ensure_first_admin
from gateway.records import db, store
from gateway.records.models import Alarm, AuditEntry, Device, utcnow
from gateway.rules.alarms import RaiseAlarm
from tests.support import broker_config

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

PASSWORD = "correct horse battery"


@pytest.fixture
def console(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        for name, role in (("guard1", "guard"), ("super1", "supervisor"), ("admin1", "admin")):
            auth.add_user(session, name, role, PASSWORD)
        session.add(Device(id="box-1", kind="alarm_input", driver="modbus_di",
                           name='<script>alert("device")</script>', test_mode=False, online=False))
        store.apply_effects(session, [RaiseAlarm("box-1:p1", "box-1", "panic", 1, True, None, "gate", False,
                                                 "00000000-0000-7000-8000-000000000000", utcnow())])
    bus = Bus(broker_config(amqtt_broker.port), "console-test", name="console")
    bus.start()
    app = create_app("s1", "Test School", ZoneInfo("Asia/Shanghai"), sessions, bus, "en")
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield {"app": app, "client": client, "sessions": sessions}
    bus.stop()
    engine.dispose()


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 303, response.text
    page = client.get("/alarms").text
    return page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')


def alarm_id(console: dict[str, Any]) -> int:
    with console["sessions"]() as session:
        return session.scalars(select(Alarm.id)).one()


def all_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, including those of included routers (FastAPI keeps those apart)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from all_routes(route.original_router.routes)
        else:
            yield route


def test_no_route_answers_without_login(console: dict[str, Any]) -> None:
    """Every route the app lists, so a route added later cannot be forgotten."""
    client, app = console["client"], console["app"]
    checked = 0
    for route in all_routes(app.routes):
        if not isinstance(route, APIRoute) or route.path in PUBLIC_PATHS:
            continue
        path = route.path.replace("{alarm_id}", "1")
        for method in route.methods - {"HEAD"}:
            response = client.request(method, path)
            if path.startswith("/api/"):
                assert response.status_code == 401, f"{method} {path} answered {response.status_code}"
            else:
                assert response.status_code == 303 and response.headers["location"].startswith("/login"), \
                    f"{method} {path} answered {response.status_code}"
            checked += 1
    assert checked >= 10
    assert client.get("/api/openapi.json").status_code == 401, "even the API description needs a login"


def test_changes_need_the_csrf_token(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    target = f"/api/alarms/{alarm_id(console)}/ack"
    assert client.post(target).status_code == 403, "no token"
    assert client.post(target, headers={"X-CSRF-Token": "forged"}).status_code == 403, "wrong token"
    assert client.post("/logout").status_code == 403, "logout is a change too"
    assert client.post(target, headers={"X-CSRF-Token": csrf}).json()["state"] == "active_ack"


def test_roles_decide_who_may_reset(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    target = alarm_id(console)
    assert client.post(f"/api/alarms/{target}/ack", headers={"X-CSRF-Token": csrf}).status_code == 200
    refused = client.post(f"/api/alarms/{target}/reset", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403  # a panic is not among console.guards_finish: a supervisor's
    assert refused.json()["detail"] == "Your role may not do this for this type of alarm (console.guards_finish)."
    assert "CAN = {reset: false" in client.get("/alarms").text, "the guard's page offers no reset"

    csrf = login(client, "super1")
    assert "CAN = {reset: true" in client.get("/alarms").text
    done = client.post(f"/api/alarms/{target}/reset", json={"note": "tested, no intruder"},
                       headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["state"] == "cleared_ack"
    with console["sessions"]() as session:
        actions = [(a.actor, a.action, a.result) for a in session.scalars(select(AuditEntry))
                   if a.action.startswith("alarm.")]
    assert actions == [("guard1", "alarm.ack", "ok"), ("super1", "alarm.reset", "ok")]


def test_a_script_typed_into_a_note_stays_text(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    script = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    target = alarm_id(console)
    response = client.post(f"/api/alarms/{target}/note", json={"note": script}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.json()["last_note"] == f"guard1: {script}"
    history = client.get(f"/api/alarms/{target}").json()["history"]
    assert history[-1]["note"] == script, "kept exactly as typed"
    devices = client.get("/devices").text
    assert "<script>alert" not in devices and "&lt;script&gt;alert(&#34;device&#34;)" in devices
    # On the board, notes are put in the page with textContent (never innerHTML): see the browser tests.
    assert "innerHTML" not in client.get("/alarms").text


def test_repeated_bad_passwords_lock_the_account(console: dict[str, Any]) -> None:
    client = console["client"]
    for _ in range(throttle.MAX_FAILURES):
        response = client.post("/login", data={"username": "guard1", "password": "wrong password!"})
        assert response.status_code == 401 and "wrong user name or password" in response.text
    locked = client.post("/login", data={"username": "guard1", "password": PASSWORD})
    assert locked.status_code == 401 and "locked" in locked.text, "even the right password waits out the lock"
    unknown = client.post("/login", data={"username": "nobody", "password": "whatever123"})
    assert "wrong user name or password" in unknown.text, "an unknown user looks like a wrong password"
    with console["sessions"]() as session:
        refusals = [a for a in session.scalars(select(AuditEntry)) if a.action == "login"]
    assert len(refusals) == throttle.MAX_FAILURES + 2 and all(a.result == "refused" for a in refusals)


def test_oversized_and_malformed_requests_get_a_clear_4xx(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    target = f"/api/alarms/{alarm_id(console)}/note"
    headers = {"X-CSRF-Token": csrf}
    big = client.post(target, content=b"x" * 100_000, headers={**headers, "content-type": "application/json"})
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    bad = client.post(target, content=b"{not json", headers={**headers, "content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"] == "The request is not valid."
    long_note = client.post(target, json={"note": "x" * 1001}, headers=headers)
    assert long_note.status_code == 422 and any("note" in p for p in long_note.json()["problems"])
    assert client.post("/api/alarms/99999/ack", headers=headers).status_code == 404
    assert client.get("/login?next=https://evil.example/").text.count('value="/alarms"') == 1, "no open redirect"


def test_api_tokens_act_as_their_user_without_csrf(console: dict[str, Any]) -> None:
    client = console["client"]
    with console["sessions"].begin() as session:
        token = auth.add_token(session, "guard1", "district platform", utcnow())
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/alarms", headers=bearer).json()[0]["alarm_type"] == "panic"
    target = alarm_id(console)
    assert client.post(f"/api/alarms/{target}/ack", headers=bearer).status_code == 200
    assert client.post(f"/api/alarms/{target}/reset", headers=bearer).status_code == 403, "a guard's token"
    assert client.get("/api/alarms", headers={"Authorization": "Bearer cgw_not-a-token"}).status_code == 401
    spec = client.get("/api/openapi.json", headers=bearer).json()
    assert {f"/api/alarms/{{alarm_id}}/{a}" for a in ("ack", "note", "reset", "close")} <= set(spec["paths"])


def test_language_is_chosen_per_user_and_switchable(console: dict[str, Any]) -> None:
    client = console["client"]
    csrf = login(client, "guard1")
    assert "No open alarms" in client.get("/alarms").text, "the site's default language (en here)"
    assert client.post("/lang", data={"lang": "zh_CN", "next": "/alarms"}).status_code == 403, "a change: CSRF"
    client.post("/lang", data={"lang": "zh_CN", "next": "/alarms", "csrf_token": csrf})
    page = client.get("/alarms").text
    assert "没有未处理的报警" in page and 'lang="zh-CN"' in page
    assert client.get("/api/alarms/99999").json()["detail"] == "没有这个报警。"
    client.cookies.delete("campusgw_lang")  # another browser, the same user: the choice follows the user
    assert "没有未处理的报警" in client.get("/alarms").text


def test_first_start_makes_one_admin_once(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'first.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    password = ensure_first_admin(sessions)
    assert password and len(password) >= 12
    assert ensure_first_admin(sessions) is None, "only when there is no user at all"
    with sessions.begin() as session:
        secret, who = auth.login(session, "admin", password, utcnow(), None)
        assert who.role == "admin" and secret
    engine.dispose()
