"""The records a school must keep, as SQLAlchemy 2 models (SQLite or PostgreSQL).

Times are stored in UTC and shown in the site's zone; every alarm transition
and every operator action is kept with who and when.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from gateway.clock import site_time


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the records: pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JSON}


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    driver: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    zone: Mapped[str | None] = mapped_column(String(64))
    online: Mapped[bool | None] = mapped_column(Boolean)
    last_seen: Mapped[datetime | None]
    status_changed: Mapped[datetime | None]
    offline_reason: Mapped[str | None] = mapped_column(Text)
    test_mode: Mapped[bool] = mapped_column(Boolean, default=False)


class IngestedEvent(Base):
    """Every event the rules service accepted; the unique id makes replays harmless."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    device_time: Mapped[datetime]
    received_at: Mapped[datetime]
    seq: Mapped[int] = mapped_column(Integer)
    historical: Mapped[bool] = mapped_column(Boolean, default=False)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]]

    __table_args__ = (Index("events_device_time", "device_id", "device_time"),)


class QuarantinedEvent(Base):
    """A message the rules service could not accept or store, kept with why, so it blocks nothing and is
    not lost: someone can read it, fix the cause and replay it."""

    __tablename__ = "quarantined_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]


class Alarm(Base):
    """A latched alarm: raised by an event, closed only by a person (see gateway.rules.alarms)."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # What raised it ("<device>:<point>" or "<device>:offline"); at most one open alarm per key.
    key: Mapped[str] = mapped_column(String(140))
    device_id: Mapped[str] = mapped_column(String(64))
    alarm_type: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer)
    latching: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))
    zone: Mapped[str | None] = mapped_column(String(64))
    place: Mapped[str | None] = mapped_column(String(200))
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    raised_at: Mapped[datetime]
    raised_event_id: Mapped[str] = mapped_column(String(36))
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    last_event_at: Mapped[datetime]
    condition_active: Mapped[bool] = mapped_column(Boolean, default=True)
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(String(64))
    cleared_at: Mapped[datetime | None]
    cleared_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(64))
    last_note: Mapped[str | None] = mapped_column(Text)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A guard silenced its sounders (sirens, the PA) without acknowledging it; a new trigger sounds them again.
    silenced_at: Mapped[datetime | None]
    silenced_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("alarms_open", "state", "priority"), Index("alarms_key", "key"))


class AlarmTransition(Base):
    __tablename__ = "alarm_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(36))
    # The system's note as a msgid and its values ({"msg", "params"}), shown in the guard's language
    said: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AuditEntry(Base):
    """Every command and operator action, whether it succeeded or was refused."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(140))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]]
    client: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("audit_at", "at"),)


def utcnow() -> datetime:
    """Now on the site's clock (gateway.clock.site_time: real time, unless a demo or test runs it faster)."""
    return datetime.fromtimestamp(site_time(), UTC)


class User(Base):
    """A console user; the role decides what they may do (gateway.console.auth.PERMISSIONS)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(16))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_login: Mapped[datetime | None]


class UserSession(Base):
    """A logged-in browser; only the SHA-256 of its cookie is kept."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    client: Mapped[str | None] = mapped_column(String(64))


class ApiToken(Base):
    """A token for a machine client, acting as its user; only the SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Notification(Base):
    """A person to reach about an alarm (an escalation step, or an alarm type sent at once), written in the same
    transaction as the step, so a restart loses none; sent through the person's channels in turn until one
    delivers. Each try's receipt goes into the alarm's history."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    person_id: Mapped[str] = mapped_column(String(64))
    person_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer, default=0)  # the escalation step; 0: sent at the raise
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    channel: Mapped[str | None] = mapped_column(String(16))  # the one that delivered
    detail: Mapped[str | None] = mapped_column(Text)  # its receipt, or the last failure


