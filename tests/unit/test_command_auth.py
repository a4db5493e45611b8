"""Signed commands: what the drivers' supervisor obeys and what it refuses, and why."""

from __future__ import annotations

import pytest

from gateway.command_auth import MAX_AGE_S, Verifier, load_key, sign

KEY = bytes(range(32))
KINDS = {"gate-bollard": "bollard", "gate-box": "alarm_input"}
NOW = 1_800_000_000.0


def command(**changes: object) -> dict[str, object]:
    body = sign(KEY, "s1", "bollard", "gate-bollard", "lower",
                {"correlation_id": "c1", "issued_by": "wang", "args": {}}, now=NOW)
    return {**body, **changes}


def test_a_signed_fresh_command_is_obeyed_once() -> None:
    verifier = Verifier(KEY, "s1", KINDS)
    body = command()
    assert verifier.refusal("bollard", "gate-bollard", "lower", body, NOW + 1) is None
    assert "replayed" in (verifier.refusal("bollard", "gate-bollard", "lower", body, NOW + 2) or "")


@pytest.mark.parametrize(("kind", "device", "name", "changes", "why"), [
    ("bollard", "gate-bollard", "lower", {"mac": None}, "unsigned"),
    ("bollard", "gate-bollard", "lower", {"issued_by": "admin"}, "bad signature"),  # issued_by is signed
    ("bollard", "gate-bollard", "lower", {"args": {"force": True}}, "bad signature"),
    ("bollard", "gate-bollard", "raise", {}, "bad signature"),  # the name is signed
    ("bollard", "other-bollard", "lower", {}, "bad signature"),  # so is the device
    ("bollard", "gate-box", "lower", {}, "is a alarm_input, not a bollard"),  # a kind that is not its own
    ("bollard", "gate-bollard", "lower", {"at": NOW - 3600}, "bad signature"),  # the time is signed too
])
def test_forgeries_are_refused_with_a_reason(kind: str, device: str, name: str, changes: dict[str, object],
                                             why: str) -> None:
    assert why in (Verifier(KEY, "s1", KINDS).refusal(kind, device, name, command(**changes), NOW) or "")


def test_another_key_and_old_or_future_commands_are_refused() -> None:
    assert "bad signature" in (Verifier(b"x" * 32, "s1", KINDS).refusal(
        "bollard", "gate-bollard", "lower", command(), NOW) or "")
    verifier = Verifier(KEY, "s1", KINDS)
    assert "stale" in (verifier.refusal("bollard", "gate-bollard", "lower", command(), NOW + MAX_AGE_S + 1) or "")
    assert "stale" in (verifier.refusal("bollard", "gate-bollard", "lower", command(), NOW - MAX_AGE_S - 1) or "")


def test_the_key_is_made_once_and_kept_private(tmp_path: object) -> None:
    from pathlib import Path

    data = Path(str(tmp_path))
    first = load_key(data)
    assert len(first) == 32 and load_key(data) == first
    assert (data / "secrets" / "command.key").stat().st_mode & 0o077 == 0
