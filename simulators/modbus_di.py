"""A Modbus digital-input module (e.g. a 16-input alarm box) that speaks real Modbus (pymodbus server).

Over TCP, or RTU on a serial line (a pty from simulators.pty_pair, or a real
port); several modules (units) may share one RTU line. Each module can latch
its inputs, as many alarm modules do: an input that went active sets a latch
bit, readable as discrete inputs at `latch_address` and cleared by writing
the coil at the same address to 0, so a press shorter than the poll, or made
while nobody polled, is still seen. `latch_style` says what a clear does while
the input is still active: "level" (the default) latches it again at once,
"edge" clears it till the next press.

Refusals are those of real modules. A read or write past what a module has
(discrete inputs and coils 0 up to the inputs, or up to the latch bits where
it latches; one holding and one input register at 0) is answered with
exception 0x02, illegal data address. A request for a unit id the simulator
does not serve is, on Modbus TCP, answered with exception 0x0B (gateway target
device failed to respond), as a Modbus TCP gateway or a module routing by unit
id answers, or with silence (`unknown_units="ignore"`), as a plain TCP module
that ignores other unit ids; on an RTU line it is never answered: on RS-485
only the addressed slave may talk.

Runs in its own thread and event loop, so a test or the demo drives it with
plain calls: press(1), press_for(1, 0.03), release(1), unplug(), fail_with(...),
refuse_latch_clears(1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from simulators.base import ModbusSimulator

log = logging.getLogger("campusgw.sim.modbus_di")

LatchStyle = Literal["edge", "level"]
UnknownUnits = Literal["gateway_exception", "ignore"]
REGISTERS = 1  # holding and input registers the module has (reading 0): enough for a master's probe
BIT_FUNCTIONS = (1, 2, 5, 15)  # read coils, read discrete inputs, write coil(s)
REGISTER_FUNCTIONS = (3, 4, 6, 16, 22, 23)


@dataclass
class Module:
    """One module's contacts and latch bits, without I/O (the simulator serves it; tests may drive it directly)."""

    inputs: int
    latch_style: LatchStyle | None = None  # None: the module does not latch
    bits: list[bool] = field(default_factory=list)
    latched: list[bool] = field(default_factory=list)
    reads: int = 0
    latch_clears: int = 0

    def __post_init__(self) -> None:
        self.bits = [False] * self.inputs
        self.latched = [False] * self.inputs

    def set_input(self, index: int, value: bool) -> None:
        if value and not self.bits[index] and self.latch_style is not None:
            self.latched[index] = True
        self.bits[index] = value

    def clear_latch(self, index: int) -> None:
        # Level: the latch is set while the input is active, so a clear while the button is held is undone at once.
        self.latched[index] = self.latch_style == "level" and self.bits[index]
        self.latch_clears += 1


