"""The public reporting page (R38, 举报渠道): anyone with the poster's QR code reports a hazard or a concern, maybe
anonymously, with a photo, and follows it by the reference given; the safety officer confirms or sets it aside
from the ledger's Reports inbox.

No login and no CAPTCHA, so it defends itself: each form carries a challenge the server signed, and the browser
must find a nonce whose SHA-256 with it starts with POW_BITS zero bits (about a second of a phone's time, a cost
to a flood, none to a person) before the report is taken; a challenge is good once and for CHALLENGE_TTL_S; and
each address may send PER_ADDRESS_HOUR reports an hour, the page as a whole PER_HOUR. Nothing a reporter sends is
shown to another: the status page shows only the state and the school's answer."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from gateway.console.auth import LoggedIn
from gateway.console.web import (
    attempt,
    client_address,
    client_host,
    console,
    form_action,
    render,
    require,
    stored_photo,
    tr,
    uploaded_photo,
)
from gateway.personal import mask
from gateway.records import public_reports
from gateway.records.models import PublicReport, utcnow
from gateway.rules.alarms import RefusedAction

router = APIRouter()
POW_BITS = 18
CHALLENGE_TTL_S = 1800.0  # a form left open half an hour still sends
PER_ADDRESS_HOUR = 5
PER_HOUR = 120
PUBLIC = ("/report", "/report/status")  # gateway.console.app's PUBLIC_PATHS
STALE = "The form is out of date: load the page again."
USED = "This form was sent already: load the page again for another report."
UNDONE = "Your browser did not finish the check: wait a moment and send again."
GUARD_MESSAGES = (STALE, USED, UNDONE)  # Guard.check's answers, translated by the page


@dataclass
class Guard:
    """The page's defences, in memory (a restart forgets them: a new key, new counts)."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    used: dict[str, float] = field(default_factory=dict)  # challenge -> when it was used
    by_address: dict[str, deque[float]] = field(default_factory=dict)
    all: deque[float] = field(default_factory=deque)

    def challenge(self, now: float) -> str:
        body = f"{int(now)}.{secrets.token_hex(8)}"
        return f"{body}.{hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:32]}"

    def check(self, challenge: str, nonce: str, now: float) -> str | None:
        """None if the work is done on a fresh challenge of ours not used before; else why not (a msgid)."""
        stamp, _, rest = challenge.partition(".")
        random, _, mac = rest.partition(".")
        body = f"{stamp}.{random}"
        good = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not stamp.isdigit() or not hmac.compare_digest(mac, good):
            return STALE
        if now - int(stamp) > CHALLENGE_TTL_S:
            return STALE
        for old in [c for c, at in self.used.items() if now - at > CHALLENGE_TTL_S]:
            del self.used[old]
        if challenge in self.used:
            return USED
        if len(nonce) > 32 or not leading_zero_bits(hashlib.sha256(f"{challenge}:{nonce}".encode()).digest(), POW_BITS):
            return UNDONE
        self.used[challenge] = now
        return None

    def allow(self, address: str, now: float) -> bool:
        """Room for one more report from `address` (counted if so)."""
        mine = self.by_address.setdefault(address, deque())
        for queue in (mine, self.all):
            while queue and now - queue[0] > 3600:
                queue.popleft()
        if len(mine) >= PER_ADDRESS_HOUR or len(self.all) >= PER_HOUR:
            return False
        mine.append(now)
        self.all.append(now)
        return True


def leading_zero_bits(digest: bytes, bits: int) -> bool:
    whole, rest = divmod(bits, 8)
    return digest[:whole] == bytes(whole) and (rest == 0 or digest[whole] >> (8 - rest) == 0)


def _guard(request: Request) -> Guard:
    state = request.app.state
    if not hasattr(state, "public_report_guard"):
        state.public_report_guard = Guard()
    guard: Guard = state.public_report_guard
    return guard


def _form(request: Request, status: int = 200, error: str | None = None,
          values: dict[str, str] | None = None) -> HTMLResponse:
    return render(request, "public_report.html", status, challenge=_guard(request).challenge(time.time()),
                  bits=POW_BITS, error=error, form=values or {}, kinds=public_reports.KINDS)


@router.get("/report", response_class=HTMLResponse)
async def report_page(request: Request) -> HTMLResponse:
    return _form(request)


