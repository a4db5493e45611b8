"""A site file cannot take the gateway down (issue 15, finding 13): a billion laughs, deep nesting and a
non-UTF-8 file are refused with the file, line and what to do; unsafe choices are named."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.config_file import load_config, validate_config, warnings_of
from tests.support import ROOT

LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] +
                   [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)] +
                   ["site: {id: s1, name: *i}"])


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """check-config in a process of its own, with 512 MB of memory at most: a bomb must not get that far."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024 * 1024, 512 * 1024 * 1024))

    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, preexec_fn=limit)


@pytest.mark.parametrize(("content", "says"), [
    (LAUGHS.encode(), "line 1: anchors and aliases (& and *) are not allowed"),
    (("site: " + "[" * 5000 + "]" * 5000).encode(), "nested more than 32 deep"),
    ("site: {id: s1, name: 北京一中}\n".encode("gbk"), "line 1: not UTF-8 (byte 0xb1): save the file as UTF-8"),
])
def test_hostile_site_files_get_a_clear_error_not_a_traceback(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    done = check_config(path)
    assert done.returncode == 1
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    with pytest.raises(ConfigError):
        load_config(path)


def test_unsafe_choices_are_named() -> None:
    plain = validate_config({"site": {"id": "s1", "name": "S"}, "console": {"host": "0.0.0.0"},
                             "broker": {"url": "mqtt://10.0.0.5"}})
    said = " ".join(warnings_of(plain))
    assert "plain HTTP" in said and "TLS reverse proxy" in said and "use mqtts://" in said
    safe = validate_config({"site": {"id": "s1", "name": "S"}})
    assert warnings_of(safe) == []


def test_a_roster_id_with_a_trailing_newline_is_not_an_id() -> None:
    from gateway.rules.roster import person_id

    assert person_id("wang\n", "王") != "wang\n"
