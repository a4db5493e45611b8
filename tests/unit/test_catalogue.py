"""The catalogue of alarm types and event types (gateway.catalogue), and every table that derives from it.

The first half pins today's values, written out by hand from the code before the catalogue existed: a change
to any of them is a change of behaviour (what the console orders by, what the alarm centre receives, what Home
Assistant shows), never a side effect of a refactor. The second half checks the catalogue itself.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

import pytest

from drivers.modbus_di import points as alarm_points
from drivers.modbus_di import schema as modbus_di
from gateway import catalogue, homeassistant, validation
from gateway import config as gwconfig
from gateway.events import EVENT_TYPES, make_event
from gateway.rules import access, alarms, incidents
from tests.unit.test_envelope import SAMPLE_DATA

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "gateway" / "schemas"
HA_BINARY_SENSOR_CLASSES = set(json.loads((Path(__file__).parent / "homeassistant" / "binary_sensor.json")
                                          .read_text())["properties"]["device_class"]["enum"]) - {None}

TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2024, 6, 1, 8, 0, 0, tzinfo=TZ)

# --- today's values, pinned ------------------------------------------------------------------------------------

ALARM_TYPES = ("panic", "duress", "silent_panic", "tamper", "fault", "ac_loss", "door_contact", "fire",
               "device_offline", "gateway_health", "bollard_fault", "watchlist", "door_forced", "door_held",
               "access_failures", "visitor_overstay", "incident_deadline", "patrol_overdue", "hazard_due",
               "post_uncovered")
POINT_TYPES = ("panic", "duress", "silent_panic", "tamper", "fault", "ac_loss", "door_contact", "fire")
PRIORITY = {"panic": 1, "duress": 1, "silent_panic": 1, "fire": 1, "tamper": 2, "bollard_fault": 2,
            "device_offline": 3, "fault": 3, "ac_loss": 3, "gateway_health": 3, "door_contact": 4,
            "watchlist": 1, "door_forced": 2, "access_failures": 3, "door_held": 4, "visitor_overstay": 4,
            "incident_deadline": 2, "patrol_overdue": 4, "hazard_due": 4,
            "post_uncovered": 3}
LATCHING = {"panic", "duress", "silent_panic", "fire", "watchlist", "access_failures", "visitor_overstay",
            "patrol_overdue"}
# (Contact ID, SIA, SIA restore); the alarm types not here are sent with door_contact's codes
POLICE = {"panic": (120, "PA", "PH"), "duress": (121, "HA", "HH"), "silent_panic": (122, "HA", "HH"),
          "fire": (110, "FA", "FH"), "tamper": (137, "TA", "TR"), "ac_loss": (301, "AT", "AR"),
          "fault": (300, "YX", "YZ"), "bollard_fault": (300, "YX", "YZ"), "device_offline": (350, "YC", "YK"),
          "door_contact": (130, "BA", "BH"), "gateway_health": (300, "YX", "YZ"),
          "door_forced": (423, "DF", "DR"), "door_held": (426, "DN", "DR"), "access_failures": (421, "DD", "DD"),
          "watchlist": (120, "PA", "PH"), "manual_test": (601, "RX", "RX"), "periodic_test": (602, "RP", "RP")}
HA_CLASSES = {"panic": "safety", "duress": "safety", "silent_panic": "safety", "tamper": "tamper",
              "fire": "smoke", "door_contact": "door", "ac_loss": "problem", "fault": "problem"}
ESCALATE_AFTER_S = {"panic": 30, "duress": 30, "silent_panic": 30, "fire": 30, "tamper": 60}
EVENT_CLASSES = {
    "campus.alarm_input.triggered": "alarm", "campus.alarm_input.restored": "alarm",
    "campus.bollard.state_changed": "record", "campus.bollard.command": "record", "campus.bollard.fault": "alarm",
    "campus.output.changed": "record",
    "campus.camera.motion": "record", "campus.camera.tamper": "alarm", "campus.camera.loitering": "record",
    "campus.camera.clip": "record", "campus.reader.card_read": "record", "campus.reader.code_scanned": "record",
    "campus.reader.keypad": "record", "campus.reader.tamper": "alarm", "campus.reader.power": "alarm",
    "campus.device.offline": "alarm", "campus.device.online": "alarm", "campus.device.telemetry": "telemetry",
    "campus.gateway.health": "alarm", "campus.gateway.command_refused": "record"}
# The alarm type an event's active report raises (alarms.evaluate); an alarm input raises its point type.
RAISED_BY_EVENT = {"campus.device.offline": "device_offline", "campus.gateway.health": "gateway_health",
                   "campus.camera.tamper": "tamper", "campus.reader.tamper": "tamper",
                   "campus.reader.power": "ac_loss", "campus.bollard.fault": "bollard_fault"}
ACTIVE_DATA: dict[str, dict[str, Any]] = {
    "campus.device.offline": {"reason": "no answer"},
    "campus.gateway.health": {"condition": "outbox_shedding", "active": True},
    "campus.camera.tamper": {"kind": "covered", "active": True, "detail": "lens covered"},
    "campus.reader.tamper": {"active": True, "zone": "gate", "place": "reader"},
    "campus.reader.power": {"active": True, "zone": "gate", "place": "reader"},
    "campus.bollard.fault": {"reason": "travel timeout", "active": True},
}


def test_alarm_type_literals_are_todays() -> None:
    assert get_args(gwconfig.AlarmType) == ALARM_TYPES
    assert get_args(get_args(gwconfig.LinkageWhen.model_fields["alarm_type"].annotation)[0]) == ALARM_TYPES
    assert get_args(alarm_points.PointType) == POINT_TYPES
    assert get_args(modbus_di.PointConfig.model_fields["type"].annotation) == POINT_TYPES


def test_priority_and_latching_are_todays() -> None:
    assert alarms.PRIORITY == PRIORITY
    assert alarms.LATCHING == LATCHING


def test_police_codes_are_todays() -> None:
    assert {k: (c.contact_id, c.sia, c.sia_restore) for k, c in gwconfig.POLICE_CODES.items()} == POLICE
    police = gwconfig.PoliceConfig(account="1234", paths=[{"name": "a", "host": "127.0.0.1", "port": 9000}])
    for name in (*ALARM_TYPES, "manual_test", "periodic_test", "no_such_type"):
        code = police.code(name)
        assert (code.contact_id, code.sia, code.sia_restore) == POLICE.get(name, POLICE["door_contact"]), name


def test_home_assistant_classes_and_escalation_delays_are_todays() -> None:
    assert {t: catalogue.HA_DEVICE_CLASSES[t] for t in POINT_TYPES} == HA_CLASSES
    assert gwconfig.EscalationConfig().after_s == ESCALATE_AFTER_S


def test_event_types_and_schemas_are_todays() -> None:
    assert EVENT_TYPES == EVENT_CLASSES
    assert set(validation._VALIDATORS) == set(EVENT_CLASSES)
    for event_type in EVENT_CLASSES:
        assert validation.load_schema(event_type)["type"] == "object"  # gateway/schemas/<type>.json


def _raised(event_type: str, data: dict[str, Any], kind: str = "alarm_input") -> alarms.RaiseAlarm:
    event = make_event("s1", kind, "dev-1", event_type, data, 1, AT.timestamp(), TZ)
    raised = [e for e in alarms.evaluate(event, {}, AT) if isinstance(e, alarms.RaiseAlarm)]
    assert len(raised) == 1, event_type
    return raised[0]


@pytest.mark.parametrize("event_type", sorted(RAISED_BY_EVENT))
def test_each_alarm_event_raises_todays_alarm_type(event_type: str) -> None:
    alarm = _raised(event_type, ACTIVE_DATA[event_type])
    kind = RAISED_BY_EVENT[event_type]
    assert (alarm.alarm_type, alarm.priority, alarm.latching) == (kind, PRIORITY[kind], kind in LATCHING)


@pytest.mark.parametrize("point_type", POINT_TYPES)
def test_each_point_type_raises_itself(point_type: str) -> None:
    alarm = _raised("campus.alarm_input.triggered", {"point": "p", "input": 1, "point_type": point_type})
    assert (alarm.alarm_type, alarm.priority, alarm.latching) == (point_type, PRIORITY[point_type],
                                                                   point_type in LATCHING)


def test_a_rule_raised_alarm_takes_its_priority_and_latching() -> None:
    for kind in ALARM_TYPES:
        (alarm,) = alarms.raise_condition(f"k:{kind}", "dev-1", kind, None, "e1", AT)
        assert isinstance(alarm, alarms.RaiseAlarm)
        assert (alarm.priority, alarm.latching) == (PRIORITY[kind], kind in LATCHING)
    (unknown,) = alarms.raise_condition("k:x", "dev-1", "no_such_type", None, "e1", AT)
    assert isinstance(unknown, alarms.RaiseAlarm)
    assert (unknown.priority, unknown.latching) == (3, False)


def test_home_assistant_shows_each_point_with_its_class() -> None:
    device = gwconfig.DeviceConfig.model_validate({
        "id": "box-1", "kind": "alarm_input", "driver": "modbus_di",
        "points": [{"input": i + 1, "name": f"p-{t}", "type": t} for i, t in enumerate(POINT_TYPES)]})
    found = {name: body["device_class"] for name, body in homeassistant._entities(device, "base")}
    assert found == {f"p-{t}": HA_CLASSES[t] for t in POINT_TYPES}


def test_home_assistant_shows_bollard_and_reader_conditions_with_todays_classes() -> None:
    bollard = gwconfig.DeviceConfig.model_validate({"id": "b-1", "kind": "bollard", "driver": "modbus_bollard"})
    reader = gwconfig.DeviceConfig.model_validate({"id": "r-1", "kind": "reader", "driver": "osdp"})
    assert {n: b.get("device_class") for n, b in homeassistant._entities(bollard, "base")} == {
        "position": None, "fault": "problem"}
    assert {n: b["device_class"] for n, b in homeassistant._entities(reader, "base")} == {
        "tamper": "tamper", "power": "problem"}


def test_home_assistant_shows_each_relay_of_an_output_module() -> None:
    module = gwconfig.DeviceConfig.model_validate({
        "id": "relays", "kind": "output", "driver": "modbus_do", "connection": {"host": "192.0.2.9"},
        "relays": [{"name": "siren", "coil": 0, "role": "siren", "label": "门卫室警号"},
                   {"name": "strobe", "coil": 1}]})
    entities = dict(homeassistant._entities(module, "base"))
    assert set(entities) == {"siren", "strobe"} and entities["siren"]["name"] == "门卫室警号"
    assert entities["siren"]["component"] == "binary_sensor" and entities["siren"]["state_topic"] == "base"
    assert "value_json.relays['siren']" in entities["siren"]["value_template"]


# --- the catalogue: today's values come from its rows ----------------------------------------------------------


def test_the_literals_are_the_rows() -> None:
    assert get_args(catalogue.AlarmType) == tuple(catalogue.ALARMS) == ALARM_TYPES
    assert get_args(catalogue.PointType) == catalogue.POINT_TYPES == POINT_TYPES
    assert set(get_args(catalogue.EventClass)) == {e.event_class for e in catalogue.EVENT_TABLE}


def test_the_rows_hold_todays_values() -> None:
    rows = catalogue.ALARMS
    assert {n: a.priority for n, a in rows.items()} == PRIORITY
    assert {n for n, a in rows.items() if a.latching} == LATCHING
    codes = {n: (a.police.contact_id, a.police.sia, a.police.sia_restore) for n, a in rows.items() if a.police}
    codes |= {n: (c.contact_id, c.sia, c.sia_restore) for n, c in catalogue.TEST_REPORTS.items()}
    assert codes == POLICE
    assert {n: a.ha_device_class for n, a in rows.items() if a.point} == HA_CLASSES
    assert {n: a.escalate_after_s for n, a in rows.items() if a.escalate_after_s is not None} == ESCALATE_AFTER_S
    assert catalogue.RAISED_BY_EVENT == RAISED_BY_EVENT
    assert {e.type: e.event_class for e in catalogue.EVENT_TABLE} == EVENT_CLASSES


def test_the_incident_tables_agree_with_the_rows() -> None:
    """gateway.rules.incidents still has its own copies (ALARM_CATEGORY, MAINTENANCE_TYPES); until they derive
    from the catalogue, they must say the same."""
    rows = catalogue.ALARMS
    assert {n: a.incident_category for n, a in rows.items() if a.incident_category} == incidents.ALARM_CATEGORY
    assert {n for n, a in rows.items() if a.maintenance} == set(incidents.MAINTENANCE_TYPES)


def test_gateway_events_agrees_with_the_event_rows() -> None:
    """gateway.events' EVENT_TYPES (what make_event accepts) derives from the catalogue, in its order."""
    assert {e.type: e.event_class for e in catalogue.EVENT_TABLE} == EVENT_TYPES
    assert list(EVENT_TYPES) == list(catalogue.EVENTS)


