"""Coverage (R11, 提高安全设施的覆盖率): the Cameras page names the site's zones that no camera looks at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.console.pages.cameras import uncovered_zones
from gateway.records.models import Device, utcnow
from tests.integration.helpers import CONSOLE_PASSWORD, console_client

PASSWORD = CONSOLE_PASSWORD
ZONES = {"south-gate": "南门", "yard": "操场", "dorm": "宿舍楼"}


@pytest.fixture
def client(tmp_path: Path, amqtt_broker: Any) -> Iterator[tuple[TestClient, Any]]:
    with console_client(tmp_path, amqtt_broker.port, {"guard1": "guard"}, zones=ZONES) as (test_client, sessions):
        assert test_client.post("/login", data={"username": "guard1", "password": PASSWORD}).status_code == 303
        yield test_client, sessions


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