class Lockdown(Base):
    """A campus lockdown (封校) or its drill: who started it and why, who ended it with what note, and for a
    drill the seed's drill record (scenario, participants, findings). At most one is open (ended_at empty)."""

    __tablename__ = "lockdowns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drill: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text)  # a drill's scenario
    started_at: Mapped[datetime]
    started_by: Mapped[str] = mapped_column(String(64))
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"))  # started by this alarm's linkage
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    participants: Mapped[str | None] = mapped_column(Text)
    findings: Mapped[str | None] = mapped_column(Text)


class ReportSubmission(Base):
    """A monthly or term report (with the period's inspections) submitted to the district from the Reports page:
    its figures as submitted, who submitted it. The rules service sends it up the bridge; a resubmission of the
    same period replaces it at the district."""

    __tablename__ = "report_submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # monthly, term
    period: Mapped[str] = mapped_column(String(32))  # 2026-11, 2026-09-01_2027-01-20
    starts: Mapped[datetime]
    ends: Mapped[datetime]
    submitted_at: Mapped[datetime]
    submitted_by: Mapped[str] = mapped_column(String(64))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)


class DistrictNotice(Base):
    """A notice the district sent down (a heightened alert around schools, a lockdown drill): shown on every page
    of the console until someone on duty acknowledges it. The id is the district's, so a notice sent again is the
    same row; the school's view of it goes back up (received, acknowledged by whom)."""

    __tablename__ = "district_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    level: Mapped[str] = mapped_column(String(16))  # alert, drill, info
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime]
    issued_by: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(String(64))


class PoliceMessage(Base):
    """A report for the alarm receiving centre (SIA DC-09), written in the same transaction as what
    caused it, so nothing is lost between the alarm and the link; sent until a receiver acknowledges it."""

    __tablename__ = "police_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # alarm, restore, test (a button test), periodic_test
    alarm_type: Mapped[str] = mapped_column(String(32))
    zone: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # pending, acked, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    acked_path: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("police_messages_state", "state", "id"),)


class PoliceExchange(Base):
    """Every frame sent to a receiver and the answer to it (or that none came): the evidence that the
    centre was told, and when it said so."""

    __tablename__ = "police_exchanges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("police_messages.id"), index=True)  # None: NULL
    path: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)
    sent: Mapped[str] = mapped_column(Text)  # the message before encryption
    sent_at: Mapped[datetime]
    answer: Mapped[str | None] = mapped_column(String(8))  # ACK, NAK, DUH, none
    answered_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("police_exchanges_sent", "sent_at"),)


class PolicePathState(Base):
    """Each path's health and its DC-09 sequence number, which must go on across restarts."""

    __tablename__ = "police_paths"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    up: Mapped[bool | None] = mapped_column(Boolean)
    since: Mapped[datetime | None]
    last_ack_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(Integer, default=0)


class AlarmAttachment(Base):
    """Evidence kept with an alarm: a camera's snapshot at the alarm, and its clip of the seconds before and
    after (`recording` until the camera has finished it)."""

    __tablename__ = "alarm_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # snapshot, clip
    camera: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str] = mapped_column(String(120), index=True)  # the snapshot or clip id
    state: Mapped[str] = mapped_column(String(16))  # ready, recording
    frames: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[int | None] = mapped_column(Integer)  # frames from before the alarm
    at: Mapped[datetime]


class Person(Base):
    """Someone who passes the gate: a student (with a class), staff, or a visitor (one per visit)."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # student, staff, visitor
    name: Mapped[str] = mapped_column(String(100))
    group_name: Mapped[str | None] = mapped_column(String(64))  # a student's class, a staff member's department
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)  # student / staff number (CSV key)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    exit_permit_until: Mapped[datetime | None]  # a student may leave during lessons until then
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Credential(Base):
    """A card (its canonical number, drivers.card_formats) or a QR pass (a random token) of one person."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    value: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # card, qr
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id"), index=True)
    valid_from: Mapped[datetime | None]
    valid_until: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class AccessEvent(Base):
    """Every decision at a reader, to the second, with who, which credential, where, which way, the result
    and why (GB 50396: kept >= 180 days). The id is the reader event's, so a replay is not logged twice."""

    __tablename__ = "access_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime]
    reader: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str | None] = mapped_column(String(8))
    credential: Mapped[str | None] = mapped_column(String(32))  # a card number; a QR pass is named by its visit
    person_id: Mapped[int | None] = mapped_column(Integer)
    person_name: Mapped[str | None] = mapped_column(String(100))  # as it was then
    person_kind: Mapped[str | None] = mapped_column(String(16))
    visit_id: Mapped[int | None] = mapped_column(Integer)
    granted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    passback: Mapped[bool] = mapped_column(Boolean, default=False)
    # The detail for the console in any language: {"msg": an English msgid with {fields}, "params": {...}}
    note: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("access_events_at", "at"), Index("access_events_person", "person_id", "at"),
                      Index("access_events_reader", "reader", "at"))


