"""The district's protection survey form (《辖区中小学校和幼儿园物防、技防基本情况排摸表》, R44): the school's
guard force, equipment, physical protection and every technical device of its site config, from the command line
and the console's Reports page, in both languages, every word in the catalogue."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from gateway import i18n
from gateway.config_file import load_config
from gateway.reports.render import KIND_TITLES, TRANSLATED_COLUMNS
from gateway.reports.survey import survey

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-site.yaml"


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_word_of_the_survey_is_in_the_catalogue(language: str) -> None:
    report = survey(load_config(EXAMPLE), datetime.now(UTC))
    used = {KIND_TITLES["survey"]}
    for t in report.tables:
        used |= {t.title, *t.columns, *(str(row[0]) for row in t.rows if t.translate_first)}
        used |= {str(row[i]) for row in t.rows for i in TRANSLATED_COLUMNS.get(t.key, ())}
    missing = used - i18n.catalogue_ids(language)
    assert not missing, f"add to the {language} catalogue: {sorted(missing)}"


def test_the_survey_counts_what_the_site_config_has(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    made = subprocess.run([sys.executable, "-m", "gateway.cli", "report", "survey", "-c", str(EXAMPLE), "--format",
                           "pdf,csv", "--language", "zh_CN", "-o", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    files = {Path(p).suffix: Path(p) for p in made.stdout.split()}
    pdf, csv_file = files[".pdf"], files[".csv"]
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages).replace("\n", "")
    for word in ("物防技防基本情况排摸表", "专职保安", "防刺手套", "防暴钢叉", "橡胶警棍", "辣椒水",
                 "无摄像机覆盖的区域"):
        assert word in text, word
    rows = {line.split(",", 1)[0]: line.split(",", 1)[1] for line in csv_file.read_text("utf-8-sig").splitlines()
            if "," in line}
    points = sum(len(getattr(d, "points", None) or []) for d in config.devices if d.kind == "alarm_input")
    assert rows["专职保安"] == str(config.inventory.guards) and rows["报警点位"] == str(points)
    cameras = [d for d in config.devices if d.kind == "camera"]
    assert rows["摄像机"] == str(len(cameras))
    covered = {d.zone for d in cameras}
    assert rows["无摄像机覆盖的区域"] == ", ".join(z.name for z in config.zones if z.id not in covered)


def test_the_survey_from_the_console_is_audited(tmp_path: Path, amqtt_broker: Any) -> None:
    from openpyxl import load_workbook
    from sqlalchemy import select

    from gateway.records.models import AuditEntry
    from tests.integration.helpers import CONSOLE_PASSWORD, console_client

    config = load_config(EXAMPLE)
    with console_client(tmp_path, amqtt_broker.port, {"guard1": "guard"}, "en",
                        survey=lambda: survey(config, datetime.now(UTC))) as (client, sessions):
        client.post("/login", data={"username": "guard1", "password": CONSOLE_PASSWORD})
        assert 'id="survey-pdf"' in client.get("/reports").text
        got = client.get("/reports/survey.xlsx")
        assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
        book = load_workbook(io.BytesIO(got.content))
        assert [r[0] for r in book["Alarm points"].iter_rows(min_row=2, values_only=True)][:1] == ["gate-alarm-box"]
        assert client.get("/reports/survey.doc").status_code == 404
        with sessions() as session:
            audited = session.scalars(select(AuditEntry).where(AuditEntry.action == "report.download")).all()
            assert [(a.actor, a.target, a.detail["format"]) for a in audited] == [("guard1", "report:survey", "xlsx")]
