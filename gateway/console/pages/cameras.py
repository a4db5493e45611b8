"""The Cameras page: a live-ish tile per camera (its latest snapshot), its status and its last events;
and the snapshots themselves, for logged-in users only."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from sqlalchemy import select

from drivers.camera.capture import LIVE_WINDOW_S, WATCHING
from gateway.console.auth import LoggedIn
from gateway.console.web import console, render, require, served_file, tr
from gateway.records.models import Device, IngestedEvent

router = APIRouter()
CAMERA_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")  # \Z: "$" would let a trailing newline through
SNAPSHOT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}-(\d{8})T\d{6}-\d{3}-\d+\Z")
RECENT = 8
LIVE_POLL_S = 0.1  # how often a live stream looks for a new frame (the worker writes at most its analysis rate)
LIVE_MAX_S = 15 * 60  # a forgotten tab stops streaming; the page's image reloads to go on
BOUNDARY = "campusgw-frame"


def camera_rows(request: Request) -> list[dict[str, Any]]:
    ctx = console(request)
    with ctx.sessions() as session:
        cameras = session.scalars(select(Device).where(Device.kind == "camera").order_by(Device.id)).all()
        rows = []
        for d in cameras:
            events = session.scalars(select(IngestedEvent).where(
                IngestedEvent.device_id == d.id, IngestedEvent.type.like("campus.camera.%"))
                .order_by(IngestedEvent.device_time.desc()).limit(RECENT)).all()
            rows.append({"id": d.id, "name": d.name, "zone": d.zone, "online": d.online,
                         "offline_reason": d.offline_reason,
                         "status_changed": d.status_changed.isoformat() if d.status_changed else None,
                         "events": [{"type": e.type.rsplit(".", 1)[-1], "at": e.device_time.isoformat(),
                                     "what": e.data.get("kind") or e.data.get("zone"), "active": e.data.get("active"),
                                     "snapshot_id": e.data.get("snapshot_id")} for e in events]})
    return rows


@router.get("/cameras", response_class=HTMLResponse)
async def cameras_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    rows = camera_rows(request)
    return render(request, "cameras.html", cameras=rows, uncovered=uncovered_zones(console(request).zones, rows))


def uncovered_zones(zones: dict[str, str], cameras: list[dict[str, Any]]) -> list[str]:
    """The site's zones no camera looks at (R11, 提高覆盖率), by name, in the config's order."""
    covered = {c["zone"] for c in cameras}
    return [name for zone, name in zones.items() if zone not in covered]


@router.get("/api/cameras")
async def cameras_api(request: Request, user: LoggedIn = Depends(require("view"))) -> list[dict[str, Any]]:  # noqa: B008
    """Every camera with its status and its last events (each with its snapshot id)."""
    return camera_rows(request)


CLIP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}-\d{8}T\d{6}-\d{3}-\d+-clip\Z")


def _clip_dir(request: Request, camera: str, clip_id: str) -> Any:
    root = console(request).snapshot_dir
    if root is None or not CAMERA_ID.match(camera) or not CLIP_ID.match(clip_id) or \
            not clip_id.startswith(camera + "-"):
        raise HTTPException(404, tr(request, "There is no such clip."))
    return root / camera / "clips" / clip_id


@router.get("/clips/{camera}/{clip_id}", response_class=HTMLResponse)
async def clip_page(camera: str, clip_id: str, request: Request,
                    user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    """An alarm clip played as the camera kept it: its frames in order, with their times."""
    manifest = served_file(console(request).snapshot_dir, _clip_dir(request, camera, clip_id) / "clip.json")
    if manifest is None:
        raise HTTPException(404, tr(request, "The clip is still being recorded."))
    clip = json.loads(manifest.read_text())
    return render(request, "clip.html", camera=camera, clip_id=clip_id, times=clip["times"],
                  alarm_at=clip["alarm_at"], alarm_id=clip.get("alarm_id"))


@router.get("/clips/{camera}/{clip_id}/{frame}.jpg")
async def clip_frame(camera: str, clip_id: str, frame: int, request: Request,
                     user: LoggedIn = Depends(require("view"))) -> FileResponse:  # noqa: B008
    path = served_file(console(request).snapshot_dir, _clip_dir(request, camera, clip_id) / f"{frame:04d}.jpg")
    if frame < 0 or path is None:
        raise HTTPException(404, tr(request, "There is no such clip."))
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/snapshots/{camera}/{name}")
async def snapshot(camera: str, name: str, request: Request,
                   user: LoggedIn = Depends(require("view"))) -> FileResponse:  # noqa: B008
    """A camera's latest view (latest.jpg) or the snapshot an event names (<snapshot id>.jpg)."""
    root = console(request).snapshot_dir
    stem = name.removesuffix(".jpg")
    match = SNAPSHOT_ID.match(stem)
    if root is None or not CAMERA_ID.match(camera) or not name.endswith(".jpg") or \
            (stem != "latest" and (match is None or not stem.startswith(camera + "-"))):
        raise HTTPException(404, tr(request, "There is no such snapshot."))
    in_folder = "latest.jpg" if stem == "latest" else f"{match[1]}/{stem}.jpg"  # type: ignore[index]
    path = served_file(root, root / camera / in_folder)
    if path is None:
        raise HTTPException(404, tr(request, "There is no such snapshot."))
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get("/cameras/{camera}/live.mjpg")
async def live(camera: str, request: Request, user: LoggedIn = Depends(require("view"))) -> StreamingResponse:  # noqa: B008
    """The camera's frames as the worker analyses them (its low-resolution substream, a few per second), as
    MJPEG: an <img> plays it. Watching tells the worker to write every analysed frame, for LIVE_WINDOW_S after
    the last touch; nobody watching costs nothing."""
    root = console(request).snapshot_dir
    if root is None or not CAMERA_ID.match(camera):
        raise HTTPException(404, tr(request, "There is no such camera."))
    folder = root / camera
    with console(request).sessions() as session:
        if session.scalar(select(Device.id).where(Device.id == camera, Device.kind == "camera")) is None:
            raise HTTPException(404, tr(request, "There is no such camera."))

    async def frames() -> AsyncIterator[bytes]:
        started, touched, seen = time.monotonic(), 0.0, 0
        while time.monotonic() - started < LIVE_MAX_S and not await request.is_disconnected():
            now = time.monotonic()
            if now - touched >= LIVE_WINDOW_S / 3:
                _touch(folder / WATCHING)
                touched = now
            path = served_file(root, folder / "latest.jpg")
            stamp = path.stat().st_mtime_ns if path is not None else 0
            if path is not None and stamp != seen:
                seen = stamp
                data = path.read_bytes()
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                       .encode() + data + b"\r\n")
            await asyncio.sleep(LIVE_POLL_S)

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _touch(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # its time is what the worker reads
    except OSError:
        pass  # a read-only or full disk: the tile shows the periodic view instead
