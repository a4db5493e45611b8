"""Every MQTT topic of the gateway, built and parsed in one place (the table in DESIGN.md, "MQTT conventions").

    campus/v1/<site>/<kind>/<device>/evt/<type>           an event (the last part of its type)
    campus/v1/<site>/<kind>/<device>/state                a device's state, retained
    campus/v1/<site>/<kind>/<device>/availability         online / offline, retained (the gateway's own too)
    campus/v1/<site>/<kind>/<device>/cmd/<name>           a command
    campus/v1/<site>/<kind>/<device>/cmd/<name>/result    its result
    campus/v1/<site>/rules/...                            what the rules service, the console and the police
                                                          link publish (alarms, visits, confirmations, ...)
    campus/v1/<site>/district/acks/incident-<id>          the district's acknowledgement of a report (down the
                                                          bridge; no device kind is called `district`)
    campus/v1/<site>/district/notices/notice-<id>         a notice from the district (an alert, a drill), down

A builder takes ids and checks them: a config or user id holding '/', '+', '#' or NUL (or none at all) would
make another topic, or a filter, so it raises TopicError instead. `parse` turns a topic back into a record
(None for any other topic, never an exception), and `record.topic` gives the very same string back. Parsing
takes what the subscribers' filters let through, an empty level or the kind 'rules' in a device topic too
(which no builder makes): such a message is answered as it always was (a forged command there is refused and
audited), not dropped unseen. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, cast

ROOT: Final = "campus/v1"
GATEWAY: Final = "gateway"  # the kind under which the gateway itself speaks: its availability, its health events
RULES: Final = "rules"  # campus/v1/<site>/rules/...: no device kind is called that

RulesWhat = Literal["committed", "availability", "snapshot_requests", "access/events", "police/alarms",
                    "police/paths", "police/evidence", "lockdown", "alarms", "visits", "notify", "incidents", "reports",
                    "notices"]
# rules/<what>, and rules/<what>/<id> (the alarm, the visit, the person notified)
RULES_FIXED: Final = frozenset({"committed", "availability", "snapshot_requests", "access/events", "police/alarms",
                                "police/paths", "police/evidence", "lockdown"})
RULES_BY_ID: Final = frozenset({"alarms", "visits", "notify", "incidents", "reports", "notices"})
DISTRICT: Final = "district"  # campus/v1/<site>/district/...: what the district sends down (its acknowledgements)

_PREFIX: Final = ROOT + "/"
_NOT_IN_A_LEVEL = re.compile(r"[/+#\x00]")
_NOT_IN_A_TOPIC = re.compile(r"[+#\x00]")  # wildcards make a filter, not a topic; MQTT forbids NUL


class TopicError(ValueError):
    """An id that cannot be a level of a topic."""


def _level(value: str, what: str) -> str:
    if not value or _NOT_IN_A_LEVEL.search(value):
        raise TopicError(f"{what} {value!r} cannot be part of an MQTT topic: expected a non-empty id without "
                         "'/', '+', '#' or NUL")
    return value


def _kind(kind: str) -> str:
    if kind == RULES:
        raise TopicError(f"device kind {kind!r} cannot be part of an MQTT topic: campus/v1/<site>/{RULES}/ is the "
                         "rules service's")
    return _level(kind, "device kind")


def _device(site: str, kind: str, device: str) -> tuple[str, str, str]:
    return _level(site, "site id"), _kind(kind), _level(device, "device id")


# -- records: what parse() returns; .topic is the string it came from ---------------------------------------


@dataclass(frozen=True, slots=True)
class EventTopic:
    site: str
    kind: str
    device: str
    name: str  # the last part of the event type: "triggered" for campus.alarm_input.triggered

    @property
    def topic(self) -> str:
        return f"{ROOT}/{self.site}/{self.kind}/{self.device}/evt/{self.name}"


@dataclass(frozen=True, slots=True)
class StateTopic:
    site: str
    kind: str
    device: str

    @property
    def topic(self) -> str:
        return f"{ROOT}/{self.site}/{self.kind}/{self.device}/state"


@dataclass(frozen=True, slots=True)
class AvailabilityTopic:
    site: str
    kind: str  # GATEWAY for the gateway's own (its MQTT Last Will)
    device: str

    @property
    def topic(self) -> str:
        return f"{ROOT}/{self.site}/{self.kind}/{self.device}/availability"


@dataclass(frozen=True, slots=True)
class CommandTopic:
    site: str
    kind: str
    device: str
    name: str

    @property
    def topic(self) -> str:
        return f"{ROOT}/{self.site}/{self.kind}/{self.device}/cmd/{self.name}"

    @property
    def result(self) -> ResultTopic:
        """Where the driver answers this command."""
        return ResultTopic(self.site, self.kind, self.device, self.name)


@dataclass(frozen=True, slots=True)
class ResultTopic:
    site: str
    kind: str
    device: str
    name: str  # the command's

    @property
    def topic(self) -> str:
        return f"{ROOT}/{self.site}/{self.kind}/{self.device}/cmd/{self.name}/result"


@dataclass(frozen=True, slots=True)
class RulesTopic:
    site: str
    what: RulesWhat
    id: str | None = None  # for alarms, visits and notify only

    @property
    def topic(self) -> str:
        base = f"{ROOT}/{self.site}/{RULES}/{self.what}"
        return base if self.id is None else f"{base}/{self.id}"


Topic = EventTopic | StateTopic | AvailabilityTopic | CommandTopic | ResultTopic | RulesTopic


def parse(topic: str) -> Topic | None:
    """The record of one of the gateway's topics; None for anything else (another root or shape, a filter)."""
    if not isinstance(topic, str) or not topic.startswith(_PREFIX) or _NOT_IN_A_TOPIC.search(topic):
        return None
    levels = topic[len(_PREFIX):].split("/")
    if len(levels) < 3:
        return None
    site = levels[0]
    if levels[1] == RULES:
        rest = levels[2:]
        if len(rest) == 2 and rest[0] in RULES_BY_ID:
            return RulesTopic(site, cast(RulesWhat, rest[0]), rest[1])
        what = "/".join(rest)
        if what in RULES_FIXED:
            return RulesTopic(site, cast(RulesWhat, what))
        # Else a device topic under the kind 'rules', which no builder makes but the filters' '+' matches:
        # a command there is answered (refused) like any other.
    kind, device, rest = levels[1], levels[2], levels[3:]
    if len(rest) == 1:
        if rest[0] == "state":
            return StateTopic(site, kind, device)
        if rest[0] == "availability":
            return AvailabilityTopic(site, kind, device)
    elif len(rest) == 2:
        if rest[0] == "evt":
            return EventTopic(site, kind, device, rest[1])
        if rest[0] == "cmd":
            return CommandTopic(site, kind, device, rest[1])
    elif len(rest) == 3 and rest[0] == "cmd" and rest[2] == "result":
        return ResultTopic(site, kind, device, rest[1])
    return None