# Alarm types that have no Contact ID / SIA codes of their own today (sent with POLICE_FALLBACK's)
NO_OWN_POLICE_CODES = {"visitor_overstay", "incident_deadline", "patrol_overdue", "hazard_due", "post_uncovered"}


@pytest.mark.parametrize("name", ALARM_TYPES)
def test_every_alarm_type_has_every_field(name: str) -> None:
    alarm = catalogue.ALARMS[name]
    assert alarm.name == name
    assert alarm.priority in (1, 2, 3, 4)
    assert isinstance(alarm.latching, bool) and isinstance(alarm.point, bool) and isinstance(alarm.maintenance, bool)
    if name in NO_OWN_POLICE_CODES:
        assert alarm.police is None
    else:
        assert alarm.police is not None, f"{name}: no Contact ID / SIA codes"
        assert 0 <= alarm.police.contact_id <= 999
        assert re.fullmatch("[A-Z]{2}", alarm.police.sia) and re.fullmatch("[A-Z]{2}", alarm.police.sia_restore)
        gwconfig.PoliceCode(contact_id=alarm.police.contact_id, sia=alarm.police.sia,
                            sia_restore=alarm.police.sia_restore)  # what a site may write, the defaults are too
    if alarm.point:
        assert alarm.ha_device_class is not None, f"{name}: an alarm point needs a Home Assistant device class"
    if alarm.ha_device_class is not None:
        assert alarm.ha_device_class in HA_BINARY_SENSOR_CLASSES
    assert alarm.escalate_after_s is None or alarm.escalate_after_s > 0
    assert alarm.incident_category is None or alarm.incident_category in gwconfig.INCIDENT_CATEGORIES
    assert alarm.point or alarm.events or alarm.rules, f"{name}: nothing raises it"
    for event_type in alarm.events:
        assert catalogue.EVENTS[event_type].event_class == "alarm", f"{event_type} raises {name}: an alarm event"
    for module in alarm.rules:
        assert importlib.util.find_spec(module) is not None, module


