"""Coverage (R11, 提高安全设施的覆盖率): the Cameras page names the site's zones that no camera looks at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from gateway.bus import Bus
from gateway.console import auth
from gateway.console.app import create_app
from gateway.console.pages.cameras import uncovered_zones
from gateway.records import db
from gateway.records.models import Device, utcnow
from tests.support import broker_config

PASSWORD = "a long test password"
ZONES = {"south-gate": "南门", "yard": "操场", "dorm": "宿舍楼"}


@pytest.fixture
def client(tmp_path: Path, amqtt_broker: Any) -> Iterator[tuple[TestClient, Any]]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'console.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
    bus = Bus(broker_config(amqtt_broker.port), "coverage-test", name="console")
    bus.start()
    bus.wait_connected(5)
    app = create_app("s1", "Test School", ZoneInfo("Asia/Shanghai"), sessions, bus, "zh_CN", zones=ZONES)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as test_client:
        assert test_client.post("/login", data={"username": "guard1", "password": PASSWORD}).status_code == 303
        yield test_client, sessions
    bus.stop()
    engine.dispose()


def test_the_cameras_page_names_the_zones_without_a_camera(client: tuple[TestClient, Any]) -> None:
    test_client, sessions = client
    with sessions.begin() as session:
        for device, zone in (("gate-cam", "south-gate"), ("gate-cam-2", "south-gate"), ("dorm-cam", "dorm")):
            session.add(Device(id=device, kind="camera", driver="opencv", zone=zone, last_seen=utcnow()))
    page = test_client.get("/cameras").text
    assert page.split('id="uncovered">', 1)[1].split("</p>", 1)[0] == "未安装摄像头的区域: 操场"
    with sessions.begin() as session:
        session.add(Device(id="yard-cam", kind="camera", driver="opencv", zone="yard", last_seen=utcnow()))
    page = test_client.get("/cameras").text
    assert 'id="uncovered"' not in page and 'id="all-covered"' in page


def test_uncovered_zones_in_the_configs_order() -> None:
    assert uncovered_zones(ZONES, [{"zone": "yard"}, {"zone": None}]) == ["南门", "宿舍楼"]
    assert uncovered_zones({}, [{"zone": "yard"}]) == []
