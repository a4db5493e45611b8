"""A visitor from the gatehouse desk through the gate and out again, on the whole gateway: registered through
the console's API (with a photo from the gate camera), the QR pass scanned by a simulated scanner at the entry
(checked in), still on site past the expected time (an overstay alarm for the guard), scanned at the exit
(checked out, the pass dead), and refused when it is shown again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.config_file import validate_config
from gateway.console import auth
from gateway.records.models import AccessEvent, Alarm, Person, Visit, utcnow
from simulators.camera import CameraSimulator
from simulators.serial_reader import SerialReaderSimulator
from tests.integration.helpers import Running, logged_in
from tests.support import wait_for

PASSWORD = "correct horse battery staple 42"
ID = "11010519491231002X"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[dict[str, Any]]:
    scanners = {name: SerialReaderSimulator(tmp_path / f"qr-{name}") for name in ("in", "out")}
    for sim in scanners.values():
        sim.start()
    camera = CameraSimulator(fps=10)
    camera.start()
    config = validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "console": {"host": "127.0.0.1", "port": 0, "language": "en"},
        "access": {"overstay_grace_min": 0, "visitor_camera": "gate-cam"},
        "devices": [
            {"id": f"gate-qr-{name}", "kind": "reader", "driver": "serial_reader", "port": str(tmp_path / f"qr-{name}"),
             "mode": "qr", "direction": "entry" if name == "in" else "exit",
             "feedback_lines": {"granted": "@OK", "denied": "@NO"}}
            for name in ("in", "out")] + [
            {"id": "gate-cam", "kind": "camera", "driver": "opencv", "url": camera.url, "tamper": None,
             "snapshot_every_s": 0.5}],
    })
    running = Running(config)
    now = utcnow()
    with running.gateway.sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
        host = Person(kind="staff", name="王芳", group_name="语文组", external_id="T1", active=True, created_at=now,
                      updated_at=now)
        session.add(host)
        session.flush()
        host_id = host.id
    try:
        yield {"running": running, "scanners": scanners, "host_id": host_id}
    finally:
        running.stop()
        camera.stop()
        for sim in scanners.values():
            sim.stop()


def test_register_scan_in_overstay_scan_out(gate: dict[str, Any]) -> None:
    running, scanners = gate["running"], gate["scanners"]
    sessions = running.gateway.sessions
    client = logged_in(running.gateway.console_url, "guard1", PASSWORD)
    latest = running.gateway.config.gateway.data_dir / "snapshots" / "gate-cam" / "latest.jpg"
    wait_for(latest.exists, 15, "the gate camera's view")
    response = client.post("/api/visitors", headers={"x-csrf-token": client.csrf},  # type: ignore[attr-defined]
                           json={"name": "张三", "id_number": ID, "phone": "13812345678", "host_id": gate["host_id"],
                                 "purpose": "家长来访", "expected_minutes": 30})
    assert response.status_code == 201, response.text
    body = response.json()
    token, visit_id = body["pass"], body["visit"]["id"]
    assert token and body["visit"]["state"] == "registered"
    assert ID not in response.text and "13812345678" not in response.text, "a guard sees the numbers masked"
    photo = client.get(f"/visitors/{visit_id}/photo.jpg")
    assert photo.status_code == 200 and photo.content[:2] == b"\xff\xd8", "the gate camera's view kept as the photo"
    assert f"/visitors/{visit_id}/photo.jpg" in client.get(f"/visitors/{visit_id}/pass").text

    wait_for(lambda: all(sim.plugged_in for sim in scanners.values()), 5, "scanners ready")
    scanners["in"].scan(token)
    assert scanners["in"].wait_for_line(lambda line: line == "@OK", 3), "the pass opens the entry"
    with sessions() as session:
        visit = wait_for(lambda: session.scalar(select(Visit).where(Visit.id == visit_id, Visit.state == "on_site")),
                         5, "the visitor checked in")
        assert visit.checked_in_at is not None

    # Forty minutes later (a 30-minute visit, no grace): the rules service's once-a-second check alerts the guard.
    with sessions.begin() as session:
        session.execute(update(Visit).where(Visit.id == visit_id)
                        .values(checked_in_at=utcnow() - timedelta(minutes=40)))
    with sessions() as session:
        alarm = wait_for(lambda: session.scalar(select(Alarm).where(Alarm.alarm_type == "visitor_overstay")), 5,
                         "the overstay alarm")
        assert "张三" in (alarm.place or "") and "王芳" in (alarm.place or "")

    scanners["out"].scan(token)
    assert scanners["out"].wait_for_line(lambda line: line == "@OK", 3), "the pass opens the exit"
    with sessions() as session:
        wait_for(lambda: session.scalar(select(Visit.state).where(Visit.id == visit_id)) == "left", 5, "checked out")

    seen = len(scanners["in"].received)
    scanners["in"].scan(token)  # the same pass again, after the visit
    assert scanners["in"].wait_for_line(lambda line: line == "@NO", 3, since=seen), "a used pass is refused"
    with sessions() as session:
        log = [(e.reader, e.direction, e.granted, e.credential)
               for e in session.scalars(select(AccessEvent).order_by(AccessEvent.at, AccessEvent.id))]
    assert [entry[:3] for entry in log] == [("gate-qr-in", "entry", True), ("gate-qr-out", "exit", True),
                                            ("gate-qr-in", "entry", False)]
    assert all(credential is None for *_, credential in log), "the pass token is a secret: not in the log"
