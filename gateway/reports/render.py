"""A report's figures as a printable PDF (with charts), a CSV file and an Excel workbook, in Simplified Chinese or
English. Dates and times are the site's, with the time zone named on every page."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from gateway.i18n import gettext
from gateway.reports.figures import Report, Table

# The font embedded in the PDF (its used glyphs only): a TrueType font with Chinese and Latin from Debian
# (fonts-wqy-microhei; CAMPUSGW_REPORT_FONT names another .ttf/.ttc). Without one, Adobe's CID font STSong-Light
# is named instead: every reader has it, but it is not in the file, draws "·" as a box and spaces Latin
# letters apart ("A larms").
FONT_FILES = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
              "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")
EMBEDDED_FONT = "CampusReport"
CID_FONT = "STSong-Light"
KIND_TITLES = {"daily": "Daily duty log", "monthly": "Monthly safety report", "term": "Term safety report",
               "district_monthly": "Monthly safety summary of the schools",  # the district's (gateway.district)
               "incident": "Incident written report",  # one incident's (gateway.reports.closing)
               "survey": "Physical and technical protection survey"}  # the district's form (gateway.reports.survey)
SCHOOL_KINDS = ("daily", "monthly", "term")  # a school's own reports: the summary sentence and the school's seal
MONTHLY_KINDS = ("monthly", "district_monthly")  # named by their month in file names
# The summary in words, from the summary's figures (each {name} a figure; "-" where there is none).
SUMMARY_TEXT = ("In this period: {alarms} alarms ({alarms_before} in the period before), acknowledged in {ack} s "
                "at the median; {incidents} incidents; patrol rounds complete: {patrols} %, {missed} checkpoints "
                "missed; {visitors} visitors registered; {hazards} hazards still open at the end.")
SUMMARY_KEYS = {"alarms": "Alarms", "ack": "Median time to acknowledge (s)", "incidents": "Incidents",
                "patrols": "Patrol rounds complete (%)", "missed": "Checkpoints missed",
                "visitors": "Visitors registered", "hazards": "Hazards open at the end"}
SIGN_OFF = ("Prepared by", "Reviewed by", "Date", "School seal")
DISTRICT_SEAL = "Seal"  # the district's reports: the bureau's seal, not a school's
# Columns that hold message ids besides a table's first (translate_first), by table key
TRANSLATED_COLUMNS = {"five_nos": (1,), "district_schools": (5,), "hazards_overdue": (2,), "incident_facts": (1,),
                      "incident_timeline": (2,), "survey_alarm_points": (2,), "survey_devices": (1,)}
# Tables of long text (an incident's written report): their columns' widths in the PDF (mm), the cells wrapped.
PDF_WIDTHS = {"incident_facts": (45, 135), "incident_written": (45, 135), "incident_timeline": (32, 25, 60, 63),
              "incident_chain": (60, 35, 35, 50)}
# A cell a spreadsheet would read as a formula (OWASP CSV injection): a name or place typed as
# =HYPERLINK(...) or =cmd|' /C calc'!A0 must stay text. A plain number (-3, 12.5, -1e+06) stays a number,
# and "-" (nothing) stays as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HARMLESS = re.compile(r"(-?\d+(\.\d+)?(e[+-]?\d+)?|-)\Z")


log = logging.getLogger("campusgw.reports")


def _tr(language: str) -> Callable[[str], str]:
    return lambda message: gettext(language, message)


def summary_text(report: Report, language: str) -> str:
    """The summary as a sentence a head teacher reads before the tables; none for the district's reports (its
    summary table says it)."""
    if report.kind not in SCHOOL_KINDS:
        return ""
    values = {name: _cell(report.value(key)) for name, key in SUMMARY_KEYS.items()}
    values["alarms_before"] = _cell(report.previous.get("Alarms"))
    return gettext(language, SUMMARY_TEXT).format(**values)


def sign_off(report: Report) -> tuple[str, ...]:
    """Prepared by, reviewed by, date and seal: a school's seal on its reports, the district's on its own."""
    return (*SIGN_OFF[:3], DISTRICT_SEAL) if report.kind.startswith("district_") else SIGN_OFF


def change(now: Any, before: Any) -> str:
    """How a figure moved since the period before: +3, -2, 0, or "-" where either is missing."""
    if not isinstance(now, int | float) or not isinstance(before, int | float):
        return "-"
    delta = now - before
    return f"{delta:+g}" if delta else "0"


def summary_rows(report: Report, tr: Callable[[str], str]) -> list[list[str]]:
    """The summary with the period before beside it, and the change."""
    return [[tr(key), _cell(value), _cell(report.previous.get(key)), change(value, report.previous.get(key))]
            for key, value in report.summary]


SUMMARY_COLUMNS = ("Figure", "This period", "Period before", "Change")


def file_name(report: Report, language: str, fmt: str) -> str:
    """Site, report and period, readable: 示范中学-月度安全报告-2026-12.pdf, Demo-Daily-duty-log-2026-12-07.csv."""
    first = report.start.astimezone(report.tz).date()
    last = (report.end.astimezone(report.tz) - timedelta(days=1)).date()
    span = first.isoformat() if report.kind in ("daily", "survey", "incident") else first.strftime("%Y-%m") \
        if report.kind in MONTHLY_KINDS else f"{first.isoformat()}_{last.isoformat()}"
    title = gettext(language, KIND_TITLES[report.kind])
    name = "-".join(re.sub(r"[\\/:*?\"<>|\s]+", "-", part).strip("-") for part in (report.site, title, span))
    return f"{name}.{fmt}"


def report_font() -> tuple[str, bool]:
    """The PDF font's registered name, and whether it is embedded."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.ttfonts import TTFont

    registered = pdfmetrics.getRegisteredFontNames()
    if EMBEDDED_FONT in registered:
        return EMBEDDED_FONT, True
    chosen = os.environ.get("CAMPUSGW_REPORT_FONT")
    for path in ([chosen] if chosen else []) + list(FONT_FILES):
        if Path(path).is_file():
            try:
                pdfmetrics.registerFont(TTFont(EMBEDDED_FONT, path, subfontIndex=0))
                return EMBEDDED_FONT, True
            except Exception as exc:  # a font reportlab cannot read (CFF outlines): try the next
                log.warning("cannot use %s for reports: %s", path, exc)
    if CID_FONT not in registered:
        log.warning("no TrueType font with Chinese found (apt-get install fonts-wqy-microhei): reports name "
                    "%s instead of embedding a font", CID_FONT)
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    return CID_FONT, False


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def inert(value: Any) -> Any:
    """A spreadsheet cell that cannot run: text that starts like a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not HARMLESS.match(value):
        return "'" + value
    return value


def table_rows(table: Table, tr: Callable[[str], str]) -> list[list[str]]:
    """A table's cells as text, the message ids among them (translate_first, TRANSLATED_COLUMNS) translated."""
    def cell(i: int, value: Any) -> str:
        if (table.translate_first and i == 0) or i in TRANSLATED_COLUMNS.get(table.key, ()):
            return tr(str(value))
        return _cell(value)

    return [[cell(i, value) for i, value in enumerate(row)] for row in table.rows]


