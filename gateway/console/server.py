"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers, and a slow drain of refused bodies.

uvicorn times out an idle kept-alive connection, but not one that is slow to send its request: a client
sending a header byte every few seconds (slowloris) would hold its connection for ever. Here the headers
must be in HEADER_TIMEOUT_S after the connection opens or the previous response ends.

A body refused before its end (413) is still read and dropped, as nginx's lingering close does, so the client
gets the answer (closing at once would reset the connection, and a reset loses what the client has not read);
but slowly, a read every DRAIN_PAUSE_S, and only until the deadline: a client pushing 50 MB costs the event
loop next to nothing.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
DRAIN_PAUSE_S = 0.05  # between reads of a refused body: at most ~5 MB/s (asyncio reads 256 KiB at a time)


class HeaderDeadlineProtocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None:
            return
        if not self.cycle.response_complete and self._deadline is not None:
            self._deadline.cancel()  # the headers are in: the request is the app's now
            self._deadline = None
        elif self.cycle.response_complete and self.conn.their_state is h11.SEND_BODY:  # a refused body
            self.flow.pause_reading()
            self.loop.call_later(DRAIN_PAUSE_S, self.flow.resume_reading)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