class ModbusDISimulator(ModbusSimulator):
    name = "modbus-di"

    def __init__(self, inputs: int = 16, unit: int = 1, host: str = "127.0.0.1", port: int = 0, *,
                 units: list[int] | None = None, serial: str | None = None, baudrate: int = 115200,
                 latch_address: int | None = None, latch_style: LatchStyle = "level",
                 unknown_units: UnknownUnits = "gateway_exception") -> None:
        """`latch_style` is "level" by default: a set-dominant latch, which a clear cannot take from an input
        still active, is the safe design for alarm inputs and what this simulator always did; it is also the
        style that catches a driver clearing only once, while the button is held.

        `unknown_units` says how Modbus TCP meets a request for a unit id not in `units`: "gateway_exception"
        answers exception 0x0B, "ignore" answers nothing. An RTU line never answers one."""
        super().__init__()
        self.unknown_units = unknown_units
        self.inputs = inputs
        self.host = host
        self.port = port
        self.serial = serial
        self.baudrate = baudrate
        self.latch_address = latch_address
        style = latch_style if latch_address is not None else None
        self.modules = {u: Module(inputs, style) for u in (units or [unit])}
        self.default_unit = next(iter(self.modules))
        self._lock = threading.Lock()
        self._failing: dict[int, ExcCodes] = {}  # unit -> the exception it answers with
        self._refuse_clears = 0
        self.unserved = 0  # requests for unit ids not served here, answered with 0x0B or not at all

    def _count_unserved(self, unit: int) -> None:
        with self._lock:
            self.unserved += 1

    @property
    def bits(self) -> int:
        """Discrete inputs (and coils) a module has, from address 0: its inputs and, where it latches, up to the
        end of the latch bits, the addresses between reading 0, so that one read takes inputs and latches."""
        return max(self.inputs, (self.latch_address or 0) + self.inputs)

    @property
    def reads(self) -> int:
        return sum(m.reads for m in self.modules.values())

    # -- control (any thread) ----------------------------------------------------------

    def press(self, number: int, unit: int | None = None) -> float:
        """Close input `number` (1-based); returns the time of the change."""
        return self._set(number, True, unit)

    def release(self, number: int, unit: int | None = None) -> float:
        return self._set(number, False, unit)

    def press_for(self, number: int, seconds: float, unit: int | None = None) -> float:
        """A press of exactly this length (timed by the simulator's loop); returns when it began."""
        began = self.press(number, unit)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, self.release, number, unit)
        return began

    def _set(self, number: int, value: bool, unit: int | None) -> float:
        module = self.modules[self.default_unit if unit is None else unit]
        if not 1 <= number <= module.inputs:
            raise ValueError(f"input {number} does not exist: this module has inputs 1-{module.inputs}")
        with self._lock:
            module.set_input(number - 1, value)
            return time.time()

    def unit_fails_with(self, unit: int, code: ExcCodes | None) -> None:
        """One module on the line answers every request with this Modbus exception (None: normally)."""
        if code is None:
            self._failing.pop(unit, None)
        else:
            self._failing[unit] = code

    def refuse_latch_clears(self, count: int) -> None:
        """The next `count` latch clears are answered with "server device busy" and not carried out."""
        with self._lock:
            self._refuse_clears = count

    def latched(self, unit: int | None = None) -> list[bool]:
        with self._lock:
            return list(self.modules[self.default_unit if unit is None else unit].latched)

    # -- the device ----------------------------------------------------------------------

    def _device(self, unit: int) -> SimDevice:
        # One block of bits from 0 covering the inputs and the latch bits; pymodbus hands the action the
        # block as 16-bit words, bit n in word n // 16 (least significant bit first). pymodbus rounds the
        # block up to whole words: _Tables refuses what lies past self.bits.
        blocks = [[SimData(0, count=self.bits, values=False, datatype=DataType.BITS)] for _ in range(2)]
        regs = [[SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)] for _ in range(2)]
        return SimDevice(unit, simdata=(blocks[0], blocks[1], regs[0], regs[1]), action=partial(self._action, unit))

    async def _start_server(self) -> None:
        devices = [self._device(unit) for unit in self.modules]
        server: _SerialServer | _TcpServer
        if self.serial:
            server = _SerialServer(devices, framer=FramerType.RTU, port=self.serial, baudrate=self.baudrate,
                                   ignore_missing_devices=True)
        else:
            server = _TcpServer(devices, address=(self.host, self.port),
                                ignore_missing_devices=self.unknown_units == "ignore")
        server.context = _Tables(devices, self.bits, REGISTERS)
        server.on_unserved = self._count_unserved
        self._server = server
        await server.serve_forever(background=True)
        if not self.serial:
            self.port = self._listening_port()

    async def _action(self, unit: int, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        if self._fail is not None:
            return self._fail
        if unit in self._failing:
            return self._failing[unit]
        module = self.modules[unit]
        latch = self.latch_address
        with self._lock:
            if function_code == 2:  # read discrete inputs: the contacts, and the latch bits above them
                module.reads += 1
                for word in range(len(registers)):
                    value = 0
                    for bit in range(16):
                        n = (start_address + word) * 16 + bit
                        if n < module.inputs:
                            on = module.bits[n]
                        elif latch is not None and latch <= n < latch + module.inputs:
                            on = module.latched[n - latch]
                        else:
                            on = False
                        value |= on << bit
                    registers[word] = value
            elif function_code == 15 and set_values is not None and latch is not None:
                if self._refuse_clears:
                    self._refuse_clears -= 1
                    return ExcCodes.DEVICE_BUSY
                for i, value in enumerate(set_values):  # writing 0 to a latch coil clears that latch
                    n = address + i - latch
                    if 0 <= n < module.inputs and not value:
                        module.clear_latch(n)
        return None


class _Tables(SimCore):
    """pymodbus's simulator datastore, which keeps bits in 16-bit words and so would serve bits up to the next
    multiple of 16, held to the module's real table sizes: a request reaching past them, or an address below 0,
    gets exception 0x02 (illegal data address)."""

    def __init__(self, devices: list[SimDevice], bits: int, registers: int) -> None:
        super().__init__(devices)
        self.sizes = dict.fromkeys(BIT_FUNCTIONS, bits) | dict.fromkeys(REGISTER_FUNCTIONS, registers)

    def _outside(self, func_code: int, address: int, count: int) -> bool:
        size = self.sizes.get(func_code)
        return size is not None and not (address >= 0 and address + count <= size)

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        if self._outside(func_code, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[int] | list[bool]) -> ExcCodes | None:
        if self._outside(func_code, address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        return await super().async_setValues(device_id, func_code, address, values)


class _UnitFilter(ServerRequestHandler):
    """Serves only the simulator's own unit ids, for every function (pymodbus 3.16 answers an unknown one with
    0x04 from its datastore, and answers diagnostics for any). Another unit id gets exception 0x0B (gateway
    target device failed to respond), or nothing where the server ignores missing devices (an RTU line;
    "ignore" on TCP)."""

    async def handle_request(self) -> None:
        request = self.last_pdu
        if request is None or request.dev_id in self.server.context.devices:
            await super().handle_request()
            return
        log.debug("request for unit %s, not served here", request.dev_id)
        if not self.server.ignore_missing_devices:
            self.server_send(ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE,
                                               device_id=request.dev_id, transaction=request.transaction_id),
                             self.last_addr)
        if self.server.on_unserved is not None:  # counted once any answer is on its way
            self.server.on_unserved(request.dev_id)


class _TcpServer(ModbusTcpServer):
    on_unserved: Callable[[int], None] | None = None

    def callback_new_connection(self) -> ServerRequestHandler:
        return _UnitFilter(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _SerialServer(ModbusSerialServer):
    on_unserved: Callable[[int], None] | None = None

    def callback_new_connection(self) -> ServerRequestHandler:
        return _UnitFilter(self, self.trace_packet, self.trace_pdu, self.trace_connect)
