"""`campusgw doctor osdp PORT`: connects to OSDP readers with libosdp's control panel the way the osdp driver
does and reports each reader's ID report (vendor OUI, model, serial number, firmware) and capabilities, and
whether the secure channel comes up with the key, then plain advice.

The advice is made by pure functions from what was measured (bus_advice, reader_advice), tested on their own.
The doctor only reads. In particular it never hands a reader a key: with a key it enforces the secure channel,
so libosdp does not fall back to the default key (with which it would send the reader the key, as campusgw's
install mode does on purpose), and without one it talks in clear. No key is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.doctor import Finding, captured_stderr, format_findings, row, usable
from gateway.config import ConfigError, SecretRef

TARGET = "osdp"


HOLD_S = 1.0  # online this long without being dropped: the reader takes our polls
PLAIN_PROBE_S = 3.0  # the second look, without a key, at a reader that refused the key
CAPABILITY_NAMES = ("ContactStatusMonitoring", "OutputControl", "CardDataFormat", "LEDControl", "AudibleControl",
                    "TextOutput", "TimeKeeping", "CheckCharacter", "CommunicationSecurity", "ReceiveBufferSize",
                    "CombinedMessageSize", "SmartCard", "Readers", "Biometrics")


@dataclass(frozen=True)
class ReaderId:
    """osdp_PDID: what the reader says it is."""

    vendor_code: int  # the IEEE OUI, its first octet in the low byte (as libosdp gives it)
    model: int
    version: int
    serial_number: int
    firmware: int  # major << 16 | minor << 8 | build

    @property
    def oui(self) -> str:
        return "-".join(f"{(self.vendor_code >> shift) & 0xFF:02X}" for shift in (0, 8, 16))

    @property
    def firmware_text(self) -> str:
        return f"{(self.firmware >> 16) & 0xFF}.{(self.firmware >> 8) & 0xFF}.{self.firmware & 0xFF}"

    @property
    def empty(self) -> bool:
        return not (self.vendor_code or self.model or self.version or self.serial_number or self.firmware)


@dataclass
class ReaderProbe:
    address: int
    online: bool = False  # took our polls for HOLD_S (with the secure channel, when a key was given)
    secure: bool = False
    dropped: bool = False  # answered, then libosdp took it offline (refused key, NAKed polls)
    plain: str | None = None  # the second look without a key: accepted, refused, silent (None: not needed)
    ident: ReaderId | None = None
    capabilities: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        return self.ident is not None and not self.ident.empty


@dataclass
class BusProbe:
    port: str
    baudrate: int
    key: str | None  # where the key came from ("environment variable X", "file F"); None: no secure channel
    error: str | None = None  # the port could not be opened or failed
    bytes_in: int = 0
    bytes_out: int = 0
    echo: bool = False  # what came back holds our own commands
    readers: list[ReaderProbe] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def describe_capabilities(caps: dict[str, tuple[int, int]]) -> list[str]:
    """The reader's osdp_PDCAP in words (IEC 60839-11-5 / OSDP 2.2 function codes 1-14)."""
    out: list[str] = []

    def cap(name: str) -> tuple[int, int]:
        return caps.get(name, (0, 0))

    level, items = cap("Readers")
    if items:
        out.append(f"readers: {items} attached")
    level, items = cap("LEDControl")
    if level or items:
        kinds = {1: "on/off", 2: "timed", 3: "timed, two colours", 4: "timed, three colours"}
        out.append(f"LEDs: {items} per reader, {kinds.get(level, f'level {level}')}")
    else:
        out.append("LEDs: none reported")
    level, items = cap("AudibleControl")
    if level or items:
        out.append(f"buzzer: {items}, {'timed' if level >= 2 else 'on/off'}")
    else:
        out.append("buzzer: none reported")
    level, items = cap("CardDataFormat")
    if level:
        out.append("card data: " + {1: "raw bits (Wiegand)", 2: "formatted (BCD/ASCII)",
                                    3: "raw bits or formatted"}.get(level, f"level {level}"))
    level, items = cap("CommunicationSecurity")
    if level & 1:
        out.append("secure channel: AES-128" + (", accepts the default install key (SCBK-D)" if items & 1 else ""))
    else:
        out.append("secure channel: not supported")
    level, items = cap("ContactStatusMonitoring")
    if items:
        out.append(f"inputs (contact or tamper status): {items}")
    level, items = cap("OutputControl")
    if items:
        out.append(f"outputs: {items}")
    level, items = cap("TextOutput")
    if level:
        out.append(f"text display: {items} ({ {1: '1x16', 2: '2x16', 3: '4x16'}.get(level, f'level {level}') })")
    level, items = cap("Biometrics")
    if level:
        out.append(f"biometrics: level {level}")
    level, items = cap("SmartCard")
    if level:
        out.append("smart card: " + ", ".join(n for bit, n in ((1, "extended packet mode"), (2, "transparent reader"))
                                              if level & bit))
    level, items = cap("CheckCharacter")
    out.append("check character: " + ("CRC-16" if level else "checksum only"))
    level, items = cap("ReceiveBufferSize")
    if level or items:
        out.append(f"receive buffer: {level | items << 8} bytes")
    return out


