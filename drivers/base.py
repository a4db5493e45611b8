"""The one small contract every driver implements, and what the gateway gives it.

A driver owns one device protocol. It turns raw input into events through
its context (`emit`, `set_online`, `set_state`) and turns commands into
device writes (`handle_command`). It knows nothing of rules, the database or
the console. The gateway's supervisor restarts a driver whose `start` raises,
returns, or stops calling `ctx.heartbeat()`.

Checklist each driver meets (README, "Drivers"): config schema with errors
naming the key; a timeout on every I/O call; offline -> reconnect with backoff
-> online; every raw input counted; commands with results and reasons; a
simulator speaking the same protocol; a sans-IO, fuzzed parser; a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gateway.config import DeviceConfig


class DriverContext(Protocol):
    """What the gateway lends a driver. Every method is cheap and safe to call from the driver's loop."""

    site: str
    tz: tzinfo  # the site's time zone, for times a person reads in a reason ("vehicle on loop 1 since 07:58:12")
    data_dir: Path  # the gateway's data directory: where a driver keeps files (camera snapshots)
    log: logging.Logger

    def emit(self, device_id: str, event_type: str, data: dict[str, Any], at: float | None = None,
             test: bool | None = None) -> None:
        """Record an event durably (outbox) for publishing; returns once it is on disk.
        `test` marks it as a test (None: as the device's test_mode says)."""

    def set_online(self, device_id: str, online: bool, reason: str | None = None) -> None:
        """Report whether the device answers; only changes are published and recorded."""

    def set_state(self, device_id: str, state: dict[str, Any]) -> None:
        """Publish the device's current state (retained)."""

    def heartbeat(self) -> None:
        """Tell the supervisor the driver is alive; call at least every `hang_timeout_s`."""

    def ticker(self, period: float) -> Ticker:
        """The host's shared timer of `period` on the driver's loop: drivers that poll many things at one rate
        add a callback to it instead of each running a timer."""


class Ticker:
    """One timer for every callback of one period on the event loop: a hundred polled modules at 50 ms wake
    the loop 20 times a second, not 2,000. Made and kept by the driver host (Tickers), not by a driver."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.loop = loop
        self.period = period
        self.callbacks: list[Callable[[], None]] = []
        self._handle: asyncio.Handle | None = None
        self._next = 0.0

    def add(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)
        if self._handle is None:
            self._next = self.loop.time()
            self._handle = self.loop.call_soon(self._tick)

    def remove(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self.callbacks.remove(callback)
        if not self.callbacks and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        for callback in list(self.callbacks):
            try:
                callback()
            except Exception:  # one line's bug must not stop the others' polling
                logging.getLogger("campusgw.driver").exception("a tick of %g s failed", self.period)
        self._next += self.period
        now = self.loop.time()
        if self._next < now:  # fell behind: do not try to catch up with a burst
            self._next = now
        self._handle = self.loop.call_at(self._next, self._tick)


class Tickers:
    """The shared tickers of one driver host, one per event loop and period."""

    def __init__(self) -> None:
        self._tickers: dict[tuple[int, float], Ticker] = {}

    def of(self, period: float) -> Ticker:
        """The ticker of `period` on the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        key = (id(loop), period)
        if key not in self._tickers or self._tickers[key].loop is not loop:
            self._tickers[key] = Ticker(loop, period)
        return self._tickers[key]


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Driver(ABC):
    #: the `driver:` name in the site config
    name: ClassVar[str]
    #: pydantic model validating this driver's device entries (a DeviceConfig subclass, extra keys forbidden)
    config_model: ClassVar[type[DeviceConfig]]
    #: no heartbeat for this long -> the supervisor treats the driver as hung and restarts it
    hang_timeout_s: ClassVar[float] = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        self.devices = devices
        self.ctx = ctx

    @classmethod
    def group_key(cls, device: DeviceConfig) -> str:
        """Devices with the same key share one driver instance (e.g. one RS-485 bus)."""
        return device.id

    @abstractmethod
    async def start(self) -> None:
        """Connect and run until stop() is called; raise on a failure the driver cannot handle itself."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop promptly and release the device (sockets, serial ports)."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """Counters and state for diagnostics: inputs good / malformed / dropped, errors, online."""

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        """Carry out a command; `issued_by` (a user or a rule) is recorded with whatever the command does.
        A refusal is a result with ok=False and a reason a guard can read, not an exception."""
        return CommandResult(False, f"{self.name} has no command '{name}'")


RECONNECT_MIN_S = 0.1
# Capped low on purpose: a device must be back within about a second of answering again.
RECONNECT_MAX_S = 1.0


async def run_with_reconnect(ctx: DriverContext, stop: asyncio.Event, connect: Callable[[], Awaitable[bool]],
                             run: Callable[[], Awaitable[None]], close: Callable[[], None]) -> None:
    """The loop every polling driver needs: connect, run until the link fails, close, wait (backoff), again."""
    backoff = RECONNECT_MIN_S
    while not stop.is_set():
        ctx.heartbeat()
        if await connect():
            backoff = RECONNECT_MIN_S
            await run()
            close()
        if stop.is_set():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, RECONNECT_MAX_S)
