"""The browser every console test drives: Debian's Chromium through Playwright (never a downloaded one)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import missing

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    pw = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        missing("Debian's chromium is not installed (scripts/test installs it when run as root)")
    with pw.sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def kiosk_browser(playwright: Any) -> Iterator[Any]:
    """Chromium as an alarm workstation is started: sound allowed without a click, and not muted."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        *ARGS, "--autoplay-policy=no-user-gesture-required"], ignore_default_args=["--mute-audio"])
    yield browser
    browser.close()
