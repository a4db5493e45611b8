"""The Patrols page: a day's rounds, each with its progress per checkpoint (visited at what device time,
missed, late, out of order), its state and guard, and the key areas' rounds against the daily target.

The board reloads itself every REFRESH_S (a small HTML fragment); the rounds are the rules service's
records (gateway.rules_service.patrol_shell), read from the database, so the console may run apart from it. Each round
carries its route as planned, so a past day reads right after a route is changed.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import or_, select

from gateway.config import Checkpoint, PatrolConfig
from gateway.console.auth import LoggedIn
from gateway.console.web import Console, console, render, require, tr
from gateway.records.models import PatrolRound, utcnow
from gateway.rules.patrol import OPEN_STATES, key_area_counts

router = APIRouter()
REFRESH_S = 10  # seconds between reloads of the board: a scan shows up within this


def parse_day(request: Request, text: str | None) -> date:
    ctx = console(request)
    if not text:
        return utcnow().astimezone(ctx.tz).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, tr(request, "A date is written as YYYY-MM-DD.") + f" ({text})") from None


def board(request: Request, day: date) -> dict[str, Any]:
    """The rounds of `day` (for today also yesterday's still open: a night shift after midnight) and the
    key areas' count."""
    ctx = console(request)
    today = utcnow().astimezone(ctx.tz).date()
    which = PatrolRound.day == day.isoformat()
    if day == today:
        which = or_(which, (PatrolRound.day == (day - timedelta(days=1)).isoformat())
                    & PatrolRound.state.in_(OPEN_STATES))
    with ctx.sessions() as session:
        rows = session.scalars(select(PatrolRound).where(which)
                               .order_by(PatrolRound.due_at, PatrolRound.route, PatrolRound.id)).all()
    now = utcnow()
    # A round at a random time (不定时) is nobody's to see before it is due: a guard's page would tell it.
    hidden = [r for r in rows if r.result.get("random") and r.state == "pending" and r.due_at > now]
    rows = [r for r in rows if r not in hidden]
    rounds = [round_view(ctx, r) for r in rows]
    config = ctx.patrol
    if config.checkpoints:
        checkpoints, target = list(config.checkpoints), config.key_area_rounds_per_day
    else:  # from the routes as the rounds were planned
        names: dict[str, str] = {}
        for r in rows:
            route = r.result.get("route", {})
            names.update({c: route.get("names", {}).get(c, c) for c in route.get("key_areas", [])})
        checkpoints, target = ([Checkpoint(id=c, name=n, tag=c, key_area=True) for c, n in names.items()],
                               PatrolConfig().key_area_rounds_per_day)
    same_day = [r.result.get("visited", []) for r in rows if r.day == day.isoformat()]
    key_areas = [{"checkpoint": k.checkpoint, "name": k.name, "rounds": k.rounds, "target": k.target, "met": k.met}
                 for k in key_area_counts(checkpoints, same_day, target)]
    return {"day": day.isoformat(), "today": day == today, "rounds": rounds, "key_areas": key_areas,
            "random_to_come": len(hidden),
            "refresh_s": REFRESH_S, "updated": ctx.local_time(utcnow(), "%H:%M:%S"),
            "now": round_now(rounds) if day == today else None}


def round_now(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round a guard on patrol needs now: the one being walked, else the next one due; with its next
    checkpoint (the first not yet scanned, in the route's order) and how far it has got."""
    walking = [r for r in rounds if r["state"] == "in_progress"]
    waiting = [r for r in rounds if r["state"] == "pending"]
    if not walking and not waiting:
        return None
    chosen = (walking or waiting)[0]
    points = chosen["checkpoints"]
    following = next((c for c in points if c["status"] in ("waiting", "skipped")), None)
    return {**chosen, "next": following, "done": sum(1 for c in points if c["status"] == "visited"),
            "total": len(points)}


def round_view(ctx: Console, row: PatrolRound) -> dict[str, Any]:
    result = row.result
    route = result.get("route", {})
    names = route.get("names", {})
    key_areas = set(route.get("key_areas", []))
    checkpoints = []
    for c in result.get("checkpoints", []):
        status = ("missed" if c.get("missed") else "visited" if c.get("at") else "skipped" if c.get("skipped")
                  else "waiting")
        checkpoints.append({
            "id": c["id"], "name": names.get(c["id"], c["id"]), "key_area": c["id"] in key_areas, "status": status,
            "at": ctx.local_time(c.get("at"), "%H:%M:%S") if c.get("at") else None,
            "server_at": ctx.local_time(c.get("server_at"), "%H:%M:%S") if c.get("server_at") else None,
            "late": bool(c.get("late")), "out_of_order": bool(c.get("out_of_order"))})
    return {
        "id": row.id, "day": row.day, "route": row.route, "route_name": route.get("name", row.route),
        "shift": row.shift, "shift_name": result.get("shift_name", row.shift), "number": row.number,
        "due_at": row.due_at.isoformat(), "due": ctx.local_time(row.due_at, "%H:%M"),
        "until": ctx.local_time(result.get("window_end"), "%H:%M"), "state": row.state, "guard": row.guard,
        "started": ctx.local_time(row.started_at, "%H:%M:%S"), "finished": ctx.local_time(row.finished_at, "%H:%M:%S"),
        "checkpoints": checkpoints, "missed": [names.get(c, c) for c in result.get("missed", [])],
        "late": [names.get(c, c) for c in result.get("late", [])],
        "out_of_order": [names.get(c, c) for c in result.get("out_of_order", [])],
        "alerts": sorted(k for k, v in result.get("alerts", {}).items() if v.get("raised")),
        "alarm_id": row.alarm_id,
    }


@router.get("/patrols", response_class=HTMLResponse)
async def patrols_page(request: Request, day: str | None = None,
                       user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return render(request, "patrols.html", board=board(request, parse_day(request, day)))


@router.get("/patrols/board", response_class=HTMLResponse)
async def patrols_board(request: Request, day: str | None = None,
                        user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    """The board alone, for the page's own refresh."""
    return render(request, "patrols_board.html", board=board(request, parse_day(request, day)))


@router.get("/api/patrols")
async def patrols_api(request: Request, day: str | None = None,
                      user: LoggedIn = Depends(require("view"))) -> dict[str, Any]:  # noqa: B008
    """A day's rounds (today by default) with each checkpoint's result, and the key areas' count."""
    return board(request, parse_day(request, day))
