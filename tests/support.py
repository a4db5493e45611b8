"""What tests and benchmarks share: waiting for a condition, free ports, our own Mosquitto and the embedded
broker with the test logins, temporary PostgreSQL databases, and skipping (or, on CI, failing) when a service
is missing. Fixtures stay in conftest.py; this module is plain code that bench/ may import too."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import mqtt_acl
from gateway.broker import EmbeddedBroker, users_of
from gateway.config import BrokerConfig

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("CAMPUSGW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("CAMPUSGW_REQUIRE_SERVICES") == "1"


def missing(reason: str) -> None:
    """Skip, or fail where the service must be there (CI)."""
    if REQUIRE:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


POLL_S = 0.02  # how often wait_for looks again


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str | Callable[[], str] = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds (a callable
    `what` is called then, to tell the state last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(POLL_S)


_PORTS = random.SystemRandom()  # not the global generator, which tests seed
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free to listen on, below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken by any outgoing connection before the server binds it (seen: a nats-server's route port,
    with Mosquitto bridges and relays connecting meanwhile)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = _PORTS.randint(10_000, max(10_001, low - 1))
        if port in _GIVEN:  # given out, maybe not bound yet by its server
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """A Mosquitto process of our own, from the shipped config, on a free port; stop() and start() keep the port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                                    else None)
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        shipped = (ROOT / "config" / "mosquitto.conf").read_text()
        lines = []
        for line in shipped.splitlines():
            key = line.split(" ", 1)[0]
            if key in ("listener", "allow_anonymous", "password_file", "acl_file", "persistence_location"):
                continue
            lines.append(line)
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                  f"persistence_location {self.workdir}/"]
        if os.geteuid() == 0:  # mosquitto would drop to its own user, who cannot read pytest's private tmp
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def start(self, *, fresh: bool = False) -> None:
        """`fresh`: without the persistence file, so no session survives (a broker replaced or reinstalled)."""
        assert self.binary
        if fresh:
            (self.workdir / "mosquitto.db").unlink(missing_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._listening, 10, f"mosquitto on port {self.port}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash: whatever Mosquitto held only in RAM (it saves every autosave_interval) is gone."""
        if self.proc:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


# The embedded broker refuses anonymous clients: tests log in as a user the shipped ACL does not know, with
# every right (TEST_LOGIN), or as one of the parts (its shipped rights) with TEST_PASSWORD.
TEST_PASSWORD = "test-password"
TEST_LOGIN = ("campusgw-test", TEST_PASSWORD)
os.environ.setdefault("CAMPUSGW_TEST_MQTT_PASSWORD", TEST_PASSWORD)


def broker_config(port: int, user: str = TEST_LOGIN[0]) -> BrokerConfig:
    """A client config for a test broker (embedded or Mosquitto, which lets anyone in here)."""
    return BrokerConfig(url=f"mqtt://127.0.0.1:{port}", username=user, password_env="CAMPUSGW_TEST_MQTT_PASSWORD")


def broker_section(port: int) -> dict[str, Any]:
    """The `broker:` of a site config on a test broker, each part logging in as its own user (the shipped ACL)."""
    return {"url": f"mqtt://127.0.0.1:{port}", "users": {
        part: {"username": mqtt_acl.USER_PREFIX + part, "password_env": "CAMPUSGW_TEST_MQTT_PASSWORD"}
        for part in ("drivers", "rules", "console")}}


class AmqttBroker:
    def __init__(self) -> None:
        self.port = 0
        self.broker: EmbeddedBroker | None = None

    def start(self) -> None:
        users = users_of({part: TEST_PASSWORD for part in (*mqtt_acl.PARTS, "test")})
        self.broker = EmbeddedBroker("127.0.0.1", self.port, users=users,
                                     extra_rules={TEST_LOGIN[0]: [("readwrite", "#")]})
        self.port = self.broker.start()

    def stop(self) -> None:
        if self.broker:
            self.broker.stop()
            self.broker = None


def new_postgres_database() -> str:
    """A fresh database on the local PostgreSQL for one test (dropped afterwards)."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            name = f"cgw_{uuid.uuid4().hex[:12]}"
            conn.execute(f"CREATE DATABASE {name}")
    except Exception as exc:
        missing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
