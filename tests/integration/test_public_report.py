"""The public reporting channel (R38): anyone reports a hazard or a concern without a login, maybe anonymously,
with a photo, after the proof of work the page asks (no CAPTCHA); a form is good once; an address sends at most
five an hour; the report waits unconfirmed for the safety officer, whose answer the reporter reads by the
reference."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from gateway.console.pages.public_report import POW_BITS, leading_zero_bits
from gateway.personal import PersonalData
from gateway.records.models import AuditEntry, Hazard, PublicReport
from tests.integration.helpers import CONSOLE_PASSWORD, console_client

pytestmark = pytest.mark.side_by_side  # times nothing: scripts/test runs it on both cores

TZ = ZoneInfo("Asia/Shanghai")
PASSWORD = CONSOLE_PASSWORD


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def school(tmp_path: Path, amqtt_broker: Any) -> Iterator[dict[str, Any]]:
    with console_client(tmp_path, amqtt_broker.port, {"guard1": "guard", "super1": "supervisor"},
                        personal=PersonalData(bytes(32))) as (client, sessions):
        yield {"client": client, "sessions": sessions}


def work(challenge: str) -> str:
    """The browser's part: a nonce whose SHA-256 with the challenge starts with POW_BITS zero bits."""
    n = 0
    while not leading_zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest(), POW_BITS):
        n += 1
    return str(n)


def challenge_of(client: TestClient) -> str:
    page = client.get("/report")
    assert page.status_code == 200, "the public page needs no login"
    return page.text.split('id="challenge" value="', 1)[1].split('"', 1)[0]


def send(client: TestClient, text: str, nonce: bool = True, challenge: str | None = None,
         **more: Any) -> Any:
    challenge = challenge or challenge_of(client)
    data = {"challenge": challenge, "nonce": work(challenge) if nonce else "", "kind": "hazard", "place": "东门外",
            "text": text, **more}
    return client.post("/report", data=data, files={"photo": ("p.jpg", jpeg(), "image/jpeg")})


def test_a_report_from_the_public_page_to_the_safety_officers_answer(school: dict[str, Any]) -> None:
    client, sessions = school["client"], school["sessions"]
    assert client.get("/incidents/reports").status_code in (303, 401), "the inbox needs a login"
    undone = send(client, "东门外人行道井盖缺失", nonce=False)
    assert undone.status_code == 409 and "尚未完成校验" in undone.text
    challenge = challenge_of(client)
    sent = send(client, "东门外人行道井盖缺失", challenge=challenge, contact="王女士 13812345678")
    assert sent.status_code == 303 and sent.headers["location"].startswith("/report/status?ref=")
    ref = sent.headers["location"].split("ref=", 1)[1].split("&", 1)[0]
    status = client.get(f"/report/status?ref={ref}").text
    assert ref in status and "已收到,待学校核实" in status
    again = send(client, "东门外人行道井盖缺失", challenge=challenge)
    assert again.status_code == 409 and "已提交" in again.text, "a form is good once"
    for n in range(4):
        assert send(client, f"第{n}条:校门口有可疑人员徘徊").status_code == 303
    flood = send(client, "第五条以后")
    assert flood.status_code == 429, "five an hour from one address"
    assert client.get("/report/status?ref=NOPE").status_code == 404

    client.post("/login", data={"username": "guard1", "password": PASSWORD})
    inbox = client.get("/incidents/reports").text
    assert "东门外人行道井盖缺失" in inbox and "138****5678" not in inbox and "13812345678" not in inbox
    with sessions() as session:
        first = session.scalars(select(PublicReport).where(PublicReport.ref == ref)).one()
    page = client.get("/incidents/reports").text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0] if 'name="csrf_token"' in page else ""
    assert client.post(f"/incidents/reports/{first.id}/confirm", data={"csrf_token": csrf,
                                                                        "answer": "x"}).status_code == 403
    client.cookies.clear()
    client.post("/login", data={"username": "super1", "password": PASSWORD})
    page = client.get("/incidents/reports").text
    assert "王女士 13812345678" in page, "a supervisor sees the reporter's contact whole"
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = client.post(f"/incidents/reports/{first.id}/confirm",
                       data={"csrf_token": csrf, "answer": "已通知市政部门,设置警示标志"})
    assert done.status_code == 303
    photo = client.get(f"/incidents/reports/{first.id}/photo")
    assert photo.status_code == 200 and photo.content[:2] == b"\xff\xd8", "the photo as sent (a JPEG)"
    client.cookies.clear()
    status = client.get(f"/report/status?ref={ref}").text
    assert "学校已核实,正在整改" in status and "已通知市政部门,设置警示标志" in status
    with sessions() as session:
        hazard = session.scalars(select(Hazard)).one()
        assert (hazard.source, hazard.place, hazard.description) == ("public", "东门外", "东门外人行道井盖缺失")
        actions = [a.action for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("public_report.%")).order_by(AuditEntry.id))]
    assert actions == ["public_report.receive"] * 5 + ["public_report.confirmed"]


def test_the_poster_links_to_the_public_page(school: dict[str, Any]) -> None:
    client = school["client"]
    client.post("/login", data={"username": "guard1", "password": PASSWORD})
    poster = client.get("/incidents/reports/poster")
    assert poster.status_code == 200 and "http://testserver/report" in poster.text and "<svg" in poster.text
