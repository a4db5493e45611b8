"""The notification channels against real servers on this machine: a local HTTPS server (a throwaway CA from
trustme) playing WeCom's and DingTalk's robot webhooks, and aiosmtpd playing the school's mail server.

The robot server checks what a real one would (the key or access_token, DingTalk's signature and timestamp)
and answers as each test tells it: ok, a rate limit, a bad key, a 500, or not at all. Every server binds a
free port and is stopped in its fixture; nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.notify import robots
from gateway.notify.email import send_email

KEY = "693a91f6-7f9c-4bc4-97a0-0ec2aaaa5898"
TOKEN = "50cb6e954c89afa14fb97754eafd886d658fcda27d05015a26b474e7bd2f0a59"
SECRET = "SEC5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"
HANG_TIMEOUT_S = 0.5


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not stand between the client and the servers on this machine."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


# -- the robots' server -----------------------------------------------------------------------------------


@dataclass
class Posted:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at_ms: int


Answer = tuple[int, dict[str, Any] | bytes]


@dataclass
class RobotServer:
    """WeCom at /cgi-bin/webhook/send, DingTalk at /robot/send; `answer`, if set, overrides the real check."""

    port: int = 0
    posted: list[Posted] = field(default_factory=list)
    answer: Callable[[Posted], Answer] | None = None
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, channel: str) -> str:
        if channel == "wecom":
            return f"https://127.0.0.1:{self.port}/cgi-bin/webhook/send?key={KEY}"
        return f"https://127.0.0.1:{self.port}/robot/send?access_token={TOKEN}"

    def respond(self, request: Posted) -> Answer:
        if self.answer is not None:
            return self.answer(request)
        if request.path == "/cgi-bin/webhook/send":
            if request.query.get("key") != [KEY]:
                return 200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1755605200056773468916791]"}
            return 200, {"errcode": 0, "errmsg": "ok"}
        if request.path == "/robot/send":
            if request.query.get("access_token") != [TOKEN]:
                return 200, {"errcode": 300001, "errmsg": "token is not exist"}
            if not dingtalk_signature_valid(request):
                return 200, {"errcode": 310000, "errmsg": "sign not match"}
            return 200, {"errcode": 0, "errmsg": "ok"}
        return 404, b"not found"


def dingtalk_signature_valid(request: Posted) -> bool:
    """DingTalk's side of 加签, written here apart from the module: the timestamp within a few seconds of now
    (DingTalk allows an hour; here we are on one clock) and the sign its HmacSHA256 with the secret."""
    try:
        timestamp = request.query["timestamp"][0]
        sign = request.query["sign"][0]  # parse_qs has undone the URL encoding
    except (KeyError, IndexError):
        return False
    expected = base64.b64encode(hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
    return abs(int(timestamp) - request.at_ms) < 5000 and hmac.compare_digest(sign, expected)


def _handler(robot: RobotServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Posted(parts.path, urllib.parse.parse_qs(parts.query), dict(self.headers.items()),
                             json.loads(raw), int(time.time() * 1000))
            robot.posted.append(request)
            if robot.hang:
                robot.release.wait(30)  # until the test is over: the client must give up first
                return
            status, body = robot.respond(request)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _serve(robot: RobotServer, context: ssl.SSLContext) -> Iterator[RobotServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(robot))
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    robot.port = server.server_address[1]
    # poll_interval: how soon shutdown() is noticed, not a wait for anything
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="robot-server", daemon=True)
    thread.start()
    try:
        yield robot
    finally:
        robot.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def robot(ca: trustme.CA) -> Iterator[RobotServer]:
    yield from _serve(RobotServer(), _server_context(ca))


@pytest.fixture
def stranger() -> Iterator[RobotServer]:
    """A robot server whose certificate comes from a CA the client does not trust."""
    yield from _serve(RobotServer(), _server_context(trustme.CA()))


# -- WeCom ------------------------------------------------------------------------------------------------


def test_wecom_message_reaches_the_robot_as_documented(robot: RobotServer, ca_file: str) -> None:
    request = robots.wecom_request(robot.url("wecom"), "南门一键报警 09:15，请值班保安到场", ["13800001111"])
    receipt = robots.post(request, ca_file=ca_file)
    assert receipt.ok, receipt.detail
    assert (receipt.channel, receipt.code, receipt.retryable) == ("wecom", 0, False)
    [posted] = robot.posted
    assert posted.path == "/cgi-bin/webhook/send"
    assert posted.query == {"key": [KEY]}
    assert posted.headers["Content-Type"].startswith("application/json")
    assert posted.body == {"msgtype": "text", "text": {"content": "南门一键报警 09:15，请值班保安到场",
                                                       "mentioned_mobile_list": ["13800001111"]}}


def test_wecom_long_text_arrives_cut_and_the_receipt_says_so(robot: RobotServer, ca_file: str) -> None:
    receipt = robots.post(robots.wecom_request(robot.url("wecom"), "报警" * 1000), ca_file=ca_file)
    assert receipt.ok
    assert "cut to 2048 bytes" in receipt.detail
    content = robot.posted[0].body["text"]["content"]
    assert len(content.encode()) <= 2048 and content.endswith(robots.ELLIPSIS)


def test_wecom_rate_limit_is_worth_trying_again(robot: RobotServer, ca_file: str) -> None:
    robot.answer = lambda _: (200, {"errcode": 45009, "errmsg": "api freq out of limit"})
    receipt = robots.post(robots.wecom_request(robot.url("wecom"), "x"), ca_file=ca_file)
    assert (receipt.ok, receipt.retryable, receipt.code, receipt.retry_after_s) == (False, True, 45009, 60.0)
    assert "api freq out of limit" in receipt.detail


def test_wecom_bad_key_is_final_and_never_logged(robot: RobotServer, ca_file: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    url = robot.url("wecom").replace(KEY, "a0c1d2e3-wrong-key-0000-000000000000")
    receipt = robots.post(robots.wecom_request(url, "x"), ca_file=ca_file)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, False, 93000)
    assert "invalid webhook key" in receipt.detail
    assert "key=a0c1***" in caplog.text
    assert "wrong-key" not in caplog.text and "wrong-key" not in receipt.detail


def test_a_500_is_worth_trying_again(robot: RobotServer, ca_file: str) -> None:
    robot.answer = lambda _: (500, b"<html>Internal Server Error</html>")
    receipt = robots.post(robots.wecom_request(robot.url("wecom"), "x"), ca_file=ca_file)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, True, 500)


def test_a_server_that_does_not_answer_times_out(robot: RobotServer, ca_file: str) -> None:
    robot.hang = True
    started = time.monotonic()
    receipt = robots.post(robots.wecom_request(robot.url("wecom"), "x"), timeout_s=HANG_TIMEOUT_S,
                          ca_file=ca_file)
    assert time.monotonic() - started < 5 * HANG_TIMEOUT_S
    assert (receipt.ok, receipt.retryable) == (False, True)
    assert "no answer" in receipt.detail and "0.5 s" in receipt.detail
    assert len(robot.posted) == 1  # it did arrive: a retry may post it twice, and the docstring says so


def test_a_closed_port_is_worth_trying_again(ca_file: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        url = f"https://127.0.0.1:{port}/cgi-bin/webhook/send?key={KEY}"
        receipt = robots.post(robots.wecom_request(url, "x"), timeout_s=2, ca_file=ca_file)
    assert (receipt.ok, receipt.retryable) == (False, True)
    assert "cannot reach" in receipt.detail and KEY not in receipt.detail


def test_a_certificate_from_another_ca_is_refused(stranger: RobotServer, ca_file: str) -> None:
    receipt = robots.post(robots.wecom_request(stranger.url("wecom"), "x"), ca_file=ca_file)
    assert (receipt.ok, receipt.retryable) == (False, False)
    assert "certificate was refused" in receipt.detail
    assert "unable to get local issuer certificate" in receipt.detail
    assert stranger.posted == []  # nothing, the key included, went to it


def test_the_systems_cas_do_not_trust_a_private_ca(robot: RobotServer) -> None:
    receipt = robots.post(robots.wecom_request(robot.url("wecom"), "x"))  # no ca_file: the system's CAs
    assert not receipt.ok and "certificate was refused" in receipt.detail
    assert robot.posted == []


# -- DingTalk ---------------------------------------------------------------------------------------------


def test_dingtalk_signed_message_is_accepted(robot: RobotServer, ca_file: str) -> None:
    request = robots.dingtalk_request(robot.url("dingtalk"), "南门一键报警", secret=SECRET,
                                      at_mobiles=["13800001111"])
    receipt = robots.post(request, ca_file=ca_file)
    assert receipt.ok, receipt.detail
    [posted] = robot.posted
    assert posted.path == "/robot/send"
    assert set(posted.query) == {"access_token", "timestamp", "sign"}
    assert posted.query["access_token"] == [TOKEN]
    assert abs(int(posted.query["timestamp"][0]) - posted.at_ms) < 5000
    assert dingtalk_signature_valid(posted)
    assert posted.body == {"msgtype": "text", "text": {"content": "南门一键报警 @13800001111"},
                           "at": {"atMobiles": ["13800001111"], "isAtAll": False}}


def test_dingtalk_wrong_secret_is_refused_for_good(robot: RobotServer, ca_file: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    request = robots.dingtalk_request(robot.url("dingtalk"), "x", secret="SECnot-the-robots-secret")
    receipt = robots.post(request, ca_file=ca_file)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, False, 310000)
    assert "sign not match" in receipt.detail and "加签" in receipt.detail
    sign = robot.posted[0].query["sign"][0]
    assert TOKEN not in caplog.text and sign not in caplog.text
    assert urllib.parse.quote_plus(sign) not in caplog.text


def test_dingtalk_old_timestamp_is_refused(robot: RobotServer, ca_file: str) -> None:
    stale = int(time.time() * 1000) - 2 * 3600 * 1000
    request = robots.dingtalk_request(robot.url("dingtalk"), "x", secret=SECRET, now_ms=stale)
    receipt = robots.post(request, ca_file=ca_file)
    assert (receipt.ok, receipt.code) == (False, 310000)


def test_dingtalk_too_fast(robot: RobotServer, ca_file: str) -> None:
    robot.answer = lambda _: (200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
    receipt = robots.post(robots.dingtalk_request(robot.url("dingtalk"), "x", secret=SECRET), ca_file=ca_file)
    assert (receipt.ok, receipt.retryable, receipt.retry_after_s) == (False, True, 600.0)


# -- e-mail -----------------------------------------------------------------------------------------------


class _Controller(Controller):
    """aiosmtpd's Controller on a free port: it checks that the server is up by connecting to `port`, so the
    port the system gave is read back before that."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Mailbox:
    """What the mail server received, and how it answers: by recipient at RCPT, once for all at DATA."""

    received: list[Envelope] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(envelope)
        return "250 2.0.0 Ok: queued as 4F2A1"

    def message(self, index: int = 0) -> EmailMessage:
        content = self.received[index].original_content
        assert content is not None
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"guard", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