# -- builders: one per kind of topic; each checks the ids it is given ---------------------------------------


def source(site: str, kind: str, device: str) -> str:
    """campus/v1/<site>/<kind>/<device>: an event's CloudEvents `source`, and what its device's topics start with
    (no message is published on it)."""
    site, kind, device = _device(site, kind, device)
    return f"{ROOT}/{site}/{kind}/{device}"


def event(site: str, kind: str, device: str, event_type: str) -> str:
    """Where an event of `event_type` (campus.<kind>.<name>) from the device is published."""
    return EventTopic(*_device(site, kind, device), _level(event_type.rsplit(".", 1)[-1], "event type")).topic


def state(site: str, kind: str, device: str) -> str:
    return StateTopic(*_device(site, kind, device)).topic


def availability(site: str, kind: str, device: str) -> str:
    """A device's availability; availability(site, GATEWAY, <gateway id>) is the gateway's own."""
    return AvailabilityTopic(*_device(site, kind, device)).topic


def command(site: str, kind: str, device: str, name: str) -> str:
    return CommandTopic(*_device(site, kind, device), _level(name, "command name")).topic


def result(site: str, kind: str, device: str, name: str) -> str:
    """Where the driver answers command `name`."""
    return ResultTopic(*_device(site, kind, device), _level(name, "command name")).topic


def _rules(site: str, what: RulesWhat, id: str | None = None) -> str:
    return RulesTopic(_level(site, "site id"), what, None if id is None else _level(id, f"{what} id")).topic


def committed(site: str) -> str:
    """The event ids the rules service has committed: the drivers' outboxes let them go."""
    return _rules(site, "committed")


