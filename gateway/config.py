"""Site configuration: one YAML file per site, validated by pydantic.

Errors name the file, the line where YAML knows it, the key path and what was
expected, because an installer at a gatehouse reads them, not a developer.
Secrets never sit in the YAML: a field takes `*_env` (an environment variable
name) or `*_file` (a file path) instead.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.catalogue import ALARM_TABLE, POLICE_FALLBACK, TEST_REPORTS, AlarmType

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
# Keys that would hold a secret in clear text; each must be given as <key>_env or <key>_file.
SECRET_KEYS = {"password", "secret", "token", "api_key", "key_password", "psk", "key"}


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_clear_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in SECRET_KEYS:
                    raise ValueError(
                        f"'{key}' must not be written in the YAML: give '{key}_env' (an environment "
                        f"variable name) or '{key}_file' (a file holding it)"
                    )
        return data


class SecretRef(Strict):
    """Where a secret comes from; the value itself is never in the config."""

    env: str | None = None
    file: Path | None = None

    def resolve(self) -> str | None:
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError([f"environment variable {self.env} is not set (needed for a secret)"])
            return value
        if self.file:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError([f"secret file {self.file}: {exc.strerror}"]) from exc
        return None


class SiteConfig(Strict):
    id: Id
    name: str = Field(min_length=1)
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}', expected an IANA name such as Asia/Shanghai") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class BrokerUser(Strict):
    username: str
    password_env: str | None = None
    password_file: Path | None = None


class BrokerConfig(Strict):
    """`url: embedded` runs amqtt inside the gateway; otherwise mqtt:// or mqtts:// to a real broker."""

    url: str = "embedded"
    embedded_host: str = "127.0.0.1"
    # Not 1883: Mosquitto usually holds it on the same box. 0 picks a free port at start.
    embedded_port: int = Field(default=1884, ge=0, le=65535)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    # Per part (drivers, rules, console), for a broker whose ACL gives each part only the topics it needs
    # (config/mosquitto.acl); a part not listed uses username / password_env above.
    users: dict[Literal["drivers", "rules", "console"], BrokerUser] = {}
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=15, ge=5, le=600)
    reconnect_min_s: int = Field(default=1, ge=1)
    reconnect_max_s: int = Field(default=30, ge=1)

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str) -> str:
        if value != "embedded" and not re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", value):
            raise ValueError(f"expected 'embedded' or mqtt://host[:port] or mqtts://host[:port], got '{value}'")
        return value

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"

    def host_port(self) -> tuple[str, int, bool]:
        """(host, port, tls) of the broker to connect to; for embedded, the configured listener."""
        if self.embedded:
            return self.embedded_host, self.embedded_port, False
        tls = self.url.startswith("mqtts://")
        rest = self.url.split("://", 1)[1].rstrip("/")
        host, _, port = rest.partition(":")
        return host, int(port) if port else (8883 if tls else 1883), tls

    def password(self) -> str | None:
        return SecretRef(env=self.password_env, file=self.password_file).resolve()

    def credentials(self, part: str) -> tuple[str | None, str | None]:
        """(username, password) for one part of the gateway."""
        user = self.users.get(part)  # type: ignore[call-overload]
        if user is not None:
            return user.username, SecretRef(env=user.password_env, file=user.password_file).resolve()
        return self.username, self.password() if self.username else None


class DatabaseConfig(Strict):
    """`url` must hold no password: give it in `url_env` (the whole URL) or via PGPASSWORD."""

    url: str | None = None
    url_env: str | None = None
    # How long a write waits for another process's lock on the SQLite file (a backup, the sqlite3 shell) before
    # it fails and is tried again; nothing is lost either way.
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value and re.match(r"^[a-z0-9+.-]+://[^/@]*:[^/@]*@", value):
            raise ValueError("the database URL holds a password: put the whole URL in an environment variable "
                             "and name it in 'url_env'")
        return value


