"""Reports: the daily duty log, the monthly and the term report, as PDF, CSV and XLSX (gateway.reports.render)
from the figures the records hold (gateway.reports.figures)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.reports.figures import Kind, Report, collect
from gateway.reports.render import RENDERERS, file_name

STEPS = ("alarms", "patrols", "visitors", "access", "incidents", "hazards", "devices", "five_nos", "duty")


def generate(sessions: sessionmaker[Session], kind: Kind, start: datetime, end: datetime, site: str,
             formats: list[str], language: str, out_dir: Path,
             progress: Callable[[str], None] = lambda step: None) -> list[Path]:
    """Collect once, write each format; returns the files written (named by site, report and period, in the
    report's language: gateway.reports.render.file_name)."""
    with sessions() as session:
        report: Report = collect(session, kind, start, end, start.tzinfo or end.tzinfo, site,  # type: ignore[arg-type]
                                 progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        progress(fmt)
        path = out_dir / file_name(report, language, fmt)
        path.write_bytes(RENDERERS[fmt](report, language))
        written.append(path)
    return written
