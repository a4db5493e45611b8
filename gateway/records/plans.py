"""Site plans: an image of the site or a floor, uploaded by an admin, with each device placed on it (as fractions
of the image's size, so the plan scales to any screen). Kept in the database, so a backup has them and an
installer can export the placement."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.records import store
from gateway.records.models import Device, PlanPosition, SitePlan

MAX_IMAGE = 8 * 1024 * 1024  # a scanned A3 plan as a good JPEG is 1-3 MB
MAX_SIDE = 12_000  # pixels: past this a browser struggles, and it is not a plan
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class PlanError(ValueError):
    """An upload or placement refused, with why (shown to the admin): `message` is an English msgid with
    {fields}, filled from `params` after translation."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message.format(**params))
        self.message, self.params = message, params


@dataclass(frozen=True)
class ImageInfo:
    media_type: str
    width: int
    height: int


def image_info(data: bytes) -> ImageInfo:
    """The type and size of a PNG or JPEG from its bytes; PlanError for anything else (SVG is refused: it can
    carry script)."""
    if data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise PlanError("the PNG file is damaged (no IHDR header)")
        width, height = struct.unpack(">II", data[16:24])
        return _sized("image/png", width, height)
    if data.startswith(b"\xff\xd8"):
        at = 2
        while at + 4 <= len(data):
            if data[at] != 0xFF:
                raise PlanError("the JPEG file is damaged (a marker is missing)")
            marker = data[at + 1]
            if marker == 0xFF:  # fill bytes before a marker
                at += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
                at += 2
                continue
            length = struct.unpack(">H", data[at + 2:at + 4])[0]
            if length < 2:
                raise PlanError("the JPEG file is damaged (a segment length is wrong)")
            if marker in JPEG_SOF:
                if at + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[at + 5:at + 9])
                return _sized("image/jpeg", width, height)
            at += 2 + length
        raise PlanError("the JPEG file is damaged (no frame header)")
    raise PlanError("a plan must be a PNG or JPEG image")


def _sized(media_type: str, width: int, height: int) -> ImageInfo:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise PlanError("the image is {width}x{height} pixels; a plan is at most {most} pixels a side",
                        width=width, height=height, most=MAX_SIDE)
    return ImageInfo(media_type, width, height)


def add_plan(session: Session, name: str, data: bytes, actor: str, now: datetime) -> SitePlan:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise PlanError("give the plan a name of 1 to 100 characters (e.g. 'Ground floor')")
    if len(data) > MAX_IMAGE:
        raise PlanError("the image is {size} MiB; a plan is at most {most} MiB",
                        size=f"{len(data) / 2**20:.1f}", most=MAX_IMAGE // 2**20)
    info = image_info(data)
    plan = SitePlan(name=name, image=data, media_type=info.media_type, width=info.width, height=info.height,
                    uploaded_by=actor, uploaded_at=now)
    session.add(plan)
    session.flush()
    store.audit(session, actor, "plan.add", f"plan:{plan.id}", "ok",
                {"name": name, "size": [info.width, info.height], "bytes": len(data)}, now)
    return plan


def delete_plan(session: Session, plan_id: int, actor: str, now: datetime) -> None:
    plan = session.get(SitePlan, plan_id)
    if plan is None:
        raise PlanError("there is no such plan")
    session.execute(delete(PlanPosition).where(PlanPosition.plan_id == plan_id))
    session.delete(plan)
    store.audit(session, actor, "plan.delete", f"plan:{plan_id}", "ok", {"name": plan.name}, now)


def place(session: Session, plan_id: int, device_id: str, x: float, y: float, actor: str, now: datetime) -> None:
    """Put a device at (x, y), fractions of the plan's width and height; a device is on one plan at most."""
    if session.get(SitePlan, plan_id) is None:
        raise PlanError("there is no such plan")
    if session.get(Device, device_id) is None:
        raise PlanError("there is no such device")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise PlanError("a place on the plan is between 0 and 1 across and down")
    session.execute(delete(PlanPosition).where(PlanPosition.device_id == device_id))
    session.add(PlanPosition(plan_id=plan_id, device_id=device_id, x=x, y=y, placed_by=actor, placed_at=now))
    store.audit(session, actor, "plan.place", f"device:{device_id}", "ok",
                {"plan": plan_id, "x": round(x, 4), "y": round(y, 4)}, now)


def unplace(session: Session, device_id: str, actor: str, now: datetime) -> None:
    session.execute(delete(PlanPosition).where(PlanPosition.device_id == device_id))
    store.audit(session, actor, "plan.unplace", f"device:{device_id}", "ok", {}, now)


def plans(session: Session) -> list[dict[str, Any]]:
    """Every plan with its devices' places (what the page draws, and the export)."""
    placed: dict[int, list[dict[str, Any]]] = {}
    for p in session.scalars(select(PlanPosition).order_by(PlanPosition.device_id)):
        placed.setdefault(p.plan_id, []).append({"device_id": p.device_id, "x": p.x, "y": p.y})
    rows = session.execute(select(SitePlan.id, SitePlan.name, SitePlan.width, SitePlan.height, SitePlan.media_type)
                           .order_by(SitePlan.id)).all()
    return [{"id": r.id, "name": r.name, "width": r.width, "height": r.height, "media_type": r.media_type,
             "devices": placed.get(r.id, [])} for r in rows]
