"""SMS through a GSM modem on a serial port: the few lines of I/O around gateway.notify.sms_pdu.

One call opens the port, checks the modem, the SIM and the network, sends each part and closes the port. What
went wrong comes back in the receipt as a sentence a person can act on ("no network: not registered (stat 2:
not registered, searching)", "+CMS ERROR: 322: memory full (SIM full)"); send_sms raises only on programming
errors. One deadline, timeout_s, covers the whole exchange.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

import serial

from gateway.notify.sms_pdu import (
    CREG_STATES,
    FINAL,
    CmeError,
    Cmgs,
    CmsError,
    Cpin,
    Creg,
    Error,
    ModemEvent,
    ModemParser,
    Ok,
    Prompt,
    SmsEncodeError,
    encode_submit,
    text_mode_safe,
)

log = logging.getLogger("campusgw.notify.sms")

AT_TRIES = 3  # a modem just powered up or left waiting for a PDU may miss the first AT
AT_PROBE_S = 1.0  # a modem answers AT within milliseconds; a second is generous for a slow USB bridge
READ_S = 0.05  # one read's wait: how late the deadline can be noticed
SETTLE_S = 0.2  # after a late answer, the port must be quiet this long before the next command
WRITE_TIMEOUT_S = 5.0
CTRL_Z, ESCAPE = b"\x1a", b"\x1b"
REGISTERED = (1, 5)  # +CREG stat: home network, roaming


@dataclass
class SmsReceipt:
    ok: bool
    message_refs: list[int] = field(default_factory=list)  # TP-MR of each part the modem accepted, in order
    parts: int = 0  # how many parts the message has
    reason: str = ""  # why not, for a person; empty when ok
    error_code: int | None = None  # the modem's +CMS / +CME ERROR code, when it gave one


class _Failed(Exception):
    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Modem:
    """Commands and their answers on an open port, against one deadline."""

    def __init__(self, port: serial.Serial, name: str, timeout_s: float) -> None:
        self.port = port
        self.name = name
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.parser = ModemParser()

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise _Failed(f"cannot write to the modem on {self.name}: {exc}") from exc

    def read(self) -> bytes:
        try:
            return bytes(self.port.read(self.port.in_waiting or 1))
        except (serial.SerialException, OSError) as exc:
            raise _Failed(f"lost the modem's port {self.name}: {exc}") from exc

    def read_until(self, until: float, done: type | tuple[type, ...]) -> list[ModemEvent]:
        """Events up to and including the first of type `done`; [] if none by `until` (monotonic time)."""
        events: list[ModemEvent] = []
        while time.monotonic() < min(until, self.deadline):
            for event in self.parser.feed(self.read()):
                events.append(event)
                if isinstance(event, done):
                    return events
        return []

    def settle(self) -> None:
        """Read and drop until the port has been quiet SETTLE_S: late answers to earlier tries must not be
        taken for answers to the next command."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < SETTLE_S and time.monotonic() < self.deadline:
            if self.read():
                quiet_since = time.monotonic()
        self.parser = ModemParser()

    def command(self, command: str, expect_prompt: bool = False, what: str = "") -> list[ModemEvent]:
        """Send one command; its events up to its final result (or the prompt). A refusal raises _Failed."""
        self.write(command.encode("ascii") + b"\r")
        events = self.read_until(self.deadline, (*FINAL, Prompt) if expect_prompt else FINAL)
        if not events:
            raise _Failed(f"no answer from the modem on {self.name} to {command} within the {self.timeout_s:g} s "
                          f"allowed for the whole send")
        _raise_on_error(events[-1], what or command)
        return events


def _raise_on_error(event: ModemEvent, what: str) -> None:
    if isinstance(event, CmsError | CmeError):
        kind = "+CMS ERROR" if isinstance(event, CmsError) else "+CME ERROR"
        code = kind if event.code is None else f"{kind}: {event.code}"
        raise _Failed(f"the modem refused {what}: {event.reason} ({code})", event.code)
    if isinstance(event, Error):
        raise _Failed(f"the modem refused {what}: ERROR")


def _probe(modem: _Modem, baudrate: int) -> None:
    """AT until OK. Before a retry, ESC: a modem left waiting for a PDU by an aborted send cancels it."""
    started = time.monotonic()
    for attempt in range(1, AT_TRIES + 1):
        modem.write((ESCAPE if attempt > 1 else b"") + b"AT\r")
        if modem.read_until(time.monotonic() + AT_PROBE_S, Ok):
            if attempt > 1:
                modem.settle()
            return
        if time.monotonic() >= modem.deadline:
            break
    raise _Failed(f"the modem on {modem.name} did not answer AT ({attempt} tries in "
                  f"{time.monotonic() - started:.1f} s): unplugged, switched off, or not at {baudrate} baud?")


