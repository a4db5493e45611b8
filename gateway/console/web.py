"""What every console page shares: who is asking (session cookie or API token), roles, CSRF, rendering."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session, sessionmaker

from gateway import i18n
from gateway.bus import Bus
from gateway.catalogue import ALARMS
from gateway.config import AccessConfig, DutyConfig, IncidentsConfig, PatrolConfig
from gateway.console import auth
from gateway.personal import PersonalData
from gateway.records import store
from gateway.records.models import utcnow
from gateway.rules.alarms import RefusedAction

SESSION_COOKIE = "campusgw_session"
ASSETS = Path(__file__).parent / "assets"  # the console's scripts, served at /assets/<name>
PING_S = 5.0  # the alarm stream's clock message: keeps proxies from closing it, and lets a page see a hung gateway
CSRF_HEADER = "x-csrf-token"
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))


@dataclass
class Console:
    """The console's shared state, one per app."""

    site: str
    site_name: str
    tz: ZoneInfo
    sessions: sessionmaker[Session]
    bus: Bus
    language: str = i18n.DEFAULT_LANGUAGE
    secure_cookies: bool | None = None  # None: Secure when the request came over https
    snapshot_dir: Path | None = None  # camera snapshots (drivers.camera), served to logged-in users only
    nav: list[tuple[str, str, str | None]] = field(default_factory=list)  # (key, msgid, path or None)
    access: AccessConfig = field(default_factory=AccessConfig)  # visitor passes, overstay, approval
    personal: PersonalData | None = None  # visitors' ID and phone numbers; None: registration is refused
    duty: DutyConfig = field(default_factory=DutyConfig)  # the shifts of the duty roster, school size
    incidents: IncidentsConfig = field(default_factory=IncidentsConfig)  # deadlines and checklists per category
    patrol: PatrolConfig = field(default_factory=PatrolConfig)  # checkpoints (key areas) and their daily target
    command_key: bytes = b""  # signs the commands it sends after its role check (gateway.command_auth)
    guards_finish: frozenset[str] = frozenset()  # alarm types a guard may reset and close, with a note
    procedures: dict[str, list[str]] = field(default_factory=dict)  # the site's steps, over the catalogue's
    zones: dict[str, str] = field(default_factory=dict)  # zone id -> its name, for people (never the id)
    speech: bool = False  # a speech engine is installed: alarms are also spoken (gateway.console.speech)
    district: bool = False  # bridged to a district (district: in the site config): reports are submitted to it
    survey: Callable[[], Any] | None = None  # the protection survey form from the site config (gateway.reports.survey)

    def local_time(self, value: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        if value is None:
            return ""
        when = datetime.fromisoformat(value) if isinstance(value, str) else value
        return when.astimezone(self.tz).strftime(fmt)


class NotLoggedIn(Exception):
    pass


def console(request: Request) -> Console:
    ctx: Console = request.app.state.console
    return ctx


def current_user(request: Request) -> auth.LoggedIn:
    """The person (session cookie) or machine client (Bearer token) behind a request, or NotLoggedIn."""
    known: auth.LoggedIn | None = getattr(request.state, "user", None)
    if known is not None:  # the login check already looked this request up
        return known
    ctx = console(request)
    header = request.headers.get("authorization", "")
    with ctx.sessions.begin() as session:
        if header.lower().startswith("bearer "):
            user = auth.token_user(session, header[7:].strip(), utcnow())
        elif cookie := request.cookies.get(SESSION_COOKIE):
            user = auth.session_user(session, cookie, utcnow())
        else:
            user = None
    if user is None:
        raise NotLoggedIn()
    request.state.user = user
    return user


MAX_PHOTO = 4 * 1024 * 1024  # a phone's photo (of a broken fence, of a missing manhole cover) as JPEG
BAD_PHOTO = "a photo is a PNG or JPEG image of at most 4 MiB"


async def uploaded_photo(upload: Any) -> tuple[bytes | None, str | None]:
    """A form's photo field: (its bytes, its media type), (None, None) when none was sent, or RefusedAction
    (BAD_PHOTO) for anything but a PNG or JPEG within MAX_PHOTO; read no further than that."""
    from gateway.records.plans import PlanError, image_info

    if upload is None or isinstance(upload, str):
        return None, None
    data = await upload.read(MAX_PHOTO + 1) or None
    if data is None:
        return None, None
    try:
        if len(data) > MAX_PHOTO:
            raise PlanError("too large")
        return data, image_info(data).media_type
    except PlanError:
        raise RefusedAction(BAD_PHOTO) from None


def stored_photo(data: bytes | None, media_type: str | None) -> Response:
    """A photo kept in the records (an inspection item's, a public report's), or 404: never sniffed as anything
    else, cached by the browser only."""
    if data is None:
        raise HTTPException(404)
    return Response(data, media_type=media_type or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})


