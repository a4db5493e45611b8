"""Finding 6 and the PDF item of 13: what people typed (a roster name, an alarm's place, the site's name) comes out
of the reports as text. A spreadsheet cell that starts like a formula is neutralised with a leading apostrophe
(OWASP's rule); a plain negative number stays a number; the PDF prints markup literally instead of reading it
(a site name of <img src="/etc/passwd"/> opened that file)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from gateway.records import store
from gateway.records.models import utcnow
from gateway.reports.figures import Report, Table
from gateway.reports.render import to_csv, to_pdf, to_xlsx
from gateway.rules.alarms import RaiseAlarm
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, logged_in
from tests.security.conftest import PASSWORD, add_users, site_config, url

TZ = ZoneInfo("Asia/Shanghai")
HYPERLINK = '=HYPERLINK("http://x","y")'
CALC = "=cmd|' /C calc'!A0"
MARKUP = '<img src="/etc/passwd"/>'


def report() -> Report:
    start = datetime(2026, 12, 1, tzinfo=TZ)
    return Report("daily", MARKUP, start, start + timedelta(days=1), TZ, summary=[("Alarms", 2)], tables=[
        Table("duty", "On duty", ["Shift", "Role", "Name", "From", "To"],
              [["day", "guard", CALC, "08:00", "20:00"], ["day", "guard", "@SUM(A1)", "08:00", "20:00"]]),
        Table("alarm_list", "Alarms of the day", ["Raised", "Kind", "Place", "Acknowledged", "By"],
              [["08:01", "panic", HYPERLINK, "08:02", "+1 guard"], ["09:00", "fire", "\tTab", None, "-3"]]),
    ])


def csv_cells(data: bytes) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(data.decode("utf-8-sig"))) for cell in row]


def test_formulas_are_text_in_the_csv() -> None:
    cells = csv_cells(to_csv(report(), "en"))
    for typed in (CALC, HYPERLINK, "@SUM(A1)", "+1 guard", "\tTab"):
        assert "'" + typed in cells and typed not in cells, f"{typed!r} is neutralised"
    assert "-3" in cells and "-" in cells, "a negative number and the empty mark stay as they are"


def test_formulas_are_text_in_the_workbook() -> None:
    book = load_workbook(io.BytesIO(to_xlsx(report(), "en")))
    cells = {str(c.value): c for ws in book.worksheets for row in ws.iter_rows() for c in row if c.value is not None}
    for typed in (CALC, HYPERLINK, "@SUM(A1)"):
        cell = cells["'" + typed]
        assert cell.data_type == "s", f"{typed!r} is a string, not a formula"
    assert not [c for c in cells.values() if c.data_type == "f"], "no formula anywhere"
    assert cells["-3"].value == -3 and cells["-3"].data_type == "n", "a plain negative number stays a number"


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_markup_prints_literally_in_the_pdf() -> None:
    text = pdf_text(to_pdf(report(), "en"))
    assert MARKUP in text, "the site's name as typed, not an image read from /etc/passwd"


@pytest.fixture
def school(tmp_path: Path, sim: ModbusDISimulator) -> Iterator[Running]:
    running = Running(site_config(tmp_path, sim.port, name=MARKUP))
    add_users(running)
    with running.gateway.sessions.begin() as session:
        store.apply_effects(session, [RaiseAlarm("gate-box:x", "gate-box", "panic", 1, True, None, HYPERLINK, False,
                                                 "00000000-0000-7000-8000-000000000001", utcnow())])
    yield running
    running.stop()


def test_the_consoles_downloads_are_inert(school: Running) -> None:
    guard = logged_in(url(school), "guard1", PASSWORD)
    day = utcnow().astimezone(school.gateway.config.site.tz).date().isoformat()

    def download(fmt: str) -> bytes:
        response = guard.get("/reports/download", params={"kind": "daily", "day": day, "fmt": fmt})
        assert response.status_code == 200, f"{fmt}: {response.status_code} {response.text[:200]}"
        return response.content

    assert "'" + HYPERLINK in csv_cells(download("csv"))
    book = load_workbook(io.BytesIO(download("xlsx")))
    places = [c for ws in book.worksheets for row in ws.iter_rows() for c in row if c.value == "'" + HYPERLINK]
    assert places and all(c.data_type == "s" for c in places)
    assert MARKUP in pdf_text(download("pdf"))
