"""`campusgw doctor`: what an installer runs against a camera or a card reader before it goes in the config.

`doctor camera URL` opens the stream the way a camera worker does (drivers.camera.capture.open_capture) and
reports how long it took to connect, to open and to the first frame, the codec, the resolution, the frame
rate measured over a few seconds against what the stream claims, the key-frame interval, pauses and
decoding errors, and how much of a CPU core the decoding took. `doctor osdp PORT` connects to OSDP readers
with libosdp's control panel the way the osdp driver does and reports each reader's ID report (vendor OUI,
model, serial number, firmware) and capabilities, and whether the secure channel comes up with the key.

Both end with plain advice: what is wrong and what to do about it, or what would work better. The exit status
is 0 when the device is usable as it is, 1 when not, 2 for a mistake on the command line.

The advice is made by pure functions from what was measured (camera_advice, reader_advice), tested on their
own; the measuring is thin IO around OpenCV and libosdp. Neither prints a password or a key: URLs go
through drivers.camera.capture.redact, and FFmpeg's messages have the password taken out.

The doctor only reads. In particular it never hands a reader a key: with a key it enforces the secure
channel, so libosdp does not fall back to the default key (with which it would send the reader the key, as
campusgw's install mode does on purpose), and without one it talks in clear.
"""

from __future__ import annotations

import argparse
from importlib import import_module
from types import ModuleType
from typing import Any

from drivers.registry import manifests


def doctors() -> dict[str, ModuleType]:
    """Target name -> the doctor module of each driver folder that declares one."""
    found = [import_module(m.doctor) for m in manifests().values() if m.doctor]
    return {module.TARGET: module for module in sorted(found, key=lambda d: d.TARGET)}


def add_arguments(sub: Any) -> None:
    """`campusgw doctor <target> ...` on the CLI's subparsers."""
    p = sub.add_parser("doctor", help="try a camera or an OSDP card reader before it goes in the config: what it "
                       "sends, and plain advice")
    targets = p.add_subparsers(dest="target", required=True)
    for module in doctors().values():
        module.add_arguments(targets)


def command(args: argparse.Namespace) -> int:
    code: int = doctors()[args.target].run(args)
    return code