def served_file(root: Path | None, path: Path) -> Path | None:
    """`path` if it is a file inside `root` once every symlink is followed, else None: a link planted in the
    snapshot folder cannot serve /etc/shadow or the database."""
    if root is None:
        return None
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    return real if real.is_file() and real.is_relative_to(root.resolve()) else None


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def refuse(request: Request, user: auth.LoggedIn, action: str, detail: dict[str, Any], message: str) -> NoReturn:
    """Audit a refused request, then answer 403."""
    with console(request).sessions.begin() as session:
        store.audit(session, user.username, action, f"{request.method} {request.url.path}"[:140], "refused", detail,
                    utcnow(), client_address(request))
    raise HTTPException(403, tr(request, message))


async def check_csrf(request: Request, user: auth.LoggedIn) -> None:
    """A browser's changing request must carry its session's CSRF token (header or form field)."""
    if user.session_id is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return  # API tokens are not sent by browsers on their own, so they need no CSRF token
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):  # a file upload (a CSV) is a form too
        sent = str((await request.form()).get("csrf_token", ""))
    if not sent or not hmac.compare_digest(sent, user.csrf):
        refuse(request, user, "csrf.refused", {"token": "wrong" if sent else "missing"},
               "The form has expired or did not come from this console: reload the page.")


def require(permission: str) -> Callable[..., Any]:
    """A dependency: logged in, allowed to do `permission`, and (for changes) the CSRF token is right."""

    async def dependency(request: Request, user: auth.LoggedIn = Depends(current_user)) -> auth.LoggedIn:  # noqa: B008
        if not auth.allowed(user.role, permission):
            refuse(request, user, "role.refused", {"permission": permission, "role": user.role},
                   "Your role may not do this.")
        await check_csrf(request, user)
        if user.role == "inspector":  # an inspection of the records is itself on the record (R43)
            audit_view(request, user)
        return user

    return dependency


def audit_view(request: Request, user: auth.LoggedIn) -> None:
    """What an inspector opened: the path and its query, once per request."""
    if getattr(request.state, "viewed", False):
        return
    request.state.viewed = True
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    with console(request).sessions.begin() as session:
        store.audit(session, user.username, "inspector.view", target[:140], "ok", {}, utcnow(), client_address(request))


def language_of(request: Request) -> str:
    user: auth.LoggedIn | None = getattr(request.state, "user", None)
    chosen = (user.language if user else None) or request.cookies.get("campusgw_lang")
    return chosen if chosen in i18n.LANGUAGES else console(request).language


def tr(request: Request, message: str) -> str:
    return i18n.gettext(language_of(request), message)


LAYER_WORDS = {"s": "s", "min": "min", "h": "h", "more": "and {n} more waiting",
               "last_update": "last update {s} s ago",
               "lockdown": "CAMPUS LOCKED DOWN: only responders pass the gates", "drill": "LOCKDOWN DRILL",
               "lockdown_since": "since {time}, by {who}", "notice_alert": "DISTRICT ALERT:",
               "notice_drill": "District drill:", "notice_info": "District notice:"}


