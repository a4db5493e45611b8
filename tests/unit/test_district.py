"""The district's sans-IO parts: stream subjects, the bridge section a school gets, decoding fetched messages,
the month partitions; and the district link in the site config."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import topics
from gateway.config import ConfigError
from gateway.config_file import parse_config
from gateway.district import store
from gateway.district.bridge import BridgeSettings, bridge_section, spread
from gateway.district.subjects import (
    EVENTS_FILTER,
    StoredTopic,
    parse_alarm_subject,
    parse_incident_subject,
    parse_state_subject,
    parse_subject,
    subject_of,
)
from gateway.district.worker import decode, decode_alarms, decode_incidents, decode_state
from gateway.events import make_event
from tests.district.harness import TZ


def test_an_event_topic_and_its_stream_subject_map_both_ways() -> None:
    topic = topics.event("school-7", "alarm_input", "gate-box", "campus.alarm_input.triggered")
    subject = subject_of(topic)
    assert subject == "$MQTT.msgs.campus.v1.school-7.alarm_input.gate-box.evt.triggered"
    assert parse_subject(subject) == StoredTopic("school-7", "alarm_input", "gate-box", "triggered")
    assert parse_subject(subject).topic == topic  # type: ignore[union-attr]
    assert EVENTS_FILTER == "$MQTT.msgs.campus.v1.*.*.*.evt.>"


@pytest.mark.parametrize("subject", [
    "$MQTT.msgs.campus.v1.school-7.rules.alarms.12",  # an alarm view, not a device event
    "$MQTT.msgs.campus.v1.school-7.alarm_input.gate-box.availability",
    "$MQTT.msgs.campus.v1.school-7.alarm_input.gate-box.evt",
    "$MQTT.msgs.campus.v2.school-7.alarm_input.gate-box.evt.triggered",
    "$MQTT.msgs.campus.v1..alarm_input.gate-box.evt.triggered",
    "campus.v1.school-7.alarm_input.gate-box.evt.triggered",
])
def test_anything_but_a_device_event_subject_is_refused(subject: str) -> None:
    assert parse_subject(subject) is None


@given(st.text(max_size=200))
def test_any_subject_parses_or_is_refused_without_error(subject: str) -> None:
    parse_subject(subject)


def test_the_bridge_names_its_own_site_everywhere_and_a_client_id_per_gateway() -> None:
    section = bridge_section(BridgeSettings("school-7", "gatehouse-2", ["n1.district:1883", "n2.district:1883"],
                                            username="school-7", password="pw", cafile="/etc/ca.pem"))
    lines = section.splitlines()
    address = next(line for line in lines if line.startswith("address ")).split()[1:]
    assert sorted(address) == ["n1.district:1883", "n2.district:1883"] and "round_robin true" in lines
    assert "remote_clientid campusgw-school-7-gatehouse-2" in lines
    assert {"try_private false", "bridge_protocol_version mqttv311", "cleansession false",
            "notification_topic campus/v1/school-7/bridge/district", "bridge_cafile /etc/ca.pem"} <= set(lines)
    topics_up = [line for line in lines if line.startswith("topic ") and line.endswith(" out 1")]
    assert topics_up and all(t.startswith("topic campus/v1/school-7/") for t in topics_up)
    assert [line for line in lines if line.startswith("topic ") and line not in topics_up] == [
        "topic campus/v1/school-7/district/# in 1"], "down: only what the district sends this school"
    assert "$SYS" not in section


def test_the_schools_start_at_different_nodes_each_always_at_its_own() -> None:
    nodes = [f"n{i}.district:1883" for i in (1, 2, 3)]
    firsts = {spread(f"school-{n}", nodes)[0] for n in range(30)}
    assert firsts == set(nodes), "the schools spread over every node"
    assert spread("school-7", nodes) == spread("school-7", list(nodes)), "a site always starts at its own node"
    assert sorted(spread("school-7", nodes)) == nodes and spread("school-7", nodes[:1]) == nodes[:1]


@pytest.mark.parametrize(("settings", "problem"), [
    (BridgeSettings("School 7", "gw1", ["h:1883"]), "site id"),
    (BridgeSettings("s7", "gw/1", ["h:1883"]), "gateway id"),
    (BridgeSettings("s7", "gw1", []), "no address"),
    (BridgeSettings("s7", "gw1", ["h"]), "not host:port"),
])
def test_a_bridge_that_could_name_other_topics_is_refused(settings: BridgeSettings, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        bridge_section(settings)


def test_the_site_config_names_a_broken_district_address() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config("site: {id: s1, name: S}\ndistrict:\n  addresses: [n1.district]\n", "site.yaml")
    assert any(p.startswith("site.yaml line 3: district.addresses:") and "'n1.district' is not host:port" in p
               for p in refused.value.problems), refused.value.problems


@dataclass
class Fetched:
    subject: str
    data: bytes


def press(site: str, device: str = "gate-box") -> tuple[str, bytes, str]:
    event = make_event(site, "alarm_input", device, "campus.alarm_input.triggered",
                       {"point": "panic", "input": 1, "point_type": "panic", "zone": None, "place": "gate"},
                       1, time.time(), TZ)
    return subject_of(topics.event(site, "alarm_input", device, event.type)), event.to_json(), event.id


def test_decoding_keeps_events_and_sets_apart_what_is_not_one() -> None:
    good_subject, good, good_id = press("s1")
    other_subject, other, _ = press("s2")
    now = datetime.now(UTC)
    rows, bad = decode([Fetched(good_subject, good), Fetched(good_subject, b"{nope"),
                        Fetched(good_subject, other),  # s2's event on s1's topic: a school speaking for another
                        Fetched("$MQTT.msgs.campus.v1.s1.rules.alarms.3", good)], now)
    assert [(r["id"], r["site"], r["device"], r["class"]) for r in rows] == [(good_id, "s1", "gate-box", "alarm")]
    assert [b["reason"].split(":")[0] for b in bad] == ["not_json", "wrong_topic", "not_an_event_subject"]
    assert all(b["received_at"] == now for b in bad)
    assert other_subject != good_subject


def test_months_and_their_partitions() -> None:
    assert store.partition_name((2026, 3)) == "district_events_2026_03"
    months = store.months_around(datetime(2026, 1, 15, tzinfo=UTC))
    assert months[0] == (2024, 12) and months[-1] == (2026, 4) and (2026, 1) in months
    assert store.month_of(datetime(2026, 12, 31, 20, tzinfo=TZ)) == (2026, 12)  # 12:00 UTC that day


def test_alarm_views_are_decoded_and_a_wrong_one_kept_apart() -> None:
    view = {"id": 7, "revision": 40, "state": "active_unack", "priority": 1, "alarm_type": "panic", "place": "门卫室",
            "device_id": "gate-box", "test": False, "raised_at": "2026-12-06T09:15:00+08:00"}
    subject = subject_of(topics.alarm("s1", 7))
    assert parse_alarm_subject(subject) == ("s1", 7)
    assert parse_alarm_subject(subject_of(topics.alarm("s1", 7)) + ".x") is None
    assert parse_alarm_subject("$MQTT.msgs.campus.v1.s1.rules.alarms.seven") is None
    now = datetime.now(UTC)
    rows, bad = decode_alarms([Fetched(subject, json.dumps(view).encode()),
                               Fetched(subject_of(topics.alarm("s1", 8)), json.dumps(view).encode()),  # not its id
                               Fetched(subject, json.dumps({**view, "state": "lost"}).encode()),
                               Fetched(subject, b"[1")], now)
    assert [(r["site"], r["alarm_id"], r["revision"], r["state"], r["place"]) for r in rows] == [
        ("s1", 7, 40, "active_unack", "门卫室")]
    assert len(bad) == 3 and all(b["reason"].startswith("alarm_view: ") for b in bad)


@dataclass
class Sequence:
    stream: int


@dataclass
class Metadata:
    sequence: Sequence


@dataclass
class FetchedState:
    subject: str
    data: bytes
    seq: int

    @property
    def metadata(self) -> Metadata:
        return Metadata(Sequence(self.seq))


def test_a_schools_state_is_decoded_in_the_streams_order_and_a_wrong_one_kept_apart() -> None:
    online = {"state": "online", "ts": 1765000000.5}
    fetched = [
        FetchedState(subject_of(topics.availability("s1", "osdp_reader", "north-1")), json.dumps(online).encode(), 5),
        FetchedState(subject_of(topics.availability("s1", topics.GATEWAY, "gw1")), b'{"state":"offline"}', 6),
        FetchedState(subject_of("campus/v1/s1/bridge/district"), b"0", 7),
        FetchedState(subject_of(topics.police_paths("s1")), b'{"paths": [{"name": "primary", "up": true}]}', 8),
        FetchedState(subject_of(topics.lockdown("s1")), b'{"active": true, "drill": true}', 9),
        FetchedState(subject_of(topics.lockdown("s1")), b"", 10),  # a retained message cleared: nothing to keep
        FetchedState(subject_of("campus/v1/s1/bridge/district"), b"up", 11),
        FetchedState(subject_of(topics.availability("s1", "camera", "yard")), b'{"state": "asleep"}', 12),
        FetchedState(subject_of(topics.alarm("s1", 3)), b"{}", 13),
    ]
    rows, bad = decode_state(fetched, datetime(2026, 12, 6, tzinfo=UTC))
    assert [(r["table"], r["site"], r.get("fact") or r["device"], r["seq"]) for r in rows] == [
        ("district_devices", "s1", "north-1", 5), ("district_devices", "s1", "gw1", 6),
        ("district_school_facts", "s1", "bridge", 7), ("district_school_facts", "s1", "police", 8),
        ("district_school_facts", "s1", "lockdown", 9)]
    assert rows[0]["online"] is True and rows[0]["since"] == datetime.fromtimestamp(1765000000.5, UTC)
    assert rows[1]["online"] is False and rows[1]["since"] is None  # the gateway's will has no time
    assert rows[2]["value"] == {"up": False} and rows[4]["value"] == {"active": True, "drill": True}
    assert [b["reason"] for b in bad] == ["state: a bridge state is 0 or 1",
                                          "state: state is neither online nor offline", "state: not a state subject"]


@given(st.text(max_size=120))
def test_any_state_subject_parses_or_is_refused_without_error(subject: str) -> None:
    parse_state_subject(subject)


def test_incident_views_are_decoded_and_a_wrong_one_kept_apart() -> None:
    view = {"id": 4, "revision": 9, "category": "intrusion", "severity": "serious", "title": "校外人员翻墙",
            "place": "东侧围墙", "state": "reported", "occurred_at": "2026-12-06T09:00:00+08:00",
            "report_due_at": "2026-12-06T10:05:00+08:00", "reported_at": "2026-12-06T09:30:00+08:00",
            "closed_at": None, "district_ack": {"by": "duty-wang", "at": "2026-12-06T09:40:00+08:00"}}
    subject = subject_of(topics.incident("s1", 4))
    assert parse_incident_subject(subject) == ("s1", 4) and parse_alarm_subject(subject) is None
    rows, bad = decode_incidents([
        Fetched(subject, json.dumps(view).encode()),
        Fetched(subject, json.dumps({**view, "report_due_at": "2026-12-06T10:05:00"}).encode()),  # no zone
        Fetched(subject, json.dumps({**view, "state": "lost"}).encode()),
        Fetched(subject_of(topics.incident("s1", 5)), json.dumps(view).encode()),  # not its id
    ], datetime.now(UTC))
    assert [(r["incident_id"], r["revision"], r["state"], r["title"]) for r in rows] == [
        (4, 9, "reported", "校外人员翻墙")]
    assert rows[0]["school_saw_ack_at"] == datetime.fromisoformat("2026-12-06T09:40:00+08:00")
    assert [b["reason"].split(":")[0] for b in bad] == ["incident"] * 3


def test_a_notice_comes_down_as_the_school_reads_it_and_its_view_goes_up_as_the_district_reads_it() -> None:
    from gateway.district.worker import decode_reports
    from gateway.records import notices

    sent = {"level": "drill", "title": " 全区防暴演练 ", "body": "周五下午三点", "by": "duty-wang",
            "at": "2026-12-06T09:00:00+08:00"}  # what the worker sends down (worker._send_down)
    notice = notices.parse(7, sent)
    assert (notice.id, notice.level, notice.title, notice.issued_by) == (7, "drill", "全区防暴演练", "duty-wang")
    for wrong in ({**sent, "level": "panic"}, {**sent, "title": ""}, {**sent, "at": "09:00"},
                  {**sent, "at": "2026-12-06T09:00:00"}, [sent]):
        with pytest.raises(notices.BadNotice):
            notices.parse(7, wrong)
    with pytest.raises(notices.BadNotice):
        notices.parse(0, sent)
    notice.received_at = datetime(2026, 12, 6, 1, 0, 5, tzinfo=UTC)
    view = notices.view(notice)
    now = datetime.now(UTC)
    rows, bad = decode_reports([Fetched(subject_of(topics.notice("s1", 7)), json.dumps(view).encode()),
                                Fetched(subject_of(topics.notice("s1", 8)), json.dumps(view).encode()),  # not its id
                                Fetched(subject_of(topics.notice("s1", 7)), b"{")], now)
    assert rows == [{"table": store.notice_receipts.name, "site": "s1", "notice_id": 7,
                     "received_at": notice.received_at, "acked_at": None, "acked_by": None}]
    assert len(bad) == 2 and all(b["reason"].startswith("notice: ") for b in bad)
