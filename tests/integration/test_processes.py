"""Whole processes: the demo as a newcomer runs it, and the rules service killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from sqlalchemy import create_engine, func, select, text

from gateway.clock import SITE_CLOCK_ENV, SiteClock
from gateway.records.models import Alarm, IngestedEvent
from tests.integration.helpers import SseReader, alarm_event, logged_in
from tests.support import ROOT, MosquittoBroker, wait_for


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive: not gone and not a zombie (an orphan here may wait for a PID 1 that does not reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_demo_shows_an_alarm_within_10s_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--school", "small", "--data-dir", str(tmp_path / "demo"),
         "--console-port", "0",
         "--press-every", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        url = password = None
        while password is None and time.monotonic() - started < 30:
            line = proc.stdout.readline()
            if "Console:" in line:
                url = line.split("Console:")[1].split()[0]
            if "Login:" in line and " guard " in line:
                password = line.split("/")[-1].strip()
        assert url and password, "the demo prints the console URL and a login"
        client = logged_in(url, "guard", password)
        stream = SseReader(url + "api/alarms/stream", client.cookies)
        wait_for(lambda: any(a["alarm_type"] == "panic" for a in stream.alarms()), 10,
                 "the demo's alarm on the console's live stream")
        stream.close()
        assert children_of(proc.pid) == [], "the demo runs in one process"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "campusgw demo stopped." in out
    assert not Path(f"/proc/{proc.pid}").exists()


def test_rules_service_killed_mid_stream_loses_nothing_and_doubles_nothing(tmp_path: Path,
                                                                           mosquitto: MosquittoBroker) -> None:
    """SIGKILL the rules service while events stream in, publish a burst (> Mosquitto's default queue of 1000)
    while it is dead, start it again: every event recorded exactly once."""
    database = tmp_path / "records.db"
    config = tmp_path / "site.yaml"
    config.write_text(
        "site: {id: s1, name: Test}\n"
        f"gateway: {{id: gw1, data_dir: {tmp_path / 'data'}}}\n"
        f"broker: {{url: 'mqtt://127.0.0.1:{mosquitto.port}'}}\n"
        f"database: {{url: 'sqlite:///{database}'}}\n")

    def start_rules() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(config), "--only", "rules"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    engine = create_engine(f"sqlite:///{database}")

    def recorded() -> int:
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(IngestedEvent)).scalar_one())
        except Exception:
            return 0

    def recorded_ids() -> set[str]:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(select(IngestedEvent.id))}

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher")
    publisher.max_inflight_messages_set(100)
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    sent: list[str] = []

    def publish(start: int, count: int) -> None:
        infos: list[Any] = []
        for i in range(start, start + count):
            topic, payload, event_id = alarm_event("s1", "box-1", f"p{i}", i + 1, at=1.8e9 + i)
            infos.append(publisher.publish(topic, payload, qos=1))
            sent.append(event_id)
        for info in infos:
            info.wait_for_publish(30)

    rules = start_rules()
    try:
        # Probes until one is recorded: from then on the rules service's session exists on the broker.
        # (Probes published before it first subscribed went nowhere; they are not counted.)
        def probe() -> int:
            publish(10_000 + len(sent), 1)
            return recorded()

        wait_for(probe, 30, "the rules service to start and record a probe")
        probes = list(sent)
        publish(1, 600)
        wait_for(lambda: recorded() >= 100, 30, "the stream to be flowing")
        rules.send_signal(signal.SIGKILL)
        rules.wait(10)
        at_kill = recorded()
        assert at_kill < 600 + len(probes), "killed mid-stream"
        publish(601, 1500)  # while it is dead: Mosquitto queues these for its persistent session
        rules = start_rules()
        main = set(sent) - set(probes)
        wait_for(lambda: main <= recorded_ids(), 90, "every event recorded after the restart")
    finally:
        rules.send_signal(signal.SIGTERM)
        rules.wait(30)
        publisher.loop_stop()

    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(select(IngestedEvent.id))]
        alarms = conn.execute(select(Alarm.key, Alarm.occurrences)).all()
        sqlite_ok = conn.execute(text("PRAGMA integrity_check")).scalar_one()
    engine.dispose()
    assert sqlite_ok == "ok"
    assert len(main) == 2100 and main <= set(ids), "no event lost"
    assert set(ids) <= set(sent), "nothing recorded that was not sent"
    assert len(alarms) == len(ids) and all(n == 1 for _, n in alarms), "no event recorded twice"
    assert rules.returncode == 0 or rules.returncode == -signal.SIGTERM, os.strerror(abs(rules.returncode or 0))


def test_on_a_site_clock_at_60x_records_carry_the_sites_time_and_the_clock_guard_stays_quiet(tmp_path: Path) -> None:
    """A demo or a test runs the site's clock from a chosen moment, faster than real time: the alarm is
    stamped with the site's time (not the machine's), and the clock guard, held against a monotonic clock at
    the same pace, sees no jump."""
    site_start = datetime(2026, 9, 1, 7, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    clock = SiteClock(site_start, time.monotonic(), 60.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--school", "small", "--data-dir", str(tmp_path / "demo"),
         "--console-port", "0",
         "--press-every", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, SITE_CLOCK_ENV: clock.encode()})
    try:
        assert proc.stdout is not None
        url = password = None
        started = time.monotonic()
        while password is None and time.monotonic() - started < 30:
            line = proc.stdout.readline()
            url = line.split("Console:")[1].split()[0] if "Console:" in line else url
            password = line.split("/")[-1].strip() if "Login:" in line and " guard " in line else password
        assert url and password
        client = logged_in(url, "guard", password)
        panic = wait_for(lambda: next((a for a in client.get(url + "api/alarms").json()
                                       if a["alarm_type"] == "panic"), None), 15, "the panic alarm")
        raised = datetime.fromisoformat(panic["raised_at"]).timestamp()
        assert clock.at(started - 1) <= raised <= clock.now() + 1, "the site's time, 60 s a second"
        assert datetime.fromtimestamp(raised, ZoneInfo("Asia/Shanghai")).date().isoformat() == "2026-09-01"
        wait_for(lambda: clock.now() > raised + 10 * 60, 20, "ten site minutes: ten ticks of the guard")
        assert not any(a["alarm_type"] == "gateway_health" for a in client.get(url + "api/alarms").json()), \
            "no clock_jumped alarm at 60x"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_the_whole_school_demo_tells_the_day_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    """`campusgw demo` with no flags but a fast clock: the banner, the day told line by line from its first
    patrol round, and after Ctrl-C no process, no pty link and no simulator port left."""
    before = set(Path("/tmp").glob("campusgw-demo-*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--speed", "600", "--data-dir", str(tmp_path / "demo"),
         "--console-port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        while not any(line.startswith("07:25 ") for line in said) and time.monotonic() - started < 60:
            said.append(proc.stdout.readline().rstrip("\n"))
        assert any("Console: http://" in line for line in said) and any("Login:   guard" in line for line in said)
        assert any(line.startswith("  The day: ") and "600x" in line for line in said)
        assert any(line.startswith("07:05 ") and "patrol" in line for line in said), said
        children = children_of(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # promptly: not at the end of the day
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "campusgw demo stopped." in out
    wait_for(lambda: not [pid for pid in children if running(pid)], 10, "the demo's child processes to end")
    assert set(Path("/tmp").glob("campusgw-demo-*")) == before, "the simulators' pty links are removed"
    assert (tmp_path / "demo" / ".campusgw-demo").exists()


def test_a_camera_worker_of_campusgw_run_does_not_carry_the_whole_gateway(tmp_path: Path) -> None:
    """multiprocessing re-imports the parent's __main__ in each worker; for `python -m gateway.cli` that was the
    whole gateway (SQLAlchemy, FastAPI, the drivers), 35-45 MB more per camera on the gatehouse PC."""
    import psutil
    import yaml

    from simulators.camera import CameraSimulator

    camera = CameraSimulator(fps=5)
    camera.start()
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "site": {"id": "s1", "name": "S"}, "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0}, "console": {"port": 0},
        "devices": [{"id": "cam", "kind": "camera", "driver": "opencv", "url": camera.url}]}))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(site)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        latest = tmp_path / "data" / "snapshots" / "cam" / "latest.jpg"
        wait_for(latest.exists, 30, "the camera worker's first frame")
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)  # the fork server has one thread
                   if p.num_threads() >= 2 and "forkserver" in " ".join(p.cmdline())]
        assert workers, "a camera worker under the fork server"
        for worker in workers:
            maps = Path(f"/proc/{worker.pid}/maps").read_text()
            assert "sqlalchemy" not in maps and "uvicorn" not in maps, "the gateway's modules in a camera worker"
            assert worker.memory_full_info().pss < 40 * 2**20, f"{worker.memory_full_info().pss / 2**20:.0f} MiB"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        camera.stop()
    assert proc.returncode in (0, -signal.SIGTERM), err
