"""A report's figures as a printable PDF (with charts), a CSV file and an Excel workbook, in Simplified Chinese or
English. Dates and times are the site's, with the time zone named on every page."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from gateway.i18n import gettext
from gateway.reports.figures import Report, Table

CJK_FONT = "STSong-Light"  # one of the Adobe CID fonts every PDF reader has: no font file to ship or embed
KIND_TITLES = {"daily": "Daily duty log", "monthly": "Monthly safety report", "term": "Term safety report"}
# A cell a spreadsheet would read as a formula (OWASP CSV injection): a name or place typed as
# =HYPERLINK(...) or =cmd|' /C calc'!A0 must stay text. A plain number (-3, 12.5, -1e+06) stays a number,
# and "-" (nothing) stays as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
HARMLESS = re.compile(r"(-?\d+(\.\d+)?(e[+-]?\d+)?|-)\Z")


def _tr(language: str) -> Callable[[str], str]:
    return lambda message: gettext(language, message)


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


def _rows(table: Table, tr: Callable[[str], str]) -> list[list[str]]:
    def cell(i: int, value: Any) -> str:
        if (table.translate_first and i == 0) or (table.key == "five_nos" and i == 1):
            return tr(str(value))
        return _cell(value)

    return [[cell(i, value) for i, value in enumerate(row)] for row in table.rows]


def heading(report: Report, language: str) -> tuple[str, str]:
    tr = _tr(language)
    last = report.end.astimezone(report.tz).date().toordinal() - 1
    first = report.start.astimezone(report.tz).date()
    span = first.isoformat() if first.toordinal() == last else \
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
    row([tr("Summary")])
    for key, value in report.summary:
        row([tr(key), _cell(value)])
    for table in report.tables:
        row([])
        row([tr(table.title)])
        row([tr(c) for c in table.columns])
        for cells in _rows(table, tr):
            row(cells)
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
    for key, value in report.summary:
        sheet.append([inert(tr(key)), inert(value)])
    sheet.column_dimensions["A"].width = 36
    for table in report.tables:
        ws = book.create_sheet(tr(table.title)[:31])
        ws.append([inert(tr(c)) for c in table.columns])
        for row in _rows(table, tr):
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
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer
    from reportlab.platypus import Table as PdfTable

    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
    tr = _tr(language)

    def para(text: str, style: ParagraphStyle) -> Paragraph:  # a Paragraph reads markup: <img src=...> opens a file
        return Paragraph(escape(text), style)

    title, span = heading(report, language)
    h1 = ParagraphStyle("h1", fontName=CJK_FONT, fontSize=16, leading=20, spaceAfter=4)
    h2 = ParagraphStyle("h2", fontName=CJK_FONT, fontSize=12, leading=16, spaceBefore=10, spaceAfter=4)
    body = ParagraphStyle("body", fontName=CJK_FONT, fontSize=9, leading=12)
    grid = [("FONT", (0, 0), (-1, -1), CJK_FONT, 8), ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")), ("VALIGN", (0, 0), (-1, -1), "TOP")]
    story: list[Any] = [para(title, h1), para(span, body), Spacer(1, 4 * mm), para(tr("Summary"), h2)]
    story.append(PdfTable([[tr(k), _cell(v)] for k, v in report.summary], colWidths=[90 * mm, 40 * mm],
                          style=grid[:2] + grid[3:], hAlign="LEFT"))
    for table in report.tables:
        story.append(para(tr(table.title), h2))
        rows = _rows(table, tr)
        if table.chart and rows:
            values = [float(r[1]) if r[1] not in ("-", "") else 0.0 for r in rows]
            height = 12 * len(rows) + 30
            drawing = Drawing(170 * mm, height)
            chart = HorizontalBarChart()
            chart.x, chart.y, chart.width, chart.height = 45 * mm, 15, 110 * mm, height - 25
            chart.data = [values]
            chart.categoryAxis.categoryNames = [r[0][:24] for r in rows]
            chart.categoryAxis.labels.fontName = CJK_FONT
            chart.valueAxis.labels.fontName = CJK_FONT
            chart.valueAxis.valueMin = 0
            chart.bars[0].fillColor = colors.HexColor("#3b6ea5")
            drawing.add(chart)
            drawing.add(String(0, height - 8, f"{tr(table.title)} ({tr(table.columns[1])})", fontName=CJK_FONT,
                               fontSize=8))
            story.append(drawing)
        if rows:
            story.append(PdfTable([[tr(c) for c in table.columns], *rows], repeatRows=1, style=grid, hAlign="LEFT"))
        else:
            story.append(para(tr("None in this period."), body))
    out = io.BytesIO()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.setFont(CJK_FONT, 7)
        canvas.drawString(15 * mm, 10 * mm, f"{title} · {span} · {doc.page}")

    SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                      bottomMargin=18 * mm, title=title, author="campusgw").build(
        story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


RENDERERS: dict[str, Callable[[Report, str], bytes]] = {"pdf": to_pdf, "csv": to_csv, "xlsx": to_xlsx}
