"""A wall clock that is wrong: retention and deadlines wait, and a clock_jumped gateway-health alarm says why.

Found in the field: a clock 200 days fast at start made the first retention run delete every raw event
(which are also the memory that drops duplicate events by id).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config_file import validate_config
from gateway.records import db, store
from gateway.records.models import Alarm, IngestedEvent, utcnow
from gateway.rules.alarms import OPEN_STATES
from gateway.rules_service import jobs
from gateway.rules_service.service import RulesService
from tests.integration.helpers import TZ
from tests.support import ROOT, MosquittoBroker, wait_for

SITE = "s1"
KEY = "rules:clock_jumped"  # the alarm of condition clock_jumped raised by the rules service itself
RAW_EVENTS = 48  # one an hour, the last two days


def prefill(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    rows = [{"id": f"00000000-0000-7000-8000-{i:012d}", "device_id": "box-1", "type": "campus.device.telemetry",
             "device_time": now - timedelta(hours=i), "received_at": now - timedelta(hours=i), "seq": i + 1,
             "historical": False, "test": False, "data": {"metrics": {"rssi": -60}}} for i in range(RAW_EVENTS)]
    with sessions.begin() as session:
        store.record_event_seen(session, rows, {})


def raw_events(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(IngestedEvent)) or 0)


def clock_alarm(sessions: sessionmaker[Session]) -> Alarm | None:
    with sessions() as session:
        return session.scalar(select(Alarm).where(Alarm.key == KEY, Alarm.state.in_(OPEN_STATES)))


@pytest.fixture
def records(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'records.db'}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    prefill(sessions)
    yield sessions
    engine.dispose()


def libfaketime() -> Path:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")) + sorted(
        Path("/usr/lib/faketime").glob("libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    return found[0]


def test_a_clock_200_days_fast_at_start_keeps_the_raw_log_and_raises_the_clock_alarm(
        tmp_path: Path, mosquitto: MosquittoBroker, records: sessionmaker[Session]) -> None:
    preload = libfaketime()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"site: {{id: {SITE}, name: Test}}\n"
        f"gateway: {{id: gw1, data_dir: {tmp_path / 'data'}}}\n"
        f"broker: {{url: 'mqtt://127.0.0.1:{mosquitto.port}'}}\n"
        f"database: {{url: 'sqlite:///{tmp_path / 'records.db'}'}}\n")
    # NTP must not vouch for the faked clock, whatever the host's timedatectl says.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "timedatectl").write_text("#!/bin/sh\necho no\n")
    (fake_bin / "timedatectl").chmod(0o755)
    env = {**os.environ, "LD_PRELOAD": str(preload), "FAKETIME": "+200d", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    log = (tmp_path / "rules.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(config), "--only", "rules"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        alarm = wait_for(lambda: clock_alarm(records), 30, "the clock_jumped alarm from the rules service")
    finally:
        proc.send_signal(signal.SIGTERM)  # and wait: a retention run under way would finish first
        proc.wait(30)
        log.close()
    output = (tmp_path / "rules.log").read_text()
    assert proc.returncode == 0, output
    assert alarm.raised_at > utcnow() + timedelta(days=199), "raised under the faked clock"
    assert alarm.alarm_type == "gateway_health" and alarm.condition_active
    assert alarm.place is not None and "200 days after the newest record" in alarm.place, alarm.place
    assert raw_events(records) == RAW_EVENTS, "retention waited for the clock"
    assert "the clock reads 200 days after the newest record" in output, output


class RecordingBus:
    """What the rules service publishes, kept (the alarms it tells the console about)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish_json(self, topic: str, body: Any) -> None:
        self.published.append((topic, body))


def test_a_step_of_an_hour_either_way_raises_the_alarm_until_it_is_back_or_ntp_confirms(
        tmp_path: Path, records: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    ntp_says: list[bool | None] = [False]
    monkeypatch.setattr(jobs, "clock_synchronised", lambda: ntp_says[0])
    monkeypatch.setattr(jobs, "NTP_CHECK_EVERY_S", 0.0)
    config = validate_config({"site": {"id": SITE, "name": "T"}, "gateway": {"data_dir": str(tmp_path)}})
    bus = RecordingBus()
    rules = RulesService(SITE, bus, records, config)  # type: ignore[arg-type]  # publish_json is all it uses here
    shift = [timedelta(0)]
    rules.wall_clock = lambda: datetime.now(TZ) + shift[0]

    def tick_at(step: timedelta) -> Alarm | None:
        shift[0] = step
        rules._tick()
        return clock_alarm(records)

    assert tick_at(timedelta(0)) is None, "the first reading is the baseline"
    assert raw_events(records) == RAW_EVENTS, "the first tick ran retention: nothing was old enough"

    ahead = tick_at(timedelta(hours=1))
    assert ahead is not None and ahead.condition_active and ahead.state == "active_unack"
    assert ahead.place is not None and ahead.place.startswith("the clock jumped 3600 s ahead at "), ahead.place
    assert tick_at(timedelta(hours=1, seconds=5)).occurrences == 1, "once per episode"  # type: ignore[union-attr]
    assert any(topic.endswith(f"/alarms/{ahead.id}") for topic, _ in bus.published), "the console is told"

    back = tick_at(timedelta(seconds=10))
    assert back is not None and not back.condition_active, "back within the bound: the alarm clears"

    behind = tick_at(-timedelta(hours=1))
    assert behind is not None and behind.condition_active
    assert behind.occurrences == 2, "the same alarm, raised again"

    ntp_says[0] = True  # synchronised: the stepped clock is the right one now
    confirmed = tick_at(-timedelta(hours=1))
    assert confirmed is not None and not confirmed.condition_active
    assert tick_at(-timedelta(hours=1)).condition_active is False  # type: ignore[union-attr]


def test_retention_counts_back_from_the_newest_event_whatever_the_clock_says(
        tmp_path: Path, records: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a clock the guard trusted cannot empty the raw log: the newest events' retention days stay."""
    old = utcnow() - timedelta(days=200)
    with records.begin() as session:
        store.record_event_seen(session, [{"id": "00000000-0000-7000-8000-999999999999", "device_id": "box-1",
                                           "type": "campus.device.telemetry", "device_time": old, "received_at": old,
                                           "seq": 999, "historical": False, "test": False, "data": {}}], {})
    ahead = utcnow() + timedelta(days=200)
    monkeypatch.setattr(jobs, "utcnow", lambda: ahead)
    config = validate_config({"site": {"id": SITE, "name": "T"}, "gateway": {"data_dir": str(tmp_path)},
                              "retention": {"events_days": 180}})
    RulesService(SITE, RecordingBus(), records, config)._purge()  # type: ignore[arg-type]
    assert raw_events(records) == RAW_EVENTS, "only the event 180 days older than the newest one went"
