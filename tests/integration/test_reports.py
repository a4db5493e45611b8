"""Reports: the figures equal what the records hold (a generated stretch of a school's records, on SQLite and
PostgreSQL), and the files open: the PDF with its charts and Chinese text, the CSV in Excel's encoding, the
workbook with a sheet per table and its charts; `campusgw report` writes them with a progress bar."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.records import db
from gateway.reports.figures import Report, collect
from gateway.reports.render import to_csv, to_pdf, to_xlsx
from simulators.school_year import Totals, write_year
from tests.support import broker_config

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
FIRST = date(2026, 9, 1)
DAYS = 21


@pytest.fixture
def school(db_url: str) -> Iterator[tuple[sessionmaker[Session], Totals]]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    totals = write_year(sessions, FIRST, DAYS, TZ, students=40, staff=5, visitors_per_day=3, seed=7)
    yield sessions, totals
    engine.dispose()


def term(sessions: sessionmaker[Session]) -> Report:
    start = datetime.combine(FIRST, datetime.min.time(), TZ)
    with sessions() as session:  # to well after the last day, so every hazard's sign-off falls inside
        return collect(session, "term", start, start + timedelta(days=DAYS + 30), TZ, "实验学校")


def table(report: Report, key: str) -> dict[str, list[object]]:
    found = next(t for t in report.tables if t.key == key)
    return {str(row[0]): row[1:] for row in found.rows}


def test_the_figures_are_what_the_records_hold(school: tuple[sessionmaker[Session], Totals]) -> None:
    sessions, totals = school
    report = term(sessions)
    summary = dict(report.summary)
    assert summary["Access decisions"] == totals.access
    assert summary["Access denied"] == sum(totals.denied.values())
    assert {k: v[0] for k, v in table(report, "access").items()} == dict(totals.denied)
    assert summary["Visitors registered"] == totals.visits
    assert {k: v[0] for k, v in table(report, "alarms").items()} == dict(totals.alarms)
    assert summary["Alarms"] == sum(totals.alarms.values())
    assert {k: v[0] for k, v in table(report, "patrols").items()} == dict(totals.rounds)
    assert summary["Checkpoints missed"] == totals.missed
    finished = sum(totals.rounds.values())
    assert summary["Patrol rounds complete (%)"] == round(100 * totals.rounds["complete"] / finished, 1)
    assert {k.removeprefix("category_"): v[0] for k, v in table(report, "incidents").items()} == dict(totals.incidents)
    hazards = table(report, "hazards")
    assert (hazards["found"][0], hazards["signed_off"][0], hazards["open"][0]) == (
        totals.hazards_found, totals.hazards_signed_off, totals.hazards_found - totals.hazards_signed_off)
    assert {k: v[1] for k, v in table(report, "five_nos").items()}["no_fire"] == 0  # no fire incident written


def test_a_day_before_the_records_is_empty_and_says_so(school: tuple[sessionmaker[Session], Totals]) -> None:
    sessions, _ = school
    start = datetime.combine(FIRST - timedelta(days=5), datetime.min.time(), TZ)
    with sessions() as session:
        report = collect(session, "daily", start, start + timedelta(days=1), TZ, "实验学校")
    assert dict(report.summary)["Access decisions"] == 0 and dict(report.summary)["Alarms"] == 0
    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(to_pdf(report, "en"))).pages)
    assert "Daily duty log" in text and "None in this period." in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_word_of_a_report_is_in_the_catalogue(school: tuple[sessionmaker[Session], Totals],
                                                    language: str) -> None:
    from gateway import i18n
    from gateway.reports.render import KIND_TITLES, SIGN_OFF, SUMMARY_COLUMNS, SUMMARY_TEXT

    sessions, _ = school
    start = datetime.combine(FIRST, datetime.min.time(), TZ)
    with sessions() as session:
        reports = [term(sessions), collect(session, "daily", start, start + timedelta(days=1), TZ, "s")]
    used = {"Summary", "None in this period.", *KIND_TITLES.values(), SUMMARY_TEXT, *SUMMARY_COLUMNS, *SIGN_OFF}
    for report in reports:
        used |= {key for key, _ in report.summary}
        for t in report.tables:
            used |= {t.title, *t.columns, *(str(row[0]) for row in t.rows if t.translate_first)}
            if t.key == "five_nos":
                used |= {str(row[1]) for row in t.rows}
    missing = used - i18n.catalogue_ids(language)
    assert not missing, f"add to the {language} catalogue: {sorted(missing)}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_pdf_opens_with_its_charts_and_the_workbook_and_csv_read_back(
        school: tuple[sessionmaker[Session], Totals]) -> None:
    from openpyxl import load_workbook
    from pypdf import PdfReader

    sessions, totals = school
    report = term(sessions)
    pdf = PdfReader(io.BytesIO(to_pdf(report, "en")))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "Term safety report" in text and "Asia/Shanghai" in text
    for chart in ("Alarms by kind (Alarms)", "Patrol rounds (Rounds)", "Access denials by reason (Denials)"):
        assert chart in text, f"the chart '{chart}' is drawn"
    assert len(PdfReader(io.BytesIO(to_pdf(report, "zh_CN"))).pages) >= 1

    book = load_workbook(io.BytesIO(to_xlsx(report, "en")))
    alarms = book["Alarms by kind"]
    assert sum(row[1] for row in alarms.iter_rows(min_row=2, values_only=True)) == sum(totals.alarms.values())
    assert alarms._charts, "the alarms sheet has its bar chart"

    rows = list(csv.reader(io.StringIO(to_csv(report, "zh_CN").decode("utf-8-sig"))))
    assert rows[0][0].endswith("学期安全报告") and any(r and r[0] == "报警" for r in rows)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_report_worth_signing_embeds_its_font_says_what_it_found_and_compares(
        school: tuple[sessionmaker[Session], Totals]) -> None:
    """Issue 19: the PDF carries its font (no box for "·", no "A larms"), a summary in words, the period before
    beside this one, whole-number ticks on count charts, and lines to sign (填报人 / 审核人)."""
    from pypdf import PdfReader

    sessions, totals = school
    report = term(sessions)
    data = to_pdf(report, "zh_CN")
    pdf = PdfReader(io.BytesIO(data))
    fonts = {}
    for page in pdf.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descriptor = (font.get("/DescendantFonts") or [font])[0].get_object().get("/FontDescriptor")
            fonts[str(font["/BaseFont"])] = descriptor is not None and any(
                key in descriptor.get_object() for key in ("/FontFile", "/FontFile2", "/FontFile3"))
    # The standard 14 (Helvetica, Times-Roman: reportlab names them on every page) are in every reader and hold
    # no Chinese; every other font must be in the file.
    standard = {"/Helvetica", "/Times-Roman"}
    assert any("WenQuanYi" in name for name in fonts), fonts
    assert all(embedded for name, embedded in fonts.items() if name not in standard), f"not embedded: {fonts}"
    assert not any("STSong" in name for name in fonts)
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "本期" in text and "上期" in text, "this period beside the one before"
    assert "填报人" in text and "审核人" in text, "lines to sign"
    assert f"{sum(totals.alarms.values())} 次报警" in text.replace("\n", ""), "the summary in words"
    assert " 0.5" not in text and "0.5 " not in text, "count charts tick in whole numbers"
    english = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(to_pdf(report, "en"))).pages)
    assert "Alarms by kind" in english and "A larms" not in english


def test_campusgw_report_writes_the_files_with_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              ) -> None:
    from gateway.cli import main

    database = tmp_path / "records.db"
    engine = db.make_engine(f"sqlite:///{database}")
    db.upgrade(engine)
    write_year(db.make_sessions(engine), FIRST, 7, TZ, students=10, staff=2, visitors_per_day=1)
    engine.dispose()
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: s1, name: 实验学校}}\ngateway: {{data_dir: {tmp_path}}}\n"
                    f"database: {{url: 'sqlite:///{database}'}}\n")
    assert main(["report", "monthly", "--date", "2026-09-15", "-c", str(site), "-o", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    files = sorted(Path(line).name for line in out.split())
    assert files == ["实验学校-月度安全报告-2026-09.csv", "实验学校-月度安全报告-2026-09.pdf",  # readable names
                     "实验学校-月度安全报告-2026-09.xlsx"]
    assert "[##############################] 11/11" in err
    assert main(["report", "term", "-c", str(site)]) == 2, "a term report needs its last day"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_guard_downloads_a_report_from_the_console_and_it_is_audited(
        school: tuple[sessionmaker[Session], Totals], amqtt_broker: object) -> None:
    from fastapi.testclient import TestClient
    from openpyxl import load_workbook
    from sqlalchemy import select

    from gateway.bus import Bus
    from gateway.console import auth
    from gateway.console.app import create_app
    from gateway.records.models import AuditEntry

    sessions, totals = school
    with sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", "a long enough password")
    bus = Bus(broker_config(amqtt_broker.port), "reports-test", name="console")  # type: ignore[attr-defined]
    bus.start()
    try:
        app = create_app("s1", "实验学校", TZ, sessions, bus, "en")
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            assert client.get("/reports/download?kind=daily&day=2026-09-01").status_code in (303, 401)
            client.post("/login", data={"username": "guard1", "password": "a long enough password"})
            assert "Term safety report" in client.get("/reports").text
            got = client.get(f"/reports/download?kind=term&day={FIRST}&to={FIRST + timedelta(days=DAYS)}&fmt=xlsx")
            assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
            sheet = load_workbook(io.BytesIO(got.content))["Alarms by kind"]
            assert sum(r[1] for r in sheet.iter_rows(min_row=2, values_only=True)) == sum(totals.alarms.values())
            assert client.get(f"/reports/download?kind=term&day={FIRST}").status_code == 422
            pdf = client.get(f"/reports/download?kind=daily&day={FIRST}")
            assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
        with sessions() as session:
            audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "report.download")).all()
            assert [(a.actor, a.detail["format"]) for a in audited] == [("guard1", "xlsx"), ("guard1", "pdf")]
    finally:
        bus.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_supervisor_submits_the_months_report_to_the_district_a_guard_may_not(
        school: tuple[sessionmaker[Session], Totals], amqtt_broker: object) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from gateway.bus import Bus
    from gateway.console import auth
    from gateway.console.app import create_app
    from gateway.records.models import AuditEntry, ReportSubmission

    sessions, totals = school
    with sessions.begin() as session:
        auth.add_user(session, "guard1", "guard", "a long enough password")
        auth.add_user(session, "super1", "supervisor", "a long enough password")
    bus = Bus(broker_config(amqtt_broker.port), "submit-test", name="console")  # type: ignore[attr-defined]
    bus.start()

    def logged_in(client: TestClient, name: str) -> str:
        client.post("/login", data={"username": name, "password": "a long enough password"})
        page = client.get("/reports").text
        return page.split('name="csrf_token" value="')[1].split('"')[0] if "csrf_token" in page else ""

    try:
        alone = create_app("s1", "实验学校", TZ, sessions, bus, "en")
        with TestClient(alone, base_url="http://testserver", follow_redirects=False) as client:
            logged_in(client, "super1")
            assert "This school is not connected to a district" in client.get("/reports").text
        bridged = create_app("s1", "实验学校", TZ, sessions, bus, "en", district=True)
        with TestClient(bridged, base_url="http://testserver", follow_redirects=False) as client:
            csrf = logged_in(client, "guard1")
            assert 'id="submit-form"' not in client.get("/reports").text, "a guard is not offered it"
            refused = client.post("/reports/submit", data={"kind": "monthly", "day": FIRST.isoformat(),
                                                           "csrf_token": csrf})
            assert refused.status_code == 403
        with TestClient(bridged, base_url="http://testserver", follow_redirects=False) as client:
            csrf = logged_in(client, "super1")
            assert client.post("/reports/submit", data={"kind": "daily", "day": FIRST.isoformat(),
                                                        "csrf_token": csrf}).status_code == 422
            done = client.post("/reports/submit", data={"kind": "monthly", "day": FIRST.isoformat(),
                                                        "csrf_token": csrf})
            assert done.status_code == 303
            assert "2026-09" in client.get("/reports").text
        with sessions() as session:
            row = session.scalars(select(ReportSubmission)).one()
            audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "report.submit")).one()
        assert (row.kind, row.period, row.submitted_by, audited.actor) == ("monthly", "2026-09", "super1", "super1")
        assert row.figures["summary"]["Alarms"] == sum(totals.alarms.values())
    finally:
        bus.stop()
