"""The guard's alarm centre in Chromium (issue 19): an alarm cannot be missed on any page, sound does not silently
go away, a re-press sounds again, the board acknowledges in bulk, the alarm's page shows its camera live and
what the linkage did, a stopped gateway is loud, a guard can finish routine alarms, and the board works on a
phone. Screenshots of the board in both languages at the gatehouse's and the wall monitor's sizes are kept in
artefacts/screenshots (CAMPUSGW_ARTEFACTS to put them elsewhere)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.bus import Bus
from gateway.config import Config
from gateway.config_file import validate_config
from gateway.records.models import Alarm, AuditEntry, DistrictNotice, Lockdown
from simulators.camera import CameraSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.e2e.test_console_browser import PASSWORD, add_users  # the same guard1 and super1
from tests.integration.helpers import Running, logged_in
from tests.support import TEST_LOGIN, wait_for

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect
ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("CAMPUSGW_ARTEFACTS", ROOT / "artefacts")) / "screenshots"
OTHER_PAGES = ("visitors", "access", "cameras", "bollards", "patrols", "duty", "incidents", "reports", "devices")


def site_config(tmp_path: Path, sim_port: int, camera_url: str | None = None, district: bool = False) -> Config:
    devices: list[dict[str, Any]] = [{
        "id": "gate-box", "kind": "alarm_input", "driver": "modbus_di", "zone": "south-gate", "name": "南门报警模块",
        "connection": {"host": "127.0.0.1", "port": sim_port, "unit": 1, "timeout_s": 0.3},
        "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "门卫室"},
                   {"input": 2, "name": "gatehouse-door", "type": "door_contact", "place": "门卫室门"},
                   {"input": 3, "name": "store-door", "type": "door_contact", "place": "器材室"},
                   {"input": 4, "name": "box-tamper", "type": "tamper", "place": "模块箱"}]}]
    linkage = []
    if camera_url:
        devices.append({"id": "gate-cam", "kind": "camera", "driver": "opencv", "zone": "south-gate",
                        "name": "南门摄像机", "url": camera_url, "fps": 5})
        linkage.append({"when": {"alarm_type": ["panic"]}, "cameras": ["gate-cam"]})
    return validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "database": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
        "console": {"language": "zh_CN"},
        "zones": [{"id": "south-gate", "name": "南门"}],
        "devices": devices,
        "linkage": linkage,
        **({"district": {"addresses": ["127.0.0.1:1"]}} if district else {}),  # the bridge is not started here
    })


@pytest.fixture
def site(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    running = Running(site_config(tmp_path, sim.port))
    add_users(running.gateway)
    yield running
    running.stop()


def log_in(browser: Any, url: str, username: str, page: str = "alarms", viewport: tuple[int, int] = (1366, 768),
           language: str | None = None) -> Any:
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    tab = context.new_page()
    tab.goto(url + page)
    tab.fill("#username", username)
    tab.fill("#password", PASSWORD)
    tab.click("#login")
    expect(tab.locator("body")).to_have_attribute("data-stream", "up", timeout=5000)
    if language:
        tab.select_option("#lang", language)
        expect(tab.locator("body")).to_have_attribute("data-stream", "up", timeout=5000)
    return tab


def open_alarms(running: Running) -> list[Alarm]:
    with running.gateway.sessions() as session:
        return list(session.scalars(select(Alarm).where(Alarm.state != "closed").order_by(Alarm.id)))


def test_an_alarm_shows_on_every_page_within_2_s_and_a_repress_shows_it_again(
        browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    url = site.gateway.console_url
    guard = log_in(browser, url, "guard1", "visitors")
    api = logged_in(url, "super1", PASSWORD)
    bar = guard.locator("#alarm-bar")
    for n, page in enumerate(OTHER_PAGES):
        guard.goto(url + page)
        expect(guard.locator("body")).to_have_attribute("data-stream", "up", timeout=5000)
        expect(bar).to_be_hidden()
        sim.press(1)  # the first press raises the panic; each later one presses the acknowledged alarm again
        expect(bar).to_be_visible(timeout=2000)
        expect(bar.locator(".what")).to_contain_text("一键报警")
        expect(bar.locator(".where")).to_have_text("南门 · 门卫室")  # the zone's name, never its id
        if n:
            expect(bar.locator(".what")).to_contain_text(f"×{n + 1}")
        sim.release(1)  # seen before the next press, so that one is a new press and not one held on (CI: missed)
        alarm = wait_for(lambda: [a for a in open_alarms(site) if a.state == "active_unack" and not a.condition_active],
                         5, "the alarm, its button released")[0]
        response = api.post(f"/api/alarms/{alarm.id}/ack", headers={"X-CSRF-Token": api.csrf}, json={})
        assert response.status_code == 200, response.text
        expect(bar).to_be_hidden(timeout=2000)
    # Alt+A on any page goes to the alarm's page.
    sim.press(1)
    expect(bar).to_be_visible(timeout=2000)
    guard.keyboard.press("Alt+a")
    expect(guard).to_have_url(url + f"alarms/{alarm.id}")


def test_sound_stays_on_in_kiosk_mode_and_a_repress_sounds_again(kiosk_browser: Any, site: Running,
                                                                  sim: ModbusDISimulator) -> None:
    """An alarm workstation's browser is started to allow sound (the page says so when it is not)."""
    url = site.gateway.console_url
    guard = log_in(kiosk_browser, url, "guard1")
    guard.check("#kiosk")
    expect(guard.locator("body")).to_have_attribute("data-sound", "on")
    for _ in range(2):
        guard.reload()
        expect(guard.locator("body")).to_have_attribute("data-sound", "on", timeout=5000)
        expect(guard.locator("body")).to_have_attribute("data-kiosk", "on")
        expect(guard.locator("#sound-mute")).to_be_hidden()  # a kiosk cannot be muted here
    guard.goto(url + "visitors")  # and on every other page
    expect(guard.locator("body")).to_have_attribute("data-sound", "on", timeout=5000)

    sim.press(1)
    expect(guard.locator("body")).to_have_attribute("data-tone", "p1", timeout=2000)
    sim.release(1)
    guard.goto(url + "alarms")
    guard.click("button.ack")
    expect(guard.locator("body")).to_have_attribute("data-tone", "", timeout=2000)
    tones = int(guard.locator("body").get_attribute("data-tones") or 0)
    sim.press(1)  # pressed again after the acknowledgement: news, so it sounds again
    expect(guard.locator("body")).to_have_attribute("data-tone", "p1", timeout=2000)
    wait_for(lambda: int(guard.locator("body").get_attribute("data-tones") or 0) > tones, 3, "a new tone")
    expect(guard.locator("#card .facts")).to_contain_text("2 次按下")


