"""Driver names -> driver classes. A new device kind is one module and one line here."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.base import Driver
    from gateway.config import DeviceConfig

# name -> "module:Class"; imported on first use so a site only loads what it uses.
DRIVERS: dict[str, str] = {
    "modbus_di": "drivers.modbus_di:ModbusDIDriver",
    "modbus_bollard": "drivers.bollard:BollardDriver",
    "opencv": "drivers.camera.driver:CameraDriver",
    "osdp": "drivers.osdp_cp:OsdpDriver",
    "serial_reader": "drivers.serial_reader:SerialReaderDriver",
}
_extra: dict[str, type[Driver]] = {}


def register(driver: type[Driver]) -> None:
    """Add a driver at run time (plugins, tests)."""
    _extra[driver.name] = driver


def driver_names() -> list[str]:
    return sorted({*DRIVERS, *_extra})


def driver_class(name: str) -> type[Driver] | None:
    if name in _extra:
        return _extra[name]
    target = DRIVERS.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    cls: type[Driver] = getattr(import_module(module), attr)
    return cls


def driver_config_model(name: str) -> type[DeviceConfig] | None:
    cls = driver_class(name)
    return cls.config_model if cls else None
