"""The rules service's periodic jobs (every TICK_S, each at its own pace): escalation of unacknowledged alarms,
bollard schedules, doors and visitors at the gate, patrol rounds, ledger deadlines, and retention; the clock
guard holds back what trusts the wall clock while it is in doubt.

A mixin of RulesService (gateway.rules_service.service), which runs `_tick` on its worker thread between
batches; the jobs write in their own transactions and publish what changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway import topics
from gateway.bus import Bus
from gateway.clock import ClockGuard, site_monotonic
from gateway.config import Config
from gateway.events import new_id
from gateway.notify.sender import NotificationSender
from gateway.records import ledger, notices, roster, store, visits
from gateway.records.models import Alarm, AlarmTransition, Notification, utcnow
from gateway.rules import roster as roster_rules
from gateway.rules.alarms import OPEN_STATES, RaiseAlarm, clear_condition, raise_condition
from gateway.rules.escalation import Unacknowledged, escalations_due
from gateway.rules.roster import DutyContact
from gateway.rules.schedules import wanted
from gateway.rules_service.access_shell import Gate, visit_keys
from gateway.rules_service.patrol_shell import Patrols
from gateway.systemd import clock_synchronised

log = logging.getLogger("campusgw.rules")
TICK_S = 1.0  # escalation and schedules are checked this often
PURGE_EVERY_S = 3600.0
PATROL_EVERY_S = 5.0  # rounds planned and checked: alerts are due to the minute
LEDGER_EVERY_S = 15.0  # incident deadlines (warned minutes ahead), inspections, maintenance items
UPWARD_BACK_DAYS = 31
UPWARD_EVERY_S = 5.0  # incidents changed are sent up to the district this often (their deadline is an hour)
POST_ALARM = "post_uncovered"
NTP_CHECK_EVERY_S = 60.0  # while the clock is suspect, timedatectl is asked this often whether NTP vouches for it


class PeriodicJobs:
    """What the jobs read of the service (set in RulesService.__init__) and the jobs themselves."""

    site: str
    bus: Bus
    sessions: sessionmaker[Session]
    config: Config | None
    tz: ZoneInfo
    gate: Gate | None
    patrols: Patrols | None
    wall_clock: Callable[[], datetime]
    _scheduled: dict[int, str]
    _last_tick: float
    _next_purge: float
    _next_run: dict[str, float]
    _clock: ClockGuard | None
    _clock_trusted: bool | None
    _next_ntp_check: float
    _health_seq: int
    _upward_after: int | None  # the newest incident timeline line sent up; None: from UPWARD_BACK_DAYS ago
    _submissions_after: int | None  # the newest report submission sent up; likewise
    notifier: NotificationSender | None

    if TYPE_CHECKING:  # RulesService's own
        def _publish(self, topic: str, body: dict[str, Any]) -> None: ...
        def _publish_alarms(self, alarm_ids: list[int]) -> None: ...
        def _drive_outputs(self) -> None: ...
        def _raise_for_lockdown(self) -> None: ...
        def _raise_health(self, condition: str, active: bool, detail: str) -> None: ...
        def _end_poison_episode(self) -> None: ...
        def _command(self, kind: str, device: str, name: str, alarm_id: int | None, issued_by: str,
                     args: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]: ...
        def _linkage(self, session: Session, raised: list[tuple[RaiseAlarm, int]], at: datetime,
                     ) -> list[tuple[str, dict[str, Any]]]: ...

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        if not self.config:
            return
        try:
            self._drive_outputs()
            self._raise_for_lockdown()
            self._escalate()
            self._follow_schedules()
            self._watch_gate()
            self._end_poison_episode()
            if self.config.district is not None and self._due("upward", UPWARD_EVERY_S):
                self._report_upward()
            # Retention and deadlines believe the wall clock: not while it is suspect (escalation and alarms do).
            wall, mono = self.wall_clock(), site_monotonic()
            if self._clock is None:  # the newest record at start only: later ones are stamped by the clock in doubt
                with self.sessions() as session:
                    self._clock = ClockGuard(store.newest_received_at(session))
            verdict = self._clock.check(wall, mono)
            if not verdict.trusted and mono >= self._next_ntp_check:  # timedatectl forks: not every tick
                self._next_ntp_check = mono + NTP_CHECK_EVERY_S
                if clock_synchronised():
                    verdict = self._clock.confirm(wall, mono)
            if verdict.trusted != self._clock_trusted:  # once per episode (and at start, to clear a stale one)
                self._raise_health("clock_jumped", not verdict.trusted, verdict.reason)
                self._clock_trusted = verdict.trusted
            if not verdict.trusted:
                return
            if self._due("patrols", PATROL_EVERY_S):
                self._walk_patrols()
            if self._due("ledgers", LEDGER_EVERY_S):
                self._keep_ledgers()
                self._watch_posts()
            if time.monotonic() >= self._next_purge:
                self._purge()
        except Exception:
            log.exception("escalation or schedule check failed; trying again in %.0f s", TICK_S)

    def _due(self, job: str, every_s: float) -> bool:
        """Whether a periodic job is due now (and it is counted as run). Periods are of the site's clock: at a
        demo's 300x the patrol job still runs at every tick, within an alert's 15 site minutes."""
        now = site_monotonic()
        if now < self._next_run.get(job, 0.0):
            return False
        self._next_run[job] = now + every_s
        return True

    def _escalate(self) -> None:
        """Unacknowledged alarms go to the people on duty now (the duty roster: guards in order, then the
        leader), or to the site config's `roster` when nobody is on the roster now."""
        assert self.config is not None
        now = utcnow()
        with self.sessions.begin() as session:
            rows = session.scalars(select(Alarm).where(Alarm.state == "active_unack")).all()
            if not rows:
                return
            people_now = roster.escalation_people(session, now, self.config.roster)
            waiting = [Unacknowledged(a.id, a.alarm_type, a.raised_at, a.escalation_level, a.test) for a in rows]
            steps = escalations_due(waiting, now, self.config.escalation, people_now)
            for step in steps:
                session.execute(update(Alarm).where(Alarm.id == step.alarm_id, Alarm.state == "active_unack")
                                .values(escalation_level=step.level))
                store.note(session, step.alarm_id, "escalate", "not acknowledged: notified {person} (step {level})",
                           now, params={"person": step.person.name, "level": step.level})
                if self.notifier is not None:  # sent by gateway.notify.sender; written here, so none is lost
                    session.add(Notification(alarm_id=step.alarm_id, person_id=step.person.id,
                                             person_name=step.person.name, phone=getattr(step.person, "phone", None),
                                             level=step.level, created_at=now, state="pending", attempts=0))
        for step in steps:
            contact = step.person.details() if isinstance(step.person, DutyContact) else {}
            self.bus.publish_json(topics.notify(self.site, step.person.id), {
                "alarm_id": step.alarm_id, "level": step.level, "person": step.person.name, "at": now.isoformat(),
                **contact})
            log.warning("alarm %d not acknowledged: notified %s (step %d)", step.alarm_id, step.person.name,
                        step.level)
        if steps:
            self._publish_alarms([s.alarm_id for s in steps])
            if self.notifier is not None:
                self.notifier.wake()

    def _watch_gate(self) -> None:
        """Doors held open past their time, visitors past theirs."""
        if self.gate is None:
            return
        now = utcnow()
        raised: list[tuple[RaiseAlarm, int]] = []
        with self.sessions.begin() as session:
            alarms = store.open_alarms(session, self.gate.door_keys() + visit_keys(session))
            effects = self.gate.check_doors(now, alarms) + self.gate.overstays(session, now, alarms)
            changed = store.apply_effects(session, effects, raised) if effects else []
            raised += self._raised_at_the_desk(session, now)
            outgoing = self._linkage(session, raised, now)
        for topic, body in outgoing:
            self._publish(topic, body)
        if changed:
            self._publish_alarms(changed)

    def _walk_patrols(self) -> None:
        """Plan the day's rounds, close those whose time is up, alarm on rounds not started or stalled."""
        if self.patrols is None:
            return
        now = utcnow()
        raised: list[tuple[RaiseAlarm, int]] = []
        with self.sessions.begin() as session:
            alarms = store.open_alarms(session, self.patrols.keys(session))
            effects = self.patrols.tick(session, now, alarms)
            changed = store.apply_effects(session, effects, raised) if effects else []
            outgoing = self._linkage(session, raised, now)
        for topic, body in outgoing:
            self._publish(topic, body)
        if changed:
            self._publish_alarms(changed)

    def _report_upward(self) -> None:
        """The incidents whose timeline grew, retained on rules/incidents/<id>, and the reports submitted, on
        rules/reports/<kind>-<period>, for the bridge up to the district.
        After a (re)connect, the last UPWARD_BACK_DAYS again (the district's notices as held too): a publish in
        flight when the broker went is not resent, and the district keeps only the newest of each."""
        since = utcnow() - timedelta(days=UPWARD_BACK_DAYS)
        held: list[dict[str, Any]] = []
        with self.sessions() as session:
            if self._upward_after is None:
                self._upward_after = ledger.district_start(session, since)
                held = notices.received_since(session, since)  # the district's notices as the school has them
            views, self._upward_after = ledger.district_views_since(session, self._upward_after)
            reports, self._submissions_after = ledger.submissions_since(session, self._submissions_after, since)
        for notice in held:
            self.bus.publish_json(topics.notice(self.site, notice["id"]), notice, retain=True)
        for view in views:
            self.bus.publish_json(topics.incident(self.site, view["id"]), view, retain=True)
        for report in reports:
            self.bus.publish_json(topics.report_submission(self.site, report["kind"], report["period"]), report,
                                  retain=True)

    def _watch_posts(self) -> None:
        """A shift running short of its guards (a post nobody is on, R05) is a post_uncovered alarm, which
        escalates to the leader on duty like any other; it clears once the roster covers the post or the shift
        ends. Nothing without duty.shifts."""
        assert self.config is not None
        duty = self.config.duty
        if not duty.shifts:
            return
        now = utcnow()
        today = now.astimezone(self.tz).date()
        with self.sessions.begin() as session:
            rows = [roster.duty_of(r) for r in roster.roster_between(session, today - timedelta(days=2), today)]
            short = {u.key: u for u in roster_rules.uncovered_now(duty, rows, now, self.tz)}
            raised = {a.key for a in session.scalars(select(Alarm).where(
                Alarm.alarm_type == POST_ALARM, Alarm.condition_active.is_(True), Alarm.state.in_(OPEN_STATES)))}
            current = store.open_alarms(session, [*short, *raised])
            effects = []
            for key, gap in short.items():
                if key not in current or not current[key].condition_active:
                    effects += raise_condition(key, f"post-{gap.shift}", POST_ALARM, current.get(key), new_id(), now,
                                               place=gap.text[:200])
            for key in raised - set(short):
                effects += clear_condition(current.get(key), new_id(), now)
            changed = store.apply_effects(session, effects) if effects else []
        if changed:
            self._publish_alarms(changed)

    def _keep_ledgers(self) -> None:
        """Incident reporting deadlines (alerts raised as alarms), inspection tasks, maintenance items."""
        assert self.config is not None
        now = utcnow()
        with self.sessions.begin() as session:
            effects = ledger.tick(session, self.config, now)
            changed = store.apply_effects(session, effects) if effects else []
        if changed:
            self._publish_alarms(changed)

    def _raised_at_the_desk(self, session: Session, now: datetime) -> list[tuple[RaiseAlarm, int]]:
        """Watch-list alarms the console raised at registration: their linkage (police, cameras) runs here,
        once; the 'linkage_checked' note marks them done, also when no linkage rule applies."""
        rows = session.scalars(select(Alarm).where(
            Alarm.alarm_type == "watchlist", Alarm.device_id.like("visit-%"), Alarm.state == "active_unack",
            ~exists().where(AlarmTransition.alarm_id == Alarm.id, AlarmTransition.action == "linkage_checked")))
        found = []
        for alarm in rows:
            effect = RaiseAlarm(key=alarm.key, device_id=alarm.device_id, alarm_type=alarm.alarm_type,
                                priority=alarm.priority, latching=alarm.latching, zone=alarm.zone, place=alarm.place,
                                test=alarm.test, event_id=alarm.raised_event_id, at=alarm.raised_at)
            store.note(session, alarm.id, "linkage_checked", "linkage: checked by the rules service", now, params={})
            found.append((effect, alarm.id))
        return found

    def _purge(self) -> None:
        assert self.config is not None
        now = utcnow()
        with self.sessions() as session:
            newest = store.newest_received_at(session) or now
        # Counted back from the newest event too, so a clock running ahead can never empty the raw log.
        cutoff = min(now, newest) - timedelta(days=self.config.retention.events_days)
        purged = 0
        while True:
            with self.sessions.begin() as session:
                n = store.purge_events(session, cutoff)
            purged += n
            if n < 10_000:
                break
        now, days = utcnow(), self.config.access.personal_data_days
        with self.sessions.begin() as session:  # visitors: ID and phone numbers after the retention, walk-outs
            masked = visits.purge_personal_data(session, now - timedelta(days=days), now,
                                                self.config.gateway.data_dir / "snapshots")
            swept = visits.sweep_day_end(session, now, self.tz)
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        if purged:
            log.info("retention: removed %d raw events older than %d days", purged, self.config.retention.events_days)
        if masked:
            log.info("retention: removed the ID and phone numbers of %d visits that ended over %d days ago",
                     masked, days)
        if any(swept.values()):
            log.warning("day end: %d visitors did not check out, %d registered visitors never came in",
                        swept["no_checkout"], swept["no_show"])

    def _follow_schedules(self) -> None:
        assert self.config is not None
        local = utcnow().astimezone(self.tz)
        for index, schedule in enumerate(self.config.bollard_schedules):
            position = wanted(schedule, local)
            if self._scheduled.get(index) == position:
                continue  # only at a window's edge: a manual command holds until the next one
            self._scheduled[index] = position
            for device in schedule.bollards:
                topic, body = self._command("bollard", device, position, None, "schedule")
                self._publish(topic, body)
                log.info("schedule: %s bollard %s", position, device)