def test_a_browser_that_holds_sound_back_says_so_and_how_to_allow_it(browser: Any, site: Running) -> None:
    guard = log_in(browser, site.gateway.console_url, "guard1")
    guard.click("#sound-off") if guard.locator("#sound-off").is_visible() else None
    guard.evaluate("localStorage.setItem('campusgw.sound', 'on')")
    guard.reload()
    body = guard.locator("body")
    expect(body).to_have_attribute("data-stream", "up", timeout=5000)
    # Never silently off: either the browser let the wanted sound start, or the page tells how to allow it.
    if body.get_attribute("data-sound") != "on":
        expect(guard.locator("#sound-blocked")).to_be_visible()
        expect(guard.locator("#sound-blocked")).to_contain_text("--autoplay-policy=no-user-gesture-required")
        guard.mouse.click(5, 300)  # a click anywhere is the gesture it waits for
        expect(body).to_have_attribute("data-sound", "on", timeout=3000)


def test_bulk_acknowledge_acks_each_alarm_and_audits_each(browser: Any, site: Running,
                                                          sim: ModbusDISimulator) -> None:
    guard = log_in(browser, site.gateway.console_url, "guard1")
    for point in (2, 3, 4):
        sim.press(point)
    expect(guard.locator("#alarms tr")).to_have_count(3, timeout=5000)
    guard.select_option("#filter-zone", "south-gate")
    expect(guard.locator("#bulk-ack")).to_have_text("确认显示的全部 3 条")
    guard.once("dialog", lambda dialog: dialog.accept())
    guard.click("#bulk-ack")
    expect(guard.locator("#alarms tr[data-state='active_ack']")).to_have_count(3, timeout=3000)
    with site.gateway.sessions() as session:
        acks = session.scalars(select(AuditEntry).where(AuditEntry.action == "alarm.ack")).all()
    assert sorted((a.actor, a.result) for a in acks) == [("guard1", "ok")] * 3, "audited per alarm"