class OutboxConfig(Strict):
    # Telemetry past this many bytes queued is shed (oldest first); alarm-class events never are.
    max_telemetry_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @model_validator(mode="before")
    @classmethod
    def _no_replay_window(cls, value: Any) -> Any:
        if isinstance(value, dict) and "replay_window_s" in value:
            raise ValueError("replay_window_s is no longer used: the outbox now keeps every event until the rules "
                             "service has recorded it, whatever the broker; remove the key")
        return value


class RetentionConfig(Strict):
    # The ingest log of raw events: >= 180 days (GB 50396 access events; Beijing 2018). Alarms, their
    # history and the audit log are records and are not purged.
    events_days: int = Field(default=180, ge=30)
    # Camera snapshots (events, the live tile) and alarm clips, on the drivers' disk; an incident's evidence
    # should be exported with it before then.
    snapshots_days: int = Field(default=90, ge=1)
    clips_days: int = Field(default=365, ge=1)


class ConsoleConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    language: Literal["zh_CN", "en"] = "zh_CN"  # the default; each user may choose
    # Session cookies marked Secure: true behind a TLS proxy; unset: Secure when the request came over https.
    secure_cookies: bool | None = None
    # Alarm types a guard may reset and close (with a note saying what was found): at night the guard is often
    # alone. Unset: the routine ones (priority 3 and below); panic, duress, fire, tamper and the like wait for a
    # supervisor unless listed here.
    guards_finish: list[AlarmType] = Field(default_factory=lambda: [
        cast(AlarmType, a.name) for a in ALARM_TABLE if a.priority >= 3])


class ZoneConfig(Strict):
    id: Id
    name: str


class RosterEntry(Strict):
    """A person notified when an alarm is not acknowledged in time (the duty-roster issue moves this
    into the database, with shifts)."""

    id: Id
    name: str


class EscalationConfig(Strict):
    # Seconds an alarm may stay unacknowledged before the first person on the roster is notified,
    # per alarm type; then the next person every `repeat_s`.
    after_s: dict[str, int] = {a.name: a.escalate_after_s for a in ALARM_TABLE if a.escalate_after_s is not None}
    default_after_s: int = Field(default=120, ge=1)
    repeat_s: int = Field(default=60, ge=1)


class LinkageWhen(Strict):
    alarm_type: list[AlarmType] = Field(min_length=1)
    zone: list[str] | None = None  # None: any zone


class LinkageBollards(Strict):
    devices: list[str] = Field(min_length=1)
    command: Literal["raise", "lower", "efo"]


class LinkageOutputs(Strict):
    """Relays of an output module (kind output) an alarm switches on: for `pulse_s` (pulse), while it is not
    acknowledged (until_ack), or until it is reset or closed (until_reset). Sounders (roles siren, pa) stop
    when a guard silences the alarm; the rest keep on."""

    device: Id
    relays: list[str] = Field(min_length=1)
    mode: Literal["pulse", "until_ack", "until_reset"] = "until_reset"
    pulse_s: float = Field(default=30.0, gt=0, le=3600)


class LinkageRule(Strict):
    """On an alarm of these types (in these zones): move bollards, sound and light the outputs, ask cameras for
    evidence, tell the police."""

    when: LinkageWhen
    bollards: LinkageBollards | None = None
    outputs: list[LinkageOutputs] = []
    cameras: list[str] = []
    police: bool = False


Channel = Literal["sms", "wecom", "dingtalk", "email"]


class SmsChannel(Strict):
    """A GSM modem on a serial port (AT commands; Chinese text in PDU mode, UCS2)."""

    port: str
    baudrate: int = Field(default=115200, ge=1200, le=921600)
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class RobotChannel(Strict):
    """A WeCom (企业微信) or DingTalk (钉钉) group robot: its webhook URL holds a key, so it is a secret."""

    webhook: SecretRef
    secret: SecretRef | None = None  # DingTalk's 加签 secret
    ca_file: Path | None = None  # a private CA to trust (an intranet relay); the system's CAs otherwise