class Visit(Base):
    """A visitor's registration at the gatehouse. ID and phone numbers are kept encrypted (gateway.personal),
    shown masked, in full only to supervisors (audited), and purged after the retention period."""

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    id_type: Mapped[str] = mapped_column(String(16))  # resident_id, passport, other
    id_number_enc: Mapped[str | None] = mapped_column(Text)
    id_number_masked: Mapped[str | None] = mapped_column(String(32))
    id_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # keyed hash: watch-list match
    phone_enc: Mapped[str | None] = mapped_column(Text)
    phone_masked: Mapped[str | None] = mapped_column(String(32))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    host_name: Mapped[str | None] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(200))
    expected_minutes: Mapped[int] = mapped_column(Integer)
    # registered -> awaiting_approval? -> on_site -> left; refused (watch list or host); no_show
    state: Mapped[str] = mapped_column(String(24))
    registered_at: Mapped[datetime]
    registered_by: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    checked_in_at: Mapped[datetime | None]
    checked_out_at: Mapped[datetime | None]
    checked_out_by: Mapped[str | None] = mapped_column(String(64))  # a reader id, or the guard
    overstay_alerted_at: Mapped[datetime | None]
    photo_ref: Mapped[str | None] = mapped_column(String(120))
    purged_at: Mapped[datetime | None]

    __table_args__ = (Index("visits_state", "state", "registered_at"),)


class WatchEntry(Base):
    """A high-risk person (高危人员), matched by a keyed hash of the ID number; a hit refuses the pass and
    raises a top-priority alarm."""

    __tablename__ = "watchlist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    id_number_enc: Mapped[str] = mapped_column(Text)
    id_number_masked: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DutyAssignment(Base):
    """Someone on a shift of the duty roster (值班表): a guard, the leader on duty (领导带班), a duty teacher
    (值周) or a volunteer. Who is on duty now drives alarm escalation."""

    __tablename__ = "duty_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10))  # the local date the shift starts on, YYYY-MM-DD
    shift: Mapped[str] = mapped_column(String(64))  # a duty.shifts id
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    role: Mapped[str] = mapped_column(String(16))  # guard, leader, teacher, volunteer
    name: Mapped[str] = mapped_column(String(100))
    username: Mapped[str | None] = mapped_column(String(64))  # the console user, when they have one
    phone: Mapped[str | None] = mapped_column(String(32))
    post: Mapped[str | None] = mapped_column(String(32))  # gate, patrol
    position: Mapped[int] = mapped_column(Integer, default=0)  # order of notification within the shift
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("duty_assignments_time", "starts_at", "ends_at"),)


class Handover(Base):
    """A shift handover (交接班): who handed over to whom, and the open items carried over."""

    __tablename__ = "handovers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    shift: Mapped[str] = mapped_column(String(64))
    from_name: Mapped[str] = mapped_column(String(100))
    to_name: Mapped[str] = mapped_column(String(100))
    notes: Mapped[str] = mapped_column(Text)
    open_items: Mapped[dict[str, Any]]  # {"items": [{"text", "done"}]}
    by: Mapped[str] = mapped_column(String(64))


