"""The district console's users, sessions and audit log, in the district's PostgreSQL beside its records.

Passwords are hashed as the school console hashes them (scrypt, gateway.console.auth); sessions are random
secrets given to the browser once, of which the database keeps only the SHA-256, so a copy of the district's
database opens nothing, and several console processes behind one proxy share the sessions. There is no
session-signing key: nothing secret lives in a file or the repository.

Roles are a set of permissions each, not a ladder: a police liaison is not "more" than an inspector, and an
action that comes later ("acknowledge a school's incident report") names the roles that may do it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    MetaData,
    Table,
    Text,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from gateway.console import auth

metadata = MetaData()
users = Table(
    "district_users", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("username", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("language", Text),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_login", DateTime(timezone=True)),
)
sessions = Table(
    "district_sessions", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("district_users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),  # SHA-256 of the cookie's secret
    Column("csrf", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("client", Text),
)
audit_log = Table(  # who did or saw what, when: logins, refusals, and every page an inspector opened
    "district_audit", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("username", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("client", Text),
)

ROLES = ("duty_officer", "police_liaison", "inspector")
# Which roles may do what; a route asks for its permission with require("report.ack").
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),  # every page, and the monthly summary's download
    "alert.ack": frozenset({"duty_officer"}),  # acknowledge a district alert (an incident report overdue)
    "report.ack": frozenset({"duty_officer"}),  # acknowledge a school's incident report (sent down to it)
    "notice.issue": frozenset({"duty_officer"}),  # a notice sent down to the schools (heightened alert, a drill)
}
WATCHED_ROLES = frozenset({"inspector"})  # every page such a user opens is audited (who saw what, when)
SESSION_IDLE = timedelta(hours=12)  # a duty officer's shift; a session unused this long ends


@dataclass(frozen=True)
class Officer:
    """Who is behind a request: a logged-in person of the district."""

    user_id: int
    username: str
    display_name: str
    role: str
    language: str | None
    csrf: str
    session_id: int


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, frozenset())


def watched(role: str) -> bool:
    """Whether this role's every page view goes into the audit log."""
    return role in WATCHED_ROLES


def create_tables(engine: Engine) -> None:
    """The users', sessions' and audit tables; safe to run again (`district init` and each console start do)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('campusgw district console schema'))"))
        metadata.create_all(conn)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def audit(conn: Connection, username: str, action: str, target: str, result: str, detail: dict[str, Any],
          now: datetime, client: str | None = None) -> None:
    conn.execute(audit_log.insert().values(at=now, username=username[:64], action=action, target=target[:300],
                                           result=result, detail=detail, client=client))


def add_user(conn: Connection, username: str, role: str, password: str, now: datetime, *,
             display_name: str | None = None, language: str | None = None) -> None:
    """A new user; an unknown role, a taken name or a weak password is refused with an AuthError."""
    if role not in ROLES:
        raise auth.AuthError("unknown role '{role}', expected one of: {roles}", role=role, roles=", ".join(ROLES))
    if conn.scalar(select(users.c.id).where(users.c.username == username)) is not None:
        raise auth.AuthError("user '{username}' already exists", username=username)
    auth.check_new_password(password, username)
    conn.execute(users.insert().values(username=username, display_name=display_name or username, role=role,
                                       password_hash=auth.hash_password(password), language=language,
                                       disabled=False, created_at=now))


def _user_id(conn: Connection, username: str) -> int:
    found = conn.scalar(select(users.c.id).where(users.c.username == username))
    if found is None:
        raise auth.AuthError("there is no user '{username}'", username=username)
    return int(found)


def set_password(conn: Connection, username: str, password: str) -> None:
    """A new password ends the user's sessions: whoever had the old one is out."""
    user_id = _user_id(conn, username)
    auth.check_new_password(password, username)
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=auth.hash_password(password)))
    conn.execute(delete(sessions).where(sessions.c.user_id == user_id))


def set_disabled(conn: Connection, username: str, disabled: bool) -> None:
    """A disabled user cannot log in, and their sessions stop working at once."""
    user_id = _user_id(conn, username)
    conn.execute(update(users).where(users.c.id == user_id).values(disabled=disabled))
    if disabled:
        conn.execute(delete(sessions).where(sessions.c.user_id == user_id))


def list_users(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(
        select(users.c.username, users.c.display_name, users.c.role, users.c.disabled, users.c.last_login)
        .order_by(users.c.username))]


_DUMMY_HASH: list[str] = []  # made once, on the first login of an unknown name


def login(conn: Connection, username: str, password: str, now: datetime, client: str | None) -> tuple[str, Officer]:
    """Check a password: (the session's secret for the cookie, who) or an AuthError. An unknown or disabled name
    costs the same work and gets the same answer as a wrong password, so neither tells who exists."""
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None or row.disabled:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(auth.hash_password(secrets.token_urlsafe(16)))
        auth.verify_password(password, _DUMMY_HASH[0])
        raise auth.AuthError("wrong user name or password")
    if not auth.verify_password(password, row.password_hash):
        raise auth.AuthError("wrong user name or password")
    secret, csrf = auth.new_secret(), auth.new_secret()
    conn.execute(update(users).where(users.c.id == row.id).values(last_login=now))
    session_id = conn.scalar(sessions.insert().values(user_id=row.id, token_hash=_digest(secret), csrf=csrf,
                                                      created_at=now, last_seen=now, client=client)
                             .returning(sessions.c.id))
    return secret, Officer(row.id, row.username, row.display_name, row.role, row.language, csrf, int(session_id))


def session_user(conn: Connection, secret: str, now: datetime) -> Officer | None:
    """The person a session cookie belongs to, or None (unknown, idle too long, or the user disabled)."""
    row = conn.execute(select(sessions.c.id.label("session_id"), sessions.c.csrf, sessions.c.last_seen, users)
                       .join(users, users.c.id == sessions.c.user_id)
                       .where(sessions.c.token_hash == _digest(secret))).first()
    if row is None:
        return None
    if now - row.last_seen > SESSION_IDLE:
        conn.execute(delete(sessions).where(sessions.c.id == row.session_id))
        return None
    if row.disabled or row.role not in ROLES:
        return None
    if now - row.last_seen > timedelta(minutes=1):  # not a write per request
        conn.execute(update(sessions).where(sessions.c.id == row.session_id).values(last_seen=now))
    return Officer(row.id, row.username, row.display_name, row.role, row.language, row.csrf, int(row.session_id))


def set_language(conn: Connection, user_id: int, language: str) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(language=language))


def logout(conn: Connection, secret: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.token_hash == _digest(secret)))
