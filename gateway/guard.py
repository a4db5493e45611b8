"""Long-lived threads that cannot die silently.

A `Guarded` thread runs its loop; if the loop raises (or returns while it
should run) the failure is logged with its traceback, counted, and the loop
started again after a backoff. A loop that keeps failing is `failing`: the
gateway's health check lists it, so the systemd watchdog stops being pinged
and systemd restarts the whole gateway, and a gateway-health alarm says so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("campusgw.guard")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
# This many failures within FAILING_WINDOW_S and the part is not recovering by itself: a restart of the
# whole process (systemd) is the next thing to try.
FAILING_AFTER = 5
FAILING_WINDOW_S = 300.0
STABLE_AFTER_S = 60.0  # a loop that ran this long starts its backoff afresh


class Guarded:
    """Runs `loop(stop)` in a daemon thread, again and again until `stop` is set."""

    def __init__(self, name: str, loop: Callable[[threading.Event], None], *,
                 on_failing: Callable[[str, bool, str], None] | None = None) -> None:
        self.name = name
        self._loop = loop
        self.on_failing = on_failing  # (name, failing, detail): a gateway-health alarm, raised and cleared
        self.stopping = threading.Event()
        self.restarts = 0
        self.last_error: str | None = None
        self._failures: deque[float] = deque(maxlen=FAILING_AFTER)
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def alive(self) -> bool:
        """Running and not failing again and again."""
        return self._thread is not None and self._thread.is_alive() and not self.failing

    @property
    def failing(self) -> bool:
        recent = [t for t in self._failures if time.monotonic() - t < FAILING_WINDOW_S]
        return len(recent) >= FAILING_AFTER

    def health(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "last_error": self.last_error, "failing": self.failing}

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self._loop(self.stopping)
                if self.stopping.is_set():
                    break
                raise RuntimeError("the loop returned while it should run")
            except Exception as exc:
                self.restarts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._failures.append(time.monotonic())
                log.exception("%s failed (%s); starting it again in %.1f s (restart %d)",
                              self.name, self.last_error, backoff, self.restarts)
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = BACKOFF_MIN_S
            self._report()
            if self.stopping.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._report()

    def _report(self) -> None:
        failing = self.failing
        if failing == self._failing or self.on_failing is None:
            self._failing = failing
            return
        self._failing = failing
        detail = (f"{self.name} keeps failing ({self.restarts} restarts, last: {self.last_error}); "
                  "the gateway will be restarted" if failing else f"{self.name} is working again")
        try:
            self.on_failing(self.name, failing, detail)
        except Exception:
            log.exception("could not report %s", self.name)


async def keep_running(name: str, job: Callable[[], Awaitable[Any]]) -> None:
    """The asyncio twin of Guarded, for the gateway's periodic tasks (clock checks, retention): a failure
    is logged with its traceback and the job started again after a backoff, never left dead."""
    backoff = BACKOFF_MIN_S
    while True:
        started = time.monotonic()
        try:
            await job()
            log.error("%s returned while it should run; starting it again in %.1f s", name, backoff)
        except Exception as exc:
            log.exception("%s failed (%s: %s); starting it again in %.1f s", name, type(exc).__name__, exc, backoff)
        if time.monotonic() - started > STABLE_AFTER_S:
            backoff = BACKOFF_MIN_S
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
