"""The district console in Debian's Chromium: a duty officer logs in and sees the schools worst first; an alarm
stored for a calm school (as the district's worker stores it) moves that school to the top without a reload;
a click opens the school and another its alarm. The district's alert banner leads to the Reports page, where a
click acknowledges a school's incident report; the banner goes once the alerts are answered, without a reload."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine

from gateway.district import store
from gateway.district.console.app import POLL_S, create_app
from tests.district.console_data import (
    NOW,
    PASSWORD,
    TZ,
    alarm_row,
    district_database,
    fill_reports,
    incident,
    on,
    view,
)
from tests.support import wait_for

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect
pytestmark = pytest.mark.postgres


@pytest.fixture
def console() -> Iterator[tuple[str, Engine]]:
    """The console served by uvicorn on a free port, over a filled district database."""
    with district_database() as engine:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app("d1", "测试区教育局", TZ, engine, "zh_CN"),
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, 10, "the district console to listen")
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/", engine
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()


def test_a_new_alarm_moves_its_school_to_the_top_live_and_opens(browser: Any, console: tuple[str, Engine]) -> None:
    url, engine = console
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    page.goto(url)
    page.fill("#username", "duty1")
    page.fill("#password", PASSWORD)
    page.click("#login")
    rows = page.locator("#schools tbody tr")
    expect(rows).to_have_count(5)
    order = rows.evaluate_all("rows => rows.map(r => r.dataset.site)")
    assert order == ["north-primary", "east-middle", "lock-school", "dark-school", "calm-school"]
    page.evaluate("window.notReloaded = true")

    # A panic at the calm school, nobody has answered it: the north school's P1 is being handled already.
    with engine.begin() as conn:
        store.write_alarms(conn, [alarm_row("calm-school", view(21, "panic", 1, "active_unack", NOW + timedelta(
            seconds=1), place="北门"))], [], NOW + timedelta(seconds=1))
    first = rows.first
    expect(first).to_have_attribute("data-site", "calm-school", timeout=(POLL_S + 3) * 1000)
    expect(first.locator("td.unacked")).to_have_text("1")
    expect(first.locator("td.worst")).to_have_text("P1")
    assert first.get_attribute("class") == "p1"
    assert page.evaluate("window.notReloaded") is True, "the table changed without a reload"
    wait_for(lambda: rows.evaluate_all("rows => rows.map(r => r.dataset.site)")[1] == "north-primary", 2,
             "the north school second")

    first.locator("td.site a").click()
    expect(page.locator("#school")).to_contain_text("calm-school")
    page.locator('#alarms tr[data-id="21"] a').click()
    expect(page.locator("#alarm")).to_have_text("一键报警")
    expect(page.locator("#fields")).to_contain_text("北门")
    expect(page.locator("#fields")).to_contain_text("报警中，未确认")
    expect(page.locator("#zone")).to_contain_text("Asia/Shanghai")


def test_the_alert_banner_leads_to_the_reports_where_a_click_acknowledges_a_report(
        browser: Any, console: tuple[str, Engine]) -> None:
    url, engine = console
    fill_reports(engine)
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    page.goto(url)
    page.fill("#username", "duty1")
    page.fill("#password", PASSWORD)
    page.click("#login")
    banner = page.locator("#alert-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("区级告警未结束：2 条（2 条未确认）")
    banner.locator("a").click()
    expect(page.locator("#alerts-table tbody tr")).to_have_count(2)
    row = page.locator("#incident-north-primary-11")
    row.locator("button.ack-report").click()
    expect(row.locator("td.ack")).to_contain_text("duty1 于")
    expect(row.locator("td.ack")).to_contain_text("学校尚未收到")
    page.locator("#nav-schools").click()
    with engine.begin() as conn:  # the east school's report still missing; the north one's in: one alert left
        store.write_reports(conn, [incident("east-middle", 4, 3, "实验室冒烟", on(10, 14), reported=on(10, 18))],
                            [], NOW)
        store.check_deadlines(conn, NOW)
    for alert in ("incident:4", "incident:12"):
        with engine.begin() as conn:
            conn.execute(store.alerts.update().where(store.alerts.c.ref == alert).values(acked_by="duty1",
                                                                                          acked_at=NOW))
    expect(banner).to_be_hidden(timeout=(POLL_S + 3) * 1000)
