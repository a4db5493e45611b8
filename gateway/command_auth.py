"""Commands a driver can prove were authorised: signed by the console or the rules service, checked by the
drivers' supervisor.

Only the console (after its role check and audit row) and the rules service (linkage, schedules, the
gate) make commands. The broker's ACL says who may publish on a command topic; this says more: each
command carries an HMAC-SHA256, with a key only those parts hold, over everything that decides what it
does (site, kind, device, name, args, issued_by, correlation id), when it was made and a nonce. The
supervisor refuses a command that is unsigned, signed with another key, older than MAX_AGE_S, replayed,
or sent to a device under another kind than its own, so a stolen broker password alone cannot move a
bollard, and `issued_by` is no longer taken on trust. Pure, apart from making the key file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from gateway import topics

# A command older than this (or this far in the future) is refused: a held or replayed one could move a
# bollard nobody asked to move now. The parts' clocks are NTP-synchronised (GB 50396: < 5 s a day).
MAX_AGE_S = 30.0
KEY_FILE = "secrets/command.key"


def load_key(data_dir: Path, key_file: Path | None = None, key_env: str | None = None) -> bytes:
    """The command key: from `key_env` (hex) or `key_file`, else <data_dir>/secrets/command.key, made once
    (0600). Parts on different machines must share it (copy the file and name it in gateway.command_key_file)."""
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise ValueError(f"environment variable {key_env} is not set (gateway.command_key_env)")
        return bytes.fromhex(value.strip())
    path = key_file or data_dir / KEY_FILE
    if key_file is None and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another part made it a moment ago
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def _message(site: str, kind: str, device: str, name: str, body: dict[str, Any]) -> bytes:
    fields = [site, kind, device, name, body.get("correlation_id"), body.get("issued_by"), body.get("args") or {},
              body.get("at"), body.get("nonce")]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, site: str, kind: str, device: str, name: str, body: dict[str, Any],
         now: float | None = None) -> dict[str, Any]:
    """`body` with `at`, `nonce` and `mac` added."""
    signed = {**body, "at": time.time() if now is None else now, "nonce": secrets.token_hex(12)}
    signed["mac"] = hmac.new(key, _message(site, kind, device, name, signed), hashlib.sha256).hexdigest()
    return signed


def sign_topic(key: bytes, topic: str, body: dict[str, Any]) -> dict[str, Any]:
    """Sign a command for campus/v1/<site>/<kind>/<device>/cmd/<name>."""
    command = topics.parse(topic)
    if not isinstance(command, topics.CommandTopic):
        raise ValueError(f"not a command topic: {topic}")
    return sign(key, command.site, command.kind, command.device, command.name, body)


class Verifier:
    """Checks commands for one site's devices; remembers nonces long enough to refuse a replay."""

    def __init__(self, key: bytes, site: str, kinds: dict[str, str]) -> None:
        self.key = key
        self.site = site
        self.kinds = kinds  # device id -> its kind
        self._nonces: dict[str, float] = {}

    def refusal(self, kind: str, device: str, name: str, body: dict[str, Any], now: float) -> str | None:
        """Why the command must not be obeyed, or None."""
        own = self.kinds.get(device)
        if own is not None and own != kind:
            return f"device {device} is a {own}, not a {kind}: a command under another kind is refused"
        mac, at, nonce = body.get("mac"), body.get("at"), body.get("nonce")
        if not isinstance(mac, str) or not isinstance(nonce, str) or not isinstance(at, int | float):
            return "unsigned command (only the console and the rules service may command devices)"
        expected = hmac.new(self.key, _message(self.site, kind, device, name, body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, expected):
            return ("bad signature: not made with this gateway's command key (parts on other machines need a copy "
                    "of secrets/command.key)")
        if abs(now - at) > MAX_AGE_S:
            return f"stale command, made {now - at:.0f} s ago (more than {MAX_AGE_S:.0f} s, or the clocks differ)"
        self._nonces = {n: t for n, t in self._nonces.items() if now - t <= 2 * MAX_AGE_S}
        if nonce in self._nonces:
            return "replayed command (its nonce was seen before)"
        self._nonces[nonce] = now
        return None