def heading(report: Report, language: str) -> tuple[str, str]:
    tr = _tr(language)
    last = report.end.astimezone(report.tz).date().toordinal() - 1
    first = report.start.astimezone(report.tz).date()
    span = first.isoformat() if first.toordinal() >= last or report.kind in ("incident", "survey") else \
        f"{first.isoformat()} – {type(first).fromordinal(last).isoformat()}"
    return f"{report.site} · {tr(KIND_TITLES[report.kind])}", f"{span} ({report.tz})"


def to_csv(report: Report, language: str) -> bytes:
    """One file: the summary, then each table under its title (UTF-8 with a BOM, so Excel reads the Chinese)."""
    tr = _tr(language)
    out = io.StringIO()
    writer = csv.writer(out)

    def row(cells: list[Any]) -> None:
        writer.writerow([inert(c) for c in cells])

    title, span = heading(report, language)
    row([title, span])
    row([])
    if report.summary:  # the incident's and the survey's tables say it all
        row([tr("Summary")])
        if sentence := summary_text(report, language):
            row([sentence])
        row([tr(c) for c in SUMMARY_COLUMNS])
        for cells in summary_rows(report, tr):
            row(cells)
    for table in report.tables:
        row([])
        row([tr(table.title)])
        row([tr(c) for c in table.columns])
        for cells in table_rows(table, tr):
            row(cells)
    row([])
    for label in sign_off(report):
        row([tr(label), ""])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: Report, language: str) -> bytes:
    """A sheet for the summary and one per table, with a native bar chart where the table has one."""
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference

    tr = _tr(language)
    book = Workbook()
    sheet = book.active
    sheet.title = tr("Summary")[:31]
    title, span = heading(report, language)
    sheet.append([inert(title)])
    sheet.append([inert(span)])
    if sentence := summary_text(report, language):
        sheet.append([inert(sentence)])
    if report.summary:
        sheet.append([inert(tr(c)) for c in SUMMARY_COLUMNS])
        for cells in summary_rows(report, tr):
            sheet.append([inert(_number(c)) for c in cells])
    sheet.append([])
    for label in sign_off(report):
        sheet.append([inert(tr(label)), ""])
    sheet.column_dimensions["A"].width = 36
    for table in report.tables:
        ws = book.create_sheet(tr(table.title)[:31])
        ws.append([inert(tr(c)) for c in table.columns])
        for row in table_rows(table, tr):
            ws.append([inert(_number(v)) for v in row])
        ws.column_dimensions["A"].width = 28
        if table.chart and table.rows:
            chart = BarChart()
            chart.title = tr(table.title)
            chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=len(table.rows) + 1), titles_from_data=True)
            chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=len(table.rows) + 1))
            ws.add_chart(chart, f"{chr(ord('A') + len(table.columns) + 1)}2")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _number(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


def to_pdf(report: Report, language: str) -> bytes:
    """A4, the summary first, then each table, with a bar chart above the tables that have one."""
    from reportlab.graphics.charts.barcharts import HorizontalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer
    from reportlab.platypus import Table as PdfTable

    font, _ = report_font()
    tr = _tr(language)

    def para(text: str, style: ParagraphStyle) -> Paragraph:  # a Paragraph reads markup: <img src=...> opens a file
        return Paragraph(escape(text), style)

    title, span = heading(report, language)
    h1 = ParagraphStyle("h1", fontName=font, fontSize=16, leading=20, spaceAfter=4)
    h2 = ParagraphStyle("h2", fontName=font, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4)
    body = ParagraphStyle("body", fontName=font, fontSize=9, leading=12)
    grid = [("FONT", (0, 0), (-1, -1), font, 8), ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")), ("VALIGN", (0, 0), (-1, -1), "TOP")]
    story: list[Any] = [para(title, h1), para(span, body), Spacer(1, 4 * mm)]
    if report.summary:  # an incident's written report has none: its tables say it
        story.append(para(tr("Summary"), h2))
        if sentence := summary_text(report, language):
            story.append(para(sentence, body))
        story.append(Spacer(1, 2 * mm))
        story.append(PdfTable([[tr(c) for c in SUMMARY_COLUMNS], *summary_rows(report, tr)],
                              colWidths=[80 * mm, 30 * mm, 30 * mm, 20 * mm], style=grid, hAlign="LEFT"))
    small = ParagraphStyle("cell", fontName=font, fontSize=8, leading=10)
    for table in report.tables:
        story.append(para(tr(table.title), h2))
        rows = table_rows(table, tr)
        if table.chart and rows:
            values = [float(r[1]) if r[1] not in ("-", "") else 0.0 for r in rows]
            height = 12 * len(rows) + 30
            drawing = Drawing(170 * mm, height)
            chart = HorizontalBarChart()
            chart.x, chart.y, chart.width, chart.height = 45 * mm, 15, 110 * mm, height - 25
            chart.data = [values]
            chart.categoryAxis.categoryNames = [r[0][:24] for r in rows]
            chart.categoryAxis.labels.fontName = font
            chart.valueAxis.labels.fontName = font
            chart.valueAxis.valueMin = 0
            if all(v == int(v) for v in values):  # counts: whole-number ticks, never 0.5
                step = max(1, math.ceil(max(values, default=1) / 5))
                chart.valueAxis.valueStep = step
                chart.valueAxis.valueMax = step * max(1, math.ceil(max(values, default=1) / step))
                chart.valueAxis.labelTextFormat = "%d"
            chart.bars[0].fillColor = colors.HexColor("#3b6ea5")
            drawing.add(chart)
            drawing.add(String(0, height - 8, f"{tr(table.title)} ({tr(table.columns[1])})", fontName=font,
                               fontSize=8))
            story.append(drawing)
        widths = PDF_WIDTHS.get(table.key)
        if rows and widths:  # long text: each cell a paragraph, wrapped within its column
            story.append(PdfTable([[tr(c) for c in table.columns], *[[para(c, small) for c in r] for r in rows]],
                                  colWidths=[w * mm for w in widths], repeatRows=1, style=grid, hAlign="LEFT"))
        elif rows:
            story.append(PdfTable([[tr(c) for c in table.columns], *rows], repeatRows=1, style=grid, hAlign="LEFT"))
        else:
            story.append(para(tr("None in this period."), body))
    # Signed on paper: who prepared it, who reviewed it, when, and the school's seal (填报人 / 审核人 / 盖章).
    labels = sign_off(report)
    sign = [[tr(labels[0]) + ":", "", tr(labels[2]) + ":", ""],
            [tr(labels[1]) + ":", "", tr(labels[2]) + ":", ""], [tr(labels[3]) + ":", "", "", ""]]
    lines = [("FONT", (0, 0), (-1, -1), font, 10), ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
             ("LINEBELOW", (1, 0), (1, -1), 0.5, colors.black), ("LINEBELOW", (3, 0), (3, 1), 0.5, colors.black)]
    story += [Spacer(1, 10 * mm), PdfTable(sign, colWidths=[30 * mm, 55 * mm, 20 * mm, 45 * mm], rowHeights=12 * mm,
                                           style=lines, hAlign="LEFT")]
    out = io.BytesIO()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.setFont(font, 7)
        canvas.drawString(15 * mm, 10 * mm, f"{title} · {span} · {doc.page}")

    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                      bottomMargin=18 * mm, title=title, author="campusgw").build(
        story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


RENDERERS: dict[str, Callable[[Report, str], bytes]] = {"pdf": to_pdf, "csv": to_csv, "xlsx": to_xlsx}
MEDIA_TYPES = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
