"""Evidence for the police platform, beside the DC-09 alarm: what the gateway holds on the alarm, with
its id so the platform can match the two. Sent over HTTPS (a Bearer token from the secrets store) and/or
published on campus/v1/<site>/rules/police/evidence for an MQTT bridge.

The alarm's snapshots and pre-alarm clip join `attachments` once cameras keep them (the camera issue);
until then the document carries the alarm, its zone and place, and the DC-09 acknowledgement.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway import topics
from gateway.bus import Bus
from gateway.config import PoliceEvidence, SecretRef
from gateway.records import store
from gateway.records.models import Alarm, utcnow

log = logging.getLogger("campusgw.police.evidence")
TRIES = 5


class EvidenceSender:
    def __init__(self, config: PoliceEvidence, bus: Bus, site: str, sessions: sessionmaker[Session]) -> None:
        self.config = config
        self.bus = bus
        self.site = site
        self.sessions = sessions
        self.token = SecretRef(env=config.token_env, file=config.token_file).resolve()
        self._queue: queue.Queue[tuple[int, str, datetime] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="police-evidence", daemon=True)
        self._thread.start()

    def send(self, alarm_id: int, path: str, acked_at: datetime) -> None:
        self._queue.put((alarm_id, path, acked_at))

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._send(*item)
            except Exception:
                log.exception("evidence for alarm %d could not be prepared", item[0])

    def _send(self, alarm_id: int, path: str, acked_at: datetime) -> None:
        with self.sessions() as session:
            alarm = session.get(Alarm, alarm_id)
            if alarm is None:
                return
            # What the cameras keep of it so far: the snapshot at once, the clip once recorded (the console
            # serves both to a logged-in user at these paths).
            attachments = [{**a, "path": f"/snapshots/{a['camera']}/{a['ref']}.jpg" if a["kind"] == "snapshot"
                            else f"/clips/{a['camera']}/{a['ref']}"}
                           for a in store.attachments(session, [alarm_id]).get(alarm_id, [])]
            document = {"site": self.site, "alarm_id": alarm_id, "alarm_type": alarm.alarm_type,
                        "zone": alarm.zone, "place": alarm.place, "raised_at": alarm.raised_at.isoformat(),
                        "dc09": {"path": path, "acked_at": acked_at.isoformat()}, "attachments": attachments}
        results = []
        if self.config.topic:
            self.bus.publish_json(topics.police_evidence(self.site), document)
            results.append("published for the bridge")
        if self.config.url:
            results.append(self._post(document))
        with self.sessions.begin() as session:
            store.note(session, alarm_id, "police", "evidence: {results}", utcnow(),
                       params={"results": "; ".join(results)})

    def _post(self, document: dict[str, Any]) -> str:
        assert self.config.url is not None
        body = json.dumps(document, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        error = ""
        for attempt in range(TRIES):
            request = urllib.request.Request(self.config.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return f"sent to {self.config.url} (HTTP {response.status})"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500:
                    break  # the platform refuses it; sending it again will not change that
            except (OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
            time.sleep(min(30.0, 2.0 ** attempt))  # backoff between tries of one upload
        log.error("evidence could not be sent to %s: %s", self.config.url, error)
        return f"NOT sent to {self.config.url}: {error}"