def test_keyboard_alone_acknowledges_the_worst_alarm(browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    guard = log_in(browser, site.gateway.console_url, "guard1")
    sim.press(2)
    sim.press(1)
    expect(guard.locator("#card")).to_contain_text("一键报警", timeout=3000)  # the worst first, the panic
    guard.keyboard.press("a")
    expect(guard.locator("#alarms tr.p1")).to_have_attribute("data-state", "active_ack", timeout=3000)
    expect(guard.locator("#card")).to_contain_text("门磁")  # now the door contact waits


def test_a_guard_finishes_a_routine_alarm_with_a_note_but_not_a_panic(browser: Any, site: Running,
                                                                      sim: ModbusDISimulator) -> None:
    guard = log_in(browser, site.gateway.console_url, "guard1")
    sim.press(2)  # the gatehouse door: routine (console.guards_finish by default)
    sim.press(1)
    expect(guard.locator("#alarms tr")).to_have_count(2, timeout=5000)
    sim.release(2)
    door = guard.locator("#alarms tr", has_text="门卫室门")
    expect(door).to_have_attribute("data-state", "cleared_unack", timeout=3000)
    door.locator("button.ack").click()
    guard.once("dialog", lambda dialog: dialog.accept("门被风吹开了"))
    door.locator("button.close").click()
    expect(guard.locator("#alarms tr")).to_have_count(1, timeout=3000)
    panic = guard.locator("#alarms tr.p1")
    panic.locator("button.ack").click()
    expect(panic.locator("button.reset")).to_have_count(0)  # a panic waits for a supervisor
    api = logged_in(site.gateway.console_url, "guard1", PASSWORD)
    alarm = next(a for a in open_alarms(site) if a.alarm_type == "panic")
    refused = api.post(f"/api/alarms/{alarm.id}/reset", headers={"X-CSRF-Token": api.csrf}, json={"note": "tried it"})
    assert refused.status_code == 403
    with site.gateway.sessions() as session:
        closed = session.scalars(select(Alarm).where(Alarm.alarm_type == "door_contact")).one()
    assert (closed.state, closed.closed_by, closed.last_note) == ("closed", "guard1", "guard1: 门被风吹开了")


def test_a_stopped_gateway_is_loud_within_5_s(browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    guard = log_in(browser, site.gateway.console_url, "guard1", "visitors")
    site.stop()
    expect(guard.locator("#gateway-down")).to_be_visible(timeout=5000)
    expect(guard.locator("body")).to_have_attribute("data-stream", "down")
    expect(guard.locator("#gateway-down")).to_contain_text("网关无响应")


def test_the_alarm_page_shows_the_camera_live_the_linkage_and_the_steps(browser: Any, tmp_path: Path,
                                                                        sim: ModbusDISimulator) -> None:
    camera = CameraSimulator(fps=5)
    camera.start()
    running = Running(site_config(tmp_path, sim.port, camera.url))
    add_users(running.gateway)
    try:
        wait_for(lambda: (running.gateway.config.gateway.data_dir / "snapshots" / "gate-cam" / "latest.jpg").exists(),
                 30, "the camera's first view")
        guard = log_in(browser, running.gateway.console_url, "guard1")
        sim.press(1)
        expect(guard.locator("#card")).to_contain_text("一键报警", timeout=3000)
        guard.click("#card .card-detail")
        expect(guard.locator("#card .what")).to_have_text("一键报警")
        live = guard.locator(".camera[data-camera='gate-cam'] img.live")
        wait_for(lambda: live.evaluate("img => img.naturalWidth") > 0, 10, "the live picture")
        # What the linkage did, in the guard's language, naming the camera by its name (not gate-cam)
        expect(guard.locator("#done")).to_contain_text("已请求摄像机 南门摄像机 抓拍", timeout=10_000)
        expect(guard.locator("#evidence .snapshot img")).to_be_visible(timeout=15_000)
        guard.locator("#steps input").first.check()
        expect(guard.locator("#steps li").first.locator(".by")).to_contain_text("guard1", timeout=3000)
        expect(guard.locator("#history")).to_contain_text("完成步骤")
    finally:
        running.stop()
        camera.stop()


def test_the_board_on_a_phone_has_every_action_on_screen(browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    phone = log_in(browser, site.gateway.console_url, "guard1", viewport=(390, 844))
    sim.press(1)
    sim.press(2)
    expect(phone.locator("#alarms tr")).to_have_count(2, timeout=5000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390, "nothing off to the side"
    for button in phone.locator("#card button, #alarms button").all():
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, button.text_content()
    phone.locator("#card button.card-ack").click()
    expect(phone.locator("#alarms tr.p1")).to_have_attribute("data-state", "active_ack", timeout=3000)


def test_board_screenshots_in_both_languages_at_the_gatehouse_and_wall_sizes(
        browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    for point in (1, 2, 4):
        sim.press(point)
    wait_for(lambda: len(open_alarms(site)) == 3, 5, "three alarms")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for language in ("zh_CN", "en"):
        for width, height in ((1366, 768), (1920, 1080)):
            page = log_in(browser, site.gateway.console_url, "guard1", viewport=(width, height), language=language)
            expect(page.locator("#alarms tr")).to_have_count(3, timeout=5000)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            path = ARTEFACTS / f"board-{language}-{width}x{height}.png"
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
            page.context.close()


def test_a_guard_on_patrol_sees_the_round_now_on_a_phone_and_can_add_the_console_to_the_home_screen(
        browser: Any, tmp_path: Path, sim: ModbusDISimulator) -> None:
    data = site_config(tmp_path, sim.port).model_dump(mode="json", by_alias=True, exclude_none=True)
    checkpoints = [{"id": f"cp-{n}", "name": name, "tag": f"CP-{n}"} for n, name in
                   enumerate(("教学楼东", "宿舍", "食堂"), 1)]
    data["duty"] = {"shifts": [{"id": "day", "name": "白班", "from": "07:00", "to": "19:00"},
                               {"id": "night", "name": "夜班", "from": "19:00", "to": "07:00"}]}
    data["patrol"] = {"checkpoints": checkpoints,
                      "routes": [{"id": "campus", "name": "校园巡逻", "checkpoints": [c["id"] for c in checkpoints],
                                  "expected_min": 30, "tolerance_min": 15}],
                      "plan": [{"route": "campus", "shift": "day", "rounds": 3},
                               {"route": "campus", "shift": "night", "rounds": 3}]}
    running = Running(validate_config(data))
    add_users(running.gateway)
    try:
        phone = log_in(browser, running.gateway.console_url, "guard1", "patrols", viewport=(390, 844))
        mine = phone.locator("#my-round")
        expect(mine).to_be_visible(timeout=10_000)
        expect(mine.locator(".next")).to_contain_text("教学楼东")  # the first checkpoint of the round
        box = mine.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844, "on the first screen, no scrolling"
        expect(phone.locator("#all-rounds")).not_to_have_attribute("open", "")  # the whole day one tap away
        for page in ("patrols", "visitors", "alarms", "access"):
            phone.goto(running.gateway.console_url + page)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390, f"{page}: nothing off to the side"
        manifest = phone.locator("link[rel=manifest]").get_attribute("href")
        assert manifest
        answer = logged_in(running.gateway.console_url, "guard1", PASSWORD).get(manifest)
        assert answer.status_code == 200 and answer.json()["start_url"] == "/alarms"
    finally:
        running.stop()


def test_eight_tabs_of_one_browser_share_one_stream_and_survive_the_leaders_close(
        browser: Any, site: Running, sim: ModbusDISimulator) -> None:
    """A browser keeps six connections to a host: a stream per tab left the seventh tab loading for ever. The
    tabs share one stream (a leader relays it); when the leader's tab closes another takes over."""
    url = site.gateway.console_url
    first = log_in(browser, url, "guard1", "visitors")
    tabs = [first] + [first.context.new_page() for _ in range(7)]
    for n, tab in enumerate(tabs[1:]):
        tab.goto(url + OTHER_PAGES[n % len(OTHER_PAGES)], timeout=10_000)  # the seventh and eighth load too
    for tab in tabs:
        expect(tab.locator("body")).to_have_attribute("data-stream", "up", timeout=10_000)
    sim.press(1)
    for tab in tabs:
        expect(tab.locator("#alarm-bar")).to_be_visible(timeout=3000)
    api = logged_in(url, "super1", PASSWORD)
    alarm = open_alarms(site)[0]
    api.post(f"/api/alarms/{alarm.id}/ack", headers={"X-CSRF-Token": api.csrf}, json={})
    sim.release(1)
    for tab in tabs:
        expect(tab.locator("#alarm-bar")).to_be_hidden(timeout=3000)
    leaders = [tab for tab in tabs if tab.locator("body").get_attribute("data-leader") == "1"]
    assert len(leaders) == 1, "one stream for the browser"
    leaders[0].close()
    rest = [tab for tab in tabs if tab is not leaders[0]]
    wait_for(lambda: sum(tab.locator("body").get_attribute("data-leader") == "1" for tab in rest) == 1, 6,
             "another tab leading")
    sim.press(1)
    for tab in rest:
        expect(tab.locator("#alarm-bar")).to_be_visible(timeout=6000)


def test_a_lockdown_started_at_the_board_is_loud_on_every_page_and_ends_with_a_note(
        browser: Any, site: Running) -> None:
    url = site.gateway.console_url
    supervisor = log_in(browser, url, "super1")
    guard = log_in(browser, url, "guard1", "visitors")
    banner = guard.locator("#lockdown")
    expect(banner).to_be_hidden()
    expect(guard.locator("#lockdown-start")).to_have_count(0)  # not a guard's to start
    supervisor.locator("#lockdown-drill").check()
    supervisor.once("dialog", lambda dialog: dialog.accept("防暴演练：歹徒持刀闯入"))
    supervisor.locator("#lockdown-start").click()
    expect(banner).to_be_visible(timeout=2000)
    expect(banner.locator(".what")).to_have_text("封校演练")
    expect(banner.locator(".why")).to_have_text("防暴演练：歹徒持刀闯入")
    expect(banner.locator(".since")).to_contain_text("super1")
    guard.goto(url + "patrols")  # a page opened during the lockdown shows it from its first moment
    expect(guard.locator("#lockdown")).to_be_visible(timeout=2000)
    answers = iter(["演练结束，全员到位", "保安3人", "北门广播听不清"])
    supervisor.on("dialog", lambda dialog: dialog.accept(next(answers)))
    supervisor.locator("#lockdown-end").click()
    expect(guard.locator("#lockdown")).to_be_hidden(timeout=2000)
    expect(supervisor.locator("#lockdown-start")).to_be_visible()
    with site.gateway.sessions() as session:
        (record,) = session.scalars(select(Lockdown)).all()
    assert (record.drill, record.started_by, record.ended_by) == (True, "super1", "super1")
    assert (record.note, record.participants, record.findings) == ("演练结束，全员到位", "保安3人", "北门广播听不清")


def test_a_district_notice_is_on_every_page_until_a_guard_acknowledges_it_and_both_views_go_up(
        browser: Any, tmp_path: Path, sim: ModbusDISimulator) -> None:
    """A notice comes down the bridge (published into the school's broker as Mosquitto's bridge does): the rules
    service records it and sends its view up; every page shows it until a guard acknowledges it on the Notices
    page, and that view goes up too. The district sends it again until it sees the first view: still one notice."""
    running = Running(site_config(tmp_path, sim.port, district=True))
    add_users(running.gateway)
    bridge = Bus(running.gateway.config.broker, "district-bridge", port=running.gateway.broker_port, name="test",
                 credentials=TEST_LOGIN)
    views: list[dict[str, Any]] = []
    bridge.subscribe("campus/v1/school-1/rules/notices/+", lambda m: views.append(json.loads(m.payload)), qos=0)
    bridge.start()
    try:
        assert bridge.wait_connected(10)
        url = running.gateway.console_url
        guard = log_in(browser, url, "guard1", "visitors")
        banner = guard.locator("#district-notice")
        expect(guard.locator("body")).to_have_attribute("data-stream", "up", timeout=10_000)
        expect(banner).to_be_hidden()
        notice = {"level": "alert", "title": "加强戒备：放学时段校门外有可疑人员", "body": "请加强南门警戒，护导到位。",
                  "by": "duty-wang", "at": "2026-12-06T09:00:00+08:00"}
        bridge.publish_json("campus/v1/school-1/district/notices/notice-7", notice)
        expect(banner).to_be_visible(timeout=3000)
        expect(banner.locator(".what")).to_have_text("上级警示：")
        expect(banner.locator(".title")).to_have_text(notice["title"])
        wait_for(lambda: any(v["id"] == 7 and v["acked_at"] is None for v in views), 5, "the received view up")
        bridge.publish_json("campus/v1/school-1/district/notices/notice-7", notice)  # the district, again
        wait_for(lambda: sum(v["id"] == 7 for v in views) >= 2, 5, "the view up again for the repeat")
        guard.goto(url + "patrols")  # a page opened later shows it from its first moment
        expect(guard.locator("#district-notice")).to_be_visible(timeout=3000)
        guard.locator("#district-notice-go").click()
        guard.locator("#notice-7 button.ack").click()
        expect(guard.locator("#notice-7")).to_contain_text("guard1")
        expect(guard.locator("#district-notice")).to_be_hidden(timeout=3000)
        acked = wait_for(lambda: next((v for v in views if v["acked_by"] == "guard1"), None), 5, "the ack view up")
        assert acked["id"] == 7 and acked["received_at"] and acked["acked_at"]
        with running.gateway.sessions() as session:
            held = session.scalars(select(DistrictNotice)).all()
            audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "notice.ack")).all()
        assert [(n.id, n.title, n.acked_by) for n in held] == [(7, notice["title"], "guard1")], "one notice"
        assert [(a.actor, a.result) for a in audited] == [("guard1", "ok")]
    finally:
        bridge.stop()
        running.stop()
