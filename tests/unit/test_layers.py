"""Each module on its floor: imports only run downwards (or sideways within a floor), and no module imports
itself round a circle, late imports inside functions included. Read from the source (the AST), so a violation
is found before anything runs.

The floors, lowest first (DESIGN in the README's "How it fits together"):
  0 leaves      catalogue, topics, i18n, events, schemas, small utilities
  1 config      the config schemas (gateway.config) and what builds on them alone (time windows)
  2 drivers     the driver contract, the drivers and their registry; the bus and the outbox
  3 rules       pure rules over data (no database, no MQTT, no threads); the config file's loader
  4 records     the database: models, migrations, stores
  5 services    the rules service (the shell around the rules), the police link, the supervisor, the district,
                Home Assistant, metrics, reports
  6 console     the web console
  7 entry       the app that wires everything, the CLI, doctor
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "drivers", "simulators")

FLOORS: dict[str, int] = {
    "gateway.catalogue": 0, "gateway.i18n": 0, "gateway.events": 0,
    "gateway.schemas": 0, "gateway.validation": 0, "gateway.command_auth": 0, "gateway.clock": 0,
    "gateway.guard": 0, "gateway.logs": 0, "gateway.systemd": 0, "gateway.topics": 0, "gateway": 0,
    "gateway.config": 1, "gateway.personal": 1, "gateway.windows": 1,
    "drivers": 2, "gateway.bus": 2, "gateway.outbox": 2, "gateway.broker": 2, "gateway.mqtt_acl": 2,
    "gateway.commands": 2,
    "gateway.rules": 3, "gateway.config_file": 3,
    "gateway.records": 4, "gateway.backup": 4,
    "gateway.rules_service": 5, "gateway.police": 5, "gateway.notify": 5, "gateway.supervisor": 5,
    "gateway.homeassistant": 5, "gateway.district": 5,
    "gateway.metrics": 5, "gateway.reports": 5, "gateway.health": 5,
    "gateway.console": 6, "gateway.district.console": 6,
    "gateway.app": 7, "gateway.cli": 7, "gateway.district.cli": 7, "gateway.entry": 7, "gateway.doctor": 7,
    "gateway.demo": 7, "simulators": 7,
}

# What is still upside down, to be put right (issue #17); nothing may be added here.
KNOWN: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports (anywhere in it, late imports too)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = module_name(path)
            targets: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets.add(node.module)
                    targets.update(f"{node.module}.{a.name}" for a in node.names)
            found[name] = {t for t in targets if t.split(".")[0] in PACKAGES}
    return {name: {_known(t, found) for t in targets} - {name} for name, targets in found.items()}


def _known(target: str, modules: dict[str, set[str]]) -> str:
    """`from x import y`: y is a module when x.y is one, else a name in x."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def floor(module: str) -> int:
    # A package's floor covers its modules, but for `gateway` itself: each of its modules names its own.
    best = max((p for p in FLOORS if module == p or (module.startswith(p + ".") and p != "gateway")), key=len,
               default=None)
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return FLOORS[best]


def test_every_module_is_on_a_floor() -> None:
    for module in imports():
        floor(module)


def test_imports_only_run_downwards() -> None:
    upward = {(a, b) for a, targets in imports().items() for b in targets if floor(b) > floor(a)}
    new = sorted(upward - KNOWN)
    assert not new, "imports running upwards:\n" + "\n".join(f"  {a} ({floor(a)}) -> {b} ({floor(b)})"
                                                          for a, b in new)
    assert not (KNOWN - upward), f"put right, so take them off KNOWN: {sorted(KNOWN - upward)}"


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = imports()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "circles:\n" + "\n".join("  " + " -> ".join(c) for c in circles)
