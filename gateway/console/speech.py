"""The spoken alarm line ("南门 一键报警"), made on the gateway with espeak-ng (Debian's `espeak-ng`, which speaks
Mandarin): a guard who is not looking at the screen hears what and where, not only a tone. Without the engine
the pages play their tones alone."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

VOICES = {"zh_CN": "cmn", "en": "en"}
TIMEOUT_S = 10.0


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def line(alarm: str, zone: str | None, place: str | None) -> str:
    """What is said: where, then what (the way a guard calls it out)."""
    return " ".join(part for part in (zone, place, alarm) if part)


@lru_cache(maxsize=32)  # a line is ~100 KB of WAV; a site has a few dozen places and types
def wav(text: str, language: str) -> bytes:
    """The line as a WAV file; RuntimeError if the engine fails."""
    try:
        done = subprocess.run(["espeak-ng", "-v", VOICES.get(language, "cmn"), "-s", "150", "--stdout", "--", text],
                              capture_output=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"espeak-ng did not answer: {exc}") from None
    if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
        raise RuntimeError(f"espeak-ng failed ({done.returncode}): {done.stderr.decode(errors='replace')[:200]}")
    return done.stdout
