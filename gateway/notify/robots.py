"""WeCom (企业微信) and DingTalk (钉钉) group robots: a text message to a group chat over their webhooks.

Pure builders turn (webhook URL, text, mentions) into the request to POST, and a pure parser turns the answer
into a `Receipt`; `post` is the few lines of HTTPS between them. Both robots answer HTTP 200 with
{"errcode": 0, "errmsg": "ok"}, a refusal with another errcode and the reason in errmsg.

The webhook URL carries the robot's credential (WeCom `key`, DingTalk `access_token`) and DingTalk's `sign` is
made with the robot's secret: anyone holding them can post to the group, so they are never logged in full
(`redact_url`).

Documented by the vendors:
- WeCom group robot: POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY,
  {"msgtype": "text", "text": {"content": ..., "mentioned_mobile_list": [...]}}; content at most 2048 bytes
  of UTF-8; 20 messages a minute per robot (errcode 45009 past that).
- DingTalk custom robot: POST https://oapi.dingtalk.com/robot/send?access_token=TOKEN,
  {"msgtype": "text", "text": {"content": ...}, "at": {"atMobiles": [...], "isAtAll": false}}; a person is
  highlighted only if "@<mobile>" is also in the content. With 加签 the URL also carries &timestamp=<ms>&sign=
  urlencode(base64(HmacSHA256(key=secret, msg=f"{timestamp}\\n{secret}"))), the timestamp within an hour of
  DingTalk's clock. 20 messages a minute per robot, then 10 minutes of refusals (errcode 130101).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

log = logging.getLogger("campusgw.notify.robots")

Channel = Literal["wecom", "dingtalk"]

WECOM_MAX_CONTENT: Final = 2048  # bytes of UTF-8: WeCom's documented limit for text.content
ELLIPSIS: Final = "…"  # what ends a text cut short, so a reader sees there was more
# Query parameters that are credentials, or made from one: hidden in anything we log or show.
SECRET_PARAMS: Final = frozenset({"key", "access_token", "sign"})
# After a rate-limit refusal, when to try again: WeCom counts 20 a minute; DingTalk stops the robot for
# 10 minutes once it has had 20 in a minute.
WECOM_RATE_LIMIT_S: Final = 60.0
DINGTALK_RATE_LIMIT_S: Final = 600.0

# errcode -> (what it means for the person setting the robot up, retryable, retry after seconds).
# errmsg is always kept beside it: the vendor's words are the authority, these only say what to do.
_ERRCODES: Final[dict[Channel, dict[int, tuple[str, bool, float | None]]]] = {
    "wecom": {
        -1: ("WeCom is busy", True, None),
        45009: ("rate limited (20 messages a minute per robot)", True, WECOM_RATE_LIMIT_S),
        93000: ("invalid webhook key: the robot was removed or its URL is mistyped", False, None),
    },
    "dingtalk": {
        -1: ("DingTalk is busy", True, None),
        130101: ("sending too fast (20 messages a minute per robot)", True, DINGTALK_RATE_LIMIT_S),
        300001: ("invalid access_token: the robot was removed or its URL is mistyped", False, None),
        300005: ("invalid access_token: the robot was removed or its URL is mistyped", False, None),
        310000: ("refused by the robot's security settings: check the secret (加签), the keywords "
                 "(自定义关键词) or the IP whitelist", False, None),
    },
}


@dataclass(frozen=True)
class Receipt:
    """What became of one notification, for the log, the audit trail and the decision to try again."""

    ok: bool
    channel: str  # "wecom", "dingtalk", "email", ...
    detail: str  # the server's answer, or why it failed, in words an installer can act on; no secrets
    retryable: bool = False  # worth sending again (rate limit, 5xx, timeout, 4xx SMTP reply); never when ok
    retry_after_s: float | None = None  # when the server said (or documents) how long to wait
    code: int | None = None  # the robot's errcode, else the HTTP status, or the SMTP reply code
    message_id: str | None = None  # e-mail: the Message-ID header sent


@dataclass(frozen=True)
class RobotRequest:
    """One POST to a robot, built and not yet sent."""

    channel: Channel
    url: str  # contains the credential: log `redact_url(url)`, never this
    body: bytes
    headers: Mapping[str, str]
    truncated: bool = False  # the text was longer than the robot takes and was cut short

    def __repr__(self) -> str:  # a request that finds its way into a log must not take the key with it
        return (f"RobotRequest({self.channel}, {redact_url(self.url)}, {len(self.body)} bytes"
                f"{', truncated' if self.truncated else ''})")


class WebhookError(ValueError):
    """A webhook URL we cannot use; the message says what is wrong with it and never repeats its secret."""


def redact_url(url: str) -> str:
    """The URL with its credentials hidden: key and access_token keep 4 characters, so an installer can tell
    two robots apart; sign is hidden whole."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    shown = []
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name == "sign":
            value = "***"
        elif name in SECRET_PARAMS:
            value = value[:4] + "***"
        shown.append(f"{name}={value}")
    return urllib.parse.urlunsplit(parts._replace(query="&".join(shown), fragment=""))