def bus_advice(bus: BusProbe) -> list[Finding]:
    """Advice for the line as a whole: the port, and nothing heard at all."""
    if bus.error:
        return [Finding(True, bus.error)]
    if any(r.answered for r in bus.readers):
        return []
    addresses = ", ".join(str(r.address) for r in bus.readers)
    if bus.bytes_in == 0:
        return [Finding(True, f"no answer at all on {bus.port} (address {addresses}, {bus.baudrate} baud): check the "
                              "reader has power; the A/B (D+/D-) wires (swapped is the most common fault); the "
                              "reader's address and baud rate (see its manual or configuration card; many ship at "
                              "address 0, 9600 baud); a 120 ohm terminator at each end of a long line, and ground "
                              "between the adapter and the reader")]
    if bus.echo:
        return [Finding(True, f"what comes back on {bus.port} is our own polls, and no reader answers: the RS-485 "
                              "adapter echoes what it sends (a 2-wire adapter with echo on; turn it off), or the "
                              "reader is not on the line; check the A/B wires, the address and the baud rate")]
    return [Finding(True, f"bytes arrive on {bus.port}, but no valid answer from address {addresses}: usually the "
                          f"baud rate differs from the reader's ({bus.baudrate} here; try 9600, 19200, 38400, 115200), "
                          "A/B swapped, or noise on a long line without termination")]


def reader_advice(bus: BusProbe, r: ReaderProbe) -> list[Finding]:
    """Advice for one reader, from what the doctor saw of it."""
    caps = r.capabilities
    supports_sc = bool(caps.get("CommunicationSecurity", (0, 0))[0] & 1)
    out: list[Finding] = []
    if not r.answered:
        if any(other.answered for other in bus.readers):
            out.append(Finding(True, "no answer, though other readers on the line answer: check this reader's "
                                     "address and power, and its A/B wires"))
        return out
    if bus.key is not None:
        if r.online and r.secure:
            pass
        elif not supports_sc:
            out.append(Finding(True, "the reader does not support the secure channel, so no key can work: set "
                                     "secure: false for it (card numbers then cross the wire in clear) or use a "
                                     "reader with OSDP Secure Channel"))
        elif r.plain == "accepted":
            out.append(Finding(True, "the reader refused this key but talks without a secure channel: it is most "
                                     "likely new (in install mode, without a key yet): give it its key once with "
                                     "install_mode: true in its config (then set it back to false); if it has been "
                                     "given another key before, reset it to factory defaults first"))
        elif r.plain == "refused":
            out.append(Finding(True, "the reader has a secure channel key, and it is not this one: check key_env / "
                                     "key_file hold this reader's key (32 hex digits); if the key is lost, reset the "
                                     "reader to factory defaults (its install mode) and give it the key again with "
                                     "install_mode: true"))
        else:
            out.append(Finding(True, "the reader answers, but the secure channel does not come up with this key: "
                                     "a different key, or a reader in install mode (campusgw's install_mode: true "
                                     "gives a new reader its key)"))
    elif not r.online:
        if r.dropped and supports_sc:
            out.append(Finding(True, "the reader answers but refuses to talk without the secure channel: give its "
                                     "key with --key-env VAR or --key-file FILE"))
        else:
            out.append(Finding(True, "the reader answers but does not stay online: check the line (termination, "
                                     "ground, a cable run next to mains) and that no other control panel polls it"))
    elif supports_sc:
        out.append(Finding(False, "the reader works without the secure channel, so card numbers cross the wire in "
                                  "clear; it supports the secure channel: give it a key (install_mode: true once, "
                                  "with key_env or key_file) and check again with --key-env"))
    else:
        out.append(Finding(False, "the reader has no secure channel: card numbers cross the wire in clear (set "
                                  "secure: false for it in the config)"))
    if r.answered:
        led_level, leds = caps.get("LEDControl", (0, 0))
        if not led_level and not leds:
            out.append(Finding(False, "the reader reports no LED control: a person at the door sees no green/red "
                                      "answer"))
        if caps.get("AudibleControl", (0, 0)) == (0, 0):
            out.append(Finding(False, "the reader reports no buzzer: no beep for granted/denied"))
    return out


