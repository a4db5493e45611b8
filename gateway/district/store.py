"""The district's records in PostgreSQL: every school's events in monthly partitions (retention drops whole
months), the schools with their last contact, and what could not be read (kept, never silently dropped).

An event's primary key is (id, time): a message delivered twice (a redelivery after a worker died before
its ack, a bridge's resend after a failover) is the same row and `ON CONFLICT DO NOTHING` absorbs it. The
time is in the key because PostgreSQL's partitioned tables need the partition column in every unique key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert

metadata = MetaData()
events = Table(
    "district_events", metadata,
    Column("id", Text, primary_key=True),
    Column("time", DateTime(timezone=True), primary_key=True),  # the device's time of the event
    Column("site", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("class", Text, nullable=False),  # alarm, status, telemetry (gateway.events)
    Column("test", Boolean, nullable=False),
    Column("historical", Boolean, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("data", JSONB, nullable=False),
    postgresql_partition_by="RANGE (time)",
)
schools = Table(
    "district_schools", metadata,
    Column("site", Text, primary_key=True),
    Column("first_contact", DateTime(timezone=True), nullable=False),
    Column("last_contact", DateTime(timezone=True), nullable=False),
    Column("events", BigInteger, nullable=False),
)
alarms = Table(  # each school's alarms as its rules service last announced them (the newest revision wins)
    "district_alarms", metadata,
    Column("site", Text, primary_key=True),
    Column("alarm_id", BigInteger, primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("alarm_type", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("place", Text),
    Column("device", Text),
    Column("test", Boolean, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("view", JSONB, nullable=False),
    # The open ones, which the console's schools list counts every poll, apart from the years of closed ones.
    Index("district_alarms_open", "site", postgresql_where=text(
        "state IN ('active_unack', 'active_ack', 'cleared_unack', 'cleared_ack')")),
)
devices = Table(  # each device's availability (and each gateway's own, kind `gateway`) as last heard
    "district_devices", metadata,
    Column("site", Text, primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("device", Text, primary_key=True),
    Column("online", Boolean, nullable=False),
    Column("since", DateTime(timezone=True)),  # the school's time of the change, when it said
    Column("seq", BigInteger, nullable=False),  # the stream's sequence: the order the cluster stored them in
    Column("received_at", DateTime(timezone=True), nullable=False),
    # What the schools list reads every poll: the gateways and the devices offline, not 300 a school.
    Index("district_devices_trouble", "site", postgresql_where=text("NOT online OR kind = 'gateway'")),
)
facts = Table(  # a school's other state, each retained at the school: bridge (up/down), police (paths), lockdown
    "district_school_facts", metadata,
    Column("site", Text, primary_key=True),
    Column("fact", Text, primary_key=True),
    Column("value", JSONB, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
incidents = Table(  # each school's incidents as it reported them up (逐级上报); the newest revision wins
    "district_incidents", metadata,
    Column("site", Text, primary_key=True),
    Column("incident_id", BigInteger, primary_key=True),
    Column("revision", BigInteger, nullable=False),
    Column("category", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("place", Text),
    Column("state", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("report_due_at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("school_saw_ack_at", DateTime(timezone=True)),  # the school's view shows the district's ack
    Column("view", JSONB, nullable=False),
    Column("first_received_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The district's own: who acknowledged the report, and when it was last sent down to the school.
    Column("acked_by", Text),
    Column("acked_at", DateTime(timezone=True)),
    Column("ack_sent_at", DateTime(timezone=True)),
)
submissions = Table(  # monthly and term reports the schools submitted, with their figures (the newest wins)
    "district_submissions", metadata,
    Column("site", Text, primary_key=True),
    Column("kind", Text, primary_key=True),  # monthly, term
    Column("period", Text, primary_key=True),  # 2026-11, 2026-09-01_2027-01-20
    Column("submission_id", BigInteger, nullable=False),  # the school's: a resubmission has a higher one
    Column("starts", DateTime(timezone=True), nullable=False),
    Column("ends", DateTime(timezone=True), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("submitted_by", Text, nullable=False),
    Column("figures", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
alerts = Table(  # the district's own alarms: an incident report overdue (one per incident and kind)
    "district_alerts", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("site", Text, nullable=False),
    Column("kind", Text, nullable=False),  # report_overdue
    Column("ref", Text, nullable=False),  # incident:<id>
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("cleared_at", DateTime(timezone=True)),  # the cause gone (the report came)
    Column("acked_by", Text),
    Column("acked_at", DateTime(timezone=True)),
    UniqueConstraint("site", "kind", "ref"),
)
notices = Table(  # what the district sends down to the schools: a heightened alert, a lockdown drill (下发通知)
    "district_notices", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("level", Text, nullable=False),  # alert, drill, info (gateway.records.notices.LEVELS)
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("issued_by", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)
notice_receipts = Table(  # one per notice and school addressed: sent down until the school's view says it came
    "district_notice_receipts", metadata,
    Column("notice_id", BigInteger, primary_key=True),
    Column("site", Text, primary_key=True),
    Column("sent_at", DateTime(timezone=True)),  # last sent down
    Column("sends", Integer, nullable=False, server_default=text("0")),
    Column("received_at", DateTime(timezone=True)),  # the school's time of receipt, from its view
    Column("acked_by", Text),  # who at the school acknowledged it, and when (its view again)
    Column("acked_at", DateTime(timezone=True)),
    Index("district_notice_receipts_waiting", "notice_id", postgresql_where=text("received_at IS NULL")),
)
rejected = Table(
    "district_rejected", metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("subject", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),  # as text, bad bytes replaced: for a person to read
)
OTHER = "district_events_other"  # the default partition: times far from now (a school's clock years off)
MONTHS_BACK = 13  # partitions made ahead of need: this many months back and MONTHS_AHEAD ahead
MONTHS_AHEAD = 3


@dataclass
class Written:
    stored: int  # new rows
    duplicates: int  # rows the district had already
    rejected: int


def month_of(at: datetime) -> tuple[int, int]:
    at = at.astimezone(UTC)
    return at.year, at.month


def _add(month: tuple[int, int], n: int) -> tuple[int, int]:
    total = month[0] * 12 + month[1] - 1 + n
    return total // 12, total % 12 + 1


def partition_name(month: tuple[int, int]) -> str:
    return f"district_events_{month[0]:04d}_{month[1]:02d}"


def months_around(now: datetime) -> list[tuple[int, int]]:
    this = month_of(now)
    return [_add(this, n) for n in range(-MONTHS_BACK, MONTHS_AHEAD + 1)]


def create_schema(engine: Engine, now: datetime | None = None) -> None:
    """The tables and the partitions around now; safe to run again (each worker does at start)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('campusgw district schema'))"))  # one at a time
        metadata.create_all(conn)
        for table in metadata.sorted_tables:  # an index added since the table was made (create_all skips them)
            for index in table.indexes:
                index.create(conn, checkfirst=True)
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {OTHER} PARTITION OF district_events DEFAULT"))
        for month in months_around(now or datetime.now(UTC)):
            ensure_partition(conn, month)


