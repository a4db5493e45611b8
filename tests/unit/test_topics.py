"""gateway.topics: each builder makes today's string (tests/unit/test_topic_strings.py pins them where they are
used), parse gives the record back and the record the string, ids that would make another topic are refused,
and parse never raises, whatever it is given."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import topics
from gateway.topics import (
    AvailabilityTopic,
    CommandTopic,
    EventTopic,
    ResultTopic,
    RulesTopic,
    StateTopic,
    TopicError,
)
from tests.unit.test_topic_strings import PINNED

SITE = "s1"

BUILT = {
    "source": topics.source(SITE, "alarm_input", "box-1"),
    "event": topics.event(SITE, "alarm_input", "box-1", "campus.alarm_input.triggered"),
    "gateway event": topics.event(SITE, topics.GATEWAY, "gw1", "campus.gateway.health"),
    "police link event": topics.event(SITE, topics.GATEWAY, "gw1-police", "campus.gateway.health"),
    "state": topics.state(SITE, "bollard", "gate-1"),
    "availability": topics.availability(SITE, "alarm_input", "box-1"),
    "gateway availability": topics.availability(SITE, topics.GATEWAY, "gw1"),
    "command": topics.command(SITE, "bollard", "gate-1", "raise"),
    "result": topics.result(SITE, "bollard", "gate-1", "raise"),
    "reader feedback": topics.command(SITE, "reader", "gate-reader", "feedback"),
    "committed": topics.committed(SITE),
    "rules availability": topics.rules_availability(SITE),
    "alarm": topics.alarm(SITE, 42),
    "visit": topics.visit(SITE, 7),
    "notify": topics.notify(SITE, "li-qiang"),
    "access events": topics.access_events(SITE),
    "snapshot requests": topics.snapshot_requests(SITE),
    "police alarms": topics.police_alarms(SITE),
    "police paths": topics.police_paths(SITE),
    "police evidence": topics.police_evidence(SITE),
    "events filter": topics.events_filter(SITE),
    "commands filter": topics.commands_filter(SITE),
    "results filter": topics.results_filter(SITE),
    "bollard states filter": topics.states_filter(SITE, "bollard"),
    "alarms filter": topics.alarms_filter(SITE),
    "notice": topics.notice(SITE, 3),
    "notices filter": topics.notices_filter(SITE),
    "district notice": topics.district_notice(SITE, 3),
}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_each_builder_makes_todays_string(kind: str) -> None:
    assert BUILT[kind] == PINNED[kind]


def test_every_pinned_kind_has_a_builder() -> None:
    assert set(BUILT) == set(PINNED)


def test_an_alarm_id_as_a_number_or_a_string_is_the_same_topic() -> None:
    assert topics.alarm(SITE, 42) == topics.alarm(SITE, "42") == "campus/v1/s1/rules/alarms/42"
    assert topics.visit(SITE, "7") == PINNED["visit"]


def test_home_assistant_discovery_topics() -> None:
    assert topics.discovery("homeassistant", "binary_sensor", "campusgw_s1_box-1", "panic-1") == \
        "homeassistant/binary_sensor/campusgw_s1_box-1/panic-1/config"
    assert topics.discovery("ha/campus", "sensor", "n", "o") == "ha/campus/sensor/n/o/config"
    assert topics.parse("homeassistant/binary_sensor/campusgw_s1_box-1/panic-1/config") is None, "not ours"
    with pytest.raises(TopicError):
        topics.discovery("homeassistant/", "sensor", "n", "o")


PARSED: dict[str, topics.Topic] = {
    "event": EventTopic(SITE, "alarm_input", "box-1", "triggered"),
    "gateway event": EventTopic(SITE, "gateway", "gw1", "health"),
    "police link event": EventTopic(SITE, "gateway", "gw1-police", "health"),
    "state": StateTopic(SITE, "bollard", "gate-1"),
    "availability": AvailabilityTopic(SITE, "alarm_input", "box-1"),
    "gateway availability": AvailabilityTopic(SITE, "gateway", "gw1"),
    "command": CommandTopic(SITE, "bollard", "gate-1", "raise"),
    "result": ResultTopic(SITE, "bollard", "gate-1", "raise"),
    "reader feedback": CommandTopic(SITE, "reader", "gate-reader", "feedback"),
    "committed": RulesTopic(SITE, "committed"),
    "rules availability": RulesTopic(SITE, "availability"),
    "alarm": RulesTopic(SITE, "alarms", "42"),
    "visit": RulesTopic(SITE, "visits", "7"),
    "notify": RulesTopic(SITE, "notify", "li-qiang"),
    "access events": RulesTopic(SITE, "access/events"),
    "snapshot requests": RulesTopic(SITE, "snapshot_requests"),
    "police alarms": RulesTopic(SITE, "police/alarms"),
    "police paths": RulesTopic(SITE, "police/paths"),
    "police evidence": RulesTopic(SITE, "police/evidence"),
}


@pytest.mark.parametrize("kind", sorted(PARSED))
def test_parse_gives_the_record_and_the_record_the_topic(kind: str) -> None:
    assert topics.parse(PINNED[kind]) == PARSED[kind]
    assert PARSED[kind].topic == PINNED[kind]


def test_a_command_knows_its_result_topic() -> None:
    command = topics.parse(PINNED["command"])
    assert isinstance(command, CommandTopic)
    assert command.result == PARSED["result"] and command.result.topic == PINNED["result"]


@pytest.mark.parametrize("topic", [
    "",
    "campus/v1",
    "campus/v1/",
    "campus/v1/s1",
    "campus/v1/s1/alarm_input/box-1",  # an event's source: no message goes there
    "campus/v2/s1/alarm_input/box-1/state",
    "Campus/v1/s1/alarm_input/box-1/state",
    "/campus/v1/s1/alarm_input/box-1/state",
    "campus/v1/s1/alarm_input/box-1/state/",
    "campus/v1/s1/alarm_input/box-1/status",
    "campus/v1/s1/alarm_input/box-1/evt",
    "campus/v1/s1/alarm_input/box-1/evt/triggered/more",
    "campus/v1/s1/bollard/gate-1/cmd/raise/results",
    "campus/v1/s1/bollard/gate-1/cmd/raise/result/x",
    "campus/v1/s1/rules",
    "campus/v1/s1/rules/alarms",
    "campus/v1/s1/rules/alarms/1/2",
    "campus/v1/s1/rules/police",
    "campus/v1/s1/rules/police/else",
    "campus/v1/s1/rules/whatever",
    # filters are not topics
    PINNED["events filter"], PINNED["commands filter"], PINNED["results filter"], PINNED["bollard states filter"],
    PINNED["alarms filter"], "campus/v1/#", "campus/v1/s1/bollard/gate+1/state",
    "campus/v1/s1/bollard/gate-1/state\0",
    "homeassistant/binary_sensor/x/y/config",
    "$SYS/broker/uptime",
])
def test_parse_refuses_what_is_not_one_of_the_gateways_topics(topic: str) -> None:
    assert topics.parse(topic) is None


@pytest.mark.parametrize(("topic", "record"), [
    # What the filters' '+' matches is parsed, as the subscribers always took it (and answered a command).
    ("campus/v1/s1/bollard//cmd/raise", CommandTopic("s1", "bollard", "", "raise")),
    ("campus/v1/s1/bollard//state", StateTopic("s1", "bollard", "")),
    ("campus/v1/s1/rules/alarms/", RulesTopic("s1", "alarms", "")),
    ("campus/v1//rules/committed", RulesTopic("", "committed")),
    # A device topic under the kind 'rules', which no builder makes, is still a device topic...
    ("campus/v1/s1/rules/x/cmd/raise", CommandTopic("s1", "rules", "x", "raise")),
    ("campus/v1/s1/rules/x/cmd/raise/result", ResultTopic("s1", "rules", "x", "raise")),
    # ... unless it is one of the rules service's own.
    ("campus/v1/s1/rules/notify/state", RulesTopic("s1", "notify", "state")),
    ("campus/v1/s1/rules/police/paths", RulesTopic("s1", "police/paths")),
])
def test_parse_takes_what_the_subscriptions_let_through(topic: str, record: topics.Topic) -> None:
    assert topics.parse(topic) == record
    assert record.topic == topic


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a+", "b#", "nul\0", "/"])
def test_an_id_that_would_make_another_topic_or_a_filter_is_refused(bad: str) -> None:
    builders = [
        lambda: topics.source(bad, "reader", "r1"), lambda: topics.source(SITE, bad, "r1"),
        lambda: topics.event(SITE, "reader", bad, "campus.reader.card_read"),
        lambda: topics.event(SITE, "reader", "r1", f"campus.reader.{bad}"),
        lambda: topics.state(SITE, "reader", bad), lambda: topics.availability(SITE, "reader", bad),
        lambda: topics.command(SITE, "bollard", bad, "raise"), lambda: topics.command(SITE, "bollard", "b", bad),
        lambda: topics.result(SITE, "bollard", "b", bad), lambda: topics.alarm(SITE, bad),
        lambda: topics.visit(SITE, bad), lambda: topics.notify(SITE, bad), lambda: topics.committed(bad),
        lambda: topics.events_filter(bad), lambda: topics.states_filter(SITE, bad),
    ]
    for build in builders:
        with pytest.raises(TopicError, match="cannot be part of an MQTT topic"):
            build()


def test_no_device_kind_is_called_rules() -> None:
    with pytest.raises(TopicError, match="rules service's"):
        topics.state(SITE, "rules", "committed")
    with pytest.raises(TopicError, match="rules service's"):
        topics.states_filter(SITE, "rules")


def test_a_bad_id_is_named_in_the_error() -> None:
    with pytest.raises(TopicError, match="device id 'gate/1'"):
        topics.command(SITE, "bollard", "gate/1", "raise")


# -- properties ------------------------------------------------------------------------------------------------

# What a config id may be (gateway.config.ID_PATTERN), and odder ids a builder still takes.
config_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
odd_ids = st.text(min_size=1, max_size=20).filter(lambda s: not any(c in s for c in "/+#\0"))
ids = config_ids | odd_ids
kinds = ids.filter(lambda k: k != topics.RULES)
names = st.from_regex(r"[a-z_]{1,32}", fullmatch=True)


@st.composite
def records(draw: st.DrawFn) -> topics.Topic:
    site, kind, device = draw(ids), draw(kinds), draw(ids)
    choices: list[topics.Topic] = [
        EventTopic(site, kind, device, draw(names)),
        StateTopic(site, kind, device),
        AvailabilityTopic(site, kind, device),
        CommandTopic(site, kind, device, draw(ids)),
        ResultTopic(site, kind, device, draw(ids)),
        RulesTopic(site, draw(st.sampled_from(sorted(topics.RULES_FIXED)))),
        RulesTopic(site, draw(st.sampled_from(sorted(topics.RULES_BY_ID))), draw(ids)),
    ]
    return draw(st.sampled_from(choices))


@given(records())
@settings(max_examples=500)
def test_parse_of_a_records_topic_is_the_record(record: topics.Topic) -> None:
    assert topics.parse(record.topic) == record


@given(ids, kinds, ids, names, ids)
@settings(max_examples=300)
def test_what_the_builders_make_parses_back(site: str, kind: str, device: str, event: str, name: str) -> None:
    assert topics.parse(topics.event(site, kind, device, f"campus.{kind}.{event}")) == \
        EventTopic(site, kind, device, event)
    assert topics.parse(topics.state(site, kind, device)) == StateTopic(site, kind, device)
    assert topics.parse(topics.availability(site, kind, device)) == AvailabilityTopic(site, kind, device)
    assert topics.parse(topics.command(site, kind, device, name)) == CommandTopic(site, kind, device, name)
    assert topics.parse(topics.result(site, kind, device, name)) == ResultTopic(site, kind, device, name)
    assert topics.parse(topics.alarm(site, name)) == RulesTopic(site, "alarms", name)
    assert topics.parse(topics.notify(site, name)) == RulesTopic(site, "notify", name)
    assert topics.parse(topics.committed(site)) == RulesTopic(site, "committed")
    assert topics.source(site, kind, device) == topics.state(site, kind, device).removesuffix("/state")


@given(ids, kinds, ids, names)
@settings(max_examples=300)
def test_the_filters_match_what_their_subscribers_must_get(site: str, kind: str, device: str, name: str) -> None:
    def matches(topic_filter: str, topic: str) -> bool:
        return bool(mqtt.topic_matches_sub(topic_filter, topic))

    assert matches(topics.events_filter(site), topics.event(site, kind, device, f"campus.x.{name}"))
    assert matches(topics.commands_filter(site), topics.command(site, kind, device, name))
    assert not matches(topics.commands_filter(site), topics.result(site, kind, device, name))
    assert matches(topics.results_filter(site), topics.result(site, kind, device, name))
    assert not matches(topics.results_filter(site), topics.command(site, kind, device, name))
    assert matches(topics.states_filter(site, kind), topics.state(site, kind, device))
    assert matches(topics.alarms_filter(site), topics.alarm(site, name))
    assert not matches(topics.alarms_filter(site), topics.committed(site))


MQTT_LEVELS = st.sampled_from(["campus", "v1", "s1", "rules", "alarms", "notify", "police", "paths", "evt", "cmd",
                               "result", "state", "availability", "gateway", "bollard", "", "+", "#", "x"])


@given(st.text() | st.lists(MQTT_LEVELS, max_size=9).map("/".join)
       | st.lists(MQTT_LEVELS, max_size=7).map(lambda levels: "/".join(["campus", "v1", *levels])))
@settings(max_examples=2000)
@example("campus/v1/s1/rules/alarms/1")
@example("campus/v1/" + "/" * 10_000)
def test_parse_never_raises_and_what_it_takes_it_gives_back_unchanged(topic: str) -> None:
    record = topics.parse(topic)
    if record is not None:
        assert record.topic == topic, "the subscriber sees the very topic it was sent on"
        assert isinstance(record, (EventTopic, StateTopic, AvailabilityTopic, CommandTopic, ResultTopic, RulesTopic))
    if not topic.startswith("campus/v1/") or any(c in topic for c in "+#\0"):
        assert record is None, "another root, a filter, or no MQTT topic at all: foreign"


@pytest.mark.parametrize("value", [None, 7, b"campus/v1/s1/rules/committed"])
def test_parse_of_what_is_not_even_a_string_is_none(value: object) -> None:
    assert topics.parse(value) is None  # type: ignore[arg-type]
