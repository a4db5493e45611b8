"""The demo's scenarios as data: each loads, acts only on the demo school's devices and people, happens within
its day, and holds a press long enough for the driver to see it at any speed; a broken one says where."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.config import ConfigError
from gateway.demo import fresh_data_dir, site_clock_for
from gateway.demo import scenario as sc
from gateway.demo.school import BOLLARDS, BOXES, CAMERAS, OSDP_READERS, SCANNERS, card_of, people_csv, school_day

TZ = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 12, 7)


@pytest.mark.parametrize("name", sc.names())
def test_every_scenario_acts_on_the_demo_schools_devices_within_its_day(name: str) -> None:
    plan = sc.load(name)
    actions = sc.expand(plan, MONDAY, TZ, speed=60)
    start, end = sc.at_time(MONDAY, plan.start, TZ), sc.at_time(MONDAY, plan.end, TZ)
    assert actions and all(start <= a.at <= end for a in actions)
    assert [a.at for a in actions] == sorted(a.at for a in actions)
    readers = {*OSDP_READERS, *SCANNERS}
    known = {row["external_id"] for row in csv.DictReader(io.StringIO(people_csv()))}
    for action in actions:
        if action.verb == "card":
            assert action.args[0] in readers and action.args[1] in known, action
        elif action.verb in ("press", "release"):
            assert action.args[0] in BOXES, action
        elif action.verb == "vehicle":
            assert action.args[0] in BOLLARDS
        elif action.verb in ("cover", "loiter", "walk"):
            assert action.args[0] in CAMERAS
        elif action.verb == "reader_power":
            assert action.args[0] in OSDP_READERS
        elif action.verb in ("scan", "visitor"):
            assert action.args[0] in SCANNERS
        else:
            assert action.verb == "say"


def test_the_school_day_tells_the_terminal_each_thing_worth_a_look() -> None:
    said = [a.say for a in sc.expand(sc.load("school_day"), MONDAY, TZ, speed=60) if a.say]
    assert said[0].startswith("07:05 ") and any("PANIC" in s and "alarm board" in s for s in said)
    assert any("misses CP-04" in s for s in said)


def test_a_press_is_held_long_enough_for_a_50_ms_poll_at_any_speed() -> None:
    plan = sc.load("school_day")
    for speed in (1, 60, 600):
        actions = sc.expand(plan, MONDAY, TZ, speed)
        press = next(a for a in actions if a.verb == "press")
        release = next(a for a in actions if a.verb == "release")
        assert (release.at - press.at) / speed >= timedelta(seconds=0.3)


def test_crowds_are_spread_over_their_window_and_ranges_expand() -> None:
    assert sc.people_of(["S0001-S0003", "T007"]) == ["S0001", "S0002", "S0003", "T007"]
    cards = [a for a in sc.expand(sc.load("school_day"), MONDAY, TZ, 60)
             if a.verb == "card" and a.args[0] == "south-gate-reader-in"]
    assert len(cards) == 35 and cards[0].at.strftime("%H:%M") == "07:25" and cards[-1].at.strftime("%H:%M") < "07:58"


def test_a_broken_scenario_names_its_file_and_step(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\ndescription: x\nstart: '07:00'\nend: '08:00'\n"
                                       "steps:\n  - {at: '25:00', do: card, reader: r, person: S0001, where: w}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: steps.0.card.at"):
        sc.load("bad", tmp_path)
    with pytest.raises(ConfigError, match=r"there is no scenario 'nope' \(known: bad\)"):
        sc.load("nope", tmp_path)


def test_the_demo_plays_a_weekday_and_its_clock_starts_after_the_gateway_has() -> None:
    assert school_day(date(2026, 12, 5)) == MONDAY, "a Saturday plays the next Monday"
    assert school_day(MONDAY + timedelta(days=2)) == MONDAY + timedelta(days=2)
    start = sc.at_time(MONDAY, "07:00", TZ)
    clock = site_clock_for(start, speed=60, now=1_000.0)
    assert clock.mono(start.timestamp()) == pytest.approx(1_008.0), "8 real seconds to start the gateway"


def test_every_person_has_a_distinct_card() -> None:
    rows = list(csv.DictReader(io.StringIO(people_csv())))
    assert len({row["card"] for row in rows}) == len(rows) == 220
    assert card_of("S0031").credential == "018,20031"


def test_the_demo_empties_only_a_data_directory_it_made(tmp_path: Path) -> None:
    ours = tmp_path / "demo"
    fresh_data_dir(ours)
    (ours / "records.db").write_text("yesterday")
    fresh_data_dir(ours)
    assert not (ours / "records.db").exists()
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "records.db").write_text("a real site's records")
    with pytest.raises(ConfigError, match="holds files the demo did not make"):
        fresh_data_dir(foreign)
    assert (foreign / "records.db").read_text() == "a real site's records"
