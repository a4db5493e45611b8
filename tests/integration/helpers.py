"""Helpers for integration tests: an SSE reader, a raw event publisher, a config builder, a console on a fresh
database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from gateway import topics
from gateway.app import PARTS, Gateway, bind_socket
from gateway.config import Config
from gateway.events import make_event
from tests.support import TEST_LOGIN

TZ = ZoneInfo("Asia/Shanghai")


class SseReader:
    """Reads an SSE stream in a thread and keeps every (event, data) pair it sees."""

    def __init__(self, url: str, cookies: httpx.Cookies | None = None) -> None:
        self.url = url
        self.cookies = cookies
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=None), cookies=self.cookies) as client, \
                client.stream("GET", self.url) as response:
            name, data = "message", []
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    with self._lock:
                        self.events.append((name, json.loads("\n".join(data))))
                    name, data = "message", []

    def alarms(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for n, d in self.events if n == "alarm"]

    def close(self) -> None:
        self._stop.set()


def alarm_event(site: str, device: str, point: str, seq: int, *, restored: bool = False,
                point_type: str = "panic", at: float = 1.8e9) -> tuple[str, bytes, str]:
    """(topic, payload, id) of a triggered/restored event, as the alarm-input driver makes it."""
    event_type = "campus.alarm_input.restored" if restored else "campus.alarm_input.triggered"
    event = make_event(site, "alarm_input", device, event_type,
                       {"point": point, "input": 1, "point_type": point_type, "zone": None, "place": "gatehouse"},
                       seq, at, TZ)
    return topics.event(site, "alarm_input", device, event_type), event.to_json(), event.id


def logged_in(base_url: str, username: str, password: str) -> httpx.Client:
    """An HTTP client with a console session; its `csrf` attribute is the token for changing requests."""
    client = httpx.Client(base_url=base_url, timeout=10)
    response = client.post("/login", data={"username": username, "password": password, "next": "/alarms"})
    assert response.status_code == 303, f"login as {username} failed: {response.status_code} {response.text[:200]}"
    page = client.get("/alarms").text
    client.csrf = page.split("const CSRF = ", 1)[1].split(";", 1)[0].strip('"')  # type: ignore[attr-defined]
    return client


class Running:
    """A Gateway running in a background event loop, for the duration of a test."""

    def __init__(self, config: Config, parts: tuple[str, ...] = PARTS, port: int = 0) -> None:
        self.sock = bind_socket("127.0.0.1", port, "console") if "console" in parts else None
        self.gateway = Gateway(config, parts, console_socket=self.sock, trusted_login=TEST_LOGIN)
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "gateway did not start"
        if self.error:
            raise self.error

    def _run(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.gateway.run(self.stop_event, lambda gw: self.ready.set())

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()
        finally:  # its selector and self-pipe: three descriptors per gateway, a thousand over the suite
            self.loop.close()

    def stop(self) -> None:
        """Stop the gateway; again is a no-op (a test may stop it early, its fixture stops it at the end)."""
        assert self.stop_event is not None
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "gateway did not stop"


CONSOLE_PASSWORD = "a long test password"


@contextlib.contextmanager
def console_client(tmp_path: Path, broker_port: int, users: dict[str, str], language: str = "zh_CN",
                   db_file: str = "console.db", **app: Any) -> Iterator[tuple[Any, Any]]:
    """A console app on a fresh SQLite database with these users (name -> role, each with CONSOLE_PASSWORD) and
    a bus on the test's broker: (TestClient, sessionmaker). `app` goes to create_app."""
    from fastapi.testclient import TestClient

    from gateway.bus import Bus
    from gateway.console import auth
    from gateway.console.app import create_app
    from gateway.records import db
    from tests.support import broker_config

    engine = db.make_engine(f"sqlite:///{tmp_path / db_file}")
    db.upgrade(engine)
    sessions = db.make_sessions(engine)
    with sessions.begin() as session:
        for name, role in users.items():
            auth.add_user(session, name, role, CONSOLE_PASSWORD)
    bus = Bus(broker_config(broker_port), f"console-test-{tmp_path.name}", name="console")
    bus.start()
    bus.wait_connected(5)
    try:
        application = create_app("s1", "Test School", TZ, sessions, bus, language, **app)
        with TestClient(application, base_url="http://testserver", follow_redirects=False) as client:
            yield client, sessions
    finally:
        bus.stop()
        engine.dispose()
