"""Relay outputs on a Modbus TCP DO module (coils): sirens, strobes, door locks and releases, the PA trigger.

The driver keeps what each relay should be (`wanted`) and makes the module match it: a command writes the coil at
once; every `poll_ms` the relays are read back, a relay found otherwise is written again (counted), and relays
past their time (a pulse, `max_on_s`) are switched off. Each poll also feeds the module's communication
watchdog, whose time the driver writes at every connect: with the gateway gone the module drops every relay.
After an outage the wanted state is written again, so a siren for an alarm still open sounds on. On the
gateway's stop every relay is switched off: the safe state.

Commands: `set` {relay, on, for_s?, reason?} and `all_off` {reason?}. Each change is a `campus.output.changed`
event naming who asked and why; a module that does not answer refuses commands with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from drivers.base import CommandResult, Driver, DriverContext, run_with_reconnect
from drivers.modbus_tcp import ModbusTcpLink
from drivers.relay_outputs.schema import RelayConfig, RelayOutputConfig
from gateway.config import DeviceConfig

STOP_TIMEOUT_S = 2.0  # the safe state's writes at the gateway's stop get this long


class RelayOutputDriver(Driver):
    name = "modbus_do"
    config_model = RelayOutputConfig
    hang_timeout_s = 10.0

    def __init__(self, devices: list[DeviceConfig], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        (device,) = devices
        assert isinstance(device, RelayOutputConfig)
        self.cfg = device
        self.wanted: dict[str, bool] = {r.name: False for r in device.relays}
        self.off_at: dict[str, float] = {}  # relay -> monotonic time to switch it off
        self.actual: dict[str, bool] | None = None
        self._first = min(r.coil for r in device.relays)
        self._count = max(r.coil for r in device.relays) - self._first + 1
        self._stop = asyncio.Event()
        self._published: dict[str, Any] | None = None
        self.counters = {"polls": 0, "errors": 0, "reconnects": 0, "writes": 0, "rewrites": 0, "commands": 0,
                         "refused": 0}
        self.link = ModbusTcpLink(ctx, device.id, device.connection, self.counters)

    # -- connection --------------------------------------------------------------------

    async def start(self) -> None:
        await run_with_reconnect(self.ctx, self._stop, self._connect, self._poll_until_failure, self.link.close)

    async def _connect(self) -> bool:
        return await self.link.open(self._arm_and_restore, self._went_offline)

    async def _arm_and_restore(self) -> bool:
        """At every connect: the module's watchdog armed, every relay written as it should be."""
        return await self._arm_watchdog() and await self._write_all()

    async def _poll_until_failure(self) -> None:
        await self.link.poll_until_failure(self._stop, self.cfg.poll_ms / 1000, self.cfg.offline_after, self._poll,
                                           self._went_offline)

    async def _poll(self) -> bool:
        """Relays past their time off, the module read back and made to match. Hold `link.io`."""
        now = time.monotonic()
        for name, at in list(self.off_at.items()):
            if now >= at:
                del self.off_at[name]
                relay = self.cfg.relay(name)
                if self.wanted[name] and relay is not None:
                    self.wanted[name] = False
                    self._changed(name, False, "timer", "its time is up")
                    if not await self._write(relay, False):
                        return False
                    if self.actual is not None:
                        self.actual[name] = False
        actual = await self._read()
        if actual is None:
            return False
        self.link.came_online()
        for relay in self.cfg.relays:
            if actual[relay.name] != self.wanted[relay.name]:
                if self.actual is not None and self.actual[relay.name] != actual[relay.name]:
                    self.counters["rewrites"] += 1  # not as we left it: the module lost it (a power blip, a reset)
                    self.ctx.log.warning("%s: relay %s found %s, written again", self.cfg.id, relay.name,
                                         "on" if actual[relay.name] else "off")
                if not await self._write(relay, self.wanted[relay.name]):
                    return False
                actual[relay.name] = self.wanted[relay.name]
        self.actual = actual
        self._publish_state()
        return True

    async def _arm_watchdog(self) -> bool:
        register = self.cfg.watchdog_register
        if register is None:
            return self.link.client is not None
        return await self.link.call(lambda client, unit: client.write_register(
            register, self.cfg.watchdog_s, device_id=unit), "setting the watchdog") is not None

    async def _read(self) -> dict[str, bool] | None:
        if self.link.client is None:
            return None
        self.counters["polls"] += 1
        response = await self.link.call(lambda client, unit: client.read_coils(
            self._first, count=self._count, device_id=unit), "reading the relays")
        if response is None:
            return None
        bits = list(response.bits[: self._count])
        if len(bits) < self._count:
            self.counters["errors"] += 1
            self.link.last_error = f"short read: {len(bits)} of {self._count} coils"
            return None
        return {r.name: bool(bits[r.coil - self._first]) for r in self.cfg.relays}

    async def _write(self, relay: RelayConfig, on: bool) -> bool:
        self.counters["writes"] += 1
        return await self.link.call(lambda client, unit: client.write_coil(relay.coil, on, device_id=unit),
                                    f"writing relay {relay.name}") is not None

    async def _write_all(self) -> bool:
        for relay in self.cfg.relays:
            if not await self._write(relay, self.wanted[relay.name]):
                return False
        return True

    # -- state and events ----------------------------------------------------------------

    def _changed(self, relay: str, on: bool, issued_by: str, reason: str) -> None:
        self.ctx.log.info("%s: %s %s (%s: %s)", self.cfg.id, relay, "on" if on else "off", issued_by, reason)
        self.ctx.emit(self.cfg.id, "campus.output.changed",
                      {"relay": relay, "on": on, "issued_by": issued_by[:200], "reason": reason[:500]})

    def state(self) -> dict[str, Any]:
        return {"online": bool(self.link.online), "relays": dict(self.wanted),
                "roles": {r.name: r.role for r in self.cfg.relays}}

    def _publish_state(self) -> None:
        state = self.state()
        if state != self._published:
            self._published = state
            self.ctx.set_state(self.cfg.id, state)

    def _went_offline(self, reason: str) -> None:
        self.actual = None
        self.link.went_offline(reason)
        self._publish_state()

    async def stop(self) -> None:
        """The safe state: every relay off before the gateway goes (the watchdog does it if this cannot)."""
        for name in self.wanted:
            self.wanted[name] = False
        self.off_at.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S), self.link.io:
                if self.link.client is not None and self.link.online:
                    await self._write_all()
        self._stop.set()  # after the writes: the poll loop closes the connection once it sees this

    def health(self) -> dict[str, Any]:
        return {"online": bool(self.link.online), "relays": dict(self.wanted), **self.counters,
                "last_error": self.link.last_error}

    # -- commands ----------------------------------------------------------------------

    async def handle_command(self, device_id: str, name: str, args: dict[str, Any], issued_by: str) -> CommandResult:
        if name == "read_state":
            return CommandResult(True, data=self.state())
        if name not in ("set", "all_off"):
            return await super().handle_command(device_id, name, args, issued_by)
        reason = str(args.get("reason") or name)[:500]
        if name == "all_off":
            targets = {r.name: False for r in self.cfg.relays}
        else:
            relay = self.cfg.relay(str(args.get("relay", "")))
            if relay is None:
                names = ", ".join(r.name for r in self.cfg.relays)
                return CommandResult(False, f"{self.cfg.id} has no relay '{args.get('relay')}' (it has {names})")
            targets = {relay.name: bool(args.get("on", True))}
        self.counters["commands"] += 1
        async with self.link.io:
            if not self.link.online or self.link.client is None:
                self.counters["refused"] += 1
                why = f"the relay module at {self.link.where()} is offline ({self.link.last_error or 'not connected'})"
                self.ctx.log.warning("%s: %s from %s refused: %s", self.cfg.id, name, issued_by, why)
                return CommandResult(False, why, self.state())
            for relay_name, on in targets.items():
                relay = self.cfg.relay(relay_name)
                assert relay is not None
                if not await self._write(relay, on):
                    self.counters["refused"] += 1
                    return CommandResult(False, f"the relay module at {self.link.where()} did not take the write of "
                                                f"{relay_name}: {self.link.last_error}", self.state())
                was, self.wanted[relay_name] = self.wanted[relay_name], on
                if self.actual is not None:
                    self.actual[relay_name] = on
                self.off_at.pop(relay_name, None)
                limit = [float(args["for_s"])] if on and args.get("for_s") else []
                limit += [relay.max_on_s] if on and relay.max_on_s else []
                if limit:
                    self.off_at[relay_name] = time.monotonic() + min(limit)
                if was != on:
                    self._changed(relay_name, on, issued_by, reason)
            self._publish_state()
        return CommandResult(True, reason, self.state())
