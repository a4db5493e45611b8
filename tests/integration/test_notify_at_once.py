"""notify.alarm_types go out at the raise: the rules service wakes the sender once the alarm is recorded, rather
than leaving the SMS to the sender's next look for due rows (found by bench/outputs: press -> SMS was the 1 s
look, 0.97 s at p50)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config_file import validate_config
from gateway.notify import sender
from simulators.gsm_modem import GsmModemSimulator
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running
from tests.support import wait_for

PHONE = "+8613800138000"


def test_a_panic_of_the_alarm_types_reaches_the_modem_without_waiting_for_the_senders_next_look(
        tmp_path: Path, sim: ModbusDISimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "POLL_S", 60.0)  # only a wake sends it within the test's time
    modem = GsmModemSimulator(tmp_path / "usb-gsm-modem")
    modem.start()
    running = Running(validate_config({
        "site": {"id": "school-1", "name": "实验中学"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": "embedded", "embedded_port": 0},
        "devices": [{"id": "gate-box", "kind": "alarm_input", "driver": "modbus_di",
                     "connection": {"host": "127.0.0.1", "port": sim.port}, "poll_ms": 50,
                     "points": [{"input": 1, "name": "gatehouse-panic", "type": "panic", "place": "门卫室"}]}],
        "roster": [{"id": "li-qiang", "name": "李强"}],
        "notify": {"sms": {"port": str(modem.link), "timeout_s": 5}, "alarm_types": ["panic"],
                   "people": [{"id": "li-qiang", "phone": PHONE, "channels": ["sms"]}]},
    }))
    try:
        wait_for(lambda: sim.reads >= 2, 10, "the alarm box polled")
        time.sleep(1.5)  # the sender is asleep for its (long) look now
        sim.press(1)
        sms = modem.wait_for_message(lambda m: m.number == PHONE, 5)
        assert sms is not None, "the SMS waited for the sender's next look"
        assert sms.text.startswith("【实验中学】门卫室一键报警")
    finally:
        running.stop()
        modem.stop()
