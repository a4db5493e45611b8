"""Files the gateway keeps are its user's only (issue 15, finding 12: the database, its WAL, the outbox and
backups were 0644 in 0755 folders, holding pass tokens, card numbers, phone numbers and password hashes)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, wait_for


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
            if not p.is_symlink()}


def test_records_outbox_secrets_and_backups_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "old-records.db").write_text("from an earlier install")
    (data / "old-records.db").chmod(0o644)
    secret_elsewhere = tmp_path / "not-a-snapshot.txt"
    secret_elsewhere.write_text("shadow")
    (data / "snapshots" / "cam-1").mkdir(parents=True)
    (data / "snapshots" / "cam-1" / "planted.jpg").symlink_to(secret_elsewhere)
    config = tmp_path / "site.yaml"
    config.write_text("site: {id: s1, name: Test}\n"
                      f"gateway: {{id: gw1, data_dir: {data}}}\n"
                      "broker: {url: embedded, embedded_port: 0}\n"
                      f"console: {{port: 0}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    old_umask = os.umask(0o022)  # as a shell would leave it
    try:
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(config)], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (data / "outbox.db").exists() and (data / "campusgw.db").exists()
                     and (data / "secrets" / "command.key").exists(), 30, "the gateway's files")
            backup = subprocess.run([sys.executable, "-m", "gateway.cli", "backup", "-c", str(config), "--to",
                                     str(tmp_path / "backup")], cwd=ROOT, env=env, capture_output=True, text=True)
            assert backup.returncode == 0, backup.stderr
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
    finally:
        os.umask(old_umask)
    for root in (data, tmp_path / "backup"):
        found = modes(root)
        # The snapshot folders made above (as an installer's shell would) sit in a folder now closed to others.
        loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077
                 and not (root == data and name.startswith("snapshots"))}
        assert not loose, f"readable by others in {root}: {loose}"
    assert not (tmp_path / "backup" / "snapshots" / "cam-1" / "planted.jpg").exists(), "a symlink is not followed"
