"""The school's physical and technical protection inventory as the district's survey form asks it
(《辖区中小学校和幼儿园物防、技防基本情况排摸表》, R44): the guard force and its equipment, the physical
protection, and every technical device of the site config (alarm points, bollards, cameras with the zones they
cover, readers, patrol checkpoints, sirens and other outputs), as a Report gateway.reports.render prints (PDF,
XLSX, CSV) in either language. From the config alone: what is installed, not how it is doing."""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.config import Config, DeviceConfig
from gateway.reports.figures import Report, Table


def survey(config: Config, at: datetime) -> Report:
    tz = config.site.tz
    day = at.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    report = Report("survey", config.site.name, day, day + timedelta(days=1), tz)
    zones = {z.id: z.name for z in config.zones}
    devices = [d for d in config.devices if d.enabled]

    def zone(name: str | None) -> str:
        return zones.get(name or "", name or "-")

    def of(kind: str) -> list[DeviceConfig]:
        return [d for d in devices if d.kind == kind]

    points = [(d, p) for d in of("alarm_input") for p in (getattr(d, "points", None) or [])]
    cameras = of("camera")
    covered = {c.zone for c in cameras}
    uncovered = [name for zid, name in zones.items() if zid not in covered]
    inventory = config.inventory
    report.tables.append(Table("survey_school", "The school", ["Item", "Details"], [
        ["School", config.site.name], ["Security guards", "-" if inventory.guards is None else inventory.guards],
        ["Zones", len(zones)], ["Alarm points", len(points)], ["Cameras", len(cameras)],
        ["Zones without a camera", ", ".join(uncovered) or "-"], ["Bollards", len(of("bollard"))],
        ["Card and code readers", len(of("reader"))], ["Patrol checkpoints", len(config.patrol.checkpoints)],
        ["Sirens, strobes and other outputs", sum(len(getattr(d, "relays", None) or []) for d in of("output"))]],
        translate_first=True))
    report.tables.append(Table("survey_equipment", "Guard equipment and physical protection",
                               ["Item", "Number", "Note"],
                               [[i.item, i.count, i.note or ""] for i in (*inventory.equipment, *inventory.physical)]))
    report.tables.append(Table("survey_alarm_points", "Alarm points", ["Device", "Point", "Type", "Zone", "Place"],
                               [[d.id, p.get("name", ""), p.get("type", ""), zone(d.zone), p.get("place") or ""]
                                for d, p in points]))
    report.tables.append(Table("survey_cameras", "Cameras", ["Device", "Device name", "Zone"],
                               [[d.id, d.name or "", zone(d.zone)] for d in cameras]))
    report.tables.append(Table("survey_devices", "Bollards, readers and outputs", ["Device", "Kind", "Zone"],
                               [[d.id, f"kind_{d.kind}", zone(d.zone)]
                                for kind in ("bollard", "reader", "output") for d in of(kind)]))
    return report
