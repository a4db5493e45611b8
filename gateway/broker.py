"""The embedded MQTT broker (amqtt) for a one-box site with no Mosquitto.

It runs in its own thread and event loop so the drivers' loop never waits on
it. It keeps everything in memory; a crash loses nothing, since the outbox keeps every event until the
rules service has recorded it.

Every client logs in: one user per part of the gateway (campusgw-drivers, -rules, -console) and a
read-only campusgw-reader for Home Assistant and tools, with passwords made at the first start and kept
in `<data_dir>/secrets/` (0600), and the same ACL as the shipped Mosquitto one (gateway/mosquitto.acl),
so any process on the box cannot publish an alarm or a bollard command.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import secrets
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from gateway import mqtt_acl

log = logging.getLogger("campusgw.broker")


class BrokerPortTaken(Exception):
    pass


def passwords(data_dir: Path) -> dict[str, str]:
    """Each part's password for the embedded broker: made once, kept in <data_dir>/secrets (0600)."""
    folder = data_dir / "secrets"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = {}
    for part in mqtt_acl.PARTS:
        path = folder / f"broker-{part}.password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        found[part] = path.read_text().strip()
    return found


def users_of(parts: dict[str, str]) -> dict[str, str]:
    """Usernames of the parts' passwords: {"drivers": pw} -> {"campusgw-drivers": pw}."""
    return {mqtt_acl.USER_PREFIX + part: password for part, password in parts.items()}


def login(part: str, data_dir: Path) -> tuple[str, str]:
    """(username, password) of a part (or 'reader') on the embedded broker."""
    return mqtt_acl.USER_PREFIX + part, passwords(data_dir)[part]


class PasswordAuth(BaseAuthPlugin):
    """Known users with their password; nobody anonymous. The passwords are long random tokens, so a plain
    constant-time comparison is enough (no slow hash on the broker's loop)."""

    @dataclass
    class Config:
        users: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Session) -> bool | None:
        users: dict[str, str] = self.config.users
        expected = users.get(session.username or "")
        given = session.password or ""
        given = given.decode() if isinstance(given, bytes) else given
        if expected is None or not hmac.compare_digest(expected.encode(), str(given).encode()):
            log.warning("embedded broker refused a login as %r from client %r", session.username, session.client_id)
            return False
        return True


class AclCheck(BaseTopicPlugin):
    """The shipped ACL: publish needs write, subscribe and every delivery need read."""

    @dataclass
    class Config:
        rules: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        access: mqtt_acl.Access = "write" if action == Action.PUBLISH else "read"
        ok = mqtt_acl.allowed(self.config.rules, session.username if session else None, access, topic or "")
        if not ok and action != Action.RECEIVE:
            log.warning("embedded broker refused %s on %s to %r", action, topic, session.username if session else None)
        return ok


class _SnapshotDict(dict[str, Any]):
    """Iterated over a copy of its keys: amqtt awaits inside `for topic in self._subscriptions`, and a client
    subscribing meanwhile ended that loop with 'dictionary changed size during iteration'."""

    def __iter__(self) -> Any:
        return iter(list(self.keys()))


class _Broker(Broker):
    """amqtt's broker, with two fixes: the subscriptions dict above, and retained messages go to a client
    only for its own subscriptions (amqtt sends a reconnecting client the retained messages of every
    client's subscriptions, past the read ACL)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict()

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1884, *, users: dict[str, str],
                 extra_rules: mqtt_acl.Rules | None = None) -> None:
        """`users`: username -> password (`users_of()`); `extra_rules`: more ACL entries (tests)."""
        self.users = dict(users)
        self.rules = {**mqtt_acl.shipped(), **(extra_rules or {})}
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
        for name in ("amqtt", "transitions"):  # amqtt logs every packet at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}"}},
            "plugins": {f"{__name__}.PasswordAuth": {"users": self.users},
                        f"{__name__}.AclCheck": {"rules": self.rules}},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._broker = _Broker(config)
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
