"""The district console: a FastAPI app over the district's records, every page behind a login.

What it reuses of the school console (gateway.console): the password hashing and its low-priority threads, the
login throttle, the language choice and the catalogues, the rendering of a step's note, the check of a form that
came from another site, and the HTTP protocol with a deadline for headers. What is its own: the users, sessions
and audit log live in the district's database (users.py), and roles are the bureau's.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import i18n
from gateway.catalogue import ALARMS
from gateway.config import ID_PATTERN
from gateway.console import auth
from gateway.console.app import ELSEWHERE, HASHING, LOCKED, MAX_WAITING_LOGINS, cross_origin
from gateway.console.throttle import LoginThrottle
from gateway.console.web import CSRF_HEADER, language_of, said, tr
from gateway.district import store, summary
from gateway.district.console import actions, users, views
from gateway.reports.figures import Table
from gateway.reports.render import MEDIA_TYPES, RENDERERS, file_name, table_rows

SESSION_COOKIE = "campusgw_district_session"  # not the school console's: cookies ignore the port
PUBLIC_PATHS = {"/login", "/healthz", "/lang"}
POLL_S = 1.0  # how often the schools page asks for the table again: press -> district console within 2 s
MAX_BODY = 64 * 1024  # small forms only (login, acknowledgements, a notice: 4,000 characters, nine bytes each)
NOTICE_BODY_MAX = 4000
API_AUDIT_EVERY_S = 600.0  # a watched user's polling of one API path: one audit row per this long, not per poll
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))
HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                      "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
ACTIONS = {  # an alarm's history line's action, as the school console names it
    "raise": "raised", "retrigger": "pressed again", "ack": "Acknowledge", "reset": "Reset", "close": "Close",
    "note": "Note", "clear": "cleared", "condition_restored": "input back to normal", "linkage": "linkage",
    "linkage_result": "linkage result", "linkage_checked": "linkage checked", "escalate": "escalated",
    "police": "alarm centre", "incident": "incident", "step": "step done",
    "close_active": "closed with its input active", "silence": "sirens silenced", "notify": "notification"}
WORDS = {  # what the schools page's script needs, in the user's language
    "online": "online", "offline": "offline", "up": "up", "down": "down", "all_up": "all up ({n})",
    "some_down": "{down} of {n} down", "locked": "LOCKED DOWN", "drill": "drill", "silent": "silent for {n} min",
    "stale": "not updated for {s} s", "empty": "No school has reported yet. Schools appear here once their "
    "gateway's bridge sends its first message to the district (campusgw district bridge at the school).",
    "alerts": "District alerts open: {n} ({unacked} not acknowledged). Open Reporting to answer them.",
}


@dataclass
class DistrictConsole:
    """The console's shared state, one per app. `language` is the default the school console's tr() reads."""

    district: str
    district_name: str
    tz: ZoneInfo
    engine: Engine
    language: str = i18n.DEFAULT_LANGUAGE
    secure_cookies: bool | None = None
    api_seen: dict[tuple[int, str], float] = field(default_factory=dict)  # (session, path) -> last audited

    def local_time(self, value: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        """A time in the district's zone (the page says which zone)."""
        if value is None or value == "":
            return ""
        try:
            when = datetime.fromisoformat(value) if isinstance(value, str) else value
        except ValueError:
            return str(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(self.tz).strftime(fmt)

    def zone_label(self) -> str:
        offset = datetime.now(self.tz).strftime("%z")
        return f"{self.tz.key} (UTC{offset[:3]}:{offset[3:]})"


class NotLoggedIn(Exception):
    pass


def district(request: Request) -> DistrictConsole:
    ctx: DistrictConsole = request.app.state.console
    return ctx


def now() -> datetime:
    return datetime.now(UTC)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def lookup_user(request: Request) -> users.Officer | None:
    """The person behind the session cookie (a database read: call it off the event loop)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    with district(request).engine.begin() as conn:
        return users.session_user(conn, cookie, now())


def current_user(request: Request) -> users.Officer:
    """The person the login check found for this request, or NotLoggedIn."""
    found: users.Officer | None = getattr(request.state, "user", None)
    if found is None:
        raise NotLoggedIn()
    return found


def audit(request: Request, username: str, action: str, target: str, result: str,
          detail: dict[str, Any] | None = None) -> None:
    with district(request).engine.begin() as conn:
        users.audit(conn, username, action, target, result, detail or {}, now(), client_address(request))


def refuse(request: Request, user: users.Officer, action: str, detail: dict[str, Any], message: str) -> None:
    """Audit a refused request, then answer 403."""
    audit(request, user.username, action, f"{request.method} {request.url.path}", "refused", detail)
    raise HTTPException(403, tr(request, message))


async def check_csrf(request: Request, user: users.Officer) -> None:
    """A changing request must carry its session's CSRF token (header or form field), as in the school console."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = str((await request.form()).get("csrf_token", ""))
    if not sent or not hmac.compare_digest(sent, user.csrf):
        await run_in_threadpool(refuse, request, user, "csrf.refused", {"token": "wrong" if sent else "missing"},
                                "The form has expired or did not come from this console: reload the page.")


def watched_view(request: Request, user: users.Officer) -> None:
    """A watched role's view (an inspector's) into the audit log: every page; an API path once per
    API_AUDIT_EVERY_S per session, so a page's polling is one row per ten minutes, not one per poll."""
    path = request.url.path
    if path.startswith("/api/"):
        seen, at = district(request).api_seen, time.monotonic()
        key = (user.session_id, path)
        if at - seen.get(key, -math.inf) < API_AUDIT_EVERY_S:
            return
        if len(seen) > 10_000:
            seen.clear()
        seen[key] = at
    audit(request, user.username, "view", path, "ok", {"role": user.role})


def require(permission: str) -> Callable[..., Any]:
    """A dependency: logged in, the role may do `permission`, a change carries its CSRF token, and a watched
    role's view is audited. A later action says who may do it: Depends(require("report.ack"))."""

    async def dependency(request: Request, user: users.Officer = Depends(current_user)) -> users.Officer:  # noqa: B008
        if not users.allowed(user.role, permission):
            await run_in_threadpool(refuse, request, user, "role.refused",
                                    {"permission": permission, "role": user.role}, "Your role may not do this.")
        await check_csrf(request, user)
        if users.watched(user.role) and request.method == "GET":
            await run_in_threadpool(watched_view, request, user)
        return user

    return dependency


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    ctx = district(request)
    language = language_of(request)
    user: users.Officer | None = getattr(request.state, "user", None)
    html = TEMPLATES.get_template(template).render(
        _=lambda message: i18n.gettext(language, message), lang=language, languages=i18n.LANGUAGES, user=user,
        district_name=ctx.district_name, zone=ctx.zone_label(), local=ctx.local_time, path=request.url.path,
        said=lambda note: said(language, note),
        action_word=lambda a: i18n.gettext(language, ACTIONS.get(str(a), str(a))),
        alarm_label=lambda name: i18n.gettext(language, name) if name in ALARMS else name,
        can=lambda permission: user is not None and users.allowed(user.role, permission), **values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def refusal(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """JSON for the API, the error page for people."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status, headers=headers)
    response = render(request, "error.html", status, message=message)
    response.headers.update(headers or {})
    return response


def not_logged_in(request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": tr(request, "Log in first.")}, 401)
    return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)


def safe_next(target: str) -> str:
    """Only redirect within this console (no open redirect to another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


class LoginRequired:
    """No route without a login, except the public ones, so a new route cannot be forgotten. The session is
    looked up in a worker thread: the database is across the network."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            user = await run_in_threadpool(lookup_user, request)
            request.state.user = user  # the public pages see it too: the header shows who is logged in
            if user is None and scope["path"] not in PUBLIC_PATHS:
                await not_logged_in(request)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SmallBodies:
    """Refuses a body over MAX_BODY with 413 (by its length, else as it arrives), so nobody can make the console
    read a large upload into memory before the login is even checked."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await JSONResponse({"detail": "request too large"}, 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise HTTPException(413, "request too large")
            return message

        await self.app(scope, counted, send)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def create_app(district_id: str, district_name: str, tz: ZoneInfo, engine: Engine,
               language: str = i18n.DEFAULT_LANGUAGE, secure_cookies: bool | None = None) -> FastAPI:
    """The console over `engine` (the district's PostgreSQL, its tables made: store.create_schema and
    users.create_tables)."""
    app = FastAPI(title="campusgw district console", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    ctx = DistrictConsole(district_id, district_name, tz, engine, language, secure_cookies)
    app.state.console = ctx
    app.add_middleware(LoginRequired)
    app.add_middleware(SmallBodies)
    viewer = Depends(require("view"))

    @app.exception_handler(NotLoggedIn)
    async def _not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        return not_logged_in(request)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return refusal(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return refusal(request, 422, tr(request, "The request is not valid."))

    @app.get("/", response_class=HTMLResponse)
    def schools_page(request: Request, user: users.Officer = viewer) -> HTMLResponse:
        with engine.connect() as conn:
            rows = [jsonable(r) for r in views.schools(conn, now())]
            alerts = views.alert_counts(conn)
        words = {key: i18n.gettext(language_of(request), text) for key, text in WORDS.items()} | {"none": "—"}
        return render(request, "schools.html", schools=rows, words=words, poll_s=POLL_S, tz=tz.key, alerts=alerts)

    @app.get("/api/schools")
    def schools_api(request: Request, user: users.Officer = viewer) -> dict[str, Any]:
        """Every school worst first, with its figures; the schools page polls it."""
        with engine.connect() as conn:
            rows = views.schools(conn, now())
            alerts = views.alert_counts(conn)
        return {"at": now().isoformat(), "timezone": tz.key, "schools": [jsonable(r) for r in rows], "alerts": alerts}

    @app.get("/schools/{site}", response_class=HTMLResponse)
    def school_page(request: Request, site: str, user: users.Officer = viewer) -> HTMLResponse:
        with engine.connect() as conn:
            found = views.school(conn, site, now())
        if found is None:
            raise HTTPException(404, tr(request, "The district has heard nothing from a school of this id."))
        return render(request, "school.html", school=found)

    @app.get("/schools/{site}/alarms/{alarm_id}", response_class=HTMLResponse)
    def alarm_page(request: Request, site: str, alarm_id: int, user: users.Officer = viewer) -> HTMLResponse:
        with engine.connect() as conn:
            found = views.alarm(conn, site, alarm_id)
            paths = views.police_paths(conn, site)
        if found is None:
            raise HTTPException(404, tr(request, "The district has no alarm of this id from this school."))
        view = found["view"] if isinstance(found["view"], dict) else {}
        return render(request, "alarm.html", alarm=found, view=view, site=site, paths=paths,
                      steps=[s for s in view.get("steps") or [] if isinstance(s, dict)],
                      attachments=[e for e in view.get("attachments") or [] if isinstance(e, dict)],
                      police=view.get("police") if isinstance(view.get("police"), dict) else {})

    @app.get("/reports", response_class=HTMLResponse)
    def reports_page(request: Request, user: users.Officer = viewer) -> HTMLResponse:
        """The district's alerts, the schools' incident reports and their submitted reports, and the month's
        summary across the schools to download."""
        at = now()
        with engine.connect() as conn:
            alerts, incidents, submitted = views.alerts(conn), views.incidents(conn, at), views.submissions(conn)
        return render(request, "reports.html", alerts=alerts, incidents=incidents, submissions=submitted,
                      shown=views.INCIDENTS_SHOWN,
                      month=summary.last_month(at, tz).strftime("%Y-%m"), formats=list(RENDERERS))

    @app.post("/reports/alerts/{alert_id}/ack")
    def acknowledge_alert(request: Request, alert_id: int,
                          user: users.Officer = Depends(require("alert.ack"))) -> Response:  # noqa: B008
        with engine.begin() as conn:
            done = actions.acknowledge_alert(conn, alert_id, user.username, now(), client_address(request))
        if not done:
            audit(request, user.username, "alert.ack", f"alert:{alert_id}", "refused", {"why": "acknowledged"})
            raise HTTPException(409, tr(request, "This alert was acknowledged already, or there is no such alert."))
        return RedirectResponse("/reports#alerts", 303)

    @app.post("/reports/incidents/{site}/{incident_id}/ack")
    def acknowledge_report(request: Request, site: str, incident_id: int,
                           user: users.Officer = Depends(require("report.ack"))) -> Response:  # noqa: B008
        with engine.begin() as conn:
            done = actions.acknowledge_report(conn, site, incident_id, user.username, now(), client_address(request))
            found = None if done else views.incident(conn, site, incident_id)
        if not done:
            if found is None:
                raise HTTPException(404, tr(request, "The district has no incident of this id from this school."))
            why = "acknowledged" if found["acked_at"] is not None else "not_reported"
            audit(request, user.username, "report.ack", f"incident:{site}:{incident_id}", "refused", {"why": why})
            raise HTTPException(409, tr(request, "This report was acknowledged already.") if why == "acknowledged"
                                else tr(request, "The school has not reported this incident yet."))
        return RedirectResponse(f"/reports#incident-{quote(site)}-{incident_id}", 303)

    @app.get("/notices", response_class=HTMLResponse)
    def notices_page(request: Request, user: users.Officer = viewer) -> HTMLResponse:
        return _notices_page(request)

    def _notices_page(request: Request, status: int = 200, error: str | None = None,
                      form: dict[str, str] | None = None) -> HTMLResponse:
        with engine.connect() as conn:
            rows = views.notices(conn)
        return render(request, "notices.html", status, notices=rows, error=error, form=form or {},
                      body_max=NOTICE_BODY_MAX)

    @app.post("/notices", response_model=None)
    async def issue_notice(request: Request, level: str = Form(max_length=16), title: str = Form(max_length=200),
                           body: str = Form(max_length=NOTICE_BODY_MAX), sites: str = Form("", max_length=8000),
                           user: users.Officer = Depends(require("notice.issue"))  # noqa: B008
                           ) -> Response:
        """A notice to every school (no sites named) or to those named; the workers send it down."""
        form = {"level": level, "title": title, "body": body, "sites": sites}
        named = sorted({s for s in sites.replace(",", " ").split() if s}) or None
        if level not in store.NOTICE_LEVELS or not title.strip() or not body.strip():
            return _notices_page(request, 422, tr(request, "A notice needs its kind, a title and a text."), form)
        if named and not all(re.fullmatch(ID_PATTERN, s) for s in named):
            why = tr(request, "Name the schools by their site ids, separated by spaces or commas.")
            return _notices_page(request, 422, why, form)

        def issue() -> int | None:
            with engine.begin() as conn:
                notice_id, schools = actions.issue_notice(conn, level, title.strip(), body.strip(), named,
                                                          user.username, now(), client_address(request))
                if not schools:
                    conn.rollback()  # a notice to nobody is not issued
                    return None
                return notice_id

        notice_id = await run_in_threadpool(issue)
        if notice_id is None:
            return _notices_page(request, 422, tr(
                request, "No school to send it to: the district has heard from no school yet."), form)
        return RedirectResponse(f"/notices/{notice_id}", 303)

    @app.get("/notices/{notice_id}", response_class=HTMLResponse)
    def notice_page(request: Request, notice_id: int, user: users.Officer = viewer) -> HTMLResponse:
        with engine.connect() as conn:
            found = views.notice(conn, notice_id)
        if found is None:
            raise HTTPException(404, tr(request, "The district has issued no notice of this id."))
        return render(request, "notice.html", notice=found[0], receipts=found[1])

    @app.get("/reports/submissions/{site}/{kind}/{period}", response_class=HTMLResponse)
    def submission_page(request: Request, site: str, kind: str, period: str,
                        user: users.Officer = viewer) -> HTMLResponse:
        with engine.connect() as conn:
            found = views.submission(conn, site, kind, period)
        if found is None:
            raise HTTPException(404, tr(request, "The district has no such report from this school."))
        figures = found["figures"] if isinstance(found["figures"], dict) else {}
        language = language_of(request)

        def tr_(message: Any) -> str:
            return i18n.gettext(language, str(message))

        tables = []
        for t in figures.get("tables") or []:
            if isinstance(t, dict) and isinstance(t.get("rows"), list) and isinstance(t.get("columns"), list):
                table = Table(str(t.get("key")), str(t.get("title")), [str(c) for c in t["columns"]],
                              [r for r in t["rows"] if isinstance(r, list)],
                              translate_first=t.get("translate_first") is True)
                tables.append({"title": tr_(table.title), "columns": [tr_(c) for c in table.columns],
                               "rows": table_rows(table, tr_)})
        first_day = found["starts"].astimezone(tz).date().isoformat()
        last_day = (found["ends"].astimezone(tz) - timedelta(days=1)).date().isoformat()  # ends is exclusive
        return render(request, "submission.html", report=found, tables=tables, first_day=first_day, last_day=last_day,
                      summary=views.in_report_order(figures["summary"] if isinstance(figures.get("summary"), dict)
                                                    else {}),
                      previous=figures.get("previous") if isinstance(figures.get("previous"), dict) else {},
                      inspections=[i for i in figures.get("inspections") or [] if isinstance(i, dict)])

    @app.get("/reports/summary")
    def summary_download(request: Request, month: str | None = None, fmt: str = "pdf",
                         user: users.Officer = viewer) -> Response:
        """The month's summary across the schools (PDF, XLSX or CSV) in the reader's language; audited."""
        try:
            first = summary.parse_month(month) if month else summary.last_month(now(), tz)
        except ValueError:
            raise HTTPException(422, tr(request, "Choose a month (YYYY-MM) and a format.")) from None
        if fmt not in RENDERERS:
            raise HTTPException(422, tr(request, "Choose a month (YYYY-MM) and a format."))
        language = language_of(request)
        with engine.connect() as conn:
            report = summary.collect(conn, first, tz, ctx.district_name, now())
        body = RENDERERS[fmt](report, language)
        audit(request, user.username, "summary.download", f"summary:{first.strftime('%Y-%m')}", "ok",
              {"format": fmt, "language": language})
        # RFC 6266: the readable (Chinese) name for browsers, a plain one for the rest.
        plain = f"district-summary-{first.strftime('%Y-%m')}-{language}.{fmt}"
        return Response(body, media_type=MEDIA_TYPES[fmt], headers={
            "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''"
                                   f"{quote(file_name(report, language, fmt))}",
            "Cache-Control": "private, no-store"})

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", next=safe_next(next), error=None)

    throttle = LoginThrottle()
    waiting = 0  # logins waiting for a hashing thread

    def check_password(username: str, password: str, client: str | None) -> str:
        """In a hashing thread: the check, the session and the audit row."""
        with engine.begin() as conn:
            try:
                secret, user = users.login(conn, username, password, now(), client)
            except auth.AuthError as exc:
                users.audit(conn, username, "login", "console", "refused", {"why": str(exc)}, now(), client)
                refused = exc
            else:
                users.audit(conn, user.username, "login", "console", "ok", {"role": user.role}, now(), client)
                return secret
        raise refused

    @app.post("/login")
    async def login(request: Request, username: str = Form(max_length=64), password: str = Form(max_length=200),
                    next: str = Form("/", max_length=500)) -> Response:
        nonlocal waiting
        if cross_origin(request):  # a page elsewhere cannot try passwords, nor lock anyone out, from this browser
            raise HTTPException(403, tr(request, ELSEWHERE))
        client = client_address(request)
        lock = throttle.check(username, client or "", time.monotonic())
        if lock is not None:
            if lock.first:  # one audit row per lock, however long the flood
                await run_in_threadpool(audit, request, username, "login", "console", "refused",
                                        {"why": "locked", "seconds": round(lock.seconds_left)})
            locked = render(request, "login.html", 401, next=safe_next(next), username=username,
                            error=tr(request, LOCKED).format(minutes=math.ceil(lock.seconds_left / 60)))
            locked.headers["Retry-After"] = str(math.ceil(lock.seconds_left))
            return locked
        if waiting >= MAX_WAITING_LOGINS:
            raise HTTPException(503, tr(request, "The console is busy: try again in a few seconds."),
                                headers={"Retry-After": "5"})
        waiting += 1
        try:
            secret = await asyncio.get_running_loop().run_in_executor(HASHING, check_password, username, password,
                                                                      client)
        except auth.AuthError as exc:
            throttle.failed(username, client or "", time.monotonic())
            return render(request, "login.html", 401, next=safe_next(next), username=username,
                          error=tr(request, exc.message).format(**exc.params))
        finally:
            waiting -= 1
        throttle.succeeded(username, client or "")
        response = RedirectResponse(safe_next(next), 303)
        response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="strict", path="/",
                            secure=secure_cookies if secure_cookies is not None else request.url.scheme == "https")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        user = current_user(request)
        await check_csrf(request, user)

        def end() -> None:
            with engine.begin() as conn:
                users.logout(conn, request.cookies.get(SESSION_COOKIE, ""))
                users.audit(conn, user.username, "logout", "console", "ok", {}, now(), client_address(request))

        await run_in_threadpool(end)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/lang")
    async def set_language(request: Request, lang: str = Form(max_length=16), next: str = Form("/")) -> Response:
        """Switch the language (a cookie, and for a logged-in user their profile)."""
        if lang not in i18n.LANGUAGES:
            raise HTTPException(422, "unknown language")
        who: users.Officer | None = getattr(request.state, "user", None)
        if who is None and cross_origin(request):  # before login there is no session token to check
            raise HTTPException(403, tr(request, ELSEWHERE))
        if who is not None:
            await check_csrf(request, who)

            def keep() -> None:
                with engine.begin() as conn:
                    users.set_language(conn, who.user_id, lang)

            await run_in_threadpool(keep)
        response = RedirectResponse(safe_next(next), 303)
        response.set_cookie("campusgw_lang", lang, httponly=True, samesite="strict", max_age=365 * 86400)
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = True
        except Exception:  # the answer is the health check's: down, whatever the reason
            database = False
        return {"ok": database, "database": database}

    return app