def format_osdp(bus: BusProbe, findings: dict[int, list[Finding]], common: Sequence[Finding],
                verbose: bool = False) -> str:
    key = f"secure channel with the key from {bus.key}" if bus.key else "no secure channel (no key given)"
    lines = [f"OSDP on {bus.port} at {bus.baudrate} baud, {key}",
             row("line", f"{bus.bytes_out} bytes sent, {bus.bytes_in} received" + (" (our own echoed back)"
                                                                                     if bus.echo else ""))]
    if bus.error and not bus.bytes_out:  # the port did not open
        lines = lines[:1]
    for r in bus.readers if len(lines) > 1 else []:
        lines.append(f"reader at address {r.address}")
        if not r.answered:
            lines.append(row("answers", "no"))
            continue
        if r.online:
            state = "yes, secure channel active" if r.secure else "yes, without secure channel"
        else:
            state = "no" + (" (refused the key)" if bus.key else " (dropped after answering)")
        lines.append(row("online", state))
        if r.plain:
            lines.append(row("without key", {"accepted": "talks in clear", "refused": "refuses to talk in clear",
                                              "silent": "no answer"}[r.plain]))
        ident = r.ident
        assert ident is not None
        lines.append(row("vendor (OUI)", ident.oui))
        lines.append(row("model", f"{ident.model}, version {ident.version}"))
        lines.append(row("serial number", f"{ident.serial_number:08X}"))
        lines.append(row("firmware", ident.firmware_text))
        described = describe_capabilities(r.capabilities)
        for n, text in enumerate(described):
            lines.append(row("capabilities" if n == 0 else "", text))
    if verbose and bus.log:
        lines.append("libosdp said:")
        lines += [f"  {line}" for line in bus.log]
    all_findings = [*common, *(f for r in bus.readers for f in findings.get(r.address, []))]
    advice = list(common)
    for r in bus.readers:
        advice += [Finding(f.problem, f"address {r.address}: {f.text}") if len(bus.readers) > 1 else f
                   for f in findings.get(r.address, [])]
    lines += format_findings(advice)
    lines.append(f"result: {'usable' if usable(all_findings) else 'NOT usable'}")
    return "\n".join(lines)


def read_key(env: str | None, file: Path | None) -> bytes | None:
    """The reader's secure channel key (SCBK) from an environment variable or a file: 32 hex digits."""
    if not env and not file:
        return None
    value = SecretRef(env=env, file=file).resolve() or ""
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        key = b""
    if len(key) != 16:
        where = f"environment variable {env}" if env else f"file {file}"
        raise ConfigError([f"the key in {where} must be 32 hex digits (16 bytes)"])
    return key


