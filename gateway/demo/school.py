"""A whole simulated school for the demo and the end-to-end test: every device kind simulated at the protocol
level by the project's simulators, and a school's data (staff and students with cards, the week's duty roster
with a leader, patrol routes, incident procedures, a watch-list entry, a visitor expected today).

SimulatedSchool starts the simulators and writes the site config around their ports and ptys; `seed` fills
the records once the gateway has made its database. The scenario player (gateway.demo.scenario) then acts on
the devices through `card`, `scan`, `press` and the like, as people at the school would.
"""

from __future__ import annotations

import csv
import io
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from drivers.card_formats import Card, make_card
from gateway.config import Config, DutyConfig
from gateway.personal import PersonalData
from gateway.records import people, roster, visits, watchlist
from gateway.records.models import Person, utcnow
from simulators.bollard import BollardSimulator
from simulators.camera import CameraSimulator
from simulators.gsm_modem import GsmModemSimulator
from simulators.modbus_di import ModbusDISimulator
from simulators.osdp_reader import OsdpLine, OsdpReaderSimulator
from simulators.relay_outputs import RelayOutputSimulator
from simulators.serial_reader import SerialReaderSimulator

SITE = "demo-school"
TIMEZONE = "Asia/Shanghai"
STAFF = 20
STUDENTS = 200
STUDENT_FACILITY = 18  # the facility code printed on the students' cards ("018,20001")
STAFF_FACILITY = 10
# The alarm boxes' points: (input, name, type, place); the same wiring at each gate.
BOX_POINTS = ((1, "panic", "panic", "一键报警 One-key alarm"), (2, "duress", "duress", "脚踏报警 Foot switch"),
              (3, "box-tamper", "tamper", "报警模块箱防拆 Box tamper"), (4, "smoke", "fire", "烟感 Smoke detector"),
              (5, "door", "door_contact", "门卫室门磁 Gatehouse door"))
BOXES = {"south-gate-box": 1, "north-gate-box": 2}  # device -> Modbus unit on the one simulated TCP module line
BOLLARDS = ("south-gate-bollard-east", "south-gate-bollard-west")
OSDP_READERS = {"south-gate-reader-in": 1, "south-gate-reader-out": 2}  # device -> address, on one RS-485 line
SCANNERS = ("north-gate-scanner-in", "north-gate-scanner-out", "patrol-wand")  # serial, on ptys
CAMERAS = ("south-gate-cam", "yard-cam")
RELAYS = "gatehouse-relays"
CHECKPOINTS = ("教学楼东 Teaching east", "教学楼西 Teaching west", "宿舍 Dormitory", "食堂 Canteen",
               "配电房 Switch room", "围墙北 North wall")
VISITOR = {"name": "赵访客 Zhao (visitor)", "id_number": "110101199003074514", "phone": "13800138000",
           "purpose": "家长会 Parents' meeting"}
WATCHED = {"name": "钱某 Qian (watch list)", "id_number": "11010519491231002X",
           "reason": "法院禁止令 Court order: must not approach the school"}


def school_day(today: date) -> date:
    """The day the demo plays: today if it is a weekday, else the next Monday (lessons and schedules are
    weekday ones)."""
    return today + timedelta(days=(7 - today.weekday()) % 7 if today.weekday() >= 5 else 0)


def staff_id(n: int) -> str:
    return f"T{n:03d}"


def student_id(n: int) -> str:
    return f"S{n:04d}"


def card_of(external_id: str) -> Card:
    """Every person's card, derived from their id (so the scenario and the CSV agree)."""
    n = int(external_id[1:])
    if external_id.startswith("T"):
        return make_card("wiegand26", 10_000 + n, STAFF_FACILITY)
    return make_card("wiegand26", 20_000 + n, STUDENT_FACILITY)