@router.post("/report", response_model=None)
async def report_send(request: Request) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "")[:4000] for k in ("kind", "place", "text", "contact")}
    why = _guard(request).check(str(form.get("challenge") or ""), str(form.get("nonce") or ""), time.time())
    if why is not None:
        return _form(request, 409, tr(request, why), values)
    if not _guard(request).allow(client_address(request) or "-", time.time()):
        return _form(request, 429, tr(
            request, "Too many reports from here just now: try again in an hour, or tell a teacher."), values)
    try:
        photo, photo_type = await uploaded_photo(form.get("photo"))
    except RefusedAction as exc:
        return _form(request, 422, tr(request, str(exc)), values)
    ctx = console(request)
    contact = values["contact"].strip()[:200]
    contact_enc = ctx.personal.encrypt(contact) if contact and ctx.personal else None

    def do(session: Session) -> str:
        return public_reports.receive(session, values["kind"], values["place"], values["text"], contact_enc,
                                      photo, photo_type, utcnow()).ref

    result = attempt(request, do)
    if not isinstance(result, str):
        return _form(request, 422, tr(request, str(result)), values)
    return RedirectResponse(f"/report/status?ref={result}&new=1", 303)


@router.get("/report/status", response_class=HTMLResponse)
async def report_status(request: Request, ref: str = "", new: bool = False) -> HTMLResponse:
    with console(request).sessions() as session:
        row = public_reports.by_ref(session, ref) if ref else None
        found = {"ref": row.ref, "state": row.state, "answer": row.answer,
                 "received_at": row.received_at.isoformat()} if row else None
    return render(request, "public_report_status.html", 200 if found or not ref else 404, report=found, ref=ref,
                  new=new)


# -- the safety officer's inbox ----------------------------------------------------------------------------


def report_view(row: PublicReport, full: bool, personal: Any) -> dict[str, Any]:
    contact = None
    if row.contact_enc and personal is not None:
        text = personal.decrypt(row.contact_enc)
        contact = text if full else mask(text, 1, 2)
    return {"id": row.id, "ref": row.ref, "kind": row.kind, "place": row.place, "text": row.text,
            "contact": contact, "photo": row.photo_type is not None, "received_at": row.received_at.isoformat(),
            "state": row.state, "answer": row.answer, "handled_by": row.handled_by, "hazard_id": row.hazard_id}


def _inbox(request: Request, user: LoggedIn, status: int = 200, error: str | None = None) -> HTMLResponse:
    from gateway.console.auth import allowed

    ctx = console(request)
    with ctx.sessions() as session:
        rows = [report_view(r, allowed(user.role, "personal_data.full"), ctx.personal)
                for r in public_reports.inbox(session)]
    return render(request, "public_reports.html", status, reports=rows, csrf=user.csrf, error=error,
                  section="public_reports")


@router.get("/incidents/reports", response_class=HTMLResponse)
async def inbox_page(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    return _inbox(request, user)


def _decide(confirm: bool) -> None:
    async def endpoint(report_id: int, request: Request,
                       user: LoggedIn = Depends(require("hazard.supervise"))) -> Response:  # noqa: B008
        answer = str((await request.form()).get("answer") or "")[:2000]

        def do(session: Session) -> None:
            public_reports.decide(session, report_id, confirm, answer, user.username, utcnow(),
                                  client_host(request))

        return form_action(request, do, "/incidents/reports",
                           lambda refused: _inbox(request, user, 409, error=refused))

    name = "confirm" if confirm else "set_aside"
    endpoint.__name__ = f"public_report_{name}_form"
    router.post(f"/incidents/reports/{{report_id}}/{name}", response_model=None)(endpoint)


_decide(True)
_decide(False)


@router.get("/incidents/reports/{report_id}/photo", response_model=None)
async def report_photo(report_id: int, request: Request,
                       user: LoggedIn = Depends(require("view"))) -> Response:  # noqa: B008
    with console(request).sessions() as session:
        row = session.get(PublicReport, report_id)
        return stored_photo(row.photo if row else None, row.photo_type if row else None)


@router.get("/incidents/reports/poster", response_class=HTMLResponse)
async def poster(request: Request, user: LoggedIn = Depends(require("view"))) -> HTMLResponse:  # noqa: B008
    """A poster with the page's QR code, for the gate and the notice boards."""
    url = str(request.base_url).rstrip("/") + "/report"
    svg = segno.make(url, error="m").svg_inline(scale=8, dark="#000", light="#fff")
    return render(request, "public_report_poster.html", url=url, qr=Markup(svg))