class EmailChannel(Strict):
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    sender: str
    username: str | None = None
    password: SecretRef | None = None


class NotifyPerson(Strict):
    """How to reach one person (their id on the duty roster or in `roster`); the roster's phone is used when
    no phone is given here."""

    id: Id
    phone: str | None = None
    email: str | None = None
    language: Literal["zh_CN", "en"] = "zh_CN"
    channels: list[Channel] | None = None  # in the order tried; None: notify.channels


class NotifyConfig(Strict):
    """Reaching people on their phones: escalation steps (and `alarm_types` at once, to the people on duty)
    go out through the channels set up here, each tried in turn until one delivers; the receipts go into
    the alarm's history."""

    sms: SmsChannel | None = None
    wecom: RobotChannel | None = None
    dingtalk: RobotChannel | None = None
    email: EmailChannel | None = None
    channels: list[Channel] = ["sms", "wecom", "dingtalk", "email"]  # the order for people not listed
    people: list[NotifyPerson] = []
    alarm_types: list[AlarmType] = []
    attempts: int = Field(default=3, ge=1, le=20)  # rounds through a person's channels before giving up
    retry_s: float = Field(default=30.0, gt=0, le=3600)
    per_minute: int = Field(default=20, ge=1, le=600)  # per channel (WeCom's robot takes 20 a minute)
    console_url: str | None = None  # put in the message, so the phone opens the alarm

    def configured(self) -> list[Channel]:
        return [c for c in ("sms", "wecom", "dingtalk", "email") if getattr(self, c) is not None]

    def person(self, person_id: str) -> NotifyPerson | None:
        return next((p for p in self.people if p.id == person_id), None)


class OutputRelays(Strict):
    device: Id
    relays: list[str] = Field(min_length=1)


class LockdownConfig(Strict):
    """Campus lockdown (封校 / 一键锁闭): while it lasts every reader refuses everyone but the responders, these
    relays are on (door locks locked, the PA playing), these bollards are raised at its start. Started and
    ended by a supervisor, or started by an alarm of `alarm_types`; a drill does all of it, marked a drill."""

    responders: list[str] = []  # staff numbers or departments (a person's group) let through
    outputs: list[OutputRelays] = []
    bollards: list[Id] = []
    alarm_types: list[AlarmType] = []


class PoliceCode(Strict):
    contact_id: int = Field(ge=0, le=999)  # ADM-CID event code (SIA DC-05)
    sia: str = Field(pattern=r"^[A-Z]{2}$")  # SIA-DCS event code, and the code of its restore
    sia_restore: str = Field(pattern=r"^[A-Z]{2}$")


# Contact ID / SIA codes by alarm type (gateway.catalogue), and of the test reports.
POLICE_CODES: dict[str, PoliceCode] = {
    name: PoliceCode(contact_id=c.contact_id, sia=c.sia, sia_restore=c.sia_restore)
    for name, c in {**{a.name: a.police for a in ALARM_TABLE if a.police is not None}, **TEST_REPORTS}.items()}


class PolicePath(Strict):
    """One way to the alarm receiving centre: a DC-09 receiver's address, with its own AES key."""

    name: Id
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    key_env: str | None = None  # AES-128/192/256 key: 32, 48 or 64 hex digits (key_encoding: hex)
    key_file: Path | None = None
    # Some receivers take the key as its characters (16, 24 or 32 of them), not as hex.
    key_encoding: Literal["hex", "text"] = "hex"

    def key(self) -> bytes | None:
        value = SecretRef(env=self.key_env, file=self.key_file).resolve()
        if value is None:
            return None
        if self.key_encoding == "text":
            key = value.encode()
        else:
            try:
                key = bytes.fromhex(value)
            except ValueError:
                raise ConfigError([f"police.paths '{self.name}': the key is not hex digits"]) from None
        if len(key) not in (16, 24, 32):
            raise ConfigError([f"police.paths '{self.name}': the key is {len(key)} bytes; AES needs 16, 24 or 32"])
        return key


