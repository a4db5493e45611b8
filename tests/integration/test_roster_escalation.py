"""An alarm nobody acknowledges goes to the guards on duty now, then the leader on duty (the duty roster), and
to the site config's roster when nobody is on the roster now. Real simulators, real gateway."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gateway.records import db, roster
from gateway.records.models import utcnow
from simulators.bollard import BollardSimulator
from simulators.camera import CameraSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.integration.test_linkage import Watcher, bollard, camera, history, site  # noqa: F401
from tests.support import wait_for


def test_an_unacknowledged_alarm_goes_to_who_is_on_duty_now(tmp_path: Path, sim: ModbusDISimulator,
                                                            camera: CameraSimulator,  # noqa: F811
                                                            bollard: BollardSimulator) -> None:  # noqa: F811
    cfg = site(tmp_path, sim, bollard, camera, roster=[{"id": "office", "name": "Office"}],
               escalation={"after_s": {"panic": 1}, "repeat_s": 1}, linkage=[],
               duty={"shifts": [{"id": "all-day", "name": "All day", "from": "00:00", "to": "00:00"}]})
    engine = db.make_engine(cfg.database_url())
    db.upgrade(engine)
    with db.make_sessions(engine).begin() as session:  # a 24 h shift today (a run across midnight would miss it)
        today = datetime.now(cfg.site.tz).date()
        for role, name, phone in (("leader", "赵校长", "13900000001"), ("guard", "Li Qiang", None),
                                  ("guard", "Wang", None)):
            roster.assign(session, cfg.duty, cfg.site.tz, day=today, shift="all-day", role=role, name=name,
                          phone=phone, actor="test", now=utcnow())
    engine.dispose()
    running = Running(cfg)
    assert running.gateway.broker_port
    watcher = Watcher(running.gateway.broker_port)
    try:
        sim.press(1)
        first = wait_for(lambda: watcher.on("/rules/notify/li-qiang"), 5, "the first guard on duty")[0]
        second = wait_for(lambda: watcher.on("/rules/notify/wang"), 5, "then the second")[0]
        third = wait_for(lambda: [m for t, m in watcher.messages if "/rules/notify/duty-" in t], 5, "the leader")[0]
        assert (first["level"], second["level"], third["level"]) == (1, 2, 3)
        assert third == {**third, "person": "赵校长", "role": "leader", "phone": "13900000001"}
        assert first["role"] == "guard" and "phone" not in first
        assert not watcher.on("/rules/notify/office"), "the configured roster is only the fallback"
    finally:
        watcher.close()
        running.stop()
