"""Parents and guardians (R42): imported from a CSV (a wrong line imports nothing and is named), their phones
kept encrypted and shown masked; at dismissal the gate desk checks who collects a child, recorded either way."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from gateway.personal import PersonalData
from gateway.records import people
from gateway.records.models import AuditEntry, Guardian, Pickup, utcnow
from tests.integration.helpers import CONSOLE_PASSWORD, console_client

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = CONSOLE_PASSWORD
STUDENTS = "kind,external_id,name,group\nstudent,S0001,李小明,三年级2班\nstudent,S0002,王小红,三年级2班\n"
GUARDIANS = ("student,name,relation,phone,may_collect\n"
             "S0001,李建国,father,13812345678,yes\nS0001,张丽,mother,13987654321,yes\n"
             "S0001,李爷爷,grandparent,,no\nS0002,王强,father,13700001111,是\n")


@pytest.fixture
def school(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    key = "11" * 32
    personal = PersonalData(bytes.fromhex(key))
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"site": {"id": "s1", "name": "Test School"},
                                    "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
                                    "database": {"url": f"sqlite:///{tmp_path / 'records.db'}"},
                                    "access": {"personal_data_key_env": "TEST_PICKUP_KEY"}}))
    with console_client(tmp_path, amqtt_broker.port, {"guard1": "guard"}, db_file="records.db",
                        personal=personal) as (client, sessions):
        with sessions.begin() as session:
            assert people.import_people(session, STUDENTS, utcnow()).ok
        yield {"client": client, "sessions": sessions, "personal": personal, "site": site, "key": key,
               "tmp": tmp_path}


def import_guardians(school: dict[str, Any], text: str) -> subprocess.CompletedProcess[str]:
    csv_file = school["tmp"] / "guardians.csv"
    csv_file.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "gateway.cli", "people", "import-guardians", str(csv_file), "-c",
                           str(school["site"])], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "TEST_PICKUP_KEY": school["key"]})


def test_guardians_from_a_csv_and_a_pick_up_checked_at_the_gate(school: dict[str, Any]) -> None:
    client, sessions = school["client"], school["sessions"]
    wrong = import_guardians(school, GUARDIANS + "S0009,赵六,uncle,12,maybe\n")
    assert wrong.returncode == 1 and "nothing was imported" in wrong.stderr
    assert "line 6, column 'student': no student numbered 'S0009'" in wrong.stderr
    with sessions() as session:
        assert session.scalars(select(Guardian)).all() == []
    done = import_guardians(school, GUARDIANS)
    assert done.returncode == 0, done.stderr
    assert "4 guardians of 2 students" in done.stdout
    with sessions() as session:
        father = session.scalars(select(Guardian).where(Guardian.name == "李建国")).one()
        assert "13812345678" not in (father.phone_enc or "") and father.phone_masked == "138****5678"
        assert school["personal"].decrypt(father.phone_enc) == "13812345678"

    client.post("/login", data={"username": "guard1", "password": PASSWORD})
    page = client.get("/visitors/pickup").text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    yes = client.post("/visitors/pickup", data={"csrf_token": csrf, "student": "S0001", "collector": "张丽"})
    assert yes.status_code == 200 and 'data-authorised="yes"' in yes.text
    assert "138****5678" in yes.text and "13812345678" not in yes.text, "phones masked"
    grandpa = client.post("/visitors/pickup", data={"csrf_token": csrf, "student": "S0001", "collector": "李爷爷"})
    assert 'data-authorised="no"' in grandpa.text and "联系班主任" in grandpa.text, "on the list, but may not collect"
    stranger = client.post("/visitors/pickup", data={"csrf_token": csrf, "student": "S0002", "collector": "陌生人"})
    assert 'data-authorised="no"' in stranger.text
    unknown = client.post("/visitors/pickup", data={"csrf_token": csrf, "student": "S0404", "collector": "张丽"})
    assert unknown.status_code == 422 and "没有学号为 S0404 的学生" in unknown.text
    today = client.get("/visitors/pickup").text.split('id="pickups"', 1)[1]
    assert today.count("<tr") == 4 and "陌生人" in today
    with sessions() as session:
        assert [(p.collector, p.authorised, p.by) for p in session.scalars(select(Pickup).order_by(Pickup.id))] == [
            ("张丽", True, "guard1"), ("李爷爷", False, "guard1"), ("陌生人", False, "guard1")]
        audit = [(a.action, a.result) for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.in_(["pickup.check", "guardians.import"])).order_by(AuditEntry.id))]
    assert audit == [("guardians.import", "ok"), ("pickup.check", "ok"), ("pickup.check", "refused"),
                     ("pickup.check", "refused")]
