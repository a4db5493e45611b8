"""send_sms through the GSM modem simulator on a pty: what arrives, and what a refusal says.

The simulator decodes each PDU with its own decoder and checks its length against AT+CMGS=<n>, as a modem does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from gateway.notify.sms import send_sms
from gateway.notify.sms_pdu import encode_submit
from simulators.gsm_modem import GsmModemSimulator

NUMBER = "+8613800138000"
ALARM = "报警：南门一键报警按钮被按下（09:15），请值班保安立即前往！"


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[GsmModemSimulator]:
    sim = GsmModemSimulator(tmp_path / "usb-gsm-modem")
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def test_a_chinese_alarm_arrives_as_sent(modem: GsmModemSimulator) -> None:
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert receipt.ok, receipt.reason
    assert receipt.parts == 1 and receipt.message_refs == [1] and receipt.reason == ""
    message = modem.wait_for_message()
    assert message is not None
    assert (message.number, message.text) == (NUMBER, ALARM)
    [part] = message.parts
    assert part.dcs == 0x08 and part.concat is None
    assert part.user_data == ALARM.encode("utf-16-be")  # UCS2 big-endian: 报 is 62 A5, 警 8B 66 ...
    assert part.user_data[:4] == bytes([0x62, 0xA5, 0x8B, 0x66])
    assert modem.commands == ["AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CREG?", "AT+CMGF=0",
                              f"AT+CMGS={len(part.pdu) - 1}"]


EVACUATE = "紧急疏散通知：" + "教学楼三层发生火警，请各班主任立即组织学生从东侧楼梯疏散到操场集合。" * 4


@pytest.mark.parametrize("text", [EVACUATE, "Lockdown drill at 10:30 [all buildings] {doors shut} " * 8])
def test_a_long_message_arrives_in_parts_put_together(modem: GsmModemSimulator, text: str) -> None:
    expected_parts = len(encode_submit(NUMBER, text))
    receipt = send_sms(str(modem.link), NUMBER, text, timeout_s=10)
    assert receipt.ok, receipt.reason
    assert receipt.parts == expected_parts > 1
    assert receipt.message_refs == list(range(1, expected_parts + 1))
    message = modem.wait_for_message()
    assert message is not None and message.text == text
    concat = [p.concat for p in message.parts if p.concat is not None]
    assert len({reference for reference, _, _ in concat}) == 1
    assert [(total, seq) for _, total, seq in concat] == [(expected_parts, i) for i in range(1, expected_parts + 1)]


def test_two_long_messages_in_a_row_both_arrive(modem: GsmModemSimulator) -> None:
    texts = ["第一条：" + "南门报警。" * 20, "第二条：" + "北门报警。" * 20]
    for text in texts:
        assert send_sms(str(modem.link), NUMBER, text, timeout_s=10).ok
    assert [m.text for m in modem.messages] == texts


def test_text_mode_for_plain_ascii_and_pdu_mode_for_the_rest(modem: GsmModemSimulator) -> None:
    receipt = send_sms(str(modem.link), "13800138000", "PANIC south gate 09:15", pdu_mode=False, timeout_s=10)
    assert receipt.ok, receipt.reason
    assert modem.commands[-3:] == ["AT+CMGF=1", 'AT+CSCS="GSM"', 'AT+CMGS="13800138000"']
    assert modem.messages[-1].text == "PANIC south gate 09:15"
    assert send_sms(str(modem.link), NUMBER, ALARM, pdu_mode=False, timeout_s=10).ok
    assert modem.commands[-2] == "AT+CMGF=0"
    assert modem.messages[-1].text == ALARM


def test_no_network(modem: GsmModemSimulator) -> None:
    modem.set_fault("no_network")
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert not receipt.ok and receipt.message_refs == []
    assert receipt.reason.startswith("no network: not registered (stat 2")
    assert not modem.messages


def test_network_lost_after_registration_check(modem: GsmModemSimulator) -> None:
    modem.send_error = 331  # +CREG still says registered; the send itself finds no network
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert not receipt.ok and receipt.error_code == 331
    assert "no network service" in receipt.reason


@pytest.mark.parametrize(("fault", "code", "words"), [("error_500", 500, "unknown error"),
                                                      ("sim_full", 322, "memory full (SIM full)")])
def test_the_modem_refuses_the_message(modem: GsmModemSimulator, fault: str, code: int, words: str) -> None:
    modem.set_fault(fault)
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert not receipt.ok and receipt.error_code == code
    assert receipt.reason == f"the modem refused the message: {words} (+CMS ERROR: {code})"


def test_a_part_refused_half_way_says_what_went(modem: GsmModemSimulator) -> None:
    original = modem._record

    def fail_after_first(part: object) -> None:
        original(part)  # type: ignore[arg-type]
        modem.send_error = 500

    modem._record = fail_after_first  # type: ignore[method-assign]
    receipt = send_sms(str(modem.link), NUMBER, "x" * 400, timeout_s=10)
    assert not receipt.ok and receipt.message_refs == [1] and receipt.parts == 3
    assert receipt.reason == ("the modem refused part 2 of 3: unknown error (+CMS ERROR: 500) "
                              "(1 of 3 parts were sent before)")


def test_sim_pin(modem: GsmModemSimulator) -> None:
    modem.set_fault("sim_pin")
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert not receipt.ok
    assert receipt.reason.startswith("SIM not ready: +CPIN: SIM PIN")
    assert "PIN" in receipt.reason


def test_a_modem_that_never_answers_times_out_in_time(modem: GsmModemSimulator) -> None:
    modem.set_fault("silent")
    started = time.monotonic()
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert not receipt.ok
    assert "did not answer AT" in receipt.reason and "unplugged" in receipt.reason
    assert 1.4 <= elapsed <= 1.5 + 0.5


def test_a_modem_that_stops_answering_half_way(modem: GsmModemSimulator) -> None:
    original = modem._command

    def answer_once(line: str) -> bytes:
        modem.silent = True  # answers this AT, then nothing more
        return original(line)

    modem._command = answer_once  # type: ignore[method-assign]
    started = time.monotonic()
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=1)
    assert time.monotonic() - started <= 1 + 0.5
    assert not receipt.ok
    assert receipt.reason == (f"no answer from the modem on {modem.link} to ATE0 within the 1 s allowed for the "
                              f"whole send")


def test_an_unplugged_modem(modem: GsmModemSimulator) -> None:
    link = str(modem.link)
    modem.unplug()
    receipt = send_sms(link, NUMBER, ALARM, timeout_s=2)
    assert not receipt.ok and receipt.reason.startswith(f"cannot open the modem's port {link}")


def test_a_modem_left_waiting_for_a_pdu_is_brought_back(modem: GsmModemSimulator) -> None:
    # A send cut off after the prompt leaves the modem reading hex; the next send's ESC cancels it.
    with serial.Serial(str(modem.link), timeout=0.05) as port:
        port.write(b"AT+CMGS=20\r")
        seen = b""
        deadline = time.monotonic() + 5
        while b"> " not in seen and time.monotonic() < deadline:
            seen += port.read(64)
        assert b"> " in seen
    receipt = send_sms(str(modem.link), NUMBER, ALARM, timeout_s=10)
    assert receipt.ok, receipt.reason
    assert modem.messages[-1].text == ALARM


def test_a_bad_number_is_refused_before_the_port(modem: GsmModemSimulator) -> None:
    receipt = send_sms(str(modem.link), "call the head", ALARM)
    assert not receipt.ok and "phone number" in receipt.reason
    assert modem.commands == []
