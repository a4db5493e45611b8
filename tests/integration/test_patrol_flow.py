"""A patrol round on the whole gateway: the day's round planned by the rules service, the guard scanning the
route's tags at a checkpoint scanner, the round complete with each checkpoint's device and server time."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from gateway.config_file import validate_config
from gateway.records.models import PatrolRound, PatrolScan
from simulators.serial_reader import SerialReaderSimulator
from tests.integration.helpers import Running
from tests.support import wait_for


def test_a_round_walked_with_a_checkpoint_scanner_is_complete(tmp_path: Path) -> None:
    scanner = SerialReaderSimulator(tmp_path / "handheld")
    scanner.start()
    config = validate_config({
        "site": {"id": "school-1", "name": "Test School"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "handheld", "kind": "checkpoint", "driver": "serial_reader", "mode": "qr",
                     "port": str(tmp_path / "handheld")}],
        "duty": {"shifts": [{"id": "all-day", "name": "All day", "from": "00:00", "to": "00:00"}]},
        "patrol": {"checkpoints": [{"id": "cp-boiler", "name": "Boiler room", "tag": "CP-BOILER"},
                                   {"id": "cp-gate", "name": "Back gate", "tag": "CP-GATE"}],
                   "routes": [{"id": "night", "name": "Night round", "checkpoints": ["cp-boiler", "cp-gate"],
                               "expected_min": 30}],
                   "plan": [{"route": "night", "shift": "all-day", "rounds": 1}]},
    })
    running = Running(config)
    sessions = running.gateway.sessions
    try:
        with sessions() as session:
            planned = wait_for(lambda: session.scalars(select(PatrolRound)).all(), 10, "today's round planned")
            assert [(r.route, r.state) for r in planned] == [("night", "pending")]
        wait_for(lambda: scanner.plugged_in, 5, "the scanner")
        for tag in ("CP-BOILER", "CP-GATE"):
            scanner.scan(tag)
        with sessions() as session:
            done = wait_for(lambda: session.scalar(select(PatrolRound).where(PatrolRound.state == "complete")), 10,
                            "the round complete")
            assert done.result["missed"] == [] and done.started_at is not None
            scans = session.scalars(select(PatrolScan).order_by(PatrolScan.device_time)).all()
            assert [s.checkpoint for s in scans] == ["cp-boiler", "cp-gate"]
            assert all(s.server_time >= s.device_time for s in scans), "device and server time both kept"
    finally:
        running.stop()
        scanner.stop()
