"""Visitor registration in a real browser (Playwright driving Debian's Chromium) against a real gateway,
with the keyboard only, as a guard with a queue at the gate would: type, Tab or Enter, and the pass."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.config_file import validate_config
from gateway.console import auth
from gateway.records import visits
from gateway.records.models import Credential, Person, Visit, utcnow
from tests.integration.helpers import Running

pw = pytest.importorskip("playwright.sync_api")
expect = pw.expect
PASSWORD = "a long enough password"
ID = "44010619900101123" + visits.resident_id_check_digit("44010619900101123")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Running]:
    running = Running(validate_config({
        "site": {"id": "school-1", "name": "实验小学"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "database": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
        "console": {"language": "zh_CN"},
    }))
    with running.gateway.sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", PASSWORD)
        session.add(Person(kind="staff", name="王芳", group_name="语文组", external_id="T001", active=True,
                           created_at=utcnow(), updated_at=utcnow()))
    yield running
    running.stop()


def test_a_guard_registers_a_visitor_with_the_keyboard_only(browser: Any, site: Running) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(site.gateway.console_url + "visitors")
    page.focus("#username")
    page.keyboard.type("guard1")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")

    expect(page.locator("#name")).to_be_focused()  # the form is ready for the next visitor
    page.keyboard.type("张三")
    page.keyboard.press("Enter")  # Enter goes on to the next empty field, past the ID type (already chosen)
    expect(page.locator("#id_number")).to_be_focused()
    page.keyboard.type(ID.lower())  # as an ID card reader types it, with a lower-case x or not
    page.keyboard.press("Enter")
    expect(page.locator("#phone")).to_be_focused()
    page.keyboard.type("13812345678")
    page.keyboard.press("Tab")
    expect(page.locator("#host")).to_be_focused()
    page.keyboard.type("王芳")
    page.keyboard.press("Tab")
    page.keyboard.type("家长来访")
    page.keyboard.press("Tab")  # the expected duration: one hour unless changed
    expect(page.locator("#expected_minutes")).to_be_focused()
    page.keyboard.press("Enter")  # everything required is there: register

    expect(page).to_have_url(re.compile(r"/visitors/\d+/pass$"))
    label = page.locator("#pass")
    expect(label).to_contain_text("访客通行证")
    expect(page.locator("#pass-name")).to_have_text("张三")
    expect(page.locator("#pass-host")).to_have_text("王芳")
    qr = label.locator("svg.qr")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] > 150, "a big QR code (52 mm on the label)"
    expect(page.locator("#print")).to_be_focused()  # Enter prints

    page.emulate_media(media="print")
    expect(page.locator("header")).to_be_hidden()  # only the label goes to the printer
    expect(page.locator("#print")).to_be_hidden()
    page.emulate_media(media="screen")

    with site.gateway.sessions() as session:
        visit = session.scalars(select(Visit)).one()
        token = session.scalar(select(Credential.value).where(Credential.visit_id == visit.id))
    assert visit.state == "registered" and visit.id_number_masked == ID[:4] + "*" * 10 + ID[-4:]
    assert token is not None

    page.keyboard.press("Escape")  # back to the form for the next one in the queue
    expect(page.locator("#name")).to_be_focused()
    row = page.locator(f'#visits tr[data-id="{visit.id}"]')
    expect(row).to_contain_text(ID[:4] + "*" * 10 + ID[-4:])
    expect(row).to_contain_text("138****5678")

    # The visitor leaves: the pass scanned (a scanner types the token and Enter) into whatever has the focus.
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text("张三")
    expect(page.locator("#scan")).to_be_focused()
    expect(page.locator(f'#visits tr[data-id="{visit.id}"]')).to_have_count(0)
