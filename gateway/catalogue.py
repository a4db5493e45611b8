"""The catalogue of alarm types and event types: one row each, and every other table derives from it.

A new alarm type is one row in ALARM_TABLE (and its name in the AlarmType Literal, which mypy and pydantic need
spelled out; tests/unit/test_catalogue.py checks the two agree). From the rows come:

- gateway.config: AlarmType (linkage rules), POLICE_CODES (the defaults a site may override), the escalation
  delays (EscalationConfig.after_s);
- gateway.rules.alarms: PRIORITY, LATCHING, and which alarm type each event raises;
- drivers.modbus_di.points / drivers.modbus_di.driver: PointType, the types an alarm input point may be wired as;
- gateway.homeassistant and the drivers' Home Assistant entities: each binary_sensor's device class;
- gateway.validation: each event type's JSON Schema (gateway/schemas/<type>.json).

A new event type is one row in EVENT_TABLE and its schema file. A new point type is also an entry in the
`point_type` enum of the two alarm_input schemas (the published contract; the tests check they agree).

A leaf module: it imports nothing from the project, so every floor (drivers, rules, console, police) may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Spelled out for mypy and pydantic (a Literal cannot be built from data); the tests check each equals the rows.
AlarmType = Literal["panic", "duress", "silent_panic", "tamper", "fault", "ac_loss", "door_contact", "fire",
                    "device_offline", "gateway_health", "bollard_fault", "watchlist", "door_forced", "door_held",
                    "access_failures", "visitor_overstay", "incident_deadline", "patrol_overdue", "hazard_due",
                    "post_uncovered"]
PointType = Literal["panic", "duress", "silent_panic", "tamper", "fault", "ac_loss", "door_contact", "fire"]
EventClass = Literal["alarm", "record", "telemetry"]


@dataclass(frozen=True)
class PoliceCodes:
    """What the alarm receiving centre is sent (SIA DC-05; GB/T 29315 names 120, 121, 122, 137, 301, 602).

    Contact ID sends the same event code for the alarm (qualifier 1, E) and its restore (qualifier 3, R);
    SIA-DCS has a code for each. The restore goes once an alarm the centre was told of clears or is reset."""

    contact_id: int  # ADM-CID event code
    sia: str  # SIA-DCS event code
    sia_restore: str  # SIA-DCS code of its restore


@dataclass(frozen=True, kw_only=True)
class AlarmSpec:
    """One alarm type. Every field but `events`, `rules` and `procedure` is stated in each row: a new type
    decides each."""

    name: str
    priority: int  # 1 is the most urgent; the console orders by this, then by time
    latching: bool  # stays active until a person resets it, whatever the input does (GB 50394 5.2.3-5.2.4)
    police: PoliceCodes | None  # None: sent with the codes of POLICE_FALLBACK
    # The Home Assistant binary_sensor device class of the entity that shows the condition (on = the alarm);
    # None: no entity shows it.
    ha_device_class: str | None
    point: bool  # an alarm input point may be wired as this type (campus.alarm_input.triggered raises it)
    events: tuple[str, ...] = ()  # other event types whose active report raises it (gateway.rules.alarms.evaluate)
    rules: tuple[str, ...] = ()  # the modules whose rules raise it (gateway.rules.alarms.raise_condition)
    escalate_after_s: int | None  # unacknowledged this long: the roster is called; None: the site's default
    incident_category: str | None  # the category a promoted alarm starts with (gateway.rules.incidents)
    maintenance: bool  # an equipment fault: it becomes a maintenance item (gateway.rules.incidents)
    # What the guard does, step by step, ticked on the alarm's page (a site's `procedures` replace them);
    # English msgids, shown in the user's language.
    procedure: tuple[str, ...] = ()


def _codes(contact_id: int, sia: str, sia_restore: str) -> PoliceCodes:
    return PoliceCodes(contact_id, sia, sia_restore)


ACCESS_SHELL = "gateway.rules_service.access_shell"  # where the gate's alarms are raised
_ATTACK = ("Look at the linked camera's live view", "Go to the place, or call it over the intercom",
           "If it is real: call 110, then the duty leader", "Keep the scene as it is and write what was found")
_FIRE = ("Look at the linked camera's live view", "Check the place with an extinguisher at hand",
         "Fire or smoke: call 119 and start the evacuation", "Tell the duty leader")
_TAMPER = ("Look at the device and what is around it", "Forced open or damaged: tell the duty leader")
_INTRUSION = ("Look at the linked camera's live view", "Go to the door", "Someone got in: call 110")
_WATCHED = ("Keep the person outside the gate", "Call 110", "Tell the duty leader")
ALARM_TABLE: tuple[AlarmSpec, ...] = (
    # the alarm input points: one-key alarm buttons, duress, tamper switches, contacts, fire
    AlarmSpec(name="panic", priority=1, latching=True, police=_codes(120, "PA", "PH"), ha_device_class="safety",
              point=True, escalate_after_s=30, incident_category="violence", maintenance=False, procedure=_ATTACK),
    AlarmSpec(name="duress", priority=1, latching=True, police=_codes(121, "HA", "HH"), ha_device_class="safety",
              point=True, escalate_after_s=30, incident_category="violence", maintenance=False, procedure=_ATTACK),
    AlarmSpec(name="silent_panic", priority=1, latching=True, police=_codes(122, "HA", "HH"),
              ha_device_class="safety", point=True, escalate_after_s=30, incident_category="violence",
              maintenance=False, procedure=_ATTACK),
    AlarmSpec(name="tamper", priority=2, latching=False, police=_codes(137, "TA", "TR"), ha_device_class="tamper",
              point=True, events=("campus.camera.tamper", "campus.reader.tamper"), escalate_after_s=60,
              incident_category="equipment_fault", maintenance=False,  # a camera's: a maintenance item (incidents)
              procedure=_TAMPER),
    AlarmSpec(name="fault", priority=3, latching=False, police=_codes(300, "YX", "YZ"), ha_device_class="problem",
              point=True, escalate_after_s=None, incident_category="equipment_fault", maintenance=True),
    AlarmSpec(name="ac_loss", priority=3, latching=False, police=_codes(301, "AT", "AR"), ha_device_class="problem",
              point=True, events=("campus.reader.power",), escalate_after_s=None,
              incident_category="equipment_fault", maintenance=False),
    AlarmSpec(name="door_contact", priority=4, latching=False, police=_codes(130, "BA", "BH"),
              ha_device_class="door", point=True, escalate_after_s=None, incident_category="intrusion",
              maintenance=False),
    AlarmSpec(name="fire", priority=1, latching=True, police=_codes(110, "FA", "FH"), ha_device_class="smoke",
              point=True, escalate_after_s=30, incident_category="fire", maintenance=False, procedure=_FIRE),
    # device health
    AlarmSpec(name="device_offline", priority=3, latching=False, police=_codes(350, "YC", "YK"),
              ha_device_class=None,  # Home Assistant shows it as the device's connectivity (on = online)
              point=False, events=("campus.device.offline",), escalate_after_s=None,
              incident_category="equipment_fault", maintenance=True),
    AlarmSpec(name="gateway_health", priority=3, latching=False, police=_codes(300, "YX", "YZ"),
              ha_device_class=None, point=False, events=("campus.gateway.health",), escalate_after_s=None,
              incident_category="equipment_fault", maintenance=False),
    AlarmSpec(name="bollard_fault", priority=2, latching=False, police=_codes(300, "YX", "YZ"),
              ha_device_class="problem", point=False, events=("campus.bollard.fault",), escalate_after_s=None,
              incident_category="equipment_fault", maintenance=True),
    # found by the rules; the latching ones are events, not conditions: nothing clears them but a person
    AlarmSpec(name="watchlist", priority=1, latching=True, police=_codes(120, "PA", "PH"), ha_device_class=None,
              point=False, rules=(ACCESS_SHELL, "gateway.records.visits"), escalate_after_s=None,
              incident_category="intrusion", maintenance=False, procedure=_WATCHED),
    # access (Contact ID 42x): forced access, door propped open, access denied
    AlarmSpec(name="door_forced", priority=2, latching=False, police=_codes(423, "DF", "DR"), ha_device_class=None,
              point=False, rules=(ACCESS_SHELL,), escalate_after_s=None, incident_category="intrusion",
              maintenance=False, procedure=_INTRUSION),
    AlarmSpec(name="door_held", priority=4, latching=False, police=_codes(426, "DN", "DR"), ha_device_class=None,
              point=False, rules=(ACCESS_SHELL,), escalate_after_s=None, incident_category="intrusion",
              maintenance=False),
    AlarmSpec(name="access_failures", priority=3, latching=True, police=_codes(421, "DD", "DD"),
              ha_device_class=None, point=False, rules=(ACCESS_SHELL,), escalate_after_s=None,
              incident_category=None, maintenance=False),
    AlarmSpec(name="visitor_overstay", priority=4, latching=True, police=None, ha_device_class=None, point=False,
              rules=(ACCESS_SHELL,), escalate_after_s=None, incident_category=None, maintenance=False),
    AlarmSpec(name="incident_deadline", priority=2, latching=False, police=None, ha_device_class=None, point=False,
              rules=("gateway.records.ledger",), escalate_after_s=None, incident_category=None, maintenance=False),
    # a patrol round not started / stalled: a person acknowledges and resets it, also once the guard is walking
    # again (the board shows that), so it escalates until someone has
    AlarmSpec(name="patrol_overdue", priority=4, latching=True, police=None, ha_device_class=None, point=False,
              rules=("gateway.rules_service.patrol_shell",), escalate_after_s=None, incident_category=None,
              maintenance=False),
    # a hazard's due date (整改时限) near or past: cleared once it is fixed or signed off
    AlarmSpec(name="hazard_due", priority=4, latching=False, police=None, ha_device_class=None, point=False,
              rules=("gateway.records.ledger",), escalate_after_s=None, incident_category=None, maintenance=False),
    # a shift running short of its guards (a post nobody is on): to the leader on duty, cleared once covered
    AlarmSpec(name="post_uncovered", priority=3, latching=False, police=None, ha_device_class=None, point=False,
              rules=("gateway.rules_service.jobs",), escalate_after_s=None, incident_category=None,
              maintenance=False),
)
ALARMS: dict[str, AlarmSpec] = {a.name: a for a in ALARM_TABLE}
POINT_TYPES: tuple[str, ...] = tuple(a.name for a in ALARM_TABLE if a.point)
# The alarm type each event type's active report raises (campus.alarm_input.triggered: its point's type).
RAISED_BY_EVENT: dict[str, str] = {event: a.name for a in ALARM_TABLE for event in a.events}
# Alarm types as Home Assistant binary sensor device classes (on = the alarm condition).
HA_DEVICE_CLASSES: dict[str, str] = {a.name: a.ha_device_class for a in ALARM_TABLE if a.ha_device_class is not None}

# The alarm type whose codes an alarm type without its own is sent with (today's behaviour, kept).
POLICE_FALLBACK = "door_contact"
# Reports to the alarm centre that are not alarms: a button test (devices in test mode), the periodic test.
TEST_REPORTS: dict[str, PoliceCodes] = {"manual_test": _codes(601, "RX", "RX"),
                                        "periodic_test": _codes(602, "RP", "RP")}


@dataclass(frozen=True)
class EventSpec:
    type: str
    # alarm events are never dropped or shed; telemetry may be shed past the outbox bound
    event_class: EventClass

    @property
    def schema(self) -> str:
        """The JSON Schema of its `data`, a file in gateway/schemas."""
        return f"{self.type}.json"


EVENT_TABLE: tuple[EventSpec, ...] = (
    EventSpec("campus.alarm_input.triggered", "alarm"),
    EventSpec("campus.alarm_input.restored", "alarm"),
    EventSpec("campus.bollard.state_changed", "record"),
    EventSpec("campus.bollard.command", "record"),
    EventSpec("campus.bollard.fault", "alarm"),
    EventSpec("campus.output.changed", "record"),
    EventSpec("campus.camera.motion", "record"),
    EventSpec("campus.camera.tamper", "alarm"),
    EventSpec("campus.camera.loitering", "record"),
    EventSpec("campus.camera.clip", "record"),
    EventSpec("campus.reader.card_read", "record"),
    EventSpec("campus.reader.code_scanned", "record"),
    EventSpec("campus.reader.keypad", "record"),
    EventSpec("campus.reader.tamper", "alarm"),
    EventSpec("campus.reader.power", "alarm"),
    EventSpec("campus.device.offline", "alarm"),
    EventSpec("campus.device.online", "alarm"),
    EventSpec("campus.device.telemetry", "telemetry"),
    EventSpec("campus.gateway.health", "alarm"),
    EventSpec("campus.gateway.command_refused", "record"),
)
EVENTS: dict[str, EventSpec] = {e.type: e for e in EVENT_TABLE}
