"""The embedded MQTT broker (amqtt) for a one-box site with no Mosquitto.

It runs in its own thread and event loop so the drivers' loop never waits on
it. It keeps everything in memory; a crash loses nothing, since the outbox keeps every event until the
rules service has recorded it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import warnings
from typing import Any

log = logging.getLogger("campusgw.broker")


class BrokerPortTaken(Exception):
    pass


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1884) -> None:
        self.host = host
        self.requested_port = port
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> int:
        """Start listening; returns the port. Raises BrokerPortTaken with what to do about it."""
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"embedded broker did not start within {timeout:.0f}s")
        if self._error:
            raise self._error
        log.info("embedded broker listening on %s:%d", self.host, self.port)
        return self.port

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _start(self) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):  # amqtt logs every packet at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._broker = Broker(config)
        quiet = logging.getLogger("amqtt.broker")
        quiet.setLevel(logging.CRITICAL)  # it logs its own traceback on a taken port; ours says what to do
        try:
            await self._broker.start()
            quiet.setLevel(logging.WARNING)
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise BrokerPortTaken(
                    f"the embedded MQTT broker cannot listen on {self.host}:{self.requested_port}: the port is "
                    "taken (often by Mosquitto). Either point the gateway at that broker (broker: "
                    f"{{url: mqtt://{self.host}:{self.requested_port}}}), or give the embedded broker another "
                    "port (broker: {embedded_port: 1885}, or 0 for any free port)."
                ) from None
            raise
        server = self._broker._servers["default"]
        self.port = server.instance.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._broker is not None:
            try:
                await asyncio.wait_for(self._broker.shutdown(), 5)
            except Exception:
                log.debug("embedded broker shutdown was not clean", exc_info=True)

    def stop(self) -> None:
        if self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
