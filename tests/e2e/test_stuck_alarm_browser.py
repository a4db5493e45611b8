"""Issue 16 item 2 in a real browser (Playwright driving Debian's Chromium): a tamper alarm whose alarm module
went silent while the input was active is closed from the board by a supervisor, with a note; a guard is not
offered it, and a note too short is refused with a message the supervisor can read (the site's language)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config_file import validate_config
from simulators.modbus_di import ModbusDISimulator
from tests.e2e.test_console_browser import add_users, open_board
from tests.integration.helpers import Running

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect
NOTE = "模块箱断电，防拆无法恢复，已报维修"


@pytest.fixture
def site(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    running = Running(validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "database": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
        "console": {"language": "zh_CN"},
        "devices": [{
            "id": "gate-box", "kind": "alarm_input", "driver": "modbus_di",
            "connection": {"host": "127.0.0.1", "port": sim.port, "unit": 1, "timeout_s": 0.3},
            "points": [{"input": 2, "name": "box-tamper", "type": "tamper", "place": "报警模块箱"}],
        }],
    }))
    add_users(running.gateway)
    yield running
    running.stop()


def test_a_supervisor_closes_a_silent_tamper_alarm_from_the_board(browser: Any, site: Running,
                                                                 sim: ModbusDISimulator) -> None:
    url = site.gateway.console_url
    guard = open_board(browser, url, "guard1")
    supervisor = open_board(browser, url, "super1")
    sim.press(2)
    tamper = guard.locator("#alarms tr", has_text="报警模块箱")
    expect(tamper).to_have_attribute("data-state", "active_unack", timeout=2000)
    tamper.locator("button.ack").click()
    expect(tamper).to_have_attribute("data-state", "active_ack")
    expect(tamper.locator("button.close-active")).to_have_count(0)  # closing is a supervisor's

    sim.unplug()  # the module goes silent with its tamper input active: no "restored" can come
    expect(supervisor.locator("#alarms tr")).to_have_count(2, timeout=5000)  # its offline alarm
    row = supervisor.locator("#alarms tr", has_text="报警模块箱")
    button = row.locator("button.close-active")
    expect(button).to_have_text("强制关闭（输入仍在报警）")

    answers = ["好", NOTE]  # a note too short, then one that says why
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        if dialog.type == "prompt":
            prompts.append(dialog.message)
            dialog.accept(answers.pop(0))
        else:
            dialog.accept()

    supervisor.on("dialog", answer)
    with supervisor.expect_event("dialog", predicate=lambda d: d.type == "alert") as refusal:
        button.click()
    assert refusal.value.message == "输入仍处于报警状态：如仍要关闭报警，请填写不少于 6 个字的备注说明原因"
    expect(row).to_have_attribute("data-state", "active_ack")
    button.click()
    expect(supervisor.locator("#alarms tr")).to_have_count(1)
    expect(supervisor.locator("#alarms tr")).not_to_contain_text("报警模块箱")
    expect(guard.locator("#alarms tr")).to_have_count(1, timeout=2000)  # gone from the other board too
    assert prompts[0].startswith("输入仍处于报警状态。仅当设备离线或已 10 分钟无消息时才能关闭。") and len(prompts) == 2
