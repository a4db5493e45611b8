"""The drivers: each folder under drivers/ with a MANIFEST (drivers.manifest), found by looking, so a new
device kind is one folder; plus drivers registered at run time (plugins, tests)."""

from __future__ import annotations

import pkgutil
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.manifest import Manifest

if TYPE_CHECKING:
    from drivers.base import Driver
    from gateway.config import DeviceConfig

_extra: dict[str, type[Driver]] = {}


@cache
def manifests() -> dict[str, Manifest]:
    """Driver name -> its manifest, for every driver folder (light: no driver module is imported)."""
    found: dict[str, Manifest] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.ispkg:
            continue
        manifest = getattr(import_module(f"drivers.{info.name}"), "MANIFEST", None)
        if isinstance(manifest, Manifest):
            if manifest.name in found:
                raise RuntimeError(f"two driver folders are both named '{manifest.name}'")
            found[manifest.name] = manifest
    return found


def register(driver: type[Driver]) -> None:
    """Add a driver at run time (plugins, tests)."""
    _extra[driver.name] = driver


def driver_names() -> list[str]:
    return sorted({*manifests(), *_extra})


def driver_class(name: str) -> type[Driver] | None:
    if name in _extra:
        return _extra[name]
    manifest = manifests().get(name)
    return manifest.driver_class() if manifest else None


def driver_config_model(name: str) -> type[DeviceConfig] | None:
    if name in _extra:
        return _extra[name].config_model
    manifest = manifests().get(name)
    return manifest.schema if manifest else None
