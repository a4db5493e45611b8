"""Finding 5 in a real browser (Playwright driving Debian's Chromium): a forged alarm update blanked every open
alarm board ({"id":777777} threw in the page's sort and every row vanished until reload) or hid a real alarm
(a forged "state": "closed"). The console relays only what the database holds, and the board checks every
message it gets and never drops a row over a bad one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import topics
from simulators.modbus_di import ModbusDISimulator
from tests.e2e.test_console_browser import open_board
from tests.integration.helpers import Running
from tests.security import conftest as security
from tests.security.conftest import stolen_login, url

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect
SITE = "school-1"
site = security.site  # the same gateway as the security tests' (a fixture)


def test_forged_alarm_updates_leave_the_real_alarm_on_the_board(browser: Any, site: Running,
                                                                sim: ModbusDISimulator) -> None:
    page = open_board(browser, url(site), "guard1")
    sim.press(1)
    row = page.locator("#alarms tr")
    expect(row).to_have_count(1, timeout=2000)
    real = json.loads(page.evaluate("JSON.stringify([...alarms.values()][0])"))
    console = stolen_login(site, "console")  # the console's own broker login may write alarm updates
    try:
        console.publish_json(topics.alarm(SITE, "777777"), {"id": 777777})
        console.publish_json(topics.alarm(SITE, str(real["id"])), {**real, "state": "closed"})
        console.publish(topics.alarm(SITE, str(real["id"])), b"[1,2,3]")
        console.publish_json(topics.alarm(SITE, "777778"), {**real, "id": 777778, "priority": 0})
        sim.release(1)  # a real change after the forged ones: once it shows, they have all been through
        expect(row.locator(".state")).to_contain_text("input back to normal", timeout=2000)
    finally:
        console.stop()
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-id", str(real["id"]))
    expect(row).to_have_attribute("data-state", "active_unack")


def test_the_board_ignores_a_bad_message_and_keeps_its_rows(browser: Any, site: Running,
                                                            sim: ModbusDISimulator) -> None:
    """Whatever reaches the stream (a bug, a proxy, a console of another version), the board checks it."""
    page = open_board(browser, url(site), "guard1")
    sim.press(1)
    expect(page.locator("#alarms tr")).to_have_count(1, timeout=2000)
    real = json.loads(page.evaluate("JSON.stringify([...alarms.values()][0])"))
    odd = {**real, "id": real["id"] + 1, "attachments": 5, "police": {"alarm": {"state": "acked", "acked_at": "x"}}}
    events = [("snapshot", [real]), ("alarm", {"id": 777777}), ("alarm", [1, 2, 3]), ("alarm", "x"),
              ("alarm", {**real, "state": "bogus"}), ("alarm", {**real, "raised_at": None}), ("alarm", odd),
              ("police", 5)]
    body = "retry: 60000\n" + "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    body += "event: alarm\ndata: {not json\n\n"
    page.route("**/api/alarms/stream", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.reload()
    rows = page.locator("#alarms tr")
    expect(rows).to_have_count(2, timeout=5000)  # the real alarm, and the odd one shown plainly
    expect(rows.nth(0)).to_have_attribute("data-state", "active_unack")
    expect(rows.nth(1)).to_have_attribute("data-id", str(odd["id"]))
