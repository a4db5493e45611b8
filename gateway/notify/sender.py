"""Reaching people: the notifications escalation writes (gateway.records.models.Notification) sent through each
person's channels in turn, until one delivers.

A round tries the person's channels in their order (notify.people[].channels, else notify.channels, only those
set up); every try's receipt goes into the alarm's history, in words, with the channel's answer. A round with no
delivery is tried again after `retry_s`, up to `attempts` rounds; then the notification has failed and a
gateway-health alarm (notify_undelivered) says whom nobody reached; the next delivery clears it. A channel past
`per_minute` sends in the last minute is passed over for the next one. The message is in the person's language.
Rows are written with the escalation step, so a restart in between sends them afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import Config, NotifyPerson
from gateway.guard import Guarded
from gateway.i18n import gettext
from gateway.notify.robots import Receipt
from gateway.records import store
from gateway.records.models import Alarm, Notification, utcnow

log = logging.getLogger("campusgw.notify")

POLL_S = 1.0  # due rows are looked for this often (a wake() looks at once)
MESSAGE = "{site}: {alarm} at {place}, raised {time}, not acknowledged (step {level})."
MESSAGE_AT_ONCE = "{site}: {alarm} at {place}, raised {time}."
DELIVERED = "notified {person} by {channel}: {detail}"
NOT_DELIVERED = "could not reach {person} by {channel}: {detail}"
GAVE_UP = "gave up reaching {person} after {rounds} rounds"

Send = Callable[[str, Notification, NotifyPerson | None, str], Receipt]  # (channel, row, person, text)


def message(language: str, site: str, alarm: Alarm, level: int, zone_name: str | None, when: str,
            console_url: str | None) -> str:
    """The text a person gets, in their language: what, where, when, and the alarm's page."""
    text = gettext(language, MESSAGE if level else MESSAGE_AT_ONCE).format(
        site=site, alarm=gettext(language, alarm.alarm_type), place=alarm.place or zone_name or alarm.device_id,
        time=when, level=level)
    return f"{text} {console_url.rstrip('/')}/alarms/{alarm.id}" if console_url else text


class NotificationSender:
    def __init__(self, config: Config, sessions: sessionmaker[Session],
                 on_health: Callable[[str, bool, str], None], send: Send | None = None) -> None:
        self.config = config
        self.notify = config.notify
        self.sessions = sessions
        self.on_health = on_health
        self.send = send or ChannelSender(config).send
        self._wake = threading.Event()
        self._sent: dict[str, deque[float]] = defaultdict(deque)  # channel -> monotonic times of its sends
        self._failing = False  # the notify_undelivered alarm is up
        self._guard = Guarded("notify", self._run)
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._guard.start()

    def stop(self) -> None:
        self._guard.stopping.set()
        self._wake.set()
        self._guard.stop(10)

    def alive(self) -> bool:
        return self._guard.alive()

    def wake(self) -> None:
        self._wake.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.send_due()
            except Exception:  # the database away: the rows wait, the next turn tries again
                log.exception("could not send the notifications due; trying again in %.0f s", POLL_S)

    def send_due(self) -> None:
        now = utcnow()
        with self.sessions() as session:
            ids = list(session.scalars(select(Notification.id).where(
                Notification.state == "pending",
                or_(Notification.next_try_at.is_(None), Notification.next_try_at <= now)).order_by(Notification.id)))
        for notification_id in ids:
            self._round(notification_id)

    def _round(self, notification_id: int) -> None:
        """One round through the person's channels; the row updated with how it went."""
        with self.sessions() as session:
            row = session.get(Notification, notification_id)
            alarm = session.get(Alarm, row.alarm_id) if row is not None else None
            if row is None or alarm is None or row.state != "pending":
                return
            session.expunge(row)
            session.expunge(alarm)
        person = self.notify.person(row.person_id)
        language = person.language if person else "zh_CN"
        zone = next((z.name for z in self.config.zones if z.id == alarm.zone), None)
        when = alarm.raised_at.astimezone(self.config.site.tz).strftime("%H:%M")
        text = message(language, self.config.site.name, alarm, row.level, zone, when, self.notify.console_url)
        channels = [c for c in (person.channels if person and person.channels else self.notify.channels)
                    if c in self.notify.configured()]
        notes: list[tuple[str, dict[str, Any]]] = []
        delivered: Receipt | None = None
        for channel in channels:
            if self._busy(channel):
                notes.append((NOT_DELIVERED, {"person": row.person_name, "channel": channel,
                                              "detail": f"more than {self.notify.per_minute} a minute: the next"}))
                continue
            self._sent[channel].append(time.monotonic())
            try:
                receipt = self.send(channel, row, person, text)
            except Exception as exc:  # a channel's bug must not stop the others
                receipt = Receipt(False, channel, f"{type(exc).__name__}: {exc}")
            params = {"person": row.person_name, "channel": channel, "detail": receipt.detail[:300]}
            notes.append((DELIVERED if receipt.ok else NOT_DELIVERED, params))
            (log.info if receipt.ok else log.warning)("alarm %d: %s", row.alarm_id,
                                                      (DELIVERED if receipt.ok else NOT_DELIVERED).format(**params))
            if receipt.ok:
                delivered = receipt
                break
        now = utcnow()
        gave_up = False
        with self.sessions.begin() as session:
            current = session.get(Notification, notification_id)
            if current is None:
                return
            for text_id, params in notes:
                store.note(session, current.alarm_id, "notify", text_id, now, params=params)
            if delivered is not None:
                current.state, current.done_at = "sent", now
                current.channel, current.detail = delivered.channel, delivered.detail[:2000]
            else:
                current.attempts += 1
                current.detail = notes[-1][1]["detail"] if notes else "no channel set up for this person"
                if current.attempts >= self.notify.attempts or not channels:
                    current.state, current.done_at, gave_up = "failed", now, True
                    store.note(session, current.alarm_id, "notify", GAVE_UP, now,
                               params={"person": current.person_name, "rounds": current.attempts})
                else:
                    current.next_try_at = now + timedelta(seconds=self.notify.retry_s)
        if delivered is not None:
            self.delivered += 1
            if self._failing:
                self._failing = False
                self.on_health("notify_undelivered", False, f"{row.person_name} reached by {delivered.channel}")
        elif gave_up:
            self.failed += 1
            self._failing = True
            self.on_health("notify_undelivered", True, f"nobody reached {row.person_name} about alarm "
                                                       f"{row.alarm_id}: {row.detail or ''}"[:900])

    def _busy(self, channel: str) -> bool:
        sent, cutoff = self._sent[channel], time.monotonic() - 60
        while sent and sent[0] < cutoff:
            sent.popleft()
        return len(sent) >= self.notify.per_minute

    def stats(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, **self._guard.health()}


