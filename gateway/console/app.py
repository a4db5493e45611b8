"""The guard console: a FastAPI app with server-rendered pages, small vanilla JavaScript and a JSON API.

Every route needs a logged-in user except the few in PUBLIC_PATHS; roles decide
what each may do (gateway.console.auth). Pages live in gateway.console.pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import i18n
from gateway.bus import Bus
from gateway.config import AccessConfig, DutyConfig, IncidentsConfig, PatrolConfig
from gateway.console import auth, speech
from gateway.console.pages import PAGES
from gateway.console.throttle import LoginThrottle
from gateway.console.web import (
    ASSETS,
    SESSION_COOKIE,
    Console,
    NotLoggedIn,
    check_csrf,
    client_address,
    current_user,
    render,
    require,
    served_file,
    tr,
)
from gateway.metrics import GatewayCollector
from gateway.metrics import render as render_metrics
from gateway.personal import PersonalData
from gateway.records import store
from gateway.records.models import User, utcnow

log = logging.getLogger("campusgw.console")
PUBLIC_PATHS = {"/login", "/healthz", "/lang", "/report", "/report/status"}  # the last two: R38's public page
MAX_BODY = 64 * 1024  # forms and JSON actions are small; anything bigger is refused before it is read whole
IMPORT_BODY = 1024 * 1024  # a CSV import: a term of a large school's roster is ~0.2 MB
UPLOAD_LIMITS = {"/duty/import": IMPORT_BODY, "/plan": 9 * 1024 * 1024}  # a plan image: up to 8 MiB and the form
# An inspection item's photo (up to 4 MiB) and its form, on the paths of each inspection.
UPLOAD_PATTERNS = ((re.compile(r"/incidents/inspections/\d{1,12}/items"), 5 * 1024 * 1024),
                   (re.compile(r"/report"), 5 * 1024 * 1024))  # the public page's photo


def upload_limit(path: str) -> int:
    """How large a request body to this path may be."""
    if path in UPLOAD_LIMITS:
        return UPLOAD_LIMITS[path]
    return next((limit for pattern, limit in UPLOAD_PATTERNS if pattern.fullmatch(path)), MAX_BODY)
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".webmanifest": "application/manifest+json", ".png": "image/png", ".svg": "image/svg+xml"}
BODY_IDLE_S = 15.0  # a body that stops arriving this long is refused, so a trickle cannot hold a connection


def _below_the_loop() -> None:
    """A hashing thread yields the CPU to the event loop (Linux: each thread has its own nice value)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


# Password hashing (scrypt, ~50 ms of CPU) runs here, never on the event loop the drivers share; two threads at
# a lower priority, so a flood of logins can take neither the loop nor every core.
HASHING = ThreadPoolExecutor(2, thread_name_prefix="password", initializer=_below_the_loop)
MAX_WAITING_LOGINS = 16  # logins waiting for a hashing thread; more are told to try again
# Messages too long to sit beside their code (both are in the catalogues).
LOCKED = "Too many wrong passwords from this computer: logging in with this name is locked here for " \
         "{minutes} more minutes."
ELSEWHERE = "This form did not come from this console: open the console's own page and try again."


class LoginRequired:
    """No route without a login, except the public ones, so a new route cannot be forgotten.

    A plain ASGI middleware: Starlette's @app.middleware wraps every streamed chunk (SSE) in an extra task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            request = Request(scope, receive)
            try:
                current_user(request)
            except NotLoggedIn:
                await not_logged_in(request)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over its limit with 413: at once by its Content-Length, else as the bytes
    arrive (a chunked upload says no length), so an oversized body is never read whole; and one that stops
    arriving for BODY_IDLE_S with 408. What the client still sends after the refusal is dropped unread, for
    at most HEADER_TIMEOUT_S (gateway.console.server); the connection is not cut at once, which would lose
    the answer on the way (a reset discards what the client has not read yet)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request, limit = Request(scope), upload_limit(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await refusal(request, 413, too_large(request, limit))(scope, receive, send)
            return
        received, more = 0, True

        async def counted() -> Message:
            nonlocal received, more
            if not more:  # the body is in; what follows is the disconnect a stream waits for, with no deadline
                return await receive()
            try:
                async with asyncio.timeout(BODY_IDLE_S):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, tr(request, "The upload stopped arriving: try again.")) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
                if received > limit:  # an HTTPException, so FastAPI's body reader passes it on as it is
                    raise HTTPException(413, too_large(request, limit))
            return message

        await self.app(scope, counted, send)


def too_large(request: Request, limit: int) -> str:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return tr(request, "The request is too large: at most {size}.").format(size=size)


def refusal(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """JSON for the API, the error page for people."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status, headers=headers)
    response = render(request, "error.html", status, message=message)
    response.headers.update(headers or {})
    return response