class PoliceEvidence(Strict):
    """Where the alarm's evidence goes beside the DC-09 message, matched by the alarm id."""

    url: str | None = Field(default=None, pattern=r"^https://|^http://(127\.0\.0\.1|localhost|\[::1\])[:/]")
    token_env: str | None = None  # sent as a Bearer token
    token_file: Path | None = None
    topic: bool = False  # also publish on campus/v1/<site>/rules/police/evidence (for an MQTT bridge)
    timeout_s: float = Field(default=10, gt=0, le=120)


class PoliceConfig(Strict):
    """The link to the police / alarm receiving centre (SIA DC-09)."""

    format: Literal["ADM-CID", "SIA-DCS"] = "ADM-CID"
    account: str = Field(pattern=r"^[0-9A-F]{3,16}$")
    receiver: str | None = Field(default=None, pattern=r"^[0-9A-F]{1,6}$")
    line: str = Field(default="1", pattern=r"^[0-9A-F]{1,6}$")
    partition: int = Field(default=1, ge=0, le=99)
    paths: list[PolicePath] = Field(min_length=1, max_length=2)  # primary first, then backup
    ack_timeout_s: float = Field(default=2.0, ge=0.1, le=60)
    attempts_per_path: int = Field(default=3, ge=1, le=10)
    supervision_s: float = Field(default=90, ge=1, le=86400)  # a NULL link test on each path this often
    periodic_test_h: float = Field(default=24, ge=0, le=24 * 7)  # 602 test report; 0: none
    # Button tests (devices in test mode) send 601 (manual test) with the zone, or nothing; never an alarm.
    test_alarms: Literal["test_code", "none"] = "test_code"
    codes: dict[str, PoliceCode] = {}  # per alarm type, over the defaults in POLICE_CODES
    # Zone numbers the centre knows: by alarm key ("<device>:<point>"), else by zone id; otherwise 0.
    zones: dict[str, int] = {}
    evidence: PoliceEvidence | None = None

    def code(self, alarm_type: str) -> PoliceCode:
        return self.codes.get(alarm_type) or POLICE_CODES.get(alarm_type) or POLICE_CODES[POLICE_FALLBACK]

    def zone_number(self, key: str | None, zone: str | None) -> int:
        for name in (key, zone):
            if name is not None and name in self.zones:
                return self.zones[name]
        return 0


class Window(Strict):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", alias="from")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BollardSchedule(Strict):
    """Bollards up during the arrival and dismissal windows, down outside them; a manual command holds
    until the next window begins or ends."""

    bollards: list[str] = Field(min_length=1)
    windows: list[Window] = Field(min_length=1)
    holidays: list[str] = []  # YYYY-MM-DD: no windows on these days


class Door(Strict):
    """A door or gate with a reader and a door contact: forced open and held open are alarms (GB 51348
    14.4.1). The contact is an alarm input point of type door_contact."""

    id: Id
    name: str | None = None
    readers: list[str] = Field(min_length=1)  # a grant at any of these opens the door
    contact: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*:[a-z0-9][a-z0-9-]*$")  # "<device>:<point name>"
    permitted_open_s: float = Field(default=15, ge=1, le=3600)  # IEC 60839-11-1: >= 10 s recommended
    grant_window_s: float = Field(default=10, ge=1, le=120)  # an opening this soon after a grant is not forced