def truncate_utf8(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` bytes of UTF-8 on a character boundary, ending in ELLIPSIS if cut;
    and whether it was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text, False
    room = limit - len(ELLIPSIS.encode("utf-8"))
    # decoding with "ignore" drops only the partial character the cut left at the end
    return encoded[:room].decode("utf-8", "ignore") + ELLIPSIS, True


def wecom_request(webhook_url: str, text: str, mentioned_mobiles: Sequence[str] = ()) -> RobotRequest:
    """The POST that puts `text` into the WeCom group, @-mentioning the members with these mobile numbers
    ("@all" for everyone)."""
    _check_url(webhook_url, "wecom", "key")
    content, truncated = truncate_utf8(text, WECOM_MAX_CONTENT)
    message: dict[str, object] = {"content": content}
    if mentioned_mobiles:
        message["mentioned_mobile_list"] = list(mentioned_mobiles)
    return RobotRequest("wecom", webhook_url, _json({"msgtype": "text", "text": message}), _HEADERS, truncated)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's 加签: base64 of HmacSHA256 keyed with the secret over "<timestamp>\\n<secret>" (not yet
    URL-encoded)."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def dingtalk_request(webhook_url: str, text: str, secret: str | None = None, at_mobiles: Sequence[str] = (),
                     now_ms: int | None = None) -> RobotRequest:
    """The POST that puts `text` into the DingTalk group, @-mentioning these mobile numbers; with the robot's
    secret (加签) the URL is signed at `now_ms` (Unix milliseconds; the clock's now if not given)."""
    _check_url(webhook_url, "dingtalk", "access_token")
    # DingTalk highlights an @-mentioned person only when "@<mobile>" is in the text as well.
    missing = [f"@{m}" for m in at_mobiles if f"@{m}" not in text]
    content = " ".join([text, *missing]) if missing else text
    body = _json({"msgtype": "text", "text": {"content": content},
                  "at": {"atMobiles": list(at_mobiles), "isAtAll": False}})
    url = webhook_url
    if secret:
        timestamp = int(time.time() * 1000) if now_ms is None else now_ms
        parts = urllib.parse.urlsplit(webhook_url)
        # a URL pasted with an old signature on it: that one has expired, ours replaces it
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("timestamp", "sign")]
        query += [("timestamp", str(timestamp)), ("sign", dingtalk_sign(secret, timestamp))]
        # quote_plus as DingTalk's own example does: base64's + / = become %2B %2F %3D
        signed = urllib.parse.urlencode(query, quote_via=urllib.parse.quote_plus)
        url = urllib.parse.urlunsplit(parts._replace(query=signed))
    return RobotRequest("dingtalk", url, body, _HEADERS)


def parse_response(channel: Channel, status: int, body: bytes, retry_after: str | None = None) -> Receipt:
    """What the robot's answer means: ok, refused for good (bad key, security settings), or worth sending
    again (rate limit, server trouble)."""
    name = "WeCom" if channel == "wecom" else "DingTalk"
    if status >= 500 or status == 429:
        return Receipt(False, channel, f"{name} answered HTTP {status}; try again later", retryable=True,
                       retry_after_s=_seconds(retry_after), code=status)
    try:
        answer = json.loads(body)
        errcode = int(answer["errcode"])
        errmsg = str(answer.get("errmsg", ""))
    except (ValueError, TypeError, KeyError):
        return Receipt(False, channel, f"{name} answered HTTP {status} with {_snippet(body)!r}, not a robot's "
                       "answer: is the webhook URL right?", code=status)
    if status != 200:
        return Receipt(False, channel, f"{name} answered HTTP {status}: errcode {errcode}: {errmsg}", code=errcode)
    if errcode == 0:
        return Receipt(True, channel, f"{name}: {errmsg or 'ok'}", code=0)
    meaning, retryable, after = _ERRCODES[channel].get(errcode, ("refused", False, None))
    return Receipt(False, channel, f"{name}: {meaning} (errcode {errcode}: {errmsg})", retryable=retryable,
                   retry_after_s=after, code=errcode)


def post(request: RobotRequest, timeout_s: float = 10, ca_file: str | None = None) -> Receipt:
    """Send `request` over HTTPS, the server's certificate verified (against `ca_file` if given, else the
    system's CAs). Never raises for the network: a failure is a Receipt saying why. timeout_s bounds each
    step (connect, TLS, each read), not the whole exchange; redirects are not followed.

    A timeout after the request went out may still have reached the group: trying again may post it twice,
    which for an alarm is the lesser harm."""
    where = redact_url(request.url)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        return _failed(request, f"cannot read the CA file {ca_file}: {exc}", retryable=False)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects())
    http_request = urllib.request.Request(request.url, data=request.body, headers=dict(request.headers),
                                          method="POST")
    try:
        with opener.open(http_request, timeout=timeout_s) as response:
            receipt = parse_response(request.channel, response.status, response.read(),
                                     response.headers.get("Retry-After"))
    except urllib.error.HTTPError as exc:  # a status other than 2xx: the answer is still worth reading
        with exc:
            body = _read_quietly(exc)
        receipt = parse_response(request.channel, exc.code, body, exc.headers.get("Retry-After"))
    except urllib.error.URLError as exc:  # before any answer: DNS, refused connection, TLS
        receipt = _network_failure(request, exc.reason, timeout_s)
    except (OSError, http.client.HTTPException) as exc:  # while reading the answer: a timeout, a dropped line
        receipt = _network_failure(request, exc, timeout_s)
    if request.truncated:
        receipt = _with_note(receipt, f"(the text was cut to {WECOM_MAX_CONTENT} bytes)")
    if receipt.ok:
        log.info("%s: sent to %s", request.channel, where)
    else:
        log.warning("%s: not sent to %s: %s", request.channel, where, receipt.detail)
    return receipt


_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8"}


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _check_url(url: str, channel: Channel, credential: str) -> None:
    parts = urllib.parse.urlsplit(url)
    name = "WeCom" if channel == "wecom" else "DingTalk"
    if not parts.scheme or not parts.hostname:  # not shown: it may well be the bare key
        raise WebhookError(f"{name} webhook URL: not a URL; copy the whole webhook URL (https://...?"
                           f"{credential}=...) from the robot's settings")
    if parts.scheme != "https":
        raise WebhookError(f"{name} webhook URL {redact_url(url)!r}: expected https://, so that the "
                           f"{credential} is not sent in clear")
    if not urllib.parse.parse_qs(parts.query).get(credential):
        raise WebhookError(f"{name} webhook URL {redact_url(url)!r}: no {credential}= in it; copy the whole "
                           "webhook URL from the robot's settings")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough here not to parse


def _snippet(body: bytes) -> str:
    return body[:80].decode("utf-8", "replace")


def _read_quietly(response: urllib.error.HTTPError) -> bytes:
    try:
        return response.read()
    except (OSError, http.client.HTTPException):
        return b""


def _network_failure(request: RobotRequest, reason: object, timeout_s: float) -> Receipt:
    host = urllib.parse.urlsplit(request.url).netloc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return _failed(request, f"TLS: {host}'s certificate was refused ({reason.verify_message}); is a proxy "
                       "intercepting HTTPS, or the system clock wrong?", retryable=False)
    if isinstance(reason, ssl.SSLError):
        return _failed(request, f"TLS with {host} failed: {reason}", retryable=False)
    if isinstance(reason, TimeoutError):
        return _failed(request, f"no answer from {host} within {timeout_s:g} s", retryable=True)
    return _failed(request, f"cannot reach {host}: {reason}", retryable=True)


def _failed(request: RobotRequest, why: str, retryable: bool) -> Receipt:
    return Receipt(False, request.channel, why, retryable=retryable)


def _with_note(receipt: Receipt, note: str) -> Receipt:
    return dataclasses.replace(receipt, detail=f"{receipt.detail} {note}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A robot never redirects: following one would turn the POST into a GET, or take the key elsewhere."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        return None
