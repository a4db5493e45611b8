"""Structured logging, one logger per component (campusgw.bus.drivers, campusgw.driver.<name>, ...)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from zoneinfo import ZoneInfo


class _TextFormatter(logging.Formatter):
    def __init__(self, tz: ZoneInfo) -> None:
        super().__init__()
        self.tz = tz

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, self.tz).isoformat(timespec="milliseconds")
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(_TextFormatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": datetime.fromtimestamp(record.created, self.tz).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "component": record.name, "msg": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text", tz: str = "Asia/Shanghai") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(ZoneInfo(tz)) if fmt == "json" else _TextFormatter(ZoneInfo(tz)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("campusgw").setLevel(level.upper())