def people_csv() -> str:
    """The school's staff and students with their cards, as `campusgw people import` reads them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "external_id", "name", "group", "card"])
    surnames = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
    given = "明华丽强静伟芳敏军燕"
    for n in range(1, STAFF + 1):
        writer.writerow(["staff", staff_id(n), f"{surnames[n % 20]}老师", "Staff", card_of(staff_id(n)).credential])
    for n in range(1, STUDENTS + 1):
        name = surnames[n % 20] + given[n % 10] + given[(n // 10) % 10]
        writer.writerow(["student", student_id(n), name, f"{1 + (n - 1) // 40}-{1 + (n - 1) % 4}",
                         card_of(student_id(n)).credential])
    return out.getvalue()


@dataclass
class SimulatedSchool:
    """The simulators of a whole school, and its site config around them."""

    data_dir: Path
    tz: tzinfo
    osdp_key: str = field(default_factory=lambda: secrets.token_hex(16))
    boxes: ModbusDISimulator | None = None
    bollards: dict[str, BollardSimulator] = field(default_factory=dict)
    osdp_line: OsdpLine | None = None
    osdp: dict[str, OsdpReaderSimulator] = field(default_factory=dict)
    serial: dict[str, SerialReaderSimulator] = field(default_factory=dict)
    cameras: dict[str, CameraSimulator] = field(default_factory=dict)
    relays: RelayOutputSimulator | None = None  # the gatehouse's siren, strobe, PA trigger and side gate lock
    modem: GsmModemSimulator | None = None  # the GSM modem the duty people's SMS go out through
    visit_pass: str | None = None  # the expected visitor's pass (a QR code), once seeded
    camera_count: int = len(CAMERAS)  # more than CAMERAS: yard cameras 3, 4, ... (bench/school_day runs 8)
    _ptys: Path | None = None

    def start(self) -> None:
        self._ptys = Path(tempfile.mkdtemp(prefix="campusgw-demo-"))
        self.boxes = ModbusDISimulator(units=list(BOXES.values()), inputs=16)
        self.boxes.start()
        for name in BOLLARDS:
            sim = BollardSimulator()
            sim.start()
            self.bollards[name] = sim
        self.osdp_line = OsdpLine()
        key = bytes.fromhex(self.osdp_key)
        for name, address in OSDP_READERS.items():
            reader = OsdpReaderSimulator(address=address, scbk=key, name=name, line=self.osdp_line)
            reader.start()
            self.osdp[name] = reader
        for name in SCANNERS:
            scanner = SerialReaderSimulator(self._ptys / name)
            scanner.start()
            self.serial[name] = scanner
        for name in self.camera_names():
            camera = CameraSimulator()
            camera.start()
            self.cameras[name] = camera
        self.relays = RelayOutputSimulator()
        self.relays.start()
        self.modem = GsmModemSimulator(self._ptys / "gsm-modem")
        self.modem.start()

    def camera_names(self) -> tuple[str, ...]:
        return CAMERAS + tuple(f"yard-cam-{n}" for n in range(len(CAMERAS) + 1, self.camera_count + 1))

    def stop(self) -> None:
        """Every simulator stopped and every pty closed, whatever failed to start."""
        if self.modem is not None:
            self.modem.stop()
        if self.relays is not None:
            self.relays.stop()
        for camera in self.cameras.values():
            camera.stop()
        for scanner in self.serial.values():
            scanner.stop()
        for reader in self.osdp.values():
            reader.stop()
        if self.osdp_line is not None:
            self.osdp_line.close()
        for bollard in self.bollards.values():
            bollard.stop()
        if self.boxes is not None:
            self.boxes.stop()
        if self._ptys is not None:
            for link in self._ptys.iterdir():
                link.unlink(missing_ok=True)
            self._ptys.rmdir()

    # -- the site config -----------------------------------------------------------------------------------

    def config(self, broker: Any = None, database: Any = None,
               key_env: str = "CAMPUSGW_DEMO_OSDP_KEY") -> dict[str, Any]:
        """The school's site config, around the running simulators. `broker` / `database`: another than the
        embedded broker and SQLite (the tests run the same day on Mosquitto and PostgreSQL). The OSDP key is
        read from `key_env`, which the caller sets to `osdp_key`."""
        assert self.boxes is not None and self.osdp_line is not None
        weekdays = ["mon", "tue", "wed", "thu", "fri"]
        devices: list[dict[str, Any]] = []
        for box, unit in BOXES.items():
            gate = box.removesuffix("-box")
            devices.append({
                "id": box, "kind": "alarm_input", "driver": "modbus_di", "zone": gate,
                "name": f"{'南门' if gate.startswith('south') else '北门'}报警模块 {gate} alarm box",
                "connection": {"host": "127.0.0.1", "port": self.boxes.port, "unit": unit}, "poll_ms": 50,
                "points": [{"input": i, "name": n, "type": t, "place": f"{gate} {p}"} for i, n, t, p in BOX_POINTS]})
        for name, sim in self.bollards.items():
            devices.append({"id": name, "kind": "bollard", "driver": "modbus_bollard", "zone": "south-gate",
                            "name": f"南门升降柱 {name}", "connection": {"host": "127.0.0.1", "port": sim.port}})
        for name, reader in self.osdp.items():
            devices.append({"id": name, "kind": "reader", "driver": "osdp", "zone": "south-gate",
                            "name": "南门入口 South gate in" if name.endswith("-in") else "南门出口 South gate out",
                            "bus": {"port": self.osdp_line.port, "baudrate": 115200}, "address": reader.address,
                            "key_env": key_env, "direction": "entry" if name.endswith("-in") else "exit",
                            "retry_s": 1.0})
        for name in ("north-gate-scanner-in", "north-gate-scanner-out"):
            devices.append({"id": name, "kind": "reader", "driver": "serial_reader", "zone": "north-gate",
                            "name": "北门访客扫码 North gate visitor scanner", "mode": "qr",
                            "port": str(self.serial[name].link),
                            "direction": "entry" if name.endswith("-in") else "exit"})
        devices.append({"id": "patrol-wand", "kind": "checkpoint", "driver": "serial_reader", "mode": "qr",
                        "name": "巡更棒 Patrol wand", "port": str(self.serial["patrol-wand"].link)})
        assert self.relays is not None and self.modem is not None
        devices.append({"id": RELAYS, "kind": "output", "driver": "modbus_do", "zone": "south-gate",
                        "name": "门卫室继电器模块 Gatehouse relays",
                        "connection": {"host": "127.0.0.1", "port": self.relays.port}, "watchdog_s": 5,
                        "relays": [{"name": "siren", "coil": 0, "role": "siren", "label": "门卫室警号 Siren"},
                                   {"name": "strobe", "coil": 1, "role": "strobe", "label": "门卫室警灯 Strobe"},
                                   {"name": "pa", "coil": 2, "role": "pa", "label": "广播触发 PA trigger"},
                                   {"name": "side-gate-lock", "coil": 3, "role": "lock",
                                    "label": "侧门电锁 Side gate lock"}]})
        for name, camera in self.cameras.items():
            zone = "south-gate" if name.startswith("south") else "yard"
            label = "南门摄像机 South gate camera" if zone == "south-gate" else "操场摄像机 Yard"
            label += f" {name.rsplit('-', 1)[1]}" if name[-1].isdigit() else ""
            entry: dict[str, Any] = {"id": name, "kind": "camera", "driver": "opencv", "zone": zone, "name": label,
                                     "url": camera.url, "video_loss_s": 10}
            if zone == "south-gate":
                entry["loitering"] = {"zones": [{"name": "gate-front",
                                                 "polygon": [[0.05, 0.3], [0.95, 0.3], [0.95, 1], [0.05, 1]]}],
                                      "dwell_s": 20}
            devices.append(entry)
        shifts = [{"id": "day", "name": "白班 Day", "from": "07:00", "to": "19:00"},
                  {"id": "night", "name": "夜班 Night", "from": "19:00", "to": "07:00"},
                  {"id": "drop-off", "name": "早高峰 Drop-off", "from": "07:10", "to": "08:10", "guards": 2,
                   "post": "gate"},
                  {"id": "pick-up", "name": "晚高峰 Pick-up", "from": "16:20", "to": "17:30", "guards": 2,
                   "post": "gate"}]
        checkpoints = [{"id": f"cp-{n:02d}", "name": name, "tag": f"CP-{n:02d}",
                        **({"area": "teaching"} if n < 3 else {})} for n, name in enumerate(CHECKPOINTS, 1)]
        return {
            "site": {"id": SITE, "name": "示范中学 Demo Secondary School", "timezone": TIMEZONE},
            "gateway": {"id": "gw1", "data_dir": str(self.data_dir)},
            "broker": broker or {"url": "embedded", "embedded_port": 0},
            **({"database": database} if database else {}),
            "zones": [{"id": "south-gate", "name": "南门 South gate"}, {"id": "north-gate", "name": "北门 North gate"},
                      {"id": "yard", "name": "操场 Yard"}, {"id": "teaching", "name": "教学楼 Teaching block"}],
            "devices": devices,
            "access": {"lessons": [{"days": weekdays, "from": "08:00", "to": "11:50"},
                                   {"days": weekdays, "from": "14:00", "to": "16:20"}],
                       "anti_passback": "soft"},
            "duty": {"school_size": STAFF + STUDENTS, "shifts": shifts},
            "patrol": {"checkpoints": checkpoints,
                       "routes": [{"id": "campus", "name": "校园巡逻 Campus round",
                                   "checkpoints": [c["id"] for c in checkpoints], "expected_min": 30,
                                   "tolerance_min": 15}],
                       "plan": [{"route": "campus", "shift": "day", "rounds": 2}]},
            "incidents": {"categories": {
                "violence": {"report_h": 1, "written_h": 8,
                             "steps": ["隔离当事人 Separate those involved", "拨打110 Call the police",
                                       "通知家长 Inform the parents", "保护现场 Preserve the scene"]},
                "intrusion": {"report_h": 1, "written_h": 8,
                              "steps": ["拦截控制 Stop and hold", "拨打110 Call the police",
                                        "清点学生 Count the students"]}}},
            "roster": [{"id": "gate-guard", "name": "门卫 Gate guard"},
                       {"id": "duty-leader", "name": "带班领导 Leader"}],
            "notify": {"sms": {"port": str(self.modem.link)}, "alarm_types": ["panic", "duress"]},
            "lockdown": {"responders": [staff_id(1)], "bollards": list(self.bollards),
                         "outputs": [{"device": RELAYS, "relays": ["side-gate-lock", "pa"]}]},
            "linkage": [
                {"when": {"alarm_type": ["panic", "duress"], "zone": ["south-gate"]},
                 "bollards": {"devices": list(self.bollards), "command": "efo"}, "cameras": ["south-gate-cam"],
                 "outputs": [{"device": RELAYS, "relays": ["siren"], "mode": "until_ack"},
                             {"device": RELAYS, "relays": ["strobe"], "mode": "until_reset"}]},
                {"when": {"alarm_type": ["panic", "duress"], "zone": ["north-gate"]}, "cameras": ["south-gate-cam"]},
                {"when": {"alarm_type": ["fire"]}, "bollards": {"devices": list(self.bollards), "command": "lower"}}],
            "bollard_schedules": [{"bollards": list(self.bollards),
                                   "windows": [{"days": weekdays, "from": "07:10", "to": "08:10"},
                                               {"days": weekdays, "from": "16:20", "to": "17:30"}]}],
        }

    # -- the school's records ------------------------------------------------------------------------------

    def seed(self, sessions: Any, config: Config, day: date, users: dict[str, str]) -> None:
        """People and cards, the week's roster (guards and a leader on every shift), a watch-list entry and a
        visitor expected today. `users`: console user name -> role, put on the roster under their names."""
        now = utcnow()
        personal = PersonalData.from_config(config.access.personal_data_key_env,
                                            config.access.personal_data_key_file, config.gateway.data_dir)
        with sessions.begin() as session:
            result = people.import_people(session, people_csv(), now)
            if result.errors:
                raise ValueError(f"the demo's people: {result.errors[:3]}")
        with sessions.begin() as session:
            self._roster(session, config.duty, day, users, now)
        with sessions.begin() as session:
            watchlist.add_watch_entry(session, personal, id_number=WATCHED["id_number"], name=WATCHED["name"],
                                      reason=WATCHED["reason"], actor="demo", now=now)
        with sessions.begin() as session:
            host = session.query(Person).filter_by(external_id=staff_id(3)).one()
            registration = visits.register_visit(
                session, personal, name=VISITOR["name"], id_type="resident_id", id_number=VISITOR["id_number"],
                phone=VISITOR["phone"], host_id=host.id, purpose=VISITOR["purpose"], expected_minutes=8 * 60,
                now=now, registered_by="demo")
            self.visit_pass = registration.token

    def _roster(self, session: Session, duty: DutyConfig, day: date, users: dict[str, str], now: datetime) -> None:
        guards = [u for u, role in users.items() if role == "guard"] or ["guard"]
        leader = next((u for u, role in users.items() if role in ("supervisor", "admin")), "supervisor")
        # The whole week of the demo's day, and the night before it (still on duty in the morning: a post without
        # a guard is an alarm)
        for offset in range(-day.weekday() - 1, 7 - day.weekday()):
            each = day + timedelta(days=offset)
            for shift in duty.shifts:
                for name, username, role in ((f"门卫 {guards[0]}", guards[0], "guard"),
                                             ("门卫 陈师傅 Chen", None, "guard"),
                                             (f"带班领导 {leader}", leader, "leader")):
                    if role == "leader" and shift.post == "gate":
                        continue
                    roster.assign(session, duty, self.tz, day=each, shift=shift.id, role=role, name=name,
                                  username=username, phone="13900000000", actor="demo", now=now)

    # -- what people at the school do (the scenario player calls these) -----------------------------------

    def card(self, reader: str, external_id: str) -> None:
        card = card_of(external_id)
        if reader in self.osdp:
            self.osdp[reader].present_card(card)
        else:
            self.serial[reader].present_card(card)

    def scan(self, reader: str, code: str) -> None:
        self.serial[reader].scan(code)

    def visitor(self, reader: str) -> None:
        """The expected visitor shows the pass (its QR code) at a scanner."""
        assert self.visit_pass is not None, "seed() registers the visitor"
        self.scan(reader, self.visit_pass)

    def press(self, box: str, point: str) -> None:
        assert self.boxes is not None
        self.boxes.press(_input(point), unit=BOXES[box])

    def release(self, box: str, point: str) -> None:
        assert self.boxes is not None
        self.boxes.release(_input(point), unit=BOXES[box])

    def vehicle(self, bollard: str, present: bool) -> None:
        if present:
            self.bollards[bollard].vehicle_arrives()
        else:
            self.bollards[bollard].vehicle_leaves()

    def cover(self, camera: str, on: bool) -> None:
        self.cameras[camera].cover(on)

    def loiter(self, camera: str) -> None:
        self.cameras[camera].run_script("loiter")

    def walk(self, camera: str) -> None:
        self.cameras[camera].run_script("walk")

    def reader_power(self, reader: str, on: bool) -> None:
        if on:
            self.osdp[reader].power_on()
        else:
            self.osdp[reader].power_off()


def _input(point: str) -> int:
    return next(i for i, name, _, _ in BOX_POINTS if name == point)