def rules_availability(site: str) -> str:
    """Whether the rules service is online (its Last Will): the outboxes send again what it has not confirmed."""
    return _rules(site, "availability")


def alarm(site: str, alarm_id: int | str) -> str:
    """An alarm as the database now holds it, for the console and other consumers."""
    return _rules(site, "alarms", str(alarm_id))


def incident(site: str, incident_id: int | str) -> str:
    """An incident as the district sees it (gateway.records.ledger.district_view), retained: bridged up."""
    return _rules(site, "incidents", str(incident_id))


def report_submission(site: str, kind: str, period: str) -> str:
    """A monthly or term report submitted to the district, retained (a resubmission of the period replaces it)."""
    return _rules(site, "reports", f"{_level(kind, 'report kind')}-{_level(period, 'report period')}")


def district_ack(site: str, incident_id: int) -> str:
    """The district's acknowledgement of an incident's report, sent down the school's bridge."""
    return f"{ROOT}/{_level(site, 'site id')}/{DISTRICT}/acks/incident-{int(incident_id)}"


def district_notice(site: str, notice_id: int) -> str:
    """A notice from the district (heightened alert, a lockdown drill), sent down the school's bridge until the
    school's view of it (`notice`) says it arrived."""
    return f"{ROOT}/{_level(site, 'site id')}/{DISTRICT}/notices/notice-{int(notice_id)}"


def notice(site: str, notice_id: int | str) -> str:
    """A district notice as the school holds it (received, acknowledged by whom), retained: bridged up."""
    return _rules(site, "notices", str(notice_id))


def notices_filter(site: str) -> str:
    return f"{ROOT}/{_level(site, 'site id')}/{RULES}/notices/+"


def from_district(site: str) -> str:
    """Everything the district sends this site (the bridge's `in` topic)."""
    return f"{ROOT}/{_level(site, 'site id')}/{DISTRICT}/#"


def visit(site: str, visit_id: int | str) -> str:
    return _rules(site, "visits", str(visit_id))


def notify(site: str, person: str) -> str:
    """An unacknowledged alarm, for the person on duty (gateway.rules.roster.person_id)."""
    return _rules(site, "notify", person)


def access_events(site: str) -> str:
    return _rules(site, "access/events")


def snapshot_requests(site: str) -> str:
    return _rules(site, "snapshot_requests")


def police_alarms(site: str) -> str:
    """A report for the alarm centre, written: wakes the police link."""
    return _rules(site, "police/alarms")


def lockdown(site: str) -> str:
    """The site's lockdown state (retained): whether it is locked down, since when, by whom, a drill or not."""
    return _rules(site, "lockdown")


def police_paths(site: str) -> str:
    return _rules(site, "police/paths")


def police_evidence(site: str) -> str:
    return _rules(site, "police/evidence")


def discovery(prefix: str, component: str, node: str, object_id: str) -> str:
    """A Home Assistant MQTT discovery topic: <prefix>/<component>/<node>/<object id>/config (the prefix is
    home_assistant.prefix and may have levels of its own). Not under campus/v1, so parse() does not take it."""
    levels = [_level(level, "discovery prefix") for level in prefix.split("/")]
    return "/".join([*levels, _level(component, "component"), _level(node, "node id"),
                     _level(object_id, "object id"), "config"])


# -- subscription filters -------------------------------------------------------------------------------------


def events_filter(site: str) -> str:
    """Every device's events (the rules service)."""
    return f"{ROOT}/{_level(site, 'site id')}/+/+/evt/#"


def commands_filter(site: str) -> str:
    """Every command (the drivers' supervisor); not their results, one level deeper."""
    return f"{ROOT}/{_level(site, 'site id')}/+/+/cmd/+"


def results_filter(site: str) -> str:
    """Every command's result (whoever sends commands)."""
    return f"{ROOT}/{_level(site, 'site id')}/+/+/cmd/+/result"


def states_filter(site: str, kind: str) -> str:
    """The state of every device of one kind."""
    return f"{ROOT}/{_level(site, 'site id')}/{_kind(kind)}/+/state"


def alarms_filter(site: str) -> str:
    """Every alarm update (the console)."""
    return f"{ROOT}/{_level(site, 'site id')}/{RULES}/alarms/+"