def _smtp(mailbox: Mailbox, **kwargs: Any) -> Iterator[_Controller]:
    controller = _Controller(mailbox, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_plain(mailbox: Mailbox) -> Iterator[_Controller]:
    yield from _smtp(mailbox)


@pytest.fixture
def smtp_starttls(mailbox: Mailbox, ca: trustme.CA) -> Iterator[_Controller]:
    yield from _smtp(mailbox, tls_context=_server_context(ca), require_starttls=True,
                     authenticator=_authenticate, auth_required=True)


SUBJECT = "【报警】南门一键报警 09:15"
BODY = "南门岗亭一键报警按钮被按下。\n请值班保安立即到场，并在控制台确认。\n"


def test_email_arrives_with_its_chinese_subject_and_body(smtp_plain: _Controller, mailbox: Mailbox) -> None:
    receipt = send_email("127.0.0.1", smtp_plain.port, "校园安全网关 <gateway@school.example.cn>",
                         "duty@school.example.cn", SUBJECT, BODY, security="none", timeout_s=5)
    assert receipt.ok, receipt.detail
    assert (receipt.channel, receipt.code, receipt.retryable) == ("email", 250, False)
    assert receipt.detail == "250 2.0.0 Ok: queued as 4F2A1"  # the server's own reply
    [envelope] = mailbox.received
    assert envelope.mail_from == "gateway@school.example.cn"
    assert envelope.rcpt_tos == ["duty@school.example.cn"]
    assert envelope.original_content is not None
    assert envelope.original_content.isascii()  # 7-bit clean: any relay carries it
    assert b"=?utf-8?" in envelope.original_content  # the subject as RFC 2047 encoded words
    message = mailbox.message()
    assert message["Subject"] == SUBJECT
    assert message["From"].addresses[0].display_name == "校园安全网关"
    assert message.get_content() == BODY
    assert message.get_content_charset() == "utf-8"
    assert message["Message-ID"] == receipt.message_id
    assert receipt.message_id is not None and receipt.message_id.endswith("@school.example.cn>")
    assert message["Date"].datetime is not None and message["Date"].datetime.tzinfo is not None


def test_email_over_starttls_with_login(smtp_starttls: _Controller, mailbox: Mailbox, ca_file: str) -> None:
    receipt = send_email("127.0.0.1", smtp_starttls.port, "gateway@school.example.cn",
                         ["duty@school.example.cn", "head@school.example.cn"], SUBJECT, BODY,
                         security="starttls", username="guard", password="s3cret", ca_file=ca_file, timeout_s=5)
    assert receipt.ok, receipt.detail
    assert mailbox.received[0].rcpt_tos == ["duty@school.example.cn", "head@school.example.cn"]
    assert mailbox.message()["Subject"] == SUBJECT


def test_email_wrong_password_is_final(smtp_starttls: _Controller, mailbox: Mailbox, ca_file: str) -> None:
    receipt = send_email("127.0.0.1", smtp_starttls.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, username="guard", password="wrong", ca_file=ca_file, timeout_s=5)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, False, 535)
    assert "refused the login" in receipt.detail and "wrong" not in receipt.detail
    assert mailbox.received == []


