"""Site config validation: what an installer sees when a YAML file is right, and when it is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError
from gateway.config_file import load_config, parse_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEMO = (CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8")
EXAMPLE = (CONFIG_DIR / "example-site.yaml").read_text(encoding="utf-8")

SECOND_DEVICE = """\
  - id: gate-alarm-box
    kind: alarm_input
    driver: modbus_di
    connection: {host: 127.0.0.1}
    points:
      - {input: 1, name: second-panic, type: panic}
"""


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line (comments aside) holding `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1)
            if needle in line and not line.lstrip().startswith("#")]
    assert len(hits) >= occurrence, f"{needle!r} not in the test YAML"
    return hits[occurrence - 1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the base YAML"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.yaml")
    problems = info.value.problems
    assert problems, "a ConfigError must list at least one problem"
    assert str(info.value) == "\n".join(problems)
    return problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- valid files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "example-site.yaml", "example-school-large.yaml"])
def test_shipped_config_files_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text((CONFIG_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    config = load_config(path)
    assert config.site.id in ("demo-school", "example-school", "example-large-school")
    assert config.devices, "the shipped files each configure a device"
    assert config.devices[0].driver == "modbus_di"


def test_demo_config_values_are_read_as_written() -> None:
    config = parse_config(DEMO, "demo.yaml")
    assert config.site.id == "demo-school"
    assert config.site.name == "示范小学 Demo Primary School"
    assert config.site.tz.key == "Asia/Shanghai"
    assert config.broker.embedded  # the `broker: embedded` shorthand
    assert [z.id for z in config.zones] == ["gate"]
    (device,) = config.devices
    assert (device.id, device.kind, device.zone) == ("gate-alarm-box", "alarm_input", "gate")
    assert config.device("gate-alarm-box") is device


def test_the_large_example_is_a_real_sized_school() -> None:
    config = load_config(CONFIG_DIR / "example-school-large.yaml")
    kinds = [d.kind for d in config.devices]
    points = sum(len((d.model_extra or {}).get("points", [])) for d in config.devices if d.kind == "alarm_input")
    assert (points, kinds.count("bollard"), kinds.count("camera"), kinds.count("reader")) == (16, 4, 8, 3)
    assert len(config.patrol.checkpoints) == 30 and all(p.rounds >= 2 for p in config.patrol.plan)
    assert len({d.zone for d in config.devices if d.kind == "bollard"}) == 2, "two gates"
    assert config.police is not None and len(config.police.zones) == 16, "every point has the centre's zone number"


def test_example_config_values_are_read_as_written() -> None:
    config = parse_config(EXAMPLE, "example-site.yaml")
    assert config.broker.host_port() == ("127.0.0.1", 1883, False)
    assert config.broker.users["rules"].username == "campusgw-rules"
    assert config.broker.users["rules"].password_env == "CAMPUSGW_MQTT_PASSWORD_RULES"
    assert config.database.url_env == "CAMPUSGW_DATABASE_URL"
    assert config.gateway.data_dir == Path("/var/lib/campusgw")
    assert [z.id for z in config.zones] == ["gate", "perimeter"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


# --- each kind of mistake ----------------------------------------------------------------------------------


def test_typo_in_top_level_key() -> None:
    text = replace_once(DEMO, "\nsite:\n", "\nsitte:\n")
    problems = problems_of(text)
    typo = [p for p in problems if "sitte" in p]
    assert len(typo) == 1, problems
    assert typo[0].startswith(f"site.yaml line {line_of(text, 'sitte:')}: sitte: unknown key")
    assert any(re.search(r": site: required key is missing", p) for p in problems), problems


def test_typo_in_device_key() -> None:
    text = replace_once(DEMO, "poll_ms: 50", "pol_ms: 50")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'pol_ms')}: devices[0].pol_ms: unknown key")


def test_wrong_type_for_device_field() -> None:
    text = replace_once(DEMO, "poll_ms: 50", "poll_ms: fast")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'poll_ms')}: devices[0].poll_ms:")
    assert "integer" in problem
    assert "'fast'" in problem


def test_wrong_type_for_nested_connection_port() -> None:
    text = replace_once(DEMO, "port: 5020", 'port: "abc"')
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'connection:')}: devices[0].connection.port:")
    assert "integer" in problem
    assert "'abc'" in problem


def test_duplicate_device_id() -> None:
    text = DEMO + SECOND_DEVICE
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, '- id: gate-alarm-box', 2)}: devices[1].id:")
    assert "duplicate" in problem
    assert "gate-alarm-box" in problem
    assert "devices[0]" in problem


def test_missing_site_name() -> None:
    text = replace_once(DEMO, "  name: 示范小学 Demo Primary School\n", "")
    problem = only_problem(text)
    assert problem == f"site.yaml line {line_of(text, 'site:')}: site.name: required key is missing"


def test_missing_points() -> None:
    text = DEMO.split("    points:")[0]
    problem = only_problem(text)
    line = line_of(text, "- id: gate-alarm-box")
    assert problem == f"site.yaml line {line}: devices[0].points: required key is missing"


def test_unknown_zone() -> None:
    text = replace_once(DEMO, "zone: gate", "zone: gat")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'zone: gat')}: devices[0].zone:")
    assert "unknown zone 'gat'" in problem
    assert "gate" in problem.split("expected", 1)[1]


def test_unknown_driver_lists_known_ones() -> None:
    text = replace_once(DEMO, "driver: modbus_di", "driver: modbus_dio")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'driver:')}: devices[0].driver:")
    assert "unknown driver 'modbus_dio'" in problem
    assert "modbus_di" in problem.split("expected", 1)[1]


def test_clear_text_broker_password_is_refused() -> None:
    text = replace_once(DEMO, "broker: embedded", "broker:\n  url: embedded\n  password: hunter2")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'broker:')}: broker:")
    assert "password_env" in problem
    assert "password_file" in problem
    assert "hunter2" not in problem  # the secret is not echoed back


def test_secret_refs_are_accepted_for_the_broker() -> None:
    text = replace_once(DEMO, "broker: embedded", "broker:\n  url: embedded\n  password_env: MQTT_PW")
    assert parse_config(text).broker.password_env == "MQTT_PW"


def test_database_url_with_password_is_refused() -> None:
    text = DEMO + "database:\n  url: postgresql://gw:s3cret@127.0.0.1:5432/gw\n"
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'url: postgresql')}: database.url:")
    assert "password" in problem
    assert "url_env" in problem


def test_database_url_without_password_is_accepted() -> None:
    text = DEMO + "database:\n  url: postgresql://gw@127.0.0.1:5432/gw\n"
    assert parse_config(text).database_url() == "postgresql://gw@127.0.0.1:5432/gw"


def test_database_url_with_password_and_dialect_driver_is_refused() -> None:
    text = DEMO + "database:\n  url: postgresql+psycopg2://gw:s3cret@127.0.0.1:5432/gw\n"
    assert "password" in only_problem(text)


def test_unknown_time_zone() -> None:
    text = replace_once(DEMO, "timezone: Asia/Shanghai", "timezone: Mars/Olympus")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'timezone:')}: site.timezone:")
    assert "unknown time zone 'Mars/Olympus'" in problem


def test_invalid_yaml_gives_the_line() -> None:
    text = replace_once(DEMO, "  id: gw1", "  id: gw1\n    oops: : here")
    problem = only_problem(text)
    assert problem.startswith(f"site.yaml line {line_of(text, 'oops')}: not valid YAML")


def test_unclosed_flow_sequence_is_invalid_yaml_with_a_line() -> None:
    text = replace_once(DEMO, "poll_ms: 50", "poll_ms: [50")
    problem = only_problem(text)
    match = re.match(r"site\.yaml line (\d+): not valid YAML", problem)
    assert match, problem
    # YAML notices the missing ']' where the next key starts: the reported line is at or just after the mistake.
    assert line_of(text, "poll_ms") <= int(match.group(1)) <= line_of(text, "poll_ms") + 1


@pytest.mark.parametrize("text", ["", "just a string\n", "- a\n- list\n"])
def test_document_that_is_not_a_mapping(text: str) -> None:
    assert "expected a mapping" in only_problem(text)


def test_same_key_twice_in_one_mapping() -> None:
    text = replace_once(DEMO, "  id: gw1", "  id: gw1\n  id: gw2")
    problem = only_problem(text)
    assert problem == f"site.yaml line {line_of(text, 'id: gw2')}: gateway.id: key given twice"


def test_same_key_twice_inside_a_device() -> None:
    text = replace_once(DEMO, "    poll_ms: 50\n", "    poll_ms: 50\n    poll_ms: 100\n")
    problem = only_problem(text)
    assert problem == f"site.yaml line {line_of(text, 'poll_ms: 100')}: devices[0].poll_ms: key given twice"


def test_several_mistakes_are_all_reported_at_once() -> None:
    text = replace_once(DEMO, "poll_ms: 50", "pol_ms: 50")
    text = replace_once(text, "zone: gate", "zone: gat")
    text = replace_once(text, "  id: gw1", "  id: gw1\n  id: gw2")
    problems = problems_of(text)
    assert len(problems) == 3, problems
    assert any("devices[0].pol_ms" in p for p in problems)
    assert any("devices[0].zone" in p for p in problems)
    assert any("gateway.id: key given twice" in p for p in problems)


def test_device_mistakes_are_reported_alongside_top_level_ones() -> None:
    text = replace_once(DEMO, "\nsite:\n", "\nsitte:\n")
    text = replace_once(text, "poll_ms: 50", "pol_ms: 50")
    problems = problems_of(text)
    assert any("sitte" in p for p in problems), problems
    assert any("devices[0].pol_ms" in p for p in problems), problems


def test_unknown_zone_on_a_point() -> None:
    text = replace_once(DEMO, "type: panic,", "type: panic, zone: gat,")
    assert "unknown zone 'gat'" in only_problem(text)


# --- campusgw check-config -----------------------------------------------------------------------------------


def test_check_config_cli_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO, encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: OK" in out
    assert "demo-school" in out
    assert "Asia/Shanghai" in out
    assert "1 alarm_input" in out
    assert err == ""


def test_check_config_cli_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = replace_once(DEMO, "poll_ms: 50", "pol_ms: 50")
    text = replace_once(text, "zone: gate", "zone: gat")
    text = replace_once(text, "  id: gw1", "  id: gw1\n  id: gw2")
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = info.value.problems
    assert len(expected) == 3

    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: 3 problem(s)" in err
    for problem in expected:
        assert problem in err
    assert "OK" not in err


def test_check_config_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


# --- the police link -----------------------------------------------------------------------------------------


def test_the_example_police_link_is_read_as_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    police = parse_config(EXAMPLE, "example-site.yaml").police
    assert police is not None and [p.name for p in police.paths] == ["primary", "backup"]
    assert police.code("panic").contact_id == 120 and police.code("silent_panic").contact_id == 122
    assert police.code("manual_test").contact_id == 601 and police.code("periodic_test").contact_id == 602
    assert police.zone_number("gate-alarm-box:gatehouse-duress", "gate") == 2
    assert police.zone_number("elsewhere:x", None) == 0
    monkeypatch.setenv("CAMPUSGW_DC09_KEY_PRIMARY", "00112233445566778899AABBCCDDEEFF")
    assert police.paths[0].key() == bytes.fromhex("00112233445566778899AABBCCDDEEFF"), "AES-128 from hex"
    monkeypatch.setenv("CAMPUSGW_DC09_KEY_PRIMARY", "0011")
    with pytest.raises(ConfigError, match="the key is 2 bytes; AES needs 16, 24 or 32"):
        police.paths[0].key()


def test_a_dc09_key_is_never_written_in_the_yaml() -> None:
    text = replace_once(EXAMPLE, "key_env: CAMPUSGW_DC09_KEY_PRIMARY", "key: 00112233445566778899AABBCCDDEEFF")
    assert "'key' must not be written in the YAML: give 'key_env'" in only_problem(text)


def test_forwarding_to_the_police_needs_the_police_section() -> None:
    start = EXAMPLE.index("\npolice:")
    end = EXAMPLE.index("\n# Bollards up at arrival")
    problem = only_problem(EXAMPLE[:start] + EXAMPLE[end:])
    assert f"line {line_of(EXAMPLE, 'police: true')}" in problem
    assert "linkage[0].police: forwards to the police, but there is no 'police' section" in problem


def test_an_unknown_alarm_type_in_the_police_codes() -> None:
    codes = "  codes: {panik: {contact_id: 120, sia: PA, sia_restore: PH}}\n"
    text = replace_once(EXAMPLE, "  test_alarms: test_code", codes + "  test_alarms: test_code")
    assert "police.codes.panik: unknown alarm type 'panik'" in only_problem(text)


def test_linkage_names_an_output_module_and_its_relays_as_they_are() -> None:
    text = (CONFIG_DIR / "example-site.yaml").read_text(encoding="utf-8")
    wrong = text.replace("relays: [siren, strobe], mode: until_reset", "relays: [siren, strobo], mode: until_reset")
    problem = only_problem(wrong)
    assert "linkage[0].outputs[0].relays[1]" in problem and "no relay 'strobo'" in problem
    assert "expected one of: siren, strobe, pa, gate-lock" in problem
    wrong = text.replace("- {device: gatehouse-relays, relays: [pa]", "- {device: gatehouse-relay, relays: [pa]")
    assert "unknown output 'gatehouse-relay'" in only_problem(wrong)


def test_a_lockdown_names_bollards_outputs_and_relays_that_exist() -> None:
    text = (CONFIG_DIR / "example-site.yaml").read_text(encoding="utf-8")
    wrong = text.replace("  bollards: [gate-bollard]\n  alarm_types: [duress]",
                         "  bollards: [gate-bolard]\n  alarm_types: [duress]")
    wrong = wrong.replace("relays: [gate-lock, pa]}]", "relays: [gate-lock, door-lock]}]")
    problems = problems_of(wrong)
    assert any("lockdown.bollards[0]" in p and "unknown bollard 'gate-bolard'" in p for p in problems), problems
    assert any("lockdown.outputs[0].relays[1]" in p and "no relay 'door-lock'" in p for p in problems), problems
    assert len(problems) == 2, problems
