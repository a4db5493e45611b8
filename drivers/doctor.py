"""What the doctors share (`campusgw doctor <target>`, one per driver folder that declares one): findings,
plain advice, and what C libraries write to stderr meanwhile."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One piece of advice. `problem`: the device is not usable as it is (exit 1); else it works, but could
    work better."""

    problem: bool
    text: str


def usable(findings: Sequence[Finding]) -> bool:
    return not any(f.problem for f in findings)


def format_findings(findings: Sequence[Finding]) -> list[str]:
    if not findings:
        return ["advice: none, all is as it should be"]
    lines = ["advice:"]
    for f in findings:
        lines.append(f"  - {'PROBLEM: ' if f.problem else ''}{f.text}")
    return lines


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """What C libraries (FFmpeg, libosdp) write to file descriptor 2 meanwhile: the lines, once the block ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def row(name: str, text: str) -> str:
    """One line of a report: a name in a column, then what was found."""
    return f"  {name:<16}{text}"
