"""The site plan in Chromium (issue 19): an admin uploads a plan and drags a device onto it, the placement is
stored and exported, and a guard sees an alarm blink at the device's place and opens it from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.console import auth
from gateway.records.models import AuditEntry, PlanPosition
from simulators.modbus_di import ModbusDISimulator
from tests.e2e.test_alarm_centre import PASSWORD, log_in, site_config
from tests.integration.helpers import Running, logged_in
from tests.unit.test_plan_images import png

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect


@pytest.fixture
def site(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    running = Running(site_config(tmp_path, sim.port))
    with running.gateway.sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
        auth.add_user(session, "admin1", "admin", PASSWORD)
    yield running
    running.stop()


def test_an_admin_places_a_device_and_a_guard_sees_its_alarm_blink_there(browser: Any, site: Running, tmp_path: Path,
                                                                         sim: ModbusDISimulator) -> None:
    url = site.gateway.console_url
    admin = log_in(browser, url, "admin1", "plan")
    expect(admin.locator("#empty-plan")).to_be_visible()
    image = tmp_path / "ground.png"
    image.write_bytes(png(400, 300))
    admin.fill("input[name=name]", "一楼")
    admin.set_input_files("input[name=image]", str(image))
    admin.click("#admin button[type=submit]")
    expect(admin.locator("#tabs button.here")).to_have_text("一楼")
    admin.check("#edit")
    chip = admin.locator("#unplaced .chip[data-device='gate-box']")
    plan = admin.locator("#plan")
    box = plan.bounding_box()
    assert box is not None
    chip.drag_to(plan, target_position={"x": box["width"] * 0.25, "y": box["height"] * 0.5})
    expect(admin.locator("#plan .marker[data-device='gate-box']")).to_be_visible()
    with site.gateway.sessions() as session:
        placed = session.scalars(select(PlanPosition)).one()
        audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "plan.place")).one()
    assert placed.device_id == "gate-box" and abs(placed.x - 0.25) < 0.03 and abs(placed.y - 0.5) < 0.03
    assert audited.actor == "admin1"
    exported = logged_in(url, "guard1", PASSWORD).get("/api/plans").json()
    assert exported[0]["name"] == "一楼" and exported[0]["devices"][0]["device_id"] == "gate-box"

    guard = log_in(browser, url, "guard1", "plan")
    marker = guard.locator("#plan .marker[data-device='gate-box']")
    expect(marker).to_be_visible()
    expect(guard.locator("#admin")).to_have_count(0)  # a guard cannot upload or move anything
    sim.press(1)
    expect(marker).to_have_class("marker alarm unack", timeout=2000)
    expect(guard.locator("#tabs button.here .waiting")).to_be_visible()
    marker.click()
    expect(guard).to_have_url(url + "alarms/1")
    expect(guard.locator("#card .what")).to_have_text("一键报警")


def test_a_file_that_is_not_a_plan_is_refused_with_why(browser: Any, site: Running, tmp_path: Path) -> None:
    admin = log_in(browser, site.gateway.console_url, "admin1", "plan")
    bad = tmp_path / "plan.svg"
    bad.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    admin.fill("input[name=name]", "校园")
    admin.set_input_files("input[name=image]", str(bad))
    admin.click("#admin button[type=submit]")
    expect(admin.locator(".error")).to_contain_text("PNG 或 JPEG")
    guard = logged_in(site.gateway.console_url, "guard1", PASSWORD)
    refused = guard.post("/api/plans/1/devices", headers={"X-CSRF-Token": guard.csrf},
                         json={"device_id": "gate-box", "x": 0.5, "y": 0.5})
    assert refused.status_code == 403, "a guard may not move devices"
