"""Reading a site's config file: YAML with the line of every key, the schemas (gateway.config), each
driver's own schema (drivers.registry), the cross-checks between sections, what is allowed but unsafe, and
the summary check-config prints. Errors name the file, the line, the key path and what was expected.

Apart from gateway.config, which holds only the schemas, so that the drivers can import those while this
module imports the drivers' registry: no circle, no late import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from drivers.registry import driver_config_model, driver_names
from drivers.relay_outputs.schema import relay_roles
from gateway.config import INCIDENT_CATEGORIES, POLICE_CODES, Config, ConfigError, LinkageOutputs, OutputRelays


@dataclass(frozen=True)
class Located:
    """Line numbers (1-based) of every key path in a YAML document."""

    lines: dict[tuple[str | int, ...], int]

    def line(self, path: tuple[str | int, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _locate(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int],
            dupes: list[tuple[tuple[str | int, ...], int]]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dupes.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            _locate(value_node, (*path, key), out, dupes)
            out[(*path, key)] = key_node.start_mark.line + 1  # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _locate(item, (*path, index), out, dupes)


def format_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see config/example-site.yaml for the keys allowed here)"
    if error["type"] == "missing":
        return "required key is missing"
    if "input" in error and error["type"] not in ("value_error", "assertion_error"):
        got = error["input"]
        shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
        return f"{message.lower()}, got {shown}"
    return message.removeprefix("Value error, ")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def warnings_of(config: Config) -> list[str]:
    """What is allowed but unsafe, said by check-config and at start: an installer should know."""
    found = []
    if config.console.host not in LOOPBACK and not config.console.secure_cookies:
        found.append(f"console.host is {config.console.host}: the console is served over plain HTTP beyond this "
                     "machine, so passwords and sessions cross the network readable. Put a TLS reverse proxy in "
                     "front, keep console.host 127.0.0.1 and set console.secure_cookies: true")
    if config.broker.embedded and config.broker.embedded_host not in LOOPBACK:
        found.append(f"broker.embedded_host is {config.broker.embedded_host}: the embedded broker takes "
                     "connections from the network without TLS (passwords cross it readable). Use Mosquitto with "
                     "the shipped TLS listener for devices or parts on other machines")
    host = config.broker.host_port()[0]
    if not config.broker.embedded and config.broker.url.startswith("mqtt://") and host not in LOOPBACK:
        found.append(f"broker.url {config.broker.url} is another machine without TLS: use mqtts://")
    return found


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a real-sized school is about 30 KB
MAX_DEPTH = 32  # a site file nests 6 deep or so


def _refuse_aliases(text: str, filename: str) -> None:
    """Anchors and aliases (&a, *a) are refused: a site file has no use for them, and a few lines of nested
    aliases expand to billions of items (the 'billion laughs'). Nesting is bounded for the same reason."""
    depth = 0
    for event in yaml.parse(text):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError([f"{filename} line {line}: anchors and aliases (& and *) are not allowed in a site "
                               "file: write the values out"])
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError([f"{filename} line {line}: nested more than {MAX_DEPTH} deep: not a site file"])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_config(path: str | Path) -> Config:
    """Read and validate a site file; raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {path.stat().st_size} bytes: a site file is at most {MAX_CONFIG_BYTES} "
                               "bytes (is this the right file?)"])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{path} line {line}: not UTF-8 (byte {exc.object[exc.start]:#04x}): save the file as "
                           "UTF-8 (Chinese names and places are fine in UTF-8)"]) from None
    return parse_config(text, str(path))


def parse_config(text: str, filename: str = "<config>") -> Config:
    try:
        _refuse_aliases(text, filename)
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{filename}{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    except RecursionError:
        raise ConfigError([f"{filename}: nested too deeply to be a site file"]) from None
    if not isinstance(data, dict) or root is None:
        raise ConfigError([f"{filename}: expected a mapping with at least a 'site' section"])
    lines: dict[tuple[str | int, ...], int] = {}
    dupes: list[tuple[tuple[str | int, ...], int]] = []
    _locate(root, (), lines, dupes)
    located = Located(lines)
    problems = [f"{filename} line {line}: {format_path(p)}: key given twice" for p, line in dupes]
    return validate_config(data, filename, located, problems)


def validate_config(data: dict[str, Any], filename: str = "<config>", located: Located | None = None,
                    problems: list[str] | None = None) -> Config:
    """Validate an already-loaded mapping (the demo edits one before using it)."""
    located = located or Located({})
    problems = list(problems or [])
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if loc[:1] == ("devices",) and len(loc) > 2:
                continue  # the device checks below report these, against the driver's own schema
            problems.append(_problem(filename, located, loc, _describe(error)))
    problems += _check_devices(data, filename, located)
    if config is not None:
        problems += _check_references(config, filename, located)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))  # a device error can come from both checks
    assert config is not None
    return config


