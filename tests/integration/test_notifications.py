"""Reaching people through the whole gateway: an unacknowledged panic goes to the person on duty by SMS through a
simulated GSM modem (Chinese text in PDU mode), by WeCom to a local HTTPS robot when the modem refuses, and a
person nobody reaches is a gateway-health alarm. The receipts are in the alarm's history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import select

from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records import db
from gateway.records.models import Alarm, AlarmTransition, Notification
from simulators.gsm_modem import GsmModemSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, logged_in
from tests.integration.test_notify_channels import RobotServer, _serve, _server_context
from tests.support import wait_for

PHONE = "+8613800138000"
WEBHOOK_ENV = "CAMPUSGW_TEST_WECOM_WEBHOOK"


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[GsmModemSimulator]:
    sim = GsmModemSimulator(tmp_path / "usb-gsm-modem")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def wecom(authority: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> Iterator[RobotServer]:
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for robot in _serve(RobotServer(), _server_context(authority)):
        monkeypatch.setenv(WEBHOOK_ENV, robot.url("wecom"))
        yield robot


def site(tmp_path: Path, sim: ModbusDISimulator, modem: GsmModemSimulator, authority: trustme.CA) -> Config:
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return validate_config({
        "site": {"id": "school-1", "name": "实验中学"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "zones": [{"id": "gate", "name": "正门"}],
        "devices": [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "gate",
                     "connection": {"host": "127.0.0.1", "port": sim.port}, "poll_ms": 50,
                     "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "门卫室"}]}],
        "roster": [{"id": "li-qiang", "name": "李强"}, {"id": "wang-fang", "name": "王芳"}],
        "escalation": {"after_s": {"panic": 1}, "repeat_s": 3},
        "notify": {"sms": {"port": str(modem.link), "timeout_s": 5},
                   "wecom": {"webhook": {"env": WEBHOOK_ENV}, "ca_file": str(ca_file)},
                   "people": [{"id": "li-qiang", "phone": PHONE, "channels": ["sms", "wecom"]}],
                   "attempts": 2, "retry_s": 0.5, "console_url": "https://gatehouse.example/"},
    })


def rows(cfg: Config, model: Any, *where: Any) -> list[Any]:
    engine = db.make_engine(cfg.database_url())
    try:
        with db.make_sessions(engine)() as session:
            return list(session.scalars(select(model).where(*where).order_by(model.id)))
    finally:
        engine.dispose()


def notes(cfg: Config) -> list[str]:
    return [t.note for t in rows(cfg, AlarmTransition, AlarmTransition.action == "notify")]


def test_an_unacknowledged_panic_reaches_the_person_on_duty_by_sms_in_chinese(
        tmp_path: Path, sim: ModbusDISimulator, modem: GsmModemSimulator, authority: trustme.CA,
        wecom: RobotServer) -> None:
    cfg = site(tmp_path, sim, modem, authority)
    running = Running(cfg)
    try:
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        sim.press(1)
        (alarm,) = wait_for(lambda: rows(cfg, Alarm), 5, "the panic")
        sms = modem.wait_for_message(lambda m: True, 10)
        assert sms is not None and sms.number == PHONE
        assert sms.text.startswith("【实验中学】门卫室一键报警，") and "未确认（第1步通知）" in sms.text
        assert sms.text.endswith(f"https://gatehouse.example/alarms/{alarm.id}")
        note = wait_for(lambda: notes(cfg), 5, "the receipt in the alarm's history")[0]
        assert note.startswith("notified 李强 by sms: 1 part(s) handed to the modem")
        sent = rows(cfg, Notification, Notification.person_id == "li-qiang")
        assert [(n.state, n.channel, n.level) for n in sent] == [("sent", "sms", 1)], "the first channel delivered"
    finally:
        running.stop()


def test_a_modem_that_refuses_falls_back_to_wecom_and_nobody_reached_is_a_health_alarm(
        tmp_path: Path, sim: ModbusDISimulator, modem: GsmModemSimulator, authority: trustme.CA,
        wecom: RobotServer) -> None:
    modem.set_fault("error_500")
    cfg = site(tmp_path, sim, modem, authority)
    running = Running(cfg)
    try:
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        sim.press(1)
        wait_for(lambda: len(notes(cfg)) >= 2, 10, "both tries in the history")
        failed, delivered = notes(cfg)[:2]
        assert failed.startswith("could not reach 李强 by sms:") and "500" in failed
        assert delivered.startswith("notified 李强 by wecom:")
        body = wecom.posted[0].body
        assert body["msgtype"] == "text" and "一键报警" in body["text"]["content"]
        assert body["text"]["mentioned_mobile_list"] == ["13800138000"]
        (sent,) = rows(cfg, Notification, Notification.person_id == "li-qiang")
        assert (sent.state, sent.channel) == ("sent", "wecom")

        # The next step goes to wang-fang, who has no phone, while the robot's key has been revoked: nobody
        # reaches her, two rounds, then the gateway says so.
        wecom.answer = lambda request: (200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        health = wait_for(lambda: rows(cfg, Alarm, Alarm.alarm_type == "gateway_health"), 15,
                          "the notify_undelivered health alarm")
        assert "notify_undelivered" in health[0].key
        assert any(n.startswith("gave up reaching 王芳 after 2 rounds") for n in notes(cfg))
        assert "could not reach 王芳 by sms: no phone number for 王芳" in notes(cfg)
        assert [n.state for n in rows(cfg, Notification)] == ["sent", "failed"]

        # The console lists both with their receipts (no phone number in clear); a guard's silence is listed too.
        console = logged_in(running.gateway.console_url, "admin", running.gateway.first_admin_password)
        console.headers["x-csrf-token"] = console.csrf  # type: ignore[attr-defined]
        (panic,) = rows(cfg, Alarm, Alarm.alarm_type == "panic")
        assert console.post(f"/api/alarms/{panic.id}/silence").status_code == 200
        listed = console.get("/api/notifications").json()
        assert listed["counts"] == {"pending": 0, "sent": 1, "failed": 1} and listed["total"] == 2
        failed_row, sent_row = listed["notifications"]  # newest first
        assert (sent_row["person"], sent_row["state"], sent_row["channel"], sent_row["alarm_type"]) == \
            ("李强", "sent", "wecom", "panic")
        assert sent_row["detail"] == "WeCom: ok" and PHONE not in console.get("/notifications").text
        assert (failed_row["person"], failed_row["state"], failed_row["attempts"]) == ("王芳", "failed", 2)
        assert "invalid webhook key" in failed_row["detail"]  # the last failure; every try is in the history
        assert [(s["alarm_id"], s["by"]) for s in listed["silences"]] == [(panic.id, "admin")]
        assert console.get("/api/notifications", params={"state": "failed"}).json()["total"] == 1
        assert console.get("/api/notifications", params={"state": "lost"}).status_code == 422
        page = console.get("/notifications", headers={"accept-language": "zh-CN"}).text
        assert "企业微信" in page and "未送达" in page and 'id="silences"' in page and "empty-hint" not in page
    finally:
        running.stop()


def test_a_busy_channel_passes_to_the_next_and_the_message_is_in_the_persons_language(tmp_path: Path) -> None:
    """Past per_minute sends in the last minute a channel is passed over for the person's next one; an English
    speaker gets English. The sender alone, on its own database, with the channels played by a function."""
    from datetime import UTC, datetime

    from gateway.notify.robots import Receipt
    from gateway.notify.sender import NotificationSender

    cfg = validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "zones": [{"id": "gate", "name": "Main gate"}],
        "notify": {"sms": {"port": "/dev/null"}, "wecom": {"webhook": {"env": WEBHOOK_ENV}}, "per_minute": 2,
                   "people": [{"id": "li-qiang", "language": "en", "channels": ["sms", "wecom"]}]},
    })
    engine = db.make_engine(cfg.database_url())
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    raised = datetime(2026, 12, 7, 0, 5, tzinfo=UTC)  # 08:05 in Shanghai
    with sessions.begin() as session:
        alarm = Alarm(key="box:panic", device_id="gate-box", alarm_type="panic", priority=1, latching=True,
                      state="active_unack", zone="gate", place=None, test=False, raised_at=raised,
                      raised_event_id="e1", last_event_at=raised)
        session.add(alarm)
        session.flush()
        for level in (1, 2, 3):
            session.add(Notification(alarm_id=alarm.id, person_id="li-qiang", person_name="Li Qiang",
                                     phone=PHONE, level=level, created_at=raised, state="pending", attempts=0))
    sent: list[tuple[str, str]] = []

    def send(channel: str, row: Notification, person: Any, text: str) -> Receipt:
        sent.append((channel, text))
        return Receipt(True, channel, "accepted")

    health: list[tuple[str, bool, str]] = []
    NotificationSender(cfg, sessions, lambda *a: health.append(a), send=send).send_due()
    assert [channel for channel, _ in sent] == ["sms", "sms", "wecom"], "the third within the minute: the next"
    assert sent[0][1] == "Test School: One-key alarm at Main gate, raised 08:05, not acknowledged (step 1)."
    lines = [t.note for t in session_rows(sessions, AlarmTransition) if t.action == "notify"]
    assert "could not reach Li Qiang by sms: more than 2 a minute: the next" in lines
    assert [n.channel for n in session_rows(sessions, Notification)] == ["sms", "sms", "wecom"]
    assert not health
    engine.dispose()


def session_rows(sessions: Any, model: Any) -> list[Any]:
    with sessions() as session:
        return list(session.scalars(select(model).order_by(model.id)))