def test_email_starttls_to_a_server_of_another_ca_is_refused(smtp_starttls: _Controller, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    receipt = send_email("127.0.0.1", smtp_starttls.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, username="guard", password="s3cret", ca_file=str(other), timeout_s=5)
    assert (receipt.ok, receipt.retryable) == (False, False)
    assert "certificate was refused" in receipt.detail


def test_email_starttls_where_the_server_has_none(smtp_plain: _Controller, ca_file: str) -> None:
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, security="starttls", ca_file=ca_file, timeout_s=5)
    assert (receipt.ok, receipt.retryable) == (False, False)
    assert "does not offer STARTTLS" in receipt.detail


def test_email_over_implicit_tls(mailbox: Mailbox, ca: trustme.CA, ca_file: str) -> None:
    for controller in _smtp(mailbox, ssl_context=_server_context(ca)):
        receipt = send_email("127.0.0.1", controller.port, "gateway@school.example.cn",
                             "duty@school.example.cn", SUBJECT, BODY, security="ssl", ca_file=ca_file, timeout_s=5)
        assert receipt.ok, receipt.detail
    assert mailbox.message()["Subject"] == SUBJECT


def test_email_recipient_refused_with_550_is_final(smtp_plain: _Controller, mailbox: Mailbox) -> None:
    mailbox.rcpt_replies["left@school.example.cn"] = "550 5.1.1 <left@school.example.cn>: user unknown"
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn", "left@school.example.cn",
                         SUBJECT, BODY, security="none", timeout_s=5)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, False, 550)
    assert "left@school.example.cn (550 5.1.1" in receipt.detail and "user unknown" in receipt.detail
    assert receipt.message_id is not None
    assert mailbox.received == []