def layer_config(request: Request, language: str) -> dict[str, Any]:
    """What the alarm layer (assets/alarm-layer.js) of every page needs, in the user's language."""
    ctx = console(request)
    return {"words": {key: i18n.gettext(language, text) for key, text in LAYER_WORDS.items()},
            "labels": {name: i18n.gettext(language, name) for name in ALARMS}, "zones": ctx.zones,
            "ping_s": PING_S, "speech": ctx.speech, "board": request.url.path == "/alarms"}


TRANSLATED_PARAMS = frozenset({"direction", "kind", "command", "state"})  # codes among a note's values


NAMED_PARAMS = frozenset({"device", "camera"})  # device ids among a note's values: shown by their names


def said(language: str, note: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """A stored note ({"msg": msgid with {fields}, "params": {...}}) in `language`; codes among its values are
    translated and device ids named (`names`). A note that does not fit its message is shown as it was
    written, never an error page."""
    def shown(key: str, value: Any) -> Any:
        if key in TRANSLATED_PARAMS:
            return i18n.gettext(language, str(value))
        if key in NAMED_PARAMS and names:
            return names.get(str(value)) or value
        return value

    params = {k: shown(k, v) for k, v in (note.get("params") or {}).items()}
    message = i18n.gettext(language, str(note.get("msg", "")))
    try:
        return message.format(**params)
    except (KeyError, IndexError, ValueError):
        return str(note.get("msg", ""))


def asset_url(name: str) -> str:
    """An asset's address with its content's hash, so a browser never runs yesterday's script."""
    return f"/assets/{name}?v={asset_hash(name)}"


@cache
def asset_hash(name: str) -> str:
    return hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()[:12]


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = console(request)
    language = language_of(request)
    user: auth.LoggedIn | None = getattr(request.state, "user", None)
    if user is not None:
        values.setdefault("layer", layer_config(request, language))
    html = TEMPLATES.get_template(template).render(asset=asset_url, said=lambda note: said(language, note),
        _=lambda message: i18n.gettext(language, message), lang=language, languages=i18n.LANGUAGES,
        user=user, can=lambda permission: bool(user and auth.allowed(user.role, permission)),
        site_name=ctx.site_name, tz=str(ctx.tz), local=ctx.local_time, nav=ctx.nav, path=request.url.path,
        zones=ctx.zones,
        **values)
    return HTMLResponse(html, status_code=status, headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


T = TypeVar("T")


def client_host(request: Request) -> str | None:
    """The client's address, for the audit trail."""
    return request.client.host if request.client else None


def parse_day(text: str | None) -> date | None:
    """A date field (YYYY-MM-DD); empty -> None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RefusedAction("a date is written as YYYY-MM-DD") from None


def day_start(ctx: Console, day: date) -> datetime:
    """Midnight of a day in the site's zone."""
    return datetime.combine(day, datetime.min.time(), tzinfo=ctx.tz)


def attempt(request: Request, do: Callable[[Session], T]) -> T | RefusedAction:
    """Run one action in a transaction that commits even when the action is refused, so the refusal's audit
    entry is kept: the action's result, or the refusal."""
    with console(request).sessions.begin() as session:
        try:
            return do(session)
        except RefusedAction as exc:
            return exc


def form_action(request: Request, do: Callable[[Session], T], done: str | Callable[[T], str],
                refused: Callable[[str], Response]) -> Response:
    """A form's POST: the action, then on to `done` (303), or `refused(the refusal in the user's language)`, the
    page again with it (409 or 422)."""
    result = attempt(request, do)
    if isinstance(result, RefusedAction):
        return refused(tr(request, str(result)))
    return RedirectResponse(done(result) if callable(done) else done, 303)

