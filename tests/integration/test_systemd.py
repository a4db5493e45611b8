"""Running under systemd: the shipped unit verifies, and the watchdog is pinged only while the gateway is healthy
(a fake notify socket stands in for systemd)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.config_file import validate_config
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import ROOT, missing, wait_for


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        missing("systemd-analyze is not installed")
    unit = (ROOT / "config" / "campusgw.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "NoNewPrivileges=yes" in unit
    # verify wants ExecStart's program to exist: point it at this checkout's
    local = tmp_path / "campusgw.service"
    local.write_text(unit.replace("/opt/campusgw/venv/bin/campusgw", str(Path(sys.prefix) / "bin" / "campusgw")))
    out = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "campusgw.service" not in out.stderr, out.stderr


class FakeSystemd:
    """A notify socket that records what the service says, and when."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if m == "WATCHDOG=1" and t >= since]

    def said(self, text: str) -> bool:
        return any(text in m for _, m in list(self.messages))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_the_watchdog_is_pinged_only_while_every_part_is_healthy(tmp_path: Path, sim: ModbusDISimulator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2: a ping every 0.1 s
    config = validate_config({
        "site": {"id": "s1", "name": "Test"}, "gateway": {"data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "box", "kind": "alarm_input", "driver": "modbus_di",
                     "connection": {"host": "127.0.0.1", "port": sim.port},
                     "points": [{"input": 1, "name": "panic-1", "type": "panic"}]}]})
    running = Running(config)
    try:
        wait_for(lambda: systemd.said("READY=1"), 10, "READY=1")
        wait_for(lambda: len(systemd.pings()) >= 3, 5, "watchdog pings")

        # A driver blocking the event loop (a hung part): no ping while it hangs.
        hang_started = time.monotonic()
        running.loop.call_soon_threadsafe(time.sleep, 1.0)
        wait_for(lambda: systemd.pings(since=hang_started + 1.0), 5, "pings again after the hang")
        pings = [hang_started, *systemd.pings(since=hang_started)]
        assert max(b - a for a, b in itertools.pairwise(pings)) >= 0.9, "no ping during the hang"

        # A part that has stopped: the pings stop for good.
        assert running.gateway.rules is not None
        running.gateway.rules.stop()
        assert running.gateway.problems() == ["the rules service has stopped or keeps failing"]
        stopped = time.monotonic()
        wait_for(lambda: time.monotonic() - stopped > 0.6, 2, "time to pass")  # several ping periods
        assert not systemd.pings(since=stopped + 0.2), "no ping once a part has stopped"
    finally:
        running.stop()
        wait_for(lambda: systemd.said("STOPPING=1"), 5, "STOPPING=1")
        systemd.close()


def test_an_unsynchronised_clock_raises_a_health_alarm_until_it_is_synchronised(tmp_path: Path,
                                                                                 sim: ModbusDISimulator) -> None:
    """timedatectl cannot run here (no systemd), so the clock's answers are given to the check directly."""
    import asyncio

    from sqlalchemy import select

    from gateway.records import db
    from gateway.records.models import Alarm

    config = validate_config({
        "site": {"id": "s1", "name": "Test"}, "gateway": {"data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0}})
    running = Running(config)
    answers = iter([True, False, False, True])
    engine = db.make_engine(config.database_url())
    sessions = db.make_sessions(engine)

    def alarm_state() -> str | None:
        with sessions() as session:
            alarm = session.scalars(select(Alarm).where(Alarm.alarm_type == "gateway_health")).first()
            return alarm.state if alarm else None

    try:
        watch = asyncio.run_coroutine_threadsafe(
            running.gateway.watch_clock(lambda: next(answers, True), every_s=0.2), running.loop)
        wait_for(lambda: alarm_state() == "active_unack", 10, "the clock alarm")
        wait_for(lambda: alarm_state() == "cleared_unack", 10, "the alarm cleared once synchronised")
        watch.cancel()
    finally:
        running.stop()
        engine.dispose()


def test_a_clock_off_by_more_than_5_s_from_the_time_server_raises_a_health_alarm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import select

    from gateway.cli import status
    from gateway.records import db
    from gateway.records.models import Alarm
    from tests.integration.ntp_server import NtpServer

    ntp = NtpServer(skew_s=12.0)  # the time server is 12 s ahead of us: our clock is behind
    site = {"site": {"id": "s1", "name": "Test"}, "gateway": {"data_dir": str(tmp_path / "data")},
            "broker": {"url": "embedded", "embedded_port": 0},
            "clock": {"ntp_server": "127.0.0.1", "ntp_port": ntp.port, "check_every_s": 1}}
    config = validate_config(site)
    running = Running(config)
    engine = db.make_engine(config.database_url())
    sessions = db.make_sessions(engine)

    def alarm() -> Alarm | None:
        with sessions() as session:
            return session.scalars(select(Alarm).where(Alarm.key.like("%clock_offset"))).first()

    try:
        raised = wait_for(lambda: (a := alarm()) and a.state == "active_unack" and a, 10, "the clock alarm")
        assert "12.0 s behind the time server" in (raised.place or "")
        assert running.gateway.clock_offset_s == pytest.approx(12.0, abs=0.1)
        (tmp_path / "site.yaml").write_text(json.dumps(site))
        assert status(tmp_path / "site.yaml") == 1
        shown = re.search(r"clock offset\s+PROBLEM\s+\+(\d+\.\d{3}) s against 127\.0\.0\.1 \(allowed 5 s\)",
                          capsys.readouterr().out)
        assert shown and float(shown[1]) == pytest.approx(12.0, abs=0.1)  # measured: 11.997 is as right as 12.003
        ntp.skew_s = 0.5
        wait_for(lambda: (a := alarm()) and a.state == "cleared_unack", 10, "cleared once within 5 s")
    finally:
        running.stop()
        engine.dispose()
        ntp.close()
