"""Backup while events flow, restore onto a new disk: the records come back whole."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from gateway.cli import main
from gateway.config_file import load_config, validate_config
from gateway.records import db
from gateway.records.models import IngestedEvent
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import wait_for


def site_yaml(path: Path, data_dir: Path, sim_port: int) -> Path:
    path.write_text(
        "site: {id: school-1, name: Test}\n"
        f"gateway: {{data_dir: {data_dir}}}\n"
        "broker: {url: embedded, embedded_port: 0}\n"
        "devices:\n"
        "  - {id: box, kind: alarm_input, driver: modbus_di, connection: {host: 127.0.0.1, port: " + str(sim_port)
        + "}, points: [{input: 1, name: p1, type: tamper}]}\n")
    return path


def count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(select(func.count()).select_from(IngestedEvent)).scalar_one())
    engine.dispose()
    return n


def test_backup_while_events_flow_and_restore(tmp_path: Path, sim: ModbusDISimulator) -> None:
    live = site_yaml(tmp_path / "live.yaml", tmp_path / "live", sim.port)
    config = load_config(live)
    running = Running(config)
    stop = threading.Event()

    def press_and_release() -> None:  # a steady stream of events while the backup is taken
        while not stop.is_set():
            sim.press(1)
            stop.wait(0.03)
            sim.release(1)
            stop.wait(0.03)

    flow = threading.Thread(target=press_and_release, daemon=True)
    flow.start()
    try:
        wait_for(lambda: count(config.database_url()) > 20, 10, "events flowing")
        clip = tmp_path / "live" / "snapshots" / "gate-cam" / "clips" / "gate-cam-20261129T080000-000-10001-clip"
        clip.mkdir(parents=True)  # as a camera keeps an alarm clip
        (clip / "0000.jpg").write_bytes(b"\xff\xd8 frame \xff\xd9")
        assert main(["backup", "-c", str(live), "--to", str(tmp_path / "backup")]) == 0
        assert main(["backup", "-c", str(live), "--to", str(tmp_path / "backup")]) == 1, "never over a backup"
        wait_for(lambda: count(config.database_url()) > 40, 10, "more events after the backup")
    finally:
        stop.set()
        flow.join(2)
        running.stop()
    backed_up = count(f"sqlite:///{tmp_path / 'backup' / 'records.sqlite'}")
    assert 20 < backed_up < count(config.database_url())

    fresh = site_yaml(tmp_path / "fresh.yaml", tmp_path / "new-disk", sim.port)
    assert main(["restore", "-c", str(fresh), "--from", str(tmp_path / "backup")]) == 0
    restored = validate_config({"site": {"id": "school-1", "name": "Test"},
                                "gateway": {"data_dir": str(tmp_path / "new-disk")}})
    assert count(restored.database_url()) == backed_up
    engine = db.make_engine(restored.database_url())
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
    assert (tmp_path / "new-disk" / "outbox.db").exists()
    assert (tmp_path / "new-disk" / "snapshots" / "gate-cam" / "clips" / "gate-cam-20261129T080000-000-10001-clip"
            / "0000.jpg").read_bytes() == b"\xff\xd8 frame \xff\xd9", "snapshots and clips come back too"

    other = tmp_path / "other.yaml"
    other.write_text(f"site: {{id: another-school, name: X}}\ngateway: {{data_dir: {tmp_path / 'x'}}}\n")
    assert main(["restore", "-c", str(other), "--from", str(tmp_path / "backup")]) == 1, "not onto another site"


def test_postgresql_backup_and_restore(tmp_path: Path, pg_url: str) -> None:
    import shutil

    from tests.support import drop_postgres_database, missing, new_postgres_database

    if not shutil.which("pg_dump") or not shutil.which("psql"):
        missing("the PostgreSQL client (pg_dump, psql) is not installed")
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    with db.make_sessions(engine).begin() as session:
        session.execute(text("INSERT INTO devices (id, kind, driver, test_mode) VALUES ('box', 'alarm_input', "
                             "'modbus_di', false)"))
    engine.dispose()
    site = tmp_path / "site.yaml"
    site.write_text(f"site: {{id: s1, name: T}}\ngateway: {{data_dir: {tmp_path}}}\ndatabase: {{url: '{pg_url}'}}\n")
    assert main(["backup", "-c", str(site), "--to", str(tmp_path / "backup")]) == 0
    target = new_postgres_database()
    try:
        site.write_text(f"site: {{id: s1, name: T}}\ngateway: {{data_dir: {tmp_path}}}\n"
                        f"database: {{url: '{target}'}}\n")
        assert main(["restore", "-c", str(site), "--from", str(tmp_path / "backup")]) == 0
        engine = db.make_engine(target)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM devices")).scalars().all() == ["box"]
        assert db.current_revision(engine) == db.head_revision()
        engine.dispose()
    finally:
        drop_postgres_database(target)