def cross_origin(request: Request) -> bool:
    """A browser's request sent by a page of another site or origin (a page elsewhere trying passwords in the
    gatehouse browser): the browser's Sec-Fetch-Site where it sends one, else Origin against Host. Other
    clients send neither, and are not a browser someone else's page can drive."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


def create_app(site: str, site_name: str, tz: ZoneInfo, sessions: sessionmaker[Session], bus: Bus,
               language: str = i18n.DEFAULT_LANGUAGE, secure_cookies: bool | None = None,
               parts: Callable[[], dict[str, Any]] | None = None, snapshot_dir: Path | None = None,
               access: AccessConfig | None = None, personal: PersonalData | None = None,
               duty: DutyConfig | None = None, incidents: IncidentsConfig | None = None,
               patrol: PatrolConfig | None = None, command_key: bytes = b"",
               zones: dict[str, str] | None = None, guards_finish: frozenset[str] = frozenset(),
               procedures: dict[str, list[str]] | None = None, district: bool = False,
               survey: Callable[[], Any] | None = None) -> FastAPI:
    app = FastAPI(title="campusgw console API", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    ctx = Console(site, site_name, tz, sessions, bus, language, secure_cookies, snapshot_dir=snapshot_dir,
                  access=access or AccessConfig(), personal=personal, duty=duty or DutyConfig(),
                  incidents=incidents or IncidentsConfig(), patrol=patrol or PatrolConfig(), command_key=command_key,
                  zones=zones or {}, speech=speech.available(), guards_finish=guards_finish,
                  procedures=procedures or {}, district=district, survey=survey)
    app.state.console = ctx
    for key, title, module in PAGES:
        ctx.nav.append((key, title, f"/{key}" if module else None))
        if module:
            page = import_module(module)
            app.include_router(page.router)
            if hasattr(page, "attach"):
                page.attach(app)
    app.add_middleware(LoginRequired)
    app.add_middleware(BodyLimit)

    @app.exception_handler(NotLoggedIn)
    async def _not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        return not_logged_in(request)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return refusal(request, exc.status_code, exc.detail, exc.headers)

    async def out_of_range(request: Request, exc: Exception) -> Response:
        """An id past what the database holds (2**63 and up) or a date past year 9999: Python, SQLite (an
        OverflowError) and PostgreSQL (a DataError) each refuse it in their own words."""
        return refusal(request, 400, tr(request, "A number or date in the request is out of range."))

    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(DataError, out_of_range)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": tr(request, "The request is not valid."), "problems": problems}, 422)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/alarms", 303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request, next: str = "/alarms") -> HTMLResponse:
        return render(request, "login.html", next=safe_next(next), error=None)

    throttle = LoginThrottle()
    waiting = 0  # logins waiting for a hashing thread

    def check_password(username: str, password: str, client: str | None) -> tuple[str, auth.LoggedIn]:
        """In a hashing thread: the check, the session and the audit row."""
        with ctx.sessions.begin() as session:
            try:
                secret, user = auth.login(session, username, password, utcnow(), client)
            except auth.AuthError as exc:
                store.audit(session, username[:64], "login", "console", "refused", {"why": str(exc)}, utcnow(), client)
                refused = exc
            else:
                store.audit(session, user.username, "login", "console", "ok", {}, utcnow(), client)
                return secret, user
        raise refused

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, username: str = Form(max_length=64), password: str = Form(max_length=200),
                    next: str = Form("/alarms", max_length=500)) -> Response:
        nonlocal waiting
        if cross_origin(request):  # a page elsewhere cannot try passwords, nor lock anyone out, from this browser
            raise HTTPException(403, tr(request, ELSEWHERE))
        client = client_address(request)
        lock = throttle.check(username, client or "", time.monotonic())
        if lock is not None:
            if lock.first:  # one audit row per lock, however long the flood
                with ctx.sessions.begin() as session:
                    store.audit(session, username[:64], "login", "console", "refused",
                                {"why": "locked", "seconds": round(lock.seconds_left)}, utcnow(), client)
            locked = render(request, "login.html", 401, next=safe_next(next), username=username,
                            error=tr(request, LOCKED).format(minutes=math.ceil(lock.seconds_left / 60)))
            locked.headers["Retry-After"] = str(math.ceil(lock.seconds_left))
            return locked
        if waiting >= MAX_WAITING_LOGINS:
            raise HTTPException(503, tr(request, "The console is busy: try again in a few seconds."),
                                headers={"Retry-After": "5"})
        waiting += 1
        try:
            secret, _ = await asyncio.get_running_loop().run_in_executor(
                HASHING, check_password, username, password, client)
        except auth.AuthError as exc:
            throttle.failed(username, client or "", time.monotonic())
            return render(request, "login.html", 401, next=safe_next(next), username=username,
                          error=tr(request, exc.message).format(**exc.params))
        finally:
            waiting -= 1
        throttle.succeeded(username, client or "")
        response = RedirectResponse(safe_next(next), 303)
        response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="strict", path="/",
                            secure=ctx.secure_cookies if ctx.secure_cookies is not None
                            else request.url.scheme == "https")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        user = current_user(request)
        await check_csrf(request, user)
        with ctx.sessions.begin() as session:
            auth.logout(session, request.cookies.get(SESSION_COOKIE, ""))
            store.audit(session, user.username, "logout", "console", "ok", {}, utcnow())
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/lang", include_in_schema=False)
    async def set_language(request: Request, lang: str = Form(max_length=16), next: str = Form("/alarms")) -> Response:
        """Switch the language (kept in a cookie, and for a logged-in user in their profile)."""
        if lang not in i18n.LANGUAGES:
            raise HTTPException(422, "unknown language")
        try:  # a logged-in user keeps the choice on every browser they use
            who = current_user(request)
        except NotLoggedIn:
            who = None
        if who is None and cross_origin(request):  # before login there is no session token to check
            raise HTTPException(403, tr(request, ELSEWHERE))
        if who is not None:
            await check_csrf(request, who)
            with ctx.sessions.begin() as session:
                user = session.get(User, who.user_id)
                if user is not None:
                    user.language = lang
        response = RedirectResponse(safe_next(next), 303)
        response.set_cookie("campusgw_lang", lang, httponly=True, samesite="strict", max_age=365 * 86400)
        return response

    collector = GatewayCollector(sessions, parts or (lambda: {}))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, user: auth.LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
        """Prometheus text format; scrape with an API token (`campusgw user token`)."""
        return Response(render_metrics(collector), media_type=CONTENT_TYPE_LATEST)

    @app.get("/assets/{name}", include_in_schema=False)
    async def assets(name: str, request: Request) -> Response:
        """The console's scripts (logged in only, like every page); the address carries the content's hash."""
        path = served_file(ASSETS, ASSETS / name)
        if path is None or path.suffix not in ASSET_TYPES:
            raise HTTPException(404, tr(request, "There is no such file."))
        return Response(path.read_bytes(), media_type=ASSET_TYPES[path.suffix],
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "broker": ctx.bus.connected.is_set()}

    return app


def safe_next(target: str) -> str:
    """Only redirect within this console (no open redirect to another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/alarms"


def not_logged_in(request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": tr(request, "Log in first.")}, 401,
                            headers={"WWW-Authenticate": 'Bearer realm="campusgw"'})
    return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)


def ensure_first_admin(sessions: sessionmaker[Session]) -> str | None:
    """On the very first start there is no user: make 'admin' with a random password, to be shown once."""
    with sessions.begin() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        password = auth.generate_password()
        auth.add_user(session, "admin", "admin", password, display_name="Administrator")
        store.audit(session, "system", "user.add", "user:admin", "ok", {"role": "admin", "first_start": True},
                    utcnow())
        return password

