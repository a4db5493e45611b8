"""Backups a school's IT person can take while the gateway runs, and put back after a disk dies.

SQLite files are copied with SQLite's online backup API (a consistent copy while writers go on);
PostgreSQL is dumped with pg_dump. A backup is a folder: records, outbox, and a manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from gateway.config import Config
from gateway.records.db import normalise_url


class BackupError(Exception):
    pass


def _sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite:///") else None


def _copy_sqlite(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)  # page by page, consistent even while the gateway writes


def _hidden_and_links(folder: str, names: list[str]) -> set[str]:
    """Skipped by copies: dot files, and symlinks (one planted among the snapshots would copy the file it
    points at, /etc/shadow say, into the backup). Files are copied without their modes: the umask decides."""
    return {n for n in names if n.startswith(".") or os.path.islink(os.path.join(folder, n))}


def backup(config: Config, folder: Path) -> dict[str, object]:
    folder.mkdir(parents=True, exist_ok=False)
    url = config.database_url()
    manifest: dict[str, object] = {"site": config.site.id, "taken_at": time.time(), "files": []}
    files: list[str] = []
    database = _sqlite_path(url)
    if database is not None:
        if not database.exists():
            raise BackupError(f"the database {database} does not exist")
        _copy_sqlite(database, folder / "records.sqlite")
        files.append("records.sqlite")
    elif url.startswith(("postgresql", "postgres")):
        if not shutil.which("pg_dump"):
            raise BackupError("pg_dump is not installed (apt-get install postgresql-client)")
        plain = normalise_url(url).replace("postgresql+psycopg://", "postgresql://")
        with (folder / "records.sql").open("wb") as out:
            done = subprocess.run(["pg_dump", "--no-owner", "--clean", "--if-exists", plain], stdout=out,
                                  stderr=subprocess.PIPE, timeout=3600)
        if done.returncode:
            raise BackupError(f"pg_dump failed: {done.stderr.decode(errors='replace').strip()}")
        files.append("records.sql")
    outbox = config.gateway.data_dir / "outbox.db"
    if outbox.exists():
        _copy_sqlite(outbox, folder / "outbox.db")
        files.append("outbox.db")
    snapshots = config.gateway.data_dir / "snapshots"
    if snapshots.is_dir():  # camera snapshots and alarm clips: files written once, so a plain copy is consistent
        shutil.copytree(snapshots, folder / "snapshots", ignore=_hidden_and_links, copy_function=shutil.copyfile)
        for sub in (folder / "snapshots").rglob("*"):
            if sub.is_dir():
                sub.chmod(0o700)  # copytree gives folders their source's mode
        (folder / "snapshots").chmod(0o700)
        files.append("snapshots")
    manifest["files"] = files
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(config: Config, folder: Path) -> list[str]:
    """Put a backup back; the gateway must be stopped (the caller checks nothing is running on the files)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("site") != config.site.id:
        raise BackupError(f"this backup is of site '{manifest.get('site')}', not '{config.site.id}'")
    restored = []
    url = config.database_url()
    database = _sqlite_path(url)
    if "records.sqlite" in manifest["files"]:
        if database is None:
            raise BackupError("the backup holds a SQLite database but the site uses PostgreSQL")
        database.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        _copy_sqlite(folder / "records.sqlite", database)
        restored.append(str(database))
    if "records.sql" in manifest["files"]:
        if not shutil.which("psql"):
            raise BackupError("psql is not installed (apt-get install postgresql-client)")
        plain = normalise_url(url).replace("postgresql+psycopg://", "postgresql://")
        done = subprocess.run(["psql", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-f",
                               str(folder / "records.sql"), plain], capture_output=True, timeout=3600)
        if done.returncode:
            raise BackupError(f"psql failed: {done.stderr.decode(errors='replace').strip()}")
        restored.append("PostgreSQL database")
    if "outbox.db" in manifest["files"]:
        config.gateway.data_dir.mkdir(parents=True, exist_ok=True)
        _copy_sqlite(folder / "outbox.db", config.gateway.data_dir / "outbox.db")
        restored.append(str(config.gateway.data_dir / "outbox.db"))
    if "snapshots" in manifest["files"]:
        shutil.copytree(folder / "snapshots", config.gateway.data_dir / "snapshots", dirs_exist_ok=True,
                        ignore=_hidden_and_links, copy_function=shutil.copyfile)
        restored.append(str(config.gateway.data_dir / "snapshots"))
    return restored
