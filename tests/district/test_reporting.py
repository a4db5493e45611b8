"""Upward reporting (逐级上报) through the real parts: a school gateway (its rules service) on its own Mosquitto,
bridged to three NATS nodes; a district worker writing to PostgreSQL and sending its acknowledgements down. An
incident goes up as the school records it; a report not in by its deadline is an alarm at the district, cleared
when the report comes; the district's acknowledgement reaches the school's timeline, and the school's next view
tells the district it arrived. A district notice comes down to the school's console, and its acknowledgement
there goes back up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from gateway.config_file import validate_config
from gateway.console import auth
from gateway.district import store
from gateway.district import worker as district_worker
from gateway.district.console import actions, users
from gateway.records import ledger
from gateway.records.models import IncidentEntry, utcnow
from gateway.reports.figures import period
from gateway.reports.submit import submit
from gateway.rules_service import jobs
from tests.district.harness import NatsCluster, SchoolBroker
from tests.district.test_district import RunningWorker, cluster, district_db  # noqa: F401 (fixtures)
from tests.integration.helpers import CONSOLE_PASSWORD, Running, logged_in
from tests.support import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.timeout(180)]


@pytest.fixture
def school(tmp_path: Path, cluster: NatsCluster) -> Iterator[Running]:  # noqa: F811
    site = cluster.site(1)
    broker = SchoolBroker(tmp_path / site, site, cluster.mqtt_addresses, gateway="gw1")
    broker.start()
    running = Running(validate_config({
        "site": {"id": site, "name": "实验中学"},
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "broker": {"url": f"mqtt://127.0.0.1:{broker.port}"},
        "district": {"addresses": cluster.mqtt_addresses},
    }), parts=("rules", "console"))
    try:
        yield running
    finally:
        running.stop()
        broker.stop()


def test_an_incident_goes_up_an_overdue_report_is_a_district_alarm_and_the_districts_ack_comes_down(
        school: Running, cluster: NatsCluster, district_db: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(district_worker, "DEADLINES_EVERY_S", 0.5)
    monkeypatch.setattr(district_worker, "DOWNWARD_EVERY_S", 0.5)
    monkeypatch.setattr(jobs, "UPWARD_EVERY_S", 0.5)  # the school's rules service runs in this process
    site = cluster.site(1)  # the school fixture's
    worker = RunningWorker(cluster.settings(mqtt=cluster.mqtt_addresses), district_db)
    engine = create_engine(district_db.replace("postgresql://", "postgresql+psycopg://"))
    sessions = school.gateway.sessions
    assert sessions is not None
    config = school.gateway.config.incidents

    def at_district(incident_id: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(select(store.incidents).where(store.incidents.c.site == site,
                                                              store.incidents.c.incident_id == incident_id)).first()

    def alerts() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(select(store.alerts)))

    try:
        now = utcnow()
        with sessions.begin() as session:  # confirmed 70 minutes ago: its 1 h report is overdue
            late = ledger.create_incident(session, config, category="intrusion", severity="serious",
                                          title="校外人员翻墙", occurred_at=now - timedelta(minutes=75),
                                          confirmed_at=now - timedelta(minutes=70), place="东侧围墙",
                                          people="张三 13800138000", actor="guard-li", now=now).id
            prompt = ledger.create_incident(session, config, category="injury", severity="minor",
                                            title="学生摔伤", occurred_at=now, actor="guard-li", now=now).id
        row = wait_for(lambda: at_district(late), 60, "the late incident at the district")
        assert (row.title, row.place, row.state, row.reported_at) == ("校外人员翻墙", "东侧围墙", "open", None)
        assert "people" not in row.view and "13800138000" not in str(row.view), "personal data stays at the school"
        raised = wait_for(lambda: [a for a in alerts() if a.ref == f"incident:{late}"], 30, "the overdue alarm")
        assert raised[0].kind == "report_overdue" and raised[0].cleared_at is None and raised[0].site == site
        assert not [a for a in alerts() if a.ref == f"incident:{prompt}"], "the prompt one is not overdue"

        with sessions.begin() as session:
            ledger.record_report(session, late, "guard-li", utcnow(), note="电话报告中心校")
            ledger.record_report(session, prompt, "guard-li", utcnow())
        wait_for(lambda: at_district(late).reported_at is not None and at_district(prompt).reported_at is not None,
                 30, "both reports at the district")
        wait_for(lambda: alerts()[0].cleared_at is not None, 30, "the overdue alarm cleared by the report")

        with engine.begin() as conn:
            assert store.acknowledge_incident(conn, site, prompt, "duty-wang", utcnow())
            assert not store.acknowledge_incident(conn, site, prompt, "duty-wang", utcnow()), "once"

        def school_ack() -> IncidentEntry | None:
            with sessions() as session:
                return session.scalars(select(IncidentEntry).where(IncidentEntry.incident_id == prompt,
                                                                   IncidentEntry.kind == "district_ack")).first()

        entry = wait_for(school_ack, 30, "the district's acknowledgement in the school's timeline")
        assert entry.actor == "district:duty-wang"
        wait_for(lambda: at_district(prompt).school_saw_ack_at is not None, 30,
                 "the school's view telling the district its acknowledgement arrived")
        assert worker.worker.stats.acks_sent >= 1
        with sessions() as session:
            acks = session.scalars(select(IncidentEntry).where(IncidentEntry.kind == "district_ack")).all()
        assert len(acks) == 1, "one line, however often it was sent"

        # The month's report, submitted from the Reports page (as pages.reports.submit_to_district does).
        tz = school.gateway.config.site.tz
        start, end = period("monthly", now.astimezone(tz), tz)
        with sessions.begin() as session:
            submit(session, "monthly", start, end, tz, "实验中学", "supervisor-zhao", utcnow())

        def submitted() -> Any:
            with engine.connect() as conn:
                return conn.execute(select(store.submissions)).first()

        row = wait_for(submitted, 30, "the monthly report at the district")
        assert (row.site, row.kind, row.submitted_by) == (site, "monthly", "supervisor-zhao")
        assert row.period == start.strftime("%Y-%m") and row.figures["summary"]["Incidents"] == 2

        # Down: a notice from the district reaches the school's console; a guard acknowledges it there, and the
        # district sees the school got it and who acknowledged it.
        users.create_tables(engine)  # as the district console does when it starts
        with engine.begin() as conn:
            notice_id, schools = actions.issue_notice(conn, "alert", "加强戒备", "放学时段加强校门警戒", [site],
                                                      "duty-wang", utcnow())
        assert schools == 1

        def receipt() -> Any:
            with engine.connect() as conn:
                return conn.execute(select(store.notice_receipts)).first()

        with sessions.begin() as session:
            auth.add_user(session, "guard-li", "guard", CONSOLE_PASSWORD)
        assert school.gateway.console_url
        guard = logged_in(school.gateway.console_url, "guard-li", CONSOLE_PASSWORD)
        wait_for(lambda: "加强戒备" in guard.get("/notices").text, 30, "the notice on the school's console")
        wait_for(lambda: receipt().received_at is not None, 30, "the district told the school has it")
        answer = guard.post(f"/notices/{notice_id}/ack", data={"csrf_token": guard.csrf})
        assert answer.status_code == 303, answer.text
        assert guard.post(f"/notices/{notice_id}/ack", data={"csrf_token": guard.csrf}).status_code == 409
        acked = wait_for(lambda: receipt().acked_by is not None and receipt(), 30, "the acknowledgement up")
        assert acked.acked_by == "guard-li" and acked.sends >= 1 and worker.worker.stats.notices_sent >= 1
    finally:
        worker.stop()
        engine.dispose()
