"""Scenarios that make the simulated school live: data (gateway/demo/scenarios/<name>.yaml), played on the
site's clock (gateway.clock.SiteClock) in real time or faster.

A scenario is a list of steps, each at a time of the school day: people through the gate (a crowd spread over
a window), a card at a reader, a pass scanned, a button pressed and released, a car on a bollard's loop, a
camera covered, a reader losing power, a patrol round walked. `expand` turns the steps into single timed
actions, each with the line the terminal prints ("07:42 student S0213 in at the south gate"): pure, so a test
checks what a scenario will do without running it. `play` carries them out against a SimulatedSchool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.clock import SiteClock
from gateway.config import ConfigError

SCENARIOS = Path(__file__).parent / "scenarios"
Clock = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    at: Clock
    say: str | None = None  # the terminal's line, instead of the step's own


class Crowd(_Step):
    """People through a reader, spread evenly from `at` to `until`."""

    do: Literal["crowd"]
    reader: str
    people: list[str] = Field(min_length=1)  # external ids: S0001-S0040 is a range
    until: Clock
    where: str


class CardStep(_Step):
    do: Literal["card"]
    reader: str
    person: str
    where: str


class VisitorStep(_Step):
    do: Literal["visitor"]
    reader: str  # the scanner the expected visitor's pass (QR) is shown at
    where: str


class Press(_Step):
    do: Literal["press"]
    box: str
    point: str
    seconds: float = Field(default=2.0, gt=0, le=600)  # site seconds held (at least 0.3 s of real time)
    where: str


class Vehicle(_Step):
    do: Literal["vehicle"]
    bollard: str
    minutes: float = Field(gt=0, le=600)


class Camera(_Step):
    do: Literal["cover", "loiter", "walk"]
    camera: str
    minutes: float = Field(default=30, gt=0, le=600)  # how long the lens stays covered


class ReaderPower(_Step):
    do: Literal["power_loss"]
    reader: str
    minutes: float = Field(gt=0, le=600)


class Patrol(_Step):
    do: Literal["patrol"]
    tags: list[str] = Field(min_length=1)
    skip: list[str] = []  # tags the guard misses
    minutes_apart: float = Field(default=3, gt=0, le=60)


Step = Annotated[Crowd | CardStep | VisitorStep | Press | Vehicle | Camera | ReaderPower | Patrol,
                 Field(discriminator="do")]


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str
    start: Clock
    end: Clock
    steps: list[Step]


def load(name: str, folder: Path = SCENARIOS) -> Scenario:
    """A scenario by name; a broken one names the file, the step and the problem."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError([f"there is no scenario '{name}' (known: {known})"])
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise ConfigError([f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


@dataclass(frozen=True)
class Action:
    """One thing done at one moment of the site's day."""

    at: datetime  # site time
    verb: str  # a SimulatedSchool method (card, scan, visitor, press, release, vehicle, cover, ...), or "say"
    args: tuple[Any, ...]
    say: str | None  # printed when it happens (None: done quietly, e.g. a release)


def people_of(spec: list[str]) -> list[str]:
    """["S0001-S0040", "T003"] -> every id, ranges expanded."""
    found: list[str] = []
    for item in spec:
        first, _, last = item.partition("-")
        if not last:
            found.append(first)
            continue
        width = len(first) - 1
        found += [f"{first[0]}{n:0{width}d}" for n in range(int(first[1:]), int(last[1:]) + 1)]
    return found


def at_time(day: date, clock: str, tz: tzinfo) -> datetime:
    hours, minutes = map(int, clock.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=tz)


def expand(scenario: Scenario, day: date, tz: tzinfo, speed: float) -> list[Action]:
    """Every action of the scenario on `day`, in time order. At `speed` a press is held for at least 0.3 s of
    real time (the driver polls every 50 ms of real time)."""
    actions: list[Action] = []
    for step in scenario.steps:
        at = at_time(day, step.at, tz)
        hhmm = f"{step.at}"
        if isinstance(step, Crowd):
            who = people_of(step.people)
            span = (at_time(day, step.until, tz) - at) / max(len(who), 1)
            actions.append(Action(at, "say", (), step.say or f"{hhmm} {len(who)} people through the {step.where} "
                                  f"until {step.until} (see Access)"))
            actions += [Action(at + span * i, "card", (step.reader, person), None) for i, person in enumerate(who)]
        elif isinstance(step, CardStep):
            actions.append(Action(at, "card", (step.reader, step.person),
                                  step.say or f"{hhmm} {step.person} shows a card at the {step.where} (see Access)"))
        elif isinstance(step, VisitorStep):
            actions.append(Action(at, "visitor", (step.reader,),
                                  step.say or f"{hhmm} the expected visitor shows the pass at the {step.where} "
                                              "(see Visitors)"))
        elif isinstance(step, Press):
            held = timedelta(seconds=max(step.seconds, 0.3 * speed))
            actions.append(Action(at, "press", (step.box, step.point),
                                  step.say or f"{hhmm} {step.point} pressed at the {step.where} — see the alarm board"))
            actions.append(Action(at + held, "release", (step.box, step.point), None))
        elif isinstance(step, Vehicle):
            actions.append(Action(at, "vehicle", (step.bollard, True),
                                  step.say or f"{hhmm} a car stops on the loop of {step.bollard} (see Bollards)"))
            actions.append(Action(at + timedelta(minutes=step.minutes), "vehicle", (step.bollard, False), None))
        elif isinstance(step, Camera):
            if step.do == "cover":
                actions.append(Action(at, "cover", (step.camera, True),
                                      step.say or f"{hhmm} someone covers {step.camera} (see Cameras, Alarms)"))
                actions.append(Action(at + timedelta(minutes=step.minutes), "cover", (step.camera, False),
                                      f"{_hhmm(at + timedelta(minutes=step.minutes))} {step.camera} uncovered"))
            else:
                actions.append(Action(at, step.do, (step.camera,),
                                      step.say or f"{hhmm} someone {'lingers' if step.do == 'loiter' else 'walks'} "
                                                  f"in front of {step.camera} (see Cameras)"))
        elif isinstance(step, ReaderPower):
            back = at + timedelta(minutes=step.minutes)
            actions.append(Action(at, "reader_power", (step.reader, False),
                                  step.say or f"{hhmm} {step.reader} loses power (see Devices, Alarms)"))
            actions.append(Action(back, "reader_power", (step.reader, True),
                                  f"{_hhmm(back)} {step.reader} has power again"))
        elif isinstance(step, Patrol):
            actions.append(Action(at, "say", (), step.say or f"{hhmm} the guard walks the patrol round"
                                  + (f", missing {', '.join(step.skip)}" if step.skip else "") + " (see Patrols)"))
            walked = [tag for tag in step.tags if tag not in step.skip]
            actions += [Action(at + timedelta(minutes=step.minutes_apart * i), "scan", ("patrol-wand", tag), None)
                        for i, tag in enumerate(walked)]
    return sorted(actions, key=lambda a: a.at)


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


def play(actions: list[Action], clock: SiteClock, school: Any, stop: threading.Event,
         say: Callable[[str], None] = print) -> int:
    """Carry the actions out at their site times (sleeping on the real clock meanwhile); returns how many were
    done before `stop` was set or the list ended. An action that fails is said and skipped: the day goes on."""
    done = 0
    for action in actions:
        wait = clock.mono(action.at.timestamp()) - time.monotonic()
        if wait > 0 and stop.wait(wait):
            break
        if stop.is_set():
            break
        try:
            if action.verb != "say":
                getattr(school, action.verb)(*action.args)
        except Exception as exc:  # a simulator refusing must not end the demo
            say(f"{_hhmm(action.at)} could not {action.verb} {action.args}: {exc}")
        else:
            if action.say:
                say(action.say)
        done += 1
    return done
