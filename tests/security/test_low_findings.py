"""Finding 13, the console's items: refusals are audited; API tokens expire, die with a password change and can be
revoked; users can be disabled; a slow client cannot hold a connection; ids past 2**63 and dates like 9999-12-31
are refused, not a 500; POST /lang needs the CSRF token; snapshots are served only from their folder."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import select

from gateway import cli
from gateway.console import app as console_app
from gateway.console import auth, server
from gateway.records.models import ApiToken, AuditEntry, utcnow
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, logged_in
from tests.security.conftest import PASSWORD, add_users, open_board, polling, site_config, site_dict, url
from tests.support import wait_for

BIG = str(2**63)
LAST_DAY = "9999-12-31"


def audited(running: Running, action: str) -> list[AuditEntry]:
    with running.gateway.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_role_and_csrf_refusals_are_audited(site: Running, sim: ModbusDISimulator) -> None:
    guard = logged_in(url(site), "guard1", PASSWORD)
    board = open_board(site, guard)
    sim.press(1)
    alarm = wait_for(lambda: board.alarms(), 10, "an alarm")[0]["id"]
    board.close()
    assert guard.post(f"/api/alarms/{alarm}/reset", headers={"X-CSRF-Token": guard.csrf}).status_code == 403  # type: ignore[attr-defined]
    assert guard.post(f"/api/alarms/{alarm}/ack", headers={"X-CSRF-Token": "forged"}).status_code == 403
    role, csrf = audited(site, "role.refused"), audited(site, "csrf.refused")
    assert [(r.actor, r.target, r.result, r.detail["permission"]) for r in role] == [
        ("guard1", f"POST /api/alarms/{alarm}/reset", "refused", "alarm.reset")]
    assert [(r.actor, r.target, r.detail["token"]) for r in csrf] == [
        ("guard1", f"POST /api/alarms/{alarm}/ack", "wrong")]
    assert role[0].client == "127.0.0.1"


def bearer(running: Running, token: str) -> int:
    return httpx.get(url(running) + "api/alarms", headers={"Authorization": f"Bearer {token}"}).status_code


def token_for(running: Running, username: str, name: str) -> str:
    with running.gateway.sessions.begin() as session:
        return auth.add_token(session, username, name, utcnow())


def campusgw(config: Path, *args: str) -> None:
    assert cli.main(["user", *args, "-c", str(config)]) == 0


@pytest.fixture
def config_file(tmp_path: Path, sim: ModbusDISimulator) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_dict(tmp_path, sim.port)))
    return path


def test_api_tokens_expire_die_with_the_password_and_can_be_revoked(site: Running, config_file: Path) -> None:
    old, other, kept = (token_for(site, "guard1", name) for name in ("old", "other", "kept"))
    assert bearer(site, old) == bearer(site, other) == bearer(site, kept) == 200
    with site.gateway.sessions.begin() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == "old")).one()
        token.created_at -= auth.TOKEN_LIFETIME + timedelta(minutes=1)
    assert bearer(site, old) == 401, "a year old: expired"
    campusgw(config_file, "revoke", "guard1", "--name", "other")
    assert bearer(site, other) == 401 and bearer(site, kept) == 200, "only the token named"
    with site.gateway.sessions.begin() as session:
        auth.set_password(session, "guard1", "a brand new password")
    assert bearer(site, kept) == 401, "a new password ends every token"


def test_a_disabled_user_is_out_at_once(site: Running, config_file: Path) -> None:
    guard = logged_in(url(site), "guard1", PASSWORD)
    token = token_for(site, "guard1", "district")
    campusgw(config_file, "disable", "guard1")
    assert guard.get("/api/alarms").status_code == 401, "the open session ends"
    assert bearer(site, token) == 401
    refused = httpx.post(url(site) + "login", data={"username": "guard1", "password": PASSWORD})
    assert refused.status_code == 401 and "wrong user name or password" in refused.text
    campusgw(config_file, "enable", "guard1")
    assert logged_in(url(site), "guard1", PASSWORD).get("/api/alarms").status_code == 200
    assert [a.action for a in audited(site, "user.disable") + audited(site, "user.enable")] == [
        "user.disable", "user.enable"]


def raw(running: Running) -> socket.socket:
    console = urlsplit(url(running))
    return socket.create_connection((str(console.hostname), console.port or 80), timeout=5)


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it was still open after `seconds`."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    return got


def test_a_client_slow_to_send_its_headers_is_cut_off(site: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "HEADER_TIMEOUT_S", 0.5)
    with raw(site) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: console\r\n")  # and never the blank line (slowloris)
        assert closed_within(sock, 3) == b"", "closed, with nothing sent"
    with raw(site) as idle:  # connected and silent
        assert closed_within(idle, 3) == b""


def test_a_body_that_stops_arriving_is_refused(site: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_app, "BODY_IDLE_S", 0.5)
    guard = logged_in(url(site), "guard1", PASSWORD)
    with raw(site) as sock:
        sock.sendall(f"POST /api/alarms/1/note HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\n"
                     f"Cookie: campusgw_session={guard.cookies['campusgw_session']}\r\nX-CSRF-Token: {guard.csrf}\r\n"  # type: ignore[attr-defined]
                     "Content-Length: 100\r\n\r\n{\"note\": \"".encode())
        sock.settimeout(3)
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    database = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    running = Running(site_config(tmp_path, sim.port, database))
    add_users(running)
    wait_for(lambda: polling(running), 10, "the alarm box online")
    yield running
    running.stop()


OUT_OF_RANGE = [
    f"/api/alarms/{BIG}", f"/alarms/{BIG}/promote", f"/visitors/{BIG}/pass", f"/visitors/{BIG}/photo.jpg",
    f"/api/visitors/{BIG}", f"/incidents/{BIG}", f"/api/incidents/{BIG}", f"/visitors?visit={BIG}",
    f"/incidents/hazards?inspection={BIG}", f"/duty?week={LAST_DAY}", f"/patrols?day={LAST_DAY}",
    f"/access?from={LAST_DAY}&to={LAST_DAY}", f"/api/access?from={LAST_DAY}&to={LAST_DAY}",
    f"/incidents?start={LAST_DAY}&end={LAST_DAY}", f"/reports/download?kind=monthly&day={LAST_DAY}",
    f"/reports/download?kind=daily&day={LAST_DAY}",
]


def test_huge_ids_and_the_last_day_get_a_4xx(any_database: Running) -> None:
    admin = logged_in(url(any_database), "admin", PASSWORD)
    answers = {path: admin.get(path).status_code for path in OUT_OF_RANGE}
    for path in (f"/api/alarms/{BIG}/ack", f"/visitors/{BIG}/checkin", f"/incidents/{BIG}/close",
                 f"/duty/{BIG}/remove"):
        answers[path] = admin.post(path, headers={"X-CSRF-Token": admin.csrf}).status_code  # type: ignore[attr-defined]
    answers["POST /duty/handover"] = admin.post("/duty/handover", data={
        "csrf_token": admin.csrf, "shift": "day", "from_name": "A", "to_name": "B", "done": BIG}).status_code  # type: ignore[attr-defined]
    assert not {p: s for p, s in answers.items() if s >= 500 or s < 200}, "every one answered, none with a 500"


def test_changing_the_language_needs_the_csrf_token(site: Running) -> None:
    guard = logged_in(url(site), "guard1", PASSWORD)
    assert guard.post("/lang", data={"lang": "zh_CN", "next": "/alarms"}).status_code == 403
    assert audited(site, "csrf.refused")
    assert guard.post("/lang", data={"lang": "zh_CN", "next": "/alarms", "csrf_token": guard.csrf}).status_code == 303  # type: ignore[attr-defined]
    with httpx.Client(base_url=url(site)) as stranger:  # before login: the browser says where the form came from
        assert stranger.post("/lang", data={"lang": "en"}, headers={"Origin": "http://evil.example"}).status_code == 403
        assert stranger.post("/lang", data={"lang": "en"}, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303


def test_snapshots_are_served_only_from_their_folder(site: Running, tmp_path: Path) -> None:
    folder = site.gateway.config.gateway.data_dir / "snapshots" / "cam-1"
    folder.mkdir(parents=True)
    secret = tmp_path / "records-copy.db"
    secret.write_bytes(b"not for the console")
    (folder / "latest.jpg").symlink_to(secret)
    guard = logged_in(url(site), "guard1", PASSWORD)
    assert guard.get("/snapshots/cam-1/latest.jpg").status_code == 404, "a link out of the folder is not followed"
    (folder / "latest.jpg").unlink()
    (folder / "latest.jpg").write_bytes(b"\xff\xd8 a jpeg")
    served = guard.get("/snapshots/cam-1/latest.jpg")
    assert served.status_code == 200 and served.content == b"\xff\xd8 a jpeg"
