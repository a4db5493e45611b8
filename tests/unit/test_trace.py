"""seeds/TRACE.md names the tests that prove each requirement: every one it names must exist, so the trace an
inspector ticks cannot point at a test that was renamed or removed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "seeds" / "TRACE.md"


def named_tests() -> list[str]:
    return sorted(set(re.findall(r"`(tests/[^`]+)`", TRACE.read_text(encoding="utf-8"))))


def test_the_trace_names_tests() -> None:
    assert len(named_tests()) >= 40


def test_every_test_the_trace_names_exists() -> None:
    missing = []
    for name in named_tests():
        path, _, function = name.partition("::")
        file = ROOT / path
        if not file.is_file():
            missing.append(f"{name}: no file")
            continue
        if function:
            defined = {node.name for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                       if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
            if function.split("[", 1)[0] not in defined:
                missing.append(f"{name}: no such test")
    assert not missing, "\n".join(missing)


def test_no_requirement_reads_not_yet() -> None:
    """Every requirement row names what covers it and the tests that prove it (issue 22)."""
    rows = [line for line in TRACE.read_text(encoding="utf-8").splitlines() if re.match(r"\| R\d+ \|", line)]
    assert len(rows) >= 44
    waiting = [row.split(" | ", 1)[0] for row in rows if row.rstrip(" |").endswith("not yet")]
    assert not waiting, f"rows still reading 'not yet': {waiting}"
