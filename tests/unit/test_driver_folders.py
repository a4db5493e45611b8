"""Each driver is a folder that declares its extension points (drivers.manifest), and its quality.yaml claims
only what exists: the evidence files and tests are there, the fuzz tests use hypothesis, the benchmarks are in
bench/. check-config loads no protocol library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from drivers.manifest import Manifest
from drivers.registry import driver_class, driver_config_model, manifests
from gateway import catalogue
from gateway.config import DeviceConfig

ROOT = Path(__file__).resolve().parents[2]
RULES = ("light_schema", "simulator", "sans_io_fuzzed", "offline_and_back", "commands", "faults_counted",
         "independent_peer", "home_assistant", "doctor", "benchmark")
HEAVY = ("cv2", "numpy", "osdp", "pymodbus", "serial")  # protocol and image libraries


def folder(manifest: Manifest) -> Path:
    return ROOT / Path(*manifest.driver.partition(":")[0].split(".")[:2])


def module_file(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def quality(manifest: Manifest) -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load((folder(manifest) / "quality.yaml").read_text())
    return loaded


def functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


MANIFESTS = sorted(manifests().values(), key=lambda m: m.name)


def test_every_driver_folder_is_found() -> None:
    assert [m.name for m in MANIFESTS] == ["modbus_bollard", "modbus_di", "modbus_do", "opencv", "osdp",
                                           "serial_reader"]
    with_init = {p.parent.name for p in (ROOT / "drivers").glob("*/__init__.py")}
    assert {folder(m).name for m in MANIFESTS} == with_init, "a driver folder without a MANIFEST"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.name)
def test_the_manifest_agrees_with_the_driver_and_its_schema(manifest: Manifest) -> None:
    cls = driver_class(manifest.name)
    assert cls is not None and cls.name == manifest.name and cls.config_model is manifest.schema
    assert driver_config_model(manifest.name) is manifest.schema
    assert get_args(manifest.schema.model_fields["driver"].annotation) == (manifest.name,)
    assert get_args(manifest.schema.model_fields["kind"].annotation) == manifest.kinds
    assert set(manifest.kinds) <= set(get_args(DeviceConfig.model_fields["kind"].annotation))
    assert manifest.simulator is None or module_file(manifest.simulator).is_file()
    assert manifest.doctor is None or module_file(manifest.doctor).is_file()


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.name)
def test_a_driver_emits_only_the_event_types_it_declares(manifest: Manifest) -> None:
    assert set(manifest.events) <= set(catalogue.EVENTS)
    emitted: set[str] = set()
    prefixes: set[str] = set()
    for path in folder(manifest).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "emit":
                event_type = node.args[1]
                if isinstance(event_type, ast.Constant):
                    emitted.add(event_type.value)
                elif isinstance(event_type, ast.JoinedStr) and isinstance(event_type.values[0], ast.Constant):
                    prefixes.add(str(event_type.values[0].value))
    assert emitted <= set(manifest.events)
    assert all(any(e.startswith(p) for e in manifest.events) for p in prefixes)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.name)
def test_quality_claims_are_backed_by_what_exists(manifest: Manifest) -> None:
    rules = quality(manifest)
    assert tuple(rules) == RULES, "every rule decided, in the usual order"
    for rule, claim in rules.items():
        ((status, detail),) = claim.items()
        assert status in ("done", "exempt", "todo"), rule
        if status != "done":
            assert isinstance(detail, str) and len(detail) > 20, f"{rule}: say why"
            continue
        assert detail, f"{rule}: done needs evidence"
        for evidence in detail:
            path, _, test = evidence.partition("::")
            assert (ROOT / path).is_file(), f"{rule}: {path} does not exist"
            assert not test or test in functions(ROOT / path), f"{rule}: no {test} in {path}"
        paths = [ROOT / e.partition("::")[0] for e in detail]
        if rule == "sans_io_fuzzed":
            assert any("from hypothesis import" in p.read_text() for p in paths if p.name.startswith("test_"))
        if rule == "benchmark":
            assert all(p.parent == ROOT / "bench" for p in paths)
        if rule == "simulator":
            assert manifest.simulator and module_file(manifest.simulator) in paths
        if rule == "light_schema":
            assert module_file(manifest.schema.__module__) in paths
    assert ("done" in rules["doctor"]) == (manifest.doctor is not None)
    assert ("done" in rules["home_assistant"]) == (manifest.entities is not None)


def test_check_config_loads_no_protocol_or_image_library() -> None:
    probe = ("import sys\nfrom pathlib import Path\nfrom gateway.config_file import load_config\n"
             "load_config(Path('config/example-school-large.yaml'))\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_readme_table_names_each_driver_and_its_quality_file() -> None:
    readme = (ROOT / "README.md").read_text()
    for manifest in MANIFESTS:
        quality_file = (folder(manifest) / "quality.yaml").relative_to(ROOT)
        assert re.search(rf"^\| `{manifest.name}` \|.*{re.escape(str(quality_file))}", readme, re.MULTILINE), \
            manifest.name