class ChannelSender:
    """The channels as the site config sets them up; secrets read when a message goes, not kept."""

    def __init__(self, config: Config) -> None:
        self.notify = config.notify

    def send(self, channel: str, row: Notification, person: NotifyPerson | None, text: str) -> Receipt:
        phone = (person.phone if person and person.phone else None) or row.phone
        if channel == "sms":
            from gateway.notify.sms import send_sms

            assert self.notify.sms is not None
            if not phone:
                return Receipt(False, "sms", f"no phone number for {row.person_name}")
            sms = send_sms(self.notify.sms.port, phone, text, baudrate=self.notify.sms.baudrate,
                           timeout_s=self.notify.sms.timeout_s)
            refs = ", ".join(map(str, sms.message_refs))
            return Receipt(sms.ok, "sms", f"{sms.parts} part(s) handed to the modem (ref {refs})" if sms.ok
                           else sms.reason, code=sms.error_code)
        if channel in ("wecom", "dingtalk"):
            from gateway.notify import robots

            robot = self.notify.wecom if channel == "wecom" else self.notify.dingtalk
            assert robot is not None
            url = robot.webhook.resolve() or ""
            mobiles = [phone.lstrip("+").removeprefix("86")] if phone else []
            try:
                request = robots.wecom_request(url, text, mobiles) if channel == "wecom" else robots.dingtalk_request(
                    url, text, robot.secret.resolve() if robot.secret else None, mobiles)
            except robots.WebhookError as exc:
                return Receipt(False, channel, str(exc))
            return robots.post(request, ca_file=str(robot.ca_file) if robot.ca_file else None)
        if channel == "email":
            from gateway.notify.email import send_email

            mail = self.notify.email
            assert mail is not None
            if person is None or not person.email:
                return Receipt(False, "email", f"no e-mail address for {row.person_name}")
            subject = text.split(":", 1)[0] + ": " + text.split(":", 1)[-1].strip()[:60]
            return send_email(mail.host, mail.port, mail.sender, person.email, subject, text, security=mail.security,
                              username=mail.username, password=mail.password.resolve() if mail.password else None)
        return Receipt(False, channel, f"unknown channel {channel}")