def _problem(filename: str, located: Located, loc: tuple[str | int, ...], text: str) -> str:
    line = located.line(loc)
    where = f" line {line}" if line else ""
    return f"{filename}{where}: {format_path(loc)}: {text}"


def _check_devices(data: dict[str, Any], filename: str, located: Located) -> list[str]:
    """Cross-checks on the raw devices, run even when other sections fail so every problem shows at once:
    unique ids, known zones (device and point), and each driver's own schema."""
    devices, zones = data.get("devices"), data.get("zones")
    if not isinstance(devices, list):
        return []
    zone_ids = {z.get("id") for z in zones if isinstance(z, dict)} if isinstance(zones, list) else set()
    known_zones = ", ".join(sorted(str(z) for z in zone_ids)) or "none (add a 'zones' section)"
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, device in enumerate(devices):
        if not isinstance(device, dict):
            continue
        device_id = device.get("id")
        if isinstance(device_id, str) and device_id in seen:
            problems.append(_problem(filename, located, ("devices", index, "id"),
                                     f"duplicate device id '{device_id}' (first used by devices[{seen[device_id]}])"))
        if isinstance(device_id, str):
            seen.setdefault(device_id, index)
        zone_refs: list[tuple[tuple[str | int, ...], Any]] = [(("devices", index, "zone"), device.get("zone"))]
        for p_index, point in enumerate(device.get("points") or []):
            if isinstance(point, dict):
                zone_refs.append((("devices", index, "points", p_index, "zone"), point.get("zone")))
        for loc, zone in zone_refs:
            if zone is not None and zone not in zone_ids:
                problems.append(_problem(filename, located, loc, f"unknown zone '{zone}', expected one of: "
                                                                 f"{known_zones}"))
        driver = device.get("driver")
        model = driver_config_model(driver) if isinstance(driver, str) else None
        if model is None:
            if isinstance(driver, str):
                problems.append(_problem(filename, located, ("devices", index, "driver"),
                                         f"unknown driver '{driver}', expected one of: {', '.join(driver_names())}"))
            continue
        try:
            model.model_validate(device)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(part for i, part in enumerate(error["loc"])  # drop union tags: connection.tcp.port
                            if not (i and error["loc"][i - 1] == "connection" and part in ("tcp", "rtu")))
                problems.append(_problem(filename, located, ("devices", index, *loc), _describe(error)))
    return problems


def _check_references(config: Config, filename: str, located: Located) -> list[str]:
    """Linkage and schedules must name bollards and cameras that exist: a typo there fails silently in an
    emergency."""
    refs: list[tuple[str, tuple[str | int, ...], str]] = []  # (kind, where, device id)
    for i, rule in enumerate(config.linkage):
        refs += [("bollard", ("linkage", i, "bollards", "devices", j), d)
                 for j, d in enumerate(rule.bollards.devices if rule.bollards else [])]
        refs += [("camera", ("linkage", i, "cameras", j), d) for j, d in enumerate(rule.cameras)]
        refs += [("output", ("linkage", i, "outputs", j, "device"), o.device) for j, o in enumerate(rule.outputs)]
    refs += [("bollard", ("lockdown", "bollards", j), d) for j, d in enumerate(config.lockdown.bollards)]
    refs += [("output", ("lockdown", "outputs", j, "device"), o.device) for j, o in enumerate(config.lockdown.outputs)]
    for i, schedule in enumerate(config.bollard_schedules):
        refs += [("bollard", ("bollard_schedules", i, "bollards", j), d) for j, d in enumerate(schedule.bollards)]
    for i, door in enumerate(config.access.doors):
        refs += [("reader", ("access", "doors", i, "readers", j), d) for j, d in enumerate(door.readers)]
        refs += [("alarm_input", ("access", "doors", i, "contact"), door.contact.split(":")[0])]
    if config.access.visitor_camera:
        refs.append(("camera", ("access", "visitor_camera"), config.access.visitor_camera))
    problems = []
    for kind, loc, device in refs:
        known = sorted(d.id for d in config.devices if d.kind == kind)
        if device not in known:
            problems.append(_problem(filename, located, loc, f"unknown {kind} '{device}', expected one of: "
                                     f"{', '.join(known) or f'none (no device of kind {kind})'}"))
    relays: dict[str, list[str]] = {}
    for d in config.devices:
        if d.kind == "output":
            try:
                relays[d.id] = list(relay_roles(d))
            except ValidationError:
                continue  # its own problems are reported with the device
    named: list[tuple[tuple[str | int, ...], LinkageOutputs | OutputRelays]] = [
        (("linkage", i, "outputs", j), out)
        for i, rule in enumerate(config.linkage) for j, out in enumerate(rule.outputs)]
    named += [(("lockdown", "outputs", j), out) for j, out in enumerate(config.lockdown.outputs)]
    for where, out in named:
        for k, relay in enumerate(out.relays):
            if out.device in relays and relay not in relays[out.device]:
                problems.append(_problem(filename, located, (*where, "relays", k),
                                         f"output module '{out.device}' has no relay '{relay}', expected one "
                                         f"of: {', '.join(relays[out.device])}"))
    for i, rule in enumerate(config.linkage):
        if rule.police and config.police is None:
            problems.append(_problem(filename, located, ("linkage", i, "police"),
                                     "forwards to the police, but there is no 'police' section (SIA DC-09 link)"))
    if config.police is not None:
        known_codes = sorted(set(POLICE_CODES))
        for name in config.police.codes:
            if name not in POLICE_CODES:
                problems.append(_problem(filename, located, ("police", "codes", name),
                                         f"unknown alarm type '{name}', expected one of: {', '.join(known_codes)}"))
        names = [p.name for p in config.police.paths]
        if len(set(names)) != len(names):
            problems.append(_problem(filename, located, ("police", "paths"), "two paths have the same name"))
    problems += _check_patrol(config, filename, located)
    seen: set[str] = set()
    for i, person in enumerate(config.roster):
        if person.id in seen:
            problems.append(_problem(filename, located, ("roster", i, "id"), f"'{person.id}' is on the roster twice"))
        seen.add(person.id)
    return problems


