"""E-mail over SMTP: one plain-text message, UTF-8 (Chinese subjects included), sent and accounted for.

`build_message` is pure; `send_email` is the SMTP conversation around it and never raises for the network or
the server: whatever happens comes back as a `Receipt`. SMTP's own rule decides whether to try again: a 4xx
reply is transient, a 5xx permanent (RFC 5321 section 4.2.1). A timeout or a lost connection is transient too,
though the message may then have gone (trying again may send it twice, the lesser harm for an alarm).

The steps of smtplib's sendmail are taken one by one, so that the receipt can carry the server's reply to
the message itself ("250 2.0.0 Ok: queued as 4F2A1") and every refused recipient with its reason.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import smtplib
import ssl
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Literal

from gateway.notify.robots import Receipt

log = logging.getLogger("campusgw.notify.email")

Security = Literal["starttls", "ssl", "none"]
CHANNEL = "email"


def build_message(sender: str, to: Sequence[str], subject: str, text: str, now: datetime,
                  message_id: str | None = None) -> EmailMessage:
    """The message: UTF-8 subject (RFC 2047 encoded words when not ASCII) and body, a Date from the aware
    `now` and a Message-ID, so a recipient's mail client and our records can name the same message."""
    message = EmailMessage()  # policy.default: headers folded and encoded as RFC 5322/2047 want
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = " ".join(subject.split())  # a header may not hold a line break
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id or make_msgid(domain=_domain(sender))
    # base64: 7-bit clean, so no relay needs 8BITMIME, and shorter than quoted-printable for Chinese
    message.set_content(text, charset="utf-8", cte="base64")
    return message


def send_email(host: str, port: int, sender: str, to: str | Sequence[str], subject: str, text: str, *,
               security: Security = "starttls", username: str | None = None, password: str | None = None,
               timeout_s: float = 15, ca_file: str | None = None, now: datetime | None = None) -> Receipt:
    """Send one message through the SMTP server at host:port.

    security: "starttls" (submission, usually port 587), "ssl" (implicit TLS, usually 465) or "none" (a relay
    on the school's own network, usually 25). The server's certificate is verified against `ca_file` if
    given, else the system's CAs. With a username, a password is never sent unencrypted except to this
    machine itself. timeout_s bounds each step (connect, each reply), not the whole exchange."""
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        return Receipt(False, CHANNEL, "no recipients")
    if username is not None and security == "none" and not _loopback(host):
        return Receipt(False, CHANNEL, f"refusing to send the SMTP password to {host} unencrypted: "
                       "use security 'starttls' or 'ssl'")
    message = build_message(sender, recipients, subject, text, now or datetime.now().astimezone())
    message_id = str(message["Message-ID"])
    try:
        context = ssl.create_default_context(cafile=ca_file) if security != "none" else None
    except (OSError, ssl.SSLError) as exc:
        return Receipt(False, CHANNEL, f"cannot read the CA file {ca_file}: {exc}", message_id=message_id)
    try:
        receipt = _converse(host, port, sender, recipients, message, security, username, password, timeout_s,
                            context)
    except (smtplib.SMTPException, OSError) as exc:
        receipt = _failure(exc, host, timeout_s)
    receipt = dataclasses.replace(receipt, message_id=message_id)
    if receipt.ok:
        log.info("e-mail %s to %s via %s:%s: %s", message_id, ", ".join(recipients), host, port, receipt.detail)
    else:
        log.warning("e-mail %s to %s via %s:%s not sent: %s", message_id, ", ".join(recipients), host, port,
                    receipt.detail)
    return receipt


def _converse(host: str, port: int, sender: str, recipients: list[str], message: EmailMessage,
              security: Security, username: str | None, password: str | None, timeout_s: float,
              context: ssl.SSLContext | None) -> Receipt:
    smtp: smtplib.SMTP
    if security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout_s)
    try:
        return _exchange(smtp, host, sender, recipients, message, security, username, password, context)
    finally:
        _quit_quietly(smtp)


def _exchange(smtp: smtplib.SMTP, host: str, sender: str, recipients: list[str], message: EmailMessage,
              security: Security, username: str | None, password: str | None,
              context: ssl.SSLContext | None) -> Receipt:
    smtp.ehlo()
    if security == "starttls":
        if not smtp.has_extn("starttls"):
            return Receipt(False, CHANNEL, f"{host} does not offer STARTTLS: is this the submission port "
                           "(587), or does the server want security 'ssl' (465)?")
        smtp.starttls(context=context)
        smtp.ehlo()
    if username is not None:
        smtp.login(username, password or "")
    envelope_from = parseaddr(sender)[1] or sender
    code, reply = smtp.mail(envelope_from)
    if code != 250:
        return _refusal(f"sender {envelope_from} refused", code, reply)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in recipients:
        address = parseaddr(recipient)[1] or recipient
        code, reply = smtp.rcpt(address)
        if code not in (250, 251):
            refused[address] = (code, reply)
    if len(refused) == len(recipients):
        # transient only if every refusal was: a 5xx for one of them will not mend by waiting
        code = max(c for c, _ in refused.values())
        return Receipt(False, CHANNEL, "every recipient refused: " + _list(refused), retryable=code < 500,
                       code=code)
    code, reply = smtp.data(message.as_bytes(policy=policy.SMTP))
    if code != 250:
        return _refusal("message refused", code, reply)
    detail = f"{code} {_text(reply)}"
    if refused:
        detail += "; refused: " + _list(refused)
    return Receipt(True, CHANNEL, detail, code=code)


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """QUIT, whatever comes of it: the message's fate was settled by the reply to DATA, and a QUIT that fails
    must not turn a sent message into a failed one (and have it sent again)."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _failure(exc: BaseException, host: str, timeout_s: float) -> Receipt:
    """What an smtplib or socket exception means for the person reading the log, and whether to try again."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return Receipt(False, CHANNEL, f"{host} refused the login ({exc.smtp_code} {_text(exc.smtp_error)}): "
                       "check the username and password", retryable=exc.smtp_code < 500, code=exc.smtp_code)
    if isinstance(exc, smtplib.SMTPDataError):
        return _refusal("message refused", exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPResponseException):  # any other reply we could not go on from
        return _refusal("refused", exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Receipt(False, CHANNEL, f"{host}: {exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(exc.__context__, TimeoutError):
        exc = exc.__context__  # smtplib's words for a read that timed out
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Receipt(False, CHANNEL, f"{host} closed the connection: {exc or 'no reason given'}",
                       retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Receipt(False, CHANNEL, f"TLS: {host}'s certificate was refused ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        return Receipt(False, CHANNEL, f"TLS with {host} failed: {exc}: does the port match the security "
                       "('ssl' is usually 465, 'starttls' 587)?")
    if isinstance(exc, TimeoutError):
        return Receipt(False, CHANNEL, f"no answer from {host} within {timeout_s:g} s", retryable=True)
    if isinstance(exc, OSError):
        return Receipt(False, CHANNEL, f"cannot reach {host}: {exc}", retryable=True)
    return Receipt(False, CHANNEL, f"{host}: {exc}")


def _refusal(what: str, code: int, reply: bytes | str) -> Receipt:
    return Receipt(False, CHANNEL, f"{what}: {code} {_text(reply)}", retryable=400 <= code < 500, code=code)


def _list(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({code} {_text(reply)})" for address, (code, reply) in refused.items())


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _domain(address: str) -> str | None:
    """The sender's domain for the Message-ID, so ids stay unique across gateways; None: the host's name."""
    domain = parseaddr(address)[1].rpartition("@")[2]
    return domain or None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