def probe_osdp(port: str, addresses: Sequence[int], baudrate: int = 9600, key: bytes | None = None,
               key_source: str | None = None, timeout: float = 10.0) -> BusProbe:
    """Connect to the readers, wait for them (at most `timeout`), and take their ID reports and capabilities."""
    import serial

    bus = BusProbe(port=port, baudrate=baudrate, key=key_source if key is not None else None,
                   readers=[ReaderProbe(a) for a in addresses])
    try:
        line = serial.Serial(port, baudrate, timeout=0, write_timeout=0.5, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        bus.error = port_error(port, exc)
        return bus
    try:
        with captured_stderr() as said:
            sent: bytearray = bytearray()
            received: bytearray = bytearray()
            _session(line, bus, bus.readers, key, timeout, sent, received)
            refused = [r for r in bus.readers if r.answered and not r.online and key is not None]
            if refused and not bus.error:
                line.reset_input_buffer()
                plain = [ReaderProbe(r.address) for r in refused]
                _session(line, bus, plain, None, PLAIN_PROBE_S, sent, received)
                for r, look in zip(refused, plain, strict=True):
                    r.plain = "accepted" if look.online else "refused" if look.answered else "silent"
        bus.log = [m.strip() for m in said if m.strip()]
        bus.echo = _echoed(received, [r.address for r in bus.readers])
    finally:
        with contextlib.suppress(serial.SerialException, OSError):
            line.close()
    return bus


def port_error(port: str, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text:
        return (f"there is no serial port {port}: check the adapter is plugged in and its name (ls /dev/ttyUSB* "
                "/dev/ttyACM* /dev/serial/by-id/)")
    if isinstance(exc, PermissionError) or "Permission denied" in text:
        return (f"no permission to open {port}: add this user to the dialout group (sudo usermod -aG dialout "
                "$USER, then log in again)")
    if "lock" in text.lower() or "busy" in text.lower():
        return (f"{port} is in use by another program (is the gateway running? stop it while you test: "
                "systemctl stop campusgw)")
    return f"cannot open {port}: {text}"


def _echoed(received: bytes | bytearray, addresses: Sequence[int]) -> bool:
    """Whether what came back holds a command to one of our readers (SOM 0x53, then the address without the
    reply bit 0x80): the adapter hears itself."""
    return any(received[i] == 0x53 and received[i + 1] in addresses for i in range(len(received) - 1))


def _session(line: Any, bus: BusProbe, readers: Sequence[ReaderProbe], key: bytes | None, timeout: float,
             sent: bytearray, received: bytearray) -> None:
    """One libosdp control panel on the open port until every reader is online for HOLD_S or was dropped after
    answering, or `timeout`; then its ID report and capabilities."""
    import osdp

    from drivers.osdp_reader.driver import _ControlPanel, _SerialChannel

    class Channel(_SerialChannel):
        def read(self, max_bytes: int) -> bytes:
            data = super().read(max_bytes)
            bus.bytes_in += len(data)
            if len(received) < 256:
                received.extend(data[: 256 - len(received)])
            return data

        def write(self, buf: bytes) -> int:
            n = super().write(buf)
            bus.bytes_out += n
            if len(sent) < 256:
                sent.extend(buf[: 256 - len(sent)])
            return n

    channel = Channel(line)
    dropped: set[int] = set()

    def on_event(pd: int, event: dict[str, Any]) -> int:
        # libosdp's notifications (EnableNotification): PD status arg0 0 = the reader went offline; it only
        # says so after the reader answered (an unanswered one was never online).
        if event.get("event") == osdp.Event.Notification and \
                event.get("type") == osdp.EventNotification.PeripheralDeviceStatus and not event.get("arg0"):
            dropped.add(pd)
        return 0

    # With a key the secure channel is enforced: libosdp must not fall back to the default key (it would then
    # send the reader our key, which is install mode's job, not the doctor's).
    flags = [osdp.LibFlag.EnableNotification] + ([osdp.LibFlag.EnforceSecure] if key is not None else [])
    infos = [osdp.PDInfo(r.address, channel, scbk=key, name=f"address-{r.address}", flags=flags) for r in readers]
    cp = _ControlPanel(infos, log_level=osdp.LogLevel.Info, event_handler=on_event)
    cp.start()
    try:
        since: dict[int, float] = {}
        held: set[int] = set()
        secure = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and channel.error is None:
            now = time.monotonic()
            online, secure = cp.status(), cp.sc_status()
            for n in range(len(readers)):
                if online & (1 << n) and (key is None or secure & (1 << n)):
                    since.setdefault(n, now)
                else:
                    since.pop(n, None)
                if n in since and now - since[n] >= HOLD_S:
                    held.add(n)
                else:
                    held.discard(n)
            if all(n in held or n in dropped for n in range(len(readers))):
                break
            time.sleep(0.05)
        for n, r in enumerate(readers):
            r.online = n in held
            r.secure = bool(secure & (1 << n))
            r.dropped = n in dropped
            r.ident = _ident(cp, r.address)
            r.capabilities = _capabilities(cp, r.address)
        if channel.error:
            bus.error = f"{bus.port} failed: {channel.error} (was the adapter unplugged?)"
    finally:
        with contextlib.suppress(RuntimeError):
            cp.stop()


def _ident(cp: Any, address: int) -> ReaderId | None:
    try:
        pd_id = cp.get_pd_id(address)
    except Exception:  # libosdp 3.2's binding fails on an empty answer rather than returning None
        return None
    return ReaderId(int(pd_id.vendor_code) & 0xFFFFFF, int(pd_id.model), int(pd_id.version),
                    int(pd_id.serial_number) & 0xFFFFFFFF, int(pd_id.firmware_version) & 0xFFFFFF)


def _capabilities(cp: Any, address: int) -> dict[str, tuple[int, int]]:
    import osdp

    caps: dict[str, tuple[int, int]] = {}
    for name in CAPABILITY_NAMES:
        try:
            level, items = cp.check_capability(address, getattr(osdp.Capability, name))
        except (ValueError, AttributeError):
            continue
        if level or items:
            caps[name] = (int(level), int(items))
    return caps


def add_arguments(targets: Any) -> None:
    d = targets.add_parser(TARGET, help="connect to OSDP readers on a serial port: ID report, capabilities, secure "
                           "channel")
    d.add_argument("port", help="the RS-485 adapter, e.g. /dev/ttyUSB0")
    d.add_argument("--address", nargs="+", default=["0"], metavar="A",
                   help="the readers' OSDP addresses, 0-126 (default 0)")
    d.add_argument("--baud", type=int, choices=[9600, 19200, 38400, 57600, 115200], default=9600)
    key = d.add_mutually_exclusive_group()
    key.add_argument("--key-env", metavar="VAR", help="the environment variable holding the reader's secure "
                     "channel key (32 hex digits)")
    key.add_argument("--key-file", type=Path, metavar="FILE", help="a file holding the key; without "
                     "--key-env/--key-file: no secure channel")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the readers (default 10)")
    d.add_argument("-v", "--verbose", action="store_true", help="also print libosdp's log")


def addresses_of(values: Sequence[str]) -> list[int]:
    """`--address 1 2` or `--address 1,2`: OSDP addresses 0-126, no repeats."""
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or not 0 <= int(part) <= 126:
                raise ValueError(f"--address {part}: an OSDP address is 0-126")
            if int(part) not in out:
                out.append(int(part))
    if not out:
        raise ValueError("--address: give at least one")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        addresses = addresses_of(args.address)
    except ValueError as exc:
        print(f"campusgw doctor osdp: {exc}", file=sys.stderr)
        return 2
    key = read_key(args.key_env, args.key_file)
    source = f"environment variable {args.key_env}" if args.key_env else f"file {args.key_file}"
    bus = probe_osdp(args.port, addresses, args.baud, key, source, args.timeout)
    common = bus_advice(bus)
    per_reader = {r.address: reader_advice(bus, r) for r in bus.readers} if not bus.error else {}
    print(format_osdp(bus, per_reader, common, args.verbose), flush=True)
    return 0 if usable([*common, *(f for fs in per_reader.values() for f in fs)]) else 1
