"""A guarded loop that fails is started again, counted, and reported once it keeps failing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway import guard
from gateway.guard import Guarded, keep_running
from tests.support import wait_for


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "BACKOFF_MIN_S", 0.01)
    monkeypatch.setattr(guard, "BACKOFF_MAX_S", 0.02)


def test_a_loop_that_raises_is_started_again_and_the_failure_is_kept() -> None:
    runs: list[int] = []

    def loop(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("disk I/O error")
        stop.wait()

    part = Guarded("outbox-publisher", loop)
    part.start()
    try:
        wait_for(lambda: len(runs) == 3, 5, "the third run")
        assert part.alive() and part.restarts == 2
        assert part.health() == {"restarts": 2, "last_error": "OSError: disk I/O error", "failing": False}
    finally:
        part.stop()
    assert not part.alive()


def test_a_loop_that_keeps_failing_is_reported_and_not_alive() -> None:
    reports: list[tuple[str, bool, str]] = []

    def loop(stop: threading.Event) -> None:
        raise RuntimeError("database schema is missing a table")

    part = Guarded("rules", loop, on_failing=lambda *args: reports.append(args))
    part.start()
    try:
        wait_for(lambda: reports, 5, "the failing report")
        assert not part.alive(), "the health check (and so the watchdog) sees it"
        name, failing, detail = reports[0]
        assert (name, failing) == ("rules", True)
        assert "keeps failing" in detail and "schema is missing" in detail
        assert len(reports) == 1, "reported once, not at every restart"
    finally:
        part.stop()


def test_a_loop_that_returns_while_it_should_run_is_a_failure() -> None:
    runs: list[int] = []

    def loop(stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) > 1:
            stop.wait()

    part = Guarded("police-link", loop)
    part.start()
    try:
        wait_for(lambda: len(runs) == 2, 5, "the second run")
        assert part.last_error == "RuntimeError: the loop returned while it should run"
    finally:
        part.stop()


def test_a_periodic_task_that_raises_keeps_running() -> None:
    runs: list[int] = []
    third = asyncio.Event()

    async def job() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("no space left on device")
        third.set()
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(keep_running("snapshot retention", job))
        await third.wait()
        assert not task.done() and len(runs) == 3
        task.cancel()

    asyncio.run(asyncio.wait_for(main(), 5))