def _check_patrol(config: Config, filename: str, located: Located) -> list[str]:
    """Routes name checkpoints, plans name routes and shifts, checkpoints name readers: all must exist."""
    patrol, problems = config.patrol, []
    checkpoints = {c.id for c in patrol.checkpoints}
    readers = {d.id for d in config.devices if d.kind in ("reader", "checkpoint")}
    known = {"checkpoint": checkpoints, "route": {r.id for r in patrol.routes},
             "shift": {s.id for s in config.duty.shifts}, "reader": readers}
    refs: list[tuple[str, tuple[str | int, ...], str]] = []
    for i, checkpoint in enumerate(patrol.checkpoints):
        if checkpoint.reader:
            refs.append(("reader", ("patrol", "checkpoints", i, "reader"), checkpoint.reader))
    for i, route in enumerate(patrol.routes):
        refs += [("checkpoint", ("patrol", "routes", i, "checkpoints", j), c) for j, c in enumerate(route.checkpoints)]
    for i, entry in enumerate(patrol.plan):
        refs += [("route", ("patrol", "plan", i, "route"), entry.route),
                 ("shift", ("patrol", "plan", i, "shift"), entry.shift)]
    for kind, loc, name in refs:
        if name not in known[kind]:
            problems.append(_problem(filename, located, loc, f"unknown {kind} '{name}', expected one of: "
                                     f"{', '.join(sorted(known[kind])) or 'none'}"))
    for name in config.incidents.categories:
        if name not in INCIDENT_CATEGORIES:
            problems.append(_problem(filename, located, ("incidents", "categories", name),
                                     f"unknown category '{name}', expected one of: {', '.join(INCIDENT_CATEGORIES)}"))
    return problems


def summary(config: Config) -> str:
    """A short, human summary for `campusgw check-config`."""
    host, port, tls = config.broker.host_port()
    broker = (f"embedded (amqtt on {host}:{port or 'a free port'})" if config.broker.embedded
              else f"{config.broker.url}{' (TLS)' if tls else ''}")
    database = config.database.url or (f"from ${config.database.url_env}" if config.database.url_env
                                       else config.database_url())
    by_kind: dict[str, int] = {}
    for device in config.devices:
        by_kind[device.kind] = by_kind.get(device.kind, 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "none"
    return "\n".join([
        f"site      {config.site.id} ({config.site.name}), time zone {config.site.timezone}",
        f"broker    {broker}",
        f"database  {database}",
        f"console   http://{config.console.host}:{config.console.port}/",
        f"zones     {len(config.zones)}",
        f"devices   {len(config.devices)}: {kinds}",
        f"patrol    {len(config.patrol.checkpoints)} checkpoints, {len(config.patrol.routes)} routes",
    ])