def _check_sim_and_network(modem: _Modem) -> None:
    try:
        events = modem.command("AT+CPIN?")
    except _Failed as exc:
        raise _Failed(f"SIM not ready: {exc.reason}", exc.code) from None
    state = next((e.state for e in events if isinstance(e, Cpin)), None)
    if state != "READY":
        hint = {"SIM PIN": "the SIM asks for its PIN: unlock it or use a SIM without a PIN lock",
                "SIM PUK": "the SIM is locked after wrong PINs: unblock it with its PUK in a phone"}
        raise _Failed(f"SIM not ready: +CPIN: {state or 'no answer'}"
                      + (f" ({hint[state]})" if state in hint else ""))
    events = modem.command("AT+CREG?")
    creg = next((e for e in events if isinstance(e, Creg) and not e.unsolicited), None)
    if creg is None:
        raise _Failed("no network: the modem did not say whether it is registered (no +CREG in its answer)")
    if creg.stat not in REGISTERED:
        raise _Failed(f"no network: not registered (stat {creg.stat}: {CREG_STATES.get(creg.stat, 'unknown')})")


def _submit(modem: _Modem, command: str, body: bytes, what: str) -> int:
    """AT+CMGS, the prompt, the body and Ctrl-Z; the message reference the modem gives."""
    modem.command(command, expect_prompt=True, what=what)
    modem.write(body + CTRL_Z)
    events = modem.read_until(modem.deadline, FINAL)
    if not events:
        modem.write(ESCAPE)  # leave the modem ready for the next caller
        raise _Failed(f"{what}: no answer from the modem within the {modem.timeout_s:g} s allowed after the "
                      f"message was handed over (the network may still deliver it)")
    _raise_on_error(events[-1], what)
    ref = next((e.message_ref for e in events if isinstance(e, Cmgs)), None)
    if ref is None:
        raise _Failed(f"{what}: the modem answered OK without a +CMGS message reference")
    return ref


def send_sms(port: str, number: str, text: str, *, baudrate: int = 115200, timeout_s: float = 30,
             pdu_mode: bool = True) -> SmsReceipt:
    """Send `text` to `number` through the modem on `port`; a receipt says whether and why not.

    PDU mode takes any text (GSM 7-bit or UCS2, long texts in parts). pdu_mode=False uses text mode, for
    modems that lack PDU mode, and only for short plain-ASCII texts (text_mode_safe); any other text still
    goes in PDU mode.
    """
    use_text_mode = not pdu_mode and text_mode_safe(text)
    try:
        parts = encode_submit(number, text, reference=random.randrange(256))
    except SmsEncodeError as exc:
        return SmsReceipt(ok=False, reason=str(exc))
    receipt = SmsReceipt(ok=False, parts=1 if use_text_mode else len(parts))
    try:
        link = serial.Serial(port, baudrate=baudrate, timeout=READ_S, write_timeout=WRITE_TIMEOUT_S)
    except (serial.SerialException, OSError, ValueError) as exc:
        receipt.reason = f"cannot open the modem's port {port}: {exc}"
        return receipt
    try:
        link.reset_input_buffer()
        modem = _Modem(link, port, timeout_s)
        _probe(modem, baudrate)
        modem.command("ATE0")
        modem.command("AT+CMEE=1")
        _check_sim_and_network(modem)
        if use_text_mode:
            modem.command("AT+CMGF=1")
            modem.command('AT+CSCS="GSM"')
            address = number.replace(" ", "").replace("-", "")
            receipt.message_refs.append(_submit(modem, f'AT+CMGS="{address}"', text.encode("ascii"), "the message"))
        else:
            modem.command("AT+CMGF=0")
            for part in parts:
                what = "the message" if part.total == 1 else f"part {part.part} of {part.total}"
                receipt.message_refs.append(
                    _submit(modem, f"AT+CMGS={part.tpdu_length}", part.pdu.encode("ascii"), what))
        receipt.ok = True
        log.info("SMS to %s sent in %d part(s) via %s: refs %s", number, receipt.parts, port, receipt.message_refs)
    except _Failed as exc:
        receipt.reason, receipt.error_code = exc.reason, exc.code
        if receipt.message_refs:
            receipt.reason += f" ({len(receipt.message_refs)} of {receipt.parts} parts were sent before)"
        log.warning("SMS to %s via %s not sent: %s", number, port, exc.reason)
    except (serial.SerialException, OSError) as exc:  # the port went away between open and the first read
        receipt.reason = f"lost the modem's port {port}: {exc}"
        log.warning("SMS to %s via %s not sent: %s", number, port, receipt.reason)
    finally:
        with contextlib.suppress(serial.SerialException, OSError):
            link.close()
    return receipt
