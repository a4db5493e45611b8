"""Users, passwords, sessions, API tokens and roles for the console.

Passwords are hashed with scrypt (a standard memory-hard KDF, in Python's
standard library). Sessions and API tokens are random secrets given to the
client once; the database keeps only their SHA-256, so a stolen database copy
opens nothing. Repeated wrong passwords are throttled per client address
(gateway.console.throttle), not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.records.models import ApiToken, User, UserSession, utcnow

Role = Literal["inspector", "guard", "supervisor", "admin"]
# An inspector (督导检查, R43) reads records, reports and the audit log and does nothing else; each page they open
# is audited (gateway.console.web.require).
ROLES: tuple[Role, ...] = ("inspector", "guard", "supervisor", "admin")

# What each role may do: a role, and every role above it; or a set of roles, those only.
PERMISSIONS: dict[str, Role | frozenset[Role]] = {
    "view": "inspector",
    "audit.view": frozenset({"inspector", "supervisor", "admin"}),  # the audit log: not every guard's to read
    "alarm.ack": "guard",
    "alarm.note": "guard",
    "visitor.register": "guard",
    "bollard.raise": "guard",
    "incident.manage": "guard",  # incidents by hand, notes, checklist, reports; hazards found and fixed
    "roster.handover": "guard",
    "notice.ack": "guard",  # a notice from the district read and passed on
    "alarm.reset": "supervisor",
    "alarm.close": "supervisor",
    "incident.promote": "supervisor",  # an alarm confirmed as an incident: its reporting clock starts
    "incident.close": "supervisor",
    "hazard.supervise": "supervisor",  # sign off (checks the repair), reopen, escalate
    "bollard.lower": "supervisor",
    "lockdown.manage": "supervisor",  # start and end a campus lockdown (封校) or its drill
    "bollard.reset": "supervisor",
    "personal_data.full": "supervisor",
    "watchlist.manage": "supervisor",
    "roster.edit": "supervisor",
    "report.submit": "supervisor",  # a monthly or term report sent to the district, in the school's name
    "users.manage": "admin",
    "devices.manage": "admin",
    "config.manage": "admin",
}

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 50 ms and 16 MiB per check on the gatehouse PC
SESSION_IDLE = timedelta(hours=12)  # a guard's shift; a session unused this long ends
MIN_PASSWORD = 10
TOKEN_LIFETIME = timedelta(days=365)  # a machine client's token is renewed yearly (`campusgw user token`)


class AuthError(Exception):
    """A refused login or credential change; the message (a msgid, with `params` filled in after
    translation) is safe to show to the person."""

    def __init__(self, message: str, **params: object) -> None:
        super().__init__(message.format(**params))
        self.message = message
        self.params = params


def allowed(role: str, permission: str) -> bool:
    needed = PERMISSIONS.get(permission)
    if needed is None or role not in ROLES:
        return False
    if isinstance(needed, frozenset):
        return role in needed
    return ROLES.index(role) >= ROLES.index(needed)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            dklen=len(expected))
    return hmac.compare_digest(actual, expected)


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_new_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError("the password must have at least {count} characters", count=MIN_PASSWORD)
    if username.lower() in password.lower():
        raise AuthError("the password must not contain the user name")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# -- users ---------------------------------------------------------------------------------


def add_user(session: Session, username: str, role: Role, password: str, *, display_name: str | None = None,
             language: str | None = None) -> User:
    if role not in ROLES:
        raise AuthError("unknown role '{role}', expected one of: {roles}", role=role, roles=", ".join(ROLES))
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise AuthError("user '{username}' already exists", username=username)
    check_new_password(password, username)
    user = User(username=username, display_name=display_name or username, role=role,
                password_hash=hash_password(password), language=language, failed_logins=0, disabled=False,
                created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def _find(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AuthError("there is no user '{username}'", username=username)
    return user


def set_password(session: Session, username: str, password: str) -> User:
    user = _find(session, username)
    check_new_password(password, username)
    user.password_hash = hash_password(password)
    # A new password ends every session and token: whoever had the old one is out.
    _end_sessions(session, user)
    revoke_tokens(session, username)
    return user


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    """A disabled user cannot log in, and their sessions and tokens stop working at once."""
    user = _find(session, username)
    user.disabled = disabled
    if disabled:
        _end_sessions(session, user)
    return user


def _end_sessions(session: Session, user: User) -> None:
    for old in session.scalars(select(UserSession).where(UserSession.user_id == user.id)):
        session.delete(old)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


# -- login and sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedIn:
    user_id: int
    username: str
    display_name: str
    role: Role
    language: str | None
    csrf: str
    session_id: int | None  # None for an API token


def login(session: Session, username: str, password: str, now: datetime, client: str | None) -> tuple[str, LoggedIn]:
    """Check a password; returns (session secret for the cookie, who) or raises AuthError.

    The same message and the same work for an unknown or disabled user as for a wrong password, so neither
    the answer nor its timing reveals who exists. Throttling is the caller's (gateway.console.throttle)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.disabled:
        verify_password(password, _dummy_hash())  # the same work either way
        raise AuthError("wrong user name or password")
    if not verify_password(password, user.password_hash):
        raise AuthError("wrong user name or password")
    user.last_login = now
    secret, csrf = new_secret(), new_secret()
    row = UserSession(user_id=user.id, token_hash=_digest(secret), csrf=csrf, created_at=now, last_seen=now,
                      client=client)
    session.add(row)
    session.flush()
    return secret, LoggedIn(user.id, user.username, user.display_name, user.role, user.language,  # type: ignore[arg-type]
                            csrf, row.id)


def session_user(session: Session, secret: str, now: datetime) -> LoggedIn | None:
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _digest(secret)))
    if row is None:
        return None
    if now - row.last_seen > SESSION_IDLE:
        session.delete(row)
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    if now - row.last_seen > timedelta(minutes=1):  # not a write per request
        row.last_seen = now
    return LoggedIn(user.id, user.username, user.display_name, user.role, user.language, row.csrf,  # type: ignore[arg-type]
                    row.id)


def logout(session: Session, secret: str) -> None:
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _digest(secret)))
    if row is not None:
        session.delete(row)


def add_token(session: Session, username: str, name: str, now: datetime) -> str:
    """A token for a machine client (sent as 'Authorization: Bearer ...'); shown once, valid TOKEN_LIFETIME."""
    user = _find(session, username)
    secret = "cgw_" + new_secret()
    session.add(ApiToken(user_id=user.id, name=name, token_hash=_digest(secret), created_at=now))
    return secret


def revoke_tokens(session: Session, username: str, name: str | None = None) -> int:
    """Revoke a user's API tokens (only those called `name`, if given); returns how many."""
    user = _find(session, username)
    query = select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))
    tokens = session.scalars(query if name is None else query.where(ApiToken.name == name)).all()
    for token in tokens:
        token.revoked = True
    return len(tokens)


def token_user(session: Session, secret: str, now: datetime) -> LoggedIn | None:
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret),
                                                  ApiToken.revoked.is_(False)))
    if token is None or now - token.created_at > TOKEN_LIFETIME:
        return None
    user = session.get(User, token.user_id)
    if user is None or user.disabled:
        return None
    token.last_used = now
    return LoggedIn(user.id, user.username, user.display_name, user.role, user.language, "", None)  # type: ignore[arg-type]