class PatrolRound(Base):
    """One round of a route: due at a time, walked by a guard, with each checkpoint's result named."""

    __tablename__ = "patrol_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    route: Mapped[str] = mapped_column(String(64))
    shift: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))
    number: Mapped[int] = mapped_column(Integer)  # 1st, 2nd ... round of the route in the shift
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # pending, in_progress, complete, incomplete, expired
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    guard: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[dict[str, Any]]  # {"missed": [...], "late": [...], "out_of_order": [...], "visited": [...]}
    alerted_at: Mapped[datetime | None]
    alarm_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("patrol_rounds_due", "due_at"), Index("patrol_rounds_state", "state"))


class PatrolScan(Base):
    """Every checkpoint scan, with the device's time and the server's (guard-tour practice)."""

    __tablename__ = "patrol_scans"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the event id
    checkpoint: Mapped[str | None] = mapped_column(String(64))  # None: a tag that is no checkpoint
    reader: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str | None] = mapped_column(String(128))
    device_time: Mapped[datetime]
    server_time: Mapped[datetime]
    round_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16))  # ok, late, out_of_order, repeat, unplanned, unknown

    __table_args__ = (Index("patrol_scans_time", "device_time"),)


class Incident(Base):
    """An entry of the safety ledger (安全台账): promoted from an alarm or entered by hand."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))  # minor, serious, major
    title: Mapped[str] = mapped_column(String(200))
    place: Mapped[str | None] = mapped_column(String(200))
    people: Mapped[str | None] = mapped_column(Text)  # the people involved, as written
    occurred_at: Mapped[datetime]
    confirmed_at: Mapped[datetime]  # reporting deadlines run from here
    report_due_at: Mapped[datetime]
    reported_at: Mapped[datetime | None]
    reported_by: Mapped[str | None] = mapped_column(String(64))
    written_due_at: Mapped[datetime | None]
    written_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))  # open, reported, closed
    alarm_id: Mapped[int | None] = mapped_column(Integer, index=True)
    alerts: Mapped[dict[str, Any]]  # deadline alerts already given: {"report:before": iso, ...}
    forwarded_at: Mapped[datetime | None]  # the centre school passed the report on to the education bureau
    cause: Mapped[str | None] = mapped_column(Text)  # the written report (R34): 事发原因
    handling: Mapped[str | None] = mapped_column(Text)  # 处理情况
    lessons: Mapped[str | None] = mapped_column(Text)  # 应从中吸取教训
    measures: Mapped[str | None] = mapped_column(Text)  # 整改措施
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    closed_at: Mapped[datetime | None]

    __table_args__ = (Index("incidents_time", "occurred_at"),)


class IncidentEntry(Base):
    """The incident's timeline: notes, reports, attachments (snapshots), checklist ticks, each with who and when."""

    __tablename__ = "incident_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # note, step, report, written, attachment, alert
    text: Mapped[str] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(200))  # a step's index, a snapshot id


class Hazard(Base):
    """A hazard (隐患) found -> assigned -> fixed -> signed off, with dates; from an inspection, a patrol, or
    outside inspectors (police, education, fire)."""

    __tablename__ = "hazards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int | None] = mapped_column(Integer, index=True)
    source: Mapped[str] = mapped_column(String(16))  # inspection, patrol, police, education, fire, other
    place: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    found_at: Mapped[datetime]
    found_by: Mapped[str] = mapped_column(String(64))
    assigned_to: Mapped[str | None] = mapped_column(String(100))
    measures: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    fixed_at: Mapped[datetime | None]
    fixed_by: Mapped[str | None] = mapped_column(String(64))
    signed_off_at: Mapped[datetime | None]
    signed_off_by: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # found, assigned, fixed, signed_off, escalated
    inspector: Mapped[str | None] = mapped_column(String(100))  # who found it, for outside inspectors: name, unit
    alerts: Mapped[dict[str, str] | None] = mapped_column(JSON)  # due-date alerts given: before/due -> when (ISO)

    __table_args__ = (Index("hazards_found", "found_at"),)


