"""The shipped ACL (gateway/mosquitto.acl, as gateway.mqtt_acl applies it) against the topics each part of the
gateway uses, built with gateway.topics: a part may publish and subscribe where its code does, not where only
the other parts' code does (apart from the wider rights listed below, each with its reason), and no line of
the ACL is there for nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway import mqtt_acl, topics
from gateway.mqtt_acl import Access

ROOT = Path(__file__).resolve().parents[2]
SITE, GW = "s1", "gw1"
RULES = mqtt_acl.shipped()

Need = tuple[Access, str, str]  # read|write, topic or subscription filter, where in the code
Uses = list[tuple[str, str]]  # topic or filter, where in the code

EVENTS = [("alarm_input", "box-1", "campus.alarm_input.triggered"),
          ("reader", "gate-reader", "campus.reader.card_read"), ("bollard", "gate-1", "campus.bollard.state_changed"),
          ("camera", "cam-1", "campus.camera.clip"), ("checkpoint", "cp-1", "campus.reader.code_scanned")]
COMMANDS = [("bollard", "gate-1", "raise"), ("bollard", "gate-1", "lower"), ("bollard", "gate-1", "efo"),
            ("bollard", "gate-1", "reset"), ("reader", "gate-reader", "feedback"), ("camera", "cam-1", "clip"),
            ("output", "relays-1", "set")]

# What each part publishes, as the code does it today.
PUBLISHES: dict[str, Uses] = {
    "drivers": [
        *[(topics.event(SITE, kind, device, event_type), "DriverHost.emit (through the outbox)")
          for kind, device, event_type in EVENTS],
        (topics.event(SITE, topics.GATEWAY, GW, "campus.gateway.health"), "DriverHost.emit_gateway"),
        (topics.event(SITE, topics.GATEWAY, GW, "campus.gateway.command_refused"), "DriverHost._refuse"),
        (topics.state(SITE, "bollard", "gate-1"), "Context.set_state"),
        (topics.state(SITE, "camera", "cam-1"), "Context.set_state"),
        (topics.availability(SITE, "alarm_input", "box-1"), "DriverHost._publish_availability"),
        (topics.availability(SITE, topics.GATEWAY, GW), "app: the drivers' Last Will, and online"),
        *[(topics.result(SITE, kind, device, name), "DriverHost._on_command") for kind, device, name in COMMANDS],
        (topics.discovery("homeassistant", "binary_sensor", f"campusgw_{SITE}_box-1", "panic-1"),
         "homeassistant.discovery_messages, on the drivers' bus"),
    ],
    "rules": [  # the rules service, and the police link beside it on its bus
        (topics.committed(SITE), "RulesService._process"),
        (topics.rules_availability(SITE), "app: the rules service's Last Will, and online"),
        (topics.alarm(SITE, 1), "RulesService._publish_alarms, PoliceLink._publish_alarm"),
        (topics.notify(SITE, "li-qiang"), "RulesService._escalate"),
        (topics.access_events(SITE), "Gate.on_read"),
        (topics.snapshot_requests(SITE), "RulesService._linkage"),
        (topics.police_alarms(SITE), "RulesService._linkage"),
        (topics.command(SITE, "bollard", "gate-1", "efo"), "RulesService._linkage"),
        (topics.command(SITE, "bollard", "gate-1", "raise"), "RulesService._follow_schedules"),
        (topics.command(SITE, "bollard", "gate-1", "lower"), "RulesService._follow_schedules"),
        (topics.command(SITE, "reader", "gate-reader", "feedback"), "Gate.on_read"),
        (topics.command(SITE, "camera", "cam-1", "clip"), "RulesService._linkage"),
        (topics.command(SITE, "output", "relays-1", "set"), "RulesService._linkage, RulesService._drive_outputs"),
        (topics.police_paths(SITE), "PoliceLink.publish_paths"),
        (topics.police_evidence(SITE), "police.evidence"),
        (topics.incident(SITE, 3), "PeriodicJobs._report_upward (the district's bridge takes it up)"),
        (topics.report_submission(SITE, "monthly", "2026-11"), "PeriodicJobs._report_upward"),
        (topics.notice(SITE, 3), "RulesService._on_notice, PeriodicJobs._report_upward (up the district's bridge)"),
        (topics.event(SITE, topics.GATEWAY, f"{GW}-police", "campus.gateway.health"), "PoliceLink._health"),
    ],
    "console": [
        (topics.alarm(SITE, 1), "pages.alarms.act, pages.visitors.publish, pages.incidents"),
        (topics.visit(SITE, 7), "pages.visitors.publish"),
        (topics.lockdown(SITE), "pages.alarms.lockdown_start, lockdown_end"),
        (topics.notice(SITE, 3), "pages.notices.acknowledge (up the district's bridge)"),
        *[(topics.command(SITE, "bollard", "gate-1", name), "CommandClient.send (pages.bollards)")
          for name in ("raise", "lower", "efo", "reset")],
    ],
    "reader": [],
}
SUBSCRIBES: dict[str, Uses] = {
    "drivers": [(topics.commands_filter(SITE), "DriverHost.run"), (topics.committed(SITE), "Outbox.attach"),
                (topics.rules_availability(SITE), "Outbox.attach")],
    "rules": [(topics.events_filter(SITE), "RulesService.start"), (topics.results_filter(SITE), "RulesService.start"),
              (topics.alarms_filter(SITE), "RulesService.start (the outputs follow the console's actions)"),
              (topics.lockdown(SITE), "RulesService.start (a lockdown's bollards and relays)"),
              (topics.from_district(SITE), "RulesService.start (the district's acknowledgements and notices, down "
                                           "its bridge)")],
    "console": [(topics.alarms_filter(SITE), "pages.alarms.attach"), (topics.police_paths(SITE), "pages.alarms.attach"),
                (topics.notices_filter(SITE), "pages.alarms.attach (every page's banner)"),
                (topics.states_filter(SITE, "bollard"), "pages.bollards.attach"),
                (topics.results_filter(SITE), "CommandClient")],
    # A district platform or Home Assistant: everything, read only.
    "reader": [(f"{topics.ROOT}/#", "a read-only consumer"), ("homeassistant/#", "Home Assistant")],
}


def needs(part: str) -> list[Need]:
    """What the part publishes and subscribes to, and every published topic the broker delivers to it (a
    delivery needs read too)."""
    out: list[Need] = [("write", topic, where) for topic, where in PUBLISHES[part]]
    out += [("read", topic_filter, where) for topic_filter, where in SUBSCRIBES[part]]
    out += [("read", topic, f"delivered on {topic_filter}") for topic_filter, _ in SUBSCRIBES[part]
            for uses in PUBLISHES.values() for topic, _ in uses if mqtt.topic_matches_sub(topic_filter, topic)]
    return out


NEEDS = {part: needs(part) for part in PUBLISHES}


def _under_rules(topic: str) -> bool:
    return topic.startswith(f"{topics.ROOT}/{SITE}/{topics.RULES}/")


# Wider than today's code needs, on purpose: (part, why) -> which (access, topic) it covers.
WIDER: dict[tuple[str, str], Callable[[Access, str], bool]] = {
    ("drivers", "each driver publishes events of its kind; the ACL does not tell kinds apart"):
        lambda access, topic: access == "write" and isinstance(topics.parse(topic), topics.EventTopic),
    ("rules", "campus/v1/+/rules/# is the rules service's, to read and write"):
        lambda access, topic: _under_rules(topic),
    ("rules", "the police link's health events come from gateway/<gw>-police: an ACL cannot match a suffix"):
        lambda access, topic: access == "write" and _kind_is(topic, topics.EventTopic, {topics.GATEWAY}),
    ("rules", "linkage and schedules may send any command to bollards, readers, cameras and outputs"):
        lambda access, topic: access == "write" and _kind_is(topic, topics.CommandTopic,
                                                             {"bollard", "reader", "camera", "output"}),
    ("console", "the console may read whatever the rules service publishes"):
        lambda access, topic: access == "read" and _under_rules(topic),
    ("console", "the console may read every device's state (it shows the bollards' today)"):
        lambda access, topic: access == "read" and isinstance(topics.parse(topic), topics.StateTopic),
    ("reader", "a read-only consumer reads everything"):
        lambda access, topic: access == "read",
}


def _kind_is(topic: str, record: type, kinds: set[str]) -> bool:
    parsed = topics.parse(topic)
    return isinstance(parsed, record) and getattr(parsed, "kind", None) in kinds


# What the shipped ACL refuses although the code does it; strict: fixing the ACL makes these fail, then drop them.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}  # what the ACL still refuses that a part needs


def user(part: str) -> str:
    return mqtt_acl.USER_PREFIX + part


def cases_allowed() -> list[object]:
    out: list[object] = []
    for part, needs in NEEDS.items():
        for access, topic, where in needs:
            gap = KNOWN_GAPS.get((part, access, topic))
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            out.append(pytest.param(part, access, topic, where, marks=marks, id=f"{part}-{access}-{topic}"))
    return out


@pytest.mark.parametrize(("part", "access", "topic", "where"), cases_allowed())
def test_each_part_may_publish_and_subscribe_where_it_must(part: str, access: Access, topic: str, where: str) -> None:
    assert mqtt_acl.allowed(RULES, user(part), access, topic), f"{part} needs {access} on {topic} ({where})"


def refusals() -> list[tuple[str, Access, str]]:
    out: list[tuple[str, Access, str]] = []
    for part, own in NEEDS.items():
        mine = {(access, topic) for access, topic, _ in own}
        others = {(access, topic) for other, needs in NEEDS.items() if other != part for access, topic, _ in needs}
        for access, topic in sorted(others - mine):
            if not any(who == part and wider(access, topic) for (who, _), wider in WIDER.items()):
                out.append((part, access, topic))
    return out


@pytest.mark.parametrize(("part", "access", "topic"), refusals(), ids="-".join)
def test_no_part_may_publish_or_subscribe_where_only_the_others_must(part: str, access: Access, topic: str) -> None:
    assert not mqtt_acl.allowed(RULES, user(part), access, topic), f"{part} may {access} {topic}"


def test_the_refusals_cover_what_matters_most() -> None:
    """The cases the ACL exists for are among the refusals above, not let through as 'wider'."""
    refused = set(refusals())
    assert ("console", "write", topics.committed(SITE)) in refused, "a console could make the outboxes drop events"
    assert ("console", "write", topics.event(SITE, "alarm_input", "box-1", "campus.alarm_input.triggered")) in refused
    assert ("drivers", "write", topics.command(SITE, "bollard", "gate-1", "raise")) in refused
    assert ("drivers", "write", topics.alarm(SITE, 1)) in refused
    assert ("console", "write", topics.command(SITE, "reader", "gate-reader", "feedback")) in refused
    assert ("rules", "write", topics.result(SITE, "bollard", "gate-1", "raise")) in refused
    assert ("rules", "write", topics.availability(SITE, topics.GATEWAY, GW)) in refused
    assert ("reader", "write", topics.committed(SITE)) in refused


def test_every_line_of_the_acl_is_there_for_something_a_part_does() -> None:
    unused = []
    for name, lines in RULES.items():
        part = name.removeprefix(mqtt_acl.USER_PREFIX)
        for kind, pattern in lines:
            one = {name: [(kind, pattern)]}
            if not any(access in kind and mqtt_acl.allowed(one, name, access, topic)
                       for access, topic, _ in NEEDS.get(part, [])):
                unused.append(f"{name}: topic {kind} {pattern}")
    assert not unused, unused


def test_the_acl_has_a_user_for_each_part_and_nobody_else() -> None:
    assert set(RULES) == {user(part) for part in mqtt_acl.PARTS} == {user(part) for part in NEEDS}


def test_mosquitto_enforces_the_same_acl_as_the_embedded_broker() -> None:
    shipped = (ROOT / "gateway" / "mosquitto.acl").read_text(encoding="utf-8")
    config = (ROOT / "config" / "mosquitto.acl").read_text(encoding="utf-8")
    assert mqtt_acl.parse(config) == mqtt_acl.parse(shipped) == RULES