def test_codes_are_unique_where_they_must_be() -> None:
    rows = catalogue.ALARM_TABLE
    assert len(catalogue.ALARMS) == len(rows) and len(catalogue.EVENTS) == len(catalogue.EVENT_TABLE)
    assert len(catalogue.RAISED_BY_EVENT) == sum(len(a.events) for a in rows), "an event raises one alarm type"
    # The centre tells each kind of alarm input apart by its Contact ID code.
    points = [a.police.contact_id for a in rows if a.point and a.police]
    assert len(points) == len(set(points))
    # One Contact ID code means one thing in SIA too (several types may share one: fault, bollard and gateway).
    sia: dict[int, tuple[str, str]] = {}
    for code in [a.police for a in rows if a.police] + list(catalogue.TEST_REPORTS.values()):
        assert sia.setdefault(code.contact_id, (code.sia, code.sia_restore)) == (code.sia, code.sia_restore), code
    # A test report is never taken for an alarm.
    tests = {c.contact_id for c in catalogue.TEST_REPORTS.values()} | {c.sia for c in catalogue.TEST_REPORTS.values()}
    assert not tests & ({a.police.contact_id for a in rows if a.police} | {a.police.sia for a in rows if a.police})
    assert not set(catalogue.TEST_REPORTS) & set(catalogue.ALARMS)
    # A condition that clears by itself sends a restore the centre can tell from a new alarm.
    for alarm in rows:
        if alarm.police and not alarm.latching:
            assert alarm.police.sia_restore != alarm.police.sia, alarm.name
    assert catalogue.ALARMS[catalogue.POLICE_FALLBACK].police is not None


