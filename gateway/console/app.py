"""The guard console: a FastAPI app with server-rendered pages, small vanilla JavaScript and a JSON API.

Every route needs a logged-in user except the few in PUBLIC_PATHS; roles decide
what each may do (gateway.console.auth). Pages live in gateway.console.pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.bus import Bus
from gateway.config import AccessConfig, DutyConfig, IncidentsConfig, PatrolConfig
from gateway.console import auth, i18n
from gateway.console.pages import PAGES
from gateway.console.web import (
    SESSION_COOKIE,
    Console,
    NotLoggedIn,
    check_csrf,
    current_user,
    render,
    require,
    tr,
)
from gateway.metrics import GatewayCollector
from gateway.metrics import render as render_metrics
from gateway.personal import PersonalData
from gateway.records import store
from gateway.records.models import User, utcnow

log = logging.getLogger("campusgw.console")
PUBLIC_PATHS = {"/login", "/healthz", "/lang"}
MAX_BODY = 64 * 1024  # forms and JSON actions are small; anything bigger is refused before it is read


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
    """Refuses oversized request bodies with 413 before reading them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                response = JSONResponse({"detail": f"request body too large (limit {MAX_BODY} bytes)"}, 413)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(site: str, site_name: str, tz: ZoneInfo, sessions: sessionmaker[Session], bus: Bus,
               language: str = i18n.DEFAULT_LANGUAGE, secure_cookies: bool | None = None,
               parts: Callable[[], dict[str, Any]] | None = None, snapshot_dir: Path | None = None,
               access: AccessConfig | None = None, personal: PersonalData | None = None,
               duty: DutyConfig | None = None, incidents: IncidentsConfig | None = None,
               patrol: PatrolConfig | None = None, command_key: bytes = b"") -> FastAPI:
    app = FastAPI(title="campusgw console API", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    ctx = Console(site, site_name, tz, sessions, bus, language, secure_cookies, snapshot_dir=snapshot_dir,
                  access=access or AccessConfig(), personal=personal, duty=duty or DutyConfig(),
                  incidents=incidents or IncidentsConfig(), patrol=patrol or PatrolConfig(), command_key=command_key)
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
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, exc.status_code)
        return render(request, "error.html", exc.status_code, message=exc.detail)

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

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, username: str = Form(max_length=64), password: str = Form(max_length=200),
                    next: str = Form("/alarms", max_length=500)) -> Response:
        client = request.client.host if request.client else None
        with ctx.sessions.begin() as session:
            try:
                secret, user = auth.login(session, username, password, utcnow(), client)
            except auth.AuthError as exc:
                error = tr(request, exc.message).format(**exc.params)
                store.audit(session, username[:64], "login", "console", "refused", {"why": str(exc)}, utcnow(), client)
            else:
                error = ""
                store.audit(session, user.username, "login", "console", "ok", {}, utcnow(), client)
        if error:
            # Not a cookie-CSRF concern: a forged login attempt gains nothing without the password.
            return render(request, "login.html", 401, next=safe_next(next), error=error, username=username)
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
        if who is not None:
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