class AccessConfig(Strict):
    """Who may pass the gate readers when (a closed campus during lessons), and the watch on doors."""

    # Closed campus (seed document): students may not leave during lessons without an exit permission.
    lessons: list[Window] = []
    holidays: list[str] = []  # YYYY-MM-DD: no lessons
    students_on_holidays: bool = False
    anti_passback: Literal["off", "soft", "hard"] = "soft"  # soft: logged; hard: refused
    failure_threshold: int = Field(default=5, ge=1, le=50)  # GB 50396: alarm after <= 5 consecutive failures
    doors: list[Door] = []
    # Visitors: still on site this long past their expected time -> an alert to the guard.
    overstay_grace_min: int = Field(default=15, ge=0, le=24 * 60)
    # A visitor's pass is valid from registration to the expected end plus this margin.
    visitor_pass_margin_min: int = Field(default=60, ge=0, le=24 * 60)
    # The host approves each visit before the pass is made (the guard records the host's answer).
    visitor_approval: bool = False
    # The gate camera whose view is kept as the visitor's photo at registration (a camera device id).
    visitor_camera: str | None = None
    # ID and phone numbers of visitors are purged this many days after the visit ends.
    personal_data_days: int = Field(default=180, ge=1, le=3650)
    # Encrypts ID and phone numbers at rest: 64 hex digits (AES-256), from the environment or a file.
    personal_data_key_env: str | None = None
    personal_data_key_file: Path | None = None


class ShiftTemplate(Strict):
    """A shift of the duty roster (值班): its name and hours; a shift that ends before it starts runs past
    midnight. Who is on it each day is kept in the database (edited in the console or imported)."""

    id: Id
    name: str
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", alias="from")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", alias="to")
    # guards needed on this shift (0: use the standards' number for the school size); at the gate at
    # drop-off and pick-up the standards want 2 (local rule, Jiangsu)
    guards: int = Field(default=0, ge=0, le=50)
    post: Literal["gate", "patrol", "any"] = "any"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DutyConfig(Strict):
    shifts: list[ShiftTemplate] = []
    # people on campus (students + staff): guards on duty per GB/T 29315-2022 / 公治〔2015〕168号 by size
    school_size: int = Field(default=0, ge=0, le=100_000)
    leader_required: bool = True  # 领导带班: a leader on duty around the clock


class Checkpoint(Strict):
    """A patrol checkpoint: a tag or card scanned at a guard's handheld / a checkpoint reader (`tag`), or a fixed
    reader at the place (`reader`: any scan there counts)."""

    id: Id
    name: str
    tag: str | None = Field(default=None, min_length=1, max_length=128)  # a card number (canonical) or a QR text
    reader: str | None = None  # a reader / checkpoint device id
    area: str | None = None
    key_area: bool = False  # a key area (要害部位): patrolled >= key_area_rounds_per_day

    @model_validator(mode="after")
    def _tag_or_reader(self) -> Checkpoint:
        if not self.tag and not self.reader:
            raise ValueError("a checkpoint needs a tag (scanned there) or a reader (fixed at the place)")
        return self


class Route(Strict):
    id: Id
    name: str
    checkpoints: list[str] = Field(min_length=1)  # in the order they are walked
    expected_min: int = Field(default=30, ge=1, le=24 * 60)
    tolerance_min: int = Field(default=10, ge=0, le=24 * 60)
    ordered: bool = True  # false: any order is fine


class PatrolPlanEntry(Strict):
    """Rounds of a route due in a shift: `rounds` spread evenly over it (the seed: each shift >= 2), or with
    `random`, each at a random time (不定时) in the first half of its share of the shift, drawn when the round is
    planned and shown to nobody until it is due. `days` makes a weekly plan (a full-campus inspection on Friday:
    `days: [fri]`)."""

    route: str
    shift: str  # a duty.shifts id
    rounds: int = Field(default=2, ge=1, le=48)
    random: bool = False
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["mon", "tue", "wed", "thu", "fri",
                                                                              "sat", "sun"]


class PatrolConfig(Strict):
    checkpoints: list[Checkpoint] = []
    routes: list[Route] = []
    plan: list[PatrolPlanEntry] = []
    start_grace_min: int = Field(default=10, ge=0, le=240)  # a round not started this long after due -> alert
    stall_min: int = Field(default=15, ge=1, le=240)  # no scan this long in a round under way -> alert
    key_area_rounds_per_day: int = Field(default=5, ge=0, le=100)  # GB/T 29315-2022