def test_every_event_type_has_its_schema_file() -> None:
    files = {p.name for p in SCHEMAS.glob("*.json")} - {"envelope.json"}
    assert {e.schema for e in catalogue.EVENT_TABLE} == files, "one schema per event type, and no other"
    for event in catalogue.EVENT_TABLE:
        assert json.loads((SCHEMAS / event.schema).read_text(encoding="utf-8"))["type"] == "object"


def test_the_alarm_input_schemas_take_the_point_types() -> None:
    for event_type in ("campus.alarm_input.triggered", "campus.alarm_input.restored"):
        schema = json.loads((SCHEMAS / catalogue.EVENTS[event_type].schema).read_text(encoding="utf-8"))
        assert tuple(schema["properties"]["point_type"]["enum"]) == catalogue.POINT_TYPES, event_type


def test_every_event_type_the_code_names_is_in_the_catalogue() -> None:
    named = set()
    for folder in ("gateway", "drivers", "simulators"):
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r"[\"'](campus\.[a-z_]+\.[a-z_]+)[\"']", path.read_text(encoding="utf-8")))
    assert named, "the scan found the event types"
    assert named <= set(catalogue.EVENTS), f"not in the catalogue: {sorted(named - set(catalogue.EVENTS))}"


@pytest.mark.parametrize("event_type", sorted(SAMPLE_DATA))
def test_what_each_event_raises_is_in_the_catalogue(event_type: str) -> None:
    data = SAMPLE_DATA[event_type]
    data = {**data, "active": True} if "active" in data else data  # a condition reported active
    event = make_event("s1", "alarm_input", "dev-1", event_type, data, 1, AT.timestamp(), TZ)
    raised = {e.alarm_type for e in alarms.evaluate(event, {}, AT) if isinstance(e, alarms.RaiseAlarm)}
    expected = ({data["point_type"]} if event_type == "campus.alarm_input.triggered"
                else {catalogue.RAISED_BY_EVENT[event_type]} if event_type in catalogue.RAISED_BY_EVENT else set())
    assert raised == expected


