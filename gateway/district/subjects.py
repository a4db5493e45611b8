"""MQTT topics as NATS's MQTT listener stores them, sans-IO: `campus/v1/s1/alarm_input/box/evt/triggered` is
stored in the `$MQTT_msgs` stream under `$MQTT.msgs.campus.v1.s1.alarm_input.box.evt.triggered`. Ids in a
topic are `[a-z0-9-]` (gateway.config.ID_PATTERN), so no level holds a dot and the mapping is one to one."""

from __future__ import annotations

from dataclasses import dataclass

MQTT_STREAM = "$MQTT_msgs"
MQTT_PREFIX = "$MQTT.msgs."
EVENTS_FILTER = MQTT_PREFIX + "campus.v1.*.*.*.evt.>"  # every school's device events, nothing else
ALARMS_FILTER = MQTT_PREFIX + "campus.v1.*.rules.alarms.*"  # every school's alarm views (retained at the school)
LIVE_ALARMS = "campus.v1.*.rules.alarms.*"  # the same views over core NATS: the fast path (district/live.py)
INCIDENTS_FILTER = MQTT_PREFIX + "campus.v1.*.rules.incidents.*"  # every school's incidents (逐级上报), retained
SUBMISSIONS_FILTER = MQTT_PREFIX + "campus.v1.*.rules.reports.*"  # monthly and term reports submitted, retained
NOTICES_FILTER = MQTT_PREFIX + "campus.v1.*.rules.notices.*"  # the district's notices as each school holds them
STATE_FILTERS = (  # what a school is like now, each retained at the school: the newest wins
    MQTT_PREFIX + "campus.v1.*.*.*.availability",  # each device's, and each gateway's own (kind `gateway`)
    MQTT_PREFIX + "campus.v1.*.rules.police.paths",  # the alarm-centre paths, up or down
    MQTT_PREFIX + "campus.v1.*.rules.lockdown",  # locked down or not
    MQTT_PREFIX + "campus.v1.*.bridge.district",  # the school's bridge, 1 up or 0 down (Mosquitto's, its will)
)


@dataclass(frozen=True)
class StoredTopic:
    site: str
    kind: str
    device: str
    event: str  # the topic's last level: triggered, card_read, ...

    @property
    def topic(self) -> str:
        return f"campus/v1/{self.site}/{self.kind}/{self.device}/evt/{self.event}"


def subject_of(topic: str) -> str:
    """The stream subject NATS stores an MQTT topic under."""
    return MQTT_PREFIX + topic.replace("/", ".")


def parse_subject(subject: str) -> StoredTopic | None:
    """A school's event topic from its stream subject; None for anything else."""
    if not subject.startswith(MQTT_PREFIX):
        return None
    levels = subject[len(MQTT_PREFIX):].split(".")
    if len(levels) != 7 or levels[:2] != ["campus", "v1"] or levels[5] != "evt" or not all(levels):
        return None
    return StoredTopic(levels[2], levels[3], levels[4], levels[6])


def parse_alarm_subject(subject: str) -> tuple[str, int] | None:
    """(site, alarm id) of a school's alarm view subject; None for anything else."""
    return _parse_by_id(subject, "alarms")


def parse_incident_subject(subject: str) -> tuple[str, int] | None:
    """(site, incident id) of a school's incident view subject; None for anything else."""
    return _parse_by_id(subject, "incidents")


def parse_notice_subject(subject: str) -> tuple[str, int] | None:
    """(site, notice id) of a school's view of a district notice; None for anything else."""
    return _parse_by_id(subject, "notices")


def parse_submission_subject(subject: str) -> tuple[str, str, str] | None:
    """(site, kind, period) of a school's submitted report subject (rules/reports/<kind>-<period>)."""
    if not subject.startswith(MQTT_PREFIX):
        return None
    levels = subject[len(MQTT_PREFIX):].split(".")
    if len(levels) != 6 or levels[:2] != ["campus", "v1"] or levels[3:5] != ["rules", "reports"] or not levels[2]:
        return None
    kind, _, period = levels[5].partition("-")
    return (levels[2], kind, period) if kind in ("monthly", "term") and period else None


def _parse_by_id(subject: str, what: str) -> tuple[str, int] | None:
    if not subject.startswith(MQTT_PREFIX):
        return None
    levels = subject[len(MQTT_PREFIX):].split(".")
    if len(levels) != 6 or levels[:2] != ["campus", "v1"] or levels[3:5] != ["rules", what] or not levels[2]:
        return None
    return (levels[2], int(levels[5])) if levels[5].isdigit() and len(levels[5]) <= 18 else None


@dataclass(frozen=True)
class StateSubject:
    site: str
    fact: str  # availability, police, lockdown, bridge
    kind: str | None = None  # for availability: the device's kind and id
    device: str | None = None


_FACTS = {("rules", "police", "paths"): "police", ("rules", "lockdown"): "lockdown", ("bridge", "district"): "bridge"}


def parse_state_subject(subject: str) -> StateSubject | None:
    """What a school's state subject (STATE_FILTERS) is about; None for anything else."""
    if not subject.startswith(MQTT_PREFIX):
        return None
    levels = subject[len(MQTT_PREFIX):].split(".")
    if len(levels) < 4 or levels[:2] != ["campus", "v1"] or not all(levels):
        return None
    rest = tuple(levels[3:])
    if len(rest) == 3 and rest[2] == "availability":
        return StateSubject(levels[2], "availability", rest[0], rest[1])
    fact = _FACTS.get(rest)
    return StateSubject(levels[2], fact) if fact else None
