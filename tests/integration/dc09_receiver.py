"""An alarm receiving centre for tests: pysiaalarm (an independent DC-09 implementation, the one Home
Assistant uses) behind a TCP relay that a test can cut, like a line that goes dead."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from pysiaalarm import CommunicationsProtocol, SIAAccount, SIAClient, SIAEvent


class Centre:
    """pysiaalarm listening on a free loopback port; `events` are what it accepted (and acknowledged)."""

    def __init__(self, account: str = "1234", key: str | None = None, protocol: str = "tcp",
                 window: tuple[int, int] | None = (40, 20)) -> None:
        self.events: list[SIAEvent] = []
        self._lock = threading.Lock()
        accounts = [SIAAccount(account, key, allowed_timeband=window)]
        self.client = SIAClient("127.0.0.1", 0, accounts, self._got, CommunicationsProtocol(protocol.upper()))
        self.port: int = self.client.sia_server.server_address[1]
        self.client.start()

    def _got(self, event: SIAEvent) -> None:
        with self._lock:
            self.events.append(event)

    def refuse_every_time(self) -> None:
        """From now on, NAK every message as outside its time window (an empty window), with its own time."""
        for account in self.client.sia_server.accounts.values():
            account.allowed_timeband = (-1000, -999)

    def alarms(self) -> list[SIAEvent]:
        """What it received other than link tests (NULL)."""
        with self._lock:
            return [e for e in self.events if not _link_test(e)]

    def link_tests(self) -> int:
        with self._lock:
            return sum(1 for e in self.events if _link_test(e))

    def stop(self) -> None:
        self.client.stop()


def _link_test(event: SIAEvent) -> bool:
    return getattr(event.message_type, "value", event.message_type) == "NULL"


class Relay:
    """A TCP relay to `target`. `cut()` drops every connection and refuses new ones, `mute()` keeps them and
    passes nothing on (a receiver that hangs), until `mend()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.alive = True
        self.muted = False
        self.swallowed = bytearray()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.alive:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(4096):
                if self.muted:
                    self.swallowed += data
                elif self.alive:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.close()

    def cut(self) -> None:
        self.alive = False
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def mute(self) -> None:
        self.muted = True

    def mend(self) -> None:
        self.alive, self.muted = True, False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def path(name: str, port: int, protocol: str = "tcp", **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "protocol": protocol, **extra}