def test_every_point_type_a_driver_takes_is_in_the_catalogue() -> None:
    assert set(get_args(modbus_di.PointConfig.model_fields["type"].annotation)) <= set(catalogue.POINT_TYPES)
    assert set(get_args(alarm_points.PointType)) <= set(catalogue.POINT_TYPES)


def _raised_by_rules() -> dict[str, set[str]]:
    """Each alarm type a rule raises (raise_condition's third argument), by the module it is raised in."""
    door_kinds = get_args(typing.get_type_hints(access.DoorAlarm)["kind"])
    found: dict[str, set[str]] = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                    == "raise_condition" and len(node.args) >= 3):
                continue
            kind = node.args[2]
            if isinstance(kind, ast.Constant):
                names = {kind.value}
            elif isinstance(kind, ast.Name) and kind.id in constants:
                names = {constants[kind.id]}
            elif isinstance(kind, ast.JoinedStr) and ast.unparse(kind) == "f'door_{alarm.kind}'":
                names = {f"door_{k}" for k in door_kinds}
            elif isinstance(kind, ast.Name) and module == "gateway.rules.alarms":
                continue  # raise_condition's own callers in the alarm rules: the events' rows
            else:
                raise AssertionError(f"{module}: raise_condition with {ast.unparse(kind)}: teach this test")
            for name in names:
                found.setdefault(name, set()).add(module)
    return found


def test_every_alarm_type_a_rule_raises_is_in_the_catalogue() -> None:
    found = _raised_by_rules()
    assert found, "the scan found the rules"
    assert set(found) <= set(catalogue.ALARMS), f"not in the catalogue: {sorted(set(found) - set(catalogue.ALARMS))}"
    assert found == {a.name: set(a.rules) for a in catalogue.ALARM_TABLE if a.rules}


def test_the_simulated_school_year_raises_catalogued_alarm_types() -> None:
    from simulators import school_year

    assert set(school_year.ALARM_TYPES) <= set(catalogue.ALARMS)


def test_the_alarm_layer_takes_its_labels_from_the_catalogue() -> None:
    """Every page's alarm layer, the board and the alarm's page name each alarm type from the catalogue
    (gateway.console.web.layer_config), so a new type needs no template change; no hand-kept list may come
    back."""
    web = (ROOT / "gateway" / "console" / "web.py").read_text(encoding="utf-8")
    assert '"labels": {name: i18n.gettext(language, name) for name in ALARMS}' in web
    for name in ("alarms.html", "alarm.html", "base.html"):
        template = (ROOT / "gateway" / "console" / "templates" / name).read_text(encoding="utf-8")
        assert not set(re.findall(r'"([a-z_]+)": _\("\1"\)', template)) & set(catalogue.ALARMS), name
