"""Two pseudo-terminals joined back to back, like a null-modem cable (what `socat pty pty` does).

A serial simulator opens one end by path, the driver under test the other. The
bridge can go quiet (a cut cable) or inject bytes (noise on an RS-485 line).
"""

from __future__ import annotations

import os
import select
import threading
import tty


class PtyPair:
    def __init__(self) -> None:
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: list[str] = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self._masters.append(master)
            self._slaves.append(slave)  # kept open so the pty survives when a side closes and reopens
            self.paths.append(os.ttyname(slave))
        self.muted = False
        self.bytes_carried = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pty-pair", daemon=True)
        self._thread.start()

    @property
    def device_side(self) -> str:
        """The path a simulated device opens."""
        return self.paths[0]

    @property
    def driver_side(self) -> str:
        """The path the driver under test opens."""
        return self.paths[1]

    def inject(self, data: bytes, to_driver: bool = True) -> None:
        """Write bytes onto the line as if they came from the other side (noise, a stray device)."""
        with self._lock:
            os.write(self._masters[1 if to_driver else 0], data)

    def _run(self) -> None:
        a, b = self._masters
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # no one has the other side open at the moment
                    continue
                if self.muted:
                    continue
                with self._lock:
                    os.write(b if fd == a else a, data)
                self.bytes_carried += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in self._masters + self._slaves:
            os.close(fd)