class IncidentCategory(Strict):
    """Deadlines and the procedure checklist (应急预案 steps) of one incident category."""

    report_h: float = Field(default=1.0, gt=0, le=24 * 7)  # report to the centre school (seed: within 1 h)
    written_h: float | None = Field(default=None, gt=0, le=24 * 30)  # a written report (serious: 8 h)
    warn_before_min: int = Field(default=15, ge=0, le=24 * 60)
    steps: list[str] = []


INCIDENT_CATEGORIES = ("intrusion", "violence", "injury", "fire", "food_safety", "traffic", "equipment_fault",
                       "other")


# The inspection checklist by default (R27, R30, R31): what the seed says to keep checking, by group; a group's
# name is shown as checklist_<group>, its items as written (a school writes its own in incidents.checklist).
DEFAULT_CHECKLIST: dict[str, list[str]] = {
    "guard_force": ["专职保安人数达标、在岗在位", "保安持证上岗、经过培训"],
    "guard_equipment": ["防刺手套", "辣椒水", "防暴钢叉", "橡胶警棍"],
    "rules": ["门卫值守和外来人员登记制度落实", "领导带班和24小时值班制度落实", "应急预案和演练记录齐全"],
    "installations": ["一键报警装置可用并与公安联网", "视频监控运行正常、有专人值守", "防冲撞设施(升降柱)正常"],
    "fire": ["灭火器在有效期内", "消防栓和消防通道完好"],
    "walls_exits": ["围墙完好", "安全出口畅通", "紧急疏散通道畅通、标识清楚"],
}


class Term(Strict):
    """A school term: an inspection at its start, its middle and its end (学期前、学期中、学期结束, R27)."""

    start: date  # the first day (YYYY-MM-DD)
    end: date  # the last day

    @model_validator(mode="after")
    def _in_order(self) -> Term:
        if self.end <= self.start:
            raise ValueError(f"the term ends ({self.end}) before or when it starts ({self.start})")
        return self


class IncidentsConfig(Strict):
    categories: dict[str, IncidentCategory] = {}  # over the defaults (1 h report, no steps)
    repair_h: int = Field(default=24, ge=1, le=24 * 30)  # equipment faults repaired within (GB/T 29315-2012)
    term_starts: list[str] = []  # YYYY-MM-DD: a term-start hazard inspection due 14 days later
    terms: list[Term] = []  # with their ends: inspections at the start, middle and end of each
    checklist: dict[str, list[str]] = DEFAULT_CHECKLIST  # each inspection's items, by group
    hazard_warn_days: float = Field(default=2, ge=0, le=60)  # a hazard's due-date alert this long before it (0: none)

    def category(self, name: str) -> IncidentCategory:
        return self.categories.get(name) or IncidentCategory()


class DeviceConfig(BaseModel):
    """Fields every device has; each driver validates the rest with its own model (see drivers.registry)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Id
    kind: Literal["alarm_input", "bollard", "reader", "camera", "checkpoint", "output", "test"]
    driver: str
    name: str | None = None
    zone: str | None = None
    enabled: bool = True
    test_mode: bool = False


class ClockConfig(Strict):
    """A time server to measure the clock against (SNTP), besides the system's NTP status."""

    ntp_server: str | None = None  # e.g. the school's router, or ntp.aliyun.com
    ntp_port: int = Field(default=123, ge=1, le=65535)
    max_offset_s: float = Field(default=5.0, gt=0)  # GB 50396 and the alarm standards: < 5 s a day
    check_every_s: float = Field(default=3600, ge=1)


