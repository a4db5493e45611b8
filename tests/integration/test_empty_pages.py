"""A console page with nothing to show says what would fill it and how (the config key or the CLI command), in
the user's language: what a newcomer sees on a site with no devices and no people yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape

from gateway import i18n
from gateway.config_file import validate_config
from gateway.console import auth
from tests.integration.helpers import Running, logged_in

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

PASSWORD = "Empty-Site-Pw-2026"
HINTS = {  # page -> the start of its hint, and the config key or command it names (the same in both languages)
    "cameras": ("Add a camera to the site config", "campusgw doctor camera URL"),
    "bollards": ("Add a bollard to the site config", "driver: modbus_bollard"),
    "patrols": ("Rounds are planned from", "patrol.plan"),
    "access": ("Passages are logged once a reader", "campusgw people import FILE -c SITE.yaml"),
    "visitors": ("No staff to host a visit yet", "campusgw people import FILE -c SITE.yaml"),
    "devices": ("No devices are configured", "campusgw check-config SITE.yaml"),
}


@pytest.fixture
def empty_site(tmp_path: Path) -> Iterator[Running]:
    running = Running(validate_config({"site": {"id": "new-school", "name": "New School"},
                                       "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
                                       "broker": {"url": "embedded", "embedded_port": 0}}))
    with running.gateway.sessions.begin() as session:
        auth.add_user(session, "super1", "supervisor", PASSWORD)
    yield running
    running.stop()


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_each_empty_page_says_what_fills_it_in_the_users_language(empty_site: Running, language: str) -> None:
    url = empty_site.gateway.console_url
    assert url
    client = logged_in(url, "super1", PASSWORD)
    client.post("/lang", data={"lang": language, "next": "/alarms", "csrf_token": client.csrf})
    for page, (start, command) in HINTS.items():
        html = client.get(f"/{page}").text
        assert command in html, f"/{page} says how to fill it"
        (hint,) = [m for m in i18n.catalogue_ids("en") if m.startswith(start)]
        assert str(escape(i18n.gettext(language, hint))) in html, f"/{page} in {language}"
        if language == "zh_CN":
            assert i18n.gettext("zh_CN", hint) != hint, f"/{page}: the hint is translated"