def existing_partitions(conn: Connection) -> set[str]:
    return set(conn.scalars(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'district_events'")))


def ensure_partition(conn: Connection, month: tuple[int, int]) -> None:
    """A month's partition. Rows of that month already in the default partition (a school whose clock was
    months ahead) move into it: PostgreSQL refuses to attach a partition the default holds rows for."""
    name = partition_name(month)
    if name in existing_partitions(conn):
        return
    start, end = datetime(*month, 1, tzinfo=UTC), datetime(*_add(month, 1), 1, tzinfo=UTC)
    conn.execute(text(f"CREATE TABLE {name} (LIKE district_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = {"start": start, "end": end}
    conn.execute(text(f"INSERT INTO {name} SELECT * FROM {OTHER} WHERE time >= :start AND time < :end"), moved)
    conn.execute(text(f"DELETE FROM {OTHER} WHERE time >= :start AND time < :end"), moved)
    conn.execute(text(f"ALTER TABLE district_events ATTACH PARTITION {name} "
                      f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"))


def maintain(engine: Engine, retention_months: int, now: datetime | None = None) -> list[str]:
    """The partitions around now made, and the months past retention dropped; returns the dropped ones."""
    now = now or datetime.now(UTC)
    create_schema(engine, now)
    return drop_months_before(engine, _add(month_of(now), -retention_months))


def drop_months_before(engine: Engine, keep_from: tuple[int, int]) -> list[str]:
    """Retention: whole months older than `keep_from` dropped (fast, no row-by-row delete)."""
    dropped = []
    with engine.begin() as conn:
        for name in sorted(existing_partitions(conn)):
            if name == OTHER:
                continue
            month = (int(name[-7:-3]), int(name[-2:]))
            if month < keep_from:
                conn.execute(text(f"DROP TABLE {name}"))
                dropped.append(name)
    return dropped


EVENT_COLUMNS = ("id", "time", "site", "kind", "device", "type", "class", "test", "historical", "received_at", "data")
INSERT_EVENTS = (f"INSERT INTO district_events ({', '.join(EVENT_COLUMNS)}) VALUES "
                 f"({', '.join(['%s'] * len(EVENT_COLUMNS))}) ON CONFLICT DO NOTHING RETURNING site")
TOUCH_SCHOOLS = text(
    "INSERT INTO district_schools (site, first_contact, last_contact, events) "
    "SELECT site, :now, :now, n FROM unnest(CAST(:sites AS text[]), CAST(:counts AS bigint[])) AS t(site, n) "
    "ON CONFLICT (site) DO UPDATE SET last_contact = greatest(district_schools.last_contact, excluded.last_contact), "
    "events = district_schools.events + excluded.events")


def write(conn: Connection, rows: list[dict[str, Any]], bad: list[dict[str, Any]], now: datetime) -> Written:
    """One batch in the caller's transaction: the events (duplicates absorbed), the schools' last contact, and
    the messages that were no event. Returns what was new."""
    per_site: dict[str, int] = dict.fromkeys((row["site"] for row in rows), 0)
    new = 0
    if rows:
        # psycopg's own executemany (one short statement, pipelined), not SQLAlchemy's insertmanyvalues: its
        # statement of 500 rows' placeholders is parsed again by psycopg for every batch, which took two thirds
        # of a worker's CPU (121 -> 40 us an event, decoding included).
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.executemany(INSERT_EVENTS, [(*(r[c] for c in EVENT_COLUMNS[:-1]), Jsonb(r["data"])) for r in rows],
                               returning=True)
            while True:
                for (site,) in cursor.fetchall():
                    per_site[site] += 1
                    new += 1
                if not cursor.nextset():
                    break
    _touch_schools(conn, per_site, now)
    if bad:
        conn.execute(rejected.insert(), bad)
    return Written(new, len(rows) - new, len(bad))


def _touch_schools(conn: Connection, new_events: dict[str, int], now: datetime) -> None:
    """Each school heard from now: its last contact, and how many new events it sent. One statement of the same
    text whatever the number of schools (in the order of their ids, so two workers never wait on each other)."""
    if not new_events:
        return
    sites = sorted(new_events)
    conn.execute(TOUCH_SCHOOLS, {"now": now, "sites": sites, "counts": [new_events[s] for s in sites]})


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(events)) or 0)


def write_alarms(conn: Connection, rows: list[dict[str, Any]], bad: list[dict[str, Any]], now: datetime) -> Written:
    """Alarm views in the caller's transaction: a view replaces the district's copy only if it is newer."""
    stored = _upsert_newest(conn, alarms, rows, ("site", "alarm_id"), "revision",
                            ("state", "alarm_type", "priority", "place", "device", "test", "raised_at", "received_at",
                             "view"))
    _touch_schools(conn, {row["site"]: 0 for row in rows}, now)
    if bad:
        conn.execute(rejected.insert(), bad)
    return Written(stored, len(rows) - stored, len(bad))


def _upsert_newest(conn: Connection, table: Table, rows: list[dict[str, Any]], key: tuple[str, ...], order: str,
                   columns: tuple[str, ...]) -> int:
    """Rows that replace the district's copy only where they are newer by `order` (a revision, a stream
    sequence): views of one thing may come out of order (a redelivery, a resend after a failover), and one
    statement cannot touch a row twice, so the newest of the batch per key goes. Returns how many changed."""
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in newest or row[order] > newest[k][order]:
            newest[k] = row
    if not newest:
        return 0
    result = conn.execute(_upsert_statement(table, key, order, columns), list(newest.values()))
    return len(result.all())


@cache
def _upsert_statement(table: Table, key: tuple[str, ...], order: str, columns: tuple[str, ...]) -> Any:
    """One statement per table, compiled once and run for each batch's rows (a multi-VALUES statement built per
    batch was compiled every time: most of the 1.7 ms of CPU one alarm view took)."""
    upsert = insert(table)
    return upsert.on_conflict_do_update(
        index_elements=[table.c[c] for c in key], set_={c: upsert.excluded[c] for c in (order, *columns)},
        where=table.c[order] < upsert.excluded[order]).returning(table.c.site)


def write_state(conn: Connection, rows: list[dict[str, Any]], bad: list[dict[str, Any]], now: datetime) -> Written:
    """Devices' availability and the schools' facts in the caller's transaction; a message replaces what the
    district holds only if the cluster stored it later (a redelivery or a bridge's resend is older)."""
    stored = 0
    for table, key, values in ((devices, ("site", "kind", "device"), ("online", "since", "received_at")),
                               (facts, ("site", "fact"), ("value", "received_at"))):
        chosen = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == table.name]
        stored += _upsert_newest(conn, table, chosen, key, "seq", values)
    _touch_schools(conn, {row["site"]: 0 for row in rows}, now)
    if bad:
        conn.execute(rejected.insert(), bad)
    return Written(stored, len(rows) - stored, len(bad))


OPEN = ("active_unack", "active_ack", "cleared_unack", "cleared_ack")


def schools_overview(conn: Connection) -> list[dict[str, Any]]:
    """Every school with its last contact and open alarms (tests apart), the worst first: most urgent open alarm
    (lowest priority number), then the most unacknowledged, then the longest silent."""
    open_ = (select(alarms.c.site, func.count().label("open"),
                    func.count().filter(alarms.c.state.in_(("active_unack", "cleared_unack"))).label("unacked"),
                    func.min(alarms.c.priority).label("worst"))
             .where(alarms.c.state.in_(OPEN), alarms.c.test.is_(False)).group_by(alarms.c.site).subquery())
    rows = conn.execute(select(schools.c.site, schools.c.last_contact, schools.c.events, open_.c.open,
                               open_.c.unacked, open_.c.worst)
                        .join(open_, open_.c.site == schools.c.site, isouter=True)).all()
    found = [{"site": r.site, "last_contact": r.last_contact, "events": r.events, "open": r.open or 0,
              "unacked": r.unacked or 0, "worst_priority": r.worst} for r in rows]
    return sorted(found, key=lambda s: (s["worst_priority"] is None, s["worst_priority"] or 0, -s["unacked"],
                                        s["last_contact"]))


INCIDENT_COLUMNS = ("revision", "category", "severity", "title", "place", "state", "occurred_at", "report_due_at",
                    "reported_at", "closed_at", "school_saw_ack_at", "view", "received_at")


def write_incidents(conn: Connection, rows: list[dict[str, Any]], bad: list[dict[str, Any]],
                    now: datetime) -> Written:
    """Incident views in the caller's transaction: the newest revision of each wins; the district's own columns
    (its acknowledgement) are never touched by a school's view."""
    stored = _upsert_newest(conn, incidents, [{**r, "first_received_at": now} for r in rows], ("site", "incident_id"),
                            "revision", tuple(c for c in INCIDENT_COLUMNS if c != "revision"))
    _touch_schools(conn, {row["site"]: 0 for row in rows}, now)
    if bad:
        conn.execute(rejected.insert(), bad)
    return Written(stored, len(rows) - stored, len(bad))


def write_reports(conn: Connection, rows: list[dict[str, Any]], bad: list[dict[str, Any]], now: datetime) -> Written:
    """Incident views and submitted reports (each row marked with its `table`) in the caller's transaction."""
    chosen = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == submissions.name]
    written = write_incidents(conn, [{k: v for k, v in r.items() if k != "table"} for r in rows
                                     if r["table"] == incidents.name], bad, now)
    stored = _upsert_newest(conn, submissions, chosen, ("site", "kind", "period"), "submission_id",
                            ("starts", "ends", "submitted_at", "submitted_by", "figures", "received_at"))
    stored += write_notice_views(conn, [{k: v for k, v in r.items() if k != "table"} for r in rows
                                        if r["table"] == notice_receipts.name])
    if chosen:
        _touch_schools(conn, {row["site"]: 0 for row in chosen}, now)
    return Written(written.stored + stored, len(rows) - written.stored - stored, written.rejected)


REPORT_OVERDUE = "report_overdue"


def check_deadlines(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """The district's alarms from its incidents: a report not in by its deadline raises one (once per incident);
    the report's arrival clears it, which a duty officer still acknowledges. Returns the newly raised."""
    overdue = conn.execute(select(incidents.c.site, incidents.c.incident_id, incidents.c.title,
                                  incidents.c.report_due_at)
                           .where(incidents.c.reported_at.is_(None), incidents.c.report_due_at < now,
                                  incidents.c.state != "closed")).all()
    raised: list[dict[str, Any]] = []
    if overdue:
        values = [{"site": r.site, "kind": REPORT_OVERDUE, "ref": f"incident:{r.incident_id}", "raised_at": now,
                   "detail": {"incident_id": r.incident_id, "title": r.title,
                              "report_due_at": r.report_due_at.isoformat()}} for r in overdue]
        new = conn.execute(insert(alerts).values(values).on_conflict_do_nothing()
                           .returning(alerts.c.site, alerts.c.ref)).all()
        raised = [{"site": r.site, "ref": r.ref} for r in new]
    reported = select(incidents.c.incident_id).where(
        incidents.c.site == alerts.c.site, func.concat("incident:", incidents.c.incident_id) == alerts.c.ref,
        or_(incidents.c.reported_at.is_not(None), incidents.c.state == "closed"))
    conn.execute(update(alerts).where(alerts.c.kind == REPORT_OVERDUE, alerts.c.cleared_at.is_(None),
                                      reported.exists()).values(cleared_at=now))
    return raised


def acknowledge_incident(conn: Connection, site: str, incident_id: int, actor: str, now: datetime) -> bool:
    """The district's duty officer acknowledges a school's incident report (sent down by the downward sender).
    Only a reported incident, once; returns whether this acknowledged it."""
    done = conn.execute(update(incidents).where(
        incidents.c.site == site, incidents.c.incident_id == incident_id, incidents.c.acked_at.is_(None),
        incidents.c.reported_at.is_not(None)).values(acked_by=actor, acked_at=now).returning(incidents.c.site))
    return done.first() is not None


ACK_RESEND_S = 30.0


def acks_to_send(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Acknowledgements the school has not shown yet, not sent within ACK_RESEND_S: sent (again) now. The
    school keeps one per incident, so a repeat is harmless; its view shows it once recorded."""
    rows = conn.execute(select(incidents.c.site, incidents.c.incident_id, incidents.c.acked_by,
                               incidents.c.acked_at).where(
        incidents.c.acked_at.is_not(None), incidents.c.school_saw_ack_at.is_(None),
        or_(incidents.c.ack_sent_at.is_(None),
            incidents.c.ack_sent_at < now - timedelta(seconds=ACK_RESEND_S)))).all()
    return [{"site": r.site, "incident_id": r.incident_id, "by": r.acked_by, "at": r.acked_at} for r in rows]


def ack_sent(conn: Connection, site: str, incident_id: int, now: datetime) -> None:
    conn.execute(update(incidents).where(incidents.c.site == site, incidents.c.incident_id == incident_id)
                 .values(ack_sent_at=now))


NOTICE_LEVELS = ("alert", "drill", "info")
NOTICE_RESEND_S = 30.0
NOTICES_PER_PASS = 5000  # sent down in one pass of the worker's housekeeping; the rest in the next


def issue_notice(conn: Connection, level: str, title: str, body: str, by: str, now: datetime,
                 sites: list[str] | None = None) -> tuple[int, int]:
    """A notice for the schools named (None: every school the district has heard from), in the caller's
    transaction; the workers send it down. Returns (its id, how many schools it goes to)."""
    if level not in NOTICE_LEVELS:
        raise ValueError(f"a notice's level is one of {', '.join(NOTICE_LEVELS)}")
    notice_id = conn.execute(notices.insert().values(level=level, title=title, body=body, issued_by=by,
                                                     issued_at=now).returning(notices.c.id)).scalar_one()
    to = sorted(set(sites)) if sites is not None else list(conn.scalars(select(schools.c.site).order_by(
        schools.c.site)))
    if to:
        conn.execute(notice_receipts.insert(), [{"notice_id": notice_id, "site": site} for site in to])
    return notice_id, len(to)


def notices_to_send(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """(site, notice) pairs whose school has not shown the notice yet, not sent within NOTICE_RESEND_S."""
    r, n = notice_receipts.c, notices.c
    rows = conn.execute(select(r.site, n.id, n.level, n.title, n.body, n.issued_by, n.issued_at)
                        .join(notices, n.id == r.notice_id)
                        .where(r.received_at.is_(None), or_(r.sent_at.is_(None), r.sent_at < now - timedelta(
                            seconds=NOTICE_RESEND_S)))
                        .order_by(n.id, r.site).limit(NOTICES_PER_PASS)).all()
    return [{"site": row.site, "notice_id": row.id, "level": row.level, "title": row.title, "body": row.body,
             "by": row.issued_by, "at": row.issued_at} for row in rows]


NOTICES_SENT = text(
    "UPDATE district_notice_receipts AS r SET sent_at = :now, sends = r.sends + 1 "
    "FROM unnest(CAST(:sites AS text[]), CAST(:ids AS bigint[])) AS t(site, notice_id) "
    "WHERE r.site = t.site AND r.notice_id = t.notice_id")


def notices_sent(conn: Connection, sent: list[tuple[str, int]], now: datetime) -> None:
    """One statement for a whole pass (a notice to 2,000 schools is not 2,000 updates)."""
    if sent:
        conn.execute(NOTICES_SENT, {"now": now, "sites": [s for s, _ in sent], "ids": [n for _, n in sent]})


def write_notice_views(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Schools' views of their notices: what a view says (received, acknowledged) is kept, never taken back, so
    views arriving out of order do no harm. A view of a notice not sent to that school is ignored."""
    changed = 0
    c = notice_receipts.c
    for row in rows:
        done = conn.execute(update(notice_receipts).where(c.site == row["site"], c.notice_id == row["notice_id"])
                            .values(received_at=func.coalesce(c.received_at, row["received_at"]),
                                    acked_at=func.coalesce(c.acked_at, row["acked_at"]),
                                    acked_by=func.coalesce(c.acked_by, row["acked_by"])))
        changed += done.rowcount
    return changed
