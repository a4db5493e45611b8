"""WeCom and DingTalk robots, without a network: the request bodies as the vendors document them, DingTalk's
signature against an independent computation, truncation on a character boundary, what each errcode means,
and the credentials kept out of what is shown."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.notify import robots
from gateway.notify.robots import Receipt, WebhookError

WECOM = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=633a31f6-7f9c-4bc4-97a0-0ec1eefa5898"
DINGTALK = "https://oapi.dingtalk.com/robot/send?access_token=50cb6e954c89afa14fb97754eafd886d"
SECRET = "SEC5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"


def _ok(answer: dict[str, object]) -> bytes:
    return json.dumps(answer).encode()


# -- WeCom ------------------------------------------------------------------------------------------------


def test_wecom_body_is_the_documented_text_message() -> None:
    request = robots.wecom_request(WECOM, "南门一键报警 09:15", mentioned_mobiles=["13800001111", "@all"])
    assert request.channel == "wecom"
    assert request.url == WECOM
    assert json.loads(request.body) == {
        "msgtype": "text",
        "text": {"content": "南门一键报警 09:15", "mentioned_mobile_list": ["13800001111", "@all"]},
    }
    assert "南门".encode() in request.body  # UTF-8 as WeCom requires, not \\u escapes
    assert request.headers["Content-Type"].startswith("application/json")
    assert not request.truncated


def test_wecom_without_mentions_has_no_mention_list() -> None:
    assert json.loads(robots.wecom_request(WECOM, "hi").body) == {"msgtype": "text", "text": {"content": "hi"}}


def test_wecom_text_is_cut_to_2048_bytes_on_a_character_boundary() -> None:
    text = "报警" * 1000  # 6000 bytes of UTF-8, 3 a character
    request = robots.wecom_request(WECOM, text)
    content = json.loads(request.body)["text"]["content"]
    assert request.truncated
    assert len(content.encode("utf-8")) <= 2048
    assert content.endswith(robots.ELLIPSIS)
    assert text.startswith(content.removesuffix(robots.ELLIPSIS))
    # as much as fits: one more character would not
    assert len(content.encode("utf-8")) + 3 > 2048


def test_a_text_of_exactly_2048_bytes_is_kept_whole() -> None:
    text = "a" * 2045 + "报"
    assert robots.truncate_utf8(text, 2048) == (text, False)
    assert robots.truncate_utf8(text + "x", 2048)[1]


@given(st.text(min_size=0, max_size=1500), st.integers(min_value=8, max_value=3000))
def test_truncation_never_splits_a_character_and_never_overruns(text: str, limit: int) -> None:
    cut, truncated = robots.truncate_utf8(text, limit)
    assert len(cut.encode("utf-8")) <= limit
    assert truncated == (cut != text)
    if truncated:
        assert text.startswith(cut.removesuffix(robots.ELLIPSIS))


@pytest.mark.parametrize("url", [
    "http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc",  # not TLS: the key would travel in clear
    "https://qyapi.weixin.qq.com/cgi-bin/webhook/send",  # no key
    "633a31f6-7f9c-4bc4-97a0-0ec1eefa5898",  # the key alone
])
def test_a_wecom_url_we_cannot_use_is_refused_without_repeating_its_key(url: str) -> None:
    with pytest.raises(WebhookError) as caught:
        robots.wecom_request(url, "x")
    assert "0ec1eefa5898" not in str(caught.value)


# -- DingTalk ---------------------------------------------------------------------------------------------


def test_dingtalk_body_is_the_documented_text_message() -> None:
    request = robots.dingtalk_request(DINGTALK, "南门一键报警 @13800001111", at_mobiles=["13800001111"])
    assert request.channel == "dingtalk"
    assert request.url == DINGTALK  # no secret: the URL as given
    assert json.loads(request.body) == {
        "msgtype": "text",
        "text": {"content": "南门一键报警 @13800001111"},
        "at": {"atMobiles": ["13800001111"], "isAtAll": False},
    }


def test_dingtalk_mentions_are_written_into_the_text_too() -> None:
    # DingTalk highlights a person only when "@mobile" is in the content as well as in atMobiles
    request = robots.dingtalk_request(DINGTALK, "南门一键报警", at_mobiles=["13800001111", "13900002222"])
    assert json.loads(request.body)["text"]["content"] == "南门一键报警 @13800001111 @13900002222"


def test_dingtalk_sign_matches_dingtalks_documented_recipe() -> None:
    timestamp = 1767225600123
    request = robots.dingtalk_request(DINGTALK, "x", secret=SECRET, now_ms=timestamp)
    # DingTalk's own Python example, computed here apart from the module
    string_to_sign = f"{timestamp}\n{SECRET}".encode()
    expected = urllib.parse.quote_plus(
        base64.b64encode(hmac.new(SECRET.encode(), string_to_sign, digestmod=hashlib.sha256).digest()))
    assert request.url == f"{DINGTALK}&timestamp={timestamp}&sign={expected}"


def test_dingtalk_sign_matches_another_implementation() -> None:
    # the vector in the Rust `dingding` crate's signature tests (src/signature.rs), URL-encoded there
    sign = robots.dingtalk_sign("secret", 1700000000000)
    assert urllib.parse.quote_plus(sign) == "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D"


def test_dingtalk_signing_replaces_an_old_signature_in_a_pasted_url() -> None:
    pasted = f"{DINGTALK}&timestamp=1600000000000&sign=old"
    request = robots.dingtalk_request(pasted, "x", secret=SECRET, now_ms=1767225600123)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
    assert query["timestamp"] == ["1767225600123"]
    assert query["sign"] == [robots.dingtalk_sign(SECRET, 1767225600123)]
    assert query["access_token"] == ["50cb6e954c89afa14fb97754eafd886d"]


def test_dingtalk_without_now_signs_with_the_clock() -> None:
    import time

    before = int(time.time() * 1000)
    request = robots.dingtalk_request(DINGTALK, "x", secret=SECRET)
    stamp = int(urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)["timestamp"][0])
    assert before <= stamp <= int(time.time() * 1000)


def test_a_dingtalk_url_without_a_token_is_refused() -> None:
    with pytest.raises(WebhookError, match="access_token"):
        robots.dingtalk_request("https://oapi.dingtalk.com/robot/send", "x")


# -- answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["wecom", "dingtalk"])
def test_errcode_0_is_sent(channel: robots.Channel) -> None:
    receipt = robots.parse_response(channel, 200, _ok({"errcode": 0, "errmsg": "ok"}))
    assert receipt == Receipt(True, channel, receipt.detail, code=0)
    assert not receipt.retryable


@pytest.mark.parametrize(("channel", "errcode", "errmsg", "retryable", "after", "words"), [
    ("wecom", 45009, "api freq out of limit", True, 60.0, "rate limited"),
    ("wecom", 93000, "invalid webhook url, hint: [1755605200], more info at https://open.work.weixin.qq.com"
     "/devtool/query?e=93000", False, None, "invalid webhook key"),
    ("wecom", -1, "system busy", True, None, "busy"),
    ("dingtalk", 130101, "send too fast, exceed 20 times per minute", True, 600.0, "too fast"),
    ("dingtalk", 310000, "sign not match", False, None, "加签"),
    ("dingtalk", 310000, "keywords not in content", False, None, "关键词"),
    ("dingtalk", 300001, "token is not exist", False, None, "access_token"),
    ("dingtalk", 400102, "robot stopped", False, None, "refused"),  # not in our table: its errmsg says it
])
def test_errcodes(channel: robots.Channel, errcode: int, errmsg: str, retryable: bool, after: float | None,
                  words: str) -> None:
    receipt = robots.parse_response(channel, 200, _ok({"errcode": errcode, "errmsg": errmsg}))
    assert not receipt.ok
    assert receipt.code == errcode
    assert receipt.retryable is retryable
    assert receipt.retry_after_s == after
    assert words in receipt.detail
    assert errmsg in receipt.detail  # the vendor's own words are kept


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (502, True), (503, True), (429, True),
                                                   (404, False), (403, False)])
def test_http_status_without_a_robot_answer(status: int, retryable: bool) -> None:
    receipt = robots.parse_response("wecom", status, b"<html>error</html>", retry_after="30")
    assert (receipt.ok, receipt.retryable, receipt.code) == (False, retryable, status)
    assert str(status) in receipt.detail
    if retryable:
        assert receipt.retry_after_s == 30.0


def test_a_200_that_is_not_json_is_a_failure_that_says_so() -> None:
    receipt = robots.parse_response("dingtalk", 200, b"<html>captive portal</html>")
    assert not receipt.ok and not receipt.retryable
    assert "not a robot's answer" in receipt.detail


# -- secrets ----------------------------------------------------------------------------------------------


def test_redact_url_hides_key_token_and_sign() -> None:
    assert robots.redact_url(WECOM) == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=633a***"
    signed = robots.dingtalk_request(DINGTALK, "x", secret=SECRET, now_ms=1767225600123).url
    shown = robots.redact_url(signed)
    assert shown == "https://oapi.dingtalk.com/robot/send?access_token=50cb***&timestamp=1767225600123&sign=***"
    assert "50cb6e954c89" not in shown
    assert robots.redact_url("https://example.com/hook") == "https://example.com/hook"


def test_nothing_a_request_shows_holds_the_secret() -> None:
    request = robots.dingtalk_request(DINGTALK, "x", secret=SECRET, now_ms=1767225600123)
    assert SECRET not in request.url and SECRET.encode() not in request.body
    assert SECRET not in repr(request) and "50cb6e954c89" not in repr(request) and "50cb***" in repr(request)
    assert "0ec1eefa5898" not in repr(robots.wecom_request(WECOM, "x"))