def test_email_recipient_deferred_with_451_is_worth_trying_again(smtp_plain: _Controller,
                                                                  mailbox: Mailbox) -> None:
    mailbox.rcpt_replies["duty@school.example.cn"] = "451 4.7.1 greylisted, try again later"
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, security="none", timeout_s=5)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, True, 451)


def test_email_message_deferred_with_451_is_worth_trying_again(smtp_plain: _Controller,
                                                                mailbox: Mailbox) -> None:
    mailbox.data_reply = "451 4.3.0 local error in processing"
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, security="none", timeout_s=5)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, True, 451)
    assert "message refused: 451 4.3.0" in receipt.detail


def test_email_message_rejected_with_554_is_final(smtp_plain: _Controller, mailbox: Mailbox) -> None:
    mailbox.data_reply = "554 5.7.1 message rejected as spam"
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, security="none", timeout_s=5)
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, False, 554)


def test_email_one_refused_recipient_of_two_is_sent_and_named(smtp_plain: _Controller, mailbox: Mailbox) -> None:
    mailbox.rcpt_replies["left@school.example.cn"] = "550 5.1.1 user unknown"
    receipt = send_email("127.0.0.1", smtp_plain.port, "gateway@school.example.cn",
                         ["duty@school.example.cn", "left@school.example.cn"], SUBJECT, BODY, security="none",
                         timeout_s=5)
    assert receipt.ok
    assert "refused: left@school.example.cn (550 5.1.1 user unknown)" in receipt.detail
    assert mailbox.received[0].rcpt_tos == ["duty@school.example.cn"]


def test_email_server_that_never_greets_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts, never says 220
        started = time.monotonic()
        receipt = send_email("127.0.0.1", silent.getsockname()[1], "gateway@school.example.cn",
                             "duty@school.example.cn", SUBJECT, BODY, security="none", timeout_s=HANG_TIMEOUT_S)
    assert time.monotonic() - started < 5 * HANG_TIMEOUT_S
    assert (receipt.ok, receipt.retryable) == (False, True)
    assert "no answer" in receipt.detail


def test_email_password_is_not_sent_in_clear_to_another_host() -> None:
    receipt = send_email("mail.school.example.cn", 25, "gateway@school.example.cn", "duty@school.example.cn",
                         SUBJECT, BODY, security="none", username="guard", password="s3cret")
    assert (receipt.ok, receipt.retryable) == (False, False)
    assert "unencrypted" in receipt.detail
