"""Findings 5 and 11, the server's side: what the console keeps or relays from MQTT cannot be forged into its pages.

- A retained bollard state that is not an object ([1,2,3], a string, a number) made /bollards and /api/bollards
  answer 500 until someone cleared it: it is ignored (and counted) now.
- A forged alarm update ({"id":777777}, or a real alarm's id with "state": "closed") went to every board as it
  was: the console now relays the alarm as the database holds it, so a forgery neither reaches the boards nor
  hides a real alarm. (The board's own checks: tests/e2e/test_security_browser.py.)
"""

from __future__ import annotations

import json

from gateway import topics
from gateway.records.models import Device
from simulators.modbus_di import ModbusDISimulator
from tests.integration.helpers import Running, logged_in
from tests.security.conftest import PASSWORD, open_board, stolen_login, url
from tests.support import wait_for

SITE = "school-1"


def test_a_bollard_state_that_is_not_an_object_breaks_no_page(site: Running) -> None:
    with site.gateway.sessions.begin() as session:
        for device in ("bollard-1", "bollard-2", "bollard-3", "bollard-ok"):
            session.add(Device(id=device, kind="bollard", driver="modbus_bollard", name=device, test_mode=False,
                               online=True))
    drivers = stolen_login(site, "drivers")
    guard = logged_in(url(site), "guard1", PASSWORD)
    try:
        for device, state in (("bollard-1", [1, 2, 3]), ("bollard-2", "raised"), ("bollard-3", 42)):
            drivers.publish(topics.state(SITE, "bollard", device), json.dumps(state), retain=True)
        drivers.publish(topics.state(SITE, "bollard", "bollard-2"), b"{not json", retain=True)
        drivers.publish_json(topics.state(SITE, "bollard", "bollard-ok"), {"state": "raised", "online": True},
                             retain=True)

        def listed() -> list[dict[str, object]] | None:  # once the good state, sent last, is in, so are the others
            response = guard.get("/api/bollards")
            assert response.status_code == 200, response.text[:300]
            bollards: list[dict[str, object]] = response.json()
            return bollards if any(b.get("state") == "raised" for b in bollards) else None

        bollards = {b["id"]: b for b in wait_for(listed, 10, "the good bollard state on the panel")}
        assert [bollards[d].get("state") for d in ("bollard-1", "bollard-2", "bollard-3")] == [None] * 3
        assert guard.get("/bollards").status_code == 200
    finally:
        drivers.stop()
        guard.close()


def test_a_forged_alarm_update_reaches_no_board(site: Running, sim: ModbusDISimulator) -> None:
    guard = logged_in(url(site), "guard1", PASSWORD)
    board = open_board(site, guard)
    console = stolen_login(site, "console")
    try:
        sim.press(1)
        real = wait_for(lambda: board.alarms(), 10, "the press on the board")[0]
        forged = {**real, "state": "closed", "acked_by": "nobody"}
        console.publish_json(topics.alarm(SITE, "777777"), {"id": 777777})
        console.publish_json(topics.alarm(SITE, str(real["id"])), forged)
        console.publish(topics.alarm(SITE, str(real["id"])), b"[1,2,3]")
        console.publish(topics.alarm(SITE, "x"), b"{}")
        acked = guard.post(f"/api/alarms/{real['id']}/ack", headers={"X-CSRF-Token": guard.csrf})  # type: ignore[attr-defined]
        assert acked.status_code == 200
        wait_for(lambda: [a for a in board.alarms() if isinstance(a, dict) and a.get("state") == "active_ack"], 10,
                 "the real acknowledgement")
        relayed = board.alarms()
        assert all(isinstance(a, dict) and a.get("id") == real["id"] for a in relayed), \
            f"only the real alarm reaches the board, not {relayed}"
        states = [a["state"] for a in relayed]  # the forged ones relayed as the database held the alarm then
        order = ["active_unack", "active_ack"]
        assert set(states) <= set(order) and states == sorted(states, key=order.index), \
            f"as the database held it each time, never closed: {states}"
        assert all(a["acked_by"] in (None, "guard1") for a in relayed)
    finally:
        console.stop()
        board.close()
        guard.close()