class Inspection(Base):
    """A hazard inspection task (隐患排查): monthly, term start (within two weeks), or by hand."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # monthly, term_start, term_middle, term_end
    period: Mapped[str] = mapped_column(String(32), unique=True)  # "2026-11" / "term-2027-02-20-mid": one each
    due_at: Mapped[datetime]
    done_at: Mapped[datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)


class InspectionItem(Base):
    """One checklist item of an inspection, passed or failed, with a note and a photo (R30, R31); a failed one
    opened the hazard `hazard_id`."""

    __tablename__ = "inspection_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    group: Mapped[str] = mapped_column(String(32))
    item: Mapped[str] = mapped_column(String(200))
    passed: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    photo: Mapped[bytes | None] = mapped_column(LargeBinary)
    photo_type: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(64))
    hazard_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("inspection_items_one", "inspection_id", "group", "item", unique=True),)


class DutyLeave(Base):
    """A leave request for a duty assignment (请假, R05): approved by the leader on duty (or a supervisor) only
    once a replacement is named, who then takes the assignment; the guard leaves the post only then."""

    __tablename__ = "duty_leaves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("duty_assignments.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))  # who asked to leave (the assignment's person then)
    reason: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime]
    requested_by: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # requested, approved, refused
    replacement: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(64))


class Guardian(Base):
    """A student's parent or guardian (R42) and whether they may collect the child; the phone kept encrypted and
    shown masked (gateway.personal), as visitors' are."""

    __tablename__ = "guardians"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    relation: Mapped[str] = mapped_column(String(16))  # father, mother, grandparent, relative, other
    phone_enc: Mapped[str | None] = mapped_column(Text)
    phone_masked: Mapped[str | None] = mapped_column(String(32))
    may_collect: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class Pickup(Base):
    """A child collected at the gate desk at dismissal (接送): by whom, whether they are authorised, and the guard."""

    __tablename__ = "pickups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    guardian_id: Mapped[int | None] = mapped_column(Integer)
    collector: Mapped[str] = mapped_column(String(100))
    authorised: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(64))


class PublicReport(Base):
    """A hazard or a concern reported on the public page (举报渠道, R38) by a teacher, student, parent or passer-by,
    maybe anonymously: unconfirmed until the safety officer confirms it (a hazard then) or sets it aside. The
    reporter follows it by its reference."""

    __tablename__ = "public_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # hazard, concern
    place: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    contact_enc: Mapped[str | None] = mapped_column(Text)  # who and how to reach them, if they said (encrypted)
    photo: Mapped[bytes | None] = mapped_column(LargeBinary)
    photo_type: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # unconfirmed, confirmed, set_aside
    answer: Mapped[str | None] = mapped_column(Text)  # what the reporter sees with the state
    handled_by: Mapped[str | None] = mapped_column(String(64))
    handled_at: Mapped[datetime | None]
    hazard_id: Mapped[int | None] = mapped_column(Integer)


class MaintenanceItem(Base):
    """An equipment fault from device health, to be repaired within the target (24 h)."""

    __tablename__ = "maintenance_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    alarm_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    fault: Mapped[str] = mapped_column(String(200))
    opened_at: Mapped[datetime]
    due_at: Mapped[datetime]
    fixed_at: Mapped[datetime | None]
    fixed_by: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # open, fixed


class SitePlan(Base):
    """A plan of the site or of one floor (an image an admin uploaded), on which devices are placed."""

    __tablename__ = "site_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    image: Mapped[bytes] = mapped_column(LargeBinary)  # kept in the database: in every backup with the records
    media_type: Mapped[str] = mapped_column(String(32))  # image/png, image/jpeg
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime]


class PlanPosition(Base):
    """Where a device is on a plan, as fractions of the image's width and height (any screen size)."""

    __tablename__ = "plan_positions"

    plan_id: Mapped[int] = mapped_column(ForeignKey("site_plans.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    placed_by: Mapped[str] = mapped_column(String(64))
    placed_at: Mapped[datetime]