class HomeAssistantConfig(Strict):
    """Home Assistant MQTT discovery (read only): off unless asked for."""

    discovery: bool = False
    prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class GatewayConfig(Strict):
    id: Id = "gw1"
    data_dir: Path = Path("data")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # The key that signs commands (console, rules) and that the drivers check: <data_dir>/secrets/command.key,
    # made at the first start, unless given here (hex in an environment variable, or a copied file) for parts
    # that run on different machines.
    command_key_env: str | None = None
    command_key_file: Path | None = None

    def command_key(self) -> bytes:
        from gateway.command_auth import load_key

        try:
            return load_key(self.data_dir, self.command_key_file, self.command_key_env)
        except (OSError, ValueError) as exc:
            raise ConfigError([f"gateway.command_key: {exc}"]) from None


class DistrictLink(Strict):
    """The school's link up to the district's NATS cluster: Mosquitto's bridge section is made from it
    (`campusgw district bridge`), with the site's own topics only."""

    addresses: list[str] = Field(min_length=1)
    username: str | None = None  # default: the site's id (the district gives each school its own)
    password_env: str | None = None
    password_file: Path | None = None
    cafile: Path | None = None  # the district's CA: the bridge then speaks TLS
    # The nodes' NATS client ports (host:port): the alarm views also go there straight over core NATS, which
    # needs no leader, so a node's loss delays them by a reconnect instead of an election (district/live.py).
    live: list[str] = []

    @field_validator("addresses", "live")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", address):
                raise ValueError(f"'{address}' is not host:port (a node of the district's cluster, its MQTT port)")
        return value


class InventoryItem(Strict):
    item: str = Field(min_length=1, max_length=100)  # 防刺手套, 防暴钢叉, 橡胶警棍, 防暴盾牌, 辣椒水; 围墙, 隔离栏
    count: int = Field(default=1, ge=0, le=100_000)
    note: str | None = Field(default=None, max_length=200)


class InventoryConfig(Strict):
    """What the district's survey form asks besides the devices (物防、技防基本情况排摸表, R44): the guard force and
    its equipment (the seed names stab-proof gloves, pepper spray, safety forks, batons) and the physical
    protection (walls, gates, barriers)."""

    guards: int | None = Field(default=None, ge=0, le=1000)  # full-time security guards (专职保安)
    equipment: list[InventoryItem] = []
    physical: list[InventoryItem] = []


class Config(Strict):
    site: SiteConfig
    district: DistrictLink | None = None
    inventory: InventoryConfig = InventoryConfig()
    gateway: GatewayConfig = GatewayConfig()
    broker: BrokerConfig = BrokerConfig()
    database: DatabaseConfig = DatabaseConfig()
    outbox: OutboxConfig = OutboxConfig()
    console: ConsoleConfig = ConsoleConfig()
    retention: RetentionConfig = RetentionConfig()
    zones: list[ZoneConfig] = []
    devices: list[DeviceConfig] = []
    roster: list[RosterEntry] = []
    escalation: EscalationConfig = EscalationConfig()
    linkage: list[LinkageRule] = []
    bollard_schedules: list[BollardSchedule] = []
    police: PoliceConfig | None = None
    notify: NotifyConfig = NotifyConfig()
    lockdown: LockdownConfig = LockdownConfig()
    access: AccessConfig = AccessConfig()
    duty: DutyConfig = DutyConfig()
    patrol: PatrolConfig = PatrolConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    clock: ClockConfig = ClockConfig()
    # The steps a guard ticks on an alarm's page, per alarm type, over the catalogue's (gateway.catalogue).
    procedures: dict[AlarmType, list[Annotated[str, Field(min_length=1, max_length=200)]]] = {}

    @field_validator("broker", mode="before")
    @classmethod
    def _broker_shorthand(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    def database_url(self) -> str:
        if self.database.url_env:
            value = os.environ.get(self.database.url_env)
            if not value:
                raise ConfigError([f"environment variable {self.database.url_env} is not set (database.url_env)"])
            return value
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.gateway.data_dir / 'campusgw.db').resolve()}"

    def device(self, device_id: str) -> DeviceConfig:
        return next(d for d in self.devices if d.id == device_id)


class ConfigError(Exception):
    """A config that cannot be used; `problems` are lines a person can act on."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
