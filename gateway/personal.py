"""Visitors' personal data (ID and phone numbers): encrypted at rest, masked for display, matched by a
keyed hash.

AES-256-GCM with a key from the secrets store (`access.personal_data_key_env` / `_file`: 64 hex digits).
Without one the gateway makes a key file in its data directory (mode 0600) on first use and says so:
better than clear text in the database, but a key kept beside the database does not protect a stolen
disk, so a site should keep it elsewhere. The watch-list match compares HMAC-SHA256 of the normalised
number, so the number itself is never compared or indexed in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config import ConfigError, SecretRef

log = logging.getLogger("campusgw.personal")
KEY_FILE = "secrets/personal-data.key"
_VERSION = "v1:"


class PersonalDataError(Exception):
    """A value that cannot be decrypted with this key (another site's backup, a changed key)."""


def normalise_id(number: str) -> str:
    """ID numbers are compared without spaces or dashes, with a final x as X (resident ID check digit)."""
    return re.sub(r"[\s-]", "", number).upper()


PHONE_ERROR = "a phone number has 5 to 20 digits"


def clean_phone(text: str | None) -> str | None:
    """A phone number without spaces, brackets or dashes (+ kept); None when empty; ValueError(PHONE_ERROR)."""
    if text is None or not text.strip():
        return None
    cleaned = re.sub(r"[\s()-]", "", text)
    if not re.fullmatch(r"\+?\d{5,20}", cleaned):
        raise ValueError(PHONE_ERROR)
    return cleaned


def mask(value: str, keep_start: int = 4, keep_end: int = 4) -> str:
    """'440106199001011234' -> '4401**********1234'; '13812345678' -> '138****5678'. Short values keep less."""
    value = value.strip()
    if len(value) <= 4:
        return "*" * len(value)
    if len(value) <= keep_start + keep_end:
        keep_start, keep_end = 1, 1
    return value[:keep_start] + "*" * (len(value) - keep_start - keep_end) + value[len(value) - keep_end:]


def mask_phone(value: str) -> str:
    return mask(value, 3, 4)


class PersonalData:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError(["the personal data key must be 64 hex digits (AES-256)"])
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"campusgw watch list|" + key).digest()

    @classmethod
    def from_config(cls, env: str | None, file: Path | None, data_dir: Path) -> PersonalData:
        value = SecretRef(env=env, file=file).resolve()
        if value is None:
            path = data_dir / KEY_FILE
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(os.urandom(32).hex())
                log.warning("made a new key for visitors' ID and phone numbers in %s; keep a copy of it with the "
                            "backups, and better keep it outside the data directory (access.personal_data_key_file)",
                            path)
            value = path.read_text().strip()
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise ConfigError(["the personal data key is not hex digits (access.personal_data_key_*)"]) from None
        return cls(key)

    def encrypt(self, text: str) -> str:
        nonce = os.urandom(12)
        return _VERSION + base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), None)).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(_VERSION):
            raise PersonalDataError("not a value this gateway encrypted")
        raw = base64.b64decode(token[len(_VERSION):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode()
        except InvalidTag:
            raise PersonalDataError("this value was encrypted with another key") from None

    def id_hash(self, number: str) -> str:
        return hmac.new(self._mac_key, normalise_id(number).encode(), hashlib.sha256).hexdigest()
